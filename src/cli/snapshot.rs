//! `resetlab snapshot FILE`.

use std::path::PathBuf;

use super::{print_json, Ctx};
use crate::error::Result;

#[derive(clap::Args, Debug)]
pub struct SnapshotArgs {
    /// Output file (a tar archive; gzip-compressed when it ends in .gz).
    pub file: PathBuf,
    /// Replace FILE when it exists (without it, snapshot refuses and writes nothing).
    #[arg(long)]
    pub force: bool,
}

pub fn run(ctx: &Ctx, args: &SnapshotArgs) -> Result<i32> {
    if args.file.exists() && !args.force {
        return Err(crate::error::Error::refused(format!(
            "{} exists; not overwriting it (--force replaces it)",
            args.file.display()
        )));
    }
    let s = crate::snapshot::capture(&ctx.host.sysfs, &args.file)?;
    if ctx.json {
        print_json(&s)?;
    } else {
        println!(
            "{}: {} devices, {} files, {} links",
            args.file.display(),
            s.devices,
            s.files,
            s.links
        );
        for c in &s.skipped_config {
            println!("  not read (device in D3cold): {c}");
        }
        if !s.unreadable.is_empty() {
            println!(
                "  {} attribute(s) could not be read (kept empty), e.g. {}",
                s.unreadable.len(),
                s.unreadable[0]
            );
        }
        println!("replay with: resetlab --sysfs {} list", args.file.display());
    }
    Ok(0)
}
