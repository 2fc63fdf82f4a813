//! `resetlab hook install VMID` and `resetlab hook uninstall VMID`: put the hookscript shim
//! (`tools/pve-hookscript.sh`) into a storage's snippets directory, set it as the VM's
//! hookscript with `qm set`, and remember the VM's previous hookscript (chain.rs) so that
//! `--chain` runs it too and `uninstall` gives it back.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::Serialize;

use super::chain::HookRecord;
use super::cluster::{self, ClusterInfo};
use super::policy::Policy;
use super::run::HookOptions;
use super::status::SHIM_MARKER;
use crate::error::{Error, Result};
use crate::pve::{PciMappings, StorageConfig, VmConfig};

/// The shim Proxmox runs: it execs `resetlab hook "$1" "$2"`.
pub const SHIM: &str = include_str!("../../tools/pve-hookscript.sh");

/// Shims earlier resetlab versions installed, word for word: `hook install` replaces them
/// without `--force`, and `doctor` calls them outdated rather than someone else's.
pub const OLDER_SHIMS: &[&str] = &[include_str!("../../tools/shims/pve-hookscript-r1.sh")];

/// The shim's file name unless `--name` says otherwise.
pub const DEFAULT_SHIM_NAME: &str = "resetlab-hook.sh";

/// What a file in a snippets directory is, as far as resetlab is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ShimKind {
    /// This version's shim.
    Current,
    /// A shim an earlier resetlab installed.
    Older,
    /// Carries the shim's marker but is not a shim resetlab shipped (edited by hand).
    Modified,
    /// Not resetlab's.
    Foreign,
}

pub fn shim_kind(text: &str) -> ShimKind {
    if text == SHIM {
        ShimKind::Current
    } else if OLDER_SHIMS.contains(&text) {
        ShimKind::Older
    } else if text.contains(SHIM_MARKER) {
        ShimKind::Modified
    } else {
        ShimKind::Foreign
    }
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct QmRun {
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// What the shim file needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ShimWrite {
    /// Not there before: written.
    New,
    /// An older or modified resetlab shim: replaced by this version's.
    Updated,
    /// Already this version's shim.
    Unchanged,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct InstallReport {
    pub vmid: u32,
    pub storage: String,
    /// `STORAGE:snippets/NAME`, what `hookscript:` will say.
    pub volid: String,
    pub path: PathBuf,
    pub shim: ShimWrite,
    /// `false` with `--print-only`: nothing was written (the shim, the record), nothing run.
    pub written: bool,
    /// The VM's hookscript before (the field report's `local:snippets/vm100-hooks.sh`, say).
    pub previous_hookscript: Option<String>,
    /// The record kept for `uninstall` and `--chain`.
    pub record: HookRecord,
    pub record_path: PathBuf,
    /// `qm set VMID --hookscript VOLID`.
    pub command: Vec<String>,
    /// `None`: `qm` was not run (not found, or `--print-only`); run `command` by hand.
    pub qm: Option<QmRun>,
    /// `Some` in a Proxmox cluster: which nodes need the package (and the shim).
    pub cluster: Option<ClusterInfo>,
}

/// `hook install`'s choices.
#[derive(Debug, Clone)]
pub struct InstallRequest<'a> {
    pub vmid: u32,
    pub storage: &'a str,
    pub name: &'a str,
    pub force: bool,
    /// `Some(true)`: `--chain`; `Some(false)`: `--no-chain`; `None`: keep what the record says.
    pub chain: Option<bool>,
    pub chain_timeout: Option<Duration>,
    pub print_only: bool,
    /// `qm` to run, when one is.
    pub qm: Option<&'a Path>,
    /// A twin's or snapshot's root: snippets directories are taken beneath it.
    pub root: Option<&'a Path>,
    /// `/etc/resetlab` (beneath the root for a twin).
    pub etc_dir: &'a Path,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct UninstallReport {
    pub vmid: u32,
    /// The VM's hookscript now.
    pub current: Option<String>,
    /// What it gets back: the recorded previous hookscript, or none.
    pub restore: Option<String>,
    pub record_path: PathBuf,
    /// There was a record of `hook install`.
    pub had_record: bool,
    /// `qm set VMID --hookscript PREVIOUS` or `qm set VMID --delete hookscript`; empty when the
    /// VM already has what it gets back.
    pub command: Vec<String>,
    pub qm: Option<QmRun>,
    /// The record was removed (the VM has its previous hookscript back).
    pub record_removed: bool,
    /// The shim file stays: other VMs may use it.
    pub shim_left: Option<PathBuf>,
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

/// A snippets directory (or file) beneath `root` when one is given (a twin or snapshot):
/// `/var/lib/vz/snippets` → `<root>/var/lib/vz/snippets`.
pub fn beneath(root: Option<&Path>, p: PathBuf) -> PathBuf {
    match root {
        Some(root) if !p.starts_with(root) => root.join(p.strip_prefix("/").unwrap_or(&p)),
        _ => p,
    }
}

/// Whether the VM's hookscript `volid` is a resetlab shim (any version), by its file.
fn is_resetlab_hookscript(storages: &StorageConfig, root: Option<&Path>, volid: &str) -> bool {
    storages
        .snippet_path(volid)
        .ok()
        .map(|p| beneath(root, p))
        .and_then(|p| std::fs::read_to_string(p).ok())
        .is_some_and(|t| shim_kind(&t) != ShimKind::Foreign)
}

fn run_qm(qm: &Path, args: &[String]) -> Result<QmRun> {
    let out = Command::new(qm)
        .args(args)
        .output()
        .map_err(|e| Error::io("run", qm, e))?;
    Ok(QmRun {
        status: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// Writes the shim as `<snippets dir of storage>/<name>` (mode 0755), records the VM's
/// previous hookscript, and runs `qm` (the path given, when one is) to set the shim on the VM.
/// A file of that name that is not resetlab's shim is left alone unless `force`; an older
/// resetlab shim is updated. With `print_only` nothing is written and nothing run.
pub fn install(opts: &HookOptions, req: &InstallRequest) -> Result<InstallReport> {
    check_name(req.name)?;
    // Refuse early on a policy that the hook could not use.
    Policy::load(&opts.policy)?;
    let vm = VmConfig::load(&opts.pve_root, req.vmid)?;
    let storages = StorageConfig::load(&opts.pve_root)?;
    let raw_dir = storages.snippets_dir(req.storage)?;
    // A `..` in storage.cfg's path would lead out of a twin's root (and is
    // never needed on a real host): bad input.
    if raw_dir
        .components()
        .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(Error::parse(
            "storage path",
            raw_dir.display().to_string(),
            format!(
                "storage '{}' in storage.cfg has a '..' in its path",
                req.storage
            ),
        ));
    }
    let dir = beneath(req.root, raw_dir);
    let path = dir.join(req.name);
    let shim = match std::fs::read_to_string(&path) {
        Ok(old) => match shim_kind(&old) {
            ShimKind::Current => ShimWrite::Unchanged,
            ShimKind::Older => ShimWrite::Updated,
            ShimKind::Modified | ShimKind::Foreign if req.force => ShimWrite::Updated,
            ShimKind::Modified => {
                return Err(Error::refused(format!(
                    "{} exists and is a customised resetlab hookscript shim; choose another \
                     --name or pass --force to replace it",
                    path.display()
                )))
            }
            ShimKind::Foreign => {
                return Err(Error::refused(format!(
                    "{} exists and is not resetlab's hookscript shim; choose another --name or \
                     pass --force to replace it",
                    path.display()
                )))
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => ShimWrite::New,
        Err(e) => return Err(Error::io("read", &path, e)),
    };
    let volid = format!("{}:snippets/{}", req.storage, req.name);
    // The previous hookscript: kept from an earlier install (the VM has resetlab's shim now),
    // or the VM's own when it is not resetlab's.
    let old_record = HookRecord::load(req.etc_dir, req.vmid)?;
    let current_is_ours = vm
        .hookscript
        .as_deref()
        .is_some_and(|h| h == volid || is_resetlab_hookscript(&storages, req.root, h));
    let previous = match (&vm.hookscript, current_is_ours) {
        (Some(h), false) => Some(h.clone()),
        _ => old_record.as_ref().and_then(|r| r.previous.clone()),
    };
    let chain = req
        .chain
        .unwrap_or_else(|| old_record.as_ref().is_some_and(|r| r.chain));
    if chain && previous.is_none() {
        return Err(Error::refused(format!(
            "--chain: VM {} has no previous hookscript to run after resetlab's (its hookscript is {})",
            req.vmid,
            vm.hookscript.as_deref().unwrap_or("not set")
        )));
    }
    let record = HookRecord {
        vmid: req.vmid,
        installed: volid.clone(),
        previous: previous.clone(),
        chain,
        chain_timeout_s: req
            .chain_timeout
            .map(|d| d.as_secs_f64())
            .or(old_record.as_ref().map(|r| r.chain_timeout_s))
            .unwrap_or(super::chain::DEFAULT_CHAIN_TIMEOUT.as_secs_f64()),
    };
    let record_path = HookRecord::path_for(req.etc_dir, req.vmid);
    let command: Vec<String> = ["qm", "set", &req.vmid.to_string(), "--hookscript", &volid]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mappings = vm
        .uses_mappings()
        .then(|| PciMappings::load(&opts.pve_root).ok())
        .flatten();
    let cluster = cluster::detect(
        &opts.pve_root,
        &vm,
        storages.get(req.storage)?,
        mappings.as_ref(),
    );
    let mut report = InstallReport {
        vmid: req.vmid,
        storage: req.storage.to_string(),
        volid,
        path: path.clone(),
        shim,
        written: false,
        previous_hookscript: vm.hookscript.clone(),
        record,
        record_path,
        command,
        qm: None,
        cluster,
    };
    if req.print_only {
        return Ok(report);
    }
    if shim != ShimWrite::Unchanged {
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("create directory", &dir, e))?;
        // Write beside and rename: Proxmox may be running the old shim right now.
        let tmp = dir.join(format!(".{}.tmp", req.name));
        std::fs::write(&tmp, SHIM).map_err(|e| Error::io("write", &tmp, e))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| Error::io("chmod", &tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| Error::io("rename", &path, e))?;
    } else {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| Error::io("chmod", &path, e))?;
    }
    // Recorded before `qm set` replaces the VM's hookscript: never lose the previous one.
    if old_record.as_ref() != Some(&report.record) {
        report.record.save(req.etc_dir)?;
    }
    report.written = true;
    if let Some(qm) = req.qm {
        report.qm = Some(run_qm(qm, &report.command[1..])?);
    }
    Ok(report)
}

/// Gives the VM its previous hookscript back (the record of `hook install`), or removes its
/// hookscript when it had none; then forgets the record. A hookscript that is neither
/// resetlab's nor the recorded one is someone else's: refused. With `print_only` nothing is
/// written or run; without a `qm` to run, the command is printed and the record kept until the
/// VM has its hookscript back (run `hook uninstall` again then).
pub fn uninstall(
    opts: &HookOptions,
    vmid: u32,
    print_only: bool,
    qm: Option<&Path>,
    root: Option<&Path>,
    etc_dir: &Path,
) -> Result<UninstallReport> {
    let vm = VmConfig::load(&opts.pve_root, vmid)?;
    let storages = StorageConfig::load(&opts.pve_root)?;
    let record = HookRecord::load(etc_dir, vmid)?;
    let restore = record.as_ref().and_then(|r| r.previous.clone());
    let current = vm.hookscript.clone();
    let ours = current
        .as_deref()
        .is_some_and(|h| is_resetlab_hookscript(&storages, root, h));
    if !ours && current != restore {
        return Err(Error::refused(format!(
            "VM {vmid}'s hookscript is {}, not resetlab's shim: nothing of resetlab's to uninstall",
            current.as_deref().unwrap_or("not set")
        )));
    }
    let command: Vec<String> = if current == restore {
        Vec::new()
    } else {
        let mut c: Vec<String> = vec!["qm".into(), "set".into(), vmid.to_string()];
        match &restore {
            Some(prev) => c.extend(["--hookscript".to_string(), prev.clone()]),
            None => c.extend(["--delete".to_string(), "hookscript".to_string()]),
        }
        c
    };
    let shim_left = current
        .as_deref()
        .filter(|_| ours)
        .and_then(|h| storages.snippet_path(h).ok())
        .map(|p| beneath(root, p));
    let mut report = UninstallReport {
        vmid,
        current,
        restore,
        record_path: HookRecord::path_for(etc_dir, vmid),
        had_record: record.is_some(),
        command,
        qm: None,
        record_removed: false,
        shim_left,
    };
    if print_only {
        return Ok(report);
    }
    let restored = if report.command.is_empty() {
        true
    } else if let Some(qm) = qm {
        let run = run_qm(qm, &report.command[1..])?;
        let ok = run.status == Some(0);
        report.qm = Some(run);
        ok
    } else {
        false
    };
    if restored && report.had_record {
        HookRecord::remove(etc_dir, vmid)?;
        report.record_removed = true;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shim_carries_its_marker_and_execs_the_hook() {
        assert!(SHIM.contains(SHIM_MARKER));
        assert!(SHIM.contains(r#"hook "$1" "$2""#));
        assert_eq!(shim_kind(SHIM), ShimKind::Current);
        for old in OLDER_SHIMS {
            assert_eq!(shim_kind(old), ShimKind::Older);
        }
        let edited = SHIM.replace("exit 0", "exit 0 # mine");
        assert_eq!(shim_kind(&edited), ShimKind::Modified);
        assert_eq!(shim_kind("#!/bin/sh\necho hi\n"), ShimKind::Foreign);
    }

    #[test]
    fn snippet_names_are_plain_file_names() {
        let () = check_name("resetlab-hook.sh").unwrap();
        for bad in ["", "../x", "a/b", ".hidden", "a b"] {
            let e = check_name(bad).unwrap_err();
            assert!(
                matches!(&e, Error::Parse { what: "snippet name", input, reason }
                    if input == bad && reason.starts_with("use letters, digits")),
                "{bad:?}: {e:?}"
            );
        }
    }
}
