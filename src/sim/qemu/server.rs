//! The running fake QEMU: the QMP listener, one thread per connection, and the guest's
//! thread.

use std::fs::{self, File};
use std::io::{BufReader, Write};
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::pve::VmConfig;

use super::vm::{Client, Dev, Inner, Shared};
use super::{devices_of, socket_path, state_path, DeviceState, Exit, VmOptions, VmState};

/// A running fake QEMU: a listener thread, a thread per QMP connection, and the guest's
/// thread. Dropping it stops QEMU as the host would (`quit`).
pub struct FakeQemu {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    pub socket: PathBuf,
    pub vmid: u32,
}

/// How long a QMP connection may sit on a half-written command before the fake drops it.
const IDLE_LIMIT: Duration = Duration::from_secs(600);

impl FakeQemu {
    /// Starts the VM of `<root>/etc/pve/qemu-server/<vmid>.conf` on the twin at `root`: every
    /// function must be on the bus and bound to vfio-pci (else QEMU's own complaint), and its
    /// group node is opened and held.
    pub fn start(root: &Path, vmid: u32, mut opts: VmOptions) -> Result<FakeQemu> {
        let cfg = VmConfig::load(
            &crate::machine::Machine::new(root.join("sys")).pve_etc(),
            vmid,
        )?;
        if cfg.entries.get("lock").map(String::as_str) == Some("backup") {
            opts.paused = true;
        }
        let devices = devices_of(root, &cfg)?;
        let sysfs = root.join("sys");
        let mut devs = Vec::new();
        for d in devices {
            let dir = sysfs.join("bus/pci/devices").join(d.bdf.to_string());
            let qemu = |why: String| {
                Error::failed(format!(
                    "kvm: -device vfio-pci,host={},id={}: vfio {}: {why}",
                    d.bdf, d.id, d.bdf
                ))
            };
            if !dir.exists() {
                return Err(qemu(
                    "error getting device from group: No such device".into(),
                ));
            }
            let driver = crate::pci::sysfs::link_name(&dir.join("driver"))
                .ok()
                .flatten();
            if driver.as_deref() != Some("vfio-pci") {
                return Err(qemu(format!(
                    "not bound to vfio-pci (driver: {})",
                    driver.as_deref().unwrap_or("none")
                )));
            }
            let node = match d.group {
                Some(g) => {
                    let p = root.join("dev/vfio").join(g.to_string());
                    Some(File::open(&p).map_err(|e| Error::io("open", &p, e))?)
                }
                None => return Err(qemu("no IOMMU group".into())),
            };
            devs.push(Dev {
                st: DeviceState {
                    device: d,
                    driven: false,
                    requested: false,
                    released: false,
                    release_ms: None,
                },
                node,
                requested_at: None,
                due: None,
            });
        }
        let socket = socket_path(root, vmid);
        for dir in [socket.parent(), state_path(root, vmid).parent()]
            .into_iter()
            .flatten()
        {
            fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
        }
        if UnixStream::connect(&socket).is_ok() {
            return Err(Error::refused(format!(
                "VM {vmid} is already running (its QMP socket {} answers)",
                socket.display()
            )));
        }
        let _ = fs::remove_file(&socket);
        let listener = UnixListener::bind(&socket).map_err(|e| Error::io("bind", &socket, e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::io("set non-blocking", &socket, e))?;
        let mut inner = Inner {
            root: root.to_path_buf(),
            vmid,
            opts,
            devs,
            paused: opts.paused,
            gpu_ok: None,
            clients: Vec::new(),
            next_client: 0,
            exit: None,
            exit_requested: None,
            left_dirty: Vec::new(),
        };
        if !inner.paused {
            inner.guest_runs();
        }
        inner.save();
        let shared = Arc::new(Shared {
            inner: Mutex::new(inner),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let mut threads = Vec::new();
        let s = shared.clone();
        threads.push(
            std::thread::Builder::new()
                .name("twin-qemu-accept".into())
                .spawn(move || accept_loop(listener, s))
                .map_err(|e| Error::io("spawn thread", root, e))?,
        );
        let s = shared.clone();
        threads.push(
            std::thread::Builder::new()
                .name("twin-qemu-guest".into())
                .spawn(move || guest_loop(s))
                .map_err(|e| Error::io("spawn thread", root, e))?,
        );
        Ok(FakeQemu {
            shared,
            threads,
            socket,
            vmid,
        })
    }

    /// The state now (the file holds the same).
    pub fn state(&self) -> VmState {
        self.shared.lock().state()
    }

    /// Whether QEMU has ended (a `quit` over QMP, or one of the calls below).
    pub fn exited(&self) -> bool {
        self.shared.lock().exit.is_some()
    }

    /// Waits (bounded) until QEMU has ended.
    pub fn wait_exit(&self, bound: Duration) -> Result<()> {
        let t0 = Instant::now();
        let mut g = self.shared.lock();
        while g.exit.is_none() {
            let left = bound.saturating_sub(t0.elapsed());
            if left.is_zero() {
                return Err(Error::Timeout {
                    what: format!("the fake QEMU of VM {} to exit", self.vmid),
                    bound_ms: bound.as_millis() as u64,
                });
            }
            g = self
                .shared
                .wake
                .wait_timeout(g, left)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        Ok(())
    }

    /// Ends QEMU the way `how` says and returns its last state.
    pub fn end(mut self, how: Exit) -> VmState {
        self.finish(how)
    }

    fn finish(&mut self, how: Exit) -> VmState {
        {
            let mut g = self.shared.lock();
            g.finish(how);
        }
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.wake.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        self.state()
    }
}

impl Drop for FakeQemu {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.finish(Exit::HostStop);
        }
    }
}

fn accept_loop(listener: UnixListener, shared: Arc<Shared>) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    while !shared.stop.load(Ordering::Relaxed) {
        let ready = {
            let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
            poll(&mut fds, PollTimeout::from(20u16)).unwrap_or(0)
        };
        if ready == 0 {
            continue;
        }
        let Ok((stream, _)) = listener.accept() else {
            continue;
        };
        let _ = stream.set_nonblocking(false);
        let s = shared.clone();
        let _ = std::thread::Builder::new()
            .name("twin-qemu-qmp".into())
            .spawn(move || serve_client(stream, s));
    }
}

/// One QMP connection: the greeting, then one reply per command.
fn serve_client(stream: UnixStream, shared: Arc<Shared>) {
    let Ok(reader) = stream.try_clone() else {
        return;
    };
    let _ = reader.set_read_timeout(Some(IDLE_LIMIT));
    // Replies and events are written under the state's lock: a client that stops reading must
    // not stall the guest (SO_SNDTIMEO is the socket's, shared by every clone).
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let id = {
        let mut g = shared.lock();
        if g.exit.is_some() {
            return;
        }
        let Ok(w) = stream.try_clone() else { return };
        let id = g.next_client;
        g.next_client += 1;
        g.clients.push((
            id,
            Client {
                stream: w,
                negotiated: false,
            },
        ));
        id
    };
    let greeting = json!({"QMP": {
        "version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": "resetlab twin"},
        "capabilities": ["oob"],
    }});
    let mut out = stream;
    if writeln!(out, "{greeting}\r").is_err() {
        return;
    }
    let msgs = serde_json::Deserializer::from_reader(BufReader::new(reader)).into_iter::<Value>();
    for msg in msgs {
        let msg = match msg {
            Ok(m) => m,
            Err(e) if e.is_eof() || e.is_io() => break,
            Err(e) => {
                let _ = writeln!(
                    out,
                    "{}\r",
                    json!({"error": {"class": "GenericError", "desc": format!("JSON parse error, {e}")}})
                );
                break;
            }
        };
        let mut g = shared.lock();
        let negotiated = g.clients.iter().any(|(c, cl)| *c == id && cl.negotiated);
        let cmd = msg
            .get("execute")
            .and_then(Value::as_str)
            .map(str::to_string);
        let args = msg.get("arguments").cloned().unwrap_or(json!({}));
        let reply = match cmd.as_deref() {
            None => Err((
                "GenericError".to_string(),
                "QMP input must be a JSON object with member 'execute'".to_string(),
            )),
            Some("qmp_capabilities") if !negotiated => {
                for (c, cl) in g.clients.iter_mut() {
                    if *c == id {
                        cl.negotiated = true;
                    }
                }
                Ok(json!({}))
            }
            Some(c) if !negotiated => Err((
                "CommandNotFound".to_string(),
                format!("Expecting capabilities negotiation with 'qmp_capabilities' (got '{c}')"),
            )),
            Some(c) => g.execute(c, &args),
        };
        let mut r = match reply {
            Ok(v) => json!({ "return": v }),
            Err((class, desc)) => json!({"error": {"class": class, "desc": desc}}),
        };
        if let Some(i) = msg.get("id") {
            r["id"] = i.clone();
        }
        // Under the lock: a reply always goes out before the events it causes.
        let sent = writeln!(out, "{r}\r").is_ok();
        if let Some(how) = g.exit_requested.take() {
            g.finish(how);
            drop(g);
            shared.stop.store(true, Ordering::Relaxed);
            shared.wake.notify_all();
            return;
        }
        drop(g);
        shared.wake.notify_all();
        if !sent {
            break;
        }
    }
    shared.lock().clients.retain(|(c, _)| *c != id);
}

/// The guest: ejects what is due, notices sysfs removes of held devices.
fn guest_loop(shared: Arc<Shared>) {
    let mut g = shared.lock();
    while !shared.stop.load(Ordering::Relaxed) && g.exit.is_none() {
        let now = Instant::now();
        g.release_due(now);
        g.watch_removed(now);
        let next = g.devs.iter().filter_map(|d| d.due).min();
        // Removes are looked for every 5 ms; a due ejection wakes the thread on time.
        let wait = next
            .map(|t| t.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_millis(5))
            .min(Duration::from_millis(5));
        g = shared
            .wake
            .wait_timeout(g, wait)
            .map(|(g, _)| g)
            .unwrap_or_else(|p| p.into_inner().0);
    }
}
