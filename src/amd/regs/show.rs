//! The `regs show` report: what a loaded ASIC file says, as JSON and as text.

use serde::Serialize;

use crate::error::Result;

use super::{Asic, Base, Mode2, Mode2Wait, PciId, Resolved, ResolvedMailbox};

impl Asic {
    /// The summary `regs show` prints.
    pub fn show(&self) -> Result<RegsShow> {
        let f = &self.file;
        let registers = f
            .registers
            .iter()
            .map(|r| self.resolve_register(r))
            .collect::<Result<Vec<_>>>()?;
        let mailboxes = f
            .mailboxes
            .iter()
            .map(|m| self.mailbox(Some(&m.mp1_version)))
            .collect::<Result<Vec<_>>>()?;
        let mode2 = self.mode2();
        let id = mode2
            .message
            .as_deref()
            .filter(|_| mode2.offered)
            .and_then(|m| self.message(m).ok())
            .map(|m| m.id);
        Ok(RegsShow {
            asic: f.asic.clone(),
            name: f.name.clone(),
            family: self.family().to_string(),
            aliases: f.aliases.clone(),
            mp1_versions: f.mp1_versions.clone(),
            devices: f.pci_ids.clone(),
            mode2: ShowMode2 { mode2, id },
            pci_ids: f
                .pci_ids
                .iter()
                .map(|p| format!("{:04x}:{:04x}", p.vendor, p.device))
                .collect(),
            bar: f.bar.index,
            bar_size: f.bar.size,
            files: self
                .origins
                .iter()
                .map(|o| o.path.display().to_string())
                .collect(),
            mailbox: mailboxes.first().cloned(),
            mailboxes,
            registers,
            smn: f
                .smn
                .iter()
                .map(|s| ShowSmn {
                    name: s.name.clone(),
                    address: s.address,
                    confirmed: s.confirmed,
                })
                .collect(),
            messages: f
                .messages
                .iter()
                .map(|m| ShowMessage {
                    name: m.name.clone(),
                    id: m.id,
                    args: m.args.clone(),
                })
                .collect(),
            bases: f.bases.clone(),
        })
    }
}

/// `regs show ASIC [--json]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct RegsShow {
    pub asic: String,
    pub name: String,
    pub family: String,
    pub aliases: Vec<String>,
    pub mp1_versions: Vec<String>,
    pub pci_ids: Vec<String>,
    pub devices: Vec<PciId>,
    pub mode2: ShowMode2,
    pub bar: u8,
    pub bar_size: u64,
    pub files: Vec<String>,
    /// The first mailbox (MP1 13.0.4 on Phoenix).
    pub mailbox: Option<ResolvedMailbox>,
    pub mailboxes: Vec<ResolvedMailbox>,
    pub registers: Vec<Resolved>,
    pub smn: Vec<ShowSmn>,
    pub messages: Vec<ShowMessage>,
    pub bases: Vec<Base>,
}

/// `[mode2]` with its message resolved to an id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct ShowMode2 {
    #[serde(flatten)]
    pub mode2: Mode2,
    /// The message's id (None when not offered).
    pub id: Option<u32>,
}

impl ShowMode2 {
    /// One line: "GfxDeviceDriverReset 0x11 (argument 2), waits for the answer".
    pub fn summary(&self) -> String {
        let m = &self.mode2;
        match (&m.message, self.id, m.offered) {
            (Some(msg), Some(id), true) => format!(
                "{msg} {id:#x} (argument {}), {}",
                m.arg.unwrap_or(0),
                match m.wait {
                    Mode2Wait::Answer => "waits for the answer".to_string(),
                    Mode2Wait::None => format!(
                        "sent without waiting for an answer, then {} ms",
                        m.settle_ms
                    ),
                }
            ),
            _ => format!(
                "not offered: {}",
                m.reason.as_deref().unwrap_or("no mode-2 message in regs/")
            ),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct ShowSmn {
    pub name: String,
    pub address: u32,
    pub confirmed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct ShowMessage {
    pub name: String,
    pub id: u32,
    pub args: String,
}

impl RegsShow {
    /// The human form.
    pub fn to_text(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let _ = writeln!(s, "{} — {}", self.asic, self.name);
        if !self.aliases.is_empty() {
            let _ = writeln!(s, "also: {}", self.aliases.join(", "));
        }
        if !self.mp1_versions.is_empty() {
            let _ = writeln!(s, "MP1 (SMU) versions: {}", self.mp1_versions.join(", "));
        }
        let _ = writeln!(s, "mode 2: {}", self.mode2.summary());
        for d in &self.devices {
            let _ = writeln!(
                s,
                "  {:04x}:{:04x}  {}{}{}",
                d.vendor,
                d.device,
                d.name,
                d.mp1_version
                    .as_deref()
                    .map(|v| format!(", MP1 {v}"))
                    .unwrap_or_default(),
                if d.confirmed { "" } else { "  (UNCONFIRMED)" }
            );
        }
        let _ = writeln!(
            s,
            "PCI ids: {}   register BAR {} ({:#x} bytes)   files: {}",
            self.pci_ids.join(", "),
            self.bar,
            self.bar_size,
            self.files.join(", ")
        );
        let _ = writeln!(s, "\nsegment bases (dwords):");
        for b in &self.bases {
            let _ = writeln!(
                s,
                "  {:<6} inst {} idx {}  {:#010x}  {}",
                b.ip,
                b.instance,
                b.base_idx,
                b.base,
                if b.confirmed {
                    "confirmed"
                } else {
                    "UNCONFIRMED"
                }
            );
        }
        let _ = writeln!(s, "\nregisters:");
        let _ = writeln!(
            s,
            "  {:<24} {:<5} idx  offset     BAR byte   base",
            "name", "ip"
        );
        for r in &self.registers {
            let _ = writeln!(
                s,
                "  {:<24} {:<5} {:>3}  {:#09x}  {:#09x}  {}{}",
                r.name,
                r.ip,
                r.base_idx,
                r.offset,
                r.bar_offset,
                if r.base_confirmed {
                    "confirmed"
                } else {
                    "UNCONFIRMED"
                },
                if r.beyond_bar {
                    "  (past the BAR: an SMN address, through PCIE_INDEX2/DATA2)"
                } else {
                    ""
                }
            );
        }
        for m in &self.mailboxes {
            let _ = writeln!(
                s,
                "\nSMU mailbox (MP1 {}): {}msg {:#x}  arg {:#x}  resp {:#x}{}",
                m.mp1_version,
                if m.beyond_bar {
                    "beyond the BAR, SMN addresses through PCIE_INDEX2/PCIE_DATA2: "
                } else {
                    "BAR byte offsets: "
                },
                m.msg,
                m.arg,
                m.resp,
                if m.base_confirmed {
                    ""
                } else {
                    "  (base UNCONFIRMED)"
                }
            );
        }
        if !self.smn.is_empty() {
            let _ = writeln!(s, "\nSMN registers:");
            for r in &self.smn {
                let _ = writeln!(s, "  {:<24} {:#010x}", r.name, r.address);
            }
        }
        let _ = writeln!(s, "\nSMU messages:");
        for m in &self.messages {
            let _ = writeln!(s, "  {:#04x}  {:<24} {}", m.id, m.name, m.args);
        }
        s
    }
}
