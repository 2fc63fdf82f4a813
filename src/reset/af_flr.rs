//! `af_flr`: FLR through the Advanced Features capability (`pci_af_flr`).

use super::{no_config, Analysis, MethodDef, RegValue, Verdict};
use crate::pci::regs::*;

pub const DEF: MethodDef = MethodDef {
    name: "af_flr",
    summary: "FLR through the Advanced Features capability (conventional PCI)",
    probe,
};

pub fn probe(a: &Analysis) -> Verdict {
    let cfg = match a.cfg() {
        Ok(c) => c,
        Err(e) => return no_config(e),
    };
    let Some(af) = cfg.af else {
        return Verdict::no("no Advanced Features capability");
    };
    let regs = vec![RegValue::new(
        "AF_CAP",
        af.offset + PCI_AF_CAP,
        1,
        af.cap as u32,
    )];
    if af.tp_and_flr() {
        Verdict::yes("AF_CAP has TP and FLR").with_regs(regs)
    } else {
        Verdict::no("AF_CAP lacks TP or FLR").with_regs(regs)
    }
}
