//! Save and restore of a function's config state around a raw reset, after
//! `pci_save_state` / `pci_restore_state` (drivers/pci/pci.c): the header, the
//! PCIe control registers, PM, MSI and MSI-X. Each register is written back
//! only when it differs, and read back to verify.

use serde::Serialize;

use crate::error::Result;
use crate::journal::Journal;
use crate::pci::caps::Caps;
use crate::pci::config::{read_width, ConfigAccess};
use crate::pci::regs::*;
use crate::pci::Bdf;

/// One register to restore: offset, width, name.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Saved {
    pub name: String,
    pub offset: u16,
    pub width: usize,
    pub value: u32,
}

/// The saved state, in the order it is restored.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct SavedState {
    pub device: Bdf,
    pub regs: Vec<Saved>,
}

/// A register that did not read back as restored.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Mismatch {
    pub name: String,
    pub offset: u16,
    pub expected: u32,
    pub found: u32,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}@{:#05x} reads {:#x}; want {:#x}, as restored",
            self.name, self.offset, self.found, self.expected
        )
    }
}

fn reg(
    cfg: &dyn ConfigAccess,
    name: impl Into<String>,
    offset: u16,
    width: usize,
) -> Result<Saved> {
    Ok(Saved {
        name: name.into(),
        offset,
        width,
        value: read_width(cfg, offset, width)?,
    })
}

impl SavedState {
    pub fn save(device: &Bdf, cfg: &dyn ConfigAccess) -> Result<SavedState> {
        let caps = Caps::walk(cfg);
        let header = cfg.read8(PCI_HEADER_TYPE)? & PCI_HEADER_TYPE_MASK;
        let mut regs = Vec::new();
        // Capabilities first, the header last, COMMAND at the very end (as
        // pci_restore_state restores config space after the capabilities).
        if let Some(e) = caps.find(PCI_CAP_ID_EXP) {
            for (n, o) in [
                ("DEVCTL", PCI_EXP_DEVCTL),
                ("LNKCTL", PCI_EXP_LNKCTL),
                ("SLTCTL", PCI_EXP_SLTCTL),
                ("RTCTL", PCI_EXP_RTCTL),
                ("DEVCTL2", PCI_EXP_DEVCTL2),
                ("LNKCTL2", PCI_EXP_LNKCTL2),
            ] {
                regs.push(reg(cfg, n, e + o, 2)?);
            }
        }
        if let Some(p) = caps.find(PCI_CAP_ID_PM) {
            regs.push(reg(cfg, "PMCSR", p + PCI_PM_CTRL, 2)?);
        }
        // Header: dwords 10..15 (type 0) / 6..15 (bridge), the BARs, then
        // cache line/latency, then COMMAND (pci_restore_config_space).
        let (tail_start, bars) = if header == PCI_HEADER_TYPE_BRIDGE {
            (6u16, 2u16)
        } else {
            (10, 6)
        };
        for dw in tail_start..16 {
            regs.push(reg(cfg, format!("HDR+{:#04x}", dw * 4), dw * 4, 4)?);
        }
        for i in 0..bars {
            regs.push(reg(cfg, format!("BAR{i}"), PCI_BASE_ADDRESS_0 + 4 * i, 4)?);
        }
        regs.push(reg(cfg, "CACHE_LINE_SIZE", PCI_CACHE_LINE_SIZE, 2)?);
        if let Some(m) = caps.find(PCI_CAP_ID_MSI) {
            let flags = cfg.read16(m + PCI_MSI_FLAGS)?;
            let is64 = flags & PCI_MSI_FLAGS_64BIT != 0;
            regs.push(reg(cfg, "MSI_ADDRESS_LO", m + 4, 4)?);
            if is64 {
                regs.push(reg(cfg, "MSI_ADDRESS_HI", m + 8, 4)?);
            }
            let data = if is64 { m + 12 } else { m + 8 };
            regs.push(reg(cfg, "MSI_DATA", data, 2)?);
            if flags & PCI_MSI_FLAGS_MASKBIT != 0 {
                regs.push(reg(cfg, "MSI_MASK", data + 4, 4)?);
            }
            regs.push(reg(cfg, "MSI_FLAGS", m + PCI_MSI_FLAGS, 2)?);
        }
        if let Some(x) = caps.find(PCI_CAP_ID_MSIX) {
            regs.push(reg(cfg, "MSIX_FLAGS", x + PCI_MSIX_FLAGS, 2)?);
        }
        regs.push(reg(cfg, "COMMAND", PCI_COMMAND, 2)?);
        Ok(SavedState {
            device: *device,
            regs,
        })
    }

    pub fn get(&self, name: &str) -> Option<u32> {
        self.regs.iter().find(|r| r.name == name).map(|r| r.value)
    }

    /// Writes back every register that differs; returns how many were written.
    pub fn restore(&self, journal: &mut Journal, cfg: &mut dyn ConfigAccess) -> Result<usize> {
        let mut n = 0;
        for r in &self.regs {
            if read_width(cfg, r.offset, r.width)? != r.value {
                journal.config_write(&self.device, cfg, r.offset, r.width, r.value)?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Registers that do not read back as saved. Read-only bits that the reset
    /// changed (status-like bits) are not in the saved set.
    pub fn verify(&self, cfg: &dyn ConfigAccess) -> Result<Vec<Mismatch>> {
        let mut out = Vec::new();
        for r in &self.regs {
            let found = read_width(cfg, r.offset, r.width)?;
            if found != r.value {
                out.push(Mismatch {
                    name: r.name.clone(),
                    offset: r.offset,
                    expected: r.value,
                    found,
                });
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::config::MemConfig;
    use crate::sim::tree::{config_space, um880pro};

    #[test]
    fn save_restore_roundtrip_on_the_igpu() {
        let spec = um880pro().into_iter().find(|s| s.device == 0x1900).unwrap();
        let (data, writable, w1c) = config_space(&spec, true);
        let mut cfg = MemConfig {
            label: "igpu".into(),
            data: data.clone(),
            writable,
            w1c,
        };
        let saved = SavedState::save(&Bdf::new(0, 0xc5, 0, 0), &cfg).unwrap();
        assert_eq!(saved.get("BAR0"), Some(0x0000_000c));
        // A reset clears the writable bits of BARs and COMMAND (the type bits stay).
        for o in (0x10..0x28).chain(4..6) {
            cfg.data[o] &= !cfg.writable[o];
        }
        assert!(!saved.verify(&cfg).unwrap().is_empty());
        let mut j = Journal::new(false);
        let n = saved.restore(&mut j, &mut cfg).unwrap();
        assert!(n >= 4, "{n}");
        assert!(saved.verify(&cfg).unwrap().is_empty());
        assert_eq!(j.writes().last().unwrap().offset, Some(4), "COMMAND last");
        let mut j = Journal::new(false);
        assert_eq!(
            saved.restore(&mut j, &mut cfg).unwrap(),
            0,
            "nothing differs now"
        );
    }
}
