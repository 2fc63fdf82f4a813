//! The ACPI VFCT table: its header, the image walk `amdgpu_acpi_vfct_bios` does, and the
//! dump of its images to ROM files.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::pci::Bdf;

use super::rom::inspect_rom_as;
use super::{
    ascii, device_presence, hex, sum8, u16_at, u32_at, u8_at, write_atomic, DevicePresence,
    Problem, RomInfo, ACPI_CHECKSUM, ACPI_HEADER_LEN, ACPI_LENGTH, ATOM_ROM_HEADER_POINTER,
    IMG_BUS, IMG_DEVICE, IMG_DEVICE_ID, IMG_FUNCTION, IMG_LENGTH, IMG_REVISION, IMG_SSID,
    IMG_SSVID, IMG_VENDOR_ID, PCIR_DEVICE, PCIR_VENDOR, VFCT_HEADER_LEN, VFCT_IMAGE_HEADER_LEN,
    VFCT_LIB1_OFFSET, VFCT_UUID, VFCT_VBIOS_OFFSET,
};

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
