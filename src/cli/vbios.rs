//! `resetlab vbios dump|check`: dump the VBIOS from the ACPI VFCT table (or a device's ROM BAR),
//! validate a ROM file, compare two.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::amd::vbios::{
    compare_roms, dump_vfct, inspect_rom, read_rom, rom_file_name, write_atomic, AtomInfo,
    DeviceRom, DumpReport, RomDiff, RomInfo, RomRead, VfctOptions,
};
use crate::error::{exit, Error, Result};
use crate::machine::Machine;

#[derive(Debug, clap::Args)]
pub struct VbiosArgs {
    #[command(subcommand)]
    pub cmd: VbiosCmd,
}

#[derive(Debug, clap::Subcommand)]
pub enum VbiosCmd {
    /// Write each valid VBIOS image of the ACPI VFCT table (or of a device's ROM) to a file
    Dump(DumpArgs),
    /// Validate a ROM file (ids, image types, version strings, checksum); with a second file,
    /// compare the two
    Check(CheckArgs),
}

#[derive(Debug, clap::Args)]
pub struct DumpArgs {
    /// Read this VFCT table instead of <sysfs>/firmware/acpi/tables/VFCT
    #[arg(long, value_name = "FILE", conflicts_with = "from_rom")]
    pub vfct: Option<PathBuf>,
    /// Directory for the vbios_<vendor>_<device>.bin files
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub out: PathBuf,
    /// Read the ROM through the device's sysfs `rom` attribute instead (writes 1, reads, writes 0;
    /// needs root)
    #[arg(long, value_name = "DEV")]
    pub from_rom: Option<String>,
    /// With --from-rom: print the sysfs writes instead of making them
    #[arg(long, requires = "from_rom")]
    pub dry_run: bool,
    /// Accept a VFCT table whose ACPI checksum is wrong (the kernel only warns about it)
    #[arg(long, conflicts_with = "from_rom")]
    pub ignore_checksum: bool,
    /// Replace ROM files that exist in --out (without it the dump refuses, writing nothing);
    /// with --from-rom also override the device guards (its VFIO group is open, a host
    /// driver other than vfio-pci/pci-stub is bound)
    #[arg(long)]
    pub force: bool,
    /// With --from-rom: bound of waiting for another resetlab holding the device's lock, in ms
    #[arg(long, value_name = "MS", default_value_t = 30_000, value_parser = crate::cli::ms, requires = "from_rom")]
    pub lock_timeout: u64,
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// ROM file to validate (e.g. a VM's romfile=)
    pub file: PathBuf,
    /// Second ROM file: validate it too and show where the two differ
    pub file2: Option<PathBuf>,
    /// Also list the printable strings of the first 1 KiB
    #[arg(long)]
    pub strings: bool,
}

/// Run `vbios`. `sysfs` is the sysfs root (`/sys`, or a twin's tree).
///
/// Exit codes: 0 all good; 1 (`exit::FAILED`) when an image or file is invalid, or when two
/// checked files differ (like cmp(1)); errors (unreadable or structurally broken table) are
/// returned for the caller to map.
pub fn run(ctx: &Ctx, args: &VbiosArgs) -> Result<i32> {
    let (host, json) = (&ctx.host, ctx.json);
    match &args.cmd {
        VbiosCmd::Dump(d) => match &d.from_rom {
            Some(dev) => dump_from_rom(d, dev, host, json),
            None => dump_vfct_cmd(d, &host.sysfs, json),
        },
        VbiosCmd::Check(c) => check(c, json),
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>> {
    crate::bounded_read::read_limited(path, crate::bounded_read::BLOB_MAX)
}

use crate::cli::{print_json, Ctx};

/// `vbios dump --json`.
#[derive(Serialize, schemars::JsonSchema)]
pub struct DumpOut<'a> {
    source: &'a Path,
    #[serde(flatten)]
    report: &'a DumpReport,
}

/// `vbios dump --from-rom DEV --json`.
#[derive(Serialize, schemars::JsonSchema)]
pub struct RomOut<'a> {
    bdf: &'a crate::pci::Bdf,
    device_rom: &'a DeviceRom,
    rom: &'a Option<RomInfo>,
    file: &'a Option<PathBuf>,
}

/// `vbios check --json`.
#[derive(Serialize, schemars::JsonSchema)]
pub struct CheckOut<'a> {
    files: Vec<&'a Checked<'a>>,
    diff: &'a Option<RomDiff>,
}

fn dump_vfct_cmd(d: &DumpArgs, sysfs: &Path, json: bool) -> Result<i32> {
    let src = d
        .vfct
        .clone()
        .unwrap_or_else(|| sysfs.join("firmware/acpi/tables/VFCT"));
    if d.vfct.is_none() && !src.exists() {
        return Err(Error::not_found(
            "ACPI VFCT table (the firmware publishes no VBIOS; try --from-rom)",
            src.display().to_string(),
        ));
    }
    let bytes = read_file(&src)?;
    let opts = VfctOptions {
        ignore_checksum: d.ignore_checksum,
        overwrite: d.force,
    };
    let report = dump_vfct(&bytes, opts, &d.out, sysfs)?;
    if json {
        print_json(&DumpOut {
            source: &src,
            report: &report,
        })?;
    } else {
        print_dump(&src, &report);
    }
    Ok(if report.all_valid() {
        exit::OK
    } else {
        exit::FAILED
    })
}

fn print_dump(src: &Path, r: &DumpReport) {
    let h = &r.vfct.header;
    println!(
        "{}: VFCT rev {}, {} bytes, OEM '{}' '{}', checksum {}, {} image(s)",
        src.display(),
        h.revision,
        h.length,
        h.oem_id.trim_end(),
        h.oem_table_id.trim_end(),
        if r.vfct.checksum_ok {
            "ok"
        } else {
            "BAD (ignored)"
        },
        r.images.len()
    );
    for n in &r.vfct.notes {
        println!("  note: {n}");
    }
    for (d, img) in r.images.iter().zip(&r.vfct.images) {
        let dev = if d.device.exists {
            match d.device.ids_match {
                Some(true) => "present".to_string(),
                Some(false) => format!(
                    "present, but it is {:04x}:{:04x}",
                    d.device.vendor_id.unwrap_or(0),
                    d.device.device_id.unwrap_or(0)
                ),
                None => "present (ids unreadable)".to_string(),
            }
        } else {
            "not present on this host".to_string()
        };
        println!(
            "image {} at {:#x}: {:04x}:{:04x} (subsystem {:04x}:{:04x}) for {} [{}], {} bytes",
            d.index,
            img.header_offset,
            d.vendor_id,
            d.device_id,
            img.ssvid,
            img.ssid,
            d.bdf,
            dev,
            img.image_length
        );
        if let Some(rom) = &img.rom {
            print_rom_summary(rom, "  ");
        }
        match &d.file {
            Some(f) => println!("  wrote {}", f.display()),
            None => {
                for p in &d.problems {
                    println!("  BAD: {p}");
                }
                println!("  not written");
            }
        }
    }
}

fn print_rom_summary(rom: &RomInfo, ind: &str) {
    for img in &rom.images {
        let ck = match &img.checksum {
            Some(c) if c.ok => format!(", checksum ok over {:#x}..{:#x}", c.start, c.end),
            Some(c) => format!(
                ", checksum BAD ({:#04x}) over {:#x}..{:#x}",
                c.sum, c.start, c.end
            ),
            None => String::new(),
        };
        let efi = match &img.efi {
            Some(e) => format!(
                ", {} {}{}",
                e.machine_name,
                e.subsystem_name,
                if e.compression_type != 0 {
                    ", compressed"
                } else {
                    ""
                }
            ),
            None => String::new(),
        };
        println!(
            "{ind}ROM image {} at {:#x}: {} (code type {}), {:04x}:{:04x}, class {:06x}, {} bytes{}{}{}",
            img.index,
            img.offset,
            img.code_type_name,
            img.code_type,
            img.vendor_id,
            img.device_id,
            img.class_code,
            img.image_length,
            if img.last_image { ", last" } else { "" },
            ck,
            efi
        );
    }
    if rom.trailing_bytes > 0 {
        println!("{ind}{} bytes after the last image", rom.trailing_bytes);
    }
    if let Some(a) = &rom.atom {
        print_atom(a, ind);
    }
    for n in &rom.notes {
        println!("{ind}note: {n}");
    }
}

fn print_atom(a: &AtomInfo, ind: &str) {
    if !a.amdgpu_accepts {
        println!("{ind}ATOM BIOS: no ({})", a.verdict);
        return;
    }
    let mut parts = Vec::new();
    let mut add = |k: &str, v: &Option<String>| {
        if let Some(v) = v {
            parts.push(format!("{k} {v}"));
        }
    };
    add("part number", &a.part_number);
    add("version", &a.version);
    add("date", &a.date);
    add("build", &a.build);
    add("config", &a.config_filename);
    println!(
        "{ind}ATOM BIOS (header at {:#x}, format {}.{}), amdgpu accepts it; AMD signature {}",
        a.rom_header_offset,
        a.format_revision.unwrap_or(0),
        a.content_revision.unwrap_or(0),
        if a.amd_signature { "present" } else { "absent" }
    );
    if !parts.is_empty() {
        println!("{ind}  {}", parts.join(", "));
    }
    if let Some(m) = &a.bootup_message {
        println!("{ind}  banner: {m}");
    }
}

fn dump_from_rom(d: &DumpArgs, dev: &str, host: &Machine, json: bool) -> Result<i32> {
    let bdf: crate::pci::Bdf = dev.parse()?;
    let mut journal = crate::journal::Journal::new(d.dry_run);
    let opts = RomRead {
        force: d.force,
        lock_timeout: std::time::Duration::from_millis(d.lock_timeout),
    };
    let got = read_rom(host, &bdf, &opts, &mut journal)?;
    let rom = got.bytes.as_deref().map(inspect_rom);
    let mut file = None;
    if let (Some(bytes), Some(info)) = (&got.bytes, &rom) {
        if info.is_valid() {
            if let Some(first) = info.images.first() {
                let p = d.out.join(rom_file_name(first.vendor_id, first.device_id));
                if p.exists() && !d.force {
                    return Err(Error::refused(format!(
                        "{} exists; not overwriting it (--force replaces it)",
                        p.display()
                    )));
                }
                write_atomic(&p, bytes)?;
                file = Some(p);
            }
        }
    }
    let valid = d.dry_run || rom.as_ref().is_some_and(RomInfo::is_valid);
    if json {
        print_json(&RomOut {
            bdf: &bdf,
            device_rom: &got,
            rom: &rom,
            file: &file,
        })?;
    } else {
        for w in &got.writes {
            let v = w.value.escape_debug();
            if got.dry_run {
                println!("would write \"{v}\" to {}", w.path.display());
            } else if let Some(e) = &w.error {
                println!("wrote \"{v}\" to {}: FAILED: {e}", w.path.display());
            } else {
                println!("wrote \"{v}\" to {}", w.path.display());
            }
        }
        if let Some(info) = &rom {
            println!(
                "{bdf}: read {} bytes from {}",
                got.bytes_read,
                got.path.display()
            );
            if got.bytes_read == 0 {
                println!(
                    "  the ROM BAR is empty (an APU's VBIOS lives in the ACPI VFCT: dump without --from-rom)"
                );
            }
            print_rom_summary(info, "  ");
            for p in &info.problems {
                println!("  BAD: {p}");
            }
            match &file {
                Some(f) => println!("  wrote {}", f.display()),
                None => println!("  not written"),
            }
        }
    }
    Ok(if valid { exit::OK } else { exit::FAILED })
}

#[derive(Serialize, schemars::JsonSchema)]
pub struct Checked<'a> {
    file: &'a Path,
    valid: bool,
    rom: RomInfo,
}

fn check(c: &CheckArgs, json: bool) -> Result<i32> {
    let a = read_file(&c.file)?;
    let b = c.file2.as_deref().map(read_file).transpose()?;
    let ca = Checked {
        file: &c.file,
        valid: false,
        rom: inspect_rom(&a),
    };
    let ca = Checked {
        valid: ca.rom.is_valid(),
        ..ca
    };
    let cb = match (&c.file2, &b) {
        (Some(f), Some(bytes)) => {
            let rom = inspect_rom(bytes);
            Some(Checked {
                file: f,
                valid: rom.is_valid(),
                rom,
            })
        }
        _ => None,
    };
    let diff: Option<RomDiff> = b.as_deref().map(|b| compare_roms(&a, b));
    let all_valid = ca.valid && cb.as_ref().is_none_or(|x| x.valid);
    let same = diff.as_ref().is_none_or(|d| d.identical);
    if json {
        let mut files = vec![&ca];
        if let Some(x) = &cb {
            files.push(x);
        }
        print_json(&CheckOut { files, diff: &diff })?;
    } else {
        print_checked(&ca, c.strings);
        if let Some(x) = &cb {
            print_checked(x, c.strings);
        }
        if let Some(d) = &diff {
            print_diff(d);
        }
    }
    Ok(if all_valid && same {
        exit::OK
    } else {
        exit::FAILED
    })
}

fn print_checked(c: &Checked, strings: bool) {
    println!(
        "{}: {} bytes, {} image(s), {}",
        c.file.display(),
        c.rom.size,
        c.rom.images.len(),
        if c.valid { "valid" } else { "INVALID" }
    );
    print_rom_summary(&c.rom, "  ");
    for p in &c.rom.problems {
        println!("  BAD: {p}");
    }
    if strings {
        for s in &c.rom.strings {
            println!("  {:#06x}  {}", s.offset, s.text);
        }
    }
}

fn print_diff(d: &RomDiff) {
    if d.identical {
        println!("the two files are identical ({} bytes)", d.size_a);
        return;
    }
    println!(
        "the files differ: {} and {} bytes ({}), {} differing byte(s) in {} range(s)",
        d.size_a,
        d.size_b,
        if d.size_a == d.size_b {
            "same size"
        } else {
            "different sizes"
        },
        d.differing_bytes,
        d.ranges.len()
    );
    for r in &d.ranges {
        println!(
            "  {:#07x}..{:#07x}  {:>5} byte(s)  {}",
            r.start,
            r.end,
            r.differing,
            r.regions.join(", ")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::rom::{build_rom, build_vfct, SyntheticImage};
    use std::fs;

    fn dump_args(vfct: Option<PathBuf>, out: &Path) -> DumpArgs {
        DumpArgs {
            vfct,
            out: out.to_path_buf(),
            from_rom: None,
            dry_run: false,
            ignore_checksum: false,
            force: false,
            lock_timeout: 20,
        }
    }

    fn run_dump(d: DumpArgs, sysfs: &Path, json: bool) -> Result<i32> {
        run(
            &Ctx::on(Machine::new(sysfs), json),
            &VbiosArgs {
                cmd: VbiosCmd::Dump(d),
            },
        )
    }

    fn run_check(file: PathBuf, file2: Option<PathBuf>, json: bool) -> Result<i32> {
        run(
            &Ctx::on(Machine::new("/nonexistent-sysfs"), json),
            &VbiosArgs {
                cmd: VbiosCmd::Check(CheckArgs {
                    file,
                    file2,
                    strings: true,
                }),
            },
        )
    }

    #[derive(clap::Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: VbiosCmd,
    }

    #[test]
    fn clap_definition_holds_and_flags_depend_on_each_other() {
        use clap::{CommandFactory, Parser};
        Cli::command().debug_assert();
        use clap::error::ErrorKind;
        let kind = |a: &[&str]| Cli::try_parse_from(a).map(|_| ()).map_err(|e| e.kind());
        // --dry-run needs --from-rom; --vfct and --from-rom exclude each other.
        assert_eq!(
            kind(&["t", "dump", "--dry-run"]),
            Err(ErrorKind::MissingRequiredArgument)
        );
        assert_eq!(
            kind(&["t", "dump", "--vfct", "x", "--from-rom", "c5:00.0"]),
            Err(ErrorKind::ArgumentConflict)
        );
        assert_eq!(
            kind(&["t", "dump", "--from-rom", "c5:00.0", "--dry-run"]),
            Ok(())
        );
        assert_eq!(kind(&["t", "check", "a.bin", "b.bin"]), Ok(()));
        assert_eq!(
            kind(&["t", "check"]),
            Err(ErrorKind::MissingRequiredArgument)
        );
    }

    #[test]
    fn dump_reads_the_vfct_under_the_sysfs_root() {
        let sys = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        let tables = sys.path().join("firmware/acpi/tables");
        fs::create_dir_all(&tables).unwrap();
        let t = build_vfct(&[SyntheticImage::seed_igpu()]);
        fs::write(tables.join("VFCT"), &t).unwrap();
        for json in [false, true] {
            // The second run replaces the first's file: with --force only.
            let mut a = dump_args(None, out.path());
            a.force = json;
            assert_eq!(run_dump(a, sys.path(), json).unwrap(), exit::OK);
        }
        let e = run_dump(dump_args(None, out.path()), sys.path(), false).unwrap_err();
        assert_eq!(e.exit_code(), exit::REFUSED, "{e}");
        let rom = fs::read(out.path().join("vbios_1002_1900.bin")).unwrap();
        assert_eq!(rom, build_rom(0x1002, 0x1900, false));
    }

    #[test]
    fn dump_without_a_vfct_is_not_found() {
        let sys = tempfile::tempdir().unwrap();
        let e = run_dump(dump_args(None, sys.path()), sys.path(), false).unwrap_err();
        assert!(matches!(e, Error::NotFound { .. }), "{e}");
        assert_eq!(e.exit_code(), exit::USAGE);
    }

    #[test]
    fn dump_with_a_bad_image_exits_failed() {
        let dir = tempfile::tempdir().unwrap();
        let mut img = SyntheticImage::seed_igpu();
        img.rom[0] = 0;
        let f = dir.path().join("VFCT");
        fs::write(&f, build_vfct(&[img])).unwrap();
        let out = dir.path().join("out");
        fs::create_dir(&out).unwrap();
        assert_eq!(
            run_dump(dump_args(Some(f), &out), dir.path(), false).unwrap(),
            exit::FAILED
        );
        assert_eq!(fs::read_dir(&out).unwrap().count(), 0);
    }

    #[test]
    fn check_exit_codes_follow_validity_and_sameness() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.bin");
        let b = dir.path().join("b.bin");
        let bad = dir.path().join("bad.bin");
        fs::write(&a, build_rom(0x1002, 0x1900, true)).unwrap();
        fs::write(&b, build_rom(0x1002, 0x15bf, true)).unwrap();
        fs::write(&bad, b"not a rom").unwrap();
        for json in [false, true] {
            assert_eq!(run_check(a.clone(), None, json).unwrap(), exit::OK);
            assert_eq!(
                run_check(a.clone(), Some(a.clone()), json).unwrap(),
                exit::OK
            );
            assert_eq!(
                run_check(a.clone(), Some(b.clone()), json).unwrap(),
                exit::FAILED
            );
            assert_eq!(run_check(bad.clone(), None, json).unwrap(), exit::FAILED);
        }
        let e = run_check(dir.path().join("missing"), None, false).unwrap_err();
        assert_eq!(e.exit_code(), exit::SYSTEM);
    }

    /// The twin with a ROM behind the iGPU's `rom` attribute.
    fn rom_twin() -> (crate::sim::Twin, Machine, PathBuf) {
        let t = crate::sim::Twin::new().unwrap();
        let host = Machine::new(&t.sysfs);
        let rom = host.device_dir(&"c5:00.0".parse().unwrap()).join("rom");
        fs::write(&rom, build_rom(0x1002, 0x1900, false)).unwrap();
        (t, host, rom)
    }

    #[test]
    fn from_rom_dry_run_touches_nothing() {
        let (_t, host, rom) = rom_twin();
        let out = tempfile::tempdir().unwrap();
        let before = fs::read(&rom).unwrap();
        let mut d = dump_args(None, out.path());
        d.from_rom = Some("c5:00.0".into());
        d.dry_run = true;
        assert_eq!(
            dump_from_rom(&d, "c5:00.0", &host, false).unwrap(),
            exit::OK
        );
        assert_eq!(dump_from_rom(&d, "c5:00.0", &host, true).unwrap(), exit::OK);
        assert_eq!(fs::read(&rom).unwrap(), before);
        assert_eq!(fs::read_dir(out.path()).unwrap().count(), 0);
        assert!(
            !crate::pci::lock::lock_dir(&host).exists(),
            "no lock in a dry run"
        );
    }

    #[test]
    fn from_rom_needs_an_existing_device_and_a_free_one() {
        let (_t, host, rom) = rom_twin();
        let before = fs::read(&rom).unwrap();
        let out = tempfile::tempdir().unwrap();
        let mut d = dump_args(None, out.path());
        d.from_rom = Some("c5:00.0".into());
        let e = dump_from_rom(&d, "c6:00.0", &host, false).unwrap_err();
        assert!(matches!(e, Error::NotFound { .. }), "{e}");
        let e = dump_from_rom(&d, "c5:00", &host, false).unwrap_err();
        assert!(matches!(e, Error::Parse { .. }), "{e}");
        // A VM holding the group: refused, the attribute untouched.
        let vm = fs::File::open(host.vfio_group_node(18)).unwrap();
        let e = dump_from_rom(&d, "c5:00.0", &host, false).unwrap_err();
        assert!(matches!(e, Error::Refused { .. }), "{e}");
        assert!(e.to_string().contains("VFIO group 18 open by"), "{e}");
        assert_eq!(fs::read(&rom).unwrap(), before);
        drop(vm);
        // Another resetlab holding the device: waited for, bounded, then refused.
        let held = crate::pci::lock::lock(
            &host,
            &"c5:00.0".parse().unwrap(),
            std::time::Duration::ZERO,
        )
        .unwrap();
        let e = dump_from_rom(&d, "c5:00.0", &host, false).unwrap_err();
        assert!(e.to_string().contains("waited 20 ms"), "{e}");
        drop(held);
        // Free: enabled, read, disabled. A plain file stands in for the attribute, so
        // the read returns the image with the enable's "1" written over its 0x55: not a
        // valid ROM (exit 1, nothing written out), and the disable's "0\n" is last.
        assert_eq!(
            dump_from_rom(&d, "c5:00.0", &host, false).unwrap(),
            exit::FAILED
        );
        assert_eq!(&fs::read(&rom).unwrap()[..2], b"0\n");
        assert_eq!(fs::read_dir(out.path()).unwrap().count(), 0);
    }
}
