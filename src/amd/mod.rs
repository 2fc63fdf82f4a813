//! AMD-specific parts: the register database, IP discovery, VBIOS images.

pub mod bases;
pub mod discovery;
pub mod family;
pub mod regio;
pub mod regs;
pub mod smu;
pub mod smu_action;
pub mod vbios;
