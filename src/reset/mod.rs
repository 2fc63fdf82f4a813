//! The reset-method table, after the kernel's `pci_reset_fn_methods[]`
//! (drivers/pci/pci.c): every method is one module with a cheap `probe` that
//! says whether it applies here and why not, and a `reset` that only does the
//! mechanism. The orchestrator owns everything around it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::amd::regs::RegsDb;
use crate::error::{Error, Result};
use crate::machine::Machine;
use crate::pci::caps::Decoded;
use crate::pci::config::MemConfig;
use crate::pci::{Bdf, Device, Topology};

pub use crate::journal::{self, Journal};

pub use crate::pci::{lock, wait};

pub mod amd_health;
pub mod autoprobe;
pub mod engine;
pub mod health;
pub mod state;

pub mod af_flr;
pub mod bus;
pub mod d3cold;
pub mod flr;
pub mod kernel;
pub mod pm;
pub mod remove_rescan;
pub mod smu_mode2;

/// One raw register value behind a verdict.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct RegValue {
    pub name: &'static str,
    /// Config-space offset of the register.
    pub offset: u16,
    pub width: u8,
    pub value: u32,
}

impl RegValue {
    pub fn new(name: &'static str, offset: u16, width: u8, value: u32) -> Self {
        RegValue {
            name,
            offset,
            width,
            value,
        }
    }
}

impl std::fmt::Display for RegValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let digits = self.width as usize * 2;
        write!(
            f,
            "{}@{:#05x}={:#0w$x}",
            self.name,
            self.offset,
            self.value,
            w = digits + 2
        )
    }
}

/// A probe's answer.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Verdict {
    pub available: bool,
    /// Stable machine-readable reason (`no_pcie_cap`, `siblings_live_driver`,
    /// …; docs/json.md lists them): scripts match on it, never on `reason`.
    pub code: &'static str,
    pub reason: String,
    /// Set when the probe could not tell (config space beyond the first 64
    /// bytes needs root): `available` is then false but means "unknown".
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub unknown: bool,
    /// Other functions the method would also reset (its blast radius).
    pub affects: Vec<Bdf>,
    /// The raw register values the verdict rests on.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub registers: Vec<RegValue>,
    /// A "no" that is a safety refusal `--force` would lift (a live host
    /// driver in the blast radius), not a mechanism that is absent.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub refused: bool,
}

impl Verdict {
    pub fn yes(code: &'static str, reason: impl Into<String>) -> Verdict {
        Verdict {
            available: true,
            code,
            reason: reason.into(),
            unknown: false,
            affects: vec![],
            registers: vec![],
            refused: false,
        }
    }

    pub fn no(code: &'static str, reason: impl Into<String>) -> Verdict {
        Verdict {
            available: false,
            code,
            reason: reason.into(),
            unknown: false,
            affects: vec![],
            registers: vec![],
            refused: false,
        }
    }

    /// A safety refusal (see `refused`).
    pub fn refuse(code: &'static str, reason: impl Into<String>) -> Verdict {
        Verdict {
            refused: true,
            ..Verdict::no(code, reason)
        }
    }

    /// The probe could not tell: its evidence is out of reach.
    pub fn unknown(code: &'static str, reason: impl Into<String>) -> Verdict {
        Verdict {
            unknown: true,
            ..Verdict::no(code, reason)
        }
    }

    pub fn with_regs(mut self, regs: Vec<RegValue>) -> Verdict {
        self.registers = regs;
        self
    }

    pub fn with_affects(mut self, affects: Vec<Bdf>) -> Verdict {
        self.affects = affects;
        self
    }
}

/// Decoded config of each device looked at, or why it could not be read.
#[derive(Debug, Default)]
pub struct Configs {
    map: BTreeMap<Bdf, std::result::Result<Decoded, String>>,
}

impl Configs {
    /// Reads and decodes the config of each device named (never waking one
    /// that is in D3cold).
    pub fn load<'a>(topo: &Topology, which: impl IntoIterator<Item = &'a Bdf>) -> Configs {
        let mut map = BTreeMap::new();
        for bdf in which {
            let Some(dev) = topo.get(bdf) else { continue };
            let r = dev
                .read_config()
                .map_err(|e| e.one_line())
                .and_then(|bytes| {
                    if needs_more_than_header(&bytes) {
                        return Err(format!(
                        "{CONFIG_NEEDS_ROOT}: only the first {} bytes of config space are readable \
                         without root, and the capability list starts beyond them",
                        bytes.len()
                    ));
                    }
                    Decoded::decode(&MemConfig::image(bdf.to_string(), bytes))
                        .map_err(|e| e.one_line())
                });
            map.insert(*bdf, r);
        }
        Configs { map }
    }

    pub fn get(&self, bdf: &Bdf) -> std::result::Result<&Decoded, String> {
        match self.map.get(bdf) {
            Some(Ok(d)) => Ok(d),
            Some(Err(e)) => Err(e.clone()),
            None => Err(format!("{bdf}: config not read")),
        }
    }
}

/// A header-only image (a non-root read) whose capability list points past it.
fn needs_more_than_header(bytes: &[u8]) -> bool {
    use crate::pci::regs::{Status, PCI_CAPABILITY_LIST, PCI_STATUS};
    if bytes.len() > 64 || bytes.len() < 0x36 {
        return false;
    }
    let status = u16::from_le_bytes([bytes[PCI_STATUS as usize], bytes[PCI_STATUS as usize + 1]]);
    Status::from_bits_retain(status).contains(Status::CAP_LIST)
        && bytes[PCI_CAPABILITY_LIST as usize] as usize >= bytes.len()
}

/// Everything a probe may look at.
pub struct Analysis<'a> {
    pub host: &'a Machine,
    pub topo: &'a Topology,
    pub dev: &'a Device,
    pub configs: &'a Configs,
    /// `--force`: probes still report what is wrong, but quirk-level refusals
    /// (the kernel's, or "live driver on the bus") become warnings.
    pub force: bool,
    /// The register database (vendor methods look their ASIC up here).
    pub regs: &'a RegsDb,
    /// Options of the reset being planned (defaults for `list`/`probe`).
    pub opts: &'a ResetOptions,
    /// The part after `:` in a method name (`kernel:flr` → `flr`).
    pub arg: Option<&'a str>,
}

impl<'a> Analysis<'a> {
    pub fn cfg(&self) -> std::result::Result<&'a Decoded, String> {
        self.configs.get(&self.dev.bdf)
    }

    /// Upstream bridge device, if the device is not on a root bus.
    pub fn bridge(&self) -> Option<&'a Device> {
        match &self.dev.parent {
            crate::pci::sysfs::Parent::Bridge(b) => self.topo.get(b),
            crate::pci::sysfs::Parent::RootBus(_) => None,
        }
    }
}

/// Who restores the device's state around a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Managed {
    /// A raw mechanism: the orchestrator saves and disables before, waits for
    /// readiness and restores after (as `pci_reset_function` does).
    Raw,
    /// The kernel re-creates or restores the device itself (its own `reset`,
    /// runtime PM, re-enumeration): the orchestrator only checks health.
    Kernel,
}

/// Options of one `reset` invocation.
#[derive(Debug, Clone)]
pub struct ResetOptions {
    pub force: bool,
    pub dry_run: bool,
    /// `remove_rescan`: every function of the slot, not only this one.
    pub slot: bool,
    /// Bound of the readiness wait after a raw reset (the kernel's
    /// PCIE_RESET_READY_POLL_MS is 60 s).
    pub ready_timeout: Duration,
    /// Bound of each other wait (device gone, device back, power state).
    pub wait_timeout: Duration,
    /// Bound of waiting for another resetlab's lock on the device.
    pub lock_timeout: Duration,
    /// Vendor methods: the ASIC (regs/ name) when the ids do not say it.
    pub asic: Option<String>,
    /// Vendor methods: the register BAR when not the ASIC's usual one.
    pub bar: Option<u8>,
    /// A time budget for the whole chain (the hook's phase budget): no method
    /// starts once it is spent, and every wait is cut to what is left of it.
    /// `None`: only the bounds above.
    pub budget: Option<Duration>,
    /// When the budget runs out: set by the orchestrator as the chain starts
    /// (from `budget`), read through [`ResetOptions::bound`].
    pub deadline: Option<Instant>,
}

impl ResetOptions {
    /// What is left of the chain's budget (`None` without one).
    pub fn left(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// A wait's own bound cut to what is left of the chain's budget.
    pub fn bound(&self, own: Duration) -> Duration {
        self.left().map_or(own, |l| own.min(l))
    }

    /// Bound of the readiness wait: `ready_timeout`, within the budget.
    pub fn ready_bound(&self) -> Duration {
        self.bound(self.ready_timeout)
    }

    /// Bound of any other wait: `wait_timeout`, within the budget.
    pub fn wait_bound(&self) -> Duration {
        self.bound(self.wait_timeout)
    }

    /// Bound of waiting for a device lock: `lock_timeout`, within the budget.
    pub fn lock_bound(&self) -> Duration {
        self.bound(self.lock_timeout)
    }

    /// Whether the chain's budget is spent (never without one).
    pub fn budget_spent(&self) -> bool {
        self.left().is_some_and(|l| l.is_zero())
    }

    /// Said beside an error of a wait the budget cut short.
    pub fn budget_note(&self) -> String {
        match self.budget {
            Some(b) => format!(
                "; the wait was cut to what was left of the chain's budget of {} s",
                b.as_secs_f64()
            ),
            None => String::new(),
        }
    }

    /// A timeout that ended with the budget says so: a wait cut to what was
    /// left of the budget names the budget beside its own bound.
    pub fn explain(&self, e: Error) -> Error {
        match e {
            Error::Timeout { what, bound_ms } if self.budget_spent() => Error::Timeout {
                what: format!("{what}{}", self.budget_note()),
                bound_ms,
            },
            e => e,
        }
    }
}

impl Default for ResetOptions {
    fn default() -> Self {
        ResetOptions {
            force: false,
            dry_run: false,
            slot: false,
            ready_timeout: Duration::from_secs(60),
            wait_timeout: Duration::from_secs(30),
            lock_timeout: Duration::from_secs(30),
            asic: None,
            bar: None,
            budget: None,
            deadline: None,
        }
    }
}

/// What a method's `reset` did, in words, for the report.
#[derive(Debug, Clone, Default, Serialize, schemars::JsonSchema)]
pub struct Outcome {
    pub did: String,
    /// Facts learnt on the way (the deepest power state reached, an SMU answer).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl Outcome {
    pub fn did(s: impl Into<String>) -> Outcome {
        Outcome {
            did: s.into(),
            notes: vec![],
        }
    }
}

/// Everything a method's `reset` may use. Every write goes through `journal`.
pub struct ResetCtx<'a> {
    pub host: &'a Machine,
    pub topo: &'a Topology,
    pub dev: &'a Device,
    pub journal: &'a mut Journal,
    pub opts: &'a ResetOptions,
    pub regs: &'a RegsDb,
    /// The part after `:` in a method name (`kernel:flr` → `flr`).
    pub arg: Option<&'a str>,
}

impl ResetCtx<'_> {
    pub fn bdf(&self) -> Bdf {
        self.dev.bdf
    }

    /// Opens the device's config space for writing (reads are fine in dry-run).
    pub fn config(&self) -> Result<crate::pci::config::SysfsConfig> {
        crate::pci::session::config_for_writes(self.dev, self.journal)
    }

    /// Runs `f` with memory decoding on (a [`MemoryDecoding`] guard: COMMAND
    /// is put back after, also when `f` fails); says whether it was off.
    ///
    /// [`MemoryDecoding`]: crate::pci::session::MemoryDecoding
    pub fn with_memory_decoding<T>(
        &mut self,
        f: impl FnOnce(&mut ResetCtx<'_>) -> Result<T>,
    ) -> Result<(T, bool)> {
        let mut mem = crate::pci::session::MemoryDecoding::on(self.dev, &mut *self.journal)?;
        let turned_on = mem.turned_on();
        let r = f(&mut ResetCtx {
            host: self.host,
            topo: self.topo,
            dev: self.dev,
            journal: mem.journal(),
            opts: self.opts,
            regs: self.regs,
            arg: self.arg,
        });
        let restored = mem.close();
        let v = r?;
        restored?;
        Ok((v, turned_on))
    }

    /// Sleeps the spec's minimum delay (FLR 100 ms, D3hot 10 ms, SBR 2 ms):
    /// these are floors the device is owed, not waits that could be polled.
    /// In dry-run it is only recorded.
    pub fn spec_delay(&mut self, what: &str, d: Duration) -> Result<()> {
        if self.opts.dry_run {
            let bdf = self.bdf();
            return self.journal.note(
                Some(&bdf),
                format!("would wait {} ms ({what})", d.as_millis()),
            );
        }
        std::thread::sleep(d);
        Ok(())
    }
}

/// One row of the table.
pub struct MethodDef {
    pub name: &'static str,
    pub summary: &'static str,
    pub managed: Managed,
    pub probe: fn(&Analysis) -> Verdict,
    pub reset: fn(&mut ResetCtx) -> Result<Outcome>,
}

/// The methods in the order `list` shows them (cheapest, narrowest first).
pub static METHODS: &[MethodDef] = &[
    kernel::DEF,
    flr::DEF,
    af_flr::DEF,
    pm::DEF,
    bus::DEF,
    d3cold::DEF,
    remove_rescan::DEF,
    smu_mode2::DEF,
];

/// Canonical method name: `-` is accepted for `_`, `sbr` for `bus`; a
/// `kernel:<method>` argument is split off by [`parse_method`].
pub fn canonical_name(input: &str) -> Result<&'static str> {
    let norm = input.trim().replace('-', "_").to_ascii_lowercase();
    let norm = if norm == "sbr" {
        "bus".to_string()
    } else {
        norm
    };
    METHODS
        .iter()
        .map(|m| m.name)
        .find(|n| *n == norm)
        .ok_or_else(|| {
            let names: Vec<&str> = METHODS.iter().map(|m| m.name).collect();
            Error::parse(
                "reset method",
                input,
                format!("known methods: {}", names.join(", ")),
            )
        })
}

/// A method named on the command line: the table row and its argument.
#[derive(Clone, Copy)]
pub struct MethodSpec {
    pub def: &'static MethodDef,
    pub arg: Option<&'static str>,
}

impl MethodSpec {
    pub fn label(&self) -> String {
        match self.arg {
            Some(a) => format!("{}:{a}", self.def.name),
            None => self.def.name.to_string(),
        }
    }
}

/// Parses `flr`, `sbr`, `kernel`, `kernel:flr`, …
pub fn parse_method(input: &str) -> Result<MethodSpec> {
    let (name, arg) = match input.split_once(':') {
        Some((n, a)) => (n, Some(a)),
        None => (input, None),
    };
    let def = method(name)?;
    let arg = match arg {
        None => None,
        Some(a) if def.name == "kernel" => {
            let a = a.trim().replace('-', "_").to_ascii_lowercase();
            let a = if a == "sbr" { "bus".to_string() } else { a };
            Some(
                *kernel::KERNEL_METHODS
                    .iter()
                    .find(|k| **k == a)
                    .ok_or_else(|| {
                        Error::parse(
                            "kernel reset method",
                            input,
                            format!(
                                "the kernel's methods are {}",
                                kernel::KERNEL_METHODS.join(", ")
                            ),
                        )
                    })?,
            )
        }
        Some(_) => {
            return Err(Error::parse(
                "reset method",
                input,
                "only 'kernel' takes an argument (kernel:flr)",
            ))
        }
    };
    Ok(MethodSpec { def, arg })
}

/// Parses a comma-separated chain.
pub fn parse_chain(input: &str) -> Result<Vec<MethodSpec>> {
    let v: Vec<MethodSpec> = input
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(parse_method)
        .collect::<Result<_>>()?;
    if v.is_empty() {
        return Err(Error::parse(
            "method list",
            input,
            "name at least one method",
        ));
    }
    Ok(v)
}

pub fn method(name: &str) -> Result<&'static MethodDef> {
    let n = canonical_name(name)?;
    METHODS
        .iter()
        .find(|m| m.name == n)
        .ok_or_else(|| Error::not_found("reset method", name))
}

/// Probes every method for one device.
pub fn probe_all(a: &Analysis) -> BTreeMap<&'static str, Verdict> {
    METHODS.iter().map(|m| (m.name, (m.probe)(a))).collect()
}

/// The common "config unreadable" verdict, naming why.
pub(crate) fn no_config(why: String) -> Verdict {
    if why.starts_with(CONFIG_NEEDS_ROOT) {
        return Verdict::unknown("config_needs_root", why);
    }
    Verdict::no("config_unread", format!("config space not examined: {why}"))
}

/// How an unreadable capability list starts its error: without root, sysfs
/// `config` gives only the first 64 bytes (pci_read_config in
/// drivers/pci/pci-sysfs.c stops at 64 unless CAP_SYS_ADMIN).
pub const CONFIG_NEEDS_ROOT: &str = "unknown (config needs root)";

/// The PCI-level guards are the device session's (`pci::session`).
pub use crate::pci::session::{is_parking_driver, platform_function};
