//! Functions the host needs (the USB controller with the keyboard, whole slots) that a
//! hostpci entry would take.

use std::fs;

use crate::pci::sysfs::read_attr;
use crate::pci::Device;
use crate::pve::PciTarget;

use super::{Check, DoctorCtx, CLASS_SERIAL_USB, DMA_SAFE_DRIVERS, USB_HOST_DRIVERS};

/// `input*` devices below the function (the host's keyboard on a USB controller).
fn input_devices(ctx: &DoctorCtx, d: &Device) -> Vec<String> {
    let dir = ctx.host.sysfs.join("class/input");
    let mut v: Vec<String> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("input"))
        .filter_map(|e| {
            let real = fs::canonicalize(e.path()).ok()?;
            real.starts_with(&d.real_dir).then(|| {
                let n = e.file_name().to_string_lossy().into_owned();
                match read_attr(&real.join("name")).ok().flatten() {
                    Some(name) => format!("{n} '{name}'"),
                    None => n,
                }
            })
        })
        .collect();
    v.sort();
    v
}

/// Why the host needs this function, if it does: input devices below it (the keyboard), a USB
/// controller bound to a host driver, or — swept in by a whole-slot entry — any host driver.
pub(super) fn host_need(ctx: &DoctorCtx, d: &Device, from_slot: bool) -> Option<String> {
    let drv = d.driver.as_deref().unwrap_or("");
    let inputs = input_devices(ctx, d);
    let host_drv = !drv.is_empty() && !DMA_SAFE_DRIVERS.contains(&drv);
    let usb = d.class16() == CLASS_SERIAL_USB || USB_HOST_DRIVERS.contains(&drv);
    if !inputs.is_empty() {
        let drv = if drv.is_empty() { "no driver" } else { drv };
        Some(format!("{drv}, carries host input {}", inputs.join(", ")))
    } else if usb && host_drv {
        Some(format!("a USB controller the host uses, {drv}"))
    } else if from_slot && host_drv {
        Some(format!("bound to {drv} on the host"))
    } else {
        None
    }
}

pub(super) fn check_host_functions(ctx: &DoctorCtx) -> Vec<Check> {
    let Some(vm) = ctx.vm_ok() else {
        return Vec::new();
    };
    let vmid = ctx.opts.vmid.unwrap_or_default();
    let mut out = Vec::new();
    for hp in &vm.cfg.hostpci {
        let mut problems = Vec::new();
        let mut keep = Vec::new();
        let mut slot = None;
        for t in hp.targets() {
            if let PciTarget::Slot(s) = t {
                slot = Some(s);
            }
            for f in t.resolve(&vm.present) {
                let Some(d) = ctx.device(&f) else {
                    continue;
                };
                match host_need(ctx, &d, matches!(t, PciTarget::Slot(_))) {
                    Some(why) => problems.push(format!("{} ({why})", d.bdf.short())),
                    None => keep.push(d.bdf.to_string()),
                }
            }
        }
        let name = format!("hostpci{}", hp.index);
        let c = if problems.is_empty() {
            Check::pass(
                "host-functions",
                format!(
                    "{name}: {}",
                    if keep.is_empty() {
                        "nothing present".into()
                    } else {
                        keep.join(", ")
                    }
                ),
            )
        } else {
            let detail = match slot {
                Some(s) => format!(
                    "{name}: the whole slot {s} sweeps in {}",
                    problems.join("; ")
                ),
                None => format!("{name} takes {}", problems.join("; ")),
            };
            let fix = if slot.is_some() && !keep.is_empty() {
                // The entry's options (x-vga, romfile, …) belong on its first function.
                let opts: String = hp
                    .options
                    .iter()
                    .map(|(k, v)| format!(",{k}={v}"))
                    .collect();
                let lines: Vec<String> = keep
                    .iter()
                    .enumerate()
                    .map(|(i, b)| {
                        let o = if i == 0 { opts.as_str() } else { "" };
                        format!("--hostpci{} {b}{o}", usize::from(hp.index) + i)
                    })
                    .collect();
                format!("name the functions one by one (qm set {vmid} {}; renumber as needed) and keep the USB controllers on the host; pass the keyboard itself as usbN: host=VENDOR:PRODUCT", lines.join(" "))
            } else {
                format!("remove those functions from {name} (qm set {vmid} --{name} …); pass a USB keyboard as usbN: host=VENDOR:PRODUCT, as the seed does (usb0: host=062a:4101)")
            };
            Check::fail("host-functions", detail, fix)
        };
        out.push(c.about(name));
    }
    out
}
