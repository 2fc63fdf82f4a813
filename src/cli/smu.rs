//! `resetlab smu DEV test|version|features|send MSG [ARG]`: talk to a GPU's
//! SMU mailbox (docs/smu.md).
//!
//! Writes: every action writes the mailbox (response, argument, message), so
//! every action needs root, passes the reset guards (VFIO group not open, no
//! live host driver, unless `--force`), takes the device lock and records
//! its writes in the journal. `send` makes them only with `--commit` (without
//! it, a dry run that prints them): it can send anything, a reset included.
//! `test`, `version` and `features` send queries that change no state, so
//! they run without `--commit` (accepted, and harmless) and `--dry-run` shows
//! their writes instead. amdgpu bound is refused even with `--force`: it owns
//! the mailbox.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use super::{print_json, Ctx, DevArgs};
use crate::amd::bases::{self, BaseSource};
use crate::amd::regio::{Barrier, RegIo, RegPath};
use crate::amd::regs::{RegsDb, ResolvedMailbox};
use crate::amd::smu::{self, PmfwVersion, Reply, Smu};
use crate::error::{exit, Error, Result};
use crate::journal::Record;
use crate::pci::mmio::{self, Access, BarMap, SystemFiles};
use crate::pci::{Device, Host, Topology};
use crate::reset::{Journal, ResetOptions};

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// MP1 firmware flags, then TestMessage: is the SMU alive?
    Test,
    /// GetPmfwVersion (and GetDriverIfVersion).
    Version,
    /// GetEnabledSmuFeatures, low and high halves.
    Features,
    /// Send MSG (a regs/ name or a number) with ARG (default 0).
    Send,
}

#[derive(clap::Args, Debug, Clone)]
pub struct SmuArgs {
    /// `[DEV] ACTION [MSG [ARG]]`: DEV is 0000:c5:00.0 or c5:00.0 (or use -s/-d); ACTION is
    /// test (is the SMU alive?), version (PMFW version), features (enabled SMU features) or
    /// send (MSG by regs/ name or number, ARG decimal, 0x hex or 0b binary, default 0).
    #[arg(value_name = "[DEV] ACTION", required = true, num_args = 1..=4)]
    pub words: Vec<String>,
    /// The device, as lspci -s: [[[domain]:][bus]:][slot][.[func]].
    #[arg(short = 's', value_name = "SLOT")]
    pub slot: Option<String>,
    /// The device, as lspci -d: [vendor]:[device][:class[:prog-if]].
    #[arg(short = 'd', value_name = "ID")]
    pub id: Option<String>,
    /// Filled from `words` by [`SmuArgs::split_words`].
    #[arg(skip)]
    pub dev: Option<String>,
    #[arg(skip = Action::Test)]
    pub action: Action,
    #[arg(skip)]
    pub message: Option<String>,
    #[arg(skip)]
    pub arg: Option<String>,
    /// `send`: really write (without it, a dry run that prints the writes).
    #[arg(long)]
    pub commit: bool,
    /// Record the writes, make none (the default for `send`).
    #[arg(long, conflicts_with = "commit")]
    pub dry_run: bool,
    /// Override exactly these refusals: the device's VFIO group is open (a VM uses it); it is
    /// bound to a host driver other than vfio-pci/pci-stub; the SMU answered an error amdgpu
    /// stops at (an unknown code, 0xFB) earlier in this run or holds one now. Never overridden:
    /// amdgpu bound (it owns the mailbox), reading the device's table while a VM holds it.
    #[arg(long)]
    pub force: bool,
    /// The ASIC (regs/ name) when the ids do not say it (`phoenix`).
    #[arg(long)]
    pub asic: Option<String>,
    /// The register BAR, when not the ASIC's usual one.
    #[arg(long)]
    pub bar: Option<u8>,
    /// The MP1 version whose mailbox to use (`13.0.4`, `13.0.11`); default the first in regs/.
    #[arg(long, value_name = "VERSION")]
    pub mp1: Option<String>,
    /// Bound of each wait for the SMU's answer, in ms (amdgpu: about 2000).
    #[arg(long, value_name = "MS", default_value_t = 2000, value_parser = crate::cli::ms)]
    pub timeout: u64,
    /// Do not wait for an answer to a previous message before sending, as
    /// amdgpu does for its first message after SMU init.
    #[arg(long)]
    pub ignore_pending: bool,
    /// Append every write as a JSON line, fsync'd before the write is made.
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,
    /// Bound of waiting for another resetlab holding the device's lock, in ms.
    #[arg(long, value_name = "MS", default_value_t = 30_000, value_parser = crate::cli::ms)]
    pub lock_timeout: u64,
}

impl SmuArgs {
    /// Reads `[DEV] ACTION [MSG [ARG]]`: the first word is the device unless
    /// it names an action (no BDF spells an action).
    pub fn split_words(&mut self) -> Result<()> {
        use clap::ValueEnum;
        let action = |w: &str| Action::from_str(w, true).ok();
        let mut w = self.words.iter();
        let first = w.next().cloned().unwrap_or_default();
        let act = match action(&first) {
            Some(a) => a,
            None => {
                self.dev = Some(first.clone());
                let a = w.next().ok_or_else(|| {
                    Error::parse(
                        "smu arguments",
                        &first,
                        "name an action after the device: test, version, features or send",
                    )
                })?;
                action(a).ok_or_else(|| {
                    Error::parse("smu action", a, "expected test, version, features or send")
                })?
            }
        };
        self.action = act;
        self.message = w.next().cloned();
        self.arg = w.next().cloned();
        if let Some(extra) = w.next() {
            return Err(Error::parse("smu arguments", extra, "too many arguments"));
        }
        if self.action != Action::Send && self.message.is_some() {
            return Err(Error::parse(
                "smu arguments",
                self.message.as_deref().unwrap_or(""),
                "only `send` takes MSG [ARG]",
            ));
        }
        Ok(())
    }

    /// Whether this invocation only records its writes.
    pub fn dry_run(&self) -> bool {
        match self.action {
            Action::Send => !self.commit,
            _ => self.dry_run,
        }
    }
}

/// What `resetlab smu` did.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct SmuReport {
    pub device: String,
    pub asic: String,
    pub bar: u8,
    pub mailbox: ResolvedMailbox,
    /// Where the mailbox's bases came from (device table, sysfs ip_discovery, regs/ static).
    pub bases: String,
    pub bases_source: BaseSource,
    /// How the mailbox is reached: in the BAR, or through PCIE_INDEX2/PCIE_DATA2.
    pub path: RegPath,
    /// What --force overrode (empty without it, or when nothing needed it).
    pub forced: Vec<String>,
    pub action: Action,
    pub dry_run: bool,
    pub warnings: Vec<String>,
    /// MP1 firmware flags' INTERRUPTS_ENABLED (`test`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub firmware_running: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub firmware_flags: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pmfw_version: Option<PmfwVersion>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver_if_version: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub features: Option<u64>,
    pub replies: Vec<Reply>,
    /// The journal's notes (waits skipped, what a dry run would not do).
    pub notes: Vec<String>,
    /// Every write, in order (with `dry_run` set when it was not made).
    pub writes: Vec<Record>,
}

/// Runs one `smu` action against the device, with guards, lock and journal.
pub fn execute(
    host: &Host,
    regs: &RegsDb,
    args: &SmuArgs,
    journal: &mut Journal,
) -> Result<SmuReport> {
    let topo = Topology::scan(host)?;
    let dev = DevArgs {
        dev: args.dev.clone(),
        slot: args.slot.clone(),
        id: args.id.clone(),
    }
    .resolve(&topo)?
    .clone();
    let (asic, bar) =
        smu::target(regs, &dev, args.asic.as_deref(), args.bar)?.ok_or_else(|| {
            Error::not_found(
                "register database entry for",
                format!(
                    "{:04x}:{:04x} ({}); --asic NAME names the ASIC",
                    dev.vendor, dev.device, dev.bdf
                ),
            )
        })?;
    // An unknown --mp1 is an error before anything is touched.
    asic.mailbox(args.mp1.as_deref())?;
    let (message, arg) = match args.action {
        Action::Send => {
            let m = args
                .message
                .as_deref()
                .ok_or_else(|| Error::parse("smu send", "", "name the message: send MSG [ARG]"))?;
            let arg = match &args.arg {
                Some(t) => crate::amd::regs::parse_u32(t).ok_or_else(|| {
                    Error::parse("message argument", t.as_str(), "not a 32-bit number")
                })?,
                None => 0,
            };
            (Some(smu::parse_message(asic, m)?), arg)
        }
        _ => {
            if args.message.is_some() {
                return Err(Error::parse(
                    "smu arguments",
                    args.message.as_deref().unwrap_or(""),
                    "only `send` takes a message",
                ));
            }
            (None, 0)
        }
    };
    let dry = journal.dry_run;
    let mut forced = vec![];
    if args.force {
        let strict = ResetOptions {
            force: false,
            dry_run: true,
            ..ResetOptions::default()
        };
        if let Err(e) = crate::reset::engine::guards(host, &topo, &dev, &strict) {
            forced.push(format!("overridden by --force: {}", e.one_line()));
        }
    }
    let opts = ResetOptions {
        force: args.force,
        dry_run: dry,
        asic: args.asic.clone(),
        bar: args.bar,
        ..ResetOptions::default()
    };
    // Root first, with the SMU's own reason (guards' would speak of resetting).
    if !dry && !nix::unistd::geteuid().is_root() {
        return Err(Error::refused(
            "talking to the SMU writes its mailbox registers: run as root (or use --dry-run)",
        ));
    }
    crate::reset::engine::guards(host, &topo, &dev, &opts)?;
    smu::refuse_if_amdgpu(&dev)?;
    let _lock = if dry {
        None
    } else {
        Some(crate::reset::lock::lock(
            host,
            &dev.bdf,
            Duration::from_millis(args.lock_timeout),
        )?)
    };
    if !dry {
        // Again with the lock held: a VM may have opened the group meanwhile.
        let now = Device::load(host, dev.bdf)?;
        crate::reset::engine::guards(host, &topo, &now, &opts)?;
    }
    journal.method = format!("smu {:?}", args.action).to_lowercase();
    let restore_control = crate::reset::engine::wake(&dev, journal, opts.wait_timeout)?;
    let dev = Device::load(host, dev.bdf)?;
    // The device's own table decides where the mailbox is (read now or this
    // boot's cache); regs/ only when it cannot be had.
    let found = bases::resolve(host, &dev, asic, bar, journal, !dry);
    let resolved = found.apply(asic)?;
    let asic = &resolved;
    let mp1 = args.mp1.clone().or_else(|| {
        found
            .discovery
            .as_ref()
            .and_then(|d| d.mp1_version())
            .filter(|v| asic.mailbox(Some(v)).is_ok())
    });
    let mailbox = asic.mailbox(mp1.as_deref())?;
    let saved = mmio::enable_memory(&dev, journal)?;
    let mut report = SmuReport {
        device: dev.bdf.to_string(),
        asic: asic.asic_name().to_string(),
        bar,
        mailbox: mailbox.clone(),
        bases: found.label(),
        bases_source: found.source,
        path: if mailbox.resp + 4 <= mmio::check_bar(&dev, bar).unwrap_or(0) {
            RegPath::Direct
        } else {
            RegPath::Indirect
        },
        forced,
        action: args.action,
        dry_run: dry,
        warnings: if dry {
            mmio::access_warnings(&dev)
        } else {
            vec![]
        },
        firmware_running: None,
        firmware_flags: None,
        pmfw_version: None,
        driver_if_version: None,
        features: None,
        replies: vec![],
        notes: vec![],
        writes: vec![],
    };
    for n in &found.notes {
        report.warnings.push(format!("bases: {n}"));
    }
    if !mailbox.base_confirmed {
        report.warnings.push(format!(
            "the {} MP1 segment base is regs/ static and UNCONFIRMED; `resetlab regs bases {}` reads the device's own table",
            asic.asic_name(),
            dev.bdf
        ));
    }
    let r = act(
        host,
        asic,
        mp1.as_deref(),
        bar,
        &dev,
        args,
        message,
        arg,
        journal,
        &mut report,
    );
    // Put back what was changed for the exchange, also after a failure.
    let r2 = match saved {
        Some(s) => mmio::restore_command(&dev, journal, s),
        None => Ok(()),
    };
    let r3 = match restore_control {
        Some(prev) => journal.sysfs_write(Some(&dev.bdf), &dev.dir.join("power/control"), &prev),
        None => Ok(()),
    };
    r?;
    r2?;
    r3?;
    report.writes = journal.writes().cloned().collect();
    report.notes = journal
        .records
        .iter()
        .filter_map(|r| r.note.clone())
        .collect();
    Ok(report)
}

#[allow(clippy::too_many_arguments)]
fn act(
    host: &Host,
    asic: &crate::amd::regs::Asic,
    mp1: Option<&str>,
    bar: u8,
    dev: &Device,
    args: &SmuArgs,
    message: Option<(String, u32)>,
    arg: u32,
    journal: &mut Journal,
    report: &mut SmuReport,
) -> Result<()> {
    let bdf = dev.bdf;
    let access = if journal.dry_run {
        Access::ReadOnly
    } else {
        Access::ReadWrite
    };
    let map = match BarMap::open(dev, bar, access, &SystemFiles::for_host(host)) {
        Ok(m) => m,
        Err(e) if journal.dry_run => {
            // A dry run still shows the writes it would make.
            report
                .warnings
                .push(format!("BAR not mapped: {}", e.one_line()));
            let region = format!("resource{bar}");
            let plan: Vec<(String, u32, u32)> = match (&args.action, message) {
                (Action::Send, Some((n, id))) => vec![(n, id, arg)],
                (Action::Test, _) => {
                    vec![("TestMessage".into(), asic.message("TestMessage")?.id, 0)]
                }
                (Action::Version, _) => vec![(
                    asic.version_message()?.name.clone(),
                    asic.version_message()?.id,
                    0,
                )],
                (Action::Features, _) => {
                    let id = asic.message("GetEnabledSmuFeatures")?.id;
                    vec![
                        ("GetEnabledSmuFeatures".into(), id, 0),
                        ("GetEnabledSmuFeatures".into(), id, 1),
                    ]
                }
                (Action::Send, None) => vec![],
            };
            for (_, id, a) in plan {
                smu::record_send(journal, &bdf, &region, &report.mailbox, id, a)?;
            }
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let io = RegIo::for_asic(asic, map, bdf)?.with_barrier(Barrier::for_sysfs(&host.sysfs));
    let mut client = Smu::with_io(asic, mp1, io)?;
    client.ignore_hung = args.force;
    if args.force {
        if let Some(code) = smu::hung_code(client.device()) {
            report.forced.push(format!(
                "overridden by --force: the SMU answered {code:#x} earlier in this run (hung)"
            ));
        }
    }
    let bound = Duration::from_millis(args.timeout);
    client.timeouts = smu::SmuTimeouts {
        prewait: bound,
        answer: bound,
    };
    client.skip_prewait = args.ignore_pending;
    match args.action {
        Action::Test => {
            if asic.file.indirect.is_some() && asic.smn("MP1_FIRMWARE_FLAGS").is_ok() {
                if let Some((running, raw)) = client.firmware_running(journal)? {
                    report.firmware_running = Some(running);
                    report.firmware_flags = Some(raw);
                }
            }
            report.replies.push(client.test(journal)?);
        }
        Action::Version => {
            let (r, v) = client.version(journal)?;
            report.replies.push(r);
            report.pmfw_version = v;
            let r = client.send(journal, "GetDriverIfVersion", 0)?;
            report.driver_if_version = r.value;
            report.replies.push(r);
        }
        Action::Features => {
            let (rs, mask) = client.features(journal)?;
            report.replies.extend(rs);
            report.features = mask;
        }
        Action::Send => {
            let (name, id) =
                message.ok_or_else(|| Error::parse("smu send", "", "name the message"))?;
            report
                .replies
                .push(client.send_id(journal, &name, id, arg)?);
        }
    }
    Ok(())
}

fn print_report(r: &SmuReport) {
    let m = &r.mailbox;
    let at = match r.path {
        RegPath::Direct => format!("BAR {} +", r.bar),
        RegPath::Indirect => "SMN (PCIE_INDEX2/PCIE_DATA2, past the BAR)".to_string(),
    };
    println!(
        "{}: {} SMU, MP1 {} mailbox at {at} msg {:#x} / arg {:#x} / resp {:#x}; bases from {}{}",
        r.device,
        r.asic,
        m.mp1_version,
        m.msg,
        m.arg,
        m.resp,
        r.bases,
        if m.base_confirmed {
            ""
        } else {
            " (UNCONFIRMED)"
        }
    );
    for f in &r.forced {
        println!("{f}");
    }
    for w in &r.warnings {
        println!("warning: {w}");
    }
    if let (Some(run), Some(raw)) = (r.firmware_running, r.firmware_flags) {
        println!(
            "MP1 firmware: {} (MP1_FIRMWARE_FLAGS {raw:#010x})",
            if run { "running" } else { "NOT running" }
        );
    }
    for rep in &r.replies {
        match rep.response {
            Some(code) => println!(
                "{} ({:#x}, arg {:#x}): {} ({code:#x}) in {:.2} ms{}",
                rep.message,
                rep.id,
                rep.arg,
                rep.response_name.as_deref().unwrap_or("?"),
                rep.answer_ms,
                rep.value
                    .map(|v| format!(", result {v:#010x}"))
                    .unwrap_or_default()
            ),
            None => println!(
                "{} ({:#x}, arg {:#x}): not sent (dry run)",
                rep.message, rep.id, rep.arg
            ),
        }
    }
    if let Some(v) = &r.pmfw_version {
        println!("PMFW version {v}");
    }
    if let Some(v) = r.driver_if_version {
        println!("driver interface version {v:#x}");
    }
    if let Some(f) = r.features {
        println!("enabled SMU features {f:#018x}");
    }
    for n in &r.notes {
        println!("note: {n}");
    }
    if r.dry_run {
        println!(
            "dry run: {} write(s) would be made, none was:",
            r.writes.len()
        );
        for w in &r.writes {
            println!("  {w}");
        }
        if r.action == Action::Send {
            println!("(add --commit to send)");
        }
    }
}

pub fn run(ctx: &Ctx, args: &SmuArgs) -> Result<i32> {
    let mut args = args.clone();
    args.split_words()?;
    let args = &args;
    let mut journal = Journal::new(args.dry_run());
    if let Some(t) = &args.trace {
        journal = journal.with_trace(t)?;
    }
    let report = execute(&ctx.host, &ctx.regs, args, &mut journal)?;
    if ctx.json {
        print_json(&report)?;
    } else {
        print_report(&report);
    }
    Ok(exit::OK)
}
