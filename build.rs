//! Records the git commit the binary is built from, for `resetlab --version`:
//! `RESETLAB_GIT_COMMIT` is `commit <hash>`, `commit <hash>, dirty` (a file the binary is
//! built from, [`INPUTS`], differs from the commit) or `unknown commit` (no git, or not a
//! checkout: a source tarball).
//! `RESETLAB_GIT_DATE` is the commit's date (YYYY-MM-DD, empty when unknown), the man pages'.
//! No crate needed: `git` itself, when it is there.

use std::path::{Path, PathBuf};
use std::process::Command;

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// What the binary is built from (the shim and the regs files are embedded): a change to
/// one of these makes the build dirty; docs and tests do not.
const INPUTS: &[&str] = &[
    "src",
    "regs",
    "tools/pve-hookscript.sh",
    "tools/shims",
    "Cargo.toml",
    "Cargo.lock",
    "build.rs",
];

fn main() {
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=RESETLAB_GIT_COMMIT");
    // A tarball build may say where it came from (tools/package.sh does not need to).
    if let Ok(given) = std::env::var("RESETLAB_GIT_COMMIT") {
        println!("cargo:rustc-env=RESETLAB_GIT_COMMIT={given}");
        println!("cargo:rustc-env=RESETLAB_GIT_DATE=");
        return;
    }
    let top = git(&dir, &["rev-parse", "--show-toplevel"]).map(PathBuf::from);
    // Only our own checkout: a crate unpacked inside some other repository is not its commit.
    let ours = top.is_some_and(|t| t.canonicalize().ok() == dir.canonicalize().ok());
    let hash = ours
        .then(|| git(&dir, &["rev-parse", "--short=12", "HEAD"]))
        .flatten();
    let (commit, date) = match hash {
        None => ("unknown commit".to_string(), String::new()),
        Some(h) => {
            // Re-run when an input changes (it may make the build dirty or clean again; cargo
            // scans a directory's files), and when the commit or the index moves.
            for p in INPUTS.iter().filter(|p| dir.join(p).exists()) {
                println!("cargo:rerun-if-changed={p}");
            }
            let mut watch = vec!["HEAD".to_string(), "index".into(), "packed-refs".into()];
            watch.extend(git(&dir, &["symbolic-ref", "-q", "HEAD"]));
            for rel in &watch {
                // A file that does not exist would make cargo re-run this on every build.
                if let Some(p) = git(&dir, &["rev-parse", "--git-path", rel]) {
                    let p = dir.join(p);
                    if p.exists() {
                        println!("cargo:rerun-if-changed={}", p.display());
                    }
                }
            }
            let mut status = vec!["status", "--porcelain", "--untracked-files=no", "--"];
            status.extend(INPUTS);
            let dirty = git(&dir, &status).is_some_and(|s| !s.is_empty());
            let date = git(&dir, &["log", "-1", "--format=%cs", "HEAD"]).unwrap_or_default();
            let commit = if dirty {
                format!("commit {h}, dirty")
            } else {
                format!("commit {h}")
            };
            (commit, date)
        }
    };
    println!("cargo:rustc-env=RESETLAB_GIT_COMMIT={commit}");
    println!("cargo:rustc-env=RESETLAB_GIT_DATE={date}");
}
