//! Vendor health checks for AMD GPUs from the regs/ `[[health]]` entries,
//! made through the register BAR: `register` (a BAR register read), `smn` (an
//! `[[smn]]` register through PCIE_INDEX2/PCIE_DATA2), `message` (an SMU
//! message; its response code is compared). Every value read is in the
//! item's detail, with the check's meaning.
//!
//! Memory decoding is turned on for the duration when it is off (vfio-pci
//! leaves an idle device at COMMAND = 0) and COMMAND put back after, through
//! the journal. Mailbox checks are skipped while amdgpu is bound: it owns the
//! mailbox.

use super::health::HealthItem;
use super::ResetCtx;
use crate::amd::regio::{Barrier, RegIo};
use crate::amd::regs::{Asic, HealthCheck, HealthKind};
use crate::amd::smu::{self, Smu};
use crate::error::{Error, Result};
use crate::pci::mmio::{Access, BarMap, SystemFiles};

/// `None` when the device is not an ASIC in the register database (and no
/// `--asic` names one).
pub fn check(ctx: &mut ResetCtx) -> Option<Vec<HealthItem>> {
    let target = smu::target(ctx.regs, ctx.dev, ctx.opts.asic.as_deref(), ctx.opts.bar);
    let (asic, bar) = match target {
        Ok(Some(t)) => t,
        Ok(None) => return None,
        Err(e) => return Some(vec![HealthItem::new("regs", false, e.one_line())]),
    };
    Some(match run(ctx, asic, bar) {
        Ok(items) => items,
        Err(e) => vec![HealthItem::new("vendor", false, e.one_line())],
    })
}

fn run(ctx: &mut ResetCtx, asic: &Asic, bar: u8) -> Result<Vec<HealthItem>> {
    ctx.with_memory_decoding(|ctx| checks(ctx, asic, bar))
        .map(|(items, _)| items)
}

fn checks(ctx: &mut ResetCtx, asic: &Asic, bar: u8) -> Result<Vec<HealthItem>> {
    let access = if ctx.opts.dry_run {
        Access::ReadOnly
    } else {
        Access::ReadWrite
    };
    let amdgpu = smu::refuse_if_amdgpu(ctx.dev).err();
    // The registers where the device's own table puts them (this boot's
    // cache, or read now; not while amdgpu owns the window).
    let found = crate::amd::bases::resolve(
        ctx.host,
        ctx.dev,
        asic,
        bar,
        ctx.journal,
        !ctx.opts.dry_run && amdgpu.is_none(),
    );
    let resolved = found.apply(asic)?;
    let asic = &resolved;
    let mp1 = found
        .discovery
        .as_ref()
        .and_then(|d| d.mp1_version())
        .filter(|v| asic.mailbox(Some(v)).is_ok());
    let map = BarMap::open(ctx.dev, bar, access, &SystemFiles::for_host(ctx.host))?;
    let bdf = ctx.bdf();
    let io = RegIo::for_asic(asic, map, bdf)?.with_barrier(Barrier::for_sysfs(&ctx.host.sysfs));
    let mut smu = Smu::with_io(asic, mp1.as_deref(), io)?;
    let mut items = Vec::new();
    let mut skipped = Vec::new();
    for h in &asic.file.health {
        if amdgpu.is_some() && (h.kind != HealthKind::Register || !h.around.is_empty()) {
            skipped.push(h.name.as_str());
            continue;
        }
        items.push(one(ctx, asic, &mut smu, h));
    }
    if !skipped.is_empty() {
        items.push(HealthItem::new(
            "smu",
            true,
            format!(
                "not checked ({}): amdgpu is bound and owns the SMU mailbox",
                skipped.join(", ")
            ),
        ));
    }
    Ok(items)
}

/// A check's line: on success the value and what it means; on failure what
/// was found (the field's value, or the masked bits) and what was wanted.
fn verdict(asic: &Asic, h: &HealthCheck, target: &str, value: u32) -> HealthItem {
    let ok = h.passes(value);
    if ok {
        return HealthItem::new(
            &h.name,
            true,
            format!("{target} = {value:#010x}: {}", h.meaning),
        );
    }
    let field = h.field.as_deref().and_then(|f| {
        let fl = match h.kind {
            HealthKind::Register => asic.register(&h.target).ok()?.field(f).ok()?.clone(),
            HealthKind::Smn => asic.smn(&h.target).ok()?.field(f).ok()?.clone(),
            HealthKind::Message => return None,
        };
        Some(fl)
    });
    let (e, n) = (h.expect, h.expect_not);
    let (found, want) = match &field {
        Some(fl) => {
            let want = match (e, n) {
                (Some(e), _) => format!("want {}", fl.extract(e)),
                (None, Some(n)) => format!("want anything but {}", fl.extract(n)),
                (None, None) => "no expectation is set".into(),
            };
            (format!("{} = {}, ", fl.name, fl.extract(value)), want)
        }
        // The whole value is already on the line: no "found" part.
        None if h.mask == u32::MAX => {
            let want = match (e, n) {
                (Some(e), _) => format!("want {e:#x}"),
                (None, Some(n)) => format!("want anything but {n:#x}"),
                (None, None) => "no expectation is set".into(),
            };
            (String::new(), want)
        }
        None => {
            let m = h.mask;
            let want = match (e, n) {
                (Some(e), _) => format!("want {e:#x} in the bits {m:#x}"),
                (None, Some(n)) => format!("want anything but {n:#x} in the bits {m:#x}"),
                (None, None) => "no expectation is set".into(),
            };
            (format!("bits {m:#x} = {:#x}, ", value & m), want)
        }
    };
    let why = h
        .failure
        .as_deref()
        .map_or_else(|| format!("not so that {}", h.meaning), str::to_string);
    HealthItem::new(
        &h.name,
        false,
        format!("{target} {value:#010x}: {found}{why}; {want}"),
    )
}

fn one(ctx: &mut ResetCtx, asic: &Asic, smu: &mut Smu, h: &HealthCheck) -> HealthItem {
    let r: Result<HealthItem> = (|| match h.kind {
        HealthKind::Register => {
            let off = asic.resolve(&h.target)?.bar_offset;
            if let [before, _] = h.around.as_slice() {
                if let Err(e) = smu.send(ctx.journal, before, 0) {
                    return Ok(HealthItem::new(
                        &h.name,
                        false,
                        format!(
                            "{before} before reading {} failed ({}): the value would not be trusted",
                            h.target,
                            e.one_line()
                        ),
                    ));
                }
            }
            let v = smu.io_mut().read(ctx.journal, off);
            if let [_, after] = h.around.as_slice() {
                smu.send(ctx.journal, after, 0)?;
            }
            match v? {
                Some(v) => {
                    let mut item = verdict(asic, h, &format!("{} ({off:#x})", h.target), v);
                    if let [before, _] = h.around.as_slice() {
                        item.detail = format!("{} (read with {before} sent first)", item.detail);
                    }
                    Ok(item)
                }
                None => Ok(HealthItem::new(&h.name, true, "dry run: not read")),
            }
        }
        HealthKind::Smn => {
            let reg = asic.smn(&h.target)?;
            let address = reg.address;
            match smu.smn_read(ctx.journal, address)? {
                Some(v) => Ok(verdict(
                    asic,
                    h,
                    &format!("{} (SMN {address:#010x})", h.target),
                    v,
                )),
                None => Ok(HealthItem::new(&h.name, true, "dry run: not read")),
            }
        }
        HealthKind::Message => match smu.send(ctx.journal, &h.target, 0) {
            Ok(reply) => match reply.response {
                Some(code) => Ok(verdict(asic, h, &format!("{} response", h.target), code)),
                None => Ok(HealthItem::new(&h.name, true, "dry run: not sent")),
            },
            // A code other than OK: compare it like any value, with its words.
            Err(Error::Smu {
                code,
                name,
                meaning,
                ..
            }) => {
                let mut item = verdict(asic, h, &format!("{} response", h.target), code);
                item.detail = format!("{} (the SMU answered {name}: {meaning})", item.detail);
                Ok(item)
            }
            Err(e) => Err(e),
        },
    })();
    r.unwrap_or_else(|e| HealthItem::new(&h.name, false, e.one_line()))
}
