//! Which modules would claim a device: `modules.alias` matched against its `modalias`.

use std::fs;
use std::path::PathBuf;

use crate::pci::sysfs::read_attr;
use crate::pci::Device;

use super::{modname, DoctorOptions};

/// One `alias pci:… MODULE` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModAlias {
    pub pattern: String,
    pub module: String,
}

/// The `pci:` aliases of a `modules.alias` file.
pub fn parse_modules_alias(text: &str) -> Vec<ModAlias> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            if w.next()? != "alias" {
                return None;
            }
            let pattern = w.next()?;
            let module = w.next()?;
            pattern.starts_with("pci:").then(|| ModAlias {
                pattern: pattern.to_string(),
                module: modname(module),
            })
        })
        .collect()
}

pub(super) fn load_aliases(
    opts: &DoctorOptions,
    release: &str,
) -> Option<(PathBuf, Vec<ModAlias>)> {
    for base in ["/lib/modules", "/usr/lib/modules"] {
        let p = opts.under_root(base).join(release).join("modules.alias");
        if let Ok(t) = fs::read_to_string(&p) {
            return Some((p, parse_modules_alias(&t)));
        }
    }
    None
}

/// fnmatch(3) for the `*` and `?` that modalias patterns use (byte-wise; other bytes literal).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some(b'*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if c == b'?' || Some(&c) == t.get(ti) => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p.get(pi..).is_some_and(|r| r.iter().all(|&c| c == b'*'))
}

/// The device's modalias: the sysfs attribute, or built the way `modalias_show` prints it.
pub fn modalias(d: &Device) -> String {
    if let Ok(Some(m)) = read_attr(&d.dir.join("modalias")) {
        if !m.is_empty() {
            return m;
        }
    }
    format!(
        "pci:v{:08X}d{:08X}sv{:08X}sd{:08X}bc{:02X}sc{:02X}i{:02X}",
        d.vendor,
        d.device,
        d.subsystem_vendor.unwrap_or(0),
        d.subsystem_device.unwrap_or(0),
        (d.class >> 16) as u8,
        (d.class >> 8) as u8,
        d.class as u8
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match(
            "pci:v00001002d*sv*sd*bc03sc*i*",
            "pci:v00001002d00001900sv00001F4Csd0000B016bc03sc00i00"
        ));
        assert!(!glob_match(
            "pci:v00001002d*sv*sd*bc04sc*i*",
            "pci:v00001002d00001900sv00001F4Csd0000B016bc03sc00i00"
        ));
        assert!(glob_match("a?c*", "abcdef"));
        assert!(glob_match("*", ""));
        assert!(!glob_match("a", ""));
        assert!(!glob_match("", "a"));
    }
}
