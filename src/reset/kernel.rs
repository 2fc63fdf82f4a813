//! `kernel`, `kernel:<method>`: the kernel's own reset through sysfs
//! (`reset_store` → `pci_reset_function`, `reset_method_store` in
//! drivers/pci/pci-sysfs.c and pci.c). The kernel saves and restores state
//! itself; errors come back as errno and are explained in words here.

use super::{Analysis, Managed, MethodDef, Outcome, ResetCtx, Verdict};
use crate::error::{Error, Result};
use crate::pci::sysfs::read_attr;

pub const DEF: MethodDef = MethodDef {
    name: "kernel",
    summary: "the kernel's own reset (sysfs 'reset'), optionally one method via 'reset_method'",
    managed: Managed::Kernel,
    probe,
    reset,
};

/// Names in `pci_reset_fn_methods[]` (drivers/pci/pci.c).
pub const KERNEL_METHODS: &[&str] = &[
    "device_specific",
    "acpi",
    "flr",
    "af_flr",
    "pm",
    "bus",
    "cxl_bus",
];

pub fn probe(a: &Analysis) -> Verdict {
    let methods = a.dev.reset_method.clone().unwrap_or_default();
    if !a.dev.has_reset {
        return Verdict::no(
            "no_reset_attr",
            "no 'reset' attribute: the kernel found no reset method at enumeration",
        );
    }
    if let Some(m) = a.arg {
        if !methods.iter().any(|x| x == m) {
            return Verdict::no(
                "kernel_method_not_listed",
                format!(
                    "the kernel does not list '{m}' for this device (reset_method: {})",
                    if methods.is_empty() {
                        "none".to_string()
                    } else {
                        methods.join(" ")
                    }
                ),
            );
        }
    }
    let wanted = a
        .arg
        .map(|m| vec![m.to_string()])
        .unwrap_or(methods.clone());
    if wanted.iter().all(|m| m == "bus") && !a.dev.bus_peers.is_empty() {
        let why = "the kernel lists only 'bus', which fails with ENOTTY: it cannot reset one \
                   function while its siblings are present";
        // Forced, the kernel is asked anyway and its errno comes back explained.
        return if a.force {
            Verdict::yes(
                "forced_kernel_bus_siblings",
                format!("forced although {why}"),
            )
        } else {
            Verdict::no("kernel_bus_siblings", why)
        };
    }
    Verdict::yes(
        "kernel_offers",
        format!("the kernel offers: {}", wanted.join(" ")),
    )
}

/// Explains an errno from writing `reset` or `reset_method`.
pub fn explain(ctx: &ResetCtx, attr: &str, errno: i32) -> String {
    match (attr, errno) {
        ("reset", libc::ENOTTY) if !ctx.dev.bus_peers.is_empty() => {
            "the kernel's bus method cannot reset one function while its siblings are present \
             (pci_parent_bus_reset), and no other method it has applies"
                .to_string()
        }
        // __pci_reset_function_locked: every method said -ENOTTY, or the one that ran
        // timed out waiting for the device (pci_dev_wait, or the link of a bus reset).
        ("reset", libc::ENOTTY) => {
            "none of the kernel's reset methods applies to the device now, or the device did \
             not come back after one (the kernel logs which: dmesg)"
                .to_string()
        }
        ("reset", libc::EINVAL) => "the kernel accepts only '1' in 'reset'".to_string(),
        ("reset_method", libc::EINVAL)
            if ctx.arg == Some("bus") && !ctx.dev.bus_peers.is_empty() =>
        {
            "the kernel re-probes 'bus' when it is written (reset_method_store), and \
             pci_parent_bus_reset refuses a bus on which the function has siblings"
                .to_string()
        }
        ("reset_method", libc::EINVAL) => {
            "the kernel re-probes the method when it is written and rejects one that no longer \
             applies (reset_method_store)"
                .to_string()
        }
        ("reset_method", libc::ENOTTY) => {
            "the kernel has no reset method for the device".to_string()
        }
        (_, libc::EPERM) | (_, libc::EACCES) => "writing needs root (CAP_SYS_ADMIN)".to_string(),
        (_, libc::ENOENT) => format!("the '{attr}' attribute is gone (device removed?)"),
        _ => format!("the kernel refused the write to '{attr}'"),
    }
}

fn kernel_err(ctx: &ResetCtx, attr: &str, e: Error) -> Error {
    match e.errno() {
        Some(errno) => Error::Kernel {
            path: ctx.dev.dir.join(attr),
            errno,
            explanation: explain(ctx, attr, errno),
        },
        None => e,
    }
}

pub fn reset(ctx: &mut ResetCtx) -> Result<Outcome> {
    let bdf = ctx.bdf();
    let reset_attr = ctx.dev.dir.join("reset");
    if std::fs::symlink_metadata(&reset_attr).is_err() {
        return Err(Error::failed(format!(
            "{bdf}: no 'reset' attribute: the kernel found no reset method at enumeration"
        )));
    }
    let rm_path = ctx.dev.dir.join("reset_method");
    let previous = read_attr(&rm_path)?;
    if let Some(m) = ctx.arg {
        if let Err(e) = ctx.journal.sysfs_write(Some(&bdf), &rm_path, m) {
            return Err(kernel_err(ctx, "reset_method", e));
        }
    }
    let result = ctx.journal.sysfs_write(Some(&bdf), &reset_attr, "1");
    // Put the method list back whatever happened (the kernel keeps what we wrote).
    if ctx.arg.is_some() {
        if let Some(prev) = previous.as_deref().filter(|p| !p.is_empty()) {
            ctx.journal
                .sysfs_write(Some(&bdf), &rm_path, prev)
                .map_err(|e| kernel_err(ctx, "reset_method", e))?;
        }
    }
    result.map_err(|e| kernel_err(ctx, "reset", e))?;
    Ok(Outcome::did(match ctx.arg {
        Some(m) => format!("the kernel reset the device with '{m}'"),
        None => format!(
            "the kernel reset the device (reset_method: {})",
            previous.unwrap_or_default()
        ),
    }))
}
