//! The bench's external commands (dirty, VM stop/start, guest check): a
//! template run by `sh -c`, bounded in time, with its outcome as a [`Step`].
//!
//! Placeholders: `{dev}` (the device's BDF), `{vmid}`, `{sysfs}`. The values
//! are checked to be shell-safe words before they are substituted. The
//! command also gets `RESETLAB_BENCH_CYCLE`, `RESETLAB_BENCH_METHOD`,
//! `RESETLAB_BENCH_DEV` and `RESETLAB_BENCH_VMID` in its environment.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// What one command did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Step {
    pub ok: bool,
    pub ms: f64,
    /// `exit 0`, `exit 1: <last line of stderr>`, `timed out after N ms`, …
    pub detail: String,
}

impl Step {
    pub fn ok(ms: f64, detail: impl Into<String>) -> Step {
        Step {
            ok: true,
            ms,
            detail: detail.into(),
        }
    }

    pub fn failed(ms: f64, detail: impl Into<String>) -> Step {
        Step {
            ok: false,
            ms,
            detail: detail.into(),
        }
    }
}

/// The values substituted into a command template.
#[derive(Debug, Clone, Default)]
pub struct CmdVars {
    pub dev: String,
    pub sysfs: String,
    pub vmid: String,
    pub cycle: usize,
    pub method: String,
}

/// A VM id as Proxmox (digits) or libvirt (a domain name) spells it: only
/// characters that need no quoting in a shell.
pub fn check_vmid(s: &str) -> Result<String> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(s.to_string())
    } else {
        Err(Error::parse(
            "VM id",
            s,
            "use the VM's number or name (letters, digits, '_', '-', '.')",
        ))
    }
}

/// Single-quotes a word for `sh` unless it needs no quoting.
fn sh_word(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/_-.:+=,@".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The template with its placeholders replaced (each value shell-quoted).
pub fn expand(template: &str, v: &CmdVars) -> String {
    template
        .replace("{dev}", &sh_word(&v.dev))
        .replace("{vmid}", &sh_word(&v.vmid))
        .replace("{sysfs}", &sh_word(&v.sysfs))
}

fn last_line(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let line = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    line.chars().take(300).collect()
}

/// Runs the command to its end or the bound (then its process group is
/// killed); never fails: a failure is a `Step` that says why.
pub fn run(template: &str, vars: &CmdVars, bound: Duration) -> Step {
    let t0 = Instant::now();
    let ms = |t: Instant| t.elapsed().as_secs_f64() * 1e3;
    let line = expand(template, vars);
    let child = Command::new("sh")
        .arg("-c")
        .arg(&line)
        .env("RESETLAB_BENCH_CYCLE", vars.cycle.to_string())
        .env("RESETLAB_BENCH_METHOD", &vars.method)
        .env("RESETLAB_BENCH_DEV", &vars.dev)
        .env("RESETLAB_BENCH_VMID", &vars.vmid)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return Step::failed(ms(t0), format!("cannot run sh -c {line:?}: {e}")),
    };
    // Drain stderr in a thread so a chatty command never blocks on the pipe.
    let reader = child.stderr.take().map(|mut err| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = err.read_to_end(&mut buf);
            buf
        })
    });
    let waited = crate::pci::wait::poll_for(
        bound.saturating_sub(t0.elapsed()),
        Duration::from_micros(200),
        Duration::from_millis(20),
        || {
            child
                .try_wait()
                .map_err(|e| Error::io("wait for", format!("{line:?}"), e))
        },
    );
    let status = match waited {
        Ok(s) => s,
        Err(e) => return Step::failed(ms(t0), e.one_line()),
    };
    let Some(status) = status else {
        // The whole group: sh and whatever it started.
        let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        let _ = child.wait();
        return Step::failed(
            ms(t0),
            format!("timed out after {} ms: {line}", bound.as_millis()),
        );
    };
    let elapsed = ms(t0);
    let err = reader
        .and_then(|h| h.join().ok())
        .map(|b| last_line(&b))
        .unwrap_or_default();
    match status.code() {
        Some(0) => Step::ok(elapsed, "exit 0"),
        Some(c) if err.is_empty() => Step::failed(elapsed, format!("exit {c}")),
        Some(c) => Step::failed(elapsed, format!("exit {c}: {err}")),
        None => {
            use std::os::unix::process::ExitStatusExt;
            Step::failed(
                elapsed,
                format!("killed by signal {}", status.signal().unwrap_or(0)),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn vars() -> CmdVars {
        CmdVars {
            dev: "0000:c5:00.0".into(),
            vmid: "101".into(),
            sysfs: "/tmp/my twin/sys".into(),
            ..CmdVars::default()
        }
    }

    #[test]
    fn expands_placeholders_quoting_what_needs_it() {
        assert_eq!(
            expand("qm start {vmid} # {dev} {sysfs}", &vars()),
            "qm start 101 # 0000:c5:00.0 '/tmp/my twin/sys'"
        );
    }

    #[test]
    fn reports_exit_status_and_the_last_line_of_stderr() {
        let s = run("exit 0", &vars(), Duration::from_secs(10));
        assert!(s.ok, "{s:?}");
        let s = run(
            "echo one >&2; echo 'GPU is dirty' >&2; exit 3",
            &vars(),
            Duration::from_secs(10),
        );
        assert_eq!((s.ok, s.detail.as_str()), (false, "exit 3: GPU is dirty"));
        let s = run(
            "test \"$RESETLAB_BENCH_VMID\" = 101",
            &vars(),
            Duration::from_secs(10),
        );
        assert!(s.ok, "{s:?}");
    }

    #[test]
    fn a_command_past_its_bound_is_killed_with_its_children() {
        let s = run(
            "sleep 30 & sleep 30; wait",
            &vars(),
            Duration::from_millis(100),
        );
        assert!(!s.ok);
        assert!(
            s.detail.starts_with("timed out after 100 ms"),
            "{}",
            s.detail
        );
    }

    #[test]
    fn vm_ids() {
        assert_eq!(check_vmid("101").unwrap(), "101");
        assert_eq!(check_vmid("win11-gpu").unwrap(), "win11-gpu");
        for bad in ["", "1; rm -rf /", "a b", "$(x)"] {
            let e = check_vmid(bad).unwrap_err();
            assert!(
                matches!(&e, Error::Parse { what: "VM id", input, reason }
                    if input == bad && reason.starts_with("use the VM's number or name")),
                "{bad}: {e:?}"
            );
        }
    }

    proptest! {
        #[test]
        fn quoting_survives_the_shell(s in "[ -~]{0,20}") {
            // sh -c 'printf %s <quoted>' prints the word back unchanged.
            let o = Command::new("sh").arg("-c").arg(format!("printf %s {}", sh_word(&s)))
                .output().unwrap();
            prop_assert_eq!(String::from_utf8_lossy(&o.stdout).into_owned(), s);
        }
    }
}
