//! The twin's SMU: a model of the MP1 mailbox and the registers the regs/
//! health checks read, on a file mapped shared as the register BAR (the
//! twin's `resource5`, or the guest bench's ivshmem backend).
//!
//! The model cannot intercept accesses, only look at the file between them,
//! so it is stepped (every ~1 ms) and works as the firmware polls:
//! - a message is noticed when the message register is non-zero: the client
//!   writes it last (smu_cmn.c: `__smu_cmn_send_msg` writes response ← 0,
//!   argument, message), and that write is what rings the firmware. The model
//!   consumes it (writes 0 back: unlike the hardware, whose C2PMSG_66 keeps
//!   the last id) so that the same message sent twice is noticed twice. It
//!   answers after `answer_us`: the result into the argument register first,
//!   then the response code (the client reads the argument once the code is
//!   non-zero);
//! - read-only registers (RCC_CONFIG_MEMSIZE, MP0_SMN_C2PMSG_33, GRBM_STATUS)
//!   are re-asserted every step, so a stray write does not stick;
//! - PCIE_INDEX2 / PCIE_DATA2 are a window on the SMN: when the index changes
//!   the model puts the named register in the data register; when the data
//!   register changes under an unchanged index, the client wrote the register.
//!   Modelled SMN registers: MP1 firmware flags, and the mailbox itself when
//!   the table's bases put it past the BAR (amdgpu reaches such a register
//!   through the pair, `amdgpu_device_rreg`). The client waits for the model
//!   between index and data accesses ([`crate::amd::regio::Barrier::Twin`]:
//!   the device model's step counter), since a file cannot trap an access;
//! - MM_INDEX / MM_INDEX_HI / MM_DATA are a window on VRAM the same way: the
//!   VRAM model holds the profile's IP discovery table at
//!   (RCC_CONFIG_MEMSIZE MiB − 64 KiB) and reads 0 elsewhere.
//!
//! At power-on the response register reads 0x1, as on a clean SMU (the
//! SMU_FW_INIT patch to smu_cmn.c: "The default of mmMP1_SMN_C2PMSG_90
//! register at a clean environment is 0x1"), so the first message does not
//! wait.
//!
//! Answers (model choices where no source says otherwise are marked):
//! TestMessage → OK; GetPmfwVersion / GetDriverIfVersion → the profile's
//! value in the argument register; GetEnabledSmuFeatures 0/1 → low/high half;
//! GfxDeviceDriverReset(2) → response 0 for `mode2_ms`, then OK
//! ([`SmuEvent::Mode2Done`]); GfxDeviceDriverReset with another mode →
//! CMD_BAD_PREREQ (model choice); other messages of the regs/ table → OK;
//! unknown ids → CMD_UNKNOWN (0xFE).
//!
//! Faults (`SmuProfile::fault`, `fault_count` messages, 0 = every one):
//! NoAnswer (response stays 0), Busy (0xFC), Prerequisites (0xFD), BarDead
//! (every modelled register reads all-ones from power-on, for good:
//! `fault_count` does not apply), Vanish (mid mode 2 the registers go
//! all-ones and [`SmuEvent::Vanish`] tells the device model to remove the
//! device; other messages are answered).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::amd::regs::Asic;
use crate::error::{Error, Result};
use crate::pci::mmio::BarMap;
use crate::sim::profile::{Fault, SmuProfile};

const OK: u32 = 0x1;
const CMD_FAIL: u32 = 0xff;
const CMD_UNKNOWN: u32 = 0xfe;
const BAD_PREREQ: u32 = 0xfd;
const BUSY_OTHER: u32 = 0xfc;
const DEAD: u32 = 0xffff_ffff;
/// GfxDeviceDriverReset's argument for mode 2 (smu_v13_0_4_ppsmc.h:
/// Mode_Reset_e, MODE2_RESET = 2; smu_v13_0_4_ppt.c: smu_v13_0_4_mode2_reset).
const MODE2: u32 = 2;
/// RCC_CONFIG_MEMSIZE: the carve-out in MiB (model value: 512 MiB).
const MEMSIZE_MIB: u32 = 512;
/// MP0_SMN_C2PMSG_33 bit 31: IFWI init done (amdgpu_discovery.c).
const IFWI_DONE: u32 = 0x8000_0000;

/// What a step saw happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmuEvent {
    /// A message was answered (`response` is the code written).
    Answered {
        message: u32,
        arg: u32,
        response: u32,
    },
    /// GfxDeviceDriverReset(2) was received; the GPU is being reset.
    Mode2Started,
    /// Mode 2 finished and was answered OK: the device model marks the GPU
    /// clean if its profile says mode 2 is effective (then `set_dirty(false)`).
    Mode2Done,
    /// The device vanished mid mode 2 (fault `vanish`): remove it.
    Vanish,
}

/// BAR byte offsets of everything modelled, from regs/ with the table's
/// bases. The mailbox may lie past the BAR: then its offset is its SMN address.
#[derive(Debug, Clone, Copy)]
struct Layout {
    msg: u64,
    arg: u64,
    resp: u64,
    index: u64,
    data: u64,
    memsize: u64,
    mp0_33: u64,
    grbm: u64,
    gui_active: u32,
    fw_flags_addr: u32,
    mm_index: u64,
    mm_index_hi: u64,
    mm_data: u64,
}

impl Layout {
    fn from_asic(asic: &Asic, mp1: Option<&str>) -> Result<Layout> {
        let m = asic.mailbox(mp1)?;
        let ind = asic.file.indirect.as_ref().ok_or_else(|| {
            Error::not_found(
                "indirect SMN pair",
                format!("{} [indirect]", asic.asic_name()),
            )
        })?;
        let grbm = asic.register("GRBM_STATUS")?;
        let disc = asic.file.discovery.as_ref().ok_or_else(|| {
            Error::not_found(
                "IP discovery location",
                format!("{} [discovery]", asic.asic_name()),
            )
        })?;
        Ok(Layout {
            mm_index: asic.resolve(&disc.index)?.bar_offset,
            mm_index_hi: asic.resolve(&disc.index_hi)?.bar_offset,
            mm_data: asic.resolve(&disc.data)?.bar_offset,
            msg: m.msg,
            arg: m.arg,
            resp: m.resp,
            index: asic.resolve(&ind.index)?.bar_offset,
            data: asic.resolve(&ind.data)?.bar_offset,
            memsize: asic.resolve("RCC_CONFIG_MEMSIZE")?.bar_offset,
            mp0_33: asic.resolve("MP0_SMN_C2PMSG_33")?.bar_offset,
            grbm: asic.resolve("GRBM_STATUS")?.bar_offset,
            gui_active: grbm.field("GUI_ACTIVE")?.mask(),
            fw_flags_addr: asic.smn("MP1_FIRMWARE_FLAGS")?.address,
        })
    }

    /// The registers that must be in the BAR.
    fn on_bar(&self) -> [u64; 8] {
        [
            self.index,
            self.data,
            self.memsize,
            self.mp0_33,
            self.grbm,
            self.mm_index,
            self.mm_index_hi,
            self.mm_data,
        ]
    }

    fn mailbox(&self) -> [u64; 3] {
        [self.msg, self.arg, self.resp]
    }
}

/// Whether byte offset `off` is in `bar` (else an SMN address, reached through
/// the pair, as amdgpu_device_rreg decides).
fn in_bar(bar: &BarMap, off: u64) -> bool {
    off.saturating_add(4) <= bar.len()
}

/// The VRAM model: the discovery table at its place, zeros elsewhere.
#[derive(Debug, Clone)]
struct Vram {
    table_pos: u64,
    table: Vec<u8>,
}

impl Vram {
    fn read32(&self, pos: u64) -> u32 {
        let mut b = [0u8; 4];
        for (i, x) in b.iter_mut().enumerate() {
            let p = pos + i as u64;
            if let Some(rel) = p.checked_sub(self.table_pos) {
                if let Some(v) = usize::try_from(rel).ok().and_then(|r| self.table.get(r)) {
                    *x = *v;
                }
            }
        }
        u32::from_le_bytes(b)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Off,
    Idle,
    /// Message `id` with `arg` received at `since`, answered after `answer_us`.
    Pending {
        id: u32,
        arg: u32,
        since: Instant,
    },
    /// Mode 2 in progress until `until`; `vanish_at` when the fault strikes.
    Mode2 {
        until: Instant,
        vanish_at: Option<Instant>,
    },
    /// Registers read all-ones for good (BarDead, Vanish).
    Dead,
}

/// The SMU model. The device model calls [`SmuModel::step`] every ~1 ms and
/// [`SmuModel::set_dirty`] when the GPU's reset-bug state changes.
#[derive(Debug, Clone)]
pub struct SmuModel {
    profile: SmuProfile,
    layout: Layout,
    /// Message ids from regs/.
    ids: Ids,
    state: State,
    dirty: bool,
    mode2_cleans: bool,
    /// Messages the fault still hits; None = every one.
    faults_left: Option<u32>,
    /// Messages received, in order (id, argument).
    pub received: Vec<(u32, u32)>,
    /// Mailbox registers that lie past the BAR (SMN address → value).
    smn: std::collections::BTreeMap<u32, u32>,
    /// The SMN window as last shown: (index, data the model put there).
    win: Option<(u32, u32)>,
    /// The VRAM window as last shown: (MM_INDEX, MM_INDEX_HI).
    mm_last: Option<(u32, u32)>,
    vram: Vram,
    /// SMN writes the client made through the pair (address, value).
    pub smn_writes: Vec<(u32, u32)>,
}

#[derive(Debug, Clone)]
struct Ids {
    test: u32,
    version: u32,
    driver_if: u32,
    /// None: the family's PMFW has no such message (Renoir's: renoir_ppt.c
    /// fakes the mask), so the model answers it CMD_UNKNOWN like any id it
    /// does not know.
    features: Option<u32>,
    /// The family's mode-2 message and argument (regs/ `[mode2]`).
    reset: u32,
    mode2_arg: u32,
    known: Vec<u32>,
}

impl Ids {
    fn from_asic(asic: &Asic) -> Result<Ids> {
        let id = |n: &str| asic.message(n).map(|m| m.id);
        let m2 = asic.mode2();
        let reset_name = m2.message.clone().filter(|_| m2.offered).ok_or_else(|| {
            Error::not_found(
                "mode-2 message",
                format!(
                    "{}: {}",
                    asic.asic_name(),
                    m2.reason.as_deref().unwrap_or("[mode2] is not offered")
                ),
            )
        })?;
        Ok(Ids {
            test: id("TestMessage")?,
            version: asic.version_message()?.id,
            driver_if: id("GetDriverIfVersion")?,
            features: id("GetEnabledSmuFeatures").ok(),
            reset: id(&reset_name)?,
            mode2_arg: m2.arg.unwrap_or(MODE2),
            known: asic.file.messages.iter().map(|m| m.id).collect(),
        })
    }
}

impl SmuModel {
    /// A model of `asic`'s SMU (mailbox of MP1 version `mp1`, the first listed
    /// when None) behaving as `profile` says.
    pub fn new(asic: &Asic, mp1: Option<&str>, profile: SmuProfile) -> Result<SmuModel> {
        SmuModel::with_table(
            asic,
            mp1,
            profile,
            crate::sim::discovery_blob::build_phoenix_blob(),
        )
    }

    /// [`SmuModel::new`] with `table` (an IP discovery binary) in VRAM.
    /// `asic` should carry the table's bases
    /// ([`Asic::with_discovered_bases`]): the mailbox answers where they put it.
    pub fn with_table(
        asic: &Asic,
        mp1: Option<&str>,
        profile: SmuProfile,
        table: Vec<u8>,
    ) -> Result<SmuModel> {
        let table_pos = crate::amd::discovery::vram_position(MEMSIZE_MIB)?;
        let faults_left = match (profile.fault, profile.fault_count) {
            (Fault::None, _) => Some(0),
            (_, 0) => None,
            (_, n) => Some(n),
        };
        Ok(SmuModel {
            layout: Layout::from_asic(asic, mp1)?,
            ids: Ids::from_asic(asic)?,
            profile,
            state: State::Off,
            dirty: false,
            mode2_cleans: false,
            faults_left,
            received: Vec::new(),
            smn: std::collections::BTreeMap::new(),
            win: None,
            mm_last: None,
            vram: Vram { table_pos, table },
            smn_writes: Vec::new(),
        })
    }

    /// A mailbox register, in the BAR or past it.
    fn rd(&self, bar: &BarMap, off: u64) -> u32 {
        if in_bar(bar, off) {
            bar.read32(off).unwrap_or(DEAD)
        } else {
            self.smn.get(&(off as u32)).copied().unwrap_or(0)
        }
    }

    fn wr(&mut self, bar: &mut BarMap, off: u64, v: u32) {
        if in_bar(bar, off) {
            let _ = bar.device_write32(off, v);
        } else {
            self.smn.insert(off as u32, v);
        }
    }

    /// What the SMN register at `address` reads.
    fn smn_value(&self, address: u32) -> u32 {
        if self.state == State::Dead {
            return DEAD;
        }
        if address == self.layout.fw_flags_addr {
            // MP1_FIRMWARE_FLAGS.INTERRUPTS_ENABLED = 1: the firmware runs.
            return 1;
        }
        self.smn.get(&address).copied().unwrap_or(0)
    }

    /// The PCIE_INDEX2/DATA2 window: a client write under an unchanged index
    /// goes to the register (mailbox registers past the BAR only; others are
    /// read-only or not modelled); then the data register shows the register.
    fn smn_window(&mut self, bar: &mut BarMap) {
        let l = self.layout;
        let index = bar.read32(l.index).unwrap_or(DEAD);
        let data = bar.read32(l.data).unwrap_or(DEAD);
        if let Some((wi, wd)) = self.win {
            if wi == index && data != wd {
                self.smn_writes.push((index, data));
                let is_mailbox = l
                    .mailbox()
                    .iter()
                    .any(|&o| !in_bar(bar, o) && o == u64::from(index));
                if is_mailbox && self.state != State::Dead {
                    self.smn.insert(index, data);
                }
                self.win = Some((index, data));
            }
        }
        let v = self.smn_value(index);
        if self.win != Some((index, v)) {
            let _ = bar.device_write32(l.data, v);
            self.win = Some((index, v));
        }
    }

    /// The MM_INDEX/MM_INDEX_HI/MM_DATA window: bit 31 of MM_INDEX selects
    /// VRAM at `(MM_INDEX & 0x7fffffff) | MM_INDEX_HI << 31` (amdgpu_device.c:
    /// `amdgpu_device_mm_access`), else the register at that BAR offset.
    fn mm_window(&mut self, bar: &mut BarMap) {
        let l = self.layout;
        let idx = bar.read32(l.mm_index).unwrap_or(DEAD);
        let hi = bar.read32(l.mm_index_hi).unwrap_or(DEAD);
        if self.mm_last == Some((idx, hi)) {
            return;
        }
        let v = if self.state == State::Dead {
            DEAD
        } else if idx & 0x8000_0000 != 0 {
            self.vram
                .read32(u64::from(idx & 0x7fff_ffff) | u64::from(hi) << 31)
        } else {
            let off = u64::from(idx);
            if in_bar(bar, off) && off != l.mm_data {
                bar.read32(off).unwrap_or(DEAD)
            } else {
                0
            }
        };
        let _ = bar.device_write32(l.mm_data, v);
        self.mm_last = Some((idx, hi));
    }

    /// Whether mode 2 returns a dirty GPU to clean (the profile's
    /// `effective.smu_mode2`): applied before the OK is written.
    pub fn set_mode2_cleans(&mut self, cleans: bool) {
        self.mode2_cleans = cleans;
    }

    /// The GPU's reset-bug state: GRBM_STATUS.GUI_ACTIVE reads 1 while dirty.
    pub fn set_dirty(&mut self, dirty: bool) {
        self.dirty = dirty;
    }

    pub fn dirty(&self) -> bool {
        self.dirty
    }

    /// Mode 2 is under way.
    pub fn in_mode2(&self) -> bool {
        matches!(self.state, State::Mode2 { .. })
    }

    /// Checks every modelled register fits `bar` and writes the power-on
    /// state (response 0x1, firmware running). `step` does it on first use.
    pub fn power_on(&mut self, bar: &mut BarMap) -> Result<()> {
        for off in self.layout.on_bar() {
            if off + 4 > bar.len() {
                return Err(Error::OutOfBounds {
                    what: format!("SMU model register in {}", bar.path.display()),
                    offset: off,
                    width: 4,
                    len: bar.len(),
                });
            }
        }
        let l = self.layout;
        if self.profile.fault == Fault::BarDead {
            self.state = State::Dead;
            self.fill_dead(bar);
            return Ok(());
        }
        self.smn.clear();
        self.wr(bar, l.msg, 0);
        self.wr(bar, l.arg, 0);
        self.wr(bar, l.resp, OK);
        bar.device_write32(l.index, l.fw_flags_addr)?;
        bar.device_write32(l.mm_index, 0)?;
        bar.device_write32(l.mm_index_hi, 0)?;
        self.win = None;
        self.mm_last = None;
        self.state = State::Idle;
        self.refresh(bar);
        Ok(())
    }

    fn fill_dead(&mut self, bar: &mut BarMap) {
        for off in self.layout.on_bar() {
            let _ = bar.device_write32(off, DEAD);
        }
        for off in self.layout.mailbox() {
            self.wr(bar, off, DEAD);
        }
        self.win = Some((DEAD, DEAD));
        self.mm_last = Some((DEAD, DEAD));
    }

    /// Read-only registers and the two windows, as the hardware shows them.
    fn refresh(&mut self, bar: &mut BarMap) {
        let l = self.layout;
        let _ = bar.device_write32(l.memsize, MEMSIZE_MIB);
        let _ = bar.device_write32(l.mp0_33, IFWI_DONE);
        let _ = bar.device_write32(l.grbm, if self.dirty { l.gui_active } else { 0 });
        self.smn_window(bar);
        self.mm_window(bar);
    }

    /// Whether the injected fault hits this message (and counts it).
    fn fault_hits(&mut self) -> Option<Fault> {
        match self.faults_left {
            Some(0) => None,
            Some(n) => {
                self.faults_left = Some(n - 1);
                Some(self.profile.fault)
            }
            None => Some(self.profile.fault),
        }
    }

    fn answer(
        &mut self,
        bar: &mut BarMap,
        id: u32,
        arg: u32,
        code: u32,
        value: Option<u32>,
    ) -> SmuEvent {
        if let Some(v) = value {
            let arg_off = self.layout.arg;
            self.wr(bar, arg_off, v);
        }
        let resp_off = self.layout.resp;
        self.wr(bar, resp_off, code);
        self.state = State::Idle;
        SmuEvent::Answered {
            message: id,
            arg,
            response: code,
        }
    }

    /// One look at the BAR at time `now`; answers what is due.
    pub fn step(&mut self, bar: &mut BarMap, now: Instant) -> Option<SmuEvent> {
        if self.state == State::Off && self.power_on(bar).is_err() {
            return None;
        }
        let l = self.layout;
        match self.state {
            State::Off => None,
            State::Dead => {
                self.fill_dead(bar);
                None
            }
            State::Idle => {
                // RCC_CONFIG_MEMSIZE is re-asserted every step and never 0:
                // reading 0 means the file was zeroed under the model (the
                // guest bench truncates the backing file before QEMU starts),
                // so power on again.
                if bar.read32(l.memsize).ok() == Some(0) && self.power_on(bar).is_err() {
                    return None;
                }
                self.refresh(bar);
                // The message register is written last; its write is what
                // rings the firmware. The model consumes it (writes 0 back) so
                // the same message sent twice is noticed twice.
                let id = self.rd(bar, l.msg);
                if id == 0 {
                    return None;
                }
                let arg = self.rd(bar, l.arg);
                self.wr(bar, l.msg, 0);
                self.received.push((id, arg));
                self.state = State::Pending {
                    id,
                    arg,
                    since: now,
                };
                None
            }
            State::Pending { id, arg, since } => {
                self.refresh(bar);
                if now.duration_since(since) < Duration::from_micros(self.profile.answer_us) {
                    return None;
                }
                Some(self.handle(bar, id, arg, now))
            }
            State::Mode2 { until, vanish_at } => {
                if vanish_at.is_some_and(|t| now >= t) {
                    self.state = State::Dead;
                    self.fill_dead(bar);
                    return Some(SmuEvent::Vanish);
                }
                self.refresh(bar);
                if now < until {
                    return None;
                }
                // The reset's effect is in the registers before the answer,
                // so a client reading them right after OK sees it.
                if self.mode2_cleans {
                    self.dirty = false;
                    self.refresh(bar);
                }
                self.wr(bar, l.resp, OK);
                self.state = State::Idle;
                // The answer shows in the window in this step.
                self.smn_window(bar);
                Some(SmuEvent::Mode2Done)
            }
        }
    }

    fn handle(&mut self, bar: &mut BarMap, id: u32, arg: u32, now: Instant) -> SmuEvent {
        let is_mode2 = id == self.ids.reset && arg == self.ids.mode2_arg;
        let fault = match self.profile.fault {
            // Vanish strikes mode 2 only.
            Fault::Vanish if !is_mode2 => None,
            _ => self.fault_hits(),
        };
        match fault {
            Some(Fault::NoAnswer) => {
                self.state = State::Idle;
                return SmuEvent::Answered {
                    message: id,
                    arg,
                    response: 0,
                };
            }
            Some(Fault::Busy) => return self.answer(bar, id, arg, BUSY_OTHER, None),
            Some(Fault::Prerequisites) => return self.answer(bar, id, arg, BAD_PREREQ, None),
            _ => {}
        }
        let p = &self.profile;
        if id == self.ids.test {
            self.answer(bar, id, arg, OK, None)
        } else if id == self.ids.version {
            let v = p.pmfw_version;
            self.answer(bar, id, arg, OK, Some(v))
        } else if id == self.ids.driver_if {
            let v = p.driver_if_version;
            self.answer(bar, id, arg, OK, Some(v))
        } else if Some(id) == self.ids.features {
            let f = p.features;
            match arg {
                0 => self.answer(bar, id, arg, OK, Some(f as u32)),
                1 => self.answer(bar, id, arg, OK, Some((f >> 32) as u32)),
                _ => self.answer(bar, id, arg, CMD_FAIL, None),
            }
        } else if id == self.ids.reset {
            if arg != self.ids.mode2_arg {
                return self.answer(bar, id, arg, BAD_PREREQ, None);
            }
            let d = Duration::from_millis(self.profile.mode2_ms);
            self.state = State::Mode2 {
                until: now + d,
                vanish_at: (fault == Some(Fault::Vanish)).then(|| now + d / 2),
            };
            SmuEvent::Mode2Started
        } else if self.ids.known.contains(&id) {
            self.answer(bar, id, arg, OK, None)
        } else {
            self.answer(bar, id, arg, CMD_UNKNOWN, None)
        }
    }

    /// Steps every millisecond until `stop`, for tests and the guest bench's
    /// host side (no device model around it): on Mode2Done the GPU is clean
    /// when `mode2_effective`. Returns every event.
    pub fn serve(
        mut self,
        mut bar: BarMap,
        stop: &AtomicBool,
        mode2_effective: bool,
    ) -> (SmuModel, Vec<SmuEvent>) {
        let mut events = Vec::new();
        self.mode2_cleans = mode2_effective;
        while !stop.load(Ordering::SeqCst) {
            if let Some(e) = self.step(&mut bar, Instant::now()) {
                if e == SmuEvent::Mode2Done && mode2_effective {
                    self.set_dirty(false);
                }
                events.push(e);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        (self, events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::amd::regs::RegsDb;
    use crate::pci::mmio::Access;

    fn setup(profile: SmuProfile) -> (tempfile::TempDir, BarMap, SmuModel, Layout) {
        let db = RegsDb::embedded().unwrap();
        let a = db.asic("phoenix").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("resource5");
        std::fs::File::create(&p).unwrap().set_len(0x80000).unwrap();
        let bar = BarMap::open_file(&p, 0x80000, Access::ReadWrite).unwrap();
        let m = SmuModel::new(a, None, profile).unwrap();
        let l = m.layout;
        (dir, bar, m, l)
    }

    /// What a client does: resp ← 0, arg, msg.
    fn send(bar: &mut BarMap, l: &Layout, id: u32, arg: u32) {
        bar.device_write32(l.resp, 0).unwrap();
        bar.device_write32(l.arg, arg).unwrap();
        bar.device_write32(l.msg, id).unwrap();
    }

    /// Steps with a simulated clock until an event, at most `n` steps of 1 ms.
    fn until_event(
        m: &mut SmuModel,
        bar: &mut BarMap,
        t: &mut Instant,
        n: u32,
    ) -> Option<SmuEvent> {
        for _ in 0..n {
            *t += Duration::from_millis(1);
            if let Some(e) = m.step(bar, *t) {
                return Some(e);
            }
        }
        None
    }

    #[test]
    fn power_on_state_is_a_clean_running_smu() {
        let (_d, mut bar, mut m, l) = setup(SmuProfile::default());
        m.power_on(&mut bar).unwrap();
        assert_eq!(bar.read32(l.resp).unwrap(), 1);
        assert_eq!(
            bar.read32(l.data).unwrap(),
            1,
            "MP1 firmware flags via DATA2"
        );
        assert_eq!(bar.read32(l.memsize).unwrap(), MEMSIZE_MIB);
        assert_eq!(bar.read32(l.mp0_33).unwrap() & IFWI_DONE, IFWI_DONE);
        assert_eq!(bar.read32(l.grbm).unwrap(), 0);
        m.set_dirty(true);
        m.step(&mut bar, Instant::now());
        assert_eq!(bar.read32(l.grbm).unwrap(), l.gui_active);
    }

    #[test]
    fn answers_version_and_features_halves() {
        let (_d, mut bar, mut m, l) = setup(SmuProfile::default());
        let mut t = Instant::now();
        m.step(&mut bar, t);
        send(&mut bar, &l, 0x2, 0);
        let e = until_event(&mut m, &mut bar, &mut t, 10).unwrap();
        assert_eq!(
            e,
            SmuEvent::Answered {
                message: 2,
                arg: 0,
                response: 1
            }
        );
        assert_eq!(
            bar.read32(l.arg).unwrap(),
            SmuProfile::default().pmfw_version
        );
        send(&mut bar, &l, 0x12, 1);
        until_event(&mut m, &mut bar, &mut t, 10).unwrap();
        assert_eq!(
            bar.read32(l.arg).unwrap(),
            (SmuProfile::default().features >> 32) as u32
        );
        send(&mut bar, &l, 0x77, 0);
        until_event(&mut m, &mut bar, &mut t, 10).unwrap();
        assert_eq!(bar.read32(l.resp).unwrap(), CMD_UNKNOWN);
    }

    #[test]
    fn mode2_holds_response_zero_then_answers_and_says_done() {
        let p = SmuProfile {
            mode2_ms: 20,
            ..SmuProfile::default()
        };
        let (_d, mut bar, mut m, l) = setup(p);
        let mut t = Instant::now();
        m.step(&mut bar, t);
        send(&mut bar, &l, 0x11, 2);
        assert_eq!(
            until_event(&mut m, &mut bar, &mut t, 10),
            Some(SmuEvent::Mode2Started)
        );
        assert!(m.in_mode2());
        assert_eq!(bar.read32(l.resp).unwrap(), 0);
        assert_eq!(
            until_event(&mut m, &mut bar, &mut t, 40),
            Some(SmuEvent::Mode2Done)
        );
        assert_eq!(bar.read32(l.resp).unwrap(), 1);
    }

    #[test]
    fn vanish_strikes_mid_mode2_and_the_bar_goes_all_ones() {
        let p = SmuProfile {
            mode2_ms: 20,
            fault: Fault::Vanish,
            ..SmuProfile::default()
        };
        let (_d, mut bar, mut m, l) = setup(p);
        let mut t = Instant::now();
        m.step(&mut bar, t);
        send(&mut bar, &l, 0x1, 0);
        assert!(matches!(
            until_event(&mut m, &mut bar, &mut t, 10),
            Some(SmuEvent::Answered { response: 1, .. })
        ));
        send(&mut bar, &l, 0x11, 2);
        assert_eq!(
            until_event(&mut m, &mut bar, &mut t, 10),
            Some(SmuEvent::Mode2Started)
        );
        assert_eq!(
            until_event(&mut m, &mut bar, &mut t, 40),
            Some(SmuEvent::Vanish)
        );
        assert_eq!(bar.read32(l.resp).unwrap(), DEAD);
        assert_eq!(bar.read32(l.memsize).unwrap(), DEAD);
    }

    #[test]
    fn fault_count_limits_the_fault() {
        let p = SmuProfile {
            fault: Fault::Busy,
            fault_count: 1,
            ..SmuProfile::default()
        };
        let (_d, mut bar, mut m, l) = setup(p);
        let mut t = Instant::now();
        m.step(&mut bar, t);
        send(&mut bar, &l, 0x1, 0);
        until_event(&mut m, &mut bar, &mut t, 10).unwrap();
        assert_eq!(bar.read32(l.resp).unwrap(), BUSY_OTHER);
        send(&mut bar, &l, 0x1, 0);
        until_event(&mut m, &mut bar, &mut t, 10).unwrap();
        assert_eq!(bar.read32(l.resp).unwrap(), OK);
    }

    #[test]
    fn a_zeroed_file_powers_the_model_on_again() {
        let (_d, mut bar, mut m, l) = setup(SmuProfile::default());
        let t = Instant::now();
        m.step(&mut bar, t);
        for off in l.on_bar().into_iter().chain(l.mailbox()) {
            bar.device_write32(off, 0).unwrap();
        }
        m.step(&mut bar, t);
        assert_eq!(bar.read32(l.resp).unwrap(), 1);
    }

    #[test]
    fn the_vram_window_reads_the_discovery_table() {
        let (_d, mut bar, mut m, l) = setup(SmuProfile::default());
        let t = Instant::now();
        m.step(&mut bar, t);
        let pos = crate::amd::discovery::vram_position(MEMSIZE_MIB).unwrap();
        let blob = crate::sim::discovery_blob::build_phoenix_blob();
        let mut got = Vec::new();
        for at in (0..blob.len() as u64).step_by(4) {
            let p = pos + at;
            bar.device_write32(l.mm_index, (p as u32 & 0x7fff_ffff) | 0x8000_0000)
                .unwrap();
            bar.device_write32(l.mm_index_hi, (p >> 31) as u32).unwrap();
            m.step(&mut bar, t);
            got.extend_from_slice(&bar.read32(l.mm_data).unwrap().to_le_bytes());
        }
        got.truncate(blob.len());
        assert_eq!(got, blob);
    }

    #[test]
    fn a_mailbox_past_the_bar_answers_through_the_smn_window() {
        let db = RegsDb::embedded().unwrap();
        let spec = crate::sim::discovery_blob::BlobSpec::phoenix_like()
            .with_bases([("MP1", &[0x16000u64, 0x30000][..])])
            .unwrap();
        let blob = crate::sim::discovery_blob::build_discovery_blob(&spec);
        let d = crate::amd::discovery::parse(&blob, crate::amd::discovery::Mode::Strict).unwrap();
        let a = db
            .asic("phoenix")
            .unwrap()
            .with_discovered_bases(&d, "t")
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("resource5");
        std::fs::File::create(&p).unwrap().set_len(0x80000).unwrap();
        let mut bar = BarMap::open_file(&p, 0x80000, Access::ReadWrite).unwrap();
        let mut m = SmuModel::with_table(&a, None, SmuProfile::default(), blob).unwrap();
        let l = m.layout;
        assert!(l.resp >= 0x80000);
        let mut t = Instant::now();
        m.step(&mut bar, t);
        // What the client does through the pair: index, data; per register.
        let smn_write = |m: &mut SmuModel, bar: &mut BarMap, addr: u64, v: u32| {
            bar.device_write32(l.index, addr as u32).unwrap();
            m.step(bar, t);
            bar.device_write32(l.data, v).unwrap();
            m.step(bar, t);
        };
        smn_write(&mut m, &mut bar, l.resp, 0);
        smn_write(&mut m, &mut bar, l.arg, 0);
        smn_write(&mut m, &mut bar, l.msg, 0x2);
        assert_eq!(m.received, [(0x2, 0)]);
        bar.device_write32(l.index, l.resp as u32).unwrap();
        assert!(matches!(
            until_event(&mut m, &mut bar, &mut t, 10),
            Some(SmuEvent::Answered { response: 1, .. })
        ));
        m.step(&mut bar, t);
        assert_eq!(bar.read32(l.data).unwrap(), OK);
        bar.device_write32(l.index, l.arg as u32).unwrap();
        m.step(&mut bar, t);
        assert_eq!(
            bar.read32(l.data).unwrap(),
            SmuProfile::default().pmfw_version
        );
        // Nothing of the mailbox landed in the BAR at the in-BAR offsets.
        assert_eq!(bar.read32(0x58a08).unwrap(), 0);
    }

    #[test]
    fn a_stray_write_to_a_status_register_does_not_stick() {
        let (_d, mut bar, mut m, l) = setup(SmuProfile::default());
        let t = Instant::now();
        m.step(&mut bar, t);
        bar.device_write32(l.memsize, 0).unwrap();
        m.step(&mut bar, t);
        assert_eq!(bar.read32(l.memsize).unwrap(), MEMSIZE_MIB);
    }
}
