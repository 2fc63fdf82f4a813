//! Who holds a device: processes with its VFIO group node (`/dev/vfio/<group>`)
//! open, found by reading `/proc/<pid>/fd` links (read-only, like fuser(1)).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::machine::Machine;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Holder {
    pub pid: u32,
    pub command: String,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pid {} ({})", self.pid, self.command)
    }
}

/// Open file targets of every process we may look at, scanned once.
#[derive(Debug, Default)]
pub struct OpenFiles {
    by_target: BTreeMap<PathBuf, Vec<Holder>>,
    /// Processes whose fds we could not read (not root): the answer may be incomplete.
    pub unreadable: usize,
}

fn command(proc_dir: &Path) -> String {
    let cmdline = fs::read(proc_dir.join("cmdline")).unwrap_or_default();
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    if args.is_empty() {
        fs::read_to_string(proc_dir.join("comm"))
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    } else {
        let s = args.join(" ");
        if s.len() > 120 {
            let mut cut = 117;
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            format!("{}...", &s[..cut])
        } else {
            s
        }
    }
}

impl OpenFiles {
    /// Scans `<proc>/*/fd`, keeping only targets under `interesting`.
    pub fn scan(proc_root: &Path, interesting: &Path) -> OpenFiles {
        let mut out = OpenFiles::default();
        let Ok(rd) = fs::read_dir(proc_root) else {
            return out;
        };
        for e in rd.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let pdir = e.path();
            let Ok(fds) = fs::read_dir(pdir.join("fd")) else {
                out.unreadable += 1;
                continue;
            };
            let mut cmd = None;
            for fd in fds.flatten() {
                let Ok(target) = fs::read_link(fd.path()) else {
                    continue;
                };
                if target.starts_with(interesting) {
                    let command = cmd.get_or_insert_with(|| command(&pdir)).clone();
                    let list = out.by_target.entry(target).or_default();
                    if !list.iter().any(|h| h.pid == pid) {
                        list.push(Holder { pid, command });
                    }
                }
            }
        }
        out
    }

    /// Everything under `<dev>/vfio`, the VFIO group nodes.
    pub fn scan_vfio(host: &Machine) -> OpenFiles {
        Self::scan(&host.proc_root, &host.dev.join("vfio"))
    }

    pub fn holders_of(&self, node: &Path) -> Vec<Holder> {
        self.by_target.get(node).cloned().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_process_holding_a_group_node() {
        let dir = tempfile::tempdir().unwrap();
        let vfio = dir.path().join("dev/vfio");
        fs::create_dir_all(&vfio).unwrap();
        let node = vfio.join("18");
        fs::write(&node, b"").unwrap();
        let _held = fs::File::open(&node).unwrap();
        let node = fs::canonicalize(&node).unwrap();
        let of = OpenFiles::scan(Path::new("/proc"), node.parent().unwrap());
        let h = of.holders_of(&node);
        assert!(h.iter().any(|h| h.pid == std::process::id()), "{h:?}");
    }
}
