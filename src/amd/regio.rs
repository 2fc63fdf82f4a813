//! Register access as amdgpu makes it: a register whose byte offset lies inside
//! the register BAR is read and written there; one at or past the BAR's end is
//! reached through the SMN index/data pair (amdgpu_device.c: `amdgpu_device_rreg`
//! / `amdgpu_device_wreg`: `if ((reg * 4) < adev->rmmio_size) readl(..) else
//! adev->pcie_rreg(adev, reg * 4)`; `pcie_rreg` on SOC21 is
//! `amdgpu_device_indirect_rreg`: PCIE_INDEX2 ← address, read PCIE_INDEX2 back
//! to flush the posted write, read PCIE_DATA2). The SMN address of such a
//! register is its byte offset (`reg * 4`).
//!
//! Unlike amdgpu, which owns the index under `pcie_idx_lock`, resetlab is a
//! guest on a device another program (QEMU, a later amdgpu) will use again, so
//! every indirect access puts PCIE_INDEX2 back to what it held. Every index and
//! data write goes through the journal, in order, as the separate writes they
//! are; in dry-run they are recorded and not made, and an indirect read returns
//! `None` (the data register would not show the register asked for).
//!
//! API for the other users (the SMU client, health checks, the Raphael mailbox
//! of b16-families whose registers sit at SMN 0x3B10508/0x3B10988/0x3B10984):
//! - [`RegIo::new`] / [`RegIo::for_asic`]: a BAR mapping plus the index/data
//!   pair (BAR byte offsets), optionally a [`Barrier`];
//! - [`RegIo::path`]: which way a byte offset goes ([`RegPath`]);
//! - [`RegIo::read`] / [`RegIo::write`]: by byte offset, either path;
//! - [`RegIo::smn_read`] / [`RegIo::smn_write`]: by SMN address, always indirect;
//! - [`RegIo::poll_nonzero`]: a bounded poll of one register that sets the
//!   index once for the whole poll (a poll of 2 s must not journal thousands of
//!   index writes), then restores it.
//!
//! The twin cannot trap accesses to its file-backed BAR: its model looks at the
//! file every step. [`Barrier::Twin`] makes an access wait (bounded) until the
//! model has stepped twice after a write that the device answers by changing
//! another register (the index/data windows); on hardware there is no barrier,
//! the read-back of the index register is the only ordering amdgpu needs.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::amd::regs::Asic;
use crate::error::{Error, Result};
use crate::journal::Journal;
use crate::pci::mmio::{Access, BarMap};
use crate::pci::Bdf;

/// How a register is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RegPath {
    /// In the register BAR.
    Direct,
    /// Through PCIE_INDEX2 / PCIE_DATA2 at this SMN address.
    Indirect,
}

impl std::fmt::Display for RegPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RegPath::Direct => "BAR",
            RegPath::Indirect => "PCIE_INDEX2/PCIE_DATA2",
        })
    }
}

/// The SMN index/data pair, as BAR byte offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct IndirectPair {
    pub index: u64,
    pub data: u64,
}

impl IndirectPair {
    /// The pair regs/ names in `[indirect]`, resolved with `asic`'s bases.
    pub fn of(asic: &Asic) -> Result<Option<IndirectPair>> {
        match &asic.file.indirect {
            Some(ind) => Ok(Some(IndirectPair {
                index: asic.resolve(&ind.index)?.bar_offset,
                data: asic.resolve(&ind.data)?.bar_offset,
            })),
            None => Ok(None),
        }
    }
}

/// What an access waits for after a write the device must react to.
pub enum Barrier {
    /// Hardware: nothing (the index read-back orders the accesses).
    None,
    /// The twin: its model's step counter (`<root>/model/clock`, a u32 at 0).
    Twin(BarMap),
}

/// How long [`Barrier::Twin`] waits for the model's two steps.
pub const TWIN_BARRIER_BOUND: Duration = Duration::from_secs(2);

/// The twin's step counter file for a sysfs root `<root>/sys`.
pub fn twin_clock_path(sysfs: &Path) -> Option<PathBuf> {
    sysfs.parent().map(|r| r.join("model").join("clock"))
}

impl Barrier {
    /// The twin's barrier when `sysfs` is a twin's root whose model runs
    /// (its clock file exists), else none. Never a barrier for `/sys`.
    pub fn for_sysfs(sysfs: &Path) -> Barrier {
        if sysfs == Path::new(crate::machine::SYSFS) {
            return Barrier::None;
        }
        match twin_clock_path(sysfs) {
            Some(p) if p.is_file() => match BarMap::open_file(&p, 4096, Access::ReadOnly) {
                Ok(m) => Barrier::Twin(m),
                Err(_) => Barrier::None,
            },
            _ => Barrier::None,
        }
    }

    /// Waits until the device has seen the writes made before this call.
    pub fn wait(&self) -> Result<()> {
        let Barrier::Twin(clock) = self else {
            return Ok(());
        };
        // A step that began before the write may still end after this read;
        // the one after it began after the write.
        let t0 = clock.read32(0)?;
        let start = Instant::now();
        loop {
            let t = clock.read32(0)?;
            if t.wrapping_sub(t0) >= 2 {
                return Ok(());
            }
            if start.elapsed() >= TWIN_BARRIER_BOUND {
                return Err(Error::Timeout {
                    what: format!(
                        "the twin's device model to step (clock {} stayed at {t})",
                        clock.path.display()
                    ),
                    bound_ms: TWIN_BARRIER_BOUND.as_millis() as u64,
                });
            }
            std::thread::sleep(Duration::from_micros(100));
        }
    }
}

/// Register access over one device's register BAR.
pub struct RegIo {
    bar: BarMap,
    device: Bdf,
    indirect: Option<IndirectPair>,
    barrier: Barrier,
}

impl std::fmt::Debug for RegIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegIo")
            .field("bar", &self.bar)
            .field("device", &self.device)
            .field("indirect", &self.indirect)
            .finish()
    }
}

impl RegIo {
    /// Access through `bar`; `device` names the device in journal records;
    /// `indirect` is the index/data pair (None: beyond-BAR offsets are errors).
    pub fn new(bar: BarMap, device: Bdf, indirect: Option<IndirectPair>) -> RegIo {
        RegIo {
            bar,
            device,
            indirect,
            barrier: Barrier::None,
        }
    }

    /// [`RegIo::new`] with the pair `asic`'s regs/ `[indirect]` names.
    pub fn for_asic(asic: &Asic, bar: BarMap, device: Bdf) -> Result<RegIo> {
        let pair = IndirectPair::of(asic)?;
        if let Some(p) = pair {
            for off in [p.index, p.data] {
                if off + 4 > bar.len() {
                    return Err(Error::OutOfBounds {
                        what: format!(
                            "{} indirect pair in {}",
                            asic.asic_name(),
                            bar.path.display()
                        ),
                        offset: off,
                        width: 4,
                        len: bar.len(),
                    });
                }
            }
        }
        Ok(RegIo::new(bar, device, pair))
    }

    pub fn with_barrier(mut self, barrier: Barrier) -> RegIo {
        self.barrier = barrier;
        self
    }

    pub fn set_barrier(&mut self, barrier: Barrier) {
        self.barrier = barrier;
    }

    pub fn bar(&self) -> &BarMap {
        &self.bar
    }

    pub fn bar_mut(&mut self) -> &mut BarMap {
        &mut self.bar
    }

    pub fn into_bar(self) -> BarMap {
        self.bar
    }

    pub fn device(&self) -> &Bdf {
        &self.device
    }

    pub fn indirect_pair(&self) -> Option<IndirectPair> {
        self.indirect
    }

    /// Which way byte offset `off` goes: the BAR when the dword fits in it,
    /// else the indirect pair (`amdgpu_device_rreg`'s `reg * 4 < rmmio_size`).
    pub fn path(&self, off: u64) -> RegPath {
        if off.saturating_add(4) <= self.bar.len() {
            RegPath::Direct
        } else {
            RegPath::Indirect
        }
    }

    /// Whether `off` can be reached at all (in the BAR, or within the 32-bit
    /// SMN space with a pair to reach it by), and dword-aligned.
    pub fn check(&self, off: u64) -> Result<RegPath> {
        let path = self.path(off);
        let bad = off % 4 != 0
            || (path == RegPath::Indirect
                && (self.indirect.is_none() || off > u64::from(u32::MAX)));
        if bad {
            return Err(Error::OutOfBounds {
                what: format!(
                    "{} register at {off:#x} ({})",
                    self.device,
                    if self.indirect.is_none() {
                        "past the BAR, and regs/ names no indirect pair"
                    } else {
                        "not a dword-aligned 32-bit SMN address"
                    }
                ),
                offset: off,
                width: 4,
                len: self.bar.len(),
            });
        }
        Ok(path)
    }

    fn pair(&self) -> Result<IndirectPair> {
        self.indirect.ok_or_else(|| {
            Error::not_found(
                "indirect SMN register pair",
                format!("{} (regs/ has no [indirect])", self.device),
            )
        })
    }

    fn smn_address(off: u64) -> Result<u32> {
        u32::try_from(off).map_err(|_| Error::OutOfBounds {
            what: "SMN address".into(),
            offset: off,
            width: 4,
            len: u64::from(u32::MAX),
        })
    }

    /// Reads the register at byte offset `off` by whichever path reaches it.
    /// None only in dry-run for an indirect register.
    pub fn read(&mut self, journal: &mut Journal, off: u64) -> Result<Option<u32>> {
        match self.check(off)? {
            RegPath::Direct => Ok(Some(self.bar.read32(off)?)),
            RegPath::Indirect => self.smn_read(journal, Self::smn_address(off)?),
        }
    }

    /// Writes the register at byte offset `off` by whichever path reaches it.
    pub fn write(&mut self, journal: &mut Journal, off: u64, value: u32) -> Result<()> {
        match self.check(off)? {
            RegPath::Direct => {
                let dev = self.device;
                self.bar.write32(journal, &dev, off, value)
            }
            RegPath::Indirect => self.smn_write(journal, Self::smn_address(off)?, value),
        }
    }

    /// A direct read that is not allowed to go indirect (status registers
    /// read before anything else, e.g. RCC_CONFIG_MEMSIZE).
    pub fn read_direct(&self, off: u64) -> Result<u32> {
        self.bar.read32(off)
    }

    /// Sets PCIE_INDEX2 to `address` (journalled), flushes it by reading it
    /// back; returns the index as found, to restore.
    fn select(&mut self, journal: &mut Journal, address: u32) -> Result<(IndirectPair, u32)> {
        let p = self.pair()?;
        let old = self.bar.read32(p.index)?;
        let dev = self.device;
        self.bar.write32(journal, &dev, p.index, address)?;
        if !journal.dry_run {
            let settled = self.bar.read32(p.index).and_then(|_| self.barrier.wait());
            if let Err(e) = settled {
                // The index goes back even when the device did not follow.
                let _ = self.restore(journal, p, old);
                return Err(e);
            }
        }
        Ok((p, old))
    }

    /// Puts PCIE_INDEX2 back (journalled).
    fn restore(&mut self, journal: &mut Journal, p: IndirectPair, old: u32) -> Result<()> {
        let dev = self.device;
        self.bar.write32(journal, &dev, p.index, old)?;
        if !journal.dry_run {
            let _ = self.bar.read32(p.index)?;
        }
        Ok(())
    }

    /// Reads SMN `address` (`amdgpu_device_indirect_rreg`), index restored
    /// after. None in dry-run.
    pub fn smn_read(&mut self, journal: &mut Journal, address: u32) -> Result<Option<u32>> {
        let (p, old) = self.select(journal, address)?;
        let v = if journal.dry_run {
            None
        } else {
            Some(self.bar.read32(p.data))
        };
        let r = self.restore(journal, p, old);
        let v = v.transpose()?;
        r?;
        Ok(v)
    }

    /// Writes SMN `address` (`amdgpu_device_indirect_wreg`: index, read back,
    /// data, read back), index restored after.
    pub fn smn_write(&mut self, journal: &mut Journal, address: u32, value: u32) -> Result<()> {
        let (p, old) = self.select(journal, address)?;
        let dev = self.device;
        let w = self
            .bar
            .write32(journal, &dev, p.data, value)
            .and_then(|_| {
                if journal.dry_run {
                    return Ok(());
                }
                let _ = self.bar.read32(p.data)?;
                self.barrier.wait()
            });
        let r = self.restore(journal, p, old);
        w?;
        r
    }

    /// Polls the register at `off` until it reads non-zero or `bound` passes
    /// ([`crate::amd::smu::poll_nonzero`]'s back-off). An indirect register
    /// has its index set once for the poll and restored after. In dry-run an
    /// indirect register is not polled: `(0, 0)`.
    pub fn poll_nonzero(
        &mut self,
        journal: &mut Journal,
        off: u64,
        bound: Duration,
    ) -> Result<(u32, Duration)> {
        match self.check(off)? {
            RegPath::Direct => {
                let bar = &self.bar;
                crate::amd::smu::poll_nonzero(bound, || bar.read32(off))
            }
            RegPath::Indirect => {
                let (p, old) = self.select(journal, Self::smn_address(off)?)?;
                let r = if journal.dry_run {
                    Ok((0, Duration::ZERO))
                } else {
                    let bar = &self.bar;
                    crate::amd::smu::poll_nonzero(bound, || bar.read32(p.data))
                };
                let r2 = self.restore(journal, p, old);
                let r = r?;
                r2?;
                Ok(r)
            }
        }
    }

    /// Waits for the device to see the writes so far (the twin's model; a
    /// no-op on hardware). For windows other than the SMN pair (MM_INDEX).
    pub fn settle(&self, journal: &Journal) -> Result<()> {
        if journal.dry_run {
            return Ok(());
        }
        self.barrier.wait()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::Target;
    use proptest::prelude::*;

    fn io(len: u64, access: Access) -> (tempfile::TempDir, RegIo) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("resource5");
        std::fs::File::create(&p).unwrap().set_len(len).unwrap();
        let bar = BarMap::open_file(&p, len, access).unwrap();
        let pair = IndirectPair {
            index: 0x38,
            data: 0x3c,
        };
        (dir, RegIo::new(bar, Bdf::new(0, 0xc5, 0, 0), Some(pair)))
    }

    #[test]
    fn offsets_inside_the_bar_are_direct_and_past_it_indirect() {
        let (_d, r) = io(0x1000, Access::ReadOnly);
        assert_eq!(r.path(0xffc), RegPath::Direct);
        assert_eq!(r.path(0x1000), RegPath::Indirect);
        for (at, what) in [(0x1_0000_0000u64, "0x100000000"), (0x1002, "0x1002")] {
            let e = r.check(at).unwrap_err();
            assert!(
                matches!(&e, Error::OutOfBounds { what: w, offset, width: 4, .. }
                    if *offset == at && w.contains(what) && w.contains("not a dword-aligned 32-bit SMN address")),
                "{e:?}"
            );
        }
    }

    #[test]
    fn an_indirect_write_is_index_data_restore_in_the_journal() {
        let (_d, mut r) = io(0x1000, Access::ReadWrite);
        r.bar_mut().device_write32(0x38, 0x03b1_0028).unwrap();
        let mut j = Journal::new(false);
        r.write(&mut j, 0x58a08, 0x11).unwrap();
        let w: Vec<String> = j.writes().map(|x| x.to_string()).collect();
        assert_eq!(
            w,
            [
                "mmio 0000:c5:00.0 resource5+0x38 <- 0x00058a08",
                "mmio 0000:c5:00.0 resource5+0x3c <- 0x00000011",
                "mmio 0000:c5:00.0 resource5+0x38 <- 0x03b10028",
            ]
        );
        assert_eq!(r.bar().read32(0x38).unwrap(), 0x03b1_0028, "index restored");
    }

    #[test]
    fn an_indirect_read_in_dry_run_records_and_returns_none() {
        let (_d, mut r) = io(0x1000, Access::ReadOnly);
        let mut j = Journal::new(true);
        assert_eq!(r.read(&mut j, 0x2000).unwrap(), None);
        assert_eq!(j.writes().count(), 2);
        assert!(j
            .records
            .iter()
            .all(|x| x.target == Target::Mmio && x.dry_run));
    }

    #[test]
    fn without_a_pair_past_the_bar_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bar");
        std::fs::File::create(&p).unwrap().set_len(0x1000).unwrap();
        let bar = BarMap::open_file(&p, 0x1000, Access::ReadWrite).unwrap();
        let mut r = RegIo::new(bar, Bdf::new(0, 0xc5, 0, 0), None);
        let mut j = Journal::new(false);
        let e = r.read(&mut j, 0x1000).unwrap_err().to_string();
        assert!(e.contains("indirect pair"), "{e}");
    }

    proptest! {
        #[test]
        fn any_offset_and_value_never_panics(off in any::<u64>(), v in any::<u32>(), dry in any::<bool>()) {
            let (_d, mut r) = io(0x1000, Access::ReadWrite);
            let mut j = Journal::new(dry);
            let _ = r.read(&mut j, off);
            let _ = r.write(&mut j, off, v);
            let _ = r.poll_nonzero(&mut j, off, Duration::ZERO);
            let _ = r.smn_read(&mut j, off as u32);
        }
    }
}
