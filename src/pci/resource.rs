//! The sysfs `resource` table: one line per resource, `start end flags` in hex
//! (`resource_show` in drivers/pci/pci-sysfs.c). Indexes 0..=5 are the BARs,
//! 6 the expansion ROM, later ones SR-IOV BARs and bridge windows.

use serde::Serialize;

use crate::error::{Error, Result};

// include/linux/ioport.h
pub const IORESOURCE_IO: u64 = 0x0000_0100;
pub const IORESOURCE_MEM: u64 = 0x0000_0200;
pub const IORESOURCE_PREFETCH: u64 = 0x0000_2000;
pub const IORESOURCE_MEM_64: u64 = 0x0010_0000;
pub const IORESOURCE_DISABLED: u64 = 0x1000_0000;
pub const IORESOURCE_UNSET: u64 = 0x2000_0000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Resource {
    pub index: usize,
    pub start: u64,
    pub end: u64,
    pub flags: u64,
}

impl Resource {
    pub fn is_empty(&self) -> bool {
        self.start == 0 && self.end == 0
    }

    pub fn size(&self) -> u64 {
        if self.is_empty() || self.end < self.start {
            0
        } else {
            (self.end - self.start).saturating_add(1)
        }
    }

    pub fn is_mem(&self) -> bool {
        self.flags & IORESOURCE_MEM != 0
    }

    pub fn is_io(&self) -> bool {
        self.flags & IORESOURCE_IO != 0
    }

    pub fn kind(&self) -> &'static str {
        if self.is_io() {
            "io"
        } else if self.is_mem() {
            if self.flags & IORESOURCE_MEM_64 != 0 {
                "mem64"
            } else {
                "mem"
            }
        } else {
            "none"
        }
    }

    pub fn prefetchable(&self) -> bool {
        self.flags & IORESOURCE_PREFETCH != 0
    }
}

fn hex(input: &str, line: usize, field: &str, s: &str) -> Result<u64> {
    let digits = s.strip_prefix("0x").ok_or_else(|| {
        Error::parse(
            "resource table",
            input.lines().nth(line).unwrap_or(""),
            format!("line {}: {field} '{s}' lacks 0x", line + 1),
        )
    })?;
    u64::from_str_radix(digits, 16).map_err(|_| {
        Error::parse(
            "resource table",
            input.lines().nth(line).unwrap_or(""),
            format!("line {}: {field} '{s}' is not hex", line + 1),
        )
    })
}

/// Parses the whole table; empty resources are kept (their index matters).
pub fn parse(input: &str) -> Result<Vec<Resource>> {
    let mut out = Vec::new();
    for (i, line) in input.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() != 3 {
            return Err(Error::parse(
                "resource table",
                line,
                format!(
                    "line {}: expected 'start end flags', found {} fields",
                    i + 1,
                    f.len()
                ),
            ));
        }
        let r = Resource {
            index: out.len(),
            start: hex(input, i, "start", f[0])?,
            end: hex(input, i, "end", f[1])?,
            flags: hex(input, i, "flags", f[2])?,
        };
        if !r.is_empty() && r.end < r.start {
            return Err(Error::parse(
                "resource table",
                line,
                format!("line {}: end is below start", i + 1),
            ));
        }
        out.push(r);
    }
    Ok(out)
}

/// Formats resources as the kernel does (for the twin and snapshots).
pub fn format(res: &[Resource]) -> String {
    res.iter()
        .map(|r| format!("0x{:016x} 0x{:016x} 0x{:016x}\n", r.start, r.end, r.flags))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const IGPU: &str = "0x0000007c00000000 0x0000007c0fffffff 0x000000000014220c
0x0000000000000000 0x0000000000000000 0x0000000000000000
0x00000000dc000000 0x00000000dc1fffff 0x000000000014220c
0x0000000000000000 0x0000000000000000 0x0000000000000000
0x000000000000d000 0x000000000000d0ff 0x0000000000040101
0x00000000dc500000 0x00000000dc57ffff 0x0000000000040200
0x0000000000000000 0x0000000000000000 0x0000000000000000
";

    #[test]
    fn parses_the_igpu_table() {
        let r = parse(IGPU).unwrap();
        assert_eq!(r.len(), 7);
        assert_eq!(r[0].size(), 256 << 20);
        assert_eq!(r[0].kind(), "mem64");
        assert!(r[0].prefetchable());
        assert_eq!(r[2].size(), 2 << 20);
        assert_eq!(r[4].kind(), "io");
        assert_eq!(r[4].size(), 256);
        assert_eq!(r[5].size(), 512 << 10);
        assert_eq!(r[5].kind(), "mem");
        assert!(r[1].is_empty());
        assert_eq!(format(&r), IGPU);
    }

    #[test]
    fn rejects_malformed_lines() {
        for bad in ["0x0 0x1", "0x0 0xzz 0x0", "10 20 30", "0x20 0x10 0x200"] {
            match parse(bad) {
                Err(Error::Parse { what, .. }) => assert!(what.contains("resource"), "{what}"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,200}") {
            let _ = parse(&s);
        }

        #[test]
        fn never_panics_on_shaped_input(s in "(0x[0-9a-f]{0,17} ){0,4}\n{0,2}") {
            let _ = parse(&s);
        }

        #[test]
        fn roundtrips(rs in proptest::collection::vec((any::<u32>(), any::<u32>(), any::<u64>()), 0..17)) {
            let res: Vec<Resource> = rs.iter().enumerate().map(|(i, (s, l, f))| Resource {
                index: i, start: *s as u64, end: *s as u64 + *l as u64, flags: *f,
            }).collect();
            let back = parse(&format(&res)).unwrap();
            prop_assert_eq!(back, res);
        }
    }
}
