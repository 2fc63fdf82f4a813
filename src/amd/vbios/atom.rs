//! The ATOM BIOS view of a ROM, as amdgpu reads it (`check_atom_bios`, `atom_get_vbios_*`).

use serde::Serialize;

use super::{
    ascii, u16_at, u8_at, AMD_VBIOS_SIGNATURE, AMD_VBIOS_SIGNATURE_OFFSET, ATOM_CHECKSUM_OFFSET,
    ATOM_DATE, ATOM_PART_NUMBER, ATOM_PN_MAX, ATOM_ROM_HEADER_POINTER, ATOM_SEARCH_END,
    ATOM_STRING_COUNT, ATOM_STRING_START, ATOM_STR_MAX,
};

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

pub(super) fn atom_info(b: &[u8]) -> AtomInfo {
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
