//! The orchestrator, after `pci_reset_function` (drivers/pci/pci.c): it owns
//! the guards, the lock, waking a runtime-suspended device, save / disable /
//! restore, the one shared readiness wait and the health check. Methods only
//! do their mechanism. A method whose probe says no is skipped (the next one
//! is tried); a method that fails, or leaves the device unhealthy, is
//! reported and the chain goes on; the chain stops at the first healthy one.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::health::{pci_checks, Health, HealthItem, VENDOR_CHECKS};
use super::journal::{Journal, Record};
use super::state::SavedState;
use super::{
    wait, Analysis, Configs, Managed, MethodSpec, Outcome, ResetCtx, ResetOptions, Verdict,
};
use crate::amd::regs::RegsDb;
use crate::error::{Error, Result};
use crate::machine::Machine;
use crate::pci::caps::Decoded;
use crate::pci::config::{ConfigAccess, MemConfig};
use crate::pci::regs::*;
use crate::pci::session::{config_for_writes, Session, SessionOptions};
use crate::pci::sysfs::Parent;
use crate::pci::{Bdf, Device, Topology};

/// Waking for the duration is the PCI layer's (the AMD register readers need it too).
pub use crate::pci::power::{unwake, wake};

/// Milliseconds spent in each phase of one method.
#[derive(Debug, Clone, Default, Serialize, schemars::JsonSchema)]
pub struct Phases {
    pub probe_ms: f64,
    pub save_ms: f64,
    pub reset_ms: f64,
    pub ready_ms: f64,
    pub restore_ms: f64,
    pub health_ms: f64,
    pub total_ms: f64,
}

/// One method of the chain.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct MethodRun {
    pub method: String,
    pub verdict: Verdict,
    /// Whether the mechanism ran.
    pub attempted: bool,
    pub outcome: Option<Outcome>,
    pub error: Option<String>,
    /// Exit-code class of the error (`timeout`, `refused`, …) when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<&'static str>,
    pub health: Option<Health>,
    pub phases: Phases,
}

impl MethodRun {
    pub fn succeeded(&self) -> bool {
        self.attempted && self.error.is_none() && self.health.as_ref().is_some_and(|h| h.healthy)
    }
}

/// The whole chain's report.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ChainReport {
    pub device: Bdf,
    pub dry_run: bool,
    pub runs: Vec<MethodRun>,
    pub success: bool,
    /// The method after which the device was healthy.
    pub method: Option<String>,
    /// Every write, in order (what `--dry-run` would make).
    pub writes: Vec<Record>,
    pub total_ms: f64,
    /// The chain's time budget ([`ResetOptions::budget`]), when it had one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget_ms: Option<u64>,
    /// Methods of the chain not started because the budget was spent.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_started: Vec<String>,
    /// Where the chain stopped after its first methods ran, for a reason every later method
    /// would meet too (the device is gone, a guard refuses). Before the first method such a
    /// reason is the chain's error instead; here the runs before it are kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<ChainStop>,
}

/// Why a chain stopped before `method` (and the methods after it).
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ChainStop {
    pub method: String,
    pub error: String,
    /// As [`MethodRun::error_kind`]: `refused`, `timeout`, `failed`, …
    pub error_kind: String,
}

impl ChainStop {
    fn new(method: String, e: &Error) -> ChainStop {
        ChainStop {
            method,
            error: e.one_line(),
            error_kind: error_kind(e).to_string(),
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn error_kind(e: &Error) -> &'static str {
    match e.exit_code() {
        crate::error::exit::TIMEOUT => "timeout",
        crate::error::exit::REFUSED => "refused",
        crate::error::exit::USAGE => "usage",
        crate::error::exit::SYSTEM => "system",
        _ => "failed",
    }
}

/// The default chain of a device: the vendor method of its ASIC first when
/// the register database knows it, then the kernel's, raw methods, and the
/// remove/rescan that is known to work.
pub fn default_chain(regs: &RegsDb, dev: &Device) -> Vec<MethodSpec> {
    let names: &[&str] = if regs.by_pci_id(dev.vendor, dev.device).is_some()
        && super::METHODS.iter().any(|m| m.name == "smu_mode2")
    {
        &["smu_mode2", "remove_rescan"]
    } else {
        &["kernel", "flr", "af_flr", "pm", "bus", "remove_rescan"]
    };
    names
        .iter()
        .filter_map(|n| super::parse_method(n).ok())
        .collect()
}

/// What a reset writes, for the refusal without root.
pub const RESET_WRITES: &str = "resetting a device writes to sysfs and config space";

/// Refuses without root unless it is a dry run: cheap, so it is checked
/// before waiting for a lock too.
pub fn require_root(opts: &ResetOptions) -> Result<()> {
    crate::pci::session::require_root(opts.dry_run, RESET_WRITES)
}

/// The guards for a device and every other function a method would hit (its
/// blast radius): root, then the device session's guards
/// ([`crate::pci::session::guards`]: platform function, VFIO holders, host
/// driver), read afresh on every call.
pub fn guards_for(
    host: &Machine,
    topo: &Topology,
    dev: &Device,
    affects: &[Bdf],
    opts: &ResetOptions,
) -> Result<()> {
    require_root(opts)?;
    crate::pci::session::guards(host, topo, dev, affects, opts.force)
}

/// The session options of a reset with `opts`.
pub fn session_options(opts: &ResetOptions) -> SessionOptions {
    SessionOptions {
        dry_run: opts.dry_run,
        force: opts.force,
        // Within the chain's budget, if it has one.
        lock_timeout: opts.lock_bound(),
        wake_timeout: opts.wait_bound(),
        ..SessionOptions::new(RESET_WRITES)
    }
}

/// The functions a chain on `dev` locks besides the device: for a bus reset
/// every function it would hit, with `--whole-slot` the slot's other functions.
pub fn chain_affects(
    topo: &Topology,
    dev: &Device,
    chain: &[MethodSpec],
    opts: &ResetOptions,
) -> Vec<Bdf> {
    let mut v = vec![];
    if chain.iter().any(|m| m.def.name == "bus") {
        v.extend(topo.bus_blast_radius(dev));
    }
    if opts.slot {
        v.extend(dev.bus_peers.iter().filter(|b| b.slot() == dev.bdf.slot()));
    }
    v.retain(|b| *b != dev.bdf);
    v.sort();
    v.dedup();
    v
}

/// RRS Software Visibility enabled on the root port above (pci_dev_wait).
fn rrs_enabled(topo: &Topology, dev: &Device) -> bool {
    let mut cur = dev.parent.clone();
    while let Parent::Bridge(b) = cur {
        let Some(d) = topo.get(&b) else { return false };
        if let Ok(bytes) = d.read_config() {
            if let Ok(dec) = Decoded::decode(&MemConfig::image(b.to_string(), bytes)) {
                if let Some(e) = dec.exp {
                    if e.port_type() == PCI_EXP_TYPE_ROOT_PORT {
                        return e
                            .rtctl
                            .is_some_and(|c| RtCtl::from_bits_retain(c).contains(RtCtl::RRS_SVE));
                    }
                }
            }
        }
        cur = d.parent.clone();
    }
    false
}

/// Runs a chain of methods on one device.
pub fn run_chain(
    host: &Machine,
    regs: &RegsDb,
    bdf: &Bdf,
    chain: &[MethodSpec],
    opts: &ResetOptions,
    journal: &mut Journal,
) -> Result<ChainReport> {
    let topo = Topology::scan(host)?;
    run_chain_in(host, regs, topo, bdf, chain, opts, journal)
}

/// [`run_chain`] on a tree the caller has scanned already: the tree is read
/// once per command (5044 devices take seconds), and after that only the
/// device itself is re-read (with the locks held, and after each method,
/// which may have re-created it). Opens the device session (root, guards,
/// locks, wake) for the chain and closes it after.
pub fn run_chain_in(
    host: &Machine,
    regs: &RegsDb,
    mut topo: Topology,
    bdf: &Bdf,
    chain: &[MethodSpec],
    opts: &ResetOptions,
    journal: &mut Journal,
) -> Result<ChainReport> {
    let start = Instant::now();
    // The budget counts from here: every wait below is cut to what is left.
    let opts = &ResetOptions {
        deadline: opts.budget.map(|b| start + b),
        ..opts.clone()
    };
    require_root(opts)?;
    let dev = topo.require(bdf)?.clone();
    let affects = chain_affects(&topo, &dev, chain, opts);
    let mut session = Session::open(
        host,
        &mut topo,
        bdf,
        &affects,
        &session_options(opts),
        journal,
    )
    .map_err(|e| match e {
        // The lock's wait ends in a refusal naming the holder.
        Error::Refused { reason } if opts.budget_spent() => Error::Refused {
            reason: format!("{reason}{}", opts.budget_note()),
        },
        e => opts.explain(e),
    })?;
    let r = run_chain_in_session(&mut session, regs, &mut topo, chain, opts);
    session.journal().method = String::new();
    let closed = session.close();
    let mut report = r?;
    closed?;
    report.writes = journal.writes().cloned().collect();
    report.total_ms = ms(start.elapsed());
    Ok(report)
}

/// Runs a chain inside a session the caller holds (an experiment's `reset`
/// step): its locks and wake are the session's, its guards run again here
/// and before each method over what that method would hit. The session puts
/// back power control when it ends, not the chain.
pub fn run_chain_in_session(
    session: &mut Session<'_>,
    regs: &RegsDb,
    topo: &mut Topology,
    chain: &[MethodSpec],
    opts: &ResetOptions,
) -> Result<ChainReport> {
    let start = Instant::now();
    let host = session.host();
    let bdf = session.device().bdf;
    // As it is now: an earlier step of the session may have re-created it.
    topo.reload(host, &bdf)?;
    session.guards_over(topo, &[])?;
    let mut runs = Vec::new();
    let mut success = None;
    let mut not_started = Vec::new();
    let mut stopped = None;
    for (i, spec) in chain.iter().enumerate() {
        if opts.budget_spent() {
            not_started.extend(chain[i..].iter().map(|s| s.label()));
            break;
        }
        // Re-read the device: an earlier method may have re-created it.
        let dev = if i == 0 {
            topo.require(&bdf)?.clone()
        } else {
            match topo.reload(host, &bdf) {
                Ok(d) => d.clone(),
                Err(_) => {
                    let e = Error::failed(format!("{bdf} is gone (removed and not rescanned)"));
                    stopped = Some(ChainStop::new(spec.label(), &e));
                    break;
                }
            }
        };
        let run = match run_one(host, regs, topo, &dev, *spec, opts, session.journal()) {
            Ok(run) => run,
            // Before anything ran, the chain's error; after, the runs so far are kept.
            Err(e) if runs.is_empty() => return Err(opts.explain(e)),
            Err(e) => {
                stopped = Some(ChainStop::new(spec.label(), &opts.explain(e)));
                break;
            }
        };
        let ok = run.succeeded();
        runs.push(run);
        if ok {
            success = Some(spec.label());
            break;
        }
    }
    let journal = session.journal();
    journal.method = String::new();
    Ok(ChainReport {
        device: bdf,
        dry_run: opts.dry_run,
        success: success.is_some() || (opts.dry_run && runs.iter().any(|r| r.attempted)),
        method: success,
        runs,
        writes: journal.writes().cloned().collect(),
        total_ms: ms(start.elapsed()),
        budget_ms: opts.budget.map(|b| b.as_millis() as u64),
        not_started,
        stopped,
    })
}

fn run_one(
    host: &Machine,
    regs: &RegsDb,
    topo: &Topology,
    dev: &Device,
    spec: MethodSpec,
    opts: &ResetOptions,
    journal: &mut Journal,
) -> Result<MethodRun> {
    let t0 = Instant::now();
    let mut phases = Phases::default();
    journal.method = spec.label();
    let mut want = vec![dev.bdf];
    if let Parent::Bridge(b) = &dev.parent {
        want.push(*b);
    }
    let configs = Configs::load(topo, want.iter());
    let a = Analysis {
        host,
        topo,
        dev,
        configs: &configs,
        force: opts.force,
        regs,
        opts,
        arg: spec.arg,
    };
    let verdict = (spec.def.probe)(&a);
    phases.probe_ms = ms(t0.elapsed());
    let mut run = MethodRun {
        method: spec.label(),
        verdict: verdict.clone(),
        attempted: false,
        outcome: None,
        error: None,
        error_kind: None,
        health: None,
        phases,
    };
    if !verdict.available {
        run.phases.total_ms = ms(t0.elapsed());
        return Ok(run);
    }
    // Again before each method, over everything this one would hit.
    guards_for(host, topo, dev, &verdict.affects, opts)?;
    run.attempted = true;
    let fail = |run: &mut MethodRun, e: Error| {
        let e = opts.explain(e);
        run.error_kind = Some(error_kind(&e));
        run.error = Some(e.one_line());
    };
    let bdf = dev.bdf;
    // Save and disable (pci_dev_save_and_disable) around a raw mechanism.
    let t = Instant::now();
    let saved = if spec.def.managed == Managed::Raw {
        let r = (|| -> Result<SavedState> {
            let mut cfg = config_for_writes(dev, journal)?;
            let s = SavedState::save(&bdf, &cfg)?;
            journal.config_write(
                &bdf,
                &mut cfg,
                PCI_COMMAND,
                2,
                Command::INTX_DISABLE.bits() as u32,
            )?;
            Ok(s)
        })();
        match r {
            Ok(s) => Some(s),
            Err(e) => {
                fail(&mut run, e);
                run.phases.total_ms = ms(t0.elapsed());
                return Ok(run);
            }
        }
    } else {
        None
    };
    run.phases.save_ms = ms(t.elapsed());
    let t = Instant::now();
    let mut ctx = ResetCtx {
        host,
        topo,
        dev,
        journal,
        opts,
        regs,
        arg: spec.arg,
    };
    let outcome = (spec.def.reset)(&mut ctx);
    run.phases.reset_ms = ms(t.elapsed());
    match outcome {
        Ok(o) => run.outcome = Some(o),
        Err(e) => fail(&mut run, e),
    }
    // Readiness and restore for raw methods (also after a failure: put back
    // what we disabled).
    if let Some(saved) = &saved {
        let t = Instant::now();
        let r = (|| -> Result<()> {
            let mut cfg = config_for_writes(dev, ctx.journal)?;
            if !opts.dry_run {
                wait::wait_ready(
                    &cfg,
                    rrs_enabled(topo, dev),
                    opts.ready_bound(),
                    &bdf.to_string(),
                )?;
            }
            run.phases.ready_ms = ms(t.elapsed());
            let t2 = Instant::now();
            if opts.dry_run {
                // What a restore would write: every saved register, COMMAND last.
                for r in &saved.regs {
                    ctx.journal.note(
                        Some(&bdf),
                        format!(
                            "would restore {} at {:#05x} to {:#x} if changed",
                            r.name, r.offset, r.value
                        ),
                    )?;
                }
            } else {
                saved.restore(ctx.journal, &mut cfg)?;
            }
            run.phases.restore_ms = ms(t2.elapsed());
            Ok(())
        })();
        if let Err(e) = r {
            if run.error.is_none() {
                fail(&mut run, e);
            }
        }
    }
    if opts.dry_run || run.error.is_some() {
        run.phases.total_ms = ms(t0.elapsed());
        return Ok(run);
    }
    let t = Instant::now();
    // A method that re-created the device (remove_rescan) leaves a new one
    // with power/control=auto that its driver may runtime-suspend at once:
    // keep it awake for the checks too (the chain's end puts back what the
    // device had before).
    if spec.def.managed == Managed::Kernel {
        if let Ok(now) = Device::load(host, dev.bdf) {
            if let Err(e) = wake(&now, ctx.journal, opts.wait_bound()) {
                fail(&mut run, e);
                run.phases.total_ms = ms(t0.elapsed());
                return Ok(run);
            }
        }
    }
    run.health = Some(health(&mut ctx, saved.as_ref()));
    run.phases.health_ms = ms(t.elapsed());
    run.phases.total_ms = ms(t0.elapsed());
    Ok(run)
}

fn health(ctx: &mut ResetCtx, saved: Option<&SavedState>) -> Health {
    let after = match Device::load(ctx.host, ctx.dev.bdf) {
        Ok(d) => d,
        Err(e) => return Health::from_items(vec![HealthItem::new("present", false, e.one_line())]),
    };
    let mut items = pci_checks(ctx.dev, &after, saved);
    if items.iter().all(|i| i.ok) {
        for check in VENDOR_CHECKS {
            if let Some(v) = check(ctx) {
                items.extend(v);
                break;
            }
        }
    }
    Health::from_items(items)
}

/// Reads the config of a device as the orchestrator sees it (for tests and
/// `--dry-run` comparisons).
pub fn config_bytes(dev: &Device) -> Result<Vec<u8>> {
    let cfg = dev.open_config()?;
    let mut v = vec![0u8; cfg.len()];
    cfg.read(0, &mut v)?;
    Ok(v)
}
