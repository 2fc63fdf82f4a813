//! Lexer and parser of the experiment language; the grammar is in `docs/experiments.md`.
//!
//! The language is line-oriented: one step per line, `#` starts a comment, `repeat N {` opens a
//! block that a line holding only `}` closes. Parsing checks everything that needs no device
//! knowledge (syntax, numbers, durations, config offsets and widths, variables, the expansion
//! limit); names of registers, fields, SMU messages and reset methods are checked by
//! [`super::resolve`], which needs a [`super::Resolver`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::Result;

mod lexer;
mod operand;
mod stmt;

pub(crate) use operand::nearest;
pub use operand::{parse_duration, parse_number};

use stmt::Parser;

/// Most steps one experiment may expand to (repeats multiplied out): a typo like `repeat 1000000`
/// must fail at parse time, not fill memory or run for hours.
pub const MAX_STEPS: u64 = 10_000;
/// Deepest nesting of `repeat` blocks.
pub const MAX_DEPTH: usize = 8;
/// Longest `sleep` or `poll` timeout, in microseconds (60 s): a wait holds the device.
pub const MAX_DURATION_US: u64 = 60_000_000;

/// Step keywords, for the "did you mean" hint.
pub const KEYWORDS: &[&str] = &[
    "read",
    "write",
    "modify",
    "poll",
    "expect",
    "sleep",
    "cfg-read",
    "cfg-write",
    "smn-read",
    "smn-write",
    "smu",
    "reset",
    "snapshot",
    "label",
    "let",
    "repeat",
];

/// Where a step came from, for traces and errors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Span {
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters) of the step keyword.
    pub column: usize,
    /// The source line, comment and surrounding blanks removed.
    pub text: String,
}

/// An operand with the column it starts at (its line is the step's line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Loc<T> {
    pub item: T,
    pub column: usize,
}

/// A BAR register: by name (looked up by the resolver) or by raw byte offset (`@0x58a68`, always a
/// 32-bit access).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RegRef {
    Name(String),
    BarOffset(u64),
}

/// A number operand: a literal or `$NAME`, a variable defined by an earlier `let`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Value {
    Literal(u64),
    Var(String),
}

/// The field of a `modify`: a name from the register database or an explicit bit range
/// (`[26]`, `[31:24]`, bit numbers counted from 0 = least significant).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FieldRef {
    Name(String),
    Bits { hi: u8, lo: u8 },
}

/// One `FIELD=VALUE` of a `modify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct FieldSet {
    pub field: Loc<FieldRef>,
    pub value: Loc<Value>,
}

/// Config-space access width.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Width {
    /// 8 bits (`.b`)
    B,
    /// 16 bits (`.w`)
    W,
    /// 32 bits (`.l`)
    L,
}

impl Width {
    pub fn bytes(self) -> u8 {
        match self {
            Width::B => 1,
            Width::W => 2,
            Width::L => 4,
        }
    }

    fn from_bytes(n: u8) -> Option<Width> {
        match n {
            1 => Some(Width::B),
            2 => Some(Width::W),
            4 => Some(Width::L),
            _ => None,
        }
    }

    pub fn suffix(self) -> char {
        match self {
            Width::B => 'b',
            Width::W => 'w',
            Width::L => 'l',
        }
    }
}

/// Standard (in the first 256 bytes) or extended (PCIe, from 0x100) capability list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CapKind {
    Std,
    Ext,
}

/// Where a config access goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CfgRef {
    /// A fixed offset (a number, or a header register name like `COMMAND`).
    Offset(u16),
    /// `plus` bytes into the first capability `id` of the list `kind`; the runner walks the list.
    Cap {
        name: String,
        kind: CapKind,
        id: u16,
        plus: u16,
    },
}

/// A config-space operand with its width; `name` keeps a header register's name (`COMMAND`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct CfgLoc {
    pub reg: CfgRef,
    pub width: Width,
    pub name: Option<String>,
}

/// An SMU message: a name from the register database, or a number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MsgRef {
    Name(String),
    Id(Value),
}

/// One step, with typed operands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(tag = "step", rename_all = "kebab-case")]
pub enum Step {
    Read {
        reg: Loc<RegRef>,
    },
    Write {
        reg: Loc<RegRef>,
        value: Loc<Value>,
    },
    Modify {
        reg: Loc<RegRef>,
        fields: Vec<FieldSet>,
    },
    Poll {
        reg: Loc<RegRef>,
        mask: Loc<Value>,
        value: Loc<Value>,
        timeout_us: u64,
    },
    Expect {
        reg: Loc<RegRef>,
        mask: Loc<Value>,
        value: Loc<Value>,
    },
    Sleep {
        us: u64,
    },
    CfgRead {
        cfg: CfgLoc,
    },
    CfgWrite {
        cfg: CfgLoc,
        value: Loc<Value>,
    },
    SmnRead {
        addr: Loc<Value>,
    },
    SmnWrite {
        addr: Loc<Value>,
        value: Loc<Value>,
    },
    /// Send an SMU message; `wait` = false (`nowait`) only posts it, for a following `poll`.
    Smu {
        msg: Loc<MsgRef>,
        arg: Option<Loc<Value>>,
        wait: bool,
    },
    Reset {
        method: Loc<String>,
    },
    /// Record registers under `name`; no registers = the runner's default set.
    Snapshot {
        name: String,
        regs: Vec<Loc<RegRef>>,
    },
    Label {
        name: String,
    },
    Repeat {
        count: u64,
        body: Vec<Stmt>,
    },
}

/// A step and where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Stmt {
    pub span: Span,
    pub step: Step,
}

/// A parsed experiment file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Experiment {
    pub path: PathBuf,
    /// `let` variables (constants, each defined once, visible from their line on).
    pub vars: BTreeMap<String, u64>,
    pub steps: Vec<Stmt>,
}

impl Experiment {
    /// Steps after expanding repeats (what the plan will hold); at most [`MAX_STEPS`].
    pub fn expanded_len(&self) -> u64 {
        block_size(&self.steps)
    }

    /// The value of an operand (variables are checked at parse time; an unknown one here means the
    /// AST was built by hand).
    pub fn value(&self, v: &Value) -> Option<u64> {
        match v {
            Value::Literal(n) => Some(*n),
            Value::Var(name) => self.vars.get(name).copied(),
        }
    }
}

fn stmt_size(s: &Stmt) -> u64 {
    match &s.step {
        Step::Repeat { count, body } => count.saturating_mul(block_size(body)),
        _ => 1,
    }
}

pub(crate) fn block_size(b: &[Stmt]) -> u64 {
    b.iter()
        .fold(0u64, |acc, s| acc.saturating_add(stmt_size(s)))
}

/// Parse an experiment. `path` is only used to name the file in errors and traces.
pub fn parse(path: &Path, text: &str) -> Result<Experiment> {
    Parser {
        path,
        vars: BTreeMap::new(),
        var_lines: BTreeMap::new(),
    }
    .run(text)
}

/// Read and parse an experiment file.
pub fn load(path: &Path) -> Result<Experiment> {
    let text = crate::bounded_read::read_text(path, crate::bounded_read::TEXT_FILE_MAX)?;
    parse(path, &text)
}
