//! Where a device's register bases come from, best first:
//!
//! 1. `sysfs ip_discovery`: `/sys/bus/pci/devices/<bdf>/ip_discovery`, which
//!    amdgpu writes while it is bound (`amdgpu_discovery.c:
//!    amdgpu_discovery_sysfs_init`);
//! 2. `device table`: the IP discovery binary read from the device's VRAM, as
//!    amdgpu reads it before anything else (`amdgpu_discovery.c:
//!    amdgpu_discovery_read_binary_from_mem`: wait for MP0_SMN_C2PMSG_33 bit
//!    31, pos = (RCC_CONFIG_MEMSIZE << 20) − DISCOVERY_TMR_OFFSET, then
//!    `amdgpu_device_vram_access` → `amdgpu_device_mm_access`: per dword
//!    MM_INDEX ← pos | 0x80000000, MM_INDEX_HI ← pos >> 31 when it changes,
//!    read MM_DATA), with its signature and checksums verified. This is the
//!    source on a passthrough host, where amdgpu is never bound. It writes the
//!    index registers (journalled; put back after), so it needs root, the
//!    device in D0 with memory decoding on, and is refused while a VM holds
//!    the device (its VFIO group open) or amdgpu owns the window. The table
//!    is cached per boot under the run directory
//!    (`<run>/resetlab/bases/<bdf>.<boot_id>.bin`, the raw binary, re-verified
//!    on load), so the hook does not reread VRAM in every phase;
//! 3. `regs/ static`: the register file's values, most of them unconfirmed
//!    (regs/phoenix.toml says which).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::amd::discovery::{self, Discovery, Mode, DISCOVERY_TMR_SIZE};
use crate::amd::regio::{Barrier, RegIo};
use crate::amd::regs::{Asic, BaseCheck, RegsDb};
use crate::error::{Error, Result};
use crate::journal::Journal;
use crate::machine::Machine;
use crate::pci::mmio::{Access, BarMap, SystemFiles};
use crate::pci::session::MemoryDecoding;
use crate::pci::sysfs::hex_attr;
use crate::pci::{Bdf, Device, Topology};

/// Where a set of bases came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BaseSource {
    /// The IP discovery table read from the device's VRAM (now or cached this boot).
    DeviceTable,
    /// amdgpu's sysfs `ip_discovery` tree.
    SysfsIpDiscovery,
    /// A discovery binary given by the user (`regs bases --blob`).
    Blob,
    /// The register file (regs/), unconfirmed where it says so.
    Static,
}

impl std::fmt::Display for BaseSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BaseSource::DeviceTable => "device table",
            BaseSource::SysfsIpDiscovery => "sysfs ip_discovery",
            BaseSource::Blob => "discovery blob",
            BaseSource::Static => "regs/ static",
        })
    }
}

/// A device's bases and where they came from.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceBases {
    pub source: BaseSource,
    /// The path or place read (VRAM position, sysfs dir, blob file, regs files).
    pub from: String,
    /// The per-boot cache file used or written (device table only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<String>,
    /// Whether the table came from that cache rather than VRAM now.
    pub cached: bool,
    #[serde(skip)]
    pub discovery: Option<Discovery>,
    /// The binary (device table, blob).
    #[serde(skip)]
    pub raw: Option<Vec<u8>>,
    /// Why a better source was not used.
    pub notes: Vec<String>,
}

impl DeviceBases {
    fn fallback(notes: Vec<String>) -> DeviceBases {
        DeviceBases {
            source: BaseSource::Static,
            from: "regs/".into(),
            cache: None,
            cached: false,
            discovery: None,
            raw: None,
            notes,
        }
    }

    /// `asic` with these bases (a clone of it for `Static`).
    pub fn apply(&self, asic: &Asic) -> Result<Asic> {
        match &self.discovery {
            Some(d) => asic.with_discovered_bases(d, &self.label()),
            None => Ok(asic.clone()),
        }
    }

    /// One phrase for output: "device table (VRAM 0x1fff0000, cached this boot)".
    pub fn label(&self) -> String {
        match self.source {
            BaseSource::Static => "regs/ static".to_string(),
            s => format!(
                "{s} ({}{})",
                self.from,
                if self.cached {
                    ", cached this boot"
                } else {
                    ""
                }
            ),
        }
    }
}

/// This boot's id (`Machine::boot_id_path`; a twin's or snapshot's beside its tree).
pub fn boot_id(host: &Machine) -> Option<String> {
    let id = fs::read_to_string(host.boot_id_path())
        .ok()?
        .trim()
        .to_string();
    let ok = !id.is_empty() && id.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
    ok.then_some(id)
}

/// `<run>/resetlab/bases/<bdf>.<boot_id>.bin`.
pub fn cache_path(host: &Machine, dev: &Device) -> Option<PathBuf> {
    let id = boot_id(host)?;
    Some(
        host.state_dir()
            .join("bases")
            .join(format!("{}.{id}.bin", dev.bdf)),
    )
}

fn load_cache(host: &Machine, dev: &Device) -> Option<(PathBuf, Vec<u8>, Discovery)> {
    let p = cache_path(host, dev)?;
    let raw = fs::read(&p).ok()?;
    let d = discovery::parse(&raw, Mode::Strict).ok()?;
    Some((p, raw, d))
}

fn store_cache(host: &Machine, dev: &Device, raw: &[u8]) -> Result<PathBuf> {
    let p = cache_path(host, dev).ok_or_else(|| {
        Error::not_found(
            "boot id",
            format!("{} (no cache)", host.boot_id_path().display()),
        )
    })?;
    let dir = p.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
    let tmp = p.with_extension("tmp");
    fs::write(&tmp, raw).map_err(|e| Error::io("write", &tmp, e))?;
    fs::rename(&tmp, &p).map_err(|e| Error::io("rename", &p, e))?;
    Ok(p)
}

/// Who holds the device's VFIO group open (a VM), if anyone.
pub fn vm_holder(host: &Machine, dev: &Device) -> Option<String> {
    let g = dev.iommu_group?;
    let open = crate::pci::holders::OpenFiles::scan_vfio(host);
    let holders = open.holders_of(&host.vfio_group_node(g));
    if holders.is_empty() {
        return None;
    }
    let who: Vec<String> = holders.iter().map(|h| h.to_string()).collect();
    Some(format!("its VFIO group {g} is open by {}", who.join(", ")))
}

/// The sysfs table or this boot's cache: what can be had without touching
/// the device. `None` when neither exists.
pub fn known(host: &Machine, dev: &Device) -> Option<DeviceBases> {
    let sys = dev.dir.join("ip_discovery");
    if sys.is_dir() {
        if let Ok(d) = discovery::parse_sysfs(&dev.dir) {
            return Some(DeviceBases {
                source: BaseSource::SysfsIpDiscovery,
                from: sys.display().to_string(),
                cache: None,
                cached: false,
                discovery: Some(d),
                raw: None,
                notes: vec![],
            });
        }
    }
    let (p, raw, d) = load_cache(host, dev)?;
    Some(DeviceBases {
        source: BaseSource::DeviceTable,
        from: "VRAM".into(),
        cache: Some(p.display().to_string()),
        cached: true,
        discovery: Some(d),
        raw: Some(raw),
        notes: vec![],
    })
}

/// Reads the IP discovery binary from VRAM over `io` (the register BAR, with
/// memory decoding on): checks IFWI init is done, finds the table from
/// RCC_CONFIG_MEMSIZE, reads its `binary_size` bytes through the MM window
/// (index writes journalled, MM_INDEX/MM_INDEX_HI put back after) and
/// verifies it strictly. Errors in dry-run (the index writes are not made).
pub fn read_vram_table(io: &mut RegIo, asic: &Asic, journal: &mut Journal) -> Result<Vec<u8>> {
    let loc = asic.file.discovery.as_ref().ok_or_else(|| {
        Error::not_found(
            "IP discovery location",
            format!("{} (regs/ has no [discovery])", asic.asic_name()),
        )
    })?;
    if journal.dry_run {
        return Err(Error::refused(
            "dry run: reading the table writes MM_INDEX for every dword; not made",
        ));
    }
    if let Ok(r) = asic.resolve("MP0_SMN_C2PMSG_33") {
        let v = io.read_direct(r.bar_offset)?;
        if v == u32::MAX || v & 0x8000_0000 == 0 {
            return Err(Error::failed(format!(
                "MP0_SMN_C2PMSG_33 = {v:#010x}: IFWI init not done (bit 31 clear; amdgpu_discovery_read_binary_from_mem waits for it), the table is not in VRAM yet"
            )));
        }
    }
    let memsize = io.read_direct(asic.resolve(&loc.memsize_register)?.bar_offset)?;
    let pos = discovery::vram_position(memsize)?;
    let index = asic.resolve(&loc.index)?.bar_offset;
    let index_hi = asic.resolve(&loc.index_hi)?.bar_offset;
    let data = asic.resolve(&loc.data)?.bar_offset;
    let saved = (io.read_direct(index)?, io.read_direct(index_hi)?);
    let dev = *io.device();
    let mut hi_now: Option<u32> = None;
    let mut read = |io: &mut RegIo, journal: &mut Journal, at: u64| -> Result<u32> {
        io.bar_mut().write32(
            journal,
            &dev,
            index,
            (at as u32 & 0x7fff_ffff) | 0x8000_0000,
        )?;
        let hi = (at >> 31) as u32;
        if hi_now != Some(hi) {
            io.bar_mut().write32(journal, &dev, index_hi, hi)?;
            hi_now = Some(hi);
        }
        io.settle(journal)?;
        io.read_direct(data)
    };
    let result = (|| {
        let mut head = Vec::new();
        for k in 0..3u64 {
            head.extend_from_slice(&read(io, journal, pos + 4 * k)?.to_le_bytes());
        }
        let sig = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        if sig != discovery::BINARY_SIGNATURE {
            return Err(Error::parse(
                "IP discovery table",
                format!("binary_signature at VRAM {pos:#x}"),
                format!(
                    "{sig:#010x}, expected {:#010x} (RCC_CONFIG_MEMSIZE {memsize} MiB)",
                    discovery::BINARY_SIGNATURE
                ),
            ));
        }
        let size = usize::from(u16::from_le_bytes([head[10], head[11]]));
        let limit = usize::try_from(loc.tmr_size).unwrap_or(DISCOVERY_TMR_SIZE);
        if size < head.len() || size > limit {
            return Err(Error::parse(
                "IP discovery table",
                "binary_size",
                format!("{size} bytes; must be 12..={limit}"),
            ));
        }
        let mut blob = head;
        let mut at = pos + blob.len() as u64;
        while blob.len() < size {
            blob.extend_from_slice(&read(io, journal, at)?.to_le_bytes());
            at += 4;
        }
        blob.truncate(size);
        Ok(blob)
    })();
    // The window goes back as found, also after a failure.
    let r1 = io.bar_mut().write32(journal, &dev, index, saved.0);
    let r2 = io.bar_mut().write32(journal, &dev, index_hi, saved.1);
    let blob = result?;
    r1?;
    r2?;
    discovery::parse(&blob, Mode::Strict)?;
    Ok(blob)
}

/// The device's bases: sysfs or this boot's cache, else (when `read` and it
/// is safe) the table read from VRAM now and cached, else regs/ with notes
/// saying why. Never an error: a failed read is a note and the static bases.
///
/// The caller holds the device lock and has woken the device when it means
/// to read (`read`); memory decoding is turned on here for the read and
/// COMMAND put back after, through the journal.
pub fn resolve(
    host: &Machine,
    dev: &Device,
    asic: &Asic,
    bar: u8,
    journal: &mut Journal,
    read: bool,
) -> DeviceBases {
    if let Some(k) = known(host, dev) {
        return k;
    }
    let mut notes = vec![];
    if !read {
        notes.push(
            "the device's table was not read (read-only here; `resetlab regs bases DEV` reads it)"
                .into(),
        );
        return DeviceBases::fallback(notes);
    }
    match read_now(host, dev, asic, bar, journal) {
        Ok(b) => b,
        Err(e) => {
            notes.push(format!("device table not read: {}", e.one_line()));
            DeviceBases::fallback(notes)
        }
    }
}

/// The table read from the device now (not the cache), cached; regs/ with a
/// note when it cannot be read. The caller holds the lock and woke the device.
pub fn read(
    host: &Machine,
    dev: &Device,
    asic: &Asic,
    bar: u8,
    journal: &mut Journal,
) -> DeviceBases {
    match read_now(host, dev, asic, bar, journal) {
        Ok(b) => b,
        Err(e) => DeviceBases::fallback(vec![format!("device table not read: {}", e.one_line())]),
    }
}

/// What [`fetch`] may do.
#[derive(Debug, Clone)]
pub struct Fetch {
    /// Read the device when sysfs and the cache do not have the table.
    pub read: bool,
    /// Read the device even when the cache has it.
    pub refresh: bool,
    /// Bound of waiting for another resetlab holding the device's lock.
    pub lock_timeout: std::time::Duration,
}

/// The whole safe path for a command that is not already inside a reset:
/// sysfs or cache (unless `refresh`); else, when `read`, as root and with no
/// VM holding the device, the device's lock, wake to D0 (`power/control`
/// put back after), the table read from VRAM and cached; else regs/ with a
/// note saying why. Errors only for the lock (another resetlab holds it
/// past the bound) and the wake.
pub fn fetch(
    host: &Machine,
    dev: &Device,
    asic: &Asic,
    bar: u8,
    journal: &mut Journal,
    opts: &Fetch,
) -> Result<DeviceBases> {
    if !opts.refresh {
        if let Some(k) = known(host, dev) {
            return Ok(k);
        }
    }
    if !opts.read {
        return Ok(resolve(host, dev, asic, bar, journal, false));
    }
    if !journal.dry_run && !nix::unistd::geteuid().is_root() {
        return Ok(DeviceBases::fallback(vec![
            "not root: the device's table was not read (reading it writes MM_INDEX); run as root, or --dry-run to see the writes".into(),
        ]));
    }
    if let Some(who) = vm_holder(host, dev) {
        return Ok(DeviceBases::fallback(vec![format!(
            "device table not read: {}: {who} (a VM is using it)",
            dev.bdf
        )]));
    }
    let _lock = if journal.dry_run {
        None
    } else {
        Some(crate::pci::lock::lock(host, &dev.bdf, opts.lock_timeout)?)
    };
    let prev = crate::pci::power::wake(dev, journal, std::time::Duration::from_secs(5))?;
    let woken = Device::load(host, dev.bdf)?;
    let mut r = read(host, &woken, asic, bar, journal);
    if journal.dry_run {
        // The read is the table's binary_size, which read_vram_table caps at the ASIC's
        // regs/ tmr_size, else DISCOVERY_TMR_SIZE (amdgpu_discovery.h): the most it can be.
        let most = asic
            .file
            .discovery
            .as_ref()
            .and_then(|l| usize::try_from(l.tmr_size).ok())
            .unwrap_or(DISCOVERY_TMR_SIZE);
        r.notes.push(format!(
            "dry run: reading the table makes one MM_INDEX write per dword of its binary_size (at most {} here: {most} bytes, the discovery TMR size) and MM_INDEX_HI once, then puts both back",
            most / 4
        ));
    }
    crate::pci::power::unwake(host, journal, &dev.bdf, prev)?;
    Ok(r)
}

/// One base of the register file as resolved for the device: what `regs bases` and the report
/// both show.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ResolvedBase {
    pub ip: String,
    pub instance: u8,
    pub base_idx: u8,
    /// The value used.
    pub base: u32,
    /// Where it came from (`device table`, `sysfs ip_discovery`, `discovery blob`, `regs/ static`).
    pub source: BaseSource,
    pub confirmed: bool,
    /// The regs/ value and whether regs/ calls it confirmed.
    pub file: u32,
    pub file_confirmed: bool,
    /// `agrees` / `differs` (device vs regs/), `absent` (the table lacks it), `static`.
    pub verdict: String,
}

/// Every base of `asic`'s register file (as regs/ has it, before [`DeviceBases::apply`])
/// against the table `found` holds: the comparison, and the base each segment resolves to.
pub fn resolve_bases(asic: &Asic, found: &DeviceBases) -> (Vec<BaseCheck>, Vec<ResolvedBase>) {
    let checks = asic.check_bases(found.discovery.as_ref().unwrap_or(&Discovery::empty()));
    let resolved = checks
        .iter()
        .map(|c| {
            let (base, source, confirmed, verdict) = match c.device {
                Some(d) => (d, found.source, true, c.verdict()),
                None if found.discovery.is_some() => {
                    (c.file, BaseSource::Static, c.file_confirmed, "absent")
                }
                None => (c.file, BaseSource::Static, c.file_confirmed, "static"),
            };
            ResolvedBase {
                ip: c.ip.clone(),
                instance: c.instance,
                base_idx: c.base_idx,
                base,
                source,
                confirmed,
                file: c.file,
                file_confirmed: c.file_confirmed,
                verdict: verdict.to_string(),
            }
        })
        .collect();
    (checks, resolved)
}

/// What `regs bases` asks for.
#[derive(Debug, Clone)]
pub struct BasesRequest {
    pub bdf: Bdf,
    /// Parse this IP discovery binary instead of the device's.
    pub blob: Option<PathBuf>,
    /// Accept a binary with bad checksums (reported as warnings).
    pub lenient: bool,
    /// The ASIC by name; by default found from the device's vendor:device.
    pub asic: Option<String>,
    /// Write `<dir>/<asic>.toml`: the discovered bases as a confirmed overlay.
    pub write_overlay: Option<PathBuf>,
    /// Sysfs `ip_discovery` or this boot's cache only, else regs/.
    pub no_read: bool,
    /// Read the device's table again even when this boot's cache has it.
    pub refresh: bool,
    /// Bound of waiting for another resetlab holding the device's lock.
    pub lock_timeout: Duration,
}

/// `regs bases --json`: a device's bases, where each came from, and how they compare with regs/.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct BasesReport {
    pub device: String,
    pub asic: String,
    pub source: BaseSource,
    pub from: String,
    pub cache: Option<String>,
    pub cached: bool,
    pub mp1_version: Option<String>,
    pub warnings: Vec<String>,
    pub notes: Vec<String>,
    pub ips: Vec<discovery::DiscoveredIp>,
    pub resolved: Vec<ResolvedBase>,
    pub bases: Vec<BaseCheck>,
    pub overlay: Option<String>,
    /// The writes made to read the table (MM_INDEX, MM_INDEX_HI, COMMAND, power/control).
    pub writes: Vec<crate::journal::Record>,
}

/// The ASIC of the device at `dir` by its ids, or the one named.
fn asic_for<'a>(db: &'a RegsDb, dir: &Path, name: Option<&str>) -> Result<&'a Asic> {
    if let Some(n) = name {
        return db.asic(n);
    }
    let v = hex_attr(dir, "vendor", 0xffff)? as u16;
    let d = hex_attr(dir, "device", 0xffff)? as u16;
    db.by_pci_id(v, d).ok_or_else(|| {
        Error::not_found(
            "register database for PCI id",
            format!("{v:04x}:{d:04x} (name one with --asic)"),
        )
    })
}

/// The device's bases for `regs bases` without `--blob`: sysfs `ip_discovery` when amdgpu wrote
/// it, else [`fetch`] (cache, the device's table, regs/).
fn device_bases(
    host: &Machine,
    db: &RegsDb,
    req: &BasesRequest,
    journal: &mut Journal,
) -> Result<DeviceBases> {
    let dev_dir = host.device_dir(&req.bdf);
    if dev_dir.join("ip_discovery").is_dir() {
        return Ok(DeviceBases {
            source: BaseSource::SysfsIpDiscovery,
            from: dev_dir.join("ip_discovery").display().to_string(),
            cache: None,
            cached: false,
            discovery: Some(discovery::parse_sysfs(&dev_dir)?),
            raw: None,
            notes: vec![],
        });
    }
    let topo = Topology::scan(host)?;
    let dev = topo.require(&req.bdf)?.clone();
    let (a, bar) =
        crate::amd::smu::target(db, &dev, req.asic.as_deref(), None)?.ok_or_else(|| {
            Error::not_found(
                "register database for PCI id",
                format!(
                    "{:04x}:{:04x} (name one with --asic)",
                    dev.vendor, dev.device
                ),
            )
        })?;
    journal.method = "regs bases".into();
    let opts = Fetch {
        read: !req.no_read,
        refresh: req.refresh,
        lock_timeout: req.lock_timeout,
    };
    fetch(host, &dev, a, bar, journal, &opts)
}

/// `regs bases`: the device's bases (or a dump's), resolved against regs/, optionally written as
/// an overlay for `--regs DIR`. The caller renders the report.
pub fn report(
    host: &Machine,
    db: &RegsDb,
    req: &BasesRequest,
    journal: &mut Journal,
) -> Result<BasesReport> {
    let bdf = req.bdf;
    let found = match &req.blob {
        Some(f) => {
            let bytes = crate::bounded_read::read_limited(f, crate::bounded_read::BLOB_MAX)?;
            let mode = if req.lenient {
                Mode::Lenient
            } else {
                Mode::Strict
            };
            DeviceBases {
                source: BaseSource::Blob,
                from: f.display().to_string(),
                cache: None,
                cached: false,
                discovery: Some(discovery::parse(&bytes, mode)?),
                raw: Some(bytes),
                notes: vec![],
            }
        }
        None => device_bases(host, db, req, journal)?,
    };
    let a = asic_for(db, &host.device_dir(&bdf), req.asic.as_deref())?;
    let disc = found.discovery.clone().unwrap_or_else(Discovery::empty);
    let mut overlay = None;
    if let Some(dir) = &req.write_overlay {
        if found.discovery.is_none() {
            return Err(Error::failed(format!(
                "no discovery table to write an overlay from ({}): {}",
                found.label(),
                found.notes.join("; ")
            )));
        }
        fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
        let path = dir.join(format!("{}.toml", a.asic_name()));
        let text =
            discovery::overlay_from_bases(a.asic_name(), &disc, &format!("ip discovery on {bdf}"));
        fs::write(&path, text).map_err(|e| Error::io("write", &path, e))?;
        overlay = Some(path.display().to_string());
    }
    let (checks, resolved) = resolve_bases(a, &found);
    Ok(BasesReport {
        device: bdf.to_string(),
        asic: a.asic_name().to_string(),
        source: found.source,
        from: found.label(),
        cache: found.cache.clone(),
        cached: found.cached,
        mp1_version: disc.mp1_version(),
        warnings: disc.warnings.clone(),
        notes: found.notes.clone(),
        ips: disc.ips().cloned().collect(),
        resolved,
        bases: checks,
        overlay,
        writes: journal.writes().cloned().collect(),
    })
}

fn read_now(
    host: &Machine,
    dev: &Device,
    asic: &Asic,
    bar: u8,
    journal: &mut Journal,
) -> Result<DeviceBases> {
    if let Some(who) = vm_holder(host, dev) {
        return Err(Error::refused(format!(
            "{}: {who} (a VM is using it): its VRAM window is the guest driver's",
            dev.bdf
        )));
    }
    if dev.driver.as_deref() == Some("amdgpu") {
        return Err(Error::refused(format!(
            "{} is bound to amdgpu, which owns MM_INDEX/MM_DATA (and writes sysfs ip_discovery)",
            dev.bdf
        )));
    }
    if journal.dry_run {
        return Err(Error::refused(
            "dry run: reading the table writes MM_INDEX for every dword; not made",
        ));
    }
    if let Some(p) = dev.power_state.as_deref().filter(|p| *p != "D0") {
        return Err(Error::refused(format!(
            "{} is in {p}, not D0: VRAM cannot be read",
            dev.bdf
        )));
    }
    let mut mem = MemoryDecoding::on(dev, journal)?;
    let turned_on = mem.turned_on();
    let r = (|| {
        let map = BarMap::open(dev, bar, Access::ReadWrite, &SystemFiles::for_host(host))?;
        let mut io =
            RegIo::for_asic(asic, map, dev.bdf)?.with_barrier(Barrier::for_sysfs(&host.sysfs));
        read_vram_table(&mut io, asic, mem.journal())
    })();
    let restored = mem.close();
    let raw = r?;
    restored?;
    let d = discovery::parse(&raw, Mode::Strict)?;
    let mut notes = vec![];
    let cache = match store_cache(host, dev, &raw) {
        Ok(p) => Some(p.display().to_string()),
        Err(e) => {
            notes.push(format!("not cached: {}", e.one_line()));
            None
        }
    };
    if turned_on {
        notes.push("memory decoding was off: turned on for the read, COMMAND restored".into());
    }
    Ok(DeviceBases {
        source: BaseSource::DeviceTable,
        from: "VRAM".into(),
        cache,
        cached: false,
        discovery: Some(d),
        raw: Some(raw),
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bases_from_a_twin_sysfs_writes_an_overlay_that_loads() {
        let root = tempfile::tempdir().unwrap();
        let dev = root.path().join("bus/pci/devices/0000:c5:00.0");
        fs::create_dir_all(&dev).unwrap();
        fs::write(dev.join("vendor"), "0x1002\n").unwrap();
        fs::write(dev.join("device"), "0x1900\n").unwrap();
        let spec = crate::sim::discovery_blob::BlobSpec::phoenix_like()
            .with_bases([("MP1", &[0x16200u64, 0x16000][..])])
            .unwrap();
        let d = discovery::parse(
            &crate::sim::discovery_blob::build_discovery_blob(&spec),
            Mode::Strict,
        )
        .unwrap();
        crate::sim::discovery_blob::write_sysfs(&dev, &d).unwrap();
        let out = root.path().join("overlay");
        let req = BasesRequest {
            bdf: "c5:00.0".parse().unwrap(),
            blob: None,
            lenient: false,
            asic: None,
            write_overlay: Some(out.clone()),
            no_read: false,
            refresh: false,
            lock_timeout: Duration::from_secs(1),
        };
        let db = RegsDb::load(&[]).unwrap();
        let r = report(
            &Machine::new(root.path()),
            &db,
            &req,
            &mut Journal::new(false),
        )
        .unwrap();
        assert_eq!(r.source, BaseSource::SysfsIpDiscovery);
        assert_eq!(
            r.overlay.as_deref(),
            Some(out.join("phoenix.toml").to_str().unwrap())
        );
        let seg0 = r
            .resolved
            .iter()
            .find(|b| b.ip == "MP1" && b.base_idx == 0)
            .unwrap();
        assert_eq!(
            (seg0.base, seg0.source),
            (0x16200, BaseSource::SysfsIpDiscovery)
        );
        let db = RegsDb::load(&[out]).unwrap();
        let m = db.asic("phoenix").unwrap().mailbox(Some("13.0.4")).unwrap();
        assert!(m.base_confirmed);
        assert_eq!(m.msg, 0x58A08);
        // MP1 segment 0 of this table is 0x16200: the overlay corrected the guess.
        let m11 = db
            .asic("phoenix")
            .unwrap()
            .mailbox(Some("13.0.11"))
            .unwrap();
        assert_eq!(m11.msg, (0x16200 + 0x282) * 4);
    }

    fn io_with_vram(bytes: &[u8]) -> (tempfile::TempDir, RegIo) {
        // A BAR file with no model behind it: MM_DATA holds one fixed dword
        // whatever MM_INDEX says, so every read of the window returns it.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("resource5");
        std::fs::File::create(&p).unwrap().set_len(0x80000).unwrap();
        let mut bar = BarMap::open_file(&p, 0x80000, Access::ReadWrite).unwrap();
        bar.device_write32(0xde3 * 4, 512).unwrap();
        bar.device_write32(0x16061 * 4, 0x8000_0000).unwrap();
        if bytes.len() >= 4 {
            bar.device_write32(
                4,
                u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
            )
            .unwrap();
        }
        (
            dir,
            RegIo::new(bar, crate::pci::Bdf::new(0, 0xc5, 0, 0), None),
        )
    }

    #[test]
    fn a_window_that_never_moves_is_a_signature_error_and_the_index_is_restored() {
        let db = crate::amd::regs::RegsDb::embedded().unwrap();
        let a = db.asic("phoenix").unwrap();
        let (_d, mut io) = io_with_vram(&0x1234_5678u32.to_le_bytes());
        io.bar_mut().device_write32(0, 0x42).unwrap();
        let mut j = Journal::new(false);
        let e = read_vram_table(&mut io, a, &mut j).unwrap_err().to_string();
        assert!(e.contains("binary_signature"), "{e}");
        assert_eq!(io.bar().read32(0).unwrap(), 0x42, "MM_INDEX put back");
        let w: Vec<String> = j.writes().map(|r| r.to_string()).collect();
        assert_eq!(w[0], "mmio 0000:c5:00.0 resource5+0x0 <- 0x9fff0000");
        assert_eq!(w[1], "mmio 0000:c5:00.0 resource5+0x18 <- 0x00000000");
        assert_eq!(
            w.last().unwrap(),
            "mmio 0000:c5:00.0 resource5+0x18 <- 0x00000000"
        );
    }

    proptest! {
        #[test]
        fn reading_arbitrary_window_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..16)) {
            let db = crate::amd::regs::RegsDb::embedded().unwrap();
            let a = db.asic("phoenix").unwrap();
            let (_d, mut io) = io_with_vram(&bytes);
            let mut j = Journal::new(false);
            let _ = read_vram_table(&mut io, a, &mut j);
        }
    }
}
