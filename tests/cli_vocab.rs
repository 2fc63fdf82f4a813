//! One vocabulary: files are not overwritten without --force, every phase of
//! the hook has a dry run, and the errors exit as docs/cli.md says.

mod common;
use common::*;

use std::fs;

#[test]
fn snapshot_refuses_to_overwrite_without_force() {
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("s.tar");
    fs::write(&f, b"precious").unwrap();
    let o = run(&["--sim", "snapshot", f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("exists") && err.contains("--force"), "{err}");
    assert_eq!(fs::read(&f).unwrap(), b"precious");
    run_ok(&["--sim", "snapshot", f.to_str().unwrap(), "--force"]);
    assert_ne!(fs::read(&f).unwrap(), b"precious");
}

#[test]
fn vbios_dump_refuses_to_overwrite_a_rom_without_force() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().to_str().unwrap();
    run_ok(&["--sim", "vbios", "dump", "--out", out]);
    let rom = tmp.path().join("vbios_1002_1900.bin");
    fs::write(&rom, b"working rom").unwrap();
    let o = run(&["--sim", "vbios", "dump", "--out", out]);
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("vbios_1002_1900.bin exists"));
    assert_eq!(fs::read(&rom).unwrap(), b"working rom");
    run_ok(&["--sim", "vbios", "dump", "--out", out, "--force"]);
    assert_ne!(fs::read(&rom).unwrap(), b"working rom");
}

#[test]
fn hook_phase_dry_run_says_the_plan_and_does_nothing() {
    let twin = resetlab::sim::Twin::running(resetlab::sim::profile::Profile::default()).unwrap();
    let root = twin.root().to_path_buf();
    let pve = root.join("etc/pve");
    fs::create_dir_all(pve.join("qemu-server")).unwrap();
    fs::write(
        pve.join("qemu-server/100.conf"),
        "hostpci0: 0000:c5:00.0,pcie=1,x-vga=1\nmemory: 8192\n",
    )
    .unwrap();
    fs::write(root.join("dev/kmsg"), "").unwrap();
    let sys = sysfs_arg(&twin.sysfs);
    let pve_s = pve.display().to_string();
    let args = [
        "--sysfs",
        &sys,
        "--json",
        "hook",
        "100",
        "post-stop",
        "--dry-run",
        "--pve-config",
        &pve_s,
    ];
    let v = json(&args);
    assert_eq!(v["dry_run"], true);
    assert_eq!(v["plan"]["phase"], "post-stop");
    assert!(!v["plan"]["steps"].as_array().unwrap().is_empty(), "{v}");
    // Nothing was done: no state record, no kernel log line.
    assert!(!root.join("run/resetlab").join("100").exists());
    assert_eq!(fs::read_to_string(root.join("dev/kmsg")).unwrap(), "");
    let human = run_ok(
        &args
            .iter()
            .filter(|a| **a != "--json")
            .copied()
            .collect::<Vec<_>>(),
    );
    assert!(human.contains("dry run: nothing done"), "{human}");
}

#[test]
fn usage_errors_keep_clap_suggestions() {
    let o = run(&["--sim", "lsit"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("list"), "{err}");
}

#[test]
fn timeouts_take_units_on_the_command_line_and_in_the_policy() {
    // A bound with a unit is the same bound as its milliseconds.
    let a = json(&[
        "--sim",
        "--json",
        "reset",
        "c5:00.1",
        "--dry-run",
        "--lock-timeout",
        "2s",
    ]);
    let b = json(&[
        "--sim",
        "--json",
        "reset",
        "c5:00.1",
        "--dry-run",
        "--lock-timeout",
        "2000",
    ]);
    assert_eq!(a["device"], b["device"]);
    let o = run(&[
        "--sim",
        "reset",
        "c5:00.1",
        "--dry-run",
        "--lock-timeout",
        "2h",
    ]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("unknown unit 'h'") && err.contains("--lock-timeout"),
        "{err}"
    );

    // The policy's *_s keys: seconds, or a string with its unit.
    let twin = resetlab::sim::Twin::running(resetlab::sim::profile::Profile::default()).unwrap();
    let root = twin.root().to_path_buf();
    let pve = root.join("etc/pve");
    fs::create_dir_all(pve.join("qemu-server")).unwrap();
    fs::write(
        pve.join("qemu-server/100.conf"),
        "hostpci0: 0000:c5:00.0,pcie=1,x-vga=1\nmemory: 8192\n",
    )
    .unwrap();
    let policy = root.join("hook.toml");
    let sys = sysfs_arg(&twin.sysfs);
    let status = |text: &str| {
        fs::write(&policy, text).unwrap();
        run(&[
            "--sysfs",
            &sys,
            "--json",
            "hook",
            "status",
            "100",
            "--pve-config",
            pve.to_str().unwrap(),
            "--policy",
            policy.to_str().unwrap(),
        ])
    };
    for (text, want) in [
        ("release_timeout_s = 15\n", 15.0),
        ("release_timeout_s = \"500ms\"\n", 0.5),
        ("release_timeout_s = \"0.25m\"\n", 15.0),
    ] {
        let o = status(text);
        assert_eq!(o.status.code(), Some(0), "{text}: {o:?}");
        // The pre-stop plan names the release's bound.
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let would = v["phases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["phase"] == "pre-stop")
            .unwrap()["steps"][0]["would"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            would.contains(&format!("up to {want:.1} s")),
            "{text}: {would}"
        );
    }
    let o = status("release_timeout_s = \"2h\"\n");
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown unit 'h'"));
}
