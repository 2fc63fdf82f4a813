//! `resetlab sim up|down|dirty|status DIR`: the twin as a daemon, for scripts
//! and the fake `qm` of the bench tests. (`--sim` runs the same model in a
//! thread for one command.)

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::pci::Bdf;
use crate::sim::{family, model, profile::Profile, tree};

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
        /// The GPU as a device of this regs/ family or alias (rembrandt, raphael, strix, ...);
        /// default the seed's 780M. Recorded in DIR/model/asic for the model.
        #[arg(long, value_name = "NAME")]
        asic: Option<String>,
    },
    /// Stop the device model of DIR.
    Down { dir: PathBuf },
    /// Mark a device as left dirty by a guest driver (the reset-bug state).
    Dirty { dir: PathBuf, dev: String },
    /// Say whether each dirty-capable device is clean or dirty.
    Status { dir: PathBuf },
    /// A VM's fake QEMU: start, stop, shutdown, kill, status, check.
    Vm(super::sim_vm::VmArgs),
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

/// Starts a copy of resetlab as a server of the twin (the model, a fake QEMU): its own
/// process group, so a Ctrl-C in the terminal that started it does not reach it, with its
/// stderr in `log`.
pub(super) fn spawn_server(mut cmd: Command, log: std::fs::File) -> std::io::Result<Child> {
    use std::os::unix::process::CommandExt;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .process_group(0)
        .spawn()
}

/// Whether `pid` is the device model serving the twin at `root` (already
/// resolved): its command line is `… sim serve DIR …` with DIR, resolved from
/// the process's own working directory, the same root.
fn is_model_of(pid: i32, root: &Path) -> std::result::Result<(), String> {
    let proc_dir = crate::machine::process_dir(pid);
    if !crate::machine::process_running(pid) {
        return Err(format!("no process {pid}"));
    }
    let cmdline = crate::bounded_read::read_limited(&proc_dir.join("cmdline"), 64 * 1024)
        .map_err(|_| format!("no process {pid}"))?;
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let serve = args
        .windows(3)
        .find(|w| w[0] == "sim" && w[1] == "serve")
        .map(|w| PathBuf::from(&w[2]));
    let shown = crate::text::escape_control(&args.join(" "));
    let Some(d) = serve else {
        return Err(format!("pid {pid} is `{}`, not a twin model", shown.trim()));
    };
    let d = if d.is_relative() {
        std::fs::read_link(proc_dir.join("cwd"))
            .map(|c| c.join(&d))
            .unwrap_or(d)
    } else {
        d
    };
    let d = std::fs::canonicalize(&d).unwrap_or(d);
    if d != root {
        return Err(format!(
            "pid {pid} is the model of another twin ({})",
            crate::text::escape_control(&d.display().to_string())
        ));
    }
    Ok(())
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
    let dir_arg = match &args.cmd {
        SimCmd::Up { dir, .. }
        | SimCmd::Down { dir }
        | SimCmd::Dirty { dir, .. }
        | SimCmd::Status { dir }
        | SimCmd::Serve { dir, .. } => dir,
        SimCmd::Vm(a) => &a.dir,
    };
    let resolved = crate::sim::check_twin_root(dir_arg)?;
    match &args.cmd {
        SimCmd::Up {
            profile: prof,
            asic,
            ..
        } => {
            profile(prof)?;
            let regs = crate::amd::regs::RegsDb::embedded()?;
            let gpu = match asic {
                Some(name) => Some(family::TwinGpu::for_name(&regs, name)?),
                None => None,
            };
            // The model is given the resolved root, so `down` can recognise it.
            let dir = &resolved;
            if !dir.join("sys/bus/pci/devices").is_dir() {
                tree::build(dir, &family::host_specs(gpu.as_ref()))?;
                if let Some(g) = &gpu {
                    family::record(dir, &g.asic)?;
                }
            } else {
                // An existing tree keeps its GPU: say so rather than model another.
                let was = family::recorded(dir);
                let want = gpu.as_ref().map(|g| g.asic.clone());
                if want.is_some() && was != want {
                    return Err(Error::refused(format!(
                        "the twin at {} already has {} as its GPU; --asic {} needs a new DIR (or `sim down` and remove it)",
                        dir.display(),
                        was.as_deref().unwrap_or("the seed's 780M (phoenix)"),
                        asic.as_deref().unwrap_or("")
                    )));
                }
            }
            // Once the tree exists, check it again: its `sys` must not be a sysfs.
            let dir = &crate::sim::check_twin_root(dir)?;
            let exe = std::env::current_exe()
                .map_err(|e| Error::io("find own executable", crate::machine::self_exe(), e))?;
            let mut cmd = Command::new(exe);
            cmd.arg("sim").arg("serve").arg(dir);
            if let Some(p) = prof {
                cmd.arg("--profile").arg(p);
            }
            std::fs::create_dir_all(model::model_dir(dir))
                .map_err(|e| Error::io("create directory", dir, e))?;
            let log = std::fs::File::create(model::model_dir(dir).join("model.log"))
                .map_err(|e| Error::io("create", dir, e))?;
            let _ = std::fs::remove_file(model::ready_flag(dir));
            let mut child = spawn_server(cmd, log).map_err(|e| Error::io("start model", dir, e))?;
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
            let pid: i32 = crate::bounded_read::read_text(&p, 64)?
                .trim()
                .parse()
                .map_err(|_| Error::parse("pid file", p.display().to_string(), "not a pid"))?;
            if pid <= 1 {
                return Err(Error::parse(
                    "pid file",
                    p.display().to_string(),
                    format!("pid {pid} is never a twin's model; not signalling it"),
                ));
            }
            if let Err(why) = is_model_of(pid, &resolved) {
                if why.starts_with("no process") {
                    // Stale: the model is gone already.
                    let _ = std::fs::remove_file(&p);
                    eprintln!("resetlab: {}: {why}: the model was not running; removed the stale pid file", p.display());
                    return Ok(0);
                }
                return Err(Error::refused(format!(
                    "{}: {why}; not signalling it (remove the stale pid file if the twin's model is gone)",
                    p.display()
                )));
            }
            let pid = nix::unistd::Pid::from_raw(pid);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            // Stopped once no process is left, or only its zombie.
            crate::reset::wait::poll(
                "the twin's model to stop",
                Duration::from_secs(10),
                Duration::from_millis(20),
                || Ok((!crate::machine::process_running(pid)).then_some(())),
            )?;
            let _ = std::fs::remove_file(&p);
            // Also when it died without cleaning up: config writers wait for
            // a model only while this flag says one serves.
            let _ = std::fs::remove_file(model::ready_flag(dir));
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
        SimCmd::Vm(a) => super::sim_vm::run(a, json),
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
    // The handler may run until the process ends: its flag lives as long.
    let stop: &'static Arc<AtomicBool> = STOP.get_or_init(|| stop.clone());
    use nix::sys::signal::Signal;
    crate::sys::flag_on(&[Signal::SIGTERM, Signal::SIGINT], stop)
        .map_err(|e| Error::io("sigaction", "SIGTERM", e.into()))
}

static STOP: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();
