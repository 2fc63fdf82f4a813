//! The register-level experiment language (`docs/experiments.md`): [`parse`] turns a file into an
//! [`Experiment`]; [`resolve`] checks it against a device's names and bounds and produces the
//! [`Plan`] a dry run prints and the runner executes.

mod cfgnames;
pub mod parse;
pub mod resolve;
pub mod run;

pub use parse::{
    load, parse, parse_duration, parse_number, CapKind, CfgLoc, CfgRef, Experiment, FieldRef,
    FieldSet, Loc, MsgRef, RegRef, Span, Step, Stmt, Value, Width, MAX_DEPTH, MAX_DURATION_US,
    MAX_STEPS,
};
pub use resolve::{
    format_duration, resolve, BarInfo, BarReg, FieldInfo, MapResolver, Op, Pass, Plan, PlanStep,
    RegInfo, Resolver,
};
