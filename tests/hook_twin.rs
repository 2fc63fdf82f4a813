//! `resetlab hook` on the twin (the seed's UM880 Pro host and its device model), with a fake
//! `/etc/pve` holding the seed's VM 100, driven the way Proxmox drives a hookscript.

mod common;
use common::*;

use std::cell::RefCell;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use resetlab::pci::Bdf;

use resetlab::machine::Machine;
use resetlab::sim::model;
use resetlab::sim::profile::{Fault, Profile};
use resetlab::sim::qemu::{Exit, FakeQemu, Guest, VmOptions, VmState};
use resetlab::sim::Twin;
use serde_json::Value;

const GPU: &str = "0000:c5:00.0";
const AUDIO: &str = "0000:c5:00.1";

/// The seed's `qm config 100`, as qemu-server writes it.
const VM100: &str = "\
agent: 1
bios: ovmf
boot: order=scsi0;ide1
cores: 4
cpu: host
efidisk0: tank:vm-100-disk-0,efitype=4m,pre-enrolled-keys=1,size=1M
hostpci0: 0000:c5:00.0,pcie=1,x-vga=1,romfile=vbios_1002_1900.bin
hostpci1: 0000:c5:00.1,pcie=1,romfile=AMDGopDriver_8845hs.rom
machine: pc-q35-9.2+pve1
memory: 32768
name: win11
ostype: win11
scsi0: tank:vm-100-disk-2,cache=writeback,discard=on,size=128G,ssd=1
vga: none
";

struct Bench {
    /// VM 100's fake QEMU while it runs (this process holds its VFIO groups); first, so that
    /// it stops before the twin's directory goes.
    vm: RefCell<Option<FakeQemu>>,
    twin: Twin,
    pve: PathBuf,
    policy: PathBuf,
}

impl Bench {
    fn new(profile: Profile, policy: Option<&str>) -> Bench {
        let twin = Twin::running(profile).expect("twin with model");
        let root = twin.root().to_path_buf();
        let pve = root.join("etc/pve");
        fs::create_dir_all(pve.join("qemu-server")).unwrap();
        fs::write(pve.join("qemu-server/100.conf"), VM100).unwrap();
        // The twin's /dev/kmsg: a regular file the hook appends its lines to.
        fs::write(root.join("dev/kmsg"), "").unwrap();
        let policy_path = root.join("etc/resetlab/hook.toml");
        if let Some(p) = policy {
            fs::create_dir_all(policy_path.parent().unwrap()).unwrap();
            fs::write(&policy_path, p).unwrap();
        }
        Bench {
            twin,
            pve,
            policy: policy_path,
            vm: RefCell::new(None),
        }
    }

    /// Starts VM 100's fake QEMU (what `qm start` does between pre-start and post-start).
    fn start_vm(&self, guest: Guest) {
        self.start_vm_with(VmOptions {
            guest,
            ..VmOptions::default()
        });
    }

    fn start_vm_with(&self, opts: VmOptions) {
        let q = FakeQemu::start(self.twin.root(), 100, opts).expect("start the fake QEMU");
        *self.vm.borrow_mut() = Some(q);
    }

    /// Ends the VM's QEMU (`how`) and returns its last state.
    fn end_vm(&self, how: Exit) -> VmState {
        self.vm.borrow_mut().take().expect("a running VM").end(how)
    }

    /// The running VM's state.
    fn vm_state(&self) -> VmState {
        self.vm.borrow().as_ref().expect("a running VM").state()
    }

    fn args<'a>(&'a self, extra: &[&'a str]) -> Vec<String> {
        let mut v: Vec<String> = vec![
            "--sysfs".into(),
            sysfs_arg(&self.twin.sysfs),
            "--json".into(),
            "hook".into(),
        ];
        v.extend(extra.iter().map(|s| s.to_string()));
        v.extend(["--pve-config".into(), self.pve.display().to_string()]);
        // An explicit --policy must exist (issue 19); without one the twin's
        // default path (this one) is read if it is there.
        if self.policy.exists() {
            v.extend(["--policy".into(), self.policy.display().to_string()]);
        }
        v
    }

    fn raw(&self, extra: &[&str]) -> Output {
        let a = self.args(extra);
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        run(&refs)
    }

    /// `resetlab hook 100 PHASE --json`: exit code, report, stderr.
    fn phase(&self, phase: &str) -> (Option<i32>, Value, String) {
        let o = self.raw(&["100", phase]);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        let v = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("{phase}: no JSON ({e}); stderr:\n{err}"));
        (o.status.code(), v, err)
    }

    /// Runs a phase and requires exit 0 and no errors.
    fn phase_ok(&self, phase: &str) -> Value {
        let (code, v, err) = self.phase(phase);
        assert_eq!(code, Some(0), "{phase}: {err}");
        assert_eq!(v["ok"], true, "{phase}: {}", v["errors"]);
        v
    }

    fn kmsg(&self) -> String {
        fs::read_to_string(self.twin.root().join("dev/kmsg")).unwrap()
    }

    fn state(&self, bdf: &str) -> Value {
        let p = self.twin.root().join(format!("run/resetlab/{bdf}.json"));
        serde_json::from_str(&fs::read_to_string(&p).unwrap_or_else(|e| {
            panic!("no state record {}: {e}", p.display());
        }))
        .unwrap()
    }

    fn present(&self, bdf: &str) -> bool {
        self.twin.sysfs.join("bus/pci/devices").join(bdf).exists()
    }

    fn driver(&self, bdf: &str) -> Option<String> {
        fs::read_link(
            self.twin
                .sysfs
                .join("bus/pci/devices")
                .join(bdf)
                .join("driver"),
        )
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
    }

    /// The guest's driver leaves the GPU in the reset-bug state (what Windows' amdgpu does).
    fn guest_dirties_the_gpu(&self) {
        model::mark_dirty(self.twin.root(), &bdf(GPU)).unwrap();
    }

    fn gpu_dirty(&self) -> bool {
        model::is_dirty(self.twin.root(), &bdf(GPU))
    }
}

fn bdf(s: &str) -> Bdf {
    s.parse().unwrap()
}

fn action<'a>(v: &'a Value, action: &str, dev: &str) -> &'a Value {
    v["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["action"] == action && a["device"] == dev)
        .unwrap_or_else(|| panic!("no {action} on {dev} in {}", v["actions"]))
}

/// QMP commands the phase sent (journal records of kind `qmp`), as `command id`.
fn qmp_sent(v: &Value) -> Vec<String> {
    v["writes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["target"] == "qmp")
        .map(|w| {
            let c: Value = serde_json::from_str(w["value"].as_str().unwrap()).unwrap();
            format!(
                "{} {}",
                c["execute"].as_str().unwrap(),
                c["arguments"]["id"].as_str().unwrap_or("")
            )
        })
        .collect()
}

#[test]
fn four_phases_with_a_releasing_guest_keep_the_gpu_clean_without_a_reset() {
    let b = Bench::new(Profile::default(), None);
    for cycle in 1..=3 {
        let v = b.phase_ok("pre-start");
        for dev in [GPU, AUDIO] {
            assert_eq!(action(&v, "ensure_present", dev)["result"], "skipped");
            let r = action(&v, "reset_if_dirty", dev);
            assert_eq!(r["result"], "skipped", "cycle {cycle}: {r}");
        }
        assert_eq!(v["devices"][0]["kind"], "amd_gpu");
        assert_eq!(v["devices"][1]["kind"], "amd_gpu_audio");

        b.start_vm(Guest::Release { ms: 30 });
        b.phase_ok("post-start");
        for dev in [GPU, AUDIO] {
            assert_eq!(b.state(dev)["state"], "dirty", "cycle {cycle}");
            assert_eq!(b.state(dev)["vmid"], 100);
        }

        let v = b.phase_ok("pre-stop");
        assert_eq!(
            qmp_sent(&v),
            ["device_del hostpci0", "device_del hostpci1"],
            "cycle {cycle}"
        );
        for dev in [GPU, AUDIO] {
            let r = action(&v, "release", dev);
            assert_eq!(r["result"], "done", "{r}");
            assert!(
                r["detail"]
                    .as_str()
                    .unwrap()
                    .starts_with("released by the guest in "),
                "{r}"
            );
            assert_eq!(b.state(dev)["state"], "clean");
            assert_eq!(b.state(dev)["last_method"], "release");
            assert!(b.state(dev)["note"]
                .as_str()
                .unwrap()
                .starts_with("released by the guest"));
            // Still on the host bus, bound to vfio-pci.
            assert!(b.present(dev));
            assert_eq!(b.driver(dev).as_deref(), Some("vfio-pci"), "{dev}");
        }
        let st = b.vm_state();
        assert!(st.devices.iter().all(|d| d.released), "{st:?}");

        // qm stop: QEMU exits with nothing left in the guest's hands.
        let st = b.end_vm(Exit::HostStop);
        assert!(st.left_dirty.is_empty(), "{st:?}");
        assert!(!b.gpu_dirty(), "cycle {cycle}");

        let v = b.phase_ok("post-stop");
        for dev in [GPU, AUDIO] {
            let r = action(&v, "reset_if_dirty", dev);
            assert_eq!(r["result"], "skipped", "{r}");
            assert!(
                r["detail"]
                    .as_str()
                    .unwrap()
                    .contains("released by the guest"),
                "{r}"
            );
        }
        // No remove, no reset: nothing written at all.
        assert!(
            v["actions"]
                .as_array()
                .unwrap()
                .iter()
                .all(|a| a["action"] != "remove" && a["result"] != "done"),
            "{}",
            v["actions"]
        );
        assert_eq!(v["writes"].as_array().unwrap().len(), 0, "{}", v["writes"]);
    }
    let kmsg = b.kmsg();
    assert_eq!(
        kmsg.matches("<6>resetlab: VM 100 pre-stop: 0000:c5:00.0 released by the guest in ")
            .count(),
        3,
        "{kmsg}"
    );
    assert!(
        kmsg.contains("<6>resetlab: VM 100 post-start: 0000:c5:00.1 marked dirty"),
        "{kmsg}"
    );
    assert!(!kmsg.contains("<3>"), "{kmsg}");
    assert!(!kmsg.contains("IO_PAGE_FAULT"), "{kmsg}");
    assert!(
        b.twin.model_errors().is_empty(),
        "{:?}",
        b.twin.model_errors()
    );
}

#[test]
fn a_guest_that_never_releases_ends_pre_stop_in_its_budget_and_post_stop_resets_the_gpu() {
    let b = Bench::new(Profile::default(), Some("[phase.pre-stop]\nbudget_s = 2\n"));
    for cycle in 1..=2 {
        b.phase_ok("pre-start");
        b.start_vm(Guest::Hung);
        b.phase_ok("post-start");
        let (code, v, err) = b.phase("pre-stop");
        assert_eq!(code, Some(0), "pre-stop never fails the stop: {err}");
        assert_eq!(v["ok"], false);
        assert!(
            v["elapsed_ms"].as_f64().unwrap() <= v["budget_ms"].as_f64().unwrap(),
            "{}",
            v["elapsed_ms"]
        );
        assert_eq!(qmp_sent(&v), ["device_del hostpci0", "device_del hostpci1"]);
        for dev in [GPU, AUDIO] {
            let r = action(&v, "release", dev);
            assert_eq!(r["result"], "failed", "{r}");
            let d = r["detail"].as_str().unwrap();
            assert!(
                d.starts_with("not released within ") && d.contains("recorded dirty"),
                "{d}"
            );
            assert_eq!(b.state(dev)["state"], "dirty");
        }
        // qm stop kills QEMU while the guest still drives the GPU: dirty, as in the report.
        let st = b.end_vm(Exit::HostStop);
        assert_eq!(st.left_dirty.len(), 1, "{st:?}");
        assert!(b.gpu_dirty());
        assert!(b
            .kmsg()
            .contains("vfio-pci 0000:c5:00.0: AMD-Vi: Event logged [IO_PAGE_FAULT"));

        let v = b.phase_ok("post-stop");
        let r = action(&v, "reset_if_dirty", GPU);
        assert_eq!(r["result"], "done", "cycle {cycle}: {r}");
        assert_eq!(r["method"], "smu_mode2");
        assert!(
            r["detail"]
                .as_str()
                .unwrap()
                .contains("hypothesis, unconfirmed on hardware"),
            "{r}"
        );
        assert!(!b.gpu_dirty(), "cycle {cycle}");
        assert_eq!(b.state(GPU)["state"], "clean");
        assert_eq!(b.driver(GPU).as_deref(), Some("vfio-pci"));
    }
}

#[test]
fn qemu_refusing_the_unplug_a_paused_guest_or_no_qemu_is_recorded_dirty() {
    let b = Bench::new(Profile::default(), Some("[phase.pre-stop]\nbudget_s = 2\n"));
    b.start_vm(Guest::Refuse);
    b.phase_ok("post-start");
    let (code, v, _) = b.phase("pre-stop");
    assert_eq!(code, Some(0));
    let d = action(&v, "release", GPU)["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        d.contains("QEMU refused device_del hostpci0 (GenericError: "),
        "{d}"
    );
    assert_eq!(b.state(GPU)["state"], "dirty");
    b.end_vm(Exit::HostStop);
    // A paused guest (not a backup) ejects nothing: the bound runs out, and the line says why.
    b.start_vm_with(VmOptions {
        paused: true,
        ..VmOptions::default()
    });
    let (code, v, _) = b.phase("pre-stop");
    assert_eq!(code, Some(0));
    let d = action(&v, "release", GPU)["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(d.contains("a paused guest ejects nothing"), "{d}");
    b.end_vm(Exit::HostStop);
    // No QEMU at all (a pre-stop after QEMU died): one line, dirty, exit 0.
    let (code, v, _) = b.phase("pre-stop");
    assert_eq!(code, Some(0));
    let d = action(&v, "release", GPU)["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        d.contains("not released: QEMU's monitor ") && d.contains("100.qmp"),
        "{d}"
    );
}

#[test]
fn a_backup_start_gets_no_device_del_and_marks_nothing_dirty() {
    let b = Bench::new(Profile::default(), None);
    fs::write(
        b.pve.join("qemu-server/100.conf"),
        format!("{VM100}lock: backup\n"),
    )
    .unwrap();
    b.phase_ok("pre-start");
    // vzdump starts it paused: the guest never runs.
    b.start_vm(Guest::Release { ms: 0 });
    assert_eq!(b.vm_state().status, "paused");
    let v = b.phase_ok("post-start");
    assert_eq!(action(&v, "mark_dirty", GPU)["result"], "skipped");
    let v = b.phase_ok("pre-stop");
    assert!(qmp_sent(&v).is_empty(), "{}", v["writes"]);
    for dev in [GPU, AUDIO] {
        let r = action(&v, "release", dev);
        assert_eq!(r["result"], "skipped");
        assert!(
            r["detail"].as_str().unwrap().contains("lock: backup"),
            "{r}"
        );
    }
    assert!(b.vm_state().devices.iter().all(|d| !d.requested));
    let st = b.end_vm(Exit::HostStop);
    assert!(st.left_dirty.is_empty());
    let v = b.phase_ok("post-stop");
    assert_eq!(action(&v, "reset_if_dirty", GPU)["result"], "skipped");
    assert_eq!(v["writes"].as_array().unwrap().len(), 0);
    assert!(!b.gpu_dirty());
}

#[test]
fn a_guest_shutdown_from_inside_leaves_the_record_dirty_and_post_stop_resets() {
    let b = Bench::new(Profile::default(), None);
    // Without devcon: the guest's driver is still running the GPU when QEMU exits.
    b.phase_ok("pre-start");
    b.start_vm(Guest::Release { ms: 0 });
    b.phase_ok("post-start");
    let st = b.end_vm(Exit::GuestShutdown); // no pre-stop: Proxmox does not run it
    assert_eq!(st.left_dirty.len(), 1);
    assert_eq!(b.state(GPU)["state"], "dirty", "as post-start left it");
    let v = b.phase_ok("post-stop");
    assert_eq!(action(&v, "reset_if_dirty", GPU)["method"], "smu_mode2");
    assert!(!b.gpu_dirty());
    // With devcon: the guest disabled the GPU itself, it is clean; the record cannot know
    // and still says dirty, so post-stop resets it anyway (the record decides).
    b.phase_ok("pre-start");
    b.start_vm_with(VmOptions {
        devcon: true,
        ..VmOptions::default()
    });
    b.phase_ok("post-start");
    let st = b.end_vm(Exit::GuestShutdown);
    assert!(st.left_dirty.is_empty());
    assert!(!b.gpu_dirty());
    let v = b.phase_ok("post-stop");
    assert_eq!(action(&v, "reset_if_dirty", GPU)["result"], "done");
}

#[test]
fn a_guest_started_on_a_dirty_gpu_cannot_use_it() {
    let b = Bench::new(Profile::default(), None);
    b.start_vm(Guest::Release { ms: 0 });
    b.end_vm(Exit::HostStop); // no pre-stop hook: dirty
    b.start_vm(Guest::Release { ms: 0 });
    assert_eq!(b.vm_state().gpu_ok, Some(false));
    b.end_vm(Exit::HostStop);
}

#[test]
fn the_seeds_recipe_remove_in_pre_stop_then_back_and_reset_in_post_stop() {
    let b = Bench::new(
        Profile::default(),
        Some("[phase.pre-stop]\nactions = [\"remove\"]\n"),
    );
    for _ in 0..2 {
        b.phase_ok("pre-start");
        b.start_vm(Guest::Release { ms: 10 });
        b.phase_ok("post-start");
        let v = b.phase_ok("pre-stop");
        for dev in [GPU, AUDIO] {
            assert_eq!(action(&v, "remove", dev)["result"], "done");
            assert!(!b.present(dev), "{dev} still present after pre-stop");
        }
        // GPU first, as the seed's script removes it.
        assert_eq!(v["actions"][0]["device"], GPU);
        // vfio-pci relayed the removes to QEMU, whose guest let go: the stop leaves it clean.
        let host = b.twin.root().to_path_buf();
        resetlab::reset::wait::poll(
            "the guest to release both",
            std::time::Duration::from_secs(5),
            std::time::Duration::from_millis(2),
            || {
                let st = resetlab::sim::qemu::VmState::load(&host, 100)?;
                Ok(st.devices.iter().all(|d| d.released).then_some(()))
            },
        )
        .unwrap();
        assert!(b
            .kmsg()
            .contains("vfio-pci 0000:c5:00.0: Relaying device request to user"));
        let st = b.end_vm(Exit::HostStop);
        assert!(st.left_dirty.is_empty(), "{st:?}");
        let v = b.phase_ok("post-stop");
        for dev in [GPU, AUDIO] {
            let e = action(&v, "ensure_present", dev);
            assert_eq!(e["result"], "done", "{e}");
            assert!(
                e["detail"]
                    .as_str()
                    .unwrap()
                    .contains("0000:00:08.1/pci_bus/0000:c5/rescan"),
                "the rescan should be the bridge's bus, not global: {e}"
            );
            // The record still says dirty (a remove cannot tell a release): reset anyway.
            assert_eq!(action(&v, "reset_if_dirty", dev)["result"], "done");
            assert_eq!(b.driver(dev).as_deref(), Some("vfio-pci"));
        }
        assert!(!b.gpu_dirty());
    }
}

#[test]
fn a_missed_post_stop_leaves_the_record_dirty_and_pre_start_resets() {
    let b = Bench::new(Profile::default(), None);
    b.phase_ok("pre-start");
    b.phase_ok("post-start");
    b.guest_dirties_the_gpu();
    // The host lost power or the hook was killed: no post-stop. Next start:
    let v = b.phase_ok("pre-start");
    for dev in [GPU, AUDIO] {
        let r = action(&v, "reset_if_dirty", dev);
        assert_eq!(r["result"], "done", "{r}");
        assert_eq!(b.state(dev)["state"], "clean");
    }
    assert!(!b.gpu_dirty());
}

/// The hook's bench on a twin whose GPU vanishes once removed (it never comes back).
fn vanishing(policy: Option<&str>) -> Bench {
    let profile = Profile {
        device_fault: Fault::Vanish,
        ..Profile::default()
    };
    Bench::new(profile, policy)
}

#[test]
fn a_device_that_never_comes_back_ends_post_stop_within_its_budget() {
    let b = vanishing(Some(
        "fail_start_on_error = true\n[chain]\namd_gpu = [\"remove_rescan\"]\n\
             [phase.post-stop]\nbudget_s = 3\n[phase.pre-start]\nbudget_s = 2\n",
    ));
    b.phase_ok("post-start");
    let (code, v, err) = b.phase("post-stop");
    assert_eq!(code, Some(0), "post-stop never fails the hook: {err}");
    assert_eq!(v["ok"], false);
    assert!(
        v["elapsed_ms"].as_f64().unwrap() <= v["budget_ms"].as_f64().unwrap(),
        "{}",
        v["elapsed_ms"]
    );
    let r = action(&v, "reset_if_dirty", GPU);
    assert_eq!(r["result"], "failed");
    let detail = r["detail"].as_str().unwrap();
    assert!(
        detail.contains("timed out after") && detail.contains("0000:c5:00.0 to reappear"),
        "{detail}"
    );
    assert_eq!(b.state(GPU)["state"], "dirty");
    assert!(b
        .kmsg()
        .contains("<3>resetlab: VM 100 post-stop: 0000:c5:00.0 not reset"));
    assert!(err.contains("error(s)"), "{err}");

    // The next start cannot bring it back either; the policy stops the start, saying why.
    let (code, v, err) = b.phase("pre-start");
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(v["exit_code"], 1);
    let e = action(&v, "ensure_present", GPU);
    assert_eq!(e["result"], "failed", "{e}");
    assert!(err.contains("0000:c5:00.0 missing and not back"), "{err}");
    assert!(err.contains("stopping the VM start"), "{err}");
    assert!(
        v["elapsed_ms"].as_f64().unwrap() <= v["budget_ms"].as_f64().unwrap(),
        "{}",
        v["elapsed_ms"]
    );
}

/// The device vanishes during the chain's first method: the hook's line names that method's
/// failure and where the chain stopped (the second method), not the first method twice.
#[test]
fn a_chain_that_loses_the_device_names_each_method_in_the_hook() {
    let b = vanishing(Some(
        "[chain]\namd_gpu = [\"remove_rescan\", \"kernel\"]\n\
             [phase.post-stop]\nbudget_s = 3\n",
    ));
    b.phase_ok("post-start");
    let (code, v, err) = b.phase("post-stop");
    assert_eq!(code, Some(0), "{err}");
    let r = action(&v, "reset_if_dirty", GPU);
    assert_eq!(r["result"], "failed", "{r}");
    let detail = r["detail"].as_str().unwrap();
    assert!(
        detail.contains("remove_rescan: timed out after")
            && detail.contains("kernel: 0000:c5:00.0 is gone (removed and not rescanned)"),
        "{detail}"
    );
    assert_eq!(b.state(GPU)["state"], "dirty");
}

#[test]
fn a_failed_pre_start_goes_on_without_fail_start_on_error() {
    let profile = Profile {
        device_fault: Fault::Vanish,
        ..Profile::default()
    };
    let b = Bench::new(profile, Some("[phase.pre-start]\nbudget_s = 1\n"));
    // Remove the GPU by hand (as the seed's pre-stop would); it vanishes for good.
    fs::write(
        b.twin
            .sysfs
            .join("bus/pci/devices")
            .join(GPU)
            .join("remove"),
        "1",
    )
    .unwrap();
    for _ in 0..400 {
        if !b.present(GPU) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let (code, v, err) = b.phase("pre-start");
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(v["ok"], false);
    assert!(err.contains("the VM start goes on"), "{err}");
}

#[test]
fn two_hooks_never_reset_one_device_at_once() {
    let b = Bench::new(
        Profile::default(),
        Some("[phase.post-stop]\nbudget_s = 8\n"),
    );
    let host = Machine::new(&b.twin.sysfs);
    b.phase_ok("post-start");
    let _other_hook =
        resetlab::reset::lock::lock(&host, &bdf(GPU), std::time::Duration::from_secs(1)).unwrap();
    let (code, v, err) = b.phase("post-stop");
    assert_eq!(code, Some(0), "{err}");
    let r = action(&v, "reset_if_dirty", GPU);
    assert_eq!(r["result"], "failed");
    assert!(
        r["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("being reset by pid {}", std::process::id())),
        "{r}"
    );
    // The other device is not held up by it.
    assert_eq!(action(&v, "reset_if_dirty", AUDIO)["result"], "done");
}

#[test]
fn an_unknown_method_in_a_configured_chain_is_a_clear_config_error() {
    let b = Bench::new(
        Profile::default(),
        Some("[chain]\namd_gpu = [\"smu_mod2\", \"remove_rescan\"]\n"),
    );
    b.phase_ok("post-start");
    let (code, v, _) = b.phase("post-stop");
    assert_eq!(code, Some(0));
    let r = action(&v, "reset_if_dirty", GPU);
    assert_eq!(r["result"], "failed");
    let d = r["detail"].as_str().unwrap();
    assert!(
        d.contains("hook.toml names an unknown method") && d.contains("'smu_mod2'"),
        "{d}"
    );
    // `hook status` says so too, and exits 2.
    let o = b.raw(&["status", "100"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("smu_mod2"));
}

#[test]
fn status_shows_devices_their_state_and_each_phase_plan() {
    let b = Bench::new(
        Profile::default(),
        Some("[vm.100]\nexclude = [\"c5:00.1\"]\n"),
    );
    b.phase_ok("post-start");
    let o = b.raw(&["status", "100"]);
    assert_eq!(o.status.code(), Some(0));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["devices"].as_array().unwrap().len(), 1);
    assert_eq!(v["devices"][0]["bdf"], GPU);
    assert_eq!(v["devices"][0]["state"], "dirty");
    assert_eq!(v["devices"][0]["driver"], "vfio-pci");
    assert_eq!(v["unmanaged"][0]["bdf"], AUDIO);
    assert_eq!(v["unmanaged"][0]["why"], "excluded by the policy");
    let pre = &v["phases"][0];
    assert_eq!(pre["phase"], "pre-start");
    let step = pre["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["action"] == "reset_if_dirty")
        .unwrap();
    assert!(
        step["would"]
            .as_str()
            .unwrap()
            .starts_with("dirty: reset with smu_mode2 → remove_rescan"),
        "{step}"
    );
    // Human form.
    let a = b.args(&["status", "100"]);
    let human: Vec<&str> = a
        .iter()
        .map(String::as_str)
        .filter(|s| *s != "--json")
        .collect();
    let out = run_ok(&human);
    assert!(
        out.contains("0000:c5:00.1  hostpci1  excluded by the policy"),
        "{out}"
    );
}

#[test]
fn a_broken_vm_config_is_logged_and_pre_start_goes_on() {
    let b = Bench::new(Profile::default(), None);
    fs::write(
        b.pve.join("qemu-server/100.conf"),
        "hostpci0: 0000:c5:00.0,pcie=maybe\n",
    )
    .unwrap();
    let (code, v, err) = b.phase("pre-start");
    assert_eq!(code, Some(0));
    assert_eq!(v["ok"], false);
    assert!(err.contains("100.conf:1:"), "{err}");
    assert!(b
        .kmsg()
        .contains("<3>resetlab: VM 100 pre-start: configuration not usable"));
}

fn write_exe(path: &Path, text: &str) {
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn install_copies_the_shim_and_runs_qm_set() {
    let b = Bench::new(Profile::default(), None);
    let root = b.twin.root();
    let hooks = root.join("var/hooks");
    fs::write(
        b.pve.join("storage.cfg"),
        format!(
            "dir: local\n\tpath /var/lib/vz\n\tcontent iso\n\ndir: hooks\n\tpath {}\n\tcontent snippets\n",
            hooks.display()
        ),
    )
    .unwrap();
    // A fake qm that records its arguments.
    let bin = root.join("bin");
    fs::create_dir_all(&bin).unwrap();
    let log = root.join("qm.args");
    write_exe(
        &bin.join("qm"),
        &format!("#!/bin/sh\necho \"$@\" > {}\n", log.display()),
    );
    let qm = bin.join("qm").display().to_string();
    let a = b.args(&["install", "100", "--storage", "hooks", "--qm", &qm]);
    let o = bin_cmd().args(&a).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["volid"], "hooks:snippets/resetlab-hook.sh");
    let shim = hooks.join("snippets/resetlab-hook.sh");
    assert_eq!(
        fs::read_to_string(&shim).unwrap(),
        fs::read_to_string(repo().join("tools/pve-hookscript.sh")).unwrap()
    );
    assert_eq!(
        fs::metadata(&shim).unwrap().permissions().mode() & 0o777,
        0o755
    );
    assert_eq!(
        fs::read_to_string(&log).unwrap().trim(),
        "set 100 --hookscript hooks:snippets/resetlab-hook.sh"
    );
    // `local` does not allow snippets here: a clear refusal.
    let o = b.raw(&["install", "100", "--print-only"]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("does not allow 'snippets'"));
    // On a twin no `qm` from PATH is ever run (it would change this machine's VM 100): the
    // command to run is printed; and the twin's own `local` is beneath its root.
    fs::write(
        b.pve.join("storage.cfg"),
        "dir: local\n\tpath /var/lib/vz\n\tcontent snippets\n",
    )
    .unwrap();
    let o = bin_cmd()
        .args(b.args(&["install", "100"]))
        .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["qm"], Value::Null, "{v}");
    assert_eq!(
        fs::read_to_string(&log).unwrap().trim(),
        "set 100 --hookscript hooks:snippets/resetlab-hook.sh"
    );
    assert!(root.join("var/lib/vz/snippets/resetlab-hook.sh").exists());
    fs::write(
        b.pve.join("storage.cfg"),
        format!(
            "dir: hooks\n\tpath {}\n\tcontent snippets\n",
            hooks.display()
        ),
    )
    .unwrap();
    // --print-only: the command to run is printed.
    let a = b.args(&["install", "100", "--storage", "hooks", "--print-only"]);
    let human: Vec<&str> = a
        .iter()
        .map(String::as_str)
        .filter(|s| *s != "--json")
        .collect();
    let out = run_ok(&human);
    assert!(out.contains("unchanged:"), "{out}");
    assert!(
        out.contains("would run: qm set 100 --hookscript hooks:snippets/resetlab-hook.sh"),
        "{out}"
    );
    // Someone else's file of that name is left alone.
    fs::write(hooks.join("snippets/mine.sh"), "#!/bin/sh\n").unwrap();
    let o = b.raw(&[
        "install",
        "100",
        "--storage",
        "hooks",
        "--name",
        "mine.sh",
        "--print-only",
    ]);
    assert_eq!(o.status.code(), Some(3));
    assert_eq!(
        fs::read_to_string(hooks.join("snippets/mine.sh")).unwrap(),
        "#!/bin/sh\n"
    );
}

#[test]
fn the_shim_execs_resetlab_hook_with_proxmoxs_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("args");
    write_exe(
        &dir.path().join("resetlab"),
        &format!(
            "#!/bin/sh\necho \"$@ migrated=$PVE_MIGRATED_FROM\" > {}\n",
            log.display()
        ),
    );
    let o = std::process::Command::new("sh")
        .arg(repo().join("tools/pve-hookscript.sh"))
        .args(["100", "pre-start"])
        .env("RESETLAB", dir.path().join("resetlab"))
        .env("PVE_MIGRATED_FROM", "pve2")
        .output()
        .unwrap();
    assert!(o.status.success());
    assert_eq!(
        fs::read_to_string(&log).unwrap().trim(),
        "hook 100 pre-start migrated=pve2"
    );
}

/// The shim with no resetlab where it looks: pre-start stops the start with one line for the
/// task log; the other phases log the same line at error level to the kernel log and go on.
#[test]
fn the_shim_without_resetlab_stops_pre_start_and_logs_the_other_phases() {
    let dir = tempfile::tempdir().unwrap();
    let kmsg = dir.path().join("kmsg");
    fs::write(&kmsg, "").unwrap();
    let missing = dir.path().join("sbin/resetlab");
    let shim = |phase: &str| {
        std::process::Command::new("sh")
            .arg(repo().join("tools/pve-hookscript.sh"))
            .args(["100", phase])
            .env("RESETLAB", &missing)
            .env("RESETLAB_KMSG", &kmsg)
            .output()
            .unwrap()
    };
    let line = format!(
        "resetlab: VM 100 pre-start: resetlab not found at {}; install it or remove the hookscript",
        missing.display()
    );
    let o = shim("pre-start");
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&o.stderr), format!("{line}\n"));
    for phase in ["post-start", "pre-stop", "post-stop"] {
        let o = shim(phase);
        assert_eq!(o.status.code(), Some(0), "{phase}");
    }
    let logged = fs::read_to_string(&kmsg).unwrap();
    let lines: Vec<&str> = logged.lines().collect();
    assert_eq!(lines.len(), 4, "{logged}");
    assert_eq!(lines[0], format!("<3>{line}"));
    assert_eq!(
        lines[3],
        format!("<3>{}", line.replace("pre-start", "post-stop"))
    );
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn bin_cmd() -> std::process::Command {
    let mut c = bin();
    c.env_remove("RESETLAB_SYSFS");
    c
}

#[test]
fn a_whole_slot_entry_remembers_the_functions_removed_in_pre_stop() {
    let b = Bench::new(
        Profile::default(),
        Some(
            "[phase.pre-stop]\nactions = [\"remove\"]\n\
             [vm.100]\ndevices = [\"c5:00.0\", \"c5:00.1\"]\n",
        ),
    );
    fs::write(
        b.pve.join("qemu-server/100.conf"),
        "hostpci0: c5:00,pcie=1,x-vga=1\nvga: none\n",
    )
    .unwrap();
    for _ in 0..2 {
        b.phase_ok("pre-start");
        b.phase_ok("post-start");
        b.guest_dirties_the_gpu();
        let v = b.phase_ok("pre-stop");
        for dev in [GPU, AUDIO] {
            assert_eq!(action(&v, "remove", dev)["result"], "done");
        }
        // Only c5:00.2-.6 are on the bus now: the slot no longer names .0 and .1, their
        // state records do.
        let v = b.phase_ok("post-stop");
        for dev in [GPU, AUDIO] {
            assert_eq!(action(&v, "ensure_present", dev)["result"], "done");
            assert_eq!(action(&v, "reset_if_dirty", dev)["result"], "done");
            assert!(b.present(dev));
        }
        assert_eq!(
            v["devices"].as_array().unwrap().len(),
            2,
            "{}",
            v["devices"]
        );
        assert!(!b.gpu_dirty());
    }
}

/// Kills the `sim vm` process of a test on drop, whatever the test did (no stuck children).
struct VmProcess {
    root: PathBuf,
}

impl Drop for VmProcess {
    fn drop(&mut self) {
        let p = resetlab::sim::qemu::pid_path(&self.root, 100);
        if let Some(pid) = fs::read_to_string(p)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

#[test]
fn sim_vm_processes_hold_the_groups_serve_the_hook_and_go_away() {
    let b = Bench::new(Profile::default(), None);
    let root = b.twin.root().to_path_buf();
    let dir = root.display().to_string();
    let _guard = VmProcess { root: root.clone() };
    let st = json(&[
        "--json",
        "sim",
        "vm",
        &dir,
        "100",
        "start",
        "--guest",
        "release:20",
    ]);
    assert_eq!(st["status"], "running");
    assert_eq!(st["devices"][0]["id"], "hostpci0");
    assert_eq!(st["devices"][1]["id"], "hostpci1");
    let pid = st["pid"].as_u64().unwrap();
    // The guards see the VM's QEMU holding the GPU's group.
    let probe = run_ok(&["--sysfs", &sysfs_arg(&b.twin.sysfs), "probe", GPU]);
    assert!(probe.contains(&format!("held by pid {pid}")), "{probe}");
    // A second start of the same VM is refused.
    let o = run(&["sim", "vm", &dir, "100", "start"]);
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    b.phase_ok("post-start");
    let v = b.phase_ok("pre-stop");
    assert_eq!(action(&v, "release", GPU)["result"], "done");
    let st = json(&["--json", "sim", "vm", &dir, "100", "stop"]);
    assert_eq!(st["status"], "exited");
    assert_eq!(st["left_dirty"].as_array().unwrap().len(), 0);
    assert!(!resetlab::sim::qemu::socket_path(&root, 100).exists());
    assert!(!b.gpu_dirty());
    // Killed while the guest drives the GPU: dirty; the next guest cannot use it.
    run_ok(&["sim", "vm", &dir, "100", "start"]);
    run_ok(&["sim", "vm", &dir, "100", "check"]);
    let st = json(&["--json", "sim", "vm", &dir, "100", "kill"]);
    assert_eq!(st["left_dirty"][0], GPU);
    assert!(b.gpu_dirty());
    run_ok(&["sim", "vm", &dir, "100", "start"]);
    let o = run(&["sim", "vm", &dir, "100", "check"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("left dirty before this start"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    run_ok(&["sim", "vm", &dir, "100", "shutdown"]);
    // Bad input: one line, non-zero.
    let o = run(&["sim", "vm", &dir, "100", "start", "--guest", "sleepy"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("sleepy"));
}

#[test]
fn device_check_resets_a_gpu_recorded_clean_that_does_not_look_clean() {
    // The record says clean (released), but the GPU's engine is still busy: a record that
    // missed something (the state directory was lost, another tool drove the GPU).
    for (policy, want) in [("", "skipped"), ("device_check = true\n", "done")] {
        let b = Bench::new(Profile::default(), Some(policy));
        b.start_vm(Guest::Release { ms: 0 });
        b.phase_ok("post-start");
        b.phase_ok("pre-stop");
        b.end_vm(Exit::HostStop);
        b.guest_dirties_the_gpu();
        let (code, v, err) = b.phase("post-stop");
        assert_eq!(code, Some(0), "{err}");
        let r = action(&v, "reset_if_dirty", GPU);
        assert_eq!(r["result"], want, "{policy}: {r}");
        if want == "done" {
            assert!(
                err.contains("does not look clean (gfx_idle: GRBM_STATUS"),
                "{err}"
            );
            assert!(!b.gpu_dirty());
            // The audio function has no vendor checks: its record decides.
            assert_eq!(action(&v, "reset_if_dirty", AUDIO)["result"], "skipped");
        } else {
            assert!(b.gpu_dirty(), "the record decides without device_check");
        }
    }
}

/// A stand-in for `qm set VMID --hookscript VOLID` and `qm set VMID --delete hookscript` that
/// edits `<pve>/qemu-server/VMID.conf` as qemu-server does, and logs its arguments.
fn stand_in_qm(dir: &Path, pve: &Path) -> PathBuf {
    fs::create_dir_all(dir).unwrap();
    let qm = dir.join("qm");
    write_exe(
        &qm,
        &format!(
            r#"#!/bin/sh
echo "$@" >> {log}
[ "$1" = set ] || exit 2
conf={pve}/qemu-server/$2.conf
grep -v '^hookscript:' "$conf" > "$conf.new"
case "$3 $4" in
"--hookscript "?*) echo "hookscript: $4" >> "$conf.new" ;;
"--delete hookscript") ;;
*) rm -f "$conf.new"; echo "qm: bad arguments $*" >&2; exit 2 ;;
esac
mv "$conf.new" "$conf"
"#,
            log = dir.join("qm.log").display(),
            pve = pve.display()
        ),
    );
    qm
}

fn hookscript_line(conf: &Path) -> Option<String> {
    fs::read_to_string(conf)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("hookscript: ").map(str::to_string))
}

/// Every file under `dirs` of `root` with its bytes: what "writes nothing" compares.
fn tree(root: &Path, dirs: &[&str]) -> Vec<(PathBuf, Vec<u8>)> {
    fn walk(p: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
        let Ok(rd) = fs::read_dir(p) else { return };
        let mut entries: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        entries.sort();
        for e in entries {
            if e.is_dir() {
                out.push((e.clone(), Vec::new()));
                walk(&e, out);
            } else {
                out.push((e.clone(), fs::read(&e).unwrap_or_default()));
            }
        }
    }
    let mut out = Vec::new();
    for d in dirs {
        walk(&root.join(d), &mut out);
    }
    out
}

fn doctor_check<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {name} check in {v:#}"))
}

/// The issue's acceptance run, on the twin's copy of the seed host (VM 100 with the field
/// report's `local:snippets/vm100-hooks.sh`) and a stand-in `qm`.
#[test]
fn doctor_warns_install_chain_sets_the_shim_doctor_passes_uninstall_gives_it_back() {
    let twin = Twin::running(Profile::default()).unwrap();
    let root = twin.root().to_path_buf();
    let pve = root.join("etc/pve");
    let conf = pve.join("qemu-server/100.conf");
    let qm = stand_in_qm(&root.join("qm-bin"), &pve);
    let sysfs = sysfs_arg(&twin.sysfs);
    let cmd = |args: &[&str]| {
        let mut a = vec!["--sysfs", sysfs.as_str(), "--json"];
        a.extend_from_slice(args);
        let o = bin_cmd().args(&a).output().unwrap();
        let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
            panic!(
                "{args:?}: no JSON ({e}): {}",
                String::from_utf8_lossy(&o.stderr)
            )
        });
        (o.status.code(), v)
    };
    let qm_arg = qm.display().to_string();

    // 1. doctor: the field report's bash hookscript is not resetlab's.
    let (_, v) = cmd(&["doctor", "--vmid", "100"]);
    let h = doctor_check(&v, "hookscript");
    assert_eq!(h["status"], "warn", "{h}");
    let detail = h["detail"].as_str().unwrap();
    assert!(detail.contains("local:snippets/vm100-hooks.sh"), "{detail}");
    assert!(detail.contains("not resetlab's"), "{detail}");
    let fix = h["fix"].as_str().unwrap();
    assert!(fix.starts_with("resetlab hook install 100 "), "{fix}");
    assert!(fix.contains("--chain"), "{fix}");

    // --print-only writes nothing at all, and runs no qm.
    let before = tree(&root, &["etc", "var"]);
    let (code, v) = cmd(&["hook", "install", "100", "--chain", "--print-only"]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["written"], false);
    assert_eq!(v["record"]["previous"], "local:snippets/vm100-hooks.sh");
    assert_eq!(tree(&root, &["etc", "var"]), before);
    assert!(!root.join("qm-bin/qm.log").exists());

    // 2. install --chain: the shim becomes the VM's hookscript, the old one is recorded.
    let (code, v) = cmd(&["hook", "install", "100", "--chain", "--qm", &qm_arg]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["shim"], "new");
    assert_eq!(
        hookscript_line(&conf).as_deref(),
        Some("local:snippets/resetlab-hook.sh")
    );
    let shim = root.join("var/lib/vz/snippets/resetlab-hook.sh");
    assert_eq!(
        fs::read_to_string(&shim).unwrap(),
        fs::read_to_string(repo().join("tools/pve-hookscript.sh")).unwrap()
    );
    let record = fs::read_to_string(root.join("etc/resetlab/hookscripts/100.toml")).unwrap();
    assert!(
        record.contains("previous = \"local:snippets/vm100-hooks.sh\""),
        "{record}"
    );
    assert!(record.contains("chain = true"), "{record}");

    // 3. doctor: the shim is this version's; the binary must be on this node.
    let (_, v) = cmd(&["doctor", "--vmid", "100"]);
    assert_eq!(doctor_check(&v, "hookscript")["status"], "pass", "{v:#}");
    let b = doctor_check(&v, "hook-binary");
    assert_eq!(b["status"], "fail", "{b}");
    assert!(
        b["detail"].as_str().unwrap().contains("/usr/sbin/resetlab"),
        "{b}"
    );
    // The package installed on the twin's node.
    fs::create_dir_all(root.join("usr/sbin")).unwrap();
    std::os::unix::fs::symlink(
        env!("CARGO_BIN_EXE_resetlab"),
        root.join("usr/sbin/resetlab"),
    )
    .unwrap();
    let (_, v) = cmd(&["doctor", "--vmid", "100"]);
    for name in ["hookscript", "hook-binary", "hook-policy", "hook-chain"] {
        assert_eq!(doctor_check(&v, name)["status"], "pass", "{name}: {v:#}");
    }
    assert!(
        doctor_check(&v, "hook-chain")["detail"]
            .as_str()
            .unwrap()
            .contains("local:snippets/vm100-hooks.sh"),
        "{v:#}"
    );
    // Installing again changes nothing and keeps the record.
    let (code, v) = cmd(&["hook", "install", "100", "--qm", &qm_arg]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["shim"], "unchanged");
    assert_eq!(v["record"]["previous"], "local:snippets/vm100-hooks.sh");
    assert_eq!(v["record"]["chain"], true);

    // uninstall --print-only writes nothing either.
    let before = tree(&root, &["etc", "var"]);
    let (code, v) = cmd(&["hook", "uninstall", "100", "--print-only"]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(
        v["command"],
        serde_json::json!([
            "qm",
            "set",
            "100",
            "--hookscript",
            "local:snippets/vm100-hooks.sh"
        ])
    );
    assert_eq!(tree(&root, &["etc", "var"]), before);

    // 4. uninstall: the VM gets the field report's hookscript back; the record goes.
    let (code, v) = cmd(&["hook", "uninstall", "100", "--qm", &qm_arg]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(
        hookscript_line(&conf).as_deref(),
        Some("local:snippets/vm100-hooks.sh")
    );
    assert_eq!(v["record_removed"], true);
    assert!(!root.join("etc/resetlab/hookscripts/100.toml").exists());
    let (_, v) = cmd(&["doctor", "--vmid", "100"]);
    assert_eq!(doctor_check(&v, "hookscript")["status"], "warn");
    // Nothing of resetlab's left to uninstall: a clear refusal.
    let o = bin_cmd()
        .args([
            "--sysfs",
            &sysfs,
            "hook",
            "uninstall",
            "100",
            "--qm",
            &qm_arg,
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("not resetlab's shim"));

    // Without a qm to run (a twin runs none from PATH) the command is printed and the record
    // kept until the VM has its hookscript back; then uninstall forgets it.
    let (code, _) = cmd(&["hook", "install", "100", "--chain", "--qm", &qm_arg]);
    assert_eq!(code, Some(0));
    let o = bin_cmd()
        .args(["--sysfs", &sysfs, "hook", "uninstall", "100"])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{o:?}");
    assert!(
        out.contains("now run: qm set 100 --hookscript local:snippets/vm100-hooks.sh"),
        "{out}"
    );
    assert!(root.join("etc/resetlab/hookscripts/100.toml").exists());
    let by_hand = std::process::Command::new(&qm)
        .args([
            "set",
            "100",
            "--hookscript",
            "local:snippets/vm100-hooks.sh",
        ])
        .status()
        .unwrap();
    assert!(by_hand.success());
    let o = bin_cmd()
        .args(["--sysfs", &sysfs, "hook", "uninstall", "100"])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("already has local:snippets/vm100-hooks.sh"),
        "{out}"
    );
    assert!(!root.join("etc/resetlab/hookscripts/100.toml").exists());
}

/// A VM with no hookscript: uninstall removes resetlab's; --chain has nothing to run.
#[test]
fn uninstall_without_a_previous_hookscript_deletes_it() {
    let b = Bench::new(Profile::default(), None);
    let root = b.twin.root();
    let qm = stand_in_qm(&root.join("qm-bin"), &b.pve);
    let qm_arg = qm.display().to_string();
    let conf = b.pve.join("qemu-server/100.conf");
    let o = b.raw(&["install", "100", "--chain", "--qm", &qm_arg]);
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("no previous hookscript"));
    let o = b.raw(&["install", "100", "--qm", &qm_arg]);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(
        hookscript_line(&conf).as_deref(),
        Some("local:snippets/resetlab-hook.sh")
    );
    let o = b.raw(&["uninstall", "100", "--qm", &qm_arg]);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(hookscript_line(&conf), None);
    assert_eq!(
        fs::read_to_string(root.join("qm-bin/qm.log")).unwrap(),
        "set 100 --hookscript local:snippets/resetlab-hook.sh\nset 100 --delete hookscript\n"
    );
}

#[test]
fn installing_over_an_older_shim_updates_it() {
    let b = Bench::new(Profile::default(), None);
    let snippets = b.twin.root().join("var/lib/vz/snippets");
    fs::create_dir_all(&snippets).unwrap();
    let old = fs::read_to_string(repo().join("tools/shims/pve-hookscript-r1.sh")).unwrap();
    write_exe(&snippets.join("resetlab-hook.sh"), &old);
    let o = b.raw(&["install", "100"]);
    assert!(o.status.success(), "{o:?}");
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["shim"], "updated", "{v}");
    assert_eq!(
        fs::read_to_string(snippets.join("resetlab-hook.sh")).unwrap(),
        fs::read_to_string(repo().join("tools/pve-hookscript.sh")).unwrap()
    );
}

/// Sets up VM 100 with a previous hookscript that records how it was run, installs with
/// --chain (the stand-in qm edits the config), and returns the bench and the record file.
fn chained_bench(script: &str, timeout: &str) -> (Bench, PathBuf) {
    let b = Bench::new(Profile::default(), None);
    let root = b.twin.root().to_path_buf();
    let snippets = root.join("var/lib/vz/snippets");
    fs::create_dir_all(&snippets).unwrap();
    let ran = root.join("chained.log");
    write_exe(
        &snippets.join("vm100-hooks.sh"),
        &format!(
            "#!/bin/sh\necho \"$1 $2 $PVE_MIGRATED_FROM\" >> {}\n{script}\n",
            ran.display()
        ),
    );
    fs::write(
        b.pve.join("qemu-server/100.conf"),
        format!("{VM100}hookscript: local:snippets/vm100-hooks.sh\n"),
    )
    .unwrap();
    let qm = stand_in_qm(&root.join("qm-bin"), &b.pve);
    let qm_arg = qm.display().to_string();
    let o = b.raw(&[
        "install",
        "100",
        "--chain",
        "--chain-timeout",
        timeout,
        "--qm",
        &qm_arg,
    ]);
    assert!(o.status.success(), "{o:?}");
    (b, ran)
}

fn phase_chained(b: &Bench, phase: &str) -> (Option<i32>, Value) {
    let o = bin_cmd()
        .args(b.args(&["100", phase]))
        .env("RESETLAB_TWIN_RUN_CHAINED", "1")
        .env("PVE_MIGRATED_FROM", "pve2")
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "{phase}: no JSON ({e}): {}",
            String::from_utf8_lossy(&o.stderr)
        )
    });
    (o.status.code(), v)
}

#[test]
fn with_chain_the_previous_hookscript_runs_after_resetlabs_phase() {
    let (b, ran) = chained_bench("exit 0", "30");
    for phase in ["pre-start", "post-start", "pre-stop", "post-stop"] {
        // The VM's lifecycle around the phases: pre-stop's release talks to its QEMU.
        match phase {
            "post-start" => b.start_vm(Guest::Release { ms: 0 }),
            "post-stop" => {
                let _ = b.end_vm(Exit::HostStop);
            }
            _ => {}
        }
        let (code, v) = phase_chained(&b, phase);
        assert_eq!(code, Some(0), "{phase}: {v}");
        assert_eq!(v["ok"], true, "{phase}: {v}");
        assert_eq!(v["chained"]["outcome"]["result"], "exited", "{v}");
        assert_eq!(v["chained"]["outcome"]["code"], 0, "{v}");
    }
    assert_eq!(
        fs::read_to_string(&ran).unwrap(),
        "100 pre-start pve2\n100 post-start pve2\n100 pre-stop pve2\n100 post-stop pve2\n"
    );
    assert!(b
        .kmsg()
        .contains("running chained hookscript local:snippets/vm100-hooks.sh"));
    // On a twin the script is not run unless the test says it is safe.
    let (code, v, _) = b.phase("post-stop");
    assert_eq!(code, Some(0));
    assert_eq!(v["chained"]["outcome"]["why"], "twin", "{v}");
    assert_eq!(fs::read_to_string(&ran).unwrap().lines().count(), 4);
}

#[test]
fn a_failing_chained_pre_start_stops_the_start_other_phases_log_it() {
    let (b, _) = chained_bench("exit 7", "30");
    let (code, v) = phase_chained(&b, "pre-start");
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(v["exit_code"], 1);
    let (code, _) = phase_chained(&b, "post-stop");
    assert_eq!(code, Some(0));
    assert!(b.kmsg().contains(
        "<3>resetlab: VM 100 post-stop: chained hookscript local:snippets/vm100-hooks.sh: exit 7"
    ));
}

#[test]
fn a_chained_hookscript_past_its_bound_is_killed() {
    let (b, _) = chained_bench("sleep 600", "1");
    let (code, v) = phase_chained(&b, "post-stop");
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["chained"]["outcome"]["result"], "timed_out", "{v}");
    assert!(
        b.kmsg().contains("still running after its bound of 1 s"),
        "{}",
        b.kmsg()
    );
}

/// A policy written for a newer resetlab: the error names the key and that version, and the
/// hook still brings the functions pre-stop removed back.
#[test]
fn a_policy_for_a_newer_resetlab_is_named_and_the_hook_still_brings_devices_back() {
    let b = Bench::new(
        Profile::default(),
        Some("[phase.pre-stop]\nactions = [\"remove\"]\n"),
    );
    b.phase_ok("pre-start");
    b.phase_ok("pre-stop");
    assert!(!b.present(GPU));
    fs::write(
        &b.policy,
        "resetlab = \"9.1.0\"\nrelease_grace_s = 5\n[phase.pre-stop]\nactions = [\"remove\"]\n",
    )
    .unwrap();
    let o = b.raw(&["status", "100"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("release_grace_s"), "{err}");
    assert!(err.contains("written for resetlab 9.1.0"), "{err}");
    assert!(
        err.contains(&format!("this is resetlab {}", env!("CARGO_PKG_VERSION"))),
        "{err}"
    );
    let (code, v, _) = b.phase("post-stop");
    assert_eq!(code, Some(0));
    assert_eq!(v["ok"], false);
    for dev in [GPU, AUDIO] {
        assert_eq!(action(&v, "ensure_present", dev)["result"], "done", "{v}");
        assert!(b.present(dev));
    }
    assert!(
        v["actions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["action"] == "ensure_present"),
        "{v}"
    );
    assert!(b
        .kmsg()
        .contains("policy not usable, only bringing missing functions back"));
}

#[test]
fn install_in_a_cluster_names_the_nodes_that_need_the_package() {
    let b = Bench::new(Profile::default(), None);
    fs::write(
        b.pve.join("corosync.conf"),
        "totem {\n  cluster_name: lab\n}\n",
    )
    .unwrap();
    for n in ["pve1", "pve2", "pve3"] {
        fs::create_dir_all(b.pve.join("nodes").join(n).join("qemu-server")).unwrap();
    }
    fs::write(b.pve.join("nodes/pve2/qemu-server/100.conf"), VM100).unwrap();
    let human = |extra: &[&str]| {
        let a = b.args(extra);
        let refs: Vec<&str> = a
            .iter()
            .map(String::as_str)
            .filter(|s| *s != "--json")
            .collect();
        run_ok(&refs)
    };
    let out = human(&["install", "100", "--print-only"]);
    assert!(
        out.contains("cluster of 3 nodes (pve1, pve2, pve3)"),
        "{out}"
    );
    assert!(
        out.contains("(now on pve2) can run on: pve1, pve2, pve3"),
        "{out}"
    );
    assert!(
        out.contains("each of them needs the resetlab package"),
        "{out}"
    );
    assert!(out.contains("storage 'local' is per node"), "{out}");
    // A shared storage with snippets, available on two nodes: one shim, two nodes.
    let shared = b.twin.root().join("mnt/pve/nfs");
    fs::write(
        b.pve.join("storage.cfg"),
        format!(
            "dir: local\n\tpath /var/lib/vz\n\tcontent iso\n\nnfs: nfs\n\tpath {}\n\tserver 10.0.0.1\n\texport /srv\n\tcontent snippets\n\tnodes pve1,pve2\n",
            shared.display()
        ),
    )
    .unwrap();
    let out = human(&["install", "100", "--storage", "nfs", "--print-only"]);
    assert!(out.contains("can run on: pve1, pve2\n"), "{out}");
    assert!(
        out.contains("not pve3: storage 'nfs' is not available there"),
        "{out}"
    );
    assert!(
        out.contains("storage 'nfs' is shared: this one shim serves every node"),
        "{out}"
    );
    // One node alone is not a cluster.
    fs::remove_file(b.pve.join("corosync.conf")).unwrap();
    let out = human(&["install", "100", "--storage", "nfs", "--print-only"]);
    assert!(!out.contains("cluster"), "{out}");
}

#[test]
fn a_record_that_chains_resetlabs_own_shim_is_not_run() {
    let (b, ran) = chained_bench("exit 0", "30");
    let record = b.twin.root().join("etc/resetlab/hookscripts/100.toml");
    let text = fs::read_to_string(&record).unwrap();
    fs::write(&record, text.replace("vm100-hooks.sh", "resetlab-hook.sh")).unwrap();
    let (code, v) = phase_chained(&b, "post-stop");
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["chained"]["outcome"]["result"], "error", "{v}");
    assert!(
        b.kmsg().contains("is resetlab's own shim: not run"),
        "{}",
        b.kmsg()
    );
    assert!(!ran.exists());
}
