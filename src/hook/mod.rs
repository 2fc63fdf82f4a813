//! Proxmox hookscript backend.

pub mod policy;
pub mod pveconf;
pub mod state;
