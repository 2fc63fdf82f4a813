//! The device's own register bases on the twin: its GPU holds an IP discovery
//! table in VRAM built from the profile's `[discovery.bases]`; resetlab reads
//! it through MM_INDEX/MM_DATA and follows it (not regs/), in the BAR or
//! through PCIE_INDEX2/PCIE_DATA2 past it.

mod common;
use common::*;

use resetlab::sim::profile::Profile;
use resetlab::sim::Twin;

const IGPU: &str = "0000:c5:00.0";
/// MP1 segment 1 moved inside the 512 KiB BAR: msg at (0x17000 + 0x282) * 4 = 0x5ca08.
const INSIDE: u64 = 0x17000;
/// Moved past it: msg at (0x30000 + 0x282) * 4 = 0xc0a08, an SMN address.
const PAST: u64 = 0x30000;

fn twin_with_mp1(seg1: u64) -> Twin {
    let mut p = Profile::default();
    p.discovery.bases.insert("MP1".into(), vec![0x16000, seg1]);
    Twin::running(p).expect("twin with model")
}

fn sys(t: &Twin) -> String {
    sysfs_arg(&t.sysfs)
}

fn mp1_seg1(v: &serde_json::Value) -> &serde_json::Value {
    v["resolved"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["ip"] == "MP1" && b["base_idx"] == 1)
        .expect("MP1 segment 1 in the report")
}

#[test]
fn regs_bases_reads_the_moved_base_from_the_device_and_caches_it_per_boot() {
    let t = twin_with_mp1(INSIDE);
    let s = sys(&t);
    let v = json(&["--sysfs", &s, "regs", "bases", IGPU, "--json"]);
    assert_eq!(v["source"], "device_table", "{v}");
    assert_eq!(v["cached"], false);
    let b = mp1_seg1(&v);
    assert_eq!(b["base"].as_u64(), Some(INSIDE), "{b}");
    assert_eq!(b["source"], "device_table");
    assert_eq!(b["confirmed"], true);
    assert_eq!(b["verdict"], "differs");
    // The read wrote MM_INDEX (byte 0) with bit 31 set, journalled, and put it back.
    let writes = v["writes"].as_array().unwrap();
    assert!(writes
        .iter()
        .any(|w| w["offset"] == 0 && w["value"].as_str().unwrap().starts_with("0x9fff")));
    let cache = v["cache"].as_str().unwrap().to_string();
    assert!(
        cache.contains("7e1a5e00-0000-4000-8000-000000000001"),
        "{cache}"
    );
    // Second time: from the cache, no write.
    let v2 = json(&["--sysfs", &s, "regs", "bases", IGPU, "--json"]);
    assert_eq!(v2["cached"], true, "{v2}");
    assert_eq!(v2["writes"].as_array().unwrap().len(), 0);
    assert_eq!(mp1_seg1(&v2)["base"].as_u64(), Some(INSIDE));
    // Human output names the source of each base.
    let text = run_ok(&["--sysfs", &s, "regs", "bases", IGPU]);
    assert!(
        text.contains("bases from device table (VRAM, cached this boot)"),
        "{text}"
    );
    assert!(t.model_errors().is_empty(), "{:?}", t.model_errors());
}

fn dirty(t: &Twin) -> resetlab::pci::Bdf {
    let bdf: resetlab::pci::Bdf = IGPU.parse().unwrap();
    resetlab::sim::model::mark_dirty(t.root(), &bdf).unwrap();
    bdf
}

/// `smu test`, then `reset -m smu_mode2` on a dirty GPU, on a twin whose
/// MP1 segment 1 is `seg1`; returns the smu report and the reset's trace.
fn smu_and_mode2(seg1: u64) -> (serde_json::Value, serde_json::Value, Vec<serde_json::Value>) {
    let t = twin_with_mp1(seg1);
    let s = sys(&t);
    let smu = json(&["--sysfs", &s, "smu", IGPU, "test", "--json"]);
    assert_eq!(smu["replies"][0]["response_name"], "OK", "{smu}");
    assert_eq!(smu["firmware_running"], true, "{smu}");
    assert_eq!(smu["bases_source"], "device_table", "{smu}");
    assert!(smu["mailbox"]["base_confirmed"].as_bool().unwrap());
    assert_eq!(smu["mailbox"]["msg"].as_u64(), Some((seg1 + 0x282) * 4));
    let bdf = dirty(&t);
    let trace = t.root().join("mode2.jsonl");
    let tr = trace.display().to_string();
    let o = run(&[
        "--sysfs",
        &s,
        "reset",
        "--json",
        IGPU,
        "-m",
        "smu_mode2",
        "--trace",
        &tr,
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}\n{v}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        !resetlab::sim::model::is_dirty(t.root(), &bdf),
        "mode 2 cleaned it"
    );
    let run0 = v["runs"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(run0["health"]["healthy"], true, "{run0}");
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&trace)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(t.model_errors().is_empty(), "{:?}", t.model_errors());
    (smu, run0, lines)
}

fn mmio_writes(lines: &[serde_json::Value]) -> Vec<(u64, String)> {
    lines
        .iter()
        .filter(|l| l["target"] == "mmio")
        .map(|l| {
            (
                l["offset"].as_u64().unwrap(),
                l["value"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn moved_inside_the_bar_smu_test_passes_and_mode2_cleans_at_the_moved_mailbox() {
    let (smu, run0, lines) = smu_and_mode2(INSIDE);
    assert_eq!(smu["path"], "direct");
    let w = mmio_writes(&lines);
    let msg = (INSIDE + 0x282) * 4;
    assert!(
        w.iter().any(|(o, v)| *o == msg && v == "0x00000011"),
        "GfxDeviceDriverReset written at the moved msg register: {w:?}"
    );
    assert!(
        !w.iter().any(|(o, _)| *o == 0x58a08),
        "nothing at regs/' guess"
    );
    assert!(
        run0["outcome"].to_string().contains("device table"),
        "{run0}"
    );
}

#[test]
fn moved_past_the_bar_the_same_goes_through_pcie_index2_and_the_journal_shows_it() {
    let (smu, _run0, lines) = smu_and_mode2(PAST);
    assert_eq!(smu["path"], "indirect");
    let w = mmio_writes(&lines);
    let msg = (PAST + 0x282) * 4;
    // PCIE_INDEX2 (byte 0x38) <- the msg register's SMN address, PCIE_DATA2 (0x3c) <- 0x11,
    // then the index put back.
    let at = w
        .iter()
        .position(|(o, v)| *o == 0x38 && *v == format!("{msg:#010x}"))
        .unwrap_or_else(|| panic!("index write of {msg:#x} in {w:?}"));
    assert_eq!(w[at + 1], (0x3c, "0x00000011".to_string()), "{w:?}");
    assert_eq!(w[at + 2].0, 0x38, "index restored: {w:?}");
}

#[test]
fn the_display_off_experiment_needs_an_overlay_and_then_runs_before_mode2() {
    let t = Twin::running(Profile::default()).unwrap();
    let s = sys(&t);
    let file = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tools/experiments/phoenix-mode2-display-off.rlx"
    );
    let o = run(&["--sysfs", &s, "run", file, "--dev", IGPU]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("OTG0_OTG_CONTROL"), "{err}");
    // A researcher's overlay (values here are the test's, not Phoenix's).
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("phoenix.toml"),
        "asic = \"phoenix\"\n[[bases]]\nip = \"DMU\"\ninstance = 0\nbase_idx = 2\nbase = 0x34c0\nsource = \"test\"\nconfirmed = false\n\
         [[registers]]\nname = \"OTG0_OTG_CONTROL\"\nip = \"DMU\"\ninstance = 0\nbase_idx = 2\noffset = 0x100\ndescription = \"test\"\nsource = \"test\"\nconfirmed = false\n\
         fields = [{ name = \"OTG_MASTER_EN\", lsb = 0, width = 1 }]\n",
    )
    .unwrap();
    let ov = dir.path().display().to_string();
    let bdf = dirty(&t);
    let rep = json(&[
        "--sysfs", &s, "--regs", &ov, "run", file, "--dev", IGPU, "--commit", "--json",
    ]);
    assert_eq!(rep["completed"], true, "{rep}");
    assert!(!resetlab::sim::model::is_dirty(t.root(), &bdf));
}

#[test]
fn gfx_idle_reads_with_gfxoff_disallowed_and_says_what_it_found() {
    let mut p = Profile::default();
    p.effective.smu_mode2 = false;
    let t = Twin::running(p).unwrap();
    let s = sys(&t);
    dirty(&t);
    let trace = t.root().join("t.jsonl");
    let tr = trace.display().to_string();
    let o = run(&[
        "--sysfs",
        &s,
        "reset",
        "--json",
        IGPU,
        "-m",
        "smu_mode2",
        "--trace",
        &tr,
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let run0 = v["runs"].as_array().unwrap().last().unwrap();
    let gfx = run0["health"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "gfx_idle")
        .unwrap();
    assert_eq!(gfx["ok"], false, "{gfx}");
    let d = gfx["detail"].as_str().unwrap();
    assert!(
        d.contains(
            "GRBM_STATUS (0x8010) 0x80000000: GUI_ACTIVE = 1, the graphics engine is busy; want 0"
        ),
        "{d}"
    );
    assert!(d.contains("DisallowGfxOff sent first"), "{d}");
    // The message register saw DisallowGfxOff (0x1a) then AllowGfxOff (0x19), in that order.
    let ids: Vec<String> = std::fs::read_to_string(&trace)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["target"] == "mmio" && l["offset"] == 0x58a08)
        .map(|l| l["value"].as_str().unwrap().to_string())
        .collect();
    let dis = ids
        .iter()
        .position(|v| v == "0x0000001a")
        .expect("DisallowGfxOff sent");
    let allow = ids
        .iter()
        .position(|v| v == "0x00000019")
        .expect("AllowGfxOff sent");
    assert!(dis < allow, "{ids:?}");
}

#[test]
fn experiments_resolve_register_names_at_the_devices_bases() {
    let t = twin_with_mp1(INSIDE);
    let s = sys(&t);
    let file = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tools/experiments/phoenix-mode2.rlx"
    );
    let trace = t.root().join("exp.jsonl");
    let tr = trace.display().to_string();
    let text = run_ok(&[
        "--sysfs", &s, "run", file, "--dev", IGPU, "--commit", "--trace", &tr,
    ]);
    assert!(text.contains("register bases from device table"), "{text}");
    let msg = (INSIDE + 0x282) * 4;
    let w = mmio_writes(
        &std::fs::read_to_string(&trace)
            .unwrap()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect::<Vec<_>>(),
    );
    assert!(
        w.iter().any(|(o, v)| *o == msg && v == "0x00000011"),
        "mode 2 at the moved mailbox: {w:?}"
    );
    assert!(
        !w.iter().any(|(o, _)| *o == 0x58a08),
        "nothing at regs/' guess: {w:?}"
    );
    // A dry run touches nothing, so it uses this boot's cache the committed run left.
    let dry = run_ok(&["--sysfs", &s, "run", file, "--dev", IGPU]);
    assert!(dry.contains(&format!("BAR5+{msg:#x}")), "{dry}");
    assert!(dry.contains("cached this boot"), "{dry}");
}
