//! The per-device lock: `flock` on `<run>/resetlab/lock/<bdf>.lock`, so two
//! invocations (two VMs' hooks, say) never reset one device at once. A second
//! caller waits, bounded, then fails naming who holds it.
//!
//! The lock is taken by root, so nothing about it may be steered by another
//! user: the directory is root's own (`/run/resetlab/lock`, 0700; refused if it
//! exists with another owner or mode, not the world-writable `/run/lock`), the
//! file is opened with `O_NOFOLLOW` and never created with `O_TRUNC`, and it is
//! refused unless it is a regular, singly-linked file owned by us. The holder's
//! text is read bounded and printed escaped.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};

use crate::bounded_read;
use crate::error::{Error, Result};
use crate::machine::Machine;
use crate::pci::wait::poll_for;
use crate::pci::Bdf;

/// A held lock; released on drop.
pub struct DeviceLock {
    _lock: Flock<File>,
    pub path: PathBuf,
}

/// `<run>/resetlab/lock`: `/run/resetlab/lock` on the machine, beneath the
/// twin's root for a twin (the paths of the package's tmpfiles.d entry).
pub fn lock_dir(host: &Machine) -> PathBuf {
    host.lock_dir()
}

/// The most of a lock file's text that is read back (`pid N (argv)`).
const HOLDER_MAX: u64 = 4096;

fn holder(path: &Path) -> String {
    let s = bounded_read::read_limited(path, HOLDER_MAX)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let s = s.trim();
    if s.is_empty() {
        "another process".to_string()
    } else {
        crate::text::escape_control(s)
    }
}

fn euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// Creates `dir` (0700) if absent, then refuses it unless it is a real
/// directory (not a link) owned by us whose mode passes `mode_ok`.
fn own_dir(dir: &Path, mode_ok: fn(u32) -> bool, want: &str) -> Result<()> {
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::io("create directory", dir, e)),
    }
    let meta = std::fs::symlink_metadata(dir).map_err(|e| Error::io("stat", dir, e))?;
    let mode = meta.mode() & 0o7777;
    if !meta.file_type().is_dir() || meta.uid() != euid() || !mode_ok(mode) {
        let kind = if meta.file_type().is_symlink() {
            "a symbolic link".to_string()
        } else if meta.file_type().is_dir() {
            format!(
                "a directory owned by uid {} with mode {mode:04o}",
                meta.uid()
            )
        } else {
            "not a directory".to_string()
        };
        return Err(Error::refused(format!(
            "lock directory {} is {kind}; it must be {want} (remove it and retry)",
            dir.display()
        )));
    }
    Ok(())
}

/// Makes sure the lock directory is ours: `<run>/resetlab` owned by us and
/// writable by nobody else, `<run>/resetlab/lock` owned by us, mode 0700.
pub fn ensure_lock_dir(host: &Machine) -> Result<PathBuf> {
    let dir = lock_dir(host);
    let parent = dir.parent().unwrap_or(&dir).to_path_buf();
    if let Some(run) = parent.parent() {
        std::fs::create_dir_all(run).map_err(|e| Error::io("create directory", run, e))?;
    }
    own_dir(
        &parent,
        |m| m & 0o022 == 0,
        &format!("a directory owned by uid {} that only it can write", euid()),
    )?;
    own_dir(
        &dir,
        |m| m == 0o700,
        &format!("a directory owned by uid {} with mode 0700", euid()),
    )?;
    Ok(dir)
}

/// Opens (creating if absent, never truncating) a lock file without
/// following a link, and refuses anything but a regular file of ours.
fn open_lock_file(path: &Path) -> Result<File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                Error::refused(format!(
                    "lock file {} is a symbolic link; not following it (remove it and retry)",
                    path.display()
                ))
            } else {
                Error::io("open", path, e)
            }
        })?;
    let meta = file.metadata().map_err(|e| Error::io("stat", path, e))?;
    if !meta.file_type().is_file() || meta.uid() != euid() || meta.nlink() != 1 {
        return Err(Error::refused(format!(
            "lock file {} is not a regular file of uid {} with one link (uid {}, {} links); \
             remove it and retry",
            path.display(),
            euid(),
            meta.uid(),
            meta.nlink()
        )));
    }
    Ok(file)
}

/// Takes the lock of `bdf`, waiting at most `bound`. A read-only host (an
/// unpacked snapshot) is refused here too: every path that writes takes it.
pub fn lock(host: &Machine, bdf: &Bdf, bound: Duration) -> Result<DeviceLock> {
    host.check_writable()?;
    let dir = ensure_lock_dir(host)?;
    let path = dir.join(format!("{bdf}.lock"));
    // Between tries the last try's file stays open, as it did before the wait was `poll_for`:
    // a waiter shows in /proc/<pid>/fd as holding the lock file (which is how a test, or an
    // admin, sees who waits). Each try opens it afresh, with its checks.
    let mut waiting: Option<File> = None;
    // Never past the bound: a caller's deadline ends with it.
    let got = poll_for(
        bound,
        Duration::from_millis(5),
        Duration::from_millis(100),
        || {
            let file = open_lock_file(&path)?;
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(l) => Ok(Some(l)),
                Err((f, nix::errno::Errno::EWOULDBLOCK)) => {
                    waiting = Some(f);
                    Ok(None)
                }
                Err((_, e)) => Err(Error::io("flock", &path, e.into())),
            }
        },
    )?;
    drop(waiting);
    let Some(mut l) = got else {
        return Err(Error::refused(format!(
            "{bdf} is being reset by {} (lock {}); waited {} ms",
            holder(&path),
            path.display(),
            bound.as_millis()
        )));
    };
    let me = format!(
        "pid {} ({})",
        std::process::id(),
        std::env::args().collect::<Vec<_>>().join(" ")
    );
    // Ours (checked above): replacing the last holder's text is fine.
    let _ = l.set_len(0);
    let _ = l.seek(SeekFrom::Start(0));
    let _ = l.write_all(me.as_bytes());
    let _ = l.flush();
    Ok(DeviceLock { _lock: l, path })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn twin_host() -> (tempfile::TempDir, Machine) {
        let dir = tempfile::tempdir().unwrap();
        let host = Machine::new(dir.path().join("sys"));
        (dir, host)
    }

    #[test]
    fn second_locker_waits_then_names_the_holder() {
        let (_d, host) = twin_host();
        let bdf: Bdf = "c5:00.0".parse().unwrap();
        let first = lock(&host, &bdf, Duration::from_millis(10)).unwrap();
        assert!(first.path.starts_with(host.run.join("resetlab/lock")));
        let e = lock(&host, &bdf, Duration::from_millis(30)).err().unwrap();
        assert!(
            e.to_string()
                .contains(&format!("pid {}", std::process::id())),
            "{e}"
        );
        assert_eq!(e.exit_code(), crate::error::exit::REFUSED);
        drop(first);
        let second = lock(&host, &bdf, Duration::from_millis(10)).unwrap();
        assert!(
            second.path.ends_with("0000:c5:00.0.lock"),
            "{:?}",
            second.path
        );
        let m = std::fs::metadata(lock_dir(&host)).unwrap();
        assert_eq!(m.permissions().mode() & 0o7777, 0o700);
    }

    #[test]
    fn a_planted_link_is_refused_and_its_target_untouched() {
        let (d, host) = twin_host();
        let canary = d.path().join("canary");
        std::fs::write(&canary, b"root:secret\n").unwrap();
        let dir = ensure_lock_dir(&host).unwrap();
        let bdf: Bdf = "c5:00.0".parse().unwrap();
        std::os::unix::fs::symlink(&canary, dir.join(format!("{bdf}.lock"))).unwrap();
        let e = lock(&host, &bdf, Duration::from_millis(10)).err().unwrap();
        assert_eq!(e.exit_code(), crate::error::exit::REFUSED, "{e}");
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert_eq!(std::fs::read(&canary).unwrap(), b"root:secret\n");
    }

    #[test]
    fn a_hard_link_or_fifo_is_refused() {
        let (d, host) = twin_host();
        let dir = ensure_lock_dir(&host).unwrap();
        let canary = d.path().join("canary");
        std::fs::write(&canary, b"keep").unwrap();
        std::fs::hard_link(&canary, dir.join("0000:c5:00.0.lock")).unwrap();
        let e = lock(&host, &"c5:00.0".parse().unwrap(), Duration::ZERO)
            .err()
            .unwrap();
        assert_eq!(e.exit_code(), crate::error::exit::REFUSED, "{e}");
        assert_eq!(std::fs::read(&canary).unwrap(), b"keep");
        nix::unistd::mkfifo(
            &dir.join("0000:c5:00.1.lock"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        let e = lock(&host, &"c5:00.1".parse().unwrap(), Duration::ZERO)
            .err()
            .unwrap();
        assert_eq!(e.exit_code(), crate::error::exit::REFUSED, "{e}");
    }

    #[test]
    fn a_lock_dir_with_another_mode_or_a_link_is_refused() {
        let (d, host) = twin_host();
        let dir = ensure_lock_dir(&host).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let e = lock(&host, &"c5:00.0".parse().unwrap(), Duration::ZERO)
            .err()
            .unwrap();
        assert_eq!(e.exit_code(), crate::error::exit::REFUSED, "{e}");
        assert!(e.to_string().contains("mode 1777"), "{e}");
        std::fs::remove_dir(&dir).unwrap();
        let elsewhere = d.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &dir).unwrap();
        let e = lock(&host, &"c5:00.0".parse().unwrap(), Duration::ZERO)
            .err()
            .unwrap();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
    }

    #[test]
    fn a_holders_text_is_printed_escaped() {
        let (_d, host) = twin_host();
        let bdf: Bdf = "c5:00.0".parse().unwrap();
        let first = lock(&host, &bdf, Duration::ZERO).unwrap();
        std::fs::write(&first.path, b"pid 1 (\x1b[2Jevil\nline)").unwrap();
        let e = lock(&host, &bdf, Duration::ZERO).err().unwrap();
        let s = e.to_string();
        assert!(!s.contains('\x1b') && !s.contains('\n'), "{s:?}");
        assert!(s.contains("\\u{1b}[2Jevil\\nline"), "{s}");
    }
}
