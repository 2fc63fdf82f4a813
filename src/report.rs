//! `resetlab report`: one `.tar.gz` a user attaches to a bug report, safe on a
//! running Proxmox host. It never sends an SMU message (unless `smu_test`) and
//! never resets anything; the only writes it makes are the ones reading the
//! GPU's IP discovery table and MP1 firmware flags need (MM_INDEX/MM_INDEX_HI,
//! PCIE_INDEX2, COMMAND.MEMORY and `power/control` for the read, each put back
//! and journalled into the archive's `journal.jsonl`), and none of those on a
//! device a VM holds: that device is skipped with a note.
//!
//! Members (all under `resetlab-report/`):
//! - `summary.md`: what a person reads first;
//! - `snapshot.tar.gz`: the PCI part of sysfs (`resetlab snapshot`), replays with `--sysfs`;
//! - `discovery/<bdf>.bin`, `discovery/<bdf>.json`: the device's table, raw and decoded, and
//!   every register base resolved from it with where it came from;
//! - `smu/<bdf>.json`: the mailbox state read-only (response register, firmware flags), and
//!   `TestMessage` / `GetPmfwVersion` only with `smu_test`;
//! - `doctor.json`, `doctor.txt`: `resetlab doctor`;
//! - `versions.json`: kernel, resetlab and the commit it was built from, PMFW
//!   when read, BIOS from DMI (`<sysfs>/class/dmi/id`);
//! - `journal.jsonl`: this run's writes; `kmsg.txt`: kernel log lines of vfio, AMD-Vi, amdgpu
//!   and resetlab (its hook logs there) since boot, from `/dev/kmsg` read non-blocking.

use std::fs;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::amd::bases::{self, BaseSource, DeviceBases, ResolvedBase};
use crate::amd::regio::{Barrier, RegIo, RegPath};
use crate::amd::regs::RegsDb;
use crate::error::{Error, Result};
use crate::journal::Journal;
use crate::machine::Machine;
use crate::pci::mmio::{Access, BarMap, SystemFiles};
use crate::pci::session::MemoryDecoding;
use crate::pci::{Device, Topology};

/// What to put in the report.
#[derive(Debug, Clone)]
pub struct ReportOptions {
    pub out: PathBuf,
    /// Send TestMessage and GetPmfwVersion (the only messages the report ever sends).
    pub smu_test: bool,
    /// Bound of waiting for another resetlab holding a device's lock.
    pub lock_timeout: Duration,
    /// Replace an existing `out` (otherwise refused before any work).
    pub force: bool,
}

/// One member of the archive.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Member {
    pub name: String,
    pub bytes: u64,
}

/// What the report found on one GPU.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct GpuReport {
    pub device: String,
    pub asic: String,
    pub driver: Option<String>,
    /// Why the device was not read (a VM holds it, amdgpu owns it, not root).
    pub skipped: Option<String>,
    pub bases_source: BaseSource,
    pub bases: String,
    pub bases_notes: Vec<String>,
    pub mp1_version: Option<String>,
    pub resolved: Vec<ResolvedBase>,
    pub mailbox: Option<crate::amd::regs::ResolvedMailbox>,
    pub mailbox_path: Option<RegPath>,
    /// The response register as found (None when not read).
    pub response: Option<u32>,
    pub response_name: Option<String>,
    pub firmware_flags: Option<u32>,
    /// With `smu_test`: TestMessage's answer name and the PMFW version.
    pub test: Option<String>,
    pub pmfw_version: Option<String>,
}

/// The whole report.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Report {
    pub out: String,
    pub members: Vec<Member>,
    pub gpus: Vec<GpuReport>,
    pub doctor_failures: Vec<String>,
    pub kmsg_lines: usize,
    pub writes: usize,
    pub messages_sent: usize,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
struct Versions {
    kernel: Option<String>,
    resetlab: String,
    resetlab_commit: Option<String>,
    pmfw: Vec<(String, String)>,
    dmi: Vec<(String, String)>,
}

fn read_trim(p: &Path) -> Option<String> {
    fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// BIOS and board from DMI (`<sysfs>/class/dmi/id`), what exists of it.
pub fn dmi(sysfs: &Path) -> Vec<(String, String)> {
    let dir = sysfs.join("class/dmi/id");
    [
        "bios_vendor",
        "bios_version",
        "bios_date",
        "sys_vendor",
        "product_name",
        "board_name",
    ]
    .iter()
    .filter_map(|k| read_trim(&dir.join(k)).map(|v| (k.to_string(), v)))
    .collect()
}

/// Lines of the kernel log that concern passthrough: vfio, AMD-Vi (the
/// IOMMU), amdgpu and resetlab. `/dev/kmsg` is read non-blocking (each read
/// is one record, EAGAIN at the end; EPIPE when a record was overwritten,
/// then reading goes on); a regular file (the twin's) is read to its end.
/// At most `max` records are looked at, so a flood cannot hold the report.
pub fn kmsg_lines(path: &Path, max: usize) -> Result<Vec<String>> {
    let mut f = match fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) => return Err(Error::io("open", path, e)),
    };
    let mut out = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let mut pending = String::new();
    let mut records = 0;
    while records < max {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                records += 1;
                pending.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io("read", path, e)),
        }
    }
    for line in pending.lines() {
        // "pri,seq,usec,flags;message" (dev-kmsg ABI); continuation lines start with a blank.
        let msg = line.split_once(';').map_or(line, |(_, m)| m);
        let l = msg.to_ascii_lowercase();
        if ["vfio", "amd-vi", "amdgpu", "resetlab", "iommu"]
            .iter()
            .any(|k| l.contains(k))
        {
            out.push(line.to_string());
        }
    }
    Ok(out)
}

/// Builds the archive. Never sends an SMU message unless `smu_test`.
pub fn write(host: &Machine, regs: &RegsDb, opts: &ReportOptions) -> Result<Report> {
    if !opts.force && fs::symlink_metadata(&opts.out).is_ok() {
        return Err(Error::refused(format!(
            "{} exists; choose another --out, or --force to replace it",
            opts.out.display()
        )));
    }
    let work = tempfile::Builder::new()
        .prefix("resetlab-report-")
        .tempdir()
        .map_err(|e| Error::io("create temp dir", std::env::temp_dir(), e))?;
    let dir = work.path().join("resetlab-report");
    fs::create_dir_all(dir.join("discovery")).map_err(|e| Error::io("create", &dir, e))?;
    fs::create_dir_all(dir.join("smu")).map_err(|e| Error::io("create", &dir, e))?;
    let put = |name: &str, bytes: &[u8]| -> Result<()> {
        let p = dir.join(name);
        fs::write(&p, bytes).map_err(|e| Error::io("write", &p, e))
    };
    let json = |v: &dyn erased::Json| -> Vec<u8> { v.to_json() };
    let mut notes = vec![];

    // The snapshot first: it is the state as found, before the report touches anything.
    crate::snapshot::capture(&host.sysfs, &dir.join("snapshot.tar.gz"))?;

    let mut journal = Journal::new(false);
    journal.method = "report".into();
    let topo = Topology::scan(host)?;
    let mut gpus = vec![];
    let mut messages_sent = 0;
    let mut pmfw = vec![];
    for dev in topo.devices.values() {
        let Some(asic) = regs.by_pci_id(dev.vendor, dev.device) else {
            continue;
        };
        let g = gpu(host, dev, asic, opts, &mut journal, &mut messages_sent);
        let bdf = dev.bdf.to_string();
        match g {
            Ok((g, found)) => {
                if let Some(raw) = &found.raw {
                    put(&format!("discovery/{bdf}.bin"), raw)?;
                }
                #[derive(Serialize)]
                struct Decoded<'a> {
                    device: &'a str,
                    source: BaseSource,
                    from: &'a str,
                    cache: &'a Option<String>,
                    notes: &'a [String],
                    table: &'a Option<crate::amd::discovery::Discovery>,
                    resolved: &'a [ResolvedBase],
                }
                put(
                    &format!("discovery/{bdf}.json"),
                    &json(&Decoded {
                        device: &bdf,
                        source: found.source,
                        from: &found.from,
                        cache: &found.cache,
                        notes: &found.notes,
                        table: &found.discovery,
                        resolved: &g.resolved,
                    }),
                )?;
                put(&format!("smu/{bdf}.json"), &json(&g))?;
                if let Some(v) = &g.pmfw_version {
                    pmfw.push((bdf.clone(), v.clone()));
                }
                gpus.push(g);
            }
            Err(e) => notes.push(format!("{bdf}: {}", e.one_line())),
        }
    }

    let checks = crate::doctor::doctor(crate::doctor::DoctorOptions::on(host.clone()));
    put("doctor.json", &json(&checks))?;
    put("doctor.txt", crate::doctor::render(&checks).as_bytes())?;
    let doctor_failures: Vec<String> = checks
        .iter()
        .filter(|c| c.status == crate::doctor::Status::Fail)
        .map(|c| {
            format!(
                "{}{}: {}",
                c.name,
                c.subject
                    .as_deref()
                    .map(|s| format!(" ({s})"))
                    .unwrap_or_default(),
                c.detail
            )
        })
        .collect();

    let versions = Versions {
        kernel: host.kernel_release(),
        resetlab: env!("CARGO_PKG_VERSION").to_string(),
        resetlab_commit: crate::bench::provenance::commit(),
        pmfw,
        dmi: dmi(&host.sysfs),
    };
    put("versions.json", &json(&versions))?;

    let kmsg = match kmsg_lines(&host.kmsg(), 100_000) {
        Ok(l) => l,
        Err(e) => {
            notes.push(format!("kernel log not read: {}", e.one_line()));
            vec![]
        }
    };
    put("kmsg.txt", (kmsg.join("\n") + "\n").as_bytes())?;
    let mut jl = Vec::new();
    for r in &journal.records {
        jl.extend(serde_json::to_vec(r).unwrap_or_default());
        jl.push(b'\n');
    }
    put("journal.jsonl", &jl)?;
    let writes = journal.writes().count();

    let mut report = Report {
        out: opts.out.display().to_string(),
        members: vec![],
        gpus,
        doctor_failures,
        kmsg_lines: kmsg.len(),
        writes,
        messages_sent,
        notes,
    };
    put(
        "summary.md",
        summary(&report, &versions, opts.smu_test).as_bytes(),
    )?;

    // Members in the order a reader wants them, summary first.
    let order = [
        "summary.md",
        "snapshot.tar.gz",
        "discovery",
        "smu",
        "doctor.txt",
        "doctor.json",
        "versions.json",
        "journal.jsonl",
        "kmsg.txt",
    ];
    let tmp = opts.out.with_extension("partial");
    // Created new, never through a link planted at the name.
    let file = {
        use std::os::unix::fs::OpenOptionsExt;
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
            .map_err(|e| Error::io("create", &tmp, e))?
    };
    // A failed write leaves no .partial behind (the next run creates it new).
    let packed = (|| -> Result<()> {
        let enc = flate2::write::GzEncoder::new(file, flate2::Compression::default());
        let mut tar = tar::Builder::new(enc);
        tar.mode(tar::HeaderMode::Deterministic);
        for name in order {
            let p = dir.join(name);
            let mut files = vec![];
            if p.is_dir() {
                let mut rd: Vec<PathBuf> = fs::read_dir(&p)
                    .map_err(|e| Error::io("read directory", &p, e))?
                    .flatten()
                    .map(|e| e.path())
                    .collect();
                rd.sort();
                files.extend(rd);
            } else {
                files.push(p);
            }
            for f in files {
                let rel = f.strip_prefix(work.path()).unwrap_or(&f).to_path_buf();
                let bytes = fs::metadata(&f).map(|m| m.len()).unwrap_or(0);
                tar.append_path_with_name(&f, &rel)
                    .map_err(|e| Error::io("add to archive", &f, e))?;
                report.members.push(Member {
                    name: rel.display().to_string(),
                    bytes,
                });
            }
        }
        let enc = tar.into_inner().map_err(|e| Error::io("write", &tmp, e))?;
        enc.finish().map_err(|e| Error::io("write", &tmp, e))?;
        Ok(())
    })();
    if let Err(e) = packed {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fs::rename(&tmp, &opts.out).map_err(|e| Error::io("rename", &opts.out, e))?;
    Ok(report)
}

/// JSON for any serializable member (pretty, newline-terminated).
mod erased {
    pub trait Json {
        fn to_json(&self) -> Vec<u8>;
    }
    impl<T: serde::Serialize> Json for T {
        fn to_json(&self) -> Vec<u8> {
            let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
            v.push(b'\n');
            v
        }
    }
}

fn gpu(
    host: &Machine,
    dev: &Device,
    asic: &crate::amd::regs::Asic,
    opts: &ReportOptions,
    journal: &mut Journal,
    messages_sent: &mut usize,
) -> Result<(GpuReport, DeviceBases)> {
    let bar = asic.file.bar.index;
    let bdf = dev.bdf.to_string();
    let mut skipped = None;
    let amdgpu = dev.driver.as_deref() == Some("amdgpu");
    let holder = bases::vm_holder(host, dev);
    let root = nix::unistd::geteuid().is_root();
    let found = if let Some(who) = &holder {
        skipped = Some(format!("not read: {who} (a VM is using it)"));
        bases::known(host, dev)
            .unwrap_or_else(|| bases::resolve(host, dev, asic, bar, journal, false))
    } else if amdgpu {
        skipped =
            Some("amdgpu is bound: its sysfs ip_discovery is used, the mailbox is not read".into());
        bases::resolve(host, dev, asic, bar, journal, false)
    } else if !root {
        skipped = Some("not root: the device's registers were not read".into());
        bases::resolve(host, dev, asic, bar, journal, false)
    } else {
        bases::fetch(
            host,
            dev,
            asic,
            bar,
            journal,
            &bases::Fetch {
                read: true,
                refresh: false,
                lock_timeout: opts.lock_timeout,
            },
        )?
    };
    let resolved_asic = found.apply(asic)?;
    let mp1_version = found.discovery.as_ref().and_then(|d| d.mp1_version());
    let mp1 = mp1_version
        .clone()
        .filter(|v| resolved_asic.mailbox(Some(v)).is_ok());
    // Against the regs/ file as loaded (`asic`): the resolved base and the regs/ value side by side.
    let (_, resolved) = bases::resolve_bases(asic, &found);
    let mailbox = resolved_asic.mailbox(mp1.as_deref()).ok();
    let mut g = GpuReport {
        device: bdf.clone(),
        asic: asic.asic_name().to_string(),
        driver: dev.driver.clone(),
        skipped,
        bases_source: found.source,
        bases: found.label(),
        bases_notes: found.notes.clone(),
        mp1_version,
        resolved,
        mailbox: mailbox.clone(),
        mailbox_path: None,
        response: None,
        response_name: None,
        firmware_flags: None,
        test: None,
        pmfw_version: None,
    };
    if g.skipped.is_some() {
        return Ok((g, found));
    }
    if mailbox.is_none() {
        return Ok((g, found));
    };
    // The mailbox, read-only: the response register (and the firmware flags
    // through the index pair, put back after). Under the lock, D0, decoding on.
    let _lock = crate::reset::lock::lock(host, &dev.bdf, opts.lock_timeout)?;
    let prev = crate::reset::engine::wake(dev, journal, Duration::from_secs(5))?;
    let woken = Device::load(host, dev.bdf)?;
    let mut mem = MemoryDecoding::on(&woken, journal)?;
    let r = (|| -> Result<()> {
        let journal = mem.journal();
        let map = BarMap::open(&woken, bar, Access::ReadWrite, &SystemFiles::for_host(host))?;
        let io = RegIo::for_asic(&resolved_asic, map, dev.bdf)?
            .with_barrier(Barrier::for_sysfs(&host.sysfs));
        let mut smu = crate::amd::smu::Smu::with_io(&resolved_asic, mp1.as_deref(), io)?;
        g.mailbox_path = Some(smu.path());
        let v = smu.response_now(journal)?;
        g.response = v;
        g.response_name = v.and_then(|c| resolved_asic.response(c).map(|r| r.name.clone()));
        if let Ok(Some((_, raw))) = smu.firmware_running(journal) {
            g.firmware_flags = Some(raw);
        }
        if opts.smu_test {
            *messages_sent += 1;
            g.test = Some(match smu.test(journal) {
                Ok(r) => r.response_name.unwrap_or_else(|| "?".into()),
                Err(e) => e.one_line(),
            });
            *messages_sent += 1;
            if let Ok((_, Some(v))) = smu.version(journal) {
                g.pmfw_version = Some(v.to_string());
            }
        }
        Ok(())
    })();
    let r2 = mem.close();
    let r3 = crate::reset::engine::unwake(host, journal, &dev.bdf, prev);
    r?;
    r2?;
    r3?;
    Ok((g, found))
}

fn summary(r: &Report, v: &Versions, smu_test: bool) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(s, "# resetlab report\n");
    let _ = writeln!(
        s,
        "resetlab {}{}; kernel {}",
        v.resetlab,
        v.resetlab_commit
            .as_deref()
            .map(|c| format!(" (commit {c})"))
            .unwrap_or_default(),
        v.kernel.as_deref().unwrap_or("unknown")
    );
    let dmi: Vec<String> = v.dmi.iter().map(|(k, x)| format!("{k} {x}")).collect();
    let _ = writeln!(
        s,
        "DMI: {}\n",
        if dmi.is_empty() {
            "not readable".into()
        } else {
            dmi.join("; ")
        }
    );
    let _ = writeln!(
        s,
        "This report sent {} SMU message(s){} and reset nothing; it made {} write(s), all in journal.jsonl (index registers to read the tables, each put back).\n",
        r.messages_sent,
        if smu_test { " (--smu-test)" } else { "" },
        r.writes
    );
    for g in &r.gpus {
        let _ = writeln!(
            s,
            "## {} ({}, driver {})\n",
            g.device,
            g.asic,
            g.driver.as_deref().unwrap_or("none")
        );
        if let Some(k) = &g.skipped {
            let _ = writeln!(s, "- skipped: {k}");
        }
        let _ = writeln!(s, "- register bases from **{}**", g.bases);
        for n in &g.bases_notes {
            let _ = writeln!(s, "  - {n}");
        }
        if let Some(m) = &g.mp1_version {
            let _ = writeln!(s, "- MP1 version {m} (from the device's table)");
        }
        for b in &g.resolved {
            let _ = writeln!(
                s,
                "  - {} inst {} seg {}: {:#x} ({}){}",
                b.ip,
                b.instance,
                b.base_idx,
                b.base,
                b.source,
                if b.base != b.file {
                    format!(" — regs/ guessed {:#x}: DIFFERS", b.file)
                } else if b.source == BaseSource::Static && !b.file_confirmed {
                    " — UNCONFIRMED".to_string()
                } else {
                    String::new()
                }
            );
        }
        if let Some(mb) = &g.mailbox {
            let _ = writeln!(
                s,
                "- SMU mailbox (MP1 {}): msg {:#x} arg {:#x} resp {:#x} via {}",
                mb.mp1_version,
                mb.msg,
                mb.arg,
                mb.resp,
                g.mailbox_path.map_or("-".to_string(), |p| p.to_string())
            );
        }
        match g.response {
            Some(c) => {
                let _ = writeln!(
                    s,
                    "- response register now: {c:#x} ({})",
                    g.response_name.as_deref().unwrap_or("not a known code")
                );
            }
            None => {
                let _ = writeln!(s, "- response register: not read");
            }
        }
        if let Some(f) = g.firmware_flags {
            let _ = writeln!(
                s,
                "- MP1 firmware flags {f:#010x}: firmware {}",
                if f & 1 == 1 { "running" } else { "NOT running" }
            );
        }
        if let Some(t) = &g.test {
            let _ = writeln!(s, "- TestMessage: {t}");
        }
        if let Some(p) = &g.pmfw_version {
            let _ = writeln!(s, "- PMFW version {p}");
        }
        let _ = writeln!(s);
    }
    if r.gpus.is_empty() {
        let _ = writeln!(s, "No GPU the register database knows was found.\n");
    }
    let _ = writeln!(s, "## doctor\n");
    if r.doctor_failures.is_empty() {
        let _ = writeln!(s, "No check failed (doctor.txt has every check).\n");
    } else {
        for f in &r.doctor_failures {
            let _ = writeln!(s, "- FAIL {f}");
        }
        let _ = writeln!(s);
    }
    let _ = writeln!(
        s,
        "## kernel log\n\n{} line(s) of vfio, AMD-Vi/IOMMU, amdgpu and resetlab since boot in kmsg.txt.\n",
        r.kmsg_lines
    );
    for n in &r.notes {
        let _ = writeln!(s, "note: {n}");
    }
    let _ = writeln!(
        s,
        "## Members\n\nsummary.md, snapshot.tar.gz (replay: `resetlab --sysfs snapshot.tar.gz list`), discovery/ (raw .bin and decoded .json per GPU), smu/, doctor.txt, doctor.json, versions.json, journal.jsonl, kmsg.txt. docs/first-contact.md says what to send."
    );
    s
}
