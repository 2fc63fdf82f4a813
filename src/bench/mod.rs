//! `resetlab bench`: repeated, timed trials of reset methods with health
//! verdicts, and the reports made from them.
//!
//! A trial is one method applied to one device through the reset engine
//! ([`run_chain`] with a one-method chain: every guard, the lock and the
//! journal apply), optionally after making the device dirty (a command, or
//! the twin's in-process `mark_dirty`). In VM mode a trial is a whole
//! stop → method → start → guest-check cycle. Methods are interleaved
//! (A B C A B C …) so that drift over the run hits all of them alike.
//!
//! Success is the engine's verdict (mechanism ran, no error, health checks
//! passed) or, in VM mode, "the guest answered its check after the start";
//! the bench never looks at the twin's model to decide.
//!
//! Files of a run (`--out DIR`): `meta.json` (the plan, wall time, why it
//! stopped), `trials.jsonl` (one [`Trial`] per line, written as it ends),
//! then `trials.csv`, `summary.json`, `latency.svg`, `success.svg`,
//! `report.md` and `report.html` (self-contained), all re-made from the
//! first two by `resetlab bench report DIR`.

pub mod cliout;
pub mod cmd;
pub mod compare;
pub mod order;
pub mod plot;
pub mod provenance;
pub mod report;
pub mod signif;
pub mod stats;
pub mod twin_vm;

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::amd::regs::RegsDb;
use crate::error::{Error, Result};
use crate::machine::Machine;
use crate::pci::{Bdf, Topology};
use crate::reset::engine::{run_chain, MethodRun, Phases};
use crate::reset::{Analysis, Configs, Journal, MethodSpec, ResetOptions, METHODS};

use cmd::{CmdVars, Step};

/// The most cycles one bench runs (`-n`): its trials are kept in memory for
/// the report (about 1 KiB each, a few MB at most).
pub const MAX_CYCLES: usize = 10_000;

/// The phases of a trial, in the engine's order (`total` is the method's
/// whole time, probe to health).
pub const PHASES: &[&str] = &[
    "probe", "save", "reset", "ready", "restore", "health", "total",
];

/// The engine's phase times of one trial (ms).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PhaseMs {
    pub probe: f64,
    pub save: f64,
    pub reset: f64,
    pub ready: f64,
    pub restore: f64,
    pub health: f64,
    pub total: f64,
}

impl PhaseMs {
    pub fn get(&self, name: &str) -> f64 {
        match name {
            "probe" => self.probe,
            "save" => self.save,
            "reset" => self.reset,
            "ready" => self.ready,
            "restore" => self.restore,
            "health" => self.health,
            "total" => self.total,
            _ => f64::NAN,
        }
    }
}

impl From<&Phases> for PhaseMs {
    fn from(p: &Phases) -> PhaseMs {
        PhaseMs {
            probe: p.probe_ms,
            save: p.save_ms,
            reset: p.reset_ms,
            ready: p.ready_ms,
            restore: p.restore_ms,
            health: p.health_ms,
            total: p.total_ms,
        }
    }
}

/// The VM part of a VM-mode trial.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct VmSteps {
    pub stop: Step,
    /// Not run when the device is gone.
    pub start: Option<Step>,
    /// The last guest check (absent when the start failed).
    pub guest: Option<Step>,
    /// Guest checks made until it answered or the bound ran out.
    pub checks: usize,
    /// Start command issued → first successful guest check (ms).
    pub ready_ms: Option<f64>,
}

/// One trial: one line of `trials.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Trial {
    /// Order in the run, from 0.
    pub seq: usize,
    /// A warm-up trial: reported apart, left out of every statistic.
    #[serde(default)]
    pub warmup: bool,
    /// Cycle, from 0: every method once per cycle.
    pub cycle: usize,
    pub method: String,
    /// Run with `--force` (its probe refuses otherwise).
    pub forced: bool,
    pub device: String,
    /// When the trial began, ms after the run began (monotonic clock).
    pub t_ms: f64,
    /// The dirty step before the method, when there is one.
    pub dirty: Option<Step>,
    /// The probe said the method applies.
    pub applies: bool,
    /// The mechanism ran.
    pub attempted: bool,
    /// The engine's verdict: ran, no error, healthy after.
    pub method_ok: bool,
    /// The trial's verdict: `method_ok`, or in VM mode "the guest came back".
    pub success: bool,
    /// Why the trial is not a success.
    pub reason: Option<String>,
    /// Why the method itself is not a success (the same as `reason` outside
    /// VM mode).
    pub method_reason: Option<String>,
    /// `timeout`, `refused`, `failed`, … of the engine's error.
    pub error_kind: Option<String>,
    /// The health verdict, when health was checked.
    pub healthy: Option<bool>,
    /// Names of the failing health checks.
    pub health_failed: Vec<String>,
    pub phases: PhaseMs,
    /// The engine's whole one-method chain: topology scan, guards, lock,
    /// wake, the method (ms).
    pub chain_ms: f64,
    pub vm: Option<VmSteps>,
    /// The hook's phase times, in a twin VM cycle with release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook: Option<twin_vm::HookMs>,
}

/// How the device is made dirty before each trial.
#[derive(Debug, Clone)]
pub enum Dirty {
    None,
    /// A shell command (`{dev}`, `{sysfs}` substituted).
    Command(String),
    /// The twin at this root: its in-process `mark_dirty`.
    Twin(PathBuf),
}

impl Dirty {
    pub fn describe(&self) -> String {
        match self {
            Dirty::None => "none".into(),
            Dirty::Command(c) => format!("command: {c}"),
            Dirty::Twin(_) => "the twin's mark_dirty (as a guest driver leaves the GPU)".into(),
        }
    }
}

/// The commands of VM mode (`{vmid}`, `{dev}` substituted).
#[derive(Debug, Clone)]
pub struct VmPlan {
    pub vmid: String,
    pub stop_cmd: String,
    pub start_cmd: String,
    pub check_cmd: String,
    /// Bound on the guest answering its check after the start.
    pub guest_timeout: Duration,
    /// Pause between guest checks.
    pub check_interval: Duration,
}

/// A method to bench.
#[derive(Clone)]
pub struct Planned {
    pub spec: MethodSpec,
    /// Run with `--force` (its probe refuses otherwise).
    pub forced: bool,
}

impl Planned {
    pub fn label(&self) -> String {
        self.spec.label()
    }
}

/// What to run.
#[derive(Clone)]
pub struct Plan {
    pub device: Bdf,
    pub methods: Vec<Planned>,
    pub cycles: usize,
    pub dirty: Dirty,
    pub vm: Option<VmPlan>,
    /// Whole VM cycles on the twin with its fake QEMU (instead of `vm`'s commands).
    pub twin_vm: Option<twin_vm::TwinVm>,
    /// Options for every trial (`force` is set per method when planned so).
    pub opts: ResetOptions,
    /// Bound on each command (dirty, stop, start, one guest check).
    pub cmd_timeout: Duration,
    /// Append every write of every trial to this trace file.
    pub trace: Option<PathBuf>,
    /// Shuffle each cycle's order with this seed (see [`order`]).
    pub seed: Option<u64>,
    /// One warm-up trial per method before the cycles.
    pub warmup: bool,
}

/// The run's description: `meta.json`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Meta {
    pub resetlab: String,
    pub device: String,
    /// vendor:device and class of the device, when it was present.
    pub device_name: Option<String>,
    pub mode: String,
    pub vmid: Option<String>,
    pub methods: Vec<String>,
    pub forced: Vec<String>,
    pub cycles: usize,
    pub dirty: String,
    pub sysfs: String,
    /// Seconds since the Unix epoch when the run began.
    pub started_unix: f64,
    /// Wall time of the trial loop (monotonic clock), ms.
    pub wall_ms: Option<f64>,
    /// The harness's own share of `wall_ms`: wall − Σ(engine, dirty and VM
    /// commands).
    pub harness_ms: Option<f64>,
    /// Why the run ended before its last planned trial.
    pub stopped: Option<String>,
    pub trials: usize,
    /// What a reader must know to read the results (a twin result resting on a hypothesis).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// The seed of the trial order (`--seed`); null: cycles in the order given.
    #[serde(default)]
    pub seed: Option<u64>,
    /// Whether one warm-up trial per method ran first (not in the statistics).
    #[serde(default)]
    pub warmup: bool,
    /// The command line, as run.
    #[serde(default)]
    pub argv: Vec<String>,
    /// ISO 8601 UTC start and end of the run.
    #[serde(default)]
    pub started: String,
    #[serde(default)]
    pub ended: Option<String>,
    /// The kernel release (`uname -r`) of the machine that ran it.
    #[serde(default)]
    pub kernel: String,
    /// The commit resetlab was built from, when known.
    #[serde(default)]
    pub commit: Option<String>,
    /// `live` (a real host) or `twin` (simulated: `--sim` or a replayed tree).
    #[serde(default)]
    pub host: String,
    #[serde(default)]
    pub firmware: Option<provenance::Firmware>,
}

/// What the loop reports as it goes (for a progress bar).
pub enum Progress<'a> {
    Start { total: usize },
    Trial(&'a Trial),
}

/// Methods left out of the default set when only `--force` allows them:
/// forcing `d3cold` where the platform has no `_PR3` cannot cut the power (its
/// probe says so), so each trial would only wait out its bound. Forcing `pm`
/// or `bus` overrides a kernel policy (a quirk, the blast radius) and the
/// mechanism does run: those are kept, to show whether they clean the device.
pub const FORCED_NOT_BY_DEFAULT: &[&str] = &["d3cold"];

/// Every method the device has: those its probe accepts, then (when
/// `include_forced`) those it accepts only with `--force`, marked forced
/// (except [`FORCED_NOT_BY_DEFAULT`]).
pub fn device_methods(
    host: &Machine,
    regs: &RegsDb,
    bdf: &Bdf,
    include_forced: bool,
) -> Result<Vec<Planned>> {
    let topo = Topology::scan(host)?;
    let dev = topo
        .get(bdf)
        .ok_or_else(|| Error::not_found("PCI device", bdf.to_string()))?;
    let mut want = vec![dev.bdf];
    if let crate::pci::sysfs::Parent::Bridge(b) = &dev.parent {
        want.push(*b);
    }
    let configs = Configs::load(&topo, want.iter());
    let mut out = Vec::new();
    for def in METHODS {
        let spec = MethodSpec { def, arg: None };
        let verdict = |force: bool| {
            let opts = ResetOptions {
                force,
                ..ResetOptions::default()
            };
            let a = Analysis {
                host,
                topo: &topo,
                dev,
                configs: &configs,
                force,
                regs,
                opts: &opts,
                arg: None,
            };
            (def.probe)(&a).available
        };
        if verdict(false) {
            out.push(Planned {
                spec,
                forced: false,
            });
        } else if include_forced && !FORCED_NOT_BY_DEFAULT.contains(&def.name) && verdict(true) {
            out.push(Planned { spec, forced: true });
        }
    }
    Ok(out)
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Turns the engine's report on one method into a trial's verdict fields.
pub(crate) fn judge(t: &mut Trial, run: &MethodRun) {
    t.applies = run.verdict.available;
    t.attempted = run.attempted;
    t.method_ok = run.succeeded();
    t.phases = PhaseMs::from(&run.phases);
    t.error_kind = run.error_kind.map(str::to_string);
    if let Some(h) = &run.health {
        t.healthy = Some(h.healthy);
        t.health_failed = h
            .items
            .iter()
            .filter(|i| !i.ok)
            .map(|i| i.name.clone())
            .collect();
    }
    t.method_reason = if t.method_ok {
        None
    } else if !run.verdict.available {
        Some(format!("does not apply: {}", run.verdict.reason))
    } else if let Some(e) = &run.error {
        Some(e.clone())
    } else if let Some(f) = run.health.as_ref().and_then(|h| h.failure()) {
        Some(format!("unhealthy: {f}"))
    } else {
        Some("no health verdict".into())
    };
}

/// Where a run's files go; trials are appended (and flushed) as they end.
pub struct Recorder {
    pub dir: PathBuf,
    trials: File,
}

impl Recorder {
    /// Creates `dir` (or uses an empty one); refuses a directory that already
    /// holds a run.
    pub fn create(dir: &Path) -> Result<Recorder> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
        let p = dir.join("trials.jsonl");
        let trials = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&p)
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    Error::refused(format!(
                        "{} already holds a bench run; choose another --out",
                        dir.display()
                    ))
                } else {
                    Error::io("create", &p, e)
                }
            })?;
        Ok(Recorder {
            dir: dir.to_path_buf(),
            trials,
        })
    }

    pub fn meta(&self, meta: &Meta) -> Result<()> {
        write_json(&self.dir.join("meta.json"), meta)
    }

    fn trial(&mut self, t: &Trial) -> Result<()> {
        let mut line = serde_json::to_vec(t)
            .map_err(|e| Error::failed(format!("cannot encode trial: {e}")))?;
        line.push(b'\n');
        let p = self.dir.join("trials.jsonl");
        self.trials
            .write_all(&line)
            .map_err(|e| Error::io("write", &p, e))
    }
}

pub(crate) fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<()> {
    let mut s = serde_json::to_string_pretty(v)
        .map_err(|e| Error::failed(format!("cannot encode {}: {e}", path.display())))?;
    s.push('\n');
    std::fs::write(path, s).map_err(|e| Error::io("write", path, e))
}

/// Runs the plan, recording as it goes; returns the trials and the final
/// meta (also written). Stops early only when the device is gone.
pub fn run(
    host: &Machine,
    regs: &RegsDb,
    plan: &Plan,
    rec: &mut Recorder,
    mut meta: Meta,
    progress: &mut dyn FnMut(Progress),
) -> Result<(Vec<Trial>, Meta)> {
    if plan.methods.is_empty() {
        return Err(Error::parse("method list", "", "name at least one method"));
    }
    if plan.cycles > MAX_CYCLES {
        return Err(Error::parse(
            "cycle count",
            plan.cycles.to_string(),
            format!("at most {MAX_CYCLES}"),
        ));
    }
    // What one cycle runs: in twin VM cycles the release row first, then the methods.
    let rows: Vec<twin_vm::Row> = plan
        .twin_vm
        .as_ref()
        .map(|_| twin_vm::Row::Release)
        .into_iter()
        .chain(plan.methods.iter().cloned().map(twin_vm::Row::Method))
        .collect();
    let turns = order::schedule(rows.len(), plan.cycles, plan.seed, plan.warmup);
    let total = turns.len();
    rec.meta(&meta)?;
    progress(Progress::Start { total });
    let start = Instant::now();
    let mut inner = Duration::ZERO;
    // Grown as trials come (each is on disk first): never sized up front.
    let mut trials = Vec::new();
    for turn in turns {
        let row = &rows[turn.row];
        let cycle = turn.cycle;
        let (mut t, spent) = match (&plan.twin_vm, row) {
            (Some(tv), r) => twin_vm::trial(host, regs, plan, tv, r, cycle, trials.len(), start)?,
            (None, twin_vm::Row::Method(m)) => {
                trial(host, regs, plan, m, cycle, trials.len(), start)?
            }
            (None, twin_vm::Row::Release) => continue,
        };
        t.warmup = turn.warmup;
        inner += spent;
        rec.trial(&t)?;
        progress(Progress::Trial(&t));
        trials.push(t);
        if !host.device_dir(&plan.device).exists() {
            meta.stopped = Some(format!(
                "{} is gone after {}{} in cycle {cycle} (not back after its rescan); \
                 stopped after {} of {total} trials",
                plan.device,
                t_label(plan, row),
                if turn.warmup { " (warm-up)" } else { "" },
                trials.len()
            ));
            break;
        }
    }
    let wall = start.elapsed();
    meta.ended = Some(provenance::iso8601(unix_now()));
    meta.wall_ms = Some(ms(wall));
    meta.harness_ms = Some(ms(wall.saturating_sub(inner)));
    meta.trials = trials.len();
    rec.meta(&meta)?;
    Ok((trials, meta))
}

/// A row's label: the method's own outside twin VM cycles.
fn t_label(plan: &Plan, row: &twin_vm::Row) -> String {
    match (plan.twin_vm.is_some(), row) {
        (false, twin_vm::Row::Method(m)) => m.label(),
        _ => row.label(),
    }
}

/// One trial; also returns the time spent outside the harness (engine,
/// commands).
fn trial(
    host: &Machine,
    regs: &RegsDb,
    plan: &Plan,
    m: &Planned,
    cycle: usize,
    seq: usize,
    start: Instant,
) -> Result<(Trial, Duration)> {
    let t0 = Instant::now();
    let mut spent = Duration::ZERO;
    let dev = plan.device.to_string();
    let vars = CmdVars {
        dev: dev.clone(),
        sysfs: host.sysfs.display().to_string(),
        vmid: plan.vm.as_ref().map(|v| v.vmid.clone()).unwrap_or_default(),
        cycle,
        method: m.label(),
    };
    let mut t = Trial {
        seq,
        warmup: false,
        cycle,
        method: m.label(),
        forced: m.forced,
        device: dev,
        t_ms: ms(t0.duration_since(start)),
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
    // Dirty (device mode) or stop the VM (VM mode: the guest leaves it dirty).
    let mut stop = None;
    if let Some(vm) = &plan.vm {
        let s0 = Instant::now();
        stop = Some(cmd::run(&vm.stop_cmd, &vars, plan.cmd_timeout));
        spent += s0.elapsed();
    } else {
        let d = Instant::now();
        let step = match &plan.dirty {
            Dirty::None => None,
            Dirty::Command(c) => Some(cmd::run(c, &vars, plan.cmd_timeout)),
            Dirty::Twin(root) => Some(match crate::sim::model::mark_dirty(root, &plan.device) {
                Ok(()) => Step::ok(ms(d.elapsed()), "marked dirty"),
                Err(e) => Step::failed(ms(d.elapsed()), e.one_line()),
            }),
        };
        spent += d.elapsed();
        t.dirty = step;
    }
    // The method, through the engine.
    let chain = [m.spec];
    let mut opts = plan.opts.clone();
    opts.force |= m.forced;
    let mut journal = Journal::new(false);
    if let Some(p) = &plan.trace {
        journal = journal.with_trace(p)?;
    }
    let e0 = Instant::now();
    let r = run_chain(host, regs, &plan.device, &chain, &opts, &mut journal);
    spent += e0.elapsed();
    match r {
        Ok(report) => {
            t.chain_ms = report.total_ms;
            match report.runs.first() {
                Some(run) => judge(&mut t, run),
                None => t.method_reason = Some("the engine ran no method".into()),
            }
        }
        Err(e) => {
            t.chain_ms = ms(e0.elapsed());
            t.error_kind = Some(
                match e.exit_code() {
                    crate::error::exit::TIMEOUT => "timeout",
                    crate::error::exit::REFUSED => "refused",
                    crate::error::exit::USAGE => "usage",
                    crate::error::exit::SYSTEM => "system",
                    _ => "failed",
                }
                .to_string(),
            );
            t.method_reason = Some(e.one_line());
        }
    }
    if let (Some(vm), Some(stop)) = (&plan.vm, stop) {
        let (steps, vm_spent) = vm_start(vm, &vars, plan.cmd_timeout, stop);
        spent += vm_spent;
        t.success = steps.guest.as_ref().is_some_and(|g| g.ok);
        t.reason = if t.success {
            None
        } else if !steps.stop.ok {
            Some(format!("stop: {}", steps.stop.detail))
        } else {
            match (&steps.start, &steps.guest) {
                (Some(s), _) if !s.ok => Some(format!("start: {}", s.detail)),
                (_, Some(g)) => Some(format!(
                    "guest not ready within {} ms ({} checks): {}",
                    vm.guest_timeout.as_millis(),
                    steps.checks,
                    g.detail
                )),
                _ => Some("not started".into()),
            }
        };
        t.vm = Some(steps);
    } else {
        t.success = t.method_ok;
        t.reason = t.method_reason.clone();
    }
    Ok((t, spent))
}

/// Start the VM and wait (bounded) for the guest check to pass.
fn vm_start(vm: &VmPlan, vars: &CmdVars, cmd_timeout: Duration, stop: Step) -> (VmSteps, Duration) {
    let s0 = Instant::now();
    let start = cmd::run(&vm.start_cmd, vars, cmd_timeout);
    let mut steps = VmSteps {
        stop,
        start: None,
        guest: None,
        checks: 0,
        ready_ms: None,
    };
    if !start.ok {
        steps.start = Some(start);
        return (steps, s0.elapsed());
    }
    steps.start = Some(start);
    loop {
        let left = vm.guest_timeout.saturating_sub(s0.elapsed());
        let g = cmd::run(
            &vm.check_cmd,
            vars,
            cmd_timeout.min(left.max(Duration::from_millis(1))),
        );
        steps.checks += 1;
        let ok = g.ok;
        steps.guest = Some(g);
        if ok {
            steps.ready_ms = Some(ms(s0.elapsed()));
            break;
        }
        if s0.elapsed() + vm.check_interval >= vm.guest_timeout {
            break;
        }
        std::thread::sleep(vm.check_interval);
    }
    (steps, s0.elapsed())
}

/// Reads a run back: `meta.json` and `trials.jsonl` (a line that does not
/// parse is an error naming it).
pub fn load(dir: &Path) -> Result<(Meta, Vec<Trial>)> {
    let mp = dir.join("meta.json");
    let text = std::fs::read_to_string(&mp).map_err(|e| Error::io("read", &mp, e))?;
    let meta: Meta = serde_json::from_str(&text).map_err(|e| Error::FileParse {
        path: mp.clone(),
        line: e.line(),
        column: e.column(),
        reason: e.to_string(),
    })?;
    let tp = dir.join("trials.jsonl");
    let f = File::open(&tp).map_err(|e| Error::io("read", &tp, e))?;
    let mut trials = Vec::new();
    for (i, line) in BufReader::new(f).lines().enumerate() {
        let line = line.map_err(|e| Error::io("read", &tp, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let t: Trial = serde_json::from_str(&line).map_err(|e| Error::FileParse {
            path: tp.clone(),
            line: i + 1,
            column: e.column(),
            reason: e.to_string(),
        })?;
        trials.push(t);
    }
    Ok((meta, trials))
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// `YYYYMMDD-HHMMSS` (UTC) of a Unix time, for default directory names.
pub fn utc_stamp(unix: f64) -> String {
    let secs = if unix.is_finite() && unix > 0.0 {
        unix as i64
    } else {
        0
    };
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Days to civil date (H. Hinnant, "chrono-Compatible Low-Level Date Algorithms").
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_stamps() {
        assert_eq!(utc_stamp(0.0), "19700101-000000");
        // date -u -d @1700000000 +%Y%m%d-%H%M%S
        assert_eq!(utc_stamp(1_700_000_000.0), "20231114-221320");
        assert_eq!(utc_stamp(951_782_400.0), "20000229-000000");
        assert_eq!(utc_stamp(f64::NAN), "19700101-000000");
    }
}
