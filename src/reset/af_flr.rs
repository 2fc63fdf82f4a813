//! `af_flr`: FLR through the Advanced Features capability (`pci_af_flr`).

use super::{no_config, Analysis, Managed, MethodDef, Outcome, RegValue, ResetCtx, Verdict};
use crate::error::{Error, Result};
use crate::pci::caps::Caps;
use crate::pci::config::ConfigAccess;
use crate::pci::regs::*;

pub const DEF: MethodDef = MethodDef {
    name: "af_flr",
    summary: "FLR through the Advanced Features capability (conventional PCI)",
    managed: Managed::Raw,
    probe,
    reset,
};

pub fn probe(a: &Analysis) -> Verdict {
    let cfg = match a.cfg() {
        Ok(c) => c,
        Err(e) => return no_config(e),
    };
    let Some(af) = cfg.af else {
        return Verdict::no("no_af_cap", "no Advanced Features capability");
    };
    let regs = vec![RegValue::new(
        "AF_CAP",
        af.offset + PCI_AF_CAP,
        1,
        af.cap as u32,
    )];
    if af.tp_and_flr() {
        Verdict::yes("af_flr_capable", "AF_CAP has TP and FLR").with_regs(regs)
    } else {
        Verdict::no("af_lacks_tp_flr", "AF_CAP lacks TP or FLR").with_regs(regs)
    }
}

pub fn reset(ctx: &mut ResetCtx) -> Result<Outcome> {
    let mut cfg = ctx.config()?;
    let af = Caps::walk(&cfg)
        .find(PCI_CAP_ID_AF)
        .ok_or_else(|| Error::failed(format!("{}: no Advanced Features capability", ctx.bdf())))?;
    // TP sits in AF_STATUS, read as the high byte of the AF_CTRL word (pci_af_flr).
    let drained = super::flr::wait_pending(
        ctx,
        &cfg,
        af + PCI_AF_CTRL,
        (AfStatus::TP.bits() as u16) << 8,
    )?;
    let bdf = ctx.bdf();
    ctx.journal.config_write(
        &bdf,
        &mut cfg,
        af + PCI_AF_CTRL,
        1,
        AfCtrl::FLR.bits() as u32,
    )?;
    let imm = Status::from_bits_retain(cfg.read16(PCI_STATUS)?).contains(Status::IMM_READY);
    if !imm {
        ctx.spec_delay("AF FLR", super::flr::FLR_DELAY)?;
    }
    Ok(Outcome::did(format!(
        "set AF_CTRL.FLR{}",
        if drained {
            ""
        } else {
            " (transactions still pending)"
        }
    )))
}
