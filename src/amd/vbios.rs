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
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::pci::Bdf;

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
const ACPI_LENGTH: usize = 4;
const ACPI_CHECKSUM: usize = 9;
const VFCT_UUID: usize = 0x24;
const VFCT_VBIOS_OFFSET: usize = 0x34;
const VFCT_LIB1_OFFSET: usize = 0x38;
const IMG_BUS: usize = 0x00;
const IMG_DEVICE: usize = 0x04;
const IMG_FUNCTION: usize = 0x08;
const IMG_VENDOR_ID: usize = 0x0C;
const IMG_DEVICE_ID: usize = 0x0E;
const IMG_SSVID: usize = 0x10;
const IMG_SSID: usize = 0x12;
const IMG_REVISION: usize = 0x14;
const IMG_LENGTH: usize = 0x18;
const ROM_INIT_SIZE: usize = 0x02;
const ROM_PCIR_POINTER: usize = 0x18;
const EFI_SIGNATURE: usize = 0x04;
const EFI_SUBSYSTEM: usize = 0x08;
const EFI_MACHINE: usize = 0x0A;
const EFI_COMPRESSION: usize = 0x0C;
const EFI_IMAGE_OFFSET: usize = 0x16;
const EFI_SIGNATURE_VALUE: u32 = 0x0EF1;
const PCIR_VENDOR: usize = 0x04;
const PCIR_DEVICE: usize = 0x06;
const PCIR_DEVICE_LIST: usize = 0x08;
const PCIR_LENGTH: usize = 0x0A;
const PCIR_REVISION: usize = 0x0C;
const PCIR_CLASS: usize = 0x0D;
const PCIR_IMAGE_LENGTH: usize = 0x10;
const PCIR_CODE_REVISION: usize = 0x12;
const PCIR_CODE_TYPE: usize = 0x14;
const PCIR_INDICATOR: usize = 0x15;
const PCIR_LAST_IMAGE: u8 = 0x80;
const ATOM_STRING_COUNT: usize = 0x2F;
const ATOM_STRING_START: usize = 0x6E;
const ATOM_PART_NUMBER: usize = 0x80;
const ATOM_DATE: usize = 0x50;
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

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    let s = b.get(off..off.checked_add(4)?)?;
    Some(u32::from_le_bytes(s.try_into().ok()?))
}

fn sum8(b: &[u8]) -> u8 {
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
// The ACPI VFCT table.

/// The 36-byte ACPI table header.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct AcpiHeader {
    pub signature: String,
    pub length: u32,
    pub revision: u8,
    pub checksum: u8,
    pub oem_id: String,
    pub oem_table_id: String,
    pub oem_revision: u32,
    pub creator_id: String,
    pub creator_revision: u32,
}

/// How strict [`parse_vfct_with`] is.
#[derive(Debug, Clone, Copy, Default)]
pub struct VfctOptions {
    /// Accept a table whose bytes do not sum to 0 (the kernel only warns about it); a note says so.
    pub ignore_checksum: bool,
    /// `dump`: replace files that exist (without it, a dump refuses before writing anything:
    /// a working ROM in /usr/share/kvm must not be lost to a mistyped --out).
    pub overwrite: bool,
}

/// A parsed VFCT table. Structural faults (the walk cannot go on) are errors of
/// [`parse_vfct`]; faults of one image are in that image's `problems`.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Vfct {
    pub header: AcpiHeader,
    /// TableUUID as 32 hex digits, in table byte order.
    pub table_uuid: String,
    pub vbios_image_offset: u32,
    /// GOP_LIB1_CONTENT offset; amdgpu does not use it and neither do we.
    pub lib1_image_offset: u32,
    pub checksum_ok: bool,
    pub images: Vec<VfctImage>,
    /// Things worth knowing that are not faults (padding, skipped empty headers, extra bytes).
    pub notes: Vec<String>,
}

/// One `GOP_VBIOS_CONTENT` entry.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct VfctImage {
    pub index: usize,
    /// Table offset of the `VFCT_IMAGE_HEADER`.
    pub header_offset: usize,
    /// Table offset of the first ROM byte.
    pub content_offset: usize,
    pub pci_bus: u32,
    pub pci_device: u32,
    pub pci_function: u32,
    pub vendor_id: u16,
    pub device_id: u16,
    pub ssvid: u16,
    pub ssid: u16,
    pub revision: u32,
    pub image_length: u32,
    /// The ROM inside, when ImageLength is not 0. Offsets in it are ROM offsets.
    pub rom: Option<RomInfo>,
    /// Faults of this entry beyond the ROM's own (ids, PCIR mismatch, amdgpu's ATOM check).
    pub problems: Vec<Problem>,
    /// The ROM bytes.
    #[serde(skip)]
    pub content: Vec<u8>,
}

impl VfctImage {
    /// Usable: the entry and its ROM have no problem.
    pub fn is_valid(&self) -> bool {
        self.problems.is_empty() && self.rom.as_ref().is_some_and(|r| r.problems.is_empty())
    }

    /// Every problem of the entry, the ROM's last.
    pub fn all_problems(&self) -> Vec<&Problem> {
        let mut v: Vec<&Problem> = self.problems.iter().collect();
        if let Some(r) = &self.rom {
            v.extend(r.problems.iter());
        }
        v
    }

    /// The PCI address named by the header. VFCT carries no segment; amdgpu compares only the bus
    /// number, so segment 0000 is assumed.
    pub fn bdf(&self) -> String {
        format!(
            "0000:{:02x}:{:02x}.{:x}",
            self.pci_bus, self.pci_device, self.pci_function
        )
    }

    /// [`VfctImage::bdf`] as an address; None when a field is out of range (a problem of the
    /// image, see [`VfctImage::all_problems`]).
    pub fn address(&self) -> Option<Bdf> {
        let (Ok(bus), Ok(dev), Ok(func)) = (
            u8::try_from(self.pci_bus),
            u8::try_from(self.pci_device),
            u8::try_from(self.pci_function),
        ) else {
            return None;
        };
        (dev <= 0x1f && func <= 7).then_some(Bdf::new(0, bus, dev, func))
    }

    /// `vbios_<vendor>_<device>.bin`, lowercase hex, as the seed's `vbios.c` names them.
    pub fn file_name(&self) -> String {
        rom_file_name(self.vendor_id, self.device_id)
    }
}

/// `vbios_<vendor>_<device>.bin` with four lowercase hex digits each.
pub fn rom_file_name(vendor: u16, device: u16) -> String {
    format!("vbios_{vendor:04x}_{device:04x}.bin")
}

/// Parse a VFCT table strictly (a bad checksum is an error).
pub fn parse_vfct(bytes: &[u8]) -> Result<Vfct> {
    parse_vfct_with(bytes, VfctOptions::default())
}

/// Parse a VFCT table: check the ACPI header, then walk the images as `amdgpu_acpi_vfct_bios`
/// does, then check each image's ROM.
pub fn parse_vfct_with(bytes: &[u8], opts: VfctOptions) -> Result<Vfct> {
    const T: &str = "VFCT table";
    let mut notes = Vec::new();
    if bytes.len() < ACPI_HEADER_LEN {
        return Err(Problem::new(
            T,
            "ACPI header",
            0,
            format!(
                "only {} bytes, the ACPI table header needs {ACPI_HEADER_LEN}",
                bytes.len()
            ),
        )
        .into());
    }
    let hb = bytes.get(..ACPI_HEADER_LEN).unwrap_or_default();
    let sig = hb.get(0..4).unwrap_or_default();
    if sig != b"VFCT" {
        return Err(Problem::new(
            T,
            "Signature",
            0,
            format!("'{}', expected 'VFCT'", ascii(sig)),
        )
        .into());
    }
    let length = u32_at(hb, ACPI_LENGTH).unwrap_or(0);
    let header = AcpiHeader {
        signature: ascii(sig),
        length,
        revision: u8_at(hb, 8).unwrap_or(0),
        checksum: u8_at(hb, ACPI_CHECKSUM).unwrap_or(0),
        oem_id: ascii(hb.get(10..16).unwrap_or_default()),
        oem_table_id: ascii(hb.get(16..24).unwrap_or_default()),
        oem_revision: u32_at(hb, 24).unwrap_or(0),
        creator_id: ascii(hb.get(28..32).unwrap_or_default()),
        creator_revision: u32_at(hb, 32).unwrap_or(0),
    };
    let len = length as usize;
    if len < VFCT_HEADER_LEN {
        return Err(Problem::new(
            T,
            "Length",
            ACPI_LENGTH,
            format!(
                "{length:#x} is shorter than the {VFCT_HEADER_LEN:#x}-byte VFCT header \
                 (amdgpu: \"too short #1\")"
            ),
        )
        .into());
    }
    if bytes.len() < len {
        return Err(Problem::new(
            T,
            "Length",
            ACPI_LENGTH,
            format!(
                "{length:#x}, but only {:#x} bytes are there: the table is truncated",
                bytes.len()
            ),
        )
        .into());
    }
    if bytes.len() > len {
        notes.push(format!(
            "{} bytes after the table's Length ({length:#x}) ignored",
            bytes.len() - len
        ));
    }
    let t = bytes.get(..len).unwrap_or_default();
    let sum = sum8(t);
    let checksum_ok = sum == 0;
    if !checksum_ok {
        let want = header.checksum.wrapping_sub(sum);
        let reason = format!(
            "{:#04x}: the table's {length:#x} bytes sum to {sum:#04x} mod 256, not 0 \
             (Checksum {want:#04x} would balance them)",
            header.checksum
        );
        if opts.ignore_checksum {
            notes.push(format!(
                "{T}: Checksum at {ACPI_CHECKSUM:#x}: {reason} (ignored)"
            ));
        } else {
            return Err(Problem::new(T, "Checksum", ACPI_CHECKSUM, reason).into());
        }
    }
    let vbios_image_offset = u32_at(t, VFCT_VBIOS_OFFSET).unwrap_or(0);
    let lib1_image_offset = u32_at(t, VFCT_LIB1_OFFSET).unwrap_or(0);
    let first = vbios_image_offset as usize;
    if first < VFCT_HEADER_LEN {
        return Err(Problem::new(
            T,
            "VBIOSImageOffset",
            VFCT_VBIOS_OFFSET,
            format!(
                "{vbios_image_offset:#x} points inside the {VFCT_HEADER_LEN:#x}-byte VFCT header"
            ),
        )
        .into());
    }
    if first >= len {
        return Err(Problem::new(
            T,
            "VBIOSImageOffset",
            VFCT_VBIOS_OFFSET,
            format!(
                "{vbios_image_offset:#x} is at or past the table end ({length:#x}): no image \
                 (amdgpu: \"too short #2\")"
            ),
        )
        .into());
    }

    let mut images = Vec::new();
    let mut empty_headers = 0usize;
    let mut first_empty = 0usize;
    let mut off = first;
    while off < len {
        let rest = len - off;
        let what = format!("VFCT image {} at {off:#x}", images.len());
        let Some(h) = t.get(off..off + VFCT_IMAGE_HEADER_LEN.min(rest)) else {
            break;
        };
        if rest < VFCT_IMAGE_HEADER_LEN {
            if h.iter().all(|&b| b == 0) {
                notes.push(format!(
                    "{rest} zero bytes of padding at {off:#x} (end of table)"
                ));
                break;
            }
            return Err(Problem::new(
                what,
                "image header",
                off,
                format!(
                    "needs {VFCT_IMAGE_HEADER_LEN:#x} bytes, only {rest:#x} are left before the \
                     table end ({length:#x}) (amdgpu: \"ACPI VFCT image header truncated\")"
                ),
            )
            .into());
        }
        let image_length = u32_at(h, IMG_LENGTH).unwrap_or(0);
        let content_offset = off + VFCT_IMAGE_HEADER_LEN;
        if image_length as usize > len - content_offset {
            return Err(Problem::new(
                what,
                "ImageLength",
                off + IMG_LENGTH,
                format!(
                    "{image_length} bytes from {content_offset:#x} run past the table end \
                     ({length:#x}) (amdgpu: \"ACPI VFCT image truncated\")"
                ),
            )
            .into());
        }
        let next = content_offset + image_length as usize;
        if h.iter().all(|&b| b == 0) {
            // amdgpu skips an entry with ImageLength 0 and reads the next header after it.
            if empty_headers == 0 {
                first_empty = off;
            }
            empty_headers += 1;
            off = next;
            continue;
        }
        let content = t.get(content_offset..next).unwrap_or_default().to_vec();
        let mut img = VfctImage {
            index: images.len(),
            header_offset: off,
            content_offset,
            pci_bus: u32_at(h, IMG_BUS).unwrap_or(0),
            pci_device: u32_at(h, IMG_DEVICE).unwrap_or(0),
            pci_function: u32_at(h, IMG_FUNCTION).unwrap_or(0),
            vendor_id: u16_at(h, IMG_VENDOR_ID).unwrap_or(0),
            device_id: u16_at(h, IMG_DEVICE_ID).unwrap_or(0),
            ssvid: u16_at(h, IMG_SSVID).unwrap_or(0),
            ssid: u16_at(h, IMG_SSID).unwrap_or(0),
            revision: u32_at(h, IMG_REVISION).unwrap_or(0),
            image_length,
            rom: None,
            problems: Vec::new(),
            content,
        };
        check_vfct_image(&mut img, &what);
        images.push(img);
        off = next;
    }
    if empty_headers > 0 {
        notes.push(format!(
            "{empty_headers} empty image header(s) (all zero) from {first_empty:#x} skipped, as amdgpu does"
        ));
    }
    if images.is_empty() {
        return Err(Problem::new(
            T,
            "VBIOSImageOffset",
            VFCT_VBIOS_OFFSET,
            format!(
                "{vbios_image_offset:#x}: no image in the table, every image header is empty \
                 (amdgpu: \"too short #2\")"
            ),
        )
        .into());
    }
    Ok(Vfct {
        header,
        table_uuid: hex(t.get(VFCT_UUID..VFCT_UUID + 16).unwrap_or_default()),
        vbios_image_offset,
        lib1_image_offset,
        checksum_ok,
        images,
        notes,
    })
}

/// The per-entry checks: PCI ids in range, a ROM present and valid, its PCIR ids matching the
/// header, and amdgpu's `check_atom_bios` (which `amdgpu_acpi_vfct_bios` applies to the image
/// it picks).
fn check_vfct_image(img: &mut VfctImage, what: &str) {
    let h = img.header_offset;
    if img.pci_bus > 0xff {
        img.problems.push(Problem::new(
            what,
            "PCIBus",
            h + IMG_BUS,
            format!("{:#x} is not a bus number (0-0xff)", img.pci_bus),
        ));
    }
    if img.pci_device > 0x1f {
        img.problems.push(Problem::new(
            what,
            "PCIDevice",
            h + IMG_DEVICE,
            format!("{:#x} is not a device number (0-0x1f)", img.pci_device),
        ));
    }
    if img.pci_function > 7 {
        img.problems.push(Problem::new(
            what,
            "PCIFunction",
            h + IMG_FUNCTION,
            format!("{:#x} is not a function number (0-7)", img.pci_function),
        ));
    }
    if img.image_length == 0 {
        img.problems.push(Problem::new(
            what,
            "ImageLength",
            h + IMG_LENGTH,
            format!(
                "is 0: the entry for {:04x}:{:04x} at {} has no ROM (amdgpu skips it)",
                img.vendor_id,
                img.device_id,
                img.bdf()
            ),
        ));
        return;
    }
    let rom_what = format!(
        "VFCT image {} (ROM at table offset {:#x}): ROM",
        img.index, img.content_offset
    );
    let mut rom = inspect_rom_as(&img.content, &rom_what);
    if let Some(first) = rom.images.first() {
        if first.vendor_id != img.vendor_id {
            img.problems.push(Problem::new(
                what,
                "VendorID",
                h + IMG_VENDOR_ID,
                format!(
                    "{:#06x}, but the ROM's PCIR (ROM offset {:#x}) says {:#06x}",
                    img.vendor_id,
                    first.pcir_offset + PCIR_VENDOR,
                    first.vendor_id
                ),
            ));
        }
        if first.device_id != img.device_id && !first.device_list.contains(&img.device_id) {
            img.problems.push(Problem::new(
                what,
                "DeviceID",
                h + IMG_DEVICE_ID,
                format!(
                    "{:#06x}, but the ROM's PCIR (ROM offset {:#x}) says {:#06x}{}",
                    img.device_id,
                    first.pcir_offset + PCIR_DEVICE,
                    first.device_id,
                    if first.device_list.is_empty() {
                        String::new()
                    } else {
                        " and its device list does not name it".to_string()
                    }
                ),
            ));
        }
    }
    if rom.problems.is_empty() {
        if let Some(atom) = &rom.atom {
            if !atom.amdgpu_accepts {
                img.problems.push(Problem::new(
                    rom_what,
                    "ATOM ROM header",
                    ATOM_ROM_HEADER_POINTER,
                    format!(
                        "amdgpu's check_atom_bios rejects the image: {}",
                        atom.verdict
                    ),
                ));
            }
        }
    }
    rom.strings.truncate(16);
    img.rom = Some(rom);
}

// ---------------------------------------------------------------------------------------------
// PCI option ROMs.

/// What [`inspect_rom`] found in a ROM file.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct RomInfo {
    pub size: usize,
    pub images: Vec<RomImage>,
    /// Bytes after the last image (ROM BAR padding).
    pub trailing_bytes: usize,
    /// The ATOM BIOS view of the first image, when it starts with 0x55 0xAA.
    pub atom: Option<AtomInfo>,
    /// Printable runs of 4+ characters in the first 1 KiB, like strings(1).
    pub strings: Vec<RomString>,
    /// Faults; empty means the ROM is valid.
    pub problems: Vec<Problem>,
    /// Things worth knowing that are not faults.
    pub notes: Vec<String>,
}

impl RomInfo {
    pub fn is_valid(&self) -> bool {
        self.problems.is_empty()
    }
}

/// One image of a ROM (a ROM may hold a legacy x86 image, then an EFI GOP image).
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct RomImage {
    pub index: usize,
    /// ROM offset of the image's 0x55 0xAA.
    pub offset: usize,
    /// ROM offset of the PCIR structure.
    pub pcir_offset: usize,
    pub vendor_id: u16,
    pub device_id: u16,
    /// PCI 3.0 device list (DeviceListOffset, PCIR revision ≥ 3), empty otherwise.
    pub device_list: Vec<u16>,
    pub pcir_length: u16,
    pub pcir_revision: u8,
    /// Class code, base class in the top byte (e.g. 0x030000 VGA, 0x038000 other display).
    pub class_code: u32,
    /// ImageLength in bytes (PCIR+0x10 × 512).
    pub image_length: usize,
    pub code_revision: u16,
    pub code_type: u8,
    pub code_type_name: &'static str,
    pub last_image: bool,
    /// InitializationSize in bytes (legacy: the byte at 0x02; EFI: the u16 at 0x02), × 512.
    pub init_size: usize,
    /// Legacy images: the checksum over the InitializationSize bytes.
    pub checksum: Option<Checksum>,
    /// EFI images: the EFI header fields.
    pub efi: Option<EfiImage>,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Checksum {
    /// ROM offsets `[start, end)` summed.
    pub start: usize,
    pub end: usize,
    pub sum: u8,
    pub ok: bool,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct EfiImage {
    pub subsystem: u16,
    pub subsystem_name: &'static str,
    pub machine_type: u16,
    pub machine_name: &'static str,
    pub compression_type: u16,
    /// Image offset of the PE image (EfiImageHeaderOffset).
    pub pe_offset: u16,
    /// The PE image starts with "MZ" (only checked when not compressed).
    pub pe_mz: Option<bool>,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct RomString {
    pub offset: usize,
    pub text: String,
}

/// The ATOM BIOS view of a ROM, as amdgpu reads it.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct AtomInfo {
    /// `check_atom_bios` would return true.
    pub amdgpu_accepts: bool,
    /// "ATOMBIOS detected", or which of its checks fails.
    pub verdict: String,
    /// `AMD_VBIOS_SIGNATURE` " 761295520" at 0x30.
    pub amd_signature: bool,
    /// The u16 at 0x48.
    pub rom_header_offset: u16,
    pub structure_size: Option<u16>,
    pub format_revision: Option<u8>,
    pub content_revision: Option<u8>,
    pub subsystem_vendor_id: Option<u16>,
    pub subsystem_id: Option<u16>,
    pub pci_info_offset: Option<u16>,
    pub master_command_table_offset: Option<u16>,
    pub master_data_table_offset: Option<u16>,
    /// The byte at 0x21 (the checksum-balancing byte of ATOM BIOSes; unconfirmed).
    pub checksum_byte: Option<u8>,
    /// `atom_get_vbios_pn`.
    pub part_number: Option<String>,
    /// `atom_get_vbios_date`, raw (the kernel reorders it).
    pub date: Option<String>,
    /// `atom_get_vbios_version`: after "ATOMBIOSBK-AMD VER".
    pub version: Option<String>,
    /// `atom_get_vbios_build`.
    pub build: Option<String>,
    /// The string at usConfigFilenameOffset.
    pub config_filename: Option<String>,
    /// The string at usBIOS_BootupMessageOffset, trimmed.
    pub bootup_message: Option<String>,
}

/// Inspect a ROM: walk its images, check each, read the ATOM strings. Never fails; faults are
/// in `problems`.
pub fn inspect_rom(bytes: &[u8]) -> RomInfo {
    inspect_rom_as(bytes, "ROM")
}

/// [`inspect_rom`], with the first problem as the error.
pub fn check_rom(bytes: &[u8]) -> Result<RomInfo> {
    let info = inspect_rom(bytes);
    match info.problems.first() {
        Some(p) => Err(p.clone().into()),
        None => Ok(info),
    }
}

fn code_type_name(t: u8) -> &'static str {
    match t {
        0x00 => "x86 legacy",
        0x01 => "Open Firmware",
        0x02 => "PA-RISC",
        0x03 => "EFI",
        _ => "other",
    }
}

fn efi_subsystem_name(s: u16) -> &'static str {
    match s {
        10 => "EFI application",
        11 => "EFI boot service driver",
        12 => "EFI runtime driver",
        _ => "other",
    }
}

fn efi_machine_name(m: u16) -> &'static str {
    match m {
        0x014c => "IA32",
        0x0200 => "IA64",
        0x0ebc => "EBC",
        0x8664 => "x64",
        0xaa64 => "AArch64",
        _ => "other",
    }
}

fn inspect_rom_as(bytes: &[u8], ctx: &str) -> RomInfo {
    let len = bytes.len();
    let mut info = RomInfo {
        size: len,
        images: Vec::new(),
        trailing_bytes: 0,
        atom: None,
        strings: printable_strings(bytes.get(..len.min(STRINGS_WINDOW)).unwrap_or_default()),
        problems: Vec::new(),
        notes: Vec::new(),
    };
    let mut off = 0usize;
    loop {
        let idx = info.images.len();
        let what = format!("{ctx} image {idx} at {off:#x}");
        let sig = bytes
            .get(off..len.min(off.saturating_add(2)))
            .unwrap_or_default();
        if sig != [0x55, 0xaa] {
            if idx == 0 {
                let reason = if sig.len() < 2 {
                    format!("the ROM is {len} bytes, too short for the 0x55 0xAA signature")
                } else {
                    format!("{}, expected 55 aa", spaced_hex(sig))
                };
                info.problems
                    .push(Problem::new(what, "signature", off, reason));
            } else {
                info.notes.push(format!(
                    "image {} is not marked last, but no image follows at {off:#x} ({}); the kernel's \
                     pci_get_rom_size stops here too",
                    idx - 1,
                    if sig.is_empty() {
                        "end of ROM".to_string()
                    } else {
                        spaced_hex(sig)
                    }
                ));
                info.trailing_bytes = len.saturating_sub(off);
            }
            break;
        }
        match inspect_image(bytes, off, idx, &what, &mut info) {
            Some(img) => {
                let next = off + img.image_length;
                let last = img.last_image;
                info.images.push(img);
                if last {
                    info.trailing_bytes = len - next;
                    break;
                }
                if next >= len {
                    info.notes.push(format!(
                        "image {idx} is not marked last, but the ROM ends after it"
                    ));
                    break;
                }
                off = next;
            }
            None => break,
        }
    }
    if bytes.get(..2) == Some(&[0x55, 0xaa][..]) {
        info.atom = Some(atom_info(bytes));
    }
    info
}

fn spaced_hex(b: &[u8]) -> String {
    b.iter()
        .map(|c| format!("{c:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Check one image at `off` (its signature already seen). Returns None when the walk cannot go on.
fn inspect_image(
    bytes: &[u8],
    off: usize,
    idx: usize,
    what: &str,
    info: &mut RomInfo,
) -> Option<RomImage> {
    let len = bytes.len();
    let p = |field: &'static str, at: usize, reason: String| Problem::new(what, field, at, reason);
    let Some(ptr) = u16_at(bytes, off + ROM_PCIR_POINTER) else {
        info.problems.push(p(
            "PCIR pointer",
            off + ROM_PCIR_POINTER,
            format!("the ROM ends at {len:#x}, inside the {ROM_HEADER_LEN:#x}-byte ROM header"),
        ));
        return None;
    };
    let ptr = ptr as usize;
    if ptr < ROM_HEADER_LEN {
        info.problems.push(p(
            "PCIR pointer",
            off + ROM_PCIR_POINTER,
            format!("{ptr:#x} points into the {ROM_HEADER_LEN:#x}-byte ROM header"),
        ));
        return None;
    }
    let pcir = off + ptr;
    let Some(d) = bytes.get(pcir..pcir + PCIR_MIN_LEN) else {
        info.problems.push(p(
            "PCIR pointer",
            off + ROM_PCIR_POINTER,
            format!(
                "{ptr:#x}: the {PCIR_MIN_LEN:#x}-byte PCI data structure at {pcir:#x} runs past the \
                 end of the ROM ({len:#x})"
            ),
        ));
        return None;
    };
    if d.get(0..4) != Some(&b"PCIR"[..]) {
        info.problems.push(p(
            "PCIR signature",
            pcir,
            format!(
                "'{}', expected 'PCIR'",
                ascii(d.get(0..4).unwrap_or_default())
            ),
        ));
        return None;
    }
    if pcir % 4 != 0 {
        info.notes.push(format!(
            "image {idx}: the PCIR structure at {pcir:#x} is not 4-byte aligned (UEFI asks for it)"
        ));
    }
    let vendor_id = u16_at(d, PCIR_VENDOR).unwrap_or(0);
    let device_id = u16_at(d, PCIR_DEVICE).unwrap_or(0);
    let pcir_length = u16_at(d, PCIR_LENGTH).unwrap_or(0);
    let pcir_revision = u8_at(d, PCIR_REVISION).unwrap_or(0);
    let class_code = d
        .get(PCIR_CLASS..PCIR_CLASS + 3)
        .map(|c| u32::from(c[0]) | u32::from(c[1]) << 8 | u32::from(c[2]) << 16)
        .unwrap_or(0);
    let units = u16_at(d, PCIR_IMAGE_LENGTH).unwrap_or(0) as usize;
    let code_revision = u16_at(d, PCIR_CODE_REVISION).unwrap_or(0);
    let code_type = u8_at(d, PCIR_CODE_TYPE).unwrap_or(0);
    let last_image = u8_at(d, PCIR_INDICATOR).unwrap_or(0) & PCIR_LAST_IMAGE != 0;
    if (pcir_length as usize) < PCIR_MIN_LEN {
        info.problems.push(p(
            "PCIR Length",
            pcir + PCIR_LENGTH,
            format!("{pcir_length:#x} is shorter than the {PCIR_MIN_LEN:#x} bytes of a PCI data structure"),
        ));
    }
    if units == 0 {
        info.problems.push(p(
            "PCIR ImageLength",
            pcir + PCIR_IMAGE_LENGTH,
            "is 0 (the image must hold at least its header)".to_string(),
        ));
        return None;
    }
    let image_length = units * ROM_UNIT;
    let end = off + image_length;
    if end > len {
        info.problems.push(p(
            "PCIR ImageLength",
            pcir + PCIR_IMAGE_LENGTH,
            format!(
                "{units} x 512 = {image_length:#x} bytes from {off:#x} run past the end of the ROM ({len:#x})"
            ),
        ));
        return None;
    }
    if ptr + PCIR_MIN_LEN > image_length {
        info.problems.push(p(
            "PCIR pointer",
            off + ROM_PCIR_POINTER,
            format!(
                "{ptr:#x}: the PCI data structure lies outside the image ({image_length:#x} bytes)"
            ),
        ));
    }
    // PCI 3.0: DeviceListOffset (from the PCIR start) to u16 ids ending with 0.
    let mut device_list = Vec::new();
    let list_ptr = u16_at(d, PCIR_DEVICE_LIST).unwrap_or(0) as usize;
    if pcir_revision >= 3 && list_ptr != 0 {
        let mut at = pcir + list_ptr;
        loop {
            match u16_at(bytes, at) {
                Some(0) => break,
                Some(id) if at + 2 <= end && device_list.len() < 256 => {
                    device_list.push(id);
                    at += 2;
                }
                _ => {
                    info.problems.push(p(
                        "PCIR DeviceListOffset",
                        pcir + PCIR_DEVICE_LIST,
                        format!(
                            "the device list at {:#x} has no 0 terminator inside the image",
                            pcir + list_ptr
                        ),
                    ));
                    break;
                }
            }
        }
    }

    let mut init_size = 0usize;
    let mut checksum = None;
    let mut efi = None;
    match code_type {
        0x00 => {
            let init_units = u8_at(bytes, off + ROM_INIT_SIZE).unwrap_or(0) as usize;
            init_size = init_units * ROM_UNIT;
            if init_units == 0 {
                info.problems.push(p(
                    "InitializationSize",
                    off + ROM_INIT_SIZE,
                    "is 0: nothing to checksum".to_string(),
                ));
            } else if init_size > image_length {
                info.problems.push(p(
                    "InitializationSize",
                    off + ROM_INIT_SIZE,
                    format!(
                        "{init_units} x 512 = {init_size:#x} bytes, more than the image's {image_length:#x}"
                    ),
                ));
            } else {
                let covered = bytes.get(off..off + init_size).unwrap_or_default();
                let sum = sum8(covered);
                let ok = sum == 0;
                if !ok {
                    info.problems.push(p(
                        "checksum",
                        off,
                        format!(
                            "bytes {off:#x}..{:#x} sum to {sum:#04x} mod 256, not 0",
                            off + init_size
                        ),
                    ));
                }
                checksum = Some(Checksum {
                    start: off,
                    end: off + init_size,
                    sum,
                    ok,
                });
            }
        }
        0x03 => {
            let init_units = u16_at(bytes, off + ROM_INIT_SIZE).unwrap_or(0) as usize;
            init_size = init_units * ROM_UNIT;
            let efisig = u32_at(bytes, off + EFI_SIGNATURE).unwrap_or(0);
            if efisig != EFI_SIGNATURE_VALUE {
                info.problems.push(p(
                    "EfiSignature",
                    off + EFI_SIGNATURE,
                    format!("{efisig:#x}, expected {EFI_SIGNATURE_VALUE:#x}"),
                ));
            }
            let subsystem = u16_at(bytes, off + EFI_SUBSYSTEM).unwrap_or(0);
            let machine_type = u16_at(bytes, off + EFI_MACHINE).unwrap_or(0);
            let compression_type = u16_at(bytes, off + EFI_COMPRESSION).unwrap_or(0);
            let pe_offset = u16_at(bytes, off + EFI_IMAGE_OFFSET).unwrap_or(0);
            // edk2 PciOptionRomSupport.c: InitializationSize ≤ image size, PE offset below it.
            if init_size > image_length {
                info.problems.push(p(
                    "InitializationSize",
                    off + ROM_INIT_SIZE,
                    format!(
                        "{init_units} x 512 = {init_size:#x} bytes, more than the image's {image_length:#x}"
                    ),
                ));
            } else if pe_offset as usize >= init_size {
                info.problems.push(p(
                    "EfiImageHeaderOffset",
                    off + EFI_IMAGE_OFFSET,
                    format!("{pe_offset:#x} is not below InitializationSize ({init_size:#x})"),
                ));
            }
            let pe_mz = (compression_type == 0).then(|| {
                bytes.get(off + pe_offset as usize..off + pe_offset as usize + 2)
                    == Some(&b"MZ"[..])
            });
            if pe_mz == Some(false) {
                info.notes.push(format!(
                    "image {idx}: no \"MZ\" at the EFI image offset {:#x}",
                    off + pe_offset as usize
                ));
            }
            efi = Some(EfiImage {
                subsystem,
                subsystem_name: efi_subsystem_name(subsystem),
                machine_type,
                machine_name: efi_machine_name(machine_type),
                compression_type,
                pe_offset,
                pe_mz,
            });
        }
        _ => {}
    }
    Some(RomImage {
        index: idx,
        offset: off,
        pcir_offset: pcir,
        vendor_id,
        device_id,
        device_list,
        pcir_length,
        pcir_revision,
        class_code,
        image_length,
        code_revision,
        code_type,
        code_type_name: code_type_name(code_type),
        last_image,
        init_size,
        checksum,
        efi,
    })
}

fn printable_strings(b: &[u8]) -> Vec<RomString> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, &c) in b.iter().chain(std::iter::once(&0u8)).enumerate() {
        let printable = (0x20..0x7f).contains(&c);
        match (printable, start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                if i - s >= STRINGS_MIN_LEN && out.len() < STRINGS_MAX {
                    out.push(RomString {
                        offset: s,
                        text: String::from_utf8_lossy(b.get(s..i).unwrap_or_default()).into_owned(),
                    });
                }
                start = None;
            }
            _ => {}
        }
    }
    out
}

/// Chars from `off` while `keep` holds, at most `max`.
fn take_str(b: &[u8], off: usize, max: usize, keep: impl Fn(u8) -> bool) -> Option<String> {
    let tail = b.get(off..)?;
    let n = tail.iter().take(max).take_while(|&&c| keep(c)).count();
    let s = tail.get(..n)?;
    (!s.is_empty()).then(|| String::from_utf8_lossy(s).into_owned())
}

fn printable(c: u8) -> bool {
    (0x20..0x7f).contains(&c)
}

/// NUL-terminated string at `off` (must end inside `b`, within `max`).
fn cstr(b: &[u8], off: usize, max: usize) -> Option<String> {
    take_str(b, off, max, printable)
}

fn find(hay: &[u8], needle: &[u8], from: usize, to: usize) -> Option<usize> {
    let to = to.min(hay.len());
    let win = hay.get(from..to)?;
    win.windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

fn atom_info(b: &[u8]) -> AtomInfo {
    let hdr = u16_at(b, ATOM_ROM_HEADER_POINTER).unwrap_or(0);
    let h = hdr as usize;
    // check_atom_bios, in its order; we also require the 4 signature bytes to be inside.
    let verdict = if b.len() < 0x49 + 1 {
        Err(format!(
            "the ROM is {:#x} bytes, check_atom_bios needs 0x49+",
            b.len()
        ))
    } else if hdr == 0 {
        Err("the ATOM ROM header pointer at 0x48 is 0 (\"Can't locate VBIOS header\")".to_string())
    } else {
        match b.get(h + 4..h + 8) {
            None => Err(format!(
                "the ATOM ROM header pointer {hdr:#x} at 0x48 points past the ROM end ({:#x}) \
                 (\"VBIOS header is broken\")",
                b.len()
            )),
            Some(s) if s == b"ATOM" || s == b"MOTA" => Ok(()),
            Some(s) => Err(format!(
                "'{}' at {:#x}, not \"ATOM\" (the ATOM ROM header pointer at 0x48 is {hdr:#x})",
                ascii(s),
                h + 4
            )),
        }
    };
    let accepts = verdict.is_ok();
    let rh = |o: usize| if accepts { u16_at(b, h + o) } else { None };
    let config_off = rh(0x0C).map(usize::from);
    let boot_off = rh(0x10).map(usize::from);

    // atom_get_vbios_pn: the first of the ATOM strings, or the part number at 0x80.
    let pn_off = match u8_at(b, ATOM_STRING_COUNT) {
        Some(n) if n != 0 => u16_at(b, ATOM_STRING_START).map(usize::from),
        _ => Some(ATOM_PART_NUMBER),
    };
    let part_number = pn_off.and_then(|o| {
        let o = if u8_at(b, o) == Some(0) { o + 1 } else { o };
        take_str(b, o, ATOM_PN_MAX, |c| (b' '..=b'z').contains(&c))
    });
    let version = find(b, b"ATOMBIOSBK-AMD", 3, ATOM_SEARCH_END)
        .and_then(|o| cstr(b, o + "ATOMBIOSBK-AMD VER".len(), ATOM_STR_MAX));
    // atom_get_vbios_build: skip the config file name and the change list, before the header.
    let build = config_off.and_then(|c| {
        let mut at = c;
        for _ in 0..2 {
            let n = b.get(at..h)?.iter().position(|&x| x == 0)?;
            at += n + 1;
        }
        if at + ATOM_STR_MAX < h {
            cstr(b, at, ATOM_STR_MAX)
        } else {
            None
        }
    });
    AtomInfo {
        amdgpu_accepts: accepts,
        verdict: match verdict {
            Ok(()) => "ATOMBIOS detected".to_string(),
            Err(e) => e,
        },
        amd_signature: b.get(
            AMD_VBIOS_SIGNATURE_OFFSET..AMD_VBIOS_SIGNATURE_OFFSET + AMD_VBIOS_SIGNATURE.len(),
        ) == Some(AMD_VBIOS_SIGNATURE),
        rom_header_offset: hdr,
        structure_size: rh(0),
        format_revision: if accepts { u8_at(b, h + 2) } else { None },
        content_revision: if accepts { u8_at(b, h + 3) } else { None },
        subsystem_vendor_id: rh(0x18),
        subsystem_id: rh(0x1A),
        pci_info_offset: rh(0x1C),
        master_command_table_offset: rh(0x1E),
        master_data_table_offset: rh(0x20),
        checksum_byte: u8_at(b, ATOM_CHECKSUM_OFFSET),
        part_number,
        date: cstr(b, ATOM_DATE, ATOM_STR_MAX),
        version,
        build,
        config_filename: config_off.and_then(|o| cstr(b, o, ATOM_STR_MAX)),
        bootup_message: boot_off.and_then(|o| {
            take_str(b, o, 128, |c| printable(c) || c == b'\r' || c == b'\n')
                .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
        }),
    }
}

// ---------------------------------------------------------------------------------------------
// Comparing two ROMs.

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct RomDiff {
    pub size_a: usize,
    pub size_b: usize,
    pub identical: bool,
    /// Differing bytes in the common length, plus the length difference.
    pub differing_bytes: usize,
    pub ranges: Vec<DiffRange>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct DiffRange {
    /// `[start, end)`, file offsets.
    pub start: usize,
    pub end: usize,
    /// How many bytes in the range differ (runs closer than [`DIFF_MERGE_GAP`] are merged).
    pub differing: usize,
    /// The structures the range touches, from the layout of the first ROM (or the second, when
    /// the first has no image).
    pub regions: Vec<String>,
}

/// Compare two ROMs byte by byte.
pub fn compare_roms(a: &[u8], b: &[u8]) -> RomDiff {
    let common = a.len().min(b.len());
    let mut raw: Vec<(usize, usize, usize)> = Vec::new();
    let mut i = 0;
    while i < common {
        if a.get(i) != b.get(i) {
            let s = i;
            let mut n = 0;
            while i < common && a.get(i) != b.get(i) {
                i += 1;
                n += 1;
            }
            match raw.last_mut() {
                Some(last) if s - last.1 < DIFF_MERGE_GAP => {
                    last.1 = i;
                    last.2 += n;
                }
                _ => raw.push((s, i, n)),
            }
        } else {
            i += 1;
        }
    }
    if a.len() != b.len() {
        let end = a.len().max(b.len());
        raw.push((common, end, end - common));
    }
    let la = inspect_rom(a);
    let layout = if la.images.is_empty() {
        inspect_rom(b)
    } else {
        la
    };
    let regions = region_map(&layout);
    let ranges: Vec<DiffRange> = raw
        .into_iter()
        .map(|(start, end, differing)| {
            let mut names: Vec<String> = Vec::new();
            if start < common {
                for pos in start..end.min(common) {
                    let name = classify(&regions, &layout, pos);
                    if !names.contains(&name) {
                        names.push(name);
                    }
                }
            }
            if end > common {
                names.push(format!(
                    "past the end of the shorter file ({} is {common:#x} bytes)",
                    if a.len() < b.len() {
                        "the first"
                    } else {
                        "the second"
                    }
                ));
            }
            DiffRange {
                start,
                end,
                differing,
                regions: names,
            }
        })
        .collect();
    RomDiff {
        size_a: a.len(),
        size_b: b.len(),
        identical: a == b,
        differing_bytes: ranges.iter().map(|r| r.differing).sum(),
        ranges,
    }
}

/// Named structures of a ROM, most specific first: `(start, end, name)`.
fn region_map(info: &RomInfo) -> Vec<(usize, usize, String)> {
    let mut v = Vec::new();
    if let Some(atom) = &info.atom {
        if atom.amdgpu_accepts {
            v.push((
                ATOM_CHECKSUM_OFFSET,
                ATOM_CHECKSUM_OFFSET + 1,
                "checksum byte (ATOM, 0x21)".to_string(),
            ));
            let h = atom.rom_header_offset as usize;
            let n = atom.structure_size.map_or(4, usize::from).max(8);
            v.push((h, h + n, "ATOM ROM header".to_string()));
        }
        if atom.amd_signature {
            v.push((
                AMD_VBIOS_SIGNATURE_OFFSET,
                AMD_VBIOS_SIGNATURE_OFFSET + AMD_VBIOS_SIGNATURE.len(),
                "AMD VBIOS signature".to_string(),
            ));
        }
    }
    for img in &info.images {
        let i = img.index;
        v.push((
            img.pcir_offset,
            img.pcir_offset + (img.pcir_length as usize).max(PCIR_MIN_LEN),
            format!("image {i} PCIR"),
        ));
        v.push((
            img.offset,
            img.offset + ROM_HEADER_LEN,
            format!("image {i} ROM header"),
        ));
    }
    v
}

fn classify(regions: &[(usize, usize, String)], info: &RomInfo, pos: usize) -> String {
    if let Some((_, _, n)) = regions.iter().find(|(s, e, _)| (*s..*e).contains(&pos)) {
        return n.clone();
    }
    match info
        .images
        .iter()
        .find(|i| (i.offset..i.offset + i.image_length).contains(&pos))
    {
        Some(i) => format!("image {} body", i.index),
        None if info.images.is_empty() => "unparsed bytes".to_string(),
        None => "after the last image".to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// A synthetic VFCT table (tests and the twin).

/// One image for [`build_vfct`].
#[derive(Debug, Clone)]
pub struct SyntheticImage {
    pub bus: u32,
    pub device: u32,
    pub function: u32,
    pub vendor_id: u16,
    pub device_id: u16,
    pub ssvid: u16,
    pub ssid: u16,
    pub revision: u32,
    /// The ROM bytes; [`SyntheticImage::new`] puts a valid one from [`build_rom`] here.
    pub rom: Vec<u8>,
}

impl SyntheticImage {
    /// An image at `bus:device.function` for `vendor:device_id`, with a valid ATOM ROM.
    pub fn new(bus: u32, device: u32, function: u32, vendor_id: u16, device_id: u16) -> Self {
        SyntheticImage {
            bus,
            device,
            function,
            vendor_id,
            device_id,
            ssvid: 0x1f4c,
            ssid: 0xb016,
            revision: 0xc5,
            rom: build_rom(vendor_id, device_id, false),
        }
    }

    /// The seed's iGPU: 1002:1900 at c5:00.0.
    pub fn seed_igpu() -> Self {
        SyntheticImage::new(0xc5, 0, 0, 0x1002, 0x1900)
    }
}

fn put(buf: &mut [u8], off: usize, data: &[u8]) {
    if let Some(dst) = buf.get_mut(off..off + data.len()) {
        dst.copy_from_slice(data);
    }
}

/// Set the byte at `at` so that `buf[range]` sums to 0 mod 256.
fn balance(buf: &mut [u8], start: usize, end: usize, at: usize) {
    if let Some(b) = buf.get_mut(at) {
        *b = 0;
    }
    let s = sum8(buf.get(start..end).unwrap_or_default());
    if let Some(b) = buf.get_mut(at) {
        *b = 0u8.wrapping_sub(s);
    }
}

/// A small valid ROM for `vendor:device`: a 1 KiB legacy image laid out like the seed's 8845HS
/// VBIOS (ATOM header at 0x194, PCIR at 0x1C0, ATOM strings, checksum byte at 0x21), and, with
/// `with_efi`, a 1 KiB EFI image after it (code type 3, a stub "MZ" PE).
pub fn build_rom(vendor: u16, device: u16, with_efi: bool) -> Vec<u8> {
    const LEGACY: usize = 2 * ROM_UNIT;
    let mut r = vec![0u8; LEGACY];
    put(&mut r, 0, &[0x55, 0xaa, (LEGACY / ROM_UNIT) as u8]);
    put(&mut r, 3, &[0xe9, 0x00, 0x00]); // a jmp, as real images have
    put(&mut r, ROM_PCIR_POINTER, &0x01c0u16.to_le_bytes());
    put(&mut r, 0x1e, b"IBM");
    put(&mut r, ATOM_STRING_COUNT, &[4]);
    put(&mut r, AMD_VBIOS_SIGNATURE_OFFSET, AMD_VBIOS_SIGNATURE);
    put(&mut r, ATOM_ROM_HEADER_POINTER, &0x0194u16.to_le_bytes());
    put(&mut r, ATOM_DATE, b"01/02/25,03:04:05\0");
    put(
        &mut r,
        ATOM_STRING_START,
        &(ATOM_PART_NUMBER as u16).to_le_bytes(),
    );
    put(
        &mut r,
        ATOM_PART_NUMBER,
        b"113-RESETLAB-001\0PHOENIX\0PCI_EXPRESS\0DDR5\0",
    );
    put(&mut r, 0xac, b"\r\nAMD RESETLAB_SYNTHETIC\r\n\0");
    put(&mut r, 0x100, b"(C) resetlab synthetic test ROM\0");
    put(&mut r, 0x130, b"ATOMBIOSBK-AMD VER022.012.000.027.000001\0");
    put(&mut r, 0x15a, b"RESETLAB.bin \0"); // config file name
    put(&mut r, 0x168, b"00000000\0"); // change list
    put(&mut r, 0x171, b"00012345\0"); // build
                                       // ATOM_ROM_HEADER (format 2, content 3, 0x2c bytes as in the seed's ROM).
    let mut h = [0u8; 0x2c];
    put(&mut h, 0, &0x2cu16.to_le_bytes());
    put(&mut h, 2, &[2, 3]);
    put(&mut h, 4, b"ATOM");
    put(&mut h, 0x0c, &0x015au16.to_le_bytes());
    put(&mut h, 0x10, &0x00acu16.to_le_bytes());
    put(&mut h, 0x18, &vendor.to_le_bytes());
    put(&mut h, 0x1a, &device.to_le_bytes());
    put(&mut h, 0x1c, &0x01c0u16.to_le_bytes());
    put(&mut r, 0x194, &h);
    put(
        &mut r,
        0x1c0,
        &pcir(vendor, device, 0x038000, LEGACY, 0x00, !with_efi),
    );
    balance(&mut r, 0, LEGACY, ATOM_CHECKSUM_OFFSET);
    if with_efi {
        const EFI: usize = 2 * ROM_UNIT;
        let mut e = vec![0u8; EFI];
        put(&mut e, 0, &[0x55, 0xaa]);
        put(
            &mut e,
            ROM_INIT_SIZE,
            &((EFI / ROM_UNIT) as u16).to_le_bytes(),
        );
        put(&mut e, EFI_SIGNATURE, &EFI_SIGNATURE_VALUE.to_le_bytes());
        put(&mut e, EFI_SUBSYSTEM, &11u16.to_le_bytes());
        put(&mut e, EFI_MACHINE, &0x8664u16.to_le_bytes());
        put(&mut e, EFI_IMAGE_OFFSET, &0x0040u16.to_le_bytes());
        put(&mut e, ROM_PCIR_POINTER, &0x001cu16.to_le_bytes());
        put(
            &mut e,
            0x1c,
            &pcir(vendor, device, 0x038000, EFI, 0x03, true),
        );
        put(&mut e, 0x40, b"MZ");
        r.extend_from_slice(&e);
    }
    r
}

fn pcir(vendor: u16, device: u16, class: u32, len: usize, code_type: u8, last: bool) -> [u8; 0x18] {
    let mut p = [0u8; 0x18];
    put(&mut p, 0, b"PCIR");
    put(&mut p, PCIR_VENDOR, &vendor.to_le_bytes());
    put(&mut p, PCIR_DEVICE, &device.to_le_bytes());
    put(&mut p, PCIR_LENGTH, &0x18u16.to_le_bytes());
    put(&mut p, PCIR_CLASS, &class.to_le_bytes()[..3]);
    put(
        &mut p,
        PCIR_IMAGE_LENGTH,
        &((len / ROM_UNIT) as u16).to_le_bytes(),
    );
    put(&mut p, PCIR_CODE_REVISION, &0x160cu16.to_le_bytes());
    put(
        &mut p,
        PCIR_CODE_TYPE,
        &[code_type, if last { PCIR_LAST_IMAGE } else { 0 }],
    );
    p
}

/// A VFCT table holding `images` one after the other from 0x4C, with a correct checksum.
pub fn build_vfct(images: &[SyntheticImage]) -> Vec<u8> {
    let mut t = vec![0u8; VFCT_HEADER_LEN];
    put(&mut t, 0, b"VFCT");
    put(&mut t, 8, &[1]);
    put(&mut t, 10, b"RSTLAB");
    put(&mut t, 16, b"SYNTHVFC");
    put(&mut t, 24, &1u32.to_le_bytes());
    put(&mut t, 28, b"RSTL");
    put(&mut t, 32, &1u32.to_le_bytes());
    put(&mut t, VFCT_UUID, b"resetlab-vfct-01");
    put(
        &mut t,
        VFCT_VBIOS_OFFSET,
        &(VFCT_HEADER_LEN as u32).to_le_bytes(),
    );
    for img in images {
        let mut h = [0u8; VFCT_IMAGE_HEADER_LEN];
        put(&mut h, IMG_BUS, &img.bus.to_le_bytes());
        put(&mut h, IMG_DEVICE, &img.device.to_le_bytes());
        put(&mut h, IMG_FUNCTION, &img.function.to_le_bytes());
        put(&mut h, IMG_VENDOR_ID, &img.vendor_id.to_le_bytes());
        put(&mut h, IMG_DEVICE_ID, &img.device_id.to_le_bytes());
        put(&mut h, IMG_SSVID, &img.ssvid.to_le_bytes());
        put(&mut h, IMG_SSID, &img.ssid.to_le_bytes());
        put(&mut h, IMG_REVISION, &img.revision.to_le_bytes());
        put(&mut h, IMG_LENGTH, &(img.rom.len() as u32).to_le_bytes());
        t.extend_from_slice(&h);
        t.extend_from_slice(&img.rom);
    }
    let len = t.len() as u32;
    put(&mut t, ACPI_LENGTH, &len.to_le_bytes());
    let end = t.len();
    balance(&mut t, 0, end, ACPI_CHECKSUM);
    t
}

/// Recompute the ACPI checksum of a table (for tests that corrupt a field on purpose).
pub fn fix_acpi_checksum(table: &mut [u8]) {
    let end = u32_at(table, ACPI_LENGTH).map_or(table.len(), |l| (l as usize).min(table.len()));
    balance(table, 0, end, ACPI_CHECKSUM);
}

// ---------------------------------------------------------------------------------------------
// Files: atomic writes, the VFCT dump, the PCI device it names.

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

/// What [`dump_vfct`] did with one image.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct DumpedImage {
    pub index: usize,
    pub bdf: String,
    pub vendor_id: u16,
    pub device_id: u16,
    pub device: DevicePresence,
    /// The file written, when the image was valid.
    pub file: Option<PathBuf>,
    /// Every problem of the image, as text (the file is not written when there is one).
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct DumpReport {
    pub vfct: Vfct,
    pub images: Vec<DumpedImage>,
}

impl DumpReport {
    pub fn all_valid(&self) -> bool {
        self.images.iter().all(|i| i.problems.is_empty())
    }
}

/// Parse `table` and write each valid image to `<out_dir>/vbios_<vendor>_<device>.bin`
/// (with `_<bus>_<dev>_<fn>` added when two images share ids). Bad images are reported and not
/// written.
/// The file an image is dumped to: `vbios_VVVV_DDDD.bin`, with its address
/// when two images share the ids.
fn dump_name(vfct: &Vfct, img: &VfctImage) -> String {
    let shared = vfct
        .images
        .iter()
        .filter(|o| o.vendor_id == img.vendor_id && o.device_id == img.device_id)
        .count()
        > 1;
    if shared {
        format!(
            "vbios_{:04x}_{:04x}_{:02x}_{:02x}_{:x}.bin",
            img.vendor_id, img.device_id, img.pci_bus, img.pci_device, img.pci_function
        )
    } else {
        img.file_name()
    }
}

pub fn dump_vfct(
    table: &[u8],
    opts: VfctOptions,
    out_dir: &Path,
    sysfs: &Path,
) -> Result<DumpReport> {
    let vfct = parse_vfct_with(table, opts)?;
    if !opts.overwrite {
        let taken: Vec<String> = vfct
            .images
            .iter()
            .filter(|img| img.all_problems().is_empty())
            .map(|img| out_dir.join(dump_name(&vfct, img)))
            .filter(|p| p.exists())
            .map(|p| p.display().to_string())
            .collect();
        if !taken.is_empty() {
            return Err(Error::refused(format!(
                "{} exists; not overwriting it (--force replaces it)",
                taken.join(", ")
            )));
        }
    }
    let mut out = Vec::new();
    for img in &vfct.images {
        let name = dump_name(&vfct, img);
        let problems: Vec<String> = img.all_problems().iter().map(|p| p.to_string()).collect();
        let file = if problems.is_empty() {
            let path = out_dir.join(name);
            write_atomic(&path, &img.content)?;
            Some(path)
        } else {
            None
        };
        out.push(DumpedImage {
            index: img.index,
            bdf: img.bdf(),
            vendor_id: img.vendor_id,
            device_id: img.device_id,
            device: match img.address() {
                Some(b) => device_presence(sysfs, &b, img.vendor_id, img.device_id),
                // Not an address (a problem already): no such device.
                None => DevicePresence {
                    path: sysfs.join("bus/pci/devices").join(img.bdf()),
                    exists: false,
                    vendor_id: None,
                    device_id: None,
                    ids_match: None,
                },
            },
            file,
            problems,
        });
    }
    Ok(DumpReport { vfct, images: out })
}

// ---------------------------------------------------------------------------------------------
// A device's ROM through its sysfs `rom` attribute.

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_rom_is_valid_and_reads_like_the_seed() {
        let rom = build_rom(0x1002, 0x1900, false);
        let info = check_rom(&rom).expect("valid");
        assert_eq!(info.images.len(), 1);
        let img = &info.images[0];
        assert_eq!((img.vendor_id, img.device_id), (0x1002, 0x1900));
        assert_eq!(img.code_type, 0);
        assert!(img.last_image);
        assert_eq!(img.pcir_offset, 0x1c0);
        assert_eq!(img.class_code, 0x038000);
        assert!(img.checksum.as_ref().is_some_and(|c| c.ok));
        let atom = info.atom.expect("atom");
        assert!(atom.amdgpu_accepts, "{}", atom.verdict);
        assert!(atom.amd_signature);
        assert_eq!(atom.part_number.as_deref(), Some("113-RESETLAB-001"));
        assert_eq!(atom.version.as_deref(), Some("022.012.000.027.000001"));
        assert_eq!(atom.date.as_deref(), Some("01/02/25,03:04:05"));
        assert_eq!(atom.build.as_deref(), Some("00012345"));
        assert_eq!(atom.config_filename.as_deref(), Some("RESETLAB.bin "));
        assert_eq!(
            atom.bootup_message.as_deref(),
            Some("AMD RESETLAB_SYNTHETIC")
        );
        assert_eq!(atom.subsystem_vendor_id, Some(0x1002));
    }

    #[test]
    fn legacy_plus_efi_rom_walks_both_images() {
        let rom = build_rom(0x1002, 0x1900, true);
        let info = check_rom(&rom).expect("valid");
        assert_eq!(info.images.len(), 2);
        assert!(!info.images[0].last_image);
        let efi = &info.images[1];
        assert_eq!(efi.offset, 0x400);
        assert_eq!(efi.code_type, 3);
        assert!(efi.last_image);
        let e = efi.efi.as_ref().expect("efi header");
        assert_eq!(e.machine_type, 0x8664);
        assert_eq!(e.pe_mz, Some(true));
        assert_eq!(info.trailing_bytes, 0);
    }

    #[test]
    fn rom_checksum_fault_names_the_image_and_sum() {
        let mut rom = build_rom(0x1002, 0x1900, false);
        rom[0x300] ^= 0x01;
        let err = check_rom(&rom).unwrap_err();
        match err {
            Error::Layout { field, offset, .. } => {
                assert_eq!(field, "checksum");
                assert_eq!(offset, 0);
            }
            e => panic!("unexpected {e}"),
        }
    }

    #[test]
    fn unterminated_device_list_is_a_problem_not_a_panic() {
        let mut rom = build_rom(0x1002, 0x1900, false);
        rom[0x1c0 + PCIR_REVISION] = 3;
        rom[0x1c0 + PCIR_DEVICE_LIST..0x1c0 + PCIR_DEVICE_LIST + 2]
            .copy_from_slice(&0x0200u16.to_le_bytes());
        // 0x1c0 + 0x200 = 0x3c0: fill up to the image end with non-zero ids.
        for b in &mut rom[0x3c0..0x400] {
            *b = 0x11;
        }
        let info = inspect_rom(&rom);
        assert!(
            info.problems
                .iter()
                .any(|p| p.field == "PCIR DeviceListOffset"),
            "{:?}",
            info.problems
        );
    }

    #[test]
    fn strings_are_found_with_offsets() {
        let rom = build_rom(0x1002, 0x1900, false);
        let info = inspect_rom(&rom);
        assert!(info
            .strings
            .iter()
            .any(|s| s.offset == 0x30 && s.text == " 761295520"));
        assert!(info
            .strings
            .iter()
            .any(|s| s.offset == 0x80 && s.text == "113-RESETLAB-001"));
    }

    #[test]
    fn diff_merges_close_bytes_and_names_regions() {
        let a = build_rom(0x1002, 0x1900, false);
        let mut b = a.clone();
        b[0x300] ^= 0xff;
        b[0x302] ^= 0xff; // within the merge gap
        b[ATOM_CHECKSUM_OFFSET] = b[ATOM_CHECKSUM_OFFSET].wrapping_add(1);
        b[0x1c0 + PCIR_DEVICE] ^= 1;
        let d = compare_roms(&a, &b);
        assert!(!d.identical);
        assert_eq!(d.differing_bytes, 4);
        let r: Vec<(usize, usize, &[String])> = d
            .ranges
            .iter()
            .map(|r| (r.start, r.end, &r.regions[..]))
            .collect();
        assert_eq!(
            r[0],
            (0x21, 0x22, &["checksum byte (ATOM, 0x21)".to_string()][..])
        );
        assert_eq!(r[1], (0x1c6, 0x1c7, &["image 0 PCIR".to_string()][..]));
        assert_eq!(r[2], (0x300, 0x303, &["image 0 body".to_string()][..]));
        assert_eq!(d.ranges[2].differing, 2);
    }
}
