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

use super::{print_json, Ctx, DevArgs};
use crate::amd::regio::RegPath;
use crate::amd::smu_action::{self, SmuRequest};
pub use crate::amd::smu_action::{Action, SmuReport};
use crate::error::{exit, Error, Result};
use crate::pci::Topology;
use crate::reset::Journal;

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
        let action = Action::parse;
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

    /// The request the library runs.
    pub fn request(&self) -> SmuRequest {
        SmuRequest {
            action: self.action,
            message: self.message.clone(),
            arg: self.arg.clone(),
            force: self.force,
            asic: self.asic.clone(),
            bar: self.bar,
            mp1: self.mp1.clone(),
            timeout: Duration::from_millis(self.timeout),
            ignore_pending: self.ignore_pending,
            lock_timeout: Duration::from_millis(self.lock_timeout),
        }
    }
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
    let mut topo = Topology::scan(&ctx.host)?;
    let bdf = DevArgs {
        dev: args.dev.clone(),
        slot: args.slot.clone(),
        id: args.id.clone(),
    }
    .resolve(&topo)?
    .bdf;
    let report = smu_action::execute(
        &ctx.host,
        ctx.regs()?,
        &mut topo,
        &bdf,
        &args.request(),
        &mut journal,
    )?;
    if ctx.json {
        print_json(&report)?;
    } else {
        print_report(&report);
    }
    Ok(exit::OK)
}
