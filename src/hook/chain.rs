//! What `hook install` remembers about a VM's hookscript, and running the VM's previous
//! hookscript after resetlab's phase (`hook install VMID --chain`).
//!
//! The record is `/etc/resetlab/hookscripts/<VMID>.toml` (beneath the root for a twin): per
//! node, like the binary, while the VM config in `/etc/pve` is shared by the whole cluster.
//! `hook uninstall VMID` reads it to give the VM its previous hookscript back.
//!
//! Proxmox runs a hookscript as `<script> <vmid> <phase>` with stdin closed, reads its stdout
//! and stderr until both close, and has no timeout (pve-guest-common `PVE/GuestHelpers.pm`
//! `exec_hookscript`). The chained script gets the same arguments and environment, stdout sent
//! to stderr (stdout may carry `--json`), its own process group, and a bound: past it the whole
//! group is killed, so no child of it keeps Proxmox waiting.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::policy::Phase;
use crate::error::{Error, Result};

/// Where the records live under `/etc/resetlab` (`Machine::resetlab_etc`).
pub const RECORD_SUBDIR: &str = "hookscripts";
/// The chained script's bound unless `--chain-timeout` says otherwise. The field report's own
/// script needed 14 s for its pre-stop remove; a script that takes minutes is stuck.
pub const DEFAULT_CHAIN_TIMEOUT: Duration = Duration::from_secs(60);

/// `/etc/resetlab/hookscripts/<VMID>.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HookRecord {
    pub vmid: u32,
    /// resetlab's shim as set on the VM (`local:snippets/resetlab-hook.sh`).
    pub installed: String,
    /// The VM's hookscript before resetlab's, when it had one that was not resetlab's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    /// Run `previous` after resetlab's phase.
    #[serde(default)]
    pub chain: bool,
    /// Bound of the chained script, seconds.
    pub chain_timeout_s: f64,
}

impl HookRecord {
    pub fn path_for(etc_dir: &Path, vmid: u32) -> PathBuf {
        etc_dir.join(RECORD_SUBDIR).join(format!("{vmid}.toml"))
    }

    /// The record, `None` when there is none.
    pub fn load(etc_dir: &Path, vmid: u32) -> Result<Option<HookRecord>> {
        let path = Self::path_for(etc_dir, vmid);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("read", &path, e)),
        };
        let r: HookRecord = toml::from_str(&text).map_err(|e| {
            let (line, column) = e.span().map_or((1, 1), |s| {
                let before = &text[..s.start.min(text.len())];
                (
                    before.matches('\n').count() + 1,
                    before.rsplit('\n').next().map_or(0, str::len) + 1,
                )
            });
            Error::FileParse {
                path: path.clone(),
                line,
                column,
                reason: e.message().trim().to_string(),
            }
        })?;
        if r.vmid != vmid {
            return Err(Error::failed(format!(
                "{} is for VM {}, not VM {vmid}",
                path.display(),
                r.vmid
            )));
        }
        Ok(Some(r))
    }

    pub fn timeout(&self) -> Duration {
        Duration::try_from_secs_f64(self.chain_timeout_s).unwrap_or(DEFAULT_CHAIN_TIMEOUT)
    }

    pub fn render(&self) -> Result<String> {
        let body =
            toml::to_string(self).map_err(|e| Error::failed(format!("cannot encode: {e}")))?;
        Ok(format!(
            "# Written by `resetlab hook install {}`; `resetlab hook uninstall {}` gives the VM its\n\
             # previous hookscript back and removes this file. Per node: copy it to every node the\n\
             # VM runs on.\n{body}",
            self.vmid, self.vmid
        ))
    }

    /// Writes the record (mode 0644, directories as needed), atomically.
    pub fn save(&self, etc_dir: &Path) -> Result<PathBuf> {
        let path = Self::path_for(etc_dir, self.vmid);
        let dir = path.parent().unwrap_or(etc_dir);
        std::fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
        let tmp = dir.join(format!(".{}.toml.tmp", self.vmid));
        std::fs::write(&tmp, self.render()?).map_err(|e| Error::io("write", &tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| Error::io("rename", &path, e))?;
        Ok(path)
    }

    pub fn remove(etc_dir: &Path, vmid: u32) -> Result<()> {
        let path = Self::path_for(etc_dir, vmid);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("remove", &path, e)),
        }
    }
}

/// How the chained script ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum ChainOutcome {
    Exited {
        code: i32,
    },
    Signalled {
        signal: i32,
    },
    /// Killed (the whole process group) when the bound ran out.
    TimedOut {
        bound_ms: u64,
    },
}

impl ChainOutcome {
    pub fn ok(&self) -> bool {
        matches!(self, ChainOutcome::Exited { code: 0 })
    }
}

/// Runs `script VMID PHASE` and waits for it at most `bound`.
pub fn run_script(script: &Path, vmid: u32, phase: Phase, bound: Duration) -> Result<ChainOutcome> {
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    let stdout = std::io::stderr()
        .lock()
        .try_clone_fd()
        .map_err(|e| Error::io("duplicate stderr for", script, e))?;
    let mut child = Command::new(script)
        .arg(vmid.to_string())
        .arg(phase.as_str())
        .stdin(Stdio::null())
        .stdout(stdout)
        .process_group(0)
        .spawn()
        .map_err(|e| Error::io("run", script, e))?;
    let pid = child.id() as i32;
    let start = Instant::now();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let status = match rx.recv_timeout(bound) {
        Ok(r) => r.map_err(|e| Error::io("wait for", script, e))?,
        Err(_) => {
            // The script and everything it started; its group id is its pid.
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            // SIGKILL cannot be caught: the wait ends as soon as the kernel reaps it.
            let _ = rx.recv();
            return Ok(ChainOutcome::TimedOut {
                bound_ms: start.elapsed().max(bound).as_millis() as u64,
            });
        }
    };
    Ok(match (status.code(), status.signal()) {
        (Some(code), _) => ChainOutcome::Exited { code },
        (None, Some(signal)) => ChainOutcome::Signalled { signal },
        (None, None) => ChainOutcome::Exited { code: -1 },
    })
}

/// `try_clone` of stderr as an owned descriptor a child can take as its stdout.
trait CloneFd {
    fn try_clone_fd(&self) -> std::io::Result<std::os::fd::OwnedFd>;
}

impl CloneFd for std::io::StderrLock<'_> {
    fn try_clone_fd(&self) -> std::io::Result<std::os::fd::OwnedFd> {
        use std::os::fd::AsFd;
        self.as_fd().try_clone_to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn script(dir: &Path, body: &str) -> PathBuf {
        let p = dir.join("prev.sh");
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    #[test]
    fn a_record_round_trips_and_names_its_vm() {
        let dir = tempfile::tempdir().unwrap();
        let r = HookRecord {
            vmid: 100,
            installed: "local:snippets/resetlab-hook.sh".into(),
            previous: Some("local:snippets/vm100-hooks.sh".into()),
            chain: true,
            chain_timeout_s: 60.0,
        };
        let p = r.save(dir.path()).unwrap();
        assert_eq!(p, dir.path().join("hookscripts/100.toml"));
        assert_eq!(HookRecord::load(dir.path(), 100).unwrap(), Some(r));
        assert_eq!(HookRecord::load(dir.path(), 101).unwrap(), None);
        std::fs::copy(&p, dir.path().join("hookscripts/101.toml")).unwrap();
        let e = HookRecord::load(dir.path(), 101).unwrap_err().one_line();
        assert!(e.contains("for VM 100, not VM 101"), "{e}");
        std::fs::write(&p, "vmid = 100\nbogus = 1\n").unwrap();
        let e = HookRecord::load(dir.path(), 100).unwrap_err().one_line();
        assert!(e.contains("100.toml:2:"), "{e}");
        HookRecord::remove(dir.path(), 100).unwrap();
        HookRecord::remove(dir.path(), 100).unwrap();
    }

    #[test]
    fn the_script_gets_vmid_and_phase_and_its_exit_code_counts() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("args");
        let s = script(
            dir.path(),
            &format!("echo \"$1 $2\" > {}\nexit 3", log.display()),
        );
        let out = run_script(&s, 100, Phase::PostStop, Duration::from_secs(30)).unwrap();
        assert_eq!(out, ChainOutcome::Exited { code: 3 });
        assert_eq!(
            std::fs::read_to_string(&log).unwrap().trim(),
            "100 post-stop"
        );
    }

    #[test]
    fn a_script_past_its_bound_is_killed_with_its_children() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("child");
        // The child of the script would keep Proxmox's pipes open: it must die too.
        let s = script(
            dir.path(),
            &format!("sleep 600 & echo $! > {}\nwait", pidfile.display()),
        );
        // Long enough for sh to start its child on a busy machine; the test waits this long.
        let out = run_script(&s, 100, Phase::PreStop, Duration::from_secs(3)).unwrap();
        assert!(
            matches!(out, ChainOutcome::TimedOut { bound_ms } if bound_ms >= 3000),
            "{out:?}"
        );
        let child: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // Gone, a zombie, or with SIGKILL (bit 9) pending: the kernel finishes it on its own.
        let status = std::fs::read_to_string(crate::machine::process_dir(child).join("status"))
            .unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_string())
        };
        let dead = field("State:").is_none_or(|s| s.starts_with('Z') || s.starts_with('X'));
        let kill_pending = ["SigPnd:", "ShdPnd:"].iter().any(|f| {
            field(f)
                .and_then(|v| u64::from_str_radix(&v, 16).ok())
                .is_some_and(|m| m & (1 << 8) != 0)
        });
        assert!(dead || kill_pending, "child {child} still runs:\n{status}");
    }
}
