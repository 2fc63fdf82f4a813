//! A bench a researcher can trust, on the twin: a seed gives one shuffled
//! order, warm-ups are apart, meta.json says where, when and how it ran,
//! the figures say they are the twin's, and `bench report A B` tests the
//! differences it shows.

mod common;
use common::*;

use std::fs;
use std::path::Path;

use serde_json::Value;

fn bench(dir: &Path, extra: &[&str]) -> std::process::Output {
    let mut a = vec![
        "--sim",
        "bench",
        "--cycles",
        "3",
        "--out",
        dir.to_str().unwrap(),
    ];
    a.extend_from_slice(extra);
    run(&a)
}

fn trials(dir: &Path) -> Vec<Value> {
    fs::read_to_string(dir.join("trials.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn order(dir: &Path) -> Vec<(bool, u64, String)> {
    trials(dir)
        .iter()
        .map(|t| {
            (
                t["warmup"].as_bool().unwrap(),
                t["cycle"].as_u64().unwrap(),
                t["method"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn one_seed_one_shuffled_order_with_warmups_apart_and_meta_that_says_how() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("c"),
    );
    let o = bench(&a, &["--seed", "7"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // The header (what will run, where the report goes) comes first.
    let err = String::from_utf8_lossy(&o.stderr);
    let first = err.lines().next().unwrap();
    assert!(
        first.starts_with("bench: 0000:c5:00.0") && first.contains("twin (simulated)"),
        "{err}"
    );
    assert!(
        err.contains("seed 7") && err.contains(&format!("report: {}", a.display())),
        "{err}"
    );
    assert_eq!(bench(&b, &["--seed", "7"]).status.code(), Some(0));
    assert_eq!(bench(&c, &[]).status.code(), Some(0));
    let (oa, ob, oc) = (order(&a), order(&b), order(&c));
    assert_eq!(oa, ob, "one seed, one order");
    assert_ne!(oa, oc, "seed 7 shuffles the given order");
    // One warm-up per method, first, then every method once per cycle.
    let methods: Vec<String> = oc.iter().filter(|t| t.0).map(|t| t.2.clone()).collect();
    assert!(methods.len() >= 2, "{oc:?}");
    assert!(oa[..methods.len()].iter().all(|t| t.0));
    assert!(oa[methods.len()..].iter().all(|t| !t.0));
    for cyc in 0..3 {
        let mut got: Vec<&String> = oa
            .iter()
            .filter(|t| !t.0 && t.1 == cyc)
            .map(|t| &t.2)
            .collect();
        got.sort();
        let mut want: Vec<&String> = methods.iter().collect();
        want.sort();
        assert_eq!(got, want, "cycle {cyc}");
    }
    // meta.json: seed, argv, kernel, ISO 8601 times, host, firmware.
    let meta: Value =
        serde_json::from_str(&fs::read_to_string(a.join("meta.json")).unwrap()).unwrap();
    assert_eq!(meta["seed"], 7);
    assert_eq!(meta["warmup"], true);
    let argv: Vec<&str> = meta["argv"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(argv.windows(2).any(|w| w == ["--seed", "7"]), "{argv:?}");
    assert!(!meta["kernel"].as_str().unwrap().is_empty());
    let iso = |s: &str| {
        s.len() == 24 && s.as_bytes()[4] == b'-' && s.as_bytes()[10] == b'T' && s.ends_with('Z')
    };
    assert!(iso(meta["started"].as_str().unwrap()), "{meta}");
    assert!(iso(meta["ended"].as_str().unwrap()), "{meta}");
    assert!(meta["started"].as_str() <= meta["ended"].as_str());
    assert_eq!(meta["host"], "twin");
    // The twin's DMI says it is no real BIOS.
    assert!(
        meta["firmware"]["bios"]
            .as_str()
            .unwrap()
            .contains("not a real BIOS"),
        "{meta}"
    );
    // Warm-ups are out of the statistics, and reported apart.
    let s: Value =
        serde_json::from_str(&fs::read_to_string(a.join("summary.json")).unwrap()).unwrap();
    assert_eq!(s["trials"].as_u64().unwrap() as usize, 3 * methods.len());
    assert_eq!(s["warmup"].as_array().unwrap().len(), methods.len());
    for m in s["methods"].as_array().unwrap() {
        assert_eq!(m["trials"], 3, "{m}");
        // n = 3 < 20: no p95.
        for p in m["phases"].as_array().unwrap() {
            assert!(p["dist"]["p95"].is_null(), "{p}");
        }
    }
    let md = fs::read_to_string(a.join("report.md")).unwrap();
    assert!(md.contains("Warm-up trials"), "{md}");
    // Figures: phases.svg exists; each says it is the twin's; latency.svg has a key.
    for f in ["latency.svg", "success.svg", "phases.svg"] {
        let svg = fs::read_to_string(a.join(f)).unwrap();
        let doc = roxmltree::Document::parse(&svg).unwrap();
        let text: String = doc
            .descendants()
            .filter(|n| n.is_text())
            .filter_map(|n| n.text())
            .collect::<Vec<_>>()
            .join(" ");
        assert!(text.contains("twin (simulated)"), "{f}: {text}");
        if f == "latency.svg" {
            for mark in [
                "quartiles",
                "whiskers",
                "median",
                "p95",
                "success",
                "failure",
            ] {
                assert!(text.contains(mark), "latency key lacks {mark}: {text}");
            }
        }
        if f == "phases.svg" {
            for p in ["probe", "save", "reset", "ready", "restore", "health"] {
                assert!(text.contains(p), "phases.svg lacks {p}");
            }
        }
    }
    // The comparison says which differences are significant.
    let cmp = tmp.path().join("cmp");
    let o = run(&[
        "bench",
        "report",
        a.to_str().unwrap(),
        c.to_str().unwrap(),
        "--out",
        cmp.to_str().unwrap(),
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("Fisher p") && text.contains("Mann–Whitney p"),
        "{text}"
    );
    let html = fs::read_to_string(cmp.join("compare.html")).unwrap();
    assert!(html.contains("Are the differences significant?"));
}

#[test]
fn warmups_can_be_left_out() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    assert_eq!(
        bench(&a, &["--no-warmup", "--methods", "remove_rescan"])
            .status
            .code(),
        Some(0)
    );
    let t = trials(&a);
    assert_eq!(t.len(), 3);
    assert!(t.iter().all(|t| t["warmup"] == false));
}
