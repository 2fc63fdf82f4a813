//! The device session: what every operation that writes to a device stands on,
//! in one place (after `pci_reset_function`'s `pci_dev_lock` + `pci_dev_save_and_disable`
//! bracket in drivers/pci/pci.c). Opening one refuses without root (unless a dry
//! run) and on a read-only host, takes the per-device locks (bounded), re-reads the
//! device with them held, runs the guards (VFIO holders, host driver, platform
//! function; `force` overrides them) and pins the device awake. Config space and
//! BAR mappings are handed out as the journal allows them: in a dry run they are
//! opened read-only and the journal records without writing. Closing it (or
//! dropping it) puts back COMMAND and `power/control`, through the journal.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::machine::Machine;
use crate::pci::config::SysfsConfig;
use crate::pci::holders::OpenFiles;
use crate::pci::journal::Journal;
use crate::pci::lock::{lock, DeviceLock};
use crate::pci::mmio::{self, Access, BarMap, SavedCommand, SystemFiles};
use crate::pci::power;
use crate::pci::sysfs::Parent;
use crate::pci::{Bdf, Device, Topology};

/// Drivers that leave a function free for a reset: it is parked for passthrough.
pub fn is_parking_driver(driver: Option<&str>) -> bool {
    matches!(
        driver,
        None | Some("vfio-pci") | Some("pci-stub") | Some("pciback")
    )
}

/// What a function is when it is part of the platform, not something to
/// reset: a host bridge (class 0x0600, also the data fabric's 00:18.x), an
/// ISA/LPC or other bridge (0x0601, 0x0680), the IOMMU (0x0806) or another
/// system peripheral (base class 0x08) on a root bus, or the root complex's
/// SMBus controller (0x0c05). Class codes: PCI Code and ID Assignment spec,
/// include/linux/pci_ids.h (PCI_CLASS_BRIDGE_HOST, PCI_CLASS_SYSTEM_IOMMU, …).
/// Removing one and rescanning the whole bus (the default chain's last
/// resort) can take the machine with it.
pub fn platform_function(dev: &Device) -> Option<&'static str> {
    let on_root_bus = matches!(dev.parent, Parent::RootBus(_));
    match dev.class16() {
        0x0600 => Some("a host bridge"),
        0x0601 => Some("an ISA/LPC bridge"),
        0x0680 if on_root_bus => Some("a platform bridge"),
        0x0806 => Some("the IOMMU"),
        0x0c05 if on_root_bus => Some("the root complex's SMBus controller"),
        c if c >> 8 == 0x08 && on_root_bus => Some("a system peripheral of the root complex"),
        _ => None,
    }
}

/// Refuses unless it is safe to touch `dev` and every other function the
/// operation would hit (`affects`, its blast radius), or `force`: the device
/// is not part of the platform, no VFIO group among them is open by a process
/// (a VM), and the device itself is not bound to a live host driver. The
/// holders are read afresh from `/proc` on every call, so a VM that opened a
/// group since the last one is seen.
pub fn guards(
    host: &Machine,
    topo: &Topology,
    dev: &Device,
    affects: &[Bdf],
    force: bool,
) -> Result<()> {
    if force {
        return Ok(());
    }
    if let Some(what) = platform_function(dev) {
        return Err(Error::refused(format!(
            "{} is {what} (class {:#06x}), part of the platform: resetting it can take the machine down; use --force if you mean it",
            dev.bdf,
            dev.class16()
        )));
    }
    let open = OpenFiles::scan_vfio(host);
    let mut seen = std::collections::BTreeSet::new();
    for bdf in std::iter::once(&dev.bdf).chain(affects) {
        let group = if *bdf == dev.bdf {
            dev.iommu_group
        } else {
            topo.get(bdf).and_then(|d| d.iommu_group)
        };
        let Some(g) = group else { continue };
        if !seen.insert(g) {
            continue;
        }
        let holders = open.holders_of(&host.vfio_group_node(g));
        if !holders.is_empty() {
            let who: Vec<String> = holders
                .iter()
                .map(|h| crate::text::escape_control(&h.to_string()))
                .collect();
            let whose = if *bdf == dev.bdf {
                format!("{}: its VFIO group {g}", dev.bdf)
            } else {
                format!(
                    "{}: {bdf}, which the reset would also hit, has its VFIO group {g}",
                    dev.bdf
                )
            };
            return Err(Error::refused(format!(
                "{whose} open by {} (a VM is using it); stop the VM or use --force",
                who.join(", ")
            )));
        }
    }
    if !is_parking_driver(dev.driver.as_deref()) {
        return Err(Error::refused(format!(
            "{} is bound to the host driver {}; unbind it (or bind vfio-pci) first, or use --force",
            dev.bdf,
            dev.driver.as_deref().unwrap_or("?")
        )));
    }
    Ok(())
}

/// Refuses without root unless it is a dry run; `writes` says what the
/// operation writes ("resetting a device writes to sysfs and config space").
pub fn require_root(dry_run: bool, writes: &str) -> Result<()> {
    require_root_or(dry_run, writes, DRY_RUN_HINT)
}

/// How a command that refuses without root names its dry run, by default.
pub const DRY_RUN_HINT: &str = "use --dry-run";

fn require_root_or(dry_run: bool, writes: &str, hint: &str) -> Result<()> {
    if !dry_run && !nix::unistd::geteuid().is_root() {
        return Err(Error::refused(format!("{writes}: run as root (or {hint})")));
    }
    Ok(())
}

/// The device's config space opened for writes through `journal`: read-only
/// when the journal only records ([`Device::config_for_writes`]).
pub fn config_for_writes(dev: &Device, journal: &Journal) -> Result<SysfsConfig> {
    dev.config_for_writes(journal.dry_run)
}

/// Memory decoding (COMMAND.MEMORY) on for as long as the guard lives, so BAR
/// accesses reach the device (vfio-pci leaves an idle device with COMMAND = 0,
/// FACTS.md); COMMAND is put back through the journal by [`MemoryDecoding::close`]
/// (which reports an error) or, failing that, on drop. A device that is gone by
/// then (removed, re-created) has nothing to put back: the journal notes it.
pub struct MemoryDecoding<'j> {
    journal: &'j mut Journal,
    dev: Device,
    saved: Option<SavedCommand>,
}

impl<'j> MemoryDecoding<'j> {
    /// Turns memory decoding on when it is off (never wakes a D3cold device:
    /// refuses, as [`mmio::enable_memory`] does).
    pub fn on(dev: &Device, journal: &'j mut Journal) -> Result<MemoryDecoding<'j>> {
        let saved = mmio::enable_memory(dev, journal)?;
        Ok(MemoryDecoding {
            journal,
            dev: dev.clone(),
            saved,
        })
    }

    /// Whether decoding was off and this guard turned it on.
    pub fn turned_on(&self) -> bool {
        self.saved.is_some()
    }

    /// The journal, for the accesses made while decoding is on.
    pub fn journal(&mut self) -> &mut Journal {
        self.journal
    }

    /// Puts COMMAND back now, reporting a failure.
    pub fn close(mut self) -> Result<()> {
        self.restore()
    }

    fn restore(&mut self) -> Result<()> {
        let Some(saved) = self.saved.take() else {
            return Ok(());
        };
        restore_command(&self.dev, self.journal, saved)
    }
}

impl Drop for MemoryDecoding<'_> {
    fn drop(&mut self) {
        let _ = self.restore();
    }
}

fn restore_command(dev: &Device, journal: &mut Journal, saved: SavedCommand) -> Result<()> {
    if !dev.config_path().exists() {
        return journal.note(
            Some(&dev.bdf),
            format!(
                "COMMAND not put back to {:#06x}: the device is gone",
                saved.0
            ),
        );
    }
    mmio::restore_command(dev, journal, saved)
}

/// How to open a [`Session`].
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// Record every write, make none: no root needed, no lock taken.
    pub dry_run: bool,
    /// Override the guards (VFIO holders, host driver, platform function).
    pub force: bool,
    /// Bound of waiting for another resetlab's lock on each device.
    pub lock_timeout: Duration,
    /// Bound of waiting for the device to wake to D0.
    pub wake_timeout: Duration,
    /// What the operation writes, for the refusal without root
    /// ("resetting a device writes to sysfs and config space").
    pub writes: String,
    /// How the command makes its dry run, for the same refusal ([`DRY_RUN_HINT`]).
    pub dry_run_hint: &'static str,
}

impl SessionOptions {
    pub fn new(writes: impl Into<String>) -> SessionOptions {
        SessionOptions {
            dry_run: false,
            force: false,
            lock_timeout: Duration::from_secs(30),
            wake_timeout: Duration::from_secs(30),
            writes: writes.into(),
            dry_run_hint: DRY_RUN_HINT,
        }
    }
}

/// One operation on a device and the functions it affects; see the module
/// comment. The journal is the session's for its life: every write made in it
/// goes there, and so does putting things back at the end.
pub struct Session<'a> {
    host: &'a Machine,
    journal: &'a mut Journal,
    dev: Device,
    locked: Vec<Bdf>,
    locks: Vec<DeviceLock>,
    force: bool,
    /// `power/control` as found, when waking changed it.
    restore_control: Option<String>,
    /// COMMAND as found, when [`Session::keep_memory_decoding`] changed it.
    saved_command: Option<SavedCommand>,
    closed: bool,
}

impl<'a> Session<'a> {
    /// Opens a session on `bdf` and the other functions in `affects` (locked
    /// too, and guarded): root, a writable host, the guards (first before
    /// waiting for a lock, so a refusal is quick, then again with the locks
    /// held, on the device as it is then: a VM may have started during the
    /// wait), and the device awake for the duration. `topo` gets the re-read
    /// device.
    pub fn open(
        host: &'a Machine,
        topo: &mut Topology,
        bdf: &Bdf,
        affects: &[Bdf],
        opts: &SessionOptions,
        journal: &'a mut Journal,
    ) -> Result<Session<'a>> {
        require_root_or(opts.dry_run, &opts.writes, opts.dry_run_hint)?;
        let dev = topo.require(bdf)?.clone();
        let mut locked: Vec<Bdf> = std::iter::once(dev.bdf)
            .chain(affects.iter().copied())
            .collect();
        locked.sort();
        locked.dedup();
        let mut s = Session {
            host,
            journal,
            dev,
            locked,
            locks: vec![],
            force: opts.force,
            restore_control: None,
            saved_command: None,
            closed: false,
        };
        s.guards_over(topo, &[])?;
        if !opts.dry_run {
            host.check_writable()?;
            s.locks = s
                .locked
                .iter()
                .map(|b| lock(host, b, opts.lock_timeout))
                .collect::<Result<_>>()?;
            s.dev = topo.reload(host, bdf)?.clone();
            s.guards_over(topo, &[])?;
        }
        s.restore_control = power::wake(&s.dev, s.journal, opts.wake_timeout)?;
        Ok(s)
    }

    /// The guards again, over the session's functions and `more` (what one
    /// step would also hit), on the device as `topo` has it now.
    pub fn guards_over(&self, topo: &Topology, more: &[Bdf]) -> Result<()> {
        let dev = topo.get(&self.dev.bdf).unwrap_or(&self.dev);
        let affects: Vec<Bdf> = self.locked.iter().chain(more).copied().collect();
        guards(self.host, topo, dev, &affects, self.force)
    }

    pub fn host(&self) -> &'a Machine {
        self.host
    }

    pub fn journal(&mut self) -> &mut Journal {
        self.journal
    }

    /// The device as read when the session opened (with the locks held).
    pub fn device(&self) -> &Device {
        &self.dev
    }

    /// Re-reads the device (an operation may have re-created it).
    pub fn reload(&mut self) -> Result<&Device> {
        self.dev = Device::load(self.host, self.dev.bdf)?;
        Ok(&self.dev)
    }

    /// The functions the session holds (the device first among them, sorted).
    pub fn functions(&self) -> &[Bdf] {
        &self.locked
    }

    /// Whether the locks are held (not in a dry run).
    pub fn holds_locks(&self) -> bool {
        !self.locks.is_empty()
    }

    /// The device's config space for journalled writes (read-only in a dry run).
    pub fn config(&self) -> Result<SysfsConfig> {
        config_for_writes(&self.dev, self.journal)
    }

    /// Maps BAR `bar` of the device: read-write for real, read-only in a dry
    /// run (writes through it go through the journal, which makes none then).
    pub fn map_bar(&self, bar: u8) -> Result<BarMap> {
        let access = if self.journal.dry_run {
            Access::ReadOnly
        } else {
            Access::ReadWrite
        };
        BarMap::open(&self.dev, bar, access, &SystemFiles::for_host(self.host))
    }

    /// Memory decoding on until the session ends (for an operation that maps
    /// BARs throughout, such as an experiment); returns whether it was off.
    pub fn keep_memory_decoding(&mut self) -> Result<bool> {
        if self.saved_command.is_none() {
            self.saved_command = mmio::enable_memory(&self.dev, self.journal)?;
        }
        Ok(self.saved_command.is_some())
    }

    /// Memory decoding on for as long as the returned guard lives.
    pub fn memory_decoding(&mut self) -> Result<MemoryDecoding<'_>> {
        MemoryDecoding::on(&self.dev, self.journal)
    }

    /// Ends the session: COMMAND, then `power/control`, put back as found;
    /// reports the first failure (the second is still tried). The locks go
    /// after that.
    pub fn close(mut self) -> Result<()> {
        self.finish()
    }

    fn finish(&mut self) -> Result<()> {
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        let bdf = self.dev.bdf;
        let r1 = match self.saved_command.take() {
            Some(c) => match Device::load(self.host, bdf) {
                Ok(d) => restore_command(&d, self.journal, c),
                Err(_) => restore_command(&self.dev, self.journal, c),
            },
            None => Ok(()),
        };
        let r2 = power::unwake(self.host, self.journal, &bdf, self.restore_control.take());
        r1.and(r2)
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::journal::Target;
    use crate::pci::regs::{Command, PCI_COMMAND};
    use crate::sim::Twin;

    fn gpu() -> Bdf {
        "c5:00.0".parse().unwrap()
    }

    fn opts(dry_run: bool) -> SessionOptions {
        SessionOptions {
            dry_run,
            lock_timeout: Duration::from_millis(20),
            ..SessionOptions::new("testing writes")
        }
    }

    fn twin() -> (Twin, Machine, Topology) {
        let t = Twin::new().unwrap();
        let host = Machine::new(&t.sysfs);
        let topo = Topology::scan(&host).unwrap();
        (t, host, topo)
    }

    fn command_of(host: &Machine, b: &Bdf) -> u16 {
        let cfg = std::fs::read(host.device_dir(b).join("config")).unwrap();
        let o = PCI_COMMAND as usize;
        u16::from_le_bytes([cfg[o], cfg[o + 1]])
    }

    fn set_command(host: &Machine, b: &Bdf, v: u16) {
        let p = host.device_dir(b).join("config");
        let mut cfg = std::fs::read(&p).unwrap();
        let o = PCI_COMMAND as usize;
        cfg[o..o + 2].copy_from_slice(&v.to_le_bytes());
        std::fs::write(&p, cfg).unwrap();
    }

    fn control(host: &Machine, b: &Bdf) -> std::path::PathBuf {
        host.device_dir(b).join("power/control")
    }

    fn control_of(host: &Machine, b: &Bdf) -> String {
        std::fs::read_to_string(control(host, b))
            .unwrap()
            .trim()
            .to_string()
    }

    #[test]
    fn the_locks_are_held_for_the_session_and_released_after() {
        let (_t, host, mut topo) = twin();
        let hda: Bdf = "c5:00.1".parse().unwrap();
        let mut j = Journal::new(false);
        let s = Session::open(&host, &mut topo, &gpu(), &[hda], &opts(false), &mut j).unwrap();
        assert!(s.holds_locks());
        assert_eq!(s.functions(), &[gpu(), hda]);
        for b in [gpu(), hda] {
            let e = lock(&host, &b, Duration::ZERO).err().unwrap();
            assert_eq!(e.exit_code(), crate::error::exit::REFUSED, "{e}");
            assert!(e.to_string().contains("is being reset by"), "{e}");
        }
        s.close().unwrap();
        for b in [gpu(), hda] {
            lock(&host, &b, Duration::ZERO).unwrap();
        }
    }

    #[test]
    fn a_held_lock_is_waited_for_with_the_bound_in_the_error() {
        let (_t, host, mut topo) = twin();
        let _held = lock(&host, &gpu(), Duration::ZERO).unwrap();
        let mut j = Journal::new(false);
        let e = Session::open(&host, &mut topo, &gpu(), &[], &opts(false), &mut j)
            .err()
            .unwrap();
        assert_eq!(e.exit_code(), crate::error::exit::REFUSED, "{e}");
        assert!(e.to_string().contains("waited 20 ms"), "{e}");
        assert_eq!(j.records.len(), 0, "nothing written before the lock");
    }

    #[test]
    fn a_vm_holding_an_affected_group_is_refused_unless_forced() {
        let (_t, host, mut topo) = twin();
        let hda: Bdf = "c5:00.1".parse().unwrap();
        let node = host.vfio_group_node(19);
        let _vm = std::fs::File::open(&node).unwrap();
        let mut j = Journal::new(false);
        let e = Session::open(&host, &mut topo, &gpu(), &[hda], &opts(false), &mut j)
            .err()
            .unwrap();
        assert_eq!(e.exit_code(), crate::error::exit::REFUSED, "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("which the reset would also hit, has its VFIO group 19"),
            "{msg}"
        );
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        // Refused before waiting: no lock file was even made.
        assert!(!crate::pci::lock::lock_dir(&host)
            .join(format!("{hda}.lock"))
            .exists());
        let forced = SessionOptions {
            force: true,
            ..opts(false)
        };
        Session::open(&host, &mut topo, &gpu(), &[hda], &forced, &mut j)
            .unwrap()
            .close()
            .unwrap();
    }

    #[test]
    fn a_host_driver_or_a_platform_function_is_refused() {
        let (_t, host, mut topo) = twin();
        let xhci: Bdf = "c5:00.3".parse().unwrap();
        let mut j = Journal::new(true);
        let e = Session::open(&host, &mut topo, &xhci, &[], &opts(true), &mut j)
            .err()
            .unwrap();
        assert!(
            e.to_string().contains("bound to the host driver xhci_hcd"),
            "{e}"
        );
        let root: Bdf = "00:00.0".parse().unwrap();
        let e = Session::open(&host, &mut topo, &root, &[], &opts(true), &mut j)
            .err()
            .unwrap();
        assert!(e.to_string().contains("a host bridge"), "{e}");
        assert!(e.to_string().contains("can take the machine down;"), "{e}");
        assert_eq!(e.exit_code(), crate::error::exit::REFUSED);
    }

    #[test]
    fn a_snapshot_is_refused_but_a_dry_run_of_it_is_not() {
        let t = Twin::new().unwrap();
        let host = Machine::snapshot(&t.sysfs);
        let mut topo = Topology::scan(&host).unwrap();
        let mut j = Journal::new(false);
        let e = Session::open(&host, &mut topo, &gpu(), &[], &opts(false), &mut j)
            .err()
            .unwrap();
        assert!(e.to_string().contains("read-only"), "{e}");
        let mut j = Journal::new(true);
        Session::open(&host, &mut topo, &gpu(), &[], &opts(true), &mut j)
            .unwrap()
            .close()
            .unwrap();
    }

    #[test]
    fn a_dry_run_session_records_and_writes_nothing() {
        let (_t, host, mut topo) = twin();
        set_command(&host, &gpu(), 0);
        std::fs::write(control(&host, &gpu()), "auto\n").unwrap();
        let mut j = Journal::new(true);
        let mut s = Session::open(&host, &mut topo, &gpu(), &[], &opts(true), &mut j).unwrap();
        assert!(!s.holds_locks());
        let mut cfg = s.config().unwrap();
        s.journal()
            .config_write(&gpu(), &mut cfg, PCI_COMMAND, 2, 0x6)
            .unwrap();
        // The handle could not take a write if the journal tried one.
        let e =
            crate::pci::config::ConfigAccess::write(&mut cfg, PCI_COMMAND, &[6, 0]).unwrap_err();
        assert!(e.to_string().contains("was opened read-only"), "{e}");
        assert!(s.keep_memory_decoding().unwrap());
        s.close().unwrap();
        assert_eq!(command_of(&host, &gpu()), 0);
        assert_eq!(control_of(&host, &gpu()), "auto");
        assert!(
            !crate::pci::lock::lock_dir(&host).exists(),
            "no lock in a dry run"
        );
        let w: Vec<String> = j.writes().map(|r| r.to_string()).collect();
        assert!(j.writes().all(|r| r.dry_run));
        assert_eq!(w.len(), 5, "{w:?}");
        assert!(
            w[0].ends_with("power/control") && w[0].contains("\"on\""),
            "{w:?}"
        );
        assert!(w[4].contains("\"auto\""), "{w:?}");
    }

    #[test]
    fn power_control_is_put_back_on_close_and_on_drop() {
        let (_t, host, mut topo) = twin();
        std::fs::write(control(&host, &gpu()), "auto\n").unwrap();
        let mut j = Journal::new(false);
        let s = Session::open(&host, &mut topo, &gpu(), &[], &opts(false), &mut j).unwrap();
        assert_eq!(control_of(&host, &gpu()), "on");
        s.close().unwrap();
        assert_eq!(control_of(&host, &gpu()), "auto");
        {
            let _s = Session::open(&host, &mut topo, &gpu(), &[], &opts(false), &mut j).unwrap();
            assert_eq!(control_of(&host, &gpu()), "on");
        }
        assert_eq!(control_of(&host, &gpu()), "auto");
        let sysfs: Vec<&str> = j
            .records
            .iter()
            .filter(|r| r.target == Target::Sysfs)
            .filter_map(|r| r.value.as_deref())
            .collect();
        assert_eq!(sysfs, ["on", "auto", "on", "auto"]);
    }

    #[test]
    fn memory_decoding_is_on_for_the_guard_and_put_back_after() {
        let (_t, host, mut topo) = twin();
        set_command(&host, &gpu(), Command::INTX_DISABLE.bits());
        let mut j = Journal::new(false);
        let mut s = Session::open(&host, &mut topo, &gpu(), &[], &opts(false), &mut j).unwrap();
        {
            let mem = s.memory_decoding().unwrap();
            assert!(mem.turned_on());
            let want = Command::INTX_DISABLE | Command::MEMORY;
            assert_eq!(command_of(&host, &gpu()), want.bits());
        }
        assert_eq!(command_of(&host, &gpu()), Command::INTX_DISABLE.bits());
        let mem = s.memory_decoding().unwrap();
        mem.close().unwrap();
        assert_eq!(command_of(&host, &gpu()), Command::INTX_DISABLE.bits());
        // For the rest of the session, then back at its end.
        assert!(s.keep_memory_decoding().unwrap());
        assert_ne!(command_of(&host, &gpu()) & Command::MEMORY.bits(), 0);
        drop(s);
        assert_eq!(command_of(&host, &gpu()), Command::INTX_DISABLE.bits());
        // Already on: nothing to turn on, nothing put back.
        set_command(&host, &gpu(), Command::MEMORY.bits());
        let before = j.records.len();
        let mem = MemoryDecoding::on(topo.require(&gpu()).unwrap(), &mut j).unwrap();
        assert!(!mem.turned_on());
        mem.close().unwrap();
        assert_eq!(j.records.len(), before);
    }

    #[test]
    fn without_root_a_write_is_refused_naming_what_it_writes() {
        if !nix::unistd::geteuid().is_root() {
            let e = require_root(false, "testing writes").err().unwrap();
            assert_eq!(
                e.to_string(),
                "refused: testing writes: run as root (or use --dry-run)"
            );
        }
        require_root(true, "testing writes").unwrap();
    }
}
