//! The one bounded reader: every file resetlab reads whose size or kind it
//! does not control (a sysfs attribute, an unpacked snapshot's member, a file a
//! user names) is read through here. It opens with `O_NONBLOCK`, checks with
//! `fstat` that it is a regular file before reading (a FIFO or a device where
//! a file is expected is refused, never waited on or read forever), and reads
//! at most a limit, refusing a file that is larger.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::error::{Error, Result};

/// A text attribute (`vendor`, `resource`, `reset_method`, …): 64 KiB.
pub const ATTR_MAX: u64 = 64 * 1024;
/// `config`: PCI_CFG_SPACE_EXP_SIZE.
pub const CONFIG_MAX: u64 = 4096;
/// A text file a user names (an experiment, a policy, a trace): 16 MiB.
pub const TEXT_FILE_MAX: u64 = 16 << 20;
/// A trace (`--trace` JSON lines) read back by `run diff`: 256 MiB.
pub const TRACE_MAX: u64 = 256 << 20;
/// A binary file a user names (a ROM image, an IP discovery blob): 64 MiB.
pub const BLOB_MAX: u64 = 64 << 20;

/// Opens `path` for reading without blocking on a FIFO or device, and refuses
/// anything but a regular file (`Ok(None)` when it does not exist).
pub fn open_regular(path: &Path) -> Result<Option<File>> {
    let f = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("open", path, e)),
    };
    let meta = f.metadata().map_err(|e| Error::io("stat", path, e))?;
    let ft = meta.file_type();
    if !ft.is_file() {
        use std::os::unix::fs::FileTypeExt;
        let kind = if ft.is_fifo() {
            "a FIFO"
        } else if ft.is_char_device() {
            "a character device"
        } else if ft.is_block_device() {
            "a block device"
        } else if ft.is_socket() {
            "a socket"
        } else if ft.is_dir() {
            "a directory"
        } else {
            "not a regular file"
        };
        return Err(Error::parse(
            "file",
            path.display().to_string(),
            format!("{kind} where a regular file is expected; not reading it"),
        ));
    }
    Ok(Some(f))
}

/// Reads all of an open regular file, refusing more than `max` bytes.
pub fn read_open(f: File, path: &Path, max: u64) -> Result<Vec<u8>> {
    let mut v = Vec::new();
    f.take(max + 1)
        .read_to_end(&mut v)
        .map_err(|e| Error::io("read", path, e))?;
    if v.len() as u64 > max {
        return Err(Error::parse(
            "file",
            path.display().to_string(),
            format!("larger than the {max}-byte limit for this kind of file"),
        ));
    }
    Ok(v)
}

/// Reads a regular file of at most `max` bytes; `Ok(None)` when absent.
pub fn read_opt(path: &Path, max: u64) -> Result<Option<Vec<u8>>> {
    match open_regular(path)? {
        Some(f) => read_open(f, path, max).map(Some),
        None => Ok(None),
    }
}

/// Reads a regular file of at most `max` bytes (absent is an error).
pub fn read_limited(path: &Path, max: u64) -> Result<Vec<u8>> {
    read_opt(path, max)?
        .ok_or_else(|| Error::io("open", path, io::Error::from(io::ErrorKind::NotFound)))
}

/// Reads a UTF-8 text file of at most `max` bytes; other bytes are bad input.
pub fn read_text(path: &Path, max: u64) -> Result<String> {
    to_text(path, read_limited(path, max)?)
}

/// Like [`read_text`]; `Ok(None)` when absent.
pub fn read_text_opt(path: &Path, max: u64) -> Result<Option<String>> {
    read_opt(path, max)?.map(|b| to_text(path, b)).transpose()
}

fn to_text(path: &Path, b: Vec<u8>) -> Result<String> {
    String::from_utf8(b).map_err(|e| {
        Error::parse(
            "file",
            path.display().to_string(),
            format!(
                "not UTF-8 text (invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("vendor");
        nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let e = read_limited(&p, ATTR_MAX).unwrap_err();
        assert_eq!(e.exit_code(), crate::error::exit::USAGE);
        assert!(e.to_string().contains("FIFO"), "{e}");
    }

    #[test]
    fn a_device_is_refused_and_size_is_bounded() {
        let e = read_limited(Path::new("/dev/zero"), ATTR_MAX).unwrap_err();
        assert!(e.to_string().contains("character device"), "{e}");
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("big");
        std::fs::write(&p, vec![b'a'; 5000]).unwrap();
        let e = read_limited(&p, CONFIG_MAX).unwrap_err();
        assert!(matches!(e, Error::Parse { .. }), "{e:?}");
        assert!(e.to_string().contains("4096"), "{e}");
        assert_eq!(read_limited(&p, 5000).unwrap().len(), 5000);
        assert!(read_opt(&d.path().join("none"), 1).unwrap().is_none());
    }

    #[test]
    fn non_utf8_is_bad_input() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("t");
        std::fs::write(&p, b"ok\xff").unwrap();
        let e = read_text(&p, 100).unwrap_err();
        assert_eq!(e.exit_code(), crate::error::exit::USAGE);
    }
}
