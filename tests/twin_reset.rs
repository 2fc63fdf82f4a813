//! The reset engine on the twin (the seed's UM880 Pro host with its device model).

mod common;
use common::*;

use std::fs;
use std::path::Path;

use resetlab::sim::profile::Profile;
use resetlab::sim::Twin;

fn running() -> Twin {
    Twin::running(Profile::default()).expect("twin with model")
}

fn sys(t: &Twin) -> String {
    sysfs_arg(&t.sysfs)
}

fn reset_json(t: &Twin, args: &[&str]) -> (Option<i32>, serde_json::Value, String) {
    let s = sys(t);
    let mut all = vec!["--sysfs", s.as_str(), "reset", "--json"];
    all.extend_from_slice(args);
    let o = run(&all);
    let v = serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null);
    (
        o.status.code(),
        v,
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn write(p: &Path, v: &str) {
    fs::write(p, v).unwrap();
}

/// Waits (bounded) for the model to act on a write.
fn settle(cond: impl Fn() -> bool) {
    for _ in 0..400 {
        if cond() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    panic!("the twin's model did not act in 2 s");
}

#[test]
fn kernel_method_explains_the_missing_reset_attribute() {
    let t = running();
    let (code, v, _) = reset_json(&t, &["c5:00.0", "-m", "kernel"]);
    assert_eq!(code, Some(1));
    let run = &v["runs"][0];
    assert_eq!(run["attempted"], false);
    assert!(
        run["verdict"]["reason"]
            .as_str()
            .unwrap()
            .contains("no 'reset' attribute"),
        "{run}"
    );
}

#[test]
fn default_chain_of_the_igpu_cleans_a_dirty_gpu_with_mode_2() {
    let t = running();
    let bdf: resetlab::pci::Bdf = "c5:00.0".parse().unwrap();
    resetlab::sim::model::mark_dirty(t.root(), &bdf).unwrap();
    let (code, v, err) = reset_json(&t, &["c5:00.0"]);
    assert_eq!(code, Some(0), "{err}\n{v}");
    assert_eq!(v["method"], "smu_mode2");
    let run = v["runs"].as_array().unwrap().last().unwrap();
    assert_eq!(run["health"]["healthy"], true, "{run}");
    assert!(t.model_errors().is_empty(), "{:?}", t.model_errors());
}

#[test]
fn when_mode_2_does_not_clean_the_chain_falls_back_to_remove_rescan() {
    // Without the hypothesis, nothing in the default chain cleans a GPU left dirty (the field
    // report: remove + rescan after the stop failed): both are tried, the reset fails.
    let mut p = Profile::default();
    p.effective.smu_mode2 = false;
    let t = Twin::running(p.clone()).unwrap();
    let bdf: resetlab::pci::Bdf = "c5:00.0".parse().unwrap();
    resetlab::sim::model::mark_dirty(t.root(), &bdf).unwrap();
    let (code, v, err) = reset_json(&t, &["c5:00.0"]);
    assert_eq!(code, Some(1), "{err}\n{v}");
    let runs = v["runs"].as_array().unwrap();
    assert_eq!(runs[0]["method"], "smu_mode2");
    assert_eq!(runs[0]["health"]["healthy"], false, "{}", runs[0]);
    assert!(
        runs[0]["health"]["items"].to_string().contains("gfx_idle"),
        "{}",
        runs[0]
    );
    assert_eq!(runs[1]["method"], "remove_rescan");
    assert_eq!(runs[1]["health"]["healthy"], false, "{}", runs[1]);
    assert!(v["method"].is_null(), "{v}");
    // The fallback itself: in a profile where remove_rescan did clean, the chain ends there.
    p.effective.remove_rescan = true;
    let t = Twin::running(p).unwrap();
    resetlab::sim::model::mark_dirty(t.root(), &bdf).unwrap();
    let (code, v, err) = reset_json(&t, &["c5:00.0"]);
    assert_eq!(code, Some(0), "{err}\n{v}");
    assert_eq!(v["method"], "remove_rescan");
}

#[test]
fn raw_methods_do_not_clean_a_dirty_gpu() {
    let t = running();
    let bdf: resetlab::pci::Bdf = "c5:00.0".parse().unwrap();
    resetlab::sim::model::mark_dirty(t.root(), &bdf).unwrap();
    let (code, v, err) = reset_json(&t, &["c5:00.0", "-m", "pm", "--force"]);
    assert_eq!(code, Some(1), "{err}\n{v}");
    let run = &v["runs"][0];
    assert_eq!(run["attempted"], true);
    assert_eq!(run["health"]["healthy"], false, "{run}");
}

#[test]
fn remove_rescan_of_the_slot_brings_every_function_back_bound_as_before() {
    let t = running();
    let before = json(&["--sysfs", &sys(&t), "list", "--json", "-s", "c5:00"]);
    let (code, v, err) = reset_json(&t, &["c5:00.1", "-m", "remove_rescan", "--slot", "--force"]);
    assert_eq!(code, Some(0), "{err}\n{v}");
    let writes: Vec<String> = v["writes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["path"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(
        writes.iter().filter(|p| p.ends_with("/remove")).count(),
        7,
        "{writes:?}"
    );
    let after = json(&["--sysfs", &sys(&t), "list", "--json", "-s", "c5:00"]);
    let pick = |l: &serde_json::Value| -> Vec<(String, String)> {
        devices(l)
            .iter()
            .map(|d| (d["bdf"].to_string(), d["driver"].to_string()))
            .collect()
    };
    assert_eq!(pick(&before), pick(&after));
}

#[test]
fn bus_is_refused_while_siblings_have_live_drivers_and_runs_once_they_are_unbound() {
    let t = running();
    let (code, v, err) = reset_json(&t, &["c5:00.0", "-m", "bus"]);
    // A safety refusal: exit 3, one line on stderr, the report still printed.
    assert_eq!(code, Some(3), "{err}");
    assert_eq!(v["runs"][0]["verdict"]["refused"], true);
    let reason = v["runs"][0]["verdict"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("c5:00.3 (xhci_hcd)") && reason.contains("c5:00.4 (xhci_hcd)"),
        "{reason}"
    );
    // Unbind the live drivers (as a user would), then it applies.
    for (drv, bdf) in [
        ("ccp", "0000:c5:00.2"),
        ("xhci_hcd", "0000:c5:00.3"),
        ("xhci_hcd", "0000:c5:00.4"),
    ] {
        write(
            &t.sysfs.join("bus/pci/drivers").join(drv).join("unbind"),
            bdf,
        );
        let link = t.sysfs.join("bus/pci/devices").join(bdf).join("driver");
        settle(|| fs::symlink_metadata(&link).is_err());
    }
    let (code, v, err) = reset_json(&t, &["c5:00.0", "-m", "bus"]);
    assert_eq!(code, Some(0), "{err}\n{v}");
    let run = &v["runs"][0];
    assert!(
        run["outcome"]["did"]
            .as_str()
            .unwrap()
            .contains("6 other function(s)"),
        "{run}"
    );
    assert_eq!(run["health"]["healthy"], true, "{run}");
    // Whether the twin's model saw the 2 ms pulse is not asserted: a file
    // watcher can miss a pulse on a loaded machine. The guest tier proves
    // the secondary bus reset's effect on a real kernel.
}

#[test]
fn bus_with_force_goes_past_live_drivers() {
    let t = running();
    let (code, v, err) = reset_json(&t, &["c5:00.0", "-m", "bus", "--force"]);
    assert_eq!(code, Some(0), "{err}\n{v}");
    assert!(v["runs"][0]["verdict"]["reason"]
        .as_str()
        .unwrap()
        .starts_with("forced"));
}

#[test]
fn a_held_lock_makes_the_second_caller_wait_then_fail_naming_the_holder() {
    let t = running();
    let host = resetlab::machine::Machine::new(&t.sysfs);
    let bdf: resetlab::pci::Bdf = "c5:00.0".parse().unwrap();
    let _held =
        resetlab::reset::lock::lock(&host, &bdf, std::time::Duration::from_secs(1)).unwrap();
    let (code, _, err) = reset_json(
        &t,
        &["c5:00.0", "-m", "remove_rescan", "--lock-timeout", "200"],
    );
    assert_eq!(code, Some(3), "{err}");
    assert!(
        err.contains(&format!("pid {}", std::process::id())) && err.contains("waited 200 ms"),
        "{err}"
    );
}

#[test]
fn an_open_vfio_group_means_a_vm_is_running() {
    let t = running();
    let node = t.root().join("dev/vfio/18");
    let _vm = fs::File::open(&node).unwrap();
    let (code, _, err) = reset_json(&t, &["c5:00.0", "-m", "remove_rescan"]);
    assert_eq!(code, Some(3), "{err}");
    assert!(
        err.contains("VFIO group 18") && err.contains(&format!("pid {}", std::process::id())),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1);
}

#[test]
fn a_device_bound_to_a_live_driver_is_refused() {
    let t = running();
    let (code, _, err) = reset_json(&t, &["c5:00.3", "-m", "pm"]);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("xhci_hcd"), "{err}");
}

#[test]
fn dry_run_changes_nothing_and_lists_the_writes() {
    let t = running();
    let cfg = t.sysfs.join("bus/pci/devices/0000:c5:00.1/config");
    let before = fs::read(&cfg).unwrap();
    let (code, v, err) = reset_json(
        &t,
        &[
            "c5:00.1",
            "-m",
            "pm,bus,remove_rescan",
            "--dry-run",
            "--force",
        ],
    );
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(v["dry_run"], true);
    let writes = v["writes"].as_array().unwrap();
    assert!(writes.iter().any(|w| w["target"] == "config"), "{v}");
    assert!(writes.iter().all(|w| w["dry_run"] == true));
    assert_eq!(
        fs::read(&cfg).unwrap(),
        before,
        "config changed in a dry run"
    );
    assert!(t.sysfs.join("bus/pci/devices/0000:c5:00.1").exists());
    let log = t.root().join("model/events.jsonl");
    assert_eq!(
        fs::read_to_string(log).unwrap_or_default(),
        "",
        "the model saw a write"
    );
}

#[test]
fn pm_on_the_hd_audio_function_resets_and_restores_it() {
    let t = running();
    let (code, v, err) = reset_json(&t, &["c5:00.1", "-m", "pm"]);
    assert_eq!(code, Some(0), "{err}\n{v}");
    let run = &v["runs"][0];
    assert_eq!(run["health"]["healthy"], true, "{run}");
    assert!(
        run["phases"]["reset_ms"].as_f64().unwrap() >= 20.0,
        "two 10 ms spec delays"
    );
}

#[test]
fn trace_file_holds_every_write_in_order() {
    let t = running();
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace.jsonl");
    let (code, v, err) = reset_json(
        &t,
        &["c5:00.1", "-m", "pm", "--trace", trace.to_str().unwrap()],
    );
    assert_eq!(code, Some(0), "{err}");
    let lines: Vec<serde_json::Value> = fs::read_to_string(&trace)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let writes: Vec<&serde_json::Value> = lines.iter().filter(|l| l["target"] != "note").collect();
    assert_eq!(writes.len(), v["writes"].as_array().unwrap().len());
    let seqs: Vec<u64> = lines.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn not_root_is_refused_with_one_line() {
    let t = running();
    let s = sys(&t);
    let o = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            env!("CARGO_BIN_EXE_resetlab"),
            "--sysfs",
            &s,
            "reset",
            "c5:00.1",
            "-m",
            "pm",
        ])
        .output()
        .expect("setpriv (util-linux)");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains("run as root"), "{err}");
}

#[test]
fn bad_method_names_are_one_line() {
    let t = running();
    for (m, want) in [
        ("fl", "known methods"),
        ("kernel:banana", "the kernel's methods"),
        ("flr:x", "only 'kernel'"),
    ] {
        let (code, _, err) = reset_json(&t, &["c5:00.0", "-m", m]);
        assert_eq!(code, Some(2), "{m}: {err}");
        assert!(err.contains(want), "{m}: {err}");
    }
}

/// `remove_rescan → kernel` on c5:00.0 of a twin whose GPU vanishes once removed (it never
/// comes back), through the library.
fn vanishing_chain(opts: resetlab::reset::ResetOptions) -> resetlab::reset::engine::ChainReport {
    use resetlab::reset::{engine::run_chain, parse_method, Journal};
    let t = Twin::running(Profile {
        device_fault: resetlab::sim::profile::Fault::Vanish,
        ..Profile::default()
    })
    .unwrap();
    let host = resetlab::machine::Machine::new(&t.sysfs);
    let regs = resetlab::amd::regs::RegsDb::embedded().unwrap();
    let bdf: resetlab::pci::Bdf = "c5:00.0".parse().unwrap();
    let chain = [
        parse_method("remove_rescan").unwrap(),
        parse_method("kernel").unwrap(),
    ];
    run_chain(&host, &regs, &bdf, &chain, &opts, &mut Journal::new(false)).unwrap()
}

/// A chain with a budget: the method whose wait the budget cut says so, and the methods after it
/// are listed as not started (the hook gives each device's chain what is left of its phase).
#[test]
fn a_chain_budget_cuts_its_waits_and_starts_no_method_once_spent() {
    let r = vanishing_chain(resetlab::reset::ResetOptions {
        budget: Some(std::time::Duration::from_millis(300)),
        ..Default::default()
    });
    assert!(!r.success);
    assert_eq!(r.budget_ms, Some(300));
    assert_eq!(r.runs.len(), 1, "{:?}", r.runs);
    let e = r.runs[0].error.as_deref().unwrap();
    assert!(
        e.starts_with("timed out after")
            && e.contains("0000:c5:00.0 to reappear after rescan")
            && e.ends_with("the wait was cut to what was left of the chain's budget of 0.3 s"),
        "{e}"
    );
    assert_eq!(r.runs[0].error_kind, Some("timeout"));
    assert_eq!(r.not_started, vec!["kernel".to_string()]);
}

/// A device gone after the first method (removed, never back): the chain stops there, and
/// the report keeps what ran before and names where it stopped (it was the chain's error,
/// which lost the first methods' results).
#[test]
fn a_chain_that_loses_its_device_keeps_the_runs_before_and_says_where_it_stopped() {
    let r = vanishing_chain(resetlab::reset::ResetOptions {
        wait_timeout: std::time::Duration::from_millis(300),
        ..Default::default()
    });
    assert!(!r.success);
    assert_eq!(r.runs.len(), 1, "{:?}", r.runs);
    assert_eq!(r.runs[0].method, "remove_rescan");
    assert_eq!(r.runs[0].error_kind, Some("timeout"));
    let s = r.stopped.expect("stopped");
    assert_eq!(s.method, "kernel");
    assert_eq!(s.error_kind, "failed");
    assert_eq!(s.error, "0000:c5:00.0 is gone (removed and not rescanned)");
    assert!(r.not_started.is_empty(), "{:?}", r.not_started);
}

/// The lock's wait is cut to the budget too, and its refusal names the holder and the budget.
#[test]
fn a_held_lock_ends_a_budgeted_chain_when_the_budget_is_spent() {
    use resetlab::reset::{engine::run_chain, parse_method, Journal, ResetOptions};
    let t = running();
    let host = resetlab::machine::Machine::new(&t.sysfs);
    let regs = resetlab::amd::regs::RegsDb::embedded().unwrap();
    let bdf: resetlab::pci::Bdf = "c5:00.0".parse().unwrap();
    let _held =
        resetlab::reset::lock::lock(&host, &bdf, std::time::Duration::from_secs(1)).unwrap();
    let opts = ResetOptions {
        budget: Some(std::time::Duration::from_millis(200)),
        ..ResetOptions::default()
    };
    let chain = [parse_method("remove_rescan").unwrap()];
    let e = run_chain(&host, &regs, &bdf, &chain, &opts, &mut Journal::new(false)).unwrap_err();
    let msg = e.to_string();
    assert_eq!(e.kind(), "refused", "{msg}");
    assert!(
        msg.contains(&format!("pid {}", std::process::id()))
            && msg
                .contains(" ms; the wait was cut to what was left of the chain's budget of 0.2 s"),
        "{msg}"
    );
}

/// `reset --budget`: the same from the command line, in its JSON and its text.
#[test]
fn reset_budget_flag_bounds_the_chain() {
    let t = Twin::running(Profile {
        device_fault: resetlab::sim::profile::Fault::Vanish,
        ..Profile::default()
    })
    .unwrap();
    let (code, v, err) = reset_json(
        &t,
        &["c5:00.0", "-m", "remove_rescan,kernel", "--budget", "300ms"],
    );
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(v["budget_ms"], 300, "{v}");
    assert_eq!(v["not_started"], serde_json::json!(["kernel"]), "{v}");
    let e = v["runs"][0]["error"].as_str().unwrap();
    assert!(
        e.contains("to reappear after rescan")
            && e.ends_with("the wait was cut to what was left of the chain's budget of 0.3 s"),
        "{e}"
    );
}
