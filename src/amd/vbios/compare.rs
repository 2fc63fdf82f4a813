//! Comparing two ROMs: differing byte ranges, named by the region they fall in.

use serde::Serialize;

use super::{
    inspect_rom, RomInfo, AMD_VBIOS_SIGNATURE, AMD_VBIOS_SIGNATURE_OFFSET, ATOM_CHECKSUM_OFFSET,
    DIFF_MERGE_GAP, PCIR_MIN_LEN, ROM_HEADER_LEN,
};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::amd::vbios::{ATOM_CHECKSUM_OFFSET, PCIR_DEVICE};
    use crate::sim::rom::build_rom;

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
