//! lspci's conventions on the twin: the one-line `list`, `-s`/`-d` read as
//! pciutils' lib/filter.c reads them, one selector spelling for every
//! command that takes a device, and where names come from.

mod common;
use common::*;

fn lines(out: &str) -> Vec<&str> {
    out.lines().collect()
}

#[test]
fn list_fits_a_hundred_columns_in_at_most_a_hundred_lines() {
    for width in ["80", "100"] {
        let out = run_ok(&["--sim", "list", "--width", width]);
        let l = lines(&out);
        assert!(l.len() <= 100, "{} lines at width {width}", l.len());
        let w: usize = width.parse().unwrap();
        for line in &l {
            assert!(line.chars().count() <= w, "wider than {w}: {line}");
        }
        // One line per function at least: every BDF of the twin is there.
        assert!(out.contains("c5:00.0 1002:1900"), "{out}");
    }
    // Not a terminal: 80 columns.
    let out = run_ok(&["--sim", "list"]);
    assert!(out.lines().all(|l| l.chars().count() <= 80), "{out}");
}

#[test]
fn the_compact_verdict_names_what_resets_and_what_blocks() {
    let out = run_ok(&["--sim", "list", "-s", "c5:00.0", "--width", "200"]);
    let l = lines(&out);
    assert_eq!(l.len(), 2, "{out}");
    assert!(l[1].starts_with("c5:00.0 1002:1900  18 vfio-pci"), "{out}");
    assert!(
        l[1].contains(
            "reset: remove_rescan smu_mode2 · pm✗(kernel quirk) · bus✗(ccp, xhci_hcd on 2)"
        ),
        "{out}"
    );
    // Narrow: the name is cut, the verdict is whole (wrapped between parts).
    let out = run_ok(&["--sim", "list", "-s", "c5:00.0", "--width", "60"]);
    let joined = out.replace("\n        · ", " · ");
    assert!(joined.contains("bus✗(ccp, xhci_hcd on 2)"), "{out}");
}

#[test]
fn verbose_list_keeps_the_full_detail() {
    let out = run_ok(&["--sim", "list", "-v", "-s", "c5:00.0"]);
    assert!(out.contains("IOMMU group 18"), "{out}");
    assert!(out.contains("quirk_no_pm_reset"), "{out}");
    assert!(!out.contains("registers:"), "{out}");
    let out = run_ok(&["--sim", "list", "-vv", "-s", "c5:00.0"]);
    assert!(out.contains("registers: DEVCAP@"), "{out}");
}

#[test]
fn class_selectors_are_sixteen_bits_as_lspci() {
    let out = run_ok(&["--sim", "list", "-d", "::0300"]);
    let devs: Vec<&str> = out
        .lines()
        .skip(1)
        .filter(|l| !l.starts_with(' '))
        .collect();
    assert_eq!(devs.len(), 1, "{out}");
    assert!(devs[0].starts_with("c5:00.0 "), "{out}");
    // `03` is class 0x0003: nothing, and nothing printed (lspci prints nothing).
    assert_eq!(run_ok(&["--sim", "list", "-d", "::03"]), "");
    let j = json(&["--sim", "list", "--json", "-d", "::03xx"]);
    let bdfs: Vec<&str> = devices(&j)
        .iter()
        .map(|d| d["bdf"].as_str().unwrap())
        .collect();
    assert_eq!(bdfs, ["0000:c5:00.0"]);
    let j = json(&["--sim", "list", "--json", "-d", "1022::0c03:30"]);
    assert_eq!(devices(&j).len(), 4, "{j}");
    let j = json(&["--sim", "list", "--json", "-s", "c5:.1"]);
    let bdfs: Vec<&str> = devices(&j)
        .iter()
        .map(|d| d["bdf"].as_str().unwrap())
        .collect();
    assert_eq!(bdfs, ["0000:c5:00.1"]);
}

#[test]
fn bad_selectors_say_what_filter_c_says() {
    for (args, want) in [
        (vec!["-d", "1002"], "at least two fields"),
        (vec!["-d", "::10000"], "invalid class code"),
        (vec!["-d", "1002x:1"], "invalid vendor ID"),
        (vec!["-s", "c5"], "invalid slot number"),
        (vec!["-s", "0:0:0:0"], "too many fields"),
    ] {
        let mut a = vec!["--sim", "list"];
        a.extend(args.iter().copied());
        let o = run(&a);
        assert_eq!(o.status.code(), Some(2), "{a:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(want), "{a:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
}

#[test]
fn every_device_command_takes_dev_s_or_d_and_names_the_matches() {
    // One device: probe and smu accept a BDF, -s and -d alike.
    for sel in [
        vec!["c5:00.0"],
        vec!["-s", "c5:00.0"],
        vec!["-d", "1002:1900"],
        vec!["-d", "::0300"],
    ] {
        let mut a = vec!["--sim", "--json", "probe"];
        a.extend(sel.iter().copied());
        let j = json(&a);
        assert_eq!(j["bdf"], "0000:c5:00.0", "{a:?}");
        let mut a = vec!["--sim", "--json", "smu"];
        a.extend(sel.iter().copied());
        a.extend(["test", "--dry-run"]);
        let o = run(&a);
        let out = String::from_utf8_lossy(&o.stdout);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !err.contains("invalid") && !err.contains("name a device"),
            "{a:?}: {err}"
        );
        assert!(
            out.contains("0000:c5:00.0") || err.contains("c5:00.0"),
            "{a:?}: {out}{err}"
        );
    }
    // Several: the error names each match.
    let o = run(&["--sim", "probe", "-d", "1002:"]);
    assert_ne!(o.status.code(), Some(0));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("0000:c5:00.0") && err.contains("0000:c5:00.1"),
        "{err}"
    );
    let o = run(&["--sim", "smu", "-d", "1002:", "test"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("0000:c5:00.0") && err.contains("0000:c5:00.1"),
        "{err}"
    );
    // None: named as not found.
    let o = run(&["--sim", "probe", "-d", "::03"]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
}

#[test]
fn names_come_from_the_system_pci_ids_when_there_is_one() {
    let dir = tempfile::tempdir().unwrap();
    let ids = dir.path().join("pci.ids");
    std::fs::write(
        &ids,
        "#\tVersion: 2099.01.01\n1002  Test Vendor [TV]\n\t1900  Test iGPU\nC 03  Display controller\n\t00  VGA compatible controller\n",
    )
    .unwrap();
    let o = bin()
        .args(["--sim", "list", "-s", "c5:00.0", "--width", "200"])
        .env("RESETLAB_PCI_IDS", &ids)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("TV Test iGPU"), "{out}");
    let o = bin()
        .args(["--version", "-v"])
        .env("RESETLAB_PCI_IDS", &ids)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains(&ids.display().to_string()) && out.contains("2099.01.01"),
        "{out}"
    );
    let o = bin()
        .args(["--version", "-v"])
        .env("RESETLAB_PCI_IDS", "embedded")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).contains("embedded"));
}

#[test]
fn a_header_only_config_read_is_unknown_not_no() {
    // Without root, sysfs config gives 64 bytes: the capability list is out of reach.
    let t = twin();
    let cfg = t.sysfs.join("bus/pci/devices/0000:c5:00.0/config");
    let bytes = std::fs::read(&cfg).unwrap();
    std::fs::write(&cfg, &bytes[..64]).unwrap();
    let sys = sysfs_arg(&t.sysfs);
    let j = json(&["--sysfs", &sys, "list", "--json", "-s", "c5:00.0"]);
    let flr = &devices(&j)[0]["methods"]["flr"];
    assert_eq!(flr["code"], "config_needs_root", "{flr}");
    assert_eq!(flr["unknown"], true);
    let out = run_ok(&["--sysfs", &sys, "list", "-s", "c5:00.0", "--width", "200"]);
    assert!(out.contains("unknown (config needs root)"), "{out}");
    let out = run_ok(&["--sysfs", &sys, "list", "-v", "-s", "c5:00.0"]);
    assert!(out.contains("flr            ?"), "{out}");
}
