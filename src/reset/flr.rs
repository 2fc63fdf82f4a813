//! `flr`: PCIe Function Level Reset (`pcie_flr` in drivers/pci/pci.c).

use std::time::Duration;

use super::wait;
use super::{no_config, Analysis, Managed, MethodDef, Outcome, RegValue, ResetCtx, Verdict};
use crate::error::{Error, Result};
use crate::pci::caps::Caps;
use crate::pci::config::ConfigAccess;
use crate::pci::regs::*;

pub const DEF: MethodDef = MethodDef {
    name: "flr",
    summary: "PCIe Function Level Reset through DEVCTL.BCR_FLR",
    managed: Managed::Raw,
    probe,
    reset,
};

pub fn probe(a: &Analysis) -> Verdict {
    let cfg = match a.cfg() {
        Ok(c) => c,
        Err(e) => return no_config(e),
    };
    let Some(exp) = cfg.exp else {
        return Verdict::no("no_pcie_cap", "no PCI Express capability");
    };
    let regs = vec![RegValue::new(
        "DEVCAP",
        exp.offset + PCI_EXP_DEVCAP,
        4,
        exp.devcap,
    )];
    if exp.flr() {
        Verdict::yes("flr_capable", "DEVCAP.FLR is set").with_regs(regs)
    } else {
        Verdict::no(
            "no_flr_cap",
            "DEVCAP lacks FLR (bit 28): the function cannot do a Function Level Reset",
        )
        .with_regs(regs)
    }
}

/// `pci_wait_for_pending` sleeps 0, 100, 200 and 400 ms before giving up; the
/// kernel then performs the FLR anyway ("timed out waiting for pending
/// transaction").
pub(crate) const PENDING_BOUND: Duration = Duration::from_millis(700);
/// PCIe r6 §6.6.2: software must wait 100 ms after an FLR before config access.
pub(crate) const FLR_DELAY: Duration = Duration::from_millis(100);

/// Waits (bounded) for a Transactions Pending bit to clear; false if it did not.
pub(crate) fn wait_pending(
    ctx: &mut ResetCtx,
    cfg: &dyn ConfigAccess,
    off: u16,
    bit: u16,
) -> Result<bool> {
    let r = wait::poll(
        "pending transactions to drain",
        ctx.opts.bound(PENDING_BOUND),
        Duration::from_millis(100),
        || Ok((cfg.read16(off)? & bit == 0).then_some(())),
    );
    match r {
        Ok(()) => Ok(true),
        Err(Error::Timeout { .. }) => {
            let bdf = ctx.bdf();
            ctx.journal.note(
                Some(&bdf),
                "timed out waiting for pending transactions; resetting anyway (as pcie_flr does)",
            )?;
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

pub fn reset(ctx: &mut ResetCtx) -> Result<Outcome> {
    let mut cfg = ctx.config()?;
    let caps = Caps::walk(&cfg);
    let exp = caps
        .find(PCI_CAP_ID_EXP)
        .ok_or_else(|| Error::failed(format!("{}: no PCI Express capability", ctx.bdf())))?;
    let drained = wait_pending(ctx, &cfg, exp + PCI_EXP_DEVSTA, DevSta::TRPND.bits())?;
    let devctl = cfg.read16(exp + PCI_EXP_DEVCTL)?;
    let bdf = ctx.bdf();
    ctx.journal.config_write(
        &bdf,
        &mut cfg,
        exp + PCI_EXP_DEVCTL,
        2,
        (devctl | DevCtl::BCR_FLR.bits()) as u32,
    )?;
    // Immediate Readiness: no delay owed (pcie_flr checks dev->imm_ready).
    let imm = Status::from_bits_retain(cfg.read16(PCI_STATUS)?).contains(Status::IMM_READY);
    if !imm {
        ctx.spec_delay("FLR", FLR_DELAY)?;
    }
    Ok(Outcome::did(format!(
        "set DEVCTL.BCR_FLR{}{}",
        if drained {
            ""
        } else {
            " (transactions still pending)"
        },
        if imm {
            ", immediate readiness"
        } else {
            ", waited 100 ms"
        }
    )))
}
