//! Arbitrary input never panics the register-access path: any discovery table
//! (arbitrary bytes, or a well-formed table with arbitrary bases) resolved into
//! the register file and driven through the SMU client over a BAR file, and any
//! offset or SMN address through `RegIo`.

use proptest::prelude::*;

use resetlab::amd::discovery::{self, Mode};
use resetlab::amd::regio::{IndirectPair, RegIo};
use resetlab::amd::regs::RegsDb;
use resetlab::amd::smu::Smu;
use resetlab::journal::Journal;
use resetlab::pci::mmio::{Access, BarMap};
use resetlab::sim::discovery_blob::{self, BlobSpec};

const BAR5: u64 = 0x80000;

fn bar(dir: &tempfile::TempDir) -> BarMap {
    let p = dir.path().join("resource5");
    std::fs::File::create(&p).unwrap().set_len(BAR5).unwrap();
    BarMap::open_file(&p, BAR5, Access::ReadWrite).unwrap()
}

/// Resolve `d` into phoenix and send a message in dry-run and for real (no model:
/// the answer never comes; the poll bound is zero).
fn drive(d: &discovery::Discovery) {
    let db = RegsDb::embedded().unwrap();
    let Ok(a) = db
        .asic("phoenix")
        .unwrap()
        .with_discovered_bases(d, "proptest")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let Ok(mut smu) = Smu::new(&a, None, bar(&dir), resetlab::pci::Bdf::new(0, 0xc5, 0, 0)) else {
        return;
    };
    smu.timeouts.prewait = std::time::Duration::ZERO;
    smu.timeouts.answer = std::time::Duration::ZERO;
    for dry in [true, false] {
        let mut j = Journal::new(dry);
        let _ = smu.send(&mut j, "TestMessage", 0);
        let _ = smu.firmware_running(&mut j);
        let _ = smu.response_now(&mut j);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn arbitrary_table_bytes_never_panic_parse_or_access(bytes in prop::collection::vec(any::<u8>(), 0..1024)) {
        for mode in [Mode::Strict, Mode::Lenient] {
            if let Ok(d) = discovery::parse(&bytes, mode) {
                drive(&d);
            }
        }
    }

    #[test]
    fn arbitrary_bases_in_a_valid_table_never_panic(
        mp1 in prop::collection::vec(any::<u64>(), 0..4),
        nbif in prop::collection::vec(any::<u64>(), 0..4),
        gc in prop::collection::vec(any::<u64>(), 0..2),
    ) {
        let spec = BlobSpec::phoenix_like()
            .with_bases([("MP1", &mp1[..]), ("NBIF", &nbif[..]), ("GC", &gc[..])])
            .unwrap();
        let d = discovery::parse(&discovery_blob::build_discovery_blob(&spec), Mode::Strict).unwrap();
        drive(&d);
    }

    #[test]
    fn any_offset_address_or_pair_never_panics(
        off in any::<u64>(),
        addr in any::<u32>(),
        v in any::<u32>(),
        index in any::<u64>(),
        data in any::<u64>(),
        dry in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut io = RegIo::new(bar(&dir), resetlab::pci::Bdf::new(0, 0xc5, 0, 0), Some(IndirectPair { index, data }));
        let mut j = Journal::new(dry);
        let _ = io.read(&mut j, off);
        let _ = io.write(&mut j, off, v);
        let _ = io.smn_read(&mut j, addr);
        let _ = io.smn_write(&mut j, addr, v);
        let _ = io.poll_nonzero(&mut j, off, std::time::Duration::ZERO);
    }
}
