//! The twin: a sysfs tree of the seed's host in a temp dir, and (in `model`)
//! the device model that answers it.

pub mod config;
pub mod discovery_blob;
pub mod family;
pub mod model;
pub mod profile;
pub mod qemu;
pub mod rom;
pub mod seed;
pub mod smu;
pub mod tree;

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Resolves a twin root named on the command line and refuses one that is
/// the live machine: `/` itself, or a root whose `sys` is (after resolving
/// links) `/sys` or any mounted sysfs (statfs magic SYSFS_MAGIC). The device
/// model writes registers into the tree's BAR files: on the real `/sys` those
/// are the GPU's.
pub fn check_twin_root(dir: &Path) -> Result<PathBuf> {
    let resolved = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let sys = resolved.join("sys");
    let sys_resolved = std::fs::canonicalize(&sys).unwrap_or(sys);
    if resolved == Path::new("/")
        || sys_resolved == Path::new(crate::machine::SYSFS)
        || crate::machine::is_sysfs_mount(&sys_resolved)
    {
        return Err(Error::refused(format!(
            "{} is the live machine ({} is a mounted sysfs), not a twin: name an empty or twin directory",
            dir.display(),
            sys_resolved.display()
        )));
    }
    Ok(resolved)
}

/// A twin laid out in its own temp dir, removed on drop (the model, if
/// running, stops first).
pub struct Twin {
    model: Option<model::ModelHandle>,
    dir: tempfile::TempDir,
    pub sysfs: PathBuf,
}

impl Twin {
    /// Builds the UM880 Pro twin's tree in a fresh temp dir (no model: files only).
    pub fn new() -> Result<Twin> {
        Twin::new_as(None)
    }

    /// [`Twin::new`] with the GPU as a device of another family (sim/family.rs).
    pub fn new_as(gpu: Option<&family::TwinGpu>) -> Result<Twin> {
        // A model another process runs on this tree takes our config writes synchronously.
        model::install_config_write_hook();
        let dir = crate::cleanup::temp_dir("resetlab-twin-")
            .map_err(|e| Error::io("create temp dir", std::env::temp_dir(), e))?;
        let sysfs = tree::build(dir.path(), &family::host_specs(gpu))?;
        if let Some(g) = gpu {
            family::record(dir.path(), &g.asic)?;
        }
        Ok(Twin {
            model: None,
            dir,
            sysfs,
        })
    }

    /// Builds the twin and starts its device model in a thread.
    pub fn running(profile: profile::Profile) -> Result<Twin> {
        Twin::running_as(profile, None)
    }

    /// [`Twin::running`] with the GPU as a device of another family.
    pub fn running_as(profile: profile::Profile, gpu: Option<&family::TwinGpu>) -> Result<Twin> {
        let mut t = Twin::new_as(gpu)?;
        t.model = Some(model::ModelHandle::spawn(
            t.dir.path(),
            family::host_specs(gpu),
            profile,
        )?);
        Ok(t)
    }

    /// Errors the model thread met (it keeps going after one).
    pub fn model_errors(&self) -> Vec<String> {
        self.model
            .as_ref()
            .and_then(|m| m.errors.lock().ok().map(|v| v.clone()))
            .unwrap_or_default()
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }
}
