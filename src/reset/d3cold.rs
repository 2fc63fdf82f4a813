//! `d3cold`: power the device off and on through runtime PM. The platform must
//! be able to cut its power: ACPI `_PR3` power resources on the device (sysfs
//! `firmware_node/power_resources_D3hot`) or on its parent port. The reset
//! watches `power_state` (never `config`, whose read would wake the device).

use std::time::Duration;

use super::{Analysis, Managed, MethodDef, Outcome, ResetCtx, Verdict};
use crate::error::{Error, Result};
use crate::pci::sysfs::read_attr;
use crate::pci::wait::poll_for;

pub const DEF: MethodDef = MethodDef {
    name: "d3cold",
    summary: "runtime-suspend to D3cold (power removed) and resume",
    managed: Managed::Kernel,
    probe,
    reset,
};

pub fn probe(a: &Analysis) -> Verdict {
    let own = a.dev.firmware_node.as_ref().and_then(|f| f.pr3.clone());
    let parent = a
        .bridge()
        .and_then(|b| b.firmware_node.as_ref())
        .and_then(|f| f.pr3.clone());
    let where_ = match (&own, &parent) {
        (Some(p), _) if !p.is_empty() => format!("_PR3 power resources {}", p.join(", ")),
        (_, Some(p)) if !p.is_empty() => {
            format!("the parent port's _PR3 power resources {}", p.join(", "))
        }
        _ => {
            let node = match &a.dev.firmware_node {
                None => "the device has no ACPI firmware node, hence no _PR3 power resources"
                    .to_string(),
                Some(f) => format!(
                    "ACPI node {} has no _PR3 power resources",
                    f.acpi_path.as_deref().unwrap_or("(unnamed)")
                ),
            };
            let why = format!(
                "{node} (firmware_node/power_resources_D3hot), nor does its parent port: the platform cannot cut its power"
            );
            return if a.force {
                Verdict::yes(
                    "forced_no_power_resources",
                    format!("forced although {why}; the deepest state reached will be reported"),
                )
            } else {
                Verdict::no("no_power_resources", why)
            };
        }
    };
    if a.dev.driver.as_deref() != Some("vfio-pci") && a.dev.driver.is_some() {
        return Verdict::no(
            "needs_vfio_idle",
            format!(
                "{where_}, but runtime suspend needs the device idle under vfio-pci (bound: {})",
                a.dev.driver.as_deref().unwrap_or("none")
            ),
        );
    }
    if a.dev.d3cold_allowed == Some(false) {
        return Verdict::yes(
            "d3cold_allowed_set",
            format!("{where_}; d3cold_allowed is 0 and will be set for the reset"),
        );
    }
    Verdict::yes("power_resources", where_)
}

fn depth(state: &str) -> u8 {
    match state {
        "D0" => 0,
        "D1" => 1,
        "D2" => 2,
        "D3hot" => 3,
        "D3cold" => 4,
        _ => 0,
    }
}

/// Watches `power_state` until `want`, bounded; returns the deepest state seen.
fn watch(ctx: &ResetCtx, want: &str, bound: Duration) -> Result<(bool, String)> {
    let path = ctx.dev.dir.join("power_state");
    let mut deepest = String::from("D0");
    let reached = poll_for(
        bound,
        Duration::from_millis(1),
        Duration::from_millis(50),
        || {
            let s = read_attr(&path)?.unwrap_or_default();
            if depth(&s) > depth(&deepest) {
                deepest = s.clone();
            }
            Ok((s == want).then_some(()))
        },
    )?;
    Ok((reached.is_some(), deepest))
}

pub fn reset(ctx: &mut ResetCtx) -> Result<Outcome> {
    let bdf = ctx.bdf();
    let control = ctx.dev.dir.join("power/control");
    let allowed = ctx.dev.dir.join("d3cold_allowed");
    let prev_control = read_attr(&control)?.unwrap_or_else(|| "on".into());
    let prev_allowed = read_attr(&allowed)?;
    if prev_allowed.as_deref() == Some("0") {
        ctx.journal.sysfs_write(Some(&bdf), &allowed, "1")?;
    }
    ctx.journal.sysfs_write(Some(&bdf), &control, "auto")?;
    let bound = ctx.opts.wait_bound();
    if ctx.opts.dry_run {
        ctx.journal.note(
            Some(&bdf),
            format!(
                "would watch power_state for D3cold (bound {} ms)",
                bound.as_millis()
            ),
        )?;
        ctx.journal.sysfs_write(Some(&bdf), &control, "on")?;
        return Ok(Outcome::did("dry run"));
    }
    let (reached, deepest) = watch(ctx, "D3cold", bound)?;
    // Power back on whatever was reached, then put the attributes back.
    ctx.journal.sysfs_write(Some(&bdf), &control, "on")?;
    let back_bound = ctx.opts.wait_bound();
    let (back, _) = watch(ctx, "D0", back_bound)?;
    if prev_control != "on" {
        ctx.journal
            .sysfs_write(Some(&bdf), &control, &prev_control)?;
    }
    if prev_allowed.as_deref() == Some("0") {
        ctx.journal.sysfs_write(Some(&bdf), &allowed, "0")?;
    }
    if !back {
        return Err(Error::Timeout {
            what: format!("{bdf} to return to D0"),
            bound_ms: back_bound.as_millis() as u64,
        });
    }
    if !reached {
        return Err(Error::failed(format!(
            "{bdf} did not reach D3cold within {} ms: the deepest state reached was {deepest} \
             (power was not removed, so this was no reset)",
            bound.as_millis()
        )));
    }
    Ok(Outcome {
        did: "runtime-suspended to D3cold and resumed".into(),
        notes: vec![format!("deepest state reached: {deepest}")],
    })
}
