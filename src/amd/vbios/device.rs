//! A PCI device's ROM through its sysfs `rom` attribute, and whether the device an image
//! names is present.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::machine::Machine;
use crate::pci::journal::Journal;
use crate::pci::session::{self, Session, SessionOptions};
use crate::pci::{Bdf, Topology};

/// Whether the device an image names exists under `<sysfs>/bus/pci/devices/`, and its ids.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct DevicePresence {
    pub path: PathBuf,
    pub exists: bool,
    pub vendor_id: Option<u16>,
    pub device_id: Option<u16>,
    /// The device's ids equal the image header's (None when unreadable).
    pub ids_match: Option<bool>,
}

/// A 16-bit id attribute of `dir`; None when absent or unreadable.
fn id_attr(dir: &Path, name: &str) -> Option<u16> {
    crate::pci::sysfs::opt_hex_attr(dir, name, 0xffff)
        .ok()
        .flatten()
        .map(|v| v as u16)
}

/// Look up `bdf` under `<sysfs>/bus/pci/devices/` (reads only `vendor` and `device`, which never
/// touch the hardware).
pub fn device_presence(sysfs: &Path, bdf: &Bdf, vendor: u16, device: u16) -> DevicePresence {
    let path = sysfs.join("bus/pci/devices").join(bdf.to_string());
    let exists = path.exists();
    let (v, d) = if exists {
        (id_attr(&path, "vendor"), id_attr(&path, "device"))
    } else {
        (None, None)
    };
    DevicePresence {
        ids_match: match (v, d) {
            (Some(v), Some(d)) => Some(v == vendor && d == device),
            _ => None,
        },
        path,
        exists,
        vendor_id: v,
        device_id: d,
    }
}

/// The `rom` attribute of a device: enable with a write, read, disable with a write.
pub trait RomAttr {
    fn path(&self) -> &Path;
    fn write(&mut self, value: &[u8]) -> Result<()>;
    fn read(&mut self) -> Result<Vec<u8>>;
}

/// `<sysfs>/bus/pci/devices/<bdf>/rom`.
pub struct SysfsRomAttr {
    path: PathBuf,
}

impl SysfsRomAttr {
    pub fn new(sysfs: &Path, bdf: &Bdf) -> Self {
        SysfsRomAttr {
            path: sysfs
                .join("bus/pci/devices")
                .join(bdf.to_string())
                .join("rom"),
        }
    }
}

impl RomAttr for SysfsRomAttr {
    fn path(&self) -> &Path {
        &self.path
    }

    fn write(&mut self, value: &[u8]) -> Result<()> {
        // One write(2) at offset 0, no O_TRUNC/O_CREAT: what `echo 1 > rom` does to a sysfs file.
        let mut f = fs::OpenOptions::new()
            .write(true)
            .open(&self.path)
            .map_err(|e| Error::io("open", &self.path, e))?;
        f.write_all(value)
            .map_err(|e| Error::io("write", &self.path, e))
    }

    fn read(&mut self) -> Result<Vec<u8>> {
        let mut v = Vec::new();
        fs::File::open(&self.path)
            .and_then(|mut f| f.read_to_end(&mut v))
            .map_err(|e| Error::io("read", &self.path, e))?;
        Ok(v)
    }
}

/// One write to a sysfs attribute, made or (dry run) planned.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct AttrWrite {
    pub path: PathBuf,
    pub value: String,
    /// The write was made and succeeded.
    pub done: bool,
    pub error: Option<String>,
}

/// What [`read_device_rom`] did.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct DeviceRom {
    pub path: PathBuf,
    pub dry_run: bool,
    pub writes: Vec<AttrWrite>,
    /// The ROM bytes (None in a dry run).
    #[serde(skip)]
    pub bytes: Option<Vec<u8>>,
    pub bytes_read: usize,
}

/// Every write this module makes to sysfs goes through here, recorded before it is made (the
/// engine's write journal can take this over); in a dry run it is only recorded.
pub fn rom_attr_write(
    attr: &mut dyn RomAttr,
    value: &[u8],
    journal: &mut crate::journal::Journal,
    log: &mut Vec<AttrWrite>,
) -> Result<()> {
    let text = String::from_utf8_lossy(value).into_owned();
    log.push(AttrWrite {
        path: attr.path().to_path_buf(),
        value: text.clone(),
        done: false,
        error: None,
    });
    // The engine's journal records the write before it is made (and says
    // whether to make it: not in a dry run).
    if !journal.sysfs_announce(None, attr.path(), &text)? {
        return Ok(());
    }
    let r = attr.write(value);
    if let Some(w) = log.last_mut() {
        match &r {
            Ok(()) => w.done = true,
            Err(e) => w.error = Some(e.one_line()),
        }
    }
    r
}

/// Value that enables the ROM read (`pci_write_rom`: anything but "0\n" enables).
pub const ROM_ENABLE: &[u8] = b"1";
/// Value that disables it again: exactly "0\n" (count 2) in `pci_write_rom`
/// (`drivers/pci/pci-sysfs.c`); a bare "0" would *enable*. A posted kstrtobool rework (merge
/// unconfirmed) accepts "0\n" too.
pub const ROM_DISABLE: &[u8] = b"0\n";

/// Enable, read and always disable a device's ROM. In a dry run the two writes are recorded and
/// nothing is read.
pub fn read_device_rom(attr: &mut dyn RomAttr, dry_run: bool) -> Result<DeviceRom> {
    read_device_rom_journalled(attr, &mut crate::journal::Journal::new(dry_run))
}

/// [`read_device_rom`] with the writes recorded in `journal` (its dry-run flag decides).
pub fn read_device_rom_journalled(
    attr: &mut dyn RomAttr,
    journal: &mut crate::journal::Journal,
) -> Result<DeviceRom> {
    let dry_run = journal.dry_run;
    let mut writes = Vec::new();
    let enabled = rom_attr_write(attr, ROM_ENABLE, journal, &mut writes);
    let read = match (&enabled, dry_run) {
        (Ok(()), false) => Some(attr.read()),
        _ => None,
    };
    // Always disable, whatever happened above.
    let disabled = rom_attr_write(attr, ROM_DISABLE, journal, &mut writes);
    enabled?;
    let bytes = read.transpose()?;
    disabled?;
    Ok(DeviceRom {
        path: attr.path().to_path_buf(),
        dry_run,
        writes,
        bytes_read: bytes.as_ref().map_or(0, Vec::len),
        bytes,
    })
}

/// How [`read_rom`] reads a device's ROM.
#[derive(Debug, Clone)]
pub struct RomRead {
    /// Override the session's guards (VFIO group open, host driver bound).
    pub force: bool,
    /// Bound of waiting for another resetlab holding the device's lock.
    pub lock_timeout: std::time::Duration,
}

/// Reads `bdf`'s ROM through its sysfs `rom` attribute inside a device
/// session (root unless the journal only records, the guards, the device's
/// lock, awake): the enable and disable writes go through `journal` (in a dry
/// run they are recorded and nothing is read).
pub fn read_rom(
    host: &Machine,
    bdf: &Bdf,
    opts: &RomRead,
    journal: &mut Journal,
) -> Result<DeviceRom> {
    let mut attr = SysfsRomAttr::new(&host.sysfs, bdf);
    if !attr.path().exists() {
        return Err(Error::not_found(
            "PCI ROM attribute",
            attr.path().display().to_string(),
        ));
    }
    let writes = format!("reading {} writes '1' and '0' to it", attr.path().display());
    // Before the tree is scanned: the answer is the same and it is cheap.
    session::require_root(journal.dry_run, &writes)?;
    let mut topo = Topology::scan(host)?;
    let sopts = SessionOptions {
        dry_run: journal.dry_run,
        force: opts.force,
        lock_timeout: opts.lock_timeout,
        ..SessionOptions::new(writes)
    };
    journal.method = "vbios --from-rom".into();
    let mut s = Session::open(host, &mut topo, bdf, &[], &sopts, journal)?;
    let r = read_device_rom_journalled(&mut attr, s.journal());
    let closed = s.close();
    let rom = r?;
    closed?;
    Ok(rom)
}
