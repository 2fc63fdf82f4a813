//! What `list` and `probe` say about an AMD GPU's family: for an id regs/
//! knows, the family, its MP1 (SMU) version and how mode 2 is sent
//! ("Rembrandt (Radeon 680M), MP1 13.0.1 or 13.0.3, mode 2 by
//! GfxDeviceDriverReset 0x11"); for an AMD display function regs/ does not
//! know, which files might fit and how to try one (`--asic NAME`).
//!
//! The MP1 version is the device's own when its IP discovery table is known
//! without touching it (sysfs while amdgpu is bound, or this boot's cache of
//! a table resetlab read: amd/bases.rs), and only on a live host, so a twin's
//! or snapshot's list replays the same. Otherwise it is what regs/ says, with
//! "or" between the versions the family has.

use serde::Serialize;

use crate::amd::regs::{Asic, RegsDb};
use crate::machine::Machine;
use crate::pci::regs::PCI_VENDOR_ID_ATI;
use crate::pci::Device;

/// One line of `list`, and its JSON form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct FamilyNote {
    /// The regs/ file (None: no file lists the id).
    pub asic: Option<String>,
    /// "Rembrandt (Radeon 680M)".
    pub device: Option<String>,
    /// The MP1 version(s): the device's, or what regs/ says.
    pub mp1: Vec<String>,
    /// Where `mp1` comes from: "device table", "regs/".
    pub mp1_from: Option<String>,
    /// How mode 2 is sent, or why it is not offered.
    pub mode2: Option<String>,
    /// Whether the id's entry in regs/ is confirmed by the source.
    pub id_confirmed: Option<bool>,
    /// For an unknown id: the regs/ files that might fit.
    pub candidates: Vec<String>,
    /// The line `list` prints.
    pub text: String,
}

/// A display-class function of AMD/ATI (class 0x03xxxx).
fn is_amd_display(dev: &Device) -> bool {
    dev.vendor == PCI_VENDOR_ID_ATI && dev.class >> 16 == 0x03
}

fn device_mp1(host: &Machine, dev: &Device) -> Option<String> {
    if !host.is_live() {
        return None;
    }
    crate::amd::bases::known(host, dev)
        .and_then(|k| k.discovery)
        .and_then(|d| d.mp1_version())
}

fn mode2_line(a: &Asic) -> String {
    let m = a.mode2();
    match (&m.message, m.offered) {
        (Some(msg), true) => {
            let id = a
                .message(msg)
                .map(|x| format!(" {:#x}", x.id))
                .unwrap_or_default();
            let how = match m.wait {
                crate::amd::regs::Mode2Wait::Answer => String::new(),
                crate::amd::regs::Mode2Wait::None => {
                    format!(
                        " (sent without waiting for an answer, then {} ms)",
                        m.settle_ms
                    )
                }
            };
            format!("mode 2 by {msg}{id}{how}")
        }
        _ => "mode 2 not offered (regs/ says why: resetlab regs show)".to_string(),
    }
}

/// The note for `dev`, or None when it is not an AMD display function.
pub fn describe(regs: &RegsDb, host: &Machine, dev: &Device) -> Option<FamilyNote> {
    if !is_amd_display(dev) {
        return None;
    }
    let from_device = device_mp1(host, dev);
    match regs.by_pci_id(dev.vendor, dev.device) {
        Some(a) => {
            let p = a.pci_id(dev.vendor, dev.device)?;
            let (mp1, mp1_from) = match (&from_device, &p.mp1_version) {
                (Some(v), _) => (vec![v.clone()], "device table"),
                (None, Some(v)) => (vec![v.clone()], "regs/"),
                (None, None) => (a.file.mp1_versions.clone(), "regs/"),
            };
            let mp1_text = match (mp1.len(), mp1_from) {
                (0, _) => "MP1 version not in regs/".to_string(),
                (1, "device table") => format!("MP1 {} (its IP discovery table)", mp1[0]),
                (1, _) => format!("MP1 {}", mp1[0]),
                _ => format!(
                    "MP1 {} (its IP discovery table says which: resetlab regs bases {})",
                    mp1.join(" or "),
                    dev.bdf
                ),
            };
            let mode2 = mode2_line(a);
            let text = format!(
                "{}, {mp1_text}, {mode2} (regs/{}.toml{})",
                p.name,
                a.asic_name(),
                if p.confirmed {
                    ""
                } else {
                    "; this id UNCONFIRMED"
                }
            );
            Some(FamilyNote {
                asic: Some(a.asic_name().to_string()),
                device: Some(p.name.clone()),
                mp1,
                mp1_from: Some(mp1_from.to_string()),
                mode2: Some(mode2),
                id_confirmed: Some(p.confirmed),
                candidates: vec![],
                text,
            })
        }
        None => {
            // By the device's MP1 version when known, else every family
            // that offers mode 2.
            let candidates: Vec<String> = regs
                .asics()
                .iter()
                .filter(|a| a.mode2().offered)
                .filter(|a| {
                    from_device
                        .as_ref()
                        .is_none_or(|v| a.file.mp1_versions.iter().any(|x| x == v))
                })
                .map(|a| a.asic_name().to_string())
                .collect();
            let why = match &from_device {
                Some(v) => format!("its IP discovery table says MP1 {v}"),
                None => format!(
                    "its MP1 version would say which (resetlab regs bases {} --asic NAME reads its table)",
                    dev.bdf
                ),
            };
            let text = if candidates.is_empty() {
                format!(
                    "no regs/ file lists {:04x}:{:04x} and none has its MP1 version ({why}); a regs/ overlay (--regs DIR, docs/regs.md) can add it",
                    dev.vendor, dev.device
                )
            } else {
                format!(
                    "no regs/ file lists {:04x}:{:04x}; {why}; may fit: {}. Try `resetlab smu {} test --asic NAME` (a harmless query), then `resetlab reset {} --method smu_mode2 --asic NAME`",
                    dev.vendor,
                    dev.device,
                    candidates.join(", "),
                    dev.bdf,
                    dev.bdf
                )
            };
            Some(FamilyNote {
                asic: None,
                device: None,
                mp1: from_device.into_iter().collect(),
                mp1_from: None,
                mode2: None,
                id_confirmed: None,
                candidates,
                text,
            })
        }
    }
}
