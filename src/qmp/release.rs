//! Releasing passed-through devices through the guest: `device_del`, then the wait for QEMU's
//! `DEVICE_DELETED`, which comes once the guest has ejected the device (FACTS.md, "QEMU Machine
//! Protocol": ACPI hotplug on q35, 0.08 s for an e1000e under TCG here; 1.4 s and ~11 s for the
//! 780M's two functions with Windows 11 in the field report).
//!
//! What QEMU requires for a multi-function slot: the guest ejects slots, not functions
//! (QEMU `hw/acpi/pcihp.c` `acpi_pcihp_eject_slot` unplugs every function whose
//! `PCI_SLOT(devfn)` is the slot; `hw/pci/pcie.c` `pcie_cap_slot_unplug_cb` likewise powers the
//! whole slot off), so one `device_del` of function 0 takes them all, and a second `device_del`
//! for a function whose slot is already being ejected fails with "… is already in the process of
//! unplug" (`softmmu/qdev-monitor.c` `qdev_unplug`). So: one `device_del` per guest slot, sent to
//! its function 0, and a wait for every function's own `DEVICE_DELETED`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;

use super::{Client, Deadline, GuestFunction, QmpError};
use crate::error::{exit, Error, Result};
use crate::journal::Journal;
use crate::pci::Bdf;

/// How one QEMU device fared.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// `DEVICE_DELETED` came `ms` after its `device_del` was sent.
    Released { ms: f64 },
    /// No `DEVICE_DELETED` within the bound (a paused or hung guest, or one that ignores the
    /// eject request).
    TimedOut { bound_ms: u64 },
    /// QEMU answered `device_del` with an error (not hot-pluggable, no such device, …).
    Refused { class: String, desc: String },
    /// A dry run: `device_del` recorded, not sent.
    DryRun,
}

/// One QEMU device of a release.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Released {
    /// Its qdev id (`hostpci0`, `hostpci0.1`).
    pub id: String,
    /// The host function it passes through, for a `vfio-pci` device.
    pub host: Option<Bdf>,
    /// Its guest slot and function (`GuestFunction::slot`), when `query-pci` lists it.
    pub slot: Option<String>,
    pub function: Option<u8>,
    /// The id whose `device_del` unplugs it (function 0 of its slot, or itself).
    pub via: String,
    #[serde(flatten)]
    pub outcome: Outcome,
    /// The outcome in words (`released in 81.2 ms`, `not released within … : why`).
    pub message: String,
}

/// What a release did, device by device.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct ReleaseReport {
    pub socket: String,
    pub bound_ms: u64,
    pub dry_run: bool,
    /// From the start of the release to its last answer (or the bound).
    pub total_ms: f64,
    /// `query-status` when something was not released (`paused` explains a timeout).
    pub vm_status: Option<String>,
    /// When every device was released: the longest of their times.
    pub released_ms: Option<f64>,
    pub devices: Vec<Released>,
}

impl ReleaseReport {
    pub fn all_released(&self) -> bool {
        self.devices
            .iter()
            .all(|d| matches!(d.outcome, Outcome::Released { .. }))
    }

    /// `docs/cli.md`: 0 all released (or a dry run), 2 no such device, 1 QEMU refused, 4 the
    /// bound ran out (a refusal wins over a timeout: it will not go away by waiting longer).
    pub fn exit_code(&self) -> i32 {
        let refused = |f: &dyn Fn(&str) -> bool| {
            self.devices
                .iter()
                .any(|d| matches!(&d.outcome, Outcome::Refused { class, .. } if f(class)))
        };
        if refused(&|c| c == "DeviceNotFound") {
            exit::USAGE
        } else if refused(&|_| true) {
            exit::FAILED
        } else if self
            .devices
            .iter()
            .any(|d| matches!(d.outcome, Outcome::TimedOut { .. }))
        {
            exit::TIMEOUT
        } else {
            exit::OK
        }
    }

    /// The longest release time, when every device was released.
    pub fn longest_release_ms(&self) -> Option<f64> {
        self.devices
            .iter()
            .map(|d| match d.outcome {
                Outcome::Released { ms } => Some(ms),
                _ => None,
            })
            .try_fold(0.0f64, |m, x| x.map(|x| m.max(x)))
    }
}

/// Why a device timed out, in words, from the VM's run state.
pub fn timeout_reason(status: Option<&str>) -> &'static str {
    match status {
        Some("paused") | Some("prelaunch") | Some("suspended") => {
            "the guest is not running (QEMU status paused): a paused guest ejects nothing"
        }
        Some("running") => {
            "the guest did not eject it (hung, still booting, or it ignores the eject request)"
        }
        _ => "the guest did not eject it (a paused or hung guest)",
    }
}

/// Unplugs the QEMU devices `ids` through the guest and waits for each, all within one `bound`
/// (queries, requests and the wait). Every `device_del` goes through the journal first; a dry run
/// sends none. Functions that share a guest slot with a named id go too (QEMU ejects slots) and
/// are reported each.
pub fn release(
    client: &mut Client,
    ids: &[String],
    journal: &mut Journal,
    bound: Duration,
) -> Result<ReleaseReport> {
    let start = Instant::now();
    let dl = Deadline::after(bound);
    let bound_ms = bound.as_millis() as u64;
    // Where each function sits. A VM without PCI (or a QEMU that refuses query-pci) still gets
    // its device_del per id.
    let guest = match client.guest_functions(dl.remaining()) {
        Ok(g) => g,
        Err(Error::Qmp {
            source: QmpError::Command { .. },
            ..
        }) => Vec::new(),
        Err(e) => return Err(e),
    };
    let hosts: BTreeMap<String, Bdf> = match client.passthrough_devices(dl.remaining()) {
        Ok(p) => p
            .into_iter()
            .filter_map(|p| Some((p.id, p.host?)))
            .collect(),
        Err(Error::Qmp {
            source: QmpError::Command { .. },
            ..
        }) => BTreeMap::new(),
        Err(e) => return Err(e),
    };
    let plan = plan(&guest, ids);

    let mut devices: Vec<Released> = plan
        .iter()
        .map(|(id, via)| {
            let g = guest.iter().find(|g| &g.id == id);
            Released {
                id: id.clone(),
                host: hosts.get(id).copied(),
                slot: g.map(|g| g.slot.clone()),
                function: g.map(|g| g.function),
                via: via.clone(),
                outcome: Outcome::TimedOut { bound_ms },
                message: String::new(),
            }
        })
        .collect();

    // All requests first, then one wait.
    let mut vias: Vec<String> = Vec::new();
    for (_, v) in &plan {
        if !vias.contains(v) {
            vias.push(v.clone());
        }
    }
    let mut sent: BTreeMap<String, Instant> = BTreeMap::new();
    for via in &vias {
        let mut set = |o: Outcome| {
            for d in devices.iter_mut().filter(|d| &d.via == via) {
                d.outcome = o.clone();
            }
        };
        let at = Instant::now();
        match client.execute_recorded(
            journal,
            Some(via),
            "device_del",
            json!({ "id": via }),
            dl.remaining(),
        ) {
            Ok(None) => set(Outcome::DryRun),
            Ok(Some(_)) => {
                sent.insert(via.clone(), at);
            }
            Err(Error::Qmp {
                source: QmpError::Command { class, desc, .. },
                ..
            }) => {
                if desc.contains("already in the process of unplug") {
                    // An earlier request (another resetlab, Proxmox) is being served: wait for it.
                    journal.qmp_note(Some(via), format!("device_del: {desc}; waiting for it"))?;
                    sent.insert(via.clone(), at);
                } else {
                    set(Outcome::Refused { class, desc });
                }
            }
            Err(Error::Qmp {
                source: QmpError::Timeout { .. },
                ..
            }) => {}
            Err(e) => return Err(e),
        }
    }

    if !sent.is_empty() {
        let waiting: Vec<&str> = devices
            .iter()
            .filter(|d| sent.contains_key(&d.via))
            .map(|d| d.id.as_str())
            .collect();
        journal.note(
            None,
            format!(
                "waiting up to {bound_ms} ms (from the start) for DEVICE_DELETED of {}",
                waiting.join(", ")
            ),
        )?;
    }
    let mut pending: Vec<usize> = (0..devices.len())
        .filter(|&i| sent.contains_key(&devices[i].via))
        .collect();
    while !pending.is_empty() {
        let Some(ev) = client.next_event(dl.at)? else {
            break;
        };
        pending.retain(|&i| {
            let d = &mut devices[i];
            let at = sent[&d.via];
            if ev.received >= at && ev.is_device_deleted(&d.id) {
                d.outcome = Outcome::Released {
                    ms: (ev.received - at).as_secs_f64() * 1e3,
                };
                false
            } else {
                true
            }
        });
    }
    let total_ms = start.elapsed().as_secs_f64() * 1e3;

    let vm_status = if devices
        .iter()
        .any(|d| matches!(d.outcome, Outcome::TimedOut { .. }))
    {
        client.status(Duration::from_secs(1)).ok()
    } else {
        None
    };
    for d in &mut devices {
        d.message = match &d.outcome {
            Outcome::Released { ms } => format!("released in {ms:.1} ms"),
            Outcome::TimedOut { bound_ms } => format!(
                "not released within {bound_ms} ms: {}",
                timeout_reason(vm_status.as_deref())
            ),
            Outcome::Refused { class, desc } => format!("QEMU refused: {class}: {desc}"),
            Outcome::DryRun => format!("dry run: device_del {} not sent", d.via),
        };
        journal.qmp_note(Some(&d.id), d.message.clone())?;
    }
    let mut r = ReleaseReport {
        socket: client.socket().display().to_string(),
        bound_ms,
        dry_run: journal.dry_run,
        total_ms,
        vm_status,
        released_ms: None,
        devices,
    };
    r.released_ms = r.longest_release_ms();
    Ok(r)
}

/// `(id, via)` for every device the release covers: the named ids and their slot-mates, each with
/// the id whose `device_del` unplugs it. Order: as named, each slot's functions in order.
pub fn plan(guest: &[GuestFunction], ids: &[String]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let push = |out: &mut Vec<(String, String)>, id: &str, via: &str| {
        if !out.iter().any(|(i, _)| i == id) {
            out.push((id.to_string(), via.to_string()));
        }
    };
    for id in ids {
        let Some(me) = guest.iter().find(|g| &g.id == id) else {
            // Not a PCI function QEMU lists (or no such id): its own device_del says which.
            push(&mut out, id, id);
            continue;
        };
        let mut mates: Vec<&GuestFunction> = guest
            .iter()
            .filter(|g| g.slot == me.slot && !g.id.is_empty())
            .collect();
        mates.sort_by_key(|g| g.function);
        match mates.iter().find(|g| g.function == 0) {
            Some(f0) => {
                for m in &mates {
                    push(&mut out, &m.id, &f0.id);
                }
            }
            // No function 0 with an id in this slot: each named function on its own.
            None => push(&mut out, id, id),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(id: &str, slot: &str, function: u8) -> GuestFunction {
        GuestFunction {
            id: id.into(),
            slot: slot.into(),
            function,
            bus: 0,
        }
    }

    #[test]
    fn one_device_del_per_guest_slot_to_its_function_0() {
        let guest = [
            f("", "0/00", 0),
            f("rp0", "0/1c", 0),
            f("hostpci0.0", "0/1c.0/00", 0),
            f("hostpci0.1", "0/1c.0/00", 1),
            f("hostpci1", "0/1c.1/00", 0),
        ];
        let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            plan(&guest, &ids(&["hostpci0.1", "hostpci1"])),
            vec![
                ("hostpci0.0".into(), "hostpci0.0".into()),
                ("hostpci0.1".into(), "hostpci0.0".into()),
                ("hostpci1".into(), "hostpci1".into()),
            ]
        );
        assert_eq!(
            plan(&guest, &ids(&["nosuch"])),
            vec![("nosuch".into(), "nosuch".into())]
        );
    }
}
