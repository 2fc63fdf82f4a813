//! Vendor health checks for AMD GPUs from the regs/ database (register reads
//! through the register BAR, SMN reads, SMU messages).

use crate::reset::health::HealthItem;
use crate::reset::ResetCtx;

/// `None` when the device is not an ASIC in the register database.
pub fn check(ctx: &mut ResetCtx) -> Option<Vec<HealthItem>> {
    let _asic = ctx.regs.by_pci_id(ctx.dev.vendor, ctx.dev.device)?;
    None
}
