//! Config-space access as a trait with interchangeable backends (after
//! pciutils' `struct pci_methods`): the sysfs `config` file, and an in-memory
//! space with writable-bit masks for tests and snapshots.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::pci::regs::*;

/// Byte-addressed access to one function's config space.
pub trait ConfigAccess {
    /// Size of the space in bytes (256, or 4096 for PCIe extended config).
    fn len(&self) -> usize;
    /// A label for errors (the path or the device).
    fn label(&self) -> String;
    /// Reads `buf.len()` bytes at `offset`; the access must lie inside the space.
    fn read(&self, offset: u16, buf: &mut [u8]) -> Result<()>;
    /// Writes `data` at `offset` as one access of that width.
    fn write(&mut self, offset: u16, data: &[u8]) -> Result<()>;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn check(&self, offset: u16, width: usize) -> Result<()> {
        if offset as usize + width > self.len() {
            return Err(Error::OutOfBounds {
                what: format!("{} config", self.label()),
                offset: offset as u64,
                width,
                len: self.len() as u64,
            });
        }
        Ok(())
    }

    fn read8(&self, offset: u16) -> Result<u8> {
        let mut b = [0u8; 1];
        self.read(offset, &mut b)?;
        Ok(b[0])
    }

    fn read16(&self, offset: u16) -> Result<u16> {
        let mut b = [0u8; 2];
        self.read(offset, &mut b)?;
        Ok(u16::from_le_bytes(b))
    }

    fn read32(&self, offset: u16) -> Result<u32> {
        let mut b = [0u8; 4];
        self.read(offset, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn write8(&mut self, offset: u16, v: u8) -> Result<()> {
        self.write(offset, &[v])
    }

    fn write16(&mut self, offset: u16, v: u16) -> Result<()> {
        self.write(offset, &v.to_le_bytes())
    }

    fn write32(&mut self, offset: u16, v: u32) -> Result<()> {
        self.write(offset, &v.to_le_bytes())
    }

    /// Reads the whole space once. Fails if it reads back all-ones in the
    /// Vendor ID (device absent or powered off), so such bytes are never used
    /// as data.
    fn read_all(&self) -> Result<Vec<u8>> {
        let mut v = vec![0u8; self.len()];
        self.read(0, &mut v)?;
        if v.len() >= 2 && v[0] == 0xff && v[1] == 0xff {
            return Err(Error::AllOnes {
                bdf: None,
                path: self.label().into(),
                offset: PCI_VENDOR_ID,
            });
        }
        Ok(v)
    }
}

/// What runs after a config write that a [`WriteHook`] began.
pub type WriteFinish = Box<dyn FnOnce() -> Result<()>>;

/// Called before every write to a `config` file with its path and open file; what it returns
/// runs after the write. None is installed for a real machine. The twin installs its model's
/// handshake (`sim::model::ConfigWrite`: the model takes a write before it returns, as hardware
/// does) when it starts, so that this layer needs nothing from the twin.
pub type WriteHook = fn(&Path, &File) -> Result<Option<WriteFinish>>;

static WRITE_HOOK: std::sync::OnceLock<WriteHook> = std::sync::OnceLock::new();

/// Installs the config write hook for the process (the first one installed stays).
pub fn set_write_hook(hook: WriteHook) {
    let _ = WRITE_HOOK.set(hook);
}

/// The sysfs `config` attribute of a device: pread/pwrite at offsets.
///
/// The kernel serves non-root readers only the first 64 bytes (128 for
/// CardBus) of `config` (`pci_read_config` in `drivers/pci/pci-sysfs.c`);
/// a short read is reported as [`Error::ConfigTruncated`], never zero-filled.
#[derive(Debug)]
pub struct SysfsConfig {
    path: PathBuf,
    file: File,
    writable: bool,
    len: usize,
}

impl SysfsConfig {
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_mode(path, false)
    }

    /// Opens read-write. Only the reset engine does this, through its journal.
    pub fn open_rw(path: &Path) -> Result<Self> {
        Self::open_mode(path, true)
    }

    fn open_mode(path: &Path, writable: bool) -> Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        // Never block on (or read forever from) a FIFO or device planted as `config`.
        let file = OpenOptions::new()
            .read(true)
            .write(writable)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY)
            .open(path)
            .map_err(|e| Error::io("open", path, e))?;
        let meta = file.metadata().map_err(|e| Error::io("stat", path, e))?;
        if !meta.file_type().is_file() {
            return Err(Error::parse(
                "config space",
                path.display().to_string(),
                "not a regular file; not reading it",
            ));
        }
        // sysfs reports the device's cfg_size (256 or 4096) as the file size.
        let len = (meta.len() as usize).min(PCI_CFG_SPACE_EXP_SIZE);
        Ok(SysfsConfig {
            path: path.to_path_buf(),
            file,
            writable,
            len,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl ConfigAccess for SysfsConfig {
    fn len(&self) -> usize {
        self.len
    }

    fn label(&self) -> String {
        self.path.display().to_string()
    }

    fn read(&self, offset: u16, buf: &mut [u8]) -> Result<()> {
        self.check(offset, buf.len())?;
        let mut done = 0;
        while done < buf.len() {
            let n = self
                .file
                .read_at(&mut buf[done..], offset as u64 + done as u64)
                .map_err(|e| Error::io("read", &self.path, e))?;
            if n == 0 {
                return Err(Error::ConfigTruncated {
                    path: self.path.clone(),
                    got: offset as usize + done,
                    wanted: offset as usize + buf.len(),
                });
            }
            done += n;
        }
        Ok(())
    }

    fn write(&mut self, offset: u16, data: &[u8]) -> Result<()> {
        self.check(offset, data.len())?;
        if !self.writable {
            return Err(Error::refused(format!(
                "{} was opened read-only",
                self.path.display()
            )));
        }
        // A twin's model takes the write before it returns, as hardware does.
        let twin = match WRITE_HOOK.get() {
            Some(begin) => begin(&self.path, &self.file)?,
            None => None,
        };
        // One pwrite of the exact width: the kernel turns an aligned 1/2/4-byte
        // write into one config cycle of that size (`pci_write_config`).
        let n = self
            .file
            .write_at(data, offset as u64)
            .map_err(|e| Error::io("write", &self.path, e))?;
        if let Some(finish) = twin {
            finish()?;
        }
        if n != data.len() {
            return Err(Error::failed(format!(
                "{}: short config write at {offset:#x}: {n} of {} bytes",
                self.path.display(),
                data.len()
            )));
        }
        Ok(())
    }
}

/// An in-memory config space. `writable` holds, per byte, the bits a write may
/// change (as hardware has read-only bits); `w1c` the bits cleared by writing 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemConfig {
    pub label: String,
    pub data: Vec<u8>,
    pub writable: Vec<u8>,
    pub w1c: Vec<u8>,
}

impl MemConfig {
    /// A read-only image of bytes (a snapshot): writes change nothing.
    pub fn image(label: impl Into<String>, data: Vec<u8>) -> Self {
        let n = data.len();
        MemConfig {
            label: label.into(),
            data,
            writable: vec![0; n],
            w1c: vec![0; n],
        }
    }

    /// Every bit writable.
    pub fn open(label: impl Into<String>, data: Vec<u8>) -> Self {
        let n = data.len();
        MemConfig {
            label: label.into(),
            data,
            writable: vec![0xff; n],
            w1c: vec![0; n],
        }
    }

    pub fn set_mask(&mut self, offset: u16, writable: &[u8]) {
        for (i, m) in writable.iter().enumerate() {
            if let Some(slot) = self.writable.get_mut(offset as usize + i) {
                *slot = *m;
            }
        }
    }

    pub fn set_w1c(&mut self, offset: u16, mask: &[u8]) {
        for (i, m) in mask.iter().enumerate() {
            if let Some(slot) = self.w1c.get_mut(offset as usize + i) {
                *slot = *m;
            }
        }
    }
}

impl ConfigAccess for MemConfig {
    fn len(&self) -> usize {
        self.data.len()
    }

    fn label(&self) -> String {
        self.label.clone()
    }

    fn read(&self, offset: u16, buf: &mut [u8]) -> Result<()> {
        self.check(offset, buf.len())?;
        let start = offset as usize;
        buf.copy_from_slice(&self.data[start..start + buf.len()]);
        Ok(())
    }

    fn write(&mut self, offset: u16, data: &[u8]) -> Result<()> {
        self.check(offset, data.len())?;
        for (i, v) in data.iter().enumerate() {
            let at = offset as usize + i;
            let (m, c) = (self.writable[at], self.w1c[at]);
            let old = self.data[at];
            self.data[at] = ((old & !m) | (v & m)) & !(v & c);
        }
        Ok(())
    }
}

/// Reads `width` (1, 2, 4) bytes as a value.
pub fn read_width(cfg: &dyn ConfigAccess, offset: u16, width: usize) -> Result<u32> {
    match width {
        1 => cfg.read8(offset).map(u32::from),
        2 => cfg.read16(offset).map(u32::from),
        4 => cfg.read32(offset),
        _ => Err(Error::parse(
            "access width",
            width.to_string(),
            "must be 1, 2 or 4",
        )),
    }
}

/// Writes `width` (1, 2, 4) bytes of `value`.
pub fn write_width(
    cfg: &mut dyn ConfigAccess,
    offset: u16,
    width: usize,
    value: u32,
) -> Result<()> {
    match width {
        1 => cfg.write8(offset, value as u8),
        2 => cfg.write16(offset, value as u16),
        4 => cfg.write32(offset, value),
        _ => Err(Error::parse(
            "access width",
            width.to_string(),
            "must be 1, 2 or 4",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_config_honours_masks() {
        let mut c = MemConfig::image("t", vec![0u8; 256]);
        c.write16(PCI_COMMAND, 0xffff).unwrap();
        assert_eq!(
            c.read16(PCI_COMMAND).unwrap(),
            0,
            "read-only bits must not change"
        );
        c.set_mask(PCI_COMMAND, &[0x07, 0x04]);
        c.write16(PCI_COMMAND, 0xffff).unwrap();
        assert_eq!(c.read16(PCI_COMMAND).unwrap(), 0x0407);
        c.data[PCI_STATUS as usize + 1] = 0x80;
        c.set_w1c(PCI_STATUS, &[0, 0x80]);
        c.write16(PCI_STATUS, 0x8000).unwrap();
        assert_eq!(c.read16(PCI_STATUS).unwrap(), 0);
    }

    #[test]
    fn out_of_bounds_is_an_error() {
        let c = MemConfig::image("t", vec![0u8; 256]);
        assert!(matches!(
            c.read32(254),
            Err(Error::OutOfBounds {
                offset: 254,
                width: 4,
                len: 256,
                ..
            })
        ));
        assert_eq!(c.read8(255).unwrap(), 0);
    }

    #[test]
    fn all_ones_is_not_data() {
        let c = MemConfig::image("0000:01:00.0", vec![0xff; 256]);
        let e = c.read_all().unwrap_err();
        assert!(
            matches!(&e, Error::AllOnes { bdf: None, path, offset: PCI_VENDOR_ID }
                if path.as_os_str() == "0000:01:00.0"),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "0000:01:00.0: config space reads all-ones at 0x000 (device absent, in D3cold or not responding)"
        );
    }

    #[test]
    fn sysfs_short_read_is_truncation() {
        // A non-root read of sysfs `config`: the file says 256 bytes (cfg_size),
        // the kernel gives 64. Here: stat at open says 256, then the file
        // shrinks to 64, so the read past 64 comes back empty, as the kernel's.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config");
        std::fs::write(&p, vec![0x11u8; 256]).unwrap();
        let c = SysfsConfig::open(&p).unwrap();
        assert_eq!(c.len(), 256);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .set_len(64)
            .unwrap();
        assert_eq!(c.read32(60).unwrap(), 0x1111_1111);
        match c.read32(64) {
            Err(Error::ConfigTruncated { got, wanted, .. }) => {
                assert_eq!((got, wanted), (64, 68));
            }
            other => panic!("a read past the 64 bytes served: {other:?}"),
        }
        let e = c.read32(64).unwrap_err().to_string();
        assert!(e.contains("read 64 of 68 bytes"), "{e}");
        assert!(e.contains("needs root"), "{e}");
    }
}
