//! The vendor-neutral PCI layer: addresses, the sysfs tree, config space,
//! capabilities, resources, names, and who holds a device; and the floor every
//! device access stands on: the per-device lock, power control for the access,
//! and the one bounded wait.

pub mod addr;
pub mod caps;
pub mod config;
pub mod filter;
pub mod holders;
pub mod journal;
pub mod lock;
pub mod mmio;
pub mod names;
pub mod power;
pub mod regs;
pub mod resource;
pub mod session;
pub mod sysfs;
pub mod wait;

pub use addr::{Bdf, Slot};
pub use filter::{IdSelector, SlotSelector};
pub use sysfs::{Device, Topology};
