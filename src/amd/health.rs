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

use crate::amd::regs::{Asic, HealthCheck, HealthKind};
use crate::amd::smu::{self, Smu};
use crate::error::{Error, Result};
use crate::pci::mmio::{self, Access, BarMap, SystemFiles};
use crate::reset::health::HealthItem;
use crate::reset::ResetCtx;

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
    let saved = mmio::enable_memory(ctx.dev, ctx.journal)?;
    let r = checks(ctx, asic, bar);
    if let Some(s) = saved {
        mmio::restore_command(ctx.dev, ctx.journal, s)?;
    }
    r
}

fn checks(ctx: &mut ResetCtx, asic: &Asic, bar: u8) -> Result<Vec<HealthItem>> {
    let access = if ctx.opts.dry_run {
        Access::ReadOnly
    } else {
        Access::ReadWrite
    };
    let map = BarMap::open(ctx.dev, bar, access, &SystemFiles::for_host(ctx.host))?;
    let bdf = ctx.bdf();
    let mut smu = Smu::new(asic, None, map, bdf)?;
    let amdgpu = smu::refuse_if_amdgpu(ctx.dev).err();
    let mut items = Vec::new();
    let mut skipped = Vec::new();
    for h in &asic.file.health {
        if amdgpu.is_some() && h.kind != HealthKind::Register {
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
/// was found (the value, and what it means) and what was wanted.
fn verdict(h: &HealthCheck, target: &str, value: u32) -> HealthItem {
    let ok = h.passes(value);
    let found = value & h.mask;
    let want = match (h.expect, h.expect_not) {
        (Some(e), _) if h.mask == u32::MAX => format!("{e:#x}"),
        (Some(e), _) => format!("{e:#x} in the bits {:#x} (found {found:#x})", h.mask),
        (None, Some(n)) if h.mask == u32::MAX => format!("anything but {n:#x}"),
        (None, Some(n)) => format!("anything but {n:#x} in the bits {:#x}", h.mask),
        (None, None) => "no expectation is set".to_string(),
    };
    let detail = if ok {
        format!("{target} = {value:#010x}: {}", h.meaning)
    } else {
        let what = h
            .fail
            .clone()
            .unwrap_or_else(|| format!("not so that {}", h.meaning));
        format!("{target} {value:#010x}: {what}; want {want}")
    };
    HealthItem::new(&h.name, ok, detail)
}

fn one(ctx: &mut ResetCtx, asic: &Asic, smu: &mut Smu, h: &HealthCheck) -> HealthItem {
    let r: Result<HealthItem> = (|| match h.kind {
        HealthKind::Register => {
            let off = asic.resolve(&h.target)?.bar_offset;
            let v = smu.bar().read32(off)?;
            Ok(verdict(h, &format!("{} ({off:#x})", h.target), v))
        }
        HealthKind::Smn => {
            let reg = asic.smn(&h.target)?;
            let address = reg.address;
            match smu.smn_read(ctx.journal, address)? {
                Some(v) => Ok(verdict(
                    h,
                    &format!("{} (SMN {address:#010x})", h.target),
                    v,
                )),
                None => Ok(HealthItem::new(&h.name, true, "dry run: not read")),
            }
        }
        HealthKind::Message => match smu.send(ctx.journal, &h.target, 0) {
            Ok(reply) => match reply.response {
                Some(code) => Ok(verdict(h, &format!("{} response", h.target), code)),
                None => Ok(HealthItem::new(&h.name, true, "dry run: not sent")),
            },
            // A code other than OK: compare it like any value, with its words.
            Err(Error::Smu {
                code,
                name,
                meaning,
                ..
            }) => {
                let mut item = verdict(h, &format!("{} response", h.target), code);
                item.detail = format!("{} (the SMU answered {name}: {meaning})", item.detail);
                Ok(item)
            }
            Err(e) => Err(e),
        },
    })();
    r.unwrap_or_else(|e| HealthItem::new(&h.name, false, e.one_line()))
}
