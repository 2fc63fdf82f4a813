//! The twin (the seed's UM880 Pro host): `list`, `probe`, `snapshot` and bad input.

mod common;
use common::*;

#[test]
fn igpu_verdicts_match_the_seed_host() {
    let list = json(&["--sim", "list", "--json"]);
    let g = device(&list, "0000:c5:00.0");
    assert_eq!(g["vendor"], "1002");
    assert_eq!(g["device"], "1900");
    assert_eq!(g["class"], "030000");
    assert_eq!(g["driver"], "vfio-pci");
    assert_eq!(g["iommu_group"], 18);
    assert_eq!(g["kernel_reset_methods"], serde_json::json!([]));
    let m = &g["methods"];
    for name in ["flr", "af_flr", "pm", "d3cold"] {
        assert_eq!(m[name]["available"], false, "{name}: {}", m[name]);
        assert!(
            !m[name]["reason"].as_str().unwrap().is_empty(),
            "{name} has no reason"
        );
    }
    assert!(m["flr"]["reason"].as_str().unwrap().contains("FLR"));
    assert!(m["pm"]["reason"]
        .as_str()
        .unwrap()
        .contains("quirk_no_pm_reset"));
    assert!(m["d3cold"]["reason"].as_str().unwrap().contains("_PR3"));
    let bus = &m["bus"];
    assert_eq!(bus["available"], false);
    let affects: Vec<&str> = bus["affects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        affects,
        [
            "0000:c5:00.1",
            "0000:c5:00.2",
            "0000:c5:00.3",
            "0000:c5:00.4",
            "0000:c5:00.5",
            "0000:c5:00.6"
        ]
    );
    let reason = bus["reason"].as_str().unwrap();
    assert!(
        reason.contains("0000:c5:00.3 (xhci_hcd)") && reason.contains("0000:c5:00.4 (xhci_hcd)"),
        "{reason}"
    );
    assert_eq!(m["remove_rescan"]["available"], true);
}

#[test]
fn every_device_has_every_method_and_groups_are_sorted() {
    let list = json(&["--sim", "list", "--json"]);
    let arr = devices(&list);
    assert_eq!(arr.len(), 44);
    let mut last = -1i64;
    for d in arr {
        for name in ["flr", "af_flr", "pm", "bus", "d3cold", "remove_rescan"] {
            let v = &d["methods"][name];
            assert!(
                v["available"].is_boolean() && v["reason"].is_string() && v["affects"].is_array(),
                "{}: {name}",
                d["bdf"]
            );
        }
        assert_eq!(d["vendor"].as_str().unwrap().len(), 4);
        assert_eq!(d["class"].as_str().unwrap().len(), 6);
        if let Some(g) = d["iommu_group"].as_i64() {
            assert!(g >= last, "not grouped: {} after {last}", g);
            last = g;
        }
    }
    // The NVMe SSD behind its own root port has FLR and a bus reset that hits nothing else.
    let nvme = device(&list, "0000:01:00.0");
    assert_eq!(nvme["methods"]["flr"]["available"], true);
    assert_eq!(nvme["methods"]["bus"]["available"], true);
    assert_eq!(nvme["methods"]["bus"]["affects"], serde_json::json!([]));
    assert_eq!(
        nvme["kernel_reset_methods"],
        serde_json::json!(["flr", "bus"])
    );
    // Root-bus devices cannot have a secondary bus reset.
    let smbus = device(&list, "0000:00:14.0");
    assert!(smbus["methods"]["bus"]["reason"]
        .as_str()
        .unwrap()
        .contains("root bus"));
}

#[test]
fn multifunction_bus_method_is_explained() {
    // c6:00.0 is function 0 of a multi-function device whose kernel list is 'bus'.
    let list = json(&["--sim", "list", "--json", "-s", "c6:00.0"]);
    let d = device(&list, "0000:c6:00.0");
    let note = d["kernel_note"].as_str().unwrap();
    assert!(
        note.contains("ENOTTY") && note.contains("c6:00.1"),
        "{note}"
    );
}

#[test]
fn probe_shows_the_registers_behind_each_verdict() {
    let p = json(&["--sim", "probe", "c5:00.0", "--json"]);
    assert_eq!(p["bdf"], "0000:c5:00.0");
    assert_eq!(p["config"]["pcie_type"], "Legacy Endpoint");
    let caps: Vec<&str> = p["config"]["capabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(caps, ["VNDR", "PM", "EXP", "MSI", "MSIX"]);
    let flr = &p["methods"]["flr"]["registers"][0];
    assert_eq!(flr["name"], "DEVCAP");
    assert_eq!(flr["value"].as_u64().unwrap() & 0x1000_0000, 0);
    let res: Vec<u64> = p["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["index"].as_u64().unwrap())
        .collect();
    assert_eq!(res, [0, 2, 4, 5]);
    // Same device through a -d selector; a selector matching several is refused.
    let q = json(&["--sim", "probe", "-d", "1002:1900", "--json"]);
    assert_eq!(q["bdf"], "0000:c5:00.0");
    let o = run(&["--sim", "probe", "-d", "1022:15c0"]);
    assert!(o.status.success());
    let o = run(&["--sim", "probe", "-d", "1022:"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("matches") && err.contains("0000:c5:00.2"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn human_list_names_the_devices() {
    let out = run_ok(&["--sim", "list", "-v", "-s", "c5:00.0"]);
    assert!(out.contains("IOMMU group 18"), "{out}");
    assert!(
        out.contains("[1002:1900]") && out.contains("(rev c5)"),
        "{out}"
    );
    assert!(out.contains("remove_rescan  yes"), "{out}");
}

#[test]
fn snapshot_replays_to_the_same_list() {
    let twin = twin();
    let sys = sysfs_arg(&twin.sysfs);
    let live = json(&["--sysfs", &sys, "list", "--json"]);
    let dir = tempfile::tempdir().unwrap();
    for name in ["snap.tar", "snap.tar.gz"] {
        let file = dir.path().join(name);
        run_ok(&["--sysfs", &sys, "snapshot", file.to_str().unwrap()]);
        let replay = json(&["--sysfs", file.to_str().unwrap(), "list", "--json"]);
        assert_eq!(live, replay, "{name}: replay differs");
    }
    // Unpacked by tar(1)-compatible code, it replays as a directory too.
    let file = dir.path().join("snap.tar");
    let out = dir.path().join("unpacked");
    tar::Archive::new(std::fs::File::open(&file).unwrap())
        .unpack(&out)
        .unwrap();
    let replay = json(&[
        "--sysfs",
        out.join("sys").to_str().unwrap(),
        "list",
        "--json",
    ]);
    assert_eq!(live, replay);
}

#[test]
fn snapshot_never_reads_config_of_a_d3cold_device() {
    let twin = twin();
    let dev = twin.sysfs.join("bus/pci/devices/0000:c5:00.1");
    std::fs::write(dev.join("power_state"), "D3cold\n").unwrap();
    // Make any read of config fail loudly: a snapshot that read it would record garbage.
    let cfg = dev.join("config");
    std::fs::write(&cfg, b"").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s.tar");
    let out = json(&[
        "--sysfs",
        &sysfs_arg(&twin.sysfs),
        "snapshot",
        file.to_str().unwrap(),
        "--json",
    ]);
    let skipped = out["skipped_config"].as_array().unwrap();
    assert_eq!(skipped.len(), 1, "{out}");
    assert!(skipped[0].as_str().unwrap().contains("0000:c5:00.1"));
    let list = json(&[
        "--sysfs",
        file.to_str().unwrap(),
        "list",
        "--json",
        "-s",
        "c5:00.1",
    ]);
    let r = device(&list, "0000:c5:00.1")["methods"]["pm"]["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(r.contains("D3cold"), "{r}");
}

#[test]
fn bad_input_is_one_line_and_nonzero() {
    let cases: &[(&[&str], &str)] = &[
        (&["--sim", "probe", "c5:00.9"], "invalid PCI address"),
        (&["--sim", "probe", "zz"], "invalid PCI address"),
        (
            &["--sim", "probe", "c5:01.0"],
            "no PCI device '0000:c5:01.0'",
        ),
        (&["--sim", "list", "-d", "10021:1"], "invalid id selector"),
        (&["--sim", "probe"], "name a device"),
        (
            &["--sysfs", "/nonexistent/resetlab", "list"],
            "/nonexistent/resetlab",
        ),
        (&["--sim", "frobnicate"], "unrecognized subcommand"),
    ];
    for (args, want) in cases {
        let o = run(args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert_ne!(o.status.code(), Some(101), "{args:?} panicked: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert_eq!(
            err.trim().lines().count(),
            1,
            "{args:?}: more than one line: {err}"
        );
    }
}

#[test]
fn unreadable_or_malformed_attribute_is_named() {
    let twin = twin();
    let dev = twin.sysfs.join("bus/pci/devices/0000:c5:00.0");
    std::fs::write(dev.join("vendor"), "banana\n").unwrap();
    // One unreadable device is named and the rest is listed (issue 19).
    let o = run(&["--sysfs", &sysfs_arg(&twin.sysfs), "list"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(err.contains("vendor") && err.contains("banana"), "{err}");
    std::fs::remove_file(dev.join("vendor")).unwrap();
    std::fs::create_dir(dev.join("vendor")).unwrap(); // a directory where a file should be
    let o = run(&["--sysfs", &sysfs_arg(&twin.sysfs), "probe", "c5:00.0"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("vendor"), "{err}");
    assert_eq!(err.trim().lines().count(), 1);
}

#[test]
fn env_var_selects_the_root() {
    let twin = twin();
    let o = bin()
        .args(["list", "--json", "-s", "c5:00.0"])
        .env("RESETLAB_SYSFS", &twin.sysfs)
        .output()
        .unwrap();
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["devices"][0]["bdf"], "0000:c5:00.0");
}

#[test]
fn a_closed_pipe_ends_the_listing_quietly() {
    // `resetlab list | head -1`: the reader goes away; no panic, no error line.
    let mut child = bin()
        .args(["--sim", "list"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_ne!(out.status.code(), Some(101), "{err}");
}
