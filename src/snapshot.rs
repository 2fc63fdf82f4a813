//! `resetlab snapshot`: the PCI part of sysfs captured read-only into one tar
//! file that `--sysfs FILE` replays (or that `tar xf` unpacks). It never writes
//! to the live tree, never reads `config` of a device in D3cold (the read would
//! wake it), and skips attributes whose read has side effects (`rom`, `vpd`) or
//! that are BAR windows (`resourceN`): those are kept as empty placeholders so
//! the replayed tree has the same shape.

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::pci::Bdf;

const MAX_ATTR: u64 = 64 * 1024;
pub const META_NAME: &str = "resetlab-snapshot.json";

#[derive(Debug, Default, Serialize, schemars::JsonSchema)]
pub struct Summary {
    pub devices: usize,
    pub files: usize,
    pub links: usize,
    pub skipped_config: Vec<String>,
    pub unreadable: Vec<String>,
}

struct Capture<W: Write> {
    sysfs: PathBuf,
    tar: tar::Builder<W>,
    dirs_done: BTreeSet<PathBuf>,
    summary: Summary,
}

fn placeholder(name: &str) -> bool {
    name == "rom"
        || name == "vpd"
        || (name.starts_with("resource") && name.len() > "resource".len())
}

impl<W: Write> Capture<W> {
    fn rel(&self, p: &Path) -> PathBuf {
        Path::new("sys").join(p.strip_prefix(&self.sysfs).unwrap_or(p))
    }

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        h
    }

    fn dir(&mut self, p: &Path) -> Result<()> {
        let rel = self.rel(p);
        let mut chain = vec![];
        let mut cur = Some(rel.as_path());
        while let Some(c) = cur {
            if c.as_os_str().is_empty() || self.dirs_done.contains(c) {
                break;
            }
            chain.push(c.to_path_buf());
            cur = c.parent();
        }
        for d in chain.into_iter().rev() {
            let mut h = Self::header(tar::EntryType::Directory, 0o755, 0);
            self.tar
                .append_data(&mut h, &d, io::empty())
                .map_err(|e| Error::io("write snapshot entry", &d, e))?;
            self.dirs_done.insert(d);
        }
        Ok(())
    }

    fn file(&mut self, p: &Path, data: &[u8], mode: u32) -> Result<()> {
        if let Some(parent) = p.parent() {
            self.dir(parent)?;
        }
        let rel = self.rel(p);
        let mut h = Self::header(tar::EntryType::Regular, mode, data.len() as u64);
        self.tar
            .append_data(&mut h, &rel, data)
            .map_err(|e| Error::io("write snapshot entry", &rel, e))?;
        self.summary.files += 1;
        Ok(())
    }

    fn link(&mut self, p: &Path) -> Result<()> {
        let target = fs::read_link(p).map_err(|e| Error::io("readlink", p, e))?;
        if let Some(parent) = p.parent() {
            self.dir(parent)?;
        }
        let rel = self.rel(p);
        let mut h = Self::header(tar::EntryType::Symlink, 0o777, 0);
        self.tar
            .append_link(&mut h, &rel, &target)
            .map_err(|e| Error::io("write snapshot entry", &rel, e))?;
        self.summary.links += 1;
        Ok(())
    }

    /// Reads a regular attribute (bounded); unreadable ones become empty files.
    fn attr(&mut self, p: &Path, d3cold: bool) -> Result<()> {
        let meta = fs::symlink_metadata(p).map_err(|e| Error::io("stat", p, e))?;
        let mode = meta.permissions().mode() & 0o777;
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if placeholder(&name) || mode & 0o444 == 0 {
            return self.file(p, b"", mode);
        }
        if name == "config" && d3cold {
            self.summary.skipped_config.push(p.display().to_string());
            return self.file(p, b"", mode);
        }
        let mut data = Vec::new();
        let read = fs::File::open(p).and_then(|f| f.take(MAX_ATTR).read_to_end(&mut data));
        if read.is_err() {
            self.summary.unreadable.push(p.display().to_string());
            data.clear();
        }
        self.file(p, &data, mode)
    }

    /// Captures a directory's attributes and links; descends into the
    /// subdirectories `descend` accepts.
    fn tree(
        &mut self,
        dir: &Path,
        descend: &dyn Fn(&str, usize) -> bool,
        depth: usize,
    ) -> Result<()> {
        self.dir(dir)?;
        let d3cold = fs::read_to_string(dir.join("power_state"))
            .map(|s| s.trim() == "D3cold")
            .unwrap_or(false);
        let mut entries: Vec<_> = fs::read_dir(dir)
            .map_err(|e| Error::io("read directory", dir, e))?
            .flatten()
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_symlink() {
                self.link(&p)?;
            } else if ft.is_dir() {
                if depth < 16 && descend(&name, depth) {
                    self.tree(&p, descend, depth + 1)?;
                }
            } else if ft.is_file() {
                self.attr(&p, d3cold)?;
            }
        }
        Ok(())
    }
}

/// Subdirectories of the device tree worth keeping: devices, their power and
/// pci_bus directories. Class devices below (usb, net, drm, nvme) are not.
fn pci_subdir(name: &str, _depth: usize) -> bool {
    name.parse::<Bdf>().is_ok()
        || name == "power"
        || name == "pci_bus"
        || name.contains(':') && name.len() == 7 // pci_bus/0000:c5
}

/// Writes a snapshot of `sysfs` to `out` (gzip-compressed when it ends in `.gz`).
pub fn capture(sysfs: &Path, out: &Path) -> Result<Summary> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = out.with_extension("partial");
    // A new file, never one planted there (or a link to one): O_EXCL|O_NOFOLLOW.
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&tmp)
        .map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                Error::refused(format!(
                    "{} already exists (a link, or left by an interrupted snapshot); not writing                      through it: remove it and retry",
                    tmp.display()
                ))
            } else {
                Error::io("create", &tmp, e)
            }
        })?;
    let gz = out.extension().is_some_and(|e| e == "gz" || e == "tgz");
    let r = (|| {
        if gz {
            let enc = flate2::write::GzEncoder::new(file, flate2::Compression::default());
            let (enc, s) = capture_to(sysfs, enc)?;
            enc.finish().map_err(|e| Error::io("write", &tmp, e))?;
            Ok(s)
        } else {
            capture_to(sysfs, file).map(|r| r.1)
        }
    })();
    let summary = match r {
        Ok(s) => s,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
    };
    fs::rename(&tmp, out).map_err(|e| Error::io("rename", out, e))?;
    Ok(summary)
}

fn capture_to<W: Write>(sysfs: &Path, w: W) -> Result<(W, Summary)> {
    let mut c = Capture {
        sysfs: sysfs.to_path_buf(),
        tar: tar::Builder::new(w),
        dirs_done: BTreeSet::new(),
        summary: Summary::default(),
    };
    // The device tree under every PCI root bus.
    let devices = sysfs.join("devices");
    let mut roots: Vec<PathBuf> = fs::read_dir(&devices)
        .map_err(|e| Error::io("read directory", &devices, e))?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("pci"))
        .map(|e| e.path())
        .collect();
    roots.sort();
    for r in &roots {
        c.tree(r, &pci_subdir, 0)?;
    }
    // The bus's device links, the drivers and their links, the rescan attribute.
    let bus = sysfs.join("bus/pci");
    c.tree(&bus.join("devices"), &|_, _| false, 0)?;
    c.summary.devices = fs::read_dir(bus.join("devices"))
        .map(|r| r.count())
        .unwrap_or(0);
    if let Ok(rd) = fs::read_dir(bus.join("drivers")) {
        let mut drivers: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        drivers.sort();
        for d in drivers {
            c.tree(&d, &|_, _| false, 0)?;
        }
    }
    for name in ["rescan", "drivers_autoprobe", "resource_alignment"] {
        let p = bus.join(name);
        if p.exists() {
            c.attr(&p, false)?;
        }
    }
    // IOMMU groups.
    let groups = sysfs.join("kernel/iommu_groups");
    if groups.is_dir() {
        c.tree(
            &groups,
            &|name, depth| depth == 0 && name.parse::<u32>().is_ok() || name == "devices",
            0,
        )?;
    }
    // ACPI companions of the devices (their _PR3 power resources).
    let mut nodes = BTreeSet::new();
    if let Ok(rd) = fs::read_dir(bus.join("devices")) {
        for e in rd.flatten() {
            if let Ok(n) = fs::canonicalize(e.path().join("firmware_node")) {
                nodes.insert(n);
            }
        }
    }
    for n in nodes {
        if !n.starts_with(sysfs) {
            continue;
        }
        for name in ["path", "status", "hid", "adr"] {
            let p = n.join(name);
            if p.is_file() {
                c.attr(&p, false)?;
            }
        }
        let pr3 = n.join("power_resources_D3hot");
        if pr3.is_dir() {
            c.tree(&pr3, &|_, _| false, 0)?;
        }
    }
    let meta = serde_json::json!({
        "tool": "resetlab",
        "version": env!("CARGO_PKG_VERSION"),
        "sysfs": sysfs.display().to_string(),
        "kernel": crate::machine::Machine::new(sysfs).kernel_release().unwrap_or_default(),
        "summary": &c.summary,
    });
    let bytes = serde_json::to_vec_pretty(&meta).unwrap_or_default();
    let mut h = Capture::<W>::header(tar::EntryType::Regular, 0o644, bytes.len() as u64);
    c.tar
        .append_data(&mut h, META_NAME, bytes.as_slice())
        .map_err(|e| Error::io("write snapshot entry", META_NAME, e))?;
    let w = c
        .tar
        .into_inner()
        .map_err(|e| Error::io("finish snapshot", sysfs, e))?;
    Ok((w, c.summary))
}

/// An unpacked snapshot, removed on drop.
pub struct Unpacked {
    _dir: tempfile::TempDir,
    pub sysfs: PathBuf,
}

/// Bounds of an archive being replayed: entry count, one member's size (an
/// attribute is at most 64 KiB; the metadata is small) and the total unpacked.
pub const MAX_ENTRIES: u64 = 1_000_000;
pub const MAX_MEMBER: u64 = 16 << 20;
pub const MAX_TOTAL: u64 = 512 << 20;

fn bad(file: &Path, reason: impl Into<String>) -> Error {
    Error::parse("snapshot", file.display().to_string(), reason.into())
}

/// Whether a symlink at `rel` (a path inside the unpack dir) with `target`
/// stays inside: relative, only leading `..` (as sysfs's own links are), and
/// those never climb above the unpack dir.
fn link_stays_inside(rel: &Path, target: &Path) -> bool {
    use std::path::Component;
    let depth = rel.parent().map(|p| p.components().count()).unwrap_or(0);
    let mut ups = 0;
    let mut past_ups = false;
    for c in target.components() {
        match c {
            Component::ParentDir if !past_ups => ups += 1,
            Component::Normal(_) => past_ups = true,
            _ => return false,
        }
    }
    ups <= depth
}

/// Unpacks a snapshot file (tar or tar.gz) into a temp dir. Only `sys/` and
/// the metadata are kept (a planted `dev/`, `run/` or `etc/` is skipped), only
/// directories, regular files and links that stay inside the tree are made
/// (no device nodes, FIFOs or hard links), and the archive is bounded in
/// entries, member size and total size, so a bomb fails with a clear line.
pub fn unpack(file: &Path) -> Result<Unpacked> {
    let Some(f) = crate::bounded_read::open_regular(file)? else {
        return Err(Error::io(
            "open",
            file,
            io::Error::from(io::ErrorKind::NotFound),
        ));
    };
    let mut magic = [0u8; 2];
    let n = (&f)
        .read(&mut magic)
        .map_err(|e| Error::io("read", file, e))?;
    drop(f);
    let f = crate::bounded_read::open_regular(file)?
        .ok_or_else(|| Error::io("open", file, io::Error::from(io::ErrorKind::NotFound)))?;
    let dir = crate::cleanup::temp_dir("resetlab-snapshot-")
        .map_err(|e| Error::io("create temp dir", std::env::temp_dir(), e))?;
    let reader: Box<dyn Read> = if n == 2 && magic == [0x1f, 0x8b] {
        Box::new(flate2::read::GzDecoder::new(f))
    } else {
        Box::new(f)
    };
    let mut ar = tar::Archive::new(reader);
    ar.set_preserve_permissions(true);
    ar.set_unpack_xattrs(false);
    let unreadable = |e: io::Error| bad(file, format!("not a readable snapshot archive: {e}"));
    let (mut count, mut total) = (0u64, 0u64);
    for entry in ar.entries().map_err(unreadable)? {
        let mut entry = entry.map_err(unreadable)?;
        count += 1;
        if count > MAX_ENTRIES {
            return Err(bad(file, format!("more than {MAX_ENTRIES} entries")));
        }
        let rel = entry.path().map_err(unreadable)?.into_owned();
        let keep = rel == Path::new(META_NAME) || rel.starts_with("sys");
        if !keep {
            continue;
        }
        let kind = entry.header().entry_type();
        match kind {
            tar::EntryType::Directory => {}
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let size = entry.header().size().map_err(unreadable)?;
                if size > MAX_MEMBER {
                    return Err(bad(
                        file,
                        format!(
                            "member {} is {size} bytes (more than {MAX_MEMBER})",
                            rel.display()
                        ),
                    ));
                }
                total += size;
                if total > MAX_TOTAL {
                    return Err(bad(file, format!("unpacks to more than {MAX_TOTAL} bytes")));
                }
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(unreadable)?
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                if !link_stays_inside(&rel, &target) {
                    return Err(bad(
                        file,
                        format!(
                            "link {} -> {} points outside the snapshot",
                            rel.display(),
                            target.display()
                        ),
                    ));
                }
            }
            // Device nodes, FIFOs, hard links, sparse members: never in a
            // snapshot resetlab writes, and never made from one.
            other => {
                return Err(bad(
                    file,
                    format!("member {} is a {other:?} entry", rel.display()),
                ))
            }
        }
        // `unpack_in` refuses entries that would land outside the directory.
        entry.unpack_in(dir.path()).map_err(unreadable)?;
    }
    let sysfs = dir.path().join("sys");
    if !sysfs.join("bus/pci/devices").is_dir() {
        return Err(Error::parse(
            "snapshot",
            file.display().to_string(),
            "the archive holds no sys/bus/pci/devices",
        ));
    }
    Ok(Unpacked { _dir: dir, sysfs })
}
