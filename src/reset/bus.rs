//! `bus`: secondary bus reset at the upstream bridge
//! (`pci_parent_bus_reset` / `pci_reset_secondary_bus` in drivers/pci/pci.c).
//! Unlike the kernel, which refuses whenever the bus has other functions, this
//! method resets them too, after saving their state — but only when none is
//! bound to a live host driver, unless forced.

use std::time::Duration;

use super::state::SavedState;
use super::{
    is_parking_driver, wait, Analysis, Managed, MethodDef, Outcome, RegValue, ResetCtx, Verdict,
};
use crate::error::{Error, Result};
use crate::pci::caps::Decoded;
use crate::pci::config::ConfigAccess;
use crate::pci::regs::*;
use crate::pci::session::config_for_writes;
use crate::pci::sysfs::Parent;

pub const DEF: MethodDef = MethodDef {
    name: "bus",
    summary: "secondary bus reset at the upstream bridge (resets every function on the bus)",
    managed: Managed::Raw,
    probe,
    reset,
};

pub fn probe(a: &Analysis) -> Verdict {
    let Some(bridge) = a.bridge() else {
        return Verdict::no("root_bus", 
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
                return Verdict::no(
                    "upstream_not_bridge",
                    format!("upstream {} is not a type 1 (bridge) header", bridge.bdf),
                )
                .with_affects(affects);
            }
        }
        Err(e) => {
            return Verdict::no(
                "upstream_config_unread",
                format!("upstream bridge {} config not examined: {e}", bridge.bdf),
            )
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
        Verdict::yes(
            "bus_reset_ok",
            format!("secondary bus reset at {} also resets {others}", bridge.bdf),
        )
    } else if a.force {
        Verdict::yes("forced_siblings_live_driver", format!(
            "forced: secondary bus reset at {} also resets functions bound to live host drivers: {}",
            bridge.bdf,
            live.join(", ")
        ))
    } else {
        Verdict::refuse(
            "siblings_live_driver",
            format!(
            "secondary bus reset at {} would also reset functions bound to live host drivers: {}",
            bridge.bdf,
            live.join(", ")
        ),
        )
    };
    v.with_affects(affects).with_regs(regs)
}

/// PCI spec r3.0 §7.6.4.2: Trst ≥ 1 ms; the kernel holds it 2 ms.
pub const SBR_HOLD: Duration = Duration::from_millis(2);
/// PCIe r6 §6.6.1: 100 ms after the link is up before config requests.
pub const SBR_DELAY: Duration = Duration::from_millis(100);
/// PCIE_LINK_RETRAIN_TIMEOUT_MS: how long the kernel waits for DLLLA.
pub const LINK_BOUND: Duration = Duration::from_secs(1);

pub fn reset(ctx: &mut ResetCtx) -> Result<Outcome> {
    let bridge = match &ctx.dev.parent {
        Parent::Bridge(b) => *b,
        Parent::RootBus(_) => return Err(Error::failed("the device is on a root bus")),
    };
    let bridge_dev = ctx
        .topo
        .get(&bridge)
        .ok_or_else(|| Error::not_found("PCI device", bridge.to_string()))?;
    // Every other function on the bus is reset too: save each one's state.
    let others = ctx.topo.bus_blast_radius(ctx.dev);
    let mut saved = Vec::new();
    for b in &others {
        let Some(d) = ctx.topo.get(b) else { continue };
        let cfg = d.open_config()?;
        saved.push((d, SavedState::save(b, &cfg)?));
    }
    let mut bcfg = config_for_writes(bridge_dev, ctx.journal)?;
    let ctrl = bcfg.read16(PCI_BRIDGE_CONTROL)?;
    ctx.journal.config_write(
        &bridge,
        &mut bcfg,
        PCI_BRIDGE_CONTROL,
        2,
        (ctrl | BridgeCtl::BUS_RESET.bits()) as u32,
    )?;
    ctx.spec_delay("secondary bus reset held", SBR_HOLD)?;
    ctx.journal.config_write(
        &bridge,
        &mut bcfg,
        PCI_BRIDGE_CONTROL,
        2,
        (ctrl & !BridgeCtl::BUS_RESET.bits()) as u32,
    )?;
    // pci_bridge_wait_for_secondary_bus: above 5 GT/s, wait for the link
    // (DLLLA) first; then the 100 ms every port is owed.
    let decoded = Decoded::decode(&bcfg)?;
    let mut link = String::new();
    if let Some(exp) = decoded.exp {
        let fast = exp.max_speed_gts() > 5.0;
        let reports = LnkCap::from_bits_retain(exp.lnkcap).contains(LnkCap::DLLLARC);
        if fast && reports && !ctx.opts.dry_run {
            let t = std::time::Instant::now();
            wait::poll(
                "the link to come up (LNKSTA.DLLLA)",
                ctx.opts.bound(LINK_BOUND),
                Duration::from_millis(10),
                || {
                    Ok(
                        (LnkSta::from_bits_retain(bcfg.read16(exp.offset + PCI_EXP_LNKSTA)?)
                            .contains(LnkSta::DLLLA))
                        .then_some(()),
                    )
                },
            )?;
            link = format!(", link up after {} ms", t.elapsed().as_millis());
        }
    }
    ctx.spec_delay("after secondary bus reset", SBR_DELAY)?;
    // The other functions: readiness, then their state back.
    let mut restored = 0;
    for (d, s) in &saved {
        if ctx.opts.dry_run {
            continue;
        }
        let mut cfg = config_for_writes(d, ctx.journal)?;
        wait::wait_ready(&cfg, false, ctx.opts.ready_bound(), &d.bdf.to_string())?;
        restored += s.restore(ctx.journal, &mut cfg)?;
    }
    Ok(Outcome::did(format!(
        "pulsed BRIDGE_CONTROL.BUS_RESET on {bridge} for 2 ms{link}, waited 100 ms; \
         {} other function(s) reset and restored ({restored} register writes)",
        others.len()
    )))
}
