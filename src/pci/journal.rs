//! The journal (shared by every layer that writes: `pci::mmio`, the reset
//! engine, the experiment runner, the QMP client): every write to hardware (sysfs attribute,
//! config space, BAR) and every QMP command that changes a VM is recorded here before it is made. With `--trace FILE` each record is one
//! JSON line, fsync'd before the write, so a host that hangs mid-reset still
//! leaves its last write on disk. With `--dry-run` the same records are made
//! and no write is.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::pci::config::{write_width, ConfigAccess};
use crate::pci::Bdf;

/// What kind of write a record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    Sysfs,
    Config,
    Mmio,
    /// A QMP command that changes a VM (`device_del`, `stop`, …): `path` is the monitor socket,
    /// `device` the QEMU device id it is for, `value` the command as sent.
    Qmp,
    /// Not a write: a wait or a decision worth having in the record.
    Note,
}

/// One journal line.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Record {
    pub seq: u64,
    /// Milliseconds since the journal was opened (monotonic clock).
    pub t_ms: f64,
    /// Wall-clock time, seconds since the epoch.
    pub time: f64,
    pub method: String,
    pub target: Target,
    /// The device (or attribute owner) the write is for.
    pub device: Option<String>,
    pub path: Option<String>,
    pub offset: Option<u64>,
    pub width: Option<u8>,
    pub value: Option<String>,
    pub dry_run: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl std::fmt::Display for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.target {
            Target::Sysfs => write!(
                f,
                "write {:?} > {}",
                self.value.as_deref().unwrap_or(""),
                self.path.as_deref().unwrap_or("?")
            ),
            Target::Config => write!(
                f,
                "config {} {:#05x}.{} <- {}",
                self.device.as_deref().unwrap_or("?"),
                self.offset.unwrap_or(0),
                match self.width {
                    Some(1) => "b",
                    Some(2) => "w",
                    _ => "l",
                },
                self.value.as_deref().unwrap_or("?")
            ),
            Target::Mmio => write!(
                f,
                "mmio {} {}+{:#x} <- {}",
                self.device.as_deref().unwrap_or("?"),
                self.path.as_deref().unwrap_or("BAR"),
                self.offset.unwrap_or(0),
                self.value.as_deref().unwrap_or("?")
            ),
            Target::Qmp => write!(
                f,
                "qmp {} {}",
                self.path.as_deref().unwrap_or("?"),
                self.value.as_deref().unwrap_or("?")
            ),
            Target::Note => write!(f, "note: {}", self.note.as_deref().unwrap_or("")),
        }
    }
}

/// The write journal of one resetlab invocation.
pub struct Journal {
    start: Instant,
    seq: u64,
    pub dry_run: bool,
    trace: Option<(PathBuf, File)>,
    pub records: Vec<Record>,
    /// The method whose writes are being recorded.
    pub method: String,
}

impl Journal {
    pub fn new(dry_run: bool) -> Journal {
        Journal {
            start: Instant::now(),
            seq: 0,
            dry_run,
            trace: None,
            records: Vec::new(),
            method: String::new(),
        }
    }

    /// Appends every record to `path` as JSON lines, fsync'd one by one.
    ///
    /// Root appends here, so the file must be a regular file reached without a
    /// link (`O_NOFOLLOW`: a link planted at the path would aim the trace at
    /// another file), and opening never blocks (`O_NONBLOCK`: a FIFO with no
    /// reader would hang us); anything else is refused as bad input.
    pub fn with_trace(mut self, path: &Path) -> Result<Journal> {
        use std::os::unix::fs::OpenOptionsExt;
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY)
            .open(path)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ELOOP) => Error::parse(
                    "trace file",
                    path.display().to_string(),
                    "is a symbolic link; name the file itself",
                ),
                Some(libc::ENXIO) => Error::parse(
                    "trace file",
                    path.display().to_string(),
                    "a FIFO where a regular file is expected",
                ),
                _ => Error::io("open trace", path, e),
            })?;
        let meta = f.metadata().map_err(|e| Error::io("stat", path, e))?;
        if !meta.file_type().is_file() {
            return Err(Error::parse(
                "trace file",
                path.display().to_string(),
                "not a regular file (a FIFO or device); not writing to it",
            ));
        }
        self.trace = Some((path.to_path_buf(), f));
        Ok(self)
    }

    pub fn elapsed_ms(&self) -> f64 {
        self.start.elapsed().as_secs_f64() * 1e3
    }

    fn record(&mut self, mut r: Record) -> Result<()> {
        self.seq += 1;
        r.seq = self.seq;
        r.t_ms = self.elapsed_ms();
        r.time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        r.dry_run = self.dry_run;
        if let Some((path, f)) = &mut self.trace {
            let mut line = serde_json::to_vec(&r).unwrap_or_default();
            line.push(b'\n');
            f.write_all(&line)
                .map_err(|e| Error::io("write trace", path.as_path(), e))?;
            // The record must be on disk before the write it announces.
            f.sync_data()
                .map_err(|e| Error::io("fsync trace", path.as_path(), e))?;
        }
        self.records.push(r);
        Ok(())
    }

    fn base(&self, target: Target) -> Record {
        Record {
            seq: 0,
            t_ms: 0.0,
            time: 0.0,
            method: self.method.clone(),
            target,
            device: None,
            path: None,
            offset: None,
            width: None,
            value: None,
            dry_run: self.dry_run,
            note: None,
        }
    }

    /// Records a note (a wait, a decision) about a PCI function: no write.
    pub fn note(&mut self, device: Option<&Bdf>, text: impl Into<String>) -> Result<()> {
        let mut r = self.base(Target::Note);
        r.device = device.map(Bdf::to_string);
        r.note = Some(text.into());
        self.record(r)
    }

    /// Records a note about a QEMU device (its `id`, as in [`Journal::qmp_command`]): no write.
    pub fn qmp_note(&mut self, device_id: Option<&str>, text: impl Into<String>) -> Result<()> {
        let mut r = self.base(Target::Note);
        r.device = device_id.map(str::to_string);
        r.note = Some(text.into());
        self.record(r)
    }

    /// Records, then (unless dry-run) writes `value` to a sysfs attribute.
    pub fn sysfs_write(&mut self, device: Option<&Bdf>, path: &Path, value: &str) -> Result<()> {
        let mut r = self.base(Target::Sysfs);
        r.device = device.map(Bdf::to_string);
        r.path = Some(path.display().to_string());
        r.value = Some(value.to_string());
        self.record(r)?;
        if self.dry_run {
            return Ok(());
        }
        write_attr(path, value)
    }

    /// Records a sysfs write the caller makes itself right after (the hook makes writes that
    /// may block in the kernel from a child process, to bound them). Returns whether to make it.
    pub fn sysfs_announce(
        &mut self,
        device: Option<&Bdf>,
        path: &Path,
        value: &str,
    ) -> Result<bool> {
        let mut r = self.base(Target::Sysfs);
        r.device = device.map(Bdf::to_string);
        r.path = Some(path.display().to_string());
        r.value = Some(value.to_string());
        self.record(r)?;
        Ok(!self.dry_run)
    }

    /// Records, then (unless dry-run) writes a config register of `width` bytes.
    pub fn config_write(
        &mut self,
        device: &Bdf,
        cfg: &mut dyn ConfigAccess,
        offset: u16,
        width: usize,
        value: u32,
    ) -> Result<()> {
        let mut r = self.base(Target::Config);
        r.device = Some(device.to_string());
        r.offset = Some(offset as u64);
        r.width = Some(width as u8);
        r.value = Some(format!("{value:#0w$x}", w = width * 2 + 2));
        self.record(r)?;
        if self.dry_run {
            return Ok(());
        }
        write_width(cfg, offset, width, value)
    }

    /// Records an MMIO write; the caller makes it (unless dry-run) right after.
    /// Returns whether to make it.
    pub fn mmio_write(
        &mut self,
        device: &Bdf,
        region: &str,
        offset: u64,
        value: u32,
    ) -> Result<bool> {
        let mut r = self.base(Target::Mmio);
        r.device = Some(device.to_string());
        r.path = Some(region.to_string());
        r.offset = Some(offset);
        r.width = Some(4);
        r.value = Some(format!("{value:#010x}"));
        self.record(r)?;
        Ok(!self.dry_run)
    }

    /// Records a QMP command for the monitor at `socket`; the caller sends it (unless dry-run)
    /// right after. Returns whether to send it.
    pub fn qmp_command(
        &mut self,
        socket: &Path,
        device: Option<&str>,
        cmd: &str,
        args: &serde_json::Value,
    ) -> Result<bool> {
        let mut r = self.base(Target::Qmp);
        r.device = device.map(str::to_string);
        r.path = Some(socket.display().to_string());
        let mut c = serde_json::json!({ "execute": cmd });
        if !args.is_null() {
            c["arguments"] = args.clone();
        }
        r.value = Some(c.to_string());
        self.record(r)?;
        Ok(!self.dry_run)
    }

    /// Appends a line of another kind (an experiment step's result) to the
    /// trace, fsync'd like the write records; no-op without `--trace`.
    pub fn trace_line(&mut self, value: &serde_json::Value) -> Result<()> {
        if let Some((path, f)) = &mut self.trace {
            let mut line = serde_json::to_vec(value).unwrap_or_default();
            line.push(b'\n');
            f.write_all(&line)
                .map_err(|e| Error::io("write trace", path.as_path(), e))?;
            f.sync_data()
                .map_err(|e| Error::io("fsync trace", path.as_path(), e))?;
        }
        Ok(())
    }

    /// The writes (not notes) recorded so far.
    pub fn writes(&self) -> impl Iterator<Item = &Record> {
        self.records.iter().filter(|r| r.target != Target::Note)
    }
}

/// Writes a sysfs attribute with one write(2), as `echo` does (O_TRUNC
/// included: sysfs ignores it, a regular file in the twin needs it), so the
/// kernel sees the whole value at once; the errno comes back as an `Error::Io`.
pub fn write_attr(path: &Path, value: &str) -> Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .map_err(|e| Error::io("open for writing", path, e))?;
    f.write_all(value.as_bytes())
        .map_err(|e| Error::io("write", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::config::MemConfig;

    #[test]
    fn dry_run_records_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let attr = dir.path().join("remove");
        std::fs::write(&attr, "").unwrap();
        let mut j = Journal::new(true);
        let bdf = Bdf::new(0, 1, 0, 0);
        j.sysfs_write(Some(&bdf), &attr, "1").unwrap();
        let mut cfg = MemConfig::open("t", vec![0; 256]);
        j.config_write(&bdf, &mut cfg, 4, 2, 0x400).unwrap();
        assert_eq!(std::fs::read_to_string(&attr).unwrap(), "");
        assert_eq!(cfg.data[4], 0);
        assert_eq!(j.writes().count(), 2);
        assert_eq!(
            j.records[1].to_string(),
            "config 0000:01:00.0 0x004.w <- 0x0400"
        );
    }

    #[test]
    fn a_qmp_command_is_recorded_and_a_dry_run_sends_none() {
        let mut j = Journal::new(true);
        let send = j
            .qmp_command(
                Path::new("/run/qemu-server/100.qmp"),
                Some("hostpci0"),
                "device_del",
                &serde_json::json!({"id": "hostpci0"}),
            )
            .unwrap();
        assert!(!send);
        assert_eq!(j.writes().count(), 1);
        assert_eq!(
            j.records[0].to_string(),
            r#"qmp /run/qemu-server/100.qmp {"arguments":{"id":"hostpci0"},"execute":"device_del"}"#
        );
        assert!(Journal::new(false)
            .qmp_command(Path::new("s"), None, "stop", &serde_json::Value::Null)
            .unwrap());
    }

    #[test]
    fn trace_lines_are_on_disk_before_the_write() {
        let dir = tempfile::tempdir().unwrap();
        let trace = dir.path().join("t.jsonl");
        let attr = dir.path().join("reset");
        std::fs::write(&attr, "").unwrap();
        let mut j = Journal::new(false).with_trace(&trace).unwrap();
        j.method = "kernel".into();
        j.sysfs_write(None, &attr, "1").unwrap();
        let text = std::fs::read_to_string(&trace).unwrap();
        let v: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(v["method"], "kernel");
        assert_eq!(v["value"], "1");
        assert_eq!(std::fs::read_to_string(&attr).unwrap(), "1");
    }
}
