//! `smu_mode2`: ask the GPU's own SMU for a mode-2 reset, as amdgpu does on
//! MP1 13.0.4 (pm/swsmu/smu13/smu_v13_0_4_ppt.c: `smu_v13_0_4_mode2_reset`
//! sends GfxDeviceDriverReset with SMU_RESET_MODE_2 and takes the OK answer
//! as completion; the `reset_method` module parameter 3 selects it).
//!
//! Mode 2 resets the GPU's engines, not the PCIe function: amdgpu's soc21.c
//! `soc21_asic_reset` calls `amdgpu_dpm_mode2_reset` with no PCI state save
//! or restore around it (mode 1 does both). So the orchestrator does not
//! save, disable or restore config space (`Managed::Kernel`); the method
//! itself makes sure memory decoding is on while it talks to the mailbox
//! (vfio-pci leaves an idle device at COMMAND = 0, and BAR accesses then
//! read all-ones) and puts COMMAND back after, through the journal. That mode
//! 2 leaves config space alone is unconfirmed on a 780M.

use super::{Analysis, Managed, MethodDef, Outcome, ResetCtx, Verdict};
use crate::amd::regs::{Asic, ResolvedMailbox};
use crate::amd::smu::{self, Smu};
use crate::error::{Error, Result};
use crate::pci::mmio::{self, Access, BarMap, SystemFiles};
use crate::pci::regs::{Command, PCI_COMMAND};
use std::time::Duration;

pub const DEF: MethodDef = MethodDef {
    name: "smu_mode2",
    summary: "SMU mode-2 reset: GfxDeviceDriverReset(2) through the GPU's SMU mailbox",
    managed: Managed::Kernel,
    probe,
    reset,
};

/// GfxDeviceDriverReset's argument for mode 2 (smu_v13_0_4_ppsmc.h:
/// Mode_Reset_e MODE2_RESET = 2; amdgpu_smu.h: SMU_RESET_MODE_2).
pub const MODE2: u32 = 2;
/// The message, by its regs/ name.
pub const MESSAGE: &str = "GfxDeviceDriverReset";

pub fn probe(a: &Analysis) -> Verdict {
    let (asic, bar) = match smu::target(a.regs, a.dev, a.opts.asic.as_deref(), a.opts.bar) {
        Ok(Some(t)) => t,
        Ok(None) => {
            return Verdict::no(
                "no_asic",
                format!(
                    "no ASIC in the register database lists {:04x}:{:04x} (--asic NAME names one)",
                    a.dev.vendor, a.dev.device
                ),
            )
        }
        Err(e) => return Verdict::no("asic_error", e.one_line()),
    };
    let m2 = asic.mode2();
    if !m2.offered {
        return Verdict::no(
            "mode2_not_offered",
            format!(
                "{} (regs/{}): mode 2 is not offered: {}",
                asic.family(),
                asic.asic_name(),
                m2.reason.as_deref().unwrap_or("regs/ says so")
            ),
        );
    }
    let message = m2.message.as_deref().unwrap_or(MESSAGE);
    let msg_id = match asic.message(message) {
        Ok(m) => m.id,
        Err(e) => {
            return Verdict::no(
                "no_mode2_message",
                format!("{}: no mode-2 message: {}", asic.asic_name(), e.one_line()),
            )
        }
    };
    // A probe never writes: the device's table only if sysfs or this boot's
    // cache has it; the reset itself reads it from VRAM first. Only on a live
    // host: a twin's or a snapshot's list must replay the same, and the cache
    // lives beside the tree, not in it.
    let known = if a.host.is_live() {
        crate::amd::bases::known(a.host, a.dev)
    } else {
        None
    };
    let resolved = match known.as_ref().map(|k| k.apply(asic)) {
        Some(Ok(x)) => Some(x),
        Some(Err(e)) => {
            return Verdict::no("device_table", format!("device table: {}", e.one_line()))
        }
        None => None,
    };
    let asic = resolved.as_ref().unwrap_or(asic);
    let mp1 = known
        .as_ref()
        .and_then(|k| k.discovery.as_ref())
        .and_then(|d| d.mp1_version())
        .filter(|v| asic.mailbox(Some(v)).is_ok());
    let mb = match asic.mailbox(mp1.as_deref()) {
        Ok(m) => m,
        Err(e) => return Verdict::no("mailbox_error", e.one_line()),
    };
    if let Err(e) = smu::refuse_if_amdgpu(a.dev) {
        return Verdict::no("amdgpu_bound", e.one_line());
    }
    let size = match mmio::check_bar(a.dev, bar) {
        Ok(s) => s,
        Err(e) => return Verdict::no("bar_error", format!("register BAR {bar}: {}", e.one_line())),
    };
    let past = mb.resp + 4 > size || mb.msg + 4 > size || mb.arg + 4 > size;
    if past && asic.file.indirect.is_none() {
        return Verdict::no("bar_too_small", format!(
            "BAR {bar} is {size:#x} bytes; the {} mailbox needs {:#x} and regs/ names no indirect pair to reach past it",
            asic.asic_name(),
            mb.resp.max(mb.msg).max(mb.arg) + 4
        ));
    }
    let bases = match &known {
        Some(k) => format!("bases from {}", k.label()),
        None => "bases regs/ static (the reset reads the device's table first)".to_string(),
    };
    let mut reason = format!(
        "{} (regs/{}): {message} {msg_id:#x} ({}){}; MP1 {} mailbox at {} {:#x}/{:#x}/{:#x}; {bases}{}",
        asic.family(),
        asic.asic_name(),
        m2.arg.unwrap_or(MODE2),
        if m2.wait == crate::amd::regs::Mode2Wait::None {
            format!(
                ", sent without waiting for an answer, then {} ms",
                m2.settle_ms
            )
        } else {
            String::new()
        },
        mb.mp1_version,
        if past {
            "SMN via PCIE_INDEX2/PCIE_DATA2".to_string()
        } else {
            format!("BAR {bar} +")
        },
        mb.msg,
        mb.arg,
        mb.resp,
        if mb.base_confirmed {
            ""
        } else {
            ", base UNCONFIRMED"
        }
    );
    let mut regs = vec![];
    let decoding = match a.cfg() {
        Ok(d) => {
            regs.push(super::RegValue::new(
                "COMMAND",
                PCI_COMMAND,
                2,
                u32::from(d.command),
            ));
            Command::from_bits_retain(d.command).contains(Command::MEMORY)
        }
        Err(_) => false,
    };
    let in_d0 = a.dev.power_state.as_deref().is_none_or(|p| p == "D0");
    if !in_d0 {
        reason.push_str("; the device is not in D0 and will be woken");
    } else if !decoding {
        reason.push_str(
            "; memory decoding is off and will be on for the reset (COMMAND restored after)",
        );
    } else if past {
        reason.push_str("; SMU state not read (past the BAR: reading it writes PCIE_INDEX2)");
    } else if a.host.is_live() {
        // Only a live host has registers to read: a twin's or a snapshot's
        // tree describes the device, and its list must replay the same.
        let (seen, refusal) = peek(a, asic, bar, &mb);
        if let Some(no) = refusal {
            return no.with_regs(regs);
        }
        reason.push_str(&format!("; {seen}"));
    }
    Verdict::yes("smu_mode2_ready", reason).with_regs(regs)
}

/// A read-only look at the mailbox (a probe never writes; the BAR is read
/// only with memory decoding on and the device in D0): what it shows, and a
/// refusal when the BAR reads dead or the SMU holds an unknown code.
fn peek(a: &Analysis, asic: &Asic, bar: u8, mb: &ResolvedMailbox) -> (String, Option<Verdict>) {
    let map = match BarMap::open(a.dev, bar, Access::ReadOnly, &SystemFiles::for_host(a.host)) {
        Ok(m) => m,
        Err(e) => return (format!("SMU state not read: {}", e.one_line()), None),
    };
    let v = match map.read32(mb.resp) {
        Ok(v) => v,
        Err(e) => return (e.one_line(), None),
    };
    if v == smu::RESP_DEAD {
        return (
            String::new(),
            Some(Verdict::no("bar_all_ones", format!(
                "the register BAR reads all-ones at the SMU response register ({:#x}) with memory decoding on: the device is dead or gone",
                mb.resp
            ))),
        );
    }
    if smu::is_hung_code(asic, v) && !a.force {
        return (
            String::new(),
            Some(Verdict::no("smu_unknown_state", format!(
                "the SMU response register holds {v:#x}, an error amdgpu stops at (unknown code or 0xFB; smu_cmn.c: __smu_cmn_reg2errno → -EREMOTEIO): the SMU is likely hung; --force overrides this refusal and sends anyway"
            ))),
        );
    }
    let mut parts = vec![format!(
        "response register {v:#x} ({})",
        asic.response(v)
            .map_or("not a known code", |r| r.name.as_str())
    )];
    // The firmware flags can be read without a write only when PCIE_INDEX2
    // already holds their SMN address.
    let flags = asic.smn("MP1_FIRMWARE_FLAGS").ok().map(|f| f.address);
    let pair = asic.file.indirect.as_ref().and_then(|ind| {
        Some((
            asic.resolve(&ind.index).ok()?.bar_offset,
            asic.resolve(&ind.data).ok()?.bar_offset,
        ))
    });
    match (flags, pair) {
        (Some(addr), Some((i, d))) if map.read32(i).ok() == Some(addr) => {
            let running = map.read32(d).is_ok_and(|v| v != u32::MAX && v & 1 == 1);
            parts.push(format!(
                "MP1 firmware {}",
                if running { "running" } else { "NOT running" }
            ));
        }
        _ => parts.push("MP1 firmware flags checked at reset".to_string()),
    }
    (parts.join(", "), None)
}

pub fn reset(ctx: &mut ResetCtx) -> Result<Outcome> {
    let (asic, bar) = smu::target(ctx.regs, ctx.dev, ctx.opts.asic.as_deref(), ctx.opts.bar)?
        .ok_or_else(|| {
            Error::not_found(
                "register database entry for",
                format!("{:04x}:{:04x}", ctx.dev.vendor, ctx.dev.device),
            )
        })?;
    smu::refuse_if_amdgpu(ctx.dev)?;
    // The device's own table (this boot's cache, or read from VRAM now)
    // places the mailbox; regs/ only when it cannot be had.
    let found =
        crate::amd::bases::resolve(ctx.host, ctx.dev, asic, bar, ctx.journal, !ctx.opts.dry_run);
    let resolved = found.apply(asic)?;
    let mp1 = found
        .discovery
        .as_ref()
        .and_then(|d| d.mp1_version())
        .filter(|v| resolved.mailbox(Some(v)).is_ok());
    // COMMAND goes back even when the reset failed.
    let (mut o, turned_on) = ctx.with_memory_decoding(|ctx| {
        mode2(ctx, &resolved, mp1.as_deref(), bar).map(|mut o| {
            o.notes.insert(0, format!("bases from {}", found.label()));
            for n in &found.notes {
                o.notes.push(format!("bases: {n}"));
            }
            o
        })
    })?;
    if turned_on {
        o.notes
            .push("memory decoding was off: turned on for the reset, COMMAND restored".into());
    }
    Ok(o)
}

fn mode2(ctx: &mut ResetCtx, asic: &Asic, mp1: Option<&str>, bar: u8) -> Result<Outcome> {
    let bdf = ctx.bdf();
    let dry = ctx.opts.dry_run;
    let sys = SystemFiles::for_host(ctx.host);
    let access = if dry {
        Access::ReadOnly
    } else {
        Access::ReadWrite
    };
    let map = match BarMap::open(ctx.dev, bar, access, &sys) {
        Ok(m) => m,
        Err(e) if dry => {
            // A dry run (perhaps not as root) still shows the writes.
            let mb = asic.mailbox(mp1)?;
            ctx.journal
                .note(Some(&bdf), format!("BAR not mapped: {}", e.one_line()))?;
            let m2 = asic.mode2();
            let message = m2.message.as_deref().unwrap_or(MESSAGE);
            let arg = m2.arg.unwrap_or(MODE2);
            let id = asic.message(message)?.id;
            smu::record_send(ctx.journal, &bdf, &format!("resource{bar}"), &mb, id, arg)?;
            return Ok(Outcome::did(format!(
                "would send {message}({arg}) (mode 2)"
            )));
        }
        Err(e) => return Err(e),
    };
    let io = crate::amd::regio::RegIo::for_asic(asic, map, bdf)?
        .with_barrier(crate::amd::regio::Barrier::for_sysfs(&ctx.host.sysfs));
    let mut smu = Smu::with_io(asic, mp1, io)?;
    smu.ignore_hung = ctx.opts.force;
    if !smu.mailbox.base_confirmed {
        ctx.journal.note(
            Some(&bdf),
            "the mailbox's MP1 base is regs/ static and UNCONFIRMED (the device's table could not be read)",
        )?;
    }
    // Mode 2 takes a while with the response at 0 meanwhile; amdgpu allows
    // its usual ~2 s. A late OK is still an OK, so the bound is --wait-timeout.
    // Both waits stay within the chain's budget.
    smu.timeouts.answer = ctx
        .opts
        .bound(ctx.opts.wait_timeout.max(smu::AMDGPU_POLL_BOUND));
    smu.timeouts.prewait = ctx.opts.bound(smu.timeouts.prewait);
    // A mode 2 sent without waiting for its answer is followed by a fixed settle that cannot be
    // cut short: not sent when what is left of the chain's budget cannot hold it.
    let m2 = asic.mode2();
    let settle = Duration::from_millis(m2.settle_ms);
    if m2.wait == crate::amd::regs::Mode2Wait::None && ctx.opts.bound(settle) < settle {
        return Err(Error::failed(format!(
            "{bdf}: mode 2 not sent: its fixed settle of {} ms does not fit in the {} ms left of \
             the chain's budget",
            m2.settle_ms,
            ctx.opts.bound(settle).as_millis()
        )));
    }
    let mut notes = vec![];
    match smu.firmware_running(ctx.journal)? {
        Some((true, _)) => notes.push("MP1 firmware running (MP1_FIRMWARE_FLAGS.INTERRUPTS_ENABLED = 1)".to_string()),
        Some((false, v)) => {
            return Err(Error::failed(format!(
                "{bdf}: the SMU firmware is not running (MP1_FIRMWARE_FLAGS = {v:#010x}, INTERRUPTS_ENABLED = 0): it cannot reset the GPU"
            )))
        }
        None => {}
    }
    let reply = smu.mode2(ctx.journal)?;
    let (message, arg) = (reply.message.clone(), reply.arg);
    if !reply.sent {
        return Ok(Outcome {
            did: format!("would send {message}({arg}) (mode 2)"),
            notes,
        });
    }
    if reply.response.is_none() {
        // Van Gogh: amdgpu does not read the answer (vangogh_mode_reset).
        return Ok(Outcome {
            did: format!(
                "{message}({arg}) (mode 2) sent without waiting for an answer, then {:.1} ms, as amdgpu does for the {} family",
                reply.answer_ms,
                asic.family()
            ),
            notes,
        });
    }
    if let Some(p) = reply.previous {
        notes.push(format!("response register before: {p:#x}"));
    }
    Ok(Outcome {
        did: format!(
            "{message}({arg}) (mode 2) answered OK after {:.1} ms",
            reply.answer_ms
        ),
        notes,
    })
}
