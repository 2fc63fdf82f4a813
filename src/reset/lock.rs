//! The per-device lock: `flock` on `<run>/lock/resetlab/<bdf>.lock`, so two
//! invocations (two VMs' hooks, say) never reset one device at once. A second
//! caller waits, bounded, then fails naming who holds it.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};

use crate::error::{Error, Result};
use crate::pci::{Bdf, Host};

/// A held lock; released on drop.
pub struct DeviceLock {
    _lock: Flock<File>,
    pub path: PathBuf,
}

pub fn lock_dir(host: &Host) -> PathBuf {
    host.run.join("lock/resetlab")
}

fn holder(path: &PathBuf) -> String {
    let mut s = String::new();
    if let Ok(mut f) = File::open(path) {
        let _ = f.read_to_string(&mut s);
    }
    let s = s.trim();
    if s.is_empty() {
        "another process".to_string()
    } else {
        s.to_string()
    }
}

/// Takes the lock of `bdf`, waiting at most `bound`.
pub fn lock(host: &Host, bdf: &Bdf, bound: Duration) -> Result<DeviceLock> {
    let dir = lock_dir(host);
    fs::create_dir_all(&dir).map_err(|e| Error::io("create directory", &dir, e))?;
    let path = dir.join(format!("{bdf}.lock"));
    let start = Instant::now();
    let mut delay = Duration::from_millis(5);
    loop {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io("open", &path, e))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(mut l) => {
                let me = format!(
                    "pid {} ({})",
                    std::process::id(),
                    std::env::args().collect::<Vec<_>>().join(" ")
                );
                let _ = l.set_len(0);
                let _ = l.seek(SeekFrom::Start(0));
                let _ = l.write_all(me.as_bytes());
                let _ = l.flush();
                return Ok(DeviceLock { _lock: l, path });
            }
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                if start.elapsed() >= bound {
                    return Err(Error::refused(format!(
                        "{bdf} is being reset by {} (lock {}); waited {} ms",
                        holder(&path),
                        path.display(),
                        bound.as_millis()
                    )));
                }
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_millis(100));
            }
            Err((_, e)) => return Err(Error::io("flock", &path, e.into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_locker_waits_then_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let host = Host::new(dir.path().join("sys"));
        let bdf: Bdf = "c5:00.0".parse().unwrap();
        let first = lock(&host, &bdf, Duration::from_millis(10)).unwrap();
        let e = lock(&host, &bdf, Duration::from_millis(30)).err().unwrap();
        assert!(
            e.to_string()
                .contains(&format!("pid {}", std::process::id())),
            "{e}"
        );
        assert_eq!(e.exit_code(), crate::error::exit::REFUSED);
        drop(first);
        assert!(lock(&host, &bdf, Duration::from_millis(10)).is_ok());
    }
}
