//! The vendor-neutral PCI layer: addresses, the sysfs tree, config space,
//! capabilities, resources, names, and who holds a device.

pub mod addr;
pub mod bounded_read;
pub mod caps;
pub mod config;
pub mod filter;
pub mod holders;
pub mod mmio;
pub mod names;
pub mod regs;
pub mod resource;
pub mod sysfs;

pub use addr::{Bdf, Slot};
pub use filter::{IdSelector, SlotSelector};
pub use sysfs::{Device, Host, Topology};
