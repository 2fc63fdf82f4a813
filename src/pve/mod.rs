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
//!
//! Files: `target.rs` (a `HOSTPCIID`: function or slot), `propstr.rs` (property strings),
//! `vmconfig.rs` (`<vmid>.conf` and its `hostpciN`), `section.rs` (SectionConfig files),
//! `mapping.rs` (`mapping/pci.cfg`), `storage.rs` (`storage.cfg`). This layer sits below both
//! `hook/` and `doctor/`, and above `pci/` (addresses are `crate::pci::Bdf`).

mod mapping;
mod propstr;
mod section;
mod storage;
mod target;
mod vmconfig;

use std::path::Path;

use crate::error::{Error, Result};
pub use crate::pci::{Bdf, Slot};

pub use mapping::*;
pub use storage::*;
pub use target::*;
pub use vmconfig::*;

/// qemu-server `PVE/QemuServer/PCI.pm`: `$MAX_HOSTPCI_DEVICES = 16` (`hostpci0`..`hostpci15`).
pub const MAX_HOSTPCI_DEVICES: u8 = 16;

/// The PCI functions present under `<sysfs_root>/bus/pci/devices` (sorted). Entries whose
/// names are not PCI addresses are skipped.
pub fn present_functions(sysfs_root: &Path) -> Result<Vec<Bdf>> {
    crate::pci::sysfs::functions(sysfs_root)
}

/// A VM's passed-through functions, as [`passed_functions`] resolved them.
#[derive(Debug, Clone)]
pub struct PassedThrough {
    /// The config, its mappings resolved.
    pub config: VmConfig,
    /// The node name the mappings were resolved for; None when the config uses none.
    pub node: Option<String>,
    /// Every function the VM passes through ([`VmConfig::functions`] against `present`).
    pub functions: Vec<PassedFunction>,
}

/// VM → the PCI functions it passes through: loads `<pve_root>/qemu-server/<vmid>.conf`,
/// resolves its `mapping=` entries (reading `mapping/pci.cfg`, and asking `node` for this node's
/// name, only when one is used), and lists its functions against the `present` ones (a whole
/// slot is its present functions). The hook, `bench --vm` and `doctor --vm` all use this.
pub fn passed_functions(
    pve_root: &Path,
    vmid: u32,
    present: &[Bdf],
    node: impl FnOnce() -> Result<String>,
) -> Result<PassedThrough> {
    let mut config = VmConfig::load(pve_root, vmid)?;
    let mut used_node = None;
    if config.uses_mappings() {
        let n = node()?;
        let m = PciMappings::load(pve_root)?;
        config.resolve_mappings(&m, &n)?;
        used_node = Some(n);
    }
    let functions = config.functions(present);
    Ok(PassedThrough {
        config,
        node: used_node,
        functions,
    })
}

/// The Proxmox node name of `machine`: the host name up to the first dot
/// (pve-common `PVE/INotify.pm` `nodename`: `(POSIX::uname())[1]` with the domain stripped);
/// a twin's is the one beside its tree.
pub fn node_name(machine: &crate::machine::Machine) -> Result<String> {
    node_name_from_hostname(&machine.hostname()?)
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
pub(super) fn lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.split('\n')
        .enumerate()
        .map(|(i, l)| (i + 1, l.strip_suffix('\r').unwrap_or(l)))
}

/// 1-based character column of byte offset `off` in `line`.
pub(super) fn column(line: &str, off: usize) -> usize {
    line.get(..off).map_or(1, |s| s.chars().count() + 1)
}

pub(super) fn file_err(
    path: &Path,
    line: usize,
    column: usize,
    reason: impl Into<String>,
) -> Error {
    Error::FileParse {
        path: path.to_path_buf(),
        line,
        column,
        reason: reason.into(),
    }
}

/// Byte offset of `inner` within `outer` (both slices of the same string).
pub(super) fn offset_in(outer: &str, inner: &str) -> usize {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_name() {
        assert_eq!(node_name_from_hostname("pve1.lan\n").unwrap(), "pve1");
        let e = node_name_from_hostname("\n").unwrap_err();
        assert!(
            matches!(&e, Error::Parse { what: "host name", reason, .. } if reason == "empty node name"),
            "{e:?}"
        );
    }
}
