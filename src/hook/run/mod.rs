//! One Proxmox hook phase: `resetlab hook VMID PHASE`.
//!
//! Loads the VM's config and the policy, works out the managed functions, and runs the phase's
//! actions on them in the policy's order (AMD GPUs first, then their audio, then the rest), each
//! wait bounded by what is left of the phase's budget. Every action is one log line with its
//! timing (kernel log and stderr, see [`super::log`]); every device's outcome is a state record
//! (see [`super::state`]). Nothing here returns an error for a failed action: the report says
//! what failed, and [`PhaseReport::exit_code`] is non-zero only when the policy makes a failed
//! pre-start stop the VM.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::bounded::{self, WriteOutcome};
use super::log::{LogLine, Logger};
use super::policy::{self, Action, DeviceInfo, DeviceKind, Phase, PhasePolicy, Policy, VmPolicy};
use super::state::{DeviceState, StateLookup, StateRecord, StateStore};
use crate::amd::regs::RegsDb;
use crate::error::{exit, Error, Result};
use crate::machine::Machine;
use crate::pci::sysfs::link_name;
use crate::pci::{Bdf, Topology};
use crate::pve::{self, PassedFunction, VmConfig};
use crate::reset::engine::run_chain;
use crate::reset::journal::Record;
use crate::reset::{parse_method, wait, Journal, MethodSpec, ResetOptions};

// The phase's actions, one file each: present/remove, reset, release/mark_dirty.
mod present;
mod release;
mod reset;

/// Bounded waits one method may make in a row: wake from runtime suspend, the device lock, and
/// for `remove_rescan` gone, back, bound to its driver again.
const WAITS_PER_METHOD: u32 = 5;

/// Kept back from a phase's budget: a tenth of it, at least `FINISH_RESERVE_MIN` and at most
/// `FINISH_RESERVE_MAX` (never more than half the budget). Every wait of the phase ends by the
/// budget less this reserve (the reset chain gets what is left as its own budget, and each of its
/// waits is cut to that), so what runs after the last wait — the method's clean-up writes
/// (autoprobe back, power control back), the action's record, the state file, "not started"
/// records for the devices after it, the report — has the reserve to itself. That work is a few
/// file operations with no waits; the reserve is many times what it takes, also on a loaded host
/// (the reserve used to be taken only from the hook's own split of the budget between waits, and
/// a run under load once ended 345 ms over its budget).
const FINISH_RESERVE_MIN: Duration = Duration::from_millis(250);
const FINISH_RESERVE_MAX: Duration = Duration::from_secs(1);

/// The reserve of a phase's budget (see [`FINISH_RESERVE_MIN`]).
pub fn finish_reserve(budget: Duration) -> Duration {
    (budget / 10)
        .clamp(FINISH_RESERVE_MIN, FINISH_RESERVE_MAX)
        .min(budget / 2)
}

/// Beside every reset SMU mode 2 did: that it clears the reset bug is the project's hypothesis.
const MODE2_UNCONFIRMED: &str =
    " (that SMU mode 2 clears the reset bug is this project's hypothesis, unconfirmed on hardware)";

/// What `release` keeps back from its bound for asking QEMU whether the VM is paused after a
/// timeout (src/qmp/release.rs asks with a 1 s bound).
const RELEASE_STATUS_RESERVE: Duration = Duration::from_secs(1);

/// Where the hook looks for things; every root is a parameter.
#[derive(Debug, Clone)]
pub struct HookOptions {
    /// `/etc/pve` (`--pve-config DIR`).
    pub pve_root: PathBuf,
    /// `/etc/resetlab/hook.toml` (`--policy FILE`).
    pub policy: PathBuf,
    /// `--state-dir DIR`; `None`: `/run/resetlab` on the live machine, else `<root>/run/resetlab`.
    pub state_dir: Option<PathBuf>,
    /// `--node NAME`; `None`: this machine's node name, looked up only if a mapping needs it.
    pub node: Option<String>,
    /// `PVE_MIGRATED_FROM` (pre-start of a VM migrated from another node).
    pub migrated_from: Option<String>,
    /// Echo log lines to stderr.
    pub stderr: bool,
    /// Where QEMU's monitor sockets are: `/var/run/qemu-server` (qemu-server
    /// `PVE::QemuServer::Helpers::qmp_socket`), beneath the root for a twin.
    pub qmp_dir: PathBuf,
}

impl HookOptions {
    /// Every path as `machine` has it: its `/etc/pve`, policy, state and sockets.
    pub fn on(machine: &Machine) -> HookOptions {
        HookOptions {
            pve_root: machine.pve_etc(),
            policy: machine.policy_path(),
            state_dir: None,
            node: None,
            migrated_from: None,
            stderr: false,
            qmp_dir: machine.qmp_dir(),
        }
    }

    /// The QMP socket of VM `vmid`: `<qmp_dir>/<vmid>.qmp`.
    pub fn qmp_socket(&self, vmid: u32) -> PathBuf {
        self.qmp_dir.join(format!("{vmid}.qmp"))
    }

    /// The state directory for `host`: never the machine's `/run` for a twin or snapshot.
    pub fn state_dir_for(&self, host: &Machine) -> PathBuf {
        self.state_dir.clone().unwrap_or_else(|| host.state_dir())
    }
}

/// Everything read from files for one VM.
#[derive(Debug)]
pub struct VmSetup {
    pub config: VmConfig,
    /// Every function the VM passes through.
    pub functions: Vec<PassedFunction>,
    pub policy: Policy,
    pub vm_policy: VmPolicy,
    /// The node name used to resolve mappings, if any was needed.
    pub node: Option<String>,
    /// The policy file could not be used (written for a newer resetlab, say): the built-in
    /// defaults stand in, and only `ensure_present` runs.
    pub policy_error: Option<String>,
}

impl VmSetup {
    /// Loads the policy, the VM config (with its mappings resolved) and the functions it passes.
    pub fn load(host: &Machine, opts: &HookOptions, vmid: u32) -> Result<VmSetup> {
        // A policy this resetlab cannot read must not switch the hook off: missing functions
        // are still brought back, which is never wrong before a start or after a stop.
        let (policy, policy_error) = match Policy::load(&opts.policy) {
            Ok(p) => (p, None),
            Err(e) => (Policy::default(), Some(e.one_line())),
        };
        let present = pve::present_functions(&host.sysfs)?;
        let pve::PassedThrough {
            config,
            node,
            functions,
        } = pve::passed_functions(&opts.pve_root, vmid, &present, || match &opts.node {
            Some(n) => Ok(n.clone()),
            None => pve::node_name(host),
        })?;
        let vm_policy = policy.for_vm(vmid);
        let mut setup = VmSetup {
            config,
            functions,
            policy,
            vm_policy,
            node,
            policy_error,
        };
        setup.add_remembered(&StateStore::new(opts.state_dir_for(host)));
        Ok(setup)
    }

    /// Resolves the VM's functions again against what is on the bus now: a whole-slot entry
    /// whose functions were all removed stands for function 0 until a rescan brings the slot
    /// back, then for every function of it.
    pub fn refresh(&mut self, host: &Machine, store: &StateStore) -> Result<()> {
        let present = pve::present_functions(&host.sysfs)?;
        self.functions = self.config.functions(&present);
        self.add_remembered(store);
        Ok(())
    }

    /// A whole-slot entry names only the functions on the bus now; one this VM had that is off
    /// the bus (removed in pre-stop) is remembered by its state record, so that post-stop brings
    /// it back and resets it too.
    fn add_remembered(&mut self, store: &StateStore) {
        let Ok(records) = store.list() else { return };
        for hp in &self.config.hostpci {
            for t in hp.targets() {
                let pve::PciTarget::Slot(slot) = t else {
                    continue;
                };
                for (bdf, lookup) in &records {
                    let ours =
                        matches!(lookup, StateLookup::Found(r) if r.vmid == Some(self.config.vmid));
                    if bdf.slot() == slot && ours && !self.functions.iter().any(|f| f.bdf == *bdf) {
                        self.functions.push(PassedFunction {
                            bdf: *bdf,
                            hostpci: hp.index,
                            present: false,
                            from_slot: true,
                            driver_keep: hp.driver_keep(),
                            mdev: hp.mdev().is_some(),
                        });
                    }
                }
            }
        }
    }

    /// The managed functions, in the VM's order.
    pub fn managed(&self) -> Vec<PassedFunction> {
        self.functions
            .iter()
            .filter(|f| self.vm_policy.manages(f))
            .cloned()
            .collect()
    }

    /// Why an unmanaged function is left alone.
    pub fn why_unmanaged(&self, f: &PassedFunction) -> &'static str {
        let vp = &self.vm_policy;
        if vp.exclude.iter().any(|t| matches_target(t, f.bdf)) {
            "excluded by the policy"
        } else if vp.devices.is_some() {
            "not in the policy's devices list"
        } else if f.driver_keep {
            "driver=keep: Proxmox neither binds nor resets it"
        } else if f.mdev {
            "a mediated device (mdev)"
        } else {
            "not managed"
        }
    }
}

fn matches_target(t: &pve::PciTarget, bdf: Bdf) -> bool {
    match t {
        pve::PciTarget::Function(b) => *b == bdf,
        pve::PciTarget::Slot(s) => bdf.slot() == *s,
    }
}

/// Whether a function is on the bus (its `vendor` attribute is there: the kernel creates the
/// attributes before it links the device into `bus/pci/devices`).
pub fn is_present(host: &Machine, bdf: Bdf) -> bool {
    host.device_dir(&bdf).join("vendor").exists()
}

/// One managed function as a phase sees it.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct PlannedDevice {
    pub bdf: Bdf,
    pub hostpci: u8,
    /// `None` while the function is not on the bus (its identity cannot be read).
    pub kind: Option<DeviceKind>,
    /// The policy's chain for it (before checking the names against the engine).
    pub chain: Vec<String>,
    pub present: bool,
}

/// The managed functions in the order the phase works on them: the policy's plan order for
/// those on the bus, then the missing ones in the VM's order.
pub fn plan_devices(
    host: &Machine,
    vm_policy: &VmPolicy,
    phase: Phase,
    managed: &[PassedFunction],
) -> Vec<PlannedDevice> {
    let mut infos = Vec::new();
    for f in managed {
        if is_present(host, f.bdf) {
            if let Ok(i) = DeviceInfo::read(host, f.bdf) {
                infos.push(i);
            }
        }
    }
    // Functions sharing a slot with a managed one tell an AMD GPU's audio from other audio.
    let mut others = Vec::new();
    if let Ok(present) = pve::present_functions(&host.sysfs) {
        for b in present {
            let same_slot = managed.iter().any(|f| f.bdf.slot() == b.slot());
            if same_slot && !managed.iter().any(|f| f.bdf == b) {
                if let Ok(i) = DeviceInfo::read(host, b) {
                    others.push(i);
                }
            }
        }
    }
    let plan = vm_policy.plan(phase, &infos, &others);
    let hostpci = |b: Bdf| managed.iter().find(|f| f.bdf == b).map_or(0, |f| f.hostpci);
    let mut out: Vec<PlannedDevice> = plan
        .devices
        .iter()
        .map(|d| PlannedDevice {
            bdf: d.bdf,
            hostpci: hostpci(d.bdf),
            kind: Some(d.kind),
            chain: d.chain.clone(),
            present: true,
        })
        .collect();
    for f in managed {
        if !out.iter().any(|d| d.bdf == f.bdf) {
            out.push(PlannedDevice {
                bdf: f.bdf,
                hostpci: f.hostpci,
                kind: None,
                chain: vm_policy.chain_for(f.bdf, DeviceKind::Other),
                present: is_present(host, f.bdf),
            });
        }
    }
    out
}

/// A chain checked against the engine's method table.
#[derive(Clone)]
pub struct ResolvedChain {
    pub specs: Vec<MethodSpec>,
    /// Methods of the built-in chain this build does not have (`smu_mode2` before it lands).
    pub unavailable: Vec<String>,
}

impl ResolvedChain {
    pub fn labels(&self) -> Vec<String> {
        self.specs.iter().map(MethodSpec::label).collect()
    }
}

/// Checks a device's chain against the engine. In the built-in chain of the device's kind a
/// method this build lacks is left out (and listed); in a chain the policy file sets, it is a
/// configuration error naming the file.
pub fn resolve_chain(
    names: &[String],
    kind: Option<DeviceKind>,
    bdf: Bdf,
    policy_path: Option<&Path>,
) -> Result<ResolvedChain> {
    let builtin = kind.is_some_and(|k| names == policy::default_chain(k).as_slice());
    let mut specs = Vec::new();
    let mut unavailable = Vec::new();
    for n in names {
        match parse_method(n) {
            Ok(s) => specs.push(s),
            Err(_) if builtin => unavailable.push(n.clone()),
            Err(e) => {
                let from = policy_path.map_or_else(
                    || "the built-in policy".to_string(),
                    |p| p.display().to_string(),
                );
                return Err(Error::failed(format!(
                    "the chain of {bdf} in {from} names an unknown method: {}",
                    e.one_line()
                )));
            }
        }
    }
    if specs.is_empty() {
        return Err(Error::failed(format!(
            "no method of the chain of {bdf} ({}) is known to this resetlab",
            names.join(", ")
        )));
    }
    Ok(ResolvedChain { specs, unavailable })
}

/// Options for a device's reset chain: `remaining` is the chain's budget (the engine ends every
/// wait by it), and each wait is also capped at a share of it, so that one method's wait cannot
/// take the whole budget from the methods after it.
pub fn method_options(remaining: Duration) -> ResetOptions {
    let w = remaining / WAITS_PER_METHOD;
    let d = ResetOptions::default();
    ResetOptions {
        ready_timeout: w.min(d.ready_timeout),
        wait_timeout: w.min(d.wait_timeout),
        lock_timeout: w.min(d.lock_timeout),
        budget: Some(remaining),
        ..d
    }
}

/// How one action on one device ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ActionResult {
    Done,
    Skipped,
    Failed,
}

/// One action on one device.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ActionRecord {
    pub action: Action,
    pub device: Bdf,
    pub result: ActionResult,
    /// In words (the log line without its prefix).
    pub detail: String,
    /// The reset method that worked (or was tried last).
    pub method: Option<String>,
    /// Wall time of the action.
    pub ms: f64,
    /// Of that, time in the kernel's operation: the sysfs write and waiting for its effect.
    pub kernel_ms: f64,
}

/// One managed device at the end of the phase.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct DeviceSummary {
    pub bdf: Bdf,
    pub hostpci: u8,
    pub kind: Option<DeviceKind>,
    pub chain: Vec<String>,
    pub present_before: bool,
    pub present_after: bool,
    pub driver_after: Option<String>,
    pub state: Option<StateRecord>,
}

/// What a phase did (`--json`).
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct PhaseReport {
    pub vmid: u32,
    pub phase: Phase,
    pub node: Option<String>,
    pub migrated_from: Option<String>,
    /// The policy file, `null` for the built-in defaults.
    pub policy: Option<PathBuf>,
    pub actions_planned: Vec<Action>,
    pub budget_ms: u64,
    pub elapsed_ms: f64,
    pub fail_on_error: bool,
    /// No action failed.
    pub ok: bool,
    /// What the hook exits with: non-zero only for a failed pre-start with `fail_start_on_error`.
    pub exit_code: i32,
    pub devices: Vec<DeviceSummary>,
    pub actions: Vec<ActionRecord>,
    pub errors: Vec<String>,
    pub log: Vec<LogLine>,
    /// Every write made, in order.
    pub writes: Vec<Record>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn ms_int(d: Duration) -> u128 {
    d.as_millis()
}

/// Runs one phase. Construct with [`PhaseRunner::new`] (which loads everything and never
/// fails), read [`PhaseRunner::budget`] to arm a watchdog, then [`PhaseRunner::run`].
pub struct PhaseRunner<'a> {
    host: &'a Machine,
    /// `--regs` overlay directories; the register database is loaded only when a reset runs
    /// (parsing it is most of a no-op phase's own time).
    regs_dirs: Vec<PathBuf>,
    regs: Option<RegsDb>,
    opts: HookOptions,
    vmid: u32,
    phase: Phase,
    start: Instant,
    setup: Result<VmSetup>,
    store: StateStore,
    log: Logger,
    journal: Journal,
    actions: Vec<ActionRecord>,
    errors: Vec<String>,
    /// What the phase is doing now, for a watchdog's last words.
    pub progress: Arc<Mutex<String>>,
}

impl<'a> PhaseRunner<'a> {
    pub fn new(
        host: &'a Machine,
        regs_dirs: Vec<PathBuf>,
        opts: HookOptions,
        vmid: u32,
        phase: Phase,
    ) -> PhaseRunner<'a> {
        let start = Instant::now();
        let log = Logger::new(host, format!("resetlab: VM {vmid} {phase}: "), opts.stderr);
        let store = StateStore::new(opts.state_dir_for(host));
        let setup = VmSetup::load(host, &opts, vmid);
        PhaseRunner {
            host,
            regs_dirs,
            regs: None,
            opts,
            vmid,
            phase,
            start,
            setup,
            store,
            log,
            journal: Journal::new(false),
            actions: Vec::new(),
            errors: Vec::new(),
            progress: Arc::new(Mutex::new("loading the configuration".into())),
        }
    }

    /// The phase's time budget (the built-in one if the configuration did not load).
    pub fn budget(&self) -> Duration {
        match &self.setup {
            Ok(s) => s.vm_policy.phase(self.phase).budget,
            Err(_) => self.phase.default_budget(),
        }
    }

    /// Whether a failure makes the hook exit non-zero (pre-start with `fail_start_on_error`).
    pub fn fail_on_error(&self) -> bool {
        match &self.setup {
            Ok(s) => self.phase == Phase::PreStart && s.vm_policy.fail_start_on_error,
            Err(_) => self.phase == Phase::PreStart && policy::DEFAULT_FAIL_START_ON_ERROR,
        }
    }

    pub fn started(&self) -> Instant {
        self.start
    }

    /// Time left for actions: the budget less a reserve for recording and logging the end.
    fn remaining(&self) -> Duration {
        let budget = self.budget();
        let reserve = finish_reserve(budget);
        (self.start + budget - reserve).saturating_duration_since(Instant::now())
    }

    fn set_progress(&self, what: String) {
        if let Ok(mut p) = self.progress.lock() {
            *p = what;
        }
    }

    fn record(&mut self, rec: ActionRecord) {
        match rec.result {
            ActionResult::Failed => {
                self.log.err(format!("{} {}", rec.device, rec.detail));
                self.errors.push(format!("{} {}", rec.device, rec.detail));
            }
            _ => self.log.info(format!("{} {}", rec.device, rec.detail)),
        }
        self.actions.push(rec);
    }

    fn mark(&mut self, bdf: Bdf, state: DeviceState, method: Option<&str>) {
        if let Err(e) = self.store.mark(bdf, state, method, Some(self.vmid)) {
            let msg = format!("{bdf}: cannot record its state: {}", e.one_line());
            self.log.err(&msg);
            self.errors.push(msg);
        }
    }

    pub fn run(mut self) -> PhaseReport {
        let loaded = match &self.setup {
            Ok(s) => Ok((s.managed(), s.vm_policy.clone(), s.policy.path.clone())),
            Err(e) => Err(e.one_line()),
        };
        let (mut managed, vm_policy, policy_path) = match loaded {
            Ok(x) => x,
            Err(e) => {
                let msg = format!("configuration not usable, nothing done: {e}");
                self.log.err(&msg);
                self.errors.push(msg);
                return self.finish(None, Vec::new(), Vec::new(), Vec::new());
            }
        };
        let PhasePolicy {
            mut actions,
            budget,
        } = vm_policy.phase(self.phase);
        if let Some(e) = self
            .setup
            .as_ref()
            .ok()
            .and_then(|s| s.policy_error.clone())
        {
            actions.retain(|a| *a == Action::EnsurePresent);
            let msg = format!(
                "policy not usable, only bringing missing functions back (built-in defaults): {e}"
            );
            self.log.err(&msg);
            self.errors.push(msg);
        }
        let present_timeout = vm_policy.present_timeout;
        let remove_timeout = vm_policy.remove_timeout;
        let mut devices = plan_devices(self.host, &vm_policy, self.phase, &managed);
        let present_before: Vec<(Bdf, bool)> = devices.iter().map(|d| (d.bdf, d.present)).collect();
        let names: Vec<String> = devices.iter().map(|d| d.bdf.to_string()).collect();
        let acts: Vec<&str> = actions.iter().map(|a| a.as_str()).collect();
        let migrated = self
            .opts
            .migrated_from
            .as_ref()
            .map(|n| format!(", migrated from {n}"))
            .unwrap_or_default();
        self.log.info(format!(
            "{} device(s) [{}], actions [{}], budget {} s{migrated}",
            devices.len(),
            names.join(" "),
            acts.join(" "),
            budget.as_secs_f64()
        ));
        if devices.is_empty() {
            self.log
                .info("no managed PCI function in this VM's config: nothing to do");
        }
        for action in &actions {
            match action {
                Action::EnsurePresent => {
                    self.ensure_present(&devices, present_timeout);
                    let host = self.host;
                    if let Ok(s) = &mut self.setup {
                        if s.refresh(host, &self.store).is_ok() {
                            managed = s.managed();
                        }
                    }
                    devices = plan_devices(self.host, &vm_policy, self.phase, &managed);
                }
                Action::ResetIfDirty | Action::Reset => {
                    for d in devices.clone() {
                        let check = vm_policy.device_check && d.kind == Some(DeviceKind::AmdGpu);
                        self.reset_device(&d, *action, policy_path.as_deref(), check);
                    }
                }
                Action::Remove => {
                    for d in devices.clone() {
                        self.remove_device(&d, remove_timeout);
                    }
                }
                Action::Release => {
                    let d = devices.clone();
                    self.release_devices(&d, &vm_policy);
                }
                Action::MarkDirty => {
                    for d in devices.clone() {
                        self.mark_dirty(&d);
                    }
                }
            }
        }
        self.finish(policy_path, actions, devices, present_before)
    }

    fn finish(
        mut self,
        policy_path: Option<PathBuf>,
        planned: Vec<Action>,
        devices: Vec<PlannedDevice>,
        present_before: Vec<(Bdf, bool)>,
    ) -> PhaseReport {
        let elapsed = self.start.elapsed();
        let ok = self.errors.is_empty();
        let fail = self.fail_on_error();
        let exit_code = if !ok && fail { exit::FAILED } else { exit::OK };
        if ok {
            self.log.info(format!("done in {} ms", ms_int(elapsed)));
        } else if self.phase == Phase::PreStart {
            let verdict = if fail {
                "stopping the VM start (fail_start_on_error)"
            } else {
                "the VM start goes on (fail_start_on_error = false)"
            };
            self.log.err(format!(
                "{} error(s) in {} ms; {verdict}",
                self.errors.len(),
                ms_int(elapsed)
            ));
        } else {
            self.log.err(format!(
                "{} error(s) in {} ms",
                self.errors.len(),
                ms_int(elapsed)
            ));
        }
        let summaries = devices
            .iter()
            .map(|d| {
                let dir = self.host.device_dir(&d.bdf);
                DeviceSummary {
                    bdf: d.bdf,
                    hostpci: d.hostpci,
                    kind: d.kind,
                    chain: d.chain.clone(),
                    present_before: present_before
                        .iter()
                        .find(|(b, _)| *b == d.bdf)
                        .is_some_and(|(_, p)| *p),
                    present_after: is_present(self.host, d.bdf),
                    driver_after: link_name(&dir.join("driver")).ok().flatten(),
                    state: match self.store.read(d.bdf) {
                        StateLookup::Found(r) => Some(r),
                        _ => None,
                    },
                }
            })
            .collect();
        PhaseReport {
            vmid: self.vmid,
            phase: self.phase,
            node: self.setup.as_ref().ok().and_then(|s| s.node.clone()),
            migrated_from: self.opts.migrated_from.clone(),
            policy: policy_path,
            actions_planned: planned,
            budget_ms: self.budget().as_millis() as u64,
            elapsed_ms: ms(elapsed),
            fail_on_error: fail,
            ok,
            exit_code,
            devices: summaries,
            actions: self.actions,
            errors: self.errors,
            log: self.log.lines,
            writes: self.journal.writes().cloned().collect(),
        }
    }

    /// Budget check before an action on a device; records the failure when it is spent.
    fn out_of_budget(&mut self, action: Action, d: &PlannedDevice) -> bool {
        if !self.remaining().is_zero() {
            return false;
        }
        let detail = format!(
            "{}: not started, the phase's budget of {} s is used up",
            action.as_str(),
            self.budget().as_secs_f64()
        );
        self.record(ActionRecord {
            action,
            device: d.bdf,
            result: ActionResult::Failed,
            detail,
            method: None,
            ms: 0.0,
            kernel_ms: 0.0,
        });
        true
    }

    fn rel<'p>(&self, p: &'p Path) -> &'p Path {
        p.strip_prefix(&self.host.sysfs).unwrap_or(p)
    }
}
