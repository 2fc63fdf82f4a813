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

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::machine::Machine;
use crate::pci::{Bdf, Device, Topology};
use crate::pve::{self, VmConfig};

mod boot;
mod cmdline;
mod devices;
mod hookscript;
mod host;
mod kernel;
mod modalias;
mod modprobe;
mod rom;

pub use cmdline::Cmdline;
pub use kernel::{kconfig_value, parse_lockdown};
pub use modalias::{glob_match, modalias, parse_modules_alias, ModAlias};
pub use modprobe::{modname, parse_vfio_ids, ModprobeConf, Origin, VfioId, PCI_ANY_ID};

use boot::{
    check_autoprobe, check_boot_claim, check_initramfs, check_iommu, check_iommu_pt,
    check_vfio_modules,
};
use devices::{
    check_devices, check_hostpci_present, check_iommu_group, check_vfio_bound, check_vga,
    check_vm_config,
};
use hookscript::{check_hook_binary, check_hook_chain, check_hook_policy, check_hookscript};
use host::check_host_functions;
use kernel::{check_lockdown, check_strict_devmem};
use modalias::load_aliases;
use rom::check_romfile;

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
    /// sysfs, and the root for `/proc`'s kernel files, `/etc`, `/boot`, `/lib/modules`,
    /// `/usr/share/kvm` and storage paths.
    pub machine: Machine,
    /// Proxmox cluster filesystem (`<root>/etc/pve` when `None`).
    pub pve_root: Option<PathBuf>,
    /// Check this VM's passthrough setup.
    pub vmid: Option<u32>,
    /// Proxmox node name for `mapping=` entries (`<root>/proc/sys/kernel/hostname` when `None`).
    pub node: Option<String>,
}

impl DoctorOptions {
    /// `sysfs` with the rest read under `root` (a copy of a host's files).
    pub fn new(sysfs: impl Into<PathBuf>, root: impl Into<PathBuf>) -> DoctorOptions {
        DoctorOptions::on(Machine::new(sysfs).with_root(root))
    }

    /// Everything as `machine` has it.
    pub fn on(machine: Machine) -> DoctorOptions {
        DoctorOptions {
            machine,
            pve_root: None,
            vmid: None,
            node: None,
        }
    }

    /// `abs` (an absolute path as the host sees it) under the root.
    pub fn under_root(&self, abs: impl AsRef<Path>) -> PathBuf {
        self.machine.under(abs)
    }

    pub fn pve_root(&self) -> PathBuf {
        self.pve_root
            .clone()
            .unwrap_or_else(|| self.machine.pve_etc())
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
    pub host: Machine,
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
        let host = opts.machine.clone();
        let cmdline_path = host.cmdline_path();
        let cmdline = match read_opt(&cmdline_path) {
            Ok(Some(t)) => Ok(Cmdline::parse(&t)),
            Ok(None) => Err(format!("no {}", cmdline_path.display())),
            Err(e) => Err(e),
        };
        let release = read_opt(&host.osrelease_path())
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
        let present = pve::present_functions(&self.host.sysfs).map_err(|e| e.one_line())?;
        let pve_root = self.opts.pve_root();
        let node = match &self.opts.node {
            Some(n) => n.clone(),
            None => {
                let p = self.host.hostname_path();
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

#[cfg(test)]
mod tests {
    use super::*;

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
