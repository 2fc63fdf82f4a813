//! Health after a reset: config answers and is not all-ones; vendor, device
//! and class unchanged; BARs and COMMAND as saved; D0; the driver it had.
//! Vendor checks (register reads, SMU messages) plug in through
//! [`VENDOR_CHECKS`].

use serde::Serialize;

use super::state::SavedState;
use super::ResetCtx;
use crate::pci::caps::Decoded;
use crate::pci::config::MemConfig;
use crate::pci::Device;

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct HealthItem {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

impl HealthItem {
    pub fn new(name: &str, ok: bool, detail: impl Into<String>) -> HealthItem {
        HealthItem {
            name: name.to_string(),
            ok,
            detail: detail.into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Health {
    pub healthy: bool,
    pub items: Vec<HealthItem>,
}

impl Health {
    pub fn from_items(items: Vec<HealthItem>) -> Health {
        Health {
            healthy: items.iter().all(|i| i.ok),
            items,
        }
    }

    /// The first failing check, in words.
    pub fn failure(&self) -> Option<String> {
        self.items
            .iter()
            .find(|i| !i.ok)
            .map(|i| format!("{}: {}", i.name, i.detail))
    }
}

/// A vendor check: `None` when it does not apply to the device.
pub type VendorCheck = fn(&mut ResetCtx) -> Option<Vec<HealthItem>>;

/// Vendor checks, tried in order; one row per vendor family.
pub static VENDOR_CHECKS: &[VendorCheck] = &[super::amd_health::check];

/// The PCI-level checks against the state from before the reset.
pub fn pci_checks(before: &Device, after: &Device, saved: Option<&SavedState>) -> Vec<HealthItem> {
    let mut v = Vec::new();
    let bytes = match after.read_config() {
        Ok(b) => {
            v.push(HealthItem::new("config", true, "readable, not all-ones"));
            b
        }
        Err(e) => {
            v.push(HealthItem::new("config", false, e.one_line()));
            return v;
        }
    };
    let cfg = MemConfig::image(after.bdf.to_string(), bytes);
    let d = match Decoded::decode(&cfg) {
        Ok(d) => d,
        Err(e) => {
            v.push(HealthItem::new("config", false, e.one_line()));
            return v;
        }
    };
    let same = d.vendor == before.vendor && d.device == before.device && d.class == before.class;
    let found = format!("{:04x}:{:04x} class {:06x}", d.vendor, d.device, d.class);
    v.push(HealthItem::new(
        "identity",
        same,
        if same {
            found
        } else {
            format!(
                "config reads {found}: not the device reset; want {:04x}:{:04x} class {:06x} as before",
                before.vendor, before.device, before.class
            )
        },
    ));
    if let Some(s) = saved {
        match s.verify(&cfg) {
            Ok(m) if m.is_empty() => v.push(HealthItem::new(
                "restore",
                true,
                "BARs, COMMAND and capabilities as saved",
            )),
            Ok(m) => v.push(HealthItem::new(
                "restore",
                false,
                m.iter()
                    .map(|x| x.to_string())
                    .collect::<Vec<_>>()
                    .join("; "),
            )),
            Err(e) => v.push(HealthItem::new("restore", false, e.one_line())),
        }
    } else {
        // The kernel re-created or restored it: BARs must be where they were.
        let was: Vec<(usize, u64)> = before
            .resources
            .iter()
            .take(7)
            .filter(|r| !r.is_empty())
            .map(|r| (r.index, r.start))
            .collect();
        let now: Vec<(usize, u64)> = after
            .resources
            .iter()
            .take(7)
            .filter(|r| !r.is_empty())
            .map(|r| (r.index, r.start))
            .collect();
        v.push(HealthItem::new(
            "resources",
            was == now,
            if was == now {
                "BARs at the same addresses".to_string()
            } else {
                format!("BARs moved: (index, address) {now:x?}; want {was:x?} as before the reset")
            },
        ));
    }
    if let Some(p) = &after.power_state {
        // The orchestrator woke the device, so it must be in D0 — unless the
        // kernel re-created it (remove_rescan) and its driver runtime-suspended
        // it again at once, as vfio-pci does with an idle device (the driver's
        // choice, not a failed reset); or a function re-enumerated by a rescan
        // starts as PCI_UNKNOWN (drivers/pci/probe.c `pci_setup_device`) and
        // reads "unknown" until a driver enables it (seen in the guest: remove
        // + rescan of an unbound pci-testdev).
        let suspended = after.runtime_status.as_deref() == Some("suspended");
        let fresh_unbound = p == "unknown" && after.driver.is_none();
        v.push(HealthItem::new(
            "power",
            p == "D0" || suspended || fresh_unbound,
            if fresh_unbound {
                "power_state unknown: re-enumerated, no driver has enabled it yet".to_string()
            } else if p != "D0" && suspended {
                format!("power_state {p} (runtime-suspended by its driver)")
            } else if p == "D0" {
                "power_state D0".to_string()
            } else if p.is_empty() {
                "power_state is empty: the kernel does not say the device's state; want D0"
                    .to_string()
            } else {
                format!("power_state {p}: the device is not powered up; want D0")
            },
        ));
    }
    if before.driver != after.driver {
        v.push(HealthItem::new(
            "driver",
            false,
            format!(
                "bound to {}; want {}, as before the reset",
                after.driver.as_deref().unwrap_or("no driver"),
                before.driver.as_deref().unwrap_or("no driver")
            ),
        ));
    }
    v
}
