//! The fake VM's state behind QMP: its devices, the guest's hold on them, and the answer to
//! each QMP command and guest step.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::pci::Bdf;
use crate::sim::model;

use super::{socket_path, state_path, DeviceState, Exit, Guest, VmOptions, VmState};

pub(super) struct Dev {
    pub(super) st: DeviceState,
    pub(super) node: Option<File>,
    pub(super) requested_at: Option<Instant>,
    /// When the guest ejects it (None: not scheduled).
    pub(super) due: Option<Instant>,
}

pub(super) struct Client {
    pub(super) stream: UnixStream,
    /// Events go only to connections past `qmp_capabilities`.
    pub(super) negotiated: bool,
}

pub(super) struct Inner {
    pub(super) root: PathBuf,
    pub(super) vmid: u32,
    pub(super) opts: VmOptions,
    pub(super) devs: Vec<Dev>,
    pub(super) paused: bool,
    pub(super) gpu_ok: Option<bool>,
    pub(super) clients: Vec<(u64, Client)>,
    pub(super) next_client: u64,
    pub(super) exit: Option<Exit>,
    /// `quit` answered: end once the reply is out.
    pub(super) exit_requested: Option<Exit>,
    pub(super) left_dirty: Vec<Bdf>,
}

pub(super) struct Shared {
    pub(super) inner: Mutex<Inner>,
    pub(super) wake: Condvar,
    pub(super) stop: AtomicBool,
}

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn timestamp() -> Value {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    json!({"seconds": d.as_secs(), "microseconds": d.subsec_micros()})
}

/// The twin's kernel log (a regular file the hook appends to as well).
fn kmsg(root: &Path, line: &str) {
    if let Ok(mut f) = fs::OpenOptions::new()
        .append(true)
        .open(root.join("dev/kmsg"))
    {
        let _ = writeln!(f, "{line}");
    }
}

impl Inner {
    pub(super) fn state(&self) -> VmState {
        VmState {
            vmid: self.vmid,
            pid: std::process::id(),
            status: match (self.exit, self.paused) {
                (Some(_), _) => "exited",
                (None, true) => "paused",
                (None, false) => "running",
            }
            .into(),
            guest: self.opts.guest,
            devcon: self.opts.devcon,
            gpu_ok: self.gpu_ok,
            devices: self.devs.iter().map(|d| d.st.clone()).collect(),
            exit: self.exit.map(|e| e.as_str().to_string()),
            left_dirty: self.left_dirty.clone(),
        }
    }

    pub(super) fn save(&self) {
        let p = state_path(&self.root, self.vmid);
        let tmp = p.with_extension("json.tmp");
        if let Ok(text) = serde_json::to_string_pretty(&self.state()) {
            if fs::write(&tmp, text).is_ok() {
                let _ = fs::rename(&tmp, &p);
            }
        }
    }

    fn event(&mut self, name: &str, data: Option<Value>) {
        let mut ev = json!({"event": name, "timestamp": timestamp()});
        if let Some(d) = data {
            ev["data"] = d;
        }
        let mut line = ev.to_string();
        line.push_str("\r\n");
        self.clients
            .retain_mut(|(_, c)| !c.negotiated || c.stream.write_all(line.as_bytes()).is_ok());
    }

    /// The guest boots (at start, or at the first `cont` of a paused start): its driver takes
    /// every device still plugged, and finds the GPU dirty or clean.
    pub(super) fn guest_runs(&mut self) {
        if self.gpu_ok.is_none() {
            let dirty = self
                .devs
                .iter()
                .any(|d| d.st.device.gpu && model::is_dirty(&self.root, &d.st.device.bdf));
            self.gpu_ok = Some(!dirty);
            for d in self.devs.iter_mut().filter(|d| !d.st.released) {
                d.st.driven = true;
            }
        }
    }

    /// Schedules an ejection per the guest's behaviour (nothing while paused).
    fn schedule(&mut self, now: Instant) {
        let Guest::Release { ms } = self.opts.guest else {
            return;
        };
        if self.paused {
            return;
        }
        // A multi-function entry is ejected as a slot, when its function 0 is asked for.
        let slots: Vec<u8> = self
            .devs
            .iter()
            .filter(|d| d.st.requested && d.st.device.index.unwrap_or(0) == 0)
            .map(|d| d.st.device.entry)
            .collect();
        for d in &mut self.devs {
            if d.st.requested
                && !d.st.released
                && d.due.is_none()
                && slots.contains(&d.st.device.entry)
            {
                d.due = Some(now + Duration::from_millis(ms));
            }
        }
    }

    pub(super) fn release_due(&mut self, now: Instant) {
        let mut deleted = Vec::new();
        for d in &mut self.devs {
            if d.due.is_some_and(|t| t <= now) && !d.st.released {
                d.due = None;
                d.node = None; // QEMU closes the group once its device is gone
                d.st.released = true;
                d.st.driven = false;
                d.st.release_ms = d
                    .requested_at
                    .map(|t| now.saturating_duration_since(t).as_secs_f64() * 1e3);
                deleted.push(d.st.device.id.clone());
            }
        }
        for id in deleted {
            self.event(
                "DEVICE_DELETED",
                Some(json!({"device": id, "path": format!("/machine/peripheral/{id}")})),
            );
        }
        self.save();
    }

    /// A sysfs `remove` of a device QEMU holds: vfio-pci relays a device request to QEMU
    /// (`vfio_pci_core_request`), which unplugs the device from the guest (FACTS.md, QMP).
    pub(super) fn watch_removed(&mut self, now: Instant) {
        let sysfs = self.root.join("sys/bus/pci/devices");
        let mut relayed = false;
        for d in &mut self.devs {
            if !d.st.released
                && !d.st.requested
                && !sysfs.join(d.st.device.bdf.to_string()).exists()
            {
                d.st.requested = true;
                d.requested_at = Some(now);
                relayed = true;
                kmsg(
                    &self.root,
                    &format!(
                        "vfio-pci {}: Relaying device request to user (#0)",
                        d.st.device.bdf
                    ),
                );
            }
        }
        if relayed {
            if self.opts.guest == Guest::Refuse {
                // A device request cannot be refused; QEMU's unplug of a non-hotpluggable
                // device fails and the guest keeps it.
                return;
            }
            self.schedule(now);
        }
    }

    /// QEMU ends: what the guest still drives is left as it is, which for the GPU is dirty.
    pub(super) fn finish(&mut self, how: Exit) {
        if self.exit.is_some() {
            return;
        }
        if how == Exit::GuestShutdown && self.opts.devcon {
            // devcon disable of GPU and audio at the guest's shutdown: the driver lets go.
            for d in &mut self.devs {
                d.st.driven = false;
            }
        }
        for d in &mut self.devs {
            if d.st.driven && d.st.device.gpu {
                let _ = model::mark_dirty(&self.root, &d.st.device.bdf);
                self.left_dirty.push(d.st.device.bdf);
                // What the report's host logged at such a stop.
                kmsg(
                    &self.root,
                    &format!(
                        "vfio-pci {}: AMD-Vi: Event logged [IO_PAGE_FAULT domain=0x0000 \
                         address=0x1b2801000 flags=0x0050]",
                        d.st.device.bdf
                    ),
                );
            }
            d.node = None;
        }
        if how != Exit::Crash {
            self.event(
                "SHUTDOWN",
                Some(json!({
                    "guest": how == Exit::GuestShutdown,
                    "reason": if how == Exit::GuestShutdown { "guest-shutdown" } else { "host-qmp-quit" },
                })),
            );
        }
        self.exit = Some(how);
        for (_, c) in &self.clients {
            let _ = c.stream.shutdown(std::net::Shutdown::Both);
        }
        self.clients.clear();
        let _ = fs::remove_file(socket_path(&self.root, self.vmid));
        self.save();
    }

    fn find(&self, id: &str) -> Option<usize> {
        self.devs
            .iter()
            .position(|d| d.st.device.id == id && !d.st.released)
    }

    /// One QMP command: the reply's `return` or `(class, desc)`.
    pub(super) fn execute(
        &mut self,
        cmd: &str,
        args: &Value,
    ) -> std::result::Result<Value, (String, String)> {
        let err = |class: &str, desc: String| Err((class.to_string(), desc));
        let arg = |k: &str| args.get(k).and_then(Value::as_str).map(str::to_string);
        match cmd {
            "qmp_capabilities" => err(
                "CommandNotFound",
                "Capabilities negotiation is already complete, command ignored".into(),
            ),
            "query-status" => Ok(json!({
                "running": !self.paused,
                "singlestep": false,
                "status": if self.paused { "paused" } else { "running" },
            })),
            "query-pci" => {
                // Proxmox puts each pcie=1 entry on its own root port (ich9-pcie-port-N) of
                // pcie.0; a multi-function entry's functions share slot 0 behind it.
                let mut ports: Vec<Value> = Vec::new();
                let mut entries: Vec<u8> = self.devs.iter().map(|d| d.st.device.entry).collect();
                entries.dedup();
                for (n, e) in entries.iter().enumerate() {
                    let funcs: Vec<Value> = self
                        .devs
                        .iter()
                        .filter(|d| d.st.device.entry == *e && !d.st.released)
                        .map(|d| {
                            json!({"bus": n + 1, "slot": 0,
                                   "function": d.st.device.index.unwrap_or(0),
                                   "qdev_id": d.st.device.id})
                        })
                        .collect();
                    ports.push(json!({
                        "bus": 0, "slot": 0x1c + n, "function": 0,
                        "qdev_id": format!("ich9-pcie-port-{}", e + 1),
                        "pci_bridge": {"bus": {"number": n + 1}, "devices": funcs},
                    }));
                }
                Ok(json!([{"bus": 0, "devices": ports}]))
            }
            "qom-list" => {
                let Some(path) = arg("path") else {
                    return err("GenericError", "Parameter 'path' is missing".into());
                };
                if path == "/machine/peripheral" {
                    let mut v: Vec<Value> = self
                        .devs
                        .iter()
                        .filter(|d| !d.st.released)
                        .map(|d| json!({"name": d.st.device.id, "type": "child<vfio-pci>"}))
                        .collect();
                    v.insert(0, json!({"name": "type", "type": "string"}));
                    return Ok(Value::Array(v));
                }
                match path
                    .strip_prefix("/machine/peripheral/")
                    .and_then(|id| self.find(id))
                {
                    Some(_) => Ok(json!([
                        {"name": "type", "type": "string"},
                        {"name": "host", "type": "str"},
                        {"name": "x-pcie-extcap-init", "type": "bool"},
                    ])),
                    None => err("DeviceNotFound", format!("Device '{path}' not found")),
                }
            }
            "qom-get" => {
                let (Some(path), Some(prop)) = (arg("path"), arg("property")) else {
                    return err("GenericError", "Parameter 'path' is missing".into());
                };
                let Some(i) = path
                    .strip_prefix("/machine/peripheral/")
                    .and_then(|id| self.find(id))
                else {
                    return err("DeviceNotFound", format!("Device '{path}' not found"));
                };
                match prop.as_str() {
                    "host" => Ok(Value::String(self.devs[i].st.device.bdf.to_string())),
                    "type" => Ok(Value::String("vfio-pci".into())),
                    _ => err(
                        "GenericError",
                        format!("Property 'vfio-pci.{prop}' not found"),
                    ),
                }
            }
            "device_del" => {
                let Some(id) = arg("id") else {
                    return err("GenericError", "Parameter 'id' is missing".into());
                };
                let Some(i) = self.find(&id) else {
                    return err("DeviceNotFound", format!("Device '{id}' not found"));
                };
                if self.opts.guest == Guest::Refuse {
                    return err(
                        "GenericError",
                        format!("Bus 'pcie.0' does not support hotplugging (device '{id}')"),
                    );
                }
                if self.devs[i].st.requested {
                    return err(
                        "GenericError",
                        format!("Device {id} is already in the process of unplug"),
                    );
                }
                let now = Instant::now();
                // Function 0 of a multi-function entry unplugs its whole slot.
                let entry = self.devs[i].st.device.entry;
                let slot = self.devs[i].st.device.index == Some(0);
                for d in &mut self.devs {
                    let same = d.st.device.id == id || (slot && d.st.device.entry == entry);
                    if same && !d.st.requested {
                        d.st.requested = true;
                        d.requested_at = Some(now);
                    }
                }
                self.schedule(now);
                self.save();
                Ok(json!({}))
            }
            "stop" => {
                if !self.paused {
                    self.paused = true;
                    // Paused: a scheduled ejection waits for the guest to run again.
                    for d in &mut self.devs {
                        d.due = None;
                    }
                    self.event("STOP", None);
                    self.save();
                }
                Ok(json!({}))
            }
            "cont" => {
                if self.paused {
                    self.paused = false;
                    self.guest_runs();
                    self.event("RESUME", None);
                    self.schedule(Instant::now());
                    self.save();
                }
                Ok(json!({}))
            }
            "quit" => {
                self.exit_requested = Some(Exit::HostStop);
                Ok(json!({}))
            }
            _ => err(
                "CommandNotFound",
                format!("The command {cmd} has not been found"),
            ),
        }
    }
}
