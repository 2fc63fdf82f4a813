//! What the hook does in each Proxmox phase: `/etc/resetlab/hook.toml`.
//!
//! Global settings, overridden per VM (`[vm.100]`) and per device (`[device."0000:c5:00.0"]`,
//! `[vm.100.device."…"]`). With no file at all the defaults follow the field report's evidence
//! (FACTS.md, "What the field report's experiments show"): before the stop, ask the guest to let
//! go of the GPU and its audio (QMP `device_del`, bounded); after the stop and before the next
//! start, bring back whatever is missing and reset only what is recorded dirty. Every key is documented in
//! `docs/proxmox.md`; an unknown key is an error naming the file, line and key.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::error::{Error, Result};
use crate::machine::Machine;
use crate::pci::{Bdf, Device};
use crate::pve::{PassedFunction, PciTarget};

/// A Proxmox hookscript phase (pve-guest-common `PVE/GuestHelpers.pm` `exec_hookscript`;
/// qemu-server calls `pre-start`, `post-start`, `pre-stop`, `post-stop`).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    PreStart,
    PostStart,
    PreStop,
    PostStop,
}

impl Phase {
    pub const ALL: [Phase; 4] = [
        Phase::PreStart,
        Phase::PostStart,
        Phase::PreStop,
        Phase::PostStop,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::PreStart => "pre-start",
            Phase::PostStart => "post-start",
            Phase::PreStop => "pre-stop",
            Phase::PostStop => "post-stop",
        }
    }

    /// Actions that make sense in this phase. While the VM runs (post-start, pre-stop) QEMU
    /// holds the device: no reset and no rescan then. `release` needs a running QEMU, so only
    /// pre-stop has it. `remove` in pre-stop is what the seed's script does (vfio-pci relays the
    /// request to the guest), at the cost docs/proxmox.md describes.
    pub fn allows(self, a: Action) -> bool {
        use Action::*;
        match self {
            Phase::PreStart => matches!(a, EnsurePresent | ResetIfDirty | Reset | MarkDirty),
            Phase::PostStart => matches!(a, MarkDirty),
            Phase::PreStop => matches!(a, Release | Remove | MarkDirty),
            Phase::PostStop => {
                matches!(a, EnsurePresent | ResetIfDirty | Reset | Remove | MarkDirty)
            }
        }
    }

    /// Built-in actions (used when no file sets them), from the field report's evidence: the
    /// one thing that kept the GPU usable was the guest letting go before QEMU exits (pre-stop
    /// `release`); nothing host-side after an ungraceful stop was seen to clean it, so post-stop
    /// resets only what is recorded dirty (an unreleased stop, a guest shutdown from inside).
    pub fn default_actions(self) -> Vec<Action> {
        match self {
            Phase::PreStart => vec![Action::EnsurePresent, Action::ResetIfDirty],
            Phase::PostStart => vec![Action::MarkDirty],
            Phase::PreStop => vec![Action::Release],
            Phase::PostStop => vec![Action::EnsurePresent, Action::ResetIfDirty],
        }
    }

    /// Built-in total time budget of the phase.
    pub fn default_budget(self) -> Duration {
        Duration::from_secs(match self {
            Phase::PreStart => 30,
            Phase::PostStart => 10,
            Phase::PreStop => 30,
            Phase::PostStop => 60,
        })
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Phase {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Phase::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                Error::parse(
                    "hook phase",
                    s,
                    "expected pre-start, post-start, pre-stop or post-stop",
                )
            })
    }
}

/// One step of a phase, applied to every managed device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// If the device is missing from the bus, rescan its parent bus and poll until it is back
    /// (bounded by `present_timeout_s`).
    EnsurePresent,
    /// Run the device's chain if its state record says dirty (or is unreadable).
    ResetIfDirty,
    /// Run the device's chain; record clean on success, dirty on failure.
    Reset,
    /// Remove the device from the bus (bounded by `remove_timeout_s`). Proxmox's stop cleanup
    /// then fails on the missing function (docs/proxmox.md).
    Remove,
    /// Ask the guest to let go of the device through the VM's QMP socket (`device_del`, then
    /// `DEVICE_DELETED`), all devices at once, one wait bounded by `release_timeout_s`.
    Release,
    /// Record the device dirty (a guest has it now).
    MarkDirty,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::EnsurePresent => "ensure_present",
            Action::ResetIfDirty => "reset_if_dirty",
            Action::Reset => "reset",
            Action::Remove => "remove",
            Action::Release => "release",
            Action::MarkDirty => "mark_dirty",
        }
    }
}

/// What kind of device a function is, for the choice of chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    /// AMD (vendor 0x1002) display controller (class 0x03xxxx).
    AmdGpu,
    /// AMD (vendor 0x1002) audio device (class 0x0403xx) in the same slot as an AMD GPU: the
    /// GPU's HDMI/DP audio (1002:1640 on the 780M). The board's own HD audio in that slot
    /// (1022:15e3) is vendor 0x1022 and stays `Other`.
    AmdGpuAudio,
    Other,
}

impl DeviceKind {
    /// The name the policy file's `[chains]` and JSON use (`amd_gpu`).
    pub fn name(self) -> &'static str {
        match self {
            DeviceKind::AmdGpu => "amd_gpu",
            DeviceKind::AmdGpuAudio => "amd_gpu_audio",
            DeviceKind::Other => "other",
        }
    }
}

impl std::fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// PCI identity of one function, as sysfs shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct DeviceInfo {
    pub bdf: Bdf,
    pub vendor: u16,
    pub device: u16,
    /// 24-bit class code (`0x030000`).
    pub class: u32,
}

const PCI_VENDOR_ID_ATI: u16 = 0x1002; // include/linux/pci_ids.h PCI_VENDOR_ID_ATI
const PCI_BASE_CLASS_DISPLAY: u32 = 0x03; // include/linux/pci_ids.h PCI_BASE_CLASS_DISPLAY
const PCI_CLASS_MULTIMEDIA_HD_AUDIO: u32 = 0x0403; // include/linux/pci_ids.h

impl DeviceInfo {
    /// `vendor`, `device`, `class` of `bdf`, as the PCI layer reads a device ([`Device::load`]).
    pub fn read(host: &Machine, bdf: Bdf) -> Result<DeviceInfo> {
        Ok(DeviceInfo::of(&Device::load(host, bdf)?))
    }

    pub fn of(d: &Device) -> DeviceInfo {
        DeviceInfo {
            bdf: d.bdf,
            vendor: d.vendor,
            device: d.device,
            class: d.class,
        }
    }

    fn is_amd_gpu(&self) -> bool {
        self.vendor == PCI_VENDOR_ID_ATI && self.class >> 16 == PCI_BASE_CLASS_DISPLAY
    }

    /// The kind of this function; `others` are the functions it may share a slot with (the
    /// VM's functions, or every present one).
    pub fn classify(&self, others: &[DeviceInfo]) -> DeviceKind {
        if self.is_amd_gpu() {
            return DeviceKind::AmdGpu;
        }
        if self.vendor == PCI_VENDOR_ID_ATI
            && self.class >> 8 == PCI_CLASS_MULTIMEDIA_HD_AUDIO
            && others
                .iter()
                .any(|o| o.bdf.slot() == self.bdf.slot() && o.is_amd_gpu())
        {
            return DeviceKind::AmdGpuAudio;
        }
        DeviceKind::Other
    }
}

// ---------------------------------------------------------------------------------------------
// The file
// ---------------------------------------------------------------------------------------------

/// A reset method name of the engine's registry (`smu_mode2`, `remove_rescan`, `kernel`, `flr`
/// …); checked here for shape only, the registry knows the names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct MethodName(pub String);

impl<'de> Deserialize<'de> for MethodName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let ok = !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !ok {
            return Err(de::Error::custom(format!(
                "invalid reset method name '{s}' (expected [a-z0-9_]+)"
            )));
        }
        Ok(MethodName(s))
    }
}

/// A BDF or slot written as a TOML string or key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct TargetKey(PciTarget);

impl<'de> Deserialize<'de> for TargetKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        PciTarget::parse(&s)
            .map(TargetKey)
            .map_err(|e| de::Error::custom(e.to_string()))
    }
}

/// A VM id as a TOML key (pve-common `PVE/JSONSchema.pm` standard option `pve-vmid`:
/// 100..=999999999).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct VmKey(u32);

impl<'de> Deserialize<'de> for VmKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.parse::<u32>() {
            Ok(n) if (100..=999_999_999).contains(&n) && !s.starts_with('+') => Ok(VmKey(n)),
            _ => Err(de::Error::custom(format!(
                "invalid VM id '{s}' (expected 100..999999999)"
            ))),
        }
    }
}

/// A `*_s` key: seconds, integer or fractional (`15`, `0.5`), or a string with
/// its unit (`"500ms"`, `"2s"`, `"1m"`); 0 < duration <= 1 hour.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Secs(Duration);

impl<'de> Deserialize<'de> for Secs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(f64),
            Text(String),
        }
        let (d, shown) = match Raw::deserialize(d)? {
            Raw::Number(v) if !(v.is_finite() && v > 0.0 && v <= 3600.0) => {
                return Err(de::Error::custom(format!(
                    "{v} seconds is out of range (0 < seconds <= 3600)"
                )))
            }
            Raw::Number(v) => (Duration::from_secs_f64(v), format!("{v}")),
            Raw::Text(t) => (
                crate::text::parse_duration(&t, crate::text::BareUnit::Secs)
                    .map_err(de::Error::custom)?,
                t,
            ),
        };
        if d.is_zero() || d > Duration::from_secs(3600) {
            return Err(de::Error::custom(format!(
                "{shown} is out of range (0 < duration <= 1 hour)"
            )));
        }
        Ok(Secs(d))
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PhaseSection {
    actions: Option<Spanned<Vec<Action>>>,
    budget_s: Option<Secs>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PhaseTables {
    #[serde(rename = "pre-start")]
    pre_start: Option<PhaseSection>,
    #[serde(rename = "post-start")]
    post_start: Option<PhaseSection>,
    #[serde(rename = "pre-stop")]
    pre_stop: Option<PhaseSection>,
    #[serde(rename = "post-stop")]
    post_stop: Option<PhaseSection>,
}

impl PhaseTables {
    fn get(&self, p: Phase) -> Option<&PhaseSection> {
        match p {
            Phase::PreStart => self.pre_start.as_ref(),
            Phase::PostStart => self.post_start.as_ref(),
            Phase::PreStop => self.pre_stop.as_ref(),
            Phase::PostStop => self.post_stop.as_ref(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChainTable {
    amd_gpu: Option<Vec<MethodName>>,
    amd_gpu_audio: Option<Vec<MethodName>>,
    other: Option<Vec<MethodName>>,
}

impl ChainTable {
    fn get(&self, k: DeviceKind) -> Option<&Vec<MethodName>> {
        match k {
            DeviceKind::AmdGpu => self.amd_gpu.as_ref(),
            DeviceKind::AmdGpuAudio => self.amd_gpu_audio.as_ref(),
            DeviceKind::Other => self.other.as_ref(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceSection {
    chain: Option<Vec<MethodName>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct VmSection {
    fail_start_on_error: Option<bool>,
    present_timeout_s: Option<Secs>,
    remove_timeout_s: Option<Secs>,
    release_timeout_s: Option<Secs>,
    release_also: Option<Vec<TargetKey>>,
    device_check: Option<bool>,
    devices: Option<Vec<TargetKey>>,
    #[serde(default)]
    exclude: Vec<TargetKey>,
    #[serde(default)]
    phase: PhaseTables,
    #[serde(default)]
    chain: ChainTable,
    #[serde(default)]
    /// Keyed by function address (`pci::Bdf`'s serde form).
    device: BTreeMap<Bdf, DeviceSection>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    /// The resetlab version the file is written for (`resetlab = "0.2.0"`): an older resetlab
    /// that meets a key it does not know says so, and which version to install.
    #[serde(rename = "resetlab")]
    _written_for: Option<String>,
    fail_start_on_error: Option<bool>,
    present_timeout_s: Option<Secs>,
    remove_timeout_s: Option<Secs>,
    release_timeout_s: Option<Secs>,
    release_also: Option<Vec<TargetKey>>,
    device_check: Option<bool>,
    #[serde(default)]
    phase: PhaseTables,
    #[serde(default)]
    chain: ChainTable,
    #[serde(default)]
    /// Keyed by function address (`pci::Bdf`'s serde form).
    device: BTreeMap<Bdf, DeviceSection>,
    #[serde(default)]
    vm: BTreeMap<VmKey, VmSection>,
}

/// The whole policy file, parsed and checked.
#[derive(Debug, Default)]
pub struct Policy {
    /// The file it came from; `None` for the built-in defaults (no file).
    pub path: Option<PathBuf>,
    file: PolicyFile,
}

/// Built-in defaults.
pub const DEFAULT_FAIL_START_ON_ERROR: bool = false;
pub const DEFAULT_PRESENT_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_REMOVE_TIMEOUT: Duration = Duration::from_secs(10);
/// The report's Windows 11 guest took 1.4 s for the GPU and about 11 s for its audio on the
/// kernel's device-request path (FACTS.md, QMP); 10 s is the default, raise it for such a
/// guest (`release_timeout_s = 15`).
pub const DEFAULT_RELEASE_TIMEOUT: Duration = Duration::from_secs(10);

/// The built-in chain of a device kind: AMD GPUs and their audio get the SMU mode-2 reset then
/// remove + rescan; everything else the kernel's own reset (sysfs `reset`) then remove + rescan.
pub fn default_chain(kind: DeviceKind) -> Vec<String> {
    let v: &[&str] = match kind {
        DeviceKind::AmdGpu | DeviceKind::AmdGpuAudio => &["smu_mode2", "remove_rescan"],
        DeviceKind::Other => &["kernel", "remove_rescan"],
    };
    v.iter().map(|s| s.to_string()).collect()
}

/// 1-based line and column of byte offset `off` in `text`.
fn line_col(text: &str, off: usize) -> (usize, usize) {
    let before = text.get(..off).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// `x.y.z` (missing parts 0) as numbers; `None` when it is not a version.
fn version_parts(v: &str) -> Option<Vec<u64>> {
    let core = v.split(['-', '+']).next()?;
    let parts: Option<Vec<u64>> = core.split('.').map(|p| p.parse().ok()).collect();
    parts.filter(|p| !p.is_empty() && p.len() <= 3)
}

/// The `resetlab = "…"` version a policy file declares, when it is newer than this build.
fn newer_than_this(text: &str) -> Option<String> {
    let table: toml::Table = toml::from_str(text).ok()?;
    let declared = table.get("resetlab")?.as_str()?;
    let mut theirs = version_parts(declared)?;
    let mut ours = version_parts(env!("CARGO_PKG_VERSION"))?;
    theirs.resize(3, 0);
    ours.resize(3, 0);
    (theirs > ours).then(|| declared.to_string())
}

impl Policy {
    /// Read the policy; a missing file is the built-in defaults.
    pub fn load(path: &Path) -> Result<Policy> {
        match crate::bounded_read::read_text_opt(path, crate::bounded_read::TEXT_FILE_MAX) {
            Ok(Some(text)) => Self::parse(&text, path),
            Ok(None) => Ok(Policy::default()),
            Err(e) => Err(e),
        }
    }

    /// Parse and check a policy file; errors are `FileParse` with line and column.
    pub fn parse(text: &str, path: &Path) -> Result<Policy> {
        let at = |span: Option<std::ops::Range<usize>>, reason: String| {
            let (line, column) = span.map_or((1, 1), |s| line_col(text, s.start));
            Error::FileParse {
                path: path.to_path_buf(),
                line,
                column,
                reason,
            }
        };
        let file: PolicyFile = toml::from_str(text).map_err(|e| {
            let mut reason = e.message().trim().to_string();
            if let Some(v) = newer_than_this(text) {
                reason = format!(
                    "{reason}; the file is written for resetlab {v}, this is resetlab {}: \
                     upgrade resetlab on this node",
                    env!("CARGO_PKG_VERSION")
                );
            }
            at(e.span(), reason)
        })?;
        let check = |tables: &PhaseTables, prefix: &str| -> Result<()> {
            for p in Phase::ALL {
                let Some(acts) = tables.get(p).and_then(|s| s.actions.as_ref()) else {
                    continue;
                };
                let key = format!("{prefix}phase.{p}.actions");
                for (i, a) in acts.get_ref().iter().enumerate() {
                    if !p.allows(*a) {
                        return Err(at(
                            Some(acts.span()),
                            format!("{key}: '{}' is not allowed in {p}", a.as_str()),
                        ));
                    }
                    if acts.get_ref()[..i].contains(a) {
                        return Err(at(
                            Some(acts.span()),
                            format!("{key}: '{}' given twice", a.as_str()),
                        ));
                    }
                }
            }
            Ok(())
        };
        check(&file.phase, "")?;
        for (vm, sec) in &file.vm {
            check(&sec.phase, &format!("vm.{}.", vm.0))?;
        }
        Ok(Policy {
            path: Some(path.to_path_buf()),
            file,
        })
    }

    /// The VM ids that have a `[vm.N]` section.
    pub fn configured_vms(&self) -> Vec<u32> {
        self.file.vm.keys().map(|k| k.0).collect()
    }

    /// The effective policy for one VM: its section over the global settings over the
    /// built-in defaults.
    pub fn for_vm(&self, vmid: u32) -> VmPolicy {
        let g = &self.file;
        let vm = g.vm.get(&VmKey(vmid));
        let phases = Phase::ALL
            .into_iter()
            .map(|p| {
                let vs = vm.and_then(|v| v.phase.get(p));
                let gs = g.phase.get(p);
                let actions = vs
                    .and_then(|s| s.actions.as_ref())
                    .or(gs.and_then(|s| s.actions.as_ref()))
                    .map_or_else(|| p.default_actions(), |a| a.get_ref().clone());
                let budget = vs
                    .and_then(|s| s.budget_s)
                    .or(gs.and_then(|s| s.budget_s))
                    .map_or_else(|| p.default_budget(), |s| s.0);
                (p, PhasePolicy { actions, budget })
            })
            .collect();
        let names = |v: &Vec<MethodName>| v.iter().map(|m| m.0.clone()).collect::<Vec<_>>();
        let mut chains = BTreeMap::new();
        for kind in [
            DeviceKind::AmdGpu,
            DeviceKind::AmdGpuAudio,
            DeviceKind::Other,
        ] {
            let c = vm
                .and_then(|v| v.chain.get(kind))
                .or(g.chain.get(kind))
                .map_or_else(|| default_chain(kind), names);
            chains.insert(DeviceKind::name(kind), c);
        }
        let mut device_chains = BTreeMap::new();
        for (k, d) in &g.device {
            if let Some(c) = &d.chain {
                device_chains.insert(*k, names(c));
            }
        }
        if let Some(v) = vm {
            for (k, d) in &v.device {
                if let Some(c) = &d.chain {
                    device_chains.insert(*k, names(c));
                }
            }
        }
        VmPolicy {
            vmid,
            fail_start_on_error: vm
                .and_then(|v| v.fail_start_on_error)
                .or(g.fail_start_on_error)
                .unwrap_or(DEFAULT_FAIL_START_ON_ERROR),
            present_timeout: vm
                .and_then(|v| v.present_timeout_s)
                .or(g.present_timeout_s)
                .map_or(DEFAULT_PRESENT_TIMEOUT, |s| s.0),
            remove_timeout: vm
                .and_then(|v| v.remove_timeout_s)
                .or(g.remove_timeout_s)
                .map_or(DEFAULT_REMOVE_TIMEOUT, |s| s.0),
            release_timeout: vm
                .and_then(|v| v.release_timeout_s)
                .or(g.release_timeout_s)
                .map_or(DEFAULT_RELEASE_TIMEOUT, |s| s.0),
            device_check: vm
                .and_then(|v| v.device_check)
                .or(g.device_check)
                .unwrap_or(false),
            release_also: vm
                .and_then(|v| v.release_also.as_ref())
                .or(g.release_also.as_ref())
                .map_or_else(Vec::new, |d| d.iter().map(|t| t.0).collect()),
            devices: vm
                .and_then(|v| v.devices.as_ref())
                .map(|d| d.iter().map(|t| t.0).collect()),
            exclude: vm.map_or_else(Vec::new, |v| v.exclude.iter().map(|t| t.0).collect()),
            phases,
            chains,
            device_chains,
        }
    }
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// Actions and budget of one phase.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct PhasePolicy {
    pub actions: Vec<Action>,
    /// Total time the phase may take, all devices together.
    #[serde(serialize_with = "secs")]
    pub budget: Duration,
}

/// The effective policy of one VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct VmPolicy {
    pub vmid: u32,
    /// Exit non-zero from pre-start when an action failed, so that Proxmox aborts the start
    /// (only pre-start is fatal: pve-guest-common `exec_hookscript` `$stop_on_error`, set by
    /// qemu-server `vm_start` for pre-start only).
    pub fail_start_on_error: bool,
    /// Bound of the poll after a rescan in `ensure_present`.
    #[serde(serialize_with = "secs")]
    pub present_timeout: Duration,
    /// Bound of the wait for a `remove`.
    #[serde(serialize_with = "secs")]
    pub remove_timeout: Duration,
    /// Bound of the one wait for the guest to release every device (`release`).
    #[serde(serialize_with = "secs")]
    pub release_timeout: Duration,
    /// `release_also = [...]`: managed functions `release` unplugs besides AMD GPUs and their
    /// audio.
    pub release_also: Vec<PciTarget>,
    /// `device_check = true`: `reset_if_dirty` also reads the device itself (its vendor health
    /// checks) when the record says clean, and resets a device that does not look clean. It
    /// never skips a reset the record asks for.
    pub device_check: bool,
    /// `devices = [...]`: manage only these (functions or whole slots) of the VM's functions.
    /// `None`: every hostpci function except `driver=keep` and `mdev` entries.
    pub devices: Option<Vec<PciTarget>>,
    /// `exclude = [...]`: never manage these.
    pub exclude: Vec<PciTarget>,
    pub phases: BTreeMap<Phase, PhasePolicy>,
    /// Chain per device kind (`amd_gpu`, `amd_gpu_audio`, `other`).
    pub chains: BTreeMap<&'static str, Vec<String>>,
    /// Chain per function, overriding the kind's.
    pub device_chains: BTreeMap<Bdf, Vec<String>>,
}

/// One managed device in a phase plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct DevicePlan {
    pub bdf: Bdf,
    pub kind: DeviceKind,
    /// Reset methods to try in order (first that succeeds wins).
    pub chain: Vec<String>,
}

/// What the hook does in one phase for one VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct PhasePlan {
    pub vmid: u32,
    pub phase: Phase,
    pub actions: Vec<Action>,
    #[serde(serialize_with = "secs")]
    pub budget: Duration,
    /// Exit non-zero on failure: `fail_start_on_error` in pre-start, never in other phases.
    pub fail_on_error: bool,
    #[serde(serialize_with = "secs")]
    pub present_timeout: Duration,
    #[serde(serialize_with = "secs")]
    pub remove_timeout: Duration,
    #[serde(serialize_with = "secs")]
    pub release_timeout: Duration,
    /// AMD GPUs first, then their audio functions, then the rest, each group in the VM's order.
    pub devices: Vec<DevicePlan>,
}

fn target_matches(t: &PciTarget, bdf: &Bdf) -> bool {
    match t {
        PciTarget::Function(b) => b == bdf,
        PciTarget::Slot(s) => bdf.slot() == *s,
    }
}

impl VmPolicy {
    pub fn phase(&self, p: Phase) -> PhasePolicy {
        self.phases.get(&p).cloned().unwrap_or_else(|| PhasePolicy {
            actions: p.default_actions(),
            budget: p.default_budget(),
        })
    }

    /// Whether the hook manages `f` (one of the VM's passed functions).
    pub fn manages(&self, f: &PassedFunction) -> bool {
        if self.exclude.iter().any(|t| target_matches(t, &f.bdf)) {
            return false;
        }
        match &self.devices {
            Some(list) => list.iter().any(|t| target_matches(t, &f.bdf)),
            None => !f.driver_keep && !f.mdev,
        }
    }

    /// The managed subset of the VM's functions, in their order. Only functions the VM passes
    /// through are ever selected, whatever `devices` lists.
    pub fn select(&self, functions: &[PassedFunction]) -> Vec<Bdf> {
        functions
            .iter()
            .filter(|f| self.manages(f))
            .map(|f| f.bdf)
            .collect()
    }

    /// Whether `release` unplugs this function: an AMD GPU or its audio, or one the policy's
    /// `release_also` names.
    pub fn releases(&self, bdf: Bdf, kind: Option<DeviceKind>) -> bool {
        matches!(kind, Some(DeviceKind::AmdGpu | DeviceKind::AmdGpuAudio))
            || self.release_also.iter().any(|t| target_matches(t, &bdf))
    }

    /// The chain for one function of the given kind.
    pub fn chain_for(&self, bdf: Bdf, kind: DeviceKind) -> Vec<String> {
        if let Some(c) = self.device_chains.get(&bdf) {
            return c.clone();
        }
        self.chains
            .get(DeviceKind::name(kind))
            .cloned()
            .unwrap_or_else(|| default_chain(kind))
    }

    /// The plan of `phase` for the managed devices whose identity is known (`devices`, e.g. read
    /// with [`DeviceInfo::read`] after `ensure_present`); `others` are further functions that
    /// may share a slot with them (for recognising a GPU's audio).
    pub fn plan(&self, phase: Phase, devices: &[DeviceInfo], others: &[DeviceInfo]) -> PhasePlan {
        let mut all: Vec<DeviceInfo> = devices.to_vec();
        all.extend_from_slice(others);
        let mut plans: Vec<DevicePlan> = devices
            .iter()
            .map(|d| {
                let kind = d.classify(&all);
                DevicePlan {
                    bdf: d.bdf,
                    kind,
                    chain: self.chain_for(d.bdf, kind),
                }
            })
            .collect();
        let rank = |k: DeviceKind| match k {
            DeviceKind::AmdGpu => 0,
            DeviceKind::AmdGpuAudio => 1,
            DeviceKind::Other => 2,
        };
        plans.sort_by_key(|p| rank(p.kind)); // stable: keeps the VM's order within a group
        let pp = self.phase(phase);
        PhasePlan {
            vmid: self.vmid,
            phase,
            actions: pp.actions,
            budget: pp.budget,
            fail_on_error: phase == Phase::PreStart && self.fail_start_on_error,
            present_timeout: self.present_timeout,
            remove_timeout: self.remove_timeout,
            release_timeout: self.release_timeout,
            devices: plans,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(bdf: &str, vendor: u16, class: u32) -> DeviceInfo {
        DeviceInfo {
            bdf: bdf.parse().unwrap(),
            vendor,
            device: 0,
            class,
        }
    }

    #[test]
    fn classify_780m_slot() {
        let gpu = info("c5:00.0", 0x1002, 0x030000);
        let hda = info("c5:00.1", 0x1002, 0x040300);
        let board = info("c5:00.6", 0x1022, 0x040300);
        let other_slot_audio = info("c6:00.1", 0x1002, 0x040300);
        let all = [gpu, hda, board, other_slot_audio];
        assert_eq!(gpu.classify(&all), DeviceKind::AmdGpu);
        assert_eq!(hda.classify(&all), DeviceKind::AmdGpuAudio);
        assert_eq!(board.classify(&all), DeviceKind::Other);
        assert_eq!(other_slot_audio.classify(&all), DeviceKind::Other);
        assert_eq!(hda.classify(&[hda]), DeviceKind::Other);
    }

    #[test]
    fn line_col_counts_from_one() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
    }

    #[test]
    fn release_is_the_default_pre_stop_and_only_allowed_there() {
        assert_eq!(Phase::PreStop.default_actions(), vec![Action::Release]);
        assert_eq!(
            Phase::PostStop.default_actions(),
            vec![Action::EnsurePresent, Action::ResetIfDirty]
        );
        for p in Phase::ALL {
            assert_eq!(p.allows(Action::Release), p == Phase::PreStop, "{p}");
        }
        let e = Policy::parse(
            "[phase.post-stop]\nactions = [\"release\"]\n",
            Path::new("h.toml"),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("'release' is not allowed in post-stop"),
            "{e}"
        );
        let p = Policy::parse(
            "release_timeout_s = 15\n[vm.100]\nrelease_also = [\"0000:03:00.0\"]\n",
            Path::new("h.toml"),
        )
        .unwrap();
        let vp = p.for_vm(100);
        assert_eq!(vp.release_timeout, Duration::from_secs(15));
        assert!(vp.releases("0000:03:00.0".parse().unwrap(), Some(DeviceKind::Other)));
        assert!(!p
            .for_vm(101)
            .releases("0000:03:00.0".parse().unwrap(), None));
        assert_eq!(p.for_vm(101).release_timeout, Duration::from_secs(15));
        assert_eq!(
            Policy::default().for_vm(100).release_timeout,
            DEFAULT_RELEASE_TIMEOUT
        );
    }

    #[test]
    fn phase_round_trip() {
        for p in Phase::ALL {
            assert_eq!(p.as_str().parse::<Phase>().unwrap(), p);
        }
        let e = "start".parse::<Phase>().unwrap_err();
        assert!(
            matches!(&e, Error::Parse { what: "hook phase", input, reason }
                if input == "start" && reason == "expected pre-start, post-start, pre-stop or post-stop"),
            "{e:?}"
        );
    }
}
