//! `resetlab hook install VMID`: puts the hookscript shim (`tools/pve-hookscript.sh`) into a
//! storage's snippets directory and sets it as the VM's hookscript with `qm set`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Serialize;

use super::policy::Policy;
use super::pveconf::{StorageConfig, VmConfig};
use super::run::HookOptions;
use super::status::SHIM_MARKER;
use crate::error::{Error, Result};

/// The shim Proxmox runs: it execs `resetlab hook "$1" "$2"`.
pub const SHIM: &str = include_str!("../../tools/pve-hookscript.sh");

/// The shim's file name unless `--name` says otherwise.
pub const DEFAULT_SHIM_NAME: &str = "resetlab-hook.sh";

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct QmRun {
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct InstallReport {
    pub vmid: u32,
    pub storage: String,
    /// `STORAGE:snippets/NAME`, what `hookscript:` will say.
    pub volid: String,
    pub path: PathBuf,
    /// `false` when the same shim was already there.
    pub written: bool,
    /// The VM's hookscript before (the field report's `local:snippets/vm100-hooks.sh`, say).
    pub previous_hookscript: Option<String>,
    /// `qm set VMID --hookscript VOLID`.
    pub command: Vec<String>,
    /// `None`: `qm` was not run (not found, or `--print-only`); run `command` by hand.
    pub qm: Option<QmRun>,
}

/// `name` found as an executable file in `$PATH`.
pub fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(Error::parse(
            "snippet name",
            name,
            "use letters, digits, '-', '_' and '.' (not first)",
        ))
    }
}

/// Writes the shim as `<snippets dir of storage>/<name>` (mode 0755) and runs `qm` (the path
/// given, when one is) to set it on the VM. A file of that name that is not resetlab's shim is
/// left alone unless `force`. With `root` (a twin or snapshot), a snippets directory outside it
/// is taken beneath it (`/var/lib/vz/snippets` → `<root>/var/lib/vz/snippets`).
pub fn install(
    opts: &HookOptions,
    vmid: u32,
    storage: &str,
    name: &str,
    force: bool,
    qm: Option<&Path>,
    root: Option<&Path>,
) -> Result<InstallReport> {
    check_name(name)?;
    // Refuse early on a policy that the hook could not use.
    Policy::load(&opts.policy)?;
    let vm = VmConfig::load(&opts.pve_root, vmid)?;
    let storages = StorageConfig::load(&opts.pve_root)?;
    let mut dir = storages.snippets_dir(storage)?;
    if let Some(root) = root {
        if !dir.starts_with(root) {
            dir = root.join(dir.strip_prefix("/").unwrap_or(&dir));
        }
    }
    let path = dir.join(name);
    let written = match std::fs::read_to_string(&path) {
        Ok(old) if old == SHIM => false,
        Ok(old) if !old.contains(SHIM_MARKER) && !force => {
            return Err(Error::refused(format!(
                "{} exists and is not resetlab's hookscript shim; choose another --name or pass \
                 --force to replace it",
                path.display()
            )))
        }
        Ok(_) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(e) => return Err(Error::io("read", &path, e)),
    };
    if written {
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("create directory", &dir, e))?;
        std::fs::write(&path, SHIM).map_err(|e| Error::io("write", &path, e))?;
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| Error::io("chmod", &path, e))?;
    let volid = format!("{storage}:snippets/{name}");
    let command = vec![
        "qm".to_string(),
        "set".to_string(),
        vmid.to_string(),
        "--hookscript".to_string(),
        volid.clone(),
    ];
    let qm_run = match qm {
        None => None,
        Some(qm) => {
            let out = Command::new(qm)
                .args(&command[1..])
                .output()
                .map_err(|e| Error::io("run", qm, e))?;
            Some(QmRun {
                status: out.status.code(),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            })
        }
    };
    Ok(InstallReport {
        vmid,
        storage: storage.to_string(),
        volid,
        path,
        written,
        previous_hookscript: vm.hookscript,
        command,
        qm: qm_run,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shim_carries_its_marker_and_execs_the_hook() {
        assert!(SHIM.contains(SHIM_MARKER));
        assert!(SHIM.contains(r#"hook "$1" "$2""#));
    }

    #[test]
    fn snippet_names_are_plain_file_names() {
        assert!(check_name("resetlab-hook.sh").is_ok());
        for bad in ["", "../x", "a/b", ".hidden", "a b"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
