//! The Proxmox side: VM configs, mappings, storage.cfg, the hook policy and state records.
//! Every file lives in a temp dir; nothing reads the real /etc/pve, /sys or /run.

use std::path::{Path, PathBuf};
use std::time::Duration;

use proptest::prelude::*;
use resetlab::error::Error;
use resetlab::hook::policy::{Action, DeviceInfo, DeviceKind, Phase, Policy};
use resetlab::hook::state::{DeviceState, StateLookup, StateRecord, StateStore};
use resetlab::pve::{
    present_functions, Bdf, HostPciSource, PciMappings, PciTarget, Slot, StorageConfig, VmConfig,
};

/// `qm config 100` from the field report (seed), which is the `<vmid>.conf` format.
const SEED_QM_CONFIG_100: &str = resetlab::sim::seed::VM_100_CONF;

/// `/etc/pve/storage.cfg` from the seed.
const SEED_STORAGE_CFG: &str = resetlab::sim::seed::STORAGE_CFG;

fn bdf(s: &str) -> Bdf {
    s.parse().unwrap()
}

fn conf_path() -> PathBuf {
    PathBuf::from("/pve/qemu-server/100.conf")
}

fn parse(text: &str) -> VmConfig {
    VmConfig::parse(text, &conf_path(), 100).unwrap()
}

fn parse_err(text: &str) -> (PathBuf, usize, usize, String) {
    match VmConfig::parse(text, &conf_path(), 100) {
        Err(Error::FileParse {
            path,
            line,
            column,
            reason,
        }) => (path, line, column, reason),
        other => panic!("expected FileParse, got {other:?}"),
    }
}

/// The seed host's bus c5 (lspci -tvnn): the 780M slot with seven functions.
fn seed_present() -> Vec<Bdf> {
    [
        "c5:00.0", "c5:00.1", "c5:00.2", "c5:00.3", "c5:00.4", "c5:00.5", "c5:00.6", "c6:00.0",
    ]
    .iter()
    .map(|s| bdf(s))
    .collect()
}

// ---------------------------------------------------------------------------------------------
// VM config
// ---------------------------------------------------------------------------------------------

#[test]
fn seed_qm_config_gives_gpu_and_audio_with_options() {
    let cfg = parse(SEED_QM_CONFIG_100);
    assert_eq!(cfg.vmid, 100);
    assert_eq!(
        cfg.hookscript.as_deref(),
        Some("local:snippets/vm100-hooks.sh")
    );
    assert_eq!(cfg.vga.as_deref(), Some("none"));
    assert_eq!(
        cfg.entries.get("machine").map(String::as_str),
        Some("pc-q35-9.2+pve1")
    );
    assert_eq!(cfg.hostpci.len(), 2);

    let gpu = &cfg.hostpci[0];
    assert_eq!(gpu.index, 0);
    assert_eq!(
        gpu.source,
        HostPciSource::Host(vec![PciTarget::Function(bdf("0000:c5:00.0"))])
    );
    assert!(gpu.pcie());
    assert!(gpu.x_vga());
    assert!(gpu.rombar());
    assert!(!gpu.driver_keep());
    assert_eq!(gpu.romfile(), Some("vbios_1002_1900.bin"));
    assert_eq!(
        gpu.raw,
        "0000:c5:00.0,pcie=1,x-vga=1,romfile=vbios_1002_1900.bin"
    );
    assert_eq!(gpu.line, 8);

    let audio = &cfg.hostpci[1];
    assert!(audio.pcie());
    assert!(!audio.x_vga());
    assert_eq!(audio.romfile(), Some("AMDGopDriver_8845hs.rom"));

    let f = cfg.functions(&seed_present());
    let got: Vec<String> = f.iter().map(|f| f.bdf.to_string()).collect();
    assert_eq!(got, ["0000:c5:00.0", "0000:c5:00.1"]);
    assert!(f.iter().all(|f| f.present && !f.from_slot));
    assert_eq!(f[1].hostpci, 1);
}

#[test]
fn short_ids_default_to_domain_zero() {
    let cfg = parse("hostpci0: c5:00.0\nhostpci1: host=c5:00.1,rombar=0\n");
    assert_eq!(
        cfg.hostpci[0].targets(),
        vec![PciTarget::Function(bdf("0000:c5:00.0"))]
    );
    assert_eq!(
        cfg.hostpci[1].targets(),
        vec![PciTarget::Function(bdf("0000:c5:00.1"))]
    );
    assert!(!cfg.hostpci[1].rombar());
}

#[test]
fn whole_slot_resolves_to_present_functions() {
    let cfg = parse("hostpci0: c5:00,pcie=1\n");
    assert_eq!(
        cfg.hostpci[0].targets(),
        vec![PciTarget::Slot(Slot {
            domain: 0,
            bus: 0xc5,
            dev: 0
        })]
    );
    let f = cfg.functions(&seed_present());
    assert_eq!(f.len(), 7);
    assert!(f
        .iter()
        .all(|f| f.from_slot && f.present && f.bdf.bus == 0xc5));
    // Removed from the bus: function 0 stands for the slot, marked absent.
    let f = cfg.functions(&[bdf("c6:00.0")]);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].bdf, bdf("c5:00.0"));
    assert!(!f[0].present);
}

#[test]
fn semicolon_lists_in_host_key_and_bare_form() {
    for line in [
        "hostpci0: host=0000:c5:00.0;0000:c5:00.1,pcie=1\n",
        "hostpci0: 0000:c5:00.0;c5:00.1,pcie=1\n",
    ] {
        let cfg = parse(line);
        let got: Vec<String> = cfg
            .functions(&[])
            .iter()
            .map(|f| f.bdf.to_string())
            .collect();
        assert_eq!(got, ["0000:c5:00.0", "0000:c5:00.1"], "{line}");
        assert!(cfg.hostpci[0].pcie());
    }
}

#[test]
fn a_function_named_twice_is_listed_once() {
    let cfg = parse("hostpci0: c5:00\nhostpci1: c5:00.1\n");
    let f = cfg.functions(&[bdf("c5:00.0"), bdf("c5:00.1")]);
    assert_eq!(f.len(), 2);
    assert_eq!(f[1].hostpci, 0);
}

#[test]
fn hostpci_entries_are_ordered_by_index() {
    let cfg = parse("hostpci3: c5:00.3\nhostpci1: c5:00.1\nhostpci10: c5:00.5\n");
    let idx: Vec<u8> = cfg.hostpci.iter().map(|h| h.index).collect();
    assert_eq!(idx, [1, 3, 10]);
}

#[test]
fn all_options_kept_and_typed_accessors() {
    let cfg = parse(
        "hostpci0: c5:00.0,pcie=on,x-vga=yes,rombar=false,romfile=a.rom,driver=keep,\
         legacy-igd=0,vendor-id=0x1002,sub-device-id=0xABCD,future-option=x\n",
    );
    let h = &cfg.hostpci[0];
    assert!(h.pcie() && h.x_vga() && !h.rombar() && !h.legacy_igd() && h.driver_keep());
    assert_eq!(h.driver(), "keep");
    assert_eq!(h.option("vendor-id"), Some("0x1002"));
    assert_eq!(h.option("future-option"), Some("x"));
    assert_eq!(h.options.len(), 9);
    assert!(cfg.functions(&[])[0].driver_keep);
}

#[test]
fn mdev_entry_is_flagged() {
    let cfg = parse("hostpci0: 01:00.0,mdev=nvidia-35\n");
    assert_eq!(cfg.hostpci[0].mdev(), Some("nvidia-35"));
    assert!(cfg.functions(&[])[0].mdev);
}

#[test]
fn snapshots_pending_and_special_sections_are_ignored() {
    let text = "\
hostpci0: c5:00.0
vga: none
parent: snap1

[PENDING]
hostpci1: c5:00.1
vga: std
delete: hostpci0

[snap1]
hostpci0: 01:00.0
hookscript: local:snippets/old.sh
snaptime: 1751205760

[special:cloudinit]
ipconfig0: ip=dhcp
";
    let cfg = parse(text);
    assert_eq!(cfg.hostpci.len(), 1);
    assert_eq!(
        cfg.hostpci[0].targets(),
        vec![PciTarget::Function(bdf("c5:00.0"))]
    );
    assert_eq!(cfg.vga.as_deref(), Some("none"));
    assert_eq!(cfg.hookscript, None);
    assert!(!cfg.entries.contains_key("delete"));
    assert!(!cfg.entries.contains_key("snaptime"));
}

#[test]
fn lower_case_pending_header_also_ends_the_config() {
    let cfg = parse("vga: none\n[pending]\nhostpci0: c5:00.0\n");
    assert!(cfg.hostpci.is_empty());
}

#[test]
fn crlf_trailing_spaces_comments_and_blank_lines() {
    let text = "#win11%20with%20iGPU\r\n#second line\r\n\r\nhostpci0: 0000:c5:00.0,pcie=1  \r\n   \r\nvga:   none \t\r\nhookscript: local:snippets/x.sh\r\n";
    let cfg = parse(text);
    assert_eq!(cfg.hostpci[0].raw, "0000:c5:00.0,pcie=1");
    assert!(cfg.hostpci[0].pcie());
    assert_eq!(cfg.vga.as_deref(), Some("none"));
    assert_eq!(cfg.hookscript.as_deref(), Some("local:snippets/x.sh"));
}

#[test]
fn malformed_lines_name_file_line_and_column() {
    let (path, line, col, reason) = parse_err("vga: none\nthis is not a config line\n");
    assert_eq!(path, conf_path());
    assert_eq!((line, col), (2, 5));
    assert!(reason.contains("':'"), "{reason}");

    let (_, line, _, reason) = parse_err("a: 1\nb: 2\nhostpci0:\n");
    assert_eq!(line, 3);
    assert!(reason.contains("no value"), "{reason}");

    let (_, line, col, reason) = parse_err("hostpci0: c5:00.0,pcie=maybe\n");
    assert_eq!((line, col), (1, 19));
    assert!(
        reason.contains("pcie") && reason.contains("boolean"),
        "{reason}"
    );

    let (_, _, _, reason) = parse_err("hostpci0: pcie=1\n");
    assert!(reason.contains("'host' or 'mapping'"), "{reason}");

    let (_, _, _, reason) = parse_err("hostpci0: c5:00.0,mapping=gpu\n");
    assert!(reason.contains("both"), "{reason}");

    let (_, _, _, reason) = parse_err("hostpci16: c5:00.0\n");
    assert!(reason.contains("hostpci15"), "{reason}");

    let (_, _, _, reason) = parse_err("hostpci01: c5:00.0\n");
    assert!(reason.contains("hostpci15"), "{reason}");

    let (_, _, _, reason) = parse_err("hostpci0: c5:00.0,driver=other\n");
    assert!(reason.contains("driver"), "{reason}");

    let (_, _, _, reason) = parse_err("hostpci0: c5:00.0,pcie=1,pcie=0\n");
    assert!(reason.contains("duplicate"), "{reason}");

    let (_, line, _, _) = parse_err("vga: none\n[PENDING\n");
    assert_eq!(line, 2);

    let (_, line, col, _) = parse_err("  vga: none\n");
    assert_eq!((line, col), (1, 1));
}

#[test]
fn bad_pci_ids_are_rejected() {
    for (bad, why) in [
        (
            "c5:0.0",
            "hostpci0: 'c5:0.0': device '0' is not 2 hex digits",
        ),
        ("c5:00.8", "hostpci0: 'c5:00.8': function 8 is above 7"),
        ("c5:20.0", "hostpci0: 'c5:20.0': device 0x20 is above 0x1f"),
        (
            "zz:00.0",
            "hostpci0: 'zz:00.0': bus 'zz' is not 2 hex digits",
        ),
        ("c5:00.0;", "hostpci0: '': expected [DDDD:]BB:DD[.F]"),
        (
            "0:c5:00.0",
            "hostpci0: '0:c5:00.0': domain '0' is not 4 to 8 hex digits",
        ),
        (
            "c5:00:00.0",
            "hostpci0: 'c5:00:00.0': domain 'c5' is not 4 to 8 hex digits",
        ),
    ] {
        let text = format!("hostpci0: {bad}\n");
        let e = VmConfig::parse(&text, &conf_path(), 100).unwrap_err();
        assert!(
            matches!(&e, Error::FileParse { path, line: 1, reason, .. }
                if *path == conf_path() && reason == why),
            "{bad}: {e:?}"
        );
    }
}

#[test]
fn load_reads_qemu_server_dir() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("qemu-server")).unwrap();
    std::fs::write(dir.path().join("qemu-server/100.conf"), SEED_QM_CONFIG_100).unwrap();
    let cfg = VmConfig::load(dir.path(), 100).unwrap();
    assert_eq!(cfg.path, dir.path().join("qemu-server/100.conf"));
    assert_eq!(cfg.hostpci.len(), 2);
    match VmConfig::load(dir.path(), 101) {
        Err(Error::Io { path, .. }) => assert!(path.ends_with("qemu-server/101.conf")),
        other => panic!("{other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Mappings
// ---------------------------------------------------------------------------------------------

const MAPPING_CFG: &str = "\
# cluster-wide PCI mappings
igpu
\tdescription 780M and its HDMI audio
\tmap node=pve1,path=0000:c5:00.0;0000:c5:00.1,id=1002:1900,iommugroup=18,subsystem-id=1f66:0031
\tmap node=pve2,path=0000:03:00,id=1002:73bf,iommugroup=12

nic
\tmap node=pve1,path=0000:02:00.0,id=10ec:8125
\tmap node=pve1,path=0000:03:00.0,id=10ec:8125
\tlive-migration-capable 0

broken
\tmap node=pve1,path=nonsense,id=1002:1900
";

fn mappings() -> PciMappings {
    PciMappings::parse(MAPPING_CFG, Path::new("/pve/mapping/pci.cfg")).unwrap()
}

#[test]
fn mapping_file_sections_and_entries() {
    let m = mappings();
    assert_eq!(m.mappings.len(), 3);
    let igpu = &m.mappings["igpu"];
    assert_eq!(igpu.description.as_deref(), Some("780M and its HDMI audio"));
    assert_eq!(igpu.maps.len(), 2);
    let e = m.node_entries("igpu", "pve1").unwrap();
    assert_eq!(e.len(), 1);
    assert_eq!(
        e[0].path,
        vec![
            PciTarget::Function(bdf("c5:00.0")),
            PciTarget::Function(bdf("c5:00.1"))
        ]
    );
    assert_eq!(e[0].id, Some((0x1002, 0x1900)));
    assert_eq!(e[0].subsystem_id, Some((0x1f66, 0x0031)));
    assert_eq!(e[0].iommugroup, Some(18));
    assert_eq!(e[0].line, 4);
    assert!(m.node_entries("igpu", "pve3").unwrap().is_empty());
    assert!(matches!(
        m.node_entries("nope", "pve1"),
        Err(Error::NotFound { .. })
    ));
}

#[test]
fn vm_with_mapping_resolves_for_this_node_only() {
    let mut cfg = parse("hostpci0: mapping=igpu,pcie=1,x-vga=1\n");
    assert_eq!(cfg.hostpci[0].mapping(), Some("igpu"));
    assert!(cfg.uses_mappings());
    assert!(cfg.hostpci[0].targets().is_empty());
    cfg.resolve_mappings(&mappings(), "pve1").unwrap();
    let got: Vec<String> = cfg
        .functions(&[])
        .iter()
        .map(|f| f.bdf.to_string())
        .collect();
    assert_eq!(got, ["0000:c5:00.0", "0000:c5:00.1"]);
    assert!(cfg.hostpci[0].x_vga());

    // On pve2 the same mapping is a whole slot.
    let mut cfg2 = parse("hostpci0: mapping=igpu\n");
    cfg2.resolve_mappings(&mappings(), "pve2").unwrap();
    let present = [bdf("03:00.0"), bdf("03:00.1")];
    assert_eq!(cfg2.functions(&present).len(), 2);

    // No entry for this node: an error, as Proxmox refuses to start.
    let mut cfg3 = parse("hostpci0: mapping=igpu\n");
    assert!(matches!(
        cfg3.resolve_mappings(&mappings(), "pve3"),
        Err(Error::NotFound { .. })
    ));
}

#[test]
fn mapping_alternatives_are_all_managed() {
    let mut cfg = parse("hostpci0: mapping=nic\n");
    cfg.resolve_mappings(&mappings(), "pve1").unwrap();
    match &cfg.hostpci[0].source {
        HostPciSource::Mapping { alternatives, .. } => assert_eq!(alternatives.len(), 2),
        other => panic!("{other:?}"),
    }
    assert_eq!(cfg.functions(&[]).len(), 2);
}

#[test]
fn broken_map_line_is_reported_when_used() {
    let m = mappings();
    match m.node_entries("broken", "pve1") {
        Err(Error::FileParse {
            path, line, reason, ..
        }) => {
            assert_eq!(path, Path::new("/pve/mapping/pci.cfg"));
            assert_eq!(line, 13);
            assert!(reason.contains("nonsense"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn mapping_file_syntax_errors() {
    let p = Path::new("/m");
    let err_line = |t: &str| match PciMappings::parse(t, p) {
        Err(Error::FileParse { line, .. }) => line,
        other => panic!("{other:?}"),
    };
    // A second header without a blank line before it.
    assert_eq!(err_line("a1\n\tmap node=x,path=0000:01:00.0\nb1\n"), 3);
    // A property outside any section.
    assert_eq!(err_line("\tmap node=x,path=0000:01:00.0\n"), 1);
    // A bad id.
    assert_eq!(err_line("\n\n1gpu\n"), 3);
    assert_eq!(err_line("a1\n\tmdev perhaps\n"), 2);
}

#[test]
fn mapping_file_with_crlf_and_comments_inside_sections() {
    let t = "gpu\r\n  # comment\r\n  map node=n1,path=0000:c5:00.0,id=1002:1900\r\n\r\n";
    let m = PciMappings::parse(t, Path::new("/m")).unwrap();
    assert_eq!(m.node_entries("gpu", "n1").unwrap().len(), 1);
}

#[test]
fn load_resolved_reads_mapping_only_when_needed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("qemu-server")).unwrap();
    std::fs::write(dir.path().join("qemu-server/100.conf"), SEED_QM_CONFIG_100).unwrap();
    let (_, f) = VmConfig::load_resolved(dir.path(), 100, "pve1", &[]).unwrap();
    assert_eq!(f.len(), 2);

    std::fs::write(
        dir.path().join("qemu-server/101.conf"),
        "hostpci0: mapping=igpu\n",
    )
    .unwrap();
    // No mapping file: the mapping is not found.
    let e = VmConfig::load_resolved(dir.path(), 101, "pve1", &[]).unwrap_err();
    assert!(
        matches!(&e, Error::NotFound { what: "PCI mapping", name } if name == "igpu"),
        "{e:?}"
    );
    std::fs::create_dir_all(dir.path().join("mapping")).unwrap();
    std::fs::write(dir.path().join("mapping/pci.cfg"), MAPPING_CFG).unwrap();
    let (cfg, f) = VmConfig::load_resolved(dir.path(), 101, "pve1", &[]).unwrap();
    assert_eq!(cfg.vmid, 101);
    assert_eq!(f.len(), 2);
}

#[test]
fn present_functions_reads_sysfs_tree() {
    let dir = tempfile::tempdir().unwrap();
    let devs = dir.path().join("bus/pci/devices");
    std::fs::create_dir_all(&devs).unwrap();
    for n in ["0000:c5:00.1", "0000:c5:00.0", "not-a-device"] {
        std::fs::create_dir(devs.join(n)).unwrap();
    }
    assert_eq!(
        present_functions(dir.path()).unwrap(),
        vec![bdf("c5:00.0"), bdf("c5:00.1")]
    );
    let e = present_functions(&dir.path().join("missing")).unwrap_err();
    assert!(
        matches!(&e, Error::Io { op: "read directory", path, .. }
            if path.ends_with("missing/bus/pci/devices")),
        "{e:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// storage.cfg
// ---------------------------------------------------------------------------------------------

#[test]
fn seed_storage_cfg_snippets_dir() {
    let s = StorageConfig::parse(SEED_STORAGE_CFG, Path::new("/pve/storage.cfg")).unwrap();
    assert_eq!(
        s.snippets_dir("local").unwrap(),
        Path::new("/var/lib/vz/snippets")
    );
    assert!(s.get("tank").unwrap().path.is_none());
    assert!(!s.get("tank").unwrap().has_content("snippets"));
    let e = s.snippets_dir("tank").unwrap_err();
    assert!(
        matches!(&e, Error::Failed { what }
            if what.starts_with("storage 'tank' does not allow 'snippets' content")),
        "{e:?}"
    );
    assert!(matches!(
        s.snippets_dir("nope"),
        Err(Error::NotFound { .. })
    ));
    assert_eq!(
        s.snippet_path("local:snippets/vm100-hooks.sh").unwrap(),
        Path::new("/var/lib/vz/snippets/vm100-hooks.sh")
    );
    for (bad, why) in [
        (
            "local:iso/x.iso",
            "not in the snippets directory (expected STORAGE:snippets/NAME)",
        ),
        (
            "local:snippets/a/b",
            "not in the snippets directory (expected STORAGE:snippets/NAME)",
        ),
        ("nocolon", "expected STORAGE:snippets/NAME"),
    ] {
        let e = s.snippet_path(bad).unwrap_err();
        assert!(
            matches!(&e, Error::Parse { what: "hookscript volume id", input, reason }
                if input == bad && reason == why),
            "{bad}: {e:?}"
        );
    }
    let names: Vec<&str> = s.snippet_storages().iter().map(|(n, _)| *n).collect();
    assert_eq!(names, ["local"]);
}

#[test]
fn storage_cfg_defaults_and_overrides() {
    // No file content at all: the built-in local.
    let s = StorageConfig::parse("", Path::new("/s")).unwrap();
    assert_eq!(
        s.snippets_dir("local").unwrap(),
        Path::new("/var/lib/vz/snippets")
    );

    // local pointed elsewhere is forced back, as pve-storage does.
    let s =
        StorageConfig::parse("dir: local\n\tpath /srv\n\tcontent iso\n", Path::new("/s")).unwrap();
    assert!(s.get("local").unwrap().has_content("snippets"));

    // local without snippets keeps its content.
    let s = StorageConfig::parse(
        "dir: local\n\tpath /var/lib/vz\n\tcontent iso\n",
        Path::new("/s"),
    )
    .unwrap();
    let e = s.snippets_dir("local").unwrap_err();
    assert!(
        matches!(&e, Error::Failed { what }
            if what.starts_with("storage 'local' does not allow 'snippets' content")),
        "{e:?}"
    );

    // Another dir storage with a content-dirs override, CRLF and a space-separated list.
    let t = "dir: fast\r\n\tpath /mnt/fast\r\n\tcontent snippets iso\r\n\tcontent-dirs snippets=hooks\r\n";
    let s = StorageConfig::parse(t, Path::new("/s")).unwrap();
    assert_eq!(
        s.snippets_dir("fast").unwrap(),
        Path::new("/mnt/fast/hooks")
    );
    let names: Vec<&str> = s.snippet_storages().iter().map(|(n, _)| *n).collect();
    assert_eq!(names, ["fast", "local"]);
}

#[test]
fn storage_cfg_errors_and_load() {
    assert!(matches!(
        StorageConfig::parse("dir local\n", Path::new("/s")),
        Err(Error::FileParse { line: 1, .. })
    ));
    let dir = tempfile::tempdir().unwrap();
    let s = StorageConfig::load(dir.path()).unwrap();
    let local = s.get("local").unwrap();
    assert_eq!((local.id.as_str(), local.kind.as_str()), ("local", "dir"));
    assert!(local.content.contains("snippets"), "{local:?}");
    std::fs::write(dir.path().join("storage.cfg"), SEED_STORAGE_CFG).unwrap();
    let all = StorageConfig::load(dir.path()).unwrap();
    let tank = all.get("tank").unwrap();
    assert_eq!((tank.id.as_str(), tank.kind.as_str()), ("tank", "zfspool"));
}

// ---------------------------------------------------------------------------------------------
// Policy
// ---------------------------------------------------------------------------------------------

fn info(b: &str, vendor: u16, device: u16, class: u32) -> DeviceInfo {
    DeviceInfo {
        bdf: bdf(b),
        vendor,
        device,
        class,
    }
}

fn m780() -> Vec<DeviceInfo> {
    vec![
        info("c5:00.0", 0x1002, 0x1900, 0x030000),
        info("c5:00.1", 0x1002, 0x1640, 0x040300),
    ]
}

fn policy(text: &str) -> Policy {
    Policy::parse(text, Path::new("/etc/resetlab/hook.toml")).unwrap()
}

fn policy_err(text: &str) -> (usize, usize, String) {
    match Policy::parse(text, Path::new("/etc/resetlab/hook.toml")) {
        Err(Error::FileParse {
            path,
            line,
            column,
            reason,
        }) => {
            assert_eq!(path, Path::new("/etc/resetlab/hook.toml"));
            (line, column, reason)
        }
        other => panic!("expected FileParse, got {other:?}"),
    }
}

#[test]
fn defaults_without_a_file_handle_the_780m() {
    let dir = tempfile::tempdir().unwrap();
    let p = Policy::load(&dir.path().join("hook.toml")).unwrap();
    assert!(p.path.is_none());
    let vm = p.for_vm(100);
    assert!(!vm.fail_start_on_error);

    let pre = vm.plan(Phase::PreStart, &m780(), &[]);
    assert_eq!(pre.actions, [Action::EnsurePresent, Action::ResetIfDirty]);
    assert_eq!(pre.budget, Duration::from_secs(30));
    assert!(!pre.fail_on_error);
    assert_eq!(pre.devices[0].kind, DeviceKind::AmdGpu);
    assert_eq!(pre.devices[0].chain, ["smu_mode2", "remove_rescan"]);
    assert_eq!(pre.devices[1].kind, DeviceKind::AmdGpuAudio);
    assert_eq!(pre.devices[1].chain, ["smu_mode2", "remove_rescan"]);

    assert_eq!(
        vm.plan(Phase::PostStart, &m780(), &[]).actions,
        [Action::MarkDirty]
    );
    // The field report's evidence: the guest lets go before QEMU exits; after the stop only
    // what was not released is reset.
    let pre_stop = vm.plan(Phase::PreStop, &m780(), &[]);
    assert_eq!(pre_stop.actions, [Action::Release]);
    assert_eq!(pre_stop.release_timeout, Duration::from_secs(10));
    let post = vm.plan(Phase::PostStop, &m780(), &[]);
    assert_eq!(post.actions, [Action::EnsurePresent, Action::ResetIfDirty]);
    assert_eq!(post.budget, Duration::from_secs(60));

    let nic = [info("02:00.0", 0x10ec, 0x8125, 0x020000)];
    assert_eq!(
        vm.plan(Phase::PostStop, &nic, &[]).devices[0].chain,
        ["kernel", "remove_rescan"]
    );
}

#[test]
fn plan_puts_gpu_before_its_audio() {
    let vm = Policy::default().for_vm(100);
    let mut devs = m780();
    devs.reverse();
    devs.insert(0, info("02:00.0", 0x10ec, 0x8125, 0x020000));
    let plan = vm.plan(Phase::PostStop, &devs, &[]);
    let order: Vec<String> = plan.devices.iter().map(|d| d.bdf.to_string()).collect();
    assert_eq!(order, ["0000:c5:00.0", "0000:c5:00.1", "0000:02:00.0"]);
    // The audio alone is recognised when the GPU is among `others`.
    let alone = vm.plan(Phase::PostStop, &m780()[1..], &m780()[..1]);
    assert_eq!(alone.devices.len(), 1);
    assert_eq!(alone.devices[0].kind, DeviceKind::AmdGpuAudio);
}

#[test]
fn default_selection_is_every_hostpci_function_but_keep_and_mdev() {
    let cfg = parse("hostpci0: c5:00.0\nhostpci1: c5:00.1,driver=keep\nhostpci2: 01:00.0,mdev=x\nhostpci3: 02:00.0\n");
    let f = cfg.functions(&[]);
    let vm = Policy::default().for_vm(100);
    assert_eq!(vm.select(&f), vec![bdf("c5:00.0"), bdf("02:00.0")]);
}

#[test]
fn global_settings_and_vm_overrides() {
    let p = policy(
        r#"
fail_start_on_error = true
present_timeout_s = 5
remove_timeout_s = 2.5

[phase.pre-stop]
actions = ["remove"]
budget_s = 20

[chain]
other = ["flr", "remove_rescan"]

[device."0000:02:00.0"]
chain = ["bus"]

[vm.100]
fail_start_on_error = false
devices = ["c5:00"]
exclude = ["c5:00.1"]

[vm.100.phase.post-stop]
actions = ["reset"]

[vm.100.chain]
amd_gpu = ["remove_rescan"]

[vm.100.device."c5:00.0"]
chain = ["smu_mode2"]

[vm.200.phase.pre-start]
budget_s = 45
"#,
    );
    assert_eq!(p.configured_vms(), [100, 200]);

    let g = p.for_vm(300); // no section: the global settings
    assert!(g.fail_start_on_error);
    assert_eq!(g.present_timeout, Duration::from_secs(5));
    assert_eq!(g.remove_timeout, Duration::from_millis(2500));
    let pre_stop = g.phase(Phase::PreStop);
    assert_eq!(pre_stop.actions, [Action::Remove]);
    assert_eq!(pre_stop.budget, Duration::from_secs(20));
    assert!(g.plan(Phase::PreStart, &[], &[]).fail_on_error);
    assert!(!g.plan(Phase::PostStop, &[], &[]).fail_on_error);
    assert_eq!(
        g.chain_for(bdf("03:00.0"), DeviceKind::Other),
        ["flr", "remove_rescan"]
    );
    assert_eq!(g.chain_for(bdf("02:00.0"), DeviceKind::Other), ["bus"]);

    let vm = p.for_vm(100);
    assert!(!vm.fail_start_on_error);
    assert_eq!(vm.phase(Phase::PostStop).actions, [Action::Reset]);
    assert_eq!(vm.phase(Phase::PostStop).budget, Duration::from_secs(60));
    assert_eq!(vm.phase(Phase::PreStop).actions, [Action::Remove]); // inherited
    assert_eq!(
        vm.chain_for(bdf("c5:00.0"), DeviceKind::AmdGpu),
        ["smu_mode2"]
    );
    assert_eq!(
        vm.chain_for(bdf("c6:00.0"), DeviceKind::AmdGpu),
        ["remove_rescan"]
    );
    assert_eq!(
        vm.chain_for(bdf("c5:00.1"), DeviceKind::AmdGpuAudio),
        ["smu_mode2", "remove_rescan"]
    );

    let cfg = parse("hostpci0: c5:00\nhostpci1: 02:00.0\n");
    let f = cfg.functions(&seed_present());
    let sel: Vec<String> = vm.select(&f).iter().map(|b| b.to_string()).collect();
    assert_eq!(
        sel,
        [
            "0000:c5:00.0",
            "0000:c5:00.2",
            "0000:c5:00.3",
            "0000:c5:00.4",
            "0000:c5:00.5",
            "0000:c5:00.6"
        ]
    );

    let vm200 = p.for_vm(200);
    assert_eq!(vm200.phase(Phase::PreStart).budget, Duration::from_secs(45));
    assert_eq!(
        vm200.phase(Phase::PreStart).actions,
        [Action::EnsurePresent, Action::ResetIfDirty]
    );
}

#[test]
fn explicit_devices_can_include_keep_entries_but_never_foreign_ones() {
    let p = policy("[vm.100]\ndevices = [\"c5:00.1\", \"01:00.0\"]\n");
    let cfg = parse("hostpci0: c5:00.0\nhostpci1: c5:00.1,driver=keep\n");
    assert_eq!(
        p.for_vm(100).select(&cfg.functions(&[])),
        vec![bdf("c5:00.1")]
    );
}

#[test]
fn unknown_keys_name_file_line_and_key() {
    let (line, _, reason) = policy_err("fail_start_on_error = true\nbudget = 3\n");
    assert_eq!(line, 2);
    assert!(reason.contains("budget"), "{reason}");

    let (line, _, reason) = policy_err("[vm.100]\n\nchains = []\n");
    assert_eq!(line, 3);
    assert!(reason.contains("chains"), "{reason}");

    let (line, _, reason) = policy_err("[phase.pre-start]\nactions = []\nbudget = 3\n");
    assert_eq!(line, 3);
    assert!(reason.contains("budget"), "{reason}");

    let (_, _, reason) = policy_err("[phase.start]\n");
    assert!(reason.contains("start"), "{reason}");

    let (_, _, reason) = policy_err("[chain]\nintel = []\n");
    assert!(reason.contains("intel"), "{reason}");

    let (_, _, reason) = policy_err("[device.\"c5:00.0\"]\nchian = []\n");
    assert!(reason.contains("chian"), "{reason}");
}

#[test]
fn bad_values_are_rejected_with_their_place() {
    let (line, _, reason) = policy_err("\n[phase.post-stop]\nactions = [\"reset\", \"explode\"]\n");
    assert_eq!(line, 3);
    assert!(reason.contains("explode"), "{reason}");

    let (line, col, reason) = policy_err("[phase.post-start]\nactions = [\"reset\"]\n");
    assert_eq!((line, col), (2, 11));
    assert!(reason.contains("not allowed in post-start"), "{reason}");

    let (_, _, reason) = policy_err("[vm.100.phase.pre-stop]\nactions = [\"reset_if_dirty\"]\n");
    assert!(reason.contains("vm.100.phase.pre-stop.actions"), "{reason}");

    let (_, _, reason) = policy_err("[phase.pre-start]\nactions = [\"reset\", \"reset\"]\n");
    assert!(reason.contains("twice"), "{reason}");

    let (line, _, reason) = policy_err("[phase.pre-start]\nbudget_s = 0\n");
    assert_eq!(line, 2);
    assert!(reason.contains("out of range"), "{reason}");

    let (_, _, reason) = policy_err("present_timeout_s = -1\n");
    assert!(reason.contains("out of range"), "{reason}");

    let (_, _, reason) = policy_err("[vm.abc]\n");
    assert!(reason.contains("abc"), "{reason}");
    let (_, _, reason) = policy_err("[vm.99]\n");
    assert!(reason.contains("99"), "{reason}");

    let (_, _, reason) = policy_err("[vm.100]\ndevices = [\"c5:00.9\"]\n");
    assert!(reason.contains("c5:00.9"), "{reason}");

    let (_, _, reason) = policy_err("[device.\"c5:00\"]\nchain = []\n");
    assert!(reason.contains("c5:00"), "{reason}");

    let (_, _, reason) = policy_err("[chain]\nother = [\"Kernel Reset\"]\n");
    assert!(reason.contains("Kernel Reset"), "{reason}");

    let (_, _, reason) = policy_err("fail_start_on_error = \"yes\"\n");
    assert!(!reason.is_empty());

    let (line, _, _) = policy_err("a = [\n");
    assert!(line >= 1);
}

// ---------------------------------------------------------------------------------------------
// State records
// ---------------------------------------------------------------------------------------------

#[test]
fn state_round_trip_and_atomic_replace() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::new(dir.path().join("run/resetlab"));
    let b = bdf("c5:00.0");
    assert_eq!(store.read(b), StateLookup::Missing);
    assert!(!store.read(b).needs_reset());

    let rec = store.mark(b, DeviceState::Dirty, None, Some(100)).unwrap();
    assert_eq!(store.read(b), StateLookup::Found(rec.clone()));
    assert!(store.read(b).needs_reset());

    let rec2 = store
        .mark(b, DeviceState::Clean, Some("smu_mode2"), Some(100))
        .unwrap();
    match store.read(b) {
        StateLookup::Found(r) => {
            assert_eq!(r, rec2);
            assert_eq!(r.last_method.as_deref(), Some("smu_mode2"));
        }
        other => panic!("{other:?}"),
    }
    assert!(!store.read(b).needs_reset());

    // Only the record itself is left (no temporaries).
    let names: Vec<String> = std::fs::read_dir(store.dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["0000:c5:00.0.json"]);

    let text = std::fs::read_to_string(store.path_for(b)).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["bdf"], "0000:c5:00.0");
    assert_eq!(v["state"], "clean");
    assert_eq!(v["vmid"], 100);
    assert!(v["time"].as_u64().unwrap() > 1_600_000_000);
}

#[test]
fn corrupt_or_foreign_records_warn_and_count_as_dirty() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::new(dir.path());
    let b = bdf("c5:00.0");
    std::fs::write(store.path_for(b), "{not json").unwrap();
    let l = store.read(b);
    assert!(matches!(l, StateLookup::Unreadable { .. }));
    assert!(l.needs_reset());
    assert!(l.warning().unwrap().contains("0000:c5:00.0.json"));

    let other = StateRecord {
        bdf: bdf("c5:00.1"),
        state: DeviceState::Clean,
        last_method: None,
        time: 1,
        vmid: None,
        note: None,
    };
    std::fs::write(store.path_for(b), serde_json::to_string(&other).unwrap()).unwrap();
    match store.read(b) {
        StateLookup::Unreadable { reason, .. } => assert!(reason.contains("0000:c5:00.1")),
        other => panic!("{other:?}"),
    }

    // Extra fields from a newer version are fine; a missing optional field too.
    std::fs::write(
        store.path_for(b),
        r#"{"bdf":"0000:c5:00.0","state":"dirty","time":5,"extra":1}"#,
    )
    .unwrap();
    assert!(matches!(
        store.read(b),
        StateLookup::Found(StateRecord {
            time: 5,
            vmid: None,
            ..
        })
    ));

    let all = store.list().unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].0, b);
    assert!(StateStore::new(dir.path().join("none"))
        .list()
        .unwrap()
        .is_empty());
}

// ---------------------------------------------------------------------------------------------
// No input panics
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn vm_config_parser_never_panics(text in "\\PC*") {
        let _ = VmConfig::parse(&text, &conf_path(), 100).map(|c| c.functions(&seed_present()));
    }

    #[test]
    fn vm_config_parser_never_panics_on_config_like_text(
        lines in proptest::collection::vec(
            "(hostpci[0-9]{1,2}|vga|hookscript|\\[[a-z]{0,4}\\]?|#)?[:, =;.0-9a-fx\\r\\t-]{0,40}", 0..12)
    ) {
        let text = lines.join("\n");
        if let Ok(c) = VmConfig::parse(&text, &conf_path(), 100) {
            let _ = c.functions(&seed_present());
        }
    }

    #[test]
    fn mapping_parser_never_panics(text in "\\PC*") {
        if let Ok(m) = PciMappings::parse(&text, Path::new("/m")) {
            for name in m.mappings.keys() {
                let _ = m.node_entries(name, "pve1");
            }
        }
    }

    #[test]
    fn mapping_parser_never_panics_on_mapping_like_text(
        lines in proptest::collection::vec("[ \\t]?(map|mdev|[a-z]{1,5})?[ =,;:.0-9a-z\\r-]{0,40}", 0..12)
    ) {
        let text = lines.join("\n");
        if let Ok(m) = PciMappings::parse(&text, Path::new("/m")) {
            for name in m.mappings.keys() {
                let _ = m.node_entries(name, "n");
            }
        }
    }

    #[test]
    fn storage_and_policy_parsers_never_panic(text in "\\PC*") {
        let _ = StorageConfig::parse(&text, Path::new("/s"));
        let _ = Policy::parse(&text, Path::new("/p"));
    }

    #[test]
    fn pci_targets_round_trip(dom in 0u32..0x1_0000, bus: u8, dev in 0u8..32, func in 0u8..8) {
        let b = Bdf::new(dom, bus, dev, func);
        prop_assert_eq!(b.to_string().parse::<Bdf>().unwrap(), b);
        let s = b.slot();
        prop_assert_eq!(PciTarget::parse(&s.to_string()).unwrap(), PciTarget::Slot(s));
    }

    #[test]
    fn pci_target_parser_never_panics(s in "\\PC{0,20}") {
        let _ = PciTarget::parse(&s);
    }
}
