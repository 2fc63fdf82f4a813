//! Kernel restrictions on BAR access: lockdown and strict devmem.

use super::boot::GRUB_FIX;
use super::{read_opt, Check, DoctorCtx};

/// The bracketed level of `/sys/kernel/security/lockdown` (`none [integrity] confidentiality`).
pub fn parse_lockdown(text: &str) -> Option<&str> {
    let open = text.find('[')?;
    let rest = text.get(open + 1..)?;
    let close = rest.find(']')?;
    rest.get(..close).map(str::trim).filter(|s| !s.is_empty())
}

/// `CONFIG_NAME`'s value in a kernel `.config`: `Some("y")`, `Some("n")` for
/// `# CONFIG_NAME is not set`, `None` when absent.
pub fn kconfig_value(text: &str, name: &str) -> Option<String> {
    let unset = format!("# {name} is not set");
    let mut found = None;
    for l in text.lines() {
        let l = l.trim();
        if l == unset {
            found = Some("n".to_string());
        } else if let Some(v) = l.strip_prefix(name).and_then(|r| r.strip_prefix('=')) {
            found = Some(v.trim_matches('"').to_string());
        }
    }
    found
}

pub(super) fn check_lockdown(ctx: &DoctorCtx) -> Vec<Check> {
    let p = ctx.host.sysfs.join("kernel/security/lockdown");
    let c = match read_opt(&p) {
        Ok(None) => Check::pass("lockdown", format!("no {}: the kernel has no lockdown", p.display())),
        Err(e) => Check::warn("lockdown", e, "run doctor as root"),
        Ok(Some(t)) => match parse_lockdown(&t) {
            Some("none") => Check::pass("lockdown", "lockdown [none]"),
            Some(level) => Check::fail(
                "lockdown",
                format!("kernel lockdown is [{level}]: writes to sysfs config and mmap of resourceN fail with EPERM, so resetlab cannot reset the iGPU itself (SMU mode-2 needs BAR 5)"),
                "disable Secure Boot in the firmware setup (Debian and Proxmox kernels lock down under Secure Boot; lockdown= on the command line can only raise the level)",
            ),
            None => Check::warn(
                "lockdown",
                format!("cannot read the level from {}: '{}'", p.display(), t.trim()),
                "check cat /sys/kernel/security/lockdown",
            ),
        },
    };
    vec![c]
}

pub(super) fn check_strict_devmem(ctx: &DoctorCtx) -> Vec<Check> {
    let relaxed = ctx
        .cmdline
        .as_ref()
        .ok()
        .and_then(|c| c.last("iomem"))
        .is_some_and(|v| v.contains("relaxed") && !v.contains("strict"));
    let Some(rel) = &ctx.release else {
        return vec![Check::warn(
            "strict-devmem",
            "cannot read the kernel release (/proc/sys/kernel/osrelease)",
            "run doctor where /proc is mounted (or pass --root)",
        )];
    };
    let cfg_path = ctx.host.boot().join(format!("config-{rel}"));
    let c = match read_opt(&cfg_path) {
        Ok(Some(t)) => {
            let io = kconfig_value(&t, "CONFIG_IO_STRICT_DEVMEM");
            let strict = kconfig_value(&t, "CONFIG_STRICT_DEVMEM");
            match (io.as_deref(), strict.as_deref()) {
                (Some("y"), Some("y")) if relaxed => Check::pass(
                    "strict-devmem",
                    format!("CONFIG_IO_STRICT_DEVMEM=y ({rel}), lifted by iomem=relaxed"),
                ),
                (Some("y"), Some("y")) => Check::warn(
                    "strict-devmem",
                    format!("CONFIG_IO_STRICT_DEVMEM=y ({rel}) and no iomem=relaxed: mmap of a BAR a driver has claimed fails with EINVAL (vfio-pci claims it once QEMU opens the device)"),
                    format!("add iomem=relaxed: {GRUB_FIX}"),
                ),
                _ => Check::pass(
                    "strict-devmem",
                    format!("CONFIG_IO_STRICT_DEVMEM is not set in {}", cfg_path.display()),
                ),
            }
        }
        Ok(None) if relaxed => Check::pass(
            "strict-devmem",
            format!("no {}; iomem=relaxed is set anyway", cfg_path.display()),
        ),
        Ok(None) => Check::warn(
            "strict-devmem",
            format!(
                "no {}: cannot tell whether CONFIG_IO_STRICT_DEVMEM is set",
                cfg_path.display()
            ),
            format!("add iomem=relaxed to be safe: {GRUB_FIX}"),
        ),
        Err(e) => Check::warn("strict-devmem", e, "run doctor as root"),
    };
    vec![c]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lockdown_and_kconfig() {
        assert_eq!(
            parse_lockdown("[none] integrity confidentiality\n"),
            Some("none")
        );
        assert_eq!(
            parse_lockdown("none [integrity] confidentiality"),
            Some("integrity")
        );
        assert_eq!(parse_lockdown("none"), None);
        assert_eq!(parse_lockdown("[]"), None);
        let t = "CONFIG_STRICT_DEVMEM=y\n# CONFIG_IO_STRICT_DEVMEM is not set\n";
        assert_eq!(
            kconfig_value(t, "CONFIG_IO_STRICT_DEVMEM").as_deref(),
            Some("n")
        );
        assert_eq!(
            kconfig_value(t, "CONFIG_STRICT_DEVMEM").as_deref(),
            Some("y")
        );
        assert_eq!(kconfig_value(t, "CONFIG_STRICT"), None);
    }
}
