//! Resolution: from a parsed [`Experiment`] to a [`Plan`], the flat list of concrete steps a dry run
//! prints and the runner executes (repeats expanded, variables substituted, names looked up, BAR
//! offsets checked against the BAR, field writes turned into mask + value).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

use super::parse::{
    block_size, nearest, CfgLoc, CfgRef, Experiment, FieldRef, Loc, MsgRef, RegRef, Span, Step,
    Stmt, Value, MAX_STEPS,
};
use crate::error::{Error, Result};

/// The BAR that register steps address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct BarInfo {
    /// BAR number (5 for the AMD register BAR, 0 for e1000e).
    pub index: u8,
    /// Length in bytes.
    pub len: u64,
}

/// A register of the database: BAR byte offset and access width in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct RegInfo {
    pub offset: u64,
    pub width: u8,
}

/// A field of a register: lowest bit and width in bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct FieldInfo {
    pub shift: u8,
    pub width: u8,
}

/// What resolution needs to know about the device. The runner implements it over the register
/// database; [`MapResolver`] is a plain in-memory one.
pub trait Resolver {
    /// The BAR that register steps address.
    fn bar(&self) -> BarInfo;
    /// A register by name.
    fn register(&self, name: &str) -> Option<RegInfo>;
    /// A field of a named register.
    fn field(&self, register: &str, field: &str) -> Option<FieldInfo>;
    /// An SMU message id by name.
    fn smu_message(&self, name: &str) -> Option<u32>;
    /// Whether a reset method name is valid here; `Err` holds the reason (for the error line).
    fn reset_method(&self, name: &str) -> std::result::Result<(), String>;
    /// Known register names, for "did you mean" hints (optional).
    fn register_names(&self) -> Vec<String> {
        Vec::new()
    }
    /// Known field names of a register, for hints (optional).
    fn field_names(&self, _register: &str) -> Vec<String> {
        Vec::new()
    }
    /// Known SMU message names, for hints (optional).
    fn smu_message_names(&self) -> Vec<String> {
        Vec::new()
    }
}

/// A resolved BAR register.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct BarReg {
    pub bar: u8,
    pub offset: u64,
    /// Access width in bytes (1, 2, 4 or 8).
    pub width: u8,
    /// The name the experiment used, if any.
    pub name: Option<String>,
}

impl fmt::Display for BarReg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BAR{}+{:#x}", self.bar, self.offset)?;
        if let Some(n) = &self.name {
            write!(f, " ({n})")?;
        }
        Ok(())
    }
}

/// One concrete operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Op {
    Read {
        reg: BarReg,
    },
    Write {
        reg: BarReg,
        value: u64,
    },
    /// Read, `(old & !mask) | value`, write.
    Modify {
        reg: BarReg,
        mask: u64,
        value: u64,
        /// The fields as written, e.g. `RST=0x1`, for the trace.
        fields: Vec<String>,
    },
    /// Read until `(reg & mask) == value`, at most `timeout_us`.
    Poll {
        reg: BarReg,
        mask: u64,
        value: u64,
        timeout_us: u64,
    },
    /// Read once; fail the experiment unless `(reg & mask) == value`.
    Expect {
        reg: BarReg,
        mask: u64,
        value: u64,
    },
    Sleep {
        us: u64,
    },
    CfgRead {
        cfg: CfgLoc,
    },
    CfgWrite {
        cfg: CfgLoc,
        value: u32,
    },
    SmnRead {
        addr: u32,
    },
    SmnWrite {
        addr: u32,
        value: u32,
    },
    Smu {
        msg: u32,
        name: Option<String>,
        arg: u32,
        wait: bool,
    },
    Reset {
        method: String,
    },
    /// No registers = the runner's default set.
    Snapshot {
        name: String,
        regs: Vec<BarReg>,
    },
    Label {
        name: String,
    },
}

/// Which pass of an enclosing `repeat` a step belongs to (0-based `index` of `count`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Pass {
    pub index: u64,
    pub count: u64,
}

/// A concrete step and where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct PlanStep {
    pub span: Span,
    /// Enclosing repeats, outermost first.
    pub passes: Vec<Pass>,
    #[serde(flatten)]
    pub op: Op,
}

/// The flat list of concrete steps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Plan {
    pub path: PathBuf,
    pub bar: BarInfo,
    pub steps: Vec<PlanStep>,
}

fn hex(v: u64, width_bytes: u8) -> String {
    let digits = 2 * usize::from(width_bytes);
    format!("{v:#0w$x}", w = digits + 2)
}

/// `2s`, `100ms`, `1500us`: the largest unit that shows the value exactly.
pub fn format_duration(us: u64) -> String {
    if us != 0 && us % 1_000_000 == 0 {
        format!("{}s", us / 1_000_000)
    } else if us != 0 && us % 1_000 == 0 {
        format!("{}ms", us / 1_000)
    } else {
        format!("{us}us")
    }
}

impl fmt::Display for CfgLoc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = self.width.suffix();
        match &self.reg {
            CfgRef::Offset(o) => {
                write!(f, "{o:#05x}.{w}")?;
                if let Some(n) = &self.name {
                    write!(f, " ({n})")?;
                }
                Ok(())
            }
            CfgRef::Cap { name, plus, .. } => write!(f, "{name}+{plus:#x}.{w}"),
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Read { reg } => write!(f, "read {reg}"),
            Op::Write { reg, value } => write!(f, "write {reg} <- {}", hex(*value, reg.width)),
            Op::Modify {
                reg,
                mask,
                value,
                fields,
            } => write!(
                f,
                "modify {reg} mask {} <- {} ({})",
                hex(*mask, reg.width),
                hex(*value, reg.width),
                fields.join(" ")
            ),
            Op::Poll {
                reg,
                mask,
                value,
                timeout_us,
            } => write!(
                f,
                "poll {reg} & {} == {} within {}",
                hex(*mask, reg.width),
                hex(*value, reg.width),
                format_duration(*timeout_us)
            ),
            Op::Expect { reg, mask, value } => write!(
                f,
                "expect {reg} & {} == {}",
                hex(*mask, reg.width),
                hex(*value, reg.width)
            ),
            Op::Sleep { us } => write!(f, "sleep {}", format_duration(*us)),
            Op::CfgRead { cfg } => write!(f, "cfg-read {cfg}"),
            Op::CfgWrite { cfg, value } => write!(
                f,
                "cfg-write {cfg} <- {}",
                hex(u64::from(*value), cfg.width.bytes())
            ),
            Op::SmnRead { addr } => write!(f, "smn-read {}", hex(u64::from(*addr), 4)),
            Op::SmnWrite { addr, value } => write!(
                f,
                "smn-write {} <- {}",
                hex(u64::from(*addr), 4),
                hex(u64::from(*value), 4)
            ),
            Op::Smu {
                msg,
                name,
                arg,
                wait,
            } => {
                write!(f, "smu {msg:#x}")?;
                if let Some(n) = name {
                    write!(f, " ({n})")?;
                }
                write!(f, " arg {}", hex(u64::from(*arg), 4))?;
                if !wait {
                    write!(f, " nowait")?;
                }
                Ok(())
            }
            Op::Reset { method } => write!(f, "reset {method}"),
            Op::Snapshot { name, regs } => {
                if regs.is_empty() {
                    write!(f, "snapshot {name} (default registers)")
                } else {
                    let list: Vec<String> = regs.iter().map(ToString::to_string).collect();
                    write!(f, "snapshot {name}: {}", list.join(", "))
                }
            }
            Op::Label { name } => write!(f, "label {name}"),
        }
    }
}

impl fmt::Display for PlanStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.op.fmt(f)
    }
}

impl fmt::Display for Plan {
    /// One step a line: number, source line, the step, the repeat passes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.steps.iter().enumerate() {
            write!(f, "{:>5}  line {:<4} {}", i + 1, s.span.line, s.op)?;
            if !s.passes.is_empty() {
                let p: Vec<String> = s
                    .passes
                    .iter()
                    .map(|p| format!("{}/{}", p.index.saturating_add(1), p.count))
                    .collect();
                write!(f, "  [pass {}]", p.join(", "))?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

/// Turn an experiment into a plan, checking every name and bound against `ctx`.
pub fn resolve(exp: &Experiment, ctx: &dyn Resolver) -> Result<Plan> {
    let total = exp.expanded_len();
    if total > MAX_STEPS {
        return Err(Error::FileParse {
            path: exp.path.clone(),
            line: 1,
            column: 1,
            reason: format!(
                "the experiment expands to {total} steps, more than the limit of {MAX_STEPS}"
            ),
        });
    }
    let mut r = Res {
        exp,
        ctx,
        bar: ctx.bar(),
        out: Vec::new(),
        passes: Vec::new(),
    };
    r.block(&exp.steps)?;
    Ok(Plan {
        path: exp.path.clone(),
        bar: r.bar,
        steps: r.out,
    })
}

struct Res<'a> {
    exp: &'a Experiment,
    ctx: &'a dyn Resolver,
    bar: BarInfo,
    out: Vec<PlanStep>,
    passes: Vec<Pass>,
}

fn ones(bits: u32) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

fn hint(word: &str, names: Vec<String>) -> String {
    nearest(word, names.iter().map(String::as_str))
        .map(|n| format!(" (did you mean '{n}'?)"))
        .unwrap_or_default()
}

impl Res<'_> {
    fn err(&self, line: usize, column: usize, reason: impl Into<String>) -> Error {
        Error::FileParse {
            path: self.exp.path.clone(),
            line,
            column,
            reason: reason.into(),
        }
    }

    fn block(&mut self, stmts: &[Stmt]) -> Result<()> {
        for s in stmts {
            if let Step::Repeat { count, body } = &s.step {
                // An empty body expands to nothing however large the count: skip the loop.
                if block_size(body) == 0 {
                    continue;
                }
                for index in 0..*count {
                    self.passes.push(Pass {
                        index,
                        count: *count,
                    });
                    let r = self.block(body);
                    self.passes.pop();
                    r?;
                }
            } else {
                let op = self.op(s)?;
                self.out.push(PlanStep {
                    span: s.span.clone(),
                    passes: self.passes.clone(),
                    op,
                });
            }
        }
        Ok(())
    }

    fn val(&self, line: usize, v: &Loc<Value>) -> Result<u64> {
        match self.exp.value(&v.item) {
            Some(n) => Ok(n),
            None => {
                let name = match &v.item {
                    Value::Var(n) => n.as_str(),
                    Value::Literal(_) => "",
                };
                Err(self.err(line, v.column, format!("variable '{name}' is not defined")))
            }
        }
    }

    fn val32(&self, line: usize, v: &Loc<Value>, what: &str) -> Result<u32> {
        let n = self.val(line, v)?;
        u32::try_from(n).map_err(|_| {
            self.err(
                line,
                v.column,
                format!("{what} {n:#x} does not fit in 32 bits"),
            )
        })
    }

    fn reg(&self, line: usize, r: &Loc<RegRef>) -> Result<BarReg> {
        let (offset, width, name) = match &r.item {
            RegRef::Name(n) => match self.ctx.register(n) {
                Some(ri) => (ri.offset, ri.width, Some(n.clone())),
                None => {
                    let h = hint(n, self.ctx.register_names());
                    return Err(self.err(line, r.column, format!("unknown register '{n}'{h}")));
                }
            },
            // Raw offsets are dword accesses: every MMIO register this project touches is 32-bit.
            RegRef::BarOffset(o) => (*o, 4, None),
        };
        let shown = match &name {
            Some(n) => format!("register {n} ({:#x})", offset),
            None => format!("BAR offset {offset:#x}"),
        };
        if !matches!(width, 1 | 2 | 4 | 8) {
            return Err(self.err(
                line,
                r.column,
                format!("{shown} has width {width} bytes; BAR accesses are 1, 2, 4 or 8 bytes"),
            ));
        }
        if offset % u64::from(width) != 0 {
            return Err(self.err(
                line,
                r.column,
                format!("{shown} is not aligned to its {width}-byte width"),
            ));
        }
        match offset.checked_add(u64::from(width)) {
            Some(end) if end <= self.bar.len => {}
            _ => {
                return Err(self.err(
                    line,
                    r.column,
                    format!(
                        "{shown} width {width} is past the end of BAR{} ({:#x} bytes)",
                        self.bar.index, self.bar.len
                    ),
                ))
            }
        }
        Ok(BarReg {
            bar: self.bar.index,
            offset,
            width,
            name,
        })
    }

    fn fits(&self, line: usize, v: &Loc<Value>, n: u64, bytes: u8, what: &str) -> Result<()> {
        if n > ones(u32::from(bytes) * 8) {
            return Err(self.err(
                line,
                v.column,
                format!(
                    "{what} {n:#x} does not fit the {}-bit register",
                    u32::from(bytes) * 8
                ),
            ));
        }
        Ok(())
    }

    fn masked(
        &self,
        line: usize,
        reg: &BarReg,
        mask: &Loc<Value>,
        value: &Loc<Value>,
    ) -> Result<(u64, u64)> {
        let m = self.val(line, mask)?;
        let v = self.val(line, value)?;
        self.fits(line, mask, m, reg.width, "mask")?;
        self.fits(line, value, v, reg.width, "value")?;
        if v & !m != 0 {
            return Err(self.err(
                line,
                value.column,
                format!("value {v:#x} has bits outside the mask {m:#x}, so it can never match"),
            ));
        }
        Ok((m, v))
    }

    fn op(&self, s: &Stmt) -> Result<Op> {
        let line = s.span.line;
        Ok(match &s.step {
            Step::Read { reg } => Op::Read {
                reg: self.reg(line, reg)?,
            },
            Step::Write { reg, value } => {
                let r = self.reg(line, reg)?;
                let v = self.val(line, value)?;
                self.fits(line, value, v, r.width, "value")?;
                Op::Write { reg: r, value: v }
            }
            Step::Modify { reg, fields } => {
                let r = self.reg(line, reg)?;
                let bits = u32::from(r.width) * 8;
                let (mut mask, mut value) = (0u64, 0u64);
                let mut shown = Vec::new();
                for fs in fields {
                    let (shift, width, label) = match &fs.field.item {
                        FieldRef::Bits { hi, lo } => {
                            if hi < lo {
                                return Err(self.err(
                                    line,
                                    fs.field.column,
                                    "bit range must be written [high:low]",
                                ));
                            }
                            let label = if hi == lo {
                                format!("[{hi}]")
                            } else {
                                format!("[{hi}:{lo}]")
                            };
                            (u32::from(*lo), u32::from(*hi) - u32::from(*lo) + 1, label)
                        }
                        FieldRef::Name(fname) => {
                            let RegRef::Name(rname) = &reg.item else {
                                return Err(self.err(
                                    line,
                                    fs.field.column,
                                    format!("field '{fname}' needs a named register; at a raw offset use a bit range like [26]"),
                                ));
                            };
                            match self.ctx.field(rname, fname) {
                                Some(fi) => {
                                    (u32::from(fi.shift), u32::from(fi.width), fname.clone())
                                }
                                None => {
                                    let h = hint(fname, self.ctx.field_names(rname));
                                    return Err(self.err(
                                        line,
                                        fs.field.column,
                                        format!("register {rname} has no field '{fname}'{h}"),
                                    ));
                                }
                            }
                        }
                    };
                    if width == 0 || shift + width > bits {
                        return Err(self.err(
                            line,
                            fs.field.column,
                            format!("field {label} (bits {shift}..{}) is outside the {bits}-bit register", shift + width),
                        ));
                    }
                    let fmask = ones(width) << shift;
                    if fmask & mask != 0 {
                        return Err(self.err(
                            line,
                            fs.field.column,
                            format!("field {label} overlaps a field set earlier in this step"),
                        ));
                    }
                    let v = self.val(line, &fs.value)?;
                    if v > ones(width) {
                        return Err(self.err(
                            line,
                            fs.value.column,
                            format!("value {v:#x} does not fit the {width}-bit field {label}"),
                        ));
                    }
                    mask |= fmask;
                    value |= v << shift;
                    shown.push(format!("{label}={v:#x}"));
                }
                Op::Modify {
                    reg: r,
                    mask,
                    value,
                    fields: shown,
                }
            }
            Step::Poll {
                reg,
                mask,
                value,
                timeout_us,
            } => {
                let r = self.reg(line, reg)?;
                let (m, v) = self.masked(line, &r, mask, value)?;
                Op::Poll {
                    reg: r,
                    mask: m,
                    value: v,
                    timeout_us: *timeout_us,
                }
            }
            Step::Expect { reg, mask, value } => {
                let r = self.reg(line, reg)?;
                let (m, v) = self.masked(line, &r, mask, value)?;
                Op::Expect {
                    reg: r,
                    mask: m,
                    value: v,
                }
            }
            Step::Sleep { us } => Op::Sleep { us: *us },
            Step::CfgRead { cfg } => Op::CfgRead { cfg: cfg.clone() },
            Step::CfgWrite { cfg, value } => {
                let v = self.val(line, value)?;
                let bits = u32::from(cfg.width.bytes()) * 8;
                if v > ones(bits) {
                    return Err(self.err(
                        line,
                        value.column,
                        format!("value {v:#x} does not fit the {bits}-bit config access"),
                    ));
                }
                Op::CfgWrite {
                    cfg: cfg.clone(),
                    value: v as u32,
                }
            }
            Step::SmnRead { addr } => Op::SmnRead {
                addr: self.smn_addr(line, addr)?,
            },
            Step::SmnWrite { addr, value } => Op::SmnWrite {
                addr: self.smn_addr(line, addr)?,
                value: self.val32(line, value, "value")?,
            },
            Step::Smu { msg, arg, wait } => {
                let (id, name) = match &msg.item {
                    MsgRef::Name(n) => match self.ctx.smu_message(n) {
                        Some(id) => (id, Some(n.clone())),
                        None => {
                            let h = hint(n, self.ctx.smu_message_names());
                            return Err(self.err(
                                line,
                                msg.column,
                                format!("unknown SMU message '{n}'{h}"),
                            ));
                        }
                    },
                    MsgRef::Id(v) => {
                        let loc = Loc {
                            item: v.clone(),
                            column: msg.column,
                        };
                        (self.val32(line, &loc, "SMU message")?, None)
                    }
                };
                let arg = match arg {
                    Some(a) => self.val32(line, a, "SMU argument")?,
                    None => 0,
                };
                Op::Smu {
                    msg: id,
                    name,
                    arg,
                    wait: *wait,
                }
            }
            Step::Reset { method } => {
                self.ctx
                    .reset_method(&method.item)
                    .map_err(|why| self.err(line, method.column, why))?;
                Op::Reset {
                    method: method.item.clone(),
                }
            }
            Step::Snapshot { name, regs } => Op::Snapshot {
                name: name.clone(),
                regs: regs
                    .iter()
                    .map(|r| self.reg(line, r))
                    .collect::<Result<_>>()?,
            },
            Step::Label { name } => Op::Label { name: name.clone() },
            Step::Repeat { .. } => {
                return Err(self.err(line, s.span.column, "internal: repeat reached op()"))
            }
        })
    }

    /// SMN addresses go through a 32-bit index register and are dword accesses.
    fn smn_addr(&self, line: usize, addr: &Loc<Value>) -> Result<u32> {
        let a = self.val32(line, addr, "SMN address")?;
        if a % 4 != 0 {
            return Err(self.err(
                line,
                addr.column,
                format!("SMN address {a:#x} is not 4-byte aligned"),
            ));
        }
        Ok(a)
    }
}

/// A resolver over in-memory tables, for tests and for devices without a register database.
#[derive(Debug, Clone, Default)]
pub struct MapResolver {
    pub bar: Option<BarInfo>,
    pub registers: BTreeMap<String, RegInfo>,
    /// (register, field) → field.
    pub fields: BTreeMap<(String, String), FieldInfo>,
    pub messages: BTreeMap<String, u32>,
    pub reset_methods: Vec<String>,
}

impl MapResolver {
    pub fn new(bar_index: u8, bar_len: u64) -> Self {
        MapResolver {
            bar: Some(BarInfo {
                index: bar_index,
                len: bar_len,
            }),
            ..Default::default()
        }
    }

    pub fn register(mut self, name: &str, offset: u64, width: u8) -> Self {
        self.registers
            .insert(name.to_string(), RegInfo { offset, width });
        self
    }

    pub fn field(mut self, register: &str, name: &str, shift: u8, width: u8) -> Self {
        self.fields.insert(
            (register.to_string(), name.to_string()),
            FieldInfo { shift, width },
        );
        self
    }

    pub fn message(mut self, name: &str, id: u32) -> Self {
        self.messages.insert(name.to_string(), id);
        self
    }

    pub fn reset_methods(mut self, names: &[&str]) -> Self {
        self.reset_methods
            .extend(names.iter().map(|n| n.to_string()));
        self
    }
}

impl Resolver for MapResolver {
    fn bar(&self) -> BarInfo {
        self.bar.unwrap_or(BarInfo { index: 0, len: 0 })
    }

    fn register(&self, name: &str) -> Option<RegInfo> {
        self.registers.get(name).copied()
    }

    fn field(&self, register: &str, field: &str) -> Option<FieldInfo> {
        self.fields
            .get(&(register.to_string(), field.to_string()))
            .copied()
    }

    fn smu_message(&self, name: &str) -> Option<u32> {
        self.messages.get(name).copied()
    }

    fn reset_method(&self, name: &str) -> std::result::Result<(), String> {
        if self.reset_methods.iter().any(|m| m == name) {
            return Ok(());
        }
        let h = hint(name, self.reset_methods.clone());
        Err(format!(
            "unknown reset method '{name}'{h}; known here: {}",
            if self.reset_methods.is_empty() {
                "none".to_string()
            } else {
                self.reset_methods.join(", ")
            }
        ))
    }

    fn register_names(&self) -> Vec<String> {
        self.registers.keys().cloned().collect()
    }

    fn field_names(&self, register: &str) -> Vec<String> {
        self.fields
            .keys()
            .filter(|(r, _)| r == register)
            .map(|(_, f)| f.clone())
            .collect()
    }

    fn smu_message_names(&self) -> Vec<String> {
        self.messages.keys().cloned().collect()
    }
}
