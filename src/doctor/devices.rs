//! The VM's config and its passthrough devices: present, bound to vfio-pci, alone in their
//! IOMMU group, and the VGA settings of the passed GPU.

use std::fs;

use crate::pci::{Bdf, Device};
use crate::pve::{self, VmConfig};

use super::boot::INITRAMFS;
use super::host::host_need;
use super::{
    base_class, ids, Check, DoctorCtx, BASE_CLASS_DISPLAY, CLASS_BRIDGE_PCI, DMA_SAFE_DRIVERS,
    VFIO_PCI,
};

/// The cluster node whose `/etc/pve/nodes/<node>/qemu-server/` holds the VM's config.
fn elsewhere(ctx: &DoctorCtx, vmid: u32) -> Option<String> {
    let nodes = ctx.opts.pve_root().join("nodes");
    fs::read_dir(nodes)
        .ok()?
        .flatten()
        .find(|e| e.path().join(format!("qemu-server/{vmid}.conf")).is_file())
        .and_then(|e| e.file_name().into_string().ok())
}

pub(super) fn check_vm_config(ctx: &DoctorCtx) -> Vec<Check> {
    let Some(vm) = &ctx.vm else {
        return Vec::new();
    };
    let vmid = ctx.opts.vmid.unwrap_or_default();
    let path = VmConfig::path_for(&ctx.opts.pve_root(), vmid);
    let c = match vm {
        // In a cluster `qemu-server/` is this node's directory; the VM may live on another.
        Err(_) if !path.exists() && elsewhere(ctx, vmid).is_some() => {
            let node = elsewhere(ctx, vmid).unwrap_or_default();
            Check::warn(
                "vm-config",
                format!("VM {vmid} is on node {node}, not this one: doctor checks the node it runs on"),
                format!("run resetlab doctor --vmid {vmid} on {node} (and on each node it can migrate to)"),
            )
        }
        Err(e) => Check::fail(
            "vm-config",
            format!("cannot read VM {vmid}: {e}"),
            format!("check the VM id and {} (qm config {vmid})", path.display()),
        ),
        Ok(v) if v.cfg.hostpci.is_empty() => Check::warn(
            "vm-config",
            format!("{}: no hostpci entries: nothing is passed through", path.display()),
            format!("add the iGPU and its audio: qm set {vmid} --hostpci0 0000:c5:00.0,pcie=1,x-vga=1,romfile=vbios_1002_1900.bin --hostpci1 0000:c5:00.1,pcie=1"),
        ),
        Ok(v) => {
            let entries: Vec<String> = v
                .cfg
                .hostpci
                .iter()
                .map(|h| format!("hostpci{}: {}", h.index, h.raw))
                .collect();
            Check::pass(
                "vm-config",
                format!("{}: {}", path.display(), entries.join("; ")),
            )
        }
    };
    vec![c]
}

pub(super) fn check_devices(ctx: &DoctorCtx) -> Vec<Check> {
    if let Err(e) = &ctx.topo {
        return vec![Check::fail(
            "devices",
            format!("cannot read the PCI devices: {e}"),
            "point --sysfs at a sysfs tree (default /sys)",
        )];
    }
    if ctx.opts.vmid.is_some() {
        return Vec::new();
    }
    let c = if ctx.targets.is_empty() {
        Check::warn(
            "devices",
            "no function is bound to vfio-pci and no AMD GPU is present: nothing to check",
            "name the VM with --vmid N, or bind the passthrough functions to vfio-pci (see boot-claim)",
        )
    } else {
        let list: Vec<String> = ctx
            .targets
            .iter()
            .filter_map(|t| t.dev.as_ref())
            .map(|d| format!("{} [{}]", d.bdf.short(), ids(d)))
            .collect();
        Check::pass(
            "devices",
            format!(
                "checking {} (bound to vfio-pci, or AMD GPU/audio; --vmid N checks a VM's own)",
                list.join(", ")
            ),
        )
    };
    vec![c]
}

pub(super) fn check_hostpci_present(ctx: &DoctorCtx) -> Vec<Check> {
    if ctx.vm_ok().is_none() {
        return Vec::new();
    }
    ctx.targets
        .iter()
        .map(|t| {
            let hp = t.hostpci.map(|i| format!("hostpci{i}")).unwrap_or_default();
            match &t.dev {
                Some(d) => Check::pass(
                    "hostpci-present",
                    format!("{hp}: {} {} present", d.bdf, d.name()),
                ),
                None => Check::fail(
                    "hostpci-present",
                    format!("{hp}: {} is not on the bus (removed, or a wrong address)", t.bdf),
                    format!("echo 1 > /sys/bus/pci/rescan to bring it back, or correct {hp} (lspci -nn lists the addresses)"),
                ),
            }
            .about(t.bdf.to_string())
        })
        .collect()
}

pub(super) fn check_vfio_bound(ctx: &DoctorCtx) -> Vec<Check> {
    ctx.targets
        .iter()
        .filter_map(|t| Some((t, t.dev.as_ref()?)))
        .map(|(t, d)| {
            let need = host_need(ctx, d, t.from_slot);
            let c = match d.driver.as_deref() {
                _ if t.mdev => Check::pass(
                    "vfio-bound",
                    format!("mdev: the physical function stays with {}", d.driver.as_deref().unwrap_or("no driver")),
                ),
                drv if t.driver_keep => Check::pass(
                    "vfio-bound",
                    format!("driver=keep: Proxmox leaves it to {}", drv.unwrap_or("no driver")),
                ),
                Some(VFIO_PCI) => Check::pass("vfio-bound", "bound to vfio-pci"),
                Some(_) if need.is_some() => Check::fail(
                    "vfio-bound",
                    format!("the host needs it: {}", need.as_deref().unwrap_or_default()),
                    "take it out of the VM (see host-functions)",
                ),
                None => Check::warn(
                    "vfio-bound",
                    "bound to no driver; Proxmox binds vfio-pci at VM start",
                    format!("bind it at boot: add {} to options vfio-pci ids= (see boot-claim)", ids(d)),
                ),
                Some(other) => Check::fail(
                    "vfio-bound",
                    format!("bound to {other}: the host is using it; Proxmox would unbind it at VM start"),
                    format!("let vfio-pci claim {} at boot (see boot-claim: options vfio-pci ids= and blacklist/softdep {other}), {INITRAMFS}, reboot", ids(d)),
                ),
            };
            c.about(d.bdf.to_string())
        })
        .collect()
}

/// Functions of IOMMU group `g` (names of `<sysfs>/kernel/iommu_groups/<g>/devices`).
fn group_members(ctx: &DoctorCtx, g: u32) -> Vec<Bdf> {
    let dir = ctx
        .host
        .sysfs
        .join("kernel/iommu_groups")
        .join(g.to_string())
        .join("devices");
    let mut v: Vec<Bdf> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
        .collect();
    v.sort();
    v
}

pub(super) fn check_iommu_group(ctx: &DoctorCtx) -> Vec<Check> {
    let set = ctx.target_set();
    ctx.targets
        .iter()
        .filter(|t| !t.mdev)
        .filter_map(|t| t.dev.as_ref())
        .map(|d| {
            let Some(g) = d.iommu_group else {
                return Check::fail(
                    "iommu-group",
                    "in no IOMMU group: VFIO cannot pass it through",
                    "turn the IOMMU on (see the iommu check)",
                )
                .about(d.bdf.to_string());
            };
            let others: Vec<Bdf> = group_members(ctx, g)
                .into_iter()
                .filter(|b| *b != d.bdf && !set.contains(b))
                .collect();
            let mut blocking = Vec::new();
            let mut along = Vec::new();
            for o in &others {
                let od = ctx.device(o);
                let drv = od.as_ref().and_then(|x| x.driver.clone());
                let bridge = od.as_ref().is_some_and(|x| x.class16() == CLASS_BRIDGE_PCI);
                match drv.as_deref() {
                    Some("pcieport") if bridge => {}
                    None if bridge => {}
                    None | Some("vfio-pci") | Some("pci-stub") => along.push(format!(
                        "{} ({})",
                        o.short(),
                        drv.as_deref().unwrap_or("no driver")
                    )),
                    Some(x) if DMA_SAFE_DRIVERS.contains(&x) => {}
                    Some(x) => blocking.push(format!("{} ({x})", o.short())),
                }
            }
            let c = if !blocking.is_empty() {
                Check::fail(
                    "iommu-group",
                    format!("group {g} also holds {} bound to host drivers: VFIO cannot own the group (\"group {g} is not viable\")", blocking.join(", ")),
                    "pass those functions to the same VM too, or bind them to vfio-pci; otherwise the device needs a slot with its own group",
                )
            } else if !along.is_empty() {
                Check::warn(
                    "iommu-group",
                    format!("group {g} also holds {}: they go to the VM's VFIO container with it and no one else can use them", along.join(", ")),
                    "pass them to the same VM (hostpciN), or accept that the host cannot use them while the VM runs",
                )
            } else {
                Check::pass("iommu-group", format!("alone in IOMMU group {g}"))
            };
            c.about(d.bdf.to_string())
        })
        .collect()
}

pub(super) fn check_vga(ctx: &DoctorCtx) -> Vec<Check> {
    let Some(vm) = ctx.vm_ok() else {
        return Vec::new();
    };
    let vmid = vm.cfg.vmid;
    let vga_type = vm
        .cfg
        .vga
        .as_deref()
        .and_then(|v| v.split(',').next())
        .map(|t| t.trim().trim_start_matches("type=").to_string());
    let vga_none = vga_type.as_deref() == Some("none");
    let vga_text = vga_type
        .clone()
        .unwrap_or_else(|| "unset (default std)".into());
    // Each entry's first function: the one x-vga and romfile apply to.
    let first = |hp: &pve::HostPci| {
        hp.targets()
            .first()
            .and_then(|t| t.resolve(&vm.present).first().copied())
            .and_then(|b| ctx.device(&b))
    };
    let gpus: Vec<(u8, Device)> = vm
        .cfg
        .hostpci
        .iter()
        .filter_map(|hp| Some((hp.index, first(hp)?)))
        .filter(|(_, d)| base_class(d) == BASE_CLASS_DISPLAY)
        .collect();
    let xvga: Vec<&pve::HostPci> = vm.cfg.hostpci.iter().filter(|h| h.x_vga()).collect();
    let c = if let Some(hp) = xvga
        .iter()
        .find(|h| first(h).is_some_and(|d| base_class(&d) != BASE_CLASS_DISPLAY))
    {
        Check::warn(
            "vga",
            format!(
                "x-vga=1 on hostpci{}, which is not a display device",
                hp.index
            ),
            format!(
                "move x-vga=1 to the GPU's hostpci entry (qm set {vmid} --hostpci{} …)",
                hp.index
            ),
        )
    } else if let Some((i, d)) = gpus.first().filter(|_| xvga.is_empty()) {
        Check::warn(
            "vga",
            format!("the GPU {} (hostpci{i}) has no x-vga=1; vga: {vga_text}: it is not the guest's primary display", d.bdf.short()),
            format!("add x-vga=1 to hostpci{i} and set vga: none (qm set {vmid} --vga none)"),
        )
    } else if gpus.is_empty() {
        Check::pass("vga", format!("no GPU passed through; vga: {vga_text}"))
    } else if xvga.len() > 1 {
        Check::warn(
            "vga",
            format!(
                "x-vga=1 on {} entries; a VM has one primary display",
                xvga.len()
            ),
            "keep x-vga=1 on the primary GPU only",
        )
    } else {
        // Exactly one x-vga entry, on the GPU.
        let i = xvga.first().map(|h| h.index).unwrap_or_default();
        if vga_none {
            Check::pass(
                "vga",
                format!("x-vga=1 on hostpci{i} (the GPU) with vga: none"),
            )
        } else {
            Check::warn(
                "vga",
                format!("x-vga=1 on hostpci{i} but vga: {vga_text}: the guest also gets an emulated display"),
                format!("qm set {vmid} --vga none"),
            )
        }
    };
    vec![c]
}
