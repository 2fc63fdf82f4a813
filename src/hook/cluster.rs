//! A Proxmox cluster as `hook install` sees it: `/etc/pve` (pmxcfs) is shared by every node,
//! while the resetlab binary, `/etc/resetlab` and a non-shared storage's snippets directory are
//! per node. pmxcfs keeps one directory per node under `/etc/pve/nodes/` (the VM configs are in
//! `nodes/<node>/qemu-server/`) and the cluster's `corosync.conf` in `/etc/pve` once the node
//! has joined a cluster (pve-cluster `PVE/Cluster/Setup.pm`, `pvecm create` / `pvecm add`).

use std::collections::BTreeSet;
use std::path::Path;

use serde::Serialize;

use crate::pve::{PciMappings, Storage, VmConfig};

/// pve-storage `PVE/Storage/Plugin.pm` `@SHARED_STORAGE`: types that are shared without a
/// `shared` flag (`parse_config` sets `shared` for them; glusterfs until PVE 8).
const SHARED_TYPES: &[&str] = &[
    "iscsi",
    "nfs",
    "cifs",
    "rbd",
    "cephfs",
    "iscsidirect",
    "glusterfs",
    "zfs",
    "drbd",
    "pbs",
];

/// The storage's files are the same on every node (a `shared 1` flag or a shared type).
pub fn storage_is_shared(s: &Storage) -> bool {
    SHARED_TYPES.contains(&s.kind.as_str())
        || s.props.get("shared").is_some_and(|v| v.trim() == "1")
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ClusterInfo {
    /// Every node under `/etc/pve/nodes/`.
    pub nodes: Vec<String>,
    /// The node whose directory holds the VM's config now.
    pub vm_node: Option<String>,
    /// The nodes the VM can run on: every node, less those the shim's storage (`nodes`) or a
    /// resource mapping of the VM leaves out.
    pub vm_can_run_on: Vec<String>,
    /// Why a node is left out, one line each.
    pub excluded: Vec<String>,
    /// The shim's storage is shared: one copy serves every node.
    pub shared_storage: bool,
}

/// `Some` in a cluster: `corosync.conf` in `/etc/pve` and more than one node directory.
pub fn detect(
    pve_root: &Path,
    vm: &VmConfig,
    storage: &Storage,
    mappings: Option<&PciMappings>,
) -> Option<ClusterInfo> {
    if !pve_root.join("corosync.conf").is_file() {
        return None;
    }
    let nodes: BTreeSet<String> = std::fs::read_dir(pve_root.join("nodes"))
        .ok()?
        .flatten()
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    if nodes.len() < 2 {
        return None;
    }
    let vm_node = nodes
        .iter()
        .find(|n| {
            pve_root
                .join("nodes")
                .join(n)
                .join(format!("qemu-server/{}.conf", vm.vmid))
                .is_file()
        })
        .cloned();
    let mut can: BTreeSet<String> = nodes.clone();
    let mut excluded = Vec::new();
    // pve-storage: `nodes` lists the nodes a storage is available on (all when absent).
    if let Some(list) = storage.props.get("nodes") {
        let allowed: BTreeSet<&str> = list
            .split([',', ';', ' '])
            .filter(|s| !s.is_empty())
            .collect();
        for n in nodes.iter().filter(|n| !allowed.contains(n.as_str())) {
            excluded.push(format!(
                "{n}: storage '{}' is not available there (nodes {list})",
                storage.id
            ));
            can.remove(n);
        }
    }
    // A mapped hostpci entry can only start where the mapping has an entry for the node.
    if let Some(m) = mappings {
        for hp in &vm.hostpci {
            let Some(name) = hp.mapping() else { continue };
            let Some(map) = m.mappings.get(name) else {
                continue;
            };
            let mapped: BTreeSet<String> = map
                .maps
                .iter()
                .filter_map(|(line, raw)| PciMappings::parse_map_entry(raw, *line).ok())
                .map(|e| e.node)
                .collect();
            for n in nodes.iter().filter(|n| !mapped.contains(*n)) {
                if can.remove(n) {
                    excluded.push(format!(
                        "{n}: mapping '{name}' (hostpci{}) has no entry for it",
                        hp.index
                    ));
                }
            }
        }
    }
    Some(ClusterInfo {
        nodes: nodes.into_iter().collect(),
        vm_node,
        vm_can_run_on: can.into_iter().collect(),
        excluded,
        shared_storage: storage_is_shared(storage),
    })
}
