//! `flr`: PCIe Function Level Reset (`pcie_flr` in drivers/pci/pci.c).

use super::{no_config, Analysis, MethodDef, RegValue, Verdict};
use crate::pci::regs::*;

pub const DEF: MethodDef = MethodDef {
    name: "flr",
    summary: "PCIe Function Level Reset through DEVCTL.BCR_FLR",
    probe,
};

pub fn probe(a: &Analysis) -> Verdict {
    let cfg = match a.cfg() {
        Ok(c) => c,
        Err(e) => return no_config(e),
    };
    let Some(exp) = cfg.exp else {
        return Verdict::no("no PCI Express capability");
    };
    let regs = vec![RegValue::new(
        "DEVCAP",
        exp.offset + PCI_EXP_DEVCAP,
        4,
        exp.devcap,
    )];
    if exp.flr() {
        Verdict::yes("DEVCAP.FLR is set").with_regs(regs)
    } else {
        Verdict::no("DEVCAP lacks FLR (bit 28): the function cannot do a Function Level Reset")
            .with_regs(regs)
    }
}
