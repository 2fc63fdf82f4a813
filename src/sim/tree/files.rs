//! Laying one device out as sysfs files: its directory, attributes, links and driver.

use std::fs;
use std::io;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};
use crate::pci::resource::{self};

use super::{config_space, resources, FnSpec, Kind};

/// Relative symlink target from directory `from` to `to` (both absolute).
pub(crate) fn relative(from: &Path, to: &Path) -> PathBuf {
    let f: Vec<Component> = from.components().collect();
    let t: Vec<Component> = to.components().collect();
    let common = f.iter().zip(&t).take_while(|(a, b)| a == b).count();
    let mut p = PathBuf::new();
    for _ in common..f.len() {
        p.push("..");
    }
    for c in &t[common..] {
        p.push(c.as_os_str());
    }
    p
}

pub(super) fn io_err<'a>(op: &'static str, p: &'a Path) -> impl FnOnce(io::Error) -> Error + 'a {
    move |e| Error::io(op, p, e)
}

pub(super) fn mkdir(p: &Path) -> Result<()> {
    fs::create_dir_all(p).map_err(io_err("create directory", p))
}

pub(super) fn write(p: &Path, data: impl AsRef<[u8]>) -> Result<()> {
    fs::write(p, data).map_err(io_err("write", p))
}

/// A write-only sysfs attribute (`remove`, `rescan`, `reset`, `bind`, …).
pub(super) fn write_only(p: &Path) -> Result<()> {
    write(p, b"")?;
    fs::set_permissions(p, fs::Permissions::from_mode(0o200)).map_err(io_err("chmod", p))
}

fn link(at: &Path, to: &Path) -> Result<()> {
    let dir = at.parent().unwrap_or(Path::new("/"));
    let _ = fs::remove_file(at);
    symlink(relative(dir, to), at).map_err(io_err("symlink", at))
}

/// Paths of the tree, relative to its sysfs root.
pub fn device_dir(sysfs: &Path, spec: &FnSpec, all: &[FnSpec]) -> PathBuf {
    let mut chain = vec![spec.bdf];
    let mut cur = spec.parent;
    while let Some(p) = cur {
        chain.push(p);
        cur = all.iter().find(|s| s.bdf == p).and_then(|s| s.parent);
    }
    let root = chain.last().copied().unwrap_or(spec.bdf);
    let mut dir = sysfs
        .join("devices")
        .join(format!("pci{:04x}:{:02x}", root.domain, 0));
    for b in chain.iter().rev() {
        dir.push(b.to_string());
    }
    dir
}

/// Lays out one function: its directory, attributes and every link to it.
pub fn lay_device(sysfs: &Path, spec: &FnSpec, all: &[FnSpec]) -> Result<PathBuf> {
    let dir = lay_device_files(sysfs, spec, all)?;
    publish_device(sysfs, spec, &dir)?;
    Ok(dir)
}

/// The `bus/pci/devices/<bdf>` link: where a device becomes visible. Laid
/// last, as the kernel adds a device to sysfs once it is set up.
pub fn publish_device(sysfs: &Path, spec: &FnSpec, dir: &Path) -> Result<()> {
    let devlink = sysfs.join("bus/pci/devices").join(spec.bdf.to_string());
    link(&devlink, dir)
}

/// Everything of [`lay_device`] but the `bus/pci/devices` link.
pub fn lay_device_files(sysfs: &Path, spec: &FnSpec, all: &[FnSpec]) -> Result<PathBuf> {
    let dir = device_dir(sysfs, spec, all);
    mkdir(&dir)?;
    let multifunction = all
        .iter()
        .any(|s| s.bdf != spec.bdf && s.bdf.slot() == spec.bdf.slot());
    let (cfg, _, _) = config_space(spec, multifunction);
    write(&dir.join("config"), &cfg)?;
    for (name, val) in [
        ("vendor", format!("0x{:04x}", spec.vendor)),
        ("device", format!("0x{:04x}", spec.device)),
        ("class", format!("0x{:06x}", spec.class)),
        ("revision", format!("0x{:02x}", spec.revision)),
        (
            "subsystem_vendor",
            format!(
                "0x{:04x}",
                if spec.is_bridge() {
                    0
                } else {
                    spec.subsystem.0
                }
            ),
        ),
        (
            "subsystem_device",
            format!(
                "0x{:04x}",
                if spec.is_bridge() {
                    0
                } else {
                    spec.subsystem.1
                }
            ),
        ),
        ("enable", (spec.driver.is_some() as u8).to_string()),
        ("power_state", "D0".to_string()),
        ("d3cold_allowed", "1".to_string()),
        ("driver_override", "(null)".to_string()),
        ("numa_node", "-1".to_string()),
        ("irq", "0".to_string()),
    ] {
        write(&dir.join(name), format!("{val}\n"))?;
    }
    let mut uevent = String::new();
    if let Some(d) = spec.driver {
        uevent.push_str(&format!("DRIVER={d}\n"));
    }
    uevent.push_str(&format!(
        "PCI_CLASS={:X}\nPCI_ID={:04X}:{:04X}\nPCI_SUBSYS_ID={:04X}:{:04X}\nPCI_SLOT_NAME={}\n",
        spec.class, spec.vendor, spec.device, spec.subsystem.0, spec.subsystem.1, spec.bdf
    ));
    write(&dir.join("uevent"), uevent)?;
    write(
        &dir.join("resource"),
        resource::format(&resources(spec, all)),
    )?;
    for bar in &spec.bars {
        let p = dir.join(format!("resource{}", bar.index));
        let file = fs::File::create(&p).map_err(io_err("create", &p))?;
        // Sparse: a 256 MiB BAR costs no disk.
        file.set_len(bar.size).map_err(io_err("truncate", &p))?;
    }
    if !spec.reset_method.is_empty() {
        write(
            &dir.join("reset_method"),
            format!("{}\n", spec.reset_method),
        )?;
        write_only(&dir.join("reset"))?;
    }
    write_only(&dir.join("remove"))?;
    write_only(&dir.join("rescan"))?;
    let power = dir.join("power");
    mkdir(&power)?;
    write(&power.join("control"), "on\n")?;
    write(&power.join("runtime_status"), "active\n")?;
    write(&power.join("runtime_enabled"), "forbidden\n")?;
    if let Kind::RootPort { secondary, .. } = spec.kind {
        let bus = dir
            .join("pci_bus")
            .join(format!("{:04x}:{secondary:02x}", spec.bdf.domain));
        mkdir(&bus)?;
        write_only(&bus.join("rescan"))?;
        write(&bus.join("cpuaffinity"), "ffff\n")?;
    }
    link(&dir.join("subsystem"), &sysfs.join("bus/pci"))?;
    if let Some(drv) = spec.driver {
        let ddir = sysfs.join("bus/pci/drivers").join(drv);
        lay_driver(&ddir)?;
        link(&dir.join("driver"), &ddir)?;
        link(&ddir.join(spec.bdf.to_string()), &dir)?;
    }
    if let Some(g) = spec.iommu_group {
        let gdir = sysfs.join("kernel/iommu_groups").join(g.to_string());
        mkdir(&gdir.join("devices"))?;
        write(&gdir.join("type"), "identity\n")?;
        link(&dir.join("iommu_group"), &gdir)?;
        link(&gdir.join("devices").join(spec.bdf.to_string()), &dir)?;
    }
    if let Some(acpi) = spec.acpi {
        let name = acpi.rsplit('.').next().unwrap_or("DEV");
        let node = sysfs
            .join("devices/LNXSYSTM:00/LNXSYBUS:00/PNP0A08:00")
            .join(format!(
                "device:{}",
                name.trim_matches('_').to_ascii_lowercase()
            ));
        mkdir(&node)?;
        write(&node.join("path"), format!("{acpi}\n"))?;
        write(&node.join("status"), "15\n")?;
        if !spec.pr3.is_empty() {
            let pr3 = node.join("power_resources_D3hot");
            mkdir(&pr3)?;
            for r in spec.pr3 {
                let res = sysfs.join("devices/LNXSYSTM:00/LNXSYBUS:00").join(r);
                mkdir(&res)?;
                link(&pr3.join(r), &res)?;
            }
        }
        link(&dir.join("firmware_node"), &node)?;
    }
    Ok(dir)
}

pub(super) fn lay_driver(ddir: &Path) -> Result<()> {
    if ddir.exists() {
        return Ok(());
    }
    mkdir(ddir)?;
    for a in ["bind", "unbind", "new_id", "remove_id"] {
        write_only(&ddir.join(a))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_links() {
        assert_eq!(
            relative(
                Path::new("/r/sys/bus/pci/devices"),
                Path::new("/r/sys/devices/pci0000:00/x")
            ),
            PathBuf::from("../../../devices/pci0000:00/x")
        );
    }
}
