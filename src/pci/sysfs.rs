//! The PCI part of sysfs under an injectable root: enumeration of
//! `<root>/bus/pci/devices` with every attribute the reset methods look at,
//! and the topology read from each device's path under `<root>/devices`.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::machine::Machine;
use crate::pci::addr::Bdf;
use crate::pci::config::{ConfigAccess, SysfsConfig};
use crate::pci::resource::{self, Resource};

/// The PCI part of a machine's sysfs.
impl Machine {
    pub fn devices_dir(&self) -> PathBuf {
        self.sysfs.join("bus/pci/devices")
    }

    pub fn device_dir(&self, bdf: &Bdf) -> PathBuf {
        self.devices_dir().join(bdf.to_string())
    }

    pub fn global_rescan(&self) -> PathBuf {
        self.sysfs.join("bus/pci/rescan")
    }

    pub fn drivers_dir(&self) -> PathBuf {
        self.sysfs.join("bus/pci/drivers")
    }

    pub fn vfio_group_node(&self, group: u32) -> PathBuf {
        self.dev.join("vfio").join(group.to_string())
    }
}

/// What sits above a device: a bridge function, or a host bridge's root bus.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(tag = "kind", content = "name", rename_all = "snake_case")]
pub enum Parent {
    Bridge(Bdf),
    RootBus(String),
}

/// ACPI companion of a device (`firmware_node`).
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct FirmwareNode {
    /// The ACPI path (`\_SB_.PCI0.GP17.VGA_`) when the node exposes it.
    pub acpi_path: Option<String>,
    /// Entries of `power_resources_D3hot` (the `_PR3` power resources); `None`
    /// when the directory is absent: the platform cannot cut this device's power.
    pub pr3: Option<Vec<String>>,
}

/// One PCI function as sysfs shows it. Optional attributes are `None` when
/// the kernel does not create them (older kernels, no method found, …).
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Device {
    pub bdf: Bdf,
    #[serde(skip)]
    pub dir: PathBuf,
    /// Canonical directory under `<root>/devices`.
    #[serde(skip)]
    pub real_dir: PathBuf,
    pub vendor: u16,
    pub device: u16,
    pub class: u32,
    pub revision: Option<u8>,
    pub subsystem_vendor: Option<u16>,
    pub subsystem_device: Option<u16>,
    pub driver: Option<String>,
    pub driver_override: Option<String>,
    pub iommu_group: Option<u32>,
    /// Content of `reset_method`; `None` when the attribute is absent.
    pub reset_method: Option<Vec<String>>,
    pub has_reset: bool,
    pub has_remove: bool,
    pub power_state: Option<String>,
    pub d3cold_allowed: Option<bool>,
    pub power_control: Option<String>,
    pub runtime_status: Option<String>,
    pub resources: Vec<Resource>,
    pub parent: Parent,
    /// Other functions on the same bus (siblings under the same parent).
    pub bus_peers: Vec<Bdf>,
    /// Functions below this one, if it is a bridge.
    pub children: Vec<Bdf>,
    /// `pci_bus/<dddd:bb>` under a bridge: the secondary bus's sysfs name.
    pub secondary_bus_dir: Option<String>,
    pub firmware_node: Option<FirmwareNode>,
}

/// Reads a text attribute (bounded, never blocking on a FIFO or device);
/// `Ok(None)` when it does not exist.
pub fn read_attr(path: &Path) -> Result<Option<String>> {
    let Some(bytes) = crate::bounded_read::read_opt(path, crate::bounded_read::ATTR_MAX)? else {
        return Ok(None);
    };
    let s = String::from_utf8_lossy(&bytes);
    Ok(Some(s.trim_end_matches(['\n', '\0']).trim().to_string()))
}

fn required(dir: &Path, name: &str) -> Result<String> {
    let p = dir.join(name);
    read_attr(&p)?.ok_or_else(|| Error::io("read", &p, io::Error::from(io::ErrorKind::NotFound)))
}

/// Parses a `0x1002`-style attribute (`vendor`, `device`, `class`, `revision`, …).
pub fn parse_hex_attr(path: &Path, text: &str, max: u64) -> Result<u64> {
    let digits = text.strip_prefix("0x").unwrap_or(text);
    match u64::from_str_radix(digits, 16) {
        Ok(v) if v <= max => Ok(v),
        _ => Err(Error::parse(
            "sysfs attribute",
            text,
            format!("{} is not a hex value up to {max:#x}", path.display()),
        )),
    }
}

/// The one reader of a device's hex attributes: `<dir>/<name>`, read bounded
/// ([`read_attr`]), parsed by [`parse_hex_attr`] up to `max`; a missing attribute is an error.
pub fn hex_attr(dir: &Path, name: &str, max: u64) -> Result<u64> {
    let text = required(dir, name)?;
    parse_hex_attr(&dir.join(name), &text, max)
}

/// [`hex_attr`] for an attribute that may be absent (`revision`, `subsystem_vendor`).
pub fn opt_hex_attr(dir: &Path, name: &str, max: u64) -> Result<Option<u64>> {
    match read_attr(&dir.join(name))? {
        Some(t) => parse_hex_attr(&dir.join(name), &t, max).map(Some),
        None => Ok(None),
    }
}

/// Basename of a symlink's target (`driver` → `vfio-pci`), `None` if absent.
pub fn link_name(path: &Path) -> Result<Option<String>> {
    match fs::read_link(path) {
        Ok(t) => Ok(t.file_name().map(|n| n.to_string_lossy().into_owned())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("readlink", path, e)),
    }
}

/// The PCI functions under `<sysfs>/bus/pci/devices`, sorted. Entries whose names are not PCI
/// addresses are skipped; an unreadable directory is an error.
pub fn functions(sysfs: &Path) -> Result<Vec<Bdf>> {
    let dir = sysfs.join("bus/pci/devices");
    let rd = fs::read_dir(&dir).map_err(|e| Error::io("read directory", &dir, e))?;
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| Error::io("read directory", &dir, e))?;
        if let Some(b) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<Bdf>().ok())
        {
            out.push(b);
        }
    }
    out.sort();
    Ok(out)
}

fn bdf_children(dir: &Path) -> Vec<Bdf> {
    let mut v: Vec<Bdf> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<Bdf>().ok()))
        .collect();
    v.sort();
    v
}

fn firmware_node(dir: &Path) -> Result<Option<FirmwareNode>> {
    let fw = dir.join("firmware_node");
    if fs::symlink_metadata(&fw).is_err() {
        return Ok(None);
    }
    let acpi_path = read_attr(&fw.join("path")).ok().flatten();
    let pr3_dir = fw.join("power_resources_D3hot");
    let pr3 = match fs::read_dir(&pr3_dir) {
        Ok(rd) => {
            let mut v: Vec<String> = rd
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            Some(v)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::io("read directory", &pr3_dir, e)),
    };
    Ok(Some(FirmwareNode { acpi_path, pr3 }))
}

impl Device {
    /// Reads one device's attributes. `vendor`, `device` and `class` must be
    /// there and parse; every other attribute is optional, but an attribute
    /// that exists and cannot be read is an error naming it.
    pub fn load(host: &Machine, bdf: Bdf) -> Result<Device> {
        Self::load_cached(host, bdf, &mut BTreeMap::new())
    }

    /// [`Device::load`] with the parent directories' listings shared across
    /// a scan: every function on a bus lists the same parent, and re-reading
    /// it per function made a scan quadratic in the bus's size.
    fn load_cached(
        host: &Machine,
        bdf: Bdf,
        parents: &mut BTreeMap<PathBuf, Vec<Bdf>>,
    ) -> Result<Device> {
        let dir = host.device_dir(&bdf);
        if fs::symlink_metadata(&dir).is_err() {
            return Err(Error::not_found(
                "PCI device",
                format!("{bdf} (no {})", dir.display()),
            ));
        }
        let real_dir = fs::canonicalize(&dir).map_err(|e| Error::io("resolve", &dir, e))?;
        let vendor = hex_attr(&dir, "vendor", 0xffff)? as u16;
        let device = hex_attr(&dir, "device", 0xffff)? as u16;
        let class = hex_attr(&dir, "class", 0xff_ffff)? as u32;
        let parent_dir = real_dir.parent().unwrap_or(&real_dir).to_path_buf();
        let parent_name = parent_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let parent = match parent_name.parse::<Bdf>() {
            Ok(b) => Parent::Bridge(b),
            Err(_) => Parent::RootBus(parent_name),
        };
        let bus_peers = parents
            .entry(parent_dir.clone())
            .or_insert_with(|| bdf_children(&parent_dir))
            .iter()
            .copied()
            .filter(|b| *b != bdf && b.bus == bdf.bus && b.domain == bdf.domain)
            .collect();
        let secondary_bus_dir = fs::read_dir(real_dir.join("pci_bus"))
            .ok()
            .and_then(|mut rd| rd.next())
            .and_then(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned());
        let resources = match read_attr(&dir.join("resource"))? {
            Some(t) => resource::parse(&t)?,
            None => Vec::new(),
        };
        let reset_method = read_attr(&dir.join("reset_method"))?
            .map(|s| s.split_whitespace().map(str::to_string).collect());
        Ok(Device {
            bdf,
            revision: opt_hex_attr(&dir, "revision", 0xff)?.map(|v| v as u8),
            subsystem_vendor: opt_hex_attr(&dir, "subsystem_vendor", 0xffff)?.map(|v| v as u16),
            subsystem_device: opt_hex_attr(&dir, "subsystem_device", 0xffff)?.map(|v| v as u16),
            driver: link_name(&dir.join("driver"))?,
            driver_override: read_attr(&dir.join("driver_override"))?
                .filter(|s| !s.is_empty() && s != "(null)"),
            iommu_group: link_name(&dir.join("iommu_group"))?.and_then(|g| g.parse().ok()),
            reset_method,
            has_reset: fs::symlink_metadata(dir.join("reset")).is_ok(),
            has_remove: fs::symlink_metadata(dir.join("remove")).is_ok(),
            power_state: read_attr(&dir.join("power_state"))?,
            d3cold_allowed: read_attr(&dir.join("d3cold_allowed"))?.map(|s| s == "1"),
            power_control: read_attr(&dir.join("power/control"))?,
            runtime_status: read_attr(&dir.join("power/runtime_status"))?,
            children: bdf_children(&real_dir),
            firmware_node: firmware_node(&dir)?,
            resources,
            parent,
            bus_peers,
            secondary_bus_dir,
            vendor,
            device,
            class,
            dir,
            real_dir,
        })
    }

    /// `class >> 8`: base class and subclass (`0x0300` for VGA).
    pub fn class16(&self) -> u16 {
        (self.class >> 8) as u16
    }

    pub fn in_d3cold(&self) -> bool {
        self.power_state.as_deref() == Some("D3cold")
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("config")
    }

    /// Opens `config` read-only. Never call this for a device in D3cold
    /// without meaning to wake it.
    pub fn open_config(&self) -> Result<SysfsConfig> {
        SysfsConfig::open(&self.config_path())
    }

    /// Opens `config` for journalled writes: read-write for real, read-only
    /// in a dry run (the journal records and makes no write then, and the
    /// file could not take one). The one place that decides it; a session
    /// hands it out as [`crate::pci::session::Session::config`].
    pub fn config_for_writes(&self, dry_run: bool) -> Result<SysfsConfig> {
        if dry_run {
            self.open_config()
        } else {
            SysfsConfig::open_rw(&self.config_path())
        }
    }

    /// Reads the full config space, refusing to wake a device in D3cold.
    pub fn read_config(&self) -> Result<Vec<u8>> {
        if self.in_d3cold() {
            return Err(Error::refused(format!(
                "{}: not reading config: the device is in D3cold and the read would wake it",
                self.bdf
            )));
        }
        let cfg = self.open_config()?;
        let bytes = cfg.read_all().map_err(|e| match e {
            Error::AllOnes { path, offset, .. } => Error::AllOnes {
                bdf: Some(self.bdf),
                path,
                offset,
            },
            e => e,
        })?;
        Ok(bytes)
    }

    pub fn name(&self) -> String {
        crate::pci::names::device_name(self.vendor, self.device)
    }
}

/// Every device under the root, by address.
#[derive(Debug, Clone, Default)]
pub struct Topology {
    pub devices: BTreeMap<Bdf, Device>,
    /// Devices listed but not loaded: gone while we read them (another
    /// process removed them) or unreadable; each with why.
    pub skipped: BTreeMap<Bdf, String>,
}

impl Topology {
    /// Reads every device. The bus may change under us (another resetlab
    /// remove-rescanning a function): a device that vanishes or cannot be
    /// read is recorded in `skipped` and the rest goes on.
    pub fn scan(host: &Machine) -> Result<Topology> {
        let mut devices = BTreeMap::new();
        let mut skipped = BTreeMap::new();
        let mut parents = BTreeMap::new();
        for bdf in functions(&host.sysfs)? {
            match Device::load_cached(host, bdf, &mut parents) {
                Ok(d) => {
                    devices.insert(bdf, d);
                }
                Err(e) => {
                    let why = if fs::symlink_metadata(host.device_dir(&bdf)).is_err() {
                        "left the bus while it was being read".to_string()
                    } else {
                        format!("could not be read: {}", e.one_line())
                    };
                    skipped.insert(bdf, why);
                }
            }
        }
        Ok(Topology { devices, skipped })
    }

    pub fn get(&self, bdf: &Bdf) -> Option<&Device> {
        self.devices.get(bdf)
    }

    /// The device, or an error that says why it is not here (never there,
    /// or skipped by the scan and why).
    pub fn require(&self, bdf: &Bdf) -> Result<&Device> {
        if let Some(d) = self.devices.get(bdf) {
            return Ok(d);
        }
        match self.skipped.get(bdf) {
            Some(why) => Err(Error::failed(format!("{bdf} {why}"))),
            None => Err(Error::not_found("PCI device", bdf.to_string())),
        }
    }

    /// Re-reads one device (after a method that may have re-created it)
    /// without rescanning the tree.
    pub fn reload(&mut self, host: &Machine, bdf: &Bdf) -> Result<&Device> {
        let d = Device::load(host, *bdf)?;
        self.skipped.remove(bdf);
        self.devices.insert(*bdf, d);
        Ok(&self.devices[bdf])
    }

    /// Every function below a bridge, recursively.
    pub fn subtree(&self, bridge: &Bdf) -> Vec<Bdf> {
        let mut out = Vec::new();
        let mut stack = vec![*bridge];
        while let Some(b) = stack.pop() {
            if let Some(d) = self.devices.get(&b) {
                for c in &d.children {
                    if !out.contains(c) {
                        out.push(*c);
                        stack.push(*c);
                    }
                }
            }
        }
        out.sort();
        out
    }

    /// The secondary-bus blast radius of a reset at `dev`'s upstream bridge:
    /// every other function on its bus and everything below them.
    pub fn bus_blast_radius(&self, dev: &Device) -> Vec<Bdf> {
        let mut out = Vec::new();
        for p in &dev.bus_peers {
            out.push(*p);
            out.extend(self.subtree(p));
        }
        out.extend(self.subtree(&dev.bdf));
        out.sort();
        out.dedup();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_attrs_are_checked() {
        let p = Path::new("vendor");
        assert_eq!(parse_hex_attr(p, "0x1002", 0xffff).unwrap(), 0x1002);
        for bad in ["0x10020", "zz", ""] {
            let e = parse_hex_attr(p, bad, 0xffff).unwrap_err();
            assert!(
                matches!(&e, Error::Parse { what: "sysfs attribute", input, reason }
                    if input == bad && reason == "vendor is not a hex value up to 0xffff"),
                "{bad:?}: {e:?}"
            );
        }
    }
}
