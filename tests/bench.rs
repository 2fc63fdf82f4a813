//! `resetlab bench` on the twin: the success pattern the profile defines,
//! failures recorded with their reason, the report files and their numbers,
//! VM cycles driven through a fake `qm`.

mod common;
use common::*;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use resetlab::sim::profile::{Fault, Profile};
use resetlab::sim::Twin;
use serde_json::Value;

/// Runs `resetlab ARGS` in `cwd` with extra environment.
fn run_in(cwd: &Path, args: &[&str], env: &[(&str, String)]) -> Output {
    let mut c = bin();
    c.args(args).current_dir(cwd).env_remove("RESETLAB_SYSFS");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run resetlab")
}

fn stdout_json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON ({e}):\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

fn trials(dir: &Path) -> Vec<Value> {
    fs::read_to_string(dir.join("trials.jsonl"))
        .expect("trials.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

fn by_method(ts: &[Value]) -> BTreeMap<String, Vec<&Value>> {
    let mut m: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for t in ts {
        m.entry(t["method"].as_str().unwrap().to_string())
            .or_default()
            .push(t);
    }
    m
}

fn every_method() -> Vec<&'static str> {
    resetlab::reset::METHODS.iter().map(|m| m.name).collect()
}

/// Methods that apply (forced) to the twin's 780M without cleaning it, whose
/// failure only the vendor health checks (GRBM_STATUS through BAR5) can see:
/// PCI-level health passes after them.
const NEED_VENDOR_HEALTH: &[&str] = &["pm", "bus"];

/// `--sim bench` over every method with --force, 3 cycles.
fn every_method_run(tmp: &Path) -> (PathBuf, Vec<Value>) {
    let out = tmp.join("all");
    let methods = every_method().join(",");
    let o = run_in(
        tmp,
        &[
            "--sim",
            "bench",
            "--methods",
            &methods,
            "--force",
            "--no-warmup",
            "--cycles",
            "3",
            // The bound of the twin's rescan (and of d3cold, which fails by
            // waiting it out): 300 ms was too short for the model thread on a
            // loaded machine ("timed out after 300 ms waiting for 0000:c5:00.0
            // to reappear after rescan").
            "--wait-timeout",
            "2000",
            "--out",
            out.to_str().unwrap(),
            "--json",
        ],
        &[],
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let ts = trials(&out);
    assert_eq!(ts.len(), 3 * every_method().len());
    (out, ts)
}

#[test]
fn every_method_on_the_dirty_igpu_follows_the_profile() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, ts) = every_method_run(tmp.path());
    let effective = Profile::default().effective;
    // Interleaved: cycle c holds every method once, in the order named.
    for (i, t) in ts.iter().enumerate() {
        assert_eq!(t["cycle"], i / every_method().len(), "{t}");
        assert_eq!(t["method"], every_method()[i % every_method().len()]);
        assert_eq!(t["dirty"]["ok"], true, "dirty step: {t}");
    }
    for (m, ts) in by_method(&ts) {
        if NEED_VENDOR_HEALTH.contains(&m.as_str()) {
            continue; // asserted in forced_pm_and_bus_leave_the_igpu_dirty (vendor health)
        }
        for t in ts {
            let applies = t["applies"].as_bool().unwrap();
            let want = applies && effective.cleans(&m);
            assert_eq!(t["success"], want, "{m}: {t}");
            if !applies {
                assert!(
                    t["reason"]
                        .as_str()
                        .unwrap()
                        .starts_with("does not apply: "),
                    "{t}"
                );
            }
            if !want {
                assert!(t["reason"].as_str().is_some_and(|r| !r.is_empty()), "{t}");
            }
        }
    }
    let m = by_method(&ts);
    // The twin's 780M: no reset attribute, no FLR, no AF capability.
    for name in ["kernel", "flr", "af_flr"] {
        assert!(m[name].iter().all(|t| t["applies"] == false), "{name}");
    }
    // d3cold, forced, cannot cut power on this platform: a failure with its reason.
    assert!(m["d3cold"].iter().all(|t| t["applies"] == true
        && t["success"] == false
        && t["reason"].as_str().unwrap().contains("D3cold")));
    // After the fact, remove + rescan leaves it dirty (the report's failed post-stop recipe);
    // SMU mode 2 cleans it, the project's hypothesis, labelled as such.
    assert!(m["remove_rescan"].iter().all(|t| t["success"] == false
        && t["reason"]
            .as_str()
            .unwrap()
            .starts_with("unhealthy: gfx_idle")));
    assert!(m["smu_mode2"].iter().all(|t| t["success"] == true));
}

#[test]
fn forced_pm_and_bus_leave_the_igpu_dirty() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, ts) = every_method_run(tmp.path());
    let effective = Profile::default().effective;
    let m = by_method(&ts);
    for name in NEED_VENDOR_HEALTH {
        assert!(!effective.cleans(name));
        for t in &m[*name] {
            assert_eq!(t["applies"], true, "{t}");
            assert_eq!(t["success"], false, "{name} cleaned a dirty GPU: {t}");
            assert_eq!(t["healthy"], false, "{t}");
            assert!(
                t["reason"].as_str().unwrap().starts_with("unhealthy: "),
                "{t}"
            );
        }
    }
}

/// Type-7 quantile, written again here so the test does not trust the library's.
fn q7(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let h = q * (v.len() - 1) as f64;
    let (lo, hi) = (h.floor() as usize, h.ceil() as usize);
    v[lo] + (h - lo as f64) * (v[hi] - v[lo])
}

#[test]
fn report_files_parse_and_their_numbers_match_the_trials() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("r");
    let o = run_in(
        tmp.path(),
        &[
            "--sim",
            "bench",
            "--methods",
            "pm,remove_rescan,flr",
            "--force",
            "--no-warmup",
            "--cycles",
            "4",
            "--out",
            out.to_str().unwrap(),
            "--json",
        ],
        &[],
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let printed = stdout_json(&o);
    let ts = trials(&out);
    assert_eq!(ts.len(), 12);
    for f in resetlab::bench::report::FILES
        .iter()
        .chain(&["meta.json", "trials.jsonl"])
    {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    // CSV: one row per trial, the same numbers as the JSON lines.
    let mut rd = csv::Reader::from_path(out.join("trials.csv")).unwrap();
    let head: Vec<String> = rd.headers().unwrap().iter().map(String::from).collect();
    let col = |n: &str| head.iter().position(|h| h == n).unwrap();
    let rows: Vec<csv::StringRecord> = rd.records().map(|r| r.unwrap()).collect();
    assert_eq!(rows.len(), ts.len());
    for (r, t) in rows.iter().zip(&ts) {
        assert_eq!(r[col("seq")], t["seq"].to_string());
        assert_eq!(&r[col("method")], t["method"].as_str().unwrap());
        assert_eq!(r[col("success")], t["success"].to_string());
        for p in ["probe", "reset", "ready", "restore", "health", "total"] {
            let v: f64 = r[col(&format!("{p}_ms"))].parse().unwrap();
            assert_eq!(v, t["phases"][p].as_f64().unwrap(), "{p}");
        }
        let chain: f64 = r[col("chain_ms")].parse().unwrap();
        assert_eq!(chain, t["chain_ms"].as_f64().unwrap());
    }
    // summary.json (and the printed summary) against the JSON lines.
    let summary: Value =
        serde_json::from_str(&fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(printed["summary"], summary);
    let groups = by_method(&ts);
    for m in summary["methods"].as_array().unwrap() {
        let name = m["method"].as_str().unwrap();
        let g = &groups[name];
        assert_eq!(m["trials"], g.len());
        let ok = g.iter().filter(|t| t["success"] == true).count();
        assert_eq!(m["successes"], ok);
        let ran: Vec<&&Value> = g.iter().filter(|t| t["attempted"] == true).collect();
        assert_eq!(m["attempted"], ran.len());
        if ran.is_empty() {
            assert!(m["phases"]
                .as_array()
                .unwrap()
                .iter()
                .all(|p| p["phase"] == "probe"));
            continue;
        }
        let mut tot: Vec<f64> = ran
            .iter()
            .map(|t| t["phases"]["total"].as_f64().unwrap())
            .collect();
        let total = m["phases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["phase"] == "total")
            .unwrap();
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs().max(1.0);
        assert!(close(
            total["dist"]["median"].as_f64().unwrap(),
            q7(&mut tot, 0.5)
        ));
        // p95 only from 20 values on (docs/bench.md); null below.
        if tot.len() >= 20 {
            assert!(close(
                total["dist"]["p95"].as_f64().unwrap(),
                q7(&mut tot, 0.95)
            ));
        } else {
            assert!(total["dist"]["p95"].is_null(), "{total}");
        }
        assert!(close(
            total["dist"]["max"].as_f64().unwrap(),
            tot[tot.len() - 1]
        ));
    }
    // The SVGs are XML; one dot per trial that ran (latency), one marker per
    // trial (success), and every method named.
    let count = |file: &str, tag: &str| {
        let text = fs::read_to_string(out.join(file)).unwrap();
        let doc = roxmltree::Document::parse(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(doc.root_element().tag_name().name(), "svg");
        let texts: Vec<String> = doc
            .descendants()
            .filter(|n| n.has_tag_name("text"))
            .filter_map(|n| n.text().map(|t| t.trim().to_string()))
            .collect();
        for m in ["pm", "remove_rescan", "flr"] {
            assert!(texts.iter().any(|t| t == m), "{file} does not name {m}");
        }
        doc.descendants().filter(|n| n.has_tag_name(tag)).count()
    };
    let ran = ts.iter().filter(|t| t["attempted"] == true).count();
    assert_eq!(count("latency.svg", "circle"), ran);
    assert_eq!(count("success.svg", "circle"), ts.len());
    // The HTML report is self-contained: the three plots inline, no external reference.
    let html = fs::read_to_string(out.join("report.html")).unwrap();
    assert_eq!(html.matches("<svg").count(), 3);
    assert!(!html.contains("src=") && !html.contains("href="));
    let md = fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("](latency.svg)") && md.contains("](success.svg)"));
    assert!(md.contains("](phases.svg)"));
}

#[test]
fn report_rerenders_from_trials_and_compares_two_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs: Vec<PathBuf> = ["a", "b"].iter().map(|d| tmp.path().join(d)).collect();
    for d in &dirs {
        let o = run_in(
            tmp.path(),
            &[
                "--sim",
                "bench",
                "--methods",
                "smu_mode2",
                "--no-warmup",
                "--cycles",
                "2",
                "--out",
                d.to_str().unwrap(),
            ],
            &[],
        );
        assert_eq!(o.status.code(), Some(0));
    }
    let a = &dirs[0];
    let before = fs::read_to_string(a.join("summary.json")).unwrap();
    for f in resetlab::bench::report::FILES {
        fs::remove_file(a.join(f)).unwrap();
    }
    let o = run_in(tmp.path(), &["bench", "report", a.to_str().unwrap()], &[]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    for f in resetlab::bench::report::FILES {
        assert!(a.join(f).is_file(), "{f} not re-made");
    }
    assert_eq!(fs::read_to_string(a.join("summary.json")).unwrap(), before);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("smu_mode2") && text.contains("2/2"), "{text}");

    let cmp = tmp.path().join("cmp");
    let o = run_in(
        tmp.path(),
        &[
            "bench",
            "report",
            a.to_str().unwrap(),
            dirs[1].to_str().unwrap(),
            "--out",
            cmp.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let text = String::from_utf8_lossy(&o.stdout);
    let row = text
        .lines()
        .find(|l| l.starts_with("smu_mode2"))
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(row.matches("2/2").count(), 2, "{row}");
    // A twin's smu_mode2 result keeps its label in the comparison too.
    assert!(
        text.contains("hypothesis, unconfirmed on hardware"),
        "{text}"
    );
    assert!(cmp.join("compare.md").is_file() && cmp.join("compare.html").is_file());
    // The overlaid plots: A's and B's two trials per method, each a circle; the
    // figure says it is the twin's; the .md links them, the .html holds them.
    let lat = fs::read_to_string(cmp.join("compare-latency.svg")).unwrap();
    let doc = roxmltree::Document::parse(&lat).unwrap();
    let circles = doc
        .descendants()
        .filter(|n| n.has_tag_name("circle"))
        .count();
    assert_eq!(circles, 4, "2 measured trials in each of A and B");
    assert!(lat.contains("twin (simulated)") && lat.contains("smu_mode2 · B"));
    let suc = fs::read_to_string(cmp.join("compare-success.svg")).unwrap();
    assert!(suc.contains("n = 2") && suc.contains("twin (simulated)"));
    let md = fs::read_to_string(cmp.join("compare.md")).unwrap();
    assert!(md.contains("](compare-latency.svg)") && md.contains("](compare-success.svg)"));
    let html = fs::read_to_string(cmp.join("compare.html")).unwrap();
    assert_eq!(html.matches("<svg").count(), 2);
    assert!(html.contains("hypothesis, unconfirmed on hardware"));
}

#[test]
fn a_held_lock_is_a_recorded_failure_and_the_run_goes_on() {
    let t = Twin::running(Profile::default()).unwrap();
    let host = resetlab::machine::Machine::new(&t.sysfs);
    let bdf: resetlab::pci::Bdf = "c5:00.0".parse().unwrap();
    let _held =
        resetlab::reset::lock::lock(&host, &bdf, std::time::Duration::from_secs(1)).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("r");
    let o = run_in(
        tmp.path(),
        &[
            "--sysfs",
            &sysfs_arg(&t.sysfs),
            "bench",
            "c5:00.0",
            "--methods",
            "remove_rescan",
            "--no-warmup",
            "--cycles",
            "2",
            "--lock-timeout",
            "100",
            "--out",
            out.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let ts = trials(&out);
    assert_eq!(ts.len(), 2, "the run went on after the first failure");
    for t in &ts {
        assert_eq!(t["success"], false);
        let r = t["reason"].as_str().unwrap();
        assert!(
            r.contains("waited 100 ms") && r.contains(&format!("pid {}", std::process::id())),
            "{r}"
        );
    }
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("0/2") && text.contains("2× "), "{text}");
}

#[test]
fn a_vanished_device_stops_the_run_with_what_was_learnt() {
    let profile = Profile {
        device_fault: Fault::Vanish,
        ..Profile::default()
    };
    let t = Twin::running(profile).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("r");
    let o = run_in(
        tmp.path(),
        &[
            "--sysfs",
            &sysfs_arg(&t.sysfs),
            "bench",
            "c5:00.0",
            "--methods",
            "pm,remove_rescan",
            "--force",
            "--no-warmup",
            "--cycles",
            "3",
            "--wait-timeout",
            "200",
            "--out",
            out.to_str().unwrap(),
            "--json",
        ],
        &[],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    let v = stdout_json(&o);
    let ts = trials(&out);
    assert_eq!(ts.len(), 2, "cycle 0 only");
    assert_eq!(ts[1]["method"], "remove_rescan");
    assert_eq!(ts[1]["success"], false);
    assert!(
        ts[1]["reason"].as_str().unwrap().contains("200 ms"),
        "{}",
        ts[1]
    );
    let stopped = v["meta"]["stopped"].as_str().unwrap();
    assert!(stopped.contains("is gone after remove_rescan"), "{stopped}");
    assert!(out.join("report.html").is_file());
    assert_eq!(v["summary"]["trials"], 2);
}

const FAKE_QM: &str = r#"#!/bin/sh
# A fake Proxmox qm driving the twin: stop leaves the GPU dirty (as a guest
# driver does), start fails while it is dirty (QEMU cannot use it), and the
# guest agent answers ping from the second try after a successful start.
dev=0000:c5:00.0
echo "$*" >>"$QM_STATE/calls"
case "$1" in
stop)
    "$RESETLAB_BIN" sim dirty "$TWIN_ROOT" "$dev" || exit 2
    rm -f "$QM_STATE/running" "$QM_STATE/pings" ;;
start)
    if "$RESETLAB_BIN" sim status "$TWIN_ROOT" | grep -qx "$dev dirty"; then
        echo "kvm: -device vfio-pci,host=$dev: the GPU was not reset (still dirty)" >&2
        exit 1
    fi
    touch "$QM_STATE/running" ;;
guest)
    [ "$2" = cmd ] && [ "$4" = ping ] || exit 2
    [ -e "$QM_STATE/running" ] || { echo "VM $3 not running" >&2; exit 2; }
    n=$(( $(cat "$QM_STATE/pings" 2>/dev/null || echo 0) + 1 ))
    echo "$n" >"$QM_STATE/pings"
    [ "$n" -ge 2 ] || { echo "QEMU guest agent is not running" >&2; exit 255; } ;;
*)
    echo "fake qm: $1?" >&2; exit 2 ;;
esac
"#;

#[test]
fn vm_cycles_through_a_fake_qm_record_start_guest_and_failed_starts() {
    use std::os::unix::fs::PermissionsExt;
    let t = Twin::running(Profile::default()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let bindir = tmp.path().join("bin");
    let state = tmp.path().join("qm");
    fs::create_dir_all(&bindir).unwrap();
    fs::create_dir_all(&state).unwrap();
    let qm = bindir.join("qm");
    fs::write(&qm, FAKE_QM).unwrap();
    fs::set_permissions(&qm, fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bindir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = tmp.path().join("r");
    // No DEV: the device comes from the twin's etc/pve/qemu-server/100.conf (hostpci0).
    let o = run_in(
        tmp.path(),
        &[
            "--sysfs",
            &sysfs_arg(&t.sysfs),
            "bench",
            "--vm",
            "100",
            "--methods",
            "smu_mode2,remove_rescan",
            "--force",
            "--no-warmup",
            "--cycles",
            "3",
            "--check-interval",
            "10",
            "--guest-timeout",
            "10000",
            "--out",
            out.to_str().unwrap(),
            "--json",
        ],
        &[
            ("PATH", path),
            ("QM_STATE", state.display().to_string()),
            ("TWIN_ROOT", t.root().display().to_string()),
            ("RESETLAB_BIN", env!("CARGO_BIN_EXE_resetlab").to_string()),
        ],
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v = stdout_json(&o);
    assert_eq!(v["meta"]["device"], "0000:c5:00.0");
    assert_eq!(v["meta"]["mode"], "vm");
    let ts = trials(&out);
    assert_eq!(ts.len(), 6);
    for t in &ts {
        let vm = &t["vm"];
        assert_eq!(vm["stop"]["ok"], true, "{t}");
        match t["method"].as_str().unwrap() {
            // Cleans the GPU between stop and start (on the twin: the project's hypothesis).
            "smu_mode2" => {
                assert_eq!(t["success"], true, "{t}");
                assert_eq!(vm["start"]["ok"], true);
                assert_eq!(vm["guest"]["ok"], true);
                assert_eq!(vm["checks"], 2, "polled the guest until it answered");
                let ready = vm["ready_ms"].as_f64().unwrap();
                assert!(ready >= vm["start"]["ms"].as_f64().unwrap());
            }
            // After the stop it leaves the GPU dirty (the report): the start fails, with
            // QEMU's words.
            "remove_rescan" => {
                assert_eq!(t["success"], false, "{t}");
                assert_eq!(vm["start"]["ok"], false);
                assert!(vm["guest"].is_null());
                let r = t["reason"].as_str().unwrap();
                assert!(
                    r.starts_with("start: exit 1: kvm:") && r.contains("still dirty"),
                    "{r}"
                );
            }
            m => panic!("unexpected method {m}"),
        }
    }
    // The order qm saw: stop, start, then pings only after a start that worked.
    let calls = fs::read_to_string(state.join("calls")).unwrap();
    let want: Vec<&str> = (0..3)
        .flat_map(|_| {
            [
                "stop 100",
                "start 100",
                "guest cmd 100 ping",
                "guest cmd 100 ping",
                "stop 100",
                "start 100",
            ]
        })
        .collect();
    assert_eq!(calls.lines().collect::<Vec<_>>(), want);
    let s = &v["summary"]["methods"];
    assert_eq!(s[0]["vm"]["guest_ok"], 3);
    assert_eq!(s[1]["vm"]["start_ok"], 0);
}

#[test]
fn sim_bench_without_arguments_compares_the_igpus_methods() {
    let tmp = tempfile::tempdir().unwrap();
    let o = run_in(tmp.path(), &["--sim", "bench"], &[]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // Whole cycles of VM 100 on the twin: a stop with release against a stop without it, then
    // every method the 780M has (forced ones marked), 10 cycles each.
    let rows: Vec<(&str, &str)> = text
        .lines()
        .filter(|l| l.contains("/10 "))
        .filter_map(|l| {
            let mut f = l.split("  ").filter(|x| !x.is_empty());
            let name = f.next()?;
            let ok = f.nth(1)?.trim();
            Some((name, ok))
        })
        .collect();
    let ok = |name: &str| {
        rows.iter()
            .find(|r| r.0 == name)
            .unwrap_or_else(|| panic!("no row {name}: {text}"))
            .1
    };
    assert_eq!(ok("release, then stop"), "10/10", "{text}");
    // The report: nothing host-side after an ungraceful stop cleans the GPU …
    assert_eq!(ok("stop, then remove_rescan"), "0/10", "{text}");
    assert_eq!(ok("stop, then pm (forced)"), "0/10", "{text}");
    assert_eq!(ok("stop, then bus (forced)"), "0/10", "{text}");
    // … except SMU mode 2 on the twin, and the output says that is a hypothesis.
    assert_eq!(ok("stop, then smu_mode2"), "10/10", "{text}");
    assert!(
        text.contains("smu_mode2 cleaning a GPU left dirty is this project's hypothesis, unconfirmed on hardware"),
        "{text}"
    );
    assert!(text.contains("hook per cycle on the twin"), "{text}");
    assert!(text.contains("pre-stop 14300 ms"), "{text}");
    // Its files went to ./resetlab-bench-<UTC stamp>.
    let dirs: Vec<_> = fs::read_dir(tmp.path()).unwrap().flatten().collect();
    assert_eq!(dirs.len(), 1);
    let name = dirs[0].file_name().into_string().unwrap();
    assert!(name.starts_with("resetlab-bench-"), "{name}");
    assert!(dirs[0].path().join("report.html").is_file());
    // Not a terminal here: plain progress lines.
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.lines().any(|l| l.starts_with("bench [1/")), "{err}");
}

#[test]
fn bad_arguments_are_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let used = tmp.path().join("used");
    fs::create_dir_all(&used).unwrap();
    fs::write(used.join("trials.jsonl"), "").unwrap();
    for (args, code, want) in [
        (
            vec!["--sim", "bench", "--no-warmup", "--cycles", "0"],
            2,
            "at least one cycle",
        ),
        (
            vec!["--sim", "bench", "--methods", "fl"],
            2,
            "known methods",
        ),
        (vec!["--sim", "bench", "c5:00.0", "--vm", "1;x"], 2, "VM id"),
        (
            vec!["--sim", "bench", "--out", used.to_str().unwrap()],
            3,
            "already holds a bench run",
        ),
        (vec!["bench", "report", "/nonexistent/run"], 5, "meta.json"),
    ] {
        let o = run_in(tmp.path(), &args, &[]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(code), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
    }
}

#[test]
fn twin_vm_cycles_record_the_hooks_phases_and_each_rows_verdict() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("r");
    let o = run_in(
        tmp.path(),
        &[
            "--sim",
            "bench",
            "--vm",
            "100",
            "--methods",
            "remove_rescan,smu_mode2",
            "--cycles",
            "2",
            "--release-ms",
            "40",
            "--out",
            out.to_str().unwrap(),
            "--json",
        ],
        &[],
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v = stdout_json(&o);
    assert_eq!(v["meta"]["mode"], "twin-vm");
    assert_eq!(v["meta"]["vmid"], "100");
    let notes = v["meta"]["notes"].to_string();
    assert!(notes.contains("unconfirmed on hardware"), "{notes}");
    let ts = trials(&out);
    // One warm-up per row (release, each method), then 2 cycles of the three.
    assert_eq!(ts.len(), 9);
    assert_eq!(ts.iter().filter(|t| t["warmup"] == true).count(), 3);
    for t in &ts {
        let vm = &t["vm"];
        match t["method"].as_str().unwrap() {
            "release, then stop" => {
                assert_eq!(t["success"], true, "{t}");
                let h = &t["hook"];
                // The guest's own 40 ms are inside pre-stop.
                assert!(h["release"].as_f64().unwrap() >= 40.0, "{h}");
                assert!(h["pre_stop"].as_f64().unwrap() >= h["release"].as_f64().unwrap());
                for p in ["post_start", "post_stop", "pre_start"] {
                    assert!(h[p].as_f64().unwrap() > 0.0, "{p}: {h}");
                }
                assert!(vm["stop"]["detail"]
                    .as_str()
                    .unwrap()
                    .starts_with("released by the guest in "));
            }
            "stop, then remove_rescan" => {
                assert_eq!(t["success"], false, "{t}");
                assert!(t["hook"].is_null());
                assert!(vm["stop"]["detail"]
                    .as_str()
                    .unwrap()
                    .contains("left dirty: 0000:c5:00.0"));
                assert_eq!(vm["guest"]["ok"], false);
                assert!(t["reason"].as_str().unwrap().starts_with("guest: "), "{t}");
            }
            "stop, then smu_mode2" => {
                assert_eq!(t["success"], true, "{t}");
                assert_eq!(vm["guest"]["ok"], true);
            }
            m => panic!("unexpected row {m}"),
        }
    }
    let report = fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("unconfirmed on hardware"), "{report}");
}
