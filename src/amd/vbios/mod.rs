//! VBIOS images: the ACPI VFCT table, PCI option ROMs and the ATOM BIOS strings in them.
//!
//! Where each layout fact comes from (Linux paths unless another project is named):
//!
//! - ACPI table header (36 bytes: Signature, Length, Revision, Checksum, OEMID, OEM Table ID,
//!   OEM Revision, Creator ID, Creator Revision) and its rule that all `Length` bytes sum to 0
//!   mod 256: ACPI spec §5.2.6 "System Description Table Header"; ACPICA checks it in
//!   `acpi_ut_verify_checksum` (`drivers/acpi/acpica/utcksum.c`).
//! - VFCT: `drivers/gpu/drm/amd/include/atombios.h` `UEFI_ACPI_VFCT` (header + TableUUID[16] at
//!   0x24, VBIOSImageOffset at 0x34, Lib1ImageOffset at 0x38, Reserved[4] at 0x3C: 0x4C bytes),
//!   `VFCT_IMAGE_HEADER` (PCIBus, PCIDevice, PCIFunction: u32; VendorID, DeviceID, SSVID, SSID:
//!   u16; Revision, ImageLength: u32: 0x1C bytes) and `GOP_VBIOS_CONTENT` (header, then the
//!   image). ULONG/USHORT are u32/u16 (`atom-types.h`). The seed's `vbios.c` copies the same.
//! - The walk: `amdgpu_bios.c` `amdgpu_acpi_vfct_bios`: start at VBIOSImageOffset; while the
//!   offset is below the table length: the 0x1C-byte header must fit ("image header
//!   truncated"), the image must fit ("image truncated"), images with ImageLength 0 are skipped,
//!   the next header follows at offset + 0x1C + ImageLength. The image amdgpu takes must also
//!   pass `check_atom_bios`.
//! - Option ROM images: `drivers/pci/rom.c` `pci_get_rom_size`: 0x55 0xAA, the PCI data
//!   structure pointer at 0x18, "PCIR", ImageLength at PCIR+0x10 in 512-byte units, the
//!   last-image bit 0x80 at PCIR+0x15, the next image right after. The remaining PCIR fields
//!   and the EFI image header: edk2 `MdePkg/Include/IndustryStandard/Pci22.h` /
//!   `Pci30.h` (`PCI_DATA_STRUCTURE`, `PCI_3_0_DATA_STRUCTURE`, `EFI_PCI_EXPANSION_ROM_HEADER`,
//!   `PCI_CODE_TYPE_PCAT_IMAGE` 0, `PCI_CODE_TYPE_EFI_IMAGE` 3, EfiSignature 0x0EF1).
//! - Legacy (code type 0) checksum: all InitializationSize × 512 bytes (the size byte at 0x02)
//!   sum to 0 mod 256 — the PC option-ROM rule, as SeaBIOS checks it (`src/optionroms.c`
//!   `is_valid_rom`: `checksum(rom, rom->size * 512)`). amdgpu never checks it; EFI images are
//!   not checksummed here (edk2's loader does not, as we read it). That ATOM BIOSes keep
//!   the balancing byte at 0x21 comes from third-party ATOM BIOS tools (unconfirmed in Linux);
//!   the seed's two 8845HS ROMs differ at 0x21 as it predicts.
//! - ATOM: `amdgpu_bios.c` `check_atom_bios` (size ≥ 0x49, 0x55 0xAA, a non-zero u16 at 0x48
//!   pointing at the ATOM ROM header, "ATOM" or "MOTA" 4 bytes into it) and
//!   `AMD_VBIOS_SIGNATURE` " 761295520" at 0x30 (checked by `amdgpu_read_bios_from_rom`);
//!   `atombios.h` `ATOM_ROM_HEADER`; `atomfirmware.h` `enum atombios_image_offset`
//!   (string count at 0x2F, string start pointer at 0x6E, part number at 0x80, date at 0x50);
//!   `atom.c` `atom_get_vbios_pn`, `atom_get_vbios_date`, `atom_get_vbios_version`
//!   ("ATOMBIOSBK-AMD VER" anchor), `atom_get_vbios_build` (the string after the config-file
//!   and change-list strings).
//!
//! Nothing here panics on any input: every read is a bounds-checked `get`.

use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};

mod atom;
mod compare;
mod device;
mod rom;
mod vfct;

pub use atom::AtomInfo;
pub use compare::{compare_roms, DiffRange, RomDiff};
pub use device::{
    device_presence, read_device_rom, read_device_rom_journalled, read_rom, rom_attr_write,
    AttrWrite, DevicePresence, DeviceRom, RomAttr, RomRead, SysfsRomAttr, ROM_DISABLE, ROM_ENABLE,
};
pub use rom::{check_rom, inspect_rom, Checksum, EfiImage, RomImage, RomInfo, RomString};
pub use vfct::{
    dump_vfct, parse_vfct, parse_vfct_with, rom_file_name, AcpiHeader, DumpReport, DumpedImage,
    Vfct, VfctImage, VfctOptions,
};

/// Length of the ACPI table header.
pub const ACPI_HEADER_LEN: usize = 36;
/// `sizeof(UEFI_ACPI_VFCT)`: ACPI header, TableUUID, VBIOSImageOffset, Lib1ImageOffset, Reserved[4].
pub const VFCT_HEADER_LEN: usize = 0x4C;
/// `sizeof(VFCT_IMAGE_HEADER)`.
pub const VFCT_IMAGE_HEADER_LEN: usize = 0x1C;
/// Option ROM images are sized in units of this many bytes.
pub const ROM_UNIT: usize = 512;
/// `PCI_ROM_HEADER_SIZE` in `drivers/pci/rom.c`: the PCI expansion ROM header.
pub const ROM_HEADER_LEN: usize = 0x1A;
/// The PCIR fields up to and including Reserved1/MaxRuntimeImageLength (PCI 2.2 `PCI_DATA_STRUCTURE`).
pub const PCIR_MIN_LEN: usize = 0x18;
/// `AMD_VBIOS_SIGNATURE` and its offset (`amdgpu_bios.c`).
pub const AMD_VBIOS_SIGNATURE: &[u8] = b" 761295520";
pub const AMD_VBIOS_SIGNATURE_OFFSET: usize = 0x30;
/// Where an ATOM BIOS keeps the byte that balances its checksum (third-party tools; unconfirmed).
pub const ATOM_CHECKSUM_OFFSET: usize = 0x21;
/// `OFFSET_TO_POINTER_TO_ATOM_ROM_HEADER` (`atombios.h`).
pub const ATOM_ROM_HEADER_POINTER: usize = 0x48;
/// Differing bytes closer than this are reported as one range by [`compare_roms`].
pub const DIFF_MERGE_GAP: usize = 4;

// Field offsets inside the structures above.
pub(crate) const ACPI_LENGTH: usize = 4;
pub(crate) const ACPI_CHECKSUM: usize = 9;
pub(crate) const VFCT_UUID: usize = 0x24;
pub(crate) const VFCT_VBIOS_OFFSET: usize = 0x34;
const VFCT_LIB1_OFFSET: usize = 0x38;
pub(crate) const IMG_BUS: usize = 0x00;
pub(crate) const IMG_DEVICE: usize = 0x04;
pub(crate) const IMG_FUNCTION: usize = 0x08;
pub(crate) const IMG_VENDOR_ID: usize = 0x0C;
pub(crate) const IMG_DEVICE_ID: usize = 0x0E;
pub(crate) const IMG_SSVID: usize = 0x10;
pub(crate) const IMG_SSID: usize = 0x12;
pub(crate) const IMG_REVISION: usize = 0x14;
pub(crate) const IMG_LENGTH: usize = 0x18;
pub(crate) const ROM_INIT_SIZE: usize = 0x02;
pub(crate) const ROM_PCIR_POINTER: usize = 0x18;
pub(crate) const EFI_SIGNATURE: usize = 0x04;
pub(crate) const EFI_SUBSYSTEM: usize = 0x08;
pub(crate) const EFI_MACHINE: usize = 0x0A;
const EFI_COMPRESSION: usize = 0x0C;
pub(crate) const EFI_IMAGE_OFFSET: usize = 0x16;
pub(crate) const EFI_SIGNATURE_VALUE: u32 = 0x0EF1;
pub(crate) const PCIR_VENDOR: usize = 0x04;
pub(crate) const PCIR_DEVICE: usize = 0x06;
const PCIR_DEVICE_LIST: usize = 0x08;
pub(crate) const PCIR_LENGTH: usize = 0x0A;
const PCIR_REVISION: usize = 0x0C;
pub(crate) const PCIR_CLASS: usize = 0x0D;
pub(crate) const PCIR_IMAGE_LENGTH: usize = 0x10;
pub(crate) const PCIR_CODE_REVISION: usize = 0x12;
pub(crate) const PCIR_CODE_TYPE: usize = 0x14;
const PCIR_INDICATOR: usize = 0x15;
pub(crate) const PCIR_LAST_IMAGE: u8 = 0x80;
pub(crate) const ATOM_STRING_COUNT: usize = 0x2F;
pub(crate) const ATOM_STRING_START: usize = 0x6E;
pub(crate) const ATOM_PART_NUMBER: usize = 0x80;
pub(crate) const ATOM_DATE: usize = 0x50;
/// `BIOS_STRING_LENGTH` (atomfirmware.h) and `STRLEN_NORMAL` (atom.h).
const ATOM_PN_MAX: usize = 43;
const ATOM_STR_MAX: usize = 32;
/// `atom_get_vbios_version` searches `[3, 1024)` for its anchor.
const ATOM_SEARCH_END: usize = 1024;
/// How far [`RomInfo::strings`] looks, and how many it keeps.
const STRINGS_WINDOW: usize = 0x400;
const STRINGS_MAX: usize = 64;
const STRINGS_MIN_LEN: usize = 4;

// ---------------------------------------------------------------------------------------------
// Little-endian reads that never panic.

fn u8_at(b: &[u8], off: usize) -> Option<u8> {
    b.get(off).copied()
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    let s = b.get(off..off.checked_add(2)?)?;
    Some(u16::from_le_bytes(s.try_into().ok()?))
}

pub(crate) fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    let s = b.get(off..off.checked_add(4)?)?;
    Some(u32::from_le_bytes(s.try_into().ok()?))
}

pub(crate) fn sum8(b: &[u8]) -> u8 {
    b.iter().fold(0u8, |a, &x| a.wrapping_add(x))
}

/// Bytes as text, printable ASCII kept and everything else as `\xNN`.
fn ascii(b: &[u8]) -> String {
    let mut s = String::new();
    for &c in b {
        if (0x20..0x7f).contains(&c) {
            s.push(c as char);
        } else {
            s.push_str(&format!("\\x{c:02x}"));
        }
    }
    s
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|c| format!("{c:02x}")).collect()
}

// ---------------------------------------------------------------------------------------------
// Problems: one bad field, named with its byte offset.

/// One bad field in a binary structure. Its text is the same as the [`Error::Layout`] it turns into.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Problem {
    /// The structure, e.g. `VFCT image 0 at 0x4c` or `ROM image 1 at 0x4200`.
    pub what: String,
    /// The field, named as the source names it (e.g. `ImageLength`, `PCIR signature`).
    pub field: &'static str,
    /// Byte offset of the field in the bytes that were parsed.
    pub offset: u64,
    pub reason: String,
}

impl Problem {
    fn new(
        what: impl Into<String>,
        field: &'static str,
        offset: usize,
        reason: impl Into<String>,
    ) -> Self {
        Problem {
            what: what.into(),
            field,
            offset: offset as u64,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} at {:#x}: {}",
            self.what, self.field, self.offset, self.reason
        )
    }
}

impl From<Problem> for Error {
    fn from(p: Problem) -> Self {
        Error::Layout {
            what: p.what,
            field: p.field,
            offset: p.offset,
            reason: p.reason,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Files: atomic writes.

/// Write `bytes` to `path` atomically: a temporary file in the same directory, fsync, rename,
/// fsync the directory. A failure leaves no file at `path` that looks complete.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".resetlab-vbios-")
        .tempfile_in(&dir)
        .map_err(|e| Error::io("create a temporary file in", &dir, e))?;
    tmp.write_all(bytes)
        .map_err(|e| Error::io("write", tmp.path().to_path_buf(), e))?;
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(fs::Permissions::from_mode(0o644))
            .map_err(|e| Error::io("chmod", tmp.path().to_path_buf(), e))?;
    }
    tmp.as_file()
        .sync_all()
        .map_err(|e| Error::io("fsync", tmp.path().to_path_buf(), e))?;
    tmp.persist(path)
        .map_err(|e| Error::io("rename a temporary file to", path, e.error))?;
    fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("fsync", &dir, e))?;
    Ok(())
}
