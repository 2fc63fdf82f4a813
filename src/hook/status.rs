//! `resetlab hook status VMID`: the VM's devices, their recorded state, and what each phase
//! would do if Proxmox ran it now. Reads only.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use super::policy::{Action, DeviceKind, Phase, PhasePolicy};
use super::run::{
    is_present, method_options, plan_devices, resolve_chain, HookOptions, PlannedDevice, VmSetup,
};
use super::state::{StateLookup, StateRecord, StateStore};
use crate::error::Result;
use crate::machine::Machine;
use crate::pci::sysfs::link_name;
use crate::pci::Bdf;
use crate::pve::StorageConfig;

/// The shim's marker line: a file in a snippets directory with it is resetlab's.
pub const SHIM_MARKER: &str = "resetlab hookscript shim";

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct HookscriptStatus {
    /// `hookscript:` of the VM config, as written.
    pub volid: String,
    /// The file behind it, when storage.cfg resolves it.
    pub path: Option<PathBuf>,
    pub exists: bool,
    /// The file is resetlab's shim (has its marker line).
    pub is_resetlab: bool,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct DeviceStatus {
    pub bdf: Bdf,
    pub hostpci: u8,
    pub present: bool,
    pub kind: Option<DeviceKind>,
    pub driver: Option<String>,
    /// The chain as the engine will run it.
    pub chain: Vec<String>,
    /// Built-in chain methods this build does not have.
    pub unavailable: Vec<String>,
    /// A chain the engine cannot run (unknown method in the policy file).
    pub chain_error: Option<String>,
    /// `clean`, `dirty`, `none` (no record: clean) or `unreadable` (treated as dirty).
    pub state: &'static str,
    pub record: Option<StateRecord>,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Unmanaged {
    pub bdf: Bdf,
    pub hostpci: u8,
    pub why: &'static str,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Step {
    pub action: Action,
    pub device: Bdf,
    pub would: String,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct PhasePreview {
    pub phase: Phase,
    pub budget_s: f64,
    pub fail_on_error: bool,
    pub actions: Vec<Action>,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct StatusReport {
    pub vmid: u32,
    pub config: PathBuf,
    /// The policy file, `null` when none exists (built-in defaults).
    pub policy: Option<PathBuf>,
    pub state_dir: PathBuf,
    pub node: Option<String>,
    pub hookscript: Option<HookscriptStatus>,
    pub devices: Vec<DeviceStatus>,
    pub unmanaged: Vec<Unmanaged>,
    pub phases: Vec<PhasePreview>,
}

impl StatusReport {
    /// A problem the user must fix before the hook can do its work.
    pub fn config_errors(&self) -> Vec<String> {
        self.devices
            .iter()
            .filter_map(|d| d.chain_error.clone())
            .collect()
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn hookscript_status(host: &Machine, opts: &HookOptions, volid: &str) -> HookscriptStatus {
    let path = StorageConfig::load(&opts.pve_root).and_then(|s| s.snippet_path(volid));
    // A twin's snippets live beneath its root, as `hook install` puts them there.
    let base = host.sysfs.parent().map(std::path::Path::to_path_buf);
    let path = path.map(|p| match &base {
        Some(b) if !host.is_live() && !p.starts_with(b) => {
            b.join(p.strip_prefix("/").unwrap_or(&p))
        }
        _ => p,
    });
    match path {
        Ok(p) => {
            let text = std::fs::read_to_string(&p).ok();
            HookscriptStatus {
                volid: volid.to_string(),
                exists: p.exists(),
                is_resetlab: text.is_some_and(|t| t.contains(SHIM_MARKER)),
                path: Some(p),
                error: None,
            }
        }
        Err(e) => HookscriptStatus {
            volid: volid.to_string(),
            path: None,
            exists: false,
            is_resetlab: false,
            error: Some(e.one_line()),
        },
    }
}

/// What one action would do to one device now.
fn would(
    host: &Machine,
    action: Action,
    d: &PlannedDevice,
    dev: Option<&DeviceStatus>,
    pp: &PhasePolicy,
    vp: &super::policy::VmPolicy,
) -> String {
    let (present_timeout, remove_timeout) = (vp.present_timeout, vp.remove_timeout);
    let chain = || match dev {
        Some(s) if s.chain_error.is_some() => "nothing: its chain has an error".to_string(),
        Some(s) => {
            let w = method_options(pp.budget).wait_timeout;
            format!(
                "reset with {} (each wait up to {:.1} s)",
                s.chain.join(" → "),
                secs(w)
            )
        }
        None => "reset".to_string(),
    };
    match action {
        Action::EnsurePresent if is_present(host, d.bdf) => "present: nothing to do".into(),
        Action::EnsurePresent => format!(
            "missing: rescan its bus and wait up to {:.1} s",
            secs(present_timeout.min(pp.budget))
        ),
        Action::ResetIfDirty => match dev.map(|s| s.state) {
            Some("dirty") | Some("unreadable") => format!("dirty: {}", chain()),
            _ => "clean: nothing to do".into(),
        },
        Action::Reset => chain(),
        Action::Remove if is_present(host, d.bdf) => format!(
            "remove it from the bus (wait up to {:.1} s)",
            secs(remove_timeout.min(pp.budget))
        ),
        Action::Remove => "not on the bus: nothing to remove".into(),
        Action::MarkDirty => "record it dirty".into(),
        Action::Release if vp.releases(d.bdf, d.kind) => format!(
            "ask the guest to let go of it over QMP (device_del; one wait for all, up to {:.1} s)",
            secs(vp.release_timeout.min(pp.budget))
        ),
        Action::Release => {
            "not an AMD GPU or its audio (and not in release_also): left alone".into()
        }
    }
}

/// Reads the VM's config, the policy and the state records; errors only when a file is
/// unreadable or malformed.
pub fn status(host: &Machine, opts: &HookOptions, vmid: u32) -> Result<StatusReport> {
    // The hook goes on with the built-in defaults; status says what is wrong with the file.
    super::policy::Policy::load(&opts.policy)?;
    let setup = VmSetup::load(host, opts, vmid)?;
    let store = StateStore::new(opts.state_dir_for(host));
    let managed = setup.managed();
    let vp = &setup.vm_policy;
    let planned = plan_devices(host, vp, Phase::PostStop, &managed);
    let devices: Vec<DeviceStatus> = planned
        .iter()
        .map(|d| {
            let (chain, unavailable, chain_error) =
                match resolve_chain(&d.chain, d.kind, d.bdf, setup.policy.path.as_deref()) {
                    Ok(c) => (c.labels(), c.unavailable, None),
                    Err(e) => (d.chain.clone(), Vec::new(), Some(e.one_line())),
                };
            let lookup = store.read(d.bdf);
            let (state, record) = match lookup {
                StateLookup::Missing => ("none", None),
                StateLookup::Found(r) => (
                    match r.state {
                        super::state::DeviceState::Clean => "clean",
                        super::state::DeviceState::Dirty => "dirty",
                    },
                    Some(r),
                ),
                StateLookup::Unreadable { .. } => ("unreadable", None),
            };
            DeviceStatus {
                bdf: d.bdf,
                hostpci: d.hostpci,
                present: d.present,
                kind: d.kind,
                driver: link_name(&host.device_dir(&d.bdf).join("driver"))
                    .ok()
                    .flatten(),
                chain,
                unavailable,
                chain_error,
                state,
                record,
            }
        })
        .collect();
    let unmanaged = setup
        .functions
        .iter()
        .filter(|f| !vp.manages(f))
        .map(|f| Unmanaged {
            bdf: f.bdf,
            hostpci: f.hostpci,
            why: setup.why_unmanaged(f),
        })
        .collect();
    let phases = Phase::ALL
        .into_iter()
        .map(|p| {
            let pp = vp.phase(p);
            let order = plan_devices(host, vp, p, &managed);
            let mut steps = Vec::new();
            for a in &pp.actions {
                for d in &order {
                    let dev = devices.iter().find(|s| s.bdf == d.bdf);
                    steps.push(Step {
                        action: *a,
                        device: d.bdf,
                        would: would(host, *a, d, dev, &pp, vp),
                    });
                }
            }
            PhasePreview {
                phase: p,
                budget_s: secs(pp.budget),
                fail_on_error: p == Phase::PreStart && vp.fail_start_on_error,
                actions: pp.actions.clone(),
                steps,
            }
        })
        .collect();
    Ok(StatusReport {
        vmid,
        config: setup.config.path.clone(),
        policy: setup.policy.path.clone(),
        state_dir: store.dir().to_path_buf(),
        node: setup.node.clone(),
        hookscript: setup
            .config
            .hookscript
            .as_deref()
            .map(|v| hookscript_status(host, opts, v)),
        devices,
        unmanaged,
        phases,
    })
}
