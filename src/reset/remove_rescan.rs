//! `remove_rescan`: remove the function from the kernel and rescan its parent
//! bus (`remove` / `pci_bus/<bus>/rescan` in drivers/pci/pci-sysfs.c) — what the
//! seed's hookscript does by hand.

use super::{Analysis, MethodDef, Verdict};

pub const DEF: MethodDef = MethodDef {
    name: "remove_rescan",
    summary: "remove the function and rescan its parent bus",
    probe,
};

/// The rescan attribute of the bus the device sits on, if the tree has one.
pub fn rescan_path(a: &Analysis) -> std::path::PathBuf {
    if let Some(bridge) = a.bridge() {
        if let Some(bus) = &bridge.secondary_bus_dir {
            return bridge.dir.join("pci_bus").join(bus).join("rescan");
        }
    }
    a.host.global_rescan()
}

pub fn probe(a: &Analysis) -> Verdict {
    if !a.dev.has_remove {
        return Verdict::no("the device has no 'remove' attribute");
    }
    let rescan = rescan_path(a);
    if std::fs::symlink_metadata(&rescan).is_err() {
        return Verdict::no(format!("no rescan attribute at {}", rescan.display()));
    }
    let rel = rescan.strip_prefix(&a.host.sysfs).unwrap_or(&rescan);
    Verdict::yes(format!("remove, then rescan via {}", rel.display()))
}
