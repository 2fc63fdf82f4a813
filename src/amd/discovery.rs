//! The AMD IP discovery table: parser (binary and sysfs forms), a builder for synthetic tables,
//! and the regs overlay that turns discovered segment bases into confirmed register bases.
//!
//! Layouts follow `drivers/gpu/drm/amd/include/discovery.h` (`struct binary_header`,
//! `struct ip_discovery_header`, `struct die_header`, `struct ip` / `ip_v3` / `ip_v4`) and the walk
//! in `amdgpu_discovery.c: amdgpu_discovery_reg_base_init`. All fields are little-endian and packed
//! (`#pragma pack(1)`).
//!
//! The table sits in VRAM at `(RCC_CONFIG_MEMSIZE << 20) - DISCOVERY_TMR_OFFSET`, 10 KiB long
//! (`amdgpu_discovery.c: amdgpu_discovery_read_binary_from_mem`, `amdgpu_discovery.h`); amdgpu reads
//! it through `MM_INDEX`/`MM_INDEX_HI`/`MM_DATA` (`amdgpu_device.c: amdgpu_device_mm_access`).
//! [`read_blob`] takes a dword reader so the MMIO layer can plug in either that window or BAR 0.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};

/// `discovery.h: BINARY_SIGNATURE`.
pub const BINARY_SIGNATURE: u32 = 0x2821_1407;
/// `discovery.h: DISCOVERY_TABLE_SIGNATURE` ("IPDS").
pub const DISCOVERY_TABLE_SIGNATURE: u32 = 0x5344_5049;
/// `discovery.h: TOTAL_TABLES`.
pub const TOTAL_TABLES: usize = 6;
/// `amdgpu_discovery.h: DISCOVERY_TMR_OFFSET`: the table starts this far below the end of VRAM.
pub const DISCOVERY_TMR_OFFSET: u64 = 64 << 10;
/// `amdgpu_discovery.h: DISCOVERY_TMR_SIZE`: how much amdgpu reads.
pub const DISCOVERY_TMR_SIZE: usize = 10 << 10;
/// `amdgpu_discovery.c: amdgpu_discovery_validate_ip` rejects hw ids at or above `HW_ID_MAX`
/// (`amdgpu_discovery.h`, 300).
pub const HW_ID_MAX: u16 = 300;

/// `sizeof(struct binary_header)`: u32 + 4 * u16 + 6 * table_info (4 * u16).
pub(crate) const BINARY_HEADER_LEN: usize = 12 + TOTAL_TABLES * 8;
/// Offset of the first byte covered by `binary_checksum`
/// (`offsetof(struct binary_header, binary_checksum) + sizeof(binary_checksum)`).
pub(crate) const BINARY_CHECKSUM_START: usize = 10;
/// `sizeof(struct ip_discovery_header)`: u32, u16, u16, u32, u16, die_info[16], u16 union.
pub(crate) const IP_DISCOVERY_HEADER_LEN: usize = 4 + 2 + 2 + 4 + 2 + 16 * 4 + 2;
/// Offset of the union byte whose bit 0 is `base_addr_64_bit` (version 4).
pub(crate) const IHDR_FLAGS_OFFSET: usize = IP_DISCOVERY_HEADER_LEN - 2;
/// `sizeof(struct die_header)`.
const DIE_HEADER_LEN: usize = 4;
/// `sizeof(struct ip)` without its flexible base-address array.
const IP_HEADER_LEN: usize = 8;

/// `soc15_hw_ip.h` hw ids and `amdgpu_discovery.c: hw_id_names` (the names sysfs links use).
const HW_IDS: &[(u16, &str)] = &[
    (1, "MP1"),
    (2, "MP2"),
    (3, "THM"),
    (4, "SMUIO"),
    (5, "FUSE"),
    (6, "CLKA"),
    (10, "PWR"),
    (11, "GC"),
    (12, "UVD"),
    (13, "AUDIO_AZ"),
    (14, "ACP"),
    (15, "DCI"),
    (16, "DCO"),
    (17, "XDMA"),
    (18, "DCEAZ"),
    (19, "SDPMUX"),
    (20, "NTB"),
    (24, "IOHC"),
    (28, "L2IMU"),
    (32, "VCE"),
    (34, "MMHUB"),
    (35, "ATHUB"),
    (36, "DBGU_NBIO"),
    (37, "DFX"),
    (38, "DBGU0"),
    (39, "DBGU1"),
    (40, "OSSSYS"),
    (41, "HDP"),
    (42, "SDMA0"),
    (43, "SDMA1"),
    (44, "ISP"),
    (45, "DBGU_IO"),
    (46, "DF"),
    (47, "CLKB"),
    (48, "FCH"),
    (49, "DFX_DAP"),
    (50, "L1IMU_PCIE"),
    (51, "L1IMU_NBIF"),
    (52, "L1IMU_IOAGR"),
    (53, "L1IMU3"),
    (54, "L1IMU4"),
    (55, "L1IMU5"),
    (56, "L1IMU6"),
    (57, "L1IMU7"),
    (58, "L1IMU8"),
    (59, "L1IMU9"),
    (60, "L1IMU10"),
    (61, "L1IMU11"),
    (62, "L1IMU12"),
    (63, "L1IMU13"),
    (64, "L1IMU14"),
    (65, "L1IMU15"),
    (66, "WAFLC"),
    (67, "FCH_USB_PD"),
    (68, "SDMA2"),
    (69, "SDMA3"),
    (70, "PCIE"),
    (80, "PCS"),
    (89, "DDCL"),
    (90, "SST"),
    (91, "LSDMA"),
    (100, "IOAGR"),
    (108, "NBIF"),
    (124, "IOAPIC"),
    (128, "SYSTEMHUB"),
    (144, "NTBCCP"),
    (150, "UMC"),
    (168, "SATA"),
    (170, "USB"),
    (176, "CCXSEC"),
    (200, "XGMI"),
    (216, "XGBE"),
    (255, "MP0"),
    (271, "DMU"),
    (272, "DIO"),
    (274, "DAZ"),
];

/// The amdgpu name of a hw id (`MP1` for 1), if it has one.
pub fn hw_id_name(hw_id: u16) -> Option<&'static str> {
    HW_IDS.iter().find(|(id, _)| *id == hw_id).map(|(_, n)| *n)
}

/// The hw id of an amdgpu IP name (case-insensitive; `VCN` is an alias of `UVD`, `NBIO` of `NBIF`,
/// as in `soc15_hw_ip.h: VCN_HWID` and `amdgpu_discovery.c: hw_id_map[NBIO_HWIP] = NBIF_HWID`).
pub fn hw_id_by_name(name: &str) -> Option<u16> {
    let up = name.to_ascii_uppercase();
    let canon = match up.as_str() {
        "VCN" => "UVD",
        "NBIO" => "NBIF",
        other => other,
    };
    HW_IDS.iter().find(|(_, n)| *n == canon).map(|(id, _)| *id)
}

/// A display name for any hw id: the amdgpu name or `hw_id_N`.
pub fn hw_id_label(hw_id: u16) -> String {
    hw_id_name(hw_id).map_or_else(|| format!("hw_id_{hw_id}"), str::to_string)
}

/// One entry of `binary_header.table_list`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct TableInfo {
    pub offset: u16,
    pub checksum: u16,
    pub size: u16,
}

/// The fields of `struct binary_header` that matter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct BinaryHeader {
    pub version_major: u16,
    pub version_minor: u16,
    pub checksum: u16,
    pub size: u16,
    pub tables: [TableInfo; TOTAL_TABLES],
}

/// One IP instance of a die.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct DiscoveredIp {
    pub hw_id: u16,
    /// amdgpu's name for `hw_id`, or `hw_id_N`.
    pub name: String,
    /// `number_instance` / `instance_number`.
    pub instance: u8,
    pub major: u8,
    pub minor: u8,
    pub revision: u8,
    /// Byte 7 as stored: harvest (low nibble) for table version < 3, sub_revision (low) and
    /// variant (high nibble) for version 3 and 4. Sysfs gives only the harvest nibble.
    pub flags: u8,
    /// Segment bases in dwords as amdgpu stores them in `adev->reg_offset` (64-bit entries are
    /// truncated: `lower_32_bits(..) & 0x3FFFFFFF`, `amdgpu_discovery_reg_base_init`).
    pub bases: Vec<u32>,
}

impl DiscoveredIp {
    /// `major.minor.revision`, the form amdgpu logs and the regs file uses.
    pub fn version(&self) -> String {
        format!("{}.{}.{}", self.major, self.minor, self.revision)
    }
}

/// One die of the table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Die {
    pub id: u16,
    pub ips: Vec<DiscoveredIp>,
}

/// A parsed IP discovery table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Discovery {
    /// Present when parsed from the binary; sysfs has no header.
    pub header: Option<BinaryHeader>,
    /// `ip_discovery_header.version` (binary form only).
    pub table_version: Option<u16>,
    /// Whether bases were stored as 64-bit values (version 4 `base_addr_64_bit`).
    pub base_addr_64_bit: bool,
    pub dies: Vec<Die>,
    /// Faults tolerated in lenient mode (checksums, die ids, odd versions).
    pub warnings: Vec<String>,
}

impl Discovery {
    /// Every IP instance of every die, in table order.
    /// A table with nothing in it (no device table was found).
    pub fn empty() -> Discovery {
        Discovery {
            header: None,
            table_version: None,
            base_addr_64_bit: false,
            dies: vec![],
            warnings: vec![],
        }
    }

    pub fn ips(&self) -> impl Iterator<Item = &DiscoveredIp> {
        self.dies.iter().flat_map(|d| d.ips.iter())
    }

    /// The first IP with this hw id and instance.
    pub fn find(&self, hw_id: u16, instance: u8) -> Option<&DiscoveredIp> {
        self.ips()
            .find(|ip| ip.hw_id == hw_id && ip.instance == instance)
    }

    /// `major.minor.revision` of MP1 instance 0, which picks the SMU mailbox.
    pub fn mp1_version(&self) -> Option<String> {
        self.find(1, 0).map(DiscoveredIp::version)
    }
}

/// How faults that amdgpu would refuse are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Any checksum, signature or consistency fault is an error (amdgpu's behaviour).
    Strict,
    /// Checksum and consistency faults become warnings; structure faults (out of bounds, bad
    /// signature) are still errors since nothing after them can be trusted.
    Lenient,
}

fn fault(field: &str, offset: usize, reason: impl std::fmt::Display) -> Error {
    Error::parse(
        "IP discovery table",
        format!("{field} at byte {offset:#x}"),
        reason.to_string(),
    )
}

/// Little-endian, bounds-checked reads.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn slice(&self, field: &str, offset: usize, len: usize) -> Result<&[u8]> {
        offset
            .checked_add(len)
            .and_then(|end| self.0.get(offset..end))
            .ok_or_else(|| {
                fault(
                    field,
                    offset,
                    format!("{len} bytes needed, table is {} bytes", self.0.len()),
                )
            })
    }
    fn u8(&self, field: &str, offset: usize) -> Result<u8> {
        Ok(self.slice(field, offset, 1)?[0])
    }
    fn u16(&self, field: &str, offset: usize) -> Result<u16> {
        let b = self.slice(field, offset, 2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&self, field: &str, offset: usize) -> Result<u32> {
        let b = self.slice(field, offset, 4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&self, field: &str, offset: usize) -> Result<u64> {
        let b = self.slice(field, offset, 8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
}

/// `amdgpu_discovery.c: amdgpu_discovery_calculate_checksum`: u16 wrapping byte sum.
pub fn checksum(data: &[u8]) -> u16 {
    data.iter()
        .fold(0u16, |acc, &b| acc.wrapping_add(u16::from(b)))
}

/// A consistency fault: an error when strict, a warning when lenient.
fn soft(mode: Mode, warnings: &mut Vec<String>, e: Error) -> Result<()> {
    match mode {
        Mode::Strict => Err(e),
        Mode::Lenient => {
            warnings.push(e.to_string());
            Ok(())
        }
    }
}

/// Parse an IP discovery binary (as read from VRAM, or `amdgpu/ip_discovery.bin`).
pub fn parse(bytes: &[u8], mode: Mode) -> Result<Discovery> {
    let b = Bytes(bytes);
    let mut warnings = Vec::new();

    let sig = b.u32("binary_signature", 0)?;
    if sig != BINARY_SIGNATURE {
        return Err(fault(
            "binary_signature",
            0,
            format!("{sig:#010x}, expected {BINARY_SIGNATURE:#010x}"),
        ));
    }
    b.slice("binary_header", 0, BINARY_HEADER_LEN)?;
    let version_major = b.u16("version_major", 4)?;
    let version_minor = b.u16("version_minor", 6)?;
    let bin_checksum = b.u16("binary_checksum", 8)?;
    let bin_size = b.u16("binary_size", 10)?;
    let mut tables = [TableInfo {
        offset: 0,
        checksum: 0,
        size: 0,
    }; TOTAL_TABLES];
    for (i, t) in tables.iter_mut().enumerate() {
        let at = 12 + i * 8;
        *t = TableInfo {
            offset: b.u16("table_list.offset", at)?,
            checksum: b.u16("table_list.checksum", at + 2)?,
            size: b.u16("table_list.size", at + 4)?,
        };
    }
    let header = BinaryHeader {
        version_major,
        version_minor,
        checksum: bin_checksum,
        size: bin_size,
        tables,
    };
    if version_major >= 2 {
        // binary_header_v2 has num_tables where v1 has table_list[0]; amdgpu reads v1 here.
        soft(
            mode,
            &mut warnings,
            fault(
                "version_major",
                4,
                format!("{version_major} (binary_header_v2 layout is not supported; read as v1)"),
            ),
        )?;
    }

    // Binary checksum: byte sum of [10, binary_size).
    let size = usize::from(bin_size);
    if size < BINARY_HEADER_LEN || size > bytes.len() {
        soft(
            mode,
            &mut warnings,
            fault(
                "binary_size",
                10,
                format!(
                    "{size} is outside {BINARY_HEADER_LEN}..={} (the bytes given)",
                    bytes.len()
                ),
            ),
        )?;
    } else {
        let sum = checksum(&bytes[BINARY_CHECKSUM_START..size]);
        if sum != bin_checksum {
            soft(
                mode,
                &mut warnings,
                fault(
                    "binary_checksum",
                    8,
                    format!("stored {bin_checksum:#06x}, computed {sum:#06x}"),
                ),
            )?;
        }
    }

    let t0 = tables[0];
    let ih = usize::from(t0.offset);
    if ih == 0 {
        return Err(fault(
            "table_list[IP_DISCOVERY].offset",
            12,
            "0: the binary has no IP discovery table",
        ));
    }
    let isig = b.u32("ip_discovery_header.signature", ih)?;
    if isig != DISCOVERY_TABLE_SIGNATURE {
        return Err(fault(
            "ip_discovery_header.signature",
            ih,
            format!("{isig:#010x}, expected {DISCOVERY_TABLE_SIGNATURE:#010x} (\"IPDS\")"),
        ));
    }
    b.slice("ip_discovery_header", ih, IP_DISCOVERY_HEADER_LEN)?;
    let table_version = b.u16("ip_discovery_header.version", ih + 4)?;
    let table_size = b.u16("ip_discovery_header.size", ih + 6)?;
    match b.slice("IP discovery table", ih, usize::from(table_size)) {
        Ok(t) => {
            let sum = checksum(t);
            if sum != t0.checksum {
                soft(
                    mode,
                    &mut warnings,
                    fault(
                        "table_list[IP_DISCOVERY].checksum",
                        14,
                        format!("stored {:#06x}, computed {sum:#06x}", t0.checksum),
                    ),
                )?;
            }
        }
        Err(e) => soft(mode, &mut warnings, e)?,
    }
    let num_dies = b.u16("ip_discovery_header.num_dies", ih + 12)?;
    if num_dies > 16 {
        return Err(fault(
            "ip_discovery_header.num_dies",
            ih + 12,
            format!("{num_dies}, at most 16 (die_info[16])"),
        ));
    }
    let flag64 = b.u8(
        "ip_discovery_header.base_addr_64_bit",
        ih + IHDR_FLAGS_OFFSET,
    )? & 1
        == 1;
    let base_addr_64_bit = if flag64 && table_version < 4 {
        soft(
            mode,
            &mut warnings,
            fault(
                "ip_discovery_header.base_addr_64_bit",
                ih + IHDR_FLAGS_OFFSET,
                format!("set in a version {table_version} table (only version 4 has it)"),
            ),
        )?;
        false
    } else {
        flag64
    };
    if !(1..=4).contains(&table_version) {
        soft(
            mode,
            &mut warnings,
            fault(
                "ip_discovery_header.version",
                ih + 4,
                format!("{table_version}, known versions are 1 to 4"),
            ),
        )?;
    }

    let mut dies = Vec::with_capacity(usize::from(num_dies));
    for i in 0..usize::from(num_dies) {
        let info_at = ih + 14 + i * 4;
        let die_offset = usize::from(b.u16("die_info.die_offset", info_at + 2)?);
        let die_id = b.u16("die_header.die_id", die_offset)?;
        let num_ips = b.u16("die_header.num_ips", die_offset + 2)?;
        if usize::from(die_id) != i {
            // amdgpu_discovery_reg_base_init: "invalid die id %d, expected %d" → -EINVAL.
            soft(
                mode,
                &mut warnings,
                fault(
                    "die_header.die_id",
                    die_offset,
                    format!("{die_id}, expected {i}"),
                ),
            )?;
        }
        let mut ip_offset = die_offset + DIE_HEADER_LEN;
        let mut ips = Vec::with_capacity(usize::from(num_ips).min(256));
        for _ in 0..num_ips {
            let at = ip_offset;
            let hw_id = b.u16("ip.hw_id", at)?;
            let instance = b.u8("ip.number_instance", at + 2)?;
            let nbase = usize::from(b.u8("ip.num_base_address", at + 3)?);
            let major = b.u8("ip.major", at + 4)?;
            let minor = b.u8("ip.minor", at + 5)?;
            let revision = b.u8("ip.revision", at + 6)?;
            let flags = b.u8("ip.flags", at + 7)?;
            let width = if base_addr_64_bit { 8 } else { 4 };
            let mut bases = Vec::with_capacity(nbase);
            for k in 0..nbase {
                let a = at + IP_HEADER_LEN + k * width;
                let v = if base_addr_64_bit {
                    (b.u64("ip.base_address_64", a)? & 0x3FFF_FFFF) as u32
                } else {
                    b.u32("ip.base_address", a)?
                };
                bases.push(v);
            }
            ip_offset = at + IP_HEADER_LEN + nbase * width;
            if hw_id >= HW_ID_MAX {
                // amdgpu_discovery_validate_ip skips such an entry but keeps walking.
                warnings.push(format!(
                    "ip at byte {at:#x}: hw_id {hw_id} >= HW_ID_MAX ({HW_ID_MAX}), skipped as amdgpu does"
                ));
                continue;
            }
            ips.push(DiscoveredIp {
                hw_id,
                name: hw_id_label(hw_id),
                instance,
                major,
                minor,
                revision,
                flags,
                bases,
            });
        }
        dies.push(Die { id: die_id, ips });
    }

    Ok(Discovery {
        header: Some(header),
        table_version: Some(table_version),
        base_addr_64_bit,
        dies,
        warnings,
    })
}

/// Read `len` bytes of an aperture starting at byte `pos`, one dword at a time.
///
/// `read_dword` gets a byte position (a multiple of 4) in whatever aperture the caller maps
/// (VRAM through `MM_INDEX`/`MM_DATA`, or BAR 0) and returns that dword.
pub fn read_blob(
    read_dword: &mut dyn FnMut(u64) -> Result<u32>,
    pos: u64,
    len: usize,
) -> Result<Vec<u8>> {
    if pos % 4 != 0 {
        return Err(Error::parse(
            "aperture position",
            format!("{pos:#x}"),
            "not dword aligned",
        ));
    }
    let mut out = Vec::with_capacity(len.next_multiple_of(4));
    let mut at = pos;
    while out.len() < len {
        out.extend_from_slice(&read_dword(at)?.to_le_bytes());
        at = at.checked_add(4).ok_or_else(|| Error::OutOfBounds {
            what: "discovery aperture".into(),
            offset: at,
            width: 4,
            len: u64::MAX,
        })?;
    }
    out.truncate(len);
    Ok(out)
}

/// Where amdgpu finds the table in VRAM: `(memsize_mib << 20) - DISCOVERY_TMR_OFFSET`
/// (`amdgpu_discovery.c: amdgpu_discovery_read_binary_from_mem`).
pub fn vram_position(memsize_mib: u32) -> Result<u64> {
    if memsize_mib == u32::MAX {
        return Err(Error::failed(
            "RCC_CONFIG_MEMSIZE reads all-ones: the register BAR is dead",
        ));
    }
    (u64::from(memsize_mib) << 20)
        .checked_sub(DISCOVERY_TMR_OFFSET)
        .ok_or_else(|| {
            Error::failed(format!(
                "RCC_CONFIG_MEMSIZE is {memsize_mib} MiB, too small to hold the discovery table"
            ))
        })
}

/// Read the discovery table from VRAM through a dword reader of the VRAM aperture and parse it.
pub fn read_from_vram(
    read_dword: &mut dyn FnMut(u64) -> Result<u32>,
    memsize_mib: u32,
    mode: Mode,
) -> Result<Discovery> {
    let pos = vram_position(memsize_mib)?;
    let blob = read_blob(read_dword, pos, DISCOVERY_TMR_SIZE)?;
    parse(&blob, mode)
}

fn read_attr(dir: &Path, name: &str) -> Result<String> {
    let p = dir.join(name);
    fs::read_to_string(&p)
        .map(|s| s.trim().to_string())
        .map_err(|e| Error::io("read", p, e))
}

fn attr_num<T: std::str::FromStr>(dir: &Path, name: &str) -> Result<T> {
    let s = read_attr(dir, name)?;
    s.parse().map_err(|_| {
        Error::parse(
            "ip_discovery attribute",
            dir.join(name).display().to_string(),
            format!("'{s}' is not a number"),
        )
    })
}

fn parse_hex_u32(s: &str) -> Option<u32> {
    let t = s.trim();
    let t = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    u32::from_str_radix(t, 16).ok()
}

/// Numeric directory entries of `dir`, sorted (the kobjects; named entries are symlinks to them).
fn numeric_entries(dir: &Path) -> Result<Vec<(u32, PathBuf)>> {
    let rd = fs::read_dir(dir).map_err(|e| Error::io("read directory", dir, e))?;
    let mut out = Vec::new();
    for ent in rd {
        let ent = ent.map_err(|e| Error::io("read directory", dir, e))?;
        let name = ent.file_name();
        if let Some(n) = name.to_str().and_then(|s| s.parse::<u32>().ok()) {
            out.push((n, ent.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Parse the sysfs form amdgpu publishes while bound (`amdgpu_discovery.c:
/// amdgpu_discovery_sysfs_init`): `<device>/ip_discovery/die/<die>/<hw_id>/<instance>/` with the
/// attributes `hw_id`, `num_instance`, `major`, `minor`, `revision`, `harvest`, `base_addr` (one
/// `0x%08X` per line). `<die>/<NAME>` entries are symlinks to the numeric `<hw_id>` directories and
/// are skipped. `device_dir` is the PCI device directory (e.g. `<sysfs>/bus/pci/devices/<bdf>`).
pub fn parse_sysfs(device_dir: &Path) -> Result<Discovery> {
    let die_root = device_dir.join("ip_discovery").join("die");
    let mut dies = Vec::new();
    for (die_id, die_dir) in numeric_entries(&die_root)? {
        let die_id = u16::try_from(die_id).map_err(|_| {
            Error::parse(
                "ip_discovery die",
                die_dir.display().to_string(),
                "die number out of range",
            )
        })?;
        let mut ips = Vec::new();
        for (hw_id, hw_dir) in numeric_entries(&die_dir)? {
            let Ok(hw_id) = u16::try_from(hw_id) else {
                continue;
            };
            for (_inst, inst_dir) in numeric_entries(&hw_dir)? {
                let attr_hw: u16 = attr_num(&inst_dir, "hw_id")?;
                if attr_hw != hw_id {
                    return Err(Error::parse(
                        "ip_discovery attribute",
                        inst_dir.join("hw_id").display().to_string(),
                        format!("{attr_hw} differs from its directory {hw_id}"),
                    ));
                }
                let harvest = match read_attr(&inst_dir, "harvest") {
                    Ok(s) => parse_hex_u32(&s).unwrap_or(0) as u8,
                    Err(_) => 0, // older kernels have no harvest attribute
                };
                let raw = read_attr(&inst_dir, "base_addr")?;
                let mut bases = Vec::new();
                for line in raw.lines().filter(|l| !l.trim().is_empty()) {
                    bases.push(parse_hex_u32(line).ok_or_else(|| {
                        Error::parse(
                            "ip_discovery attribute",
                            inst_dir.join("base_addr").display().to_string(),
                            format!("'{}' is not a 0x%08X base", line.trim()),
                        )
                    })?);
                }
                ips.push(DiscoveredIp {
                    hw_id,
                    name: hw_id_label(hw_id),
                    instance: attr_num(&inst_dir, "num_instance")?,
                    major: attr_num(&inst_dir, "major")?,
                    minor: attr_num(&inst_dir, "minor")?,
                    revision: attr_num(&inst_dir, "revision")?,
                    flags: harvest & 0xf,
                    bases,
                });
            }
        }
        dies.push(Die { id: die_id, ips });
    }
    if dies.is_empty() {
        return Err(Error::not_found(
            "ip_discovery die",
            die_root.display().to_string(),
        ));
    }
    Ok(Discovery {
        header: None,
        table_version: None,
        base_addr_64_bit: false,
        dies,
        warnings: Vec::new(),
    })
}

/// A regs overlay (TOML in the `regs/` format) that sets every discovered segment base of every
/// named IP, marked `confirmed = true` with `source` naming where it came from
/// (e.g. `"ip discovery on 0000:c5:00.0"`). Load it with `--regs DIR`; see docs/regs.md.
pub fn overlay_from_bases(asic: &str, discovery: &Discovery, source: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Generated by resetlab from the device's IP discovery table; overrides segment bases."
    );
    let _ = writeln!(s, "asic = {}", toml_str(asic));
    if let Some(v) = discovery.mp1_version() {
        let _ = writeln!(s, "# MP1 version on this device: {v}");
    }
    let mut seen = BTreeSet::new();
    for ip in discovery.ips() {
        if hw_id_name(ip.hw_id).is_none() {
            continue;
        }
        for (idx, base) in ip.bases.iter().enumerate() {
            if !seen.insert((ip.hw_id, ip.instance, idx)) {
                continue; // a later die repeating an instance number: amdgpu keeps the last, we the first
            }
            let _ = writeln!(s);
            let _ = writeln!(s, "[[bases]]");
            let _ = writeln!(s, "ip = {}", toml_str(&ip.name));
            let _ = writeln!(s, "instance = {}", ip.instance);
            let _ = writeln!(s, "base_idx = {idx}");
            let _ = writeln!(s, "base = {base:#x}");
            let _ = writeln!(
                s,
                "source = {}",
                toml_str(&format!("{source} (v{})", ip.version()))
            );
            let _ = writeln!(s, "confirmed = true");
        }
    }
    s
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::discovery_blob::{
        build_discovery_blob, build_phoenix_blob, put_u16, write_sysfs, BlobSpec,
    };

    #[test]
    fn phoenix_blob_round_trips() {
        let blob = build_phoenix_blob();
        let d = parse(&blob, Mode::Strict).unwrap();
        assert!(d.warnings.is_empty(), "{:?}", d.warnings);
        assert_eq!(d.table_version, Some(3));
        let mp1 = d.find(1, 0).unwrap();
        assert_eq!(mp1.name, "MP1");
        assert_eq!(mp1.version(), "13.0.4");
        assert_eq!(mp1.bases[1], 0x16000);
        assert_eq!(d.find(108, 0).unwrap().bases[2], 0xD20);
        assert_eq!(d.dies[0].ips.len(), BlobSpec::phoenix_like().dies[0].len());
    }

    #[test]
    fn sixty_four_bit_bases_are_truncated_like_amdgpu() {
        let mut spec = BlobSpec::phoenix_like();
        spec.table_version = 4;
        spec.base_addr_64_bit = true;
        spec.dies[0][0].bases[0] = 0xABCD_0000_C000_1260;
        let d = parse(&build_discovery_blob(&spec), Mode::Strict).unwrap();
        assert!(d.base_addr_64_bit);
        assert_eq!(d.find(11, 0).unwrap().bases[0], 0x1260);
        assert_eq!(d.find(1, 0).unwrap().bases[1], 0x16000);
    }

    #[test]
    fn bad_binary_checksum_is_an_error_naming_the_field_and_a_warning_when_lenient() {
        let mut blob = build_phoenix_blob();
        let last = blob.len() - 1;
        blob[last] ^= 0x5a; // inside the IP table: both checksums break
        let e = parse(&blob, Mode::Strict).unwrap_err().to_string();
        assert!(e.contains("binary_checksum at byte 0x8"), "{e}");
        let d = parse(&blob, Mode::Lenient).unwrap();
        assert_eq!(d.warnings.len(), 2, "{:?}", d.warnings);
        assert!(d.warnings[1].contains("table_list[IP_DISCOVERY].checksum"));
    }

    #[test]
    fn wrong_signatures_are_errors_even_when_lenient() {
        let mut blob = build_phoenix_blob();
        blob[0] = 0;
        let e = parse(&blob, Mode::Lenient).unwrap_err().to_string();
        assert!(e.contains("binary_signature at byte 0x0"), "{e}");
        let mut blob = build_phoenix_blob();
        blob[BINARY_HEADER_LEN] = b'X';
        let e = parse(&blob, Mode::Lenient).unwrap_err().to_string();
        assert!(e.contains("ip_discovery_header.signature"), "{e}");
    }

    #[test]
    fn truncated_blob_names_the_field_it_could_not_read() {
        let blob = build_phoenix_blob();
        let cut = &blob[..blob.len() - 6];
        let e = parse(cut, Mode::Lenient).unwrap_err().to_string();
        assert!(e.contains("ip.base_address"), "{e}");
    }

    #[test]
    fn wrong_die_id_is_refused_when_strict() {
        let mut blob = build_phoenix_blob();
        let die_at = BINARY_HEADER_LEN + IP_DISCOVERY_HEADER_LEN;
        blob[die_at] = 3;
        // keep checksums valid so only the die id is wrong
        let ih = BINARY_HEADER_LEN;
        let tsize = usize::from(u16::from_le_bytes([blob[ih + 6], blob[ih + 7]]));
        let t = checksum(&blob[ih..ih + tsize]);
        put_u16(&mut blob, 14, t);
        let b = checksum(&blob[BINARY_CHECKSUM_START..]);
        put_u16(&mut blob, 8, b);
        let e = parse(&blob, Mode::Strict).unwrap_err().to_string();
        assert!(e.contains("die_header.die_id"), "{e}");
        assert_eq!(parse(&blob, Mode::Lenient).unwrap().warnings.len(), 1);
    }

    #[test]
    fn read_blob_reads_dwords_from_the_given_position() {
        let blob = build_phoenix_blob();
        let memsize_mib = 512u32;
        let pos = vram_position(memsize_mib).unwrap();
        assert_eq!(pos, (512 << 20) - 0x10000);
        let mut reads = 0usize;
        let mut rd = |at: u64| -> Result<u32> {
            reads += 1;
            let i = usize::try_from(at - pos).unwrap();
            let mut w = [0u8; 4];
            for (k, b) in w.iter_mut().enumerate() {
                *b = blob.get(i + k).copied().unwrap_or(0);
            }
            Ok(u32::from_le_bytes(w))
        };
        let d = read_from_vram(&mut rd, memsize_mib, Mode::Strict).unwrap();
        assert_eq!(reads, DISCOVERY_TMR_SIZE / 4);
        assert_eq!(d.mp1_version().as_deref(), Some("13.0.4"));
        let e = vram_position(u32::MAX).unwrap_err();
        assert!(
            matches!(&e, Error::Failed { what } if what.contains("reads all-ones: the register BAR is dead")),
            "{e:?}"
        );
        let e = vram_position(0).unwrap_err();
        assert!(
            matches!(&e, Error::Failed { what } if what.contains("is 0 MiB, too small")),
            "{e:?}"
        );
    }

    #[test]
    fn sysfs_form_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let d = parse(&build_phoenix_blob(), Mode::Strict).unwrap();
        write_sysfs(dir.path(), &d).unwrap();
        assert!(dir.path().join("ip_discovery/die/0/MP1").exists());
        let s = parse_sysfs(dir.path()).unwrap();
        let mut want: Vec<_> = d.ips().cloned().collect();
        let mut got: Vec<_> = s.ips().cloned().collect();
        want.sort_by_key(|i| (i.hw_id, i.instance));
        got.sort_by_key(|i| (i.hw_id, i.instance));
        assert_eq!(got, want);
    }

    #[test]
    fn sysfs_rejects_a_bad_base_line() {
        let dir = tempfile::tempdir().unwrap();
        let d = parse(&build_phoenix_blob(), Mode::Strict).unwrap();
        write_sysfs(dir.path(), &d).unwrap();
        let p = dir.path().join("ip_discovery/die/0/1/0/base_addr");
        fs::write(&p, "0x00016000\nzz\n").unwrap();
        let e = parse_sysfs(dir.path()).unwrap_err().to_string();
        assert!(e.contains("base_addr") && e.contains("'zz'"), "{e}");
    }

    #[test]
    fn overlay_lists_every_named_base_as_confirmed() {
        let d = parse(&build_phoenix_blob(), Mode::Strict).unwrap();
        let o = overlay_from_bases("phoenix", &d, "ip discovery on 0000:c5:00.0");
        let t: toml::Table = toml::from_str(&o).unwrap();
        let bases = t["bases"].as_array().unwrap();
        let n: usize = d.ips().map(|i| i.bases.len()).sum();
        assert_eq!(bases.len(), n);
        let mp1_1 = bases
            .iter()
            .find(|b| b["ip"].as_str() == Some("MP1") && b["base_idx"].as_integer() == Some(1))
            .unwrap();
        assert_eq!(mp1_1["base"].as_integer(), Some(0x16000));
        assert_eq!(mp1_1["confirmed"].as_bool(), Some(true));
        assert!(mp1_1["source"]
            .as_str()
            .unwrap()
            .starts_with("ip discovery on 0000:c5:00.0"));
    }

    #[test]
    fn hw_id_names_match_amdgpu() {
        assert_eq!(hw_id_name(1), Some("MP1"));
        assert_eq!(hw_id_name(255), Some("MP0"));
        assert_eq!(hw_id_name(108), Some("NBIF"));
        assert_eq!(hw_id_by_name("nbio"), Some(108));
        assert_eq!(hw_id_by_name("VCN"), Some(12));
        assert_eq!(hw_id_label(7), "hw_id_7");
    }
}
