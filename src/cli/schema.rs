//! `--json` as a contract: every output is an object with a top-level
//! `schema_version`, and has a JSON Schema generated from its Rust type
//! (schemars), checked in under docs/schema/ (tests/json_schema.rs keeps it
//! current: `RESETLAB_BLESS=1 cargo test --test json_schema` rewrites it;
//! `resetlab schema NAME` prints one). docs/json.md lists them.

use schemars::{JsonSchema, Schema};
use serde::Serialize;

use crate::error::{Error, Result};

/// Bumped when a field is removed or changes meaning (adding one is not a break).
pub const SCHEMA_VERSION: u32 = 1;

/// An output: its body's fields beside `schema_version`.
#[derive(Serialize, JsonSchema)]
pub struct Out<T> {
    /// The version of this output's schema (docs/schema/).
    pub schema_version: u32,
    #[serde(flatten)]
    pub body: T,
}

/// A failure under `--json`: printed on stdout as well as the line on stderr.
#[derive(Serialize, JsonSchema)]
pub struct ErrorOut {
    /// The same one line as on stderr.
    pub error: String,
    /// Which kind of error (stable: parse, not_found, refused, timeout, …).
    pub kind: &'static str,
    /// The process's exit code (docs/cli.md).
    pub exit: i32,
}

/// `list --json`.
#[derive(Serialize, JsonSchema)]
pub struct ListOut {
    /// Sorted by IOMMU group, then address.
    pub devices: Vec<crate::inventory::DeviceReport>,
}

/// `doctor --json`.
#[derive(Serialize, JsonSchema)]
pub struct DoctorOut {
    pub checks: Vec<crate::doctor::Check>,
}

/// `run diff --json`.
#[derive(Serialize, JsonSchema)]
pub struct RunDiffOut {
    pub rows: Vec<crate::experiment::run::DiffRow>,
}

/// Prints `body` with `schema_version` as pretty JSON on stdout.
pub fn print<T: Serialize>(body: &T) -> Result<()> {
    let out = Out {
        schema_version: SCHEMA_VERSION,
        body,
    };
    let s = serde_json::to_string_pretty(&out)
        .map_err(|e| Error::failed(format!("cannot encode JSON: {e}")))?;
    // Never a panic on a closed pipe (the hook ignores SIGPIPE and goes on).
    use std::io::Write as _;
    let _ = writeln!(std::io::stdout(), "{s}");
    Ok(())
}

/// The error object of a failed `--json` command.
pub fn error_out(e: &Error) -> String {
    let out = Out {
        schema_version: SCHEMA_VERSION,
        body: ErrorOut {
            error: e.one_line(),
            kind: e.kind(),
            exit: e.exit_code(),
        },
    };
    serde_json::to_string_pretty(&out).unwrap_or_else(|_| {
        format!(
            "{{\"schema_version\": {SCHEMA_VERSION}, \"error\": \"cannot encode the error\", \"kind\": \"failed\", \"exit\": 1}}"
        )
    })
}

/// A command-line usage error under `--json` (clap's line, exit 2).
pub fn usage_error_out(line: &str) -> String {
    let out = Out {
        schema_version: SCHEMA_VERSION,
        body: ErrorOut {
            error: line.to_string(),
            kind: "usage",
            exit: crate::error::exit::USAGE,
        },
    };
    serde_json::to_string_pretty(&out).unwrap_or_default()
}

fn of<T: JsonSchema>(name: &str) -> Schema {
    // What we print (skipped-when-empty fields are optional), not what we would read.
    let mut s = schemars::generate::SchemaSettings::draft2020_12()
        .for_serialize()
        .into_generator()
        .into_root_schema_for::<Out<T>>();
    s.insert(
        "$id".into(),
        format!("https://resetlab.invalid/schema/v{SCHEMA_VERSION}/{name}.json").into(),
    );
    s.insert("title".into(), format!("resetlab {name} --json").into());
    s
}

/// Every `--json` output's schema: (file stem under docs/schema/, what prints it, schema).
pub fn all() -> Vec<(&'static str, &'static str, Schema)> {
    use crate::bench::cliout as b;
    use crate::cli as c;
    vec![
        ("list", "resetlab list --json", of::<ListOut>("list")),
        (
            "probe",
            "resetlab probe DEV --json",
            of::<crate::inventory::ProbeReport>("probe"),
        ),
        (
            "doctor",
            "resetlab doctor --json",
            of::<DoctorOut>("doctor"),
        ),
        (
            "hook-status",
            "resetlab hook status VMID --json",
            of::<crate::hook::status::StatusReport>("hook-status"),
        ),
        (
            "hook-phase",
            "resetlab hook VMID PHASE --json",
            of::<crate::hook::run::PhaseReport>("hook-phase"),
        ),
        (
            "hook-dry-run",
            "resetlab hook VMID PHASE --dry-run --json",
            of::<c::hook::DryRunOut>("hook-dry-run"),
        ),
        (
            "release",
            "resetlab release --json",
            of::<crate::qmp::release::ReleaseReport>("release"),
        ),
        (
            "hook-uninstall",
            "resetlab hook uninstall VMID --json",
            of::<crate::hook::install::UninstallReport>("hook-uninstall"),
        ),
        (
            "report",
            "resetlab report --json",
            of::<crate::report::Report>("report"),
        ),
        (
            "sim-vm",
            "resetlab sim vm DIR VMID start|stop|shutdown|kill|status --json",
            of::<crate::sim::qemu::VmState>("sim-vm"),
        ),
        (
            "hook-install",
            "resetlab hook install VMID --json",
            of::<crate::hook::install::InstallReport>("hook-install"),
        ),
        (
            "reset",
            "resetlab reset DEV --json",
            of::<crate::reset::engine::ChainReport>("reset"),
        ),
        (
            "smu",
            "resetlab smu DEV ACTION --json",
            of::<c::smu::SmuReport>("smu"),
        ),
        (
            "run-plan",
            "resetlab run FILE --json (dry run)",
            of::<crate::experiment::resolve::Plan>("run-plan"),
        ),
        (
            "run-report",
            "resetlab run FILE --commit --json",
            of::<crate::experiment::run::RunReport>("run-report"),
        ),
        (
            "run-diff",
            "resetlab run diff TRACE A B --json",
            of::<RunDiffOut>("run-diff"),
        ),
        (
            "snapshot",
            "resetlab snapshot FILE --json",
            of::<crate::snapshot::Summary>("snapshot"),
        ),
        (
            "regs-list",
            "resetlab regs list --json",
            of::<c::regs::ListOut>("regs-list"),
        ),
        (
            "regs-show",
            "resetlab regs show ASIC --json",
            of::<crate::amd::regs::RegsShow>("regs-show"),
        ),
        (
            "regs-bases",
            "resetlab regs bases DEV --json",
            of::<crate::amd::bases::BasesReport>("regs-bases"),
        ),
        (
            "vbios-dump",
            "resetlab vbios dump --json",
            of::<c::vbios::DumpOut>("vbios-dump"),
        ),
        (
            "vbios-rom",
            "resetlab vbios dump --from-rom DEV --json",
            of::<c::vbios::RomOut>("vbios-rom"),
        ),
        (
            "vbios-check",
            "resetlab vbios check FILE [FILE2] --json",
            of::<c::vbios::CheckOut>("vbios-check"),
        ),
        ("bench", "resetlab bench --json", of::<b::RunOut>("bench")),
        (
            "bench-report",
            "resetlab bench report DIR --json",
            of::<b::ReportOut>("bench-report"),
        ),
        (
            "bench-compare",
            "resetlab bench report A B --json",
            of::<b::CompareOut>("bench-compare"),
        ),
        (
            "sim-up",
            "resetlab sim up --json",
            of::<c::sim::UpOut>("sim-up"),
        ),
        (
            "sim-status",
            "resetlab sim status --json",
            of::<c::sim::StatusOut>("sim-status"),
        ),
        (
            "error",
            "any command --json, on failure",
            of::<ErrorOut>("error"),
        ),
    ]
}

/// `resetlab schema [NAME]`: one schema, or the list of names.
pub fn run(name: Option<&str>) -> Result<i32> {
    let all = all();
    match name {
        None => {
            for (n, what, _) in &all {
                println!("{n:<14} {what}");
            }
        }
        Some(n) => {
            let (_, _, s) = all
                .iter()
                .find(|(x, _, _)| *x == n)
                .ok_or_else(|| Error::not_found("JSON schema", n))?;
            let text = serde_json::to_string_pretty(s)
                .map_err(|e| Error::failed(format!("cannot encode JSON: {e}")))?;
            println!("{text}");
        }
    }
    Ok(0)
}
