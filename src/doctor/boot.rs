//! The host's boot configuration: IOMMU, the vfio modules, which driver claims each
//! passthrough function at boot, and the initramfs that carries the modprobe configuration.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use crate::pci::Device;

use super::host::host_need;
use super::{
    base_class, glob_match, ids, modalias, modname, parse_vfio_ids, read_opt, Check, Cmdline,
    DoctorCtx, DoctorOptions, Target, BASE_CLASS_DISPLAY, CLASS_HD_AUDIO, PCI_VENDOR_ID_ATI,
};

pub(super) const GRUB_FIX: &str = "edit GRUB_CMDLINE_LINUX_DEFAULT in /etc/default/grub and run update-grub (systemd-boot: /etc/kernel/cmdline and proxmox-boot-tool refresh), then reboot";
pub(super) const INITRAMFS: &str = "update-initramfs -u -k all";

pub(super) fn check_iommu(ctx: &DoctorCtx) -> Vec<Check> {
    let dir = ctx.host.sysfs.join("kernel/iommu_groups");
    let n = fs::read_dir(&dir).map(|rd| rd.flatten().count());
    let off_param = ctx.cmdline.as_ref().ok().and_then(|c| {
        ["amd_iommu", "iommu", "intel_iommu"]
            .iter()
            .find(|k| c.has(k, "off"))
            .map(|k| format!("{k}=off"))
    });
    let c = match n {
        Ok(n) if n > 0 => Check::pass("iommu", format!("{n} IOMMU groups in {}", dir.display())),
        _ => {
            let why = match &off_param {
                Some(p) => format!("; the kernel command line has {p}"),
                None => String::new(),
            };
            Check::fail(
                "iommu",
                format!("no IOMMU groups in {}: the IOMMU is off{why}", dir.display()),
                format!("enable the IOMMU (AMD-Vi / SVM) in the firmware setup; remove any iommu=off or amd_iommu=off: {GRUB_FIX}"),
            )
        }
    };
    vec![c]
}

pub(super) fn check_autoprobe(ctx: &DoctorCtx) -> Vec<Check> {
    let attr = crate::reset::autoprobe::attr(&ctx.host);
    let pending = crate::reset::autoprobe::pending(&ctx.host);
    let fix = format!(
        "run any writing resetlab command (it puts it back), or: echo 1 > {}",
        attr.display()
    );
    let c = match (crate::pci::sysfs::read_attr(&attr), pending) {
        (Ok(Some(v)), Some(p)) if v == "0" => Check::fail(
            "autoprobe",
            format!("{} is 0: new devices on this host get no driver; {p}", attr.display()),
            fix,
        ),
        (Ok(Some(v)), None) if v == "0" => Check::warn(
            "autoprobe",
            format!(
                "{} is 0: new devices on this host get no driver (not set by resetlab: no pending record)",
                attr.display()
            ),
            fix,
        ),
        (Ok(Some(_)), Some(p)) => Check::warn(
            "autoprobe",
            format!("drivers_autoprobe is on, but a record is left: {p}"),
            "the next writing resetlab removes it",
        ),
        (Ok(Some(_)), None) => Check::pass("autoprobe", format!("{} is 1", attr.display())),
        (Ok(None), _) => Check::pass(
            "autoprobe",
            format!("no {} (nothing to check)", attr.display()),
        ),
        (Err(e), _) => Check::warn("autoprobe", e.one_line(), "check it by hand"),
    };
    vec![c]
}

pub(super) fn check_iommu_pt(ctx: &DoctorCtx) -> Vec<Check> {
    let c = match &ctx.cmdline {
        Err(e) => Check::warn(
            "iommu-pt",
            format!("cannot read the kernel command line: {e}"),
            "run doctor where /proc is mounted (or pass --root)",
        ),
        Ok(c) if iommu_pt(c) => Check::pass("iommu-pt", "iommu=pt on the kernel command line"),
        Ok(c) => {
            let now = c
                .last("iommu")
                .map(|v| format!("iommu={v}"))
                .unwrap_or_else(|| "no iommu=".to_string());
            Check::warn(
                "iommu-pt",
                format!("{now} on the kernel command line; the recipe boots with iommu=pt (host devices skip DMA translation)"),
                format!("add iommu=pt: {GRUB_FIX}"),
            )
        }
    };
    vec![c]
}

/// Whether the kernel ends up in passthrough mode: arch/x86/kernel/pci-dma.c `iommu_setup` walks
/// each `iommu=` comma list in order; `pt` sets passthrough, `nopt` clears it.
fn iommu_pt(c: &Cmdline) -> bool {
    let mut pt = false;
    for opt in c.values("iommu").flatten().flat_map(|v| v.split(',')) {
        match opt {
            "pt" => pt = true,
            "nopt" => pt = false,
            _ => {}
        }
    }
    pt
}

/// `vfio_virqfd` is left out: it was merged into `vfio` in Linux 6.2 (the seed's list has it).
const VFIO_MODULES: &[&str] = &["vfio", "vfio_iommu_type1", "vfio_pci"];

pub(super) fn check_vfio_modules(ctx: &DoctorCtx) -> Vec<Check> {
    let proc_modules = read_opt(&ctx.host.proc_modules())
        .ok()
        .flatten()
        .unwrap_or_default();
    let listed: BTreeSet<String> = proc_modules
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(modname)
        .collect();
    let loaded = |m: &str| ctx.host.sysfs.join("module").join(m).is_dir() || listed.contains(m);
    let missing: Vec<&str> = VFIO_MODULES
        .iter()
        .copied()
        .filter(|m| !loaded(m))
        .collect();
    let at_boot = modules_at_boot(&ctx.opts);
    let not_at_boot: Vec<&str> = VFIO_MODULES
        .iter()
        .copied()
        .filter(|m| !at_boot.contains(*m))
        .collect();
    let c = if missing.is_empty() {
        let boot = if not_at_boot.is_empty() {
            "; /etc/modules loads them at boot".to_string()
        } else {
            format!(
                "; not in /etc/modules or /etc/modules-load.d: {}",
                not_at_boot.join(", ")
            )
        };
        Check::pass(
            "vfio-modules",
            format!("{} loaded{boot}", VFIO_MODULES.join(", ")),
        )
    } else {
        Check::fail(
            "vfio-modules",
            format!("not loaded: {}", missing.join(", ")),
            format!(
                "add {} to /etc/modules (one a line), run {INITRAMFS}, reboot (or modprobe them now)",
                VFIO_MODULES.join(", ")
            ),
        )
    };
    vec![c]
}

/// Modules named in `/etc/modules` and `/etc/modules-load.d/*.conf` (systemd-modules-load).
fn modules_at_boot(opts: &DoctorOptions) -> BTreeSet<String> {
    opts.machine
        .modules_load_files()
        .iter()
        .filter_map(|p| fs::read_to_string(p).ok())
        .flat_map(|t| {
            t.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';'))
                .filter_map(|l| l.split_whitespace().next().map(modname))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Fallback when `modules.alias` is missing: the drivers the recipe blacklists for these devices.
fn fallback_competitors(d: &Device) -> Vec<String> {
    if d.vendor == PCI_VENDOR_ID_ATI && base_class(d) == BASE_CLASS_DISPLAY {
        vec!["amdgpu".into()]
    } else if d.class16() == CLASS_HD_AUDIO {
        vec!["snd_hda_intel".into()]
    } else {
        Vec::new()
    }
}

/// Modules whose aliases match the device, except the passthrough stubs.
fn competitors(ctx: &DoctorCtx, d: &Device) -> (Vec<String>, String) {
    match &ctx.aliases {
        Some((path, aliases)) => {
            let ma = modalias(d);
            let mut v: Vec<String> = aliases
                .iter()
                .filter(|a| !matches!(a.module.as_str(), "vfio_pci" | "pci_stub"))
                .filter(|a| glob_match(&a.pattern, &ma))
                .map(|a| a.module.clone())
                .collect();
            v.sort();
            v.dedup();
            (v, format!("modules.alias ({})", path.display()))
        }
        None => (
            fallback_competitors(d),
            "no modules.alias for this kernel: checked amdgpu / snd_hda_intel only".into(),
        ),
    }
}

pub(super) fn check_boot_claim(ctx: &DoctorCtx) -> Vec<Check> {
    let cmdline = ctx.cmdline.as_ref().ok();
    let mut sources: Vec<(String, String)> = ctx
        .modprobe
        .vfio_ids()
        .into_iter()
        .map(|(v, at)| (v, at.to_string()))
        .collect();
    if let Some(c) = cmdline {
        for v in c.values("vfio_pci.ids").flatten() {
            sources.push((v.to_string(), "kernel command line".into()));
        }
    }
    let mut all_ids = Vec::new();
    let mut invalid = Vec::new();
    for (v, at) in &sources {
        let (ok, bad) = parse_vfio_ids(v);
        all_ids.extend(ok.into_iter().map(|i| (i, at.clone())));
        invalid.extend(bad.into_iter().map(|b| format!("'{b}' ({at})")));
    }
    // The one ids= line that would cover every checked function.
    // Functions the host needs are never proposed for vfio-pci (host-functions reports them).
    let passable: Vec<(&Target, &Device)> = ctx
        .targets
        .iter()
        .filter(|t| !t.driver_keep && !t.mdev)
        .filter_map(|t| Some((t, t.dev.as_ref()?)))
        .filter(|(t, d)| host_need(ctx, d, t.from_slot).is_none())
        .collect();
    let mut want: Vec<String> = Vec::new();
    for (_, d) in &passable {
        let i = ids(d);
        if !want.contains(&i) {
            want.push(i);
        }
    }
    let ids_line = format!("options vfio-pci ids={}", want.join(","));
    let mut out = Vec::new();
    for (_, d) in passable {
        let covered = all_ids.iter().find(|(i, _)| {
            i.matches(
                d.vendor,
                d.device,
                d.subsystem_vendor.unwrap_or(0),
                d.subsystem_device.unwrap_or(0),
                d.class,
            )
        });
        let (comp, whence) = competitors(ctx, d);
        let mut held = Vec::new();
        let mut free = Vec::new();
        for m in &comp {
            match ctx.modprobe.held_back(m, cmdline) {
                Some(why) => held.push(why),
                None => free.push(m.clone()),
            }
        }
        let mut detail = match covered {
            Some((_, at)) => format!("vfio-pci ids= covers {} ({at})", ids(d)),
            None => format!("no vfio-pci ids= covers {}", ids(d)),
        };
        if comp.is_empty() {
            detail.push_str(&format!("; no host module matches it ({whence})"));
        }
        if !held.is_empty() {
            detail.push_str(&format!("; held back: {}", held.join(", ")));
        }
        if !free.is_empty() {
            detail.push_str(&format!("; nothing holds back {}", free.join(", ")));
        }
        if !invalid.is_empty() {
            detail.push_str(&format!("; the kernel ignores ids {}", invalid.join(", ")));
        }
        let holds = free
            .iter()
            .map(|m| format!("softdep {m} pre: vfio-pci (or blacklist {m})"))
            .collect::<Vec<_>>()
            .join(", ");
        let c = match (covered.is_some(), free.is_empty()) {
            (true, true) => Check::pass("boot-claim", detail),
            (false, true) => Check::warn(
                "boot-claim",
                format!("{detail}: it stays unbound until Proxmox binds vfio-pci at VM start"),
                format!("add '{ids_line}' to /etc/modprobe.d/passthrough.conf, {INITRAMFS}, reboot"),
            ),
            (true, false) => Check::warn(
                "boot-claim",
                format!("{detail}: whichever of vfio-pci and {} loads first gets it", free.join(", ")),
                format!("add '{holds}' to /etc/modprobe.d/passthrough.conf, {INITRAMFS}, reboot"),
            ),
            (false, false) => Check::fail(
                "boot-claim",
                format!("{detail}: {} takes it at boot", free.join(", ")),
                format!("add '{ids_line}' and '{holds}' to /etc/modprobe.d/passthrough.conf, {INITRAMFS}, reboot"),
            ),
        };
        out.push(c.about(d.bdf.to_string()));
    }
    out
}

fn mtime(p: &Path) -> Option<std::time::SystemTime> {
    fs::metadata(p).ok()?.modified().ok()
}

pub(super) fn check_initramfs(ctx: &DoctorCtx) -> Vec<Check> {
    let Some(rel) = &ctx.release else {
        return Vec::new();
    };
    let initrd = ctx.host.boot().join(format!("initrd.img-{rel}"));
    let Some(built) = mtime(&initrd) else {
        return Vec::new();
    };
    let mut inputs: Vec<PathBuf> = ctx.modprobe.files.clone();
    inputs.push(ctx.host.etc_modules());
    let newer: Vec<String> = inputs
        .iter()
        .filter(|p| mtime(p).is_some_and(|m| m > built))
        .map(|p| p.display().to_string())
        .collect();
    let c = if newer.is_empty() {
        Check::pass(
            "initramfs",
            format!(
                "{} is newer than the modprobe configuration",
                initrd.display()
            ),
        )
    } else {
        Check::warn(
            "initramfs",
            format!(
                "{} is older than {}: the early boot does not see those changes",
                initrd.display(),
                newer.join(", ")
            ),
            format!("run {INITRAMFS}"),
        )
    };
    vec![c]
}
