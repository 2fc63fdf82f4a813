//! Names from the pci.ids database, as lspci prints them: the system's copy
//! when there is one (lspci reads /usr/share/misc/pci.ids or
//! /usr/share/hwdata/pci.ids, whichever the distribution ships), else the
//! copy the `pci-ids` crate embeds at build time.
//!
//! `RESETLAB_PCI_IDS` overrides: a file path, or `embedded`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use pci_ids::FromId;

/// Where lspci's distributions keep pci.ids (pciutils' PCI_IDS_DIR).
pub const SYSTEM_PATHS: &[&str] = &["/usr/share/misc/pci.ids", "/usr/share/hwdata/pci.ids"];

/// A pci.ids file read from disk (vendors, devices, classes, subclasses).
#[derive(Debug, Default)]
pub struct IdsFile {
    pub path: PathBuf,
    /// The `# Version: …` line (a tab after `#`), when the file has one.
    pub version: Option<String>,
    vendors: HashMap<u16, String>,
    devices: HashMap<(u16, u16), String>,
    classes: HashMap<u8, String>,
    subclasses: HashMap<(u8, u8), String>,
}

fn split_id(line: &str, digits: usize) -> Option<(u32, &str)> {
    let (id, name) = line.split_at_checked(digits)?;
    let v = u32::from_str_radix(id, 16).ok()?;
    let name = name.trim();
    (!name.is_empty()).then_some((v, name))
}

impl IdsFile {
    /// Parses the pci.ids format (pciutils lib/names-parse.c): vendor lines
    /// at column 0, devices after one tab, subsystems after two (skipped);
    /// `C cc name` starts the class section, subclasses after one tab.
    pub fn parse(path: &Path, text: &str) -> IdsFile {
        let mut f = IdsFile {
            path: path.to_path_buf(),
            ..Default::default()
        };
        enum Sec {
            None,
            Vendor(u16),
            Class(u8),
            Other,
        }
        let mut sec = Sec::None;
        for line in text.lines() {
            if let Some(v) = line.strip_prefix("#\tVersion:") {
                f.version = Some(v.trim().to_string());
            }
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(rest) = line.strip_prefix("\t\t") {
                let _ = rest; // subsystems and prog-ifs: not shown
                continue;
            }
            if let Some(rest) = line.strip_prefix('\t') {
                match sec {
                    Sec::Vendor(v) => {
                        if let Some((d, n)) = split_id(rest, 4) {
                            f.devices.insert((v, d as u16), n.to_string());
                        }
                    }
                    Sec::Class(c) => {
                        if let Some((s, n)) = split_id(rest, 2) {
                            f.subclasses.insert((c, s as u8), n.to_string());
                        }
                    }
                    _ => {}
                }
                continue;
            }
            if let Some(rest) = line.strip_prefix("C ") {
                sec = match split_id(rest, 2) {
                    Some((c, n)) => {
                        f.classes.insert(c as u8, n.to_string());
                        Sec::Class(c as u8)
                    }
                    None => Sec::Other,
                };
                continue;
            }
            sec = match split_id(line, 4) {
                Some((v, n)) if line.as_bytes().get(4) == Some(&b' ') => {
                    f.vendors.insert(v as u16, n.to_string());
                    Sec::Vendor(v as u16)
                }
                // `X xx` sections (device types, languages, …) are not PCI ids.
                _ => Sec::Other,
            };
        }
        f
    }
}

/// Which database names come from.
#[derive(Debug)]
pub enum Source {
    System(Box<IdsFile>),
    Embedded,
}

fn load() -> Source {
    let from = |p: &Path| {
        std::fs::read_to_string(p)
            .ok()
            .map(|t| Source::System(Box::new(IdsFile::parse(p, &t))))
    };
    match std::env::var_os("RESETLAB_PCI_IDS") {
        Some(v) if v == "embedded" => return Source::Embedded,
        Some(v) => {
            if let Some(s) = from(Path::new(&v)) {
                return s;
            }
        }
        None => {}
    }
    SYSTEM_PATHS
        .iter()
        .find_map(|p| from(Path::new(p)))
        .unwrap_or(Source::Embedded)
}

pub fn source() -> &'static Source {
    static S: OnceLock<Source> = OnceLock::new();
    S.get_or_init(load)
}

/// One line for `--version -v`.
pub fn describe_source() -> String {
    match source() {
        Source::System(f) => format!(
            "pci.ids: {}{}",
            f.path.display(),
            f.version
                .as_deref()
                .map(|v| format!(" (version {v})"))
                .unwrap_or_default()
        ),
        Source::Embedded => format!(
            "pci.ids: the embedded copy (pci-ids crate; none at {})",
            SYSTEM_PATHS.join(" or ")
        ),
    }
}

fn vendor_name(vendor: u16) -> Option<String> {
    match source() {
        Source::System(f) => f.vendors.get(&vendor).cloned(),
        Source::Embedded => pci_ids::Vendor::from_id(vendor).map(|v| v.name().to_string()),
    }
}

fn device_only(vendor: u16, device: u16) -> Option<String> {
    match source() {
        Source::System(f) => f.devices.get(&(vendor, device)).cloned(),
        Source::Embedded => {
            pci_ids::Device::from_vid_pid(vendor, device).map(|d| d.name().to_string())
        }
    }
}

/// `Vendor Device`, falling back to the ids when the database lacks them.
pub fn device_name(vendor: u16, device: u16) -> String {
    match (vendor_name(vendor), device_only(vendor, device)) {
        (Some(v), Some(d)) => format!("{v} {d}"),
        (Some(v), None) => format!("{v} Device {device:04x}"),
        _ => format!("Device {vendor:04x}:{device:04x}"),
    }
}

/// A short name for one-line views: the vendor's bracketed short form
/// (`AMD/ATI` of `Advanced Micro Devices, Inc. [AMD/ATI]`) and the device.
pub fn short_name(vendor: u16, device: u16) -> String {
    let v = vendor_name(vendor).map(|v| match (v.rfind('['), v.ends_with(']')) {
        (Some(i), true) => v[i + 1..v.len() - 1].to_string(),
        _ => v.split([',', ' ']).next().unwrap_or(&v).to_string(),
    });
    match (v, device_only(vendor, device)) {
        (Some(v), Some(d)) if d.starts_with(&format!("{v} ")) => d,
        (Some(v), Some(d)) => format!("{v} {d}"),
        (Some(v), None) => format!("{v} Device {device:04x}"),
        _ => format!("Device {vendor:04x}:{device:04x}"),
    }
}

/// The subclass name of a 24-bit class code (`VGA compatible controller`).
pub fn class_name(class: u32) -> String {
    let (base, sub) = ((class >> 16) as u8, (class >> 8) as u8);
    let (s, c) = match source() {
        Source::System(f) => (
            f.subclasses.get(&(base, sub)).cloned(),
            f.classes.get(&base).cloned(),
        ),
        Source::Embedded => (
            pci_ids::Subclass::from_cid_sid(base, sub).map(|s| s.name().to_string()),
            pci_ids::Class::from_id(base).map(|c| c.name().to_string()),
        ),
    };
    s.or(c)
        .unwrap_or_else(|| format!("Class {:04x}", class >> 8))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_igpu() {
        let n = device_name(0x1002, 0x1900);
        assert!(n.starts_with("Advanced Micro Devices"), "{n}");
        assert!(short_name(0x1002, 0x1900).starts_with("AMD/ATI "));
        assert_eq!(class_name(0x030000), "VGA compatible controller");
        assert_eq!(device_name(0xfff0, 0x1234), "Device fff0:1234");
    }

    #[test]
    fn parses_a_pci_ids_file() {
        let text = "#\tVersion: 2025.01.01\n# comment\n1002  Advanced Micro Devices, Inc. [AMD/ATI]\n\
                    \t1900  HawkPoint1\n\t\t1002 0123  Some subsystem\nffff  Illegal Vendor ID\n\
                    C 03  Display controller\n\t00  VGA compatible controller\n\t\t00  VGA controller\n\
                    C 0c  Serial bus controller\n\t03  USB controller\nR 01  Not a vendor\n";
        let f = IdsFile::parse(Path::new("/x/pci.ids"), text);
        assert_eq!(f.version.as_deref(), Some("2025.01.01"));
        assert_eq!(f.devices[&(0x1002, 0x1900)], "HawkPoint1");
        assert_eq!(f.vendors[&0x1002], "Advanced Micro Devices, Inc. [AMD/ATI]");
        assert_eq!(f.subclasses[&(3, 0)], "VGA compatible controller");
        assert_eq!(f.subclasses[&(0xc, 3)], "USB controller");
        assert_eq!(f.classes.len(), 2);
        assert_eq!(f.vendors.len(), 2);
    }
}
