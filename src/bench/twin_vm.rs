//! Whole VM cycles on the twin, with its fake QEMU (`sim::qemu`): the comparison the field
//! report's evidence asks for (FACTS.md, "What the field report's experiments show").
//!
//! Two kinds of row, interleaved like methods:
//!
//! - `release, then stop`: the hook's phases as Proxmox runs them, in this process: post-start,
//!   pre-stop (its default `release`: QMP `device_del` and the wait for the guest), QEMU stops,
//!   post-stop, then pre-start, start again, and the guest's check. Each phase's time is kept.
//! - `stop, then M`: QEMU stops while the guest still drives the GPU (no pre-stop: a `qm stop`
//!   without the hook, a crash), then method M through the engine, start again, check.
//!
//! Success is the check of the second start: the guest could use its GPU (it was clean at the
//! start). Every trial begins on a freshly booted twin (no dirty GPU, no hook records), so one
//! trial's failure does not decide the next.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::cmd::Step;
use super::{judge, ms, PhaseMs, Plan, Planned, Trial, VmSteps};
use crate::amd::regs::RegsDb;
use crate::error::Result;
use crate::hook::policy::Phase;
use crate::hook::run::{HookOptions, PhaseRunner};
use crate::machine::Machine;
use crate::reset::engine::run_chain;
use crate::reset::Journal;
use crate::sim::qemu::{Exit, FakeQemu, Guest, VmOptions};

/// The label of the release row.
pub const RELEASE_ROW: &str = "release, then stop";

/// What the twin's VM cycles need.
#[derive(Debug, Clone)]
pub struct TwinVm {
    /// The twin's root (its `etc/pve`, `var/run/qemu-server`, `model/`).
    pub root: PathBuf,
    pub vmid: u32,
    /// The guest ejects a device this long after QEMU asks it to.
    pub release_ms: u64,
}

/// The hook's phase times of one `release, then stop` trial (ms, each phase's own wall time).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct HookMs {
    pub post_start: f64,
    pub pre_stop: f64,
    pub post_stop: f64,
    pub pre_start: f64,
    /// The guest's own share of pre-stop: the longest device_del → DEVICE_DELETED.
    pub release: Option<f64>,
}

/// One row of a twin VM run.
#[derive(Clone)]
pub enum Row {
    Release,
    Method(Planned),
}

impl Row {
    pub fn label(&self) -> String {
        match self {
            Row::Release => RELEASE_ROW.to_string(),
            Row::Method(m) => format!("stop, then {}", m.label()),
        }
    }
}

fn hook_opts(tv: &TwinVm) -> HookOptions {
    HookOptions::on(&crate::machine::Machine::new(tv.root.join("sys")))
}

/// A freshly booted twin: no GPU left dirty, no hook records (`/run` is a tmpfs).
fn reboot(tv: &TwinVm) {
    if let Ok(rd) = std::fs::read_dir(crate::sim::model::model_dir(&tv.root).join("dirty")) {
        for e in rd.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
    }
    let _ = std::fs::remove_dir_all(crate::machine::Machine::new(tv.root.join("sys")).state_dir());
}

fn start(tv: &TwinVm) -> (Option<FakeQemu>, Step) {
    let t = Instant::now();
    let opts = VmOptions {
        guest: Guest::Release { ms: tv.release_ms },
        ..VmOptions::default()
    };
    match FakeQemu::start(&tv.root, tv.vmid, opts) {
        Ok(q) => (Some(q), Step::ok(ms(t.elapsed()), "started")),
        Err(e) => (None, Step::failed(ms(t.elapsed()), e.one_line())),
    }
}

/// One trial of `row`; also returns the time spent in the hook, QEMU and the engine.
#[allow(clippy::too_many_arguments)]
pub fn trial(
    host: &Machine,
    regs: &RegsDb,
    plan: &Plan,
    tv: &TwinVm,
    row: &Row,
    cycle: usize,
    seq: usize,
    run_start: Instant,
) -> Result<(Trial, Duration)> {
    let t0 = Instant::now();
    reboot(tv);
    let (forced, label) = match row {
        Row::Release => (false, row.label()),
        Row::Method(m) => (m.forced, row.label()),
    };
    let mut t = Trial {
        seq,
        cycle,
        method: label,
        forced,
        warmup: false,
        device: plan.device.to_string(),
        t_ms: ms(t0.duration_since(run_start)),
        dirty: None,
        applies: false,
        attempted: false,
        method_ok: false,
        success: false,
        reason: None,
        method_reason: None,
        error_kind: None,
        healthy: None,
        health_failed: vec![],
        phases: PhaseMs::default(),
        chain_ms: 0.0,
        vm: None,
        hook: None,
    };
    let phase = |p: Phase| {
        let r = PhaseRunner::new(host, Vec::new(), hook_opts(tv), tv.vmid, p).run();
        (r.elapsed_ms, r)
    };
    // First run of the VM: the guest takes the GPU.
    let (q, first) = start(tv);
    let Some(q) = q else {
        t.reason = Some(format!("first start: {}", first.detail));
        t.vm = Some(VmSteps {
            stop: first,
            start: None,
            guest: None,
            checks: 0,
            ready_ms: None,
        });
        return Ok((t, t0.elapsed()));
    };
    let stop = match row {
        Row::Release => {
            let mut h = HookMs {
                post_start: phase(Phase::PostStart).0,
                ..HookMs::default()
            };
            let (pre_stop, rep) = phase(Phase::PreStop);
            h.pre_stop = pre_stop;
            let released: Vec<f64> = rep
                .actions
                .iter()
                .filter(|a| a.method.as_deref() == Some("release"))
                .filter(|a| a.result == crate::hook::run::ActionResult::Done)
                .map(|a| a.kernel_ms)
                .collect();
            let all = !released.is_empty()
                && rep.actions.iter().all(|a| {
                    a.action != crate::hook::policy::Action::Release
                        || a.result != crate::hook::run::ActionResult::Failed
                });
            h.release = released.iter().copied().reduce(f64::max);
            let s0 = Instant::now();
            q.end(Exit::HostStop);
            let stop_ms = ms(s0.elapsed());
            h.post_stop = phase(Phase::PostStop).0;
            h.pre_start = phase(Phase::PreStart).0;
            // The release is this row's "method": attempted and timed as such.
            t.applies = true;
            t.attempted = true;
            t.method_ok = all;
            t.phases.reset = h.release.unwrap_or(pre_stop);
            t.phases.total = pre_stop;
            t.chain_ms = pre_stop;
            if !all {
                t.method_reason = Some(format!("pre-stop: {}", rep.errors.join("; ")));
            }
            t.hook = Some(h);
            Step {
                ok: all,
                ms: pre_stop + stop_ms,
                detail: if all {
                    format!(
                        "released by the guest in {:.1} ms, then stopped",
                        released.iter().copied().fold(0.0, f64::max)
                    )
                } else {
                    format!("not released, then stopped: {}", rep.errors.join("; "))
                },
            }
        }
        Row::Method(m) => {
            let s0 = Instant::now();
            let st = q.end(Exit::HostStop);
            let stop = Step::ok(
                ms(s0.elapsed()),
                format!(
                    "stopped while the guest drove the GPU (left dirty: {})",
                    st.left_dirty
                        .iter()
                        .map(|b| b.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
            let mut opts = plan.opts.clone();
            opts.force |= m.forced;
            let mut journal = Journal::new(false);
            if let Some(p) = &plan.trace {
                journal = journal.with_trace(p)?;
            }
            let e0 = Instant::now();
            match run_chain(host, regs, &plan.device, &[m.spec], &opts, &mut journal) {
                Ok(report) => {
                    t.chain_ms = report.total_ms;
                    match report.runs.first() {
                        Some(run) => judge(&mut t, run),
                        None => t.method_reason = Some("the engine ran no method".into()),
                    }
                }
                Err(e) => {
                    t.chain_ms = ms(e0.elapsed());
                    t.method_reason = Some(e.one_line());
                }
            }
            stop
        }
    };
    // Start again and ask the guest whether it has its GPU.
    let (q, again) = start(tv);
    let mut steps = VmSteps {
        stop,
        start: Some(again.clone()),
        guest: None,
        checks: 0,
        ready_ms: None,
    };
    if let Some(q) = q {
        let c0 = Instant::now();
        let ok = q.state().gpu_ok == Some(true);
        let check = if ok {
            Step::ok(ms(c0.elapsed()), "the guest uses its GPU")
        } else {
            Step::failed(
                ms(c0.elapsed()),
                "the guest's GPU did not come up: it was left dirty (the report's black screen)",
            )
        };
        steps.checks = 1;
        steps.ready_ms = ok.then(|| again.ms + ms(c0.elapsed()));
        steps.guest = Some(check);
        q.end(Exit::HostStop);
    }
    t.success = steps.guest.as_ref().is_some_and(|g| g.ok);
    t.reason = if t.success {
        None
    } else if !steps.stop.ok {
        Some(format!("stop: {}", steps.stop.detail))
    } else if let Some(s) = steps.start.as_ref().filter(|s| !s.ok) {
        Some(format!("start: {}", s.detail))
    } else {
        let g = steps.guest.as_ref().map_or("", |g| g.detail.as_str());
        Some(match &t.method_reason {
            Some(r) => format!("guest: {g} (method: {r})"),
            None => format!("guest: {g}"),
        })
    };
    t.vm = Some(steps);
    reboot(tv);
    Ok((t, t0.elapsed()))
}
