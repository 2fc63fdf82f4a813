//! `resetlab regs`: the register database (list, show) and the device's IP discovery bases.

use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::amd::bases::{self, BaseSource, DeviceBases};
use crate::amd::discovery::{self, Discovery, Mode};
use crate::amd::regs::{BaseCheck, RegsDb};
use crate::error::{exit, Error, Result};
use crate::journal::Journal;
use crate::pci::sysfs::hex_attr;
use crate::pci::{Bdf, Host, Topology};

#[derive(Debug, clap::Args)]
pub struct RegsArgs {
    #[command(subcommand)]
    pub cmd: RegsCmd,
}

#[derive(Debug, clap::Subcommand)]
pub enum RegsCmd {
    /// List the known ASICs and their PCI ids.
    List,
    /// Show an ASIC's registers with their BAR byte offsets, the SMU mailbox and messages.
    Show {
        /// ASIC name (e.g. phoenix).
        asic: String,
    },
    /// The device's register bases and where each came from: sysfs ip_discovery (amdgpu bound),
    /// the device's own IP discovery table read from VRAM (cached per boot), a dump (--blob), or
    /// regs/ static; compared with the register file; optionally written as an overlay.
    Bases {
        /// PCI address (0000:c5:00.0 or c5:00.0).
        dev: String,
        /// Parse this IP discovery binary instead of sysfs.
        #[arg(long, value_name = "FILE")]
        blob: Option<PathBuf>,
        /// Accept a binary with bad checksums (reported as warnings).
        #[arg(long)]
        lenient: bool,
        /// ASIC name; by default found from the device's vendor:device.
        #[arg(long)]
        asic: Option<String>,
        /// Write DIR/<asic>.toml: the discovered bases as a confirmed overlay for --regs DIR.
        #[arg(long, value_name = "DIR")]
        write_overlay: Option<PathBuf>,
        /// Do not read the device (sysfs ip_discovery or this boot's cache only, else regs/).
        #[arg(long, conflicts_with = "blob")]
        no_read: bool,
        /// Read the device's table again even when this boot's cache has it.
        #[arg(long, conflicts_with_all = ["blob", "no_read"])]
        refresh: bool,
        /// Record the index writes a read would make, make none.
        #[arg(long)]
        dry_run: bool,
        /// Append every write as a JSON line, fsync'd before the write is made.
        #[arg(long, value_name = "FILE")]
        trace: Option<PathBuf>,
        /// Bound of waiting for another resetlab holding the device's lock, in ms.
        #[arg(long, value_name = "MS", default_value_t = 30_000, value_parser = crate::cli::ms)]
        lock_timeout: u64,
    },
}

/// One base of the register file as resolved for the device.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct ResolvedBase {
    ip: String,
    instance: u8,
    base_idx: u8,
    /// The value used.
    base: u32,
    /// Where it came from (`device table`, `sysfs ip_discovery`, `discovery blob`, `regs/ static`).
    source: BaseSource,
    confirmed: bool,
    /// The regs/ value and whether regs/ calls it confirmed.
    file: u32,
    file_confirmed: bool,
    /// `agrees` / `differs` (device vs regs/), `absent` (the table lacks it), `static`.
    verdict: String,
}

/// `regs list --json`.
#[derive(Serialize, schemars::JsonSchema)]
pub struct ListOut {
    pub asics: Vec<Row>,
}

/// One ASIC of the register database.
#[derive(Serialize, schemars::JsonSchema)]
pub struct Row {
    asic: String,
    name: String,
    pci_ids: Vec<String>,
    files: Vec<String>,
}

/// `regs bases --json`.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct BasesReport {
    device: String,
    asic: String,
    source: BaseSource,
    from: String,
    cache: Option<String>,
    cached: bool,
    mp1_version: Option<String>,
    warnings: Vec<String>,
    notes: Vec<String>,
    ips: Vec<discovery::DiscoveredIp>,
    resolved: Vec<ResolvedBase>,
    bases: Vec<BaseCheck>,
    overlay: Option<String>,
    /// The writes made to read the table (MM_INDEX, MM_INDEX_HI, COMMAND, power/control).
    writes: Vec<crate::journal::Record>,
}

/// Reads the device's bases for `regs bases` (not --blob): [`bases::fetch`].
#[allow(clippy::too_many_arguments)]
fn device_bases(
    host: &Host,
    bdf: &Bdf,
    asic_name: Option<&str>,
    db: &RegsDb,
    no_read: bool,
    refresh: bool,
    journal: &mut Journal,
    lock_timeout: u64,
) -> Result<(DeviceBases, String)> {
    let topo = Topology::scan(host)?;
    let dev = topo
        .get(bdf)
        .ok_or_else(|| Error::not_found("PCI device", bdf.to_string()))?
        .clone();
    let (a, bar) = crate::amd::smu::target(db, &dev, asic_name, None)?.ok_or_else(|| {
        Error::not_found(
            "register database for PCI id",
            format!(
                "{:04x}:{:04x} (name one with --asic)",
                dev.vendor, dev.device
            ),
        )
    })?;
    journal.method = "regs bases".into();
    let opts = bases::Fetch {
        read: !no_read,
        refresh,
        lock_timeout: std::time::Duration::from_millis(lock_timeout),
    };
    Ok((
        bases::fetch(host, &dev, a, bar, journal, &opts)?,
        a.asic_name().to_string(),
    ))
}

pub fn run(args: &RegsArgs, regs_dirs: &[PathBuf], host: &Host, json: bool) -> Result<i32> {
    let sysfs = host.sysfs.as_path();
    let db = RegsDb::load(regs_dirs)?;
    match &args.cmd {
        RegsCmd::List => {
            let rows: Vec<Row> = db
                .asics()
                .iter()
                .map(|a| Row {
                    asic: a.asic_name().to_string(),
                    name: a.file.name.clone(),
                    pci_ids: a
                        .file
                        .pci_ids
                        .iter()
                        .map(|p| format!("{:04x}:{:04x}", p.vendor, p.device))
                        .collect(),
                    files: a
                        .origins()
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect(),
                })
                .collect();
            if json {
                print_json(&ListOut { asics: rows })?;
            } else {
                for r in rows {
                    println!("{:<10} {:<28} {}", r.asic, r.pci_ids.join(" "), r.name);
                }
            }
        }
        RegsCmd::Show { asic } => {
            let show = db.asic(asic)?.show()?;
            if json {
                print_json(&show)?;
            } else {
                print!("{}", show.to_text());
            }
        }
        RegsCmd::Bases {
            dev,
            blob,
            lenient,
            asic,
            write_overlay,
            no_read,
            refresh,
            dry_run,
            trace,
            lock_timeout,
        } => {
            let bdf: Bdf = dev.parse()?;
            let dev_dir = sysfs.join("bus/pci/devices").join(bdf.to_string());
            let mut journal = Journal::new(*dry_run);
            if let Some(t) = trace {
                journal = journal.with_trace(t)?;
            }
            let found: DeviceBases = match blob {
                Some(f) => {
                    let bytes = crate::pci::bounded_read::read_limited(
                        f,
                        crate::pci::bounded_read::BLOB_MAX,
                    )?;
                    let mode = if *lenient {
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
                None if dev_dir.join("ip_discovery").is_dir() => DeviceBases {
                    source: BaseSource::SysfsIpDiscovery,
                    from: dev_dir.join("ip_discovery").display().to_string(),
                    cache: None,
                    cached: false,
                    discovery: Some(discovery::parse_sysfs(&dev_dir)?),
                    raw: None,
                    notes: vec![],
                },
                None => {
                    device_bases(
                        host,
                        &bdf,
                        asic.as_deref(),
                        &db,
                        *no_read,
                        *refresh,
                        &mut journal,
                        *lock_timeout,
                    )?
                    .0
                }
            };
            let empty = Discovery {
                header: None,
                table_version: None,
                base_addr_64_bit: false,
                dies: vec![],
                warnings: vec![],
            };
            let disc = found.discovery.clone().unwrap_or(empty);
            let from = found.label();
            let a = match asic {
                Some(n) => db.asic(n)?,
                None => {
                    let v = hex_attr(&dev_dir, "vendor", 0xffff)? as u16;
                    let d = hex_attr(&dev_dir, "device", 0xffff)? as u16;
                    db.by_pci_id(v, d).ok_or_else(|| {
                        Error::not_found(
                            "register database for PCI id",
                            format!("{v:04x}:{d:04x} (name one with --asic)"),
                        )
                    })?
                }
            };
            let mut overlay = None;
            if let (Some(_), None) = (write_overlay, &found.discovery) {
                return Err(Error::failed(format!(
                    "no discovery table to write an overlay from ({}): {}",
                    found.label(),
                    found.notes.join("; ")
                )));
            }
            if let Some(dir) = write_overlay {
                fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
                let path = dir.join(format!("{}.toml", a.asic_name()));
                let text = discovery::overlay_from_bases(
                    a.asic_name(),
                    &disc,
                    &format!("ip discovery on {bdf}"),
                );
                fs::write(&path, text).map_err(|e| Error::io("write", &path, e))?;
                overlay = Some(path.display().to_string());
            }
            let checks = a.check_bases(&disc);
            let resolved = checks
                .iter()
                .map(|c| {
                    let (base, source, confirmed, verdict) = match c.device {
                        Some(d) => (d, found.source, true, c.verdict().to_string()),
                        None if found.discovery.is_some() => (
                            c.file,
                            BaseSource::Static,
                            c.file_confirmed,
                            "absent".into(),
                        ),
                        None => (
                            c.file,
                            BaseSource::Static,
                            c.file_confirmed,
                            "static".into(),
                        ),
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
                        verdict,
                    }
                })
                .collect();
            let report = BasesReport {
                device: bdf.to_string(),
                asic: a.asic_name().to_string(),
                source: found.source,
                from,
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
            };
            if json {
                print_json(&report)?;
            } else {
                print_bases(&report);
            }
        }
    }
    Ok(exit::OK)
}

fn print_bases(r: &BasesReport) {
    println!("{} ({}): bases from {}", r.device, r.asic, r.from);
    if let Some(c) = &r.cache {
        println!("cache: {c}");
    }
    if let Some(v) = &r.mp1_version {
        println!("MP1 version {v}");
    }
    for w in &r.warnings {
        println!("warning: {w}");
    }
    for n in &r.notes {
        println!("note: {n}");
    }
    if !r.writes.is_empty() {
        let dry = r.writes.iter().any(|w| w.dry_run);
        println!(
            "{} {} write(s) to read the table (MM_INDEX/MM_INDEX_HI journalled, put back after)",
            if dry { "would make" } else { "made" },
            r.writes.len()
        );
    }
    println!("\nbases used (dwords), and where each came from:");
    for b in &r.resolved {
        println!(
            "  {:<6} inst {} idx {}  {:#x}  {}{}  (regs/ {:#x} {}: {})",
            b.ip,
            b.instance,
            b.base_idx,
            b.base,
            b.source,
            if b.confirmed { "" } else { ", UNCONFIRMED" },
            b.file,
            if b.file_confirmed {
                "confirmed"
            } else {
                "unconfirmed"
            },
            b.verdict
        );
    }
    if r.ips.is_empty() {
        return;
    }
    println!("\ndiscovered IPs (bases in dwords):");
    for ip in &r.ips {
        let bases: Vec<String> = ip.bases.iter().map(|b| format!("{b:#x}")).collect();
        println!(
            "  {:<10} inst {} v{:<9} {}",
            ip.name,
            ip.instance,
            ip.version(),
            bases.join(" ")
        );
    }
    println!("\nregister file bases vs device:");
    for b in &r.bases {
        let dev = b.device.map_or("-".to_string(), |d| format!("{d:#x}"));
        println!(
            "  {:<6} inst {} idx {}  file {:#x} ({})  device {}  {}",
            b.ip,
            b.instance,
            b.base_idx,
            b.file,
            if b.file_confirmed {
                "confirmed"
            } else {
                "unconfirmed"
            },
            dev,
            b.verdict()
        );
    }
    if let Some(p) = &r.overlay {
        println!(
            "\nwrote {p}; use it with --regs {}",
            Path::new(p)
                .parent()
                .map_or(String::new(), |d| d.display().to_string())
        );
    }
}

use crate::cli::print_json;

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(argv: &[&str]) -> std::result::Result<RegsArgs, clap::Error> {
        use clap::{Args, FromArgMatches};
        let cmd = RegsArgs::augment_args(clap::Command::new("regs"));
        cmd.clone().debug_assert();
        let m = cmd.try_get_matches_from(argv)?;
        RegsArgs::from_arg_matches(&m)
    }

    #[test]
    fn clap_shape_parses() {
        let a = parse(&["regs", "show", "phoenix"]).unwrap();
        assert!(matches!(a.cmd, RegsCmd::Show { ref asic } if asic == "phoenix"));
        let a = parse(&["regs", "bases", "c5:00.0", "--write-overlay", "o"]).unwrap();
        assert!(
            matches!(a.cmd, RegsCmd::Bases { ref write_overlay, .. } if write_overlay.is_some())
        );
        assert!(parse(&["regs", "show"]).is_err());
    }

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
        let args = RegsArgs {
            cmd: RegsCmd::Bases {
                dev: "c5:00.0".into(),
                blob: None,
                lenient: false,
                asic: None,
                write_overlay: Some(out.clone()),
                no_read: false,
                refresh: false,
                dry_run: false,
                trace: None,
                lock_timeout: 1000,
            },
        };
        assert_eq!(run(&args, &[], &Host::new(root.path()), true).unwrap(), 0);
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
}
