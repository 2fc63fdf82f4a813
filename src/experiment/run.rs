//! The experiment runner: executes a resolved [`Plan`] on a device, step by
//! step, through the engine's journal and guards. Without `commit` it touches
//! nothing: the plan (every register resolved and bounds-checked) is the dry
//! run. With `commit` it holds the device lock for the whole run, keeps
//! memory decoding on for the duration, records every write before it is made
//! and every step's result after, and stops at a failed `expect`, a timed-out
//! `poll`, or Ctrl-C between steps.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::parse::{CapKind, CfgLoc, CfgRef};
use super::resolve::{BarInfo, BarReg, FieldInfo, Op, Plan, PlanStep, RegInfo, Resolver};
use crate::amd::regs::{Asic, RegsDb};
use crate::amd::smu::Smu;
use crate::error::{Error, Result};
use crate::machine::Machine;
use crate::pci::caps::Caps;
use crate::pci::config::{read_width, ConfigAccess, SysfsConfig};
use crate::pci::mmio::{self, Access, BarMap, SystemFiles};
use crate::pci::session::{config_for_writes, Session, SessionOptions};
use crate::pci::{Bdf, Device, Topology};
use crate::reset::engine::run_chain_in_session;
use crate::reset::{parse_chain, parse_method, Journal, ResetOptions};

/// Resolves an experiment's names against a device and the register database.
pub struct DeviceResolver<'a> {
    pub asic: Option<&'a Asic>,
    pub bar: BarInfo,
}

impl<'a> DeviceResolver<'a> {
    /// The ASIC from `--asic` or the device's ids; the BAR from `--bar`, the
    /// ASIC's register BAR, or BAR 0.
    pub fn for_device(
        regs: &'a RegsDb,
        dev: &Device,
        asic: Option<&str>,
        bar: Option<u8>,
    ) -> Result<Self> {
        let asic = match asic {
            Some(name) => Some(regs.asic(name)?),
            None => regs.by_pci_id(dev.vendor, dev.device),
        };
        let index = bar.or(asic.map(|a| a.file.bar.index)).unwrap_or(0);
        let len = mmio::check_bar(dev, index)?;
        Ok(DeviceResolver {
            asic,
            bar: BarInfo { index, len },
        })
    }
}

impl Resolver for DeviceResolver<'_> {
    fn bar(&self) -> BarInfo {
        self.bar
    }

    fn register(&self, name: &str) -> Option<RegInfo> {
        let r = self.asic?.resolve(name).ok()?;
        Some(RegInfo {
            offset: r.bar_offset,
            width: 4,
        })
    }

    fn field(&self, register: &str, field: &str) -> Option<FieldInfo> {
        let r = self.asic?.register(register).ok()?;
        let f = r
            .fields
            .iter()
            .find(|f| f.name.eq_ignore_ascii_case(field))?;
        Some(FieldInfo {
            shift: f.lsb,
            width: f.width,
        })
    }

    fn smu_message(&self, name: &str) -> Option<u32> {
        self.asic?.message(name).ok().map(|m| m.id)
    }

    fn reset_method(&self, name: &str) -> std::result::Result<(), String> {
        parse_method(name).map(|_| ()).map_err(|e| e.to_string())
    }

    fn register_names(&self) -> Vec<String> {
        self.asic
            .map(|a| a.file.registers.iter().map(|r| r.name.clone()).collect())
            .unwrap_or_default()
    }

    fn field_names(&self, reg: &str) -> Vec<String> {
        self.asic
            .and_then(|a| a.register(reg).ok())
            .map(|r| r.fields.iter().map(|f| f.name.clone()).collect())
            .unwrap_or_default()
    }

    fn smu_message_names(&self) -> Vec<String> {
        self.asic
            .map(|a| a.file.messages.iter().map(|m| m.name.clone()).collect())
            .unwrap_or_default()
    }
}

/// One executed step, as printed and as traced.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct StepResult {
    /// 1-based position in the plan.
    pub step: usize,
    pub line: usize,
    pub column: usize,
    pub source: String,
    pub op: String,
    pub t_ms: f64,
    pub duration_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub register: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub written: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smu_response: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smu_response_name: Option<String>,
    /// `snapshot` steps: register name → value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<(String, BTreeMap<String, u32>)>,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct RunReport {
    pub device: String,
    pub committed: bool,
    pub completed: bool,
    pub interrupted: bool,
    pub steps: Vec<StepResult>,
    pub total_ms: f64,
}

/// Options of one run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub force: bool,
    pub asic: Option<String>,
    pub bar: Option<u8>,
    pub lock_timeout: Duration,
}

/// Set by SIGINT: the run stops before the next step.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

fn reg_name(r: &BarReg) -> String {
    r.name
        .clone()
        .unwrap_or_else(|| format!("BAR{}+{:#x}", r.bar, r.offset))
}

struct Runner<'a> {
    host: &'a Machine,
    regs: &'a RegsDb,
    dev: Device,
    asic: Option<&'a Asic>,
    bar_index: u8,
    bar: Option<BarMap>,
    smu: Option<Smu<'a>>,
    opts: &'a RunOptions,
    name: Bdf,
    /// The tree as scanned when the run began (a `reset` step re-reads the device in it).
    topo: Topology,
}

impl<'a> Runner<'a> {
    fn map(&self) -> Result<BarMap> {
        let sys = SystemFiles::for_host(self.host);
        BarMap::open(&self.dev, self.bar_index, Access::ReadWrite, &sys)
    }

    fn bar(&mut self) -> Result<&mut BarMap> {
        if self.bar.is_none() {
            self.bar = Some(self.map()?);
        }
        self.bar
            .as_mut()
            .ok_or_else(|| Error::failed("BAR not mapped"))
    }

    fn smu(&mut self) -> Result<&mut Smu<'a>> {
        if self.smu.is_none() {
            let asic = self.asic.ok_or_else(|| {
                Error::failed(format!(
                    "{}: SMU and SMN steps need an ASIC from regs/ (the ids are not in it: name one with --asic)",
                    self.name
                ))
            })?;
            let bar = self.map()?;
            self.smu = Some(Smu::new(asic, None, bar, self.name)?);
        }
        self.smu
            .as_mut()
            .ok_or_else(|| Error::failed("SMU not set up"))
    }

    fn read(&mut self, r: &BarReg) -> Result<u32> {
        check_width(r)?;
        self.bar()?.read32(r.offset)
    }

    fn write(&mut self, journal: &mut Journal, r: &BarReg, v: u32) -> Result<()> {
        check_width(r)?;
        let name = self.name;
        self.bar()?.write32(journal, &name, r.offset, v)
    }

    fn cfg_offset(&self, cfg: &dyn ConfigAccess, loc: &CfgLoc) -> Result<u16> {
        match &loc.reg {
            CfgRef::Offset(o) => Ok(*o),
            CfgRef::Cap {
                name,
                kind,
                id,
                plus,
            } => {
                let caps = Caps::walk(cfg);
                let base = match kind {
                    CapKind::Std => caps.find(*id as u8),
                    CapKind::Ext => caps.find_ext(*id),
                };
                base.map(|b| b + plus).ok_or_else(|| {
                    Error::failed(format!(
                        "{}: the device has no {name} capability",
                        self.name
                    ))
                })
            }
        }
    }

    /// Registers a `snapshot` with no list records: the ASIC's health and
    /// mailbox registers, or the first 16 dwords of the BAR.
    fn default_snapshot(&self) -> Vec<BarReg> {
        if let Some(a) = self.asic {
            let mut names: Vec<String> = a
                .file
                .health
                .iter()
                .filter(|h| h.kind == crate::amd::regs::HealthKind::Register)
                .map(|h| h.target.clone())
                .collect();
            if let Ok(m) = a.mailbox(None) {
                names.extend([
                    m.msg_register.clone(),
                    m.arg_register.clone(),
                    m.resp_register.clone(),
                ]);
            }
            names.dedup();
            return names
                .into_iter()
                .filter_map(|n| {
                    a.resolve(&n).ok().map(|r| BarReg {
                        bar: self.bar_index,
                        offset: r.bar_offset,
                        width: 4,
                        name: Some(n),
                    })
                })
                .collect();
        }
        (0..16)
            .map(|i| BarReg {
                bar: self.bar_index,
                offset: i * 4,
                width: 4,
                name: None,
            })
            .collect()
    }

    fn exec(
        &mut self,
        session: &mut Session<'_>,
        step: &PlanStep,
        res: &mut StepResult,
    ) -> Result<()> {
        let journal = session.journal();
        match &step.op {
            Op::Read { reg } => {
                res.register = Some(reg_name(reg));
                res.read = Some(self.read(reg)?.into());
            }
            Op::Write { reg, value } => {
                res.register = Some(reg_name(reg));
                self.write(journal, reg, *value as u32)?;
                res.written = Some(*value);
            }
            Op::Modify {
                reg, mask, value, ..
            } => {
                res.register = Some(reg_name(reg));
                let old = self.read(reg)?;
                let new = (old & !(*mask as u32)) | (*value as u32);
                res.read = Some(old.into());
                self.write(journal, reg, new)?;
                res.written = Some(new.into());
            }
            Op::Poll {
                reg,
                mask,
                value,
                timeout_us,
            } => {
                res.register = Some(reg_name(reg));
                let bound = Duration::from_micros(*timeout_us);
                let start = Instant::now();
                let mut spin = 0u32;
                loop {
                    let v = self.read(reg)?;
                    res.read = Some(v.into());
                    if u64::from(v) & mask == *value {
                        break;
                    }
                    if start.elapsed() >= bound {
                        return Err(Error::Timeout {
                            what: format!(
                                "{} & {mask:#x} == {value:#x} (last read {v:#010x})",
                                reg_name(reg)
                            ),
                            bound_ms: bound.as_millis() as u64,
                        });
                    }
                    // A short spin for fast bits, then back off.
                    spin += 1;
                    if spin > 100 {
                        std::thread::sleep(Duration::from_micros(200).min(bound));
                    }
                }
            }
            Op::Expect { reg, mask, value } => {
                res.register = Some(reg_name(reg));
                let v = self.read(reg)?;
                res.read = Some(v.into());
                if u64::from(v) & mask != *value {
                    return Err(Error::failed(format!(
                        "expected {} & {mask:#x} == {value:#x}, read {v:#010x}",
                        reg_name(reg)
                    )));
                }
            }
            Op::Sleep { us } => std::thread::sleep(Duration::from_micros(*us)),
            Op::CfgRead { cfg } => {
                let c = SysfsConfig::open(&self.dev.config_path())?;
                let off = self.cfg_offset(&c, cfg)?;
                res.register = Some(
                    cfg.name
                        .clone()
                        .unwrap_or_else(|| format!("config+{off:#x}")),
                );
                res.read = Some(read_width(&c, off, usize::from(cfg.width.bytes()))?.into());
            }
            Op::CfgWrite { cfg, value } => {
                let mut c = config_for_writes(&self.dev, journal)?;
                let off = self.cfg_offset(&c, cfg)?;
                res.register = Some(
                    cfg.name
                        .clone()
                        .unwrap_or_else(|| format!("config+{off:#x}")),
                );
                journal.config_write(
                    &self.name,
                    &mut c,
                    off,
                    usize::from(cfg.width.bytes()),
                    *value,
                )?;
                res.written = Some((*value).into());
            }
            Op::SmnRead { addr } => {
                res.register = Some(format!("SMN {addr:#010x}"));
                res.read = self.smu()?.smn_read(journal, *addr)?.map(u64::from);
            }
            Op::SmnWrite { addr, value } => {
                res.register = Some(format!("SMN {addr:#010x}"));
                self.smu()?.smn_write(journal, *addr, *value)?;
                res.written = Some((*value).into());
            }
            Op::Smu {
                msg,
                name,
                arg,
                wait,
            } => {
                let label = name.clone().unwrap_or_else(|| format!("{msg:#x}"));
                res.register = Some(format!("SMU {label}"));
                res.written = Some((*arg).into());
                if *wait {
                    let reply = self.smu()?.send_id(journal, &label, *msg, *arg)?;
                    res.smu_response = reply.response;
                    res.smu_response_name = reply.response_name.clone();
                    res.read = reply.value.map(u64::from);
                } else {
                    // Post only: response = 0, argument, message (a following
                    // poll times the answer).
                    let smu = self.smu()?;
                    let m = smu.mailbox.clone();
                    let dev = self.name;
                    let bar = self.smu()?.bar_mut();
                    bar.write32(journal, &dev, m.resp, 0)?;
                    bar.write32(journal, &dev, m.arg, *arg)?;
                    bar.write32(journal, &dev, m.msg, *msg)?;
                }
            }
            Op::Reset { method } => {
                let chain = parse_chain(method)?;
                let opts = ResetOptions {
                    force: self.opts.force,
                    asic: self.opts.asic.clone(),
                    bar: self.opts.bar,
                    ..Default::default()
                };
                // The mappings may go stale (remove_rescan re-creates the files).
                self.bar = None;
                self.smu = None;
                // Inside the run's session: its lock, its wake.
                let report =
                    run_chain_in_session(session, self.regs, &mut self.topo, &chain, &opts)?;
                if let Ok(d) = Device::load(self.host, self.dev.bdf) {
                    self.dev = d;
                }
                if !report.success {
                    let why = report
                        .runs
                        .last()
                        .map(|r| {
                            r.error.clone().unwrap_or_else(|| {
                                r.health
                                    .as_ref()
                                    .and_then(|h| h.failure())
                                    .unwrap_or_else(|| r.verdict.reason.clone())
                            })
                        })
                        .unwrap_or_default();
                    return Err(Error::failed(format!(
                        "reset {method} did not leave the device healthy: {why}"
                    )));
                }
            }
            Op::Snapshot { name, regs } => {
                let list = if regs.is_empty() {
                    self.default_snapshot()
                } else {
                    regs.clone()
                };
                let mut map = BTreeMap::new();
                for r in &list {
                    map.insert(reg_name(r), self.read(r)?);
                }
                res.snapshot = Some((name.clone(), map));
            }
            Op::Label { .. } => {}
        }
        Ok(())
    }
}

fn check_width(r: &BarReg) -> Result<()> {
    if r.width != 4 {
        return Err(Error::failed(format!(
            "{}: only 32-bit BAR access is supported",
            reg_name(r)
        )));
    }
    Ok(())
}

/// Runs `plan` on `dev` for real (the caller has resolved it; a dry run is
/// the plan itself). Stops at the first failing step.
pub fn run(
    host: &Machine,
    regs: &RegsDb,
    dev: &Device,
    plan: &Plan,
    opts: &RunOptions,
    journal: &mut Journal,
    mut on_step: impl FnMut(&StepResult),
) -> Result<RunReport> {
    let start = Instant::now();
    let mut topo = Topology::scan(host)?;
    let name = dev.bdf;
    journal.method = format!("run {}", plan.path.display());
    // Locked for the whole run, guarded, and (MMIO of a suspended device, or
    // one with memory decoding off, reads all-ones) awake and decoding: both
    // put back when the session closes.
    let sopts = SessionOptions {
        dry_run: false,
        force: opts.force,
        lock_timeout: opts.lock_timeout,
        wake_timeout: Duration::from_secs(10),
        writes: "run --commit writes the device's registers".into(),
        dry_run_hint: "leave out --commit for the dry run",
    };
    let mut session = Session::open(host, &mut topo, &dev.bdf, &[], &sopts, journal)?;
    session.keep_memory_decoding()?;
    let dev = session.device().clone();
    let asic = match &opts.asic {
        Some(a) => Some(regs.asic(a)?),
        None => regs.by_pci_id(dev.vendor, dev.device),
    };
    let mut r = Runner {
        host,
        regs,
        dev: dev.clone(),
        asic,
        bar_index: plan.bar.index,
        bar: None,
        smu: None,
        opts,
        name,
        topo,
    };
    let mut steps = Vec::new();
    let mut interrupted = false;
    let mut completed = true;
    for (i, step) in plan.steps.iter().enumerate() {
        if INTERRUPTED.load(Ordering::Relaxed) {
            interrupted = true;
            completed = false;
            break;
        }
        let t = Instant::now();
        let mut res = StepResult {
            step: i + 1,
            line: step.span.line,
            column: step.span.column,
            source: step.span.text.clone(),
            op: step.op.to_string(),
            t_ms: start.elapsed().as_secs_f64() * 1e3,
            duration_ms: 0.0,
            register: None,
            read: None,
            written: None,
            smu_response: None,
            smu_response_name: None,
            snapshot: None,
            ok: true,
            error: None,
        };
        let outcome = r.exec(&mut session, step, &mut res);
        res.duration_ms = t.elapsed().as_secs_f64() * 1e3;
        if let Err(e) = &outcome {
            res.ok = false;
            res.error = Some(format!(
                "step {} ({}:{}:{}): {}",
                i + 1,
                plan.path.display(),
                step.span.line,
                step.span.column,
                e.one_line()
            ));
        }
        let mut line = serde_json::to_value(&res).unwrap_or_default();
        if let Some(o) = line.as_object_mut() {
            o.insert("kind".into(), "step".into());
        }
        session.journal().trace_line(&line)?;
        on_step(&res);
        let failed = !res.ok;
        steps.push(res);
        if failed {
            completed = false;
            break;
        }
    }
    drop(r);
    session.close()?;
    Ok(RunReport {
        device: name.to_string(),
        committed: true,
        completed,
        interrupted,
        steps,
        total_ms: start.elapsed().as_secs_f64() * 1e3,
    })
}

/// One changed register between two snapshots of a trace.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct DiffRow {
    pub register: String,
    pub a: Option<u32>,
    pub b: Option<u32>,
}

/// `run diff TRACE A B`: the registers whose values differ between the
/// snapshots named A and B (the last of each name in the trace).
pub fn diff(trace: &Path, a: &str, b: &str) -> Result<Vec<DiffRow>> {
    let text = crate::bounded_read::read_text(trace, crate::bounded_read::TRACE_MAX)?;
    let mut snaps: BTreeMap<String, BTreeMap<String, u32>> = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| Error::FileParse {
            path: trace.to_path_buf(),
            line: n + 1,
            column: e.column(),
            reason: format!("not a JSON line: {e}"),
        })?;
        if let Some(s) = v.get("snapshot").and_then(|s| s.as_array()) {
            if let (Some(name), Some(map)) = (
                s.first().and_then(|x| x.as_str()),
                s.get(1).and_then(|m| m.as_object()),
            ) {
                let regs = map
                    .iter()
                    .filter_map(|(k, v)| v.as_u64().map(|v| (k.clone(), v as u32)))
                    .collect();
                snaps.insert(name.to_string(), regs);
            }
        }
    }
    let get = |n: &str| {
        snaps.get(n).cloned().ok_or_else(|| {
            Error::not_found(
                "snapshot",
                format!(
                    "{n} in {} (has: {})",
                    trace.display(),
                    snaps.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            )
        })
    };
    let (sa, sb) = (get(a)?, get(b)?);
    let mut names: Vec<&String> = sa.keys().chain(sb.keys()).collect();
    names.sort();
    names.dedup();
    Ok(names
        .into_iter()
        .filter(|n| sa.get(*n) != sb.get(*n))
        .map(|n| DiffRow {
            register: n.clone(),
            a: sa.get(n).copied(),
            b: sb.get(n).copied(),
        })
        .collect())
}
