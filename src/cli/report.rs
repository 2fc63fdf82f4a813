//! `resetlab report [--out FILE] [--smu-test]`: one .tar.gz for a bug report
//! (`crate::report`; docs/first-contact.md).

use std::path::PathBuf;
use std::time::Duration;

use super::{print_json, Ctx};
use crate::error::{exit, Result};

#[derive(clap::Args, Debug)]
pub struct ReportArgs {
    /// The archive to write (an existing one is kept unless --force).
    #[arg(long, value_name = "FILE", default_value = "resetlab-report.tar.gz")]
    pub out: PathBuf,
    /// Replace FILE if it exists.
    #[arg(long)]
    pub force: bool,
    /// Also send TestMessage and GetPmfwVersion to each GPU's SMU (the only messages a report sends).
    #[arg(long)]
    pub smu_test: bool,
    /// Bound of waiting for another resetlab holding a device's lock, in ms.
    #[arg(long, value_name = "MS", default_value_t = 30_000, value_parser = crate::cli::ms)]
    pub lock_timeout: u64,
}

pub fn run(ctx: &Ctx, args: &ReportArgs) -> Result<i32> {
    // The machine's /proc, /etc and /dev/kmsg: a twin's or snapshot's beside sys/.
    let opts = crate::report::ReportOptions {
        out: args.out.clone(),
        smu_test: args.smu_test,
        lock_timeout: Duration::from_millis(args.lock_timeout),
        force: args.force,
    };
    let r = crate::report::write(&ctx.host, ctx.regs()?, &opts)?;
    if ctx.json {
        print_json(&r)?;
        return Ok(exit::OK);
    }
    println!("wrote {}:", r.out);
    for m in &r.members {
        println!("  {:<40} {:>9} bytes", m.name, m.bytes);
    }
    for g in &r.gpus {
        println!(
            "{}: bases from {}{}",
            g.device,
            g.bases,
            g.skipped
                .as_deref()
                .map(|s| format!("; {s}"))
                .unwrap_or_default()
        );
    }
    for n in &r.notes {
        println!("note: {n}");
    }
    println!(
        "{} SMU message(s) sent, nothing reset; {} write(s), all in journal.jsonl. Read summary.md first.",
        r.messages_sent, r.writes
    );
    Ok(exit::OK)
}
