//! `resetlab sim vm DIR VMID start|stop|shutdown|kill|status|check`: the twin's fake QEMU for
//! one VM, as a background process (see `src/sim/qemu.rs` and docs/testing.md).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::unistd::Pid;

use crate::error::{exit, Error, Result};
use crate::sim::qemu::{self, Exit, FakeQemu, Guest, VmOptions, VmState};

#[derive(clap::Args, Debug)]
pub struct VmArgs {
    /// The twin's root (made by `sim up`), holding etc/pve/qemu-server/VMID.conf.
    pub dir: PathBuf,
    #[arg(value_parser = clap::value_parser!(u32).range(100..=999_999_999))]
    pub vmid: u32,
    #[command(subcommand)]
    pub op: VmOp,
}

#[derive(clap::Subcommand, Debug)]
pub enum VmOp {
    /// Start the VM's fake QEMU in the background: it holds the VFIO groups and serves QMP at
    /// DIR/var/run/qemu-server/VMID.qmp.
    Start {
        /// What the guest does with an unplug request: release[:MS] (eject after MS ms),
        /// hung (never), refuse (QEMU answers device_del with an error).
        #[arg(long, default_value = "release:0", value_name = "BEHAVIOUR")]
        guest: Guest,
        /// Start paused (QEMU -S); a config with `lock: backup` always starts paused.
        #[arg(long)]
        paused: bool,
        /// The guest disables GPU and audio itself at its shutdown (the report's devcon scripts).
        #[arg(long)]
        devcon: bool,
    },
    /// The host ends QEMU (what `qm stop` does after its pre-stop): SIGTERM, then wait.
    Stop,
    /// The guest powers off from inside (no pre-stop runs).
    Shutdown,
    /// QEMU dies at once (SIGKILL).
    Kill,
    /// The fake QEMU's state (JSON).
    Status,
    /// Exit 0 when the VM runs and its guest could use the GPU (it was clean at start).
    Check,
    /// Run the fake QEMU in the foreground (what `start` runs).
    #[command(hide = true)]
    Serve {
        #[arg(long)]
        guest: Guest,
        #[arg(long)]
        paused: bool,
        #[arg(long)]
        devcon: bool,
    },
}

/// Bound on the fake QEMU starting or ending.
const BOUND: Duration = Duration::from_secs(10);

fn read_pid(dir: &Path, vmid: u32) -> Result<Pid> {
    let p = qemu::pid_path(dir, vmid);
    let text = std::fs::read_to_string(&p).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::not_found(
                "running fake QEMU of VM",
                format!("{vmid} (no {})", p.display()),
            )
        } else {
            Error::io("read", &p, e)
        }
    })?;
    text.trim()
        .parse()
        .map(Pid::from_raw)
        .map_err(|_| Error::parse("pid file", p.display().to_string(), "not a pid"))
}

fn alive(pid: Pid) -> bool {
    crate::machine::process_running(pid)
}

fn wait_gone(pid: Pid, what: &str) -> Result<()> {
    crate::reset::wait::poll(what, BOUND, Duration::from_millis(5), || {
        Ok((!alive(pid)).then_some(()))
    })
}

fn print_state(st: &VmState, json: bool) -> Result<()> {
    if json {
        super::print_json(st)?;
    } else {
        let devs: Vec<String> = st
            .devices
            .iter()
            .map(|d| {
                let what = if d.released {
                    "released"
                } else if d.requested {
                    "unplug requested"
                } else if d.driven {
                    "driven by the guest"
                } else {
                    "plugged"
                };
                format!("{}={} ({what})", d.device.id, d.device.bdf)
            })
            .collect();
        println!(
            "VM {} pid {}: {}{}; guest {}; {}",
            st.vmid,
            st.pid,
            st.status,
            st.exit
                .as_ref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default(),
            st.guest,
            devs.join(", ")
        );
        if !st.left_dirty.is_empty() {
            let d: Vec<String> = st.left_dirty.iter().map(|b| b.to_string()).collect();
            println!(
                "left dirty: {} (QEMU exited while the guest drove it)",
                d.join(", ")
            );
        }
    }
    Ok(())
}

pub fn run(args: &VmArgs, json: bool) -> Result<i32> {
    let (dir, vmid) = (&args.dir, args.vmid);
    match &args.op {
        VmOp::Start {
            guest,
            paused,
            devcon,
        } => {
            if let Ok(pid) = read_pid(dir, vmid) {
                if alive(pid) {
                    return Err(Error::refused(format!(
                        "VM {vmid} is already running (fake QEMU pid {pid})"
                    )));
                }
            }
            let exe = std::env::current_exe()
                .map_err(|e| Error::io("find own executable", crate::machine::self_exe(), e))?;
            let log_path = qemu::state_path(dir, vmid).with_extension("log");
            if let Some(d) = log_path.parent() {
                std::fs::create_dir_all(d).map_err(|e| Error::io("create directory", d, e))?;
            }
            let log =
                std::fs::File::create(&log_path).map_err(|e| Error::io("create", &log_path, e))?;
            let _ = std::fs::remove_file(qemu::state_path(dir, vmid));
            let mut cmd = Command::new(exe);
            cmd.arg("sim")
                .arg("vm")
                .arg(dir)
                .arg(vmid.to_string())
                .arg("serve")
                .arg(format!("--guest={guest}"));
            if *paused {
                cmd.arg("--paused");
            }
            if *devcon {
                cmd.arg("--devcon");
            }
            let mut child = super::sim::spawn_server(cmd, log)
                .map_err(|e| Error::io("start fake QEMU", dir, e))?;
            let sock = qemu::socket_path(dir, vmid);
            let state = qemu::state_path(dir, vmid);
            crate::reset::wait::poll(
                "the fake QEMU to serve QMP",
                BOUND,
                Duration::from_millis(2),
                || {
                    if sock.exists() && state.exists() {
                        return Ok(Some(()));
                    }
                    if let Ok(Some(status)) = child.try_wait() {
                        let why = std::fs::read_to_string(&log_path).unwrap_or_default();
                        return Err(Error::failed(format!(
                            "the fake QEMU of VM {vmid} exited ({status}): {}",
                            why.trim()
                        )));
                    }
                    Ok(None)
                },
            )?;
            let pidf = qemu::pid_path(dir, vmid);
            std::fs::write(&pidf, format!("{}\n", child.id()))
                .map_err(|e| Error::io("write", &pidf, e))?;
            let st = VmState::load(dir, vmid)?;
            print_state(&st, json)?;
            Ok(exit::OK)
        }
        VmOp::Stop | VmOp::Shutdown => {
            let pid = read_pid(dir, vmid)?;
            let sig = if matches!(args.op, VmOp::Stop) {
                Signal::SIGTERM
            } else {
                Signal::SIGUSR1
            };
            if alive(pid) {
                kill(pid, sig).map_err(|e| Error::io("signal", format!("pid {pid}"), e.into()))?;
                wait_gone(pid, "the fake QEMU to exit")?;
            }
            let _ = std::fs::remove_file(qemu::pid_path(dir, vmid));
            print_state(&VmState::load(dir, vmid)?, json)?;
            Ok(exit::OK)
        }
        VmOp::Kill => {
            let pid = read_pid(dir, vmid)?;
            if alive(pid) {
                let _ = kill(pid, Signal::SIGKILL);
                wait_gone(pid, "the fake QEMU to die")?;
            }
            let st = qemu::after_crash(dir, vmid)?;
            print_state(&st, json)?;
            Ok(exit::OK)
        }
        VmOp::Status => {
            print_state(&VmState::load(dir, vmid)?, json)?;
            Ok(exit::OK)
        }
        VmOp::Check => {
            let st = VmState::load(dir, vmid)?;
            let running = read_pid(dir, vmid).is_ok_and(alive) && st.exit.is_none();
            if !running {
                return Err(Error::failed(format!("VM {vmid} is not running")));
            }
            match st.gpu_ok {
                Some(true) => {
                    if !json {
                        println!("VM {vmid}: the guest runs and uses its GPU");
                    }
                    Ok(exit::OK)
                }
                Some(false) => Err(Error::failed(format!(
                    "VM {vmid}: the guest's GPU did not come up: it was left dirty before this \
                     start (the report's black screen)"
                ))),
                None => Err(Error::failed(format!(
                    "VM {vmid} is paused: its guest has not run yet"
                ))),
            }
        }
        VmOp::Serve {
            guest,
            paused,
            devcon,
        } => serve(
            dir,
            vmid,
            VmOptions {
                guest: *guest,
                paused: *paused,
                devcon: *devcon,
            },
        ),
    }
}

/// The foreground fake QEMU: SIGTERM/SIGINT end it as the host does, SIGUSR1 as the guest does
/// from inside. Signals are read from a signalfd (blocked first, before any thread starts, so
/// every thread inherits the mask).
fn serve(dir: &Path, vmid: u32, opts: VmOptions) -> Result<i32> {
    let mut mask = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGUSR1] {
        mask.add(s);
    }
    mask.thread_block()
        .map_err(|e| Error::io("block signals", "sigprocmask", e.into()))?;
    let sfd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(|e| Error::io("signalfd", "signalfd", e.into()))?;
    let q = FakeQemu::start(dir, vmid, opts)?;
    loop {
        let how = {
            use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
            use std::os::fd::AsFd;
            let mut fds = [PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
            let _ = poll(&mut fds, PollTimeout::from(20u16));
            match sfd.read_signal() {
                Ok(Some(info)) if info.ssi_signo == Signal::SIGUSR1 as u32 => {
                    Some(Exit::GuestShutdown)
                }
                Ok(Some(_)) => Some(Exit::HostStop),
                _ => None,
            }
        };
        if let Some(how) = how {
            q.end(how);
            break;
        }
        if q.exited() {
            // `quit` over QMP.
            drop(q);
            break;
        }
    }
    let _ = std::fs::remove_file(qemu::pid_path(dir, vmid));
    Ok(exit::OK)
}
