//! `resetlab hook VMID PHASE`, `resetlab hook install VMID`, `resetlab hook status VMID`.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Subcommand;

use super::{print_json, Cli, Ctx};
use crate::error::{exit, Result};
use crate::hook::install::{find_in_path, install, InstallReport, DEFAULT_SHIM_NAME};
use crate::hook::log::Logger;
use crate::hook::policy::{Phase, DEFAULT_POLICY_PATH};
use crate::hook::pveconf::DEFAULT_PVE_ROOT;
use crate::hook::run::{HookOptions, PhaseRunner};
use crate::hook::status::{status, StatusReport};
use crate::pci::Host;

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
    /// Copy the hookscript shim into a storage's snippets directory and set it on the VM.
    Install(InstallArgs),
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
    /// Print the `qm set` command instead of running it.
    #[arg(long, conflicts_with = "qm")]
    pub print_only: bool,
    /// The `qm` to run [default: `qm` from PATH on the live machine; with a --sysfs root other
    /// than /sys, none: the command is printed].
    #[arg(long, value_name = "PATH")]
    pub qm: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    #[arg(value_name = "VMID", value_parser = vmid_parser())]
    pub vmid: u32,
}

/// `/etc/...` on the live machine; beside the tree for a twin or snapshot (`<sysfs>/../etc/...`,
/// as for `/dev` and `/run`), so that a twin never reads the machine's own Proxmox config.
fn beside(host: &Host, abs: &str) -> PathBuf {
    if host.is_live() {
        return PathBuf::from(abs);
    }
    let base = host.sysfs.parent().unwrap_or(&host.sysfs);
    base.join(abs.trim_start_matches('/'))
}

fn options(host: &Host, p: &HookPaths) -> HookOptions {
    HookOptions {
        pve_root: p
            .pve_config
            .clone()
            .unwrap_or_else(|| beside(host, DEFAULT_PVE_ROOT)),
        policy: p
            .policy
            .clone()
            .unwrap_or_else(|| beside(host, DEFAULT_POLICY_PATH)),
        state_dir: p.state_dir.clone(),
        node: p.node.clone(),
        migrated_from: std::env::var("PVE_MIGRATED_FROM")
            .ok()
            .filter(|s| !s.is_empty()),
        stderr: true,
    }
}

/// Runs `hook` without the common context when it can: a hook phase loads the register
/// database only if it resets something, and a live `/sys` or a directory needs no set-up.
/// `--sim` and snapshot files go through [`Ctx`].
pub fn run_cli(cli: &Cli, args: &HookArgs) -> Result<i32> {
    let root = cli
        .sysfs
        .clone()
        .unwrap_or_else(|| PathBuf::from(crate::pci::sysfs::SYSFS_DEFAULT));
    if cli.sim || root.is_file() {
        let ctx = Ctx::new(cli)?;
        return run(&ctx.host, &cli.regs, cli.json, args);
    }
    if !root.is_dir() {
        return Err(crate::error::Error::io(
            "open sysfs root",
            &root,
            std::io::Error::from(std::io::ErrorKind::NotFound),
        ));
    }
    run(&Host::new(root), &cli.regs, cli.json, args)
}

pub fn run(host: &Host, regs: &[PathBuf], json: bool, args: &HookArgs) -> Result<i32> {
    match &args.cmd {
        Some(HookCmd::Install(a)) => run_install(host, json, &args.paths, a),
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

fn run_dry(host: &Host, json: bool, paths: &HookPaths, vmid: u32, phase: Phase) -> Result<i32> {
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
    host: &Host,
    regs: &[PathBuf],
    json: bool,
    paths: &HookPaths,
    vmid: u32,
    phase: Phase,
) -> Result<i32> {
    let runner = PhaseRunner::new(host, regs.to_vec(), options(host, paths), vmid, phase);
    // The last resort behind the per-wait bounds: a wait inside the kernel that no bound of
    // ours covers must not keep Proxmox waiting for ever.
    let deadline = runner.started() + runner.budget() + WATCHDOG_GRACE;
    let budget = runner.budget();
    let code = if runner.fail_on_error() {
        exit::FAILED
    } else {
        exit::OK
    };
    let progress = runner.progress.clone();
    let host = host.clone();
    std::thread::spawn(move || {
        std::thread::sleep(deadline.saturating_duration_since(std::time::Instant::now()));
        let what = progress.lock().map(|p| p.clone()).unwrap_or_default();
        let mut log = Logger::new(&host, format!("resetlab: VM {vmid} {phase}: "), true);
        log.err(format!(
            "budget of {} s exceeded while busy with {what}; giving up",
            budget.as_secs_f64()
        ));
        std::process::exit(code);
    });
    let report = runner.run();
    if json {
        print_json(&report)?;
    }
    Ok(report.exit_code)
}

fn run_status(host: &Host, json: bool, paths: &HookPaths, a: &StatusArgs) -> Result<i32> {
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
        let kind = d
            .kind
            .map(|k| format!("{k:?}"))
            .unwrap_or_else(|| "?".into());
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

fn run_install(host: &Host, json: bool, paths: &HookPaths, a: &InstallArgs) -> Result<i32> {
    let qm = match (&a.qm, a.print_only) {
        (Some(q), _) => Some(q.clone()),
        (None, true) => None,
        (None, false) if host.is_live() => find_in_path("qm"),
        (None, false) => None,
    };
    // A twin's snippets directories live beneath its root, never on this machine.
    let root = (!host.is_live()).then(|| beside(host, "/"));
    let r = install(
        &options(host, paths),
        a.vmid,
        &a.storage,
        &a.name,
        a.force,
        qm.as_deref(),
        root.as_deref(),
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

fn print_install(r: &InstallReport) {
    println!(
        "{} {}",
        if r.written { "wrote" } else { "unchanged:" },
        r.path.display()
    );
    if let Some(prev) = r.previous_hookscript.as_deref().filter(|p| *p != r.volid) {
        println!("VM {} had hookscript {prev}; it is replaced", r.vmid);
    }
    let cmd = r.command.join(" ");
    match &r.qm {
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
