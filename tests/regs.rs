//! The register database against its documentation, and the parsers against arbitrary input.

use std::path::PathBuf;

use proptest::prelude::*;
use resetlab::amd::discovery::{self, Mode};
use resetlab::amd::regs::{RegsDb, EMBEDDED};
use resetlab::sim::discovery_blob::{self, BlobSpec, IpSpec};
use resetlab::Error;

fn embedded_files() -> Vec<(PathBuf, String)> {
    EMBEDDED
        .iter()
        .map(|(p, t)| (PathBuf::from(p), (*t).to_string()))
        .collect()
}

/// The shipped phoenix file and an overlay of it (only phoenix: the proptests load this
/// hundreds of times, and the other families are not what they overlay).
fn with_overlay(text: &str) -> resetlab::Result<RegsDb> {
    let mut files: Vec<(PathBuf, String)> = embedded_files()
        .into_iter()
        .filter(|(p, _)| p.ends_with("phoenix.toml"))
        .collect();
    files.push((PathBuf::from("overlay/phoenix.toml"), text.to_string()));
    RegsDb::from_texts(&files)
}

struct Row {
    kind: String,
    name: String,
    ip: String,
    base_idx: String,
    value: u64,
    confirmed: bool,
}

/// The rows of the fact table in docs/regs.md.
fn doc_rows() -> Vec<Row> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/regs.md"))
        .expect("docs/regs.md");
    let mut rows = Vec::new();
    for line in doc.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // | kind | name | ip | base_idx | value | source ... | confirmed |
        if cells.len() < 8 || !["reg", "smn", "base", "msg", "resp"].contains(&cells[1]) {
            continue;
        }
        let v = cells[5];
        let value = u64::from_str_radix(v.trim_start_matches("0x"), 16)
            .unwrap_or_else(|_| panic!("docs/regs.md: value '{v}' in: {line}"));
        let conf = cells[cells.len() - 2];
        assert!(
            conf == "yes" || conf == "no",
            "confirmed cell '{conf}' in: {line}"
        );
        rows.push(Row {
            kind: cells[1].to_string(),
            name: cells[2].to_string(),
            ip: cells[3].to_string(),
            base_idx: cells[4].to_string(),
            value,
            confirmed: conf == "yes",
        });
    }
    rows
}

#[test]
fn docs_table_matches_the_embedded_phoenix_file() {
    let db = RegsDb::embedded().unwrap();
    let a = db.asic("phoenix").unwrap();
    let rows = doc_rows();
    assert!(
        rows.len() > 30,
        "docs/regs.md table not found ({} rows)",
        rows.len()
    );
    for r in &rows {
        match r.kind.as_str() {
            "reg" => {
                let reg = a.register(&r.name).unwrap();
                assert_eq!(reg.ip, r.ip, "{}: ip", r.name);
                assert_eq!(reg.base_idx.to_string(), r.base_idx, "{}: base_idx", r.name);
                assert_eq!(u64::from(reg.offset), r.value, "{}: offset", r.name);
                assert_eq!(reg.confirmed, r.confirmed, "{}: confirmed", r.name);
            }
            "smn" => {
                let s = a.smn(&r.name).unwrap();
                assert_eq!(u64::from(s.address), r.value, "{}: address", r.name);
                assert_eq!(s.confirmed, r.confirmed, "{}: confirmed", r.name);
            }
            "base" => {
                let b = a
                    .file
                    .bases
                    .iter()
                    .find(|b| {
                        b.ip == r.ip && b.instance == 0 && b.base_idx.to_string() == r.base_idx
                    })
                    .unwrap_or_else(|| panic!("no base {} idx {}", r.ip, r.base_idx));
                assert_eq!(
                    u64::from(b.base),
                    r.value,
                    "base {} idx {}",
                    r.ip,
                    r.base_idx
                );
                assert_eq!(
                    b.confirmed, r.confirmed,
                    "base {} idx {}: confirmed",
                    r.ip, r.base_idx
                );
            }
            "msg" => {
                let m = a.message(&r.name).unwrap();
                assert_eq!(u64::from(m.id), r.value, "message {}", r.name);
                assert_eq!(m.confirmed, r.confirmed, "message {}: confirmed", r.name);
            }
            "resp" => {
                let code = u32::try_from(r.value).unwrap();
                let resp = a
                    .response(code)
                    .unwrap_or_else(|| panic!("no response {code:#x}"));
                assert_eq!(resp.name, r.name, "response {code:#x}");
                assert_eq!(resp.confirmed, r.confirmed);
            }
            _ => unreachable!(),
        }
    }
    // And the other way: nothing in the file is missing from the table.
    let has = |kind: &str, name: &str| rows.iter().any(|r| r.kind == kind && r.name == name);
    for reg in &a.file.registers {
        assert!(
            has("reg", &reg.name),
            "register {} is not in docs/regs.md",
            reg.name
        );
    }
    for s in &a.file.smn {
        assert!(
            has("smn", &s.name),
            "SMN register {} is not in docs/regs.md",
            s.name
        );
    }
    for m in &a.file.messages {
        assert!(
            has("msg", &m.name),
            "message {} is not in docs/regs.md",
            m.name
        );
    }
    for resp in &a.file.responses {
        assert!(
            has("resp", &resp.name),
            "response {} is not in docs/regs.md",
            resp.name
        );
    }
    for b in &a.file.bases {
        assert!(
            rows.iter()
                .any(|r| r.kind == "base" && r.ip == b.ip && r.base_idx == b.base_idx.to_string()),
            "base {} idx {} is not in docs/regs.md",
            b.ip,
            b.base_idx
        );
    }
}

#[test]
fn mp1_13_0_4_mailbox_is_at_0x58a08_0x58a48_0x58a68_with_base_0x16000() {
    // Pin the base explicitly so the derivation holds whatever the shipped file says.
    let db = with_overlay(
        "asic = \"phoenix\"\n[[bases]]\nip = \"MP1\"\ninstance = 0\nbase_idx = 1\nbase = 0x16000\n",
    )
    .unwrap();
    let a = db.asic("phoenix").unwrap();
    let m = a.mailbox(Some("13.0.4")).unwrap();
    assert_eq!(m.msg, 0x58A08);
    assert_eq!(m.arg, 0x58A48);
    assert_eq!(m.resp, 0x58A68);
    assert_eq!(m.msg_register, "MP1_SMN_C2PMSG_66");
    // The shipped file carries the same (unconfirmed) base.
    let shipped = RegsDb::embedded().unwrap();
    let s = shipped
        .asic("phoenix")
        .unwrap()
        .mailbox(Some("13.0.4"))
        .unwrap();
    assert_eq!((s.msg, s.arg, s.resp), (0x58A08, 0x58A48, 0x58A68));
    assert!(!s.base_confirmed);
}

#[test]
fn show_json_has_register_offsets_and_the_mailbox() {
    let db = RegsDb::embedded().unwrap();
    let show = db.asic("phoenix").unwrap().show().unwrap();
    let v = serde_json::to_value(&show).unwrap();
    let regs = v["registers"].as_array().unwrap();
    let mm = regs.iter().find(|r| r["name"] == "MM_INDEX_HI").unwrap();
    assert_eq!(mm["bar_offset"].as_u64(), Some(0x18));
    assert_eq!(v["mailbox"]["msg"].as_u64(), Some(0x58A08));
    assert_eq!(v["mailbox"]["arg"].as_u64(), Some(0x58A48));
    assert_eq!(v["mailbox"]["resp"].as_u64(), Some(0x58A68));
}

#[test]
fn malformed_files_are_rejected_naming_file_and_field() {
    let cases: &[(&str, &[&str])] = &[
        (
            "asic = \"phoenix\"\n[[registers]]\nname = \"MM_DATA\"\nfields = [{ name = \"MM_DATA\", width = 33 }]\n",
            &["overlay/phoenix.toml:", "MM_DATA", "width 33"],
        ),
        (
            "asic = \"phoenix\"\n[[registers]]\nname = \"MM_INDEX\"\nfields = [{ name = \"EXTRA\", lsb = 30, width = 1 }]\n",
            &["overlay/phoenix.toml:", "EXTRA", "overlaps"],
        ),
        (
            "asic = \"phoenix\"\n[[registers]]\nname = \"GRBM_STATUS\"\nip = \"NOPE\"\n",
            &["overlay/phoenix.toml:", "GRBM_STATUS", "unknown IP 'NOPE'"],
        ),
        (
            "asic = \"phoenix\"\n[[registers]]\nname = \"GRBM_STATUS\"\nbase_idx = 7\n",
            &["overlay/phoenix.toml:", "GRBM_STATUS", "no base for GC instance 0 base_idx 7"],
        ),
        (
            // The indirect pair itself must be in the BAR; other registers past it
            // are reached through the pair.
            "asic = \"phoenix\"\n[[registers]]\nname = \"PCIE_DATA2\"\noffset = 0x20000\n",
            &["overlay/phoenix.toml:", "PCIE_DATA2", "outside the 0x80000-byte BAR"],
        ),
        (
            "asic = \"phoenix\"\n[[messages]]\nname = \"Copy\"\nid = 0x11\nargs = \"\"\nresult = \"\"\nsource = \"x\"\nconfirmed = false\n",
            &["overlay/phoenix.toml:", "Copy", "id 0x11 used twice"],
        ),
        (
            "asic = \"phoenix\"\n[[health]]\nname = \"gfx_idle\"\ntarget = \"NO_SUCH_REG\"\n",
            &["overlay/phoenix.toml:", "gfx_idle", "target"],
        ),
        (
            "asic = \"phoenix\"\n[bar]\nsize = \"big\"\n",
            &["overlay/phoenix.toml:3:", "big"],
        ),
        ("asic = \"phoenix\"\n[[bases\n", &["overlay/phoenix.toml:2:"]),
        ("name = \"no asic\"\n", &["overlay/phoenix.toml:1:1:", "asic"]),
    ];
    for (text, wants) in cases {
        let e = with_overlay(text).unwrap_err();
        assert!(matches!(e, Error::FileParse { .. }), "{e:?}");
        let msg = e.to_string();
        for w in *wants {
            assert!(msg.contains(w), "'{msg}' lacks '{w}' for:\n{text}");
        }
    }
}

#[test]
fn overlay_dirs_are_read_in_name_order_and_a_new_asic_is_added() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.toml"),
        "asic = \"phoenix\"\n[[bases]]\nip = \"GC\"\ninstance = 0\nbase_idx = 0\nbase = 0x1000\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("b.toml"),
        "asic = \"phoenix\"\n[[bases]]\nip = \"GC\"\ninstance = 0\nbase_idx = 0\nbase = 0x2000\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
    let mut other = EMBEDDED[0]
        .1
        .replace("asic = \"phoenix\"", "asic = \"phoenix-copy\"");
    // A name or PCI id picks one file: the copy gets its own.
    other = other.replace("device = 0x1900", "device = 0x19ff");
    other = other.replace("device = 0x15bf", "device = 0x15fe");
    other = other.replace("aliases = [\"hawk_point\"]", "aliases = [\"hawk_copy\"]");
    std::fs::write(dir.path().join("c.toml"), other).unwrap();
    let db = RegsDb::load(&[dir.path().to_path_buf()]).unwrap();
    let gs = db.asic("phoenix").unwrap().resolve("GRBM_STATUS").unwrap();
    assert_eq!(gs.bar_offset, (0x2000 + 0xda4) * 4);
    assert_eq!(db.asics().len(), regs_embedded_count() + 1);
    assert_eq!(
        db.by_pci_id(0x1002, 0x19ff).unwrap().asic_name(),
        "phoenix-copy"
    );
    let missing = RegsDb::load(&[dir.path().join("nope")]).unwrap_err();
    assert!(matches!(missing, Error::Io { .. }));
}

/// The docs/regs.md family table, row by row against the embedded files.
#[test]
fn docs_family_table_matches_the_embedded_files() {
    let db = RegsDb::embedded().unwrap();
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/regs.md"))
        .expect("docs/regs.md");
    let mut seen = Vec::new();
    for line in doc.lines() {
        let c: Vec<&str> = line.split('|').map(str::trim).collect();
        // | asic | family | ids | mp1 | message | wait | mailbox | base from | code | msg conf | base conf | ids conf |
        if c.len() != 14 {
            continue;
        }
        let Ok(a) = db.asic(c[1]) else { continue };
        if a.asic_name() != c[1] {
            continue;
        }
        let name = c[1];
        seen.push(name.to_string());
        assert_eq!(a.family(), c[2], "{name}: family");
        let ids: Vec<String> = a
            .file
            .pci_ids
            .iter()
            .map(|p| format!("{:04x}", p.device))
            .collect();
        assert_eq!(ids.join(", "), c[3], "{name}: ids");
        assert_eq!(a.file.mp1_versions.join(", "), c[4], "{name}: MP1 versions");
        let m2 = a.mode2();
        let (msg, wait) = match (&m2.message, m2.offered) {
            (Some(m), true) => (
                format!("{m} {:#x}({})", a.message(m).unwrap().id, m2.arg.unwrap()),
                match m2.wait {
                    resetlab::amd::regs::Mode2Wait::Answer => "answer".to_string(),
                    resetlab::amd::regs::Mode2Wait::None => {
                        format!("none, then {} ms", m2.settle_ms)
                    }
                },
            ),
            _ => ("not offered".to_string(), "-".to_string()),
        };
        assert_eq!(msg, c[5], "{name}: message");
        assert_eq!(wait, c[6], "{name}: wait");
        match a.mailbox(None) {
            Ok(mb) => {
                let want = format!(
                    "{} {:#x}/{:#x}/{:#x}",
                    if mb.beyond_bar { "SMN" } else { "BAR" },
                    mb.msg,
                    mb.arg,
                    mb.resp
                );
                assert!(
                    c[7].starts_with(&want),
                    "{name}: mailbox '{}' is not '{want}'",
                    c[7]
                );
                assert_eq!(
                    if mb.base_confirmed { "yes" } else { "no" },
                    c[11],
                    "{name}: base confirmed"
                );
            }
            Err(_) => {
                assert_eq!(c[7], "-", "{name}: no mailbox");
                assert_eq!(c[11], "-", "{name}");
            }
        }
        assert_eq!(
            if m2.confirmed { "yes" } else { "no" },
            c[10],
            "{name}: message confirmed"
        );
        let n = a.file.pci_ids.iter().filter(|p| p.confirmed).count();
        let ids_conf = match n {
            0 => "none",
            x if x == a.file.pci_ids.len() => "all",
            _ => "some",
        };
        assert_eq!(ids_conf, c[12], "{name}: ids confirmed");
    }
    let mut all: Vec<String> = db
        .asics()
        .iter()
        .map(|a| a.asic_name().to_string())
        .collect();
    all.sort();
    seen.sort();
    assert_eq!(seen, all, "every shipped file has one row in docs/regs.md");
}

fn regs_embedded_count() -> usize {
    RegsDb::embedded().unwrap().asics().len()
}

#[test]
fn discovery_overlay_confirms_the_bases() {
    let d = discovery::parse(&discovery_blob::build_phoenix_blob(), Mode::Strict).unwrap();
    let o = discovery::overlay_from_bases("phoenix", &d, "ip discovery on 0000:c5:00.0");
    let db = with_overlay(&o).unwrap();
    let a = db.asic("phoenix").unwrap();
    assert!(a.mailbox(Some("13.0.4")).unwrap().base_confirmed);
    let checks = a.check_bases(&d);
    assert!(checks.iter().all(|c| c.device.is_some()));
    // A table with MP1 segment 0 moved to 0x16200 (renoir_ip_offset.h's value): the
    // guess differs, segment 1 agrees.
    let moved = BlobSpec::phoenix_like()
        .with_bases([("MP1", &[0x16200u64, 0x16000][..])])
        .unwrap();
    let d = discovery::parse(&discovery_blob::build_discovery_blob(&moved), Mode::Strict).unwrap();
    let before = RegsDb::embedded().unwrap();
    let c0 = before.asic("phoenix").unwrap().check_bases(&d);
    let mp1_0 = c0
        .iter()
        .find(|c| c.ip == "MP1" && c.base_idx == 0)
        .unwrap();
    assert_eq!(mp1_0.verdict(), "differs");
    let mp1_1 = c0
        .iter()
        .find(|c| c.ip == "MP1" && c.base_idx == 1)
        .unwrap();
    assert_eq!(mp1_1.verdict(), "agrees");
}

fn arb_ip() -> impl Strategy<Value = IpSpec> {
    (
        0u16..300,
        any::<u8>(),
        any::<[u8; 4]>(),
        prop::collection::vec(any::<u64>(), 0..8),
    )
        .prop_map(|(hw_id, instance, v, bases)| IpSpec {
            hw_id,
            instance,
            major: v[0],
            minor: v[1],
            revision: v[2],
            flags: v[3],
            bases,
        })
}

fn arb_spec() -> impl Strategy<Value = BlobSpec> {
    (
        any::<bool>(),
        prop::collection::vec(prop::collection::vec(arb_ip(), 0..12), 0..4),
    )
        .prop_map(|(b64, dies)| BlobSpec {
            table_version: if b64 { 4 } else { 3 },
            base_addr_64_bit: b64,
            dies,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn discovery_parse_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let _ = discovery::parse(&bytes, Mode::Strict);
        let _ = discovery::parse(&bytes, Mode::Lenient);
    }

    #[test]
    fn discovery_parse_never_panics_on_mutated_blobs(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..12),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut blob = discovery_blob::build_phoenix_blob();
        for (i, v) in edits {
            let at = i.index(blob.len());
            blob[at] = v;
        }
        if truncate {
            blob.truncate(cut.index(blob.len()));
        }
        let _ = discovery::parse(&blob, Mode::Strict);
        let _ = discovery::parse(&blob, Mode::Lenient);
    }

    #[test]
    fn built_blobs_parse_back_to_their_spec(spec in arb_spec()) {
        let d = discovery::parse(&discovery_blob::build_discovery_blob(&spec), Mode::Strict).unwrap();
        prop_assert!(d.warnings.is_empty(), "{:?}", d.warnings);
        prop_assert_eq!(d.dies.len(), spec.dies.len());
        for (die, want) in d.dies.iter().zip(&spec.dies) {
            prop_assert_eq!(die.ips.len(), want.len());
            for (got, w) in die.ips.iter().zip(want) {
                prop_assert_eq!(got.hw_id, w.hw_id);
                prop_assert_eq!(got.instance, w.instance);
                let mask: u64 = if spec.base_addr_64_bit { 0x3FFF_FFFF } else { 0xFFFF_FFFF };
                let wb: Vec<u32> = w.bases.iter().map(|b| (b & mask) as u32).collect();
                prop_assert_eq!(&got.bases, &wb);
            }
        }
    }

    #[test]
    fn regs_loader_never_panics_on_arbitrary_text(text in "\\PC{0,400}") {
        if let Err(e) = with_overlay(&text) {
            prop_assert!(matches!(e, Error::FileParse { .. }), "{:?}", e);
        }
    }

    #[test]
    fn regs_loader_never_panics_on_mutated_phoenix_files(
        at in any::<prop::sample::Index>(),
        len in 0usize..40,
        insert in "[a-z0-9_=\\[\\]\"{}, .\n-]{0,20}",
    ) {
        let src = EMBEDDED[0].1;
        let mut start = at.index(src.len());
        while !src.is_char_boundary(start) { start -= 1; }
        let mut end = (start + len).min(src.len());
        while !src.is_char_boundary(end) { end -= 1; }
        let mutated = format!("{}{}{}", &src[..start], insert, &src[end..]);
        let r = RegsDb::from_texts(&[(PathBuf::from("mut/phoenix.toml"), mutated)]);
        if let Err(e) = r {
            let msg = e.to_string();
            prop_assert!(matches!(e, Error::FileParse { .. }), "{:?}", e);
            prop_assert!(msg.starts_with("mut/phoenix.toml:"), "{}", msg);
        }
    }

    #[test]
    fn regs_loader_never_panics_on_any_mutated_shipped_file(
        file in any::<prop::sample::Index>(),
        at in any::<prop::sample::Index>(),
        len in 0usize..40,
        insert in "[a-z0-9_=\\[\\]\"{}, .\n-]{0,20}",
    ) {
        let (path, src) = EMBEDDED[file.index(EMBEDDED.len())];
        let mut start = at.index(src.len());
        while !src.is_char_boundary(start) { start -= 1; }
        let mut end = (start + len).min(src.len());
        while !src.is_char_boundary(end) { end -= 1; }
        let mutated = format!("{}{}{}", &src[..start], insert, &src[end..]);
        let r = RegsDb::from_texts(&[(PathBuf::from(path), mutated)]);
        match r {
            Ok(db) => {
                // Whatever loads resolves and shows without a panic.
                for a in db.asics() {
                    let _ = a.show().map(|s| s.to_text());
                    let _ = a.mailbox_for(Some("13.0.4"));
                }
            }
            Err(e) => {
                let msg = e.to_string();
                prop_assert!(matches!(e, Error::FileParse { .. }), "{:?}", e);
                prop_assert!(msg.starts_with(path), "{}", msg);
            }
        }
    }

    #[test]
    fn a_bad_offset_or_width_names_the_register(
        pick in any::<prop::sample::Index>(),
        offset in any::<u32>(),
        width in 33u8..=255,
    ) {
        let db = with_overlay("asic = \"phoenix\"\n").unwrap();
        let regs = &db.asic("phoenix").unwrap().file.registers;
        let r = &regs[pick.index(regs.len())];
        let over = format!("asic = \"phoenix\"\n[[registers]]\nname = \"{}\"\noffset = {offset}\n", r.name);
        match with_overlay(&over) {
            Ok(db2) => {
                // In the BAR, or past it and reached through the indirect pair
                // (which itself must stay in the BAR).
                let a = db2.asic("phoenix").unwrap();
                let res = a.resolve(&r.name).unwrap();
                let pair = a.file.indirect.as_ref().unwrap();
                let is_pair = r.name == pair.index || r.name == pair.data;
                prop_assert!(res.bar_offset + 4 <= 0x80000 || (!is_pair && res.bar_offset % 4 == 0 && res.bar_offset <= u64::from(u32::MAX) - 3));
            }
            Err(e) => {
                let msg = e.to_string();
                prop_assert!(msg.contains(&r.name) && msg.contains("outside"), "{}", msg);
            }
        }
        let over = format!(
            "asic = \"phoenix\"\n[[registers]]\nname = \"{}\"\nfields = [{{ name = \"{}\", width = {width} }}]\n",
            r.name, r.fields[0].name
        );
        let msg = with_overlay(&over).unwrap_err().to_string();
        prop_assert!(msg.contains(&r.name) && msg.contains(&r.fields[0].name), "{}", msg);
    }
}
