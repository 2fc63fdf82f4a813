//! The process-wide operations that need `unsafe`: signal dispositions, signal handlers and the
//! one `fork` (the bounded sysfs writer, `hook::bounded`). Each is a small safe function with
//! its `// SAFETY:` argument here; the handlers are defined in this file too, so a caller
//! cannot install one that is not async-signal-safe. (Memory mappings are `pci::mmio`'s.)

use std::ffi::CStr;
use std::os::fd::{OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};
use std::sync::OnceLock;

use nix::sys::signal::{self, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::unistd::{ForkResult, Pid};

/// SIGPIPE's default action: a write to a pipe whose reader is gone ends the process quietly
/// (`resetlab list | head`), as Unix tools do. Rust's runtime starts a program with SIGPIPE
/// ignored, which turns that write into an EPIPE that `println!` panics on.
pub fn default_sigpipe() {
    set_disposition(Signal::SIGPIPE, SigHandler::SigDfl);
}

/// SIGPIPE ignored: such a write fails with EPIPE instead, and the caller carries on (the hook,
/// which must not stop half-way through a VM's devices because its reader went away).
pub fn ignore_sigpipe() {
    set_disposition(Signal::SIGPIPE, SigHandler::SigIgn);
}

/// `sig`'s default action back (before re-raising it once cleaned up).
pub fn default_action(sig: Signal) {
    set_disposition(sig, SigHandler::SigDfl);
}

fn set_disposition(sig: Signal, how: SigHandler) {
    debug_assert!(matches!(how, SigHandler::SigDfl | SigHandler::SigIgn));
    // SAFETY: SIG_DFL and SIG_IGN install no handler code, so nothing can run in signal
    // context. signal(2) fails only for SIGKILL and SIGSTOP, whose disposition stays as it was.
    let _ = unsafe { signal::signal(sig, how) };
}

/// Whether `sig` has its default action now (read without changing it).
pub fn has_default_action(sig: Signal) -> bool {
    // SAFETY: an all-zero `sigaction` is a valid value of that plain C struct; with a null new
    // action, sigaction(2) only writes the current one into `old`, which lives for the call.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(sig as libc::c_int, std::ptr::null(), &mut old) == 0
            && old.sa_sigaction == libc::SIG_DFL
    }
}

/// One slot per signal number (Linux has 64, numbered from 1): the flag [`flag_on`] set.
const NSIG: usize = 65;
static FLAGS: [AtomicPtr<AtomicBool>; NSIG] =
    [const { AtomicPtr::new(std::ptr::null_mut()) }; NSIG];

extern "C" fn set_flag(sig: libc::c_int) {
    let Some(slot) = usize::try_from(sig).ok().and_then(|i| FLAGS.get(i)) else {
        return;
    };
    let p = slot.load(Ordering::Acquire);
    // SAFETY: only `flag_on` stores here, and only pointers made from a `&'static AtomicBool`.
    if let Some(flag) = unsafe { p.as_ref() } {
        flag.store(true, Ordering::Relaxed);
    }
}

/// From now on each of `sigs` sets `flag` instead of taking its default action (a long run
/// that stops cleanly at its next step).
pub fn flag_on(sigs: &[Signal], flag: &'static AtomicBool) -> nix::Result<()> {
    let action = SigAction::new(
        SigHandler::Handler(set_flag),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for &sig in sigs {
        FLAGS[sig as usize].store(std::ptr::from_ref(flag).cast_mut(), Ordering::Release);
        // SAFETY: `set_flag` only loads an atomic pointer and stores to an atomic: lock-free
        // operations, which are async-signal-safe; its slot is filled before it is installed.
        unsafe { signal::sigaction(sig, &action) }?;
    }
    Ok(())
}

static FORWARD: OnceLock<OwnedFd> = OnceLock::new();

extern "C" fn forward(sig: libc::c_int) {
    if let Some(w) = FORWARD.get() {
        let _ = nix::unistd::write(w, &[sig as u8]);
        // Park this thread: the reader of the pipe decides how the process ends.
        loop {
            nix::unistd::pause();
        }
    }
}

/// From now on each of `sigs` writes its number (one byte) to `w` and parks the thread it was
/// delivered on for good; the reader of the pipe's other end (a thread that blocks these
/// signals) does what must be done and ends the process. Once per process: a second call
/// returns `false` and installs nothing.
pub fn forward_to_pipe(sigs: &[Signal], w: OwnedFd) -> bool {
    if FORWARD.set(w).is_err() {
        return false;
    }
    let action = SigAction::new(
        SigHandler::Handler(forward),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for &sig in sigs {
        // SAFETY: `forward` only reads a OnceLock set before this point (an atomic load) and
        // calls write(2) and pause(2), which are async-signal-safe.
        let _ = unsafe { signal::sigaction(sig, &action) };
    }
    true
}

/// Forks a child that opens `path` write-only with `O_TRUNC` (as `echo` does), writes `bytes`
/// with one write(2) and exits with 0, or with the errno (low 8 bits) of the call that failed.
/// The child first closes `close` — the caller lists its open descriptors before the call,
/// because the child must not allocate. A descriptor opened after that listing stays open in
/// the child until it exits (the write end of a pipe then tells the parent when it has).
/// Returns the child's pid in the parent.
pub fn fork_write(path: &CStr, bytes: &[u8], close: &[RawFd]) -> nix::Result<Pid> {
    // SAFETY: after fork the child calls only async-signal-safe functions (close, open, write,
    // _exit) on memory prepared before the fork, so it is sound even if the parent has other
    // threads (the twin's model thread in tests).
    match unsafe { nix::unistd::fork() }? {
        ForkResult::Parent { child } => Ok(child),
        ForkResult::Child => {
            // SAFETY: see above; `path`, `bytes` and `close` stay valid for the whole child, and
            // `_exit` ends it without running the parent's destructors or flushing its buffers.
            unsafe {
                for fd in close {
                    libc::close(*fd);
                }
                let fd = libc::open(
                    path.as_ptr(),
                    libc::O_WRONLY | libc::O_TRUNC | libc::O_CLOEXEC,
                );
                if fd < 0 {
                    libc::_exit(*libc::__errno_location() & 0xff);
                }
                let n = libc::write(fd, bytes.as_ptr().cast(), bytes.len());
                if n < 0 {
                    libc::_exit(*libc::__errno_location() & 0xff);
                }
                libc::_exit(0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flag_is_set_by_its_signal_and_the_default_action_is_read_back() {
        // SIGUSR2: no other test in this process uses it.
        static FLAG: AtomicBool = AtomicBool::new(false);
        default_action(Signal::SIGUSR2);
        assert!(has_default_action(Signal::SIGUSR2));
        flag_on(&[Signal::SIGUSR2], &FLAG).unwrap();
        assert!(!has_default_action(Signal::SIGUSR2));
        signal::raise(Signal::SIGUSR2).unwrap();
        // raise(3) directs the signal at this thread, which does not block it: it is handled
        // before raise returns.
        assert!(FLAG.load(Ordering::Relaxed));
    }
}
