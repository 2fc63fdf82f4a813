//! One SMU action on a GPU (`resetlab smu DEV test|version|features|send`,
//! docs/smu.md), inside a device session: root (unless a dry run), the guards
//! (VFIO group not open, no live host driver, unless `force`), the device lock,
//! awake, memory decoding on, every write journalled. amdgpu bound is refused
//! even with `force`: it owns the mailbox. Returns a report the CLI renders.

use std::time::Duration;

use serde::Serialize;

use crate::amd::bases::{self, BaseSource};
use crate::amd::regio::{Barrier, RegIo, RegPath};
use crate::amd::regs::{RegsDb, ResolvedMailbox};
use crate::amd::smu::{self, PmfwVersion, Reply, Smu};
use crate::error::{Error, Result};
use crate::machine::Machine;
use crate::pci::journal::{Journal, Record};
use crate::pci::mmio::{self, BarMap};
use crate::pci::session::{self, Session, SessionOptions};
use crate::pci::{Bdf, Device, Topology};

/// What `resetlab smu` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
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

impl Action {
    pub const NAMES: [&'static str; 4] = ["test", "version", "features", "send"];

    /// The action a word names (any case), if it names one.
    pub fn parse(word: &str) -> Option<Action> {
        match word.to_ascii_lowercase().as_str() {
            "test" => Some(Action::Test),
            "version" => Some(Action::Version),
            "features" => Some(Action::Features),
            "send" => Some(Action::Send),
            _ => None,
        }
    }
}

/// What to do, as the command line said it.
#[derive(Debug, Clone)]
pub struct SmuRequest {
    pub action: Action,
    /// `send`: the message, by regs/ name or number.
    pub message: Option<String>,
    /// `send`: its argument (decimal, 0x hex or 0b binary; default 0).
    pub arg: Option<String>,
    /// Override the guards and a hung SMU (never amdgpu bound).
    pub force: bool,
    pub asic: Option<String>,
    pub bar: Option<u8>,
    pub mp1: Option<String>,
    /// Bound of each wait for the SMU's answer.
    pub timeout: Duration,
    /// Do not wait for an answer to a previous message before sending.
    pub ignore_pending: bool,
    /// Bound of waiting for another resetlab holding the device's lock.
    pub lock_timeout: Duration,
}

/// What talking to the SMU writes, for the refusal without root.
pub const SMU_WRITES: &str = "talking to the SMU writes its mailbox registers";

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

/// Runs one `smu` action against the device `bdf` of `topo`, in a session.
pub fn execute(
    host: &Machine,
    regs: &RegsDb,
    topo: &mut Topology,
    bdf: &Bdf,
    args: &SmuRequest,
    journal: &mut Journal,
) -> Result<SmuReport> {
    let dev = topo.require(bdf)?.clone();
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
        if let Err(e) = session::guards(host, topo, &dev, &[], false) {
            forced.push(format!("overridden by --force: {}", e.one_line()));
        }
    }
    // Root first, with the SMU's own reason; the guards before amdgpu's refusal
    // (the session runs both again, the guards with the lock held).
    session::require_root(dry, SMU_WRITES)?;
    session::guards(host, topo, &dev, &[], args.force)?;
    smu::refuse_if_amdgpu(&dev)?;
    journal.method = format!("smu {:?}", args.action).to_lowercase();
    let sopts = SessionOptions {
        dry_run: dry,
        force: args.force,
        lock_timeout: args.lock_timeout,
        ..SessionOptions::new(SMU_WRITES)
    };
    let mut session = Session::open(host, topo, &dev.bdf, &[], &sopts, journal)?;
    let dev = session.reload()?.clone();
    // The device's own table decides where the mailbox is (read now or this
    // boot's cache); regs/ only when it cannot be had.
    let found = bases::resolve(host, &dev, asic, bar, session.journal(), !dry);
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
    // The session maps the BAR as the journal allows (read-only in a dry run).
    let map = session.map_bar(bar);
    let mut mem = session.memory_decoding()?;
    let r = act(
        host,
        asic,
        mp1.as_deref(),
        (bar, map),
        &dev,
        args,
        message,
        arg,
        mem.journal(),
        &mut report,
    );
    // Put back what was changed for the exchange (COMMAND, then power
    // control), also after a failure.
    let r2 = mem.close();
    let r3 = session.close();
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
    host: &Machine,
    asic: &crate::amd::regs::Asic,
    mp1: Option<&str>,
    (bar, map): (u8, Result<BarMap>),
    dev: &Device,
    args: &SmuRequest,
    message: Option<(String, u32)>,
    arg: u32,
    journal: &mut Journal,
    report: &mut SmuReport,
) -> Result<()> {
    let bdf = dev.bdf;
    let map = match map {
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
    let bound = args.timeout;
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
