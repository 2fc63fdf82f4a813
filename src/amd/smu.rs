//! The SMU (MP1) mailbox client, speaking amdgpu's protocol
//! (drivers/gpu/drm/amd/pm/swsmu/smu_cmn.c):
//!
//! 1. `smu_cmn_send_smc_msg_with_param` first waits, bounded
//!    (`__smu_cmn_poll_stat`), for the response register to be non-zero: the
//!    previous message has been answered. If it stays 0, or holds a code
//!    outside the table, amdgpu sends nothing (`reg == SMU_RESP_NONE || res ==
//!    -EREMOTEIO` → `goto Out`). It skips this wait for its first message
//!    after SMU init (`smu->smc_fw_state == SMU_FW_INIT`, set by
//!    amdgpu_smu.c: `smu_start_smc_engine`), because a driver unload can
//!    leave the register at 0; on a clean SMU it reads 0x1.
//! 2. `__smu_cmn_send_msg`: response ← 0, argument ← param, message ← id.
//! 3. `__smu_cmn_poll_stat` again: `udelay(1)` up to `usec_timeout * 20`
//!    (AMDGPU_MAX_USEC_TIMEOUT 100000 → about 2 s).
//! 4. `smu_cmn_read_arg`: the result is in the argument register.
//! 5. `__smu_cmn_reg2errno` / `__smu_cmn_reg_print_error` give each code its
//!    meaning; here the words come from the regs/ `[[responses]]` table.
//!
//! What "the first message after SMU init" means for us: a resetlab process
//! cannot know whether the SMU was just (re)initialised, so every message
//! waits for the previous answer, like amdgpu's steady state, and gives up
//! with an error that says so when the register stays 0. The caller may set
//! [`Smu::skip_prewait`] (`resetlab smu --ignore-pending`) when it knows
//! nothing else talks to this SMU (amdgpu unbound, our device lock held): the
//! same decision amdgpu makes at SMU init. After our own mode-2 reset the
//! register holds the reset's OK answer, so no skip is needed there.
//!
//! Every write goes through the journal; in dry-run the writes are recorded
//! and nothing is sent (no answer is awaited).

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::amd::regio::{RegIo, RegPath};
use crate::amd::regs::{Asic, RegsDb, ResolvedMailbox};
use crate::error::{Error, Result};
use crate::journal::Journal;
use crate::pci::mmio::BarMap;
use crate::pci::{Bdf, Device};

/// amdgpu's bound on each poll of the response register: `usec_timeout * 20`
/// iterations of `udelay(1)` with AMDGPU_MAX_USEC_TIMEOUT = 100000
/// (amdgpu.h), about 2 s.
pub const AMDGPU_POLL_BOUND: Duration = Duration::from_secs(2);

/// Spin (no sleep) this long before backing off: simple messages are
/// answered within microseconds.
const SPIN: Duration = Duration::from_micros(200);
/// Longest sleep between polls once backing off.
const MAX_SLEEP: Duration = Duration::from_millis(1);

/// The SMU's answer of the BAR reading dead (smu_cmn.c: SMU_RESP_UNEXP).
pub const RESP_DEAD: u32 = 0xffff_ffff;
pub const RESP_NONE: u32 = 0x0;
pub const RESP_OK: u32 = 0x1;
/// smu_cmn.c: SMU_RESP_DEBUG_END. An error: `__smu_cmn_reg2errno` has no case
/// for it and returns -EREMOTEIO (its default), like an unknown code.
pub const RESP_DEBUG_END: u32 = 0xfb;

/// Bounds of the two waits of one message.
#[derive(Debug, Clone, Copy)]
pub struct SmuTimeouts {
    /// Waiting for the previous message's answer before sending.
    pub prewait: Duration,
    /// Waiting for this message's answer.
    pub answer: Duration,
}

impl Default for SmuTimeouts {
    fn default() -> Self {
        SmuTimeouts {
            prewait: AMDGPU_POLL_BOUND,
            answer: AMDGPU_POLL_BOUND,
        }
    }
}

/// One message's exchange.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Reply {
    pub message: String,
    pub id: u32,
    pub arg: u32,
    /// False in dry-run: the writes were only recorded.
    pub sent: bool,
    /// The response register before sending (None when the wait was skipped).
    pub previous: Option<u32>,
    /// The response code (None in dry-run).
    pub response: Option<u32>,
    pub response_name: Option<String>,
    /// The argument register after the answer: the message's result.
    pub value: Option<u32>,
    /// From the message write to the answer.
    pub answer_ms: f64,
}

/// `GetPmfwVersion`'s result: program << 24 | major << 16 | minor << 8 | debug
/// (smu_v13_0.c: `smu_v13_0_check_fw_version`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct PmfwVersion {
    pub raw: u32,
    pub program: u8,
    pub major: u8,
    pub minor: u8,
    pub debug: u8,
}

impl PmfwVersion {
    pub fn decode(raw: u32) -> PmfwVersion {
        let [debug, minor, major, program] = raw.to_le_bytes();
        PmfwVersion {
            raw,
            program,
            major,
            minor,
            debug,
        }
    }
}

impl std::fmt::Display for PmfwVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}.{}.{} (program {}, raw {:#010x})",
            self.major, self.minor, self.debug, self.program, self.raw
        )
    }
}

/// Parses a message given as a regs/ name (`TestMessage`, case-insensitive)
/// or a number (`0x1`, `1`): its name and id.
pub fn parse_message(asic: &Asic, text: &str) -> Result<(String, u32)> {
    let t = text.trim();
    if let Ok(m) = asic.message(t) {
        return Ok((m.name.clone(), m.id));
    }
    match crate::amd::regs::parse_u32(t) {
        Some(id) => Ok(asic
            .message_by_id(id)
            .map(|m| (m.name.clone(), m.id))
            .unwrap_or_else(|| (format!("message {id:#x}"), id))),
        None => {
            let names: Vec<&str> = asic.file.messages.iter().map(|m| m.name.as_str()).collect();
            Err(Error::parse(
                "SMU message",
                t,
                format!(
                    "not a number nor one of {} ({})",
                    names.join(", "),
                    asic.asic_name()
                ),
            ))
        }
    }
}

/// The error for a non-OK response code, in the regs/ table's words.
pub fn response_error(asic: &Asic, message: &str, id: u32, arg: u32, code: u32) -> Error {
    let (name, meaning) = match asic.response(code) {
        Some(r) => (r.name.clone(), r.meaning.clone()),
        None => (
            "UNKNOWN".to_string(),
            "not a code of the response table: the SMU is in an unknown state, likely hung (smu_cmn.c: __smu_cmn_reg2errno → -EREMOTEIO)".to_string(),
        ),
    };
    Error::Smu {
        message: message.to_string(),
        id,
        arg,
        code,
        name,
        meaning,
    }
}

/// The ASIC a device is (by `--asic NAME`, else by its PCI ids) and its
/// register BAR (by `--bar N`, else the ASIC's). `None` when regs/ does not
/// know the device and no name was given.
pub fn target<'r>(
    regs: &'r RegsDb,
    dev: &Device,
    asic: Option<&str>,
    bar: Option<u8>,
) -> Result<Option<(&'r Asic, u8)>> {
    let a = match asic {
        Some(name) => regs.asic(name)?,
        None => match regs.by_pci_id(dev.vendor, dev.device) {
            Some(a) => a,
            None => return Ok(None),
        },
    };
    Ok(Some((a, bar.unwrap_or(a.file.bar.index))))
}

/// amdgpu owns the mailbox while bound (it serialises messages under its
/// own lock, smu_cmn.c: `smu->message_lock`): never talk to it then.
pub fn refuse_if_amdgpu(dev: &Device) -> Result<()> {
    if dev.driver.as_deref() == Some("amdgpu") {
        return Err(Error::refused(format!(
            "{} is bound to amdgpu, which owns the SMU mailbox (messages from two masters would interleave); unbind it or bind vfio-pci first",
            dev.bdf
        )));
    }
    Ok(())
}

/// Records the three writes of a message without a mapped BAR (a dry run
/// that could not map it, e.g. not root): the same records `send` makes.
pub fn record_send(
    journal: &mut Journal,
    device: &Bdf,
    region: &str,
    mailbox: &ResolvedMailbox,
    id: u32,
    arg: u32,
) -> Result<()> {
    if !journal.dry_run {
        return Err(Error::failed(
            "record_send is for dry runs only: no BAR to write to",
        ));
    }
    for (off, v) in [
        (mailbox.resp, RESP_NONE),
        (mailbox.arg, arg),
        (mailbox.msg, id),
    ] {
        journal.mmio_write(device, region, off, v)?;
    }
    Ok(())
}

/// Polls `read` until it returns non-zero or `bound` passes: a short spin,
/// then sleeps from 10 µs doubling up to 1 ms. Returns the last value and
/// the time spent.
pub fn poll_nonzero(
    bound: Duration,
    mut read: impl FnMut() -> Result<u32>,
) -> Result<(u32, Duration)> {
    let start = Instant::now();
    let mut delay = Duration::from_micros(10);
    loop {
        let v = read()?;
        let spent = start.elapsed();
        if v != 0 || spent >= bound {
            return Ok((v, spent));
        }
        if spent < SPIN {
            std::hint::spin_loop();
            continue;
        }
        std::thread::sleep(delay.min(bound - spent));
        delay = (delay * 2).min(MAX_SLEEP);
    }
}

/// Devices whose SMU answered with a code outside the response table in this
/// process: nothing more is sent to them (see [`Smu::send_id`]).
static HUNG: std::sync::Mutex<Vec<(Bdf, u32)>> = std::sync::Mutex::new(Vec::new());

/// The unknown code a device's SMU answered with earlier in this run, if any.
pub fn hung_code(device: &Bdf) -> Option<u32> {
    HUNG.lock()
        .ok()
        .and_then(|h| h.iter().find(|(d, _)| d == device).map(|(_, c)| *c))
}

fn latch_hung(device: &Bdf, code: u32) {
    if let Ok(mut h) = HUNG.lock() {
        if !h.iter().any(|(d, _)| d == device) {
            h.push((*device, code));
        }
    }
}

/// Forgets the latch (tests that run several twins in one process).
pub fn clear_hung(device: &Bdf) {
    if let Ok(mut h) = HUNG.lock() {
        h.retain(|(d, _)| d != device);
    }
}

/// Whether `code` makes amdgpu stop talking to the SMU: not a code of the
/// table (0xFB DEBUG_END included: `__smu_cmn_reg2errno` maps it, like any
/// unknown value, to -EREMOTEIO, and `smu_cmn_send_smc_msg_with_param` then
/// sends nothing while the register holds it).
pub fn is_hung_code(asic: &Asic, code: u32) -> bool {
    code != RESP_DEAD && (code == RESP_DEBUG_END || asic.response(code).is_none())
}

/// A client of one SMU mailbox on a device's registers, reached in the BAR or
/// through PCIE_INDEX2/PCIE_DATA2 when the mailbox lies past it ([`RegIo`]).
pub struct Smu<'a> {
    asic: &'a Asic,
    pub mailbox: ResolvedMailbox,
    io: RegIo,
    pub timeouts: SmuTimeouts,
    /// Skip the wait for the previous answer on the next message (amdgpu's
    /// SMU_FW_INIT); cleared after one message.
    pub skip_prewait: bool,
    /// Send even though the SMU answered an unknown code earlier in this run
    /// (`--force`); the code is still reported.
    pub ignore_hung: bool,
}

impl<'a> Smu<'a> {
    /// A client of `asic`'s mailbox for MP1 version `mp1` (the first listed
    /// when None) on `bar`. `device` names the device in journal records.
    pub fn new(asic: &'a Asic, mp1: Option<&str>, bar: BarMap, device: Bdf) -> Result<Smu<'a>> {
        Smu::with_io(asic, mp1, RegIo::for_asic(asic, bar, device)?)
    }

    /// A client over an existing [`RegIo`] (with its barrier).
    pub fn with_io(asic: &'a Asic, mp1: Option<&str>, io: RegIo) -> Result<Smu<'a>> {
        let mailbox = asic.mailbox(mp1)?;
        for (reg, off) in [
            (&mailbox.msg_register, mailbox.msg),
            (&mailbox.arg_register, mailbox.arg),
            (&mailbox.resp_register, mailbox.resp),
        ] {
            io.check(off).map_err(|_| Error::OutOfBounds {
                what: format!(
                    "{} {reg} in {} (past the BAR, and no indirect pair reaches it)",
                    asic.asic_name(),
                    io.bar().path.display()
                ),
                offset: off,
                width: 4,
                len: io.bar().len(),
            })?;
        }
        Ok(Smu {
            asic,
            mailbox,
            io,
            timeouts: SmuTimeouts::default(),
            skip_prewait: false,
            ignore_hung: false,
        })
    }

    pub fn asic(&self) -> &'a Asic {
        self.asic
    }

    pub fn bar(&self) -> &BarMap {
        self.io.bar()
    }

    pub fn bar_mut(&mut self) -> &mut BarMap {
        self.io.bar_mut()
    }

    pub fn io(&self) -> &RegIo {
        &self.io
    }

    pub fn io_mut(&mut self) -> &mut RegIo {
        &mut self.io
    }

    pub fn device(&self) -> &Bdf {
        self.io.device()
    }

    pub fn into_bar(self) -> BarMap {
        self.io.into_bar()
    }

    /// How the mailbox is reached (all three registers go the same way on
    /// every known ASIC; the response register's path is reported).
    pub fn path(&self) -> RegPath {
        self.io.path(self.mailbox.resp)
    }

    /// The response register now (None in dry-run when it is indirect).
    pub fn response_now(&mut self, journal: &mut Journal) -> Result<Option<u32>> {
        let off = self.mailbox.resp;
        self.io.read(journal, off)
    }

    /// Sends a message named in regs/ (or given by number).
    pub fn send(&mut self, journal: &mut Journal, message: &str, arg: u32) -> Result<Reply> {
        let (name, id) = parse_message(self.asic, message)?;
        self.send_id(journal, &name, id, arg)
    }

    fn hung_error(&self, name: &str, id: u32, arg: u32, code: u32) -> Error {
        Error::Smu {
            message: name.to_string(),
            id,
            arg,
            code,
            name: self
                .asic
                .response(code)
                .map_or("UNKNOWN".to_string(), |r| r.name.clone()),
            meaning: format!(
                "the SMU answered {code:#x} earlier in this run, which amdgpu treats as a hung SMU (smu_cmn.c: __smu_cmn_reg2errno → -EREMOTEIO; nothing is sent after it): nothing was sent (--force sends anyway)"
            ),
        }
    }

    /// Sends message `id` (`name` for records and errors) with `arg`.
    ///
    /// After an answer outside the response table (0xFB DEBUG_END included)
    /// the device is latched hung for the rest of this process, as amdgpu
    /// sends nothing more once `__smu_cmn_reg2errno` says -EREMOTEIO; only
    /// [`Smu::ignore_hung`] (`--force`) sends past it.
    pub fn send_id(
        &mut self,
        journal: &mut Journal,
        name: &str,
        id: u32,
        arg: u32,
    ) -> Result<Reply> {
        if let Some(code) = hung_code(self.device()) {
            if !self.ignore_hung {
                return Err(self.hung_error(name, id, arg, code));
            }
            journal.note(
                Some(self.device()),
                format!("--force: sending {name} although the SMU answered {code:#x} earlier in this run (hung)"),
            )?;
        }
        let skip = std::mem::take(&mut self.skip_prewait);
        let previous = if skip {
            journal.note(
                Some(self.device()),
                format!(
                    "not waiting for a previous answer before {name} (as amdgpu after SMU init)"
                ),
            )?;
            None
        } else {
            Some(self.prewait(journal, name, id, arg)?)
        };
        let m = self.mailbox.clone();
        self.io.write(journal, m.resp, RESP_NONE)?;
        self.io.write(journal, m.arg, arg)?;
        self.io.write(journal, m.msg, id)?;
        let mut reply = Reply {
            message: name.to_string(),
            id,
            arg,
            sent: false,
            previous,
            response: None,
            response_name: None,
            value: None,
            answer_ms: 0.0,
        };
        if journal.dry_run {
            return Ok(reply);
        }
        reply.sent = true;
        let (code, spent) = self
            .io
            .poll_nonzero(journal, m.resp, self.timeouts.answer)?;
        reply.answer_ms = spent.as_secs_f64() * 1e3;
        if code == RESP_NONE {
            return Err(Error::Timeout {
                what: format!(
                    "the SMU's answer to {name} ({id:#x}, argument {arg:#x}): {} still {RESP_NONE:#x} (no answer)",
                    m.resp_register
                ),
                bound_ms: self.timeouts.answer.as_millis() as u64,
            });
        }
        reply.response = Some(code);
        reply.response_name = self.asic.response(code).map(|r| r.name.clone());
        if is_hung_code(self.asic, code) {
            latch_hung(self.device(), code);
        }
        if code != RESP_OK {
            return Err(response_error(self.asic, name, id, arg, code));
        }
        reply.value = self.io.read(journal, m.arg)?;
        Ok(reply)
    }

    /// Waits for the previous message's answer; errors when there is none,
    /// the BAR reads dead or the code is an error amdgpu stops at (unknown,
    /// 0xFB): nothing is sent then. In dry-run these become notes.
    fn prewait(&mut self, journal: &mut Journal, name: &str, id: u32, arg: u32) -> Result<u32> {
        let resp = self.mailbox.resp;
        let bound = if journal.dry_run {
            Duration::ZERO
        } else {
            self.timeouts.prewait
        };
        let (code, _) = if journal.dry_run && self.io.path(resp) == RegPath::Indirect {
            // Not readable without making the index write.
            (RESP_NONE, Duration::ZERO)
        } else {
            self.io.poll_nonzero(journal, resp, bound)?
        };
        let problem = if code == RESP_NONE && journal.dry_run {
            journal.note(
                Some(self.device()),
                format!(
                    "{} reads {RESP_NONE:#x} now (or was not read: past the BAR): a real send of {name} would first wait up to {} ms for a previous message's answer, and send nothing if none came (--ignore-pending skips the wait)",
                    self.mailbox.resp_register,
                    self.timeouts.prewait.as_millis()
                ),
            )?;
            None
        } else if code == RESP_NONE {
            Some(Error::Timeout {
                what: format!(
                    "the SMU to answer its previous message before {name} ({id:#x}): {} still {RESP_NONE:#x}; nothing was sent. amdgpu skips this wait only for its first message after SMU init; if nothing else talks to this SMU (amdgpu unbound), --ignore-pending does the same",
                    self.mailbox.resp_register
                ),
                bound_ms: bound.as_millis() as u64,
            })
        } else if code == RESP_DEAD || is_hung_code(self.asic, code) {
            if is_hung_code(self.asic, code) {
                latch_hung(self.device(), code);
            }
            if self.ignore_hung && code != RESP_DEAD {
                journal.note(
                    Some(self.device()),
                    format!("--force: the response register holds {code:#x} (an error amdgpu stops at); sending {name} anyway"),
                )?;
                None
            } else {
                Some(match response_error(self.asic, name, id, arg, code) {
                    Error::Smu {
                        message,
                        id,
                        arg,
                        code,
                        name,
                        meaning,
                    } => Error::Smu {
                        message,
                        id,
                        arg,
                        code,
                        name,
                        meaning: format!("{meaning} (read before sending; nothing was sent)"),
                    },
                    e => e,
                })
            }
        } else {
            None
        };
        match problem {
            Some(e) if journal.dry_run => {
                journal.note(
                    Some(self.device()),
                    format!("would not send: {}", e.one_line()),
                )?;
                Ok(code)
            }
            Some(e) => Err(e),
            None => Ok(code),
        }
    }

    /// TestMessage: OK means the PMFW is alive and answering.
    pub fn test(&mut self, journal: &mut Journal) -> Result<Reply> {
        self.send(journal, "TestMessage", 0)
    }

    /// GetPmfwVersion (GetSmuVersion on the older PMFWs), decoded (None in dry-run).
    pub fn version(&mut self, journal: &mut Journal) -> Result<(Reply, Option<PmfwVersion>)> {
        let name = self.asic.version_message()?.name.clone();
        let r = self.send(journal, &name, 0)?;
        let v = r.value.map(PmfwVersion::decode);
        Ok((r, v))
    }

    /// GetEnabledSmuFeatures with argument 0 (low half) then 1 (high half),
    /// as smu_cmn.c: `smu_cmn_get_enabled_mask` does (None in dry-run).
    pub fn features(&mut self, journal: &mut Journal) -> Result<(Vec<Reply>, Option<u64>)> {
        if self.asic.message("GetEnabledSmuFeatures").is_err() {
            return Err(Error::not_found(
                "SMU message",
                format!(
                    "GetEnabledSmuFeatures: the {} PMFW has none (regs/{}.toml lists the messages it has)",
                    self.asic.family(),
                    self.asic.asic_name()
                ),
            ));
        }
        let lo = self.send(journal, "GetEnabledSmuFeatures", 0)?;
        let hi = self.send(journal, "GetEnabledSmuFeatures", 1)?;
        let mask = match (lo.value, hi.value) {
            (Some(l), Some(h)) => Some(u64::from(h) << 32 | u64::from(l)),
            _ => None,
        };
        Ok((vec![lo, hi], mask))
    }

    /// The family's mode-2 reset as amdgpu sends it (regs/ `[mode2]`): the
    /// message and argument, then either the answer awaited like any
    /// message's, or (`wait = "none"`, Van Gogh) no read of the response
    /// register at all and a fixed wait of `settle_ms` (vangogh_ppt.c:
    /// `vangogh_mode_reset` sends without waiting, then `mdelay(10)`: the
    /// response register is not valid while the reset runs). The previous
    /// answer is awaited first either way (smu_cmn.c:
    /// `smu_cmn_send_msg_without_waiting` polls before it writes).
    pub fn mode2(&mut self, journal: &mut Journal) -> Result<Reply> {
        let m2 = self.asic.mode2();
        let (Some(msg), true) = (m2.message.clone(), m2.offered) else {
            return Err(Error::refused(format!(
                "{}: no mode-2 reset is offered for the {} family: {}",
                self.device(),
                self.asic.family(),
                m2.reason
                    .as_deref()
                    .unwrap_or("regs/ names no [mode2] message")
            )));
        };
        let arg = m2.arg.unwrap_or(2);
        let (name, id) = parse_message(self.asic, &msg)?;
        match m2.wait {
            crate::amd::regs::Mode2Wait::Answer => self.send_id(journal, &name, id, arg),
            crate::amd::regs::Mode2Wait::None => {
                self.send_unanswered(journal, &name, id, arg, Duration::from_millis(m2.settle_ms))
            }
        }
    }

    /// Sends a message whose answer is not read: the previous answer is
    /// awaited, the three writes made, then `settle` slept (a fixed wait is
    /// the protocol here: nothing can be polled, the register is not valid).
    pub fn send_unanswered(
        &mut self,
        journal: &mut Journal,
        name: &str,
        id: u32,
        arg: u32,
        settle: Duration,
    ) -> Result<Reply> {
        if let Some(code) = hung_code(self.device()) {
            if !self.ignore_hung {
                return Err(self.hung_error(name, id, arg, code));
            }
        }
        let previous = if std::mem::take(&mut self.skip_prewait) {
            None
        } else {
            Some(self.prewait(journal, name, id, arg)?)
        };
        let m = self.mailbox.clone();
        self.io.write(journal, m.resp, RESP_NONE)?;
        self.io.write(journal, m.arg, arg)?;
        self.io.write(journal, m.msg, id)?;
        let mut reply = Reply {
            message: name.to_string(),
            id,
            arg,
            sent: false,
            previous,
            response: None,
            response_name: None,
            value: None,
            answer_ms: 0.0,
        };
        if journal.dry_run {
            journal.note(
                Some(self.device()),
                format!(
                    "{name} is sent without reading an answer; a real send then waits {} ms",
                    settle.as_millis()
                ),
            )?;
            return Ok(reply);
        }
        reply.sent = true;
        let t = std::time::Instant::now();
        std::thread::sleep(settle);
        reply.answer_ms = t.elapsed().as_secs_f64() * 1e3;
        journal.note(
            Some(self.device()),
            format!(
                "{name} sent without waiting for an answer, then {} ms (as amdgpu does for this family)",
                settle.as_millis()
            ),
        )?;
        Ok(reply)
    }

    /// Reads an SMN address through PCIE_INDEX2 / PCIE_DATA2 (index restored
    /// after; [`RegIo::smn_read`]). None in dry-run.
    pub fn smn_read(&mut self, journal: &mut Journal, address: u32) -> Result<Option<u32>> {
        self.io.smn_read(journal, address)
    }

    /// Writes an SMN address through the pair ([`RegIo::smn_write`]).
    pub fn smn_write(&mut self, journal: &mut Journal, address: u32, value: u32) -> Result<()> {
        self.io.smn_write(journal, address, value)
    }

    /// MP1 firmware flags' INTERRUPTS_ENABLED (the SMU firmware runs), from
    /// the regs/ `[[smn]]` entry MP1_FIRMWARE_FLAGS (smu_v13_0.c:
    /// `smu_v13_0_check_fw_status`). Returns the flag and the raw value;
    /// None in dry-run.
    pub fn firmware_running(&mut self, journal: &mut Journal) -> Result<Option<(bool, u32)>> {
        let reg = self.asic.smn("MP1_FIRMWARE_FLAGS")?;
        let field = reg.field("INTERRUPTS_ENABLED")?;
        let (address, field) = (reg.address, field.clone());
        Ok(self
            .smn_read(journal, address)?
            .map(|v| (field.extract(v) == 1, v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::amd::regs::RegsDb;
    use crate::pci::mmio::Access;
    use proptest::prelude::*;

    fn phoenix() -> RegsDb {
        RegsDb::embedded().unwrap()
    }

    #[test]
    fn messages_parse_by_name_or_number() {
        let db = phoenix();
        let a = db.asic("phoenix").unwrap();
        assert_eq!(
            parse_message(a, "testmessage").unwrap(),
            ("TestMessage".into(), 1)
        );
        assert_eq!(parse_message(a, "0x11").unwrap().0, "GfxDeviceDriverReset");
        assert_eq!(
            parse_message(a, "0x42").unwrap(),
            ("message 0x42".into(), 0x42)
        );
        let e = parse_message(a, "Frobnicate").unwrap_err().to_string();
        assert!(e.contains("TestMessage"), "{e}");
    }

    #[test]
    fn response_codes_get_the_tables_words() {
        let db = phoenix();
        let a = db.asic("phoenix").unwrap();
        let e = response_error(a, "TestMessage", 1, 0, 0xfd).to_string();
        assert!(
            e.contains("CMD_BAD_PREREQ") && e.contains("prerequisites"),
            "{e}"
        );
        let e = response_error(a, "TestMessage", 1, 0, 0x42).to_string();
        assert!(e.contains("UNKNOWN") && e.contains("hung"), "{e}");
        let e = response_error(a, "TestMessage", 1, 0, RESP_DEAD).to_string();
        assert!(e.contains("all-ones"), "{e}");
    }

    #[test]
    fn version_decodes_bytes() {
        let v = PmfwVersion::decode(0x004c_5000);
        assert_eq!((v.program, v.major, v.minor, v.debug), (0, 0x4c, 0x50, 0));
        assert_eq!(v.to_string(), "76.80.0 (program 0, raw 0x004c5000)");
    }

    #[test]
    fn dry_run_records_the_three_writes_and_sends_nothing() {
        let db = phoenix();
        let a = db.asic("phoenix").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("resource5");
        std::fs::File::create(&p).unwrap().set_len(0x80000).unwrap();
        let bar = BarMap::open_file(&p, 0x80000, Access::ReadOnly).unwrap();
        let mut smu = Smu::new(a, None, bar, Bdf::new(0, 0xc5, 0, 0)).unwrap();
        let mut j = Journal::new(true);
        let r = smu.send(&mut j, "GfxDeviceDriverReset", 2).unwrap();
        assert!(!r.sent && r.response.is_none());
        let w: Vec<String> = j.writes().map(|r| r.to_string()).collect();
        assert_eq!(
            w,
            [
                "mmio 0000:c5:00.0 resource5+0x58a68 <- 0x00000000",
                "mmio 0000:c5:00.0 resource5+0x58a48 <- 0x00000002",
                "mmio 0000:c5:00.0 resource5+0x58a08 <- 0x00000011",
            ]
        );
        // The register read 0 (no previous answer): a note says it would not send.
        assert!(j.records.iter().any(|r| r
            .note
            .as_deref()
            .is_some_and(|n| n.contains("would first wait"))));
        assert!(std::fs::read(&p).unwrap().iter().all(|b| *b == 0));
    }

    #[test]
    fn debug_end_is_an_error_that_latches_the_smu_hung() {
        let db = phoenix();
        let a = db.asic("phoenix").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("resource5");
        std::fs::File::create(&p).unwrap().set_len(0x80000).unwrap();
        let mut bar = BarMap::open_file(&p, 0x80000, Access::ReadWrite).unwrap();
        bar.device_write32(0x58a68, RESP_DEBUG_END).unwrap();
        // A domain of its own: the latch is per process, shared with the other tests.
        let dev = &Bdf::new(0xdeb0, 0xfb, 0, 0);
        clear_hung(dev);
        let mut smu = Smu::new(a, None, bar, *dev).unwrap();
        let mut j = Journal::new(false);
        let e = smu.test(&mut j).unwrap_err().to_string();
        assert!(e.contains("0xfb") && e.contains("nothing was sent"), "{e}");
        assert_eq!(j.writes().count(), 0);
        assert_eq!(hung_code(dev), Some(RESP_DEBUG_END));
        // Even once the register reads OK again, nothing more is sent this run.
        smu.bar_mut().device_write32(0x58a68, RESP_OK).unwrap();
        let e = smu.test(&mut j).unwrap_err().to_string();
        assert!(e.contains("earlier in this run"), "{e}");
        assert_eq!(j.writes().count(), 0);
        clear_hung(dev);
    }

    #[test]
    fn a_mailbox_past_the_bar_is_reached_through_the_indirect_pair() {
        let db = phoenix();
        let mut spec = crate::sim::discovery_blob::BlobSpec::phoenix_like();
        for ip in &mut spec.dies[0] {
            if ip.hw_id == 1 {
                ip.bases[1] = 0x30000; // (0x30000 + 0x282) * 4 = 0xc0a08, past 0x80000
            }
        }
        let d = crate::amd::discovery::parse(
            &crate::sim::discovery_blob::build_discovery_blob(&spec),
            crate::amd::discovery::Mode::Strict,
        )
        .unwrap();
        let a = db
            .asic("phoenix")
            .unwrap()
            .with_discovered_bases(&d, "test table")
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("resource5");
        std::fs::File::create(&p).unwrap().set_len(0x80000).unwrap();
        let bar = BarMap::open_file(&p, 0x80000, Access::ReadOnly).unwrap();
        let mut smu = Smu::new(&a, None, bar, Bdf::new(0, 0xc5, 0, 0)).unwrap();
        assert_eq!(smu.path(), RegPath::Indirect);
        assert!(smu.mailbox.base_confirmed);
        let mut j = Journal::new(true);
        smu.send(&mut j, "GfxDeviceDriverReset", 2).unwrap();
        let w: Vec<String> = j.writes().map(|r| r.to_string()).collect();
        assert_eq!(
            w,
            [
                "mmio 0000:c5:00.0 resource5+0x38 <- 0x000c0a68",
                "mmio 0000:c5:00.0 resource5+0x3c <- 0x00000000",
                "mmio 0000:c5:00.0 resource5+0x38 <- 0x00000000",
                "mmio 0000:c5:00.0 resource5+0x38 <- 0x000c0a48",
                "mmio 0000:c5:00.0 resource5+0x3c <- 0x00000002",
                "mmio 0000:c5:00.0 resource5+0x38 <- 0x00000000",
                "mmio 0000:c5:00.0 resource5+0x38 <- 0x000c0a08",
                "mmio 0000:c5:00.0 resource5+0x3c <- 0x00000011",
                "mmio 0000:c5:00.0 resource5+0x38 <- 0x00000000",
            ]
        );
    }

    #[test]
    fn poll_gives_up_at_its_bound() {
        let (v, _) = poll_nonzero(Duration::from_millis(3), || Ok(0)).unwrap();
        assert_eq!(v, 0);
        let mut n = 0;
        let (v, _) = poll_nonzero(Duration::from_secs(5), || {
            n += 1;
            Ok(if n > 3 { 7 } else { 0 })
        })
        .unwrap();
        assert_eq!(v, 7);
    }

    proptest! {
        #[test]
        fn parse_message_never_panics(s in "\\PC{0,40}") {
            let db = phoenix();
            let a = db.asic("phoenix").unwrap();
            let _ = parse_message(a, &s);
        }
    }
}
