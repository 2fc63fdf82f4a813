//! `resetlab report` on the twin: the archive's members, no SMU message, the
//! snapshot member replays as the twin, a VM-held GPU is skipped.

mod common;
use common::*;

use std::fs;
use std::io::Read;
use std::path::Path;

use resetlab::sim::profile::Profile;
use resetlab::sim::Twin;

const IGPU: &str = "0000:c5:00.0";

/// Unpacks `archive` (a .tar.gz) into `dir`; returns the member names.
fn unpack(archive: &Path, dir: &Path) -> Vec<String> {
    let f = fs::File::open(archive).unwrap();
    let mut a = tar::Archive::new(flate2::read::GzDecoder::new(f));
    let mut names = vec![];
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().display().to_string();
        let out = dir.join(&name);
        fs::create_dir_all(out.parent().unwrap()).unwrap();
        let mut buf = vec![];
        e.read_to_end(&mut buf).unwrap();
        fs::write(&out, buf).unwrap();
        names.push(name);
    }
    names
}

fn journal(dir: &Path) -> Vec<serde_json::Value> {
    fs::read_to_string(dir.join("resetlab-report/journal.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn sim_report_writes_every_member_sends_no_message_and_its_snapshot_replays_as_the_twin() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.tar.gz");
    let o = out.display().to_string();
    let text = run_ok(&["--sim", "report", "--out", &o]);
    // A second report does not replace the first without --force.
    let before = std::fs::read(&out).unwrap();
    let again = run(&["--sim", "report", "--out", &o]);
    assert_eq!(again.status.code(), Some(3), "{again:?}");
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists"));
    assert_eq!(std::fs::read(&out).unwrap(), before);
    assert!(!out.with_extension("partial").exists());
    run_ok(&["--sim", "report", "--out", &o, "--force"]);
    for m in [
        "summary.md",
        "snapshot.tar.gz",
        "discovery/0000:c5:00.0.bin",
        "discovery/0000:c5:00.0.json",
        "smu/0000:c5:00.0.json",
        "doctor.txt",
        "versions.json",
        "journal.jsonl",
        "kmsg.txt",
    ] {
        assert!(text.contains(m), "output names {m}: {text}");
    }
    assert!(text.contains("0 SMU message(s) sent"), "{text}");
    let un = dir.path().join("un");
    let names = unpack(&out, &un);
    for m in [
        "summary.md",
        "snapshot.tar.gz",
        "doctor.json",
        "smu/0000:c5:00.0.json",
    ] {
        assert!(
            names.iter().any(|n| n == &format!("resetlab-report/{m}")),
            "{m} in {names:?}"
        );
    }
    assert_eq!(names[0], "resetlab-report/summary.md", "summary first");
    let root = un.join("resetlab-report");
    // The discovery member: the raw table parses and the decoded one names its source.
    let raw = fs::read(root.join("discovery/0000:c5:00.0.bin")).unwrap();
    resetlab::amd::discovery::parse(&raw, resetlab::amd::discovery::Mode::Strict).unwrap();
    let dec: serde_json::Value =
        serde_json::from_slice(&fs::read(root.join("discovery/0000:c5:00.0.json")).unwrap())
            .unwrap();
    assert_eq!(dec["source"], "device_table", "{dec}");
    // The mailbox read-only: the response register as the SMU left it, no message.
    let smu: serde_json::Value =
        serde_json::from_slice(&fs::read(root.join("smu/0000:c5:00.0.json")).unwrap()).unwrap();
    assert_eq!(smu["response"], 1, "{smu}");
    assert_eq!(smu["firmware_flags"], 1, "{smu}");
    assert!(smu["test"].is_null());
    // No write touched the mailbox (msg/arg/resp at BAR5 + 0x58a08/0x58a48/0x58a68).
    let writes = journal(&un);
    assert!(!writes.is_empty());
    for w in &writes {
        if w["target"] == "mmio" {
            let off = w["offset"].as_u64().unwrap();
            assert!(
                ![0x58a08, 0x58a48, 0x58a68].contains(&off),
                "a mailbox write: {w}"
            );
            assert!(
                [0x0, 0x18, 0x38].contains(&off),
                "only index registers: {w}"
            );
        }
    }
    let summary = fs::read_to_string(root.join("summary.md")).unwrap();
    assert!(summary.contains("sent 0 SMU message(s)"), "{summary}");
    assert!(summary.contains("device table"), "{summary}");
    let doctor: serde_json::Value =
        serde_json::from_slice(&fs::read(root.join("doctor.json")).unwrap()).unwrap();
    assert!(doctor.as_array().is_some_and(|a| !a.is_empty()));
    let versions: serde_json::Value =
        serde_json::from_slice(&fs::read(root.join("versions.json")).unwrap()).unwrap();
    assert_eq!(versions["kernel"], "6.8.12-11-pve");
    assert!(
        versions["dmi"].to_string().contains("bios_version"),
        "{versions}"
    );
    // The snapshot member replays as the twin.
    let snap = root.join("snapshot.tar.gz").display().to_string();
    let replay = json(&["--sysfs", &snap, "list", "--json"]);
    let twin = json(&["--sim", "list", "--json"]);
    assert_eq!(replay, twin);
}

#[test]
fn smu_test_sends_exactly_test_and_version() {
    let t = Twin::running(Profile::default()).unwrap();
    let s = sysfs_arg(&t.sysfs);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.tar.gz");
    let v = json(&[
        "--sysfs",
        &s,
        "report",
        "--out",
        &out.display().to_string(),
        "--smu-test",
        "--json",
    ]);
    assert_eq!(v["messages_sent"], 2, "{v}");
    let g = &v["gpus"][0];
    assert_eq!(g["test"], "OK", "{g}");
    assert!(
        g["pmfw_version"].as_str().unwrap().contains("76.80.0"),
        "{g}"
    );
}

#[test]
fn a_gpu_a_vm_holds_is_skipped_with_a_note_and_not_touched() {
    let t = Twin::running(Profile::default()).unwrap();
    let s = sysfs_arg(&t.sysfs);
    let _vm = fs::File::open(t.root().join("dev/vfio/18")).unwrap();
    let bar = t.sysfs.join("bus/pci/devices").join(IGPU).join("resource5");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.tar.gz");
    let v = json(&[
        "--sysfs",
        &s,
        "report",
        "--out",
        &out.display().to_string(),
        "--json",
    ]);
    let g = &v["gpus"][0];
    assert!(
        g["skipped"].as_str().unwrap().contains("VFIO group 18"),
        "{g}"
    );
    assert_eq!(g["bases_source"], "static");
    assert_eq!(v["writes"], 0, "{v}");
    assert!(bar.exists());
}
