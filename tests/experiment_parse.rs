//! The experiment language: parsing, resolution, the example files, and fuzzing.

use std::path::Path;

use proptest::prelude::*;
use resetlab::experiment::{
    parse, parse_duration, parse_number, resolve, CapKind, CfgRef, Experiment, FieldRef,
    MapResolver, MsgRef, Op, Plan, RegRef, Step, Value, Width, MAX_STEPS,
};
use resetlab::Error;

const ALIVE: &str = include_str!("../tools/experiments/phoenix-smu-alive.rlx");
const MODE2: &str = include_str!("../tools/experiments/phoenix-mode2.rlx");
const E1000E: &str = include_str!("../tools/experiments/e1000e-ctrl-rst.rlx");

/// Phoenix names as the brief gives them: the MP1 mailbox in BAR 5 (512 KiB) at byte offsets
/// 0x58A08 (msg, C2PMSG_66), 0x58A48 (arg, C2PMSG_82), 0x58A68 (resp, C2PMSG_90), and three
/// messages from `smu_v13_0_4_ppsmc.h`.
fn phoenix() -> MapResolver {
    MapResolver::new(5, 512 * 1024)
        .register("MP1_SMN_C2PMSG_66", 0x58a08, 4)
        .register("MP1_SMN_C2PMSG_82", 0x58a48, 4)
        .register("MP1_SMN_C2PMSG_90", 0x58a68, 4)
        .register("SMU_MSG", 0x58a08, 4)
        .register("SMU_ARG", 0x58a48, 4)
        .register("SMU_RESP", 0x58a68, 4)
        // A made-up register with fields, to exercise `modify` by name.
        .register("TEST_CNTL", 0x100, 4)
        .field("TEST_CNTL", "ENABLE", 0, 1)
        .field("TEST_CNTL", "MODE", 4, 3)
        .field("TEST_CNTL", "TOP", 28, 4)
        .message("TestMessage", 0x1)
        .message("GetPmfwVersion", 0x2)
        .message("GfxDeviceDriverReset", 0x11)
        .reset_methods(&[
            "flr",
            "bus",
            "pm",
            "smu_mode2",
            "remove_rescan",
            "kernel:flr",
        ])
}

/// The guest bench's e1000e: BAR 0, 128 KiB (QEMU's e1000e MMIO size), no register database.
fn e1000e() -> MapResolver {
    MapResolver::new(0, 128 * 1024).reset_methods(&["pm", "bus", "kernel:pm", "kernel:bus"])
}

fn p(text: &str) -> Experiment {
    match parse(Path::new("t.rlx"), text) {
        Ok(e) => e,
        Err(e) => panic!("{text:?} should parse: {}", e.one_line()),
    }
}

fn plan(text: &str) -> Plan {
    match resolve(&p(text), &phoenix()) {
        Ok(pl) => pl,
        Err(e) => panic!("{text:?} should resolve: {}", e.one_line()),
    }
}

/// The (line, column, reason) of a parse error.
fn parse_err(text: &str) -> (usize, usize, String) {
    match parse(Path::new("bad.rlx"), text) {
        Ok(e) => panic!("{text:?} should not parse, got {e:?}"),
        Err(Error::FileParse {
            path,
            line,
            column,
            reason,
        }) => {
            assert_eq!(path, Path::new("bad.rlx"));
            (line, column, reason)
        }
        Err(other) => panic!("{text:?}: wrong error kind {other:?}"),
    }
}

/// The (line, column, reason) of a resolution error against the Phoenix resolver.
fn resolve_err(text: &str) -> (usize, usize, String) {
    match resolve(&p(text), &phoenix()) {
        Ok(pl) => panic!("{text:?} should not resolve, got\n{pl}"),
        Err(Error::FileParse {
            line,
            column,
            reason,
            ..
        }) => (line, column, reason),
        Err(other) => panic!("{text:?}: wrong error kind {other:?}"),
    }
}

fn only_step(text: &str) -> Step {
    let e = p(text);
    assert_eq!(e.steps.len(), 1, "{text:?}");
    e.steps
        .into_iter()
        .next()
        .map(|s| s.step)
        .unwrap_or(Step::Sleep { us: 0 })
}

fn ops(pl: &Plan) -> Vec<String> {
    pl.steps.iter().map(|s| s.to_string()).collect()
}

// ---- numbers and durations --------------------------------------------------------------------

#[test]
fn numbers_in_every_base_with_underscores() {
    assert_eq!(parse_number("0x58a68"), Ok(0x58a68));
    assert_eq!(parse_number("0X58A68"), Ok(0x58a68));
    assert_eq!(parse_number("0b1010"), Ok(10));
    assert_eq!(parse_number("1_000"), Ok(1000));
    assert_eq!(parse_number("0x0400_0000"), Ok(0x0400_0000));
    assert_eq!(parse_number("18446744073709551615"), Ok(u64::MAX));
    assert_eq!(
        parse_number("18446744073709551616"),
        Err("too large for 64 bits".into())
    );
    assert_eq!(parse_number("0x"), Err("no digits".into()));
    assert_eq!(parse_number("0x_1"), Err("no digits".into()));
    assert_eq!(parse_number("0b2"), Err("'2' is not a base-2 digit".into()));
    assert_eq!(
        parse_number("12ab"),
        Err("'a' is not a base-10 digit".into())
    );
    assert_eq!(parse_number(""), Err("no digits".into()));
}

#[test]
fn durations_need_a_unit_and_stay_under_the_limit() {
    assert_eq!(parse_duration("100ms"), Ok(100_000));
    assert_eq!(parse_duration("2s"), Ok(2_000_000));
    assert_eq!(parse_duration("1_500us"), Ok(1500));
    assert_eq!(
        parse_duration("100"),
        Err("a unit (us, ms, s) is needed".into())
    );
    assert_eq!(parse_duration("ms"), Err("no digits".into()));
    assert_eq!(
        parse_duration("5min"),
        Err("unknown unit 'min' (use us, ms or s)".into())
    );
    assert_eq!(
        parse_duration("61s"),
        Err("longer than the limit of 60s".into())
    );
    assert_eq!(
        parse_duration("99999999999999999999s"),
        Err("too large for 64 bits".into())
    );
}

// ---- each step form ---------------------------------------------------------------------------

#[test]
fn read_and_write_by_name_and_offset() {
    assert_eq!(
        only_step("read SMU_RESP"),
        Step::Read {
            reg: loc(RegRef::Name("SMU_RESP".into()), 6)
        }
    );
    match only_step("write @0x58a68 0") {
        Step::Write { reg, value } => {
            assert_eq!(reg.item, RegRef::BarOffset(0x58a68));
            assert_eq!(value.item, Value::Literal(0));
            assert_eq!(value.column, 16);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        ops(&plan("write MP1_SMN_C2PMSG_90 0\nread @0x58a68")),
        [
            "write BAR5+0x58a68 (MP1_SMN_C2PMSG_90) <- 0x00000000",
            "read BAR5+0x58a68",
        ]
    );
}

fn loc<T>(item: T, column: usize) -> resetlab::experiment::Loc<T> {
    resetlab::experiment::Loc { item, column }
}

#[test]
fn modify_by_field_name_and_bit_range() {
    match only_step("modify TEST_CNTL ENABLE=1 MODE = 5 [31:28]=0xa") {
        Step::Modify { fields, .. } => {
            assert_eq!(fields.len(), 3);
            assert_eq!(fields[0].field.item, FieldRef::Name("ENABLE".into()));
            assert_eq!(fields[2].field.item, FieldRef::Bits { hi: 31, lo: 28 });
        }
        other => panic!("{other:?}"),
    }
    let pl = plan("modify TEST_CNTL ENABLE=1 MODE=5");
    match &pl.steps[0].op {
        Op::Modify { mask, value, .. } => {
            assert_eq!(*mask, 0x71);
            assert_eq!(*value, 0x51);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        ops(&plan("modify @0x0 [26]=1")),
        ["modify BAR5+0x0 mask 0x04000000 <- 0x04000000 ([26]=0x1)"]
    );
}

#[test]
fn poll_expect_and_sleep() {
    assert_eq!(
        ops(&plan(
            "poll SMU_RESP 0xffffffff 0x1 2s\nexpect SMU_RESP 0xff 1\nsleep 1500us\nsleep 100ms"
        )),
        [
            "poll BAR5+0x58a68 (SMU_RESP) & 0xffffffff == 0x00000001 within 2s",
            "expect BAR5+0x58a68 (SMU_RESP) & 0x000000ff == 0x00000001",
            "sleep 1500us",
            "sleep 100ms",
        ]
    );
    match only_step("poll SMU_RESP 0xffffffff 0x1 2s") {
        Step::Poll { timeout_us, .. } => assert_eq!(timeout_us, 2_000_000),
        other => panic!("{other:?}"),
    }
}

#[test]
fn config_access_by_offset_name_and_capability() {
    let cases: &[(&str, CfgRef, Width)] = &[
        ("cfg-read 0x44 l", CfgRef::Offset(0x44), Width::L),
        ("cfg-read 0x44.l", CfgRef::Offset(0x44), Width::L),
        ("cfg-read 0x3e 16", CfgRef::Offset(0x3e), Width::W),
        ("cfg-read 4.w", CfgRef::Offset(4), Width::W),
        ("cfg-read COMMAND", CfgRef::Offset(4), Width::W),
        ("cfg-read command.b", CfgRef::Offset(4), Width::B),
        ("cfg-read VENDOR_ID", CfgRef::Offset(0), Width::W),
        ("cfg-read BRIDGE_CONTROL", CfgRef::Offset(0x3e), Width::W),
        (
            "cfg-read CAP_PM+4.w",
            CfgRef::Cap {
                name: "CAP_PM".into(),
                kind: CapKind::Std,
                id: 1,
                plus: 4,
            },
            Width::W,
        ),
        (
            "cfg-read CAP_EXP+8 w",
            CfgRef::Cap {
                name: "CAP_EXP".into(),
                kind: CapKind::Std,
                id: 0x10,
                plus: 8,
            },
            Width::W,
        ),
        (
            "cfg-read ecap_aer+0x4.L",
            CfgRef::Cap {
                name: "ECAP_AER".into(),
                kind: CapKind::Ext,
                id: 1,
                plus: 4,
            },
            Width::L,
        ),
    ];
    for (text, want, width) in cases {
        match only_step(text) {
            Step::CfgRead { cfg } => {
                assert_eq!(&cfg.reg, want, "{text}");
                assert_eq!(cfg.width, *width, "{text}");
            }
            other => panic!("{text}: {other:?}"),
        }
    }
    assert_eq!(
        ops(&plan(
            "cfg-write COMMAND 0x406\ncfg-write CAP_EXP+8 w 0x8000\ncfg-write 0x44.b 0xff"
        )),
        [
            "cfg-write 0x004.w (COMMAND) <- 0x0406",
            "cfg-write CAP_EXP+0x8.w <- 0x8000",
            "cfg-write 0x044.b <- 0xff",
        ]
    );
}

#[test]
fn smn_smu_reset_snapshot_label() {
    assert_eq!(
        ops(&plan(
            "smn-read 0x03b10028\nsmn-write 0x03b10028 0x1\nsmu TestMessage\nsmu GfxDeviceDriverReset 2 nowait\n\
             smu 0x2\nsmu 0x11 2\nreset kernel:flr\nsnapshot before SMU_MSG @0x58a48\nsnapshot plain\nlabel go"
        )),
        [
            "smn-read 0x03b10028",
            "smn-write 0x03b10028 <- 0x00000001",
            "smu 0x1 (TestMessage) arg 0x00000000",
            "smu 0x11 (GfxDeviceDriverReset) arg 0x00000002 nowait",
            "smu 0x2 arg 0x00000000",
            "smu 0x11 arg 0x00000002",
            "reset kernel:flr",
            "snapshot before: BAR5+0x58a08 (SMU_MSG), BAR5+0x58a48",
            "snapshot plain (default registers)",
            "label go",
        ]
    );
    match only_step("smu GetPmfwVersion") {
        Step::Smu { msg, arg, wait } => {
            assert_eq!(msg.item, MsgRef::Name("GetPmfwVersion".into()));
            assert!(arg.is_none());
            assert!(wait);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn comments_blank_lines_and_spans() {
    let e = p("# header\n\n   read SMU_RESP   # trailing\n\twrite @0x0 1#x\n");
    assert_eq!(e.steps.len(), 2);
    assert_eq!(e.steps[0].span.line, 3);
    assert_eq!(e.steps[0].span.column, 4);
    assert_eq!(e.steps[0].span.text, "read SMU_RESP");
    assert_eq!(e.steps[1].span.line, 4);
    assert_eq!(e.steps[1].span.column, 2);
    assert_eq!(e.steps[1].span.text, "write @0x0 1");
    // CRLF line ends are whitespace.
    assert_eq!(p("read SMU_RESP\r\nsleep 1ms\r\n").steps.len(), 2);
}

// ---- variables and repeats --------------------------------------------------------------------

#[test]
fn variables_substitute_in_value_positions() {
    let text = "let OK = 0x1\nlet MASK = 0xffff_ffff\nlet ALSO = $OK\n\
                poll SMU_RESP $MASK $ALSO 1s\nsmu $OK $OK\nwrite SMU_ARG $MASK";
    let e = p(text);
    assert_eq!(e.vars.get("ALSO"), Some(&1));
    match &e.steps[0].step {
        Step::Poll { value, .. } => assert_eq!(value.item, Value::Var("ALSO".into())),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        ops(&plan(text)),
        [
            "poll BAR5+0x58a68 (SMU_RESP) & 0xffffffff == 0x00000001 within 1s",
            "smu 0x1 arg 0x00000001",
            "write BAR5+0x58a48 (SMU_ARG) <- 0xffffffff",
        ]
    );
}

#[test]
fn variables_must_exist_and_be_defined_once() {
    let (l, c, r) = parse_err("let A = 1\nwrite SMU_ARG $B");
    assert_eq!((l, c), (2, 15));
    assert!(r.contains("'B' is not defined"), "{r}");
    let (l, c, r) = parse_err("write SMU_ARG $A\nlet A = 1");
    assert_eq!((l, c), (1, 15));
    assert!(r.contains("not defined"), "{r}");
    let (l, c, r) = parse_err("let A = 1\nlet A = 2");
    assert_eq!((l, c), (2, 5));
    assert!(r.contains("already defined on line 1"), "{r}");
    let (_, _, r) = parse_err("let COUNT = 1\nsmu 1 $CONUT");
    assert!(r.contains("did you mean '$COUNT'"), "{r}");
}

#[test]
fn repeats_expand_in_order_and_nest() {
    let text =
        "label start\nrepeat 2 {\n  read SMU_RESP\n  repeat 3 {\n    sleep 1ms\n  }\n}\nlabel end";
    let e = p(text);
    assert_eq!(e.expanded_len(), 1 + 2 * (1 + 3) + 1);
    let pl = plan(text);
    let shown = ops(&pl);
    assert_eq!(shown.len(), 10);
    assert_eq!(shown[0], "label start");
    assert_eq!(shown[1], "read BAR5+0x58a68 (SMU_RESP)");
    assert_eq!(&shown[2..5], ["sleep 1ms", "sleep 1ms", "sleep 1ms"]);
    assert_eq!(shown[5], "read BAR5+0x58a68 (SMU_RESP)");
    assert_eq!(shown[9], "label end");
    // Passes record where in the repeats each step is.
    let passes: Vec<Vec<(u64, u64)>> = pl
        .steps
        .iter()
        .map(|s| s.passes.iter().map(|p| (p.index, p.count)).collect())
        .collect();
    assert_eq!(passes[0], []);
    assert_eq!(passes[4], [(0, 2), (2, 3)]);
    assert_eq!(passes[6], [(1, 2), (0, 3)]);
    assert_eq!(pl.steps[6].span.line, 5);
    // A count from a variable; zero passes expand to nothing.
    assert_eq!(plan("let N = 4\nrepeat $N {\nsleep 1us\n}").steps.len(), 4);
    assert_eq!(plan("repeat 0 {\nsleep 1us\n}").steps.len(), 0);
    // An empty body with a huge count costs nothing.
    assert_eq!(plan("repeat 18446744073709551615 {\n}").steps.len(), 0);
}

#[test]
fn expansion_limit_blames_the_repeat() {
    let (l, c, r) = parse_err(
        "read SMU_RESP\n  repeat 1000 {\n    repeat 1000 {\n      read SMU_RESP\n    }\n  }",
    );
    assert_eq!((l, c), (2, 3), "{r}");
    assert!(r.contains(&MAX_STEPS.to_string()), "{r}");
    let (l, c, _) = parse_err("repeat 10001 {\nsleep 1us\n}");
    assert_eq!((l, c), (1, 1));
    // Exactly at the limit is fine.
    assert_eq!(
        p("repeat 100 {\nrepeat 100 {\nsleep 1us\n}\n}").expanded_len(),
        MAX_STEPS
    );
    // Many top-level steps also count.
    let long = "sleep 1us\n".repeat(MAX_STEPS as usize + 1);
    let (l, c, _) = parse_err(&long);
    assert_eq!((l, c), (MAX_STEPS as usize + 1, 1));
}

#[test]
fn repeat_blocks_must_balance_and_nest_within_the_depth() {
    assert_eq!(
        parse_err("repeat 2 {\nsleep 1ms"),
        (1, 1, parse_err("repeat 2 {\nsleep 1ms").2)
    );
    let (l, c, r) = parse_err("sleep 1ms\n}");
    assert_eq!((l, c), (2, 1));
    assert!(r.contains("without an open repeat"), "{r}");
    let (l, c, _) = parse_err("repeat 2 {\n} sleep 1ms");
    assert_eq!((l, c), (2, 3));
    let (l, c, _) = parse_err("repeat 2\nsleep 1ms\n}");
    assert_eq!((l, c), (1, 9));
    let deep = "repeat 1 {\n".repeat(9) + &"}\n".repeat(9);
    let (l, c, r) = parse_err(&deep);
    assert_eq!((l, c), (9, 1), "{r}");
    let ok = "repeat 1 {\n".repeat(8) + "sleep 1us\n" + &"}\n".repeat(8);
    assert_eq!(p(&ok).expanded_len(), 1);
}

// ---- parse errors: place and words ------------------------------------------------------------

#[test]
fn bad_inputs_name_line_and_column() {
    // (text, line, column, a piece of the reason)
    let cases: &[(&str, usize, usize, &str)] = &[
        (
            "sleep abc",
            1,
            7,
            "expected a duration like 100ms, found 'abc'",
        ),
        ("read X\n\n  sleep 10", 3, 9, "a unit"),
        (
            "poll SMU_RESP 0xffffffff 0x1",
            1,
            29,
            "expected a timeout like 100ms",
        ),
        ("poll SMU_RESP 0xffffffff 0x1 2 s", 1, 30, "a unit"),
        ("write SMU_MSG", 1, 14, "expected a value to write"),
        ("write SMU_MSG 0xzz", 1, 15, "found '0xzz'"),
        ("write SMU_MSG 1 2", 1, 17, "unexpected '2'"),
        ("write 12 1", 1, 7, "expected a register name"),
        ("write @zz 1", 1, 7, "BAR offset"),
        ("modify SMU_MSG", 1, 15, "FIELD=VALUE"),
        ("modify SMU_MSG A", 1, 17, "expected '='"),
        ("modify SMU_MSG A=", 1, 18, "a field value"),
        ("modify SMU_MSG [3:5]=1", 1, 16, "[high:low]"),
        ("modify SMU_MSG [64]=1", 1, 16, "past bit 63"),
        ("cfg-read CAP_EXP+8", 1, 10, "needs a width"),
        ("cfg-read CAP_EXPP+8.w", 1, 10, "did you mean 'CAP_EXP'"),
        ("cfg-read CAP_EXP+10.w", 1, 10, "ambiguous"),
        ("cfg-read 44 l", 1, 10, "write 0x2c for decimal 44"),
        ("cfg-read 0x44.q", 1, 10, "width suffix"),
        ("cfg-read 0x44 q", 1, 15, "expected a width"),
        ("cfg-read 0x44.l l", 1, 17, "width given twice"),
        ("cfg-read 0x46.l", 1, 10, "not aligned"),
        ("cfg-read 0xffe.l", 1, 10, "not aligned"),
        ("cfg-read 0xffc+4.l", 1, 10, "past the 4 KiB"),
        ("cfg-read 0x1000.b", 1, 10, "past the 4 KiB"),
        ("cfg-write COMMAND", 1, 18, "a value to write"),
        ("smu", 1, 4, "SMU message"),
        ("smu TestMessage 1 later", 1, 19, "expected 'nowait'"),
        ("smu TestMessage x", 1, 17, "expected a number"),
        ("reset fl/r", 1, 7, "reset method"),
        ("snapshot", 1, 9, "a snapshot name"),
        ("snapshot a/b", 1, 10, "a snapshot name"),
        ("snapshot s SMU_MSG 0x4", 1, 20, "register"),
        ("label", 1, 6, "a label name"),
        ("let 1 = 2", 1, 5, "variable name"),
        ("let A 2", 1, 7, "expected '='"),
        ("let A = ", 1, 8, "expected a value"),
        ("let A = 1 2", 1, 11, "unexpected '2'"),
        ("repeat x {", 1, 8, "expected a number"),
        ("repeat 3 { sleep 1ms", 1, 12, "unexpected 'sleep'"),
        ("= 3", 1, 1, "expected a step keyword"),
        ("  {", 1, 3, "expected a step keyword"),
        (
            "read SMU_MSG\n  wirte SMU_MSG 1",
            2,
            3,
            "did you mean 'write'",
        ),
        ("READ SMU_MSG", 1, 1, "did you mean 'read'"),
        ("sleeep 1ms", 1, 1, "did you mean 'sleep'"),
        ("cfgread 0x4 w", 1, 1, "did you mean 'cfg-read'"),
        ("frobnicate", 1, 1, "steps are: read, write"),
        (
            "sleep 1ms\n\n\n      read SMU_MSG extra",
            4,
            20,
            "unexpected 'extra'",
        ),
        // Columns count characters, not bytes.
        ("# ü\nlabel über x", 2, 7, "a label name"),
    ];
    for (text, line, column, piece) in cases {
        let (l, c, r) = parse_err(text);
        assert_eq!((l, c), (*line, *column), "{text:?}: {r}");
        assert!(r.contains(piece), "{text:?}: {r:?} lacks {piece:?}");
    }
}

#[test]
fn the_error_line_reads_file_line_column_reason() {
    let err = parse(
        Path::new("mode2.rlx"),
        "read A\nread B\nsleep 1ms\n\n\n\npoll A 1 1 abc",
    )
    .err()
    .map(|e| e.one_line());
    assert_eq!(
        err.as_deref(),
        Some("mode2.rlx:7:12: expected a timeout like 100ms, found 'abc'")
    );
}

// ---- resolution errors ------------------------------------------------------------------------

#[test]
fn resolution_errors_name_line_and_column() {
    let cases: &[(&str, usize, usize, &str)] = &[
        (
            "sleep 1ms\nread SMU_RESPP",
            2,
            6,
            "unknown register 'SMU_RESPP' (did you mean 'SMU_RESP'?)",
        ),
        (
            "modify TEST_CNTL ENABLE=1 MOOD=1",
            1,
            27,
            "no field 'MOOD' (did you mean 'MODE'?)",
        ),
        (
            "modify TEST_CNTL MODE=8",
            1,
            23,
            "does not fit the 3-bit field MODE",
        ),
        ("modify TEST_CNTL MODE=1 [5]=1", 1, 25, "overlaps"),
        ("modify @0x0 ENABLE=1", 1, 13, "needs a named register"),
        ("modify @0x0 [32]=1", 1, 13, "outside the 32-bit register"),
        (
            "smu TestMesage",
            1,
            5,
            "unknown SMU message 'TestMesage' (did you mean 'TestMessage'?)",
        ),
        ("smu 0x1_0000_0000", 1, 5, "does not fit in 32 bits"),
        (
            "smu TestMessage 0x1_0000_0000",
            1,
            17,
            "does not fit in 32 bits",
        ),
        ("reset warm", 1, 7, "unknown reset method 'warm'"),
        (
            "read @0x80000",
            1,
            6,
            "past the end of BAR5 (0x80000 bytes)",
        ),
        ("read @0x7fffe", 1, 6, "not aligned"),
        ("read @0xffffffffffffffff", 1, 6, "not aligned"),
        ("read @0xfffffffffffffffc", 1, 6, "past the end"),
        ("snapshot s SMU_MSG @0x80000", 1, 20, "past the end"),
        (
            "write SMU_MSG 0x1_0000_0000",
            1,
            15,
            "does not fit the 32-bit register",
        ),
        ("poll SMU_RESP 0xff 0x100 1s", 1, 20, "outside the mask"),
        ("expect SMU_RESP 0x1_0000_0000 0 ", 1, 17, "does not fit"),
        (
            "cfg-write COMMAND 0x10000",
            1,
            19,
            "does not fit the 16-bit config access",
        ),
        ("smn-read 0x03b10029", 1, 10, "not 4-byte aligned"),
        (
            "smn-write 0x1_0000_0000 0",
            1,
            11,
            "does not fit in 32 bits",
        ),
        (
            "repeat 3 {\n  read NOPE\n}",
            2,
            8,
            "unknown register 'NOPE'",
        ),
    ];
    for (text, line, column, piece) in cases {
        let (l, c, r) = resolve_err(text);
        assert_eq!((l, c), (*line, *column), "{text:?}: {r}");
        assert!(r.contains(piece), "{text:?}: {r:?} lacks {piece:?}");
    }
    // A register that the database puts past the BAR is caught too.
    let ctx = phoenix().register("FAR", 0x80000, 4);
    match resolve(&p("read FAR"), &ctx) {
        Err(Error::FileParse { reason, .. }) => assert!(reason.contains("FAR"), "{reason}"),
        other => panic!("read FAR past the BAR: {other:?}"),
    }
}

// ---- the example files ------------------------------------------------------------------------

#[test]
fn phoenix_smu_alive_parses_and_resolves() {
    let pl = resolve(
        &parse(Path::new("phoenix-smu-alive.rlx"), ALIVE)
            .unwrap_or_else(|e| panic!("{}", e.one_line())),
        &phoenix(),
    )
    .unwrap_or_else(|e| panic!("{}", e.one_line()));
    let shown = ops(&pl);
    assert!(shown.contains(&"smn-read 0x03b10028".to_string()), "{pl}");
    assert!(
        shown.contains(&"smu 0x1 (TestMessage) arg 0x00000000".to_string()),
        "{pl}"
    );
    assert!(
        shown.contains(&"smu 0x2 (GetPmfwVersion) arg 0x00000000".to_string()),
        "{pl}"
    );
    assert!(
        shown.contains(
            &"expect BAR5+0x58a68 (MP1_SMN_C2PMSG_90) & 0xffffffff == 0x00000001".to_string()
        ),
        "{pl}"
    );
    // Nothing in the liveness check writes to the device except the SMU messages.
    assert!(pl.steps.iter().all(|s| !matches!(
        s.op,
        Op::Write { .. }
            | Op::Modify { .. }
            | Op::CfgWrite { .. }
            | Op::SmnWrite { .. }
            | Op::Reset { .. }
    )));
}

#[test]
fn phoenix_mode2_parses_and_resolves() {
    let pl = resolve(
        &parse(Path::new("phoenix-mode2.rlx"), MODE2)
            .unwrap_or_else(|e| panic!("{}", e.one_line())),
        &phoenix(),
    )
    .unwrap_or_else(|e| panic!("{}", e.one_line()));
    let shown = ops(&pl);
    let at = |s: &str| {
        shown
            .iter()
            .position(|x| x == s)
            .unwrap_or_else(|| panic!("no {s:?} in\n{pl}"))
    };
    let before = at("snapshot before: BAR5+0x58a08 (MP1_SMN_C2PMSG_66), BAR5+0x58a48 (MP1_SMN_C2PMSG_82), BAR5+0x58a68 (MP1_SMN_C2PMSG_90)");
    let reset = at("smu 0x11 (GfxDeviceDriverReset) arg 0x00000002 nowait");
    let poll = at("poll BAR5+0x58a68 (MP1_SMN_C2PMSG_90) & 0xffffffff == 0x00000001 within 2s");
    let after = at("snapshot after: BAR5+0x58a08 (MP1_SMN_C2PMSG_66), BAR5+0x58a48 (MP1_SMN_C2PMSG_82), BAR5+0x58a68 (MP1_SMN_C2PMSG_90)");
    assert!(before < reset && reset + 1 == poll && poll < after, "{pl}");
}

#[test]
fn e1000e_ctrl_rst_parses_and_resolves_without_a_database() {
    let pl = resolve(
        &parse(Path::new("e1000e-ctrl-rst.rlx"), E1000E)
            .unwrap_or_else(|e| panic!("{}", e.one_line())),
        &e1000e(),
    )
    .unwrap_or_else(|e| panic!("{}", e.one_line()));
    let shown = ops(&pl);
    assert!(
        shown.contains(&"modify BAR0+0x0 mask 0x04000000 <- 0x04000000 ([26]=0x1)".to_string()),
        "{pl}"
    );
    assert!(
        shown.contains(&"poll BAR0+0x0 & 0x04000000 == 0x00000000 within 100ms".to_string()),
        "{pl}"
    );
    assert!(
        shown.contains(&"snapshot before: BAR0+0x0, BAR0+0x8".to_string()),
        "{pl}"
    );
}

#[test]
fn plan_serialises_to_json_with_ops_and_spans() {
    let pl =
        plan("let OK = 1\nrepeat 2 {\n  poll SMU_RESP 0xffffffff $OK 2s\n}\ncfg-read CAP_EXP+8.w");
    let json = serde_json::to_value(&pl).unwrap_or_default();
    assert_eq!(json["bar"]["index"], 5);
    assert_eq!(json["steps"][0]["op"], "poll");
    assert_eq!(json["steps"][0]["reg"]["offset"], 0x58a68);
    assert_eq!(json["steps"][0]["reg"]["name"], "SMU_RESP");
    assert_eq!(json["steps"][0]["timeout_us"], 2_000_000);
    assert_eq!(json["steps"][0]["span"]["line"], 3);
    assert_eq!(json["steps"][1]["passes"][0]["index"], 1);
    assert_eq!(json["steps"][2]["op"], "cfg-read");
    assert_eq!(json["steps"][2]["cfg"]["reg"]["cap"]["id"], 0x10);
    assert_eq!(json["steps"][2]["cfg"]["width"], "w");
}

#[test]
fn dry_run_listing_shows_line_and_passes() {
    let text = format!("{}", plan("repeat 2 {\n  read SMU_RESP\n}"));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2);
    assert!(lines[0].contains("line 2"), "{text}");
    assert!(
        lines[1].ends_with("read BAR5+0x58a68 (SMU_RESP)  [pass 2/2]"),
        "{text}"
    );
}

// ---- fuzzing ----------------------------------------------------------------------------------

/// Text made of the language's own pieces, so the fuzzer reaches deep into the parser.
fn tokenish() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("read".to_string()),
        Just("write".to_string()),
        Just("modify".to_string()),
        Just("poll".to_string()),
        Just("cfg-write".to_string()),
        Just("cfg-read".to_string()),
        Just("smu".to_string()),
        Just("repeat".to_string()),
        Just("let".to_string()),
        Just("snapshot".to_string()),
        Just("{".to_string()),
        Just("}".to_string()),
        Just("=".to_string()),
        Just("\n".to_string()),
        Just("#".to_string()),
        Just("$A".to_string()),
        Just("@0x58a68".to_string()),
        Just("CAP_EXP+8.w".to_string()),
        Just("[31:0]".to_string()),
        Just("SMU_RESP".to_string()),
        "[0-9a-fx_]{0,20}",
        "[a-z]{1,3}[0-9]{0,3}",
        "\\PC{0,4}",
    ];
    prop::collection::vec(piece, 0..40).prop_map(|v| v.join(" "))
}

fn mutate(base: &str, edits: &[(usize, u8, char)]) -> String {
    let mut chars: Vec<char> = base.chars().collect();
    for &(pos, kind, ch) in edits {
        if chars.is_empty() {
            chars.push(ch);
            continue;
        }
        let i = pos % chars.len();
        match kind % 3 {
            0 => chars.insert(i, ch),
            1 => {
                chars.remove(i);
            }
            _ => chars[i] = ch,
        }
    }
    chars.into_iter().collect()
}

fn parse_and_resolve_never_panic(text: &str) {
    if let Ok(e) = parse(Path::new("f.rlx"), text) {
        assert!(e.expanded_len() <= MAX_STEPS);
        for ctx in [phoenix(), e1000e()] {
            if let Ok(pl) = resolve(&e, &ctx) {
                let _ = pl.to_string();
                assert!(pl.steps.len() as u64 <= MAX_STEPS);
            }
        }
    } else if let Err(err) = parse(Path::new("f.rlx"), text) {
        match err {
            Error::FileParse { line, column, .. } => {
                assert!(line >= 1 && column >= 1);
                assert!(line <= text.split('\n').count());
            }
            other => panic!("parse gave {other:?}"),
        }
    }
}

proptest! {
    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
        parse_and_resolve_never_panic(&text);
    }

    #[test]
    fn token_soup_never_panics(text in tokenish()) {
        parse_and_resolve_never_panic(&text);
    }

    #[test]
    fn mutated_examples_never_panic(
        which in 0usize..3,
        edits in prop::collection::vec((any::<usize>(), any::<u8>(), prop_oneof![
            Just(' '), Just('\n'), Just('{'), Just('}'), Just('='), Just('#'), Just('$'),
            Just('@'), Just('.'), Just('+'), Just('0'), Just('x'), Just('9'), any::<char>(),
        ]), 1..8),
    ) {
        let base = [ALIVE, MODE2, E1000E][which];
        parse_and_resolve_never_panic(&mutate(base, &edits));
    }
}

#[test]
fn smu_nowait_without_argument() {
    match only_step("smu TestMessage nowait") {
        Step::Smu { arg, wait, .. } => {
            assert!(arg.is_none());
            assert!(!wait);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        ops(&plan("smu TestMessage nowait")),
        ["smu 0x1 (TestMessage) arg 0x00000000 nowait"]
    );
}

#[test]
fn docs_first_example_dry_run() {
    let text = "# Mode-2 reset with a before/after snapshot.\nlet SMU_OK = 0x1\n\n\
                snapshot before MP1_SMN_C2PMSG_66 MP1_SMN_C2PMSG_82 MP1_SMN_C2PMSG_90\n\
                smu GfxDeviceDriverReset 2 nowait             # post only; the poll times the answer\n\
                poll MP1_SMN_C2PMSG_90 0xffffffff $SMU_OK 2s\n\
                snapshot after MP1_SMN_C2PMSG_66 MP1_SMN_C2PMSG_82 MP1_SMN_C2PMSG_90\n";
    let shown = plan(text).to_string();
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(
        lines[1],
        "    2  line 5    smu 0x11 (GfxDeviceDriverReset) arg 0x00000002 nowait"
    );
    assert_eq!(
        lines[2],
        "    3  line 6    poll BAR5+0x58a68 (MP1_SMN_C2PMSG_90) & 0xffffffff == 0x00000001 within 2s"
    );
}

#[test]
fn load_reads_a_file_and_names_it_in_errors() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let good = dir.path().join("ok.rlx");
    std::fs::write(&good, E1000E).unwrap_or_else(|e| panic!("{e}"));
    let e = resetlab::experiment::load(&good).unwrap_or_else(|e| panic!("{}", e.one_line()));
    assert_eq!(e.path, good);
    let bad = dir.path().join("bad.rlx");
    std::fs::write(&bad, "sleep 1ms\nsleep x\n").unwrap_or_else(|e| panic!("{e}"));
    let msg = resetlab::experiment::load(&bad).err().map(|e| e.one_line());
    assert_eq!(
        msg,
        Some(format!(
            "{}:2:7: expected a duration like 100ms, found 'x'",
            bad.display()
        ))
    );
    let missing = resetlab::experiment::load(&dir.path().join("nope.rlx"));
    assert!(matches!(missing, Err(Error::Io { .. })));
}
