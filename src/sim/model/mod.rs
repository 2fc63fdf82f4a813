//! The twin's device model: it makes the twin's tree behave as the kernel and
//! the hardware would. It watches the tree with inotify and answers:
//!
//! - `remove` (the device and its subtree leave the tree), `rescan` (global,
//!   a bus's, a device's: removed devices under that bus come back, bound to
//!   the driver the host gives them; with the profile's `device_fault =
//!   "vanish"` a removed device never comes back), `drivers/*/bind|unbind`,
//!   `driver_override`, `reset` (the kernel's reset), `power/control`
//!   (runtime suspend to D3hot, or D3cold where `_PR3` exists);
//! - config writes that matter: BRIDGE_CONTROL.BUS_RESET (every function
//!   below returns to its power-on state), PMCSR D3hot→D0 with
//!   No_Soft_Reset 0 (that function resets; not for the AMD VGA functions the
//!   kernel's quirk names), DEVCTL.BCR_FLR / AF_CTRL.FLR where the function has
//!   FLR; writable-bit masks are enforced after each write;
//! - the reset-bug state: `dirty` marks a GPU as left by a guest driver; only
//!   the methods the profile calls effective make it clean.
//!
//! A regular file cannot return an errno, so the twin cannot refuse a write
//! the way the kernel does (ENOTTY, EINVAL): those semantics are proven in the
//! QEMU guest tier instead.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::pci::Bdf;
use crate::sim::profile::{Fault, Profile};
use crate::sim::tree::{self, FnSpec, Kind};

mod bus;
mod config;

/// Where the model keeps its own state, beside `sys/`.
pub fn model_dir(root: &Path) -> PathBuf {
    root.join("model")
}

/// `<root>/model/dirty/<bdf>` exists while the GPU is in the reset-bug state.
pub fn dirty_flag(root: &Path, bdf: &Bdf) -> PathBuf {
    model_dir(root).join("dirty").join(bdf.to_string())
}

/// The model's step counter (a u32 at offset 0, incremented after every
/// step): clients of the twin's index/data windows wait on it
/// ([`crate::amd::regio::Barrier::Twin`]).
pub fn clock_path(root: &Path) -> PathBuf {
    model_dir(root).join("clock")
}

/// Written by [`serve`] once the model watches the tree.
pub fn ready_flag(root: &Path) -> PathBuf {
    model_dir(root).join("ready")
}

/// `<root>/model/ack/<bdf>`: the model has taken every config write made so
/// far to that device (see [`ConfigWrite`]).
pub fn ack_flag(root: &Path, bdf: &Bdf) -> PathBuf {
    model_dir(root).join("ack").join(bdf.to_string())
}

/// How long a config write to a twin waits for its model to take it.
pub const ACK_BOUND: Duration = Duration::from_secs(10);

/// A config write to a twin's `config` file, made synchronous the way the
/// kernel's is. On hardware, `pwrite` to sysfs `config` returns after the
/// config cycle, so a reset the write triggers has begun before the next
/// access; the twin's model only learns of a write through inotify, later
/// (under load, tens of ms: after a spec delay, after the restore). So a
/// writer locks the file (`flock`, which the model holds while it reads,
/// reacts and writes back), clears the device's ack, writes, unlocks and waits
/// until the model has acked a pass that read the file after the write.
/// Without it the lagging model once wrote its stale D3hot image over the
/// engine's D0 write (`pm` health: "power_state D3hot"), and its reset could
/// land after the engine's restore. Not used on sysfs, nor on a tree that no
/// model serves (no `ready` flag).
pub struct ConfigWrite {
    config: PathBuf,
    ack: PathBuf,
    ready: PathBuf,
    lock: Option<nix::fcntl::Flock<fs::File>>,
}

/// Makes every `config` write of this process go through [`ConfigWrite`] (the PCI layer's write
/// hook): called wherever a twin or its model starts, and by the binary at startup, since a
/// model in one process serves writers in others. On real sysfs it does nothing.
pub fn install_config_write_hook() {
    crate::pci::config::set_write_hook(|config, file| {
        Ok(ConfigWrite::begin(config, file)?
            .map(|w| Box::new(move || w.finish()) as crate::pci::config::WriteFinish))
    });
}

impl ConfigWrite {
    /// Before the write: `None` unless `file` is a twin's config a model serves.
    pub fn begin(config: &Path, file: &fs::File) -> Result<Option<ConfigWrite>> {
        use nix::sys::statfs::{fstatfs, SYSFS_MAGIC};
        if fstatfs(file).is_ok_and(|s| s.filesystem_type() == SYSFS_MAGIC) {
            return Ok(None);
        }
        // <root>/sys/devices/…/<bdf>/config
        let Some(bdf) = config
            .parent()
            .and_then(|d| d.file_name())
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse::<Bdf>().ok())
        else {
            return Ok(None);
        };
        let Some(root) = config
            .ancestors()
            .find(|a| a.file_name() == Some("sys".as_ref()))
            .and_then(|a| a.parent())
        else {
            return Ok(None);
        };
        let ready = ready_flag(root);
        if !ready.exists() {
            return Ok(None);
        }
        let f = fs::File::open(config).map_err(|e| Error::io("open", config, e))?;
        let lock = nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| Error::io("flock", config, e.into()))?;
        let ack = ack_flag(root, &bdf);
        match fs::remove_file(&ack) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::io("remove", &ack, e))
            }
            _ => {}
        }
        Ok(Some(ConfigWrite {
            config: config.to_path_buf(),
            ack,
            ready,
            lock: Some(lock),
        }))
    }

    /// After the write: unlock and wait (bounded) for the model's ack. A
    /// device removed meanwhile, or a model that stopped, acks nothing: stop
    /// waiting then.
    pub fn finish(mut self) -> Result<()> {
        drop(self.lock.take());
        crate::reset::wait::poll(
            &format!(
                "the twin's model to take the config write to {}",
                self.config.display()
            ),
            ACK_BOUND,
            Duration::from_millis(2),
            || {
                Ok(
                    (self.ack.exists() || !self.ready.exists() || !self.config.exists())
                        .then_some(()),
                )
            },
        )
    }
}

/// Marks a device as left dirty by a guest driver (`resetlab sim dirty`).
pub fn mark_dirty(root: &Path, bdf: &Bdf) -> Result<()> {
    let p = dirty_flag(root, bdf);
    if let Some(d) = p.parent() {
        fs::create_dir_all(d).map_err(|e| Error::io("create directory", d, e))?;
    }
    fs::write(&p, b"dirty\n").map_err(|e| Error::io("write", &p, e))
}

pub fn is_dirty(root: &Path, bdf: &Bdf) -> bool {
    dirty_flag(root, bdf).exists()
}

/// One thing the model did, appended to `<root>/model/events.jsonl`.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Event {
    pub t_ms: f64,
    pub device: String,
    pub what: String,
}

struct Dev {
    spec: FnSpec,
    /// Config as last seen (after the model's own enforcement).
    config: Vec<u8>,
    writable: Vec<u8>,
    w1c: Vec<u8>,
}

pub struct Model {
    root: PathBuf,
    sysfs: PathBuf,
    specs: Vec<FnSpec>,
    profile: Profile,
    present: BTreeMap<Bdf, Dev>,
    removed: BTreeSet<Bdf>,
    /// Devices that vanished for good (fault injection).
    gone: BTreeSet<Bdf>,
    inotify: Inotify,
    watches: BTreeMap<WatchDescriptor, PathBuf>,
    start: Instant,
    events: Option<fs::File>,
    pending_rescan: Vec<(Instant, Option<Bdf>)>,
    /// The SMU of each device regs/ knows (the iGPU), on its mapped register BAR.
    smu: BTreeMap<Bdf, (crate::pci::mmio::BarMap, crate::sim::smu::SmuModel)>,
    regs: crate::amd::regs::RegsDb,
    /// The step counter ([`clock_path`]).
    clock: Option<crate::pci::mmio::BarMap>,
    steps: u32,
}

fn read_trim(p: &Path) -> String {
    fs::read_to_string(p)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

impl Model {
    pub fn new(root: &Path, specs: Vec<FnSpec>, profile: Profile) -> Result<Model> {
        let sysfs = root.join("sys");
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
            .map_err(|e| Error::io("inotify_init", root, e.into()))?;
        let dir = model_dir(root);
        for sub in ["dirty", "ack"] {
            fs::create_dir_all(dir.join(sub))
                .map_err(|e| Error::io("create directory", &dir, e))?;
        }
        let events = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("events.jsonl"))
            .ok();
        let mut m = Model {
            root: root.to_path_buf(),
            sysfs,
            specs,
            profile,
            present: BTreeMap::new(),
            removed: BTreeSet::new(),
            gone: BTreeSet::new(),
            inotify,
            watches: BTreeMap::new(),
            start: Instant::now(),
            events,
            pending_rescan: Vec::new(),
            smu: BTreeMap::new(),
            regs: crate::amd::regs::RegsDb::embedded()?,
            clock: None,
            steps: 0,
        };
        let clock = clock_path(root);
        fs::File::create(&clock)
            .and_then(|f| f.set_len(4096))
            .map_err(|e| Error::io("create", &clock, e))?;
        m.clock = Some(crate::pci::mmio::BarMap::open_file(
            &clock,
            4096,
            crate::pci::mmio::Access::ReadWrite,
        )?);
        let all = m.specs.clone();
        for s in &all {
            if fs::symlink_metadata(tree::device_dir(&m.sysfs, s, &all)).is_ok() {
                m.adopt(s.clone())?;
            } else {
                m.removed.insert(s.bdf);
            }
        }
        m.watch(&m.sysfs.join("bus/pci"))?;
        let drivers = m.sysfs.join("bus/pci/drivers");
        if let Ok(rd) = fs::read_dir(&drivers) {
            for e in rd.flatten() {
                m.watch(&e.path())?;
            }
        }
        m.watch(&m.sysfs.join("devices/pci0000:00/pci_bus/0000:00"))?;
        Ok(m)
    }

    fn watch(&mut self, dir: &Path) -> Result<()> {
        if !dir.is_dir() {
            return Ok(());
        }
        let wd = self
            .inotify
            .add_watch(
                dir,
                AddWatchFlags::IN_CLOSE_WRITE | AddWatchFlags::IN_MODIFY,
            )
            .map_err(|e| Error::io("inotify_add_watch", dir, e.into()))?;
        self.watches.insert(wd, dir.to_path_buf());
        Ok(())
    }

    fn dir_of(&self, spec: &FnSpec) -> PathBuf {
        tree::device_dir(&self.sysfs, spec, &self.specs)
    }

    fn multifunction(&self, spec: &FnSpec) -> bool {
        self.specs
            .iter()
            .any(|s| s.bdf != spec.bdf && s.bdf.slot() == spec.bdf.slot())
    }

    /// Starts modelling a device already laid out in the tree.
    fn adopt(&mut self, spec: FnSpec) -> Result<()> {
        let dir = self.dir_of(&spec);
        let (_, writable, w1c) = tree::config_space(&spec, self.multifunction(&spec));
        let config = fs::read(dir.join("config")).unwrap_or_default();
        self.watch(&dir)?;
        self.watch(&dir.join("power"))?;
        if let Kind::RootPort { secondary, .. } = spec.kind {
            self.watch(
                &dir.join("pci_bus")
                    .join(format!("{:04x}:{secondary:02x}", spec.bdf.domain)),
            )?;
        }
        self.removed.remove(&spec.bdf);
        self.attach_smu(&spec, &dir)?;
        self.present.insert(
            spec.bdf,
            Dev {
                spec,
                config,
                writable,
                w1c,
            },
        );
        Ok(())
    }

    /// Starts the SMU model on the register BAR of a device regs/ knows.
    fn attach_smu(&mut self, spec: &FnSpec, dir: &Path) -> Result<()> {
        let Some(asic) = self.regs.by_pci_id(spec.vendor, spec.device) else {
            return Ok(());
        };
        // A family resetlab sends no mode 2 to (Raven) gets no SMU model:
        // its registers read as the sparse file's zeros.
        if !asic.mode2().offered || asic.file.mailboxes.is_empty() {
            return Ok(());
        }
        let bar = asic.file.bar.index;
        let Some(size) = spec.bars.iter().find(|b| b.index == bar).map(|b| b.size) else {
            return Ok(());
        };
        let path = dir.join(format!("resource{bar}"));
        let mut map =
            crate::pci::mmio::BarMap::open_file(&path, size, crate::pci::mmio::Access::ReadWrite)?;
        // The GPU's own table decides where its registers are (the profile's
        // [discovery.bases]); the SMU answers there, not where regs/ guesses.
        // The family's table (sim/family.rs): its MP1 version picks the
        // mailbox, as amdgpu_smu.c: smu_set_funcs picks on the MP1 IP version.
        let mp1 = asic
            .pci_id(spec.vendor, spec.device)
            .and_then(|p| p.mp1_version.clone())
            .or_else(|| asic.file.mp1_versions.first().cloned());
        let base = crate::sim::family::blob_spec(asic, mp1.as_deref())?;
        let table = self.profile.discovery.blob_on(base)?;
        let disc = crate::amd::discovery::parse(&table, crate::amd::discovery::Mode::Strict)?;
        let asic = asic.with_discovered_bases(&disc, "the twin's discovery table")?;
        let mp1 = disc.mp1_version().filter(|v| asic.mailbox(Some(v)).is_ok());
        let mut smu = crate::sim::smu::SmuModel::with_table(
            &asic,
            mp1.as_deref(),
            self.profile.smu.clone(),
            table,
        )?;
        smu.set_dirty(is_dirty(&self.root, &spec.bdf));
        smu.set_mode2_cleans(self.profile.effective.smu_mode2);
        smu.power_on(&mut map)?;
        self.smu.insert(spec.bdf, (map, smu));
        Ok(())
    }

    /// Steps every SMU model; mode 2 cleans a dirty GPU when the profile
    /// says so, a vanish removes the device for good.
    fn step_smu(&mut self) -> Result<()> {
        let now = Instant::now();
        let mut done = Vec::new();
        for (bdf, (map, smu)) in self.smu.iter_mut() {
            smu.set_dirty(is_dirty(&self.root, bdf));
            match smu.step(map, now) {
                Some(crate::sim::smu::SmuEvent::Mode2Done) => done.push((*bdf, false)),
                Some(crate::sim::smu::SmuEvent::Vanish) => done.push((*bdf, true)),
                _ => {}
            }
        }
        for (bdf, vanish) in done {
            if vanish {
                self.smu.remove(&bdf);
                self.gone.insert(bdf);
                self.remove(&bdf)?;
                self.log(&bdf.to_string(), "vanished mid mode 2 (injected fault)");
            } else {
                self.log(&bdf.to_string(), "SMU mode 2 done");
                self.clean(&bdf, "smu_mode2");
                if let Some((_, smu)) = self.smu.get_mut(&bdf) {
                    smu.set_dirty(is_dirty(&self.root, &bdf));
                }
            }
        }
        Ok(())
    }

    fn log(&mut self, device: &str, what: impl Into<String>) {
        let ev = Event {
            t_ms: self.start.elapsed().as_secs_f64() * 1e3,
            device: device.to_string(),
            what: what.into(),
        };
        if let Some(f) = &mut self.events {
            if let Ok(mut line) = serde_json::to_vec(&ev) {
                line.push(b'\n');
                let _ = f.write_all(&line);
            }
        }
    }

    fn clean(&mut self, bdf: &Bdf, method: &str) {
        if is_dirty(&self.root, bdf) && self.profile.effective.cleans(method) {
            let _ = fs::remove_file(dirty_flag(&self.root, bdf));
            let why = self
                .profile
                .effective
                .hypothesis(method)
                .map(|h| format!(" ({h})"))
                .unwrap_or_default();
            self.log(&bdf.to_string(), format!("clean after {method}{why}"));
        }
    }

    /// Handles pending inotify events; returns whether there were any.
    pub fn handle_events(&mut self) -> Result<bool> {
        let events = match self.inotify.read_events() {
            Ok(ev) => ev,
            Err(nix::errno::Errno::EAGAIN) => return Ok(false),
            Err(e) => return Err(Error::io("inotify read", &self.sysfs, e.into())),
        };
        let mut paths = BTreeSet::new();
        for ev in events {
            if let (Some(dir), Some(name)) = (self.watches.get(&ev.wd), ev.name) {
                paths.insert(dir.join(name));
            }
        }
        for p in paths {
            self.on_write(&p)?;
        }
        Ok(true)
    }

    fn owner(&self, path: &Path) -> Option<Bdf> {
        let mut cur = path.parent();
        while let Some(d) = cur {
            if let Some(b) = d
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.parse::<Bdf>().ok())
            {
                if d.starts_with(self.sysfs.join("devices")) {
                    return Some(b);
                }
            }
            cur = d.parent();
        }
        None
    }

    fn on_write(&mut self, path: &Path) -> Result<()> {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("")
            .to_string();
        let parent = path
            .parent()
            .and_then(|p| p.file_name())
            .and_then(|n| n.to_str())
            .unwrap_or("")
            .to_string();
        let drivers = self.sysfs.join("bus/pci/drivers");
        if path == self.sysfs.join("bus/pci/rescan") {
            if read_trim(path) == "1" {
                truncate(path);
                self.schedule_rescan(None);
            }
            return Ok(());
        }
        if path.parent().and_then(|p| p.parent()) == Some(drivers.as_path()) {
            let value = read_trim(path);
            if value.is_empty() {
                return Ok(());
            }
            truncate(path);
            if let Ok(bdf) = value.parse::<Bdf>() {
                match name.as_str() {
                    "bind" => self.bind(&bdf, &parent)?,
                    "unbind" => self.unbind(&bdf)?,
                    _ => {}
                }
            }
            return Ok(());
        }
        if parent.contains(':')
            && path
                .parent()
                .and_then(|p| p.parent())
                .and_then(|p| p.file_name())
                == Some("pci_bus".as_ref())
        {
            // <bridge>/pci_bus/<dddd:bb>/rescan
            if name == "rescan" && read_trim(path) == "1" {
                truncate(path);
                let bridge = self.owner(path);
                self.schedule_rescan(bridge);
            }
            return Ok(());
        }
        let Some(bdf) = self.owner(path) else {
            return Ok(());
        };
        if !self.present.contains_key(&bdf) {
            return Ok(());
        }
        let in_power = parent == "power";
        match (in_power, name.as_str()) {
            (false, "config") => self.on_config(&bdf),
            (false, "remove") => {
                if read_trim(path) == "1" {
                    if self.profile.device_fault == Fault::Vanish {
                        // The injected fault: the device leaves and no rescan finds it again.
                        self.apply_device_fault(&bdf)?;
                    } else {
                        self.remove(&bdf)?;
                    }
                }
                Ok(())
            }
            (false, "rescan") => {
                if read_trim(path) == "1" {
                    truncate(path);
                    let parent = self.present.get(&bdf).and_then(|d| d.spec.parent);
                    self.schedule_rescan(parent);
                }
                Ok(())
            }
            (false, "reset") => {
                if read_trim(path) == "1" {
                    truncate(path);
                    self.kernel_reset(&bdf)?;
                }
                Ok(())
            }
            (false, "driver_override") => {
                let v = read_trim(path);
                if v.is_empty() {
                    let _ = fs::write(path, "(null)\n");
                }
                Ok(())
            }
            (false, "reset_method") => {
                let v = read_trim(path);
                if v == "default" {
                    let spec = self.present[&bdf].spec.reset_method;
                    let _ = fs::write(path, format!("{spec}\n"));
                }
                Ok(())
            }
            (true, "control") => self.on_power_control(&bdf, &read_trim(path)),
            _ => Ok(()),
        }
    }

    fn schedule_rescan(&mut self, bridge: Option<Bdf>) {
        let at = Instant::now() + Duration::from_millis(self.profile.rescan_ms);
        self.pending_rescan.push((at, bridge));
    }

    /// Runs rescans whose delay has passed.
    pub fn tick(&mut self) -> Result<()> {
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) =
            self.pending_rescan.drain(..).partition(|(t, _)| *t <= now);
        self.pending_rescan = later;
        for (_, bridge) in due {
            self.rescan(bridge)?;
        }
        Ok(())
    }

    /// Marks device faults: a device that vanishes mid-reset never returns.
    pub fn apply_device_fault(&mut self, bdf: &Bdf) -> Result<()> {
        if self.profile.device_fault == Fault::Vanish {
            self.gone.insert(*bdf);
            self.remove(bdf)?;
            self.log(&bdf.to_string(), "vanished (injected fault)");
        }
        Ok(())
    }

    /// One round: wait for events (at most `timeout`), handle them, run due rescans.
    pub fn step(&mut self, timeout: Duration) -> Result<()> {
        // The SMU model looks at its BAR about every millisecond.
        let timeout = if self.smu.is_empty() {
            timeout
        } else {
            timeout.min(Duration::from_millis(1))
        };
        let ready = {
            let fd = self.inotify.as_fd();
            let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
            let ms = timeout.as_millis().min(u16::MAX as u128) as u16;
            poll(&mut fds, PollTimeout::from(ms)).unwrap_or(0)
        };
        if ready > 0 {
            self.handle_events()?;
        }
        self.step_smu()?;
        let r = self.tick();
        self.steps = self.steps.wrapping_add(1);
        if let Some(c) = &mut self.clock {
            let _ = c.device_write32(0, self.steps);
        }
        r
    }
}

/// Replaces a read-only attribute the model owns in one step (write a
/// sibling, rename over): a reader sees the old value or the new, never the
/// empty file a truncating write shows for a moment (a health check read
/// `power_state` as "" that way under load).
fn replace_attr(p: &Path, value: &str) {
    let tmp = p.with_extension("resetlab-new");
    if fs::write(&tmp, value).is_ok() && fs::rename(&tmp, p).is_err() {
        let _ = fs::remove_file(&tmp);
        let _ = fs::write(p, value);
    }
}

fn truncate(p: &Path) {
    if let Ok(f) = fs::OpenOptions::new().write(true).open(p) {
        let _ = f.set_len(0);
    }
}

/// The model running in a thread; stops (and joins) on drop.
pub struct ModelHandle {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pub errors: Arc<Mutex<Vec<String>>>,
    ready: PathBuf,
}

impl ModelHandle {
    pub fn spawn(root: &Path, specs: Vec<FnSpec>, profile: Profile) -> Result<ModelHandle> {
        install_config_write_hook();
        let mut model = Model::new(root, specs, profile)?;
        // The watches are in place: config writers wait for acks from now on.
        let ready = ready_flag(root);
        fs::write(&ready, b"ready\n").map_err(|e| Error::io("write", &ready, e))?;
        let stop = Arc::new(AtomicBool::new(false));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let (s, e) = (stop.clone(), errors.clone());
        let thread = std::thread::Builder::new()
            .name("resetlab-twin-model".into())
            .spawn(move || {
                while !s.load(Ordering::Relaxed) {
                    if let Err(err) = model.step(Duration::from_millis(5)) {
                        if let Ok(mut v) = e.lock() {
                            v.push(err.one_line());
                        }
                    }
                }
            })
            .map_err(|e| Error::io("spawn model thread", root, e))?;
        Ok(ModelHandle {
            stop,
            thread: Some(thread),
            errors,
            ready,
        })
    }
}

impl Drop for ModelHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // No model answers now: writers must not wait for one.
        let _ = fs::remove_file(&self.ready);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs the model in the foreground until `stop` is set (the `sim serve` daemon).
pub fn serve(root: &Path, profile: Profile, stop: Arc<AtomicBool>) -> Result<()> {
    install_config_write_hook();
    // The GPU family `sim up --asic` recorded (the seed's 780M when none).
    let gpu = match crate::sim::family::recorded(root) {
        Some(name) => Some(crate::sim::family::TwinGpu::for_name(
            &crate::amd::regs::RegsDb::embedded()?,
            &name,
        )?),
        None => None,
    };
    let mut model = Model::new(root, crate::sim::family::host_specs(gpu.as_ref()), profile)?;
    // The watches are in place: `sim up` waits for this file.
    let ready = ready_flag(root);
    fs::write(&ready, b"ready\n").map_err(|e| Error::io("write", &ready, e))?;
    let mut r = Ok(());
    while r.is_ok() && !stop.load(Ordering::Relaxed) {
        r = model.step(Duration::from_millis(5));
    }
    // No model answers now: config writers must not wait for one.
    let _ = fs::remove_file(&ready);
    r
}
