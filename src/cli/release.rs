//! `resetlab release [DEV] --qmp SOCKET|--vmid N [--id QEMU_ID]... [--timeout-ms N] [--dry-run]
//! [--trace FILE] [--json]`: have the guest let go of a passed-through device before QEMU exits
//! (the one recipe the field report saw work, FACTS.md), by QMP `device_del` and the wait for
//! `DEVICE_DELETED`.

use std::path::PathBuf;
use std::time::Duration;

use super::{print_json, Ctx};
use crate::error::{Error, Result};
use crate::journal::Journal;
use crate::machine::Machine;
use crate::pci::Bdf;
use crate::qmp::{self, Client, Outcome, ReleaseReport};

/// Bound of connecting (greeting and `qmp_capabilities` included) and of the device lookup.
const CONNECT_BOUND: Duration = Duration::from_secs(5);

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Exit: 0 every device released (or a dry run); 1 QEMU refused (not hot-pluggable); \
2 no such device, or SOCKET is not a QEMU monitor; 3 not root; 4 the guest did not release within the \
bound (paused or hung); 5 an I/O error. See docs/cli.md."
)]
pub struct ReleaseArgs {
    /// The host function passed through (0000:c5:00.0 or c5:00.0), or a slot (c5:00) for every
    /// function of it the VM has.
    #[arg(value_name = "DEV", required_unless_present = "id")]
    pub dev: Option<String>,
    /// The VM's QMP socket (Proxmox: /var/run/qemu-server/<vmid>.qmp).
    #[arg(
        long,
        value_name = "SOCKET",
        required_unless_present = "vmid",
        conflicts_with = "vmid"
    )]
    pub qmp: Option<PathBuf>,
    /// A Proxmox VM: its socket /var/run/qemu-server/<VMID>.qmp (beneath the root for a --sysfs
    /// root other than /sys, as the hook does: <root>/../var/run/qemu-server/<VMID>.qmp).
    #[arg(long, value_name = "VMID")]
    pub vmid: Option<u32>,
    /// The QEMU device id to unplug instead of looking DEV up (hostpci0); repeatable.
    #[arg(long = "id", value_name = "QEMU_ID")]
    pub id: Vec<String>,
    /// Bound of the whole release (requests and the wait for the guest), in ms or with a
    /// unit (15s). The field report's Windows guest took ~11 s for the 780M's audio function.
    #[arg(long, value_name = "MS", default_value_t = 15_000, value_parser = crate::cli::ms)]
    pub timeout_ms: u64,
    /// Record the device_del commands (and the trace) and send none.
    #[arg(long)]
    pub dry_run: bool,
    /// Append every VM-changing command as a JSON line, fsync'd before it is sent.
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,
}

/// What DEV names: one function, or every function of a slot.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Target {
    Function(Bdf),
    Slot(Bdf),
}

impl Target {
    fn parse(s: &str) -> Result<Target> {
        if let Ok(b) = s.parse::<Bdf>() {
            return Ok(Target::Function(b));
        }
        match format!("{s}.0").parse::<Bdf>() {
            Ok(b) => Ok(Target::Slot(b)),
            Err(_) => Err(Error::parse(
                "device",
                s,
                "expected a PCI function (0000:c5:00.0, c5:00.0) or slot (c5:00)",
            )),
        }
    }

    fn matches(&self, b: &Bdf) -> bool {
        match self {
            Target::Function(f) => f == b,
            Target::Slot(s) => s.slot() == b.slot(),
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Function(b) => b.fmt(f),
            Target::Slot(b) => write!(f, "{:04x}:{:02x}:{:02x}", b.domain, b.bus, b.dev),
        }
    }
}

/// The monitor socket: `--qmp`, or the VM's Proxmox socket on `machine` (a twin's beside its
/// tree, so that a twin's VM is never confused with the machine's).
fn socket(args: &ReleaseArgs, machine: &Machine) -> Result<PathBuf> {
    if let Some(q) = &args.qmp {
        return Ok(q.clone());
    }
    let Some(vmid) = args.vmid else {
        return Err(Error::parse(
            "release",
            "",
            "name the VM's monitor: --qmp SOCKET or --vmid N",
        ));
    };
    Ok(machine.qmp_socket(vmid))
}

pub fn run(ctx: &Ctx, args: &ReleaseArgs) -> Result<i32> {
    let (machine, json) = (&ctx.host, ctx.json);
    let target = args.dev.as_deref().map(Target::parse).transpose()?;
    let socket = socket(args, machine)?;
    if !args.dry_run && !nix::unistd::geteuid().is_root() {
        return Err(Error::refused(
            "releasing a device unplugs it from a running VM: run as root (or use --dry-run)",
        ));
    }
    let mut journal = Journal::new(args.dry_run);
    journal.method = "release".into();
    if let Some(t) = &args.trace {
        journal = journal.with_trace(t)?;
    }
    let mut client = Client::connect(&socket, CONNECT_BOUND)?;
    let ids = resolve(&mut client, target, &args.id, &socket)?;
    let report = qmp::release(
        &mut client,
        &ids,
        &mut journal,
        Duration::from_millis(args.timeout_ms),
    )?;
    if json {
        print_json(&report)?;
    } else {
        print_report(&report, &journal);
    }
    Ok(report.exit_code())
}

/// The QEMU ids to unplug: `--id` as given (checked against DEV when both are), or every
/// vfio-pci device whose host function DEV names.
fn resolve(
    client: &mut Client,
    target: Option<Target>,
    ids: &[String],
    socket: &std::path::Path,
) -> Result<Vec<String>> {
    let Some(target) = target else {
        return Ok(ids.to_vec());
    };
    let devs = client.passthrough_devices(CONNECT_BOUND)?;
    if !ids.is_empty() {
        for id in ids {
            if let Some(p) = devs.iter().find(|p| &p.id == id) {
                if let Some(h) = p.host.filter(|h| !target.matches(h)) {
                    return Err(Error::parse(
                        "--id",
                        id,
                        format!("it passes {h} through, not {target}"),
                    ));
                }
            }
        }
        return Ok(ids.to_vec());
    }
    let found: Vec<String> = devs
        .into_iter()
        .filter(|p| p.host.is_some_and(|h| target.matches(&h)))
        .map(|p| p.id)
        .collect();
    if found.is_empty() {
        return Err(Error::not_found(
            "vfio-pci device passing through",
            format!("{target} in the VM behind {}", socket.display()),
        ));
    }
    Ok(found)
}

fn print_report(r: &ReleaseReport, journal: &Journal) {
    for d in &r.devices {
        let mut what = vec![];
        if let Some(h) = d.host {
            what.push(h.to_string());
        }
        if d.via != d.id {
            what.push(format!("unplugged with {}", d.via));
        }
        let what = if what.is_empty() {
            String::new()
        } else {
            format!(" ({})", what.join(", "))
        };
        println!("{}{what}: {}", d.id, d.message);
    }
    if r.dry_run {
        println!(
            "dry run: {} command(s) would be sent, none was:",
            journal.writes().count()
        );
        for w in journal.writes() {
            println!("  {w}");
        }
        return;
    }
    match r.released_ms {
        Some(ms) => println!("released in {ms:.0} ms"),
        None => {
            let (released, timed, refused) =
                r.devices
                    .iter()
                    .fold((0, 0, 0), |(a, b, c), d| match d.outcome {
                        Outcome::Released { .. } => (a + 1, b, c),
                        Outcome::TimedOut { .. } => (a, b + 1, c),
                        Outcome::Refused { .. } => (a, b, c + 1),
                        Outcome::DryRun => (a, b, c),
                    });
            let mut parts = vec![];
            if timed > 0 {
                parts.push(format!(
                    "{timed} not released within {} ms ({})",
                    r.bound_ms,
                    qmp::timeout_reason(r.vm_status.as_deref())
                ));
            }
            if refused > 0 {
                parts.push(format!("{refused} refused by QEMU"));
            }
            println!(
                "not released: {} ({released} of {} released)",
                parts.join("; "),
                r.devices.len()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn dev_is_a_function_or_a_slot() {
        let f = Target::parse("c5:00.1").unwrap();
        assert!(f.matches(&"0000:c5:00.1".parse().unwrap()));
        assert!(!f.matches(&"0000:c5:00.0".parse().unwrap()));
        let s = Target::parse("0000:c5:00").unwrap();
        assert_eq!(s.to_string(), "0000:c5:00");
        assert!(s.matches(&"0000:c5:00.6".parse().unwrap()));
        assert!(matches!(Target::parse("c5"), Err(Error::Parse { .. })));
    }

    #[test]
    fn vmid_names_the_proxmox_socket_beside_a_twin_root() {
        let args = |vmid| ReleaseArgs {
            dev: None,
            qmp: None,
            vmid,
            id: vec!["hostpci0".into()],
            timeout_ms: 1,
            dry_run: true,
            trace: None,
        };
        assert_eq!(
            socket(&args(Some(100)), &Machine::live()).unwrap(),
            Path::new("/var/run/qemu-server/100.qmp")
        );
        assert_eq!(
            socket(&args(Some(7)), &Machine::new("/tmp/twin/sys")).unwrap(),
            Path::new("/tmp/twin/var/run/qemu-server/7.qmp")
        );
        assert!(matches!(
            socket(&args(None), &Machine::live()),
            Err(Error::Parse { .. })
        ));
    }
}
