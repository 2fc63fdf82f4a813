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
    if let Err(e) = asic.message(MESSAGE) {
        return Verdict::no(
            "no_mode2_message",
            format!("{}: no mode-2 message: {}", asic.asic_name(), e.one_line()),
        );
    }
    let mb = match asic.mailbox(None) {
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
    if mb.resp + 4 > size || mb.msg + 4 > size || mb.arg + 4 > size {
        return Verdict::no(
            "bar_too_small",
            format!(
                "BAR {bar} is {size:#x} bytes; the {} mailbox needs {:#x}",
                asic.asic_name(),
                mb.resp.max(mb.msg).max(mb.arg) + 4
            ),
        );
    }
    let mut reason = format!(
        "{} (MP1 {} mailbox at BAR {bar} + {:#x}/{:#x}/{:#x}{})",
        asic.asic_name(),
        mb.mp1_version,
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
    if asic.response(v).is_none() && !a.force {
        return (
            String::new(),
            Some(Verdict::no("smu_unknown_state", format!(
                "the SMU response register holds {v:#x}, not a response code: the SMU is in an unknown state (hung?); --force tries anyway"
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
    let saved = mmio::enable_memory(ctx.dev, ctx.journal)?;
    let r = mode2(ctx, asic, bar);
    // COMMAND goes back even when the reset failed.
    let restored = match saved {
        Some(s) => mmio::restore_command(ctx.dev, ctx.journal, s),
        None => Ok(()),
    };
    let mut o = r?;
    restored?;
    if saved.is_some() {
        o.notes
            .push("memory decoding was off: turned on for the reset, COMMAND restored".into());
    }
    Ok(o)
}

fn mode2(ctx: &mut ResetCtx, asic: &Asic, bar: u8) -> Result<Outcome> {
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
            let mb = asic.mailbox(None)?;
            ctx.journal
                .note(Some(&bdf), format!("BAR not mapped: {}", e.one_line()))?;
            let id = asic.message(MESSAGE)?.id;
            smu::record_send(ctx.journal, &bdf, &format!("resource{bar}"), &mb, id, MODE2)?;
            return Ok(Outcome::did(format!(
                "would send {MESSAGE}({MODE2}) (mode 2)"
            )));
        }
        Err(e) => return Err(e),
    };
    let mut smu = Smu::new(asic, None, map, bdf.clone())?;
    // Mode 2 takes a while with the response at 0 meanwhile; amdgpu allows
    // its usual ~2 s. A late OK is still an OK, so the bound is --wait-timeout.
    smu.timeouts.answer = ctx.opts.wait_timeout.max(smu::AMDGPU_POLL_BOUND);
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
    let reply = smu.send(ctx.journal, MESSAGE, MODE2)?;
    if !reply.sent {
        return Ok(Outcome {
            did: format!("would send {MESSAGE}({MODE2}) (mode 2)"),
            notes,
        });
    }
    if let Some(p) = reply.previous {
        notes.push(format!("response register before: {p:#x}"));
    }
    Ok(Outcome {
        did: format!(
            "{MESSAGE}({MODE2}) (mode 2) answered OK after {:.1} ms",
            reply.answer_ms
        ),
        notes,
    })
}
