//! Per-device state records under `/run/resetlab/` (one JSON file per function).
//!
//! `/run` is a tmpfs: a fresh boot starts with no records, which is right, because a freshly
//! booted device is clean. A record says whether the last thing that happened to the device
//! left it clean (reset worked) or dirty (a guest had it, or the reset failed), so that
//! pre-start knows whether to reset before handing it out again.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::pci::Bdf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeviceState {
    Clean,
    Dirty,
}

/// One device's record. Unknown fields are ignored on reading, so a newer resetlab may add some.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StateRecord {
    pub bdf: Bdf,
    pub state: DeviceState,
    /// The reset method that last succeeded (clean) or was last tried (dirty), if any.
    #[serde(default)]
    pub last_method: Option<String>,
    /// When the record was written, seconds since the Unix epoch.
    pub time: u64,
    /// The VM that had the device, if known.
    #[serde(default)]
    pub vmid: Option<u32>,
    /// How it got to this state, in words ("released by the guest in 312 ms").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The result of looking a record up; reading never fails the hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateLookup {
    /// No record: nothing happened to the device since boot.
    Missing,
    Found(StateRecord),
    /// A record exists but cannot be used; `reason` says why (for a warning).
    Unreadable {
        path: PathBuf,
        reason: String,
    },
}

impl StateLookup {
    /// Whether `reset_if_dirty` should reset: a dirty record, or one that cannot be read
    /// (something happened, we do not know what). No record means clean.
    pub fn needs_reset(&self) -> bool {
        match self {
            StateLookup::Missing => false,
            StateLookup::Found(r) => r.state == DeviceState::Dirty,
            StateLookup::Unreadable { .. } => true,
        }
    }

    /// A one-line warning for an unreadable record.
    pub fn warning(&self) -> Option<String> {
        match self {
            StateLookup::Unreadable { path, reason } => Some(format!(
                "state record {} unreadable ({reason}); treating the device as dirty",
                path.display()
            )),
            _ => None,
        }
    }
}

/// The directory of state records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateStore {
    dir: PathBuf,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl StateStore {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        StateStore { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `<dir>/<bdf>.json`, e.g. `/run/resetlab/0000:c5:00.0.json`.
    pub fn path_for(&self, bdf: Bdf) -> PathBuf {
        self.dir.join(format!("{bdf}.json"))
    }

    pub fn read(&self, bdf: Bdf) -> StateLookup {
        let path = self.path_for(bdf);
        let text = match crate::bounded_read::read_text_opt(&path, crate::bounded_read::ATTR_MAX) {
            Ok(Some(t)) => t,
            Ok(None) => return StateLookup::Missing,
            Err(e) => {
                return StateLookup::Unreadable {
                    path,
                    reason: e.one_line(),
                }
            }
        };
        match serde_json::from_str::<StateRecord>(&text) {
            Ok(r) if r.bdf == bdf => StateLookup::Found(r),
            Ok(r) => StateLookup::Unreadable {
                path,
                reason: format!("record is for {}", r.bdf),
            },
            Err(e) => StateLookup::Unreadable {
                path,
                reason: e.to_string(),
            },
        }
    }

    /// Write a record atomically: a temporary file in the same directory, flushed and synced,
    /// then renamed over the old one. Creates the directory if needed.
    pub fn write(&self, rec: &StateRecord) -> Result<()> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| Error::io("create directory", &self.dir, e))?;
        let path = self.path_for(rec.bdf);
        let mut json = serde_json::to_string_pretty(rec)
            .map_err(|e| Error::failed(format!("encode state record for {}: {e}", rec.bdf)))?;
        json.push('\n');
        let mut tmp = tempfile::Builder::new()
            .prefix(".state-")
            .suffix(".tmp")
            .tempfile_in(&self.dir)
            .map_err(|e| Error::io("create temporary file in", &self.dir, e))?;
        tmp.write_all(json.as_bytes())
            .and_then(|_| tmp.as_file().sync_all())
            .map_err(|e| Error::io("write", tmp.path().to_path_buf(), e))?;
        tmp.persist(&path)
            .map_err(|e| Error::io("rename into", &path, e.error))?;
        Ok(())
    }

    /// Record `state` for `bdf` now.
    pub fn mark(
        &self,
        bdf: Bdf,
        state: DeviceState,
        last_method: Option<&str>,
        vmid: Option<u32>,
    ) -> Result<StateRecord> {
        self.mark_noted(bdf, state, last_method, vmid, None)
    }

    /// [`StateStore::mark`] with a note saying how the device got there.
    pub fn mark_noted(
        &self,
        bdf: Bdf,
        state: DeviceState,
        last_method: Option<&str>,
        vmid: Option<u32>,
        note: Option<String>,
    ) -> Result<StateRecord> {
        let rec = StateRecord {
            bdf,
            state,
            last_method: last_method.map(str::to_string),
            time: now_secs(),
            vmid,
            note,
        };
        self.write(&rec)?;
        Ok(rec)
    }

    /// Every record in the directory (sorted by address); a missing directory is empty.
    pub fn list(&self) -> Result<Vec<(Bdf, StateLookup)>> {
        let rd = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("read directory", &self.dir, e)),
        };
        let mut out = Vec::new();
        for entry in rd {
            let entry = entry.map_err(|e| Error::io("read directory", &self.dir, e))?;
            let name = entry.file_name();
            let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            if let Ok(bdf) = stem.parse::<Bdf>() {
                out.push((bdf, self.read(bdf)));
            }
        }
        out.sort_by_key(|(b, _)| *b);
        Ok(out)
    }
}
