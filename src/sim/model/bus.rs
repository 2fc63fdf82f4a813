//! The model's bus: removing functions, rescanning below a bridge, binding and unbinding
//! drivers.

use std::fs;

use crate::error::Result;
use crate::pci::Bdf;
use crate::sim::tree::{self, FnSpec};

use super::Model;

impl Model {
    pub(super) fn below(&self, bridge: &Bdf) -> Vec<Bdf> {
        let mut out = Vec::new();
        let mut stack = vec![*bridge];
        while let Some(b) = stack.pop() {
            for s in &self.specs {
                if s.parent == Some(b) && !out.contains(&s.bdf) {
                    out.push(s.bdf);
                    stack.push(s.bdf);
                }
            }
        }
        out
    }

    pub(super) fn remove(&mut self, bdf: &Bdf) -> Result<()> {
        let mut victims = vec![*bdf];
        victims.extend(self.below(bdf));
        for v in &victims {
            self.smu.remove(v);
            let Some(dev) = self.present.remove(v) else {
                continue;
            };
            let dir = self.dir_of(&dev.spec);
            let name = v.to_string();
            let _ = fs::remove_file(self.sysfs.join("bus/pci/devices").join(&name));
            if let Some(d) = dev.spec.driver {
                let _ = fs::remove_file(self.sysfs.join("bus/pci/drivers").join(d).join(&name));
            }
            if let Ok(rd) = fs::read_dir(self.sysfs.join("bus/pci/drivers")) {
                for e in rd.flatten() {
                    let _ = fs::remove_file(e.path().join(&name));
                }
            }
            if let Some(g) = dev.spec.iommu_group {
                let _ = fs::remove_file(
                    self.sysfs
                        .join("kernel/iommu_groups")
                        .join(g.to_string())
                        .join("devices")
                        .join(&name),
                );
            }
            let _ = fs::remove_dir_all(&dir);
            self.removed.insert(*v);
            self.log(&name, "removed");
        }
        Ok(())
    }

    pub(super) fn rescan(&mut self, bridge: Option<Bdf>) -> Result<()> {
        let candidates: Vec<FnSpec> = self
            .specs
            .iter()
            .filter(|s| self.removed.contains(&s.bdf) && !self.gone.contains(&s.bdf))
            .filter(|s| match bridge {
                None => true,
                Some(b) => s.parent == Some(b) || self.below(&b).contains(&s.bdf),
            })
            .cloned()
            .collect();
        // Parents before children.
        let mut order = candidates;
        order.sort_by_key(|s| (s.parent.is_some(), s.bdf));
        for s in order {
            if let Some(p) = s.parent {
                if !self.present.contains_key(&p) {
                    continue;
                }
            }
            // Files first, the GPU's state and SMU set up, then the device
            // becomes visible: a client polling for it never sees it half made.
            let dir = tree::lay_device_files(&self.sysfs, &s, &self.specs)?;
            let name = s.bdf.to_string();
            self.clean(&s.bdf, "remove_rescan");
            self.adopt(s.clone())?;
            tree::publish_device(&self.sysfs, &s, &dir)?;
            self.log(&name, "added by rescan");
        }
        Ok(())
    }

    pub(super) fn bind(&mut self, bdf: &Bdf, driver: &str) -> Result<()> {
        let Some(dev) = self.present.get(bdf) else {
            return Ok(());
        };
        let dir = self.dir_of(&dev.spec);
        if fs::symlink_metadata(dir.join("driver")).is_ok() {
            return Ok(()); // the kernel refuses (EBUSY); the twin ignores it
        }
        let ddir = self.sysfs.join("bus/pci/drivers").join(driver);
        if !ddir.is_dir() {
            return Ok(());
        }
        let rel = tree::relative;
        let _ = std::os::unix::fs::symlink(rel(&dir, &ddir), dir.join("driver"));
        let _ = std::os::unix::fs::symlink(rel(&ddir, &dir), ddir.join(bdf.to_string()));
        self.log(&bdf.to_string(), format!("bound to {driver}"));
        Ok(())
    }

    pub(super) fn unbind(&mut self, bdf: &Bdf) -> Result<()> {
        let Some(dev) = self.present.get(bdf) else {
            return Ok(());
        };
        let dir = self.dir_of(&dev.spec);
        if let Ok(t) = fs::read_link(dir.join("driver")) {
            if let Some(d) = t.file_name() {
                let _ = fs::remove_file(
                    self.sysfs
                        .join("bus/pci/drivers")
                        .join(d)
                        .join(bdf.to_string()),
                );
            }
        }
        let _ = fs::remove_file(dir.join("driver"));
        self.log(&bdf.to_string(), "unbound");
        Ok(())
    }
}
