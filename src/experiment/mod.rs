//! The register-level experiment language and its runner.

pub mod parse;
