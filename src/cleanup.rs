//! What must be undone when resetlab is stopped by a signal: temp dirs (a
//! `--sim` twin, an unpacked snapshot) and host-wide settings changed for the
//! duration of a method (`bus/pci/drivers_autoprobe`). Normal exits undo them
//! through `Drop`; this covers SIGINT, SIGTERM, SIGHUP and SIGPIPE. The
//! handler (`sys::forward_to_pipe`) only writes the signal number to a pipe
//! and parks its thread; a helper thread does the work, then re-raises the signal
//! with its default action so the exit status is what it would have been.
//! SIGKILL cannot be caught: for that the pending restores are also recorded
//! on disk (see `reset::autoprobe`).

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use nix::sys::signal::{self, SigSet, Signal};

#[derive(Default)]
struct Pending {
    dirs: Vec<PathBuf>,
    /// (id, attribute, value to write back, record to remove once it is).
    restores: Vec<(u64, PathBuf, String, Option<PathBuf>)>,
    next: u64,
}

static PENDING: Mutex<Pending> = Mutex::new(Pending {
    dirs: Vec::new(),
    restores: Vec::new(),
    next: 0,
});

/// Creates a temp dir (`prefix` + random, in the temp directory) already
/// registered for removal: the pending list's lock is held from before the
/// `mkdir` until the path is on it, so a signal in between makes the cleanup
/// thread wait for the registration instead of missing the dir.
pub fn temp_dir(prefix: &str) -> std::io::Result<tempfile::TempDir> {
    let mut p = PENDING.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::Builder::new().prefix(prefix).tempdir()?;
    p.dirs.push(dir.path().to_path_buf());
    Ok(dir)
}

/// An attribute to write `value` back to if a signal stops the process (and
/// a record of that to remove once it is); returns the id to
/// [`unregister_restore`] once restored normally.
pub fn register_restore(path: &Path, value: &str, record: Option<&Path>) -> u64 {
    let Ok(mut p) = PENDING.lock() else { return 0 };
    p.next += 1;
    let id = p.next;
    p.restores.push((
        id,
        path.to_path_buf(),
        value.to_string(),
        record.map(Path::to_path_buf),
    ));
    id
}

pub fn unregister_restore(id: u64) {
    if let Ok(mut p) = PENDING.lock() {
        p.restores.retain(|r| r.0 != id);
    }
}

/// Undoes everything pending now (restores first, then temp dirs).
pub fn run_pending() {
    let Ok(mut p) = PENDING.lock() else { return };
    for (_, path, value, record) in p.restores.drain(..) {
        if std::fs::write(&path, value.as_bytes()).is_ok() {
            if let Some(r) = record {
                let _ = std::fs::remove_file(r);
            }
        }
    }
    for d in p.dirs.drain(..) {
        remove_tree(&d);
    }
}

/// Removes `dir` although a twin's model thread may still write into it (a
/// signal stops only the thread it lands on): remove_dir_all gives up with
/// ENOTEMPTY when a file appears meanwhile, so it is tried again, at most 50
/// times (the model writes a handful of files per event).
fn remove_tree(dir: &Path) {
    for _ in 0..50 {
        if std::fs::remove_dir_all(dir).is_ok() || std::fs::symlink_metadata(dir).is_err() {
            return;
        }
        std::thread::yield_now();
    }
}

/// The signals covered; SIGPIPE only when it has its default action (the
/// hook ignores it and keeps going).
fn signals() -> Vec<Signal> {
    let mut v = vec![Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP];
    if crate::sys::has_default_action(Signal::SIGPIPE) {
        v.push(Signal::SIGPIPE);
    }
    v
}

static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Installs the handlers and the helper thread (once per process).
pub fn install() {
    if INSTALLED.swap(true, Ordering::SeqCst) {
        return;
    }
    let Ok((r, w)) = nix::unistd::pipe() else {
        return;
    };
    let sigs = signals();
    let mut mask = SigSet::empty();
    for s in &sigs {
        mask.add(*s);
    }
    let spawned = std::thread::Builder::new()
        .name("resetlab-cleanup".into())
        .spawn(move || {
            // Never handle a signal on this thread (its handler would park it).
            let _ = mask.thread_block();
            let mut b = [0u8; 1];
            loop {
                match nix::unistd::read(r.as_raw_fd(), &mut b) {
                    Ok(1) => break,
                    Err(nix::errno::Errno::EINTR) => continue,
                    _ => return,
                }
            }
            run_pending();
            let sig = Signal::try_from(b[0] as i32).unwrap_or(Signal::SIGTERM);
            crate::sys::default_action(sig);
            let _ = signal::kill(nix::unistd::getpid(), sig);
            // Every other thread blocks it (the parked one is inside its
            // handler): take it here, with its default action.
            let mut only = SigSet::empty();
            only.add(sig);
            let _ = only.thread_unblock();
            // A blocked or ignored signal cannot be raised: exit as the shell would.
            std::process::exit(128 + sig as i32);
        });
    if spawned.is_err() {
        return;
    }
    // Each signal writes its number to the pipe and parks its thread; the
    // helper above does the work.
    crate::sys::forward_to_pipe(&sigs, w);
}
