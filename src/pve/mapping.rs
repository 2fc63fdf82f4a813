//! Resource mappings `mapping/pci.cfg` (pve-guest-common `PVE/Mapping/PCI.pm`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};

use super::*;

use super::propstr::split_property_string;
use super::section::split_sections;

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
