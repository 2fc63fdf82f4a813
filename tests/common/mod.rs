//! Helpers shared by the integration tests: run the built binary, parse JSON.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_resetlab"))
}

pub fn run(args: &[&str]) -> Output {
    bin()
        .args(args)
        .env_remove("RESETLAB_SYSFS")
        .output()
        .expect("run resetlab")
}

pub fn run_ok(args: &[&str]) -> String {
    let o = run(args);
    assert!(
        o.status.success(),
        "resetlab {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8(o.stdout).expect("utf-8 stdout")
}

pub fn json(args: &[&str]) -> serde_json::Value {
    let out = run_ok(args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("bad JSON from {args:?}: {e}\n{out}"))
}

/// A fresh twin tree for a test (kept until the returned guard drops).
pub fn twin() -> resetlab::sim::Twin {
    resetlab::sim::Twin::new().expect("build twin")
}

pub fn sysfs_arg(p: &Path) -> String {
    p.display().to_string()
}

/// The devices of `list --json` (an object with `devices`, or a bare array).
pub fn devices(list: &serde_json::Value) -> &Vec<serde_json::Value> {
    list.get("devices")
        .unwrap_or(list)
        .as_array()
        .expect("devices array")
}

pub fn device<'a>(list: &'a serde_json::Value, bdf: &str) -> &'a serde_json::Value {
    devices(list)
        .iter()
        .find(|d| d["bdf"] == bdf)
        .unwrap_or_else(|| panic!("{bdf} not in list"))
}
