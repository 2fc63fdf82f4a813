//! The twin's sysfs tree: the seed's host, a Minisforum UM880 Pro with a Ryzen 7
//! 8845HS, laid out from the field report's `lspci -tvnn`, IOMMU group listing,
//! `lspci -k` drivers and dmesg BAR lines. Where the report is silent (the
//! non-GPU devices' exact `reset_method`, their BAR addresses) the values are
//! plausible, marked here as such, and do not affect the 780M's verdicts.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::pci::regs::*;
use crate::pci::Bdf;
use crate::sim::config::{Bar, BarKind};

mod config;
mod files;
mod um880pro;

pub use config::{config_space, resources};
pub(crate) use files::relative;
pub use files::{device_dir, lay_device, lay_device_files, publish_device};
pub use um880pro::um880pro;

use files::{io_err, lay_driver, mkdir, write, write_only};

/// How a function's config space is shaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// No capabilities, 256-byte config (AMD's dummy host bridges, the FCH).
    Plain,
    /// A PCIe root port (type 1 header) over `secondary..=subordinate`.
    RootPort {
        secondary: u8,
        subordinate: u8,
        hotplug: bool,
    },
    /// A PCIe endpoint; `legacy` = Legacy Endpoint type; `no_soft_reset` = PMCSR bit.
    Endpoint {
        legacy: bool,
        flr: bool,
        no_soft_reset: bool,
    },
    /// The 780M iGPU: Legacy Endpoint, no FLR, PM D1 D2 D3hot D3cold, MSI, MSI-X.
    Igpu,
}

/// One function of the twin.
#[derive(Debug, Clone)]
pub struct FnSpec {
    pub bdf: Bdf,
    pub vendor: u16,
    pub device: u16,
    pub class: u32,
    pub revision: u8,
    pub subsystem: (u16, u16),
    pub driver: Option<&'static str>,
    pub iommu_group: Option<u32>,
    pub kind: Kind,
    pub bars: Vec<Bar>,
    /// `reset_method` content; empty = the kernel found none (no `reset` either).
    pub reset_method: &'static str,
    /// ACPI path of the companion node, if any.
    pub acpi: Option<&'static str>,
    /// `_PR3` power resources on that node.
    pub pr3: &'static [&'static str],
    /// The bridge above, `None` for the root bus.
    pub parent: Option<Bdf>,
    /// COMMAND as the host left it.
    pub command: u16,
}

const fn b(bus: u8, dev: u8, func: u8) -> Bdf {
    Bdf::new(0, bus, dev, func)
}

fn mem64(index: u8, addr: u64, size: u64, prefetch: bool) -> Bar {
    Bar {
        index,
        addr,
        size,
        kind: BarKind::Mem64 { prefetch },
    }
}

fn mem32(index: u8, addr: u64, size: u64) -> Bar {
    Bar {
        index,
        addr,
        size,
        kind: BarKind::Mem32,
    }
}

fn io(index: u8, addr: u64, size: u64) -> Bar {
    Bar {
        index,
        addr,
        size,
        kind: BarKind::Io,
    }
}

#[allow(clippy::too_many_arguments)]
fn f(
    bdf: Bdf,
    ids: (u16, u16),
    class: u32,
    revision: u8,
    driver: Option<&'static str>,
    group: Option<u32>,
    kind: Kind,
    reset_method: &'static str,
) -> FnSpec {
    let command = match (driver, &kind) {
        (_, Kind::RootPort { .. }) => 0x0007,
        (None, _) => 0x0000,
        (Some("vfio-pci"), _) => 0x0000,
        (Some(_), _) => 0x0406,
    };
    FnSpec {
        bdf,
        vendor: ids.0,
        device: ids.1,
        class,
        revision,
        subsystem: (0x1f4c, 0xb016),
        driver,
        iommu_group: group,
        kind,
        bars: vec![],
        reset_method,
        acpi: None,
        pr3: &[],
        parent: None,
        command,
    }
}

impl FnSpec {
    fn bars(mut self, bars: Vec<Bar>) -> Self {
        self.bars = bars;
        self
    }

    fn under(mut self, parent: Bdf) -> Self {
        self.parent = Some(parent);
        self
    }

    fn acpi(mut self, path: &'static str) -> Self {
        self.acpi = Some(path);
        self
    }

    fn command(mut self, c: u16) -> Self {
        self.command = c;
        self
    }

    pub fn is_bridge(&self) -> bool {
        matches!(self.kind, Kind::RootPort { .. })
    }

    pub fn is_pcie(&self) -> bool {
        !matches!(self.kind, Kind::Plain)
    }
}

const AMD: u16 = PCI_VENDOR_ID_AMD;
const ATI: u16 = PCI_VENDOR_ID_ATI;
const RP: fn(u8, u8) -> Kind = |s, e| Kind::RootPort {
    secondary: s,
    subordinate: e,
    hotplug: false,
};
const EP: Kind = Kind::Endpoint {
    legacy: false,
    flr: false,
    no_soft_reset: false,
};
const EP_NSR: Kind = Kind::Endpoint {
    legacy: true,
    flr: false,
    no_soft_reset: true,
};
const EP_LEG: Kind = Kind::Endpoint {
    legacy: true,
    flr: false,
    no_soft_reset: false,
};

/// Lays out the whole tree under `root` (`root/sys`, `root/dev`, `root/run`)
/// and returns the sysfs root.
pub fn build(root: &Path, specs: &[FnSpec]) -> Result<PathBuf> {
    let sysfs = root.join("sys");
    mkdir(&sysfs.join("bus/pci/devices"))?;
    mkdir(&sysfs.join("kernel/iommu_groups"))?;
    write_only(&sysfs.join("bus/pci/rescan"))?;
    write(&sysfs.join("bus/pci/drivers_autoprobe"), "1\n")?;
    for drv in ["vfio-pci", "pci-stub", "pcieport"] {
        lay_driver(&sysfs.join("bus/pci/drivers").join(drv))?;
    }
    let rootbus = sysfs.join("devices/pci0000:00");
    mkdir(&rootbus.join("pci_bus/0000:00"))?;
    write_only(&rootbus.join("pci_bus/0000:00/rescan"))?;
    // Parents first, so bridges exist before what sits below them.
    let mut order: Vec<&FnSpec> = specs.iter().collect();
    order.sort_by_key(|s| (s.parent.is_some(), s.bdf));
    for s in order {
        lay_device(&sysfs, s, specs)?;
    }
    // The ACPI VFCT table the firmware leaves for amdgpu, with the iGPU's VBIOS.
    let tables = sysfs.join("firmware/acpi/tables");
    mkdir(&tables)?;
    let vfct = crate::sim::rom::build_vfct(&[crate::sim::rom::SyntheticImage::seed_igpu()]);
    write(&tables.join("VFCT"), vfct)?;
    let vfio = root.join("dev/vfio");
    mkdir(&vfio)?;
    write(&vfio.join("vfio"), "")?;
    for s in specs.iter().filter(|s| s.driver == Some("vfio-pci")) {
        if let Some(g) = s.iommu_group {
            write(&vfio.join(g.to_string()), "")?;
        }
    }
    mkdir(&root.join("run"))?;
    write(&root.join("dev/kmsg"), "")?;
    host_files(root, &sysfs)?;
    Ok(sysfs)
}

/// The seed host's configuration beside the tree (`<root>/proc`, `/etc`,
/// `/usr/share/kvm`, …): what `doctor` and `hook` read there. The command
/// line, modprobe configuration, VM 100 and storage.cfg are the field
/// report's; the kernel release is a plausible Proxmox 8.4 one.
fn host_files(root: &Path, sysfs: &Path) -> Result<()> {
    let files: &[(&str, &str)] = &[
        ("proc/cmdline", "BOOT_IMAGE=/boot/vmlinuz-6.8.12-11-pve root=/dev/mapper/pve-root ro quiet iommu=pt\n"),
        ("proc/sys/kernel/osrelease", "6.8.12-11-pve\n"),
        // The UM880 Pro's host name in the field report's prompts (`root@d12pve`): the
        // Proxmox node name its mappings would use.
        ("proc/sys/kernel/hostname", "d12pve\n"),
        // A fixed boot id: the twin's boot (resetlab caches a device's bases per boot).
        ("proc/sys/kernel/random/boot_id", "7e1a5e00-0000-4000-8000-000000000001\n"),
        // DMI as the kernel shows it; the twin's values, not a real BIOS's.
        ("sys/class/dmi/id/bios_vendor", "resetlab twin\n"),
        ("sys/class/dmi/id/bios_version", "twin-1.0 (not a real BIOS)\n"),
        ("sys/class/dmi/id/bios_date", "01/01/2026\n"),
        ("sys/class/dmi/id/sys_vendor", "resetlab twin\n"),
        ("sys/class/dmi/id/product_name", "UM880 Pro (twin of the field report's host)\n"),
        ("sys/class/dmi/id/board_name", "twin\n"),
        ("etc/modules", super::seed::ETC_MODULES),
        ("etc/modprobe.d/passthrough.conf", super::seed::PASSTHROUGH_CONF),
        ("etc/pve/storage.cfg", super::seed::STORAGE_CFG),
        ("etc/pve/qemu-server/100.conf", super::seed::VM_100_CONF),
        (
            "var/lib/vz/snippets/vm100-hooks.sh",
            "#!/usr/bin/bash\n# the field report's hookscript: remove in pre-stop, rescan in pre-start/post-stop\n\
             vmId=\"$1\"; runPhase=\"$2\"\ncase \"$runPhase\" in\n  pre-start|post-stop) echo 1 > /sys/bus/pci/rescan; sleep 2 ;;\n\
             esac\n",
        ),
    ];
    for (rel, text) in files {
        let p = root.join(rel);
        if let Some(d) = p.parent() {
            mkdir(d)?;
        }
        write(&p, text)?;
    }
    let hook = root.join("var/lib/vz/snippets/vm100-hooks.sh");
    fs::set_permissions(&hook, fs::Permissions::from_mode(0o755))
        .map_err(io_err("chmod", &hook))?;
    let kvm = root.join("usr/share/kvm");
    mkdir(&kvm)?;
    write(
        &kvm.join("vbios_1002_1900.bin"),
        crate::sim::rom::build_rom(0x1002, 0x1900, false),
    )?;
    write(
        &kvm.join("AMDGopDriver_8845hs.rom"),
        crate::sim::rom::build_rom(0x1002, 0x1900, true),
    )?;
    for m in ["vfio", "vfio_iommu_type1", "vfio_pci"] {
        mkdir(&sysfs.join("module").join(m))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_host_has_every_function() {
        let specs = um880pro();
        assert_eq!(specs.len(), 44);
        let igpu = specs.iter().find(|s| s.device == 0x1900).unwrap();
        assert_eq!(igpu.reset_method, "");
        assert_eq!(igpu.iommu_group, Some(18));
        let mut groups: Vec<u32> = specs.iter().filter_map(|s| s.iommu_group).collect();
        groups.sort();
        groups.dedup();
        assert_eq!(groups, (0..=31).collect::<Vec<_>>());
    }
}
