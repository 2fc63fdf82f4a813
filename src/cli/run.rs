//! `resetlab run FILE --dev DEV [--commit] [--trace FILE] [--json]` and
//! `resetlab run diff TRACE A B`.

use std::path::PathBuf;
use std::time::Duration;

use super::{print_json, Ctx, DevArgs};
use crate::error::{exit, Error, Result};
use crate::experiment::run::{self as runner, DeviceResolver, RunOptions};
use crate::experiment::{load, resolve};
use crate::journal::Journal;
use crate::pci::Topology;

#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct RunArgs {
    #[command(subcommand)]
    pub cmd: Option<RunCmd>,
    /// The experiment file (docs/experiments.md).
    #[arg(value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// The device (BDF); or -s / -d selectors.
    #[arg(long = "dev", value_name = "DEV")]
    pub dev: Option<String>,
    /// The device, as lspci -s: [[[domain]:][bus]:][slot][.[func]] (must match exactly one).
    #[arg(short = 's', value_name = "SLOT")]
    pub slot: Option<String>,
    /// The device, as lspci -d: [vendor]:[device][:class[:prog-if]] (must match exactly one).
    #[arg(short = 'd', value_name = "ID")]
    pub id: Option<String>,
    /// Execute. Without it, a dry run: every register resolved and checked
    /// against the BAR, and the exact writes printed; nothing touched.
    #[arg(long)]
    pub commit: bool,
    /// Append every write and every step's result as JSON lines, fsync'd.
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,
    /// Go past the guards (device in use, live driver).
    #[arg(long)]
    pub force: bool,
    /// The ASIC (regs/ name) when the device's ids do not say it.
    #[arg(long)]
    pub asic: Option<String>,
    /// The BAR that register steps address (default: the ASIC's register BAR, else 0).
    #[arg(long)]
    pub bar: Option<u8>,
    /// Bound of waiting for another resetlab holding the device's lock, in ms.
    #[arg(long, value_name = "MS", default_value_t = 30_000, value_parser = crate::cli::ms)]
    pub lock_timeout: u64,
}

#[derive(clap::Subcommand, Debug)]
pub enum RunCmd {
    /// Registers that differ between two snapshots of a trace.
    Diff {
        trace: PathBuf,
        a: String,
        b: String,
    },
}

fn on_sigint() {
    let _ = crate::sys::flag_on(&[nix::sys::signal::Signal::SIGINT], &runner::INTERRUPTED);
}

pub fn run(ctx: &Ctx, args: &RunArgs) -> Result<i32> {
    if let Some(RunCmd::Diff { trace, a, b }) = &args.cmd {
        let rows = runner::diff(trace, a, b)?;
        if ctx.json {
            print_json(&super::schema::RunDiffOut { rows })?;
        } else if rows.is_empty() {
            println!("no register differs between '{a}' and '{b}'");
        } else {
            println!("{:<28} {:>12} {:>12}  changed bits", "register", a, b);
            for r in rows {
                let f = |v: Option<u32>| {
                    v.map(|v| format!("{v:#010x}"))
                        .unwrap_or_else(|| "-".into())
                };
                let x = match (r.a, r.b) {
                    (Some(x), Some(y)) => format!("{:#010x}", x ^ y),
                    _ => String::new(),
                };
                println!("{:<28} {:>12} {:>12}  {x}", r.register, f(r.a), f(r.b));
            }
        }
        return Ok(exit::OK);
    }
    let file = args.file.as_ref().ok_or_else(|| {
        Error::parse(
            "arguments",
            "",
            "name an experiment FILE (or: run diff TRACE A B)",
        )
    })?;
    let exp = load(file)?;
    let topo = Topology::scan(&ctx.host)?;
    let sel = DevArgs {
        dev: args.dev.clone(),
        slot: args.slot.clone(),
        id: args.id.clone(),
    };
    let dev = sel.resolve(&topo)?;
    // Register names resolve at the device's own bases (its discovery table:
    // sysfs or this boot's cache for a dry run, which touches nothing; read
    // from VRAM first for --commit), regs/ only when the table cannot be had.
    let mut journal = Journal::new(false);
    journal.method = "run: discovery table".into();
    let (regs, bases_note) =
        match crate::amd::smu::target(ctx.regs()?, dev, args.asic.as_deref(), args.bar)? {
            Some((asic, bar)) => {
                let found = if args.commit {
                    crate::amd::bases::fetch(
                        &ctx.host,
                        dev,
                        asic,
                        bar,
                        &mut journal,
                        &crate::amd::bases::Fetch {
                            read: true,
                            refresh: false,
                            lock_timeout: Duration::from_millis(args.lock_timeout),
                        },
                    )?
                } else {
                    crate::amd::bases::resolve(
                        &ctx.host,
                        dev,
                        asic,
                        bar,
                        &mut Journal::new(true),
                        false,
                    )
                };
                let note = format!(
                    "register bases from {}{}",
                    found.label(),
                    if found.notes.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", found.notes.join("; "))
                    }
                );
                (ctx.regs()?.with_asic(found.apply(asic)?), Some(note))
            }
            None => (ctx.regs()?.clone(), None),
        };
    let resolver = DeviceResolver::for_device(&regs, dev, args.asic.as_deref(), args.bar)?;
    let plan = resolve(&exp, &resolver)?;
    if !args.commit {
        if ctx.json {
            print_json(&plan)?;
        } else {
            println!(
                "dry run of {} on {} (nothing is touched; --commit executes):",
                file.display(),
                dev.bdf
            );
            print!("{plan}");
            if let Some(n) = &bases_note {
                println!("{n}");
            }
        }
        return Ok(exit::OK);
    }
    on_sigint();
    if let Some(t) = &args.trace {
        // The table read's writes (if any) first, then the experiment's.
        let records = std::mem::take(&mut journal.records);
        journal = Journal::new(false).with_trace(t)?;
        for r in &records {
            journal.trace_line(&serde_json::to_value(r).unwrap_or_default())?;
        }
        journal.records = records;
    }
    if let (Some(n), false) = (&bases_note, ctx.json) {
        println!("{n}");
    }
    let opts = RunOptions {
        force: args.force,
        asic: args.asic.clone(),
        bar: args.bar,
        lock_timeout: Duration::from_millis(args.lock_timeout),
    };
    let json = ctx.json;
    let report = runner::run(&ctx.host, &regs, dev, &plan, &opts, &mut journal, |s| {
        if json {
            return;
        }
        let mut line = format!("{:>4}  {:<48} {:>8.2} ms", s.step, s.op, s.duration_ms);
        if let Some(v) = s.read {
            line.push_str(&format!("  read {v:#010x}"));
        }
        if let Some(c) = s.smu_response {
            line.push_str(&format!(
                "  smu {c:#x} {}",
                s.smu_response_name.as_deref().unwrap_or("")
            ));
        }
        if let Some((n, regs)) = &s.snapshot {
            line.push_str(&format!("  snapshot '{n}' of {} registers", regs.len()));
        }
        println!("{line}");
        if let Some(e) = &s.error {
            println!("      FAILED: {e}");
        }
    })?;
    if json {
        print_json(&report)?;
    } else if report.interrupted {
        println!("interrupted after {} step(s)", report.steps.len());
    } else if report.completed {
        println!(
            "completed {} step(s) in {:.1} ms",
            report.steps.len(),
            report.total_ms
        );
    }
    Ok(if report.completed {
        exit::OK
    } else {
        exit::FAILED
    })
}
