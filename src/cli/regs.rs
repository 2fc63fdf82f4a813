//! `resetlab regs`: the register database (list, show) and the device's IP discovery bases.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::Ctx;
use crate::amd::bases::{self, BasesReport};
use crate::amd::regs::RegsDb;
use crate::error::{exit, Result};
use crate::journal::Journal;

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

pub fn run(ctx: &Ctx, args: &RegsArgs) -> Result<i32> {
    let (regs_dirs, host, json) = (&ctx.regs_dirs[..], &ctx.host, ctx.json);
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
            let mut journal = Journal::new(*dry_run);
            if let Some(t) = trace {
                journal = journal.with_trace(t)?;
            }
            let req = bases::BasesRequest {
                bdf: dev.parse()?,
                blob: blob.clone(),
                lenient: *lenient,
                asic: asic.clone(),
                write_overlay: write_overlay.clone(),
                no_read: *no_read,
                refresh: *refresh,
                lock_timeout: std::time::Duration::from_millis(*lock_timeout),
            };
            let report = bases::report(host, &db, &req, &mut journal)?;
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
        let e = parse(&["regs", "show"]).unwrap_err();
        assert_eq!(
            e.kind(),
            clap::error::ErrorKind::MissingRequiredArgument,
            "{e}"
        );
        assert!(e.to_string().contains("<ASIC>"), "{e}");
    }
}
