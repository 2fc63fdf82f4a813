//! The statement parser: lines into steps, `repeat` blocks, variables and the expansion
//! limit.

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::{Error, Result};

use super::lexer::{lex_line, Tok, Token};
use super::operand::{
    bit_number, cfg_loc, duration, is_ident, name, nearest, unknown_keyword, Cur,
};
use super::{
    parse_number, stmt_size, Experiment, FieldRef, FieldSet, Loc, MsgRef, RegRef, Span, Step, Stmt,
    Value, MAX_DEPTH, MAX_STEPS,
};

/// A fault on the current line: column and reason.
pub(super) struct PErr {
    col: usize,
    reason: String,
}

pub(super) type PResult<T> = std::result::Result<T, PErr>;

pub(super) fn perr<T>(col: usize, reason: impl Into<String>) -> PResult<T> {
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

pub(super) struct Parser<'p> {
    pub(super) path: &'p Path,
    pub(super) vars: BTreeMap<String, u64>,
    pub(super) var_lines: BTreeMap<String, usize>,
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

    pub(super) fn run(mut self, text: &str) -> Result<Experiment> {
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
