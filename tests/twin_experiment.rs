//! The experiment runner on the twin (the 780M with its SMU model).

mod common;
use common::*;

use std::fs;
use std::time::Duration;

use resetlab::sim::profile::Profile;
use resetlab::sim::Twin;

fn exp(name: &str) -> String {
    format!("{}/tools/experiments/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn phoenix_examples_run_dry_and_committed() {
    let t = Twin::running(Profile::default()).unwrap();
    let s = sysfs_arg(&t.sysfs);
    let bar = t.sysfs.join("bus/pci/devices/0000:c5:00.0/resource5");
    for name in ["phoenix-smu-alive.rlx", "phoenix-mode2.rlx"] {
        let before = fs::read(&bar).unwrap();
        let plan = json(&[
            "--sysfs",
            &s,
            "run",
            &exp(name),
            "--dev",
            "c5:00.0",
            "--json",
        ]);
        assert!(!plan["steps"].as_array().unwrap().is_empty());
        assert_eq!(
            fs::read(&bar).unwrap(),
            before,
            "{name}: the dry run touched the BAR"
        );
        let rep = json(&[
            "--sysfs",
            &s,
            "run",
            &exp(name),
            "--dev",
            "c5:00.0",
            "--commit",
            "--json",
        ]);
        assert_eq!(rep["completed"], true, "{name}: {rep}");
    }
}

#[test]
fn mode2_diff_shows_what_changed() {
    let t = Twin::running(Profile::default()).unwrap();
    let s = sysfs_arg(&t.sysfs);
    resetlab::sim::model::mark_dirty(t.root(), &"c5:00.0".parse().unwrap()).unwrap();
    // The model shows the dirty state at its next step: wait (bounded) for
    // GRBM_STATUS.GUI_ACTIVE (BAR5 + 0x8010) before the "before" snapshot, so a
    // loaded machine cannot snapshot the GPU as clean.
    let bar = t.sysfs.join("bus/pci/devices/0000:c5:00.0/resource5");
    let busy = || {
        fs::read(&bar)
            .ok()
            .and_then(|b| b.get(0x8010..0x8014).map(|w| w[3] & 0x80 != 0))
            .unwrap_or(false)
    };
    for _ in 0..400 {
        if busy() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(busy(), "the model did not show the dirty GPU within 2 s");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("m.rlx");
    fs::write(&file, "snapshot before GRBM_STATUS MP1_SMN_C2PMSG_90\nsmu GfxDeviceDriverReset 2\nsnapshot after GRBM_STATUS MP1_SMN_C2PMSG_90\n").unwrap();
    let trace = dir.path().join("t.jsonl");
    let rep = json(&[
        "--sysfs",
        &s,
        "run",
        file.to_str().unwrap(),
        "--dev",
        "c5:00.0",
        "--commit",
        "--trace",
        trace.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(rep["completed"], true, "{rep}");
    assert_eq!(rep["steps"][1]["smu_response"], 1, "{rep}");
    let diff = json(&[
        "run",
        "diff",
        trace.to_str().unwrap(),
        "before",
        "after",
        "--json",
    ]);
    let rows = diff["rows"].as_array().unwrap();
    assert!(
        rows.iter().any(|r| r["register"] == "GRBM_STATUS"),
        "mode 2 cleared GUI_ACTIVE: {diff}"
    );
}

#[test]
fn a_failing_expect_stops_at_its_step() {
    let t = Twin::running(Profile::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("e.rlx");
    fs::write(&file, "read MP1_SMN_C2PMSG_90\nexpect MP1_SMN_C2PMSG_90 0xffffffff 0xdead\nread MP1_SMN_C2PMSG_90\n").unwrap();
    let o = run(&[
        "--sysfs",
        &sysfs_arg(&t.sysfs),
        "run",
        file.to_str().unwrap(),
        "--dev",
        "c5:00.0",
        "--commit",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let rep: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let steps = rep["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2, "stopped at step 2: {rep}");
    let err = steps[1]["error"].as_str().unwrap();
    assert!(
        err.starts_with("step 2 (") && err.contains("e.rlx:2:1"),
        "{err}"
    );
}

#[test]
fn parse_errors_name_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.rlx");
    fs::write(
        &file,
        "read MP1_SMN_C2PMSG_90\npoll MP1_SMN_C2PMSG_90 0x1 0x1 soon\n",
    )
    .unwrap();
    let o = run(&["--sim", "run", file.to_str().unwrap(), "--dev", "c5:00.0"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("bad.rlx:2:"), "{err}");
    assert_eq!(err.trim().lines().count(), 1);
}

#[test]
fn the_trace_holds_every_write_made_before_a_kill() {
    let t = Twin::running(Profile::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("w.rlx");
    let mut text = String::new();
    for i in 0..400u32 {
        text.push_str(&format!(
            "write @{:#x} {:#x}\nsleep 1ms\n",
            0x1000 + 4 * i,
            0xa500_0000 + i
        ));
    }
    fs::write(&file, text).unwrap();
    let trace = dir.path().join("t.jsonl");
    let mut child = bin()
        .args([
            "--sysfs",
            &sysfs_arg(&t.sysfs),
            "run",
            file.to_str().unwrap(),
            "--dev",
            "c5:00.0",
            "--commit",
            "--trace",
            trace.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once it is well under way (bounded wait on the trace growing).
    for _ in 0..1000 {
        if fs::read_to_string(&trace)
            .map(|s| s.lines().count() > 100)
            .unwrap_or(false)
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let recorded: std::collections::BTreeMap<u64, String> = fs::read_to_string(&trace)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "mmio")
        .map(|v| {
            (
                v["offset"].as_u64().unwrap(),
                v["value"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let bar = fs::read(t.sysfs.join("bus/pci/devices/0000:c5:00.0/resource5")).unwrap();
    let mut made = 0;
    for i in 0..400u64 {
        let off = 0x1000 + 4 * i;
        let v = u32::from_le_bytes(bar[off as usize..off as usize + 4].try_into().unwrap());
        if v != 0 {
            made += 1;
            assert_eq!(
                recorded.get(&off).map(String::as_str),
                Some(format!("{v:#010x}").as_str()),
                "write at {off:#x} not in the trace"
            );
        }
    }
    assert!(made > 0 && made < 400, "killed mid-run: {made} writes made");
}

#[test]
fn a_reset_step_runs_inside_the_runs_session() {
    // The run holds the device's lock, keeps it awake and decoding; its `reset`
    // step runs the chain in that session (it must not wait for its own lock),
    // and the session puts power control and COMMAND back at the end.
    let t = Twin::running(Profile::default()).unwrap();
    let s = sysfs_arg(&t.sysfs);
    let dev = t.sysfs.join("bus/pci/devices/0000:c5:00.0");
    fs::write(dev.join("power/control"), "auto\n").unwrap();
    let cfg = fs::read(dev.join("config")).unwrap();
    let command = u16::from_le_bytes([cfg[4], cfg[5]]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("r.rlx");
    fs::write(
        &file,
        "snapshot before GRBM_STATUS\nreset smu_mode2\nsnapshot after GRBM_STATUS\n",
    )
    .unwrap();
    let trace = dir.path().join("t.jsonl");
    let rep = json(&[
        "--sysfs",
        &s,
        "run",
        file.to_str().unwrap(),
        "--dev",
        "c5:00.0",
        "--commit",
        "--lock-timeout",
        "100",
        "--trace",
        trace.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(rep["completed"], true, "{rep}");
    let text = fs::read_to_string(&trace).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let methods: Vec<&str> = lines.iter().filter_map(|l| l["method"].as_str()).collect();
    assert!(methods.contains(&"smu_mode2"), "{methods:?}");
    // power/control: on and back for reading the discovery table before the run,
    // then on once for the run (the chain inside found it on), auto at its end.
    let control: Vec<&str> = lines
        .iter()
        .filter(|l| {
            l["path"]
                .as_str()
                .is_some_and(|p| p.ends_with("0000:c5:00.0/power/control"))
        })
        .filter_map(|l| l["value"].as_str())
        .collect();
    assert_eq!(control, ["on", "auto", "on", "auto"], "{text}");
    assert_eq!(
        fs::read_to_string(dev.join("power/control"))
            .unwrap()
            .trim(),
        "auto"
    );
    let cfg = fs::read(dev.join("config")).unwrap();
    assert_eq!(u16::from_le_bytes([cfg[4], cfg[5]]), command);
}
