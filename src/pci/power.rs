//! Power control for the duration of an access: a runtime-suspended device reads all-ones
//! through MMIO and a PM reset starts from D0, so whoever touches a device pins it awake
//! (`power/control=on`) first and puts the old value back after.

use std::time::Duration;

use crate::error::Result;
use crate::machine::Machine;
use crate::pci::journal::Journal;
use crate::pci::sysfs::read_attr;
use crate::pci::wait;
use crate::pci::{Bdf, Device};

/// Wakes a runtime-suspended device and keeps it awake for the duration
/// (`power/control=on`); returns what to put back (`None`: nothing to
/// restore). MMIO of a suspended device reads all-ones, and a PM reset starts
/// from D0. A device that is awake now is pinned too: with `auto`, runtime PM
/// may suspend an idle vfio-pci device at any moment, also between the scan
/// and the method (`resetlab bench` in the guest caught `pm` finding PMCSR in
/// D3 after the scan had seen D0).
pub fn wake(dev: &Device, journal: &mut Journal, bound: Duration) -> Result<Option<String>> {
    let suspended = dev.runtime_status.as_deref() == Some("suspended")
        || matches!(dev.power_state.as_deref(), Some("D3hot") | Some("D3cold"));
    let control = dev.dir.join("power/control");
    let prev = read_attr(&control)?;
    match prev.as_deref() {
        None => return Ok(None),
        Some("on") if !suspended => return Ok(None),
        _ => {}
    }
    let bdf = dev.bdf;
    journal.sysfs_write(Some(&bdf), &control, "on")?;
    if !journal.dry_run {
        let ps = dev.dir.join("power_state");
        wait::poll(
            &format!("{bdf} to wake to D0"),
            bound,
            Duration::from_millis(10),
            || Ok((read_attr(&ps)?.as_deref().unwrap_or("D0") == "D0").then_some(())),
        )?;
    }
    Ok(prev.filter(|p| p != "on"))
}

/// Puts `power/control` back after [`wake`].
pub fn unwake(
    host: &Machine,
    journal: &mut Journal,
    bdf: &Bdf,
    prev: Option<String>,
) -> Result<()> {
    if let Some(prev) = prev {
        let control = host.device_dir(bdf).join("power/control");
        journal.sysfs_write(Some(bdf), &control, &prev)?;
    }
    Ok(())
}
