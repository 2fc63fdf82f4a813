//! Proxmox hookscript backend.

pub mod bounded;
pub mod chain;
pub mod cluster;
pub mod install;
pub mod log;
pub mod policy;
pub mod run;
pub mod state;
pub mod status;
