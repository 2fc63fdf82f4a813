//! `bus`: secondary bus reset at the upstream bridge
//! (`pci_parent_bus_reset` / `pci_reset_secondary_bus` in drivers/pci/pci.c).
//! Unlike the kernel, which refuses whenever the bus has other functions, this
//! method resets them too, after saving their state — but only when none is
//! bound to a live host driver, unless forced.

use super::{is_parking_driver, Analysis, MethodDef, RegValue, Verdict};
use crate::pci::regs::*;

pub const DEF: MethodDef = MethodDef {
    name: "bus",
    summary: "secondary bus reset at the upstream bridge (resets every function on the bus)",
    probe,
};

pub fn probe(a: &Analysis) -> Verdict {
    let Some(bridge) = a.bridge() else {
        return Verdict::no(
            "the device is on a root bus: there is no upstream bridge whose secondary bus could be reset",
        );
    };
    let affects = a.topo.bus_blast_radius(a.dev);
    let mut regs = vec![];
    match a.configs.get(&bridge.bdf) {
        Ok(b) => {
            if let Some(bc) = b.bridge_control {
                regs.push(RegValue::new(
                    "BRIDGE_CONTROL",
                    PCI_BRIDGE_CONTROL,
                    2,
                    bc as u32,
                ));
            } else {
                return Verdict::no(format!(
                    "upstream {} is not a type 1 (bridge) header",
                    bridge.bdf
                ))
                .with_affects(affects);
            }
        }
        Err(e) => {
            return Verdict::no(format!(
                "upstream bridge {} config not examined: {e}",
                bridge.bdf
            ))
            .with_affects(affects)
        }
    }
    let live: Vec<String> = affects
        .iter()
        .filter_map(|b| a.topo.get(b))
        .filter(|d| !is_parking_driver(d.driver.as_deref()))
        .map(|d| format!("{} ({})", d.bdf, d.driver.as_deref().unwrap_or("?")))
        .collect();
    let others = if affects.is_empty() {
        "no other function".to_string()
    } else {
        format!("{} other function(s)", affects.len())
    };
    let v = if live.is_empty() {
        Verdict::yes(format!(
            "secondary bus reset at {} also resets {others}",
            bridge.bdf
        ))
    } else if a.force {
        Verdict::yes(format!(
            "forced: secondary bus reset at {} also resets functions bound to live host drivers: {}",
            bridge.bdf,
            live.join(", ")
        ))
    } else {
        Verdict::no(format!(
            "secondary bus reset at {} would also reset functions bound to live host drivers: {}",
            bridge.bdf,
            live.join(", ")
        ))
    };
    v.with_affects(affects).with_regs(regs)
}
