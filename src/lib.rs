//! resetlab: reset PCI devices from Linux userspace.
//!
//! Layers, top to bottom (data flows down, never back up):
//! (the binary's `cli`) → `hook`, `bench`, `experiment` → `reset` → `amd` → `pci` → `machine`
//! (every root the program touches); `sim` is the twin. docs/architecture.md draws it
//! whole. The command line (clap, the progress bar, rendering) lives in the binary, src/main.rs.

pub mod amd;
pub mod bench;
pub mod bounded_read;
pub mod cleanup;
pub mod doctor;
pub mod error;
pub mod experiment;
pub mod hook;
pub mod inventory;
pub mod machine;
pub mod pci;
pub mod pve;
pub mod qmp;
pub mod report;
pub mod reset;
pub mod sim;
pub mod snapshot;
pub mod sys;
pub mod text;

pub use error::{Error, Result};
/// The journal is the PCI layer's (`pci::journal`); `crate::journal` keeps naming it.
pub use pci::journal;

/// A JSON Schema for a type serialized as a string (its `Display` form).
#[macro_export]
macro_rules! string_schema {
    ($t:ty, $desc:expr) => {
        impl schemars::JsonSchema for $t {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($t).into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({"type": "string", "description": $desc})
            }
        }
    };
}
