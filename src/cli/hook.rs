//! `resetlab hook VMID PHASE`, `resetlab hook install VMID`, `resetlab hook uninstall VMID`,
//! `resetlab hook status VMID`.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Subcommand;

use super::{print_json, Ctx};
use crate::error::{exit, Result};
use crate::hook::chain::{self, ChainOutcome, HookRecord};
use crate::hook::install::{
    find_in_path, install, uninstall, InstallReport, InstallRequest, ShimWrite, UninstallReport,
    DEFAULT_SHIM_NAME,
};
use crate::hook::log::Logger;
use crate::hook::policy::Phase;
use crate::hook::run::{HookOptions, PhaseRunner};
use crate::hook::status::{status, StatusReport};
use crate::machine::Machine;

/// How long past the phase's budget the watchdog lets the hook run before it gives up on it.
const WATCHDOG_GRACE: Duration = Duration::from_secs(2);

/// pve-common `PVE/JSONSchema.pm` `pve-vmid`: `^[1-9][0-9]{2,8}$`.
fn vmid_parser() -> clap::builder::RangedI64ValueParser<u32> {
    clap::value_parser!(u32).range(100..=999_999_999)
}

#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct HookArgs {
    #[command(subcommand)]
    pub cmd: Option<HookCmd>,
    /// The VM id Proxmox passes (100 to 999999999).
    #[arg(value_name = "VMID", required = true, value_parser = vmid_parser())]
    pub vmid: Option<u32>,
    /// The phase Proxmox passes: pre-start, post-start, pre-stop or post-stop.
    #[arg(value_name = "PHASE", required = true)]
    pub phase: Option<String>,
    /// Say what this phase would do (the plan `hook status` shows for it) and do nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub paths: HookPaths,
}

/// `hook VMID PHASE --dry-run --json`: the phase's plan; nothing was done.
#[derive(serde::Serialize, schemars::JsonSchema)]
pub struct DryRunOut {
    pub vmid: u32,
    /// Always true: nothing was written, no VM touched.
    pub dry_run: bool,
    pub plan: crate::hook::status::PhasePreview,
}

#[derive(clap::Args, Debug, Clone)]
pub struct HookPaths {
    /// The Proxmox configuration root (qemu-server/, mapping/pci.cfg, storage.cfg) [default:
    /// /etc/pve; <root>/etc/pve for a --sysfs root other than /sys].
    #[arg(long, value_name = "DIR", global = true)]
    pub pve_config: Option<PathBuf>,
    /// The hook's policy; a missing file means the built-in defaults [default:
    /// /etc/resetlab/hook.toml; under <root> for a --sysfs root other than /sys].
    #[arg(long, value_name = "FILE", global = true)]
    pub policy: Option<PathBuf>,
    /// Where device state records live [default: /run/resetlab; <root>/run/resetlab for a
    /// --sysfs root other than /sys].
    #[arg(long, value_name = "DIR", global = true)]
    pub state_dir: Option<PathBuf>,
    /// The Proxmox node name, for resource mappings [default: the host name up to the first dot].
    #[arg(long, value_name = "NAME", global = true)]
    pub node: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum HookCmd {
    /// Copy the hookscript shim into a storage's snippets directory and set it on the VM,
    /// recording its previous hookscript (run after resetlab's phase with --chain).
    Install(InstallArgs),
    /// Give the VM its previous hookscript back (or none), as `hook install` recorded it.
    Uninstall(UninstallArgs),
    /// The VM's devices, their recorded state, and what each phase would do now.
    Status(StatusArgs),
}

#[derive(clap::Args, Debug)]
pub struct InstallArgs {
    #[arg(value_name = "VMID", value_parser = vmid_parser())]
    pub vmid: u32,
    /// The storage whose snippets directory gets the shim (storage.cfg; needs `snippets` content).
    #[arg(long, default_value = "local")]
    pub storage: String,
    /// The shim's file name.
    #[arg(long, default_value = DEFAULT_SHIM_NAME)]
    pub name: String,
    /// Replace a file of that name that is not resetlab's shim.
    #[arg(long)]
    pub force: bool,
    /// After resetlab's phase, run the VM's previous hookscript too (same arguments, bounded by
    /// --chain-timeout) [default: as recorded by an earlier install; off for a first one].
    #[arg(long, conflicts_with = "no_chain")]
    pub chain: bool,
    /// Stop running the previous hookscript (it stays recorded for uninstall).
    #[arg(long)]
    pub no_chain: bool,
    /// Bound of the chained hookscript, in seconds (default 60, or as recorded).
    #[arg(long, value_name = "SECS", value_parser = chain_timeout_parser)]
    pub chain_timeout: Option<Duration>,
    #[command(flatten)]
    pub qm: QmArgs,
}

/// How `install` and `uninstall` change the VM config.
#[derive(clap::Args, Debug)]
pub struct QmArgs {
    /// Write nothing and run nothing: print what would be written and the `qm set` command.
    #[arg(long, conflicts_with = "qm")]
    pub print_only: bool,
    /// The `qm` to run [default: `qm` from PATH on the live machine; with a --sysfs root other
    /// than /sys, none: the command is printed].
    #[arg(long, value_name = "PATH")]
    pub qm: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct UninstallArgs {
    #[arg(value_name = "VMID", value_parser = vmid_parser())]
    pub vmid: u32,
    #[command(flatten)]
    pub qm: QmArgs,
}

fn chain_timeout_parser(s: &str) -> std::result::Result<Duration, String> {
    let d = crate::text::parse_duration(s, crate::text::BareUnit::Secs)?;
    if d.is_zero() || d > Duration::from_secs(3600) {
        return Err(format!("{s} is out of range (0 < duration <= 1 hour)"));
    }
    Ok(d)
}

#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    #[arg(value_name = "VMID", value_parser = vmid_parser())]
    pub vmid: u32,
}

/// The machine's paths (a twin's beside its tree, so it never reads this machine's Proxmox
/// config), with what the flags name instead.
fn options(host: &Machine, p: &HookPaths) -> HookOptions {
    let mut o = HookOptions::on(host);
    if let Some(d) = &p.pve_config {
        o.pve_root = d.clone();
    }
    if let Some(f) = &p.policy {
        o.policy = f.clone();
    }
    o.state_dir = p.state_dir.clone();
    o.node = p.node.clone();
    o.migrated_from = std::env::var("PVE_MIGRATED_FROM")
        .ok()
        .filter(|s| !s.is_empty());
    o.stderr = true;
    o
}

/// Whether the hook invocation writes: a phase (resets, state records, the
/// log) or `install`; `status` only reads.
pub fn writes(args: &HookArgs) -> bool {
    !matches!(&args.cmd, Some(HookCmd::Status(_)))
}

/// A phase loads the register database only if it resets something (`ctx.regs_dirs` goes to
/// the phase runner, which loads it then); a phase runs with SIGPIPE ignored from the start
/// (`super::hook_mode`).
pub fn run(ctx: &Ctx, args: &HookArgs) -> Result<i32> {
    let (host, regs, json) = (&ctx.host, &ctx.regs_dirs, ctx.json);
    if writes(args) {
        host.check_writable()?;
    }
    // A policy named with --policy must be there (only the default path may
    // be absent, meaning the built-in defaults).
    if let Some(p) = &args.paths.policy {
        if std::fs::symlink_metadata(p).is_err() {
            return Err(crate::error::Error::not_found(
                "policy file",
                format!("{} (given with --policy)", p.display()),
            ));
        }
    }
    match &args.cmd {
        Some(HookCmd::Install(a)) => run_install(host, json, &args.paths, a),
        Some(HookCmd::Uninstall(a)) => run_uninstall(host, json, &args.paths, a),
        Some(HookCmd::Status(a)) => run_status(host, json, &args.paths, a),
        None => {
            // clap makes both required when there is no subcommand.
            let (Some(vmid), Some(phase)) = (args.vmid, args.phase.as_deref()) else {
                return Err(crate::error::Error::parse(
                    "hook arguments",
                    "",
                    "expected VMID PHASE",
                ));
            };
            if args.dry_run {
                return run_dry(host, json, &args.paths, vmid, phase.parse()?);
            }
            run_phase(host, regs, json, &args.paths, vmid, phase.parse()?)
        }
    }
}

fn run_dry(host: &Machine, json: bool, paths: &HookPaths, vmid: u32, phase: Phase) -> Result<i32> {
    let mut opts = options(host, paths);
    opts.stderr = false;
    let r = status(host, &opts, vmid)?;
    let plan = r
        .phases
        .into_iter()
        .find(|p| p.phase == phase)
        .ok_or_else(|| crate::error::Error::not_found("phase plan", phase.to_string()))?;
    if json {
        print_json(&DryRunOut {
            vmid,
            dry_run: true,
            plan,
        })?;
    } else {
        println!(
            "VM {vmid} {phase} (dry run: nothing done); budget {} s{}",
            plan.budget_s,
            if plan.fail_on_error {
                ", a failure stops the VM's start"
            } else {
                ""
            }
        );
        if plan.steps.is_empty() {
            println!("  nothing to do");
        }
        for s in &plan.steps {
            println!("  {:<15} {}  {}", s.action.as_str(), s.device, s.would);
        }
    }
    Ok(exit::OK)
}

fn run_phase(
    host: &Machine,
    regs: &[PathBuf],
    json: bool,
    paths: &HookPaths,
    vmid: u32,
    phase: Phase,
) -> Result<i32> {
    let opts = options(host, paths);
    let pve_root = opts.pve_root.clone();
    let etc = host.resetlab_etc();
    let record = HookRecord::load(&etc, vmid);
    let chained = match &record {
        Ok(Some(r)) if r.chain => r.previous.clone().map(|p| (p, r.timeout())),
        _ => None,
    };
    let runner = PhaseRunner::new(host, regs.to_vec(), opts, vmid, phase);
    // The last resort behind the per-wait bounds: a wait inside the kernel that no bound of
    // ours covers must not keep Proxmox waiting for ever. The chained script has its own.
    let chain_bound = chained.as_ref().map_or(Duration::ZERO, |(_, t)| *t);
    let deadline = runner.started() + runner.budget() + chain_bound + WATCHDOG_GRACE;
    let budget = runner.budget();
    let code = if runner.fail_on_error() {
        exit::FAILED
    } else {
        exit::OK
    };
    let progress = runner.progress.clone();
    let watchdog_host = host.clone();
    std::thread::spawn(move || {
        std::thread::sleep(deadline.saturating_duration_since(std::time::Instant::now()));
        let what = progress.lock().map(|p| p.clone()).unwrap_or_default();
        let mut log = Logger::new(
            &watchdog_host,
            format!("resetlab: VM {vmid} {phase}: "),
            true,
        );
        log.err(format!(
            "budget of {} s exceeded while busy with {what}; giving up",
            (budget + chain_bound).as_secs_f64()
        ));
        // Exiting skips every Drop: put back what is host-wide first.
        crate::cleanup::run_pending();
        std::process::exit(code);
    });
    let report = runner.run();
    let mut exit_code = report.exit_code;
    let mut log = Logger::new(host, format!("resetlab: VM {vmid} {phase}: "), true);
    if let Err(e) = &record {
        log.err(format!(
            "the hookscript record is unreadable, no chained hookscript run: {}",
            e.one_line()
        ));
    }
    let chain_result = chained.map(|(volid, bound)| {
        let (result, failed) = run_chained(host, &pve_root, &mut log, vmid, phase, &volid, bound, exit_code);
        // Before resetlab, a failing pre-start of that script stopped the start: it still does.
        if failed && phase == Phase::PreStart {
            exit_code = exit::FAILED;
        }
        serde_json::json!({ "hookscript": volid, "bound_s": bound.as_secs_f64(), "outcome": result })
    });
    match (json, chain_result) {
        (false, _) => {}
        (true, None) => print_json(&report)?,
        // The phase report with what the chained hookscript did, and the exit code after it.
        (true, Some(c)) => {
            let mut v = serde_json::to_value(&report)
                .map_err(|e| crate::error::Error::failed(format!("cannot encode JSON: {e}")))?;
            if let Some(obj) = v.as_object_mut() {
                obj.insert("chained".into(), c);
                obj.insert("exit_code".into(), exit_code.into());
            }
            print_json(&v)?;
        }
    }
    Ok(exit_code)
}

/// Runs the VM's previous hookscript after resetlab's phase (`hook install --chain`). Returns
/// what happened (for `--json`) and whether it failed. On a twin the script is a real host's
/// (the field report's writes to the real /sys/bus/pci/rescan): it runs only when
/// `RESETLAB_TWIN_RUN_CHAINED=1` says the test made it safe.
#[allow(clippy::too_many_arguments)]
fn run_chained(
    host: &Machine,
    pve_root: &std::path::Path,
    log: &mut Logger,
    vmid: u32,
    phase: Phase,
    volid: &str,
    bound: Duration,
    code: i32,
) -> (serde_json::Value, bool) {
    use serde_json::json;
    if phase == Phase::PreStart && code != exit::OK {
        log.err(format!(
            "chained hookscript {volid} not run: the start is stopped"
        ));
        return (
            json!({ "result": "not_run", "why": "the start is stopped" }),
            false,
        );
    }
    let root = host.moved_root();
    let path = crate::pve::StorageConfig::load(pve_root)
        .and_then(|s| s.snippet_path(volid))
        .map(|p| crate::hook::install::beneath(root, p));
    let path = match path {
        Ok(p) => p,
        Err(e) => {
            log.err(format!("chained hookscript {volid}: {}", e.one_line()));
            return (json!({ "result": "error", "error": e.one_line() }), true);
        }
    };
    // A record pointing at a resetlab shim would run the hook again, and again.
    let is_shim = std::fs::read_to_string(&path).is_ok_and(|t| {
        crate::hook::install::shim_kind(&t) != crate::hook::install::ShimKind::Foreign
    });
    if is_shim {
        log.err(format!(
            "chained hookscript {volid} is resetlab's own shim: not run (it would run the hook again)"
        ));
        return (
            json!({ "result": "error", "error": "a resetlab shim" }),
            true,
        );
    }
    if !host.is_live() && std::env::var("RESETLAB_TWIN_RUN_CHAINED").as_deref() != Ok("1") {
        log.info(format!(
            "twin: chained hookscript {} not run (it is written for a real host)",
            path.display()
        ));
        return (json!({ "result": "not_run", "why": "twin" }), false);
    }
    log.info(format!(
        "running chained hookscript {volid} ({}), bound {} s",
        path.display(),
        bound.as_secs_f64()
    ));
    match chain::run_script(&path, vmid, phase, bound) {
        Ok(out) => {
            let failed = !out.ok();
            match &out {
                ChainOutcome::Exited { code: 0 } => log.info(format!("chained hookscript {volid}: exit 0")),
                ChainOutcome::Exited { code } => log.err(format!("chained hookscript {volid}: exit {code}")),
                ChainOutcome::Signalled { signal } => {
                    log.err(format!("chained hookscript {volid}: killed by signal {signal}"))
                }
                ChainOutcome::TimedOut { .. } => log.err(format!(
                    "chained hookscript {volid}: still running after its bound of {} s; killed it and its children",
                    bound.as_secs_f64()
                )),
            }
            (serde_json::to_value(&out).unwrap_or_default(), failed)
        }
        Err(e) => {
            log.err(format!("chained hookscript {volid}: {}", e.one_line()));
            (json!({ "result": "error", "error": e.one_line() }), true)
        }
    }
}

fn run_status(host: &Machine, json: bool, paths: &HookPaths, a: &StatusArgs) -> Result<i32> {
    let mut opts = options(host, paths);
    opts.stderr = false;
    let r = status(host, &opts, a.vmid)?;
    if json {
        print_json(&r)?;
    } else {
        print_status(&r);
    }
    let errors = r.config_errors();
    for e in &errors {
        eprintln!("resetlab: {e}");
    }
    Ok(if errors.is_empty() {
        exit::OK
    } else {
        exit::USAGE
    })
}

fn ago(t: u64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let s = now.saturating_sub(t);
    match s {
        0..=119 => format!("{s} s ago"),
        120..=7199 => format!("{} min ago", s / 60),
        _ => format!("{} h ago", s / 3600),
    }
}

pub fn print_status(r: &StatusReport) {
    println!("VM {}: {}", r.vmid, r.config.display());
    match &r.policy {
        Some(p) => println!("policy: {}", p.display()),
        None => println!("policy: built-in defaults (no policy file)"),
    }
    println!("state records: {}", r.state_dir.display());
    match &r.hookscript {
        None => println!("hookscript: none (resetlab hook install {})", r.vmid),
        Some(h) => {
            let what = match (&h.path, &h.error) {
                (_, Some(e)) => format!("cannot resolve: {e}"),
                (Some(p), None) if !h.exists => format!("{} (missing!)", p.display()),
                (Some(p), None) if h.is_resetlab => format!("{} (resetlab's shim)", p.display()),
                (Some(p), None) => format!("{} (not resetlab's)", p.display()),
                (None, None) => "?".into(),
            };
            println!("hookscript: {} -> {what}", h.volid);
        }
    }
    println!("devices:");
    if r.devices.is_empty() {
        println!("  (none managed)");
    }
    for d in &r.devices {
        let kind = d.kind.map_or("?", crate::hook::policy::DeviceKind::name);
        let state = match &d.record {
            Some(rec) => format!(
                "{} ({}, last method {}, VM {})",
                d.state,
                ago(rec.time),
                rec.last_method.as_deref().unwrap_or("-"),
                rec.vmid.map_or("-".to_string(), |v| v.to_string())
            ),
            None if d.state == "none" => "no record (clean since boot)".into(),
            None => format!("{} (treated as dirty)", d.state),
        };
        // A state record is a file anyone with root's run dir wrote: its
        // text is shown escaped, never as terminal control.
        let state = crate::text::escape_control(&state);
        println!(
            "  {}  hostpci{}  {kind}  {}  driver {}  {state}",
            d.bdf,
            d.hostpci,
            if d.present { "present" } else { "MISSING" },
            d.driver.as_deref().unwrap_or("none"),
        );
        match &d.chain_error {
            Some(e) => println!("      chain: ERROR: {e}"),
            None if d.unavailable.is_empty() => println!("      chain: {}", d.chain.join(" → ")),
            None => println!(
                "      chain: {} ({} not in this build)",
                d.chain.join(" → "),
                d.unavailable.join(", ")
            ),
        }
    }
    if !r.unmanaged.is_empty() {
        println!("not managed:");
        for u in &r.unmanaged {
            println!("  {}  hostpci{}  {}", u.bdf, u.hostpci, u.why);
        }
    }
    for p in &r.phases {
        let fatal = if p.phase == Phase::PreStart {
            if p.fail_on_error {
                "; a failure stops the start"
            } else {
                "; a failure is logged, the start goes on"
            }
        } else {
            ""
        };
        println!("{} (budget {} s{fatal}):", p.phase, p.budget_s);
        if p.steps.is_empty() {
            println!("  nothing");
        }
        for s in &p.steps {
            println!("  {:<15} {}  {}", s.action.as_str(), s.device, s.would);
        }
    }
}

fn qm_to_run(host: &Machine, a: &QmArgs) -> Option<PathBuf> {
    match (&a.qm, a.print_only) {
        (Some(q), _) => Some(q.clone()),
        (None, true) => None,
        (None, false) if host.is_live() => find_in_path("qm"),
        (None, false) => None,
    }
}

fn run_install(host: &Machine, json: bool, paths: &HookPaths, a: &InstallArgs) -> Result<i32> {
    let qm = qm_to_run(host, &a.qm);
    // A twin's snippets directories live beneath its root, never on this machine.
    let root = host.moved_root();
    let etc = host.resetlab_etc();
    let chain = match (a.chain, a.no_chain) {
        (true, _) => Some(true),
        (_, true) => Some(false),
        _ => None,
    };
    let r = install(
        &options(host, paths),
        &InstallRequest {
            vmid: a.vmid,
            storage: &a.storage,
            name: &a.name,
            force: a.force,
            chain,
            chain_timeout: a.chain_timeout,
            print_only: a.qm.print_only,
            qm: qm.as_deref(),
            root,
            etc_dir: &etc,
        },
    )?;
    if json {
        print_json(&r)?;
    } else {
        print_install(&r);
    }
    Ok(match &r.qm {
        Some(q) if q.status != Some(0) => exit::FAILED,
        _ => exit::OK,
    })
}

fn print_qm(cmd: &str, qm: &Option<crate::hook::install::QmRun>) {
    match qm {
        None => println!("now run: {cmd}"),
        Some(q) if q.status == Some(0) => println!("ran: {cmd}"),
        Some(q) => {
            println!(
                "ran: {cmd}: failed (exit {})",
                q.status.map_or("?".into(), |c| c.to_string())
            );
            for l in q.stderr.lines().chain(q.stdout.lines()) {
                println!("  {l}");
            }
        }
    }
}

fn print_install(r: &InstallReport) {
    let would = if r.written { "" } else { "would be " };
    let shim = match r.shim {
        ShimWrite::New => format!("{would}written: {}", r.path.display()),
        ShimWrite::Updated => format!(
            "{would}updated: {} (an older resetlab shim)",
            r.path.display()
        ),
        ShimWrite::Unchanged => format!("unchanged: {} (the current shim)", r.path.display()),
    };
    println!("{shim}");
    if let Some(prev) = r.previous_hookscript.as_deref().filter(|p| *p != r.volid) {
        if r.record.previous.as_deref() == Some(prev) {
            let what = if r.record.chain {
                format!(
                    "it runs after resetlab's phase (--chain, bound {} s)",
                    r.record.chain_timeout_s
                )
            } else {
                "replaced; --chain would run it after resetlab's phase".to_string()
            };
            println!("VM {} had hookscript {prev}: {what}", r.vmid);
        }
    } else if let Some(prev) = &r.record.previous {
        let what = if r.record.chain {
            "runs after resetlab's phase"
        } else {
            "is not run (--chain runs it)"
        };
        println!("VM {}'s previous hookscript {prev} {what}", r.vmid);
    }
    println!(
        "record: {} {}(`resetlab hook uninstall {}` gives the VM {} back)",
        r.record_path.display(),
        if r.written { "" } else { "would be written " },
        r.vmid,
        r.record.previous.as_deref().unwrap_or("no hookscript")
    );
    if r.written || r.qm.is_some() {
        print_qm(&r.command.join(" "), &r.qm);
    } else {
        println!("would run: {}", r.command.join(" "));
    }
    if let Some(c) = &r.cluster {
        println!(
            "cluster of {} nodes ({}); VM {} {}can run on: {}",
            c.nodes.len(),
            c.nodes.join(", "),
            r.vmid,
            c.vm_node
                .as_deref()
                .map(|n| format!("(now on {n}) "))
                .unwrap_or_default(),
            c.vm_can_run_on.join(", ")
        );
        for e in &c.excluded {
            println!("  not {e}");
        }
        println!(
            "each of them needs the resetlab package (/usr/sbin/resetlab){}",
            if r.record.previous.is_some() {
                format!(" and a copy of {}", r.record_path.display())
            } else {
                String::new()
            }
        );
        if c.shared_storage {
            println!(
                "storage '{}' is shared: this one shim serves every node",
                r.storage
            );
        } else {
            println!(
                "storage '{}' is per node: run `resetlab hook install {}` on each of them too, or put the shim once on a shared storage that allows snippets (--storage NAME)",
                r.storage, r.vmid
            );
        }
    }
}

fn run_uninstall(host: &Machine, json: bool, paths: &HookPaths, a: &UninstallArgs) -> Result<i32> {
    let qm = qm_to_run(host, &a.qm);
    let root = host.moved_root();
    let etc = host.resetlab_etc();
    let r = uninstall(
        &options(host, paths),
        a.vmid,
        a.qm.print_only,
        qm.as_deref(),
        root,
        &etc,
    )?;
    if json {
        print_json(&r)?;
    } else {
        print_uninstall(&r, a.qm.print_only);
    }
    Ok(match &r.qm {
        Some(q) if q.status != Some(0) => exit::FAILED,
        _ => exit::OK,
    })
}

fn print_uninstall(r: &UninstallReport, print_only: bool) {
    let back = r.restore.as_deref().unwrap_or("no hookscript");
    if r.command.is_empty() {
        println!("VM {} already has {back}", r.vmid);
    } else if print_only {
        println!("would run: {}", r.command.join(" "));
    } else {
        print_qm(&r.command.join(" "), &r.qm);
    }
    if !r.had_record {
        println!(
            "no record of `hook install` for VM {} ({}): it gets no hookscript",
            r.vmid,
            r.record_path.display()
        );
    } else if r.record_removed {
        println!("removed {}", r.record_path.display());
    } else if !print_only {
        println!(
            "kept {} until VM {} has {back}: run `resetlab hook uninstall {}` again after the command",
            r.record_path.display(),
            r.vmid,
            r.vmid
        );
    }
    if let Some(p) = &r.shim_left {
        println!("the shim stays at {} (other VMs may use it)", p.display());
    }
}
