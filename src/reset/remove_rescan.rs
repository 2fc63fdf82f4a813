//! `remove_rescan`: remove the function from the kernel and rescan its parent
//! bus (`remove` / `pci_bus/<bus>/rescan` in drivers/pci/pci-sysfs.c) — what the
//! seed's hookscript does by hand, without its fixed sleeps: every wait polls,
//! with a bound.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{is_parking_driver, wait, Analysis, Managed, MethodDef, Outcome, ResetCtx, Verdict};
use crate::error::Result;
use crate::machine::Machine;
use crate::pci::sysfs::{link_name, read_attr, Parent};
use crate::pci::{Bdf, Device, Topology};

pub const DEF: MethodDef = MethodDef {
    name: "remove_rescan",
    summary: "remove the function and rescan its parent bus",
    managed: Managed::Kernel,
    probe,
    reset,
};

/// The rescan attribute of the bus `dev` sits on: the bridge's
/// `pci_bus/<dddd:bb>/rescan`, else the global `/sys/bus/pci/rescan`.
pub fn rescan_attr(host: &Machine, topo: &Topology, dev: &Device) -> PathBuf {
    if let Parent::Bridge(b) = &dev.parent {
        if let Some(bridge) = topo.get(b) {
            if let Some(bus) = &bridge.secondary_bus_dir {
                let p = bridge.dir.join("pci_bus").join(bus).join("rescan");
                if std::fs::symlink_metadata(&p).is_ok() {
                    return p;
                }
            }
        }
    }
    host.global_rescan()
}

pub fn rescan_path(a: &Analysis) -> PathBuf {
    rescan_attr(a.host, a.topo, a.dev)
}

pub fn probe(a: &Analysis) -> Verdict {
    if !a.dev.has_remove {
        return Verdict::no("no_remove_attr", "the device has no 'remove' attribute");
    }
    let rescan = rescan_path(a);
    if std::fs::symlink_metadata(&rescan).is_err() {
        return Verdict::no(
            "no_rescan_attr",
            format!("no rescan attribute at {}", rescan.display()),
        );
    }
    let rel = rescan.strip_prefix(&a.host.sysfs).unwrap_or(&rescan);
    let slot: Vec<Bdf> = if a.opts.slot {
        a.dev
            .bus_peers
            .iter()
            .filter(|b| b.slot() == a.dev.bdf.slot())
            .copied()
            .collect()
    } else {
        vec![]
    };
    // The guards look at the named function only; `--slot` removes its
    // siblings too, so a sibling in use by a host driver needs --force.
    let live: Vec<String> = slot
        .iter()
        .filter_map(|b| a.topo.get(b))
        .filter(|d| !is_parking_driver(d.driver.as_deref()))
        .map(|d| format!("{} ({})", d.bdf, d.driver.as_deref().unwrap_or("?")))
        .collect();
    let how = format!("remove, then rescan via {}", rel.display());
    if live.is_empty() {
        Verdict::yes("remove_rescan_ok", how).with_affects(slot)
    } else if a.force {
        Verdict::yes(
            "forced_slot_live_driver",
            format!(
                "forced: {how}; removes functions bound to live host drivers: {}",
                live.join(", ")
            ),
        )
        .with_affects(slot)
    } else {
        Verdict::refuse(
            "slot_live_driver",
            format!(
                "--slot would also remove functions bound to live host drivers: {}; unbind them \
             (or bind vfio-pci) first, or use --force",
                live.join(", ")
            ),
        )
        .with_affects(slot)
    }
}

/// What a function was bound to, to bind it back.
struct Binding {
    bdf: Bdf,
    driver: Option<String>,
    driver_override: Option<String>,
}

fn exists(host: &Machine, bdf: &Bdf) -> bool {
    std::fs::symlink_metadata(host.device_dir(bdf)).is_ok()
}

pub fn reset(ctx: &mut ResetCtx) -> Result<Outcome> {
    let mut targets = vec![ctx.dev.bdf];
    if ctx.opts.slot {
        targets.extend(
            ctx.dev
                .bus_peers
                .iter()
                .filter(|b| b.slot() == ctx.dev.bdf.slot()),
        );
    }
    let rescan = rescan_attr(ctx.host, ctx.topo, ctx.dev);
    let bindings: Vec<Binding> = targets
        .iter()
        .filter_map(|b| ctx.topo.get(b))
        .map(|d| Binding {
            bdf: d.bdf,
            driver: d.driver.clone(),
            driver_override: d.driver_override.clone(),
        })
        .collect();
    let poll_every = Duration::from_millis(20);
    // Remove each function and wait until the kernel has let go of it (a
    // remove blocks while a user, e.g. QEMU, still holds the device).
    for b in &targets {
        let name = b.to_string();
        ctx.journal
            .sysfs_write(Some(b), &ctx.host.device_dir(b).join("remove"), "1")?;
        if ctx.opts.dry_run {
            ctx.journal.note(
                Some(b),
                format!(
                    "would wait for {name} to disappear (bound {} ms)",
                    ctx.opts.wait_bound().as_millis()
                ),
            )?;
            continue;
        }
        let host = ctx.host;
        let bound = ctx.opts.wait_bound();
        wait::poll(&format!("{name} to be removed"), bound, poll_every, || {
            Ok((!exists(host, b)).then_some(()))
        })?;
    }
    // Rescan with driver autoprobe off, then bind each function to the
    // driver it had. Otherwise the re-created function is probed by its
    // natural driver first (virtio-pci, amdgpu) and unbound from it at once:
    // slow, and on the 6.1 guest an immediate unbind of virtio-rng oopsed in
    // hwrng_unregister. The flag is global, so it is put back whatever happens.
    // (See reset::autoprobe: it is put back on every exit path, and a record
    // in the run directory covers SIGKILL.)
    let gate = super::autoprobe::close(ctx.host, ctx.journal)?;
    let r = rescan_and_rebind(ctx, &rescan, &targets, &bindings);
    if let Some(gate) = gate {
        let back = gate.open(ctx.journal);
        if r.is_ok() {
            back?;
        }
    }
    let notes = r?;
    if ctx.opts.dry_run {
        return Ok(Outcome::did("dry run"));
    }
    Ok(Outcome {
        did: format!(
            "removed {} and rescanned {}",
            targets
                .iter()
                .map(|b| b.short())
                .collect::<Vec<_>>()
                .join(", "),
            rescan
                .strip_prefix(&ctx.host.sysfs)
                .unwrap_or(&rescan)
                .display()
        ),
        notes,
    })
}

/// Rescans, waits for every target to reappear, binds each back; returns notes.
fn rescan_and_rebind(
    ctx: &mut ResetCtx,
    rescan: &Path,
    targets: &[Bdf],
    bindings: &[Binding],
) -> Result<Vec<String>> {
    ctx.journal.sysfs_write(None, rescan, "1")?;
    if ctx.opts.dry_run {
        ctx.journal.note(
            None,
            format!("would wait for {} function(s) to reappear", targets.len()),
        )?;
        return Ok(vec![]);
    }
    let host = ctx.host;
    for b in targets {
        wait::poll(
            &format!("{b} to reappear after rescan"),
            ctx.opts.wait_bound(),
            Duration::from_millis(20),
            || Ok(exists(host, b).then_some(())),
        )?;
    }
    // Bind each function back to the driver it had (Proxmox expects vfio-pci).
    let mut notes = Vec::new();
    for bd in bindings {
        if let Some(n) = rebind(ctx, bd)? {
            notes.push(n);
        }
    }
    Ok(notes)
}

fn current_driver(dir: &Path) -> Result<Option<String>> {
    link_name(&dir.join("driver"))
}

fn rebind(ctx: &mut ResetCtx, bd: &Binding) -> Result<Option<String>> {
    let dir = ctx.host.device_dir(&bd.bdf);
    let name = bd.bdf.to_string();
    let Some(want) = bd.driver.clone() else {
        return Ok(None);
    };
    // The rescan write returns after the kernel has added the device (and,
    // with autoprobe on, probed drivers: pci_bus_add_device → device_attach),
    // so nothing is left to settle: no waiting here (it cost 500 ms a run).
    if current_driver(&dir)?.as_deref() == Some(want.as_str()) {
        return Ok(None);
    }
    let ov_path = dir.join("driver_override");
    let had_override = read_attr(&ov_path)?;
    if std::fs::symlink_metadata(&ov_path).is_ok() {
        ctx.journal.sysfs_write(Some(&bd.bdf), &ov_path, &want)?;
    }
    if let Some(cur) = current_driver(&dir)? {
        let unbind = ctx.host.drivers_dir().join(&cur).join("unbind");
        ctx.journal.sysfs_write(Some(&bd.bdf), &unbind, &name)?;
    }
    let bind = ctx.host.drivers_dir().join(&want).join("bind");
    ctx.journal.sysfs_write(Some(&bd.bdf), &bind, &name)?;
    let bound = ctx.opts.wait_bound();
    wait::poll(
        &format!("{name} to bind to {want}"),
        bound,
        Duration::from_millis(10),
        || Ok((current_driver(&dir)?.as_deref() == Some(want.as_str())).then_some(())),
    )?;
    // driver_override back to what it was ("(null)" reads back when unset).
    let before = bd.driver_override.clone().unwrap_or_default();
    if had_override.as_deref().unwrap_or("") != want || before != want {
        let restore = if before.is_empty() {
            "\n".to_string()
        } else {
            before
        };
        if std::fs::symlink_metadata(&ov_path).is_ok() && restore.trim() != want {
            ctx.journal.sysfs_write(Some(&bd.bdf), &ov_path, &restore)?;
        }
    }
    Ok(Some(format!("{name} bound back to {want}")))
}
