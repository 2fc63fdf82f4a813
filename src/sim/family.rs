//! The twin's GPU as a device of any family in regs/ (`--sim-asic NAME`,
//! `sim up --asic NAME`): the seed's 780M at c5:00.0 swapped for the family's
//! first PCI id, its register BAR size, an IP discovery table that carries
//! the family's MP1 version and segment bases, and an SMU model that answers
//! the family's mailbox and message ids (sim/smu.rs reads them from regs/).
//!
//! Model choices, not facts about a device: the id is the first the regs/
//! file lists; the MP1 version is the one regs/ ties to that id, else the
//! family's first; IPs the file gives no base for keep the Phoenix values of
//! [`BlobSpec::phoenix_like`]. The default twin (no NAME) stays the seed's
//! 780M with b15's Phoenix table untouched.

use std::path::{Path, PathBuf};

use crate::amd::discovery::hw_id_by_name;
use crate::amd::regs::{Asic, RegsDb};
use crate::error::{Error, Result};
use crate::sim::discovery_blob::BlobSpec;
use crate::sim::tree::FnSpec;

/// What replaces the 780M in the twin's tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TwinGpu {
    /// The regs/ `asic` (canonical, not the alias the user typed).
    pub asic: String,
    pub vendor: u16,
    pub device: u16,
    /// The device's name in regs/ ("Rembrandt (Radeon 680M)").
    pub name: String,
    /// Register BAR index and size (regs/ `[bar]`).
    pub bar_index: u8,
    pub bar_size: u64,
    /// The MP1 version the twin's discovery table reports.
    pub mp1: Option<String>,
}

impl TwinGpu {
    /// The twin GPU for regs/ name (or alias) `name`.
    /// An alias picks the id whose regs/ name carries it (cezanne → 1638
    /// "Cezanne ...", strix_halo → 1586), else the file's first id.
    pub fn for_name(regs: &RegsDb, name: &str) -> Result<TwinGpu> {
        let a = regs.asic(name)?;
        let words = name.to_ascii_lowercase().replace('_', " ");
        let by_alias = a
            .file
            .pci_ids
            .iter()
            .position(|p| p.name.to_ascii_lowercase().contains(&words));
        TwinGpu::for_asic_id(a, by_alias.unwrap_or(0))
    }

    pub fn for_asic(a: &Asic) -> Result<TwinGpu> {
        TwinGpu::for_asic_id(a, 0)
    }

    /// The twin GPU as the file's `index`-th PCI id.
    pub fn for_asic_id(a: &Asic, index: usize) -> Result<TwinGpu> {
        let p = a.file.pci_ids.get(index).ok_or_else(|| {
            Error::not_found(
                "PCI id for the twin",
                format!("regs/{}.toml lists none", a.asic_name()),
            )
        })?;
        let mp1 = p
            .mp1_version
            .clone()
            .or_else(|| a.file.mp1_versions.first().cloned())
            .or_else(|| a.file.mailboxes.first().map(|m| m.mp1_version.clone()));
        Ok(TwinGpu {
            asic: a.asic_name().to_string(),
            vendor: p.vendor,
            device: p.device,
            name: p.name.clone(),
            bar_index: a.file.bar.index,
            bar_size: a.file.bar.size,
            mp1,
        })
    }

    /// `specs` (the UM880 Pro's functions) with the 780M swapped for this GPU.
    pub fn apply(&self, mut specs: Vec<FnSpec>) -> Vec<FnSpec> {
        for s in specs
            .iter_mut()
            .filter(|s| s.kind == crate::sim::tree::Kind::Igpu)
        {
            s.vendor = self.vendor;
            s.device = self.device;
            if let Some(b) = s.bars.iter_mut().find(|b| b.index == self.bar_index) {
                b.size = self.bar_size;
            }
        }
        specs
    }
}

/// Where `sim up --asic` records the family for the model daemon.
pub fn asic_file(root: &Path) -> PathBuf {
    crate::sim::model::model_dir(root).join("asic")
}

/// The family recorded for the twin at `root`, if any.
pub fn recorded(root: &Path) -> Option<String> {
    std::fs::read_to_string(asic_file(root))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Records the family for the twin at `root` (read back by `sim serve`).
pub fn record(root: &Path, asic: &str) -> Result<()> {
    let p = asic_file(root);
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d).map_err(|e| Error::io("create directory", d, e))?;
    }
    std::fs::write(&p, format!("{asic}\n")).map_err(|e| Error::io("write", &p, e))
}

/// The twin's UM880 Pro with its GPU as `gpu` (None: the seed's 780M).
pub fn host_specs(gpu: Option<&TwinGpu>) -> Vec<FnSpec> {
    let specs = crate::sim::tree::um880pro();
    match gpu {
        Some(g) => g.apply(specs),
        None => specs,
    }
}

/// The IP discovery table of a family's twin GPU: Phoenix's table with MP1's
/// version set to `mp1` and the segment bases regs/ gives (MP1, MP0, NBIF,
/// GC) put in place, so the twin's GPU sits where the family's file says.
/// Phoenix itself keeps [`BlobSpec::phoenix_like`] unchanged.
pub fn blob_spec(asic: &Asic, mp1: Option<&str>) -> Result<BlobSpec> {
    let mut spec = BlobSpec::phoenix_like();
    if asic.asic_name() == "phoenix" {
        return Ok(spec);
    }
    let Some(die) = spec.dies.first_mut() else {
        return Ok(spec);
    };
    for b in &asic.file.bases {
        let Some(hw_id) = hw_id_by_name(&b.ip) else {
            continue;
        };
        let Some(ip) = die
            .iter_mut()
            .find(|i| i.hw_id == hw_id && i.instance == b.instance)
        else {
            continue;
        };
        let idx = usize::from(b.base_idx);
        if ip.bases.len() <= idx {
            ip.bases.resize(idx + 1, 0);
        }
        ip.bases[idx] = u64::from(b.base);
    }
    if let Some(v) = mp1 {
        let parts: Vec<u8> = v.split('.').filter_map(|p| p.parse().ok()).collect();
        if let ([major, minor, rev], Some(ip)) = (
            parts.as_slice(),
            die.iter_mut().find(|i| i.hw_id == 1 && i.instance == 0),
        ) {
            ip.major = *major;
            ip.minor = *minor;
            ip.revision = *rev;
        } else {
            return Err(Error::parse(
                "MP1 version",
                v,
                "expected major.minor.revision",
            ));
        }
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::amd::discovery::{parse, Mode};
    use crate::sim::discovery_blob::build_discovery_blob;

    #[test]
    fn every_family_but_raven_gets_a_table_with_its_mp1_and_bases() {
        let db = RegsDb::embedded().unwrap();
        for a in db.asics() {
            let g = TwinGpu::for_asic(a).unwrap();
            assert_eq!(
                db.by_pci_id(g.vendor, g.device).unwrap().asic_name(),
                a.asic_name()
            );
            let spec = blob_spec(a, g.mp1.as_deref()).unwrap();
            let d = parse(&build_discovery_blob(&spec), Mode::Strict).unwrap();
            if a.asic_name() != "phoenix" {
                assert_eq!(d.mp1_version(), g.mp1, "{}", a.asic_name());
                let mp1 = a.file.bases.iter().find(|b| b.ip == "MP1");
                if let Some(b) = mp1 {
                    assert_eq!(
                        d.find(1, 0).unwrap().bases[usize::from(b.base_idx)],
                        b.base,
                        "{}",
                        a.asic_name()
                    );
                }
            }
        }
        let g = TwinGpu::for_name(&db, "granite_ridge").unwrap();
        assert_eq!((g.asic.as_str(), g.device), ("raphael", 0x13c0));
        let g = TwinGpu::for_name(&db, "raphael").unwrap();
        assert_eq!(g.device, 0x164e);
        assert_eq!(TwinGpu::for_name(&db, "cezanne").unwrap().device, 0x1638);
        assert_eq!(TwinGpu::for_name(&db, "strix_halo").unwrap().device, 0x1586);
        assert_eq!(TwinGpu::for_name(&db, "hawk_point").unwrap().device, 0x1900);
        let specs = host_specs(Some(&g));
        let igpu = specs
            .iter()
            .find(|s| s.kind == crate::sim::tree::Kind::Igpu)
            .unwrap();
        assert_eq!(igpu.device, 0x164e);
        assert!(matches!(
            TwinGpu::for_name(&db, "nosuch"),
            Err(crate::Error::NotFound { .. })
        ));
    }
}
