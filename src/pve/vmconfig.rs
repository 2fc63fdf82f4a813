//! A VM's config (`qemu-server/<vmid>.conf`) and its `hostpciN` entries.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::pci::Bdf;

use super::*;

use super::propstr::split_property_string;

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
        let text = crate::bounded_read::read_text(&path, crate::bounded_read::TEXT_FILE_MAX)?;
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
        let p = super::passed_functions(pve_root, vmid, present, || Ok(node.to_string()))?;
        Ok((p.config, p.functions))
    }
}

/// `key: value` of a VM config line (qemu-server `parse_vm_config`:
/// `^([a-z][a-z_\-]*\d*):\s*(.+?)\s*$`). Returns key, trimmed value and its byte offset.
pub(super) fn split_key_value(
    line: &str,
) -> std::result::Result<(&str, &str, usize), (usize, String)> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> PathBuf {
        PathBuf::from("/x/qemu-server/100.conf")
    }

    #[test]
    fn key_value_split() {
        assert_eq!(split_key_value("vga: none  ").unwrap(), ("vga", "none", 5));
        assert_eq!(split_key_value("hostpci0:x").unwrap().0, "hostpci0");
        assert_eq!(
            split_key_value("Vga: none").unwrap_err(),
            (0, "expected 'key: value' (key starts with a-z)".to_string())
        );
        assert_eq!(split_key_value("vga none").unwrap_err().0, 3);
        assert_eq!(
            split_key_value("vga:   ").unwrap_err(),
            (3, "'vga' has no value".to_string())
        );
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
}
