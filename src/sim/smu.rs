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
//! - PCIE_DATA2 holds the SMN register PCIE_INDEX2 names, refreshed every
//!   step. A read right after changing the index would see the old address's
//!   data; the only SMN register modelled (MP1 firmware flags) is also the
//!   index's initial value, so a client reading it gets the right word.
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

/// BAR byte offsets of everything modelled, from regs/.
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
        Ok(Layout {
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

    fn all(&self) -> [u64; 8] {
        [
            self.msg,
            self.arg,
            self.resp,
            self.index,
            self.data,
            self.memsize,
            self.mp0_33,
            self.grbm,
        ]
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
}

#[derive(Debug, Clone)]
struct Ids {
    test: u32,
    version: u32,
    driver_if: u32,
    features: u32,
    reset: u32,
    known: Vec<u32>,
}

impl Ids {
    fn from_asic(asic: &Asic) -> Result<Ids> {
        let id = |n: &str| asic.message(n).map(|m| m.id);
        Ok(Ids {
            test: id("TestMessage")?,
            version: id("GetPmfwVersion")?,
            driver_if: id("GetDriverIfVersion")?,
            features: id("GetEnabledSmuFeatures")?,
            reset: id("GfxDeviceDriverReset")?,
            known: asic.file.messages.iter().map(|m| m.id).collect(),
        })
    }
}

impl SmuModel {
    /// A model of `asic`'s SMU (mailbox of MP1 version `mp1`, the first listed
    /// when None) behaving as `profile` says.
    pub fn new(asic: &Asic, mp1: Option<&str>, profile: SmuProfile) -> Result<SmuModel> {
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
        })
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
        for off in self.layout.all() {
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
        bar.device_write32(l.msg, 0)?;
        bar.device_write32(l.arg, 0)?;
        bar.device_write32(l.resp, OK)?;
        bar.device_write32(l.index, l.fw_flags_addr)?;
        self.state = State::Idle;
        self.refresh(bar);
        Ok(())
    }

    fn fill_dead(&self, bar: &mut BarMap) {
        for off in self.layout.all() {
            let _ = bar.device_write32(off, DEAD);
        }
    }

    /// Read-only registers and the SMN data register, as the hardware shows them.
    fn refresh(&self, bar: &mut BarMap) {
        let l = self.layout;
        let _ = bar.device_write32(l.memsize, MEMSIZE_MIB);
        let _ = bar.device_write32(l.mp0_33, IFWI_DONE);
        let _ = bar.device_write32(l.grbm, if self.dirty { l.gui_active } else { 0 });
        let index = bar.read32(l.index).unwrap_or(DEAD);
        // MP1_FIRMWARE_FLAGS.INTERRUPTS_ENABLED = 1: the firmware runs; other
        // SMN addresses are not modelled and read 0.
        let data = if index == l.fw_flags_addr { 1 } else { 0 };
        let _ = bar.device_write32(l.data, data);
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
            let _ = bar.device_write32(self.layout.arg, v);
        }
        let _ = bar.device_write32(self.layout.resp, code);
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
                let id = bar.read32(l.msg).unwrap_or(0);
                if id == 0 {
                    return None;
                }
                let arg = bar.read32(l.arg).unwrap_or(0);
                let _ = bar.device_write32(l.msg, 0);
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
                let _ = bar.device_write32(l.resp, OK);
                self.state = State::Idle;
                Some(SmuEvent::Mode2Done)
            }
        }
    }

    fn handle(&mut self, bar: &mut BarMap, id: u32, arg: u32, now: Instant) -> SmuEvent {
        let is_mode2 = id == self.ids.reset && arg == MODE2;
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
        } else if id == self.ids.features {
            let f = p.features;
            match arg {
                0 => self.answer(bar, id, arg, OK, Some(f as u32)),
                1 => self.answer(bar, id, arg, OK, Some((f >> 32) as u32)),
                _ => self.answer(bar, id, arg, CMD_FAIL, None),
            }
        } else if id == self.ids.reset {
            if arg != MODE2 {
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
        for off in l.all() {
            bar.device_write32(off, 0).unwrap();
        }
        m.step(&mut bar, t);
        assert_eq!(bar.read32(l.resp).unwrap(), 1);
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
