//! Tier 2: the SMU client, `resetlab smu` and the `smu_mode2` method against
//! the twin's SMU model, answering on the twin's `resource5` from a thread.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use common::*;
use resetlab::amd::regs::RegsDb;
use resetlab::amd::smu::Smu;
use resetlab::pci::mmio::{Access, BarMap};
use resetlab::reset::Journal;
use resetlab::sim::profile::{Fault, SmuProfile};
use resetlab::sim::smu::{SmuEvent, SmuModel};
use resetlab::Error;

const IGPU: &str = "0000:c5:00.0";
const BAR5: u64 = 0x80000;

fn resource5(twin: &resetlab::sim::Twin) -> PathBuf {
    twin.sysfs
        .join("bus/pci/devices")
        .join(IGPU)
        .join("resource5")
}

/// The model serving the file from a thread until dropped.
struct Server {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<(SmuModel, Vec<SmuEvent>)>>,
}

impl Server {
    fn start(path: &Path, profile: SmuProfile, dirty: bool, mode2_effective: bool) -> Server {
        let db = RegsDb::embedded().unwrap();
        let mut model = SmuModel::new(db.asic("phoenix").unwrap(), None, profile).unwrap();
        let mut bar = BarMap::open_file(path, BAR5, Access::ReadWrite).unwrap();
        // Power on before the client can look: the first message must not wait.
        model.power_on(&mut bar).unwrap();
        model.set_dirty(dirty);
        let stop = Arc::new(AtomicBool::new(false));
        let s = Arc::clone(&stop);
        let handle = std::thread::spawn(move || model.serve(bar, &s, mode2_effective));
        Server {
            stop,
            handle: Some(handle),
        }
    }

    fn finish(mut self) -> (SmuModel, Vec<SmuEvent>) {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.take().unwrap().join().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn client<'a>(db: &'a RegsDb, path: &Path, bound_ms: u64) -> Smu<'a> {
    let bar = BarMap::open_file(path, BAR5, Access::ReadWrite).unwrap();
    let mut smu = Smu::new(
        db.asic("phoenix").unwrap(),
        None,
        bar,
        IGPU.parse().unwrap(),
    )
    .unwrap();
    smu.timeouts.prewait = Duration::from_millis(bound_ms);
    smu.timeouts.answer = Duration::from_millis(bound_ms);
    smu
}

fn faulty(fault: Fault, count: u32) -> SmuProfile {
    SmuProfile {
        fault,
        fault_count: count,
        ..SmuProfile::default()
    }
}

#[test]
fn client_talks_to_the_model_test_version_features_smn() {
    let twin = twin();
    let p = resource5(&twin);
    let profile = SmuProfile::default();
    let server = Server::start(&p, profile.clone(), false, true);
    let db = RegsDb::embedded().unwrap();
    let mut smu = client(&db, &p, 2000);
    let mut j = Journal::new(false);
    assert_eq!(smu.firmware_running(&mut j).unwrap(), Some((true, 1)));
    let r = smu.test(&mut j).unwrap();
    assert_eq!((r.response, r.previous), (Some(1), Some(1)));
    let (_, v) = smu.version(&mut j).unwrap();
    assert_eq!(v.unwrap().raw, profile.pmfw_version);
    let (_, mask) = smu.features(&mut j).unwrap();
    assert_eq!(mask, Some(profile.features));
    // Every write went through the journal: SMN index and its restore + 4 messages x 3 writes.
    assert_eq!(j.writes().count(), 2 + 4 * 3);
    let (model, _) = server.finish();
    let ids: Vec<u32> = model.received.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, [0x1, 0x2, 0x12, 0x12]);
}

#[test]
fn no_answer_times_out_then_the_next_message_waits_for_it() {
    let twin = twin();
    let p = resource5(&twin);
    let _server = Server::start(&p, faulty(Fault::NoAnswer, 1), false, true);
    let db = RegsDb::embedded().unwrap();
    let mut smu = client(&db, &p, 150);
    let mut j = Journal::new(false);
    let e = smu.test(&mut j).unwrap_err();
    assert!(matches!(e, Error::Timeout { bound_ms: 150, .. }), "{e}");
    assert!(e.to_string().contains("no answer"), "{e}");
    let before = j.writes().count();
    let e = smu.test(&mut j).unwrap_err();
    assert!(
        e.to_string().contains("previous message") && e.to_string().contains("nothing was sent"),
        "{e}"
    );
    assert_eq!(
        j.writes().count(),
        before,
        "nothing written while the previous message is unanswered"
    );
    // As amdgpu does after SMU init: send without waiting; the fault is spent.
    smu.skip_prewait = true;
    assert_eq!(smu.test(&mut j).unwrap().response, Some(1));
}

#[test]
fn busy_prerequisites_and_unknown_each_get_their_words() {
    let db = RegsDb::embedded().unwrap();
    for (fault, code, name) in [
        (Fault::Busy, 0xfc, "BUSY_OTHER"),
        (Fault::Prerequisites, 0xfd, "CMD_BAD_PREREQ"),
    ] {
        let twin = twin();
        let p = resource5(&twin);
        let _server = Server::start(&p, faulty(fault, 0), false, true);
        let mut smu = client(&db, &p, 2000);
        let e = smu.test(&mut Journal::new(false)).unwrap_err();
        match &e {
            Error::Smu {
                code: c,
                name: n,
                message,
                ..
            } => {
                assert_eq!(
                    (*c, n.as_str(), message.as_str()),
                    (code, name, "TestMessage")
                )
            }
            other => panic!("{fault:?}: {other}"),
        }
        assert_eq!(e.exit_code(), resetlab::error::exit::FAILED);
    }
    let twin = twin();
    let p = resource5(&twin);
    let _server = Server::start(&p, SmuProfile::default(), false, true);
    let mut smu = client(&db, &p, 2000);
    let e = smu
        .send(&mut Journal::new(false), "0x77", 0)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("CMD_UNKNOWN") && e.contains("unknown command"),
        "{e}"
    );
}

#[test]
fn a_dead_bar_is_named_and_nothing_is_sent() {
    let twin = twin();
    let p = resource5(&twin);
    let _server = Server::start(&p, faulty(Fault::BarDead, 0), false, true);
    let db = RegsDb::embedded().unwrap();
    let mut smu = client(&db, &p, 2000);
    let mut j = Journal::new(false);
    let e = smu.test(&mut j).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Smu {
                code: 0xffff_ffff,
                ..
            }
        ),
        "{e}"
    );
    let s = e.to_string();
    assert!(
        s.contains("all-ones") && s.contains("nothing was sent"),
        "{s}"
    );
    assert_eq!(j.writes().count(), 0);
}

#[test]
fn vanish_mid_mode2_reads_dead_and_the_model_says_vanish() {
    let twin = twin();
    let p = resource5(&twin);
    let profile = SmuProfile {
        mode2_ms: 40,
        ..faulty(Fault::Vanish, 0)
    };
    let server = Server::start(&p, profile, true, true);
    let db = RegsDb::embedded().unwrap();
    let mut smu = client(&db, &p, 5000);
    let e = smu
        .send(&mut Journal::new(false), "GfxDeviceDriverReset", 2)
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Smu {
                code: 0xffff_ffff,
                ..
            }
        ),
        "{e}"
    );
    let (_, events) = server.finish();
    assert!(events.contains(&SmuEvent::Vanish), "{events:?}");
    assert!(!events.contains(&SmuEvent::Mode2Done), "{events:?}");
}

#[test]
fn smu_send_without_commit_writes_nothing() {
    let twin = twin();
    let p = resource5(&twin);
    let before = std::fs::read(&p).unwrap();
    let sys = sysfs_arg(&twin.sysfs);
    let v = json(&[
        "--sysfs",
        &sys,
        "--json",
        "smu",
        IGPU,
        "send",
        "GfxDeviceDriverReset",
        "2",
    ]);
    assert_eq!(v["dry_run"], true);
    let writes = v["writes"].as_array().unwrap();
    assert_eq!(writes.len(), 3, "{v}");
    assert!(writes
        .iter()
        .all(|w| w["dry_run"] == true && w["target"] == "mmio"));
    assert_eq!(writes[2]["offset"], 0x58a08);
    assert_eq!(writes[2]["value"], "0x00000011");
    assert_eq!(v["replies"][0]["sent"], false);
    assert_eq!(std::fs::read(&p).unwrap(), before, "the BAR bytes changed");
}

#[test]
fn smu_cli_test_version_features_against_the_model() {
    let twin = twin();
    let p = resource5(&twin);
    let profile = SmuProfile::default();
    let _server = Server::start(&p, profile.clone(), false, true);
    let sys = sysfs_arg(&twin.sysfs);
    let t = json(&["--sysfs", &sys, "--json", "smu", IGPU, "test"]);
    assert_eq!(t["firmware_running"], true, "{t}");
    assert_eq!(t["replies"][0]["response"], 1, "{t}");
    assert_eq!(t["dry_run"], false);
    let v = json(&["--sysfs", &sys, "--json", "smu", IGPU, "version"]);
    assert_eq!(v["pmfw_version"]["raw"], profile.pmfw_version, "{v}");
    assert_eq!(v["driver_if_version"], profile.driver_if_version, "{v}");
    let f = json(&["--sysfs", &sys, "--json", "smu", IGPU, "features"]);
    assert_eq!(f["features"], profile.features, "{f}");
    let human = run_ok(&[
        "--sysfs",
        &sys,
        "smu",
        IGPU,
        "send",
        "TestMessage",
        "--commit",
    ]);
    assert!(human.contains("TestMessage (0x1, arg 0x0): OK"), "{human}");
}

#[test]
fn smu_cli_refuses_amdgpu_and_names_unknown_devices() {
    let twin = twin();
    let sys = sysfs_arg(&twin.sysfs);
    // Bind the twin's iGPU to amdgpu (a driver link the tree can carry).
    let dev = twin.sysfs.join("bus/pci/devices").join(IGPU);
    let drv = twin.sysfs.join("bus/pci/drivers/amdgpu");
    std::fs::create_dir_all(&drv).unwrap();
    std::fs::remove_file(dev.join("driver")).unwrap();
    std::os::unix::fs::symlink(&drv, dev.join("driver")).unwrap();
    let o = run(&["--sysfs", &sys, "smu", IGPU, "test", "--force"]);
    assert_eq!(o.status.code(), Some(3));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("amdgpu") && err.contains("owns the SMU mailbox"),
        "{err}"
    );
    let o = run(&["--sysfs", &sys, "smu", "0000:c5:00.1", "test"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--asic"));
}

fn set_command(twin: &resetlab::sim::Twin, value: u16) {
    use std::os::unix::fs::FileExt;
    let cfg = twin.sysfs.join("bus/pci/devices").join(IGPU).join("config");
    let f = std::fs::OpenOptions::new().write(true).open(cfg).unwrap();
    f.write_all_at(&value.to_le_bytes(), 4).unwrap();
}

fn command(twin: &resetlab::sim::Twin) -> u16 {
    let cfg = std::fs::read(twin.sysfs.join("bus/pci/devices").join(IGPU).join("config")).unwrap();
    u16::from_le_bytes([cfg[4], cfg[5]])
}

#[test]
fn smu_mode2_resets_a_dirty_gpu_and_restores_command() {
    let twin = twin();
    let p = resource5(&twin);
    // vfio-pci leaves an idle device with memory decoding off.
    set_command(&twin, 0);
    let profile = SmuProfile {
        mode2_ms: 30,
        ..SmuProfile::default()
    };
    let server = Server::start(&p, profile, true, true);
    let sys = sysfs_arg(&twin.sysfs);
    let r = json(&[
        "--sysfs",
        &sys,
        "--json",
        "reset",
        IGPU,
        "--method",
        "smu_mode2",
    ]);
    assert_eq!(r["success"], true, "{r:#}");
    let run = &r["runs"][0];
    assert!(
        run["outcome"]["did"]
            .as_str()
            .unwrap()
            .contains("answered OK"),
        "{run}"
    );
    let items = run["health"]["items"].as_array().unwrap();
    for name in [
        "bar_alive",
        "ifwi_ready",
        "smu_fw_running",
        "smu_responds",
        "gfx_idle",
    ] {
        let it = items
            .iter()
            .find(|i| i["name"] == name)
            .unwrap_or_else(|| panic!("no {name}: {run}"));
        assert_eq!(it["ok"], true, "{it}");
    }
    assert_eq!(command(&twin), 0, "COMMAND put back as found");
    let writes = r["writes"].as_array().unwrap();
    let cfg: Vec<&serde_json::Value> = writes.iter().filter(|w| w["target"] == "config").collect();
    assert!(
        cfg.len() >= 2 && cfg.iter().all(|w| w["offset"] == 4),
        "{cfg:?}"
    );
    let (_, events) = server.finish();
    assert!(events.contains(&SmuEvent::Mode2Done), "{events:?}");
}

#[test]
fn smu_mode2_that_does_not_clean_fails_health_on_gfx_idle() {
    let twin = twin();
    let p = resource5(&twin);
    let _server = Server::start(&p, SmuProfile::default(), true, false);
    let sys = sysfs_arg(&twin.sysfs);
    let o = run(&[
        "--sysfs",
        &sys,
        "--json",
        "reset",
        IGPU,
        "--method",
        "smu_mode2",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let h = &r["runs"][0]["health"];
    assert_eq!(h["healthy"], false, "{h}");
    let gfx = h["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "gfx_idle")
        .unwrap();
    assert_eq!(gfx["ok"], false, "{gfx}");
    assert!(
        gfx["detail"].as_str().unwrap().contains("GRBM_STATUS"),
        "{gfx}"
    );
    // The failure line says what was found and what was wanted.
    let d = gfx["detail"].as_str().unwrap();
    assert!(
        d.contains("GUI_ACTIVE = 1, the graphics engine is busy; want 0"),
        "{d}"
    );
}

#[test]
fn smu_mode2_is_in_the_igpu_default_chain_and_probes_in_list() {
    let twin = twin();
    let sys = sysfs_arg(&twin.sysfs);
    let list = json(&["--sysfs", &sys, "list", "--json"]);
    let igpu = device(&list, IGPU);
    let v = &igpu["methods"]["smu_mode2"];
    assert_eq!(v["available"], true, "{v}");
    assert!(v["reason"].as_str().unwrap().contains("0x58a08"), "{v}");
    let other = device(&list, "0000:c5:00.1");
    assert_eq!(other["methods"]["smu_mode2"]["available"], false);
    let r = json(&["--sysfs", &sys, "--json", "reset", IGPU, "--dry-run"]);
    assert_eq!(r["runs"][0]["method"], "smu_mode2", "{r:#}");
}
