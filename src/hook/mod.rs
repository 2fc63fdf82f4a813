//! Proxmox hookscript backend.

pub mod pveconf;
