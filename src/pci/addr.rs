//! PCI addresses (`0000:c5:00.0`, `c5:00.0`); lspci's selectors are in
//! `filter.rs`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

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
    pub fn slot(&self) -> Slot {
        Slot {
            domain: self.domain,
            bus: self.bus,
            dev: self.dev,
        }
    }

    /// Short form as lspci prints it without `-D` (`c5:00.0`).
    pub fn short(&self) -> String {
        format!("{:02x}:{:02x}.{:x}", self.bus, self.dev, self.func)
    }
}

/// A PCI slot: every function of one device (`0000:c5:00`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Slot {
    pub domain: u32,
    pub bus: u8,
    pub dev: u8,
}

impl Slot {
    /// Function `func` of this slot.
    pub const fn function(&self, func: u8) -> Bdf {
        Bdf::new(self.domain, self.bus, self.dev, func)
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04x}:{:02x}:{:02x}", self.domain, self.bus, self.dev)
    }
}

impl Serialize for Slot {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
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

crate::string_schema!(
    Bdf,
    "PCI function address, dddd:bb:dd.f in lower-case hex (0000:c5:00.0)"
);

impl Serialize for Bdf {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Bdf {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse()
            .map_err(|e: Error| serde::de::Error::custom(e.to_string()))
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
        assert_eq!(a.slot().to_string(), "0000:c5:00");
        assert_eq!(a.slot().function(1), Bdf::new(0, 0xc5, 0, 1));
        assert_eq!(
            "0001:00:1f.7".parse::<Bdf>().unwrap(),
            Bdf::new(1, 0, 0x1f, 7)
        );
    }

    /// The forms `vbios --from-rom DEV` and `regs bases DEV` accepted with their own parsers
    /// (moved here when those went): upper case, no domain, no path tricks.
    #[test]
    fn forms_of_vbios_and_regs_arguments() {
        let p = |s: &str| s.parse::<Bdf>().map(|b| b.to_string());
        assert_eq!(p("c5:00.0").unwrap(), "0000:c5:00.0");
        assert_eq!(p("0000:C5:00.6").unwrap(), "0000:c5:00.6");
        for bad in [
            "c5:20.0",
            "c5:00.8",
            "c5:00",
            "../c5:00.0",
            "1:2:3:4.0",
            "../../x",
        ] {
            let e = bad.parse::<Bdf>().unwrap_err();
            assert!(e.to_string().contains("invalid PCI address"), "{bad}: {e}");
        }
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

    proptest! {
        #[test]
        fn bdf_parser_never_panics(s in "\\PC{0,24}") {
            let _ = s.parse::<Bdf>();
        }

        #[test]
        fn bdf_roundtrips(d in 0u32..=0xffff, b in any::<u8>(), dv in 0u8..32, f in 0u8..8) {
            let x = Bdf::new(d, b, dv, f);
            prop_assert_eq!(x.to_string().parse::<Bdf>().unwrap(), x);
        }

        #[test]
        fn selector_shaped_input_never_panics(s in "[0-9a-fA-F:.*]{0,16}") {
            let _ = s.parse::<Bdf>();
        }
    }
}
