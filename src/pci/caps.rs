//! Capability walker, standard and extended, guarded against loops and broken
//! chains (as the kernel's `__pci_find_next_cap_ttl` and
//! `pci_find_next_ext_capability` are), and typed decoding of the registers
//! the reset methods need.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::pci::config::ConfigAccess;
use crate::pci::regs::*;

/// A standard capability: its ID and config offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Cap {
    pub id: u8,
    pub offset: u16,
}

/// An extended (PCIe) capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct ExtCap {
    pub id: u16,
    pub version: u8,
    pub offset: u16,
}

/// Why a walk stopped early.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct ChainFault {
    pub kind: &'static str,
    pub reason: &'static str,
    pub offset: u16,
}

impl std::fmt::Display for ChainFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} capability chain {} at {:#05x}",
            self.kind, self.reason, self.offset
        )
    }
}

/// The result of walking both lists: what was found, and whether a list was
/// cut short (what precedes the fault is still valid).
#[derive(Debug, Clone, Default, Serialize, schemars::JsonSchema)]
pub struct Caps {
    pub caps: Vec<Cap>,
    pub ext: Vec<ExtCap>,
    pub faults: Vec<ChainFault>,
}

/// `PCI_FIND_CAP_TTL` in drivers/pci/pci.c: at most 48 standard capabilities.
const CAP_TTL: usize = 48;

impl Caps {
    pub fn walk(cfg: &dyn ConfigAccess) -> Caps {
        let mut out = Caps::default();
        out.walk_std(cfg);
        out.walk_ext(cfg);
        out
    }

    fn walk_std(&mut self, cfg: &dyn ConfigAccess) {
        let Ok(status) = cfg.read16(PCI_STATUS) else {
            return;
        };
        if !Status::from_bits_retain(status).contains(Status::CAP_LIST) {
            return;
        }
        let Ok(ptr) = cfg.read8(PCI_CAPABILITY_LIST) else {
            return;
        };
        let mut pos = (ptr & !3) as u16;
        let mut seen = BTreeSet::new();
        for _ in 0..CAP_TTL {
            if pos == 0 {
                return;
            }
            let fault = |reason| ChainFault {
                kind: "standard",
                reason,
                offset: pos,
            };
            if pos < 0x40 || pos as usize + 2 > cfg.len().min(PCI_CFG_SPACE_SIZE) {
                self.faults
                    .push(fault("broken: pointer outside the capability area"));
                return;
            }
            if !seen.insert(pos) {
                self.faults.push(fault("looped"));
                return;
            }
            let (Ok(id), Ok(next)) = (
                cfg.read8(pos + PCI_CAP_LIST_ID),
                cfg.read8(pos + PCI_CAP_LIST_NEXT),
            ) else {
                self.faults.push(fault("broken: unreadable"));
                return;
            };
            if id == 0xff {
                self.faults.push(fault("broken: ID reads 0xff"));
                return;
            }
            self.caps.push(Cap { id, offset: pos });
            pos = (next & !3) as u16;
        }
        if pos != 0 {
            self.faults.push(ChainFault {
                kind: "standard",
                reason: "looped (more than 48 entries)",
                offset: pos,
            });
        }
    }

    fn walk_ext(&mut self, cfg: &dyn ConfigAccess) {
        if cfg.len() <= PCI_CFG_SPACE_SIZE {
            return;
        }
        // (4096 - 256) / 8: the most entries that fit, as the kernel's ttl.
        let ttl = (PCI_CFG_SPACE_EXP_SIZE - PCI_CFG_SPACE_SIZE) / 8;
        let mut pos = PCI_EXT_CAP_START;
        let mut seen = BTreeSet::new();
        for _ in 0..ttl {
            let fault = |reason| ChainFault {
                kind: "extended",
                reason,
                offset: pos,
            };
            let Ok(header) = cfg.read32(pos) else {
                self.faults
                    .push(fault("broken: pointer outside config space"));
                return;
            };
            // No extended capabilities at all is a header of 0.
            if header == 0 {
                return;
            }
            if header == 0xffff_ffff {
                self.faults.push(fault("broken: header reads all-ones"));
                return;
            }
            if !seen.insert(pos) {
                self.faults.push(fault("looped"));
                return;
            }
            self.ext.push(ExtCap {
                id: (header & 0xffff) as u16,
                version: ((header >> 16) & 0xf) as u8,
                offset: pos,
            });
            let next = ((header >> 20) & 0xffc) as u16;
            if next == 0 {
                return;
            }
            if next < PCI_EXT_CAP_START {
                self.faults.push(ChainFault {
                    kind: "extended",
                    reason: "broken: next pointer below 0x100",
                    offset: next,
                });
                return;
            }
            pos = next;
        }
        self.faults.push(ChainFault {
            kind: "extended",
            reason: "looped (too many entries)",
            offset: pos,
        });
    }

    pub fn find(&self, id: u8) -> Option<u16> {
        self.caps.iter().find(|c| c.id == id).map(|c| c.offset)
    }

    pub fn find_ext(&self, id: u16) -> Option<u16> {
        self.ext.iter().find(|c| c.id == id).map(|c| c.offset)
    }
}

/// PM capability registers.
#[derive(Debug, Clone, Copy, Serialize, schemars::JsonSchema)]
pub struct PmRegs {
    pub offset: u16,
    pub pmc: u16,
    pub pmcsr: u16,
}

impl PmRegs {
    pub fn no_soft_reset(&self) -> bool {
        Pmcsr::from_bits_retain(self.pmcsr).contains(Pmcsr::NO_SOFT_RESET)
    }

    /// Current D-state from PMCSR bits 1:0 (0 = D0 … 3 = D3hot).
    pub fn state(&self) -> u8 {
        (self.pmcsr & Pmcsr::STATE_MASK.bits()) as u8
    }

    pub fn supports(&self) -> Vec<&'static str> {
        let p = Pmc::from_bits_retain(self.pmc);
        let mut v = vec![];
        if p.contains(Pmc::D1) {
            v.push("D1");
        }
        if p.contains(Pmc::D2) {
            v.push("D2");
        }
        v.push("D3hot");
        v
    }
}

/// PCI Express capability registers the reset methods read.
#[derive(Debug, Clone, Copy, Serialize, schemars::JsonSchema)]
pub struct ExpRegs {
    pub offset: u16,
    pub flags: u16,
    pub devcap: u32,
    pub devctl: u16,
    pub devsta: u16,
    pub lnkcap: u32,
    pub lnkctl: u16,
    pub lnksta: u16,
    /// Root ports only.
    pub rtctl: Option<u16>,
    pub rtcap: Option<u16>,
}

impl ExpRegs {
    pub fn port_type(&self) -> u8 {
        ((self.flags & PCI_EXP_FLAGS_TYPE) >> 4) as u8
    }

    pub fn flr(&self) -> bool {
        DevCap::from_bits_retain(self.devcap).contains(DevCap::FLR)
    }

    /// Max link speed in GT/s from LNKCAP.SLS (1 = 2.5, 2 = 5, 3 = 8 …).
    pub fn max_speed_gts(&self) -> f32 {
        match self.lnkcap & LnkCap::SLS.bits() {
            1 => 2.5,
            2 => 5.0,
            3 => 8.0,
            4 => 16.0,
            5 => 32.0,
            6 => 64.0,
            _ => 0.0,
        }
    }
}

/// Advanced Features capability registers.
#[derive(Debug, Clone, Copy, Serialize, schemars::JsonSchema)]
pub struct AfRegs {
    pub offset: u16,
    pub cap: u8,
    pub ctrl: u8,
    pub status: u8,
}

impl AfRegs {
    pub fn tp_and_flr(&self) -> bool {
        AfCap::from_bits_retain(self.cap).contains(AfCap::TP | AfCap::FLR)
    }
}

/// The registers behind every reset verdict, decoded once from config.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Decoded {
    pub vendor: u16,
    pub device: u16,
    pub command: u16,
    pub status: u16,
    pub header_type: u8,
    pub multifunction: bool,
    pub class: u32,
    pub pm: Option<PmRegs>,
    pub exp: Option<ExpRegs>,
    pub af: Option<AfRegs>,
    /// Type 1 headers: PCI_BRIDGE_CONTROL and the bus numbers.
    pub bridge_control: Option<u16>,
    pub secondary_bus: Option<u8>,
    pub subordinate_bus: Option<u8>,
    pub caps: Caps,
}

impl Decoded {
    pub fn decode(cfg: &dyn ConfigAccess) -> crate::Result<Decoded> {
        let caps = Caps::walk(cfg);
        let header = cfg.read8(PCI_HEADER_TYPE)?;
        let class = cfg.read32(PCI_CLASS_REVISION)? >> 8;
        let pm = match caps.find(PCI_CAP_ID_PM) {
            Some(o) => Some(PmRegs {
                offset: o,
                pmc: cfg.read16(o + PCI_PM_PMC)?,
                pmcsr: cfg.read16(o + PCI_PM_CTRL)?,
            }),
            None => None,
        };
        let exp = match caps.find(PCI_CAP_ID_EXP) {
            Some(o) => {
                let flags = cfg.read16(o + PCI_EXP_FLAGS)?;
                let ty = ((flags & PCI_EXP_FLAGS_TYPE) >> 4) as u8;
                let root = ty == PCI_EXP_TYPE_ROOT_PORT || ty == PCI_EXP_TYPE_RC_EC;
                Some(ExpRegs {
                    offset: o,
                    flags,
                    devcap: cfg.read32(o + PCI_EXP_DEVCAP)?,
                    devctl: cfg.read16(o + PCI_EXP_DEVCTL)?,
                    devsta: cfg.read16(o + PCI_EXP_DEVSTA)?,
                    lnkcap: cfg.read32(o + PCI_EXP_LNKCAP)?,
                    lnkctl: cfg.read16(o + PCI_EXP_LNKCTL)?,
                    lnksta: cfg.read16(o + PCI_EXP_LNKSTA)?,
                    rtctl: if root {
                        Some(cfg.read16(o + PCI_EXP_RTCTL)?)
                    } else {
                        None
                    },
                    rtcap: if root {
                        Some(cfg.read16(o + PCI_EXP_RTCAP)?)
                    } else {
                        None
                    },
                })
            }
            None => None,
        };
        let af = match caps.find(PCI_CAP_ID_AF) {
            Some(o) => Some(AfRegs {
                offset: o,
                cap: cfg.read8(o + PCI_AF_CAP)?,
                ctrl: cfg.read8(o + PCI_AF_CTRL)?,
                status: cfg.read8(o + PCI_AF_STATUS)?,
            }),
            None => None,
        };
        let is_bridge = header & PCI_HEADER_TYPE_MASK == PCI_HEADER_TYPE_BRIDGE;
        Ok(Decoded {
            vendor: cfg.read16(PCI_VENDOR_ID)?,
            device: cfg.read16(PCI_DEVICE_ID)?,
            command: cfg.read16(PCI_COMMAND)?,
            status: cfg.read16(PCI_STATUS)?,
            header_type: header & PCI_HEADER_TYPE_MASK,
            multifunction: header & PCI_HEADER_TYPE_MFD != 0,
            class,
            pm,
            exp,
            af,
            bridge_control: if is_bridge {
                Some(cfg.read16(PCI_BRIDGE_CONTROL)?)
            } else {
                None
            },
            secondary_bus: if is_bridge {
                Some(cfg.read8(PCI_SECONDARY_BUS)?)
            } else {
                None
            },
            subordinate_bus: if is_bridge {
                Some(cfg.read8(PCI_SUBORDINATE_BUS)?)
            } else {
                None
            },
            caps,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::config::MemConfig;
    use proptest::prelude::*;

    fn space() -> Vec<u8> {
        let mut d = vec![0u8; 4096];
        d[PCI_STATUS as usize] = Status::CAP_LIST.bits() as u8;
        d
    }

    #[test]
    fn walks_a_chain() {
        let mut d = space();
        d[0x34] = 0x50;
        d[0x50] = PCI_CAP_ID_PM;
        d[0x51] = 0x64;
        d[0x64] = PCI_CAP_ID_EXP;
        d[0x65] = 0x00;
        // AER at 0x100 → DSN at 0x150 → end.
        d[0x100..0x104].copy_from_slice(&(0x1501_0001u32).to_le_bytes());
        d[0x150..0x154].copy_from_slice(&(0x0001_0003u32).to_le_bytes());
        let c = Caps::walk(&MemConfig::image("t", d));
        assert_eq!(c.find(PCI_CAP_ID_PM), Some(0x50));
        assert_eq!(c.find(PCI_CAP_ID_EXP), Some(0x64));
        assert_eq!(c.find_ext(PCI_EXT_CAP_ID_DSN), Some(0x150));
        assert!(c.faults.is_empty());
    }

    #[test]
    fn detects_a_loop() {
        let mut d = space();
        d[0x34] = 0x50;
        d[0x50] = PCI_CAP_ID_PM;
        d[0x51] = 0x60;
        d[0x60] = PCI_CAP_ID_MSI;
        d[0x61] = 0x50;
        let c = Caps::walk(&MemConfig::image("t", d));
        assert_eq!(c.caps.len(), 2);
        assert_eq!(c.faults[0].reason, "looped");
    }

    #[test]
    fn detects_broken_chains() {
        let mut d = space();
        d[0x34] = 0x50;
        d[0x50] = 0xff;
        let c = Caps::walk(&MemConfig::image("t", d));
        assert!(c.caps.is_empty());
        assert!(c.faults[0].reason.contains("0xff"));

        let mut d = space();
        d[0x34] = 0x20; // into the header
        let c = Caps::walk(&MemConfig::image("t", d));
        assert!(c.faults[0].reason.contains("outside"));

        let mut d = space();
        d[0x100..0x104].copy_from_slice(&(0x0801_0001u32).to_le_bytes()); // next = 0x80
        let c = Caps::walk(&MemConfig::image("t", d));
        assert_eq!(c.ext.len(), 1);
        assert!(c.faults[0].reason.contains("below 0x100"));

        let mut d = space();
        d[0x100..0x104].copy_from_slice(&(0x1001_0001u32).to_le_bytes()); // next = itself
        let c = Caps::walk(&MemConfig::image("t", d));
        assert_eq!(c.faults[0].reason, "looped");
    }

    proptest! {
        #[test]
        fn walker_never_panics(bytes in proptest::collection::vec(any::<u8>(), 4096)) {
            let cfg = MemConfig::image("p", bytes);
            let c = Caps::walk(&cfg);
            prop_assert!(c.caps.len() <= 48);
            prop_assert!(c.ext.len() <= 480);
            let _ = Decoded::decode(&cfg);
        }

        #[test]
        fn walker_never_panics_on_short_spaces(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let cfg = MemConfig::image("p", bytes);
            let _ = Caps::walk(&cfg);
            let _ = Decoded::decode(&cfg);
        }
    }
}
