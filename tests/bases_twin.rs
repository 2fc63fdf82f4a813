//! The device's own register bases on the twin: its GPU holds an IP discovery
//! table in VRAM built from the profile's `[discovery.bases]`; resetlab reads
//! it through MM_INDEX/MM_DATA and follows it (not regs/), in the BAR or
//! through PCIE_INDEX2/PCIE_DATA2 past it.

mod common;
use common::*;

use resetlab::sim::profile::Profile;
use resetlab::sim::Twin;

const IGPU: &str = "0000:c5:00.0";
/// MP1 segment 1 moved inside the 512 KiB BAR: msg at (0x17000 + 0x282) * 4 = 0x5ca08.
const INSIDE: u64 = 0x17000;
/// Moved past it: msg at (0x30000 + 0x282) * 4 = 0xc0a08, an SMN address.
#[allow(dead_code)] // used by the tests below once they land
const PAST: u64 = 0x30000;

fn twin_with_mp1(seg1: u64) -> Twin {
    let mut p = Profile::default();
    p.discovery.bases.insert("MP1".into(), vec![0x16000, seg1]);
    Twin::running(p).expect("twin with model")
}

fn sys(t: &Twin) -> String {
    sysfs_arg(&t.sysfs)
}

fn mp1_seg1(v: &serde_json::Value) -> &serde_json::Value {
    v["resolved"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["ip"] == "MP1" && b["base_idx"] == 1)
        .expect("MP1 segment 1 in the report")
}

#[test]
fn regs_bases_reads_the_moved_base_from_the_device_and_caches_it_per_boot() {
    let t = twin_with_mp1(INSIDE);
    let s = sys(&t);
    let v = json(&["--sysfs", &s, "regs", "bases", IGPU, "--json"]);
    assert_eq!(v["source"], "device_table", "{v}");
    assert_eq!(v["cached"], false);
    let b = mp1_seg1(&v);
    assert_eq!(b["base"].as_u64(), Some(INSIDE), "{b}");
    assert_eq!(b["source"], "device_table");
    assert_eq!(b["confirmed"], true);
    assert_eq!(b["verdict"], "differs");
    // The read wrote MM_INDEX (byte 0) with bit 31 set, journalled, and put it back.
    let writes = v["writes"].as_array().unwrap();
    assert!(writes
        .iter()
        .any(|w| w["offset"] == 0 && w["value"].as_str().unwrap().starts_with("0x9fff")));
    let cache = v["cache"].as_str().unwrap().to_string();
    assert!(
        cache.contains("7e1a5e00-0000-4000-8000-000000000001"),
        "{cache}"
    );
    // Second time: from the cache, no write.
    let v2 = json(&["--sysfs", &s, "regs", "bases", IGPU, "--json"]);
    assert_eq!(v2["cached"], true, "{v2}");
    assert_eq!(v2["writes"].as_array().unwrap().len(), 0);
    assert_eq!(mp1_seg1(&v2)["base"].as_u64(), Some(INSIDE));
    // Human output names the source of each base.
    let text = run_ok(&["--sysfs", &s, "regs", "bases", IGPU]);
    assert!(
        text.contains("bases from device table (VRAM, cached this boot)"),
        "{text}"
    );
    assert!(t.model_errors().is_empty(), "{:?}", t.model_errors());
}
