//! Tier 2: the twin as each AMD APU family of regs/ (`--sim-asic NAME`,
//! `sim up --asic NAME`): its GPU carries the family's id, BAR and discovery
//! table, and its SMU answers the family's mailbox and message ids. For each
//! family `smu test` passes and `reset --method smu_mode2` cleans a dirty GPU
//! with every vendor health check passing; Raven offers no mode 2.

mod common;

use common::*;
use resetlab::amd::regs::RegsDb;
use resetlab::sim::family::TwinGpu;
use resetlab::sim::model;
use resetlab::sim::profile::Profile;

const GPU: &str = "0000:c5:00.0";

fn family_twin(name: &str) -> resetlab::sim::Twin {
    let db = RegsDb::embedded().unwrap();
    let gpu = TwinGpu::for_name(&db, name).unwrap();
    resetlab::sim::Twin::running_as(Profile::default(), Some(&gpu)).unwrap()
}

/// `smu test`, then a mode-2 reset of a dirty GPU; returns the reset's JSON.
fn smu_test_and_mode2(name: &str) -> serde_json::Value {
    let db = RegsDb::embedded().unwrap();
    let asic = db.asic(name).unwrap();
    let twin = family_twin(name);
    let sys = sysfs_arg(&twin.sysfs);
    let t = json(&["--sysfs", &sys, "--json", "smu", GPU, "test"]);
    assert_eq!(t["asic"], asic.asic_name(), "{name}: {t:#}");
    assert_eq!(t["firmware_running"], true, "{name}: {t:#}");
    assert_eq!(t["replies"][0]["response_name"], "OK", "{name}: {t:#}");
    let mb = asic.mailbox(t["mailbox"]["mp1_version"].as_str()).unwrap();
    assert_eq!(t["mailbox"]["msg"].as_u64(), Some(mb.msg), "{name}");

    let bdf = GPU.parse().unwrap();
    model::mark_dirty(twin.root(), &bdf).unwrap();
    let r = json(&[
        "--sysfs",
        &sys,
        "--json",
        "reset",
        GPU,
        "--method",
        "smu_mode2",
    ]);
    assert_eq!(r["success"], true, "{name}: {r:#}");
    let run = &r["runs"][0];
    let items = run["health"]["items"].as_array().unwrap();
    for check in [
        "bar_alive",
        "ifwi_ready",
        "smu_fw_running",
        "smu_responds",
        "gfx_idle",
    ] {
        let it = items
            .iter()
            .find(|i| i["name"] == check)
            .unwrap_or_else(|| panic!("{name}: no {check}: {run}"));
        assert_eq!(it["ok"], true, "{name}: {it}");
    }
    assert!(!model::is_dirty(twin.root(), &bdf), "{name}: still dirty");
    // The family's own message id and argument were written.
    let id = asic
        .message(asic.mode2().message.as_deref().unwrap())
        .unwrap()
        .id;
    let writes = r["writes"].as_array().unwrap();
    let value = format!("{id:#010x}");
    assert!(
        writes.iter().any(|w| w["value"] == value.as_str()),
        "{name}: no write of {value}: {writes:?}"
    );
    assert!(twin.model_errors().is_empty(), "{:?}", twin.model_errors());
    r
}

#[test]
fn rembrandt_smu_test_and_mode2() {
    let r = smu_test_and_mode2("rembrandt");
    let did = r["runs"][0]["outcome"]["did"].as_str().unwrap();
    assert!(
        did.contains("GfxDeviceDriverReset(2)") && did.contains("answered OK"),
        "{did}"
    );
}

#[test]
fn raphael_mode2_goes_through_pcie_index2_data2() {
    let r = smu_test_and_mode2("raphael");
    // C2PMSG_2 (SMN 0x3b10508) lies past the BAR: its writes are an index
    // write of the SMN address to PCIE_INDEX2 (BAR byte 0x38) and a data write.
    let writes = r["writes"].as_array().unwrap();
    let idx = |addr: &str| {
        writes
            .iter()
            .any(|w| w["offset"] == 0x38 && w["value"] == addr)
    };
    assert!(
        idx("0x03b10508") && idx("0x03b10988") && idx("0x03b10984"),
        "{writes:?}"
    );
    assert!(
        writes
            .iter()
            .any(|w| w["offset"] == 0x3c && w["value"] == "0x0000000a"),
        "GfxDeviceDriverReset 0xa through PCIE_DATA2: {writes:?}"
    );
}

#[test]
fn strix_smu_test_and_mode2() {
    smu_test_and_mode2("strix");
}

#[test]
fn vangogh_sends_mode2_without_waiting_then_10_ms() {
    let r = smu_test_and_mode2("vangogh");
    let did = r["runs"][0]["outcome"]["did"].as_str().unwrap();
    assert!(did.contains("without waiting"), "{did}");
}

#[test]
fn renoir_cezanne_mendocino_phoenix2_and_the_780m() {
    for name in ["renoir", "cezanne", "mendocino", "phoenix2", "phoenix"] {
        smu_test_and_mode2(name);
    }
}

#[test]
fn probe_offers_smu_mode2_on_each_family_and_names_it() {
    for (name, family, msg) in [
        ("rembrandt", "Rembrandt", "GfxDeviceDriverReset 0x11"),
        ("raphael", "Raphael", "GfxDeviceDriverReset 0xa"),
        ("strix", "Strix Point", "GfxDeviceDriverReset 0x11"),
    ] {
        let p = json(&["--sim", "--sim-asic", name, "--json", "probe", GPU]);
        let v = &p["methods"]["smu_mode2"];
        assert_eq!(v["available"], true, "{name}: {v}");
        assert!(v["reason"].as_str().unwrap().contains(family), "{v}");
        let note = p["amd_family"]["text"].as_str().unwrap();
        assert!(note.contains(msg), "{note}");
        assert_eq!(p["amd_family"]["asic"], name);
    }
    let p = json(&["--sim", "--sim-asic", "picasso", "--json", "probe", GPU]);
    let v = &p["methods"]["smu_mode2"];
    assert_eq!(v["available"], false, "{v}");
    assert!(
        v["reason"].as_str().unwrap().contains("soc15_asic_reset"),
        "{v}"
    );
}

#[test]
fn an_unknown_amd_display_id_gets_the_files_that_might_fit() {
    let twin = twin();
    let dev = twin.sysfs.join("bus/pci/devices").join(GPU);
    std::fs::write(dev.join("device"), "0x15ff\n").unwrap();
    let sys = sysfs_arg(&twin.sysfs);
    let l = json(&["--sysfs", &sys, "--json", "list", "-s", "c5:00.0"]);
    let f = &device(&l, GPU)["amd_family"];
    assert!(f["asic"].is_null(), "{f}");
    let c: Vec<&str> = f["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(c.contains(&"rembrandt") && c.contains(&"phoenix"), "{c:?}");
    assert!(!c.contains(&"raven"), "raven offers no mode 2: {c:?}");
    assert!(f["text"].as_str().unwrap().contains("--asic NAME"), "{f}");
}

#[test]
fn sim_up_asic_is_recorded_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("tw");
    let ds = d.display().to_string();
    run_ok(&["sim", "up", &ds, "--asic", "yellow_carp"]);
    let sys = d.join("sys").display().to_string();
    let t = json(&["--sysfs", &sys, "--json", "smu", GPU, "test"]);
    assert_eq!(t["asic"], "rembrandt", "{t}");
    // The same DIR with another family is refused, not silently kept.
    let o = run(&["sim", "up", &ds, "--asic", "strix"]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("already has rembrandt"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    run_ok(&["sim", "down", &ds]);
    let o = run(&["--sim", "--sim-asic", "nosuch", "list"]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
}

#[test]
fn hook_and_bench_reset_a_family_twin_by_smu_mode2() {
    // A fresh twin has no record of a dirty GPU, and post-stop resets only what is
    // dirty by default: this policy asks for the unconditional reset, to drive the chain.
    let pol = tempfile::tempdir().unwrap();
    let policy = pol.path().join("hook.toml");
    std::fs::write(
        &policy,
        "[phase.post-stop]\nactions = [\"ensure_present\", \"reset\"]\n",
    )
    .unwrap();
    let policy = policy.display().to_string();
    for name in ["vangogh", "raphael"] {
        let o = run(&[
            "--sim",
            "--sim-asic",
            name,
            "hook",
            "100",
            "post-stop",
            "--policy",
            &policy,
        ]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{name}: {err}");
        assert!(
            err.contains("0000:c5:00.0 reset by smu_mode2"),
            "{name}: {err}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("b").display().to_string();
    let o = run(&[
        "--sim",
        "--sim-asic",
        "strix",
        "bench",
        "-m",
        "smu_mode2",
        "-n",
        "2",
        "--out",
        &out,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let summary = std::fs::read_to_string(dir.path().join("b/summary.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&summary).unwrap();
    let text = v.to_string();
    assert!(text.contains("smu_mode2"), "{text}");
    assert!(
        std::fs::read_to_string(dir.path().join("b/trials.csv"))
            .unwrap()
            .lines()
            .skip(1)
            .filter(|l| l.contains(",smu_mode2,false,false,0000:c5:00.0,")
                && l.contains(",true,true,true,true,true,"))
            .count()
            == 2,
        "both strix trials (the warm-up apart) succeed and are healthy (a dirty GPU made clean each time)"
    );
}
