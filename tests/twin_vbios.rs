//! The twin carries an ACPI VFCT table with the 780M's VBIOS: dump it, check it.

mod common;
use common::*;

#[test]
fn vbios_dump_on_the_twin_writes_the_igpu_image_and_check_agrees() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    let dump = json(&["--sim", "vbios", "dump", "--out", out, "--json"]);
    let file = dir.path().join("vbios_1002_1900.bin");
    assert!(file.is_file(), "{dump}");
    let text = dump.to_string();
    assert!(
        text.contains("0000:c5:00.0") || text.contains("c5:00.0"),
        "{dump}"
    );
    let check = json(&["vbios", "check", file.to_str().unwrap(), "--json"]);
    let t = check.to_string();
    assert!(t.contains("1002") && t.contains("1900"), "{check}");
    // The same file compared with itself is identical; with the twin's GOP ROM it differs.
    let o = run(&[
        "vbios",
        "check",
        file.to_str().unwrap(),
        file.to_str().unwrap(),
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
}

#[test]
fn vbios_from_rom_without_root_is_refused_and_the_attribute_untouched() {
    let t = twin();
    let rom = t.sysfs.join("bus/pci/devices/0000:c5:00.0/rom");
    std::fs::write(&rom, b"\x55\xaa rom").unwrap();
    let out = tempfile::tempdir().unwrap();
    let o = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            env!("CARGO_BIN_EXE_resetlab"),
            "--sysfs",
            &sysfs_arg(&t.sysfs),
            "vbios",
            "dump",
            "--from-rom",
            "c5:00.0",
            "--out",
            out.path().to_str().unwrap(),
        ])
        .output()
        .expect("setpriv (util-linux)");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(
        err.contains("writes '1' and '0' to it: run as root"),
        "{err}"
    );
    assert_eq!(std::fs::read(&rom).unwrap(), b"\x55\xaa rom");
}
