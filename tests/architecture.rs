//! The structure docs/architecture.md describes, held against the source: each rule
//! below is one a change could silently break (a second address type, an `unsafe`
//! block in a third file, an upward import), so it is checked, not just written down.

use std::fs;
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every .rs file under `dir`, sorted, with its text.
fn sources(dir: &Path) -> Vec<(PathBuf, String)> {
    fn walk(d: &Path, out: &mut Vec<(PathBuf, String)>) {
        let mut es: Vec<_> = fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        es.sort();
        for p in es {
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|e| e == "rs") {
                let t = fs::read_to_string(&p).unwrap();
                out.push((p, t));
            }
        }
    }
    let mut out = vec![];
    walk(dir, &mut out);
    out
}

fn rel(p: &Path) -> String {
    p.strip_prefix(src()).unwrap().display().to_string()
}

/// The text before the file's `#[cfg(test)] mod …` (its code, not its unit tests; a
/// `#[cfg(test)]` item above it, such as a re-export for tests, is code).
fn code_part(text: &str) -> &str {
    text.find("\n#[cfg(test)]\nmod ")
        .map_or(text, |i| &text[..i])
}

/// Lines that are code (not `//` comments), so a comment that names a thing is no use of it.
fn code_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l))
        .filter(|(_, l)| !l.trim_start().starts_with("//"))
}

#[test]
fn one_pci_address_type() {
    let found: Vec<String> = sources(&src())
        .iter()
        .flat_map(|(p, t)| {
            code_lines(t)
                .filter(|(_, l)| {
                    [
                        "struct Bdf ",
                        "struct Bdf(",
                        "struct Bdf<",
                        "struct Slot ",
                        "struct Slot(",
                    ]
                    .iter()
                    .any(|k| l.contains(k))
                })
                .map(|(n, l)| format!("{}:{n}: {}", rel(p), l.trim()))
                .collect::<Vec<_>>()
        })
        .collect();
    let bdf: Vec<_> = found.iter().filter(|l| l.contains("struct Bdf")).collect();
    assert_eq!(bdf.len(), 1, "one struct Bdf (pci::Bdf): {found:#?}");
    assert!(bdf[0].starts_with("pci/"), "{bdf:?}");
    assert!(
        found.iter().all(|l| l.starts_with("pci/")),
        "address types live in pci/: {found:#?}"
    );
}

#[test]
fn unsafe_lives_in_two_files() {
    let allowed = ["pci/mmio.rs", "sys.rs"];
    let mut bad = vec![];
    for (p, t) in sources(&src()) {
        let r = rel(&p);
        for (n, l) in code_lines(&t) {
            let code = l.split("//").next().unwrap_or("");
            if (code.contains("unsafe ") || code.contains("unsafe{"))
                && !allowed.contains(&r.as_str())
            {
                bad.push(format!("{r}:{n}: {}", l.trim()));
            }
        }
    }
    assert!(bad.is_empty(), "unsafe outside {allowed:?}: {bad:#?}");
}

#[test]
fn the_lower_layers_never_import_the_upper() {
    // pci is the floor, amd sits on it; neither may reach up into reset (or above).
    let mut bad = vec![];
    for (p, t) in sources(&src()) {
        let r = rel(&p);
        if !(r.starts_with("pci/") || r.starts_with("amd/") || r == "machine.rs") {
            continue;
        }
        for (n, l) in code_lines(code_part(&t)) {
            for up in [
                "crate::reset",
                "crate::hook",
                "crate::bench",
                "crate::experiment",
                "crate::doctor",
                "crate::report",
            ] {
                if l.contains(up) {
                    bad.push(format!("{r}:{n}: {}", l.trim()));
                }
            }
            if (r.starts_with("pci/") || r == "machine.rs") && l.contains("crate::amd") {
                bad.push(format!("{r}:{n}: {}", l.trim()));
            }
            // The twin is built on these layers, not the other way round (their tests may use it).
            if (r.starts_with("amd/") || r.starts_with("pci/")) && l.contains("crate::sim") {
                bad.push(format!("{r}:{n}: {}", l.trim()));
            }
        }
    }
    assert!(bad.is_empty(), "upward imports: {bad:#?}");
}

#[test]
fn only_the_machine_names_the_machines_roots() {
    // A path literal that starts at one of these roots bypasses `Machine`: for a twin or a
    // snapshot it would read (or write) the machine's own files.
    let roots = [
        "\"/sys",
        "\"/dev",
        "\"/proc",
        "\"/run",
        "\"/etc",
        "\"/boot",
        "\"/var/run",
    ];
    let mut bad = vec![];
    let mut seen_machine = false;
    for (p, t) in sources(&src()) {
        let r = rel(&p);
        for (n, l) in code_lines(code_part(&t)) {
            let code = l.split("//").next().unwrap_or("");
            if roots.iter().any(|root| code.contains(root)) {
                if r == "machine.rs" {
                    seen_machine = true;
                } else {
                    bad.push(format!("{r}:{n}: {}", l.trim()));
                }
            }
        }
    }
    assert!(seen_machine, "machine.rs names the roots");
    assert!(bad.is_empty(), "roots named outside machine.rs: {bad:#?}");
}

#[test]
fn the_library_has_no_command_line() {
    let lib = fs::read_to_string(src().join("lib.rs")).unwrap();
    assert!(
        !code_lines(&lib).any(|(_, l)| l.contains("mod cli")),
        "src/lib.rs declares cli"
    );
    for (p, t) in sources(&src()) {
        let r = rel(&p);
        if r.starts_with("cli/") || r == "main.rs" {
            continue;
        }
        for (n, l) in code_lines(&t) {
            assert!(
                !(l.contains("clap::") || l.contains("indicatif::") || l.contains("crate::cli")),
                "{r}:{n}: the library uses the command line: {}",
                l.trim()
            );
        }
    }
}

#[test]
fn no_source_file_is_longer_than_900_lines_before_its_tests() {
    let long: Vec<String> = sources(&src())
        .iter()
        .filter_map(|(p, t)| {
            let n = code_part(t).lines().count();
            (n > 900).then(|| format!("{} ({n} lines)", rel(p)))
        })
        .collect();
    assert!(long.is_empty(), "split these along their jobs: {long:#?}");
}

#[test]
fn only_the_twin_writes_a_bar_without_the_journal() {
    // BarMap::device_write32 is the device's own write (the twin's model is the
    // hardware); a client of a device writes through the journal.
    let mut bad = vec![];
    for (p, t) in sources(&src()) {
        let r = rel(&p);
        if r.starts_with("sim/") || r == "pci/mmio.rs" {
            continue;
        }
        for (n, l) in code_lines(code_part(&t)) {
            if l.contains("device_write32") {
                bad.push(format!("{r}:{n}: {}", l.trim()));
            }
        }
    }
    assert!(bad.is_empty(), "{bad:#?}");
}

#[test]
fn assertions_say_which_error() {
    // `assert!(x.is_err())` passes for any error, the wrong one too: a test names the error
    // (its kind or message) or unwraps the value it expects.
    let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    // Spelt in pieces, so this test's own lines are not what it looks for.
    let assert = concat!("assert", "!(");
    let bare = [concat!(".is_", "err())"), concat!(".is_", "ok())")];
    let mut bad = vec![];
    for (p, t) in sources(&src()).into_iter().chain(sources(&tests)) {
        for (n, l) in code_lines(&t) {
            if l.contains(assert) && bare.iter().any(|b| l.contains(b)) {
                bad.push(format!("{}:{n}: {}", p.display(), l.trim()));
            }
        }
    }
    assert!(bad.is_empty(), "bare is_err()/is_ok() assertions: {bad:#?}");
}
