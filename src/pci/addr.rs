//! PCI addresses (`0000:c5:00.0`, `c5:00.0`) and lspci-style selectors
//! (`-s [[dom:]bus:]dev.fn`, `-d vendor:device[:class]`).

use std::fmt;
use std::str::FromStr;

use serde::{Serialize, Serializer};

use crate::error::{Error, Result};

/// A PCI function address: domain, bus, device (0..=31), function (0..=7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bdf {
    pub domain: u32,
    pub bus: u8,
    pub dev: u8,
    pub func: u8,
}

impl Bdf {
    pub const fn new(domain: u32, bus: u8, dev: u8, func: u8) -> Self {
        Bdf {
            domain,
            bus,
            dev,
            func,
        }
    }

    /// The slot this function sits in (`0000:c5:00`).
    pub fn slot(&self) -> (u32, u8, u8) {
        (self.domain, self.bus, self.dev)
    }

    /// Short form as lspci prints it without `-D` (`c5:00.0`).
    pub fn short(&self) -> String {
        format!("{:02x}:{:02x}.{:x}", self.bus, self.dev, self.func)
    }
}

impl fmt::Display for Bdf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04x}:{:02x}:{:02x}.{:x}",
            self.domain, self.bus, self.dev, self.func
        )
    }
}

impl Serialize for Bdf {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

fn hex_field(input: &str, part: &str, name: &str, max: u32) -> Result<u32> {
    if part.is_empty() || part.len() > 8 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::parse(
            "PCI address",
            input,
            format!("{name} '{part}' is not a hex number"),
        ));
    }
    let v = u32::from_str_radix(part, 16)
        .map_err(|_| Error::parse("PCI address", input, format!("{name} '{part}' is not hex")))?;
    if v > max {
        return Err(Error::parse(
            "PCI address",
            input,
            format!("{name} {v:#x} is out of range (max {max:#x})"),
        ));
    }
    Ok(v)
}

impl FromStr for Bdf {
    type Err = Error;

    /// Accepts `dddd:bb:dd.f` and `bb:dd.f` (domain 0).
    fn from_str(input: &str) -> Result<Bdf> {
        let s = input.trim();
        let (head, func) = s.rsplit_once('.').ok_or_else(|| {
            Error::parse(
                "PCI address",
                input,
                "expected [domain:]bus:device.function, e.g. 0000:c5:00.0",
            )
        })?;
        let parts: Vec<&str> = head.split(':').collect();
        let (dom, bus, dev) = match parts.as_slice() {
            [bus, dev] => ("0", *bus, *dev),
            [dom, bus, dev] => (*dom, *bus, *dev),
            _ => {
                return Err(Error::parse(
                    "PCI address",
                    input,
                    "expected [domain:]bus:device.function, e.g. 0000:c5:00.0",
                ))
            }
        };
        Ok(Bdf {
            domain: hex_field(input, dom, "domain", 0xffff_ffff)?,
            bus: hex_field(input, bus, "bus", 0xff)? as u8,
            dev: hex_field(input, dev, "device", 0x1f)? as u8,
            func: hex_field(input, func, "function", 7)? as u8,
        })
    }
}

/// `-s [[dom:]bus:]dev.fn` as lspci reads it: every part optional, `*` = any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlotSelector {
    pub domain: Option<u32>,
    pub bus: Option<u8>,
    pub dev: Option<u8>,
    pub func: Option<u8>,
}

fn opt_field(input: &str, part: &str, name: &str, max: u32) -> Result<Option<u32>> {
    if part.is_empty() || part == "*" {
        Ok(None)
    } else {
        hex_field(input, part, name, max).map(Some)
    }
}

impl FromStr for SlotSelector {
    type Err = Error;

    fn from_str(input: &str) -> Result<Self> {
        let s = input.trim();
        let (head, func) = match s.rsplit_once('.') {
            Some((h, f)) => (h, f),
            None => (s, ""),
        };
        let parts: Vec<&str> = head.split(':').collect();
        let (dom, bus, dev) = match parts.as_slice() {
            [dev] => ("", "", *dev),
            [bus, dev] => ("", *bus, *dev),
            [dom, bus, dev] => (*dom, *bus, *dev),
            _ => {
                return Err(Error::parse(
                    "slot selector",
                    input,
                    "expected [[domain:]bus:]device.function",
                ))
            }
        };
        let sel = SlotSelector {
            domain: opt_field(input, dom, "domain", 0xffff_ffff)?,
            bus: opt_field(input, bus, "bus", 0xff)?.map(|v| v as u8),
            dev: opt_field(input, dev, "device", 0x1f)?.map(|v| v as u8),
            func: opt_field(input, func, "function", 7)?.map(|v| v as u8),
        };
        Ok(sel)
    }
}

impl SlotSelector {
    pub fn matches(&self, b: &Bdf) -> bool {
        self.domain.is_none_or(|d| d == b.domain)
            && self.bus.is_none_or(|v| v == b.bus)
            && self.dev.is_none_or(|v| v == b.dev)
            && self.func.is_none_or(|v| v == b.func)
    }
}

/// `-d [vendor]:[device][:class]` as lspci reads it (hex, empty or `*` = any).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdSelector {
    pub vendor: Option<u16>,
    pub device: Option<u16>,
    /// Class code: 2 hex digits = base class, 4 = base+sub, 6 = with prog-if.
    pub class: Option<(u32, u8)>,
}

impl FromStr for IdSelector {
    type Err = Error;

    fn from_str(input: &str) -> Result<Self> {
        let parts: Vec<&str> = input.trim().split(':').collect();
        if parts.len() < 2 || parts.len() > 3 {
            return Err(Error::parse(
                "id selector",
                input,
                "expected vendor:device[:class], e.g. 1002:1900",
            ));
        }
        let id = |p: &str, name: &str| -> Result<Option<u16>> {
            if p.is_empty() || p == "*" {
                return Ok(None);
            }
            if p.len() > 4 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(Error::parse(
                    "id selector",
                    input,
                    format!("{name} '{p}' is not a 4-digit hex id"),
                ));
            }
            u16::from_str_radix(p, 16)
                .map(Some)
                .map_err(|_| Error::parse("id selector", input, format!("{name} '{p}' is not hex")))
        };
        let class = match parts.get(2) {
            None => None,
            Some(p) if p.is_empty() || *p == "*" => None,
            Some(p) => {
                if !matches!(p.len(), 2 | 4 | 6) || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(Error::parse(
                        "id selector",
                        input,
                        format!("class '{p}' must be 2, 4 or 6 hex digits"),
                    ));
                }
                let v = u32::from_str_radix(p, 16)
                    .map_err(|_| Error::parse("id selector", input, "class is not hex"))?;
                Some((v, p.len() as u8))
            }
        };
        Ok(IdSelector {
            vendor: id(parts[0], "vendor")?,
            device: id(parts[1], "device")?,
            class,
        })
    }
}

impl IdSelector {
    /// `class` is the 24-bit class code (base, sub, prog-if).
    pub fn matches(&self, vendor: u16, device: u16, class: u32) -> bool {
        let class_ok = match self.class {
            None => true,
            Some((v, 2)) => (class >> 16) == v,
            Some((v, 4)) => (class >> 8) == v,
            Some((v, _)) => class == v,
        };
        self.vendor.is_none_or(|v| v == vendor)
            && self.device.is_none_or(|d| d == device)
            && class_ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_full_and_short() {
        let a: Bdf = "0000:c5:00.0".parse().unwrap();
        let b: Bdf = "c5:00.0".parse().unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "0000:c5:00.0");
        assert_eq!(a.short(), "c5:00.0");
        assert_eq!(
            "0001:00:1f.7".parse::<Bdf>().unwrap(),
            Bdf::new(1, 0, 0x1f, 7)
        );
    }

    #[test]
    fn rejects_bad_addresses_with_reason() {
        for bad in [
            "",
            "c5:00",
            "c5:20.0",
            "c5:00.8",
            "zz:00.0",
            "1:2:3:4.0",
            "c5:00.0.1",
            "c5::00.0",
        ] {
            let e = bad.parse::<Bdf>().unwrap_err();
            assert!(e.to_string().contains("invalid PCI address"), "{bad}: {e}");
        }
    }

    #[test]
    fn slot_selector_like_lspci() {
        let s: SlotSelector = "c5:00".parse().unwrap();
        assert!(s.matches(&Bdf::new(0, 0xc5, 0, 6)));
        assert!(!s.matches(&Bdf::new(0, 0xc6, 0, 0)));
        let s: SlotSelector = ".1".parse().unwrap();
        assert!(s.matches(&Bdf::new(0, 0xc5, 0, 1)));
        assert!(!s.matches(&Bdf::new(0, 0xc5, 0, 0)));
        let s: SlotSelector = "*:*.*".parse().unwrap();
        assert!(s.matches(&Bdf::new(3, 1, 2, 3)));
        assert!("c5:40.0".parse::<SlotSelector>().is_err());
    }

    #[test]
    fn id_selector_like_lspci() {
        let s: IdSelector = "1002:1900".parse().unwrap();
        assert!(s.matches(0x1002, 0x1900, 0x030000));
        assert!(!s.matches(0x1002, 0x1640, 0x040300));
        let s: IdSelector = "1002::0403".parse().unwrap();
        assert!(s.matches(0x1002, 0x1640, 0x040300));
        let s: IdSelector = ":".parse().unwrap();
        assert!(s.matches(1, 2, 3));
        assert!("10021:1900".parse::<IdSelector>().is_err());
        assert!("1002".parse::<IdSelector>().is_err());
    }

    proptest! {
        #[test]
        fn bdf_parser_never_panics(s in "\\PC{0,24}") {
            let _ = s.parse::<Bdf>();
            let _ = s.parse::<SlotSelector>();
            let _ = s.parse::<IdSelector>();
        }

        #[test]
        fn bdf_roundtrips(d in 0u32..=0xffff, b in any::<u8>(), dv in 0u8..32, f in 0u8..8) {
            let x = Bdf::new(d, b, dv, f);
            prop_assert_eq!(x.to_string().parse::<Bdf>().unwrap(), x);
        }

        #[test]
        fn selector_shaped_input_never_panics(s in "[0-9a-fA-F:.*]{0,16}") {
            let _ = s.parse::<SlotSelector>();
            let _ = s.parse::<IdSelector>();
            let _ = s.parse::<Bdf>();
        }
    }
}
