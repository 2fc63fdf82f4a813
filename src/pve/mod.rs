//! Proxmox VE configuration files, read the way Proxmox reads them.
//!
//! - VM config `/etc/pve/qemu-server/<vmid>.conf` (qemu-server `PVE/QemuServer.pm`,
//!   `parse_vm_config`): only the current config; `[PENDING]`, `[special:…]` and snapshot
//!   sections are skipped.
//! - `hostpciN` values (qemu-server `PVE/QemuServer/PCI.pm`, `$hostpci_fmt`, `parse_hostpci`).
//! - Resource mappings `/etc/pve/mapping/pci.cfg` (pve-guest-common `PVE/Mapping/PCI.pm`,
//!   a `PVE::SectionConfig` with a bare `<id>` header and `map` lines).
//! - Storage config `/etc/pve/storage.cfg` (pve-storage `PVE/Storage/Plugin.pm`), enough to find
//!   a storage's snippets directory.
//!
//! Every path root is a parameter; nothing here touches hardware. Proxmox itself warns and skips
//! lines it cannot parse; resetlab stops with the file and line instead, so the hook never acts on
//! a config it only half understood.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Serialize, Serializer};

use crate::error::{Error, Result};
pub use crate::pci::{Bdf, Slot};

/// Default Proxmox cluster filesystem mount point (`--pve-config DIR`).
pub const DEFAULT_PVE_ROOT: &str = "/etc/pve";

/// qemu-server `PVE/QemuServer/PCI.pm`: `$MAX_HOSTPCI_DEVICES = 16` (`hostpci0`..`hostpci15`).
pub const MAX_HOSTPCI_DEVICES: u8 = 16;

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

    fn parse_reason(s: &str) -> std::result::Result<PciTarget, String> {
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

/// The PCI functions present under `<sysfs_root>/bus/pci/devices` (sorted). Entries whose
/// names are not PCI addresses are skipped.
pub fn present_functions(sysfs_root: &Path) -> Result<Vec<Bdf>> {
    let dir = sysfs_root.join("bus/pci/devices");
    let rd = std::fs::read_dir(&dir).map_err(|e| Error::io("read directory", &dir, e))?;
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| Error::io("read directory", &dir, e))?;
        if let Some(name) = entry.file_name().to_str() {
            if let Ok(b) = name.parse::<Bdf>() {
                out.push(b);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The Proxmox node name of this machine: the host name up to the first dot
/// (pve-common `PVE/INotify.pm` `nodename`: `(POSIX::uname())[1]` with the domain stripped).
pub fn local_node_name() -> Result<String> {
    let p = Path::new("/proc/sys/kernel/hostname");
    let raw = crate::pci::bounded_read::read_text(p, crate::pci::bounded_read::TEXT_FILE_MAX)?;
    node_name_from_hostname(&raw)
}

/// `host.example.org\n` → `host`.
pub fn node_name_from_hostname(raw: &str) -> Result<String> {
    let name = raw.trim().split('.').next().unwrap_or("");
    if name.is_empty() {
        return Err(Error::parse("host name", raw.trim(), "empty node name"));
    }
    Ok(name.to_string())
}

// ---------------------------------------------------------------------------------------------
// Shared line helpers
// ---------------------------------------------------------------------------------------------

/// Lines split on `\n` with one trailing `\r` removed (files edited on Windows), numbered from 1.
fn lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.split('\n')
        .enumerate()
        .map(|(i, l)| (i + 1, l.strip_suffix('\r').unwrap_or(l)))
}

/// 1-based character column of byte offset `off` in `line`.
fn column(line: &str, off: usize) -> usize {
    line.get(..off).map_or(1, |s| s.chars().count() + 1)
}

fn file_err(path: &Path, line: usize, column: usize, reason: impl Into<String>) -> Error {
    Error::FileParse {
        path: path.to_path_buf(),
        line,
        column,
        reason: reason.into(),
    }
}

/// Byte offset of `inner` within `outer` (both slices of the same string).
fn offset_in(outer: &str, inner: &str) -> usize {
    (inner.as_ptr() as usize).saturating_sub(outer.as_ptr() as usize)
}

/// pve-common `PVE/JSONSchema.pm` `$CONFIGID_RE = qr/[a-z][a-z0-9_-]+/i` (mapping and storage ids).
pub fn is_config_id(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 2
        && b[0].is_ascii_alphabetic()
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b'-')
}

/// pve-common `PVE/JSONSchema.pm` `parse_boolean`.
pub fn parse_pve_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "on" | "yes" | "true" => Some(true),
        "0" | "off" | "no" | "false" => Some(false),
        _ => None,
    }
}

/// One `key=value` of a property string, with the byte offset of the part in the value.
#[derive(Debug, Clone)]
struct Prop<'a> {
    key: Option<&'a str>,
    value: &'a str,
    offset: usize,
}

/// Split a Proxmox property string (pve-common `PVE/JSONSchema.pm` `parse_property_string`):
/// comma-separated parts, blank parts skipped, `key=value` (value non-empty) or a bare value for
/// the format's default key. Errors carry the byte offset of the bad part.
fn split_property_string(value: &str) -> std::result::Result<Vec<Prop<'_>>, (usize, String)> {
    let mut out = Vec::new();
    let mut off = 0;
    for part in value.split(',') {
        let this = off;
        off += part.len() + 1;
        if part.trim().is_empty() {
            continue;
        }
        match part.split_once('=') {
            None => out.push(Prop {
                key: None,
                value: part,
                offset: this,
            }),
            Some((k, v)) => {
                if k.is_empty() {
                    return Err((this, format!("'{part}' has no key before '='")));
                }
                if !k
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                {
                    return Err((this, format!("invalid option name '{k}'")));
                }
                if v.is_empty() {
                    return Err((this, format!("option '{k}' has no value")));
                }
                if out.iter().any(|p: &Prop<'_>| p.key == Some(k)) {
                    return Err((this, format!("duplicate option '{k}'")));
                }
                out.push(Prop {
                    key: Some(k),
                    value: v,
                    offset: this,
                });
            }
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// hostpciN
// ---------------------------------------------------------------------------------------------

/// Where a `hostpciN` entry takes its devices from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HostPciSource {
    /// `host=ID[;ID…]` or the bare first value: one set of functions used together.
    Host(Vec<PciTarget>),
    /// `mapping=NAME`: `alternatives` holds one entry per `map` line of this node (each a
    /// `;`-separated `path` list); Proxmox starts the VM with the first one not in use
    /// (qemu-server `PVE/QemuServer/PCI.pm` `choose_hostpci_devices`). Empty until
    /// [`VmConfig::resolve_mappings`] has run.
    Mapping {
        name: String,
        alternatives: Vec<Vec<PciTarget>>,
    },
}

/// One `hostpciN:` line of the current config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct HostPci {
    /// The N of `hostpciN` (0..=15).
    pub index: u8,
    pub source: HostPciSource,
    /// Every option except `host` and `mapping`, as written (`pcie` → `1`, `romfile` → …).
    pub options: BTreeMap<String, String>,
    /// The value as written after `hostpciN:`.
    pub raw: String,
    /// Line in the config file.
    pub line: usize,
}

/// Option keys of qemu-server `PVE/QemuServer/PCI.pm` `$hostpci_fmt` that are booleans.
const HOSTPCI_BOOL_OPTS: &[&str] = &["rombar", "pcie", "x-vga", "legacy-igd"];
/// `$hostpci_fmt` keys holding a `0x` + 4 hex digit id override.
const HOSTPCI_ID_OPTS: &[&str] = &["vendor-id", "device-id", "sub-vendor-id", "sub-device-id"];

impl HostPci {
    /// Parse the value of `hostpciN` (qemu-server `PVE/QemuServer/PCI.pm` `parse_hostpci`).
    /// Errors carry the byte offset of the fault in `value`. Option keys qemu-server does not
    /// know (yet) are kept, not refused: a newer Proxmox may add some.
    fn parse_value(
        index: u8,
        value: &str,
        line: usize,
    ) -> std::result::Result<Self, (usize, String)> {
        let props = split_property_string(value)?;
        let mut host: Option<(&str, usize)> = None;
        let mut mapping: Option<(&str, usize)> = None;
        let mut options = BTreeMap::new();
        for p in &props {
            match p.key {
                None | Some("host") => {
                    if host.is_some() {
                        return Err((p.offset, "more than one 'host' value".into()));
                    }
                    let voff = p.offset + p.key.map_or(0, |k| k.len() + 1);
                    host = Some((p.value, voff));
                }
                Some("mapping") => {
                    if !is_config_id(p.value) {
                        return Err((
                            p.offset,
                            format!(
                                "invalid mapping id '{}' (expected [a-z][a-z0-9_-]+)",
                                p.value
                            ),
                        ));
                    }
                    mapping = Some((p.value, p.offset));
                }
                Some(k) => {
                    if HOSTPCI_BOOL_OPTS.contains(&k) && parse_pve_bool(p.value).is_none() {
                        return Err((
                            p.offset,
                            format!("option '{k}' is not a boolean: '{}'", p.value),
                        ));
                    }
                    if HOSTPCI_ID_OPTS.contains(&k) {
                        let ok = p.value.len() == 6
                            && p.value.starts_with("0x")
                            && p.value.bytes().skip(2).all(|b| b.is_ascii_hexdigit());
                        if !ok {
                            return Err((
                                p.offset,
                                format!("option '{k}' is not 0x and 4 hex digits: '{}'", p.value),
                            ));
                        }
                    }
                    if k == "driver" && p.value != "vfio" && p.value != "keep" {
                        return Err((
                            p.offset,
                            format!(
                                "option 'driver' must be 'vfio' or 'keep', not '{}'",
                                p.value
                            ),
                        ));
                    }
                    if k == "romfile" && p.value.contains(';') {
                        return Err((p.offset, "option 'romfile' contains ';'".into()));
                    }
                    options.insert(k.to_string(), p.value.to_string());
                }
            }
        }
        let source = match (host, mapping) {
            (Some(_), Some((_, off))) => {
                return Err((off, "cannot set both 'host' and 'mapping'".into()))
            }
            (None, None) => return Err((0, "either 'host' or 'mapping' must be set".into())),
            (None, Some((name, _))) => HostPciSource::Mapping {
                name: name.to_string(),
                alternatives: Vec::new(),
            },
            (Some((list, off)), None) => {
                let mut targets = Vec::new();
                let mut o = off;
                for id in list.split(';') {
                    let t = PciTarget::parse_reason(id).map_err(|r| (o, format!("'{id}': {r}")))?;
                    targets.push(t);
                    o += id.len() + 1;
                }
                HostPciSource::Host(targets)
            }
        };
        Ok(HostPci {
            index,
            source,
            options,
            raw: value.to_string(),
            line,
        })
    }

    /// Every target this entry may use: the host list, or the union of the mapping's
    /// alternatives on this node (which one a run used is not recorded once the VM stopped).
    pub fn targets(&self) -> Vec<PciTarget> {
        match &self.source {
            HostPciSource::Host(t) => t.clone(),
            HostPciSource::Mapping { alternatives, .. } => {
                let mut out: Vec<PciTarget> = Vec::new();
                for t in alternatives.iter().flatten() {
                    if !out.contains(t) {
                        out.push(*t);
                    }
                }
                out
            }
        }
    }

    /// The mapping name, for `mapping=NAME` entries.
    pub fn mapping(&self) -> Option<&str> {
        match &self.source {
            HostPciSource::Mapping { name, .. } => Some(name),
            HostPciSource::Host(_) => None,
        }
    }

    pub fn option(&self, key: &str) -> Option<&str> {
        self.options.get(key).map(String::as_str)
    }

    fn flag(&self, key: &str, default: bool) -> bool {
        self.option(key).and_then(parse_pve_bool).unwrap_or(default)
    }

    /// `pcie=1`: on the guest's PCIe bus (default off).
    pub fn pcie(&self) -> bool {
        self.flag("pcie", false)
    }

    /// `x-vga=1`: the guest's primary VGA (default off).
    pub fn x_vga(&self) -> bool {
        self.flag("x-vga", false)
    }

    /// `rombar=0` hides the ROM BAR (default on).
    pub fn rombar(&self) -> bool {
        self.flag("rombar", true)
    }

    /// `legacy-igd=1` (default off).
    pub fn legacy_igd(&self) -> bool {
        self.flag("legacy-igd", false)
    }

    /// `romfile=NAME` (relative to /usr/share/kvm).
    pub fn romfile(&self) -> Option<&str> {
        self.option("romfile")
    }

    /// `mdev=TYPE`: a mediated device; the physical function is shared, never reset for one VM.
    pub fn mdev(&self) -> Option<&str> {
        self.option("mdev")
    }

    /// `driver=` (default `vfio`).
    pub fn driver(&self) -> &str {
        self.option("driver").unwrap_or("vfio")
    }

    /// `driver=keep`: Proxmox neither binds the device to vfio-pci nor resets it
    /// (qemu-server `PVE/QemuServer/PCI.pm` `prepare_pci_device`).
    pub fn driver_keep(&self) -> bool {
        self.driver() == "keep"
    }
}

// ---------------------------------------------------------------------------------------------
// VM config
// ---------------------------------------------------------------------------------------------

/// The current configuration of one VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct VmConfig {
    pub vmid: u32,
    pub path: PathBuf,
    /// Every `key: value` of the current config (later lines win, as in Proxmox).
    pub entries: BTreeMap<String, String>,
    /// `hostpciN` entries, ordered by N.
    pub hostpci: Vec<HostPci>,
    /// `hookscript: STORAGE:snippets/NAME`.
    pub hookscript: Option<String>,
    /// `vga:` as written (`none`, `std`, `virtio,memory=64` …).
    pub vga: Option<String>,
}

/// One PCI function the VM passes through.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct PassedFunction {
    pub bdf: Bdf,
    /// The N of the `hostpciN` entry it came from.
    pub hostpci: u8,
    /// Present under the sysfs tree when resolved.
    pub present: bool,
    /// Came from a whole-slot id (`c5:00`), not a named function.
    pub from_slot: bool,
    /// Its entry has `driver=keep`.
    pub driver_keep: bool,
    /// Its entry has `mdev=`.
    pub mdev: bool,
}

impl VmConfig {
    /// `<pve_root>/qemu-server/<vmid>.conf`.
    pub fn path_for(pve_root: &Path, vmid: u32) -> PathBuf {
        pve_root.join("qemu-server").join(format!("{vmid}.conf"))
    }

    /// Read and parse `<pve_root>/qemu-server/<vmid>.conf` (mappings unresolved).
    pub fn load(pve_root: &Path, vmid: u32) -> Result<VmConfig> {
        let path = Self::path_for(pve_root, vmid);
        let text =
            crate::pci::bounded_read::read_text(&path, crate::pci::bounded_read::TEXT_FILE_MAX)?;
        Self::parse(&text, &path, vmid)
    }

    /// Parse a VM config (qemu-server `PVE/QemuServer.pm` `parse_vm_config`). Only the lines
    /// before the first `[section]` header are the current config; `#` lines are the
    /// description. A line that is not `key: value` is an error naming `path` and the line.
    pub fn parse(text: &str, path: &Path, vmid: u32) -> Result<VmConfig> {
        let mut cfg = VmConfig {
            vmid,
            path: path.to_path_buf(),
            entries: BTreeMap::new(),
            hostpci: Vec::new(),
            hookscript: None,
            vga: None,
        };
        let mut hostpci: BTreeMap<u8, HostPci> = BTreeMap::new();
        for (lineno, line) in lines(text) {
            if line.trim().is_empty() {
                continue;
            }
            if line.starts_with('[') {
                // `[PENDING]`, `[special:cloudinit]`, `[snapname]`, or an unknown section that
                // Proxmox skips: the current config ends here either way.
                if line.trim_end().ends_with(']') {
                    break;
                }
                return Err(file_err(
                    path,
                    lineno,
                    1,
                    "section header without closing ']'",
                ));
            }
            if line.starts_with('#') {
                continue;
            }
            let (key, value, voff) = split_key_value(line)
                .map_err(|(off, r)| file_err(path, lineno, column(line, off), r))?;
            if let Some(n) = key.strip_prefix("hostpci") {
                if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) {
                    // `hostpci01` is no key of qemu-server's schema (`hostpci1` is).
                    let index = Some(n)
                        .filter(|n| n.len() == 1 || !n.starts_with('0'))
                        .and_then(|n| n.parse::<u8>().ok())
                        .filter(|i| *i < MAX_HOSTPCI_DEVICES)
                        .ok_or_else(|| {
                            file_err(
                                path,
                                lineno,
                                1,
                                format!("'{key}' is not a hostpci key (qemu-server allows hostpci0..hostpci{})", MAX_HOSTPCI_DEVICES - 1),
                            )
                        })?;
                    let hp = HostPci::parse_value(index, value, lineno).map_err(|(off, r)| {
                        file_err(
                            path,
                            lineno,
                            column(line, voff + off),
                            format!("{key}: {r}"),
                        )
                    })?;
                    hostpci.insert(index, hp);
                }
            }
            match key {
                "hookscript" => cfg.hookscript = Some(value.to_string()),
                "vga" => cfg.vga = Some(value.to_string()),
                _ => {}
            }
            cfg.entries.insert(key.to_string(), value.to_string());
        }
        cfg.hostpci = hostpci.into_values().collect();
        Ok(cfg)
    }

    /// Whether any `hostpciN` uses `mapping=`.
    pub fn uses_mappings(&self) -> bool {
        self.hostpci.iter().any(|h| h.mapping().is_some())
    }

    /// Fill in the alternatives of every `mapping=` entry from `mappings` for `node`
    /// (qemu-server `parse_hostpci` → pve-guest-common `find_on_current_node`).
    pub fn resolve_mappings(&mut self, mappings: &PciMappings, node: &str) -> Result<()> {
        for hp in &mut self.hostpci {
            if let HostPciSource::Mapping { name, alternatives } = &mut hp.source {
                let entries = mappings.node_entries(name, node)?;
                if entries.is_empty() {
                    return Err(Error::not_found(
                        "PCI mapping entry for this node",
                        format!("{name}@{node}"),
                    ));
                }
                *alternatives = entries.into_iter().map(|e| e.path).collect();
            }
        }
        Ok(())
    }

    /// The functions the VM passes through, in `hostpciN` order, each once. Whole slots are
    /// resolved against `present` (see [`PciTarget::resolve`]). Mappings must be resolved first.
    pub fn functions(&self, present: &[Bdf]) -> Vec<PassedFunction> {
        let mut out: Vec<PassedFunction> = Vec::new();
        for hp in &self.hostpci {
            for t in hp.targets() {
                for bdf in t.resolve(present) {
                    if out.iter().any(|f| f.bdf == bdf) {
                        continue;
                    }
                    out.push(PassedFunction {
                        bdf,
                        hostpci: hp.index,
                        present: present.contains(&bdf),
                        from_slot: matches!(t, PciTarget::Slot(_)),
                        driver_keep: hp.driver_keep(),
                        mdev: hp.mdev().is_some(),
                    });
                }
            }
        }
        out
    }

    /// Convenience for the hook: load the config, resolve mappings (reading
    /// `<pve_root>/mapping/pci.cfg` only when one is used) and list the passed functions.
    pub fn load_resolved(
        pve_root: &Path,
        vmid: u32,
        node: &str,
        present: &[Bdf],
    ) -> Result<(VmConfig, Vec<PassedFunction>)> {
        let mut cfg = Self::load(pve_root, vmid)?;
        if cfg.uses_mappings() {
            let m = PciMappings::load(pve_root)?;
            cfg.resolve_mappings(&m, node)?;
        }
        let f = cfg.functions(present);
        Ok((cfg, f))
    }
}

/// `key: value` of a VM config line (qemu-server `parse_vm_config`:
/// `^([a-z][a-z_\-]*\d*):\s*(.+?)\s*$`). Returns key, trimmed value and its byte offset.
fn split_key_value(line: &str) -> std::result::Result<(&str, &str, usize), (usize, String)> {
    let b = line.as_bytes();
    let mut i = 0;
    if !b.first().is_some_and(|c| c.is_ascii_lowercase()) {
        return Err((0, "expected 'key: value' (key starts with a-z)".into()));
    }
    while i < b.len() && (b[i].is_ascii_lowercase() || b[i] == b'_' || b[i] == b'-') {
        i += 1;
    }
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    if b.get(i) != Some(&b':') {
        return Err((i, "expected ':' after the key".into()));
    }
    let key = &line[..i];
    let rest = &line[i + 1..];
    let value = rest.trim();
    if value.is_empty() {
        return Err((i, format!("'{key}' has no value")));
    }
    Ok((key, value, offset_in(line, value)))
}

// ---------------------------------------------------------------------------------------------
// SectionConfig (mapping/pci.cfg, storage.cfg)
// ---------------------------------------------------------------------------------------------

/// One section of a pve-common `PVE/SectionConfig.pm` file.
#[derive(Debug, Clone)]
struct Section<'a> {
    header: &'a str,
    line: usize,
    /// (key, value, line); the value is empty when the line has only a key.
    props: Vec<(&'a str, &'a str, usize)>,
}

/// Split a SectionConfig file (pve-common `PVE/SectionConfig.pm` `parse_config`): `#` lines
/// (after optional blanks) are comments anywhere; a header line starts in column 1; its
/// properties follow on indented `key value` lines until an empty line. Whitespace-only lines
/// are skipped. A non-indented line inside a section is an error (Proxmox ignores it with a
/// warning, which would silently leave the next section's lines in this one).
fn split_sections<'a>(text: &'a str, path: &Path) -> Result<Vec<Section<'a>>> {
    let mut out: Vec<Section<'a>> = Vec::new();
    let mut open = false;
    for (lineno, line) in lines(text) {
        if line.trim_start().starts_with('#') {
            continue;
        }
        if line.is_empty() {
            open = false;
            continue;
        }
        if line.trim().is_empty() {
            continue;
        }
        let indented = line.starts_with(|c: char| c.is_whitespace());
        if !open {
            if indented {
                return Err(file_err(
                    path,
                    lineno,
                    1,
                    "indented line outside a section (a section header starts in column 1)",
                ));
            }
            out.push(Section {
                header: line.trim_end(),
                line: lineno,
                props: Vec::new(),
            });
            open = true;
            continue;
        }
        if !indented {
            return Err(file_err(
                path,
                lineno,
                1,
                "expected an indented 'key value' line, or an empty line before the next section",
            ));
        }
        let body = line.trim();
        let (k, v) = match body.split_once(|c: char| c.is_whitespace()) {
            Some((k, v)) => (k, v.trim()),
            None => (body, ""),
        };
        if let Some(sec) = out.last_mut() {
            sec.props.push((k, v, lineno));
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// mapping/pci.cfg
// ---------------------------------------------------------------------------------------------

/// `/etc/pve/mapping/pci.cfg`: cluster-wide PCI resource mappings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct PciMappings {
    pub path: PathBuf,
    pub mappings: BTreeMap<String, PciMapping>,
}

/// One mapping section (pve-guest-common `PVE/Mapping/PCI.pm` `$defaultData`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct PciMapping {
    pub name: String,
    pub line: usize,
    pub description: Option<String>,
    pub mdev: bool,
    pub live_migration_capable: bool,
    /// The `map` lines as written, with their line numbers; parsed on lookup so that a broken
    /// entry of some other mapping does not stop this one.
    pub maps: Vec<(usize, String)>,
    /// Other keys, as written.
    pub other: BTreeMap<String, String>,
}

/// One parsed `map` line (pve-guest-common `PVE/Mapping/PCI.pm` `$map_fmt`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct MapEntry {
    pub node: String,
    /// `path=ID[;ID…]`: functions or whole slots used together.
    pub path: Vec<PciTarget>,
    /// `id=VVVV:DDDD` (vendor:device) expected.
    pub id: Option<(u16, u16)>,
    /// `subsystem-id=VVVV:DDDD`.
    pub subsystem_id: Option<(u16, u16)>,
    pub iommugroup: Option<u32>,
    pub description: Option<String>,
    pub line: usize,
}

fn parse_id_pair(v: &str) -> Option<(u16, u16)> {
    let (a, b) = v.split_once(':')?;
    let ok = |s: &str| s.len() == 4 && s.bytes().all(|c| c.is_ascii_hexdigit());
    if !ok(a) || !ok(b) {
        return None;
    }
    Some((
        u16::from_str_radix(a, 16).ok()?,
        u16::from_str_radix(b, 16).ok()?,
    ))
}

impl PciMappings {
    /// `<pve_root>/mapping/pci.cfg`.
    pub fn path_for(pve_root: &Path) -> PathBuf {
        pve_root.join("mapping/pci.cfg")
    }

    /// Read and parse `<pve_root>/mapping/pci.cfg`. A missing file is an empty config (as
    /// `cfs_read_file` gives Proxmox).
    pub fn load(pve_root: &Path) -> Result<PciMappings> {
        let path = Self::path_for(pve_root);
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::parse(&text, &path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(PciMappings {
                path,
                mappings: BTreeMap::new(),
            }),
            Err(e) => Err(Error::io("read", &path, e)),
        }
    }

    /// Parse the mapping file. Headers are a bare id (`PVE/Mapping/PCI.pm`
    /// `parse_section_header`: `^(\S+)\s*$`, checked as a config id); `map` may repeat; a
    /// later section of the same name replaces an earlier one, as in `SectionConfig`.
    pub fn parse(text: &str, path: &Path) -> Result<PciMappings> {
        let mut mappings = BTreeMap::new();
        for sec in split_sections(text, path)? {
            let name = sec.header;
            if name.contains(char::is_whitespace) || !is_config_id(name) {
                return Err(file_err(
                    path,
                    sec.line,
                    1,
                    format!("invalid mapping id '{name}' (expected [a-z][a-z0-9_-]+)"),
                ));
            }
            let mut m = PciMapping {
                name: name.to_string(),
                line: sec.line,
                description: None,
                mdev: false,
                live_migration_capable: false,
                maps: Vec::new(),
                other: BTreeMap::new(),
            };
            for (k, v, line) in sec.props {
                let bool_of = |v: &str| {
                    parse_pve_bool(v).ok_or_else(|| {
                        file_err(path, line, 1, format!("'{k}' is not a boolean: '{v}'"))
                    })
                };
                match k {
                    "map" => m.maps.push((line, v.to_string())),
                    "description" => m.description = Some(v.to_string()),
                    "mdev" => m.mdev = bool_of(v)?,
                    "live-migration-capable" => m.live_migration_capable = bool_of(v)?,
                    _ => {
                        m.other.insert(k.to_string(), v.to_string());
                    }
                }
            }
            mappings.insert(m.name.clone(), m);
        }
        Ok(PciMappings {
            path: path.to_path_buf(),
            mappings,
        })
    }

    /// The `map` entries of mapping `name` for `node`, in file order (pve-guest-common
    /// `get_node_mapping`). An unknown name is `NotFound`; a malformed `map` line of this
    /// mapping is an error naming its line (Proxmox warns and skips it).
    pub fn node_entries(&self, name: &str, node: &str) -> Result<Vec<MapEntry>> {
        let m = self
            .mappings
            .get(name)
            .ok_or_else(|| Error::not_found("PCI mapping", name))?;
        let mut out = Vec::new();
        for (line, raw) in &m.maps {
            let e = Self::parse_map(raw, *line).map_err(|(_, r)| {
                file_err(&self.path, *line, 1, format!("mapping '{name}': map: {r}"))
            })?;
            if e.node == node {
                out.push(e);
            }
        }
        Ok(out)
    }

    /// Parse one `map` value: `node=N,path=ID[;ID…],id=VVVV:DDDD[,iommugroup=G]
    /// [,subsystem-id=VVVV:DDDD][,description=…]`.
    pub fn parse_map_entry(raw: &str, line: usize) -> Result<MapEntry> {
        Self::parse_map(raw, line).map_err(|(_, r)| Error::parse("PCI mapping entry", raw, r))
    }

    fn parse_map(raw: &str, line: usize) -> std::result::Result<MapEntry, (usize, String)> {
        let props = split_property_string(raw)?;
        let (mut node, mut path, mut id, mut sub, mut group, mut descr) =
            (None, None, None, None, None, None);
        for p in props {
            let Some(k) = p.key else {
                return Err((
                    p.offset,
                    format!("'{}' has no key (expected key=value)", p.value),
                ));
            };
            match k {
                "node" => node = Some(p.value.to_string()),
                "path" => {
                    let mut ts = Vec::new();
                    for id in p.value.split(';') {
                        ts.push(
                            PciTarget::parse_reason(id)
                                .map_err(|r| (p.offset, format!("path '{id}': {r}")))?,
                        );
                    }
                    path = Some(ts);
                }
                "id" | "subsystem-id" => {
                    let v = parse_id_pair(p.value).ok_or_else(|| {
                        (
                            p.offset,
                            format!("'{k}' is not VVVV:DDDD hex: '{}'", p.value),
                        )
                    })?;
                    if k == "id" {
                        id = Some(v);
                    } else {
                        sub = Some(v);
                    }
                }
                "iommugroup" => {
                    group = Some(p.value.parse::<u32>().map_err(|_| {
                        (
                            p.offset,
                            format!("'iommugroup' is not a number: '{}'", p.value),
                        )
                    })?)
                }
                "description" => descr = Some(p.value.to_string()),
                _ => {} // a key a newer Proxmox may add; nothing here depends on it
            }
        }
        Ok(MapEntry {
            node: node.ok_or((0, "no 'node='".to_string()))?,
            path: path.ok_or((0, "no 'path='".to_string()))?,
            id,
            subsystem_id: sub,
            iommugroup: group,
            description: descr,
            line,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// storage.cfg
// ---------------------------------------------------------------------------------------------

/// `/etc/pve/storage.cfg`, as much as finding snippet files needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct StorageConfig {
    pub path: PathBuf,
    pub storages: BTreeMap<String, Storage>,
}

/// One storage definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Storage {
    pub id: String,
    /// The section type (`dir`, `nfs`, `zfspool`, …), lower-cased as pve-storage does.
    pub kind: String,
    /// `path` (file-based storages only).
    pub path: Option<PathBuf>,
    /// `content` types (`images`, `snippets`, …).
    pub content: BTreeSet<String>,
    /// `content-dirs` overrides: content type → subdirectory.
    pub content_dirs: BTreeMap<String, String>,
    /// Every property as written.
    pub props: BTreeMap<String, String>,
    /// Line of the header (0 for the built-in `local`).
    pub line: usize,
}

/// pve-storage `PVE/Storage/Plugin.pm` `$vtype_subdirs`: `snippets => 'snippets'`.
const SNIPPETS_SUBDIR: &str = "snippets";

/// pve-common `PVE/Tools.pm` → `PVE/ParseUtils.pm` `split_list`: `,` `;` and blanks separate.
fn split_list(v: &str) -> impl Iterator<Item = &str> {
    v.split(|c: char| c == ',' || c == ';' || c.is_whitespace())
        .filter(|s| !s.is_empty())
}

impl Storage {
    /// The built-in `local` storage (pve-storage `PVE/Storage/Plugin.pm` `parse_config`).
    fn default_local() -> Storage {
        let content = ["backup", "images", "iso", "rootdir", "snippets", "vztmpl"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        Storage {
            id: "local".into(),
            kind: "dir".into(),
            path: Some(PathBuf::from("/var/lib/vz")),
            content,
            content_dirs: BTreeMap::new(),
            props: BTreeMap::new(),
            line: 0,
        }
    }

    pub fn has_content(&self, kind: &str) -> bool {
        self.content.contains(kind)
    }

    /// `<path>/<content-dirs snippets or "snippets">` (pve-storage `PVE/Storage/Plugin.pm`
    /// `get_subdir`); `None` without a `path`.
    pub fn snippets_dir(&self) -> Option<PathBuf> {
        let base = self.path.as_ref()?;
        let sub = self
            .content_dirs
            .get("snippets")
            .map(String::as_str)
            .unwrap_or(SNIPPETS_SUBDIR);
        Some(base.join(sub.trim_start_matches('/')))
    }
}

impl StorageConfig {
    /// `<pve_root>/storage.cfg`.
    pub fn path_for(pve_root: &Path) -> PathBuf {
        pve_root.join("storage.cfg")
    }

    /// Read `<pve_root>/storage.cfg`; a missing file gives just the built-in `local`.
    pub fn load(pve_root: &Path) -> Result<StorageConfig> {
        let path = Self::path_for(pve_root);
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::parse(&text, &path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self::parse("", &path),
            Err(e) => Err(Error::io("read", &path, e)),
        }
    }

    /// Parse storage.cfg: `TYPE: ID` headers (pve-storage `PVE/Storage/Plugin.pm`
    /// `parse_section_header`, `^(\S+):\s*(\S+)\s*$`) with indented properties. As in
    /// `PVE::Storage::Plugin::parse_config`, `local` is forced to `dir` at `/var/lib/vz` when it
    /// is missing, of another type, or has another path.
    pub fn parse(text: &str, path: &Path) -> Result<StorageConfig> {
        let mut storages = BTreeMap::new();
        for sec in split_sections(text, path)? {
            let (kind, id) = sec
                .header
                .split_once(':')
                .map(|(t, i)| (t, i.trim()))
                .filter(|(t, i)| {
                    !t.is_empty()
                        && !t.contains(char::is_whitespace)
                        && !i.is_empty()
                        && !i.contains(char::is_whitespace)
                })
                .ok_or_else(|| {
                    file_err(
                        path,
                        sec.line,
                        1,
                        format!("expected 'TYPE: ID', got '{}'", sec.header),
                    )
                })?;
            if !is_config_id(id) {
                return Err(file_err(
                    path,
                    sec.line,
                    column(sec.header, offset_in(sec.header, id)),
                    format!("invalid storage id '{id}'"),
                ));
            }
            let mut s = Storage {
                id: id.to_string(),
                kind: kind.to_ascii_lowercase(),
                path: None,
                content: BTreeSet::new(),
                content_dirs: BTreeMap::new(),
                props: BTreeMap::new(),
                line: sec.line,
            };
            for (k, v, _) in sec.props {
                match k {
                    "path" => s.path = Some(PathBuf::from(v)),
                    "content" => s.content = split_list(v).map(str::to_string).collect(),
                    "content-dirs" => {
                        for d in split_list(v) {
                            if let Some((c, p)) = d.split_once('=') {
                                s.content_dirs.insert(c.to_string(), p.to_string());
                            }
                        }
                    }
                    _ => {}
                }
                s.props.insert(k.to_string(), v.to_string());
            }
            storages.insert(s.id.clone(), s);
        }
        let keep_local = storages.get("local").is_some_and(|l: &Storage| {
            l.kind == "dir"
                && l.path
                    .as_deref()
                    .is_none_or(|p| p == Path::new("/var/lib/vz"))
        });
        if keep_local {
            if let Some(l) = storages.get_mut("local") {
                l.path = Some(PathBuf::from("/var/lib/vz"));
            }
        } else {
            storages.insert("local".into(), Storage::default_local());
        }
        Ok(StorageConfig {
            path: path.to_path_buf(),
            storages,
        })
    }

    pub fn get(&self, id: &str) -> Result<&Storage> {
        self.storages
            .get(id)
            .ok_or_else(|| Error::not_found("storage", id))
    }

    /// The snippets directory of storage `id`; refused when the storage does not allow
    /// `snippets` content or has no path.
    pub fn snippets_dir(&self, id: &str) -> Result<PathBuf> {
        let s = self.get(id)?;
        if !s.has_content("snippets") {
            return Err(Error::failed(format!(
                "storage '{id}' does not allow 'snippets' content (add it to 'content' in {})",
                self.path.display()
            )));
        }
        s.snippets_dir().ok_or_else(|| {
            Error::failed(format!("storage '{id}' ({}) has no directory path", s.kind))
        })
    }

    /// Storages that allow snippets, with their snippets directories.
    pub fn snippet_storages(&self) -> Vec<(&str, PathBuf)> {
        self.storages
            .values()
            .filter(|s| s.has_content("snippets"))
            .filter_map(|s| Some((s.id.as_str(), s.snippets_dir()?)))
            .collect()
    }

    /// The file behind a hookscript volume id `STORAGE:snippets/NAME` (pve-storage
    /// `PVE/Storage/Plugin.pm` `parse_volume_id` and `parse_volname`, `^snippets/([^/]+)$`;
    /// pve-guest-common `PVE/GuestHelpers.pm` `check_hookscript` wants type `snippets`).
    pub fn snippet_path(&self, volid: &str) -> Result<PathBuf> {
        let bad = |r: &str| Error::parse("hookscript volume id", volid, r.to_string());
        let (sid, volname) = volid
            .split_once(':')
            .ok_or_else(|| bad("expected STORAGE:snippets/NAME"))?;
        if !is_config_id(sid) {
            return Err(bad("invalid storage id"));
        }
        let name = volname
            .strip_prefix("snippets/")
            .filter(|n| !n.is_empty() && !n.contains('/'))
            .ok_or_else(|| bad("not in the snippets directory (expected STORAGE:snippets/NAME)"))?;
        let s = self.get(sid)?;
        let dir = s.snippets_dir().ok_or_else(|| {
            Error::failed(format!(
                "storage '{sid}' ({}) has no directory path",
                s.kind
            ))
        })?;
        Ok(dir.join(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> PathBuf {
        PathBuf::from("/x/qemu-server/100.conf")
    }

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
        for bad in [
            "",
            "c5",
            "c5:0.0",
            "c5:00.8",
            "c5:20.0",
            "000:c5:00.0",
            "c5:00.",
            "g5:00.0",
            "1:2:3:4",
        ] {
            assert!(PciTarget::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Bdf::new(0, 0xc5, 0, 1).to_string(), "0000:c5:00.1");
        assert!("c5:00".parse::<Bdf>().is_err());
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

    #[test]
    fn key_value_split() {
        assert_eq!(split_key_value("vga: none  ").unwrap(), ("vga", "none", 5));
        assert_eq!(split_key_value("hostpci0:x").unwrap().0, "hostpci0");
        assert!(split_key_value("Vga: none").is_err());
        assert_eq!(split_key_value("vga none").unwrap_err().0, 3);
        assert!(split_key_value("vga:   ").is_err());
    }

    #[test]
    fn hostpci_column_points_at_bad_id() {
        let e = VmConfig::parse("hostpci0: c5:00.0;zz:00.1,pcie=1\n", &p(), 100).unwrap_err();
        match e {
            Error::FileParse { line, column, .. } => {
                assert_eq!(line, 1);
                assert_eq!(column, 19);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn node_name() {
        assert_eq!(node_name_from_hostname("pve1.lan\n").unwrap(), "pve1");
        assert!(node_name_from_hostname("\n").is_err());
    }

    #[test]
    fn property_string_errors() {
        assert!(split_property_string("a=1,a=2").is_err());
        assert!(split_property_string("a=").is_err());
        assert!(split_property_string("=a").is_err());
        assert!(split_property_string("x, pcie=1").is_err());
        assert_eq!(split_property_string("x,, ,a=b").unwrap().len(), 2);
    }
}
