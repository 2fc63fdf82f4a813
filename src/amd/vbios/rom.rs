//! PCI option ROMs: the image chain `pci_get_rom_size` walks, PCIR, the legacy checksum, the
//! EFI image header and the printable strings.

use serde::Serialize;

use crate::error::Result;

use super::atom::atom_info;
use super::{
    ascii, sum8, u16_at, u32_at, u8_at, AtomInfo, Problem, EFI_COMPRESSION, EFI_IMAGE_OFFSET,
    EFI_MACHINE, EFI_SIGNATURE, EFI_SIGNATURE_VALUE, EFI_SUBSYSTEM, PCIR_CLASS, PCIR_CODE_REVISION,
    PCIR_CODE_TYPE, PCIR_DEVICE, PCIR_DEVICE_LIST, PCIR_IMAGE_LENGTH, PCIR_INDICATOR,
    PCIR_LAST_IMAGE, PCIR_LENGTH, PCIR_MIN_LEN, PCIR_REVISION, PCIR_VENDOR, ROM_HEADER_LEN,
    ROM_INIT_SIZE, ROM_PCIR_POINTER, ROM_UNIT, STRINGS_MAX, STRINGS_MIN_LEN, STRINGS_WINDOW,
};

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

pub(super) fn inspect_rom_as(bytes: &[u8], ctx: &str) -> RomInfo {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::amd::vbios::{PCIR_DEVICE_LIST, PCIR_REVISION};
    use crate::error::Error;
    use crate::sim::rom::build_rom;

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
}
