//! `romfile=`: in `/usr/share/kvm`, a valid option ROM, and for the device it is given to.

use std::fs;
use std::io;

use crate::amd::vbios;
use crate::pci::Device;
use crate::pve;

use super::{base_class, Check, DoctorCtx, BASE_CLASS_DISPLAY};

/// The ROM's ids and those of the device it sits on.
fn rom_ids(info: &vbios::RomInfo) -> Vec<(u16, u16)> {
    let mut v = Vec::new();
    for img in &info.images {
        v.push((img.vendor_id, img.device_id));
        for d in &img.device_list {
            v.push((img.vendor_id, *d));
        }
    }
    v.dedup();
    v
}

fn parse_id_opt(v: Option<&str>) -> Option<u16> {
    u16::from_str_radix(v?.strip_prefix("0x")?, 16).ok()
}

pub(super) fn check_romfile(ctx: &DoctorCtx) -> Vec<Check> {
    let Some(vm) = ctx.vm_ok() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for hp in &vm.cfg.hostpci {
        let Some(rom) = hp.romfile() else { continue };
        let name = format!("hostpci{}", hp.index);
        // qemu-server joins it as a string: "/usr/share/kvm/$romfile".
        let path = ctx.opts.under_root(format!("/usr/share/kvm/{rom}"));
        let shown = format!("/usr/share/kvm/{rom}");
        let first = hp
            .targets()
            .first()
            .and_then(|t| t.resolve(&vm.present).first().copied());
        let dev = first.and_then(|b| ctx.device(&b));
        let c = match fs::read(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Check::fail(
                "romfile",
                format!("{name}: romfile={rom}: {shown} does not exist{}", if rom.starts_with('/') { " (qemu-server puts /usr/share/kvm/ before the name, even an absolute one)" } else { "" }),
                format!("put the ROM there: resetlab vbios dump --out /usr/share/kvm (writes vbios_1002_1900.bin), or fix romfile= in {name}"),
            ),
            Err(e) => Check::fail(
                "romfile",
                format!("{name}: cannot read {}: {e}", path.display()),
                "make the file readable by root",
            ),
            Ok(bytes) => rom_verdict(ctx, hp, &name, rom, &bytes, dev.as_ref()),
        };
        out.push(c.about(name));
    }
    out
}

fn rom_verdict(
    ctx: &DoctorCtx,
    hp: &pve::HostPci,
    name: &str,
    rom: &str,
    bytes: &[u8],
    dev: Option<&Device>,
) -> Check {
    let info = match vbios::check_rom(bytes) {
        Ok(i) => i,
        Err(e) => {
            return Check::fail(
                "romfile",
                format!("{name}: {rom} is not a valid option ROM: {}", e.one_line()),
                "dump it again (resetlab vbios dump --out /usr/share/kvm) and check it with resetlab vbios check FILE",
            )
        }
    };
    let kinds: Vec<&str> = info.images.iter().map(|i| i.code_type_name).collect();
    let has_efi = info.images.iter().any(|i| i.code_type == 3);
    let rids = rom_ids(&info);
    let rid_text: Vec<String> = rids
        .iter()
        .map(|(v, d)| format!("{v:04x}:{d:04x}"))
        .collect();
    let summary = format!(
        "{name}: {rom}: {} bytes, {} image(s) ({}) for {}",
        info.size,
        info.images.len(),
        kinds.join(", "),
        rid_text.join(", ")
    );
    let Some(d) = dev else {
        return Check::warn(
            "romfile",
            format!("{summary}; its device is not on the bus, ids not compared"),
            "bring the device back (see hostpci-present)",
        );
    };
    // What the guest sees: the ids, or qemu-server's x-pci-vendor-id / x-pci-device-id.
    let want = (
        parse_id_opt(hp.option("vendor-id")).unwrap_or(d.vendor),
        parse_id_opt(hp.option("device-id")).unwrap_or(d.device),
    );
    if rids.contains(&want) {
        return Check::pass("romfile", format!("{summary}, matching {}", d.bdf.short()));
    }
    // A GOP driver carried on a sibling's ROM BAR (the seed's AMDGopDriver on c5:00.1): OVMF
    // runs the EFI image, which then drives the GPU it is for.
    let sibling = ctx.targets.iter().filter_map(|t| t.dev.as_ref()).find(|o| {
        o.bdf != d.bdf
            && rids.contains(&(o.vendor, o.device))
            && base_class(o) == BASE_CLASS_DISPLAY
    });
    match sibling {
        Some(o) if has_efi => Check::pass(
            "romfile",
            format!("{summary}, on {} ({:04x}:{:04x}): an EFI driver for the VM's GPU {} carried on another function, as the seed does", d.bdf.short(), want.0, want.1, o.bdf.short()),
        ),
        _ if has_efi && info.images.iter().all(|i| i.code_type == 3) => Check::warn(
            "romfile",
            format!("{summary}, but {} is {:04x}:{:04x}: an EFI-only ROM for another device; its driver will not bind this one", d.bdf.short(), want.0, want.1),
            format!("use the ROM for {:04x}:{:04x}, or put this one on the hostpci entry of the device it is for", want.0, want.1),
        ),
        _ => Check::fail(
            "romfile",
            format!("{summary}, but {} is {:04x}:{:04x}: the wrong VBIOS for this device", d.bdf.short(), want.0, want.1),
            format!("dump this machine's VBIOS (resetlab vbios dump --out /usr/share/kvm writes vbios_{:04x}_{:04x}.bin) and set romfile= to it", want.0, want.1),
        ),
    }
}
