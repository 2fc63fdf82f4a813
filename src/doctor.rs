//! `resetlab doctor`: a Proxmox host checked against the field report's recipe (seed, "Host
//! Config" and "VM config"), read-only. Every check is a function over a [`DoctorCtx`] that
//! returns [`Check`]s (pass / warn / fail, with the fix in one line); [`CHECKS`] lists them in
//! the order they print.
//!
//! Every path is under a root: `sysfs` (the global `--sysfs`), `root` (`/proc`, `/etc`, `/boot`,
//! `/lib/modules`, `/usr/share/kvm`, the hookscript's storage path) and `pve_root`
//! (`/etc/pve`). Nothing is written anywhere.
//!
//! Where each rule comes from:
//!
//! - IOMMU groups: `drivers/iommu/iommu.c` creates `/sys/kernel/iommu_groups/<n>/devices/*`.
//!   A group is usable by VFIO only when every member is bound to a driver that manages its own
//!   DMA (`driver_managed_dma`: vfio-pci, pci-stub, pcieport — commits "PCI: pci_stub: Set
//!   driver_managed_dma", "PCI: portdrv: Set driver_managed_dma") or to none
//!   (`iommu_group_claim_dma_owner` fails with EBUSY otherwise).
//! - `vfio-pci ids=`: `drivers/vfio/pci/vfio_pci.c` `vfio_pci_fill_ids`: comma-separated,
//!   `sscanf("%x:%x:%x:%x:%x:%x")` vendor, device, subvendor, subdevice, class, class_mask;
//!   fewer than two fields is ignored with "invalid id string". Matching as
//!   `pci_match_one_device` (`drivers/pci/pci.h`).
//! - modprobe configuration: kmod `libkmod/libkmod.c` `default_config_paths` (`/etc/modprobe.d`,
//!   `/run/modprobe.d`, `/usr/local/lib/modprobe.d`, `/usr/lib/modprobe.d`, `/lib/modprobe.d`;
//!   a file name seen in an earlier directory hides the same name later), `libkmod-config.c`
//!   (`blacklist`, `options`, `softdep`, `install`; module names with `-` and `_` are one name).
//!   A blacklist stops only loading by alias, which is how udev loads `amdgpu` for the iGPU.
//! - Which modules would claim a device: `<root>/lib/modules/<release>/modules.alias`
//!   (`alias pci:v…d…sv…sd…bc…sc…i… MODULE`, written by `scripts/mod/file2alias.c`
//!   `do_pci_entry`), matched against the device's `modalias`
//!   (`drivers/pci/pci-sysfs.c` `modalias_show`: `pci:v%08Xd%08Xsv%08Xsd%08Xbc%02Xsc%02Xi%02X`).
//! - Kernel command line: `lib/cmdline.c` `next_arg` (blanks split, double quotes group);
//!   `kernel/params.c` `parameq` (`-` equals `_` in names); `--` ends the kernel's part.
//! - Lockdown: `security/lockdown/lockdown.c` `lockdown_read` prints every level with the
//!   current one in brackets. `drivers/pci/pci-sysfs.c` `pci_write_config` and
//!   `pci_mmap_resource` return `security_locked_down(LOCKDOWN_PCI_ACCESS)`, an integrity-level
//!   reason: both `integrity` and `confidentiality` block config writes and BAR mmap.
//! - Strict devmem: `kernel/resource.c` `resource_is_exclusive` (via `iomem_is_exclusive`,
//!   which `pci_mmap_resource` checks, EINVAL): with `strict_iomem_checks` (default on with
//!   `CONFIG_STRICT_DEVMEM`; `iomem=relaxed` clears it in `strict_iomem`) a busy region is
//!   exclusive when `CONFIG_IO_STRICT_DEVMEM=y`.
//! - Proxmox: qemu-server `PVE/QemuServer/PCI.pm` `print_hostpci_devices` passes
//!   `romfile=/usr/share/kvm/<romfile>` on the entry's first function only, and the
//!   `vendor-id`/`device-id` overrides as `x-pci-vendor-id`/`x-pci-device-id`;
//!   pve-guest-common `PVE/GuestHelpers.pm` `check_hookscript` refuses a hookscript that is not
//!   in a snippets directory, does not exist, or is not executable.
//! - The recipe: seed "Host Config" (`iommu=pt`, `/etc/modules` vfio modules,
//!   `/etc/modprobe.d/passthrough.conf` blacklist and `options vfio-pci ids=`,
//!   `update-initramfs -u -k all`) and "VM config" (`romfile=` in `/usr/share/kvm/`, `vga: none`,
//!   `x-vga=1`, the hookscript); the host keyboard on `c5:00.3` (seed dmesg: `input: MOSART Semi.
//!   2.4G Keyboard Mouse as /devices/pci0000:00/0000:00:08.1/0000:c5:00.3/usb1/…`).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::amd::vbios;
use crate::hook::chain::HookRecord;
use crate::hook::install::{shim_kind, ShimKind};
use crate::pci::sysfs::read_attr;
use crate::pci::{Bdf, Device, Host, Topology};
use crate::pve::{self, PciTarget, StorageConfig, VmConfig};

// ---------------------------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Warn,
    Fail,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        }
    }
}

/// One verdict: what was looked at, how it stands, and (warn/fail) the fix in one line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Check {
    /// The check's name (one of [`CHECKS`]).
    pub name: &'static str,
    /// What it is about when the check runs per thing: a PCI function, `hostpci0`, a ROM file.
    pub subject: Option<String>,
    pub status: Status,
    pub detail: String,
    /// `None` for a pass.
    pub fix: Option<String>,
}

impl Check {
    fn new(name: &'static str, subject: Option<String>, status: Status, detail: String) -> Check {
        Check {
            name,
            subject,
            status,
            detail,
            fix: None,
        }
    }

    pub fn pass(name: &'static str, detail: impl Into<String>) -> Check {
        Check::new(name, None, Status::Pass, detail.into())
    }

    pub fn warn(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check::new(name, None, Status::Warn, detail.into()).with_fix(fix)
    }

    pub fn fail(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check::new(name, None, Status::Fail, detail.into()).with_fix(fix)
    }

    fn with_fix(mut self, fix: impl Into<String>) -> Check {
        self.fix = Some(fix.into());
        self
    }

    fn about(mut self, subject: impl Into<String>) -> Check {
        self.subject = Some(subject.into());
        self
    }

    /// `name` or `name@subject`, as the human output shows it.
    pub fn label(&self) -> String {
        match &self.subject {
            Some(s) => format!("{}@{s}", self.name),
            None => self.name.to_string(),
        }
    }
}

/// True when no check failed (the exit code is 0 then).
pub fn all_ok(checks: &[Check]) -> bool {
    checks.iter().all(|c| c.status != Status::Fail)
}

// ---------------------------------------------------------------------------------------------
// Where to look
// ---------------------------------------------------------------------------------------------

/// The roots doctor reads under, and what to check.
#[derive(Debug, Clone)]
pub struct DoctorOptions {
    /// sysfs root (`/sys`).
    pub sysfs: PathBuf,
    /// Root for `/proc`, `/etc`, `/boot`, `/lib/modules`, `/usr/share/kvm` and storage paths.
    pub root: PathBuf,
    /// Proxmox cluster filesystem (`<root>/etc/pve` when `None`).
    pub pve_root: Option<PathBuf>,
    /// Check this VM's passthrough setup.
    pub vmid: Option<u32>,
    /// Proxmox node name for `mapping=` entries (`<root>/proc/sys/kernel/hostname` when `None`).
    pub node: Option<String>,
}

impl DoctorOptions {
    pub fn new(sysfs: impl Into<PathBuf>, root: impl Into<PathBuf>) -> DoctorOptions {
        DoctorOptions {
            sysfs: sysfs.into(),
            root: root.into(),
            pve_root: None,
            vmid: None,
            node: None,
        }
    }

    /// `abs` (an absolute path as the host sees it) under `root`.
    pub fn under_root(&self, abs: impl AsRef<Path>) -> PathBuf {
        use std::path::Component;
        let mut rel = PathBuf::new();
        for c in abs.as_ref().components() {
            match c {
                Component::Normal(n) => rel.push(n),
                Component::ParentDir => {
                    rel.pop();
                }
                _ => {}
            }
        }
        self.root.join(rel)
    }

    pub fn pve_root(&self) -> PathBuf {
        self.pve_root
            .clone()
            .unwrap_or_else(|| self.under_root(pve::DEFAULT_PVE_ROOT))
    }
}

/// One function doctor checks as a passthrough device.
#[derive(Debug, Clone)]
pub struct Target {
    pub bdf: Bdf,
    /// `None` when the function is not on the bus.
    pub dev: Option<Device>,
    /// The `hostpciN` it came from (with `--vmid`).
    pub hostpci: Option<u8>,
    pub from_slot: bool,
    pub driver_keep: bool,
    pub mdev: bool,
}

/// The VM side, with `--vmid`.
#[derive(Debug)]
pub struct VmFacts {
    pub cfg: VmConfig,
    /// Functions present under `<sysfs>/bus/pci/devices`, as pve names them.
    pub present: Vec<Bdf>,
}

/// Everything the checks read, loaded once. Load faults are kept as text for the check that
/// reports them; loading never fails as a whole.
#[derive(Debug)]
pub struct DoctorCtx {
    pub opts: DoctorOptions,
    pub host: Host,
    pub cmdline: Result<Cmdline, String>,
    /// `<root>/proc/sys/kernel/osrelease`.
    pub release: Option<String>,
    pub topo: Result<Topology, String>,
    pub modprobe: ModprobeConf,
    /// `modules.alias` of the running kernel: its path and PCI aliases.
    pub aliases: Option<(PathBuf, Vec<ModAlias>)>,
    /// `Some` with `--vmid`.
    pub vm: Option<Result<VmFacts, String>>,
    pub targets: Vec<Target>,
}

fn read_opt(path: &Path) -> Result<Option<String>, String> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

impl DoctorCtx {
    pub fn load(opts: DoctorOptions) -> DoctorCtx {
        let host = Host::new(&opts.sysfs);
        let cmdline_path = opts.under_root("/proc/cmdline");
        let cmdline = match read_opt(&cmdline_path) {
            Ok(Some(t)) => Ok(Cmdline::parse(&t)),
            Ok(None) => Err(format!("no {}", cmdline_path.display())),
            Err(e) => Err(e),
        };
        let release = read_opt(&opts.under_root("/proc/sys/kernel/osrelease"))
            .ok()
            .flatten()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty() && !s.contains('/'));
        let topo = Topology::scan(&host).map_err(|e| e.one_line());
        let modprobe = ModprobeConf::load(&opts);
        let aliases = release.as_deref().and_then(|r| load_aliases(&opts, r));
        let mut ctx = DoctorCtx {
            opts,
            host,
            cmdline,
            release,
            topo,
            modprobe,
            aliases,
            vm: None,
            targets: Vec::new(),
        };
        if let Some(vmid) = ctx.opts.vmid {
            let vm = ctx.load_vm(vmid);
            if let Ok(v) = &vm {
                ctx.targets = ctx.vm_targets(v);
            }
            ctx.vm = Some(vm);
        } else {
            ctx.targets = ctx.default_targets();
        }
        ctx
    }

    fn load_vm(&self, vmid: u32) -> Result<VmFacts, String> {
        let present = pve::present_functions(&self.opts.sysfs).map_err(|e| e.one_line())?;
        let pve_root = self.opts.pve_root();
        let node = match &self.opts.node {
            Some(n) => n.clone(),
            None => {
                let p = self.opts.under_root("/proc/sys/kernel/hostname");
                let raw = read_opt(&p)?.unwrap_or_default();
                // Only mappings need the node; a missing host name fails there, not here.
                pve::node_name_from_hostname(&raw).unwrap_or_default()
            }
        };
        let cfg = pve::passed_functions(&pve_root, vmid, &present, || Ok(node))
            .map_err(|e| e.one_line())?
            .config;
        Ok(VmFacts { cfg, present })
    }

    fn device(&self, bdf: &Bdf) -> Option<Device> {
        self.topo.as_ref().ok().and_then(|t| t.get(bdf)).cloned()
    }

    fn vm_targets(&self, vm: &VmFacts) -> Vec<Target> {
        vm.cfg
            .functions(&vm.present)
            .iter()
            .map(|f| Target {
                bdf: f.bdf,
                dev: self.device(&f.bdf),
                hostpci: Some(f.hostpci),
                from_slot: f.from_slot,
                driver_keep: f.driver_keep,
                mdev: f.mdev,
            })
            .collect()
    }

    /// Without `--vmid`: every function bound to vfio-pci, every AMD GPU and its HDMI audio.
    fn default_targets(&self) -> Vec<Target> {
        let Ok(topo) = &self.topo else {
            return Vec::new();
        };
        topo.devices
            .values()
            .filter(|d| d.driver.as_deref() == Some(VFIO_PCI) || is_amd_gpu_or_audio(d))
            .map(|d| Target {
                bdf: d.bdf,
                dev: Some(d.clone()),
                hostpci: None,
                from_slot: false,
                driver_keep: false,
                mdev: false,
            })
            .collect()
    }

    /// Devices that go to a guest together: the VM's functions, or the default set.
    fn target_set(&self) -> BTreeSet<Bdf> {
        self.targets.iter().map(|t| t.bdf).collect()
    }

    fn vm_ok(&self) -> Option<&VmFacts> {
        self.vm.as_ref().and_then(|v| v.as_ref().ok())
    }
}

const VFIO_PCI: &str = "vfio-pci";
const PCI_VENDOR_ID_ATI: u16 = 0x1002;
/// `include/linux/pci_ids.h`: PCI_CLASS_MULTIMEDIA_HD_AUDIO, PCI_BASE_CLASS_DISPLAY,
/// PCI_CLASS_SERIAL_USB, PCI_CLASS_BRIDGE_PCI.
const CLASS_HD_AUDIO: u16 = 0x0403;
const BASE_CLASS_DISPLAY: u8 = 0x03;
const CLASS_SERIAL_USB: u16 = 0x0c03;
const CLASS_BRIDGE_PCI: u16 = 0x0604;
/// Drivers that set `driver_managed_dma` (see the module comment) — group members bound to them
/// do not stop VFIO from owning the group.
const DMA_SAFE_DRIVERS: &[&str] = &["vfio-pci", "pci-stub", "pcieport"];
/// Host drivers of USB host controllers (`drivers/usb/host`: the `pci_driver` names).
const USB_HOST_DRIVERS: &[&str] = &["xhci_hcd", "ehci-pci", "ohci-pci", "uhci_hcd"];

fn base_class(d: &Device) -> u8 {
    (d.class >> 16) as u8
}

fn is_amd_gpu_or_audio(d: &Device) -> bool {
    d.vendor == PCI_VENDOR_ID_ATI
        && (base_class(d) == BASE_CLASS_DISPLAY || d.class16() == CLASS_HD_AUDIO)
}

fn ids(d: &Device) -> String {
    format!("{:04x}:{:04x}", d.vendor, d.device)
}

// ---------------------------------------------------------------------------------------------
// The kernel command line
// ---------------------------------------------------------------------------------------------

/// `/proc/cmdline`, split as the kernel splits it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cmdline {
    /// `(name, value)` in order; names with `-` turned into `_` (kernel `parameq`).
    pub params: Vec<(String, Option<String>)>,
}

impl Cmdline {
    /// Split like `lib/cmdline.c` `next_arg`: blanks separate, `"…"` groups (the quotes are
    /// dropped), `--` ends the kernel's parameters.
    pub fn parse(text: &str) -> Cmdline {
        let mut params = Vec::new();
        for word in split_quoted(text) {
            if word == "--" {
                break;
            }
            let (k, v) = match word.split_once('=') {
                Some((k, v)) => (k, Some(v.to_string())),
                None => (word.as_str(), None),
            };
            params.push((k.replace('-', "_"), v));
        }
        Cmdline { params }
    }

    /// Every value of `name` (`-`/`_` alike), in order.
    pub fn values<'a>(&'a self, name: &str) -> impl Iterator<Item = Option<&'a str>> + 'a {
        let name = name.replace('-', "_");
        self.params
            .iter()
            .filter(move |(k, _)| *k == name)
            .map(|(_, v)| v.as_deref())
    }

    /// The last value of `name` (the kernel's `__setup` handlers run once per occurrence).
    pub fn last(&self, name: &str) -> Option<&str> {
        self.values(name).flatten().last()
    }

    pub fn has(&self, name: &str, value: &str) -> bool {
        self.values(name).any(|v| v == Some(value))
    }
}

/// Blank-separated words with `"` grouping; the quote characters are removed.
fn split_quoted(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_q = false;
    let mut any = false;
    for c in text.chars() {
        if c == '"' {
            in_q = !in_q;
            any = true;
        } else if c.is_whitespace() && !in_q {
            if any {
                out.push(std::mem::take(&mut cur));
                any = false;
            }
        } else {
            cur.push(c);
            any = true;
        }
    }
    if any {
        out.push(cur);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// modprobe.d
// ---------------------------------------------------------------------------------------------

/// kmod's name rule: `-` and `_` are the same in module names.
pub fn modname(s: &str) -> String {
    s.replace('-', "_")
}

/// Where a directive was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub path: PathBuf,
    pub line: usize,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.path.display(), self.line)
    }
}

/// The directives of the modprobe configuration doctor cares about.
#[derive(Debug, Clone, Default)]
pub struct ModprobeConf {
    /// Files read, in kmod's order.
    pub files: Vec<PathBuf>,
    /// `blacklist MOD`.
    pub blacklist: BTreeMap<String, Origin>,
    /// `softdep MOD pre: A B …`: MOD → the modules loaded before it.
    pub softdep_pre: BTreeMap<String, Vec<(String, Origin)>>,
    /// `install MOD COMMAND` (a command that replaces loading, e.g. `/bin/false`).
    pub install: BTreeMap<String, (String, Origin)>,
    /// `options MOD …`: the option text of each line, in order.
    pub options: BTreeMap<String, Vec<(String, Origin)>>,
    /// Files that could not be read.
    pub unreadable: Vec<String>,
}

/// kmod `default_config_paths`, in precedence order.
const MODPROBE_DIRS: &[&str] = &[
    "/etc/modprobe.d",
    "/run/modprobe.d",
    "/usr/local/lib/modprobe.d",
    "/usr/lib/modprobe.d",
    "/lib/modprobe.d",
];

impl ModprobeConf {
    /// Read every `*.conf` of kmod's directories under the root, each name once (the first
    /// directory wins), in name order.
    pub fn load(opts: &DoctorOptions) -> ModprobeConf {
        let mut by_name: BTreeMap<String, PathBuf> = BTreeMap::new();
        let mut seen_dirs: Vec<PathBuf> = Vec::new();
        for d in MODPROBE_DIRS {
            let dir = opts.under_root(d);
            // `/lib` is often a link to `/usr/lib`: read a directory once.
            let canon = fs::canonicalize(&dir).unwrap_or_else(|_| dir.clone());
            if seen_dirs.contains(&canon) {
                continue;
            }
            seen_dirs.push(canon);
            let Ok(rd) = fs::read_dir(&dir) else {
                continue;
            };
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.ends_with(".conf") && !by_name.contains_key(&name) {
                    by_name.insert(name, e.path());
                }
            }
        }
        let mut conf = ModprobeConf::default();
        for path in by_name.into_values() {
            match fs::read_to_string(&path) {
                Ok(t) => conf.add(&t, &path),
                Err(e) => conf.unreadable.push(format!("{}: {e}", path.display())),
            }
        }
        conf
    }

    /// Parse one file's text into `self` (kmod `kmod_config_parse`: `#` lines are comments,
    /// a trailing `\` joins the next line, unknown commands are skipped).
    pub fn add(&mut self, text: &str, path: &Path) {
        self.files.push(path.to_path_buf());
        let mut pending = String::new();
        let mut start = 0;
        for (i, raw) in text.split('\n').enumerate() {
            let raw = raw.strip_suffix('\r').unwrap_or(raw);
            if pending.is_empty() {
                start = i + 1;
            }
            if let Some(head) = raw.strip_suffix('\\') {
                pending.push_str(head);
                pending.push(' ');
                continue;
            }
            pending.push_str(raw);
            let line = std::mem::take(&mut pending);
            self.directive(
                &line,
                Origin {
                    path: path.to_path_buf(),
                    line: start,
                },
            );
        }
        if !pending.is_empty() {
            let line = std::mem::take(&mut pending);
            self.directive(
                &line,
                Origin {
                    path: path.to_path_buf(),
                    line: start,
                },
            );
        }
    }

    fn directive(&mut self, line: &str, at: Origin) {
        let t = line.trim_start();
        if t.is_empty() || t.starts_with('#') {
            return;
        }
        let mut words = t.split_whitespace();
        let (Some(cmd), Some(module)) = (words.next(), words.next()) else {
            return;
        };
        let module = modname(module);
        match cmd {
            "blacklist" => {
                self.blacklist.entry(module).or_insert(at);
            }
            "softdep" => {
                let mut pre = false;
                for w in words {
                    match w {
                        "pre:" => pre = true,
                        "post:" => pre = false,
                        m if pre => self
                            .softdep_pre
                            .entry(module.clone())
                            .or_default()
                            .push((modname(m), at.clone())),
                        _ => {}
                    }
                }
            }
            "install" => {
                let rest: Vec<&str> = words.collect();
                self.install.entry(module).or_insert((rest.join(" "), at));
            }
            "options" => {
                let rest: Vec<&str> = words.collect();
                self.options
                    .entry(module)
                    .or_default()
                    .push((rest.join(" "), at));
            }
            _ => {}
        }
    }

    /// Every `ids=` given to vfio-pci in `options` lines, with where.
    pub fn vfio_ids(&self) -> Vec<(String, Origin)> {
        let mut out = Vec::new();
        for (text, at) in self.options.get("vfio_pci").into_iter().flatten() {
            for w in split_quoted(text) {
                if let Some(v) = w.strip_prefix("ids=") {
                    out.push((v.to_string(), at.clone()));
                }
            }
        }
        out
    }

    /// Why `module` will not claim a device before vfio-pci, if it will not: a blacklist, an
    /// `install` that replaces loading, or a softdep that loads vfio-pci first.
    pub fn held_back(&self, module: &str, cmdline: Option<&Cmdline>) -> Option<String> {
        let m = modname(module);
        if let Some(at) = self.blacklist.get(&m) {
            return Some(format!("blacklist {m} ({at})"));
        }
        if let Some((cmd, at)) = self.install.get(&m) {
            let c = cmd.trim();
            if matches!(
                c,
                "/bin/false" | "/bin/true" | "/usr/bin/false" | "/usr/bin/true"
            ) {
                return Some(format!("install {m} {c} ({at})"));
            }
        }
        if let Some(pre) = self.softdep_pre.get(&m) {
            if let Some((_, at)) = pre.iter().find(|(p, _)| p == "vfio_pci") {
                return Some(format!("softdep {m} pre: vfio-pci ({at})"));
            }
        }
        if let Some(c) = cmdline {
            for key in ["modprobe.blacklist", "module_blacklist"] {
                for v in c.values(key).flatten() {
                    if v.split(',').any(|x| modname(x) == m) {
                        return Some(format!("{key}={v} on the kernel command line"));
                    }
                }
            }
        }
        None
    }
}

// ---------------------------------------------------------------------------------------------
// vfio-pci ids=
// ---------------------------------------------------------------------------------------------

/// `PCI_ANY_ID`.
pub const PCI_ANY_ID: u32 = 0xffff_ffff;

/// One entry of `vfio-pci ids=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VfioId {
    pub vendor: u32,
    pub device: u32,
    pub subvendor: u32,
    pub subdevice: u32,
    pub class: u32,
    pub class_mask: u32,
}

impl VfioId {
    /// `pci_match_one_device`.
    pub fn matches(&self, vendor: u16, device: u16, subv: u16, subd: u16, class: u32) -> bool {
        let m = |want: u32, have: u16| want == PCI_ANY_ID || want == u32::from(have);
        m(self.vendor, vendor)
            && m(self.device, device)
            && m(self.subvendor, subv)
            && m(self.subdevice, subd)
            && (self.class ^ class) & self.class_mask == 0
    }
}

/// `%x` as sscanf reads it: blanks, optional `0x`, then hex digits as far as they go.
/// Returns the value and the rest; `None` when no digit is there or the value overflows.
fn scan_hex(s: &str) -> Option<(u32, &str)> {
    let s = s.trim_start();
    let s = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .filter(|r| r.starts_with(|c: char| c.is_ascii_hexdigit()))
        .unwrap_or(s);
    let end = s.find(|c: char| !c.is_ascii_hexdigit()).unwrap_or(s.len());
    if end == 0 {
        return None;
    }
    let v = u32::from_str_radix(s.get(..end)?, 16).ok()?;
    Some((v, s.get(end..).unwrap_or("")))
}

/// Parse an `ids=` value as `vfio_pci_fill_ids` does. Returns the entries and the ones the
/// kernel would ignore ("invalid id string").
pub fn parse_vfio_ids(value: &str) -> (Vec<VfioId>, Vec<String>) {
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    for id in value.split(',') {
        if id.is_empty() {
            continue;
        }
        let mut f = [0u32, 0, PCI_ANY_ID, PCI_ANY_ID, 0, 0];
        let mut n = 0;
        let mut rest = id;
        while n < f.len() {
            let Some((v, r)) = scan_hex(rest) else { break };
            if let Some(slot) = f.get_mut(n) {
                *slot = v;
            }
            n += 1;
            match r.strip_prefix(':') {
                Some(r) => rest = r,
                None => break,
            }
        }
        if n < 2 {
            bad.push(id.to_string());
            continue;
        }
        let [vendor, device, subvendor, subdevice, class, class_mask] = f;
        ok.push(VfioId {
            vendor,
            device,
            subvendor,
            subdevice,
            class,
            class_mask,
        });
    }
    (ok, bad)
}

// ---------------------------------------------------------------------------------------------
// modules.alias
// ---------------------------------------------------------------------------------------------

/// One `alias pci:… MODULE` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModAlias {
    pub pattern: String,
    pub module: String,
}

/// The `pci:` aliases of a `modules.alias` file.
pub fn parse_modules_alias(text: &str) -> Vec<ModAlias> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            if w.next()? != "alias" {
                return None;
            }
            let pattern = w.next()?;
            let module = w.next()?;
            pattern.starts_with("pci:").then(|| ModAlias {
                pattern: pattern.to_string(),
                module: modname(module),
            })
        })
        .collect()
}

fn load_aliases(opts: &DoctorOptions, release: &str) -> Option<(PathBuf, Vec<ModAlias>)> {
    for base in ["/lib/modules", "/usr/lib/modules"] {
        let p = opts.under_root(base).join(release).join("modules.alias");
        if let Ok(t) = fs::read_to_string(&p) {
            return Some((p, parse_modules_alias(&t)));
        }
    }
    None
}

/// fnmatch(3) for the `*` and `?` that modalias patterns use (byte-wise; other bytes literal).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some(b'*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if c == b'?' || Some(&c) == t.get(ti) => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p.get(pi..).is_some_and(|r| r.iter().all(|&c| c == b'*'))
}

/// The device's modalias: the sysfs attribute, or built the way `modalias_show` prints it.
pub fn modalias(d: &Device) -> String {
    if let Ok(Some(m)) = read_attr(&d.dir.join("modalias")) {
        if !m.is_empty() {
            return m;
        }
    }
    format!(
        "pci:v{:08X}d{:08X}sv{:08X}sd{:08X}bc{:02X}sc{:02X}i{:02X}",
        d.vendor,
        d.device,
        d.subsystem_vendor.unwrap_or(0),
        d.subsystem_device.unwrap_or(0),
        (d.class >> 16) as u8,
        (d.class >> 8) as u8,
        d.class as u8
    )
}

// ---------------------------------------------------------------------------------------------
// Small parsers
// ---------------------------------------------------------------------------------------------

/// The bracketed level of `/sys/kernel/security/lockdown` (`none [integrity] confidentiality`).
pub fn parse_lockdown(text: &str) -> Option<&str> {
    let open = text.find('[')?;
    let rest = text.get(open + 1..)?;
    let close = rest.find(']')?;
    rest.get(..close).map(str::trim).filter(|s| !s.is_empty())
}

/// `CONFIG_NAME`'s value in a kernel `.config`: `Some("y")`, `Some("n")` for
/// `# CONFIG_NAME is not set`, `None` when absent.
pub fn kconfig_value(text: &str, name: &str) -> Option<String> {
    let unset = format!("# {name} is not set");
    let mut found = None;
    for l in text.lines() {
        let l = l.trim();
        if l == unset {
            found = Some("n".to_string());
        } else if let Some(v) = l.strip_prefix(name).and_then(|r| r.strip_prefix('=')) {
            found = Some(v.trim_matches('"').to_string());
        }
    }
    found
}

// ---------------------------------------------------------------------------------------------
// The checks
// ---------------------------------------------------------------------------------------------

/// One check: its name, what it looks at, and the function that runs it.
pub struct CheckDef {
    pub name: &'static str,
    pub about: &'static str,
    pub run: fn(&DoctorCtx) -> Vec<Check>,
}

/// Every check, in the order they print. Checks that do not apply (no `--vmid`, nothing to
/// look at) return nothing.
pub const CHECKS: &[CheckDef] = &[
    CheckDef {
        name: "iommu",
        about: "the IOMMU is on: <sysfs>/kernel/iommu_groups has groups",
        run: check_iommu,
    },
    CheckDef {
        name: "iommu-pt",
        about: "iommu=pt on the kernel command line (the seed's recipe)",
        run: check_iommu_pt,
    },
    CheckDef {
        name: "vfio-modules",
        about: "vfio, vfio_iommu_type1 and vfio_pci are loaded",
        run: check_vfio_modules,
    },
    CheckDef {
        name: "autoprobe",
        about: "bus/pci/drivers_autoprobe is on (an interrupted remove_rescan leaves it off)",
        run: check_autoprobe,
    },
    CheckDef {
        name: "vm-config",
        about: "--vmid: the VM config parses and passes devices through",
        run: check_vm_config,
    },
    CheckDef {
        name: "devices",
        about: "which functions are checked as passthrough devices",
        run: check_devices,
    },
    CheckDef {
        name: "hostpci-present",
        about: "--vmid: every hostpci function is on the bus",
        run: check_hostpci_present,
    },
    CheckDef {
        name: "vfio-bound",
        about: "each passthrough function is bound to vfio-pci now",
        run: check_vfio_bound,
    },
    CheckDef {
        name: "iommu-group",
        about: "each passthrough function's IOMMU group holds nothing the host uses",
        run: check_iommu_group,
    },
    CheckDef {
        name: "boot-claim",
        about: "at boot, vfio-pci (ids=) gets each function before amdgpu / snd_hda_intel (blacklist or softdep)",
        run: check_boot_claim,
    },
    CheckDef {
        name: "initramfs",
        about: "the initramfs is newer than the modprobe configuration",
        run: check_initramfs,
    },
    CheckDef {
        name: "host-functions",
        about: "--vmid: no hostpci entry takes a function the host needs (USB with the keyboard, whole slots)",
        run: check_host_functions,
    },
    CheckDef {
        name: "romfile",
        about: "--vmid: each romfile= is in /usr/share/kvm, valid, and for its device",
        run: check_romfile,
    },
    CheckDef {
        name: "hookscript",
        about: "--vmid: the VM's hookscript is set, exists, is executable and is this resetlab's shim",
        run: check_hookscript,
    },
    CheckDef {
        name: "hook-binary",
        about: "--vmid, resetlab's shim: the shim finds resetlab, in Proxmox's PATH (/sbin:/bin:/usr/sbin:/usr/bin)",
        run: check_hook_binary,
    },
    CheckDef {
        name: "hook-policy",
        about: "--vmid, resetlab's shim: /etc/resetlab/hook.toml parses (a missing file is the built-in defaults)",
        run: check_hook_policy,
    },
    CheckDef {
        name: "hook-chain",
        about: "--vmid, resetlab's shim: the record of the previous hookscript reads, and one run with --chain is there",
        run: check_hook_chain,
    },
    CheckDef {
        name: "vga",
        about: "--vmid: vga: none with x-vga=1 on the passed GPU",
        run: check_vga,
    },
    CheckDef {
        name: "lockdown",
        about: "kernel lockdown is off (it blocks config writes and BAR mmap)",
        run: check_lockdown,
    },
    CheckDef {
        name: "strict-devmem",
        about: "CONFIG_IO_STRICT_DEVMEM without iomem=relaxed (blocks BAR mmap of claimed regions)",
        run: check_strict_devmem,
    },
];

/// The human report: `STATUS  name  detail`, `  fix: …` under each warn or fail, a count.
pub fn render(checks: &[Check]) -> String {
    let width = checks
        .iter()
        .map(|c| c.label().chars().count())
        .max()
        .unwrap_or(0);
    let mut s = String::new();
    for c in checks {
        s.push_str(&format!(
            "{}  {:<width$}  {}\n",
            c.status.label(),
            c.label(),
            c.detail
        ));
        if let Some(fix) = &c.fix {
            s.push_str(&format!("  fix: {fix}\n"));
        }
    }
    let n = |st: Status| checks.iter().filter(|c| c.status == st).count();
    s.push_str(&format!(
        "{} pass, {} warn, {} fail\n",
        n(Status::Pass),
        n(Status::Warn),
        n(Status::Fail)
    ));
    s
}

/// Run every check.
pub fn run(ctx: &DoctorCtx) -> Vec<Check> {
    CHECKS.iter().flat_map(|c| (c.run)(ctx)).collect()
}

/// Load and run: the library entry point.
pub fn doctor(opts: DoctorOptions) -> Vec<Check> {
    run(&DoctorCtx::load(opts))
}

const GRUB_FIX: &str = "edit GRUB_CMDLINE_LINUX_DEFAULT in /etc/default/grub and run update-grub (systemd-boot: /etc/kernel/cmdline and proxmox-boot-tool refresh), then reboot";
const INITRAMFS: &str = "update-initramfs -u -k all";

fn check_iommu(ctx: &DoctorCtx) -> Vec<Check> {
    let dir = ctx.opts.sysfs.join("kernel/iommu_groups");
    let n = fs::read_dir(&dir).map(|rd| rd.flatten().count());
    let off_param = ctx.cmdline.as_ref().ok().and_then(|c| {
        ["amd_iommu", "iommu", "intel_iommu"]
            .iter()
            .find(|k| c.has(k, "off"))
            .map(|k| format!("{k}=off"))
    });
    let c = match n {
        Ok(n) if n > 0 => Check::pass("iommu", format!("{n} IOMMU groups in {}", dir.display())),
        _ => {
            let why = match &off_param {
                Some(p) => format!("; the kernel command line has {p}"),
                None => String::new(),
            };
            Check::fail(
                "iommu",
                format!("no IOMMU groups in {}: the IOMMU is off{why}", dir.display()),
                format!("enable the IOMMU (AMD-Vi / SVM) in the firmware setup; remove any iommu=off or amd_iommu=off: {GRUB_FIX}"),
            )
        }
    };
    vec![c]
}

fn check_autoprobe(ctx: &DoctorCtx) -> Vec<Check> {
    let attr = crate::reset::autoprobe::attr(&ctx.host);
    let pending = crate::reset::autoprobe::pending(&ctx.host);
    let fix = format!(
        "run any writing resetlab command (it puts it back), or: echo 1 > {}",
        attr.display()
    );
    let c = match (crate::pci::sysfs::read_attr(&attr), pending) {
        (Ok(Some(v)), Some(p)) if v == "0" => Check::fail(
            "autoprobe",
            format!("{} is 0: new devices on this host get no driver; {p}", attr.display()),
            fix,
        ),
        (Ok(Some(v)), None) if v == "0" => Check::warn(
            "autoprobe",
            format!(
                "{} is 0: new devices on this host get no driver (not set by resetlab: no pending record)",
                attr.display()
            ),
            fix,
        ),
        (Ok(Some(_)), Some(p)) => Check::warn(
            "autoprobe",
            format!("drivers_autoprobe is on, but a record is left: {p}"),
            "the next writing resetlab removes it",
        ),
        (Ok(Some(_)), None) => Check::pass("autoprobe", format!("{} is 1", attr.display())),
        (Ok(None), _) => Check::pass(
            "autoprobe",
            format!("no {} (nothing to check)", attr.display()),
        ),
        (Err(e), _) => Check::warn("autoprobe", e.one_line(), "check it by hand"),
    };
    vec![c]
}

fn check_iommu_pt(ctx: &DoctorCtx) -> Vec<Check> {
    let c = match &ctx.cmdline {
        Err(e) => Check::warn(
            "iommu-pt",
            format!("cannot read the kernel command line: {e}"),
            "run doctor where /proc is mounted (or pass --root)",
        ),
        Ok(c) if iommu_pt(c) => Check::pass("iommu-pt", "iommu=pt on the kernel command line"),
        Ok(c) => {
            let now = c
                .last("iommu")
                .map(|v| format!("iommu={v}"))
                .unwrap_or_else(|| "no iommu=".to_string());
            Check::warn(
                "iommu-pt",
                format!("{now} on the kernel command line; the recipe boots with iommu=pt (host devices skip DMA translation)"),
                format!("add iommu=pt: {GRUB_FIX}"),
            )
        }
    };
    vec![c]
}

/// Whether the kernel ends up in passthrough mode: arch/x86/kernel/pci-dma.c `iommu_setup` walks
/// each `iommu=` comma list in order; `pt` sets passthrough, `nopt` clears it.
fn iommu_pt(c: &Cmdline) -> bool {
    let mut pt = false;
    for opt in c.values("iommu").flatten().flat_map(|v| v.split(',')) {
        match opt {
            "pt" => pt = true,
            "nopt" => pt = false,
            _ => {}
        }
    }
    pt
}

/// `vfio_virqfd` is left out: it was merged into `vfio` in Linux 6.2 (the seed's list has it).
const VFIO_MODULES: &[&str] = &["vfio", "vfio_iommu_type1", "vfio_pci"];

fn check_vfio_modules(ctx: &DoctorCtx) -> Vec<Check> {
    let proc_modules = read_opt(&ctx.opts.under_root("/proc/modules"))
        .ok()
        .flatten()
        .unwrap_or_default();
    let listed: BTreeSet<String> = proc_modules
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(modname)
        .collect();
    let loaded = |m: &str| ctx.opts.sysfs.join("module").join(m).is_dir() || listed.contains(m);
    let missing: Vec<&str> = VFIO_MODULES
        .iter()
        .copied()
        .filter(|m| !loaded(m))
        .collect();
    let at_boot = modules_at_boot(&ctx.opts);
    let not_at_boot: Vec<&str> = VFIO_MODULES
        .iter()
        .copied()
        .filter(|m| !at_boot.contains(*m))
        .collect();
    let c = if missing.is_empty() {
        let boot = if not_at_boot.is_empty() {
            "; /etc/modules loads them at boot".to_string()
        } else {
            format!(
                "; not in /etc/modules or /etc/modules-load.d: {}",
                not_at_boot.join(", ")
            )
        };
        Check::pass(
            "vfio-modules",
            format!("{} loaded{boot}", VFIO_MODULES.join(", ")),
        )
    } else {
        Check::fail(
            "vfio-modules",
            format!("not loaded: {}", missing.join(", ")),
            format!(
                "add {} to /etc/modules (one a line), run {INITRAMFS}, reboot (or modprobe them now)",
                VFIO_MODULES.join(", ")
            ),
        )
    };
    vec![c]
}

/// Modules named in `/etc/modules` and `/etc/modules-load.d/*.conf` (systemd-modules-load).
fn modules_at_boot(opts: &DoctorOptions) -> BTreeSet<String> {
    let mut files = vec![opts.under_root("/etc/modules")];
    if let Ok(rd) = fs::read_dir(opts.under_root("/etc/modules-load.d")) {
        let mut v: Vec<PathBuf> = rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "conf"))
            .collect();
        v.sort();
        files.extend(v);
    }
    files
        .iter()
        .filter_map(|p| fs::read_to_string(p).ok())
        .flat_map(|t| {
            t.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';'))
                .filter_map(|l| l.split_whitespace().next().map(modname))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The cluster node whose `/etc/pve/nodes/<node>/qemu-server/` holds the VM's config.
fn elsewhere(ctx: &DoctorCtx, vmid: u32) -> Option<String> {
    let nodes = ctx.opts.pve_root().join("nodes");
    fs::read_dir(nodes)
        .ok()?
        .flatten()
        .find(|e| e.path().join(format!("qemu-server/{vmid}.conf")).is_file())
        .and_then(|e| e.file_name().into_string().ok())
}

fn check_vm_config(ctx: &DoctorCtx) -> Vec<Check> {
    let Some(vm) = &ctx.vm else {
        return Vec::new();
    };
    let vmid = ctx.opts.vmid.unwrap_or_default();
    let path = VmConfig::path_for(&ctx.opts.pve_root(), vmid);
    let c = match vm {
        // In a cluster `qemu-server/` is this node's directory; the VM may live on another.
        Err(_) if !path.exists() && elsewhere(ctx, vmid).is_some() => {
            let node = elsewhere(ctx, vmid).unwrap_or_default();
            Check::warn(
                "vm-config",
                format!("VM {vmid} is on node {node}, not this one: doctor checks the node it runs on"),
                format!("run resetlab doctor --vmid {vmid} on {node} (and on each node it can migrate to)"),
            )
        }
        Err(e) => Check::fail(
            "vm-config",
            format!("cannot read VM {vmid}: {e}"),
            format!("check the VM id and {} (qm config {vmid})", path.display()),
        ),
        Ok(v) if v.cfg.hostpci.is_empty() => Check::warn(
            "vm-config",
            format!("{}: no hostpci entries: nothing is passed through", path.display()),
            format!("add the iGPU and its audio: qm set {vmid} --hostpci0 0000:c5:00.0,pcie=1,x-vga=1,romfile=vbios_1002_1900.bin --hostpci1 0000:c5:00.1,pcie=1"),
        ),
        Ok(v) => {
            let entries: Vec<String> = v
                .cfg
                .hostpci
                .iter()
                .map(|h| format!("hostpci{}: {}", h.index, h.raw))
                .collect();
            Check::pass(
                "vm-config",
                format!("{}: {}", path.display(), entries.join("; ")),
            )
        }
    };
    vec![c]
}

fn check_devices(ctx: &DoctorCtx) -> Vec<Check> {
    if let Err(e) = &ctx.topo {
        return vec![Check::fail(
            "devices",
            format!("cannot read the PCI devices: {e}"),
            "point --sysfs at a sysfs tree (default /sys)",
        )];
    }
    if ctx.opts.vmid.is_some() {
        return Vec::new();
    }
    let c = if ctx.targets.is_empty() {
        Check::warn(
            "devices",
            "no function is bound to vfio-pci and no AMD GPU is present: nothing to check",
            "name the VM with --vmid N, or bind the passthrough functions to vfio-pci (see boot-claim)",
        )
    } else {
        let list: Vec<String> = ctx
            .targets
            .iter()
            .filter_map(|t| t.dev.as_ref())
            .map(|d| format!("{} [{}]", d.bdf.short(), ids(d)))
            .collect();
        Check::pass(
            "devices",
            format!(
                "checking {} (bound to vfio-pci, or AMD GPU/audio; --vmid N checks a VM's own)",
                list.join(", ")
            ),
        )
    };
    vec![c]
}

fn check_hostpci_present(ctx: &DoctorCtx) -> Vec<Check> {
    if ctx.vm_ok().is_none() {
        return Vec::new();
    }
    ctx.targets
        .iter()
        .map(|t| {
            let hp = t.hostpci.map(|i| format!("hostpci{i}")).unwrap_or_default();
            match &t.dev {
                Some(d) => Check::pass(
                    "hostpci-present",
                    format!("{hp}: {} {} present", d.bdf, d.name()),
                ),
                None => Check::fail(
                    "hostpci-present",
                    format!("{hp}: {} is not on the bus (removed, or a wrong address)", t.bdf),
                    format!("echo 1 > /sys/bus/pci/rescan to bring it back, or correct {hp} (lspci -nn lists the addresses)"),
                ),
            }
            .about(t.bdf.to_string())
        })
        .collect()
}

fn check_vfio_bound(ctx: &DoctorCtx) -> Vec<Check> {
    ctx.targets
        .iter()
        .filter_map(|t| Some((t, t.dev.as_ref()?)))
        .map(|(t, d)| {
            let need = host_need(ctx, d, t.from_slot);
            let c = match d.driver.as_deref() {
                _ if t.mdev => Check::pass(
                    "vfio-bound",
                    format!("mdev: the physical function stays with {}", d.driver.as_deref().unwrap_or("no driver")),
                ),
                drv if t.driver_keep => Check::pass(
                    "vfio-bound",
                    format!("driver=keep: Proxmox leaves it to {}", drv.unwrap_or("no driver")),
                ),
                Some(VFIO_PCI) => Check::pass("vfio-bound", "bound to vfio-pci"),
                Some(_) if need.is_some() => Check::fail(
                    "vfio-bound",
                    format!("the host needs it: {}", need.as_deref().unwrap_or_default()),
                    "take it out of the VM (see host-functions)",
                ),
                None => Check::warn(
                    "vfio-bound",
                    "bound to no driver; Proxmox binds vfio-pci at VM start",
                    format!("bind it at boot: add {} to options vfio-pci ids= (see boot-claim)", ids(d)),
                ),
                Some(other) => Check::fail(
                    "vfio-bound",
                    format!("bound to {other}: the host is using it; Proxmox would unbind it at VM start"),
                    format!("let vfio-pci claim {} at boot (see boot-claim: options vfio-pci ids= and blacklist/softdep {other}), {INITRAMFS}, reboot", ids(d)),
                ),
            };
            c.about(d.bdf.to_string())
        })
        .collect()
}

/// Functions of IOMMU group `g` (names of `<sysfs>/kernel/iommu_groups/<g>/devices`).
fn group_members(ctx: &DoctorCtx, g: u32) -> Vec<Bdf> {
    let dir = ctx
        .opts
        .sysfs
        .join("kernel/iommu_groups")
        .join(g.to_string())
        .join("devices");
    let mut v: Vec<Bdf> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
        .collect();
    v.sort();
    v
}

fn check_iommu_group(ctx: &DoctorCtx) -> Vec<Check> {
    let set = ctx.target_set();
    ctx.targets
        .iter()
        .filter(|t| !t.mdev)
        .filter_map(|t| t.dev.as_ref())
        .map(|d| {
            let Some(g) = d.iommu_group else {
                return Check::fail(
                    "iommu-group",
                    "in no IOMMU group: VFIO cannot pass it through",
                    "turn the IOMMU on (see the iommu check)",
                )
                .about(d.bdf.to_string());
            };
            let others: Vec<Bdf> = group_members(ctx, g)
                .into_iter()
                .filter(|b| *b != d.bdf && !set.contains(b))
                .collect();
            let mut blocking = Vec::new();
            let mut along = Vec::new();
            for o in &others {
                let od = ctx.device(o);
                let drv = od.as_ref().and_then(|x| x.driver.clone());
                let bridge = od.as_ref().is_some_and(|x| x.class16() == CLASS_BRIDGE_PCI);
                match drv.as_deref() {
                    Some("pcieport") if bridge => {}
                    None if bridge => {}
                    None | Some("vfio-pci") | Some("pci-stub") => along.push(format!(
                        "{} ({})",
                        o.short(),
                        drv.as_deref().unwrap_or("no driver")
                    )),
                    Some(x) if DMA_SAFE_DRIVERS.contains(&x) => {}
                    Some(x) => blocking.push(format!("{} ({x})", o.short())),
                }
            }
            let c = if !blocking.is_empty() {
                Check::fail(
                    "iommu-group",
                    format!("group {g} also holds {} bound to host drivers: VFIO cannot own the group (\"group {g} is not viable\")", blocking.join(", ")),
                    "pass those functions to the same VM too, or bind them to vfio-pci; otherwise the device needs a slot with its own group",
                )
            } else if !along.is_empty() {
                Check::warn(
                    "iommu-group",
                    format!("group {g} also holds {}: they go to the VM's VFIO container with it and no one else can use them", along.join(", ")),
                    "pass them to the same VM (hostpciN), or accept that the host cannot use them while the VM runs",
                )
            } else {
                Check::pass("iommu-group", format!("alone in IOMMU group {g}"))
            };
            c.about(d.bdf.to_string())
        })
        .collect()
}

/// Fallback when `modules.alias` is missing: the drivers the recipe blacklists for these devices.
fn fallback_competitors(d: &Device) -> Vec<String> {
    if d.vendor == PCI_VENDOR_ID_ATI && base_class(d) == BASE_CLASS_DISPLAY {
        vec!["amdgpu".into()]
    } else if d.class16() == CLASS_HD_AUDIO {
        vec!["snd_hda_intel".into()]
    } else {
        Vec::new()
    }
}

/// Modules whose aliases match the device, except the passthrough stubs.
fn competitors(ctx: &DoctorCtx, d: &Device) -> (Vec<String>, String) {
    match &ctx.aliases {
        Some((path, aliases)) => {
            let ma = modalias(d);
            let mut v: Vec<String> = aliases
                .iter()
                .filter(|a| !matches!(a.module.as_str(), "vfio_pci" | "pci_stub"))
                .filter(|a| glob_match(&a.pattern, &ma))
                .map(|a| a.module.clone())
                .collect();
            v.sort();
            v.dedup();
            (v, format!("modules.alias ({})", path.display()))
        }
        None => (
            fallback_competitors(d),
            "no modules.alias for this kernel: checked amdgpu / snd_hda_intel only".into(),
        ),
    }
}

fn check_boot_claim(ctx: &DoctorCtx) -> Vec<Check> {
    let cmdline = ctx.cmdline.as_ref().ok();
    let mut sources: Vec<(String, String)> = ctx
        .modprobe
        .vfio_ids()
        .into_iter()
        .map(|(v, at)| (v, at.to_string()))
        .collect();
    if let Some(c) = cmdline {
        for v in c.values("vfio_pci.ids").flatten() {
            sources.push((v.to_string(), "kernel command line".into()));
        }
    }
    let mut all_ids = Vec::new();
    let mut invalid = Vec::new();
    for (v, at) in &sources {
        let (ok, bad) = parse_vfio_ids(v);
        all_ids.extend(ok.into_iter().map(|i| (i, at.clone())));
        invalid.extend(bad.into_iter().map(|b| format!("'{b}' ({at})")));
    }
    // The one ids= line that would cover every checked function.
    // Functions the host needs are never proposed for vfio-pci (host-functions reports them).
    let passable: Vec<(&Target, &Device)> = ctx
        .targets
        .iter()
        .filter(|t| !t.driver_keep && !t.mdev)
        .filter_map(|t| Some((t, t.dev.as_ref()?)))
        .filter(|(t, d)| host_need(ctx, d, t.from_slot).is_none())
        .collect();
    let mut want: Vec<String> = Vec::new();
    for (_, d) in &passable {
        let i = ids(d);
        if !want.contains(&i) {
            want.push(i);
        }
    }
    let ids_line = format!("options vfio-pci ids={}", want.join(","));
    let mut out = Vec::new();
    for (_, d) in passable {
        let covered = all_ids.iter().find(|(i, _)| {
            i.matches(
                d.vendor,
                d.device,
                d.subsystem_vendor.unwrap_or(0),
                d.subsystem_device.unwrap_or(0),
                d.class,
            )
        });
        let (comp, whence) = competitors(ctx, d);
        let mut held = Vec::new();
        let mut free = Vec::new();
        for m in &comp {
            match ctx.modprobe.held_back(m, cmdline) {
                Some(why) => held.push(why),
                None => free.push(m.clone()),
            }
        }
        let mut detail = match covered {
            Some((_, at)) => format!("vfio-pci ids= covers {} ({at})", ids(d)),
            None => format!("no vfio-pci ids= covers {}", ids(d)),
        };
        if comp.is_empty() {
            detail.push_str(&format!("; no host module matches it ({whence})"));
        }
        if !held.is_empty() {
            detail.push_str(&format!("; held back: {}", held.join(", ")));
        }
        if !free.is_empty() {
            detail.push_str(&format!("; nothing holds back {}", free.join(", ")));
        }
        if !invalid.is_empty() {
            detail.push_str(&format!("; the kernel ignores ids {}", invalid.join(", ")));
        }
        let holds = free
            .iter()
            .map(|m| format!("softdep {m} pre: vfio-pci (or blacklist {m})"))
            .collect::<Vec<_>>()
            .join(", ");
        let c = match (covered.is_some(), free.is_empty()) {
            (true, true) => Check::pass("boot-claim", detail),
            (false, true) => Check::warn(
                "boot-claim",
                format!("{detail}: it stays unbound until Proxmox binds vfio-pci at VM start"),
                format!("add '{ids_line}' to /etc/modprobe.d/passthrough.conf, {INITRAMFS}, reboot"),
            ),
            (true, false) => Check::warn(
                "boot-claim",
                format!("{detail}: whichever of vfio-pci and {} loads first gets it", free.join(", ")),
                format!("add '{holds}' to /etc/modprobe.d/passthrough.conf, {INITRAMFS}, reboot"),
            ),
            (false, false) => Check::fail(
                "boot-claim",
                format!("{detail}: {} takes it at boot", free.join(", ")),
                format!("add '{ids_line}' and '{holds}' to /etc/modprobe.d/passthrough.conf, {INITRAMFS}, reboot"),
            ),
        };
        out.push(c.about(d.bdf.to_string()));
    }
    out
}

fn mtime(p: &Path) -> Option<std::time::SystemTime> {
    fs::metadata(p).ok()?.modified().ok()
}

fn check_initramfs(ctx: &DoctorCtx) -> Vec<Check> {
    let Some(rel) = &ctx.release else {
        return Vec::new();
    };
    let initrd = ctx
        .opts
        .under_root("/boot")
        .join(format!("initrd.img-{rel}"));
    let Some(built) = mtime(&initrd) else {
        return Vec::new();
    };
    let mut inputs: Vec<PathBuf> = ctx.modprobe.files.clone();
    inputs.push(ctx.opts.under_root("/etc/modules"));
    let newer: Vec<String> = inputs
        .iter()
        .filter(|p| mtime(p).is_some_and(|m| m > built))
        .map(|p| p.display().to_string())
        .collect();
    let c = if newer.is_empty() {
        Check::pass(
            "initramfs",
            format!(
                "{} is newer than the modprobe configuration",
                initrd.display()
            ),
        )
    } else {
        Check::warn(
            "initramfs",
            format!(
                "{} is older than {}: the early boot does not see those changes",
                initrd.display(),
                newer.join(", ")
            ),
            format!("run {INITRAMFS}"),
        )
    };
    vec![c]
}

/// `input*` devices below the function (the host's keyboard on a USB controller).
fn input_devices(ctx: &DoctorCtx, d: &Device) -> Vec<String> {
    let dir = ctx.opts.sysfs.join("class/input");
    let mut v: Vec<String> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("input"))
        .filter_map(|e| {
            let real = fs::canonicalize(e.path()).ok()?;
            real.starts_with(&d.real_dir).then(|| {
                let n = e.file_name().to_string_lossy().into_owned();
                match read_attr(&real.join("name")).ok().flatten() {
                    Some(name) => format!("{n} '{name}'"),
                    None => n,
                }
            })
        })
        .collect();
    v.sort();
    v
}

/// Why the host needs this function, if it does: input devices below it (the keyboard), a USB
/// controller bound to a host driver, or — swept in by a whole-slot entry — any host driver.
fn host_need(ctx: &DoctorCtx, d: &Device, from_slot: bool) -> Option<String> {
    let drv = d.driver.as_deref().unwrap_or("");
    let inputs = input_devices(ctx, d);
    let host_drv = !drv.is_empty() && !DMA_SAFE_DRIVERS.contains(&drv);
    let usb = d.class16() == CLASS_SERIAL_USB || USB_HOST_DRIVERS.contains(&drv);
    if !inputs.is_empty() {
        let drv = if drv.is_empty() { "no driver" } else { drv };
        Some(format!("{drv}, carries host input {}", inputs.join(", ")))
    } else if usb && host_drv {
        Some(format!("a USB controller the host uses, {drv}"))
    } else if from_slot && host_drv {
        Some(format!("bound to {drv} on the host"))
    } else {
        None
    }
}

fn check_host_functions(ctx: &DoctorCtx) -> Vec<Check> {
    let Some(vm) = ctx.vm_ok() else {
        return Vec::new();
    };
    let vmid = ctx.opts.vmid.unwrap_or_default();
    let mut out = Vec::new();
    for hp in &vm.cfg.hostpci {
        let mut problems = Vec::new();
        let mut keep = Vec::new();
        let mut slot = None;
        for t in hp.targets() {
            if let PciTarget::Slot(s) = t {
                slot = Some(s);
            }
            for f in t.resolve(&vm.present) {
                let Some(d) = ctx.device(&f) else {
                    continue;
                };
                match host_need(ctx, &d, matches!(t, PciTarget::Slot(_))) {
                    Some(why) => problems.push(format!("{} ({why})", d.bdf.short())),
                    None => keep.push(d.bdf.to_string()),
                }
            }
        }
        let name = format!("hostpci{}", hp.index);
        let c = if problems.is_empty() {
            Check::pass(
                "host-functions",
                format!(
                    "{name}: {}",
                    if keep.is_empty() {
                        "nothing present".into()
                    } else {
                        keep.join(", ")
                    }
                ),
            )
        } else {
            let detail = match slot {
                Some(s) => format!(
                    "{name}: the whole slot {s} sweeps in {}",
                    problems.join("; ")
                ),
                None => format!("{name} takes {}", problems.join("; ")),
            };
            let fix = if slot.is_some() && !keep.is_empty() {
                // The entry's options (x-vga, romfile, …) belong on its first function.
                let opts: String = hp
                    .options
                    .iter()
                    .map(|(k, v)| format!(",{k}={v}"))
                    .collect();
                let lines: Vec<String> = keep
                    .iter()
                    .enumerate()
                    .map(|(i, b)| {
                        let o = if i == 0 { opts.as_str() } else { "" };
                        format!("--hostpci{} {b}{o}", usize::from(hp.index) + i)
                    })
                    .collect();
                format!("name the functions one by one (qm set {vmid} {}; renumber as needed) and keep the USB controllers on the host; pass the keyboard itself as usbN: host=VENDOR:PRODUCT", lines.join(" "))
            } else {
                format!("remove those functions from {name} (qm set {vmid} --{name} …); pass a USB keyboard as usbN: host=VENDOR:PRODUCT, as the seed does (usb0: host=062a:4101)")
            };
            Check::fail("host-functions", detail, fix)
        };
        out.push(c.about(name));
    }
    out
}

/// The ROM's ids and those of the device it sits on.
fn rom_ids(info: &vbios::RomInfo) -> Vec<(u16, u16)> {
    let mut v = Vec::new();
    for img in &info.images {
        v.push((img.vendor_id, img.device_id));
        for d in &img.device_list {
            v.push((img.vendor_id, *d));
        }
    }
    v.dedup();
    v
}

fn parse_id_opt(v: Option<&str>) -> Option<u16> {
    u16::from_str_radix(v?.strip_prefix("0x")?, 16).ok()
}

fn check_romfile(ctx: &DoctorCtx) -> Vec<Check> {
    let Some(vm) = ctx.vm_ok() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for hp in &vm.cfg.hostpci {
        let Some(rom) = hp.romfile() else { continue };
        let name = format!("hostpci{}", hp.index);
        // qemu-server joins it as a string: "/usr/share/kvm/$romfile".
        let path = ctx.opts.under_root(format!("/usr/share/kvm/{rom}"));
        let shown = format!("/usr/share/kvm/{rom}");
        let first = hp
            .targets()
            .first()
            .and_then(|t| t.resolve(&vm.present).first().copied());
        let dev = first.and_then(|b| ctx.device(&b));
        let c = match fs::read(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Check::fail(
                "romfile",
                format!("{name}: romfile={rom}: {shown} does not exist{}", if rom.starts_with('/') { " (qemu-server puts /usr/share/kvm/ before the name, even an absolute one)" } else { "" }),
                format!("put the ROM there: resetlab vbios dump --out /usr/share/kvm (writes vbios_1002_1900.bin), or fix romfile= in {name}"),
            ),
            Err(e) => Check::fail(
                "romfile",
                format!("{name}: cannot read {}: {e}", path.display()),
                "make the file readable by root",
            ),
            Ok(bytes) => rom_verdict(ctx, hp, &name, rom, &bytes, dev.as_ref()),
        };
        out.push(c.about(name));
    }
    out
}

fn rom_verdict(
    ctx: &DoctorCtx,
    hp: &pve::HostPci,
    name: &str,
    rom: &str,
    bytes: &[u8],
    dev: Option<&Device>,
) -> Check {
    let info = match vbios::check_rom(bytes) {
        Ok(i) => i,
        Err(e) => {
            return Check::fail(
                "romfile",
                format!("{name}: {rom} is not a valid option ROM: {}", e.one_line()),
                "dump it again (resetlab vbios dump --out /usr/share/kvm) and check it with resetlab vbios check FILE",
            )
        }
    };
    let kinds: Vec<&str> = info.images.iter().map(|i| i.code_type_name).collect();
    let has_efi = info.images.iter().any(|i| i.code_type == 3);
    let rids = rom_ids(&info);
    let rid_text: Vec<String> = rids
        .iter()
        .map(|(v, d)| format!("{v:04x}:{d:04x}"))
        .collect();
    let summary = format!(
        "{name}: {rom}: {} bytes, {} image(s) ({}) for {}",
        info.size,
        info.images.len(),
        kinds.join(", "),
        rid_text.join(", ")
    );
    let Some(d) = dev else {
        return Check::warn(
            "romfile",
            format!("{summary}; its device is not on the bus, ids not compared"),
            "bring the device back (see hostpci-present)",
        );
    };
    // What the guest sees: the ids, or qemu-server's x-pci-vendor-id / x-pci-device-id.
    let want = (
        parse_id_opt(hp.option("vendor-id")).unwrap_or(d.vendor),
        parse_id_opt(hp.option("device-id")).unwrap_or(d.device),
    );
    if rids.contains(&want) {
        return Check::pass("romfile", format!("{summary}, matching {}", d.bdf.short()));
    }
    // A GOP driver carried on a sibling's ROM BAR (the seed's AMDGopDriver on c5:00.1): OVMF
    // runs the EFI image, which then drives the GPU it is for.
    let sibling = ctx.targets.iter().filter_map(|t| t.dev.as_ref()).find(|o| {
        o.bdf != d.bdf
            && rids.contains(&(o.vendor, o.device))
            && base_class(o) == BASE_CLASS_DISPLAY
    });
    match sibling {
        Some(o) if has_efi => Check::pass(
            "romfile",
            format!("{summary}, on {} ({:04x}:{:04x}): an EFI driver for the VM's GPU {} carried on another function, as the seed does", d.bdf.short(), want.0, want.1, o.bdf.short()),
        ),
        _ if has_efi && info.images.iter().all(|i| i.code_type == 3) => Check::warn(
            "romfile",
            format!("{summary}, but {} is {:04x}:{:04x}: an EFI-only ROM for another device; its driver will not bind this one", d.bdf.short(), want.0, want.1),
            format!("use the ROM for {:04x}:{:04x}, or put this one on the hostpci entry of the device it is for", want.0, want.1),
        ),
        _ => Check::fail(
            "romfile",
            format!("{summary}, but {} is {:04x}:{:04x}: the wrong VBIOS for this device", d.bdf.short(), want.0, want.1),
            format!("dump this machine's VBIOS (resetlab vbios dump --out /usr/share/kvm writes vbios_{:04x}_{:04x}.bin) and set romfile= to it", want.0, want.1),
        ),
    }
}

/// A hookscript's file: as the host names it, and under `root`; or why it does not resolve.
type HookscriptFile = Result<(PathBuf, PathBuf), String>;

/// The VM's hookscript and the file behind it (`None` without `--vmid` or a hookscript).
fn hookscript_target(ctx: &DoctorCtx) -> Option<(String, HookscriptFile)> {
    let vm = ctx.vm_ok()?;
    let volid = vm.cfg.hookscript.clone()?;
    let path = StorageConfig::load(&ctx.opts.pve_root())
        .and_then(|s| s.snippet_path(&volid))
        .map(|abs| {
            let p = ctx.opts.under_root(&abs);
            (abs, p)
        })
        .map_err(|e| e.one_line());
    Some((volid, path))
}

/// What the VM's hookscript is, when its file reads.
fn hookscript_kind(ctx: &DoctorCtx) -> Option<ShimKind> {
    let (_, path) = hookscript_target(ctx)?;
    let text = fs::read_to_string(path.ok()?.1).ok()?;
    Some(shim_kind(&text))
}

fn resetlab_shim(ctx: &DoctorCtx) -> bool {
    matches!(
        hookscript_kind(ctx),
        Some(ShimKind::Current | ShimKind::Older | ShimKind::Modified)
    )
}

fn check_hookscript(ctx: &DoctorCtx) -> Vec<Check> {
    let Some(vm) = ctx.vm_ok() else {
        return Vec::new();
    };
    let vmid = vm.cfg.vmid;
    let set_fix = format!("resetlab hook install {vmid} (docs/install.md)");
    let c = match hookscript_target(ctx) {
        None => Check::warn(
            "hookscript",
            "no hookscript: nothing resets the iGPU between VM runs (the AMD reset bug)",
            set_fix,
        ),
        Some((volid, Err(e))) => Check::fail(
            "hookscript",
            format!("hookscript: {volid}: {e}"),
            set_fix,
        ),
        Some((volid, Ok((abs, path)))) => match hookscript_file(&volid, &abs, &path) {
            Some(bad) => bad,
            None => match hookscript_kind(ctx) {
                Some(ShimKind::Current) => Check::pass(
                    "hookscript",
                    format!("{volid} → {}: this resetlab's shim, executable", abs.display()),
                ),
                Some(ShimKind::Older) => Check::warn(
                    "hookscript",
                    format!("{volid} → {}: an older resetlab's shim", abs.display()),
                    format!("update it: resetlab hook install {vmid}"),
                ),
                Some(ShimKind::Modified) => Check::warn(
                    "hookscript",
                    format!("{volid} → {}: resetlab's shim, edited by hand", abs.display()),
                    format!("compare it with /usr/share/resetlab/pve-hookscript.sh; resetlab hook install {vmid} --force puts the shipped one back"),
                ),
                Some(ShimKind::Foreign) | None => Check::warn(
                    "hookscript",
                    format!("{volid} → {} is not resetlab's hookscript: resetlab does not run for VM {vmid}", abs.display()),
                    format!("resetlab hook install {vmid} (keeps {volid} for resetlab hook uninstall {vmid}; --chain also runs it after resetlab's phase)"),
                ),
            },
        },
    };
    vec![c]
}

/// A problem with the hookscript file itself, or `None` when it is an executable file.
fn hookscript_file(volid: &str, abs: &Path, path: &Path) -> Option<Check> {
    use std::os::unix::fs::PermissionsExt;
    match fs::metadata(path) {
        Err(_) => Some(Check::fail(
            "hookscript",
            format!("hookscript {volid}: {} does not exist (qm start fails: \"script '{volid}' does not exist\")", abs.display()),
            format!("put the script at {} and chmod +x it", abs.display()),
        )),
        Ok(m) if !m.is_file() => Some(Check::fail(
            "hookscript",
            format!("hookscript {volid}: {} is not a file", abs.display()),
            format!("put the script at {}", abs.display()),
        )),
        Ok(m) if m.permissions().mode() & 0o111 == 0 => Some(Check::fail(
            "hookscript",
            format!("hookscript {volid}: {} is not executable (qm start fails: \"script '{volid}' is not executable\")", abs.display()),
            format!("chmod +x {}", abs.display()),
        )),
        Ok(_) => None,
    }
}

/// Where the shim looks for resetlab, in its order (tools/pve-hookscript.sh), and whether the
/// directory is in the PATH Proxmox gives hookscripts (pve-guest-common `exec_hookscript`).
const SHIM_CANDIDATES: &[(&str, bool)] = &[
    ("/usr/sbin/resetlab", true),
    ("/usr/local/sbin/resetlab", false),
    ("/usr/local/bin/resetlab", false),
];

fn check_hook_binary(ctx: &DoctorCtx) -> Vec<Check> {
    use std::os::unix::fs::PermissionsExt;
    if !resetlab_shim(ctx) {
        return Vec::new();
    }
    let found = SHIM_CANDIDATES.iter().find(|(p, _)| {
        fs::metadata(ctx.opts.under_root(p))
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    });
    let c = match found {
        Some((p, true)) => Check::pass("hook-binary", format!("the shim runs {p} (on this node)")),
        Some((p, false)) => Check::warn(
            "hook-binary",
            format!("the shim runs {p}, a copy outside Proxmox's PATH (/sbin:/bin:/usr/sbin:/usr/bin) that no package upgrades"),
            "install the resetlab package (docs/install.md) and remove the copy",
        ),
        None => Check::fail(
            "hook-binary",
            format!(
                "resetlab not found at {} on this node: pre-start fails (\"resetlab not found …; install it or remove the hookscript\")",
                SHIM_CANDIDATES.iter().map(|(p, _)| *p).collect::<Vec<_>>().join(", ")
            ),
            "install the resetlab package on this node: dpkg -i resetlab_<version>_amd64.deb (docs/install.md)",
        ),
    };
    vec![c]
}

fn check_hook_policy(ctx: &DoctorCtx) -> Vec<Check> {
    if !resetlab_shim(ctx) {
        return Vec::new();
    }
    let abs = crate::hook::policy::DEFAULT_POLICY_PATH;
    let path = ctx.opts.under_root(abs);
    let c = match fs::read_to_string(&path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            Check::pass("hook-policy", format!("no {abs}: the built-in defaults"))
        }
        Err(e) => Check::fail(
            "hook-policy",
            format!("cannot read {abs}: {e}"),
            format!("chmod 0644 {abs}"),
        ),
        Ok(text) => match crate::hook::policy::Policy::parse(&text, Path::new(abs)) {
            Ok(_) => Check::pass("hook-policy", format!("{abs} parses")),
            Err(e) => Check::fail(
                "hook-policy",
                e.one_line(),
                format!("fix {abs} (docs/proxmox.md lists every key); until then the hook only brings missing functions back"),
            ),
        },
    };
    vec![c]
}

fn check_hook_chain(ctx: &DoctorCtx) -> Vec<Check> {
    use std::os::unix::fs::PermissionsExt;
    let Some(vm) = ctx.vm_ok() else {
        return Vec::new();
    };
    if !resetlab_shim(ctx) {
        return Vec::new();
    }
    let vmid = vm.cfg.vmid;
    let etc = ctx.opts.under_root(crate::hook::chain::DEFAULT_ETC_DIR);
    let shown = HookRecord::path_for(Path::new(crate::hook::chain::DEFAULT_ETC_DIR), vmid);
    let c = match HookRecord::load(&etc, vmid) {
        Err(e) => Check::fail(
            "hook-chain",
            e.one_line(),
            format!("rm {} and run resetlab hook install {vmid} again", shown.display()),
        ),
        Ok(None) => return Vec::new(),
        Ok(Some(r)) => match (&r.previous, r.chain) {
            (Some(prev), true) => {
                let file = StorageConfig::load(&ctx.opts.pve_root())
                    .and_then(|s| s.snippet_path(prev));
                match file {
                    Err(e) => Check::fail(
                        "hook-chain",
                        format!("chained hookscript {prev}: {}", e.one_line()),
                        format!("resetlab hook install {vmid} --no-chain, or fix storage.cfg"),
                    ),
                    Ok(abs) => match fs::metadata(ctx.opts.under_root(&abs)) {
                        Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Check::pass(
                            "hook-chain",
                            format!("after resetlab's phase the shim runs {prev} ({}), bound {} s", abs.display(), r.chain_timeout_s),
                        ),
                        _ => Check::fail(
                            "hook-chain",
                            format!("chained hookscript {prev}: {} is missing or not executable on this node (pre-start fails)", abs.display()),
                            format!("put it back (chmod +x), or resetlab hook install {vmid} --no-chain"),
                        ),
                    },
                }
            }
            (Some(prev), false) => Check::pass(
                "hook-chain",
                format!("{prev} recorded (not run; resetlab hook uninstall {vmid} gives it back)"),
            ),
            (None, _) => Check::pass(
                "hook-chain",
                format!("no previous hookscript recorded (resetlab hook uninstall {vmid} removes the hookscript)"),
            ),
        },
    };
    vec![c]
}

fn check_vga(ctx: &DoctorCtx) -> Vec<Check> {
    let Some(vm) = ctx.vm_ok() else {
        return Vec::new();
    };
    let vmid = vm.cfg.vmid;
    let vga_type = vm
        .cfg
        .vga
        .as_deref()
        .and_then(|v| v.split(',').next())
        .map(|t| t.trim().trim_start_matches("type=").to_string());
    let vga_none = vga_type.as_deref() == Some("none");
    let vga_text = vga_type
        .clone()
        .unwrap_or_else(|| "unset (default std)".into());
    // Each entry's first function: the one x-vga and romfile apply to.
    let first = |hp: &pve::HostPci| {
        hp.targets()
            .first()
            .and_then(|t| t.resolve(&vm.present).first().copied())
            .and_then(|b| ctx.device(&b))
    };
    let gpus: Vec<(u8, Device)> = vm
        .cfg
        .hostpci
        .iter()
        .filter_map(|hp| Some((hp.index, first(hp)?)))
        .filter(|(_, d)| base_class(d) == BASE_CLASS_DISPLAY)
        .collect();
    let xvga: Vec<&pve::HostPci> = vm.cfg.hostpci.iter().filter(|h| h.x_vga()).collect();
    let c = if let Some(hp) = xvga
        .iter()
        .find(|h| first(h).is_some_and(|d| base_class(&d) != BASE_CLASS_DISPLAY))
    {
        Check::warn(
            "vga",
            format!(
                "x-vga=1 on hostpci{}, which is not a display device",
                hp.index
            ),
            format!(
                "move x-vga=1 to the GPU's hostpci entry (qm set {vmid} --hostpci{} …)",
                hp.index
            ),
        )
    } else if let Some((i, d)) = gpus.first().filter(|_| xvga.is_empty()) {
        Check::warn(
            "vga",
            format!("the GPU {} (hostpci{i}) has no x-vga=1; vga: {vga_text}: it is not the guest's primary display", d.bdf.short()),
            format!("add x-vga=1 to hostpci{i} and set vga: none (qm set {vmid} --vga none)"),
        )
    } else if gpus.is_empty() {
        Check::pass("vga", format!("no GPU passed through; vga: {vga_text}"))
    } else if xvga.len() > 1 {
        Check::warn(
            "vga",
            format!(
                "x-vga=1 on {} entries; a VM has one primary display",
                xvga.len()
            ),
            "keep x-vga=1 on the primary GPU only",
        )
    } else {
        // Exactly one x-vga entry, on the GPU.
        let i = xvga.first().map(|h| h.index).unwrap_or_default();
        if vga_none {
            Check::pass(
                "vga",
                format!("x-vga=1 on hostpci{i} (the GPU) with vga: none"),
            )
        } else {
            Check::warn(
                "vga",
                format!("x-vga=1 on hostpci{i} but vga: {vga_text}: the guest also gets an emulated display"),
                format!("qm set {vmid} --vga none"),
            )
        }
    };
    vec![c]
}

fn check_lockdown(ctx: &DoctorCtx) -> Vec<Check> {
    let p = ctx.opts.sysfs.join("kernel/security/lockdown");
    let c = match read_opt(&p) {
        Ok(None) => Check::pass("lockdown", format!("no {}: the kernel has no lockdown", p.display())),
        Err(e) => Check::warn("lockdown", e, "run doctor as root"),
        Ok(Some(t)) => match parse_lockdown(&t) {
            Some("none") => Check::pass("lockdown", "lockdown [none]"),
            Some(level) => Check::fail(
                "lockdown",
                format!("kernel lockdown is [{level}]: writes to sysfs config and mmap of resourceN fail with EPERM, so resetlab cannot reset the iGPU itself (SMU mode-2 needs BAR 5)"),
                "disable Secure Boot in the firmware setup (Debian and Proxmox kernels lock down under Secure Boot; lockdown= on the command line can only raise the level)",
            ),
            None => Check::warn(
                "lockdown",
                format!("cannot read the level from {}: '{}'", p.display(), t.trim()),
                "check cat /sys/kernel/security/lockdown",
            ),
        },
    };
    vec![c]
}

fn check_strict_devmem(ctx: &DoctorCtx) -> Vec<Check> {
    let relaxed = ctx
        .cmdline
        .as_ref()
        .ok()
        .and_then(|c| c.last("iomem"))
        .is_some_and(|v| v.contains("relaxed") && !v.contains("strict"));
    let Some(rel) = &ctx.release else {
        return vec![Check::warn(
            "strict-devmem",
            "cannot read the kernel release (/proc/sys/kernel/osrelease)",
            "run doctor where /proc is mounted (or pass --root)",
        )];
    };
    let cfg_path = ctx.opts.under_root("/boot").join(format!("config-{rel}"));
    let c = match read_opt(&cfg_path) {
        Ok(Some(t)) => {
            let io = kconfig_value(&t, "CONFIG_IO_STRICT_DEVMEM");
            let strict = kconfig_value(&t, "CONFIG_STRICT_DEVMEM");
            match (io.as_deref(), strict.as_deref()) {
                (Some("y"), Some("y")) if relaxed => Check::pass(
                    "strict-devmem",
                    format!("CONFIG_IO_STRICT_DEVMEM=y ({rel}), lifted by iomem=relaxed"),
                ),
                (Some("y"), Some("y")) => Check::warn(
                    "strict-devmem",
                    format!("CONFIG_IO_STRICT_DEVMEM=y ({rel}) and no iomem=relaxed: mmap of a BAR a driver has claimed fails with EINVAL (vfio-pci claims it once QEMU opens the device)"),
                    format!("add iomem=relaxed: {GRUB_FIX}"),
                ),
                _ => Check::pass(
                    "strict-devmem",
                    format!("CONFIG_IO_STRICT_DEVMEM is not set in {}", cfg_path.display()),
                ),
            }
        }
        Ok(None) if relaxed => Check::pass(
            "strict-devmem",
            format!("no {}; iomem=relaxed is set anyway", cfg_path.display()),
        ),
        Ok(None) => Check::warn(
            "strict-devmem",
            format!(
                "no {}: cannot tell whether CONFIG_IO_STRICT_DEVMEM is set",
                cfg_path.display()
            ),
            format!("add iomem=relaxed to be safe: {GRUB_FIX}"),
        ),
        Err(e) => Check::warn("strict-devmem", e, "run doctor as root"),
    };
    vec![c]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_words_and_quotes() {
        let c = Cmdline::parse("BOOT_IMAGE=/vmlinuz root=ZFS=rpool/ROOT quiet iommu=pt foo=\"a b\" vfio-pci.ids=1002:1900 -- init-arg=1\n");
        assert_eq!(c.last("iommu"), Some("pt"));
        assert_eq!(c.last("foo"), Some("a b"));
        assert_eq!(c.last("vfio_pci.ids"), Some("1002:1900"));
        assert!(c.values("quiet").any(|v| v.is_none()));
        assert_eq!(c.last("init_arg"), None);
    }

    #[test]
    fn vfio_ids_as_the_kernel_reads_them() {
        let (ok, bad) = parse_vfio_ids("1002:1900,1002:1640,,zz,1022:15e2:1f4c:b016,0x1022:0x15E3:ffffffff:ffffffff:040300:ffffff");
        assert_eq!(bad, vec!["zz".to_string()]);
        assert_eq!(ok.len(), 4);
        assert!(ok[0].matches(0x1002, 0x1900, 1, 2, 0x030000));
        assert!(!ok[0].matches(0x1002, 0x1901, 1, 2, 0x030000));
        assert!(ok[2].matches(0x1022, 0x15e2, 0x1f4c, 0xb016, 0));
        assert!(!ok[2].matches(0x1022, 0x15e2, 0x1f4c, 0xb017, 0));
        assert!(ok[3].matches(0x1022, 0x15e3, 5, 5, 0x040300));
        assert!(!ok[3].matches(0x1022, 0x15e3, 5, 5, 0x040380));
        // sscanf stops at the first non-hex character: "19zz" is device 0x19.
        let (ok, _) = parse_vfio_ids("1002:19zz");
        assert_eq!(ok[0].device, 0x19);
    }

    #[test]
    fn globs() {
        assert!(glob_match(
            "pci:v00001002d*sv*sd*bc03sc*i*",
            "pci:v00001002d00001900sv00001F4Csd0000B016bc03sc00i00"
        ));
        assert!(!glob_match(
            "pci:v00001002d*sv*sd*bc04sc*i*",
            "pci:v00001002d00001900sv00001F4Csd0000B016bc03sc00i00"
        ));
        assert!(glob_match("a?c*", "abcdef"));
        assert!(glob_match("*", ""));
        assert!(!glob_match("a", ""));
        assert!(!glob_match("", "a"));
    }

    #[test]
    fn modprobe_directives() {
        let mut m = ModprobeConf::default();
        m.add(
            "# c\nblacklist amdgpu\nsoftdep snd-hda-intel pre: vfio-pci post: x\noptions vfio-pci \\\n ids=1002:1900,1002:1640 disable_vga=1\ninstall radeon /bin/false\n",
            Path::new("/etc/modprobe.d/p.conf"),
        );
        assert!(m.held_back("amdgpu", None).is_some());
        assert!(m.held_back("snd_hda_intel", None).is_some());
        assert!(m.held_back("radeon", None).is_some());
        assert!(m.held_back("snd_sof_pci", None).is_none());
        let ids = m.vfio_ids();
        assert_eq!(ids.len(), 1);
        assert_eq!(ids[0].0, "1002:1900,1002:1640");
        assert_eq!(ids[0].1.line, 4);
        let c = Cmdline::parse("modprobe.blacklist=snd_sof_pci,x");
        assert!(m.held_back("snd-sof-pci", Some(&c)).is_some());
    }

    #[test]
    fn lockdown_and_kconfig() {
        assert_eq!(
            parse_lockdown("[none] integrity confidentiality\n"),
            Some("none")
        );
        assert_eq!(
            parse_lockdown("none [integrity] confidentiality"),
            Some("integrity")
        );
        assert_eq!(parse_lockdown("none"), None);
        assert_eq!(parse_lockdown("[]"), None);
        let t = "CONFIG_STRICT_DEVMEM=y\n# CONFIG_IO_STRICT_DEVMEM is not set\n";
        assert_eq!(
            kconfig_value(t, "CONFIG_IO_STRICT_DEVMEM").as_deref(),
            Some("n")
        );
        assert_eq!(
            kconfig_value(t, "CONFIG_STRICT_DEVMEM").as_deref(),
            Some("y")
        );
        assert_eq!(kconfig_value(t, "CONFIG_STRICT"), None);
    }

    #[test]
    fn under_root_never_escapes() {
        let o = DoctorOptions::new("/s", "/r");
        assert_eq!(o.under_root("/etc/../x"), PathBuf::from("/r/x"));
        assert_eq!(o.under_root("/../../x"), PathBuf::from("/r/x"));
        assert_eq!(
            o.under_root("/usr/share/kvm"),
            PathBuf::from("/r/usr/share/kvm")
        );
        assert_eq!(o.pve_root(), PathBuf::from("/r/etc/pve"));
    }
}
