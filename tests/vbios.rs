//! VFCT parsing, option-ROM checks, dumps and ROM comparison, over synthetic tables built here
//! and the first 528 bytes of the seed's real 8845HS VBIOS dump (`tests/data/`, from its xxd).

use std::fs;
use std::path::Path;

use proptest::prelude::*;
use resetlab::amd::vbios::*;
use resetlab::sim::rom::{build_rom, build_vfct, fix_acpi_checksum, SyntheticImage};
use resetlab::Error;

/// The table offsets of the first image in a table from [`build_vfct`].
const H0: u64 = 0x4c;
const C0: u64 = 0x4c + 0x1c;

fn layout(e: Error) -> (String, &'static str, u64, String) {
    match e {
        Error::Layout {
            what,
            field,
            offset,
            reason,
        } => (what, field, offset, reason),
        other => panic!("expected a Layout error, got: {other}"),
    }
}

fn seed_table() -> Vec<u8> {
    build_vfct(&[SyntheticImage::seed_igpu()])
}

fn only_problem(img: &VfctImage) -> &Problem {
    let all = img.all_problems();
    assert_eq!(all.len(), 1, "problems: {all:?}");
    all[0]
}

#[test]
fn valid_table_parses_with_every_field() {
    let t = seed_table();
    let v = parse_vfct(&t).expect("valid table");
    assert_eq!(v.header.signature, "VFCT");
    assert_eq!(v.header.length as usize, t.len());
    assert!(v.checksum_ok);
    assert_eq!(v.vbios_image_offset, 0x4c);
    assert_eq!(v.images.len(), 1);
    let img = &v.images[0];
    assert_eq!(img.header_offset as u64, H0);
    assert_eq!(img.content_offset as u64, C0);
    assert_eq!(
        (img.pci_bus, img.pci_device, img.pci_function),
        (0xc5, 0, 0)
    );
    assert_eq!(img.bdf(), "0000:c5:00.0");
    assert_eq!((img.vendor_id, img.device_id), (0x1002, 0x1900));
    assert_eq!((img.ssvid, img.ssid), (0x1f4c, 0xb016));
    assert_eq!(img.file_name(), "vbios_1002_1900.bin");
    assert_eq!(img.image_length as usize, img.content.len());
    assert!(img.is_valid(), "{:?}", img.all_problems());
    assert_eq!(img.content, build_rom(0x1002, 0x1900, false));
    assert!(v.notes.is_empty(), "{:?}", v.notes);
}

#[test]
fn two_images_are_walked_header_plus_length_apart() {
    let mut gop = SyntheticImage::new(0xc5, 0, 1, 0x1002, 0x1640);
    gop.rom = build_rom(0x1002, 0x1640, true);
    let t = build_vfct(&[SyntheticImage::seed_igpu(), gop]);
    let v = parse_vfct(&t).expect("valid");
    assert_eq!(v.images.len(), 2);
    let first_len = v.images[0].image_length as usize;
    assert_eq!(v.images[1].header_offset, 0x4c + 0x1c + first_len);
    let rom = v.images[1].rom.as_ref().expect("rom");
    assert_eq!(rom.images.len(), 2);
    assert_eq!(rom.images[1].code_type, 3);
    assert!(v.images.iter().all(VfctImage::is_valid));
}

#[test]
fn bad_table_checksum_names_the_checksum_byte() {
    let mut t = seed_table();
    t[0x30] = t[0x30].wrapping_add(1); // inside TableUUID: only the sum changes
    let (what, field, offset, reason) = layout(parse_vfct(&t).unwrap_err());
    assert_eq!(
        (what.as_str(), field, offset),
        ("VFCT table", "Checksum", 9)
    );
    assert!(reason.contains("sum to 0x01"), "{reason}");
    // --ignore-checksum accepts it and says so.
    let v = parse_vfct_with(
        &t,
        VfctOptions {
            ignore_checksum: true,
            ..VfctOptions::default()
        },
    )
    .expect("accepted");
    assert!(!v.checksum_ok);
    assert!(
        v.notes.iter().any(|n| n.contains("Checksum")),
        "{:?}",
        v.notes
    );
}

#[test]
fn image_length_past_the_end_names_the_field_and_table_end() {
    let mut t = seed_table();
    let at = (H0 + 0x18) as usize;
    t[at..at + 4].copy_from_slice(&65536u32.to_le_bytes());
    fix_acpi_checksum(&mut t);
    let e = parse_vfct(&t).unwrap_err();
    let line = e.to_string();
    let (what, field, offset, reason) = layout(e);
    assert_eq!(
        (what.as_str(), field, offset),
        ("VFCT image 0 at 0x4c", "ImageLength", 0x64)
    );
    assert!(
        reason.contains(&format!("past the table end ({:#x})", t.len())),
        "{reason}"
    );
    assert!(
        line.starts_with("VFCT image 0 at 0x4c: ImageLength at 0x64: 65536 bytes"),
        "{line}"
    );
}

#[test]
fn truncated_table_names_the_length_field() {
    let t = seed_table();
    let short = &t[..t.len() - 100];
    let (what, field, offset, reason) = layout(parse_vfct(short).unwrap_err());
    assert_eq!((what.as_str(), field, offset), ("VFCT table", "Length", 4));
    assert!(reason.contains("truncated"), "{reason}");
    // Shorter than the ACPI header itself.
    let (_, field, offset, _) = layout(parse_vfct(&t[..20]).unwrap_err());
    assert_eq!((field, offset), ("ACPI header", 0));
}

#[test]
fn wrong_signature_is_named() {
    let mut t = seed_table();
    t[0..4].copy_from_slice(b"VFCX");
    let (_, field, offset, reason) = layout(parse_vfct(&t).unwrap_err());
    assert_eq!((field, offset), ("Signature", 0));
    assert!(reason.contains("'VFCX'"), "{reason}");
}

#[test]
fn vbios_image_offset_inside_the_header_or_past_the_end() {
    for (value, needle) in [(0x10u32, "inside"), (0xffff_0000, "past the table end")] {
        let mut t = seed_table();
        t[0x34..0x38].copy_from_slice(&value.to_le_bytes());
        fix_acpi_checksum(&mut t);
        let (_, field, offset, reason) = layout(parse_vfct(&t).unwrap_err());
        assert_eq!((field, offset), ("VBIOSImageOffset", 0x34));
        assert!(reason.contains(needle), "{reason}");
    }
}

#[test]
fn partial_image_header_at_the_end_is_an_error_unless_zero_padding() {
    // Append 8 non-zero bytes to the table (Length grows): a header that cannot fit.
    let mut t = seed_table();
    let old = t.len();
    t.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]);
    let len = t.len() as u32;
    t[4..8].copy_from_slice(&len.to_le_bytes());
    fix_acpi_checksum(&mut t);
    let (what, field, offset, _) = layout(parse_vfct(&t).unwrap_err());
    assert_eq!(field, "image header");
    assert_eq!(offset as usize, old);
    assert!(what.starts_with("VFCT image 1"), "{what}");
    // Zero padding is just noted.
    let mut t = seed_table();
    t.extend_from_slice(&[0; 8]);
    let len = t.len() as u32;
    t[4..8].copy_from_slice(&len.to_le_bytes());
    fix_acpi_checksum(&mut t);
    let v = parse_vfct(&t).expect("padding is fine");
    assert!(
        v.notes.iter().any(|n| n.contains("padding")),
        "{:?}",
        v.notes
    );
}

#[test]
fn all_zero_headers_are_skipped_like_amdgpu() {
    // An all-zero header (ImageLength 0) before the real image: amdgpu skips it and goes on.
    let mut empty = SyntheticImage::seed_igpu();
    (
        empty.bus,
        empty.vendor_id,
        empty.device_id,
        empty.ssvid,
        empty.ssid,
        empty.revision,
    ) = (0, 0, 0, 0, 0, 0);
    empty.rom.clear();
    let t = build_vfct(&[empty, SyntheticImage::seed_igpu()]);
    let v = parse_vfct(&t).expect("valid");
    assert_eq!(v.images.len(), 1);
    assert_eq!(v.images[0].header_offset, 0x4c + 0x1c);
    assert!(v.images[0].is_valid());
    assert!(
        v.notes.iter().any(|n| n.contains("skipped")),
        "{:?}",
        v.notes
    );
}

#[test]
fn zero_length_image_is_a_bad_image_not_a_bad_table() {
    let mut zero = SyntheticImage::new(0xc5, 0, 1, 0x1002, 0x1640);
    zero.rom.clear();
    let t = build_vfct(&[zero, SyntheticImage::seed_igpu()]);
    let v = parse_vfct(&t).expect("table parses");
    assert_eq!(v.images.len(), 2);
    let p = only_problem(&v.images[0]);
    assert_eq!((p.field, p.offset), ("ImageLength", H0 + 0x18));
    assert!(p.reason.contains("is 0"), "{p}");
    assert!(v.images[1].is_valid());
}

#[test]
fn bad_rom_signature_names_the_rom_offset_and_table_offset() {
    let mut img = SyntheticImage::seed_igpu();
    img.rom[0] = 0x4d;
    img.rom[1] = 0x5a;
    let v = parse_vfct(&build_vfct(&[img])).expect("table parses");
    let p = only_problem(&v.images[0]);
    assert_eq!((p.field, p.offset), ("signature", 0));
    assert!(p.what.contains(&format!("table offset {C0:#x}")), "{p}");
    assert!(p.reason.contains("4d 5a, expected 55 aa"), "{p}");
}

#[test]
fn pcir_ids_must_match_the_image_header() {
    let mut img = SyntheticImage::seed_igpu();
    img.rom = build_rom(0x1002, 0x15bf, false); // a Phoenix1 ROM under a 1002:1900 header
    let v = parse_vfct(&build_vfct(&[img])).expect("table parses");
    let p = only_problem(&v.images[0]);
    assert_eq!((p.field, p.offset), ("DeviceID", H0 + 0x0e));
    assert!(
        p.reason.contains("0x1900") && p.reason.contains("0x15bf"),
        "{p}"
    );
}

#[test]
fn bad_pcir_signature_and_pointer() {
    let mut rom = build_rom(0x1002, 0x1900, false);
    rom[0x1c0] = b'X';
    let (_, field, offset, _) = layout(check_rom(&rom).unwrap_err());
    assert_eq!((field, offset), ("PCIR signature", 0x1c0));

    let mut rom = build_rom(0x1002, 0x1900, false);
    rom[0x18..0x1a].copy_from_slice(&0x03f0u16.to_le_bytes());
    let (_, field, offset, reason) = layout(check_rom(&rom).unwrap_err());
    assert_eq!((field, offset), ("PCIR pointer", 0x18));
    assert!(reason.contains("runs past the end"), "{reason}");

    let mut rom = build_rom(0x1002, 0x1900, false);
    rom[0x18..0x1a].copy_from_slice(&0x0004u16.to_le_bytes());
    let (_, field, _, reason) = layout(check_rom(&rom).unwrap_err());
    assert_eq!(field, "PCIR pointer");
    assert!(reason.contains("into the"), "{reason}");
}

#[test]
fn pcir_image_length_past_the_rom_end() {
    let mut rom = build_rom(0x1002, 0x1900, false);
    rom[0x1d0..0x1d2].copy_from_slice(&3u16.to_le_bytes()); // 3 x 512 > 1024
    let (_, field, offset, reason) = layout(check_rom(&rom).unwrap_err());
    assert_eq!((field, offset), ("PCIR ImageLength", 0x1d0));
    assert!(
        reason.contains("past the end of the ROM (0x400)"),
        "{reason}"
    );
}

#[test]
fn rom_without_atom_header_is_rejected_in_a_vfct_but_fine_as_a_rom() {
    let mut rom = build_rom(0x1002, 0x1900, false);
    rom[0x198..0x19c].copy_from_slice(b"NOPE");
    // Keep the ROM checksum right by moving the balance byte.
    let s = rom.iter().fold(0u8, |a, &b| a.wrapping_add(b));
    rom[0x21] = rom[0x21].wrapping_sub(s);
    let info = check_rom(&rom).expect("a valid option ROM");
    let atom = info.atom.expect("atom view");
    assert!(!atom.amdgpu_accepts);
    assert!(atom.verdict.contains("'NOPE'"), "{}", atom.verdict);

    let mut img = SyntheticImage::seed_igpu();
    img.rom = rom;
    let v = parse_vfct(&build_vfct(&[img])).expect("table parses");
    let p = only_problem(&v.images[0]);
    assert_eq!(p.field, "ATOM ROM header");
    assert!(p.reason.contains("check_atom_bios"), "{p}");
}

#[test]
fn out_of_range_pci_numbers_are_named() {
    let mut img = SyntheticImage::seed_igpu();
    img.device = 0x20;
    img.function = 9;
    let v = parse_vfct(&build_vfct(&[img])).expect("table parses");
    let fields: Vec<_> = v.images[0]
        .problems
        .iter()
        .map(|p| (p.field, p.offset))
        .collect();
    assert_eq!(fields, vec![("PCIDevice", H0 + 4), ("PCIFunction", H0 + 8)]);
}

fn sysfs_with_device(root: &Path, bdf: &str, vendor: &str, device: &str) {
    let d = root.join("bus/pci/devices").join(bdf);
    fs::create_dir_all(&d).unwrap();
    fs::write(d.join("vendor"), format!("{vendor}\n")).unwrap();
    fs::write(d.join("device"), format!("{device}\n")).unwrap();
}

fn dir_names(p: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(p)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn dump_writes_the_exact_bytes_and_check_agrees() {
    let out = tempfile::tempdir().unwrap();
    let sys = tempfile::tempdir().unwrap();
    sysfs_with_device(sys.path(), "0000:c5:00.0", "0x1002", "0x1900");
    let t = seed_table();
    let r = dump_vfct(&t, VfctOptions::default(), out.path(), sys.path()).expect("dump");
    assert!(r.all_valid());
    let d = &r.images[0];
    assert_eq!(d.bdf, "0000:c5:00.0");
    assert!(d.device.exists);
    assert_eq!(d.device.ids_match, Some(true));
    let file = d.file.as_ref().expect("written");
    assert_eq!(file, &out.path().join("vbios_1002_1900.bin"));
    let written = fs::read(file).unwrap();
    let v = parse_vfct(&t).unwrap();
    assert_eq!(written, v.images[0].content);
    assert_eq!(&written[..], &t[C0 as usize..]);
    let info = check_rom(&written).expect("check agrees");
    assert_eq!(
        (info.images[0].vendor_id, info.images[0].device_id),
        (0x1002, 0x1900)
    );
    assert!(compare_roms(&written, &v.images[0].content).identical);
    // Nothing but the image: no temporary file left behind.
    assert_eq!(dir_names(out.path()), vec!["vbios_1002_1900.bin"]);
}

#[test]
fn dump_reports_a_missing_or_different_device() {
    let out = tempfile::tempdir().unwrap();
    let sys = tempfile::tempdir().unwrap();
    let r = dump_vfct(
        &seed_table(),
        VfctOptions::default(),
        out.path(),
        sys.path(),
    )
    .unwrap();
    assert!(!r.images[0].device.exists);
    assert_eq!(r.images[0].device.ids_match, None);
    sysfs_with_device(sys.path(), "0000:c5:00.0", "0x1002", "0x15bf");
    // A second dump into the same directory replaces the file only when asked.
    assert!(dump_vfct(
        &seed_table(),
        VfctOptions::default(),
        out.path(),
        sys.path()
    )
    .is_err());
    let r = dump_vfct(
        &seed_table(),
        VfctOptions {
            overwrite: true,
            ..VfctOptions::default()
        },
        out.path(),
        sys.path(),
    )
    .unwrap();
    assert_eq!(r.images[0].device.ids_match, Some(false));
    assert_eq!(r.images[0].device.device_id, Some(0x15bf));
}

#[test]
fn a_bad_image_is_not_written_and_a_good_one_is() {
    let out = tempfile::tempdir().unwrap();
    let sys = tempfile::tempdir().unwrap();
    let mut bad = SyntheticImage::new(0xc5, 0, 1, 0x1002, 0x1640);
    let n = bad.rom.len();
    bad.rom[n - 1] ^= 0xff; // legacy checksum broken
    let t = build_vfct(&[bad, SyntheticImage::seed_igpu()]);
    let r = dump_vfct(&t, VfctOptions::default(), out.path(), sys.path()).unwrap();
    assert!(!r.all_valid());
    assert!(r.images[0].file.is_none());
    assert!(
        r.images[0].problems[0].contains("checksum at 0x0"),
        "{:?}",
        r.images[0].problems
    );
    assert!(r.images[1].file.is_some());
    assert_eq!(dir_names(out.path()), vec!["vbios_1002_1900.bin"]);
}

#[test]
fn images_with_the_same_ids_get_distinct_names() {
    let out = tempfile::tempdir().unwrap();
    let sys = tempfile::tempdir().unwrap();
    let t = build_vfct(&[
        SyntheticImage::new(0x03, 0, 0, 0x1002, 0x73bf),
        SyntheticImage::new(0x04, 0, 0, 0x1002, 0x73bf),
    ]);
    dump_vfct(&t, VfctOptions::default(), out.path(), sys.path()).unwrap();
    assert_eq!(
        dir_names(out.path()),
        vec!["vbios_1002_73bf_03_00_0.bin", "vbios_1002_73bf_04_00_0.bin"]
    );
}

#[test]
fn a_structurally_broken_table_writes_nothing() {
    let out = tempfile::tempdir().unwrap();
    let sys = tempfile::tempdir().unwrap();
    let t = seed_table();
    assert!(dump_vfct(
        &t[..t.len() - 1],
        VfctOptions::default(),
        out.path(),
        sys.path()
    )
    .is_err());
    assert!(dir_names(out.path()).is_empty());
}

#[test]
fn write_atomic_replaces_and_leaves_no_temp() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.bin");
    write_atomic(&p, b"old").unwrap();
    write_atomic(&p, b"new bytes").unwrap();
    assert_eq!(fs::read(&p).unwrap(), b"new bytes");
    assert_eq!(dir_names(dir.path()), vec!["x.bin"]);
    // A directory that does not exist: an error, nothing written.
    let e = write_atomic(&dir.path().join("no/such/x.bin"), b"z").unwrap_err();
    assert!(
        matches!(&e, Error::Io { path, .. } if path.ends_with("no/such")),
        "{e:?}"
    );
}

/// A `rom` attribute that records what is done to it and can fail on demand.
struct FakeRom {
    path: std::path::PathBuf,
    rom: Vec<u8>,
    log: Vec<String>,
    enabled: bool,
    fail_read: bool,
    fail_enable: bool,
}

impl FakeRom {
    fn new() -> Self {
        FakeRom {
            path: "/fake/0000:c5:00.0/rom".into(),
            rom: build_rom(0x1002, 0x1900, true),
            log: Vec::new(),
            enabled: false,
            fail_read: false,
            fail_enable: false,
        }
    }
}

impl RomAttr for FakeRom {
    fn path(&self) -> &Path {
        &self.path
    }
    fn write(&mut self, value: &[u8]) -> resetlab::Result<()> {
        self.log.push(format!("write {value:?}"));
        if self.fail_enable && value == ROM_ENABLE {
            return Err(Error::io(
                "write",
                &self.path,
                std::io::Error::from_raw_os_error(13),
            ));
        }
        // pci_write_rom: only "0\n" at offset 0 disables.
        self.enabled = value != b"0\n";
        Ok(())
    }
    fn read(&mut self) -> resetlab::Result<Vec<u8>> {
        self.log.push("read".into());
        if self.fail_read || !self.enabled {
            return Err(Error::io(
                "read",
                &self.path,
                std::io::Error::from_raw_os_error(22),
            ));
        }
        Ok(self.rom.clone())
    }
}

#[test]
fn device_rom_is_enabled_read_and_disabled() {
    let mut f = FakeRom::new();
    let got = read_device_rom(&mut f, false).expect("read");
    assert_eq!(f.log, vec!["write [49]", "read", "write [48, 10]"]);
    assert!(!f.enabled);
    assert_eq!(got.bytes.as_deref(), Some(&f.rom[..]));
    assert!(got.writes.iter().all(|w| w.done));
    let info = check_rom(got.bytes.as_deref().unwrap()).unwrap();
    assert_eq!(info.size, f.rom.len());
    assert_eq!(info.images[0].vendor_id, 0x1002);
}

#[test]
fn device_rom_is_disabled_even_when_the_read_fails() {
    let mut f = FakeRom::new();
    f.fail_read = true;
    let e = read_device_rom(&mut f, false).unwrap_err();
    assert_eq!(e.errno(), Some(22));
    assert_eq!(f.log.last().map(String::as_str), Some("write [48, 10]"));
    assert!(!f.enabled);
}

#[test]
fn device_rom_disable_is_tried_even_when_enable_fails() {
    let mut f = FakeRom::new();
    f.fail_enable = true;
    let e = read_device_rom(&mut f, false).unwrap_err();
    assert_eq!(e.errno(), Some(13));
    assert_eq!(f.log, vec!["write [49]", "write [48, 10]"]);
}

#[test]
fn device_rom_dry_run_records_and_touches_nothing() {
    let mut f = FakeRom::new();
    let got = read_device_rom(&mut f, true).expect("dry run");
    assert!(f.log.is_empty());
    assert!(got.bytes.is_none());
    let planned: Vec<_> = got
        .writes
        .iter()
        .map(|w| (w.value.as_str(), w.done))
        .collect();
    assert_eq!(planned, vec![("1", false), ("0\n", false)]);
}

/// The seed's real dump, first 0x210 bytes (from its xxd), padded to the 33 x 512 bytes its
/// header declares. The unknown rest is zero except one balancing byte, so the checksum holds.
fn seed_rom() -> Vec<u8> {
    let head = fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/seed_vbios_1002_1900_head.bin"),
    )
    .expect("fixture");
    let mut rom = head;
    rom.resize(16896, 0);
    let s = rom.iter().fold(0u8, |a, &b| a.wrapping_add(b));
    rom[0x4000] = 0u8.wrapping_sub(s);
    rom
}

#[test]
fn the_seeds_real_vbios_header_reads_as_amdgpu_reads_it() {
    let rom = seed_rom();
    let info = check_rom(&rom).expect("valid");
    assert_eq!(info.size, 16896);
    let img = &info.images[0];
    assert_eq!((img.vendor_id, img.device_id), (0x1002, 0x1900));
    assert_eq!(img.pcir_offset, 0x1c0);
    assert_eq!(img.image_length, 33 * 512);
    assert_eq!(img.class_code, 0x038000);
    assert_eq!(img.code_type, 0);
    assert!(img.last_image);
    let a = info.atom.expect("atom");
    assert!(a.amdgpu_accepts);
    assert!(a.amd_signature);
    assert_eq!(a.rom_header_offset, 0x194);
    assert_eq!((a.format_revision, a.content_revision), (Some(2), Some(3)));
    assert_eq!(a.part_number.as_deref(), Some("113-PHXGENERIC-001"));
    assert_eq!(a.version.as_deref(), Some("022.012.000.027.000001"));
    assert_eq!(a.date.as_deref(), Some("09/15/23,12:20:39"));
    assert_eq!(a.build.as_deref(), Some("00077464"));
    assert_eq!(a.config_filename.as_deref(), Some("PHOENIX.bin "));
    assert_eq!(a.bootup_message.as_deref(), Some("AMD AMD_PHOENIX_GENERIC"));
    assert_eq!(a.pci_info_offset, Some(0x1c0));
}

#[test]
fn the_seeds_two_roms_differ_in_the_checksum_byte_and_the_body() {
    // The seed's diff: 0x21 (5a vs 6c) and bytes from 0x31dc on. Rebuild that shape.
    let a = seed_rom();
    let mut b = a.clone();
    b[0x31dc] = 0x02;
    b[0x31dd] = 0x30;
    b[0x21] = 0x6c;
    let d = compare_roms(&a, &b);
    assert_eq!((d.size_a, d.size_b), (16896, 16896));
    assert_eq!(d.ranges.len(), 2);
    assert_eq!((d.ranges[0].start, d.ranges[0].end), (0x21, 0x22));
    assert_eq!(d.ranges[0].regions, vec!["checksum byte (ATOM, 0x21)"]);
    assert_eq!(d.ranges[1].regions, vec!["image 0 body"]);
}

/// The rows of the seed's `diff` of the two ROMs' xxd output, applied to the padded seed ROM:
/// the first file's rows (`<`) give one ROM, the second's (`>`) the other.
fn seed_diff_pair() -> (Vec<u8>, Vec<u8>) {
    let text = fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/seed_vbios_diff.txt"),
    )
    .expect("fixture");
    let (mut a, mut b) = (seed_rom(), seed_rom());
    for line in text.lines() {
        let (side, rest) = line.split_at(2);
        let (off, hexpart) = rest.split_once(": ").expect("xxd row");
        let off = usize::from_str_radix(off, 16).expect("offset");
        let digits: String = hexpart[..39].split_whitespace().collect();
        let row: Vec<u8> = (0..16)
            .map(|i| u8::from_str_radix(&digits[2 * i..2 * i + 2], 16).expect("hex"))
            .collect();
        let dst = if side.starts_with('<') {
            &mut a
        } else {
            &mut b
        };
        dst[off..off + 16].copy_from_slice(&row);
    }
    (a, b)
}

#[test]
fn the_seeds_real_diff_is_53_bytes_in_18_ranges() {
    let (a, b) = seed_diff_pair();
    let d = compare_roms(&a, &b);
    assert_eq!((d.size_a, d.size_b), (16896, 16896));
    assert_eq!(d.differing_bytes, 53);
    assert_eq!(d.ranges.len(), 18);
    assert_eq!((d.ranges[0].start, d.ranges[0].end), (0x21, 0x22));
    assert_eq!(d.ranges[0].regions, vec!["checksum byte (ATOM, 0x21)"]);
    assert_eq!(
        (d.ranges[1].start, d.ranges[1].end, d.ranges[1].differing),
        (0x31dc, 0x31e2, 4)
    );
    assert_eq!((d.ranges[17].start, d.ranges[17].end), (0x38fd, 0x38fe));
    assert!(d.ranges[1..].iter().all(|r| r.regions == ["image 0 body"]));
}

#[test]
fn different_sizes_are_a_range_past_the_shorter_file() {
    let a = build_rom(0x1002, 0x1900, false);
    let b = build_rom(0x1002, 0x1900, true);
    let d = compare_roms(&a, &b);
    assert!(!d.identical);
    let last = d.ranges.last().unwrap();
    assert_eq!((last.start, last.end), (0x400, 0x800));
    assert!(
        last.regions.iter().any(|r| r.contains("shorter file")),
        "{:?}",
        last.regions
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = parse_vfct(&bytes);
        let _ = parse_vfct_with(&bytes, VfctOptions { ignore_checksum: true, ..VfctOptions::default() });
        let _ = inspect_rom(&bytes);
        let _ = compare_roms(&bytes, &bytes[bytes.len() / 2..]);
    }

    #[test]
    fn vfct_shaped_garbage_never_panics(body in proptest::collection::vec(any::<u8>(), 0..2048), off in 0u32..0x900) {
        // A valid header over random content gets past the header checks into the walk.
        let mut t = b"VFCT".to_vec();
        t.extend_from_slice(&((body.len() + 0x4c) as u32).to_le_bytes());
        t.resize(0x4c, 0);
        t[0x34..0x38].copy_from_slice(&off.to_le_bytes());
        t.extend_from_slice(&body);
        fix_acpi_checksum(&mut t);
        let _ = parse_vfct(&t);
    }

    #[test]
    fn mutated_valid_tables_never_panic(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        fix in any::<bool>(),
        truncate in any::<bool>(),
    ) {
        let mut gop = SyntheticImage::new(0xc5, 0, 1, 0x1002, 0x1640);
        gop.rom = build_rom(0x1002, 0x1640, true);
        let mut t = build_vfct(&[SyntheticImage::seed_igpu(), gop]);
        for (i, v) in &edits {
            let at = i.index(t.len());
            t[at] = *v;
        }
        if fix {
            fix_acpi_checksum(&mut t);
        }
        if truncate {
            t.truncate(cut.index(t.len()));
        }
        if let Ok(v) = parse_vfct(&t) {
            for img in &v.images {
                let _ = img.all_problems();
                let _ = inspect_rom(&img.content);
            }
        }
    }

    #[test]
    fn mutated_roms_never_panic(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut r = build_rom(0x1002, 0x1900, true);
        let orig = r.clone();
        for (i, v) in &edits {
            let at = i.index(r.len());
            r[at] = *v;
        }
        let _ = check_rom(&r);
        let d = compare_roms(&orig, &r);
        prop_assert_eq!(d.identical, orig == r);
        r.truncate(cut.index(r.len()));
        let _ = check_rom(&r);
        let _ = compare_roms(&orig, &r);
    }

    #[test]
    fn any_ids_round_trip_through_build_and_parse(bus in 0u32..256, dev in 0u32..32, func in 0u32..8, v in any::<u16>(), d in any::<u16>()) {
        let t = build_vfct(&[SyntheticImage::new(bus, dev, func, v, d)]);
        let p = parse_vfct(&t).unwrap();
        let img = &p.images[0];
        prop_assert!(img.is_valid(), "{:?}", img.all_problems());
        prop_assert_eq!((img.pci_bus, img.pci_device, img.pci_function, img.vendor_id, img.device_id), (bus, dev, func, v, d));
    }
}
