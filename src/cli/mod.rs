//! The thin command-line layer: parse, call the library, print (human or
//! `--json`), map errors to the exit codes of `docs/cli.md`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::error::{exit, Error, Result};
use crate::machine::Machine;
use crate::pci::{Bdf, Device, IdSelector, SlotSelector, Topology};

pub mod bench;
mod doctor;
pub mod generate;
pub mod hook;
mod list;
pub mod regs;
pub mod release;
pub mod report;
pub mod reset;
pub mod run;
pub mod schema;
pub mod sim;
mod sim_vm;
pub mod smu;
mod snapshot;
pub mod vbios;

/// `resetlab --version`: the crate's version (the .deb's too) and the commit it was built from
/// (build.rs: `commit <hash>[, dirty]` or `unknown commit`).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("RESETLAB_GIT_COMMIT"),
    ")"
);

#[derive(Parser, Debug)]
#[command(
    name = "resetlab",
    version = VERSION,
    about = "Reset PCI devices from Linux userspace (first: the AMD Radeon 780M, 1002:1900)",
    propagate_version = true
)]
pub struct Cli {
    /// sysfs root to work on: a directory, or a snapshot file to replay.
    #[arg(long, global = true, env = "RESETLAB_SYSFS", value_name = "DIR|FILE")]
    pub sysfs: Option<PathBuf>,
    /// Run against the built-in twin of the seed's UM880 Pro host (a fresh temp dir).
    #[arg(long, global = true, conflicts_with = "sysfs")]
    pub sim: bool,
    /// With --sim: the twin's GPU as a device of this regs/ family or alias
    /// (rembrandt, raphael, strix, cezanne, ...; `resetlab regs list`). Default: the 780M.
    #[arg(long, global = true, value_name = "NAME", requires = "sim")]
    pub sim_asic: Option<String>,
    /// Machine-readable output.
    #[arg(long, global = true)]
    pub json: bool,
    /// Add or override register files (regs/*.toml) from DIR; repeatable.
    #[arg(long = "regs", global = true, value_name = "DIR")]
    pub regs: Vec<PathBuf>,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Every PCI device by IOMMU group, with what can reset it and why not.
    List(list::ListArgs),
    /// One device in full: every method's verdict with the registers behind it.
    Probe(list::ProbeArgs),
    /// Reset a device: an ordered fallback chain of methods, with guards and a journal.
    Reset(reset::ResetArgs),
    /// Talk to a GPU's SMU mailbox: test, version, features, send MSG [ARG].
    Smu(smu::SmuArgs),
    /// Run a register-level experiment (dry unless --commit); `run diff TRACE A B`.
    Run(run::RunArgs),
    /// Capture the PCI part of sysfs (read-only) into a file --sysfs can replay.
    Snapshot(snapshot::SnapshotArgs),
    /// Check the host (and a VM) against the passthrough recipe.
    Doctor(doctor::DoctorArgs),
    /// The twin as a daemon: up, down, dirty, status.
    Sim(sim::SimArgs),
    /// The register database (regs/) and a device's IP discovery bases.
    Regs(regs::RegsArgs),
    /// Dump the VBIOS from the ACPI VFCT table, or check a ROM file.
    Vbios(vbios::VbiosArgs),
    /// Proxmox hookscript backend: `hook VMID PHASE`, `hook install VMID`, `hook status VMID`.
    Hook(hook::HookArgs),
    /// Timed, repeated trials of reset methods with health verdicts; reports and plots.
    Bench(Box<bench::BenchArgs>),
    /// One .tar.gz for a bug report: snapshot, discovery table, SMU state (read-only), doctor, logs.
    Report(report::ReportArgs),
    /// Have a running VM's guest let go of a passed-through device (QMP device_del), bounded.
    Release(release::ReleaseArgs),
    /// Write the man pages or shell completions (tools/package.sh runs it).
    #[command(hide = true)]
    Generate(generate::GenerateArgs),
    /// The JSON Schema of a --json output (docs/schema/); without NAME, the list.
    #[command(hide = true)]
    Schema {
        /// The output's name (list, probe, doctor, hook-status, …).
        name: Option<String>,
    },
}

/// Selects exactly one device: a BDF, or lspci-style `-s` / `-d` selectors.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct DevArgs {
    /// The device: 0000:c5:00.0 or c5:00.0.
    #[arg(value_name = "DEV")]
    pub dev: Option<String>,
    /// The device, as lspci -s: [[[domain]:][bus]:][slot][.[func]] (must match exactly one).
    #[arg(short = 's', value_name = "SLOT")]
    pub slot: Option<String>,
    /// The device, as lspci -d: [vendor]:[device][:class[:prog-if]] (must match exactly one).
    #[arg(short = 'd', value_name = "ID")]
    pub id: Option<String>,
}

impl DevArgs {
    /// Resolves to one device of the topology.
    pub fn resolve<'t>(&self, topo: &'t Topology) -> Result<&'t Device> {
        if let Some(d) = &self.dev {
            let bdf: Bdf = d.parse()?;
            let dev = topo.require(&bdf)?;
            // DEV together with -s / -d: they must name the same device.
            if self.slot.is_some() || self.id.is_some() {
                let m = select(topo, self.slot.as_deref(), self.id.as_deref())?;
                if !m.iter().any(|x| x.bdf == bdf) {
                    let sel = [self.slot.as_deref(), self.id.as_deref()]
                        .iter()
                        .flatten()
                        .copied()
                        .collect::<Vec<_>>()
                        .join(" ");
                    return Err(Error::parse(
                        "device",
                        format!("{bdf} {sel}"),
                        format!("{bdf} does not match the selector '{sel}'; name the device once"),
                    ));
                }
            }
            return Ok(dev);
        }
        if self.slot.is_none() && self.id.is_none() {
            return Err(Error::parse(
                "device",
                "",
                "name a device: DEV (0000:c5:00.0), -s SLOT or -d VENDOR:DEVICE",
            ));
        }
        let m = select(topo, self.slot.as_deref(), self.id.as_deref())?;
        let label = [self.slot.as_deref(), self.id.as_deref()]
            .iter()
            .flatten()
            .copied()
            .collect::<Vec<_>>()
            .join(" ");
        match m.as_slice() {
            [one] => Ok(one),
            [] => Err(Error::not_found("PCI device matching", label)),
            many => Err(Error::Ambiguous {
                selector: label,
                matches: many.iter().map(|d| d.bdf.to_string()).collect(),
            }),
        }
    }
}

/// Devices matching optional `-s` and `-d` selectors.
pub fn select<'t>(
    topo: &'t Topology,
    slot: Option<&str>,
    id: Option<&str>,
) -> Result<Vec<&'t Device>> {
    let s: Option<SlotSelector> = slot.map(str::parse).transpose()?;
    let i: Option<IdSelector> = id.map(str::parse).transpose()?;
    Ok(topo
        .devices
        .values()
        .filter(|d| s.as_ref().is_none_or(|s| s.matches(&d.bdf)))
        .filter(|d| {
            i.as_ref()
                .is_none_or(|i| i.matches(d.vendor, d.device, d.class))
        })
        .collect())
}

/// What a command runs against: the machine (live, a twin, an unpacked snapshot, which it
/// holds alive), the output mode and the register database, loaded the first time a command
/// asks for it (a hook phase that resets nothing never parses it).
pub struct Ctx {
    pub host: Machine,
    pub json: bool,
    /// `--regs DIR`s, over the embedded database.
    pub regs_dirs: Vec<PathBuf>,
    regs: std::cell::OnceCell<crate::amd::regs::RegsDb>,
    _twin: Option<crate::sim::Twin>,
    _snapshot: Option<crate::snapshot::Unpacked>,
}

impl Ctx {
    pub fn new(cli: &Cli) -> Result<Ctx> {
        let mut ctx = Ctx {
            host: Machine::live(),
            json: cli.json,
            regs_dirs: cli.regs.clone(),
            regs: std::cell::OnceCell::new(),
            _twin: None,
            _snapshot: None,
        };
        if cli.sim {
            let gpu = match &cli.sim_asic {
                Some(name) => Some(crate::sim::family::TwinGpu::for_name(ctx.regs()?, name)?),
                None => None,
            };
            let twin = crate::sim::Twin::running_as(
                crate::sim::profile::Profile::default(),
                gpu.as_ref(),
            )?;
            ctx.host = Machine::new(&twin.sysfs);
            ctx._twin = Some(twin);
            return Ok(ctx);
        }
        let path = Machine::from_flag(cli.sysfs.as_deref()).sysfs;
        let meta = std::fs::metadata(&path).map_err(|e| Error::io("open sysfs root", &path, e))?;
        if meta.is_file() {
            let un = crate::snapshot::unpack(&path)?;
            ctx.host = Machine::snapshot(&un.sysfs);
            ctx._snapshot = Some(un);
            return Ok(ctx);
        }
        ctx.host = Machine::new(path);
        Ok(ctx)
    }

    /// `machine` as it is, with the embedded register database (for tests of a command).
    #[cfg(test)]
    pub fn on(machine: Machine, json: bool) -> Ctx {
        Ctx {
            host: machine,
            json,
            regs_dirs: vec![],
            regs: std::cell::OnceCell::new(),
            _twin: None,
            _snapshot: None,
        }
    }

    /// The register database (embedded, with `--regs` over it), loaded once.
    pub fn regs(&self) -> Result<&crate::amd::regs::RegsDb> {
        if let Some(db) = self.regs.get() {
            return Ok(db);
        }
        let db = crate::amd::regs::RegsDb::load(&self.regs_dirs)?;
        Ok(self.regs.get_or_init(|| db))
    }

    /// The twin's root directory when running with `--sim`.
    pub fn twin_root(&self) -> Option<&std::path::Path> {
        self._twin.as_ref().map(|t| t.root())
    }
}

/// A `MS` flag's value: milliseconds, or a duration with its unit (`500ms`,
/// `2s`, `1.5s`, `2m`).
pub fn ms(s: &str) -> std::result::Result<u64, String> {
    crate::text::parse_duration(s, crate::text::BareUnit::Millis).map(|d| d.as_millis() as u64)
}

/// Whether this run has printed its `--json` output: an error after it (a
/// refusal once the report is out) is then only the line on stderr, so stdout
/// stays one JSON document.
static JSON_PRINTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Prints an output object with its `schema_version` (see [`schema`]).
pub fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    schema::print(v)?;
    JSON_PRINTED.store(true, std::sync::atomic::Ordering::Relaxed);
    Ok(())
}

impl Cmd {
    /// Whether the command would write to the machine it runs against (a
    /// snapshot refuses those). `--dry-run`s and reports read only.
    pub fn writes(&self) -> bool {
        match self {
            Cmd::Reset(a) => !a.dry_run,
            Cmd::Smu(a) => !a.dry_run(),
            Cmd::Run(a) => a.cmd.is_none() && a.commit,
            Cmd::Vbios(a) => {
                matches!(&a.cmd, vbios::VbiosCmd::Dump(d) if d.from_rom.is_some() && !d.dry_run)
            }
            Cmd::Hook(a) => hook::writes(a),
            Cmd::Bench(a) => a.cmd.is_none(),
            // Changes a VM (device_del through its monitor), not sysfs.
            Cmd::Release(a) => !a.dry_run,
            Cmd::List(_)
            | Cmd::Probe(_)
            | Cmd::Snapshot(_)
            | Cmd::Doctor(_)
            | Cmd::Sim(_)
            | Cmd::Report(_)
            | Cmd::Generate(_)
            | Cmd::Schema { .. }
            | Cmd::Regs(_) => false,
        }
    }
}

/// Refuses a writing command on a snapshot, before anything runs; for one
/// that may write, first puts back what an interrupted run left changed
/// host-wide (`drivers_autoprobe`, see `reset::autoprobe`).
pub fn check_writable(host: &Machine, cmd: &Cmd) -> Result<()> {
    if !cmd.writes() {
        return Ok(());
    }
    host.check_writable()?;
    if nix::unistd::geteuid().is_root() {
        let mut j = crate::journal::Journal::new(false);
        match crate::reset::autoprobe::recover(host, &mut j) {
            Ok(Some(note)) => {
                use std::io::Write as _;
                let _ = writeln!(std::io::stderr(), "resetlab: note: {note}");
            }
            Ok(None) => {}
            Err(e) => {
                use std::io::Write as _;
                let _ = writeln!(
                    std::io::stderr(),
                    "resetlab: warning: could not put drivers_autoprobe back: {}",
                    e.one_line()
                );
            }
        }
    }
    Ok(())
}

fn run(cli: Cli) -> Result<i32> {
    if let Cmd::Sim(a) = &cli.cmd {
        return sim::run(a, cli.json);
    }
    if let Cmd::Generate(a) = &cli.cmd {
        return generate::run(a);
    }
    if let Cmd::Schema { name } = &cli.cmd {
        return schema::run(name.as_deref());
    }
    if matches!(cli.cmd, Cmd::Release(_)) && cli.sim {
        // A fresh twin runs no VM, and its socket must never be looked for on this machine.
        return Err(Error::parse(
            "--sim",
            "release",
            "a fresh twin runs no VM: give --qmp SOCKET, or --sysfs with a twin whose fake QEMU runs and --vmid",
        ));
    }
    let ctx = Ctx::new(&cli)?;
    check_writable(&ctx.host, &cli.cmd)?;
    match &cli.cmd {
        Cmd::List(a) => list::list(&ctx, a),
        Cmd::Probe(a) => list::probe(&ctx, a),
        Cmd::Snapshot(a) => snapshot::run(&ctx, a),
        Cmd::Reset(a) => reset::run(&ctx, a),
        Cmd::Doctor(a) => doctor::run(&ctx, a),
        Cmd::Sim(a) => sim::run(a, ctx.json),
        Cmd::Smu(a) => smu::run(&ctx, a),
        Cmd::Run(a) => run::run(&ctx, a),
        Cmd::Regs(a) => regs::run(&ctx, a),
        Cmd::Vbios(a) => vbios::run(&ctx, a),
        Cmd::Hook(a) => hook::run(&ctx, a),
        Cmd::Bench(a) => bench::run(&ctx, a),
        Cmd::Report(a) => report::run(&ctx, a),
        Cmd::Release(a) => release::run(&ctx, a),
        Cmd::Generate(a) => generate::run(a),
        Cmd::Schema { name } => schema::run(name.as_deref()),
    }
}

/// `--version -v`: clap stops at `--version`, so the `-v` is looked for here.
fn version_verbose() -> bool {
    std::env::args()
        .skip(1)
        .any(|a| a == "-v" || a == "-vv" || a == "--verbose")
}

/// Whether this is the hook proper (`hook VMID PHASE`, what the shim runs): Proxmox may close
/// its stdout/stderr mid-phase (the task log going away), and a write that fails then means
/// the reader is gone, never a reason to stop between a device's remove and its rescan. So it
/// runs with SIGPIPE ignored; every write it makes ignores the EPIPE.
fn hook_mode(cli: &Cli) -> bool {
    matches!(&cli.cmd, Cmd::Hook(a) if a.cmd.is_none())
}

pub fn main() -> i32 {
    // SIGPIPE stays ignored (as Rust starts us) until the command is known, so that no
    // signal can end a hook before it is: the usage errors below ignore a failed write.
    crate::sys::ignore_sigpipe();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            use std::io::Write as _;
            if e.kind() == ErrorKind::DisplayVersion && version_verbose() {
                let mut out = std::io::stdout();
                let _ = writeln!(out, "resetlab {}", env!("CARGO_PKG_VERSION"));
                let _ = writeln!(out, "{}", crate::pci::names::describe_source());
                return exit::OK;
            }
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion)
                || e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            {
                let _ = e.print();
                return if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                    exit::USAGE
                } else {
                    exit::OK
                };
            }
            // One line: clap's first line, without its usage block.
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("bad arguments");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            // Keep clap's "did you mean" (its `tip:` lines) on the one line.
            let tips: Vec<&str> = text
                .lines()
                .filter_map(|l| l.trim().strip_prefix("tip: "))
                .collect();
            let line = if tips.is_empty() {
                format!("{first} (see resetlab --help)")
            } else {
                format!("{first}; {} (see resetlab --help)", tips.join("; "))
            };
            if std::env::args().skip(1).any(|a| a == "--json") {
                let _ = writeln!(std::io::stdout(), "{}", schema::usage_error_out(&line));
            }
            let _ = writeln!(std::io::stderr(), "resetlab: {line}");
            return exit::USAGE;
        }
    };
    if !hook_mode(&cli) {
        // `resetlab list | head` must end quietly, as Unix tools do, not panic in println!
        // on EPIPE: SIGPIPE's default action.
        crate::sys::default_sigpipe();
    }
    // Temp dirs and host-wide settings are undone on SIGINT/SIGTERM/SIGHUP, and on SIGPIPE
    // where it has its default action.
    crate::cleanup::install();
    let json = cli.json;
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            use std::io::Write as _;
            if json && !JSON_PRINTED.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = writeln!(std::io::stdout(), "{}", schema::error_out(&e));
            }
            let _ = writeln!(std::io::stderr(), "resetlab: {}", e.one_line());
            e.exit_code()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn only_a_hook_phase_runs_in_hook_mode() {
        let mode = |args: &[&str]| {
            let cli = Cli::try_parse_from(std::iter::once("resetlab").chain(args.iter().copied()));
            hook_mode(&cli.unwrap())
        };
        assert!(mode(&["hook", "100", "post-stop"]));
        assert!(mode(&[
            "--sysfs",
            "/x",
            "hook",
            "100",
            "pre-start",
            "--dry-run"
        ]));
        assert!(!mode(&["hook", "status", "100"]));
        assert!(!mode(&["list"]));
    }
}
