//! lspci's device filters, read as pciutils reads them (lib/filter.c:
//! `pci_filter_parse_slot`, `pci_filter_parse_id`, `pci_filter_match`):
//!
//! - `-s [[[domain]:][bus]:][slot][.[func]]`: every part optional, `*` or
//!   empty = any; domain up to 0x7fffffff, bus 0xff, slot 0x1f, func 7.
//! - `-d [vendor]:[device][:class[:prog-if]]`: at least two fields; `class`
//!   is the 16-bit base+sub class (`0300`), where `x` matches any hex digit
//!   (`03xx` = every display controller); `03` alone is class 0x0003, as in
//!   lspci, and so matches nothing real. `prog-if` is 8 bits.
//!
//! A field's value may have any number of leading zeros; it is refused only
//! when it exceeds its maximum (filter.c bounds the digits read, not their
//! count). Expressions of 64 characters or more are refused, as filter.c's
//! BUF_SIZE does.

use std::str::FromStr;

use crate::error::{Error, Result};
use crate::pci::Bdf;

/// filter.c's BUF_SIZE: longer expressions are "Expression too long".
const BUF_SIZE: usize = 64;

fn defined(field: Option<&str>) -> Option<&str> {
    field.filter(|f| !f.is_empty() && *f != "*")
}

/// parse_hex_field: hex digits, `x` as a wildcard digit where `masked`;
/// returns (value, mask), or None when a character is not hex or the value
/// (with wildcards as 1) exceeds `max`.
fn hex_field(s: &str, masked: bool, max: u32) -> Option<(u32, u32)> {
    let (mut out, mut mask, mut bound) = (0u32, !0u32, 0u32);
    for c in s.chars() {
        if masked && (c == 'x' || c == 'X') {
            out <<= 4;
            bound = (bound << 4) | 1;
            mask <<= 4;
        } else {
            let d = c.to_digit(16)?;
            out = (out << 4) | d;
            bound = (bound << 4) | d;
            mask = (mask << 4) | 0xf;
        }
        if bound > max {
            return None;
        }
    }
    Some((out, mask))
}

fn split<'a>(input: &'a str, what: &'static str, sep: char, n: usize) -> Result<Vec<&'a str>> {
    if input.len() >= BUF_SIZE {
        return Err(Error::parse(what, input, "expression too long"));
    }
    let v: Vec<&str> = input.split(sep).collect();
    if v.len() > n {
        return Err(Error::parse(what, input, "too many fields"));
    }
    Ok(v)
}

/// `-s [[[domain]:][bus]:][slot][.[func]]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlotSelector {
    pub domain: Option<u32>,
    pub bus: Option<u8>,
    pub dev: Option<u8>,
    pub func: Option<u8>,
}

impl FromStr for SlotSelector {
    type Err = Error;

    fn from_str(input: &str) -> Result<Self> {
        const WHAT: &str = "slot selector (-s [[[domain]:][bus]:][slot][.[func]])";
        let f = split(input, WHAT, ':', 3)?;
        let bad = |msg: &str| Error::parse(WHAT, input, msg);
        let num = |field: Option<&str>, max: u32, msg: &str| -> Result<Option<u32>> {
            match defined(field) {
                None => Ok(None),
                Some(s) => hex_field(s, false, max)
                    .map(|(v, _)| Some(v))
                    .ok_or_else(|| bad(msg)),
            }
        };
        let mut sel = SlotSelector::default();
        let mut i = 0;
        if f.len() == 3 {
            sel.domain = num(Some(f[0]), 0x7fff_ffff, "invalid domain number")?;
            i += 1;
        }
        if f.len() > i + 1 {
            sel.bus = num(Some(f[i]), 0xff, "invalid bus number")?.map(|v| v as u8);
            i += 1;
        }
        if let Some(fdev) = defined(Some(f[i])) {
            let sf: Vec<&str> = fdev.split('.').collect();
            if sf.len() > 2 {
                return Err(bad("invalid slot/function number"));
            }
            sel.dev = num(Some(sf[0]), 0x1f, "invalid slot number")?.map(|v| v as u8);
            sel.func = num(sf.get(1).copied(), 7, "invalid function number")?.map(|v| v as u8);
        }
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

/// `-d [vendor]:[device][:class[:prog-if]]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdSelector {
    pub vendor: Option<u16>,
    pub device: Option<u16>,
    /// The 16-bit base+sub class and the mask of its non-wildcard bits.
    pub class: Option<(u16, u16)>,
    pub prog_if: Option<u8>,
}

impl FromStr for IdSelector {
    type Err = Error;

    fn from_str(input: &str) -> Result<Self> {
        const WHAT: &str = "id selector (-d [vendor]:[device][:class[:prog-if]])";
        let f = split(input, WHAT, ':', 4)?;
        if f.len() < 2 {
            return Err(Error::parse(
                WHAT,
                input,
                "at least two fields must be given (vendor:device, e.g. 1002:1900 or ::0300)",
            ));
        }
        let field = |i: usize, masked: bool, max: u32, msg: &str| -> Result<Option<(u32, u32)>> {
            match defined(f.get(i).copied()) {
                None => Ok(None),
                Some(s) => hex_field(s, masked, max)
                    .map(Some)
                    .ok_or_else(|| Error::parse(WHAT, input, msg)),
            }
        };
        Ok(IdSelector {
            vendor: field(0, false, 0xffff, "invalid vendor ID")?.map(|(v, _)| v as u16),
            device: field(1, false, 0xffff, "invalid device ID")?.map(|(v, _)| v as u16),
            class: field(
                2,
                true,
                0xffff,
                "invalid class code (4 hex digits of base and sub class, x = any: 0300, 03xx)",
            )?
            .map(|(v, m)| (v as u16, m as u16)),
            prog_if: field(3, false, 0xff, "invalid programming interface code")?
                .map(|(v, _)| v as u8),
        })
    }
}

impl IdSelector {
    /// `class` is the 24-bit class code (base, sub, prog-if).
    pub fn matches(&self, vendor: u16, device: u16, class: u32) -> bool {
        let class16 = (class >> 8) as u16;
        self.vendor.is_none_or(|v| v == vendor)
            && self.device.is_none_or(|d| d == device)
            && self.class.is_none_or(|(c, m)| (c ^ class16) & m == 0)
            && self.prog_if.is_none_or(|p| p == class as u8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(s: &str) -> IdSelector {
        s.parse().unwrap()
    }
    fn slot(s: &str) -> SlotSelector {
        s.parse().unwrap()
    }

    #[test]
    fn class_is_sixteen_bits_as_in_lspci() {
        assert!(id("::0300").matches(0x1002, 0x1900, 0x030000));
        assert!(!id("::0300").matches(0x1002, 0x1640, 0x040300));
        // `03` is class 0x0003, not "base class 03".
        assert!(!id("::03").matches(0x1002, 0x1900, 0x030000));
        assert!(id("::0003").matches(1, 2, 0x000300));
        assert!(id("::03xx").matches(0x1002, 0x1900, 0x030000));
        assert!(id("::03xx").matches(0x1002, 0x1900, 0x038000));
        assert!(!id("::03xx").matches(0x1002, 0x1640, 0x040300));
        assert!(id("::xx03").matches(0x1022, 0x15b9, 0x0c0330));
        assert!(id("::0c03:30").matches(0x1022, 0x15b9, 0x0c0330));
        assert!(!id("::0c03:10").matches(0x1022, 0x15b9, 0x0c0330));
        assert!(id("1002:").matches(0x1002, 7, 0));
        assert!(id(":1900").matches(0x1002, 0x1900, 0));
        assert!(id("*:*:*:*").matches(1, 2, 3));
        assert!(id("00001002:1900").matches(0x1002, 0x1900, 0));
    }

    #[test]
    fn id_refusals_as_in_filter_c() {
        for (bad, why) in [
            ("1002", "at least two fields"),
            ("10021:1900", "invalid vendor ID"),
            ("1002:19g0", "invalid device ID"),
            ("1002x:1900", "invalid vendor ID"),
            ("::10000", "invalid class code"),
            ("::03:100", "invalid programming interface"),
            ("1:2:3:4:5", "too many fields"),
        ] {
            let e = bad.parse::<IdSelector>().unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
        let long = format!("{}:1", "0".repeat(70));
        assert!(long
            .parse::<IdSelector>()
            .unwrap_err()
            .to_string()
            .contains("too long"));
    }

    #[test]
    fn slots_as_in_filter_c() {
        let s = slot("c5:00");
        assert_eq!((s.bus, s.dev, s.func), (Some(0xc5), Some(0), None));
        assert!(s.matches(&Bdf::new(0, 0xc5, 0, 6)));
        assert!(!s.matches(&Bdf::new(0, 0xc6, 0, 0)));
        assert!(slot(".1").matches(&Bdf::new(0, 0xc5, 0, 1)));
        assert!(!slot(".1").matches(&Bdf::new(0, 0xc5, 0, 0)));
        assert!(slot("*:*.*").matches(&Bdf::new(3, 1, 2, 3)));
        assert!(slot("c5:").matches(&Bdf::new(0, 0xc5, 3, 3)));
        assert!(slot("1::").matches(&Bdf::new(1, 9, 3, 3)));
        assert!(!slot("1::").matches(&Bdf::new(0, 9, 3, 3)));
        assert_eq!(
            slot("0000:c5:00.0"),
            SlotSelector {
                domain: Some(0),
                bus: Some(0xc5),
                dev: Some(0),
                func: Some(0)
            }
        );
        assert!(slot("").matches(&Bdf::new(1, 2, 3, 4)));
        for (bad, why) in [
            ("c5", "invalid slot number"),
            ("c5:40.0", "invalid slot number"),
            ("c5:00.8", "invalid function number"),
            ("100:00.0", "invalid bus number"),
            ("80000000:00:00.0", "invalid domain number"),
            ("0:0:0:0", "too many fields"),
            ("0:0.0.0", "invalid slot/function"),
        ] {
            let e = bad.parse::<SlotSelector>().unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,80}") {
            let _ = s.parse::<SlotSelector>();
            let _ = s.parse::<IdSelector>();
        }

        #[test]
        fn selector_shaped_input_never_panics(s in "[0-9a-fA-FxX:.*]{0,24}") {
            let _ = s.parse::<SlotSelector>();
            let _ = s.parse::<IdSelector>();
        }

        #[test]
        fn an_exact_class_selects_its_class(c in any::<u16>(), p in any::<u8>()) {
            let sel = id(&format!("::{c:04x}"));
            prop_assert!(sel.matches(0, 0, ((c as u32) << 8) | p as u32));
            prop_assert!(!sel.matches(0, 0, ((c.wrapping_add(1) as u32) << 8) | p as u32));
        }
    }
}
