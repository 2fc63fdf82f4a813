//! `pm`: D3hot → D0 through PMCSR (`pci_pm_reset` in drivers/pci/pci.c).

use std::time::Duration;

use super::{no_config, Analysis, Managed, MethodDef, Outcome, RegValue, ResetCtx, Verdict};
use crate::error::{Error, Result};
use crate::pci::caps::Caps;
use crate::pci::config::ConfigAccess;
use crate::pci::regs::*;
use crate::pci::sysfs::Parent;

pub const DEF: MethodDef = MethodDef {
    name: "pm",
    summary: "D3hot then D0 through PMCSR (a reset only when No_Soft_Reset is 0)",
    managed: Managed::Raw,
    probe,
    reset,
};

/// `quirk_no_pm_reset` (drivers/pci/quirks.c) sets PCI_DEV_FLAGS_NO_PM_RESET
/// for every ATI/AMD (0x1002) VGA-class device not on the root bus: their
/// D3hot→D0 transition does not reset them.
pub fn kernel_refuses(vendor: u16, class: u32, parent: &Parent) -> bool {
    vendor == PCI_VENDOR_ID_ATI
        && (class >> 8) as u16 == PCI_CLASS_DISPLAY_VGA
        && matches!(parent, Parent::Bridge(_))
}

pub fn probe(a: &Analysis) -> Verdict {
    let cfg = match a.cfg() {
        Ok(c) => c,
        Err(e) => return no_config(e),
    };
    let Some(pm) = cfg.pm else {
        return Verdict::no("no_pm_cap", "no PM capability");
    };
    let regs = vec![
        RegValue::new("PMC", pm.offset + PCI_PM_PMC, 2, pm.pmc as u32),
        RegValue::new("PMCSR", pm.offset + PCI_PM_CTRL, 2, pm.pmcsr as u32),
    ];
    if pm.no_soft_reset() {
        return Verdict::no(
            "no_soft_reset",
            "PMCSR.No_Soft_Reset is 1: D3hot→D0 keeps the function's state",
        )
        .with_regs(regs);
    }
    if kernel_refuses(a.dev.vendor, a.dev.class, &a.dev.parent) {
        let why = "the kernel refuses PM reset for AMD (1002) VGA-class devices off the root bus \
                   (quirk_no_pm_reset): D3hot→D0 does not reset them";
        return if a.force {
            Verdict::yes("forced_quirk_no_pm_reset", format!("forced although {why}"))
                .with_regs(regs)
        } else {
            Verdict::no("quirk_no_pm_reset", why).with_regs(regs)
        };
    }
    if pm.state() != 0 && a.dev.runtime_status.as_deref() == Some("suspended") {
        // vfio-pci runtime-suspends an idle device to D3hot; the kernel's
        // reset_store wakes it first, and so does resetlab's orchestrator.
        return Verdict::yes(
            "pm_capable_suspended",
            format!(
                "PM capability with No_Soft_Reset 0 (runtime-suspended in D{}: woken to D0 first)",
                pm.state()
            ),
        )
        .with_regs(regs);
    }
    if pm.state() != 0 {
        return Verdict::no(
            "not_in_d0",
            format!(
                "the function is in D{} (PMCSR); a PM reset starts from D0",
                pm.state()
            ),
        )
        .with_regs(regs);
    }
    Verdict::yes("pm_capable", "PM capability with No_Soft_Reset 0").with_regs(regs)
}

/// PCI_PM_D3HOT_WAIT: 10 ms in D3hot, and 10 ms after D0 (pci_dev_d3_sleep).
pub const D3HOT_DELAY: Duration = Duration::from_millis(10);

pub fn reset(ctx: &mut ResetCtx) -> Result<Outcome> {
    let mut cfg = ctx.config()?;
    let pm = Caps::walk(&cfg)
        .find(PCI_CAP_ID_PM)
        .ok_or_else(|| Error::failed(format!("{}: no PM capability", ctx.bdf())))?;
    let mut csr = cfg.read16(pm + PCI_PM_CTRL)?;
    let suspended = ctx.dev.runtime_status.as_deref() == Some("suspended");
    if csr & Pmcsr::STATE_MASK.bits() != 0 && ctx.opts.dry_run && suspended {
        // A real run wakes it first (the orchestrator's power/control=on); a
        // dry run does not, so plan the writes from D0.
        let bdf = ctx.bdf();
        ctx.journal.note(
            Some(&bdf),
            "runtime-suspended: a real run finds it in D0 after waking it",
        )?;
        csr &= !Pmcsr::STATE_MASK.bits();
    }
    if csr & Pmcsr::STATE_MASK.bits() != 0 {
        return Err(Error::failed(format!(
            "{}: PM reset starts from D0 but PMCSR says D{}",
            ctx.bdf(),
            csr & 3
        )));
    }
    let bdf = ctx.bdf();
    let base = csr & !Pmcsr::STATE_MASK.bits() & !Pmcsr::PME_STATUS.bits();
    ctx.journal
        .config_write(&bdf, &mut cfg, pm + PCI_PM_CTRL, 2, (base | 3) as u32)?;
    ctx.spec_delay("D3hot", D3HOT_DELAY)?;
    ctx.journal
        .config_write(&bdf, &mut cfg, pm + PCI_PM_CTRL, 2, base as u32)?;
    ctx.spec_delay("D3hot→D0", D3HOT_DELAY)?;
    Ok(Outcome::did("PMCSR D0 → D3hot → D0 (10 ms each way)"))
}
