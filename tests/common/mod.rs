//! Helpers shared by the integration tests: run the built binary, parse JSON.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

/// The safety net: the binary runs in a private mount namespace with an
/// empty tmpfs over `/sys`, so no bug can reach the machine's real sysfs
/// (twin trees live in temp dirs and are unaffected). Where `unshare -m` is
/// not available (not root, no user namespaces) it runs unwrapped, once
/// saying so on stderr. `RESETLAB_TEST_NO_SANDBOX=1` turns it off.
pub fn bin() -> Command {
    let exe = env!("CARGO_BIN_EXE_resetlab");
    if !sandbox_works() {
        return Command::new(exe);
    }
    let mut c = Command::new("unshare");
    c.args([
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        "mount -t tmpfs -o ro,size=4k resetlab-test-nosys /sys && exec \"$@\"",
        "sh",
        exe,
    ]);
    c
}

/// Whether `unshare` can give a child its own empty `/sys` here (probed once).
pub fn sandbox_works() -> bool {
    static WORKS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *WORKS.get_or_init(|| {
        if std::env::var_os("RESETLAB_TEST_NO_SANDBOX").is_some() {
            return false;
        }
        let ok = Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                "mount -t tmpfs -o ro,size=4k resetlab-test-nosys /sys && [ -z \"$(ls -A /sys)\" ]",
            ])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            eprintln!(
                "note: unshare -m unavailable: tests run the binary without the empty-/sys sandbox"
            );
        }
        ok
    })
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
