//! What a user installs: `--version` names the commit (build.rs), and `tools/package.sh`
//! builds a .deb whose unpacked contents are checked here (the binary static, stripped and
//! running, the man pages, completions, shim, copyright, changelog and tmpfiles entry).

mod common;
use common::*;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn git(args: &[&str]) -> Option<String> {
    let o = Command::new("git")
        .arg("-C")
        .arg(repo())
        .args(args)
        .output()
        .ok()?;
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

/// `resetlab 0.1.0 (commit 0123456789ab)`, `(commit …, dirty)` or `(unknown commit)`.
fn parse_version(line: &str) -> (String, String) {
    let rest = line
        .strip_prefix("resetlab ")
        .unwrap_or_else(|| panic!("{line:?}"));
    let (v, commit) = rest.split_once(" (").unwrap_or_else(|| panic!("{line:?}"));
    let commit = commit
        .strip_suffix(')')
        .unwrap_or_else(|| panic!("{line:?}"));
    (v.to_string(), commit.to_string())
}

#[test]
fn version_names_the_crate_version_and_the_commit_it_was_built_from() {
    let out = run_ok(&["--version"]);
    let (v, commit) = parse_version(out.trim());
    assert_eq!(v, env!("CARGO_PKG_VERSION"));
    match git(&["rev-parse", "--short=12", "HEAD"]) {
        // Not a checkout (a source tarball): the build says so.
        None => assert_eq!(commit, "unknown commit"),
        Some(head) => {
            // build.rs: dirty when a file the binary is built from differs (not docs, tests).
            let dirty = git(&[
                "status",
                "--porcelain",
                "--untracked-files=no",
                "--",
                "src",
                "regs",
                "tools/pve-hookscript.sh",
                "tools/shims",
                "Cargo.toml",
                "Cargo.lock",
                "build.rs",
            ])
            .is_some_and(|s| !s.is_empty());
            // The test binary is built from this very tree: same commit, same dirtiness.
            let want = if dirty {
                format!("commit {head}, dirty")
            } else {
                format!("commit {head}")
            };
            assert_eq!(commit, want);
        }
    }
    // Every subcommand says the same (clap names it `resetlab-hook`).
    let sub = run_ok(&["hook", "--version"]);
    assert_eq!(
        sub.trim().strip_prefix("resetlab-hook "),
        out.trim().strip_prefix("resetlab "),
        "{sub}"
    );
}

#[test]
fn generated_man_pages_and_completions_cover_every_visible_command() {
    let dir = tempfile::tempdir().unwrap();
    run_ok(&[
        "generate",
        "man",
        &dir.path().join("man").display().to_string(),
    ]);
    run_ok(&[
        "generate",
        "completions",
        &dir.path().join("c").display().to_string(),
    ]);
    let man = dir.path().join("man");
    for page in [
        "resetlab.8",
        "resetlab-doctor.8",
        "resetlab-hook-install.8",
        "resetlab-hook-uninstall.8",
    ] {
        let text = fs::read_to_string(man.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        let name = page.trim_end_matches(".8");
        assert!(
            text.contains(&format!(".TH {name} 8 ")),
            "{page}: {}",
            &text[..200.min(text.len())]
        );
    }
    let install = fs::read_to_string(man.join("resetlab-hook-install.8")).unwrap();
    assert!(install.contains("chain"), "{install}");
    assert!(!man.join("resetlab-generate.8").exists());
    let c = dir.path().join("c");
    assert!(fs::read_to_string(c.join("resetlab.bash"))
        .unwrap()
        .contains("complete"));
    assert!(fs::read_to_string(c.join("_resetlab"))
        .unwrap()
        .starts_with("#compdef resetlab"));
    assert!(fs::read_to_string(c.join("resetlab.fish"))
        .unwrap()
        .contains("complete -c resetlab"));
}

/// The 64-bit ELF program header types of `bytes` (`PT_INTERP` = 3 names a dynamic loader).
fn program_header_types(bytes: &[u8]) -> Vec<u32> {
    assert_eq!(&bytes[..4], b"\x7fELF", "not an ELF file");
    assert_eq!(bytes[4], 2, "not ELFCLASS64");
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as usize;
    let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap()) as usize;
    let (phoff, phentsize, phnum) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
    (0..phnum).map(|i| u32_at(phoff + i * phentsize)).collect()
}

fn has(dir: &Path, rel: &str) -> bool {
    fs::metadata(dir.join(rel)).is_ok_and(|m| m.is_file() && m.len() > 0)
}

/// The whole package, built as a user or CI would (one release build, minutes): runs
/// `tools/package.sh --check` and looks at what it unpacked with `dpkg-deb -x`.
#[test]
fn package_sh_builds_a_deb_with_a_static_binary_man_pages_completions_shim_and_copyright() {
    let o = Command::new(repo().join("tools/package.sh"))
        .arg("--check")
        .env_remove("RESETLAB_SYSFS")
        .output()
        .expect("run tools/package.sh");
    assert!(
        o.status.success(),
        "tools/package.sh --check failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let version = env!("CARGO_PKG_VERSION");
    let deb = repo().join(format!("target/debian/resetlab_{version}_amd64.deb"));
    assert!(deb.is_file(), "no {}", deb.display());
    let root = repo().join("target/debian/check");

    let bin = root.join("usr/sbin/resetlab");
    let bytes = fs::read(&bin).unwrap();
    let types = program_header_types(&bytes);
    assert!(!types.contains(&3), "PT_INTERP in {types:?}: not static");
    assert!(
        bytes.len() <= 15 * 1024 * 1024,
        "{} bytes > 15 MB",
        bytes.len()
    );
    let v = Command::new(&bin).arg("--version").output().unwrap();
    let (said, _) = parse_version(String::from_utf8_lossy(&v.stdout).trim());
    let control = Command::new("dpkg-deb")
        .args(["-f"])
        .arg(&deb)
        .args(["Version", "Section", "Depends"])
        .output()
        .unwrap();
    let control = String::from_utf8_lossy(&control.stdout).into_owned();
    assert!(control.contains(&format!("Version: {said}\n")), "{control}");
    assert!(control.contains("Section: admin"), "{control}");
    assert!(!control.contains("Depends:"), "{control}");
    let list = Command::new(&bin)
        .args(["--sim", "list"])
        .env_remove("RESETLAB_SYSFS")
        .output()
        .unwrap();
    assert!(list.status.success());
    assert!(String::from_utf8_lossy(&list.stdout).contains("1002:1900"));

    for rel in [
        "usr/share/man/man8/resetlab.8.gz",
        "usr/share/man/man8/resetlab-hook-install.8.gz",
        "usr/share/man/man8/resetlab-hook-uninstall.8.gz",
        "usr/share/bash-completion/completions/resetlab",
        "usr/share/zsh/vendor-completions/_resetlab",
        "usr/share/fish/vendor_completions.d/resetlab.fish",
        "usr/share/resetlab/pve-hookscript.sh",
        "usr/share/doc/resetlab/copyright",
        "usr/share/doc/resetlab/changelog.Debian.gz",
        "usr/share/doc/resetlab/regs/phoenix.toml.gz",
        "usr/lib/tmpfiles.d/resetlab.conf",
    ] {
        assert!(has(&root, rel), "the package has no {rel}");
    }
    assert_eq!(
        fs::read(root.join("usr/share/resetlab/pve-hookscript.sh")).unwrap(),
        fs::read(repo().join("tools/pve-hookscript.sh")).unwrap()
    );
    let copyright = fs::read_to_string(root.join("usr/share/doc/resetlab/copyright")).unwrap();
    assert!(copyright.starts_with(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n"
    ));
    assert!(copyright.contains("License: MIT or Apache-2.0"));
    // Both licence texts in full, as DEP-5 text blocks.
    assert!(copyright.contains(" Permission is hereby granted, free of charge"));
    assert!(copyright.contains(" TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION"));
    assert!(copyright.contains(" END OF TERMS AND CONDITIONS"));
    let tmpfiles = fs::read_to_string(root.join("usr/lib/tmpfiles.d/resetlab.conf")).unwrap();
    assert!(tmpfiles.contains("d /run/resetlab      0700 root root -"));
    assert!(tmpfiles.contains("d /run/resetlab/lock 0700 root root -"));
}
