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

use super::cfgnames;
use crate::error::{Error, Result};

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
    let text = crate::pci::bounded_read::read_text(path, crate::pci::bounded_read::TEXT_FILE_MAX)?;
    parse(path, &text)
}

// ---------------------------------------------------------------------------------------------
// Lexer

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok<'a> {
    Word(&'a str),
    LBrace,
    RBrace,
    Eq,
}

#[derive(Debug, Clone, Copy)]
struct Token<'a> {
    tok: Tok<'a>,
    col: usize,
}

impl Token<'_> {
    fn show(&self) -> String {
        match self.tok {
            Tok::Word(w) => w.to_string(),
            Tok::LBrace => "{".into(),
            Tok::RBrace => "}".into(),
            Tok::Eq => "=".into(),
        }
    }
}

/// One line's tokens, the column just past the last one, and the line without its comment.
struct Lexed<'a> {
    toks: Vec<Token<'a>>,
    end_col: usize,
    code: &'a str,
}

fn flush<'a>(
    line: &'a str,
    word: &mut Option<(usize, usize)>,
    toks: &mut Vec<Token<'a>>,
    at: usize,
) {
    if let Some((start, col)) = word.take() {
        if let Some(w) = line.get(start..at) {
            toks.push(Token {
                tok: Tok::Word(w),
                col,
            });
        }
    }
}

fn lex_line(line: &str) -> Lexed<'_> {
    let mut toks = Vec::new();
    let mut word: Option<(usize, usize)> = None; // (byte start, column)
    let mut end_col = 1;
    let mut code_end = line.len();
    let mut col = 0;
    for (i, ch) in line.char_indices() {
        col += 1;
        if ch == '#' {
            flush(line, &mut word, &mut toks, i);
            code_end = i;
            break;
        }
        let punct = match ch {
            '{' => Some(Tok::LBrace),
            '}' => Some(Tok::RBrace),
            '=' => Some(Tok::Eq),
            _ => None,
        };
        if ch.is_whitespace() || punct.is_some() {
            flush(line, &mut word, &mut toks, i);
            if let Some(p) = punct {
                toks.push(Token { tok: p, col });
                end_col = col + 1;
            }
        } else {
            if word.is_none() {
                word = Some((i, col));
            }
            end_col = col + 1;
        }
    }
    if code_end == line.len() {
        flush(line, &mut word, &mut toks, line.len());
    }
    Lexed {
        toks,
        end_col,
        code: line.get(..code_end).unwrap_or(line).trim(),
    }
}

// ---------------------------------------------------------------------------------------------
// Parser

/// A fault on the current line: column and reason.
struct PErr {
    col: usize,
    reason: String,
}

type PResult<T> = std::result::Result<T, PErr>;

fn perr<T>(col: usize, reason: impl Into<String>) -> PResult<T> {
    Err(PErr {
        col,
        reason: reason.into(),
    })
}

struct Block {
    /// The `repeat` that opened this block (none for the file itself).
    header: Option<(Span, u64)>,
    stmts: Vec<Stmt>,
    size: u64,
}

struct Parser<'p> {
    path: &'p Path,
    vars: BTreeMap<String, u64>,
    var_lines: BTreeMap<String, usize>,
}

impl Parser<'_> {
    fn error(&self, line: usize, column: usize, reason: impl Into<String>) -> Error {
        Error::FileParse {
            path: self.path.to_path_buf(),
            line,
            column,
            reason: reason.into(),
        }
    }

    fn run(mut self, text: &str) -> Result<Experiment> {
        let mut blocks = vec![Block {
            header: None,
            stmts: Vec::new(),
            size: 0,
        }];
        for (idx, raw) in text.split('\n').enumerate() {
            let line = idx + 1;
            let lexed = lex_line(raw);
            let Some(first) = lexed.toks.first().copied() else {
                continue;
            };
            let span = Span {
                line,
                column: first.col,
                text: lexed.code.to_string(),
            };
            match first.tok {
                Tok::RBrace => {
                    if let Some(extra) = lexed.toks.get(1) {
                        return Err(self.error(
                            line,
                            extra.col,
                            format!("expected nothing after '}}', found '{}'", extra.show()),
                        ));
                    }
                    let (closed, header) = match blocks.pop() {
                        Some(Block {
                            header: Some(h),
                            stmts,
                            ..
                        }) => (stmts, h),
                        other => {
                            // The file block: put it back so the state stays sane, then fail.
                            if let Some(b) = other {
                                blocks.push(b);
                            }
                            return Err(self.error(line, first.col, "'}' without an open repeat"));
                        }
                    };
                    let (rspan, count) = header;
                    let stmt = Stmt {
                        span: rspan,
                        step: Step::Repeat {
                            count,
                            body: closed,
                        },
                    };
                    self.push(&mut blocks, stmt)?;
                }
                Tok::Word(kw) => {
                    let args = lexed.toks.get(1..).unwrap_or(&[]);
                    let mut cur = Cur {
                        toks: args,
                        i: 0,
                        end_col: lexed.end_col,
                    };
                    if kw == "repeat" {
                        let count = self
                            .repeat_header(&mut cur)
                            .map_err(|e| self.error(line, e.col, e.reason))?;
                        if blocks.len() > MAX_DEPTH {
                            return Err(self.error(
                                line,
                                first.col,
                                format!("repeat blocks nest deeper than {MAX_DEPTH}"),
                            ));
                        }
                        blocks.push(Block {
                            header: Some((span, count)),
                            stmts: Vec::new(),
                            size: 0,
                        });
                        continue;
                    }
                    let step = self
                        .statement(kw, first.col, &mut cur, line)
                        .map_err(|e| self.error(line, e.col, e.reason))?;
                    if let Some(step) = step {
                        self.push(&mut blocks, Stmt { span, step })?;
                    }
                }
                Tok::LBrace | Tok::Eq => {
                    return Err(self.error(
                        line,
                        first.col,
                        format!("expected a step keyword, found '{}'", first.show()),
                    ))
                }
            }
        }
        let mut file = None;
        while let Some(b) = blocks.pop() {
            match b.header {
                Some((span, _)) => {
                    return Err(self.error(
                        span.line,
                        span.column,
                        "repeat block is never closed: add a line holding only '}'",
                    ))
                }
                None => file = Some(b.stmts),
            }
        }
        Ok(Experiment {
            path: self.path.to_path_buf(),
            vars: self.vars,
            steps: file.unwrap_or_default(),
        })
    }

    /// Add a statement to the innermost block, enforcing the expansion limit as we go so a huge
    /// file fails at the step that crosses it.
    fn push(&self, blocks: &mut [Block], stmt: Stmt) -> Result<()> {
        let size = stmt_size(&stmt);
        let (line, column) = (stmt.span.line, stmt.span.column);
        let Some(block) = blocks.last_mut() else {
            return Err(self.error(line, column, "internal: no open block"));
        };
        block.size = block.size.saturating_add(size);
        block.stmts.push(stmt);
        // Multiply out the open repeats, innermost first, to see what this costs in the whole
        // file; blame the innermost repeat that alone crosses the limit, else this statement.
        let mut inner: u64 = 0;
        let mut culprit: Option<(usize, usize)> = None;
        let innermost = blocks.len().saturating_sub(1);
        for (depth, b) in blocks.iter().enumerate().rev() {
            let body = if depth == innermost {
                b.size
            } else {
                b.size.saturating_add(inner)
            };
            inner = match &b.header {
                Some((span, count)) => {
                    let n = count.saturating_mul(body);
                    if n > MAX_STEPS && culprit.is_none() {
                        culprit = Some((span.line, span.column));
                    }
                    n
                }
                None => body,
            };
        }
        if inner > MAX_STEPS {
            let (l, c) = culprit.unwrap_or((line, column));
            return Err(self.error(
                l,
                c,
                format!("the experiment expands to more than {MAX_STEPS} steps (repeats multiplied out)"),
            ));
        }
        Ok(())
    }

    fn repeat_header(&self, cur: &mut Cur<'_, '_>) -> PResult<u64> {
        let (w, col) = cur.word("a repeat count like 10")?;
        let count = match self.value_of(w, col)? {
            Value::Literal(n) => n,
            Value::Var(name) => self.vars.get(&name).copied().unwrap_or(0),
        };
        match cur.next() {
            Some(Token {
                tok: Tok::LBrace, ..
            }) => {}
            Some(t) => {
                return perr(
                    t.col,
                    format!("expected '{{' after the count, found '{}'", t.show()),
                )
            }
            None => return perr(cur.end_col, "expected '{' after the repeat count"),
        }
        cur.finish("'{'")?;
        Ok(count)
    }

    fn statement(
        &mut self,
        kw: &str,
        kw_col: usize,
        cur: &mut Cur<'_, '_>,
        line: usize,
    ) -> PResult<Option<Step>> {
        let step = match kw {
            "read" => {
                let reg = self.reg(cur)?;
                Step::Read { reg }
            }
            "write" => {
                let reg = self.reg(cur)?;
                let value = self.value(cur, "a value to write")?;
                Step::Write { reg, value }
            }
            "modify" => {
                let reg = self.reg(cur)?;
                let mut fields = Vec::new();
                while cur.peek().is_some() {
                    fields.push(self.field_set(cur)?);
                }
                if fields.is_empty() {
                    return perr(cur.end_col, "expected FIELD=VALUE after the register");
                }
                Step::Modify { reg, fields }
            }
            "poll" => {
                let reg = self.reg(cur)?;
                let mask = self.value(cur, "a mask")?;
                let value = self.value(cur, "a value to wait for")?;
                let timeout_us = duration(cur, "a timeout")?;
                Step::Poll {
                    reg,
                    mask,
                    value,
                    timeout_us,
                }
            }
            "expect" => {
                let reg = self.reg(cur)?;
                let mask = self.value(cur, "a mask")?;
                let value = self.value(cur, "an expected value")?;
                Step::Expect { reg, mask, value }
            }
            "sleep" => Step::Sleep {
                us: duration(cur, "a duration")?,
            },
            "cfg-read" => {
                let cfg = cfg_loc(cur, false)?;
                Step::CfgRead { cfg }
            }
            "cfg-write" => {
                let cfg = cfg_loc(cur, true)?;
                let value = self.value(cur, "a value to write")?;
                Step::CfgWrite { cfg, value }
            }
            "smn-read" => Step::SmnRead {
                addr: self.value(cur, "an SMN address")?,
            },
            "smn-write" => {
                let addr = self.value(cur, "an SMN address")?;
                let value = self.value(cur, "a value to write")?;
                Step::SmnWrite { addr, value }
            }
            "smu" => {
                let (w, col) = cur.word("an SMU message name or number")?;
                let msg = if is_ident(w) {
                    MsgRef::Name(w.to_string())
                } else {
                    MsgRef::Id(self.value_of(w, col)?)
                };
                let msg = Loc {
                    item: msg,
                    column: col,
                };
                let mut arg = None;
                let mut wait = true;
                if let Some((w, col)) = cur.peek_word() {
                    if w != "nowait" {
                        cur.i += 1;
                        arg = Some(Loc {
                            item: self.value_of(w, col)?,
                            column: col,
                        });
                    }
                }
                if let Some((w, col)) = cur.peek_word() {
                    if w != "nowait" {
                        return perr(
                            col,
                            format!("expected 'nowait' or the end of the line, found '{w}'"),
                        );
                    }
                    cur.i += 1;
                    wait = false;
                }
                Step::Smu { msg, arg, wait }
            }
            "reset" => {
                let (w, col) = cur.word("a reset method like flr")?;
                if !w
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | ':'))
                {
                    return perr(
                        col,
                        format!("expected a reset method like flr or kernel:bus, found '{w}'"),
                    );
                }
                Step::Reset {
                    method: Loc {
                        item: w.to_string(),
                        column: col,
                    },
                }
            }
            "snapshot" => {
                let name = name(cur, "a snapshot name")?;
                let mut regs = Vec::new();
                while cur.peek().is_some() {
                    regs.push(self.reg(cur)?);
                }
                Step::Snapshot { name, regs }
            }
            "label" => Step::Label {
                name: name(cur, "a label name")?,
            },
            "let" => {
                let (w, col) = cur.word("a variable name")?;
                if !is_ident(w) {
                    return perr(
                        col,
                        format!("expected a variable name like DELAY, found '{w}'"),
                    );
                }
                match cur.next() {
                    Some(Token { tok: Tok::Eq, .. }) => {}
                    Some(t) => return perr(t.col, format!("expected '=', found '{}'", t.show())),
                    None => return perr(cur.end_col, "expected '=' after the variable name"),
                }
                let v = self.value(cur, "a value")?;
                cur.finish("the value")?;
                if let Some(prev) = self.var_lines.get(w) {
                    return perr(
                        col,
                        format!("variable '{w}' is already defined on line {prev}"),
                    );
                }
                let n = match v.item {
                    Value::Literal(n) => n,
                    Value::Var(other) => self.vars.get(&other).copied().unwrap_or(0),
                };
                self.vars.insert(w.to_string(), n);
                self.var_lines.insert(w.to_string(), line);
                return Ok(None);
            }
            other => {
                return perr(kw_col, unknown_keyword(other));
            }
        };
        cur.finish("the step")?;
        Ok(Some(step))
    }

    fn reg(&self, cur: &mut Cur<'_, '_>) -> PResult<Loc<RegRef>> {
        let (w, col) = cur.word("a register (a name or @OFFSET)")?;
        let item = if let Some(num) = w.strip_prefix('@') {
            match parse_number(num) {
                Ok(n) => RegRef::BarOffset(n),
                Err(why) => {
                    return perr(
                        col,
                        format!("expected a BAR offset like @0x58a68, found '{w}' ({why})"),
                    )
                }
            }
        } else if is_ident(w) {
            RegRef::Name(w.to_string())
        } else {
            return perr(
                col,
                format!("expected a register name like SMU_MSG or a BAR offset like @0x58a68, found '{w}'"),
            );
        };
        Ok(Loc { item, column: col })
    }

    fn value(&self, cur: &mut Cur<'_, '_>, what: &str) -> PResult<Loc<Value>> {
        let (w, col) = cur.word(what)?;
        Ok(Loc {
            item: self.value_of(w, col)?,
            column: col,
        })
    }

    fn value_of(&self, w: &str, col: usize) -> PResult<Value> {
        if let Some(name) = w.strip_prefix('$') {
            if !self.vars.contains_key(name) {
                let hint = nearest(name, self.vars.keys().map(String::as_str))
                    .map(|n| format!(" (did you mean '${n}'?)"))
                    .unwrap_or_default();
                return perr(
                    col,
                    format!("variable '{name}' is not defined by an earlier let{hint}"),
                );
            }
            return Ok(Value::Var(name.to_string()));
        }
        match parse_number(w) {
            Ok(n) => Ok(Value::Literal(n)),
            Err(why) => perr(
                col,
                format!("expected a number like 0x1f or a $VARIABLE, found '{w}' ({why})"),
            ),
        }
    }

    fn field_set(&self, cur: &mut Cur<'_, '_>) -> PResult<FieldSet> {
        let (w, col) = cur.word("FIELD=VALUE")?;
        let field = if let Some(inner) = w.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            let (hi, lo) = match inner.split_once(':') {
                Some((h, l)) => (bit_number(h, col)?, bit_number(l, col)?),
                None => {
                    let b = bit_number(inner, col)?;
                    (b, b)
                }
            };
            if hi < lo {
                return perr(col, format!("bit range '{w}' must be written [high:low]"));
            }
            FieldRef::Bits { hi, lo }
        } else if is_ident(w) {
            FieldRef::Name(w.to_string())
        } else {
            return perr(
                col,
                format!("expected a field name or a bit range like [26] or [31:24], found '{w}'"),
            );
        };
        match cur.next() {
            Some(Token { tok: Tok::Eq, .. }) => {}
            Some(t) => {
                return perr(
                    t.col,
                    format!("expected '=' after the field, found '{}'", t.show()),
                )
            }
            None => return perr(cur.end_col, format!("expected '=' and a value after '{w}'")),
        }
        let value = self.value(cur, "a field value")?;
        Ok(FieldSet {
            field: Loc {
                item: field,
                column: col,
            },
            value,
        })
    }
}

/// A cursor over one line's operand tokens.
struct Cur<'a, 't> {
    toks: &'t [Token<'a>],
    i: usize,
    end_col: usize,
}

impl<'a> Cur<'a, '_> {
    fn peek(&self) -> Option<Token<'a>> {
        self.toks.get(self.i).copied()
    }

    fn peek_word(&self) -> Option<(&'a str, usize)> {
        match self.peek() {
            Some(Token {
                tok: Tok::Word(w),
                col,
            }) => Some((w, col)),
            _ => None,
        }
    }

    fn next(&mut self) -> Option<Token<'a>> {
        let t = self.peek();
        if t.is_some() {
            self.i += 1;
        }
        t
    }

    /// The next token, which must be a word.
    fn word(&mut self, what: &str) -> PResult<(&'a str, usize)> {
        match self.next() {
            Some(Token {
                tok: Tok::Word(w),
                col,
            }) => Ok((w, col)),
            Some(t) => perr(t.col, format!("expected {what}, found '{}'", t.show())),
            None => perr(self.end_col, format!("expected {what}")),
        }
    }

    /// Nothing may follow.
    fn finish(&self, after: &str) -> PResult<()> {
        match self.peek() {
            None => Ok(()),
            Some(t) => perr(t.col, format!("unexpected '{}' after {after}", t.show())),
        }
    }
}

fn is_ident(w: &str) -> bool {
    let mut chars = w.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn name(cur: &mut Cur<'_, '_>, what: &str) -> PResult<String> {
    let (w, col) = cur.word(what)?;
    if !w
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return perr(
            col,
            format!("expected {what} (letters, digits, '_', '-', '.'), found '{w}'"),
        );
    }
    Ok(w.to_string())
}

fn bit_number(s: &str, col: usize) -> PResult<u8> {
    match parse_number(s) {
        Ok(n) if n < 64 => Ok(n as u8),
        Ok(n) => perr(col, format!("bit {n} is past bit 63")),
        Err(why) => perr(col, format!("expected a bit number, found '{s}' ({why})")),
    }
}

/// `0x..` hex, `0b..` binary or decimal, `_` allowed between digits.
pub fn parse_number(s: &str) -> std::result::Result<u64, String> {
    let (digits, radix) = if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        (h, 16)
    } else if let Some(b) = s.strip_prefix("0b").or_else(|| s.strip_prefix("0B")) {
        (b, 2)
    } else {
        (s, 10)
    };
    if digits.is_empty() || digits.starts_with('_') {
        return Err("no digits".into());
    }
    let mut n: u64 = 0;
    for c in digits.chars() {
        if c == '_' {
            continue;
        }
        let Some(d) = c.to_digit(radix) else {
            return Err(format!("'{c}' is not a base-{radix} digit"));
        };
        n = n
            .checked_mul(u64::from(radix))
            .and_then(|n| n.checked_add(u64::from(d)))
            .ok_or_else(|| "too large for 64 bits".to_string())?;
    }
    Ok(n)
}

/// A duration like `100ms`: a whole number (`_` allowed) and a unit `us`, `ms` or `s`; in
/// microseconds, at most [`MAX_DURATION_US`].
pub fn parse_duration(s: &str) -> std::result::Result<u64, String> {
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '_'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let scale: u64 = match unit {
        "us" => 1,
        "ms" => 1_000,
        "s" => 1_000_000,
        "" => return Err("a unit (us, ms, s) is needed".into()),
        _ => return Err(format!("unknown unit '{unit}' (use us, ms or s)")),
    };
    if num.is_empty() || num.starts_with('_') {
        return Err("no digits".into());
    }
    let n = parse_number(num)?;
    match n.checked_mul(scale) {
        Some(us) if us <= MAX_DURATION_US => Ok(us),
        _ => Err(format!(
            "longer than the limit of {}s",
            MAX_DURATION_US / 1_000_000
        )),
    }
}

fn duration(cur: &mut Cur<'_, '_>, what: &str) -> PResult<u64> {
    let (w, col) = cur.word(&format!("{what} like 100ms"))?;
    if !w.starts_with(|c: char| c.is_ascii_digit()) {
        return perr(col, format!("expected {what} like 100ms, found '{w}'"));
    }
    parse_duration(w).or_else(|why| {
        perr(
            col,
            format!("expected {what} like 100ms, found '{w}' ({why})"),
        )
    })
}

/// A config offset: prefixed numbers as usual, but a bare decimal of two or more digits is
/// refused, because setpci reads `CAP_EXP+10` as hex and a copied command must not silently
/// change meaning.
fn cfg_number(s: &str) -> std::result::Result<u64, String> {
    let prefixed = s.len() > 1 && matches!(s.get(..2), Some("0x" | "0X" | "0b" | "0B"));
    let n = parse_number(s)?;
    if !prefixed && n >= 10 {
        return Err(format!(
            "ambiguous: setpci reads config offsets as hex; write {n:#x} for decimal {n}, or 0x{s} for hex"
        ));
    }
    Ok(n)
}

fn width_word(w: &str) -> Option<Width> {
    match w.to_ascii_lowercase().as_str() {
        "b" | "8" => Some(Width::B),
        "w" | "16" => Some(Width::W),
        "l" | "32" => Some(Width::L),
        _ => None,
    }
}

/// `BASE[+OFF][.b|.w|.l]` with an optional separate WIDTH word. For `cfg-write` the WIDTH word is
/// recognised only when two operands follow it (WIDTH VALUE), so `cfg-write COMMAND 0x406` reads
/// 0x406 as the value.
fn cfg_loc(cur: &mut Cur<'_, '_>, write: bool) -> PResult<CfgLoc> {
    let (w, col) = cur.word("a config register like 0x04, COMMAND or CAP_EXP+8.w")?;
    let remaining = cur.toks.len().saturating_sub(cur.i);
    let width_arg_present = if write {
        remaining >= 2
    } else {
        remaining >= 1
    };
    let width_arg = if width_arg_present {
        let (ww, wcol) = cur.word("a width")?;
        match width_word(ww) {
            Some(wd) => Some((wd, wcol)),
            None => {
                return perr(
                    wcol,
                    format!("expected a width (b, w, l or 8, 16, 32), found '{ww}'"),
                )
            }
        }
    } else {
        None
    };

    // Split off a `.b/.w/.l` suffix.
    let (body, suffix) = match w.rsplit_once('.') {
        Some((b, s)) => match width_word(s) {
            Some(wd) if s.len() == 1 => (b, Some(wd)),
            _ => {
                return perr(
                    col,
                    format!("invalid width suffix '.{s}' in '{w}' (use .b, .w or .l)"),
                )
            }
        },
        None => (w, None),
    };
    let (base, plus) = match body.split_once('+') {
        Some((b, p)) => match cfg_number(p) {
            Ok(n) if n < 0x1000 => (b, n as u16),
            Ok(n) => {
                return perr(
                    col,
                    format!("offset {n:#x} in '{w}' is past the 4 KiB config space"),
                )
            }
            Err(why) => return perr(col, format!("invalid offset '{p}' in '{w}': {why}")),
        },
        None => (body, 0),
    };
    if base.is_empty() {
        return perr(
            col,
            format!("expected a config register before '+' in '{w}'"),
        );
    }

    let mut implied = None;
    let mut name = None;
    let reg = if base.starts_with(|c: char| c.is_ascii_digit()) {
        match cfg_number(base) {
            Ok(n) if n < 0x1000 => CfgRef::Offset(n as u16),
            Ok(n) => return perr(col, format!("offset {n:#x} is past the 4 KiB config space")),
            Err(why) => return perr(col, format!("invalid config offset '{base}': {why}")),
        }
    } else if let Some(&(n, off, wd)) = cfgnames::HEADER
        .iter()
        .find(|h| h.0.eq_ignore_ascii_case(base))
    {
        implied = Width::from_bytes(wd);
        name = Some(n.to_string());
        CfgRef::Offset(off)
    } else if let Some(&(n, id)) = cfgnames::CAPS
        .iter()
        .find(|c| c.0.eq_ignore_ascii_case(base))
    {
        CfgRef::Cap {
            name: n.to_string(),
            kind: CapKind::Std,
            id,
            plus: 0,
        }
    } else if let Some(&(n, id)) = cfgnames::ECAPS
        .iter()
        .find(|c| c.0.eq_ignore_ascii_case(base))
    {
        CfgRef::Cap {
            name: n.to_string(),
            kind: CapKind::Ext,
            id,
            plus: 0,
        }
    } else {
        let hint = nearest(base, cfgnames::all_names())
            .map(|n| format!(" (did you mean '{n}'?)"))
            .unwrap_or_default();
        return perr(col, format!("unknown config register '{base}'{hint}"));
    };
    let reg = match reg {
        CfgRef::Offset(o) => {
            let sum = u32::from(o) + u32::from(plus);
            CfgRef::Offset(sum.min(0xffff) as u16)
        }
        CfgRef::Cap { name, kind, id, .. } => CfgRef::Cap {
            name,
            kind,
            id,
            plus,
        },
    };

    let width = match (suffix, width_arg) {
        (Some(_), Some((_, wcol))) => {
            return perr(wcol, "width given twice: as a suffix and as an argument")
        }
        (Some(wd), None) | (None, Some((wd, _))) => wd,
        (None, None) => match implied {
            Some(wd) => wd,
            None => {
                return perr(
                    col,
                    format!("'{w}' needs a width: add .b, .w or .l (CAP_EXP+8.w) or a WIDTH argument (b, w, l)"),
                )
            }
        },
    };
    let b = u32::from(width.bytes());
    let (off, what) = match &reg {
        CfgRef::Offset(o) => (u32::from(*o), "offset"),
        CfgRef::Cap { plus, .. } => (u32::from(*plus), "offset into the capability"),
    };
    if off % b != 0 {
        return perr(
            col,
            format!("{what} {off:#x} is not aligned to the {b}-byte width"),
        );
    }
    if off + b > 0x1000 {
        return perr(
            col,
            format!("{what} {off:#x} width {b} is past the 4 KiB config space"),
        );
    }
    Ok(CfgLoc { reg, width, name })
}

fn unknown_keyword(kw: &str) -> String {
    match nearest(kw, KEYWORDS.iter().copied()) {
        Some(k) => format!("unknown step '{kw}' (did you mean '{k}'?)"),
        None => format!("unknown step '{kw}'; steps are: {}", KEYWORDS.join(", ")),
    }
}

/// The closest candidate (case-insensitive edit distance), if close enough to be a likely typo.
pub(crate) fn nearest<'c>(
    word: &str,
    candidates: impl Iterator<Item = &'c str>,
) -> Option<&'c str> {
    let w = word.to_ascii_lowercase();
    let limit = (w.chars().count() / 2).clamp(1, 3);
    candidates
        .map(|c| (levenshtein(&w, &c.to_ascii_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}
