//! `bus/pci/drivers_autoprobe` is host-wide: while it is 0 no new device on
//! the machine gets a driver. `remove_rescan` turns it off around its rescan
//! and must put it back on every exit path: normally (the gate's `open`), on
//! an early return or panic (`Drop`), on SIGINT/SIGTERM/SIGHUP/SIGPIPE or the
//! hook's watchdog (`crate::cleanup`), and after SIGKILL through a record in
//! the run directory (`<run>/resetlab/autoprobe.pending`) that the next
//! writing resetlab acts on ([`recover`]) and `doctor` reports.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::journal::Journal;
use crate::machine::Machine;
use crate::pci::sysfs::read_attr;

/// The record's file name under `<run>/resetlab/`.
pub const PENDING_NAME: &str = "autoprobe.pending";

pub fn attr(host: &Machine) -> PathBuf {
    host.sysfs.join("bus/pci/drivers_autoprobe")
}

pub fn pending_path(host: &Machine) -> PathBuf {
    host.run.join("resetlab").join(PENDING_NAME)
}

/// Autoprobe turned off; turned back on by [`Gate::open`] or on drop.
pub struct Gate {
    attr: PathBuf,
    record: Option<PathBuf>,
    cleanup: u64,
    armed: bool,
}

/// Turns autoprobe off if it is on (`None` when it was already off: nothing
/// to put back). The record is on disk before the write is made.
pub fn close(host: &Machine, journal: &mut Journal) -> Result<Option<Gate>> {
    let attr = attr(host);
    if read_attr(&attr)?.as_deref() != Some("1") {
        return Ok(None);
    }
    let record = if journal.dry_run {
        None
    } else {
        Some(write_record(host, &attr)?)
    };
    let cleanup = if journal.dry_run {
        0
    } else {
        crate::cleanup::register_restore(&attr, "1", record.as_deref())
    };
    let gate = Gate {
        attr: attr.clone(),
        record,
        cleanup,
        armed: true,
    };
    journal.sysfs_write(None, &attr, "0")?;
    Ok(Some(gate))
}

impl Gate {
    /// Puts autoprobe back on (journalled) and drops the record.
    pub fn open(mut self, journal: &mut Journal) -> Result<()> {
        self.armed = false;
        let r = journal.sysfs_write(None, &self.attr, "1");
        if r.is_ok() {
            self.forget();
        }
        r
    }

    fn forget(&mut self) {
        crate::cleanup::unregister_restore(self.cleanup);
        if let Some(r) = self.record.take() {
            let _ = std::fs::remove_file(r);
        }
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        if self.armed && self.record.is_some() {
            if std::fs::write(&self.attr, b"1").is_ok() {
                self.forget();
            }
        } else if !self.armed {
            // `open` failed: the record stays for the next run to retry.
            crate::cleanup::unregister_restore(self.cleanup);
        }
    }
}

fn write_record(host: &Machine, attr: &Path) -> Result<PathBuf> {
    // `<run>/resetlab` is checked as the lock directory's parent is: ours.
    crate::reset::lock::ensure_lock_dir(host)?;
    let path = pending_path(host);
    let tmp = path.with_extension(format!("pending.{}", std::process::id()));
    let text = format!(
        "{{\"attr\":{},\"restore\":\"1\",\"pid\":{}}}\n",
        serde_json::to_string(&attr.display().to_string()).unwrap_or_default(),
        std::process::id()
    );
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
            .map_err(|e| Error::io("create", &tmp, e))?;
        f.write_all(text.as_bytes())
            .and_then(|_| f.sync_data())
            .map_err(|e| Error::io("write", &tmp, e))?;
    }
    std::fs::rename(&tmp, &path).map_err(|e| Error::io("rename", &path, e))?;
    Ok(path)
}

/// The pid recorded in a pending record, if it is still a live resetlab.
fn owner_alive(text: &str) -> Option<u32> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    let pid = v["pid"].as_u64()? as u32;
    if pid == std::process::id() {
        return None;
    }
    let cmd = std::fs::read(crate::machine::process_dir(pid).join("cmdline")).ok()?;
    let argv0 = cmd.split(|b| *b == 0).next().unwrap_or_default();
    String::from_utf8_lossy(argv0)
        .contains("resetlab")
        .then_some(pid)
}

/// What a pending record says, for `doctor`: `None` when there is none.
pub fn pending(host: &Machine) -> Option<String> {
    let p = pending_path(host);
    let text = crate::bounded_read::read_text_opt(&p, 4096)
        .ok()
        .flatten()?;
    Some(match owner_alive(&text) {
        Some(pid) => format!(
            "{}: resetlab pid {pid} has drivers_autoprobe off for a rescan right now",
            p.display()
        ),
        None => format!(
            "{}: an interrupted remove_rescan left drivers_autoprobe off; the next resetlab \
             that writes puts it back (or: echo 1 > {})",
            p.display(),
            attr(host).display()
        ),
    })
}

/// Puts back what an interrupted run left (its process is gone): writes 1 to
/// `drivers_autoprobe` (journalled) and removes the record. Returns what it
/// did, for a note.
pub fn recover(host: &Machine, journal: &mut Journal) -> Result<Option<String>> {
    let p = pending_path(host);
    let Some(text) = crate::bounded_read::read_text_opt(&p, 4096)? else {
        return Ok(None);
    };
    if owner_alive(&text).is_some() {
        return Ok(None);
    }
    // Only ever the attribute of this host: the record names it for people.
    let a = attr(host);
    if read_attr(&a)?.as_deref() == Some("0") {
        journal.note(
            None,
            format!("{} records an interrupted rescan", p.display()),
        )?;
        journal.sysfs_write(None, &a, "1")?;
    }
    if !journal.dry_run {
        std::fs::remove_file(&p).map_err(|e| Error::io("remove", &p, e))?;
    }
    Ok(Some(format!(
        "put {} back to 1 (an interrupted remove_rescan had left it 0; record {})",
        a.display(),
        p.display()
    )))
}
