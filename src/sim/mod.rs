//! The twin: a sysfs tree of the seed's host in a temp dir, and (in `model`)
//! the device model that answers it.

pub mod config;
pub mod profile;
pub mod smu;
pub mod tree;

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A twin laid out in its own temp dir, removed on drop.
pub struct Twin {
    dir: tempfile::TempDir,
    pub sysfs: PathBuf,
}

impl Twin {
    /// Builds the UM880 Pro twin in a fresh temp dir.
    pub fn new() -> Result<Twin> {
        let dir = tempfile::Builder::new()
            .prefix("resetlab-twin-")
            .tempdir()
            .map_err(|e| Error::io("create temp dir", std::env::temp_dir(), e))?;
        let sysfs = tree::build(dir.path(), &tree::um880pro())?;
        Ok(Twin { dir, sysfs })
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }
}
