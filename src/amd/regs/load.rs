//! Loading: the embedded files, overlays merged key by key (the rule in the module doc of
//! `amd::regs`), and the validation every loaded ASIC passes, with errors that name the file
//! and line.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::amd::discovery::hw_id_by_name;
use crate::error::{Error, Result};

use super::{
    Asic, AsicFile, Base, Field, HealthKind, Mode2Wait, Origin, Register, RegsDb, Resolved, BAR_IP,
};

/// The shipped register files, embedded at build time: (path shown in errors, contents).
pub const EMBEDDED: &[(&str, &str)] = &[
    (
        "regs/phoenix.toml",
        include_str!("../../../regs/phoenix.toml"),
    ),
    (
        "regs/phoenix2.toml",
        include_str!("../../../regs/phoenix2.toml"),
    ),
    (
        "regs/rembrandt.toml",
        include_str!("../../../regs/rembrandt.toml"),
    ),
    (
        "regs/mendocino.toml",
        include_str!("../../../regs/mendocino.toml"),
    ),
    (
        "regs/raphael.toml",
        include_str!("../../../regs/raphael.toml"),
    ),
    ("regs/strix.toml", include_str!("../../../regs/strix.toml")),
    (
        "regs/vangogh.toml",
        include_str!("../../../regs/vangogh.toml"),
    ),
    (
        "regs/renoir.toml",
        include_str!("../../../regs/renoir.toml"),
    ),
    ("regs/raven.toml", include_str!("../../../regs/raven.toml")),
];

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

    pub(super) fn validate(&self) -> Result<()> {
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

    pub(super) fn resolve_register(&self, r: &Register) -> Result<Resolved> {
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
                let t = crate::bounded_read::read_text(&p, crate::bounded_read::TEXT_FILE_MAX)?;
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
        assert_eq!(line_col("ab", 99), (1, 3));
    }
}
