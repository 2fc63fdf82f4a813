//! A `HOSTPCIID` (qemu-server `PVE/QemuServer/PCI.pm` `$PCIRE`): one function or a whole slot.

use std::fmt;
use std::str::FromStr;

use serde::{Serialize, Serializer};

use crate::error::{Error, Result};
use crate::pci::{Bdf, Slot};

// ---------------------------------------------------------------------------------------------
// PCI addresses (the type is `crate::pci::Bdf`; this is Proxmox's `HOSTPCIID` form)
// ---------------------------------------------------------------------------------------------

/// One `HOSTPCIID` of a `hostpciN` entry or a mapping's `path`: a function, or a whole slot.
///
/// qemu-server `PVE/QemuServer/PCI.pm` `$PCIRE`:
/// `(?:[a-f0-9]{4,}:)?[a-f0-9]{2}:[a-f0-9]{2}(?:\.[a-f0-9])?`. Without a domain, Proxmox means
/// domain 0000 (pve-common `PVE/SysFSTools.pm` `lspci` matches `^(0000:)?FILTER`); without a
/// function, every function of the slot (`lspci` prefix match).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PciTarget {
    Function(Bdf),
    Slot(Slot),
}

impl fmt::Display for PciTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PciTarget::Function(b) => b.fmt(f),
            PciTarget::Slot(s) => s.fmt(f),
        }
    }
}

crate::string_schema!(
    PciTarget,
    "PCI function (0000:c5:00.0) or whole slot (0000:c5:00)"
);

impl Serialize for PciTarget {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

fn hex_field(s: &str, min: usize, max: usize, what: &str) -> std::result::Result<u32, String> {
    if s.len() < min || s.len() > max || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        let want = if min == max {
            format!("{min}")
        } else {
            format!("{min} to {max}")
        };
        return Err(format!("{what} '{s}' is not {want} hex digits"));
    }
    u32::from_str_radix(s, 16).map_err(|e| format!("{what} '{s}': {e}"))
}

impl PciTarget {
    /// Parse one `HOSTPCIID`: `DDDD:BB:DD.F`, `BB:DD.F`, `DDDD:BB:DD` or `BB:DD`.
    pub fn parse(s: &str) -> Result<PciTarget> {
        Self::parse_reason(s).map_err(|reason| Error::parse("PCI address", s, reason))
    }

    pub(super) fn parse_reason(s: &str) -> std::result::Result<PciTarget, String> {
        let parts: Vec<&str> = s.split(':').collect();
        let (domain, bus, devfn) = match parts.as_slice() {
            [bus, devfn] => (0, *bus, *devfn),
            [dom, bus, devfn] => (hex_field(dom, 4, 8, "domain")?, *bus, *devfn),
            _ => return Err("expected [DDDD:]BB:DD[.F]".into()),
        };
        let bus = hex_field(bus, 2, 2, "bus")? as u8;
        let (dev, func) = match devfn.split_once('.') {
            Some((d, f)) => (d, Some(f)),
            None => (devfn, None),
        };
        let device = hex_field(dev, 2, 2, "device")? as u8;
        if device > 0x1f {
            return Err(format!("device {device:#04x} is above 0x1f"));
        }
        let slot = Slot {
            domain,
            bus,
            dev: device,
        };
        match func {
            None => Ok(PciTarget::Slot(slot)),
            Some(f) => {
                let function = hex_field(f, 1, 1, "function")? as u8;
                if function > 7 {
                    return Err(format!("function {function} is above 7"));
                }
                Ok(PciTarget::Function(slot.function(function)))
            }
        }
    }

    pub fn slot(&self) -> Slot {
        match self {
            PciTarget::Function(b) => b.slot(),
            PciTarget::Slot(s) => *s,
        }
    }

    /// The functions this target names. A slot is every present function of it, in order; if
    /// none is present (removed from the bus), function 0, which Proxmox also requires for a
    /// whole-slot mapping (pve-guest-common `PVE/Mapping/PCI.pm` `assert_valid`: "add .0 (must
    /// exist)"). A function is itself whether present or not.
    pub fn resolve(&self, present: &[Bdf]) -> Vec<Bdf> {
        match self {
            PciTarget::Function(b) => vec![*b],
            PciTarget::Slot(s) => {
                let mut found: Vec<Bdf> =
                    present.iter().filter(|b| b.slot() == *s).copied().collect();
                found.sort();
                found.dedup();
                if found.is_empty() {
                    found.push(s.function(0));
                }
                found
            }
        }
    }
}

impl FromStr for PciTarget {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        PciTarget::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_forms() {
        assert_eq!(
            PciTarget::parse("0000:c5:00.0").unwrap(),
            PciTarget::Function(Bdf::new(0, 0xc5, 0, 0))
        );
        assert_eq!(
            PciTarget::parse("c5:00.1").unwrap(),
            PciTarget::Function(Bdf::new(0, 0xc5, 0, 1))
        );
        assert_eq!(
            PciTarget::parse("10000:01:1f").unwrap(),
            PciTarget::Slot(Slot {
                domain: 0x10000,
                bus: 1,
                dev: 0x1f
            })
        );
        for (bad, why) in [
            ("", "expected [DDDD:]BB:DD[.F]"),
            ("c5", "expected [DDDD:]BB:DD[.F]"),
            ("c5:0.0", "device '0' is not 2 hex digits"),
            ("c5:00.8", "function 8 is above 7"),
            ("c5:20.0", "device 0x20 is above 0x1f"),
            ("000:c5:00.0", "domain '000' is not 4 to 8 hex digits"),
            ("c5:00.", "function '' is not 1 hex digits"),
            ("g5:00.0", "bus 'g5' is not 2 hex digits"),
            ("1:2:3:4", "expected [DDDD:]BB:DD[.F]"),
        ] {
            let e = PciTarget::parse(bad).unwrap_err();
            assert!(
                matches!(&e, Error::Parse { what: "PCI address", input, reason }
                    if input == bad && reason == why),
                "{bad}: {e:?}"
            );
        }
        assert_eq!(Bdf::new(0, 0xc5, 0, 1).to_string(), "0000:c5:00.1");
        let e = "c5:00".parse::<Bdf>().unwrap_err();
        assert!(
            matches!(&e, Error::Parse { what: "PCI address", input, reason }
                if input == "c5:00" && reason.starts_with("expected [domain:]bus:device.function")),
            "{e:?}"
        );
    }

    #[test]
    fn slot_resolution() {
        let present = [
            Bdf::new(0, 0xc5, 0, 1),
            Bdf::new(0, 0xc5, 0, 0),
            Bdf::new(0, 0xc6, 0, 0),
        ];
        let s = PciTarget::parse("c5:00").unwrap();
        assert_eq!(
            s.resolve(&present),
            vec![Bdf::new(0, 0xc5, 0, 0), Bdf::new(0, 0xc5, 0, 1)]
        );
        assert_eq!(s.resolve(&[]), vec![Bdf::new(0, 0xc5, 0, 0)]);
    }
}
