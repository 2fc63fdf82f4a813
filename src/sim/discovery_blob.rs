//! Synthetic IP-discovery tables for the twin and the tests: a binary blob laid out as
//! `amdgpu_discovery.c` reads it (Phoenix-like by default, or from a [`BlobSpec`]), and its
//! sysfs form. The parsers that read them are in `amd::discovery`.

use std::fs;
use std::path::Path;

use crate::error::{Error, Result};

use crate::amd::discovery::{
    checksum, hw_id_by_name, hw_id_name, Discovery, BINARY_CHECKSUM_START, BINARY_HEADER_LEN,
    BINARY_SIGNATURE, DISCOVERY_TABLE_SIGNATURE, IHDR_FLAGS_OFFSET, IP_DISCOVERY_HEADER_LEN,
};

/// One IP for [`build_discovery_blob`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpSpec {
    pub hw_id: u16,
    pub instance: u8,
    pub major: u8,
    pub minor: u8,
    pub revision: u8,
    pub flags: u8,
    pub bases: Vec<u64>,
}

/// What [`build_discovery_blob`] builds: table version, 64-bit bases (version 4), dies of IPs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobSpec {
    pub table_version: u16,
    pub base_addr_64_bit: bool,
    pub dies: Vec<Vec<IpSpec>>,
}

fn ip(hw_id: u16, major: u8, minor: u8, revision: u8, bases: &[u64]) -> IpSpec {
    IpSpec {
        hw_id,
        instance: 0,
        major,
        minor,
        revision,
        flags: 0,
        bases: bases.to_vec(),
    }
}

impl BlobSpec {
    /// A synthetic Phoenix-like table: MP1 13.0.4 with 0x16000 in segments 0 and 1, MP0 13.0.4,
    /// NBIF 7.7.0 with segments 0 / 0x14 / 0xD20, GC 11.0.1 with 0x1260 in segment 0, and a few
    /// others. Every base regs/phoenix.toml lists has the regs/ value here (MP1 segment 0 too:
    /// the best in-tree evidence is `display/dc/clk_mgr/dcn314/dcn314_smu.c`
    /// `MP1_BASE__INST0_SEG0 0x00016000`), so the twin is no more optimistic than regs/: a test
    /// that wants a different base moves it ([`BlobSpec::with_bases`]). Not a dump of a real
    /// device; the other IPs' values are placeholders. The versions are the ones 1002:1900 very
    /// likely reports (MP1 13.0.4 / GC 11.0.1 / NBIO 7.7.0: a real boot log shows the
    /// `psp_v13_0_4` block, which amdgpu adds only for MP0 13.0.4).
    pub fn phoenix_like() -> Self {
        BlobSpec {
            table_version: 3,
            base_addr_64_bit: false,
            dies: vec![vec![
                ip(11, 11, 0, 1, &[0x1260, 0xA000, 0x1C000, 0x0240_2C00]),
                ip(
                    1,
                    13,
                    0,
                    4,
                    &[
                        0x0001_6000,
                        0x0001_6000,
                        0x00E8_0000,
                        0x00EC_0000,
                        0x00F0_0000,
                    ],
                ),
                ip(
                    255,
                    13,
                    0,
                    4,
                    &[0x0001_6000, 0x0001_6000, 0x00DC_0000, 0x00E0_0000],
                ),
                ip(
                    108,
                    7,
                    7,
                    0,
                    &[0x0, 0x14, 0xD20, 0x10400, 0x0241_B000, 0x0404_0000],
                ),
                ip(41, 6, 0, 1, &[0xF20, 0x0240_A400]),
                ip(40, 6, 0, 1, &[0x4040, 0x0240_4800]),
                ip(4, 13, 0, 8, &[0x16800, 0x16A00, 0x0244_0000]),
                ip(12, 4, 0, 2, &[0x7800, 0x7E00, 0x0240_3000]),
                ip(271, 3, 1, 4, &[0x12, 0xC0, 0x34C0, 0x9000, 0x0240_3C00]),
                ip(34, 3, 3, 0, &[0x1A000, 0x0240_8800]),
            ]],
        }
    }
}

impl BlobSpec {
    /// This spec with the segment bases of the named IPs (amdgpu's hw_id names, instance 0 of
    /// die 0) replaced; an IP the spec lacks is added as version 0.0.0. Unknown names and more
    /// than 255 segments are errors naming the IP.
    pub fn with_bases<'a>(
        mut self,
        bases: impl IntoIterator<Item = (&'a str, &'a [u64])>,
    ) -> Result<Self> {
        for (name, segs) in bases {
            let hw_id = hw_id_by_name(name).ok_or_else(|| {
                Error::parse(
                    "discovery base",
                    name,
                    "not an amdgpu hw_id name (MP1, GC, NBIF, ...)",
                )
            })?;
            if segs.len() > 255 {
                return Err(Error::parse(
                    "discovery base",
                    name,
                    format!("{} segments; at most 255", segs.len()),
                ));
            }
            if self.dies.is_empty() {
                self.dies.push(Vec::new());
            }
            let die = &mut self.dies[0];
            match die.iter_mut().find(|i| i.hw_id == hw_id && i.instance == 0) {
                Some(i) => i.bases = segs.to_vec(),
                None => die.push(ip(hw_id, 0, 0, 0, segs)),
            }
        }
        Ok(self)
    }
}

/// Build a valid IP discovery binary (checksums filled in) from `spec`. Used by tests and by the
/// twin's device model. The result is `binary_size` bytes; pad it to [`DISCOVERY_TMR_SIZE`] to
/// place it in a VRAM image.
pub fn build_discovery_blob(spec: &BlobSpec) -> Vec<u8> {
    let ih = BINARY_HEADER_LEN; // the IP discovery table follows the binary header
    let width = if spec.base_addr_64_bit { 8 } else { 4 };
    let ndies = spec.dies.len().min(16);
    let mut out = vec![0u8; ih + IP_DISCOVERY_HEADER_LEN];
    let mut die_offsets = Vec::with_capacity(ndies);
    for (i, die) in spec.dies.iter().take(ndies).enumerate() {
        die_offsets.push(out.len());
        out.extend_from_slice(&(i as u16).to_le_bytes());
        out.extend_from_slice(&(die.len() as u16).to_le_bytes());
        for ip in die {
            out.extend_from_slice(&ip.hw_id.to_le_bytes());
            out.extend_from_slice(&[
                ip.instance,
                ip.bases.len() as u8,
                ip.major,
                ip.minor,
                ip.revision,
                ip.flags,
            ]);
            for &b in ip.bases.iter().take(255) {
                if width == 8 {
                    out.extend_from_slice(&b.to_le_bytes());
                } else {
                    out.extend_from_slice(&(b as u32).to_le_bytes());
                }
            }
        }
    }
    let table_size = out.len() - ih;
    // ip_discovery_header
    put_u32(&mut out, ih, DISCOVERY_TABLE_SIGNATURE);
    put_u16(&mut out, ih + 4, spec.table_version);
    put_u16(&mut out, ih + 6, table_size as u16);
    put_u32(&mut out, ih + 8, 0); // id
    put_u16(&mut out, ih + 12, ndies as u16);
    for (i, off) in die_offsets.iter().enumerate() {
        put_u16(&mut out, ih + 14 + i * 4, i as u16);
        put_u16(&mut out, ih + 14 + i * 4 + 2, *off as u16);
    }
    out[ih + IHDR_FLAGS_OFFSET] = u8::from(spec.base_addr_64_bit);
    // binary_header
    put_u32(&mut out, 0, BINARY_SIGNATURE);
    put_u16(&mut out, 4, 1);
    put_u16(&mut out, 6, 0);
    let total = out.len() as u16;
    put_u16(&mut out, 10, total);
    put_u16(&mut out, 12, ih as u16);
    let tsum = checksum(&out[ih..ih + table_size]);
    put_u16(&mut out, 14, tsum);
    put_u16(&mut out, 16, table_size as u16);
    let bsum = checksum(&out[BINARY_CHECKSUM_START..]);
    put_u16(&mut out, 8, bsum);
    out
}

/// [`build_discovery_blob`] of [`BlobSpec::phoenix_like`].
pub fn build_phoenix_blob() -> Vec<u8> {
    build_discovery_blob(&BlobSpec::phoenix_like())
}

pub(crate) fn put_u16(out: &mut [u8], at: usize, v: u16) {
    out[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

fn put_u32(out: &mut [u8], at: usize, v: u32) {
    out[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// Write the sysfs form of `discovery` under `device_dir/ip_discovery` (for tests and the twin;
/// the layout of `amdgpu_discovery.c: amdgpu_discovery_sysfs_ips`, with name symlinks).
pub fn write_sysfs(device_dir: &Path, discovery: &Discovery) -> Result<()> {
    let die_root = device_dir.join("ip_discovery").join("die");
    for die in &discovery.dies {
        let die_dir = die_root.join(die.id.to_string());
        fs::create_dir_all(&die_dir).map_err(|e| Error::io("create directory", &die_dir, e))?;
        fs::write(die_dir.join("num_ips"), format!("{}\n", die.ips.len()))
            .map_err(|e| Error::io("write", die_dir.join("num_ips"), e))?;
        for ip in &die.ips {
            let hw_dir = die_dir.join(ip.hw_id.to_string());
            let inst_dir = hw_dir.join(ip.instance.to_string());
            fs::create_dir_all(&inst_dir)
                .map_err(|e| Error::io("create directory", &inst_dir, e))?;
            if let Some(name) = hw_id_name(ip.hw_id) {
                let link = die_dir.join(name);
                if !link.exists() {
                    std::os::unix::fs::symlink(ip.hw_id.to_string(), &link)
                        .map_err(|e| Error::io("symlink", &link, e))?;
                }
            }
            let bases: String = ip.bases.iter().map(|b| format!("0x{b:08X}\n")).collect();
            for (name, val) in [
                ("hw_id", format!("{}\n", ip.hw_id)),
                ("num_instance", format!("{}\n", ip.instance)),
                ("major", format!("{}\n", ip.major)),
                ("minor", format!("{}\n", ip.minor)),
                ("revision", format!("{}\n", ip.revision)),
                ("harvest", format!("0x{:01X}\n", ip.flags & 0xf)),
                ("num_base_addresses", format!("{}\n", ip.bases.len())),
                ("base_addr", bases),
            ] {
                let p = inst_dir.join(name);
                fs::write(&p, val).map_err(|e| Error::io("write", p, e))?;
            }
        }
    }
    Ok(())
}
