//! The twin's fake QEMU: one per VM, the server side of QMP and the guest behind it.
//!
//! It holds the VM's VFIO group nodes open (`<root>/dev/vfio/<group>`, so the engine's guards
//! see a holder, as with a running VM), serves QMP on the Proxmox socket beneath the twin's root
//! (`<root>/var/run/qemu-server/<vmid>.qmp`, qemu-server `PVE::QemuServer::Helpers::qmp_socket`)
//! and plays the guest, which releases a device QEMU asks it to unplug after a delay, never
//! (hung), or QEMU refuses the unplug. Device ids follow qemu-server's `print_hostpci_devices`:
//! `hostpciN` for a single function, `hostpciN.J` for the functions of a multi-function entry
//! (FACTS.md "Proxmox details that matter to a hook").
//!
//! The reset-bug state follows the field report (FACTS.md, "What the field report's experiments
//! show"): QEMU exiting while the guest still drives the GPU leaves it dirty (the report's
//! IO_PAGE_FAULTs at `qm stop`); a function the guest released (device_del completed, or a sysfs
//! `remove` relayed to QEMU as a device request) or disabled itself (devcon at a guest shutdown)
//! is left clean. A guest that starts on a dirty GPU cannot use it (the report's black screen):
//! `check` says so. A paused VM (a backup start, `lock: backup`) never touched the GPU.
//!
//! QMP answered: the greeting, `qmp_capabilities`, `qom-list`, `qom-get … host`, `device_del`,
//! `stop`, `cont`, `query-status`, `quit`; errors use QEMU's classes and words
//! (`CommandNotFound`, `DeviceNotFound`, `GenericError`). Events: `DEVICE_DELETED`, `STOP`,
//! `RESUME`, `SHUTDOWN`.

use std::fs::{self, File};
use std::io::{BufReader, Write};
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::pci::Bdf;
use crate::pve::{self, VmConfig};
use crate::sim::model;

/// `<root>/var/run/qemu-server/<vmid>.qmp`: where qemu-server puts a VM's QMP socket.
pub fn socket_path(root: &Path, vmid: u32) -> PathBuf {
    root.join("var/run/qemu-server").join(format!("{vmid}.qmp"))
}

/// `<root>/var/run/qemu-server/<vmid>.pid`: the pid of the VM's (fake) QEMU.
pub fn pid_path(root: &Path, vmid: u32) -> PathBuf {
    root.join("var/run/qemu-server").join(format!("{vmid}.pid"))
}

/// `<root>/model/vm/<vmid>.json`: what the fake QEMU and its guest are doing ([`VmState`]).
pub fn state_path(root: &Path, vmid: u32) -> PathBuf {
    model::model_dir(root)
        .join("vm")
        .join(format!("{vmid}.json"))
}

/// How the guest answers an unplug request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Guest {
    /// Ejects the device `ms` after the request (while the VM runs).
    Release { ms: u64 },
    /// Never ejects it (a hung guest, or one without hotplug support).
    Hung,
    /// QEMU refuses the request (`device_del` answers an error: the slot is not hot-pluggable).
    Refuse,
}

impl FromStr for Guest {
    type Err = Error;
    /// `release`, `release:MS`, `hung`, `refuse`.
    fn from_str(s: &str) -> Result<Guest> {
        let bad = || {
            Error::parse(
                "guest behaviour",
                s,
                "expected release, release:MS, hung or refuse",
            )
        };
        match s.split_once(':') {
            None if s == "release" => Ok(Guest::Release { ms: 0 }),
            None if s == "hung" => Ok(Guest::Hung),
            None if s == "refuse" => Ok(Guest::Refuse),
            Some(("release", ms)) => ms
                .parse()
                .map(|ms| Guest::Release { ms })
                .map_err(|_| bad()),
            _ => Err(bad()),
        }
    }
}

impl std::fmt::Display for Guest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Guest::Release { ms } => write!(f, "release:{ms}"),
            Guest::Hung => f.write_str("hung"),
            Guest::Refuse => f.write_str("refuse"),
        }
    }
}

/// How the fake QEMU starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmOptions {
    pub guest: Guest,
    /// Start paused (QEMU `-S`); implied by `lock: backup` in the VM's config (vzdump starts a
    /// stopped VM paused: qemu-server `enforce_vm_running_for_backup`).
    pub paused: bool,
    /// The guest disables the GPU and its audio itself before it powers off (the report's
    /// devcon scripts).
    pub devcon: bool,
}

impl Default for VmOptions {
    fn default() -> Self {
        VmOptions {
            guest: Guest::Release { ms: 0 },
            paused: false,
            devcon: false,
        }
    }
}

/// One QEMU device passing a host function through.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct VmDevice {
    /// `hostpci0`, `hostpci1.2`, …
    pub id: String,
    pub bdf: Bdf,
    pub group: Option<u32>,
    /// The hostpciN entry.
    pub entry: u8,
    /// Function index within a multi-function entry (`None` for a single function).
    pub index: Option<usize>,
    /// An AMD display function: the one the reset bug leaves dirty.
    pub gpu: bool,
}

fn read_trim(p: &Path) -> String {
    fs::read_to_string(p)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The QEMU devices of a VM, from `<root>/etc/pve/qemu-server/<vmid>.conf` and what is on the
/// twin's bus.
pub fn devices_of(root: &Path, cfg: &VmConfig) -> Result<Vec<VmDevice>> {
    let sysfs = root.join("sys");
    let present = pve::present_functions(&sysfs)?;
    let functions = cfg.functions(&present);
    let mut out = Vec::new();
    for hp in &cfg.hostpci {
        let fs_: Vec<_> = functions.iter().filter(|f| f.hostpci == hp.index).collect();
        let multi = fs_.len() > 1;
        for (j, f) in fs_.iter().enumerate() {
            let bdf = f.bdf;
            let dir = sysfs.join("bus/pci/devices").join(bdf.to_string());
            let group = crate::pci::sysfs::link_name(&dir.join("iommu_group"))
                .ok()
                .flatten()
                .and_then(|g| g.parse().ok());
            let vendor = read_trim(&dir.join("vendor"));
            let class = read_trim(&dir.join("class"));
            out.push(VmDevice {
                id: if multi {
                    format!("hostpci{}.{j}", hp.index)
                } else {
                    format!("hostpci{}", hp.index)
                },
                bdf,
                group,
                entry: hp.index,
                index: multi.then_some(j),
                gpu: vendor == "0x1002" && class.starts_with("0x03"),
            });
        }
    }
    Ok(out)
}

/// One device as the fake QEMU sees it (in [`VmState`]).
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DeviceState {
    #[serde(flatten)]
    pub device: VmDevice,
    /// The guest's driver runs it now (its state is at stake when QEMU exits).
    pub driven: bool,
    /// An unplug was requested (device_del, or a sysfs remove relayed by vfio).
    pub requested: bool,
    /// The guest ejected it: DEVICE_DELETED was sent, the group node closed.
    pub released: bool,
    /// Request → release, ms.
    pub release_ms: Option<f64>,
}

/// `<root>/model/vm/<vmid>.json`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct VmState {
    pub vmid: u32,
    pub pid: u32,
    /// `running`, `paused`, or `exited`.
    pub status: String,
    pub guest: Guest,
    pub devcon: bool,
    /// The GPU was clean when the guest first ran: the guest could use it.
    pub gpu_ok: Option<bool>,
    pub devices: Vec<DeviceState>,
    /// How QEMU ended, once it did.
    pub exit: Option<String>,
    /// Functions left dirty at the exit.
    pub left_dirty: Vec<Bdf>,
}

impl VmState {
    pub fn load(root: &Path, vmid: u32) -> Result<VmState> {
        let p = state_path(root, vmid);
        let text = fs::read_to_string(&p).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::not_found(
                "fake QEMU state of VM",
                format!("{vmid} (never started on this twin: `sim vm DIR {vmid} start`)"),
            ),
            _ => Error::io("read", &p, e),
        })?;
        serde_json::from_str(&text)
            .map_err(|e| Error::parse("fake QEMU state", p.display().to_string(), e.to_string()))
    }
}

/// How QEMU ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The host ends it (QMP `quit`, SIGTERM: what `qm stop` does).
    HostStop,
    /// The guest powers off from inside (no pre-stop runs).
    GuestShutdown,
    /// QEMU dies without cleaning up (SIGKILL, a crash).
    Crash,
}

impl Exit {
    fn as_str(self) -> &'static str {
        match self {
            Exit::HostStop => "stopped by the host",
            Exit::GuestShutdown => "guest shut down from inside",
            Exit::Crash => "killed",
        }
    }
}

struct Dev {
    st: DeviceState,
    node: Option<File>,
    requested_at: Option<Instant>,
    /// When the guest ejects it (None: not scheduled).
    due: Option<Instant>,
}

struct Client {
    stream: UnixStream,
    /// Events go only to connections past `qmp_capabilities`.
    negotiated: bool,
}

struct Inner {
    root: PathBuf,
    vmid: u32,
    opts: VmOptions,
    devs: Vec<Dev>,
    paused: bool,
    gpu_ok: Option<bool>,
    clients: Vec<(u64, Client)>,
    next_client: u64,
    exit: Option<Exit>,
    /// `quit` answered: end once the reply is out.
    exit_requested: Option<Exit>,
    left_dirty: Vec<Bdf>,
}

struct Shared {
    inner: Mutex<Inner>,
    wake: Condvar,
    stop: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
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
    fn state(&self) -> VmState {
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

    fn save(&self) {
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
    fn guest_runs(&mut self) {
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

    fn release_due(&mut self, now: Instant) {
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
    fn watch_removed(&mut self, now: Instant) {
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
    fn finish(&mut self, how: Exit) {
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
    fn execute(&mut self, cmd: &str, args: &Value) -> std::result::Result<Value, (String, String)> {
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
        let cfg = VmConfig::load(&root.join("etc/pve"), vmid)?;
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

/// What a crashed QEMU leaves (it could not say so itself): the functions its last state says
/// the guest drove are dirty, the socket and pid file stay behind until cleaned up here.
pub fn after_crash(root: &Path, vmid: u32) -> Result<VmState> {
    let mut st = VmState::load(root, vmid)?;
    if st.exit.is_none() {
        for d in &st.devices {
            if d.driven && d.device.gpu {
                model::mark_dirty(root, &d.device.bdf)?;
                st.left_dirty.push(d.device.bdf);
            }
        }
        st.exit = Some(Exit::Crash.as_str().into());
        st.status = "exited".into();
        let p = state_path(root, vmid);
        let text = serde_json::to_string_pretty(&st)
            .map_err(|e| Error::failed(format!("encode fake QEMU state: {e}")))?;
        fs::write(&p, text).map_err(|e| Error::io("write", &p, e))?;
    }
    let _ = fs::remove_file(socket_path(root, vmid));
    let _ = fs::remove_file(pid_path(root, vmid));
    Ok(st)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_behaviours_parse() {
        assert_eq!(
            "release".parse::<Guest>().unwrap(),
            Guest::Release { ms: 0 }
        );
        assert_eq!(
            "release:250".parse::<Guest>().unwrap(),
            Guest::Release { ms: 250 }
        );
        assert_eq!("hung".parse::<Guest>().unwrap(), Guest::Hung);
        assert_eq!("refuse".parse::<Guest>().unwrap(), Guest::Refuse);
        for bad in ["", "release:", "release:x", "sleep", "hung:1"] {
            assert!(bad.parse::<Guest>().is_err(), "{bad}");
        }
        let g = Guest::Release { ms: 7 };
        assert_eq!(g.to_string().parse::<Guest>().unwrap(), g);
    }
}
