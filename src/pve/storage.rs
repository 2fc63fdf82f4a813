//! `storage.cfg` (pve-storage `PVE/Storage/Plugin.pm`), enough to find snippets.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};

use super::*;

use super::section::split_sections;

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
