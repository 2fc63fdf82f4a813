//! A QEMU Machine Protocol client over the monitor's unix socket (`-qmp unix:PATH,server=on`;
//! Proxmox: `/var/run/qemu-server/<vmid>.qmp`), and the release of passed-through devices.
//!
//! Every wait is bounded: connecting, the greeting, each command's reply and the wait for events
//! run against a deadline, and the bound is in the error. Lines are capped at
//! [`proto::MAX_LINE`] bytes and a call reads at most [`MAX_CALL_BYTES`]. Events that arrive while
//! a command waits for its reply are queued, so a `DEVICE_DELETED` read before `device_del`'s own
//! reply is not lost.
//!
//! Commands that change the VM go through [`Client::execute_recorded`], which records them in the
//! journal before they are sent (and sends nothing in a dry run); [`Client::execute`] runs only
//! commands known to change nothing ([`is_read_only`]).

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::journal::Journal;
use crate::pci::Bdf;

pub mod proto;
pub mod release;

pub use proto::{Event, Message};
pub use release::{release, timeout_reason, Outcome, ReleaseReport, Released};

/// The most a single call (a command and its reply, or a wait for events) reads before it gives
/// up: a monitor that floods events faster than they matter is not one to wait on.
pub const MAX_CALL_BYTES: usize = 64 << 20;

/// Events kept for [`Client::take_events`]; older ones are dropped (and counted) beyond this.
pub const MAX_QUEUED_EVENTS: usize = 4096;

/// What went wrong talking to a monitor; wrapped in [`Error::Qmp`] with the socket's path.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    /// The socket answered, but not as a QMP monitor does (an HMP monitor, a serial console, …).
    #[error("not a QEMU monitor socket: {reason}")]
    NotQmp { reason: String },
    /// A line that is not a QMP message.
    #[error("malformed QMP message ({reason}): '{excerpt}'")]
    Malformed { reason: String, excerpt: String },
    #[error("a QMP message longer than {limit} bytes")]
    TooLong { limit: usize },
    /// Well-formed, but not what the protocol allows at this point.
    #[error("unexpected QMP answer to {command}: {what}")]
    Unexpected { command: String, what: String },
    /// QEMU closed the connection (it exited, or another client took the monitor).
    #[error("QEMU closed the connection while {during}")]
    Closed { during: String },
    /// QEMU answered `{"error": …}`.
    #[error("QEMU refused {command}: {class}: {desc}")]
    Command {
        command: String,
        class: String,
        desc: String,
    },
    #[error("timed out after {bound_ms} ms waiting for {what}")]
    Timeout { what: String, bound_ms: u64 },
    /// More than [`MAX_CALL_BYTES`] without the answer.
    #[error("read {limit} bytes from the monitor waiting for {what} without getting it")]
    Flood { what: String, limit: usize },
    #[error("{op}")]
    Io {
        op: &'static str,
        #[source]
        source: io::Error,
    },
}

impl QmpError {
    /// The exit code of `docs/cli.md` this failure maps onto.
    pub fn exit_code(&self) -> i32 {
        use crate::error::exit;
        match self {
            QmpError::Timeout { .. } => exit::TIMEOUT,
            QmpError::NotQmp { .. } => exit::USAGE,
            QmpError::Command { class, .. } if class == "DeviceNotFound" => exit::USAGE,
            QmpError::Command { .. } => exit::FAILED,
            QmpError::Malformed { .. }
            | QmpError::TooLong { .. }
            | QmpError::Unexpected { .. }
            | QmpError::Closed { .. }
            | QmpError::Flood { .. }
            | QmpError::Io { .. } => exit::SYSTEM,
        }
    }
}

/// Commands that change nothing in the VM: [`Client::execute`] runs only these.
pub fn is_read_only(cmd: &str) -> bool {
    cmd.starts_with("query-")
        || matches!(
            cmd,
            "qom-list"
                | "qom-get"
                | "qom-list-types"
                | "qom-list-properties"
                | "device-list-properties"
        )
}

/// A deadline and the bound it came from (for the error).
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    pub at: Instant,
    pub bound: Duration,
}

impl Deadline {
    pub fn after(bound: Duration) -> Deadline {
        Deadline {
            at: Instant::now() + bound,
            bound,
        }
    }

    pub fn remaining(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }

    fn timeout(&self, what: impl Into<String>) -> QmpError {
        QmpError::Timeout {
            what: what.into(),
            bound_ms: self.bound.as_millis() as u64,
        }
    }
}

/// A QEMU device that passes a host PCI function through (`vfio-pci`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Passthrough {
    /// The id `device_del` takes: the qdev id (`hostpci0`), or the QOM path of a device without one.
    pub id: String,
    pub path: String,
    /// Its `host` property; `None` when it has none (a `sysfsdev=` device).
    pub host: Option<Bdf>,
}

/// A PCI function of the guest as `query-pci` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct GuestFunction {
    /// Its qdev id ("" when it has none).
    pub id: String,
    /// Where it sits: the bridges from the root bus down, then the slot
    /// (`0/1c.0/00`: root bus 0, behind the bridge at 1c.0, slot 00). Bus numbers are not used: a
    /// guest that has not enumerated its buses leaves every bridge's secondary bus at 0.
    pub slot: String,
    pub function: u8,
    /// The guest's bus number (0 before the guest enumerated its bridges).
    pub bus: u8,
}

/// A connection to one QEMU monitor, past `qmp_capabilities`.
pub struct Client {
    socket: PathBuf,
    stream: UnixStream,
    /// Bytes read and not yet consumed as lines; `scanned` of them hold no `\n`.
    buf: Vec<u8>,
    scanned: usize,
    events: VecDeque<Event>,
    /// Events dropped because the queue was full.
    pub events_dropped: u64,
    next_id: u64,
    closed: bool,
    /// QEMU's version from the greeting (`7.2.22`).
    pub version: Option<String>,
    pub capabilities: Vec<String>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("socket", &self.socket)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// Connects to a unix socket without blocking past the deadline: QEMU listens with a backlog of
/// one and accepts one QMP client at a time, so while another client holds the monitor a plain
/// blocking `connect` can wait forever.
fn connect_bounded(path: &Path, dl: &Deadline) -> Result<UnixStream, QmpError> {
    use nix::errno::Errno;
    use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
    let io = |op, e: Errno| QmpError::Io {
        op,
        source: io::Error::from(e),
    };
    let addr = UnixAddr::new(path).map_err(|e| io("socket address", e))?;
    let fd: OwnedFd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| io("socket", e))?;
    loop {
        match connect(fd.as_raw_fd(), &addr) {
            Ok(()) | Err(Errno::EISCONN) => break,
            // The backlog is full (EAGAIN) or the connect is under way: wait a little and
            // try again, within the bound.
            Err(Errno::EAGAIN) | Err(Errno::EINPROGRESS) | Err(Errno::EALREADY) => {
                if dl.remaining().is_zero() {
                    return Err(dl.timeout(
                        "QEMU to accept the connection (its monitor takes one client at a time: is another connected?)",
                    ));
                }
                std::thread::sleep(dl.remaining().min(Duration::from_millis(10)));
            }
            Err(Errno::EINTR) => {}
            Err(Errno::ECONNREFUSED) => {
                return Err(QmpError::NotQmp {
                    reason: "nothing listens on it (is the VM running?)".into(),
                })
            }
            Err(e) => return Err(io("connect", e)),
        }
    }
    let stream = UnixStream::from(fd);
    stream.set_nonblocking(false).map_err(|e| QmpError::Io {
        op: "set blocking",
        source: e,
    })?;
    Ok(stream)
}

impl Client {
    /// Connects, reads the greeting and negotiates `qmp_capabilities`, all within `bound`.
    pub fn connect(path: &Path, bound: Duration) -> Result<Client> {
        let wrap = |source| Error::Qmp {
            socket: path.to_path_buf(),
            source,
        };
        match std::fs::metadata(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::io("open QMP socket (is the VM running?)", path, e))
            }
            Err(e) => return Err(Error::io("open QMP socket", path, e)),
            Ok(m) if !m.file_type().is_socket() => {
                return Err(wrap(QmpError::NotQmp {
                    reason: "it is not a socket".into(),
                }))
            }
            Ok(_) => {}
        }
        let dl = Deadline::after(bound);
        let stream = connect_bounded(path, &dl).map_err(wrap)?;
        let mut c = Client::over(stream, path);
        c.handshake(&dl).map_err(wrap)?;
        Ok(c)
    }

    /// A client over a connected stream, before the greeting.
    fn over(stream: UnixStream, path: &Path) -> Client {
        Client {
            socket: path.to_path_buf(),
            stream,
            buf: Vec::new(),
            scanned: 0,
            events: VecDeque::new(),
            events_dropped: 0,
            next_id: 1,
            closed: false,
            version: None,
            capabilities: Vec::new(),
        }
    }

    fn handshake(&mut self, dl: &Deadline) -> Result<(), QmpError> {
        let mut budget = MAX_CALL_BYTES;
        let what = "the QMP greeting";
        match self.read_message(dl, what, &mut budget) {
            Ok(Message::Greeting {
                version,
                capabilities,
            }) => {
                self.version = version;
                self.capabilities = capabilities;
            }
            Ok(other) => {
                return Err(QmpError::NotQmp {
                    reason: format!("its first message is not a QMP greeting: {other:?}"),
                })
            }
            Err(QmpError::Malformed { excerpt, .. }) => {
                let hint = if excerpt.contains("monitor") {
                    " (an HMP monitor? use the socket of -qmp)"
                } else {
                    ""
                };
                return Err(QmpError::NotQmp {
                    reason: format!("it sent '{excerpt}'{hint}"),
                });
            }
            Err(QmpError::Closed { .. }) => {
                return Err(QmpError::NotQmp {
                    reason: "it closed the connection without a QMP greeting".into(),
                })
            }
            Err(QmpError::Timeout { bound_ms, .. }) => {
                return Err(QmpError::Timeout {
                    what: format!(
                        "{what} (QEMU serves one QMP client at a time: is another connected?)"
                    ),
                    bound_ms,
                })
            }
            Err(e) => return Err(e),
        }
        let v = self.call("qmp_capabilities", Value::Null, dl)?;
        if !v.is_object() {
            return Err(QmpError::Unexpected {
                command: "qmp_capabilities".into(),
                what: format!("{v} instead of {{}}"),
            });
        }
        Ok(())
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    fn wrap(&self, source: QmpError) -> Error {
        Error::Qmp {
            socket: self.socket.clone(),
            source,
        }
    }

    /// Runs a command that changes nothing ([`is_read_only`]) and returns its `return` value.
    pub fn execute(&mut self, cmd: &str, args: Value, bound: Duration) -> Result<Value> {
        if !is_read_only(cmd) {
            return Err(Error::refused(format!(
                "QMP {cmd} may change the VM: it goes through the journal (execute_recorded)"
            )));
        }
        let dl = Deadline::after(bound);
        self.call(cmd, args, &dl).map_err(|e| self.wrap(e))
    }

    /// Records `cmd` in the journal, then (unless a dry run) sends it and returns its `return`
    /// value; `None` in a dry run. `device` names the QEMU device it is for, if any.
    pub fn execute_recorded(
        &mut self,
        journal: &mut Journal,
        device: Option<&str>,
        cmd: &str,
        args: Value,
        bound: Duration,
    ) -> Result<Option<Value>> {
        if !journal.qmp_command(&self.socket, device, cmd, &args)? {
            return Ok(None);
        }
        let dl = Deadline::after(bound);
        self.call(cmd, args, &dl)
            .map(Some)
            .map_err(|e| self.wrap(e))
    }

    /// Sends `cmd` with a fresh id and reads until its reply, queueing events. No journal: the
    /// callers above decide what may be sent.
    pub(crate) fn call(
        &mut self,
        cmd: &str,
        args: Value,
        dl: &Deadline,
    ) -> Result<Value, QmpError> {
        if self.closed {
            return Err(QmpError::Closed {
                during: format!("sending {cmd} (it was closed before)"),
            });
        }
        let id = self.next_id;
        self.next_id += 1;
        let mut req = json!({ "execute": cmd, "id": id });
        if !args.is_null() {
            req["arguments"] = args;
        }
        let mut line = req.to_string().into_bytes();
        line.push(b'\n');
        self.write_all(&line, dl, cmd)?;
        let what = format!("the reply to {cmd}");
        let mut budget = MAX_CALL_BYTES;
        loop {
            match self.read_message(dl, &what, &mut budget)? {
                Message::Event(e) => self.queue(e),
                Message::Return { id: Some(r), value } if r == id => return Ok(value),
                Message::Error {
                    id: Some(r),
                    class,
                    desc,
                } if r == id => {
                    return Err(QmpError::Command {
                        command: cmd.to_string(),
                        class,
                        desc,
                    })
                }
                // A reply to an earlier call that timed out: it is late, not ours.
                Message::Return { id: Some(r), .. } | Message::Error { id: Some(r), .. }
                    if r.as_u64().is_some_and(|r| r < id) => {}
                // QEMU answers a request it could not parse with an error without id.
                Message::Error {
                    id: None,
                    class,
                    desc,
                } => {
                    return Err(QmpError::Command {
                        command: cmd.to_string(),
                        class,
                        desc,
                    })
                }
                other => {
                    return Err(QmpError::Unexpected {
                        command: cmd.to_string(),
                        what: format!("{other:?}"),
                    })
                }
            }
        }
    }

    fn write_all(&mut self, mut bytes: &[u8], dl: &Deadline, cmd: &str) -> Result<(), QmpError> {
        while !bytes.is_empty() {
            let left = dl.remaining();
            if left.is_zero() {
                return Err(dl.timeout(format!("QEMU to take {cmd}")));
            }
            self.stream
                .set_write_timeout(Some(left.max(Duration::from_millis(1))))
                .map_err(|e| QmpError::Io {
                    op: "set write timeout",
                    source: e,
                })?;
            match self.stream.write(bytes) {
                Ok(0) => {
                    self.closed = true;
                    return Err(QmpError::Closed {
                        during: format!("sending {cmd}"),
                    });
                }
                Ok(n) => bytes = &bytes[n..],
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
                    ) =>
                {
                    self.closed = true;
                    return Err(QmpError::Closed {
                        during: format!("sending {cmd}"),
                    });
                }
                Err(e) => {
                    return Err(QmpError::Io {
                        op: "write to the monitor",
                        source: e,
                    })
                }
            }
        }
        Ok(())
    }

    /// The next complete message, reading as needed until the deadline.
    fn read_message(
        &mut self,
        dl: &Deadline,
        what: &str,
        budget: &mut usize,
    ) -> Result<Message, QmpError> {
        loop {
            if let Some(line) = self.next_line()? {
                if line.iter().all(|b| b.is_ascii_whitespace()) {
                    continue;
                }
                return proto::parse_line(&line);
            }
            if self.closed {
                return Err(QmpError::Closed {
                    during: format!("waiting for {what}"),
                });
            }
            self.fill(dl, what, budget)?;
        }
    }

    /// Takes one line off the buffer, if a whole one is there.
    fn next_line(&mut self) -> Result<Option<Vec<u8>>, QmpError> {
        match self.buf[self.scanned..].iter().position(|&b| b == b'\n') {
            Some(p) => {
                let end = self.scanned + p;
                let mut line: Vec<u8> = self.buf.drain(..=end).collect();
                line.pop();
                self.scanned = 0;
                Ok(Some(line))
            }
            None => {
                self.scanned = self.buf.len();
                if self.buf.len() > proto::MAX_LINE {
                    return Err(QmpError::TooLong {
                        limit: proto::MAX_LINE,
                    });
                }
                Ok(None)
            }
        }
    }

    /// One read from the socket within the deadline; `Closed` sets the flag (the caller reports).
    fn fill(&mut self, dl: &Deadline, what: &str, budget: &mut usize) -> Result<(), QmpError> {
        let left = dl.remaining();
        if left.is_zero() {
            return Err(dl.timeout(what));
        }
        self.stream
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .map_err(|e| QmpError::Io {
                op: "set read timeout",
                source: e,
            })?;
        let mut chunk = [0u8; 16 << 10];
        match self.stream.read(&mut chunk) {
            Ok(0) => self.closed = true,
            Ok(n) => {
                if n > *budget {
                    return Err(QmpError::Flood {
                        what: what.to_string(),
                        limit: MAX_CALL_BYTES,
                    });
                }
                *budget -= n;
                self.buf.extend_from_slice(&chunk[..n]);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => self.closed = true,
            Err(e) => {
                return Err(QmpError::Io {
                    op: "read from the monitor",
                    source: e,
                })
            }
        }
        Ok(())
    }

    fn queue(&mut self, e: Event) {
        if self.events.len() >= MAX_QUEUED_EVENTS {
            self.events.pop_front();
            self.events_dropped += 1;
        }
        self.events.push_back(e);
    }

    /// The next event: a queued one, or the next read before `until`; `None` when `until` passes
    /// first. Replies that arrive late (to a call that timed out) are skipped.
    pub fn next_event(&mut self, until: Instant) -> Result<Option<Event>> {
        if let Some(e) = self.events.pop_front() {
            return Ok(Some(e));
        }
        let dl = Deadline {
            at: until,
            bound: until.saturating_duration_since(Instant::now()),
        };
        let mut budget = MAX_CALL_BYTES;
        loop {
            match self.read_message(&dl, "an event", &mut budget) {
                Ok(Message::Event(e)) => return Ok(Some(e)),
                Ok(Message::Return { .. }) | Ok(Message::Error { .. }) => {}
                Ok(m @ Message::Greeting { .. }) => {
                    return Err(self.wrap(QmpError::Unexpected {
                        command: "(waiting for events)".into(),
                        what: format!("{m:?}"),
                    }))
                }
                Err(QmpError::Timeout { .. }) => return Ok(None),
                Err(e) => return Err(self.wrap(e)),
            }
        }
    }

    /// The events queued so far (read while commands waited for their replies).
    pub fn take_events(&mut self) -> Vec<Event> {
        self.events.drain(..).collect()
    }

    /// The VM's run state (`running`, `paused`, `prelaunch`, …) from `query-status`.
    pub fn status(&mut self, bound: Duration) -> Result<String> {
        let v = self.execute("query-status", Value::Null, bound)?;
        v.get("status")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| {
                self.wrap(QmpError::Unexpected {
                    command: "query-status".into(),
                    what: format!("{v} has no status"),
                })
            })
    }

    /// Every `vfio-pci` device of the VM with its host function, within one bound:
    /// `qom-list` of `/machine/peripheral` (devices with an id) and `/machine/peripheral-anon`,
    /// then `qom-get host` of each `child<vfio-pci>`.
    pub fn passthrough_devices(&mut self, bound: Duration) -> Result<Vec<Passthrough>> {
        let dl = Deadline::after(bound);
        self.passthrough_within(&dl).map_err(|e| self.wrap(e))
    }

    fn passthrough_within(&mut self, dl: &Deadline) -> Result<Vec<Passthrough>, QmpError> {
        let mut out = Vec::new();
        for (dir, named) in [
            ("/machine/peripheral", true),
            ("/machine/peripheral-anon", false),
        ] {
            let list = match self.call("qom-list", json!({ "path": dir }), dl) {
                Ok(l) => l,
                // A machine without anonymous devices has no peripheral-anon container.
                Err(QmpError::Command { .. }) if !named => continue,
                Err(e) => return Err(e),
            };
            let Some(children) = list.as_array() else {
                return Err(QmpError::Unexpected {
                    command: "qom-list".into(),
                    what: format!(
                        "{} instead of a list",
                        proto::excerpt(list.to_string().as_bytes())
                    ),
                });
            };
            for c in children {
                let (Some(name), Some(ty)) = (
                    c.get("name").and_then(Value::as_str),
                    c.get("type").and_then(Value::as_str),
                ) else {
                    continue;
                };
                if ty != "child<vfio-pci>" {
                    continue;
                }
                let path = format!("{dir}/{name}");
                // QEMU prints `host` as "%04x:%02x:%02x.%0d", or "ffff:ff:ff.f" for a device
                // given by `sysfsdev=` (hw/core/qdev-properties-system.c, get_pci_host_devaddr):
                // that one does not parse as a BDF (slot 0xff > 31) and gives None.
                let host =
                    match self.call("qom-get", json!({ "path": path, "property": "host" }), dl) {
                        Ok(v) => v.as_str().and_then(|s| s.parse::<Bdf>().ok()),
                        Err(QmpError::Command { .. }) => None,
                        Err(e) => return Err(e),
                    };
                out.push(Passthrough {
                    id: if named {
                        name.to_string()
                    } else {
                        path.clone()
                    },
                    path,
                    host,
                });
            }
        }
        Ok(out)
    }

    /// The id of the QEMU device that passes `bdf` through, if the VM has one.
    pub fn find_passthrough(&mut self, bdf: Bdf, bound: Duration) -> Result<Option<String>> {
        Ok(self
            .passthrough_devices(bound)?
            .into_iter()
            .find(|p| p.host == Some(bdf))
            .map(|p| p.id))
    }

    /// Every PCI function of the guest, from `query-pci`, with where it sits.
    pub fn guest_functions(&mut self, bound: Duration) -> Result<Vec<GuestFunction>> {
        let dl = Deadline::after(bound);
        let v = self
            .call("query-pci", Value::Null, &dl)
            .map_err(|e| self.wrap(e))?;
        let mut out = Vec::new();
        let Some(buses) = v.as_array() else {
            return Err(self.wrap(QmpError::Unexpected {
                command: "query-pci".into(),
                what: "not a list of buses".into(),
            }));
        };
        for (i, b) in buses.iter().enumerate() {
            if let Some(devs) = b.get("devices").and_then(Value::as_array) {
                walk_bus(devs, &i.to_string(), 0, &mut out);
            }
        }
        Ok(out)
    }
}

/// Collects the functions of one `query-pci` device list, recursing through bridges (at most 32
/// deep: PCIe allows no deeper tree, and a bad answer must not recurse without end).
fn walk_bus(devs: &[Value], prefix: &str, depth: usize, out: &mut Vec<GuestFunction>) {
    if depth > 32 {
        return;
    }
    for d in devs {
        let n = |k: &str| d.get(k).and_then(Value::as_u64).map(|v| v as u8);
        let (Some(slot), Some(function)) = (n("slot"), n("function")) else {
            continue;
        };
        out.push(GuestFunction {
            id: d
                .get("qdev_id")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            slot: format!("{prefix}/{slot:02x}"),
            function,
            bus: n("bus").unwrap_or(0),
        });
        if let Some(sub) = d.pointer("/pci_bridge/devices").and_then(Value::as_array) {
            walk_bus(
                sub,
                &format!("{prefix}/{slot:02x}.{function:x}"),
                depth + 1,
                out,
            );
        }
    }
}

#[cfg(test)]
mod tests;
