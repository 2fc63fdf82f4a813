//! `--json` as a contract: the schemas under docs/schema/ are the ones the
//! Rust types generate today (`RESETLAB_BLESS=1 cargo test --test
//! json_schema` rewrites them), and real outputs on the twin validate
//! against them.
//!
//! The validator is small on purpose: it covers what schemars emits (type,
//! properties, required, additionalProperties, items, enum, const, $ref to
//! $defs, anyOf/oneOf/allOf, minimum/maximum), which is all the contract uses;
//! the `jsonschema` crate would add ~60 crates to the build for it.

mod common;
use common::*;

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

fn schema_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/schema")
}

fn schema(name: &str) -> Value {
    let p = schema_dir().join(format!("{name}.json"));
    serde_json::from_str(&fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p:?}: {e}"))).unwrap()
}

fn type_ok(t: &str, v: &Value) -> bool {
    match t {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "number" => v.is_number(),
        "integer" => v.is_i64() || v.is_u64(),
        other => panic!("schema type {other} not handled"),
    }
}

/// Errors of `v` against `s`, with JSON-pointer-like paths.
fn check(root: &Value, s: &Value, v: &Value, path: &str, errs: &mut Vec<String>) {
    let s = match s {
        Value::Bool(true) => return,
        Value::Bool(false) => {
            errs.push(format!("{path}: no value allowed"));
            return;
        }
        s => s,
    };
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        let name = r
            .strip_prefix("#/$defs/")
            .unwrap_or_else(|| panic!("ref {r} not handled"));
        check(root, &root["$defs"][name], v, path, errs);
    }
    match s.get("type") {
        Some(Value::String(t)) if !type_ok(t, v) => {
            errs.push(format!("{path}: want {t}, got {v}"));
            return;
        }
        Some(Value::Array(ts)) if !ts.iter().any(|t| type_ok(t.as_str().unwrap(), v)) => {
            errs.push(format!("{path}: want one of {ts:?}, got {v}"));
            return;
        }
        _ => {}
    }
    if let Some(c) = s.get("const") {
        if c != v {
            errs.push(format!("{path}: want {c}, got {v}"));
        }
    }
    if let Some(Value::Array(e)) = s.get("enum") {
        if !e.contains(v) {
            errs.push(format!("{path}: {v} not in {e:?}"));
        }
    }
    if let (Some(min), Some(x)) = (s.get("minimum").and_then(Value::as_f64), v.as_f64()) {
        if x < min {
            errs.push(format!("{path}: {x} < minimum {min}"));
        }
    }
    if let (Some(max), Some(x)) = (s.get("maximum").and_then(Value::as_f64), v.as_f64()) {
        if x > max {
            errs.push(format!("{path}: {x} > maximum {max}"));
        }
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        let Some(Value::Array(subs)) = s.get(key) else {
            continue;
        };
        let results: Vec<Vec<String>> = subs
            .iter()
            .map(|sub| {
                let mut e = vec![];
                check(root, sub, v, path, &mut e);
                e
            })
            .collect();
        let ok = results.iter().filter(|e| e.is_empty()).count();
        match key {
            "allOf" => errs.extend(results.into_iter().flatten()),
            "anyOf" if ok == 0 => errs.push(format!(
                "{path}: matches none of anyOf: {:?}",
                results
                    .iter()
                    .map(|e| e.first().cloned())
                    .collect::<Vec<_>>()
            )),
            "oneOf" if ok != 1 => errs.push(format!(
                "{path}: matches {ok} of oneOf, want 1: {:?}",
                results
                    .iter()
                    .map(|e| e.first().cloned())
                    .collect::<Vec<_>>()
            )),
            _ => {}
        }
    }
    if let Value::Object(o) = v {
        let props = s.get("properties").and_then(Value::as_object);
        if let Some(Value::Array(req)) = s.get("required") {
            for r in req {
                if !o.contains_key(r.as_str().unwrap()) {
                    errs.push(format!("{path}: missing required {r}"));
                }
            }
        }
        for (k, x) in o {
            let p = format!("{path}/{k}");
            match props.and_then(|p| p.get(k)) {
                Some(ps) => check(root, ps, x, &p, errs),
                None => {
                    if let Some(ap) = s.get("additionalProperties") {
                        check(root, ap, x, &p, errs);
                    }
                }
            }
        }
    }
    if let (Value::Array(a), Some(items)) = (v, s.get("items")) {
        for (i, x) in a.iter().enumerate() {
            check(root, items, x, &format!("{path}/{i}"), errs);
        }
    }
}

fn validate(name: &str, v: &Value) {
    let s = schema(name);
    let mut errs = vec![];
    check(&s, &s, v, "", &mut errs);
    assert!(
        errs.is_empty(),
        "{name}: output does not validate:\n{}\n{v}",
        errs.join("\n")
    );
    assert_eq!(v["schema_version"], 1, "{name}");
}

#[test]
fn the_checked_in_schemas_are_current() {
    let dir = schema_dir();
    let bless = std::env::var_os("RESETLAB_BLESS").is_some();
    // The binary's own list (`resetlab schema`) and each schema it prints.
    let list = run(&["schema"]);
    assert_eq!(list.status.code(), Some(0));
    let all: Vec<(String, String)> = String::from_utf8(list.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let name = l.split_whitespace().next().unwrap().to_string();
            let o = run(&["schema", &name]);
            assert_eq!(o.status.code(), Some(0), "{name}");
            (name, String::from_utf8(o.stdout).unwrap())
        })
        .collect();
    assert!(all.len() > 20, "{all:?}");
    let mut stale = vec![];
    for (name, want) in &all {
        let p = dir.join(format!("{name}.json"));
        if fs::read_to_string(&p).ok().as_deref() != Some(want.as_str()) {
            if bless {
                fs::create_dir_all(&dir).unwrap();
                fs::write(&p, want).unwrap();
            } else {
                stale.push(name.to_string());
            }
        }
    }
    // No schema is left for an output that is gone.
    for e in fs::read_dir(&dir).unwrap() {
        let f = e.unwrap().file_name().to_string_lossy().into_owned();
        if let Some(stem) = f.strip_suffix(".json") {
            assert!(all.iter().any(|(n, _)| n == stem), "stray {f}");
        }
    }
    assert!(
        stale.is_empty(),
        "docs/schema/ is stale for {stale:?}: run RESETLAB_BLESS=1 cargo test --test json_schema"
    );
    // docs/json.md names every one.
    let doc =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/json.md")).unwrap();
    for (name, _) in &all {
        assert!(
            doc.contains(&format!("schema/{name}.json")),
            "docs/json.md lacks {name}"
        );
    }
}

fn stdout_json(args: &[&str]) -> Value {
    let o = run(args);
    assert_ne!(o.status.code(), Some(101), "{args:?} panicked");
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "{args:?}: no JSON on stdout ({e}): {}",
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

#[test]
fn device_outputs_validate() {
    validate("list", &json(&["--sim", "list", "--json"]));
    let p = json(&["--sim", "probe", "c5:00.0", "--json"]);
    validate("probe", &p);
    // Numbers are numbers.
    assert!(p["config"]["capabilities"][0]["offset"].is_u64(), "{p}");
    assert!(p["methods"]["flr"]["registers"][0]["value"].is_u64(), "{p}");
    assert_eq!(p["methods"]["flr"]["code"], "no_flr_cap");
    assert_eq!(p["methods"]["bus"]["code"], "siblings_live_driver");
    validate(
        "reset",
        &stdout_json(&["--sim", "reset", "c5:00.0", "--dry-run", "--json"]),
    );
    validate(
        "smu",
        &stdout_json(&["--sim", "smu", "c5:00.0", "test", "--dry-run", "--json"]),
    );
    validate("regs-list", &json(&["regs", "list", "--json"]));
    validate("regs-show", &json(&["regs", "show", "phoenix", "--json"]));
}

#[test]
fn host_outputs_validate() {
    validate("doctor", &stdout_json(&["--sim", "doctor", "--json"]));
    let tmp = tempfile::tempdir().unwrap();
    let snap = tmp.path().join("s.tar");
    validate(
        "snapshot",
        &json(&["--sim", "snapshot", snap.to_str().unwrap(), "--json"]),
    );
    let out = tmp.path().join("rom");
    fs::create_dir_all(&out).unwrap();
    let d = stdout_json(&[
        "--sim",
        "vbios",
        "dump",
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    validate("vbios-dump", &d);
    let rom = fs::read_dir(&out).unwrap().next().unwrap().unwrap().path();
    let bd = tmp.path().join("bench");
    let b = stdout_json(&[
        "--sim",
        "bench",
        "--cycles",
        "1",
        "--methods",
        "remove_rescan",
        "--out",
        bd.to_str().unwrap(),
        "--json",
    ]);
    validate("bench", &b);
    validate(
        "bench-report",
        &json(&["bench", "report", bd.to_str().unwrap(), "--json"]),
    );
    validate(
        "bench-compare",
        &json(&[
            "bench",
            "report",
            bd.to_str().unwrap(),
            bd.to_str().unwrap(),
            "--json",
        ]),
    );
    validate(
        "vbios-check",
        &stdout_json(&["vbios", "check", rom.to_str().unwrap(), "--json"]),
    );
}

#[test]
fn hook_outputs_validate() {
    let twin = resetlab::sim::Twin::running(resetlab::sim::profile::Profile::default()).unwrap();
    let root = twin.root().to_path_buf();
    let pve = root.join("etc/pve");
    fs::create_dir_all(pve.join("qemu-server")).unwrap();
    fs::write(
        pve.join("qemu-server/100.conf"),
        "hostpci0: 0000:c5:00.0,pcie=1,x-vga=1\nhostpci1: 0000:c5:00.1,pcie=1\nmemory: 8192\n",
    )
    .unwrap();
    fs::write(root.join("dev/kmsg"), "").unwrap();
    // A policy given with --policy must exist (the defaults then apply).
    let policy = root.join("etc/resetlab/hook.toml");
    fs::create_dir_all(policy.parent().unwrap()).unwrap();
    fs::write(&policy, "").unwrap();
    let sys = sysfs_arg(&twin.sysfs);
    let hook = |extra: &[&str]| {
        let mut a: Vec<String> = vec![
            "--sysfs".into(),
            sys.clone(),
            "--json".into(),
            "hook".into(),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        a.extend([
            "--pve-config".into(),
            pve.display().to_string(),
            "--policy".into(),
            policy.display().to_string(),
        ]);
        let r: Vec<&str> = a.iter().map(String::as_str).collect();
        stdout_json(&r)
    };
    validate("hook-status", &hook(&["status", "100"]));
    validate("hook-phase", &hook(&["100", "post-stop"]));
    // Without a qm to run, install writes the shim and record and prints the command;
    // uninstall then has only the record to forget.
    validate("hook-install", &hook(&["install", "100"]));
    validate("hook-uninstall", &hook(&["uninstall", "100"]));
    // The twin's fake QEMU: started, then its state.
    let dir = root.display().to_string();
    validate(
        "sim-vm",
        &stdout_json(&["--json", "sim", "vm", &dir, "100", "start"]),
    );
    validate(
        "sim-vm",
        &stdout_json(&["--json", "sim", "vm", &dir, "100", "kill"]),
    );
    let r = root.join("report.tar");
    validate(
        "report",
        &stdout_json(&[
            "--sysfs",
            &sys,
            "--json",
            "report",
            "--out",
            r.to_str().unwrap(),
        ]),
    );
}

#[test]
fn errors_are_json_objects_on_stdout_too() {
    let o = run(&["--sim", "probe", "zz", "--json"]);
    assert_eq!(o.status.code(), Some(2));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    validate("error", &v);
    assert_eq!(v["kind"], "parse");
    assert_eq!(v["exit"], 2);
    assert!(String::from_utf8_lossy(&o.stderr).contains("invalid PCI address"));
    // A usage error (clap's) too, and it keeps clap's suggestion.
    let o = run(&["--sim", "lsit", "--json"]);
    assert_eq!(o.status.code(), Some(2));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    validate("error", &v);
    assert_eq!(v["kind"], "usage");
    let o = run(&["--sim", "probe", "-d", "1002:", "--json"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    validate("error", &v);
    assert_eq!(v["kind"], "ambiguous");
}
