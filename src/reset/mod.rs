//! The reset-method table, after the kernel's `pci_reset_fn_methods[]`
//! (drivers/pci/pci.c): every method is one module with a cheap `probe` that
//! says whether it applies here and why not, and a `reset` that only does the
//! mechanism. The orchestrator owns everything around it.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::pci::caps::Decoded;
use crate::pci::config::MemConfig;
use crate::pci::{Bdf, Device, Host, Topology};

pub mod af_flr;
pub mod bus;
pub mod d3cold;
pub mod flr;
pub mod pm;
pub mod remove_rescan;

/// One raw register value behind a verdict.
#[derive(Debug, Clone, Serialize)]
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
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub available: bool,
    pub reason: String,
    /// Other functions the method would also reset (its blast radius).
    pub affects: Vec<Bdf>,
    /// The raw register values the verdict rests on.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub registers: Vec<RegValue>,
}

impl Verdict {
    pub fn yes(reason: impl Into<String>) -> Verdict {
        Verdict {
            available: true,
            reason: reason.into(),
            affects: vec![],
            registers: vec![],
        }
    }

    pub fn no(reason: impl Into<String>) -> Verdict {
        Verdict {
            available: false,
            reason: reason.into(),
            affects: vec![],
            registers: vec![],
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
                .and_then(|bytes| Decoded::decode(&MemConfig::image(bdf.to_string(), bytes)))
                .map_err(|e| e.one_line());
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

/// Everything a probe may look at.
pub struct Analysis<'a> {
    pub host: &'a Host,
    pub topo: &'a Topology,
    pub dev: &'a Device,
    pub configs: &'a Configs,
    /// `--force`: probes still report what is wrong, but quirk-level refusals
    /// (the kernel's, or "live driver on the bus") become warnings.
    pub force: bool,
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

/// One row of the table.
pub struct MethodDef {
    pub name: &'static str,
    pub summary: &'static str,
    pub probe: fn(&Analysis) -> Verdict,
}

/// The methods in the order `list` shows them (cheapest, narrowest first).
pub static METHODS: &[MethodDef] = &[
    flr::DEF,
    af_flr::DEF,
    pm::DEF,
    bus::DEF,
    d3cold::DEF,
    remove_rescan::DEF,
];

/// Canonical method name: `-` is accepted for `_`, `sbr` for `bus`.
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
    Verdict::no(format!("config space not examined: {why}"))
}

/// Drivers that leave a function free for a reset: it is parked for passthrough.
pub fn is_parking_driver(driver: Option<&str>) -> bool {
    matches!(
        driver,
        None | Some("vfio-pci") | Some("pci-stub") | Some("pciback")
    )
}
