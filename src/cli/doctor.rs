//! `resetlab doctor [--vmid N] [--root DIR] [--pve-config DIR] [--node NAME]`: check a Proxmox
//! host against the field report's recipe. Read-only.

use std::io::Write;
use std::path::PathBuf;

use super::Ctx;

use crate::doctor::{self, DoctorOptions};
use crate::error::{exit, Error, Result};

#[derive(Debug, Clone, clap::Args)]
pub struct DoctorArgs {
    /// Also check this VM's passthrough setup (its hostpci functions, ROM files, hookscript, vga)
    #[arg(long, value_name = "N")]
    pub vmid: Option<u32>,
    /// Root for /proc, /etc, /boot, /lib/modules and /usr/share/kvm, a copy of a host's files
    /// (default: /, or beside the tree of --sim or a snapshot)
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Proxmox configuration directory (default: <root>/etc/pve)
    #[arg(long = "pve-config", value_name = "DIR")]
    pub pve_config: Option<PathBuf>,
    /// Proxmox node name for mapping= entries (default: the host name under <root>/proc)
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
}

/// Run `doctor` on `machine` (the live one, a twin or a snapshot). Exit code 0 when no check
/// fails, 1 (`exit::FAILED`) when one does.
pub fn run(ctx: &Ctx, args: &DoctorArgs) -> Result<i32> {
    let json = ctx.json;
    let mut machine = ctx.host.clone();
    if let Some(r) = &args.root {
        machine = machine.with_root(r);
    }
    let mut opts = DoctorOptions::on(machine);
    opts.pve_root = args.pve_config.clone();
    opts.vmid = args.vmid;
    opts.node = args.node.clone();
    let checks = doctor::doctor(opts);
    let ok = doctor::all_ok(&checks);
    if json {
        crate::cli::print_json(&crate::cli::schema::DoctorOut { checks })?;
    } else {
        let mut out = std::io::stdout().lock();
        out.write_all(doctor::render(&checks).as_bytes())
            .map_err(|e| Error::io("write", "stdout", e))?;
    }
    Ok(if ok { exit::OK } else { exit::FAILED })
}
