//! `resetlab sim up|down|dirty|status DIR`: the twin as a daemon, for scripts
//! and the fake `qm` of the bench tests. (`--sim` runs the same model in a
//! thread for one command.)

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::pci::Bdf;
use crate::sim::{model, profile::Profile, tree};

#[derive(clap::Args, Debug)]
pub struct SimArgs {
    #[command(subcommand)]
    pub cmd: SimCmd,
}

#[derive(clap::Subcommand, Debug)]
pub enum SimCmd {
    /// Lay out the twin in DIR (if not there) and start its device model in the background.
    Up {
        dir: PathBuf,
        /// Profile: effective methods and injected faults (TOML, see docs/testing.md).
        #[arg(long, value_name = "FILE")]
        profile: Option<PathBuf>,
    },
    /// Stop the device model of DIR.
    Down { dir: PathBuf },
    /// Mark a device as left dirty by a guest driver (the reset-bug state).
    Dirty { dir: PathBuf, dev: String },
    /// Say whether each dirty-capable device is clean or dirty.
    Status { dir: PathBuf },
    /// Run the device model in the foreground (what `up` starts).
    #[command(hide = true)]
    Serve {
        dir: PathBuf,
        #[arg(long)]
        profile: Option<PathBuf>,
    },
}

fn pidfile(dir: &Path) -> PathBuf {
    model::model_dir(dir).join("model.pid")
}

fn profile(p: &Option<PathBuf>) -> Result<Profile> {
    match p {
        Some(f) => Profile::load(f),
        None => Ok(Profile::default()),
    }
}

/// `sim up --json`.
#[derive(serde::Serialize, schemars::JsonSchema)]
pub struct UpOut {
    pub sysfs: std::path::PathBuf,
    pub pid: u32,
}

/// `sim status --json`: the twin's AMD functions and whether the reset bug's state is set.
#[derive(serde::Serialize, schemars::JsonSchema)]
pub struct StatusOut {
    pub devices: Vec<StatusRow>,
}

#[derive(serde::Serialize, schemars::JsonSchema)]
pub struct StatusRow {
    pub bdf: String,
    pub dirty: bool,
}

pub fn run(args: &SimArgs, json: bool) -> Result<i32> {
    match &args.cmd {
        SimCmd::Up { dir, profile: prof } => {
            profile(prof)?;
            if !dir.join("sys/bus/pci/devices").is_dir() {
                tree::build(dir, &tree::um880pro())?;
            }
            let exe = std::env::current_exe()
                .map_err(|e| Error::io("find own executable", "/proc/self/exe", e))?;
            let mut cmd = Command::new(exe);
            cmd.arg("sim").arg("serve").arg(dir);
            if let Some(p) = prof {
                cmd.arg("--profile").arg(p);
            }
            std::fs::create_dir_all(model::model_dir(dir))
                .map_err(|e| Error::io("create directory", dir, e))?;
            let log = std::fs::File::create(model::model_dir(dir).join("model.log"))
                .map_err(|e| Error::io("create", dir, e))?;
            use std::os::unix::process::CommandExt;
            let _ = std::fs::remove_file(model::ready_flag(dir));
            let mut child = cmd
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .process_group(0)
                .spawn()
                .map_err(|e| Error::io("start model", dir, e))?;
            std::fs::write(pidfile(dir), format!("{}\n", child.id()))
                .map_err(|e| Error::io("write", pidfile(dir), e))?;
            // Wait (bounded) until the model has its watches in place, or has died.
            let ready = model::ready_flag(dir);
            crate::reset::wait::poll(
                "the twin's model to start",
                Duration::from_secs(10),
                Duration::from_millis(20),
                || {
                    if ready.exists() {
                        return Ok(Some(()));
                    }
                    if let Ok(Some(status)) = child.try_wait() {
                        return Err(Error::failed(format!(
                            "the twin's model exited ({status}); see {}",
                            model::model_dir(dir).join("model.log").display()
                        )));
                    }
                    Ok(None)
                },
            )?;
            if json {
                crate::cli::print_json(&UpOut {
                    sysfs: dir.join("sys"),
                    pid: child.id(),
                })?;
            } else {
                println!(
                    "twin at {} (model pid {}); use --sysfs {}",
                    dir.display(),
                    child.id(),
                    dir.join("sys").display()
                );
            }
            Ok(0)
        }
        SimCmd::Down { dir } => {
            let p = pidfile(dir);
            let pid: i32 = std::fs::read_to_string(&p)
                .map_err(|e| Error::io("read", &p, e))?
                .trim()
                .parse()
                .map_err(|_| Error::parse("pid file", p.display().to_string(), "not a pid"))?;
            let pid = nix::unistd::Pid::from_raw(pid);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            // Stopped once signal 0 finds no process, or only its zombie
            // (nobody may reap it in a container without an init).
            crate::reset::wait::poll(
                "the twin's model to stop",
                Duration::from_secs(10),
                Duration::from_millis(20),
                || {
                    let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                        .map(|st| {
                            st.rsplit(')')
                                .next()
                                .is_some_and(|r| r.trim_start().starts_with('Z'))
                        })
                        .unwrap_or(true);
                    Ok((nix::sys::signal::kill(pid, None).is_err() || zombie).then_some(()))
                },
            )?;
            let _ = std::fs::remove_file(&p);
            Ok(0)
        }
        SimCmd::Dirty { dir, dev } => {
            let bdf: Bdf = dev.parse()?;
            if !dir
                .join("sys/bus/pci/devices")
                .join(bdf.to_string())
                .exists()
            {
                return Err(Error::not_found(
                    "PCI device",
                    format!("{bdf} in the twin at {}", dir.display()),
                ));
            }
            model::mark_dirty(dir, &bdf)?;
            Ok(0)
        }
        SimCmd::Status { dir } => {
            let rows: Vec<StatusRow> = tree::um880pro()
                .iter()
                .filter(|s| s.vendor == crate::pci::regs::PCI_VENDOR_ID_ATI)
                .map(|s| StatusRow {
                    bdf: s.bdf.to_string(),
                    dirty: model::is_dirty(dir, &s.bdf),
                })
                .collect();
            if json {
                crate::cli::print_json(&StatusOut { devices: rows })?;
            } else {
                for r in rows {
                    println!("{} {}", r.bdf, if r.dirty { "dirty" } else { "clean" });
                }
            }
            Ok(0)
        }
        SimCmd::Serve { dir, profile: prof } => {
            let stop = Arc::new(AtomicBool::new(false));
            signal_flag(&stop)?;
            model::serve(dir, profile(prof)?, stop)?;
            Ok(0)
        }
    }
}

/// Sets `stop` on SIGTERM/SIGINT.
fn signal_flag(stop: &Arc<AtomicBool>) -> Result<()> {
    STOP.get_or_init(|| stop.clone());
    extern "C" fn on_signal(_: libc::c_int) {
        if let Some(s) = STOP.get() {
            s.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
    let action = nix::sys::signal::SigAction::new(
        nix::sys::signal::SigHandler::Handler(on_signal),
        nix::sys::signal::SaFlags::empty(),
        nix::sys::signal::SigSet::empty(),
    );
    for sig in [
        nix::sys::signal::Signal::SIGTERM,
        nix::sys::signal::Signal::SIGINT,
    ] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { nix::sys::signal::sigaction(sig, &action) }
            .map_err(|e| Error::io("sigaction", "SIGTERM", e.into()))?;
    }
    Ok(())
}

static STOP: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();
