//! What a `regs/*.toml` file holds: PCI ids, the BAR, segment bases, registers and their
//! fields, SMN registers, mailboxes, messages, responses, health checks and the mode-2 recipe;
//! and what a register resolves to.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

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
