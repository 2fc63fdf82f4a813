//! The VM's hookscript: set, present, executable, resetlab's shim; the shim's binary, the
//! hook policy and the record of the previous run.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::hook::chain::HookRecord;
use crate::hook::install::{shim_kind, ShimKind};
use crate::pve::StorageConfig;

use super::{Check, DoctorCtx};

/// A hookscript's file: as the host names it, and under `root`; or why it does not resolve.
type HookscriptFile = Result<(PathBuf, PathBuf), String>;

/// The VM's hookscript and the file behind it (`None` without `--vmid` or a hookscript).
fn hookscript_target(ctx: &DoctorCtx) -> Option<(String, HookscriptFile)> {
    let vm = ctx.vm_ok()?;
    let volid = vm.cfg.hookscript.clone()?;
    let path = StorageConfig::load(&ctx.opts.pve_root())
        .and_then(|s| s.snippet_path(&volid))
        .map(|abs| {
            let p = ctx.opts.under_root(&abs);
            (abs, p)
        })
        .map_err(|e| e.one_line());
    Some((volid, path))
}

/// What the VM's hookscript is, when its file reads.
fn hookscript_kind(ctx: &DoctorCtx) -> Option<ShimKind> {
    let (_, path) = hookscript_target(ctx)?;
    let text = fs::read_to_string(path.ok()?.1).ok()?;
    Some(shim_kind(&text))
}

fn resetlab_shim(ctx: &DoctorCtx) -> bool {
    matches!(
        hookscript_kind(ctx),
        Some(ShimKind::Current | ShimKind::Older | ShimKind::Modified)
    )
}

pub(super) fn check_hookscript(ctx: &DoctorCtx) -> Vec<Check> {
    let Some(vm) = ctx.vm_ok() else {
        return Vec::new();
    };
    let vmid = vm.cfg.vmid;
    let set_fix = format!("resetlab hook install {vmid} (docs/install.md)");
    let c = match hookscript_target(ctx) {
        None => Check::warn(
            "hookscript",
            "no hookscript: nothing resets the iGPU between VM runs (the AMD reset bug)",
            set_fix,
        ),
        Some((volid, Err(e))) => Check::fail(
            "hookscript",
            format!("hookscript: {volid}: {e}"),
            set_fix,
        ),
        Some((volid, Ok((abs, path)))) => match hookscript_file(&volid, &abs, &path) {
            Some(bad) => bad,
            None => match hookscript_kind(ctx) {
                Some(ShimKind::Current) => Check::pass(
                    "hookscript",
                    format!("{volid} → {}: this resetlab's shim, executable", abs.display()),
                ),
                Some(ShimKind::Older) => Check::warn(
                    "hookscript",
                    format!("{volid} → {}: an older resetlab's shim", abs.display()),
                    format!("update it: resetlab hook install {vmid}"),
                ),
                Some(ShimKind::Modified) => Check::warn(
                    "hookscript",
                    format!("{volid} → {}: resetlab's shim, edited by hand", abs.display()),
                    format!("compare it with /usr/share/resetlab/pve-hookscript.sh; resetlab hook install {vmid} --force puts the shipped one back"),
                ),
                Some(ShimKind::Foreign) | None => Check::warn(
                    "hookscript",
                    format!("{volid} → {} is not resetlab's hookscript: resetlab does not run for VM {vmid}", abs.display()),
                    format!("resetlab hook install {vmid} (keeps {volid} for resetlab hook uninstall {vmid}; --chain also runs it after resetlab's phase)"),
                ),
            },
        },
    };
    vec![c]
}

/// A problem with the hookscript file itself, or `None` when it is an executable file.
fn hookscript_file(volid: &str, abs: &Path, path: &Path) -> Option<Check> {
    use std::os::unix::fs::PermissionsExt;
    match fs::metadata(path) {
        Err(_) => Some(Check::fail(
            "hookscript",
            format!("hookscript {volid}: {} does not exist (qm start fails: \"script '{volid}' does not exist\")", abs.display()),
            format!("put the script at {} and chmod +x it", abs.display()),
        )),
        Ok(m) if !m.is_file() => Some(Check::fail(
            "hookscript",
            format!("hookscript {volid}: {} is not a file", abs.display()),
            format!("put the script at {}", abs.display()),
        )),
        Ok(m) if m.permissions().mode() & 0o111 == 0 => Some(Check::fail(
            "hookscript",
            format!("hookscript {volid}: {} is not executable (qm start fails: \"script '{volid}' is not executable\")", abs.display()),
            format!("chmod +x {}", abs.display()),
        )),
        Ok(_) => None,
    }
}

/// Where the shim looks for resetlab, in its order (tools/pve-hookscript.sh), and whether the
/// directory is in the PATH Proxmox gives hookscripts (pve-guest-common `exec_hookscript`).
const SHIM_CANDIDATES: &[(&str, bool)] = &[
    ("/usr/sbin/resetlab", true),
    ("/usr/local/sbin/resetlab", false),
    ("/usr/local/bin/resetlab", false),
];

pub(super) fn check_hook_binary(ctx: &DoctorCtx) -> Vec<Check> {
    use std::os::unix::fs::PermissionsExt;
    if !resetlab_shim(ctx) {
        return Vec::new();
    }
    let found = SHIM_CANDIDATES.iter().find(|(p, _)| {
        fs::metadata(ctx.opts.under_root(p))
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    });
    let c = match found {
        Some((p, true)) => Check::pass("hook-binary", format!("the shim runs {p} (on this node)")),
        Some((p, false)) => Check::warn(
            "hook-binary",
            format!("the shim runs {p}, a copy outside Proxmox's PATH (/sbin:/bin:/usr/sbin:/usr/bin) that no package upgrades"),
            "install the resetlab package (docs/install.md) and remove the copy",
        ),
        None => Check::fail(
            "hook-binary",
            format!(
                "resetlab not found at {} on this node: pre-start fails (\"resetlab not found …; install it or remove the hookscript\")",
                SHIM_CANDIDATES.iter().map(|(p, _)| *p).collect::<Vec<_>>().join(", ")
            ),
            "install the resetlab package on this node: dpkg -i resetlab_<version>_amd64.deb (docs/install.md)",
        ),
    };
    vec![c]
}

pub(super) fn check_hook_policy(ctx: &DoctorCtx) -> Vec<Check> {
    if !resetlab_shim(ctx) {
        return Vec::new();
    }
    let abs = crate::machine::Machine::policy_path_shown().display();
    let path = ctx.host.policy_path();
    let c = match fs::read_to_string(&path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            Check::pass("hook-policy", format!("no {abs}: the built-in defaults"))
        }
        Err(e) => Check::fail(
            "hook-policy",
            format!("cannot read {abs}: {e}"),
            format!("chmod 0644 {abs}"),
        ),
        Ok(text) => match crate::hook::policy::Policy::parse(&text, crate::machine::Machine::policy_path_shown()) {
            Ok(_) => Check::pass("hook-policy", format!("{abs} parses")),
            Err(e) => Check::fail(
                "hook-policy",
                e.one_line(),
                format!("fix {abs} (docs/proxmox.md lists every key); until then the hook only brings missing functions back"),
            ),
        },
    };
    vec![c]
}

pub(super) fn check_hook_chain(ctx: &DoctorCtx) -> Vec<Check> {
    use std::os::unix::fs::PermissionsExt;
    let Some(vm) = ctx.vm_ok() else {
        return Vec::new();
    };
    if !resetlab_shim(ctx) {
        return Vec::new();
    }
    let vmid = vm.cfg.vmid;
    let etc = ctx.host.resetlab_etc();
    let shown = HookRecord::path_for(crate::machine::Machine::resetlab_etc_shown(), vmid);
    let c = match HookRecord::load(&etc, vmid) {
        Err(e) => Check::fail(
            "hook-chain",
            e.one_line(),
            format!("rm {} and run resetlab hook install {vmid} again", shown.display()),
        ),
        Ok(None) => return Vec::new(),
        Ok(Some(r)) => match (&r.previous, r.chain) {
            (Some(prev), true) => {
                let file = StorageConfig::load(&ctx.opts.pve_root())
                    .and_then(|s| s.snippet_path(prev));
                match file {
                    Err(e) => Check::fail(
                        "hook-chain",
                        format!("chained hookscript {prev}: {}", e.one_line()),
                        format!("resetlab hook install {vmid} --no-chain, or fix storage.cfg"),
                    ),
                    Ok(abs) => match fs::metadata(ctx.opts.under_root(&abs)) {
                        Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Check::pass(
                            "hook-chain",
                            format!("after resetlab's phase the shim runs {prev} ({}), bound {} s", abs.display(), r.chain_timeout_s),
                        ),
                        _ => Check::fail(
                            "hook-chain",
                            format!("chained hookscript {prev}: {} is missing or not executable on this node (pre-start fails)", abs.display()),
                            format!("put it back (chmod +x), or resetlab hook install {vmid} --no-chain"),
                        ),
                    },
                }
            }
            (Some(prev), false) => Check::pass(
                "hook-chain",
                format!("{prev} recorded (not run; resetlab hook uninstall {vmid} gives it back)"),
            ),
            (None, _) => Check::pass(
                "hook-chain",
                format!("no previous hookscript recorded (resetlab hook uninstall {vmid} removes the hookscript)"),
            ),
        },
    };
    vec![c]
}
