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

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::amd::discovery::hw_id_by_name;
use crate::error::{Error, Result};

mod load;
mod schema;
mod show;

pub use load::EMBEDDED;
pub use schema::{
    parse_u32, AsicFile, Bar, Base, DiscoveryLocation, Field, HealthCheck, HealthKind, Indirect,
    Mailbox, Message, Mode2, Mode2Wait, PciId, Register, Resolved, ResolvedMailbox, Response,
    SmnRegister, BAR_IP,
};
pub use show::{RegsShow, ShowMessage, ShowMode2, ShowSmn};

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

impl Asic {
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

impl RegsDb {
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
        let e = aper.insert(0, 2).unwrap_err();
        assert!(
            matches!(&e, Error::Parse { input, reason, .. }
                if input == "MM_APER=0x2" && reason == "does not fit in 1 bits"),
            "{e:?}"
        );
        assert_eq!(
            r.modify(0, &["MM_APER=VRAM", "MM_OFFSET=0x1000"]).unwrap(),
            0x8000_1000
        );
        let e = r.modify(0, &["NOPE=1"]).unwrap_err();
        assert!(
            matches!(&e, Error::NotFound { what: "field", name } if name == "MM_INDEX.NOPE"),
            "{e:?}"
        );
        let e = r.modify(0, &["MM_APER"]).unwrap_err();
        assert!(
            matches!(&e, Error::Parse { input, reason, .. }
                if input == "MM_APER" && reason == "expected FIELD=VALUE"),
            "{e:?}"
        );
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
}
