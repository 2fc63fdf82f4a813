//! One error type for the library, with structured fields.
//!
//! Messages never repeat their `source`; the CLI prints the whole chain on one
//! line (`a: b: c`). [`Error::exit_code`] maps every variant onto the exit-code
//! table documented in `docs/cli.md`.

use std::io;
use std::path::{Path, PathBuf};

use crate::pci::Bdf;

/// Exit codes of the `resetlab` binary (documented in `docs/cli.md`).
pub mod exit {
    /// Everything asked for was done.
    pub const OK: i32 = 0;
    /// The operation ran and did not succeed (reset chain exhausted, health check failed).
    pub const FAILED: i32 = 1;
    /// Bad input: a malformed argument or file, a device that does not exist.
    pub const USAGE: i32 = 2;
    /// A safety guard refused: not root, the device is in use, a lock is held.
    pub const REFUSED: i32 = 3;
    /// A bounded wait ran out.
    pub const TIMEOUT: i32 = 4;
    /// The system said no: an I/O error, a permission, a kernel errno.
    pub const SYSTEM: i32 = 5;
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O operation on a path failed.
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Text that does not parse as what it should be.
    #[error("invalid {what} '{input}': {reason}")]
    Parse {
        what: &'static str,
        input: String,
        reason: String,
    },
    /// A file that does not parse, with the place of the fault.
    #[error("{path}:{line}:{column}: {reason}")]
    FileParse {
        path: PathBuf,
        line: usize,
        column: usize,
        reason: String,
    },
    /// A named thing that is not there.
    #[error("no {what} '{name}'")]
    NotFound { what: &'static str, name: String },
    /// A selector that had to match exactly one device matched several.
    #[error("selector '{selector}' matches {} devices ({}); name one", matches.len(), matches.join(", "))]
    Ambiguous {
        selector: String,
        matches: Vec<String>,
    },
    /// Config space could not be read in full (non-root reads stop at 64 bytes).
    #[error("{path}: config space truncated: read {got} of {wanted} bytes (reading past 64 bytes needs root)")]
    ConfigTruncated {
        path: PathBuf,
        got: usize,
        wanted: usize,
    },
    /// Config space reads back all-ones: the device is gone, powered off or not responding.
    #[error("{}: config space reads all-ones at {offset:#05x} (device absent, in D3cold or not responding)", all_ones_subject(.bdf, .path))]
    AllOnes {
        /// The device, when the reader knows it.
        bdf: Option<Bdf>,
        /// What was read: the sysfs `config` file, or an in-memory space's label.
        path: PathBuf,
        offset: u16,
    },
    /// An access outside the bounds of a region.
    #[error("{what}: access at {offset:#x} width {width} is outside the {len:#x}-byte region")]
    OutOfBounds {
        what: String,
        offset: u64,
        width: usize,
        len: u64,
    },
    /// An access whose offset is not a multiple of its width (the device takes
    /// naturally aligned accesses only).
    #[error("{what}: access at {offset:#x} width {width} is not {width}-byte aligned")]
    Misaligned {
        what: String,
        offset: u64,
        width: usize,
    },
    /// A safety guard refused the operation.
    #[error("refused: {reason}")]
    Refused { reason: String },
    /// A bounded wait ran out; the bound is part of the message.
    #[error("timed out after {bound_ms} ms waiting for {what}")]
    Timeout { what: String, bound_ms: u64 },
    /// The operation ran and did not achieve what it should.
    #[error("{what}")]
    Failed { what: String },
    /// A binary structure (ACPI table, option ROM) with a bad field; `offset` is the field's byte
    /// offset in the bytes that were parsed.
    #[error("{what}: {field} at {offset:#x}: {reason}")]
    Layout {
        what: String,
        field: &'static str,
        offset: u64,
        reason: String,
    },
    /// The kernel refused a sysfs write; the errno explained in words.
    #[error("{path}: {}: {explanation}", std::io::Error::from_raw_os_error(*errno))]
    Kernel {
        path: PathBuf,
        errno: i32,
        explanation: String,
    },
    /// Talking to a QEMU monitor (QMP) failed; the kind says how.
    #[error("QMP {}", socket.display())]
    Qmp {
        socket: PathBuf,
        #[source]
        source: crate::qmp::QmpError,
    },
    /// The SMU answered a message with a code other than OK (or its BAR reads
    /// all-ones); `name` and `meaning` come from the regs/ response table.
    #[error(
        "SMU message {message} ({id:#x}, argument {arg:#x}): response {code:#x} {name}: {meaning}"
    )]
    Smu {
        message: String,
        id: u32,
        arg: u32,
        code: u32,
        name: String,
        meaning: String,
    },
}

/// Who an [`Error::AllOnes`] is about: the device when known, else what was read.
fn all_ones_subject(bdf: &Option<Bdf>, path: &Path) -> String {
    match bdf {
        Some(b) => b.to_string(),
        None => path.display().to_string(),
    }
}

impl Error {
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub fn parse(what: &'static str, input: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Parse {
            what,
            input: input.into(),
            reason: reason.into(),
        }
    }

    pub fn not_found(what: &'static str, name: impl Into<String>) -> Self {
        Error::NotFound {
            what,
            name: name.into(),
        }
    }

    pub fn refused(reason: impl Into<String>) -> Self {
        Error::Refused {
            reason: reason.into(),
        }
    }

    pub fn failed(what: impl Into<String>) -> Self {
        Error::Failed { what: what.into() }
    }

    /// The errno behind an I/O error, if any.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }

    /// A stable name of the error's kind (`--json` errors carry it as `kind`).
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Io { .. } => "io",
            Error::Parse { .. } => "parse",
            Error::FileParse { .. } => "file_parse",
            Error::NotFound { .. } => "not_found",
            Error::Ambiguous { .. } => "ambiguous",
            Error::ConfigTruncated { .. } => "config_truncated",
            Error::AllOnes { .. } => "all_ones",
            Error::OutOfBounds { .. } => "out_of_bounds",
            Error::Misaligned { .. } => "misaligned",
            Error::Refused { .. } => "refused",
            Error::Timeout { .. } => "timeout",
            Error::Failed { .. } => "failed",
            Error::Layout { .. } => "layout",
            Error::Kernel { .. } => "kernel",
            Error::Smu { .. } => "smu",
            Error::Qmp { .. } => "qmp",
        }
    }

    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Parse { .. }
            | Error::FileParse { .. }
            | Error::NotFound { .. }
            | Error::Ambiguous { .. }
            | Error::Layout { .. } => exit::USAGE,
            Error::Refused { .. } => exit::REFUSED,
            Error::Timeout { .. } => exit::TIMEOUT,
            Error::Failed { .. } | Error::Smu { .. } => exit::FAILED,
            Error::Qmp { source, .. } => source.exit_code(),
            Error::Io { .. }
            | Error::ConfigTruncated { .. }
            | Error::AllOnes { .. }
            | Error::OutOfBounds { .. }
            | Error::Misaligned { .. }
            | Error::Kernel { .. } => exit::SYSTEM,
        }
    }

    /// The whole chain on one line: `message: source: source...`.
    pub fn one_line(&self) -> String {
        let mut s = self.to_string();
        let mut cur: Option<&dyn std::error::Error> = std::error::Error::source(self);
        while let Some(e) = cur {
            s.push_str(": ");
            s.push_str(&e.to_string());
            cur = e.source();
        }
        s.replace('\n', " ")
    }
}
