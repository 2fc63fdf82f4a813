//! `resetlab reset DEV --method M[,M...] [--dry-run] [--force] [--trace FILE]`.

use std::path::PathBuf;
use std::time::Duration;

use super::{print_json, Ctx, DevArgs};
use crate::error::{exit, Result};
use crate::pci::Topology;
use crate::reset::engine::{default_chain, run_chain_in, ChainReport};
use crate::reset::{parse_chain, Journal, ResetOptions};

#[derive(clap::Args, Debug)]
pub struct ResetArgs {
    #[command(flatten)]
    pub dev: DevArgs,
    /// Methods to try in order (comma-separated): kernel, kernel:flr, flr, af_flr,
    /// pm, bus (sbr), d3cold, remove_rescan, smu_mode2. Default: the device's chain.
    #[arg(long, short = 'm', value_name = "M[,M...]")]
    pub method: Option<String>,
    /// Print every write that would be made, in order, and make none.
    #[arg(long)]
    pub dry_run: bool,
    /// Override exactly: the VFIO group open (a VM uses the device); the device bound to a host
    /// driver other than vfio-pci/pci-stub; these method refusals, which become "forced" verdicts:
    /// pm (the kernel's quirk_no_pm_reset), kernel (only 'bus' with siblings present), d3cold (no
    /// power resources), bus and remove_rescan (other functions bound to live host drivers),
    /// smu_mode2 (an SMU holding or having answered an error amdgpu stops at: unknown code, 0xFB).
    /// Never: amdgpu bound (smu_mode2), reading the discovery table while a VM holds the device.
    #[arg(long)]
    pub force: bool,
    /// Append every write as a JSON line, fsync'd before the write is made.
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,
    /// remove_rescan: every function of the device's slot.
    #[arg(long = "slot", id = "whole_slot")]
    pub whole_slot: bool,
    /// Bound of the readiness wait after a raw reset, in ms.
    #[arg(long, value_name = "MS", default_value_t = 60_000, value_parser = crate::cli::ms)]
    pub ready_timeout: u64,
    /// Bound of every other wait (device gone/back, power state), in ms.
    #[arg(long, value_name = "MS", default_value_t = 30_000, value_parser = crate::cli::ms)]
    pub wait_timeout: u64,
    /// Bound of waiting for another resetlab holding the device's lock, in ms.
    #[arg(long, value_name = "MS", default_value_t = 30_000, value_parser = crate::cli::ms)]
    pub lock_timeout: u64,
    /// Time budget of the whole chain, in ms: no method starts once it is spent, and every wait
    /// is cut to what is left of it (the hook gives each device's chain what is left of its phase).
    #[arg(long, value_name = "MS", value_parser = crate::cli::ms)]
    pub budget: Option<u64>,
    /// Vendor methods: the ASIC (regs/ name) when the ids do not say it.
    #[arg(long)]
    pub asic: Option<String>,
    /// Vendor methods: the register BAR, when not the ASIC's usual one.
    #[arg(long)]
    pub bar: Option<u8>,
}

impl ResetArgs {
    pub fn options(&self) -> ResetOptions {
        ResetOptions {
            force: self.force,
            dry_run: self.dry_run,
            slot: self.whole_slot,
            ready_timeout: Duration::from_millis(self.ready_timeout),
            wait_timeout: Duration::from_millis(self.wait_timeout),
            lock_timeout: Duration::from_millis(self.lock_timeout),
            asic: self.asic.clone(),
            bar: self.bar,
            budget: self.budget.map(Duration::from_millis),
            ..ResetOptions::default()
        }
    }
}

pub fn print_report(r: &ChainReport) {
    for run in &r.runs {
        let v = if run.verdict.available {
            "applies"
        } else {
            "does not apply"
        };
        println!("{}: {v}: {}", run.method, run.verdict.reason);
        if !run.attempted {
            continue;
        }
        if let Some(o) = &run.outcome {
            println!("  did: {}", o.did);
            for n in &o.notes {
                println!("  note: {n}");
            }
        }
        if let Some(e) = &run.error {
            println!("  error: {e}");
        }
        let p = &run.phases;
        println!(
            "  time: {:.1} ms (reset {:.1}, ready {:.1}, restore {:.1}, health {:.1})",
            p.total_ms, p.reset_ms, p.ready_ms, p.restore_ms, p.health_ms
        );
        if let Some(h) = &run.health {
            match h.failure() {
                None => println!(
                    "  health: ok ({})",
                    h.items
                        .iter()
                        .map(|i| i.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                Some(f) => println!("  health: FAILED: {f}"),
            }
        }
    }
    if let Some(s) = &r.stopped {
        println!(
            "stopped before {}: {} (no later method was tried)",
            s.method, s.error
        );
    }
    if !r.not_started.is_empty() {
        println!(
            "not started, the chain's budget of {} s was spent: {}",
            r.budget_ms.unwrap_or(0) as f64 / 1e3,
            r.not_started.join(", ")
        );
    }
    if r.dry_run {
        println!(
            "dry run: {} write(s) would be made, none was:",
            r.writes.len()
        );
        for w in &r.writes {
            println!("  {w}");
        }
    } else if let Some(m) = &r.method {
        println!(
            "{}: reset by {m} in {:.1} ms; healthy",
            r.device, r.total_ms
        );
    } else {
        println!("{}: no method left the device healthy", r.device);
    }
}

/// `--asic` must name an ASIC of the register database and `--bar` a memory
/// BAR the device has: bad input (exit 2) before anything runs, never a
/// vendor method that quietly "does not apply" and a chain that falls through.
pub fn validate_vendor_options(
    regs: &crate::amd::regs::RegsDb,
    dev: &crate::pci::Device,
    opts: &ResetOptions,
) -> Result<()> {
    if let Some(a) = &opts.asic {
        regs.asic(a)?;
    }
    if let Some(bar) = opts.bar {
        crate::pci::mmio::check_bar(dev, bar)
            .map_err(|e| crate::error::Error::parse("--bar", bar.to_string(), e.one_line()))?;
    }
    Ok(())
}

pub fn run(ctx: &Ctx, args: &ResetArgs) -> Result<i32> {
    let topo = Topology::scan(&ctx.host)?;
    let dev = args.dev.resolve(&topo)?;
    let chain = match &args.method {
        Some(m) => parse_chain(m)?,
        None => default_chain(ctx.regs()?, dev),
    };
    let opts = args.options();
    validate_vendor_options(ctx.regs()?, dev, &opts)?;
    let mut journal = Journal::new(opts.dry_run);
    if let Some(t) = &args.trace {
        journal = journal.with_trace(t)?;
    }
    let bdf = dev.bdf;
    // The tree scanned above is the one the chain works on: one scan a command.
    let report = run_chain_in(
        &ctx.host,
        ctx.regs()?,
        topo,
        &bdf,
        &chain,
        &opts,
        &mut journal,
    )?;
    if ctx.json {
        print_json(&report)?;
    } else {
        print_report(&report);
        let on_twin = ctx.twin_root().is_some() || !ctx.host.is_live();
        if on_twin
            && report
                .method
                .as_deref()
                .is_some_and(|m| m.starts_with("smu_mode2"))
        {
            println!("note: {}", crate::sim::profile::MODE2_HYPOTHESIS);
        }
    }
    if report.success {
        return Ok(exit::OK);
    }
    // Nothing ran because a guard-level verdict said no: that is a refusal
    // (exit 3, on stderr), not a reset that failed.
    if !report.runs.iter().any(|r| r.attempted) {
        if let Some(r) = report.runs.iter().find(|r| r.verdict.refused) {
            return Err(crate::error::Error::refused(format!(
                "{}: {}: {} (or use --force)",
                report.device, r.method, r.verdict.reason
            )));
        }
    }
    Ok(exit::FAILED)
}
