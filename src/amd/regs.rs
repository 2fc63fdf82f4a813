//! The register database: `regs/*.toml` files (shipped ones embedded), overlays, validation,
//! resolution of registers to BAR byte offsets, and field helpers.
//!
//! # Overlay rule (`--regs DIR`, repeatable)
//!
//! Every `*.toml` file in DIR (sorted by name; directories in the order given) is read after the
//! embedded files:
//! - a file whose `asic` is not loaded yet adds a whole ASIC file;
//! - a file whose `asic` is loaded overrides it key by key: tables merge recursively; arrays of
//!   entries merge by their key (`bases`: ip+instance+base_idx, `registers`/`smn`/`messages`/
//!   `health`/`fields`: name, `responses`: code, `mailboxes`: mp1_version, `pci_ids`:
//!   vendor+device): an entry with a known key has its given fields replaced, a new key is added;
//! - `replace = true` at the top of a file replaces the loaded ASIC file as a whole.
//!
//! The result is validated after all overlays are applied; an error names the file that last
//! touched the faulty entry, with the line of that entry.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::amd::discovery::hw_id_by_name;
use crate::error::{Error, Result};

/// The shipped register files, embedded at build time: (path shown in errors, contents).
pub const EMBEDDED: &[(&str, &str)] = &[
    ("regs/phoenix.toml", include_str!("../../regs/phoenix.toml")),
    (
        "regs/phoenix2.toml",
        include_str!("../../regs/phoenix2.toml"),
    ),
    (
        "regs/rembrandt.toml",
        include_str!("../../regs/rembrandt.toml"),
    ),
    (
        "regs/mendocino.toml",
        include_str!("../../regs/mendocino.toml"),
    ),
    ("regs/raphael.toml", include_str!("../../regs/raphael.toml")),
    ("regs/strix.toml", include_str!("../../regs/strix.toml")),
    ("regs/vangogh.toml", include_str!("../../regs/vangogh.toml")),
    ("regs/renoir.toml", include_str!("../../regs/renoir.toml")),
    ("regs/raven.toml", include_str!("../../regs/raven.toml")),
];

/// The pseudo-IP of registers at a fixed BAR offset (no segment base).
pub const BAR_IP: &str = "BAR";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PciId {
    pub vendor: u16,
    pub device: u16,
    pub name: String,
    /// The MP1 (SMU) IP version this device reports in its IP discovery table, when the
    /// source ties one to it; the device's own table decides (see [`Asic::mailbox_for`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mp1_version: Option<String>,
    pub source: String,
    pub confirmed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Bar {
    pub index: u8,
    /// Bytes.
    pub size: u64,
    pub source: String,
    pub confirmed: bool,
}

/// `adev->reg_offset[ip][instance][base_idx]`, in dwords.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Base {
    pub ip: String,
    pub instance: u8,
    pub base_idx: u8,
    pub base: u32,
    pub source: String,
    pub confirmed: bool,
}

/// A bit field of a register.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Field {
    pub name: String,
    pub lsb: u8,
    pub width: u8,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub values: BTreeMap<String, u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Defaults to the register's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmed: Option<bool>,
}

impl Field {
    /// The field's bits in place.
    pub fn mask(&self) -> u32 {
        let ones = if self.width >= 32 {
            u32::MAX
        } else {
            (1u32 << self.width) - 1
        };
        ones.checked_shl(u32::from(self.lsb)).unwrap_or(0)
    }

    /// The largest value the field holds.
    pub fn max(&self) -> u32 {
        self.mask().checked_shr(u32::from(self.lsb)).unwrap_or(0)
    }

    /// The field's value in a register value.
    pub fn extract(&self, reg: u32) -> u32 {
        (reg & self.mask())
            .checked_shr(u32::from(self.lsb))
            .unwrap_or(0)
    }

    /// `reg` with this field set to `value`; an error when `value` does not fit.
    pub fn insert(&self, reg: u32, value: u32) -> Result<u32> {
        if value > self.max() {
            return Err(Error::parse(
                "field value",
                format!("{}={value:#x}", self.name),
                format!("does not fit in {} bits", self.width),
            ));
        }
        Ok((reg & !self.mask()) | (value << self.lsb))
    }

    /// A value given as a name from `values`, or a number (decimal, `0x` hex, `0b` binary).
    pub fn parse_value(&self, text: &str) -> Result<u32> {
        let t = text.trim();
        if let Some(v) = self
            .values
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(t))
            .map(|(_, v)| *v)
        {
            return Ok(v);
        }
        let v = parse_u32(t).ok_or_else(|| {
            let names: Vec<&str> = self.values.keys().map(String::as_str).collect();
            Error::parse(
                "field value",
                format!("{}={t}", self.name),
                if names.is_empty() {
                    "not a number".to_string()
                } else {
                    format!("not a number nor one of {}", names.join(", "))
                },
            )
        })?;
        if v > self.max() {
            return Err(Error::parse(
                "field value",
                format!("{}={t}", self.name),
                format!("does not fit in {} bits", self.width),
            ));
        }
        Ok(v)
    }

    /// The name of `value` in `values`, if any.
    pub fn value_name(&self, value: u32) -> Option<&str> {
        self.values
            .iter()
            .find(|(_, v)| **v == value)
            .map(|(k, _)| k.as_str())
    }
}

/// Decimal, `0x` hex or `0b` binary.
pub fn parse_u32(t: &str) -> Option<u32> {
    let t = t.trim().replace('_', "");
    if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        u32::from_str_radix(h, 16).ok()
    } else if let Some(b) = t.strip_prefix("0b").or_else(|| t.strip_prefix("0B")) {
        u32::from_str_radix(b, 2).ok()
    } else {
        t.parse().ok()
    }
}

fn find_field<'a>(fields: &'a [Field], reg: &str, field: &str) -> Result<&'a Field> {
    fields
        .iter()
        .find(|f| f.name.eq_ignore_ascii_case(field))
        .ok_or_else(|| Error::not_found("field", format!("{reg}.{field}")))
}

/// Apply `FIELD=VALUE` assignments to a register value (the experiment runner's `modify`).
fn modify_fields(fields: &[Field], reg: &str, value: u32, assignments: &[&str]) -> Result<u32> {
    let mut v = value;
    for a in assignments {
        let (name, val) = a
            .split_once('=')
            .ok_or_else(|| Error::parse("field assignment", *a, "expected FIELD=VALUE"))?;
        let f = find_field(fields, reg, name.trim())?;
        v = f.insert(v, f.parse_value(val)?)?;
    }
    Ok(v)
}

/// A BAR register.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Register {
    pub name: String,
    pub ip: String,
    pub instance: u8,
    pub base_idx: u8,
    /// Dwords from the segment base.
    pub offset: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub source: String,
    pub confirmed: bool,
    /// The file says the register lies beyond the register BAR, reached through its
    /// `[indirect]` pair as amdgpu reaches it (Raphael's mailbox); checked at load, so a base
    /// or offset typo that lands it inside the BAR is caught.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub indirect: bool,
    #[serde(default)]
    pub fields: Vec<Field>,
}

impl Register {
    pub fn field(&self, name: &str) -> Result<&Field> {
        find_field(&self.fields, &self.name, name)
    }
    /// `value` with every `FIELD=VALUE` of `assignments` applied.
    pub fn modify(&self, value: u32, assignments: &[&str]) -> Result<u32> {
        modify_fields(&self.fields, &self.name, value, assignments)
    }
}

/// A register reached over SMN through the indirect index/data pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SmnRegister {
    pub name: String,
    /// SMN byte address.
    pub address: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub source: String,
    pub confirmed: bool,
    #[serde(default)]
    pub fields: Vec<Field>,
}

impl SmnRegister {
    pub fn field(&self, name: &str) -> Result<&Field> {
        find_field(&self.fields, &self.name, name)
    }
    pub fn modify(&self, value: u32, assignments: &[&str]) -> Result<u32> {
        modify_fields(&self.fields, &self.name, value, assignments)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Indirect {
    pub index: String,
    pub data: String,
    pub source: String,
    pub confirmed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Mailbox {
    pub mp1_version: String,
    pub msg: String,
    pub arg: String,
    pub resp: String,
    pub source: String,
    pub confirmed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Message {
    pub name: String,
    pub id: u32,
    pub args: String,
    pub result: String,
    pub source: String,
    pub confirmed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Response {
    pub code: u32,
    pub name: String,
    pub meaning: String,
    /// The message may be sent again (busy, or no answer yet).
    pub retry: bool,
    pub source: String,
    pub confirmed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DiscoveryLocation {
    pub memsize_register: String,
    pub index: String,
    pub index_hi: String,
    pub data: String,
    /// Bytes below the end of VRAM.
    pub tmr_offset: u64,
    pub tmr_size: u64,
    pub source: String,
    pub confirmed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthKind {
    /// A BAR register.
    Register,
    /// An `[[smn]]` register, through the indirect pair.
    Smn,
    /// An SMU message; the response code is compared.
    Message,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    pub name: String,
    pub kind: HealthKind,
    pub target: String,
    pub mask: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_not: Option<u32>,
    /// What a passing value means.
    pub meaning: String,
    pub source: String,
    pub confirmed: bool,
    /// The register field whose value a failure line names (`GUI_ACTIVE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// What a failing value means, for the failure line ("the graphics engine is busy").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// Messages to send around the read: the first before, the second after
    /// (`["DisallowGfxOff", "AllowGfxOff"]`: amdgpu reads GC registers with
    /// GFXOFF disallowed; a powered-off GFX block reads 0).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub around: Vec<String>,
}

impl HealthCheck {
    /// Whether a value read for this check passes.
    pub fn passes(&self, value: u32) -> bool {
        let v = value & self.mask;
        match (self.expect, self.expect_not) {
            (Some(e), _) => v == e,
            (None, Some(n)) => v != n,
            (None, None) => false,
        }
    }
}

/// Whether the mode-2 sender waits for the SMU's answer.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Mode2Wait {
    /// Poll the response register for the answer, like any message (smu_cmn.c:
    /// `smu_cmn_send_smc_msg_with_param`); the OK answer marks completion.
    #[default]
    Answer,
    /// Write the message and do not read the answer, then wait `settle_ms`
    /// (vangogh_ppt.c: `vangogh_mode_reset` sends with
    /// `smu_cmn_send_msg_without_waiting`, then `mdelay(10)`).
    None,
}

/// How this family's SMU resets the GPU in mode 2 (the `smu_mode2` method).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Mode2 {
    /// False: the family has no mode 2 that resetlab sends; `reason` says why.
    #[serde(default = "yes")]
    pub offered: bool,
    /// The `[[messages]]` entry sent (GfxDeviceDriverReset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Its argument (2 = MODE2_RESET).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arg: Option<u32>,
    #[serde(default)]
    pub wait: Mode2Wait,
    /// With `wait = "none"`: how long to wait after the message write, in ms.
    #[serde(default)]
    pub settle_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub source: String,
    pub confirmed: bool,
}

fn yes() -> bool {
    true
}

impl Mode2 {
    /// What a file without `[mode2]` gets: GfxDeviceDriverReset(2), waiting for the answer
    /// (smu_v13_0_4_ppt.c: `smu_v13_0_4_mode2_reset`).
    pub fn default_for_phoenix() -> Mode2 {
        Mode2 {
            offered: true,
            message: Some("GfxDeviceDriverReset".into()),
            arg: Some(2),
            wait: Mode2Wait::Answer,
            settle_ms: 0,
            reason: None,
            source: "default: pm/swsmu/smu13/smu_v13_0_4_ppt.c: smu_v13_0_4_mode2_reset".into(),
            confirmed: false,
        }
    }
}

/// One register file: what `regs/*.toml` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AsicFile {
    pub asic: String,
    pub name: String,
    /// The family as users know it ("Rembrandt"), for `list` and `probe`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
    /// Other names `regs show`, `--asic` and `--sim-asic` accept (codenames of the same
    /// silicon or its refreshes: lucienne, cezanne, barcelo for renoir).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// The MP1 (SMU) IP versions of the family, as the source lists them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mp1_versions: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode2: Option<Mode2>,
    #[serde(default)]
    pub pci_ids: Vec<PciId>,
    pub bar: Bar,
    #[serde(default)]
    pub bases: Vec<Base>,
    #[serde(default)]
    pub registers: Vec<Register>,
    #[serde(default)]
    pub smn: Vec<SmnRegister>,
    #[serde(default)]
    pub indirect: Option<Indirect>,
    #[serde(default)]
    pub mailboxes: Vec<Mailbox>,
    #[serde(default)]
    pub messages: Vec<Message>,
    #[serde(default)]
    pub responses: Vec<Response>,
    #[serde(default)]
    pub discovery: Option<DiscoveryLocation>,
    #[serde(default)]
    pub health: Vec<HealthCheck>,
    /// Overlay control: replace a loaded file of the same `asic` as a whole.
    #[serde(default, skip_serializing)]
    pub replace: bool,
}

/// A register resolved to its BAR byte offset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Resolved {
    pub name: String,
    pub ip: String,
    pub instance: u8,
    pub base_idx: u8,
    /// Segment base, dwords (0 for the `BAR` pseudo-IP).
    pub base: u32,
    /// Dwords from the base.
    pub offset: u32,
    /// `(base + offset) * 4`.
    pub bar_offset: u64,
    /// Whether the segment base is confirmed (from the device's discovery table or the source).
    pub base_confirmed: bool,
    /// Whether the register's offset and BASE_IDX are confirmed in the source.
    pub confirmed: bool,
    /// The byte offset is at or past the register BAR's size: amdgpu reaches it through the
    /// indirect pair, with `bar_offset` as the SMN address (amdgpu_device.c:
    /// `amdgpu_device_rreg`: `(reg * 4) < adev->rmmio_size` else `pcie_rreg(reg * 4)`).
    #[serde(default)]
    pub beyond_bar: bool,
}

/// The SMU mailbox resolved to BAR byte offsets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct ResolvedMailbox {
    pub mp1_version: String,
    pub msg: u64,
    pub arg: u64,
    pub resp: u64,
    pub msg_register: String,
    pub arg_register: String,
    pub resp_register: String,
    /// All three bases confirmed.
    pub base_confirmed: bool,
    /// The mailbox lies beyond the register BAR: msg/arg/resp are SMN addresses reached
    /// through PCIE_INDEX2/PCIE_DATA2 (Raphael's C2PMSG_2/34/33).
    #[serde(default)]
    pub beyond_bar: bool,
}

/// What the source files of a loaded ASIC are, for error locations.
#[derive(Debug, Clone)]
struct Origin {
    path: PathBuf,
    text: String,
}

/// One loaded, validated ASIC.
#[derive(Debug, Clone)]
pub struct Asic {
    pub file: AsicFile,
    origins: Vec<Origin>,
}

/// The loaded register database.
#[derive(Debug, Clone)]
pub struct RegsDb {
    asics: Vec<Asic>,
}

/// Keys of the entry arrays that overlays merge by.
fn entry_key(array: &str) -> Option<&'static [&'static str]> {
    Some(match array {
        "bases" => &["ip", "instance", "base_idx"],
        "registers" | "smn" | "messages" | "health" | "fields" => &["name"],
        "responses" => &["code"],
        "mailboxes" => &["mp1_version"],
        "pci_ids" => &["vendor", "device"],
        _ => return None,
    })
}

fn key_of(t: &toml::Table, key: &[&str]) -> Option<Vec<String>> {
    key.iter()
        .map(|k| t.get(*k).map(|v| v.to_string()))
        .collect()
}

fn merge_table(
    base: &mut toml::Table,
    over: toml::Table,
    at: &str,
) -> std::result::Result<(), String> {
    for (k, v) in over {
        let here = if at.is_empty() {
            k.clone()
        } else {
            format!("{at}.{k}")
        };
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(bt)), toml::Value::Table(ot)) => merge_table(bt, ot, &here)?,
            (Some(toml::Value::Array(ba)), toml::Value::Array(oa)) if entry_key(&k).is_some() => {
                let key = entry_key(&k).unwrap_or(&[]);
                for (i, item) in oa.into_iter().enumerate() {
                    let toml::Value::Table(ot) = item else {
                        return Err(format!("{here}[{i}]: an overlay entry must be a table"));
                    };
                    let Some(ok) = key_of(&ot, key) else {
                        return Err(format!(
                            "{here}[{i}]: an overlay entry needs its key ({})",
                            key.join(", ")
                        ));
                    };
                    let slot = ba.iter_mut().find_map(|b| match b {
                        toml::Value::Table(bt) if key_of(bt, key).as_ref() == Some(&ok) => Some(bt),
                        _ => None,
                    });
                    match slot {
                        Some(bt) => merge_table(bt, ot, &format!("{here}[{}]", ok.join(",")))?,
                        None => ba.push(toml::Value::Table(ot)),
                    }
                }
            }
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
    Ok(())
}

/// 1-based line and column of byte `pos` in `text`.
fn line_col(text: &str, pos: usize) -> (usize, usize) {
    let pos = pos.min(text.len());
    let before = text.get(..pos).unwrap_or("");
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map_or(before.chars().count(), |nl| {
        before.get(nl + 1..).map_or(0, |s| s.chars().count())
    }) + 1;
    (line, col)
}

fn toml_error(path: &Path, text: &str, e: &toml::de::Error) -> Error {
    let (line, column) = e.span().map_or((1, 1), |s| line_col(text, s.start));
    Error::FileParse {
        path: path.to_path_buf(),
        line,
        column,
        reason: e.message().replace('\n', " "),
    }
}

fn parse_table(path: &Path, text: &str) -> Result<toml::Table> {
    toml::from_str::<toml::Table>(text).map_err(|e| toml_error(path, text, &e))
}

impl Asic {
    /// Build from a merged table; `origins` are the files in the order applied.
    fn from_table(table: toml::Table, origins: Vec<Origin>) -> Result<Asic> {
        let Some(last) = origins.last() else {
            return Err(Error::failed("register file with no origin"));
        };
        // Re-parse the sole file from text for span-accurate type errors.
        let file: AsicFile = if origins.len() == 1 {
            toml::from_str(&last.text).map_err(|e| toml_error(&last.path, &last.text, &e))?
        } else {
            AsicFile::deserialize(toml::Value::Table(table)).map_err(|e| {
                let msg = e.message().replace('\n', " ");
                // The merged value has no spans: point at the offending literal if the message
                // quotes one (`-1`, `unknown field `x``), else at the top of the overlay.
                let (line, column) = msg
                    .split(['`', '"'])
                    .nth(1)
                    .filter(|lit| !lit.is_empty())
                    .and_then(|lit| last.text.find(lit))
                    .map_or((1, 1), |pos| line_col(&last.text, pos));
                Error::FileParse {
                    path: last.path.clone(),
                    line,
                    column,
                    reason: format!("after applying this overlay: {msg}"),
                }
            })?
        };
        let asic = Asic { file, origins };
        asic.validate()?;
        Ok(asic)
    }

    /// An error located at the entry identified by `needle` (its name as written), in the last
    /// file that mentions it.
    fn err_at(&self, needle: &str, reason: String) -> Error {
        let quoted = [format!("\"{needle}\""), format!("'{needle}'")];
        for o in self.origins.iter().rev() {
            if let Some(pos) = quoted.iter().find_map(|q| o.text.find(q.as_str())) {
                let (line, column) = line_col(&o.text, pos);
                return Error::FileParse {
                    path: o.path.clone(),
                    line,
                    column,
                    reason,
                };
            }
        }
        let path = self
            .origins
            .last()
            .map_or_else(PathBuf::new, |o| o.path.clone());
        Error::FileParse {
            path,
            line: 1,
            column: 1,
            reason,
        }
    }

    fn validate(&self) -> Result<()> {
        let f = &self.file;
        if f.asic.trim().is_empty() || f.asic.chars().any(char::is_whitespace) {
            return Err(self.err_at(&f.asic, format!("asic: '{}' must be one word", f.asic)));
        }
        if f.bar.size == 0 || f.bar.size % 4 != 0 || f.bar.index > 5 {
            return Err(self.err_at(
                "bar",
                format!(
                    "bar: index {} size {:#x}: index must be 0..=5 and size a non-zero multiple of 4",
                    f.bar.index, f.bar.size
                ),
            ));
        }
        let mut seen = BTreeSet::new();
        for p in &f.pci_ids {
            if !seen.insert((p.vendor, p.device)) {
                return Err(self.err_at(
                    &p.name,
                    format!("pci_ids: {:04x}:{:04x} listed twice", p.vendor, p.device),
                ));
            }
        }
        let mut seen = BTreeSet::new();
        for b in &f.bases {
            if hw_id_by_name(&b.ip).is_none() {
                return Err(self.err_at(
                    &b.ip,
                    format!("bases: unknown IP '{}' (use amdgpu's hw_id names)", b.ip),
                ));
            }
            if !seen.insert((b.ip.to_ascii_uppercase(), b.instance, b.base_idx)) {
                return Err(self.err_at(
                    &b.ip,
                    format!(
                        "bases: {} instance {} base_idx {} given twice",
                        b.ip, b.instance, b.base_idx
                    ),
                ));
            }
        }
        let mut names = BTreeSet::new();
        for r in &f.registers {
            if !names.insert(r.name.to_ascii_uppercase()) {
                return Err(self.err_at(&r.name, format!("registers: '{}' defined twice", r.name)));
            }
            if !r.ip.eq_ignore_ascii_case(BAR_IP) && hw_id_by_name(&r.ip).is_none() {
                return Err(self.err_at(
                    &r.name,
                    format!("registers '{}': unknown IP '{}'", r.name, r.ip),
                ));
            }
            let res = self.resolve_register(r)?;
            if r.indirect && !(f.indirect.is_some() && res.beyond_bar) {
                return Err(self.err_at(
                    &r.name,
                    format!(
                        "registers '{}': indirect = true says it lies beyond the {:#x}-byte BAR, through an [indirect] pair (byte address {:#x})",
                        r.name, f.bar.size, res.bar_offset
                    ),
                ));
            }
            // Past the BAR is reachable through the indirect pair, as
            // amdgpu_device_rreg does (the SMN address is the byte offset),
            // when regs/ names one and the address fits in 32 bits.
            let indirect_ok = f.indirect.as_ref().is_some_and(|i| {
                !i.index.eq_ignore_ascii_case(&r.name) && !i.data.eq_ignore_ascii_case(&r.name)
            }) && res.bar_offset % 4 == 0
                && res.bar_offset <= u64::from(u32::MAX) - 3;
            if res.bar_offset + 4 > f.bar.size && !indirect_ok {
                return Err(self.err_at(
                    &r.name,
                    format!(
                        "registers '{}': offset: BAR byte offset {:#x} is outside the {:#x}-byte BAR {} (and no [indirect] pair reaches it)",
                        r.name, res.bar_offset, f.bar.size, f.bar.index
                    ),
                ));
            }
            self.validate_fields(&r.name, "registers", &r.fields)?;
        }
        for s in &f.smn {
            if !names.insert(s.name.to_ascii_uppercase()) {
                return Err(self.err_at(&s.name, format!("smn: '{}' defined twice", s.name)));
            }
            self.validate_fields(&s.name, "smn", &s.fields)?;
        }
        if let Some(i) = &f.indirect {
            for r in [&i.index, &i.data] {
                self.need_register("indirect", r)?;
                if self.resolve(r)?.beyond_bar {
                    return Err(self.err_at(
                        r,
                        format!("indirect: '{r}' must lie inside the register BAR"),
                    ));
                }
            }
        }
        let mut seen = BTreeSet::new();
        for a in &f.aliases {
            if a.trim().is_empty() || a.chars().any(char::is_whitespace) {
                return Err(self.err_at(a, format!("aliases: '{a}' must be one word")));
            }
            if a.eq_ignore_ascii_case(&f.asic) || !seen.insert(a.to_ascii_lowercase()) {
                return Err(self.err_at(a, format!("aliases: '{a}' given twice")));
            }
        }
        let mut seen = BTreeSet::new();
        for m in &f.mailboxes {
            if !seen.insert(m.mp1_version.clone()) {
                return Err(self.err_at(
                    &m.mp1_version,
                    format!("mailboxes: mp1_version {} given twice", m.mp1_version),
                ));
            }
            for r in [&m.msg, &m.arg, &m.resp] {
                self.need_register("mailboxes", r)?;
            }
        }
        let mut seen_names = BTreeSet::new();
        let mut seen_ids = BTreeSet::new();
        for m in &f.messages {
            if !seen_names.insert(m.name.to_ascii_uppercase()) {
                return Err(self.err_at(&m.name, format!("messages: '{}' defined twice", m.name)));
            }
            if !seen_ids.insert(m.id) {
                return Err(self.err_at(
                    &m.name,
                    format!("messages '{}': id {:#x} used twice", m.name, m.id),
                ));
            }
        }
        if let Some(m) = &f.mode2 {
            if m.offered {
                let Some(msg) = &m.message else {
                    return Err(
                        self.err_at("mode2", "mode2: an offered mode 2 names its message".into())
                    );
                };
                if self.message(msg).is_err() {
                    return Err(self.err_at(msg, format!("mode2: no message '{msg}'")));
                }
                if m.arg.is_none() {
                    return Err(
                        self.err_at("mode2", "mode2: an offered mode 2 gives its arg".into())
                    );
                }
                if f.mailboxes.is_empty() {
                    return Err(self.err_at(
                        "mode2",
                        "mode2: an offered mode 2 needs a [[mailboxes]] entry".into(),
                    ));
                }
                if m.wait == Mode2Wait::None && !(1..=10_000).contains(&m.settle_ms) {
                    return Err(self.err_at(
                        "mode2",
                        format!(
                            "mode2: wait = \"none\" needs settle_ms in 1..=10000 (got {})",
                            m.settle_ms
                        ),
                    ));
                }
            } else if m.reason.as_deref().is_none_or(|r| r.trim().is_empty()) {
                return Err(self.err_at("mode2", "mode2: offered = false needs a reason".into()));
            }
        }
        let mut seen = BTreeSet::new();
        for r in &f.responses {
            if !seen.insert(r.code) {
                return Err(self.err_at(
                    &r.name,
                    format!("responses: code {:#x} given twice", r.code),
                ));
            }
        }
        if let Some(d) = &f.discovery {
            for r in [&d.memsize_register, &d.index, &d.index_hi, &d.data] {
                self.need_register("discovery", r)?;
            }
        }
        let mut seen = BTreeSet::new();
        for h in &f.health {
            if !seen.insert(h.name.clone()) {
                return Err(self.err_at(&h.name, format!("health: '{}' defined twice", h.name)));
            }
            let found = match h.kind {
                HealthKind::Register => self.register(&h.target).is_ok(),
                HealthKind::Smn => self.smn(&h.target).is_ok(),
                HealthKind::Message => self.message(&h.target).is_ok(),
            };
            if !found {
                return Err(self.err_at(
                    &h.name,
                    format!(
                        "health '{}': target: no {:?} '{}'",
                        h.name, h.kind, h.target
                    )
                    .to_lowercase(),
                ));
            }
            if !h.around.is_empty() && h.around.len() != 2 {
                return Err(self.err_at(
                    &h.name,
                    format!(
                        "health '{}': around: give two messages (before, after)",
                        h.name
                    ),
                ));
            }
            for m in &h.around {
                if self.message(m).is_err() {
                    return Err(self.err_at(
                        &h.name,
                        format!("health '{}': around: no message '{m}'", h.name),
                    ));
                }
            }
            if let Some(f) = &h.field {
                let ok = match h.kind {
                    HealthKind::Register => {
                        self.register(&h.target).is_ok_and(|r| r.field(f).is_ok())
                    }
                    HealthKind::Smn => self.smn(&h.target).is_ok_and(|r| r.field(f).is_ok()),
                    HealthKind::Message => false,
                };
                if !ok {
                    return Err(self.err_at(
                        &h.name,
                        format!(
                            "health '{}': field: '{}' has no field '{f}'",
                            h.name, h.target
                        ),
                    ));
                }
            }
            let bad = match (h.expect, h.expect_not) {
                (Some(e), None) | (None, Some(e)) => e & !h.mask != 0,
                _ => true,
            };
            if bad {
                return Err(self.err_at(
                    &h.name,
                    format!(
                        "health '{}': give exactly one of expect / expect_not, within mask {:#x}",
                        h.name, h.mask
                    ),
                ));
            }
        }
        Ok(())
    }

    fn need_register(&self, table: &str, name: &str) -> Result<()> {
        if self.register(name).is_err() {
            return Err(self.err_at(name, format!("{table}: no register '{name}'")));
        }
        Ok(())
    }

    fn validate_fields(&self, reg: &str, table: &str, fields: &[Field]) -> Result<()> {
        let mut names = BTreeSet::new();
        let mut used = 0u32;
        for fl in fields {
            let at = format!("{table} '{reg}': field '{}'", fl.name);
            if !names.insert(fl.name.to_ascii_uppercase()) {
                return Err(self.err_at(&fl.name, format!("{at}: defined twice")));
            }
            if fl.width == 0 || fl.width > 32 {
                return Err(
                    self.err_at(&fl.name, format!("{at}: width {} must be 1..=32", fl.width))
                );
            }
            if u32::from(fl.lsb) + u32::from(fl.width) > 32 {
                return Err(self.err_at(
                    &fl.name,
                    format!(
                        "{at}: bits {}..{} go past bit 31",
                        fl.lsb,
                        u32::from(fl.lsb) + u32::from(fl.width) - 1
                    ),
                ));
            }
            if used & fl.mask() != 0 {
                return Err(self.err_at(
                    &fl.name,
                    format!(
                        "{at}: overlaps another field (mask {:#010x})",
                        used & fl.mask()
                    ),
                ));
            }
            used |= fl.mask();
            for (vn, v) in &fl.values {
                if *v > fl.max() {
                    return Err(self.err_at(
                        &fl.name,
                        format!(
                            "{at}: value {vn} = {v:#x} does not fit in {} bits",
                            fl.width
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    fn base_of(&self, ip: &str, instance: u8, base_idx: u8) -> Option<&Base> {
        self.file.bases.iter().find(|b| {
            b.ip.eq_ignore_ascii_case(ip) && b.instance == instance && b.base_idx == base_idx
        })
    }

    fn resolve_register(&self, r: &Register) -> Result<Resolved> {
        let (base, base_confirmed) = if r.ip.eq_ignore_ascii_case(BAR_IP) {
            (0, true)
        } else {
            let b = self.base_of(&r.ip, r.instance, r.base_idx).ok_or_else(|| {
                self.err_at(
                    &r.name,
                    format!(
                        "registers '{}': no base for {} instance {} base_idx {}",
                        r.name, r.ip, r.instance, r.base_idx
                    ),
                )
            })?;
            (b.base, b.confirmed)
        };
        let bar_offset = (u64::from(base) + u64::from(r.offset)) * 4;
        Ok(Resolved {
            name: r.name.clone(),
            ip: r.ip.clone(),
            instance: r.instance,
            base_idx: r.base_idx,
            base,
            offset: r.offset,
            bar_offset,
            base_confirmed,
            confirmed: r.confirmed,
            beyond_bar: bar_offset + 4 > self.file.bar.size,
        })
    }

    /// The `asic` key (e.g. `phoenix`).
    pub fn asic_name(&self) -> &str {
        &self.file.asic
    }

    /// The family's display name ("Rembrandt"), else the file's `name`.
    pub fn family(&self) -> &str {
        self.file.family.as_deref().unwrap_or(&self.file.name)
    }

    /// Whether `name` is this ASIC's `asic` or one of its aliases (case-insensitive).
    pub fn answers_to(&self, name: &str) -> bool {
        self.file.asic.eq_ignore_ascii_case(name)
            || self
                .file
                .aliases
                .iter()
                .any(|a| a.eq_ignore_ascii_case(name))
    }

    /// How this family does mode 2: the file's `[mode2]`, or amdgpu's MP1 13.0.4 way for a
    /// file without one.
    pub fn mode2(&self) -> Mode2 {
        self.file
            .mode2
            .clone()
            .unwrap_or_else(Mode2::default_for_phoenix)
    }

    /// The message that reads the PMFW version: `GetPmfwVersion` (smu_v13_0_4_ppsmc.h,
    /// smu_v14_0_0_ppsmc.h) or `GetSmuVersion` (the older ppsmc headers), whichever regs/ has.
    pub fn version_message(&self) -> Result<&Message> {
        self.message("GetPmfwVersion")
            .or_else(|_| self.message("GetSmuVersion"))
    }

    /// The PCI id entry for a device.
    pub fn pci_id(&self, vendor: u16, device: u16) -> Option<&PciId> {
        self.file
            .pci_ids
            .iter()
            .find(|p| p.vendor == vendor && p.device == device)
    }

    /// The mailbox the device's MP1 version picks (`mp1` read from its IP discovery table, as
    /// amdgpu's `smu_v13_0_4_set_ppt_funcs` picks on `amdgpu_ip_version(adev, MP1_HWIP, 0)`).
    /// With no version known: the first mailbox listed. A version the file does not list is an
    /// error that names the ones it does.
    pub fn mailbox_for(&self, mp1: Option<&str>) -> Result<ResolvedMailbox> {
        match mp1 {
            Some(v) if !self.file.mailboxes.iter().any(|m| m.mp1_version == v) => {
                let known: Vec<&str> = self
                    .file
                    .mailboxes
                    .iter()
                    .map(|m| m.mp1_version.as_str())
                    .collect();
                Err(Error::not_found(
                    "SMU mailbox",
                    format!(
                        "{} for MP1 {v} (the file lists {}; another regs/ file may fit, see `resetlab regs list`)",
                        self.file.asic,
                        if known.is_empty() { "none".to_string() } else { known.join(", ") }
                    ),
                ))
            }
            v => self.mailbox(v),
        }
    }

    /// The files this ASIC was loaded from, in the order applied.
    pub fn origins(&self) -> Vec<&Path> {
        self.origins.iter().map(|o| o.path.as_path()).collect()
    }

    pub fn register(&self, name: &str) -> Result<&Register> {
        self.file
            .registers
            .iter()
            .find(|r| r.name.eq_ignore_ascii_case(name))
            .ok_or_else(|| Error::not_found("register", format!("{}.{name}", self.file.asic)))
    }

    pub fn smn(&self, name: &str) -> Result<&SmnRegister> {
        self.file
            .smn
            .iter()
            .find(|r| r.name.eq_ignore_ascii_case(name))
            .ok_or_else(|| Error::not_found("SMN register", format!("{}.{name}", self.file.asic)))
    }

    /// A register's BAR byte offset: `(base[ip][instance][base_idx] + offset) * 4`.
    pub fn resolve(&self, name: &str) -> Result<Resolved> {
        self.resolve_register(self.register(name)?)
    }

    /// The mailbox for an MP1 version (`"13.0.4"`), or the first one listed.
    pub fn mailbox(&self, mp1_version: Option<&str>) -> Result<ResolvedMailbox> {
        let m = match mp1_version {
            Some(v) => self.file.mailboxes.iter().find(|m| m.mp1_version == v),
            None => self.file.mailboxes.first(),
        }
        .ok_or_else(|| {
            Error::not_found(
                "SMU mailbox",
                format!("{} MP1 {}", self.file.asic, mp1_version.unwrap_or("(any)")),
            )
        })?;
        let (msg, arg, resp) = (
            self.resolve(&m.msg)?,
            self.resolve(&m.arg)?,
            self.resolve(&m.resp)?,
        );
        Ok(ResolvedMailbox {
            mp1_version: m.mp1_version.clone(),
            msg: msg.bar_offset,
            arg: arg.bar_offset,
            resp: resp.bar_offset,
            base_confirmed: msg.base_confirmed && arg.base_confirmed && resp.base_confirmed,
            beyond_bar: msg.beyond_bar || arg.beyond_bar || resp.beyond_bar,
            msg_register: msg.name,
            arg_register: arg.name,
            resp_register: resp.name,
        })
    }

    pub fn message(&self, name: &str) -> Result<&Message> {
        self.file
            .messages
            .iter()
            .find(|m| m.name.eq_ignore_ascii_case(name))
            .ok_or_else(|| Error::not_found("SMU message", format!("{}.{name}", self.file.asic)))
    }

    pub fn message_by_id(&self, id: u32) -> Option<&Message> {
        self.file.messages.iter().find(|m| m.id == id)
    }

    /// The meaning of a response code (None = not in the table: the SMU is in an unknown state).
    pub fn response(&self, code: u32) -> Option<&Response> {
        self.file.responses.iter().find(|r| r.code == code)
    }

    /// The summary `regs show` prints.
    pub fn show(&self) -> Result<RegsShow> {
        let f = &self.file;
        let registers = f
            .registers
            .iter()
            .map(|r| self.resolve_register(r))
            .collect::<Result<Vec<_>>>()?;
        let mailboxes = f
            .mailboxes
            .iter()
            .map(|m| self.mailbox(Some(&m.mp1_version)))
            .collect::<Result<Vec<_>>>()?;
        let mode2 = self.mode2();
        let id = mode2
            .message
            .as_deref()
            .filter(|_| mode2.offered)
            .and_then(|m| self.message(m).ok())
            .map(|m| m.id);
        Ok(RegsShow {
            asic: f.asic.clone(),
            name: f.name.clone(),
            family: self.family().to_string(),
            aliases: f.aliases.clone(),
            mp1_versions: f.mp1_versions.clone(),
            devices: f.pci_ids.clone(),
            mode2: ShowMode2 { mode2, id },
            pci_ids: f
                .pci_ids
                .iter()
                .map(|p| format!("{:04x}:{:04x}", p.vendor, p.device))
                .collect(),
            bar: f.bar.index,
            bar_size: f.bar.size,
            files: self
                .origins
                .iter()
                .map(|o| o.path.display().to_string())
                .collect(),
            mailbox: mailboxes.first().cloned(),
            mailboxes,
            registers,
            smn: f
                .smn
                .iter()
                .map(|s| ShowSmn {
                    name: s.name.clone(),
                    address: s.address,
                    confirmed: s.confirmed,
                })
                .collect(),
            messages: f
                .messages
                .iter()
                .map(|m| ShowMessage {
                    name: m.name.clone(),
                    id: m.id,
                    args: m.args.clone(),
                })
                .collect(),
            bases: f.bases.clone(),
        })
    }
}

/// How a segment base of the regs file compares with the device's discovery table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct BaseCheck {
    pub ip: String,
    pub instance: u8,
    pub base_idx: u8,
    /// The value in the loaded regs files.
    pub file: u32,
    pub file_confirmed: bool,
    /// The value the device reports (None: the table has no such IP/segment).
    pub device: Option<u32>,
}

impl BaseCheck {
    /// `agrees`, `differs` or `absent`.
    pub fn verdict(&self) -> &'static str {
        match self.device {
            Some(d) if d == self.file => "agrees",
            Some(_) => "differs",
            None => "absent",
        }
    }
}

impl Asic {
    /// This ASIC with every segment base the discovered table has replaced by
    /// the device's value, marked confirmed, `source` saying where it was read
    /// (e.g. "device table of 0000:c5:00.0 (VRAM)"). Bases the table lacks keep
    /// their regs/ value and flag. The result is validated like a loaded file.
    pub fn with_discovered_bases(
        &self,
        d: &crate::amd::discovery::Discovery,
        source: &str,
    ) -> Result<Asic> {
        let mut a = self.clone();
        for b in &mut a.file.bases {
            let Some(ip) = hw_id_by_name(&b.ip).and_then(|id| d.find(id, b.instance)) else {
                continue;
            };
            if let Some(v) = ip.bases.get(usize::from(b.base_idx)) {
                b.base = *v;
                b.confirmed = true;
                b.source = format!("{source} (v{})", ip.version());
            }
        }
        a.validate()?;
        Ok(a)
    }

    /// Compare every segment base of this file with a discovered table.
    pub fn check_bases(&self, d: &crate::amd::discovery::Discovery) -> Vec<BaseCheck> {
        self.file
            .bases
            .iter()
            .map(|b| {
                let device = hw_id_by_name(&b.ip)
                    .and_then(|id| d.find(id, b.instance))
                    .and_then(|ip| ip.bases.get(usize::from(b.base_idx)).copied());
                BaseCheck {
                    ip: b.ip.clone(),
                    instance: b.instance,
                    base_idx: b.base_idx,
                    file: b.base,
                    file_confirmed: b.confirmed,
                    device,
                }
            })
            .collect()
    }
}

/// `regs show ASIC [--json]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct RegsShow {
    pub asic: String,
    pub name: String,
    pub family: String,
    pub aliases: Vec<String>,
    pub mp1_versions: Vec<String>,
    pub pci_ids: Vec<String>,
    pub devices: Vec<PciId>,
    pub mode2: ShowMode2,
    pub bar: u8,
    pub bar_size: u64,
    pub files: Vec<String>,
    /// The first mailbox (MP1 13.0.4 on Phoenix).
    pub mailbox: Option<ResolvedMailbox>,
    pub mailboxes: Vec<ResolvedMailbox>,
    pub registers: Vec<Resolved>,
    pub smn: Vec<ShowSmn>,
    pub messages: Vec<ShowMessage>,
    pub bases: Vec<Base>,
}

/// `[mode2]` with its message resolved to an id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct ShowMode2 {
    #[serde(flatten)]
    pub mode2: Mode2,
    /// The message's id (None when not offered).
    pub id: Option<u32>,
}

impl ShowMode2 {
    /// One line: "GfxDeviceDriverReset 0x11 (argument 2), waits for the answer".
    pub fn summary(&self) -> String {
        let m = &self.mode2;
        match (&m.message, self.id, m.offered) {
            (Some(msg), Some(id), true) => format!(
                "{msg} {id:#x} (argument {}), {}",
                m.arg.unwrap_or(0),
                match m.wait {
                    Mode2Wait::Answer => "waits for the answer".to_string(),
                    Mode2Wait::None => format!(
                        "sent without waiting for an answer, then {} ms",
                        m.settle_ms
                    ),
                }
            ),
            _ => format!(
                "not offered: {}",
                m.reason.as_deref().unwrap_or("no mode-2 message in regs/")
            ),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct ShowSmn {
    pub name: String,
    pub address: u32,
    pub confirmed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct ShowMessage {
    pub name: String,
    pub id: u32,
    pub args: String,
}

impl RegsShow {
    /// The human form.
    pub fn to_text(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let _ = writeln!(s, "{} — {}", self.asic, self.name);
        if !self.aliases.is_empty() {
            let _ = writeln!(s, "also: {}", self.aliases.join(", "));
        }
        if !self.mp1_versions.is_empty() {
            let _ = writeln!(s, "MP1 (SMU) versions: {}", self.mp1_versions.join(", "));
        }
        let _ = writeln!(s, "mode 2: {}", self.mode2.summary());
        for d in &self.devices {
            let _ = writeln!(
                s,
                "  {:04x}:{:04x}  {}{}{}",
                d.vendor,
                d.device,
                d.name,
                d.mp1_version
                    .as_deref()
                    .map(|v| format!(", MP1 {v}"))
                    .unwrap_or_default(),
                if d.confirmed { "" } else { "  (UNCONFIRMED)" }
            );
        }
        let _ = writeln!(
            s,
            "PCI ids: {}   register BAR {} ({:#x} bytes)   files: {}",
            self.pci_ids.join(", "),
            self.bar,
            self.bar_size,
            self.files.join(", ")
        );
        let _ = writeln!(s, "\nsegment bases (dwords):");
        for b in &self.bases {
            let _ = writeln!(
                s,
                "  {:<6} inst {} idx {}  {:#010x}  {}",
                b.ip,
                b.instance,
                b.base_idx,
                b.base,
                if b.confirmed {
                    "confirmed"
                } else {
                    "UNCONFIRMED"
                }
            );
        }
        let _ = writeln!(s, "\nregisters:");
        let _ = writeln!(
            s,
            "  {:<24} {:<5} idx  offset     BAR byte   base",
            "name", "ip"
        );
        for r in &self.registers {
            let _ = writeln!(
                s,
                "  {:<24} {:<5} {:>3}  {:#09x}  {:#09x}  {}{}",
                r.name,
                r.ip,
                r.base_idx,
                r.offset,
                r.bar_offset,
                if r.base_confirmed {
                    "confirmed"
                } else {
                    "UNCONFIRMED"
                },
                if r.beyond_bar {
                    "  (past the BAR: an SMN address, through PCIE_INDEX2/DATA2)"
                } else {
                    ""
                }
            );
        }
        for m in &self.mailboxes {
            let _ = writeln!(
                s,
                "\nSMU mailbox (MP1 {}): {}msg {:#x}  arg {:#x}  resp {:#x}{}",
                m.mp1_version,
                if m.beyond_bar {
                    "beyond the BAR, SMN addresses through PCIE_INDEX2/PCIE_DATA2: "
                } else {
                    "BAR byte offsets: "
                },
                m.msg,
                m.arg,
                m.resp,
                if m.base_confirmed {
                    ""
                } else {
                    "  (base UNCONFIRMED)"
                }
            );
        }
        if !self.smn.is_empty() {
            let _ = writeln!(s, "\nSMN registers:");
            for r in &self.smn {
                let _ = writeln!(s, "  {:<24} {:#010x}", r.name, r.address);
            }
        }
        let _ = writeln!(s, "\nSMU messages:");
        for m in &self.messages {
            let _ = writeln!(s, "  {:#04x}  {:<24} {}", m.id, m.name, m.args);
        }
        s
    }
}

impl RegsDb {
    /// The embedded files only.
    pub fn embedded() -> Result<RegsDb> {
        RegsDb::load(&[])
    }

    /// The embedded files, then every overlay directory in order (see the module docs).
    pub fn load(overlay_dirs: &[PathBuf]) -> Result<RegsDb> {
        let mut files: Vec<(PathBuf, String)> = EMBEDDED
            .iter()
            .map(|(p, t)| (PathBuf::from(p), (*t).to_string()))
            .collect();
        for dir in overlay_dirs {
            let rd = fs::read_dir(dir).map_err(|e| Error::io("read directory", dir, e))?;
            let mut paths = Vec::new();
            for ent in rd {
                let p = ent.map_err(|e| Error::io("read directory", dir, e))?.path();
                if p.extension().is_some_and(|x| x == "toml") && p.is_file() {
                    paths.push(p);
                }
            }
            paths.sort();
            for p in paths {
                let t = crate::pci::bounded_read::read_text(
                    &p,
                    crate::pci::bounded_read::TEXT_FILE_MAX,
                )?;
                files.push((p, t));
            }
        }
        RegsDb::from_texts(&files)
    }

    /// Build from (path, text) pairs in order: the first file of an `asic` defines it, later ones
    /// overlay it. For tests and tools that hold the files in memory.
    pub fn from_texts(files: &[(PathBuf, String)]) -> Result<RegsDb> {
        let mut order: Vec<String> = Vec::new();
        let mut tables: BTreeMap<String, (toml::Table, Vec<Origin>)> = BTreeMap::new();
        for (path, text) in files {
            let mut t = parse_table(path, text)?;
            let asic = match t.get("asic") {
                Some(toml::Value::String(s)) => s.clone(),
                Some(_) => {
                    return Err(Error::FileParse {
                        path: path.clone(),
                        line: text.find("asic").map_or(1, |p| line_col(text, p).0),
                        column: 1,
                        reason: "asic: must be a string".into(),
                    })
                }
                None => {
                    return Err(Error::FileParse {
                        path: path.clone(),
                        line: 1,
                        column: 1,
                        reason: "asic: missing (every regs file names its ASIC)".into(),
                    })
                }
            };
            let replace = match t.remove("replace") {
                None => false,
                Some(toml::Value::Boolean(b)) => b,
                Some(_) => {
                    return Err(Error::FileParse {
                        path: path.clone(),
                        line: text.find("replace").map_or(1, |p| line_col(text, p).0),
                        column: 1,
                        reason: "replace: must be true or false".into(),
                    })
                }
            };
            let origin = Origin {
                path: path.clone(),
                text: text.clone(),
            };
            match tables.get_mut(&asic) {
                Some((base, origins)) if !replace => {
                    merge_table(base, t, "").map_err(|reason| Error::FileParse {
                        path: path.clone(),
                        line: 1,
                        column: 1,
                        reason,
                    })?;
                    origins.push(origin);
                }
                _ => {
                    if !order.contains(&asic) {
                        order.push(asic.clone());
                    }
                    tables.insert(asic, (t, vec![origin]));
                }
            }
        }
        let mut asics: Vec<Asic> = Vec::new();
        for name in order {
            if let Some((t, origins)) = tables.remove(&name) {
                let a = Asic::from_table(t, origins)?;
                // A name (asic or alias) must pick one file, and a PCI id one family.
                for n in std::iter::once(&a.file.asic).chain(&a.file.aliases) {
                    if let Some(other) = asics.iter().find(|o| o.answers_to(n)) {
                        return Err(a.err_at(
                            n,
                            format!("'{n}' is already a name of '{}'", other.file.asic),
                        ));
                    }
                }
                for p in &a.file.pci_ids {
                    if let Some(other) = asics
                        .iter()
                        .find(|o| o.pci_id(p.vendor, p.device).is_some())
                    {
                        return Err(a.err_at(
                            &p.name,
                            format!(
                                "pci_ids: {:04x}:{:04x} is already listed by '{}'",
                                p.vendor, p.device, other.file.asic
                            ),
                        ));
                    }
                }
                asics.push(a);
            }
        }
        Ok(RegsDb { asics })
    }

    pub fn asics(&self) -> &[Asic] {
        &self.asics
    }

    /// By `asic` name (case-insensitive).
    pub fn asic(&self, name: &str) -> Result<&Asic> {
        self.asics
            .iter()
            .find(|a| a.file.asic.eq_ignore_ascii_case(name))
            .or_else(|| self.asics.iter().find(|a| a.answers_to(name)))
            .ok_or_else(|| {
                let known: Vec<&str> = self.asics.iter().map(Asic::asic_name).collect();
                Error::not_found(
                    "register database",
                    format!("{name} (known: {})", known.join(", ")),
                )
            })
    }

    /// The ASIC that lists this PCI vendor:device.
    pub fn by_pci_id(&self, vendor: u16, device: u16) -> Option<&Asic> {
        self.asics.iter().find(|a| {
            a.file
                .pci_ids
                .iter()
                .any(|p| p.vendor == vendor && p.device == device)
        })
    }

    /// This database with `asic` in place of the loaded ASIC of the same name
    /// (e.g. one carrying a device's discovered bases), or added.
    pub fn with_asic(&self, asic: Asic) -> RegsDb {
        let mut db = self.clone();
        match db
            .asics
            .iter_mut()
            .find(|a| a.asic_name() == asic.asic_name())
        {
            Some(slot) => *slot = asic,
            None => db.asics.push(asic),
        }
        db
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> RegsDb {
        RegsDb::embedded().unwrap()
    }

    fn with_overlay(text: &str) -> Result<RegsDb> {
        let mut files: Vec<(PathBuf, String)> = EMBEDDED
            .iter()
            .map(|(p, t)| (PathBuf::from(p), (*t).to_string()))
            .collect();
        files.push((PathBuf::from("overlay/phoenix.toml"), text.to_string()));
        RegsDb::from_texts(&files)
    }

    #[test]
    fn embedded_phoenix_loads_and_resolves_the_mailbox() {
        let db = db();
        let a = db.asic("phoenix").unwrap();
        let m = a.mailbox(Some("13.0.4")).unwrap();
        assert_eq!((m.msg, m.arg, m.resp), (0x58A08, 0x58A48, 0x58A68));
        assert!(!m.base_confirmed);
        assert_eq!(
            a.resolve("RCC_CONFIG_MEMSIZE").unwrap().bar_offset,
            0xde3 * 4
        );
        assert_eq!(db.by_pci_id(0x1002, 0x1900).unwrap().asic_name(), "phoenix");
        assert_eq!(
            db.by_pci_id(0x1002, 0x1901).unwrap().asic_name(),
            "phoenix2"
        );
        assert!(db.by_pci_id(0x1002, 0x1234).is_none());
    }

    #[test]
    fn overlay_overrides_one_base_field_by_key() {
        let db = with_overlay(
            "asic = \"phoenix\"\n[[bases]]\nip = \"MP1\"\ninstance = 0\nbase_idx = 1\nbase = 0x16200\nsource = \"ip discovery on test\"\nconfirmed = true\n",
        )
        .unwrap();
        let a = db.asic("phoenix").unwrap();
        let m = a.mailbox(Some("13.0.4")).unwrap();
        assert_eq!(m.msg, (0x16200 + 0x282) * 4);
        assert!(m.base_confirmed);
        // other entries untouched
        assert_eq!(a.file.bases.len(), db_len_bases());
    }

    fn db_len_bases() -> usize {
        db().asic("phoenix").unwrap().file.bases.len()
    }

    #[test]
    fn overlay_can_change_one_field_of_a_register_field() {
        let db = with_overlay(
            "asic = \"phoenix\"\n[[registers]]\nname = \"GRBM_STATUS\"\nfields = [{ name = \"GUI_ACTIVE\", confirmed = true }]\n",
        )
        .unwrap();
        let r = db
            .asic("phoenix")
            .unwrap()
            .register("GRBM_STATUS")
            .unwrap()
            .clone();
        let f = r.field("gui_active").unwrap();
        assert_eq!((f.lsb, f.width, f.confirmed), (31, 1, Some(true)));
    }

    #[test]
    fn overlay_errors_name_the_overlay_file_and_line() {
        let e = with_overlay(
            "asic = \"phoenix\"\n\n[[registers]]\nname = \"GRBM_STATUS\"\nfields = [{ name = \"GUI_ACTIVE\", width = 40 }]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("overlay/phoenix.toml:5:"), "{e}");
        assert!(
            e.contains("field 'GUI_ACTIVE'") && e.contains("width 40"),
            "{e}"
        );
    }

    #[test]
    fn field_helpers_extract_insert_and_parse_names() {
        let db = db();
        let r = db.asic("phoenix").unwrap().register("MM_INDEX").unwrap();
        let aper = r.field("MM_APER").unwrap();
        assert_eq!(aper.mask(), 0x8000_0000);
        assert_eq!(aper.extract(0x8000_1234), 1);
        assert_eq!(aper.insert(0x1234, 1).unwrap(), 0x8000_1234);
        assert_eq!(aper.parse_value("vram").unwrap(), 1);
        assert!(aper.insert(0, 2).is_err());
        assert_eq!(
            r.modify(0, &["MM_APER=VRAM", "MM_OFFSET=0x1000"]).unwrap(),
            0x8000_1000
        );
        assert!(r.modify(0, &["NOPE=1"]).is_err());
        assert!(r.modify(0, &["MM_APER"]).is_err());
        let full = r.field("MM_OFFSET").unwrap();
        assert_eq!(full.max(), 0x7fff_ffff);
    }

    #[test]
    fn response_table_knows_busy_and_dead() {
        let db = db();
        let a = db.asic("phoenix").unwrap();
        assert!(a.response(0xfc).unwrap().retry);
        assert_eq!(a.response(0xffff_ffff).unwrap().name, "UNEXP");
        assert!(a.response(0x42).is_none());
        assert_eq!(a.message("gfxdevicedriverreset").unwrap().id, 0x11);
        assert_eq!(a.message_by_id(0x1).unwrap().name, "TestMessage");
    }

    #[test]
    fn health_check_pass_rules() {
        let db = db();
        let a = db.asic("phoenix").unwrap();
        let alive = a
            .file
            .health
            .iter()
            .find(|h| h.name == "bar_alive")
            .unwrap();
        assert!(alive.passes(512));
        assert!(!alive.passes(u32::MAX));
        let fw = a
            .file
            .health
            .iter()
            .find(|h| h.name == "smu_fw_running")
            .unwrap();
        assert!(fw.passes(0x3));
        assert!(!fw.passes(0x2));
    }

    #[test]
    fn replace_true_swaps_the_whole_file() {
        let e = with_overlay("asic = \"phoenix\"\nreplace = true\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("overlay/phoenix.toml:"), "{e}");
        assert!(e.contains("name") || e.contains("bar"), "{e}");
    }

    #[test]
    fn line_col_counts_from_one() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
        assert_eq!(line_col("ab", 99), (1, 3));
    }
}
