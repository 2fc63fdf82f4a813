//! modprobe.d as kmod reads it (`blacklist`, `options`, `softdep`, `install`), and the
//! `vfio-pci ids=` value as `vfio_pci_fill_ids` reads it.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use super::cmdline::split_quoted;
use super::{Cmdline, DoctorOptions};

/// kmod's name rule: `-` and `_` are the same in module names.
pub fn modname(s: &str) -> String {
    s.replace('-', "_")
}

/// Where a directive was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub path: PathBuf,
    pub line: usize,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.path.display(), self.line)
    }
}

/// The directives of the modprobe configuration doctor cares about.
#[derive(Debug, Clone, Default)]
pub struct ModprobeConf {
    /// Files read, in kmod's order.
    pub files: Vec<PathBuf>,
    /// `blacklist MOD`.
    pub blacklist: BTreeMap<String, Origin>,
    /// `softdep MOD pre: A B …`: MOD → the modules loaded before it.
    pub softdep_pre: BTreeMap<String, Vec<(String, Origin)>>,
    /// `install MOD COMMAND` (a command that replaces loading, e.g. `/bin/false`).
    pub install: BTreeMap<String, (String, Origin)>,
    /// `options MOD …`: the option text of each line, in order.
    pub options: BTreeMap<String, Vec<(String, Origin)>>,
    /// Files that could not be read.
    pub unreadable: Vec<String>,
}

impl ModprobeConf {
    /// Read every `*.conf` of kmod's directories under the root, each name once (the first
    /// directory wins), in name order.
    pub fn load(opts: &DoctorOptions) -> ModprobeConf {
        let mut by_name: BTreeMap<String, PathBuf> = BTreeMap::new();
        let mut seen_dirs: Vec<PathBuf> = Vec::new();
        for dir in opts.machine.modprobe_dirs() {
            // `/lib` is often a link to `/usr/lib`: read a directory once.
            let canon = fs::canonicalize(&dir).unwrap_or_else(|_| dir.clone());
            if seen_dirs.contains(&canon) {
                continue;
            }
            seen_dirs.push(canon);
            let Ok(rd) = fs::read_dir(&dir) else {
                continue;
            };
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.ends_with(".conf") && !by_name.contains_key(&name) {
                    by_name.insert(name, e.path());
                }
            }
        }
        let mut conf = ModprobeConf::default();
        for path in by_name.into_values() {
            match fs::read_to_string(&path) {
                Ok(t) => conf.add(&t, &path),
                Err(e) => conf.unreadable.push(format!("{}: {e}", path.display())),
            }
        }
        conf
    }

    /// Parse one file's text into `self` (kmod `kmod_config_parse`: `#` lines are comments,
    /// a trailing `\` joins the next line, unknown commands are skipped).
    pub fn add(&mut self, text: &str, path: &Path) {
        self.files.push(path.to_path_buf());
        let mut pending = String::new();
        let mut start = 0;
        for (i, raw) in text.split('\n').enumerate() {
            let raw = raw.strip_suffix('\r').unwrap_or(raw);
            if pending.is_empty() {
                start = i + 1;
            }
            if let Some(head) = raw.strip_suffix('\\') {
                pending.push_str(head);
                pending.push(' ');
                continue;
            }
            pending.push_str(raw);
            let line = std::mem::take(&mut pending);
            self.directive(
                &line,
                Origin {
                    path: path.to_path_buf(),
                    line: start,
                },
            );
        }
        if !pending.is_empty() {
            let line = std::mem::take(&mut pending);
            self.directive(
                &line,
                Origin {
                    path: path.to_path_buf(),
                    line: start,
                },
            );
        }
    }

    fn directive(&mut self, line: &str, at: Origin) {
        let t = line.trim_start();
        if t.is_empty() || t.starts_with('#') {
            return;
        }
        let mut words = t.split_whitespace();
        let (Some(cmd), Some(module)) = (words.next(), words.next()) else {
            return;
        };
        let module = modname(module);
        match cmd {
            "blacklist" => {
                self.blacklist.entry(module).or_insert(at);
            }
            "softdep" => {
                let mut pre = false;
                for w in words {
                    match w {
                        "pre:" => pre = true,
                        "post:" => pre = false,
                        m if pre => self
                            .softdep_pre
                            .entry(module.clone())
                            .or_default()
                            .push((modname(m), at.clone())),
                        _ => {}
                    }
                }
            }
            "install" => {
                let rest: Vec<&str> = words.collect();
                self.install.entry(module).or_insert((rest.join(" "), at));
            }
            "options" => {
                let rest: Vec<&str> = words.collect();
                self.options
                    .entry(module)
                    .or_default()
                    .push((rest.join(" "), at));
            }
            _ => {}
        }
    }

    /// Every `ids=` given to vfio-pci in `options` lines, with where.
    pub fn vfio_ids(&self) -> Vec<(String, Origin)> {
        let mut out = Vec::new();
        for (text, at) in self.options.get("vfio_pci").into_iter().flatten() {
            for w in split_quoted(text) {
                if let Some(v) = w.strip_prefix("ids=") {
                    out.push((v.to_string(), at.clone()));
                }
            }
        }
        out
    }

    /// Why `module` will not claim a device before vfio-pci, if it will not: a blacklist, an
    /// `install` that replaces loading, or a softdep that loads vfio-pci first.
    pub fn held_back(&self, module: &str, cmdline: Option<&Cmdline>) -> Option<String> {
        let m = modname(module);
        if let Some(at) = self.blacklist.get(&m) {
            return Some(format!("blacklist {m} ({at})"));
        }
        if let Some((cmd, at)) = self.install.get(&m) {
            let c = cmd.trim();
            if matches!(
                c,
                "/bin/false" | "/bin/true" | "/usr/bin/false" | "/usr/bin/true"
            ) {
                return Some(format!("install {m} {c} ({at})"));
            }
        }
        if let Some(pre) = self.softdep_pre.get(&m) {
            if let Some((_, at)) = pre.iter().find(|(p, _)| p == "vfio_pci") {
                return Some(format!("softdep {m} pre: vfio-pci ({at})"));
            }
        }
        if let Some(c) = cmdline {
            for key in ["modprobe.blacklist", "module_blacklist"] {
                for v in c.values(key).flatten() {
                    if v.split(',').any(|x| modname(x) == m) {
                        return Some(format!("{key}={v} on the kernel command line"));
                    }
                }
            }
        }
        None
    }
}

// ---------------------------------------------------------------------------------------------
// vfio-pci ids=
// ---------------------------------------------------------------------------------------------

/// `PCI_ANY_ID`.
pub const PCI_ANY_ID: u32 = 0xffff_ffff;

/// One entry of `vfio-pci ids=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VfioId {
    pub vendor: u32,
    pub device: u32,
    pub subvendor: u32,
    pub subdevice: u32,
    pub class: u32,
    pub class_mask: u32,
}

impl VfioId {
    /// `pci_match_one_device`.
    pub fn matches(&self, vendor: u16, device: u16, subv: u16, subd: u16, class: u32) -> bool {
        let m = |want: u32, have: u16| want == PCI_ANY_ID || want == u32::from(have);
        m(self.vendor, vendor)
            && m(self.device, device)
            && m(self.subvendor, subv)
            && m(self.subdevice, subd)
            && (self.class ^ class) & self.class_mask == 0
    }
}

/// `%x` as sscanf reads it: blanks, optional `0x`, then hex digits as far as they go.
/// Returns the value and the rest; `None` when no digit is there or the value overflows.
fn scan_hex(s: &str) -> Option<(u32, &str)> {
    let s = s.trim_start();
    let s = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .filter(|r| r.starts_with(|c: char| c.is_ascii_hexdigit()))
        .unwrap_or(s);
    let end = s.find(|c: char| !c.is_ascii_hexdigit()).unwrap_or(s.len());
    if end == 0 {
        return None;
    }
    let v = u32::from_str_radix(s.get(..end)?, 16).ok()?;
    Some((v, s.get(end..).unwrap_or("")))
}

/// Parse an `ids=` value as `vfio_pci_fill_ids` does. Returns the entries and the ones the
/// kernel would ignore ("invalid id string").
pub fn parse_vfio_ids(value: &str) -> (Vec<VfioId>, Vec<String>) {
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    for id in value.split(',') {
        if id.is_empty() {
            continue;
        }
        let mut f = [0u32, 0, PCI_ANY_ID, PCI_ANY_ID, 0, 0];
        let mut n = 0;
        let mut rest = id;
        while n < f.len() {
            let Some((v, r)) = scan_hex(rest) else { break };
            if let Some(slot) = f.get_mut(n) {
                *slot = v;
            }
            n += 1;
            match r.strip_prefix(':') {
                Some(r) => rest = r,
                None => break,
            }
        }
        if n < 2 {
            bad.push(id.to_string());
            continue;
        }
        let [vendor, device, subvendor, subdevice, class, class_mask] = f;
        ok.push(VfioId {
            vendor,
            device,
            subvendor,
            subdevice,
            class,
            class_mask,
        });
    }
    (ok, bad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Cmdline;

    #[test]
    fn vfio_ids_as_the_kernel_reads_them() {
        let (ok, bad) = parse_vfio_ids("1002:1900,1002:1640,,zz,1022:15e2:1f4c:b016,0x1022:0x15E3:ffffffff:ffffffff:040300:ffffff");
        assert_eq!(bad, vec!["zz".to_string()]);
        assert_eq!(ok.len(), 4);
        assert!(ok[0].matches(0x1002, 0x1900, 1, 2, 0x030000));
        assert!(!ok[0].matches(0x1002, 0x1901, 1, 2, 0x030000));
        assert!(ok[2].matches(0x1022, 0x15e2, 0x1f4c, 0xb016, 0));
        assert!(!ok[2].matches(0x1022, 0x15e2, 0x1f4c, 0xb017, 0));
        assert!(ok[3].matches(0x1022, 0x15e3, 5, 5, 0x040300));
        assert!(!ok[3].matches(0x1022, 0x15e3, 5, 5, 0x040380));
        // sscanf stops at the first non-hex character: "19zz" is device 0x19.
        let (ok, _) = parse_vfio_ids("1002:19zz");
        assert_eq!(ok[0].device, 0x19);
    }

    #[test]
    fn modprobe_directives() {
        let mut m = ModprobeConf::default();
        m.add(
            "# c\nblacklist amdgpu\nsoftdep snd-hda-intel pre: vfio-pci post: x\noptions vfio-pci \\\n ids=1002:1900,1002:1640 disable_vga=1\ninstall radeon /bin/false\n",
            Path::new("/etc/modprobe.d/p.conf"),
        );
        assert!(m.held_back("amdgpu", None).is_some());
        assert!(m.held_back("snd_hda_intel", None).is_some());
        assert!(m.held_back("radeon", None).is_some());
        assert!(m.held_back("snd_sof_pci", None).is_none());
        let ids = m.vfio_ids();
        assert_eq!(ids.len(), 1);
        assert_eq!(ids[0].0, "1002:1900,1002:1640");
        assert_eq!(ids[0].1.line, 4);
        let c = Cmdline::parse("modprobe.blacklist=snd_sof_pci,x");
        assert!(m.held_back("snd-sof-pci", Some(&c)).is_some());
    }
}
