//! `resetlab list` and `resetlab probe`.

mod compact;

use super::{print_json, select, Ctx, DevArgs};
use crate::error::Result;
use crate::inventory::{self, DeviceReport};
use std::collections::BTreeMap;

use crate::pci::{Bdf, Topology};
use crate::reset::METHODS;

#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// Only devices in this slot, as lspci -s: [[[domain]:][bus]:][slot][.[func]].
    #[arg(short = 's', value_name = "SLOT")]
    pub slot: Option<String>,
    /// Only devices with these ids, as lspci -d: [vendor]:[device][:class[:prog-if]]
    /// (class is 4 hex digits, x = any: ::0300, ::03xx).
    #[arg(short = 'd', value_name = "ID")]
    pub id: Option<String>,
    /// More detail, as lspci: -v every method's verdict and reason, -vv with registers.
    #[arg(short = 'v', action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Line width of the one-line view (default: the terminal's, 80 when not a terminal).
    #[arg(long, value_name = "COLUMNS")]
    pub width: Option<usize>,
}

#[derive(clap::Args, Debug)]
pub struct ProbeArgs {
    #[command(flatten)]
    pub dev: DevArgs,
    /// Report verdicts as --force would see them (quirk refusals become warnings).
    #[arg(long)]
    pub force: bool,
}

fn header(r: &DeviceReport) -> String {
    format!(
        "{}  {} [{}]: {} [{}:{}]{}",
        r.bdf,
        r.class_name,
        &r.class[..4],
        r.name,
        r.vendor,
        r.device,
        r.revision
            .as_deref()
            .filter(|v| *v != "00")
            .map(|v| format!(" (rev {v})"))
            .unwrap_or_default()
    )
}

fn print_device(r: &DeviceReport, with_regs: bool) {
    println!("  {}", header(r));
    let kernel = if r.kernel_reset_methods.is_empty() {
        "none".to_string()
    } else {
        r.kernel_reset_methods.join(" ")
    };
    println!(
        "      driver {} · power {} · kernel reset: {}",
        r.driver.as_deref().unwrap_or("none"),
        r.power_state.as_deref().unwrap_or("?"),
        kernel
    );
    if let Some(n) = &r.kernel_note {
        println!("      note: {n}");
    }
    if let Some(f) = &r.amd_family {
        println!("      AMD GPU: {}", f.text);
    }
    for h in &r.holders {
        println!("      held by {h} (its VFIO group is open: a VM is using it)");
    }
    for m in METHODS {
        let Some(v) = r.methods.get(m.name) else {
            continue;
        };
        println!(
            "      {:<14} {:<3}  {}",
            m.name,
            if v.unknown {
                "?"
            } else if v.available {
                "yes"
            } else {
                "no"
            },
            v.reason
        );
        if !v.affects.is_empty() {
            let a: Vec<String> = v.affects.iter().map(|b| b.short()).collect();
            println!("      {:<14}      also resets: {}", "", a.join(" "));
        }
        if with_regs && !v.registers.is_empty() {
            let regs: Vec<String> = v.registers.iter().map(|r| r.to_string()).collect();
            println!("      {:<14}      registers: {}", "", regs.join(" "));
        }
    }
}

pub fn list(ctx: &Ctx, args: &ListArgs) -> Result<i32> {
    let topo = Topology::scan(&ctx.host)?;
    // A device that left the bus or could not be read is named; the rest is listed.
    for (bdf, why) in &topo.skipped {
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), "resetlab: warning: {bdf} {why}");
    }
    let keep: Vec<_> = select(&topo, args.slot.as_deref(), args.id.as_deref())?
        .iter()
        .map(|d| d.bdf)
        .collect();
    let reports: Vec<DeviceReport> = inventory::list(&ctx.host, &topo, ctx.regs()?, false)
        .into_iter()
        .filter(|r| keep.contains(&r.bdf))
        .collect();
    if ctx.json {
        print_json(&super::schema::ListOut { devices: reports })?;
        return Ok(0);
    }
    if args.verbose == 0 {
        let width = args.width.unwrap_or_else(terminal_width);
        let drivers: BTreeMap<Bdf, Option<String>> = topo
            .devices
            .values()
            .map(|d| (d.bdf, d.driver.clone()))
            .collect();
        for line in compact::lines(&reports, &drivers, width) {
            println!("{line}");
        }
        return Ok(0);
    }
    let mut group = None;
    for (i, r) in reports.iter().enumerate() {
        if i == 0 || r.iommu_group != group {
            group = r.iommu_group;
            match group {
                Some(g) => println!("IOMMU group {g}"),
                None => println!("No IOMMU group"),
            }
        }
        print_device(r, args.verbose > 1);
    }
    Ok(0)
}

/// The terminal's width when stdout is one, else 80 (as a pipe or file
/// reader expects; `--width` overrides).
fn terminal_width() -> usize {
    use std::io::IsTerminal;
    if !std::io::stdout().is_terminal() {
        return 80;
    }
    terminal_size::terminal_size_of(std::io::stdout())
        .map(|(w, _)| w.0 as usize)
        .filter(|w| *w >= 40)
        .unwrap_or(80)
}

pub fn probe(ctx: &Ctx, args: &ProbeArgs) -> Result<i32> {
    let topo = Topology::scan(&ctx.host)?;
    let dev = args.dev.resolve(&topo)?;
    let p = inventory::probe(&ctx.host, &topo, ctx.regs()?, dev, args.force);
    if ctx.json {
        print_json(&p)?;
        return Ok(0);
    }
    print_device(&p.report, true);
    match (&p.config, &p.config_error) {
        (Some(c), _) => {
            let d = &c.decoded;
            println!(
                "      config: COMMAND={:#06x} STATUS={:#06x} header type {}{}{}",
                d.command,
                d.status,
                d.header_type,
                if d.multifunction {
                    " (multi-function)"
                } else {
                    ""
                },
                c.pcie_type
                    .map(|t| format!(", PCIe {t}"))
                    .unwrap_or_default()
            );
            let caps: Vec<String> = c
                .capabilities
                .iter()
                .map(|c| format!("{}@{:#05x}", c.name, c.offset))
                .collect();
            let ext: Vec<String> = c
                .extended_capabilities
                .iter()
                .map(|c| format!("{}@{:#05x}", c.name, c.offset))
                .collect();
            println!("      capabilities: {}", caps.join(" "));
            if !ext.is_empty() {
                println!("      extended: {}", ext.join(" "));
            }
            for f in &c.chain_faults {
                println!("      warning: {f}");
            }
        }
        (None, Some(e)) => println!("      config: {e}"),
        _ => {}
    }
    for r in &p.resources {
        println!(
            "      resource{}: {:#x}-{:#x} {} ({} KiB{})",
            r.index,
            r.start,
            r.end,
            r.kind(),
            r.size() / 1024,
            if r.prefetchable() {
                ", prefetchable"
            } else {
                ""
            }
        );
    }
    Ok(0)
}
