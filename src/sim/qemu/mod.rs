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

use std::fs::{self};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::pci::Bdf;
use crate::pve::{self, VmConfig};
use crate::sim::model;

mod server;
mod vm;

pub use server::FakeQemu;

/// `<root>/var/run/qemu-server/<vmid>.qmp`: where qemu-server puts a VM's QMP socket.
pub fn socket_path(root: &Path, vmid: u32) -> PathBuf {
    crate::machine::Machine::new(root.join("sys")).qmp_socket(vmid)
}

/// `<root>/var/run/qemu-server/<vmid>.pid`: the pid of the VM's (fake) QEMU.
pub fn pid_path(root: &Path, vmid: u32) -> PathBuf {
    crate::machine::Machine::new(root.join("sys"))
        .qmp_dir()
        .join(format!("{vmid}.pid"))
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
            let e = bad.parse::<Guest>().unwrap_err();
            assert!(
                matches!(&e, Error::Parse { what: "guest behaviour", input, reason }
                    if input == bad && reason == "expected release, release:MS, hung or refuse"),
                "{bad}: {e:?}"
            );
        }
        let g = Guest::Release { ms: 7 };
        assert_eq!(g.to_string().parse::<Guest>().unwrap(), g);
    }
}
