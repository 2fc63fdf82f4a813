//! Synthetic VBIOS images for the twin and the tests: a valid ATOM option ROM laid out like
//! the seed's 8845HS VBIOS, and an ACPI VFCT table holding such images. The parsers that read
//! them are in `amd::vbios`.

use crate::amd::vbios::{
    sum8, u32_at, ACPI_CHECKSUM, ACPI_LENGTH, AMD_VBIOS_SIGNATURE, AMD_VBIOS_SIGNATURE_OFFSET,
    ATOM_CHECKSUM_OFFSET, ATOM_DATE, ATOM_PART_NUMBER, ATOM_ROM_HEADER_POINTER, ATOM_STRING_COUNT,
    ATOM_STRING_START, EFI_IMAGE_OFFSET, EFI_MACHINE, EFI_SIGNATURE, EFI_SIGNATURE_VALUE,
    EFI_SUBSYSTEM, IMG_BUS, IMG_DEVICE, IMG_DEVICE_ID, IMG_FUNCTION, IMG_LENGTH, IMG_REVISION,
    IMG_SSID, IMG_SSVID, IMG_VENDOR_ID, PCIR_CLASS, PCIR_CODE_REVISION, PCIR_CODE_TYPE,
    PCIR_DEVICE, PCIR_IMAGE_LENGTH, PCIR_LAST_IMAGE, PCIR_LENGTH, PCIR_VENDOR, ROM_INIT_SIZE,
    ROM_PCIR_POINTER, ROM_UNIT, VFCT_HEADER_LEN, VFCT_IMAGE_HEADER_LEN, VFCT_UUID,
    VFCT_VBIOS_OFFSET,
};

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
