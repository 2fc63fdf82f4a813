//! A sysfs write with a bound on how long the caller waits for it.
//!
//! Some sysfs writes block in the kernel for as long as something else decides: `remove` of a
//! device that QEMU still holds waits in `vfio_unregister_group_dev` (drivers/vfio/vfio_main.c)
//! until QEMU lets go, first interruptibly, then — once a signal has arrived — uninterruptibly,
//! re-sending the request every 10 s; a `rescan` waits on `pci_rescan_remove_lock`
//! (drivers/pci/probe.c `pci_lock_rescan_remove`) while such a remove holds it. A thread stuck
//! there cannot be killed, and a process with such a thread cannot finish exiting, so Proxmox,
//! which waits for the hookscript, would hang with it. The write is therefore made by a forked
//! child: the parent waits at most its bound and, past it, leaves the child to finish the write
//! on its own (reparented to init when the hook exits) and reports the write as pending.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant};

use std::os::fd::{AsFd, OwnedFd};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::error::{Error, Result};

/// How a bounded write ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The kernel accepted the write.
    Done,
    /// The kernel refused it with this errno.
    Refused(i32),
    /// Still blocked in the kernel when the bound ran out; the child `pid` keeps waiting.
    Pending { pid: i32 },
}

/// Descriptors this process has open now (read in the parent: the child must not allocate).
fn open_fds() -> Vec<i32> {
    std::fs::read_dir(crate::machine::self_fd_dir())
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
                .collect()
        })
        .unwrap_or_default()
}

/// Writes `value` to `path` (one `write(2)`, `O_TRUNC` as `echo` does) from a child process
/// and waits for it at most `bound`.
pub fn write(path: &Path, value: &str, bound: Duration) -> Result<WriteOutcome> {
    let cpath = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::parse("sysfs path", path.display().to_string(), "contains NUL"))?;
    let bytes = value.as_bytes().to_vec();
    let fds = open_fds();
    // The child holds the write end until it exits: the read end then reports end-of-file, so
    // the parent wakes the moment the write is done instead of polling on a timer.
    let (done_r, done_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| Error::io("pipe for", path, e.into()))?;
    // The child keeps no descriptor of the parent but this pipe: not Proxmox's pipes (it reads
    // them until they close), not a device lock (a stuck write would keep it held).
    let pid = crate::sys::fork_write(&cpath, &bytes, &fds)
        .map_err(|e| Error::io("fork a writer for", path, e.into()))?;
    drop(done_w);
    wait_child(pid, &done_r, bound)
}

fn wait_child(pid: Pid, done: &OwnedFd, bound: Duration) -> Result<WriteOutcome> {
    let start = Instant::now();
    loop {
        let left = bound.saturating_sub(start.elapsed());
        let timeout = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(done.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, timeout) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => {
                return Err(Error::io(
                    "wait for the writer process",
                    format!("pid {pid}"),
                    e.into(),
                ))
            }
        }
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, 0)) => return Ok(WriteOutcome::Done),
            Ok(WaitStatus::Exited(_, code)) => return Ok(WriteOutcome::Refused(code)),
            Ok(WaitStatus::Signaled(_, sig, _)) => {
                return Err(Error::failed(format!("the writer process died of {sig}")))
            }
            Ok(_) => {}
            Err(e) => {
                return Err(Error::io(
                    "wait for the writer process",
                    format!("pid {pid}"),
                    e.into(),
                ))
            }
        }
        if start.elapsed() >= bound {
            return Ok(WriteOutcome::Pending { pid: pid.as_raw() });
        }
        // End-of-file comes just before the exit status is ready: give it a moment.
        std::thread::sleep(Duration::from_micros(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_regular_file_and_truncates() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("remove");
        std::fs::write(&p, "old value\n").unwrap();
        assert_eq!(
            write(&p, "1", Duration::from_secs(5)).unwrap(),
            WriteOutcome::Done
        );
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "1");
    }

    #[test]
    fn a_missing_attribute_is_refused_with_enoent() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("nope");
        assert_eq!(
            write(&p, "1", Duration::from_secs(5)).unwrap(),
            WriteOutcome::Refused(libc::ENOENT)
        );
    }

    #[test]
    fn a_blocking_write_is_left_pending_at_the_bound() {
        // A FIFO with no reader: open(2) for writing blocks, as a sysfs write may.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("fifo");
        nix::unistd::mkfifo(&p, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let out = write(&p, "1", Duration::from_millis(50)).unwrap();
        let WriteOutcome::Pending { pid } = out else {
            panic!("expected pending, got {out:?}");
        };
        // Let the child finish: open the FIFO for reading, which unblocks its open.
        let f = std::fs::File::open(&p).unwrap();
        let status = waitpid(Pid::from_raw(pid), None).unwrap();
        drop(f);
        assert!(matches!(status, WaitStatus::Exited(_, 0)), "{status:?}");
    }
}
