//! All of the project's `unsafe` MMIO lives here (after vm-memory and
//! cloud-hypervisor): a device's `resourceN` is mapped shared, the mapping is
//! checked once when made (the BAR is a memory BAR of the `resource` table, the
//! file is as long as the BAR), and every access is one exact-width, aligned,
//! bounds-checked 32-bit `read_volatile`/`write_volatile`.
//!
//! Writes go through the journal: [`BarMap::write32`] records first and writes
//! only when the journal says so (not in dry-run). The twin's device model is
//! the hardware, not a client, and writes with [`BarMap::device_write32`].
//!
//! Kernel facts (drivers/pci/pci-sysfs.c: `pci_mmap_resource`,
//! `pci_create_one_attr`):
//! - `resourceN` is mode 0600 (`S_IRUSR | S_IWUSR`): root only;
//! - under kernel lockdown `security_locked_down(LOCKDOWN_PCI_ACCESS)` makes
//!   mmap fail with EPERM;
//! - `iomem_is_exclusive(start)` (kernel/resource.c) makes it fail with EINVAL
//!   when the region is claimed exclusively, which with
//!   CONFIG_IO_STRICT_DEVMEM is any region a driver holds busy; the kernel
//!   parameter `iomem=relaxed` turns that off;
//! - with COMMAND.MEMORY = 0, or the device not in D0, reads return all-ones
//!   and writes are dropped (FACTS.md).

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use memmap2::{MmapOptions, MmapRaw};

use crate::error::{Error, Result};
use crate::machine::Machine;
use crate::pci::journal::Journal;
use crate::pci::regs::{Command, PCI_COMMAND};
use crate::pci::{Bdf, Device};

/// Read-only or read-write mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    ReadOnly,
    ReadWrite,
}

/// Where the mmap diagnosis finds the kernel's build config and command line
/// (`/boot/config-$(uname -r)`, `/proc/cmdline` on a live host).
#[derive(Debug, Clone)]
pub struct SystemFiles {
    pub boot: PathBuf,
    pub proc_root: PathBuf,
}

impl SystemFiles {
    /// The live host's `/boot` and `/proc`; beside the tree for a twin or snapshot.
    pub fn for_host(host: &Machine) -> SystemFiles {
        SystemFiles {
            boot: host.boot(),
            proc_root: host.kernel_proc(),
        }
    }

    /// `CONFIG_IO_STRICT_DEVMEM=y` in the running kernel's config, if readable.
    pub fn strict_devmem(&self) -> Option<bool> {
        // `uname -r`, read through the proc root so a test can stand in.
        let release = std::fs::read_to_string(self.proc_root.join("sys/kernel/osrelease")).ok()?;
        let release = release.trim();
        let text = std::fs::read_to_string(self.boot.join(format!("config-{release}"))).ok()?;
        Some(
            text.lines()
                .any(|l| l.trim() == "CONFIG_IO_STRICT_DEVMEM=y"),
        )
    }

    /// Whether `/proc/cmdline` carries `iomem=relaxed`, if readable.
    pub fn iomem_relaxed(&self) -> Option<bool> {
        let text = std::fs::read_to_string(self.proc_root.join("cmdline")).ok()?;
        Some(text.split_whitespace().any(|w| w == "iomem=relaxed"))
    }
}

/// A mapped register BAR (or a plain file standing in for one).
pub struct BarMap {
    map: MmapRaw,
    len: u64,
    writable: bool,
    /// The file mapped.
    pub path: PathBuf,
    /// How journal records name the region (`resource5`).
    pub region: String,
}

impl std::fmt::Debug for BarMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BarMap")
            .field("path", &self.path)
            .field("len", &self.len)
            .field("writable", &self.writable)
            .finish()
    }
}

/// Why `bar` of `dev` cannot be mapped, judged from sysfs alone (no open).
pub fn check_bar(dev: &Device, bar: u8) -> Result<u64> {
    let res = dev.resources.get(usize::from(bar)).ok_or_else(|| {
        Error::not_found(
            "BAR",
            format!(
                "{} BAR {bar} (the resource table has {} entries)",
                dev.bdf,
                dev.resources.len()
            ),
        )
    })?;
    if bar > 5 {
        return Err(Error::parse("BAR index", bar.to_string(), "BARs are 0..=5"));
    }
    if res.is_empty() {
        return Err(Error::not_found(
            "BAR",
            format!(
                "{} BAR {bar} (not implemented: empty in the resource table)",
                dev.bdf
            ),
        ));
    }
    if !res.is_mem() {
        return Err(Error::refused(format!(
            "{} BAR {bar} is an {} BAR; only memory BARs can be mapped",
            dev.bdf,
            res.kind()
        )));
    }
    let path = dev.dir.join(format!("resource{bar}"));
    if std::fs::symlink_metadata(&path).is_err() {
        return Err(Error::not_found(
            "BAR file",
            format!("{} (the kernel did not create it)", path.display()),
        ));
    }
    Ok(res.size())
}

/// Warnings to show before MMIO: memory decoding off, or not in D0. Reads
/// would return all-ones and writes be dropped.
pub fn access_warnings(dev: &Device) -> Vec<String> {
    let mut v = Vec::new();
    if let Some(p) = dev.power_state.as_deref() {
        if p != "D0" {
            v.push(format!(
                "{} is in {p}, not D0: BAR reads return all-ones and writes are dropped until it is woken",
                dev.bdf
            ));
            // Reading config would wake a D3cold device; say no more.
            return v;
        }
    }
    match memory_decoding(dev) {
        Ok(false) => v.push(format!(
            "{}: COMMAND.MEMORY is 0 (memory decoding off): BAR reads return all-ones and writes are dropped",
            dev.bdf
        )),
        Ok(true) => {}
        Err(e) => v.push(format!("{}: COMMAND not read: {}", dev.bdf, e.one_line())),
    }
    v
}

/// The device's COMMAND register (never wakes a D3cold device: refuses).
fn command(dev: &Device) -> Result<u16> {
    let bytes = dev.read_config()?;
    let lo = bytes.get(usize::from(PCI_COMMAND)).copied().unwrap_or(0);
    let hi = bytes
        .get(usize::from(PCI_COMMAND) + 1)
        .copied()
        .unwrap_or(0);
    Ok(u16::from_le_bytes([lo, hi]))
}

/// COMMAND.MEMORY of the device (never wakes a D3cold device: refuses).
pub fn memory_decoding(dev: &Device) -> Result<bool> {
    Ok(Command::from_bits_retain(command(dev)?).contains(Command::MEMORY))
}

/// COMMAND as found, when [`enable_memory`] turned memory decoding on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SavedCommand(pub u16);

/// Turns COMMAND.MEMORY on (through the journal) when it is off, so BAR
/// accesses reach the device; returns what to put back with
/// [`restore_command`]. vfio-pci leaves an idle device with COMMAND = 0
/// (FACTS.md). Config space is read with COMMAND's current value, so a
/// device in D3cold is refused rather than woken.
pub fn enable_memory(dev: &Device, journal: &mut Journal) -> Result<Option<SavedCommand>> {
    let cmd = command(dev)?;
    if Command::from_bits_retain(cmd).contains(Command::MEMORY) {
        return Ok(None);
    }
    let mut cfg = open_config_for(dev, journal)?;
    journal.config_write(
        &dev.bdf,
        &mut cfg,
        PCI_COMMAND,
        2,
        u32::from(cmd | Command::MEMORY.bits()),
    )?;
    Ok(Some(SavedCommand(cmd)))
}

/// Puts COMMAND back as [`enable_memory`] found it.
pub fn restore_command(dev: &Device, journal: &mut Journal, saved: SavedCommand) -> Result<()> {
    let mut cfg = open_config_for(dev, journal)?;
    journal.config_write(&dev.bdf, &mut cfg, PCI_COMMAND, 2, u32::from(saved.0))
}

fn open_config_for(dev: &Device, journal: &Journal) -> Result<crate::pci::config::SysfsConfig> {
    dev.config_for_writes(journal.dry_run)
}

fn explain_mmap_error(path: &Path, e: std::io::Error, sys: &SystemFiles) -> Error {
    let errno = e.raw_os_error().unwrap_or(0);
    let explanation = match errno {
        libc::EPERM => "the kernel is in lockdown (security_locked_down(LOCKDOWN_PCI_ACCESS) in pci_mmap_resource): BAR access from userspace is blocked; boot without lockdown (Secure Boot with lockdown=integrity/confidentiality blocks it)".to_string(),
        libc::EINVAL => {
            let strict = match sys.strict_devmem() {
                Some(true) => "this kernel has CONFIG_IO_STRICT_DEVMEM=y".to_string(),
                Some(false) => "this kernel's config does not list CONFIG_IO_STRICT_DEVMEM=y".to_string(),
                None => format!("{} not readable: CONFIG_IO_STRICT_DEVMEM unknown", sys.boot.display()),
            };
            let relaxed = match sys.iomem_relaxed() {
                Some(true) => "iomem=relaxed is already on the command line".to_string(),
                Some(false) => "add iomem=relaxed to the kernel command line to allow it".to_string(),
                None => "add iomem=relaxed to the kernel command line to allow it (cmdline not readable)".to_string(),
            };
            format!("the region is claimed exclusively (iomem_is_exclusive in pci_mmap_resource): with CONFIG_IO_STRICT_DEVMEM a region a driver holds cannot be mapped; {strict}; {relaxed}; or unbind the driver that claims it")
        }
        libc::EACCES => "resourceN is root-only (mode 0600): run as root".to_string(),
        libc::ENODEV => "the mapping does not fit the BAR or the BAR is gone".to_string(),
        _ => e.to_string(),
    };
    Error::Kernel {
        path: path.to_path_buf(),
        errno,
        explanation,
    }
}

impl BarMap {
    /// Maps BAR `bar` of `dev` through its `resourceN`, after checking the
    /// `resource` table (the BAR exists and is a memory BAR).
    pub fn open(dev: &Device, bar: u8, access: Access, sys: &SystemFiles) -> Result<BarMap> {
        let size = check_bar(dev, bar)?;
        let path = dev.dir.join(format!("resource{bar}"));
        BarMap::map(&path, size, access, format!("resource{bar}"), sys)
    }

    /// Maps `len` bytes of a file standing in for a BAR (the twin's
    /// `resourceN`, the guest bench's ivshmem backend, a test's temp file).
    pub fn open_file(path: &Path, len: u64, access: Access) -> Result<BarMap> {
        let region = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "BAR".to_string());
        let sys = SystemFiles {
            boot: PathBuf::from("/nonexistent"),
            proc_root: PathBuf::from("/nonexistent"),
        };
        BarMap::map(path, len, access, region, &sys)
    }

    fn map(
        path: &Path,
        len: u64,
        access: Access,
        region: String,
        sys: &SystemFiles,
    ) -> Result<BarMap> {
        if len < 4 {
            return Err(Error::OutOfBounds {
                what: format!("{}: mapping", path.display()),
                offset: 0,
                width: 4,
                len,
            });
        }
        let file: File = OpenOptions::new()
            .read(true)
            .write(access == Access::ReadWrite)
            .open(path)
            .map_err(|e| {
                if e.raw_os_error() == Some(libc::EACCES) {
                    explain_mmap_error(path, e, sys)
                } else {
                    Error::io("open", path, e)
                }
            })?;
        let meta = file.metadata().map_err(|e| Error::io("stat", path, e))?;
        // A regular file shorter than the mapping would SIGBUS on access past
        // its end; sysfs resource files report the BAR's size.
        if meta.is_file() && meta.len() < len {
            return Err(Error::OutOfBounds {
                what: format!("{}: file shorter than the BAR", path.display()),
                offset: 0,
                width: len as usize,
                len: meta.len(),
            });
        }
        let n = usize::try_from(len).map_err(|_| Error::OutOfBounds {
            what: format!("{}: mapping", path.display()),
            offset: 0,
            width: 0,
            len,
        })?;
        let opts = {
            let mut o = MmapOptions::new();
            o.len(n);
            o
        };
        let map = match access {
            Access::ReadOnly => opts.map_raw_read_only(&file),
            Access::ReadWrite => opts.map_raw(&file),
        }
        .map_err(|e| explain_mmap_error(path, e, sys))?;
        Ok(BarMap {
            map,
            len,
            writable: access == Access::ReadWrite,
            path: path.to_path_buf(),
            region,
        })
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn writable(&self) -> bool {
        self.writable
    }

    /// Checks a 32-bit access at `offset`: aligned, inside the mapping.
    fn check(&self, offset: u64) -> Result<usize> {
        if offset % 4 != 0 {
            return Err(Error::Misaligned {
                what: self.path.display().to_string(),
                offset,
                width: 4,
            });
        }
        match offset.checked_add(4) {
            Some(end) if end <= self.len => {
                usize::try_from(offset).map_err(|_| Error::OutOfBounds {
                    what: format!("{}", self.path.display()),
                    offset,
                    width: 4,
                    len: self.len,
                })
            }
            _ => Err(Error::OutOfBounds {
                what: format!("{}", self.path.display()),
                offset,
                width: 4,
                len: self.len,
            }),
        }
    }

    /// One 32-bit read.
    pub fn read32(&self, offset: u64) -> Result<u32> {
        let off = self.check(offset)?;
        // SAFETY: `check` proved offset + 4 <= len, the mapped length, and
        // offset % 4 == 0; the mapping starts page-aligned, so the pointer is
        // in bounds and aligned for u32. The mapping lives as long as `self`.
        // The other side (the device, or the twin's model in another thread or
        // process) may change the word at any time: that is MMIO, and why the
        // access is volatile (one aligned 32-bit load, never split or elided).
        let v = unsafe { (self.map.as_ptr().add(off) as *const u32).read_volatile() };
        Ok(u32::from_le(v))
    }

    /// Records the write in the journal, then makes it unless dry-run.
    pub fn write32(
        &mut self,
        journal: &mut Journal,
        device: &Bdf,
        offset: u64,
        value: u32,
    ) -> Result<()> {
        self.check(offset)?;
        if !self.writable && !journal.dry_run {
            return Err(Error::refused(format!(
                "{}: mapped read-only, not writing {value:#010x} at {offset:#x}",
                self.path.display()
            )));
        }
        if journal.mmio_write(device, &self.region, offset, value)? {
            self.raw_write32(offset, value)?;
        }
        Ok(())
    }

    /// The device's own write (the twin's model is the hardware): no journal.
    /// Never use it as a client of a real device.
    pub(crate) fn device_write32(&mut self, offset: u64, value: u32) -> Result<()> {
        self.raw_write32(offset, value)
    }

    fn raw_write32(&mut self, offset: u64, value: u32) -> Result<()> {
        let off = self.check(offset)?;
        if !self.writable {
            return Err(Error::refused(format!(
                "{}: mapped read-only",
                self.path.display()
            )));
        }
        // SAFETY: `check` proved offset + 4 <= len and 4-byte alignment on a
        // page-aligned mapping; the mapping is shared and writable (mapped
        // with PROT_WRITE from a file opened read-write, `writable` above) and
        // lives as long as `self`. One aligned volatile 32-bit store, as the
        // device expects.
        unsafe { (self.map.as_mut_ptr().add(off) as *mut u32).write_volatile(value.to_le()) };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, SeekFrom};

    fn bar_file(len: u64) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("resource5");
        File::create(&p).unwrap().set_len(len).unwrap();
        (dir, p)
    }

    #[test]
    fn reads_and_writes_land_in_the_file_little_endian() {
        let (_d, p) = bar_file(0x1000);
        let mut m = BarMap::open_file(&p, 0x1000, Access::ReadWrite).unwrap();
        let mut j = Journal::new(false);
        m.write32(&mut j, &Bdf::new(0, 0xc5, 0, 0), 0x10, 0x1122_3344)
            .unwrap();
        assert_eq!(m.read32(0x10).unwrap(), 0x1122_3344);
        let mut f = File::open(&p).unwrap();
        f.seek(SeekFrom::Start(0x10)).unwrap();
        let mut b = [0u8; 4];
        f.read_exact(&mut b).unwrap();
        assert_eq!(b, [0x44, 0x33, 0x22, 0x11]);
        assert_eq!(j.writes().count(), 1);
        assert_eq!(
            j.records[0].to_string(),
            "mmio 0000:c5:00.0 resource5+0x10 <- 0x11223344"
        );
    }

    #[test]
    fn dry_run_records_and_leaves_the_bar_alone() {
        let (_d, p) = bar_file(0x1000);
        let mut m = BarMap::open_file(&p, 0x1000, Access::ReadOnly).unwrap();
        let mut j = Journal::new(true);
        m.write32(&mut j, &Bdf::new(0, 0xc5, 0, 0), 0x20, 7)
            .unwrap();
        assert_eq!(m.read32(0x20).unwrap(), 0);
        assert_eq!(j.writes().count(), 1);
        assert!(std::fs::read(&p).unwrap().iter().all(|b| *b == 0));
    }

    #[test]
    fn out_of_bounds_and_misaligned_accesses_are_errors_not_writes() {
        let (_d, p) = bar_file(0x1000);
        let mut m = BarMap::open_file(&p, 0x1000, Access::ReadWrite).unwrap();
        let mut j = Journal::new(false);
        assert!(matches!(m.read32(0x1000), Err(Error::OutOfBounds { .. })));
        assert!(matches!(
            m.read32(0xffd),
            Err(Error::Misaligned {
                offset: 0xffd,
                width: 4,
                ..
            })
        ));
        assert!(matches!(
            m.read32(u64::MAX - 3),
            Err(Error::OutOfBounds { .. })
        ));
        assert!(matches!(
            m.write32(&mut j, &Bdf::new(0, 0xc5, 0, 0), 0x1000, 1),
            Err(Error::OutOfBounds { offset: 0x1000, .. })
        ));
        assert!(matches!(
            m.write32(&mut j, &Bdf::new(0, 0xc5, 0, 0), 2, 1),
            Err(Error::Misaligned { offset: 2, .. })
        ));
        assert_eq!(j.records.len(), 0, "a refused write is not recorded");
        assert_eq!(m.read32(0xffc).unwrap(), 0);
    }

    #[test]
    fn read_only_mapping_refuses_real_writes() {
        let (_d, p) = bar_file(0x1000);
        let mut m = BarMap::open_file(&p, 0x1000, Access::ReadOnly).unwrap();
        let mut j = Journal::new(false);
        assert!(matches!(
            m.write32(&mut j, &Bdf::new(0, 0xc5, 0, 0), 0, 1),
            Err(Error::Refused { .. })
        ));
        assert!(matches!(m.device_write32(0, 1), Err(Error::Refused { .. })));
    }

    #[test]
    fn a_file_shorter_than_the_bar_is_refused() {
        let (_d, p) = bar_file(0x100);
        let e = BarMap::open_file(&p, 0x1000, Access::ReadOnly).unwrap_err();
        assert!(e.to_string().contains("shorter"), "{e}");
    }

    #[test]
    fn einval_names_strict_devmem_and_iomem_relaxed() {
        let dir = tempfile::tempdir().unwrap();
        let sys = SystemFiles {
            boot: dir.path().join("boot"),
            proc_root: dir.path().join("proc"),
        };
        std::fs::create_dir_all(sys.proc_root.join("sys/kernel")).unwrap();
        std::fs::create_dir_all(&sys.boot).unwrap();
        std::fs::write(sys.proc_root.join("sys/kernel/osrelease"), "6.8.12-pve\n").unwrap();
        std::fs::write(
            sys.boot.join("config-6.8.12-pve"),
            "CONFIG_X=y\nCONFIG_IO_STRICT_DEVMEM=y\n",
        )
        .unwrap();
        std::fs::write(sys.proc_root.join("cmdline"), "quiet amd_iommu=on\n").unwrap();
        let e = explain_mmap_error(
            Path::new("/sys/x/resource5"),
            std::io::Error::from_raw_os_error(libc::EINVAL),
            &sys,
        )
        .to_string();
        assert!(
            e.contains("CONFIG_IO_STRICT_DEVMEM=y") && e.contains("add iomem=relaxed"),
            "{e}"
        );
        let e = explain_mmap_error(
            Path::new("/sys/x/resource5"),
            std::io::Error::from_raw_os_error(libc::EPERM),
            &sys,
        )
        .to_string();
        assert!(e.contains("lockdown"), "{e}");
    }
}
