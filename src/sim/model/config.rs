//! The model's answer to config-space writes, function resets and power control.

use std::fs;
use std::path::Path;

use crate::error::{Error, Result};
use crate::pci::regs::*;
use crate::pci::Bdf;
use crate::sim::tree::{self, FnSpec};

use super::{ack_flag, read_trim, replace_attr, Model};

impl Model {
    fn write_config(&mut self, bdf: &Bdf, data: Vec<u8>) {
        let Some(dev) = self.present.get_mut(bdf) else {
            return;
        };
        let path = tree::device_dir(&self.sysfs, &dev.spec, &self.specs).join("config");
        // In place, without truncating: a concurrent reader never sees a short file.
        if let Ok(f) = fs::OpenOptions::new().write(true).open(&path) {
            use std::os::unix::fs::FileExt;
            let _ = f.write_all_at(&data, 0);
        }
        dev.config = data;
    }

    /// The power-on state of a function's config: what a reset leaves.
    fn power_on_config(&self, spec: &FnSpec) -> Vec<u8> {
        let (mut data, writable, _) = tree::config_space(spec, self.multifunction(spec));
        // BARs unassigned, COMMAND cleared, bridge windows kept by firmware? No:
        // a conventional reset clears every writable bit of the header.
        for o in (PCI_BASE_ADDRESS_0 as usize)..0x28 {
            data[o] &= !writable[o];
        }
        data[PCI_COMMAND as usize] = 0;
        data[PCI_COMMAND as usize + 1] = 0;
        data
    }

    fn reset_function(&mut self, bdf: &Bdf, method: &str) {
        let Some(spec) = self.present.get(bdf).map(|d| d.spec.clone()) else {
            return;
        };
        let data = self.power_on_config(&spec);
        // The reset state first, then the config that shows the reset happened.
        self.clean(bdf, method);
        self.write_config(bdf, data);
        self.log(&bdf.to_string(), format!("{method} reset"));
    }

    /// Takes the config writes made so far, under the writers' lock, then
    /// acks them ([`ConfigWrite`]).
    pub(super) fn on_config(&mut self, bdf: &Bdf) -> Result<()> {
        let Some(dev) = self.present.get(bdf) else {
            return Ok(());
        };
        let path = self.dir_of(&dev.spec).join("config");
        let Ok(f) = fs::File::open(&path) else {
            return Ok(());
        };
        let _lock = nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| Error::io("flock", &path, e.into()))?;
        self.react_to_config(bdf, &path)?;
        let ack = ack_flag(&self.root, bdf);
        fs::write(&ack, b"").map_err(|e| Error::io("write", &ack, e))
    }

    fn react_to_config(&mut self, bdf: &Bdf, path: &Path) -> Result<()> {
        let Some(dev) = self.present.get(bdf) else {
            return Ok(());
        };
        let Ok(new) = fs::read(path) else {
            return Ok(());
        };
        if new.len() != dev.config.len() || new == dev.config {
            return Ok(());
        }
        let old = dev.config.clone();
        // Enforce what hardware would have let through: read-only bits keep
        // their value; write-1-to-clear bits clear where a 1 was written. A
        // file cannot tell an unchanged byte from one rewritten with the same
        // value, so w1c applies to changed bytes only.
        let mut eff = old.clone();
        for i in 0..eff.len() {
            let (m, c) = (dev.writable[i], dev.w1c[i]);
            let mut v = (old[i] & !m) | (new[i] & m);
            if new[i] != old[i] {
                v &= !(new[i] & c);
            }
            eff[i] = v;
        }
        let spec = dev.spec.clone();
        let caps =
            crate::pci::caps::Caps::walk(&crate::pci::config::MemConfig::image("m", eff.clone()));
        let r16 = |d: &[u8], o: u16| u16::from_le_bytes([d[o as usize], d[o as usize + 1]]);
        let r32 = |d: &[u8], o: u16| {
            u32::from_le_bytes([
                d[o as usize],
                d[o as usize + 1],
                d[o as usize + 2],
                d[o as usize + 3],
            ])
        };
        self.write_config(bdf, eff.clone());
        // Secondary bus reset: the functions below go to their power-on state
        // when the bit rises (they are held in reset until it falls).
        if spec.is_bridge() {
            let was = r16(&old, PCI_BRIDGE_CONTROL) & BridgeCtl::BUS_RESET.bits() != 0;
            let now = r16(&eff, PCI_BRIDGE_CONTROL) & BridgeCtl::BUS_RESET.bits() != 0;
            if !was && now {
                for child in self.below(bdf) {
                    if self.present.contains_key(&child) {
                        self.reset_function(&child, "bus");
                    }
                }
                self.log(&bdf.to_string(), "secondary bus reset");
            }
        }
        if let Some(pm) = caps.find(PCI_CAP_ID_PM) {
            let was = r16(&old, pm + PCI_PM_CTRL) & 3;
            let now = r16(&eff, pm + PCI_PM_CTRL) & 3;
            let nsr = r16(&eff, pm + PCI_PM_CTRL) & Pmcsr::NO_SOFT_RESET.bits() != 0;
            // No `power_state` write: the kernel's attribute shows its cached
            // `pdev->current_state` (pci-sysfs.c `power_state_show`), which a
            // raw PMCSR write through `config` does not change.
            if was != now {
                let quirk = crate::reset::pm::kernel_refuses(
                    spec.vendor,
                    spec.class,
                    &match spec.parent {
                        Some(b) => crate::pci::sysfs::Parent::Bridge(b),
                        None => crate::pci::sysfs::Parent::RootBus("pci0000:00".into()),
                    },
                );
                if was == 3 && now == 0 && !nsr && !quirk {
                    // D3hot→D0 with No_Soft_Reset 0: an internal reset (keeps PMCSR D0).
                    self.reset_function(bdf, "pm");
                } else if was == 3 && now == 0 {
                    self.log(&bdf.to_string(), "D3hot→D0 without reset");
                }
            }
        }
        if let Some(exp) = caps.find(PCI_CAP_ID_EXP) {
            let devctl = r16(&eff, exp + PCI_EXP_DEVCTL);
            if devctl & DevCtl::BCR_FLR.bits() != 0 {
                let flr =
                    DevCap::from_bits_retain(r32(&eff, exp + PCI_EXP_DEVCAP)).contains(DevCap::FLR);
                if flr && !spec.is_bridge() {
                    self.reset_function(bdf, "flr");
                } else {
                    let mut d = eff.clone();
                    let v = (devctl & !DevCtl::BCR_FLR.bits()).to_le_bytes();
                    d[(exp + PCI_EXP_DEVCTL) as usize] = v[0];
                    d[(exp + PCI_EXP_DEVCTL) as usize + 1] = v[1];
                    self.write_config(bdf, d);
                }
            }
        }
        if let Some(af) = caps.find(PCI_CAP_ID_AF) {
            if eff[(af + PCI_AF_CTRL) as usize] & AfCtrl::FLR.bits() != 0 {
                self.reset_function(bdf, "af_flr");
            }
        }
        Ok(())
    }

    pub(super) fn kernel_reset(&mut self, bdf: &Bdf) -> Result<()> {
        // pci_reset_function saves, resets, restores: the config ends as it was.
        let Some(before) = self.present.get(bdf).map(|d| d.config.clone()) else {
            return Ok(());
        };
        self.log(&bdf.to_string(), "kernel reset");
        self.clean(bdf, "kernel");
        self.write_config(bdf, before);
        Ok(())
    }

    pub(super) fn on_power_control(&mut self, bdf: &Bdf, value: &str) -> Result<()> {
        let Some(spec) = self.present.get(bdf).map(|d| d.spec.clone()) else {
            return Ok(());
        };
        let dir = self.dir_of(&spec);
        let (state, status) = match value {
            "auto" if spec.driver == Some("vfio-pci") => {
                if spec.pr3.is_empty() {
                    ("D3hot", "suspended")
                } else {
                    ("D3cold", "suspended")
                }
            }
            "on" => ("D0", "active"),
            _ => return Ok(()),
        };
        let prev = read_trim(&dir.join("power_state"));
        replace_attr(&dir.join("power_state"), &format!("{state}\n"));
        replace_attr(&dir.join("power/runtime_status"), &format!("{status}\n"));
        self.log(&bdf.to_string(), format!("power {prev} → {state}"));
        if prev == "D3cold" && state == "D0" {
            // Power was cut: the function comes back from its power-on state,
            // which the kernel's resume path restores.
            self.clean(bdf, "d3cold");
        }
        Ok(())
    }
}
