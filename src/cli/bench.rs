//! `resetlab bench DEV --methods M1,M2 --cycles N [--dirty-cmd CMD] [--out DIR]`,
//! `resetlab bench --vm VMID …`, `resetlab bench report DIR [DIR2]`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{print_json, Ctx, DevArgs};
use crate::bench::{self, cmd, report, Dirty, Meta, Plan, Planned, Progress, Recorder, VmPlan};
use crate::error::{exit, Error, Result};
use crate::pci::{Bdf, Topology};
use crate::reset::{parse_chain, ResetOptions};

#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub cmd: Option<BenchCmd>,
    #[command(flatten)]
    pub dev: DevArgs,
    /// Methods to compare (comma-separated, each its own trial): kernel, kernel:flr, flr,
    /// af_flr, pm, bus, d3cold, remove_rescan. Default: every method the device has
    /// (with --force, and on the twin, also those only --force allows).
    #[arg(long, short = 'm', value_name = "M[,M...]")]
    pub methods: Option<String>,
    /// Cycles: each cycle applies every method once, interleaved (A B C A B C …).
    #[arg(long, short = 'n', default_value_t = 10, value_name = "N",
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(0..=crate::bench::MAX_CYCLES as u64))]
    pub cycles: usize,
    /// Shuffle the order of the methods in each cycle with this seed (recorded in meta.json;
    /// one seed, one order). Without it, every cycle runs them in the order given.
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// No warm-up trial (by default each method runs once first, reported apart and left
    /// out of the statistics).
    #[arg(long)]
    pub no_warmup: bool,
    /// Run before every trial to make the device dirty ({dev}, {sysfs} substituted),
    /// e.g. 'resetlab sim dirty DIR {dev}'. On the twin (--sim) the default marks it dirty.
    #[arg(long, value_name = "CMD")]
    pub dirty_cmd: Option<String>,
    /// Do not make the device dirty before trials (also not on the twin).
    #[arg(long, conflicts_with = "dirty_cmd")]
    pub no_dirty: bool,
    /// Directory for trials and reports (default: ./resetlab-bench-YYYYMMDD-HHMMSS).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Go past the guards for every method (device in use, live drivers, quirks).
    #[arg(long)]
    pub force: bool,
    /// VM mode: per trial, stop the VM, apply the method, start it, wait for its guest.
    #[arg(long, value_name = "VMID")]
    pub vm: Option<String>,
    /// VM mode: the stop command ({vmid}, {dev} substituted); e.g. 'virsh destroy {vmid}'.
    #[arg(long, value_name = "CMD", default_value = "qm stop {vmid}")]
    pub stop_cmd: String,
    /// VM mode: the start command; e.g. 'virsh start {vmid}'.
    #[arg(long, value_name = "CMD", default_value = "qm start {vmid}")]
    pub start_cmd: String,
    /// VM mode: succeeds once the guest is up; e.g. 'virsh qemu-agent-command {vmid} {"execute":"guest-ping"}'.
    #[arg(long, value_name = "CMD", default_value = "qm guest cmd {vmid} ping")]
    pub check_cmd: String,
    /// VM mode: bound on the guest answering after the start, in ms.
    #[arg(long, value_name = "MS", default_value_t = 180_000, value_parser = crate::cli::ms)]
    pub guest_timeout: u64,
    /// VM mode: pause between guest checks, in ms.
    #[arg(long, value_name = "MS", default_value_t = 1_000, value_parser = crate::cli::ms)]
    pub check_interval: u64,
    /// Bound on each command (dirty, stop, start, one check), in ms.
    #[arg(long, value_name = "MS", default_value_t = 300_000, value_parser = crate::cli::ms)]
    pub cmd_timeout: u64,
    /// VM mode without DEV: the Proxmox config root to find the VM's device in.
    /// (default: /etc/pve, or the one beside a twin's or snapshot's tree).
    #[arg(long, value_name = "DIR")]
    pub pve_config: Option<PathBuf>,
    /// Append every write of every trial as a JSON line to FILE.
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,
    /// Bound of the readiness wait after a raw reset, in ms.
    #[arg(long, value_name = "MS", default_value_t = 60_000, value_parser = crate::cli::ms)]
    pub ready_timeout: u64,
    /// Bound of every other wait (device gone/back, power state), in ms.
    #[arg(long, value_name = "MS", default_value_t = 30_000, value_parser = crate::cli::ms)]
    pub wait_timeout: u64,
    /// Bound of waiting for another resetlab holding the device's lock, in ms.
    #[arg(long, value_name = "MS", default_value_t = 30_000, value_parser = crate::cli::ms)]
    pub lock_timeout: u64,
    /// On the twin's VM cycles: the guest ejects a device this long after QEMU asks, in ms.
    #[arg(long, value_name = "MS", default_value_t = 100, value_parser = crate::cli::ms)]
    pub release_ms: u64,
}

#[derive(clap::Subcommand, Debug)]
pub enum BenchCmd {
    /// Re-make the reports of a run from its trials.jsonl; with two runs, compare them side by side.
    Report {
        #[arg(num_args = 1..=2, required = true, value_name = "DIR")]
        dirs: Vec<PathBuf>,
        /// Comparison: also write compare.md and compare.html into DIR.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
}

/// The twin's GPU, what `resetlab --sim bench` benches without a DEV: by its
/// slot, so a twin of another family (`--sim-asic`) is benched the same way.
const TWIN_GPU_SLOT: &str = "c5:00.0";

/// The seed's VM, whose cycles `resetlab --sim bench` runs on the twin.
const TWIN_VM: &str = "100";

/// The field report's TL;DR hookscript, per phase (issue 13: pre-stop's two removes with their
/// `sleep 1`, 14.3 s; post-stop's and pre-start's rescan and `sleep 2`, 2.07 s and 2.05 s).
const SCRIPT_MS: [(&str, f64); 3] = [
    ("pre-stop", 14_300.0),
    ("post-stop", 2_070.0),
    ("pre-start", 2_050.0),
];

/// Median of the hook's phase times over the trials that have them, against the report's script.
fn hook_figures(trials: &[bench::Trial], release_ms: u64) -> Option<String> {
    let hooks: Vec<&bench::twin_vm::HookMs> =
        trials.iter().filter_map(|t| t.hook.as_ref()).collect();
    let med = |f: &dyn Fn(&bench::twin_vm::HookMs) -> f64| {
        bench::stats::Dist::of(hooks.iter().map(|h| f(h))).map(|d| d.median)
    };
    let pre_stop = med(&|h| h.pre_stop)?;
    let post_stop = med(&|h| h.post_stop)?;
    let pre_start = med(&|h| h.pre_start)?;
    let ours = pre_stop + post_stop + pre_start;
    let script: f64 = SCRIPT_MS.iter().map(|(_, v)| v).sum();
    Some(format!(
        "hook per cycle on the twin (median of {n}): pre-stop {} ms (the guest releases after \
         {release_ms} ms), post-stop {} ms, pre-start {} ms, together {} ms; the field report's \
         script: pre-stop {} ms, post-stop {} ms, pre-start {} ms, together {} ms",
        report::fmt_ms(pre_stop),
        report::fmt_ms(post_stop),
        report::fmt_ms(pre_start),
        report::fmt_ms(ours),
        report::fmt_ms(SCRIPT_MS[0].1),
        report::fmt_ms(SCRIPT_MS[1].1),
        report::fmt_ms(SCRIPT_MS[2].1),
        report::fmt_ms(script),
        n = hooks.len(),
    ))
}

fn device(ctx: &Ctx, args: &BenchArgs, topo: &Topology) -> Result<Bdf> {
    let named = args.dev.dev.is_some() || args.dev.slot.is_some() || args.dev.id.is_some();
    if named {
        return Ok(args.dev.resolve(topo)?.bdf);
    }
    if ctx.twin_root().is_some() && args.vm.is_none() {
        let d = DevArgs {
            slot: Some(TWIN_GPU_SLOT.into()),
            ..DevArgs::default()
        };
        return Ok(d.resolve(topo)?.bdf);
    }
    if let Some(vmid) = &args.vm {
        return vm_device(ctx, args, vmid, topo);
    }
    Err(Error::parse(
        "device",
        "",
        "name a device: DEV (0000:c5:00.0), -s SLOT or -d VENDOR:DEVICE (or --vm VMID on Proxmox)",
    ))
}

/// The VM's passed-through device from its Proxmox config: its first display
/// function, else its first function. A twin or unpacked snapshot keeps its
/// `etc/pve` beside `sys/`, and that is read unless `--pve-config` says otherwise.
fn vm_device(ctx: &Ctx, args: &BenchArgs, vmid: &str, topo: &Topology) -> Result<Bdf> {
    use crate::pve;
    let id: u32 = vmid.parse().map_err(|_| {
        Error::parse(
            "VM id",
            vmid,
            "without DEV, --vm must be a Proxmox VM number; name the device (DEV) for other VMs",
        )
    })?;
    let root = args
        .pve_config
        .clone()
        .unwrap_or_else(|| ctx.host.pve_etc());
    let present = pve::present_functions(&ctx.host.sysfs)?;
    let bdfs: Vec<Bdf> = pve::passed_functions(&root, id, &present, || pve::node_name(&ctx.host))?
        .functions
        .iter()
        .filter(|f| f.present)
        .map(|f| f.bdf)
        .collect();
    let display = bdfs
        .iter()
        .find(|b| topo.get(b).is_some_and(|d| d.class >> 16 == 0x03));
    display.or(bdfs.first()).copied().ok_or_else(|| {
        Error::not_found(
            "passed-through PCI device present in the config of VM",
            vmid.to_string(),
        )
    })
}

fn plan(ctx: &Ctx, args: &BenchArgs, bdf: Bdf) -> Result<Plan> {
    let twin = ctx.twin_root();
    let methods: Vec<Planned> = match &args.methods {
        Some(m) => parse_chain(m)?
            .into_iter()
            .map(|spec| Planned {
                spec,
                forced: false,
            })
            .collect(),
        None => bench::device_methods(&ctx.host, ctx.regs()?, &bdf, args.force || twin.is_some())?,
    };
    if methods.is_empty() {
        return Err(Error::failed(format!(
            "no reset method applies to {bdf} (see resetlab probe {bdf}); name methods with --methods"
        )));
    }
    if args.cycles == 0 {
        return Err(Error::parse("cycle count", "0", "run at least one cycle"));
    }
    let dirty = if args.no_dirty || args.vm.is_some() {
        Dirty::None
    } else if let Some(c) = &args.dirty_cmd {
        Dirty::Command(c.clone())
    } else if let Some(root) = twin {
        Dirty::Twin(root.to_path_buf())
    } else {
        Dirty::None
    };
    // On the twin, VM mode is whole cycles with its fake QEMU; `--sim bench` alone is that too
    // (the README's main job), for the seed's VM 100.
    let named = args.dev.dev.is_some() || args.dev.slot.is_some() || args.dev.id.is_some();
    let twin_vm = match twin {
        Some(root) if args.vm.is_some() || (args.methods.is_none() && !named) => {
            let vmid = args.vm.as_deref().unwrap_or(TWIN_VM);
            Some(bench::twin_vm::TwinVm {
                root: root.to_path_buf(),
                vmid: cmd::check_vmid(vmid)?
                    .parse()
                    .map_err(|_| Error::parse("VM id", vmid, "expected a Proxmox VM number"))?,
                release_ms: args.release_ms,
            })
        }
        _ => None,
    };
    let dirty = if twin_vm.is_some() {
        Dirty::None
    } else {
        dirty
    };
    let vm = match &args.vm {
        Some(_) if twin_vm.is_some() => None,
        Some(v) => Some(VmPlan {
            vmid: cmd::check_vmid(v)?,
            stop_cmd: args.stop_cmd.clone(),
            start_cmd: args.start_cmd.clone(),
            check_cmd: args.check_cmd.clone(),
            guest_timeout: Duration::from_millis(args.guest_timeout),
            check_interval: Duration::from_millis(args.check_interval),
        }),
        None => None,
    };
    Ok(Plan {
        device: bdf,
        methods,
        cycles: args.cycles,
        dirty,
        vm,
        twin_vm,
        opts: ResetOptions {
            force: args.force,
            ready_timeout: Duration::from_millis(args.ready_timeout),
            wait_timeout: Duration::from_millis(args.wait_timeout),
            lock_timeout: Duration::from_millis(args.lock_timeout),
            ..ResetOptions::default()
        },
        cmd_timeout: Duration::from_millis(args.cmd_timeout),
        trace: args.trace.clone(),
        seed: args.seed,
        warmup: !args.no_warmup,
    })
}

/// Progress on stderr: a bar on a terminal, one plain line per trial otherwise.
struct Reporter {
    bar: Option<indicatif::ProgressBar>,
    done: usize,
    total: usize,
}

impl Reporter {
    fn new() -> Reporter {
        Reporter {
            bar: None,
            done: 0,
            total: 0,
        }
    }

    fn on(&mut self, p: Progress) {
        match p {
            Progress::Start { total } => {
                self.total = total;
                if std::io::stderr().is_terminal() {
                    let bar = indicatif::ProgressBar::new(total as u64);
                    if let Ok(style) = indicatif::ProgressStyle::with_template(
                        "{bar:30} {pos}/{len} trials  {elapsed} (eta {eta})  {msg}",
                    ) {
                        bar.set_style(style);
                    }
                    self.bar = Some(bar);
                }
            }
            Progress::Trial(t) => {
                self.done += 1;
                let verdict = if t.success {
                    "ok".to_string()
                } else {
                    format!("FAILED: {}", t.reason.as_deref().unwrap_or("?"))
                };
                let line = format!(
                    "{} {}: {verdict} ({} ms)",
                    if t.warmup {
                        "warm-up".to_string()
                    } else {
                        format!("cycle {}", t.cycle)
                    },
                    t.method,
                    report::fmt_ms(t.phases.total)
                );
                match &self.bar {
                    Some(b) => {
                        b.set_message(line);
                        b.inc(1);
                    }
                    None => eprintln!("bench [{}/{}] {line}", self.done, self.total),
                }
            }
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

fn report_cmd(dirs: &[PathBuf], out: Option<&Path>, json: bool) -> Result<i32> {
    match dirs {
        [one] => {
            let (meta, trials) = bench::load(one)?;
            let s = report::write_all(one, &meta, &trials)?;
            if json {
                print_json(&crate::bench::cliout::ReportOut {
                    meta: &meta,
                    summary: &s,
                })?;
            } else {
                print!("{}", report::terminal(&meta, &s, Some(one)));
            }
            Ok(exit::OK)
        }
        [a, b] => {
            let (ma, ta) = bench::load(a)?;
            let (mb, tb) = bench::load(b)?;
            let sa = bench::stats::summarize(&ta, ma.harness_ms);
            let sb = bench::stats::summarize(&tb, mb.harness_ms);
            let (text, md, html, plots) = report::compare((a, &ma, &sa, &ta), (b, &mb, &sb, &tb))?;
            if let Some(o) = out {
                std::fs::create_dir_all(o).map_err(|e| Error::io("create directory", o, e))?;
                let files = [
                    ("compare.md".to_string(), md),
                    ("compare.html".to_string(), html),
                ];
                for (name, body) in files.iter().chain(plots.iter()) {
                    let p = o.join(name);
                    std::fs::write(&p, body).map_err(|e| Error::io("write", &p, e))?;
                }
            }
            if json {
                use crate::bench::cliout::{CompareOut, Side};
                print_json(&CompareOut {
                    a: Side {
                        dir: a.clone(),
                        meta: &ma,
                        summary: &sa,
                    },
                    b: Side {
                        dir: b.clone(),
                        meta: &mb,
                        summary: &sb,
                    },
                })?;
            } else {
                print!("{text}");
            }
            Ok(exit::OK)
        }
        _ => Err(Error::parse(
            "report directories",
            "",
            "name one run, or two to compare",
        )),
    }
}

/// What will run and where the report goes, printed before the first trial.
fn header(meta: &Meta, plan: &Plan, dir: &Path) -> String {
    let per = plan.methods.len();
    let warm = if plan.warmup { per } else { 0 };
    format!(
        "bench: {} {}on {}\n  methods: {}\n  {} cycles × {per} methods = {} trials{}; order: {}\n  dirty before each: {}\n  report: {}/ (meta.json, trials.jsonl, report.html)\n",
        meta.device,
        meta.device_name
            .as_deref()
            .map(|n| format!("({n}) "))
            .unwrap_or_default(),
        if meta.host == "twin" {
            "the twin (simulated)".to_string()
        } else {
            format!("this host ({})", meta.sysfs)
        },
        meta.methods.join(", "),
        plan.cycles,
        plan.cycles * per,
        if warm > 0 {
            format!(" + {warm} warm-up (not in the statistics)")
        } else {
            String::new()
        },
        match plan.seed {
            Some(s) => format!("shuffled per cycle, seed {s}"),
            None => "as given, every cycle (--seed N shuffles)".into(),
        },
        meta.dirty,
        dir.display()
    )
}

pub fn run(ctx: &Ctx, args: &BenchArgs) -> Result<i32> {
    if let Some(BenchCmd::Report { dirs, out }) = &args.cmd {
        return report_cmd(dirs, out.as_deref(), ctx.json);
    }
    let topo = Topology::scan(&ctx.host)?;
    let bdf = device(ctx, args, &topo)?;
    let plan = plan(ctx, args, bdf)?;
    let started = bench::unix_now();
    let dir = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("resetlab-bench-{}", bench::utc_stamp(started))));
    let mut rec = Recorder::create(&dir)?;
    let dev = topo.get(&bdf);
    let mut notes = Vec::new();
    if let Some(tv) = &plan.twin_vm {
        notes.push(format!(
            "twin VM cycles of VM {}: '{}' runs the hook's post-start, pre-stop (release: the \
             guest ejects after {} ms), QEMU's stop, post-stop and pre-start, then starts again; \
             'stop, then M' stops QEMU while the guest drives the GPU, then runs M. Success: the \
             guest of the second start can use its GPU. Each trial starts on a freshly booted twin.",
            tv.vmid,
            bench::twin_vm::RELEASE_ROW,
            tv.release_ms
        ));
    }
    if ctx.twin_root().is_some() && plan.methods.iter().any(|m| m.spec.def.name == "smu_mode2") {
        notes.push(format!(
            "on the twin, {}",
            crate::sim::profile::MODE2_HYPOTHESIS
        ));
    }
    let meta = Meta {
        resetlab: env!("CARGO_PKG_VERSION").to_string(),
        device: bdf.to_string(),
        device_name: dev.map(|d| format!("{} [{:04x}:{:04x}]", d.name(), d.vendor, d.device)),
        mode: if plan.twin_vm.is_some() {
            "twin-vm"
        } else if plan.vm.is_some() {
            "vm"
        } else {
            "device"
        }
        .into(),
        vmid: plan
            .vm
            .as_ref()
            .map(|v| v.vmid.clone())
            .or(plan.twin_vm.as_ref().map(|t| t.vmid.to_string())),
        methods: match &plan.twin_vm {
            Some(_) => std::iter::once(bench::twin_vm::Row::Release)
                .chain(
                    plan.methods
                        .iter()
                        .cloned()
                        .map(bench::twin_vm::Row::Method),
                )
                .map(|r| r.label())
                .collect(),
            None => plan.methods.iter().map(|m| m.label()).collect(),
        },
        forced: plan
            .methods
            .iter()
            .filter(|m| m.forced)
            .map(|m| m.label())
            .collect(),
        cycles: plan.cycles,
        dirty: plan.dirty.describe(),
        sysfs: if ctx.twin_root().is_some() {
            "the twin (--sim)".into()
        } else {
            ctx.host.sysfs.display().to_string()
        },
        started_unix: started,
        wall_ms: None,
        harness_ms: None,
        stopped: None,
        trials: 0,
        notes,
        seed: plan.seed,
        warmup: plan.warmup,
        argv: std::env::args().collect(),
        started: bench::provenance::iso8601(started),
        ended: None,
        kernel: bench::provenance::kernel_release(&ctx.host),
        commit: bench::provenance::commit(),
        host: if ctx.host.is_live() { "live" } else { "twin" }.into(),
        firmware: Some(bench::provenance::firmware(&ctx.host, &bdf)),
    };
    eprint!("{}", header(&meta, &plan, &dir));
    let mut rep = Reporter::new();
    let r = bench::run(&ctx.host, ctx.regs()?, &plan, &mut rec, meta, &mut |p| {
        rep.on(p)
    });
    rep.finish();
    let (trials, mut meta) = r?;
    if let Some(f) = plan
        .twin_vm
        .as_ref()
        .and_then(|tv| hook_figures(&trials, tv.release_ms))
    {
        meta.notes.push(f);
        rec.meta(&meta)?;
    }
    let s = report::write_all(&dir, &meta, &trials)?;
    if ctx.json {
        print_json(&crate::bench::cliout::RunOut {
            dir: &dir,
            meta: &meta,
            summary: &s,
        })?;
    } else {
        print!("{}", report::terminal(&meta, &s, Some(&dir)));
    }
    Ok(if meta.stopped.is_some() {
        exit::FAILED
    } else {
        exit::OK
    })
}
