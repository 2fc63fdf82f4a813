//! resetlab: reset PCI devices from Linux userspace.
//!
//! Layers, top to bottom (data flows down, never back up):
//! `cli` → `hook`, `bench`, `experiment` → `reset` → `amd` → `pci`; `sim` is the twin.

pub mod amd;
pub mod bench;
pub mod cli;
pub mod doctor;
pub mod error;
pub mod experiment;
pub mod hook;
pub mod inventory;
pub mod journal;
pub mod pci;
pub mod qmp;
pub mod reset;
pub mod sim;
pub mod snapshot;

pub use error::{Error, Result};
