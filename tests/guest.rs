//! Tier 3 of docs/testing.md: resetlab against a real Linux kernel's PCI sysfs, in a QEMU guest.
//!
//! Every scenario runs on two Debian kernels (target/vm/kernels, from tools/vm/setup.sh): bookworm's 6.1 and
//! trixie's 6.12. Each assertion below is one function taking the `Run` of a boot, and `on_both_kernels!`
//! makes a test of it per kernel (`bookworm_6_1::NAME`, `trixie_6_12::NAME`). The first test of a kernel
//! boots it once (tools/vm/run.sh: installs what is missing, builds the static binaries, boots the kernel
//! with the devices of tools/vm/topology and runs every scenario in `SCENARIOS`); the others assert on its
//! results. Boots never overlap (`BOOT_LOCK`). Where the kernels differ, a test asserts each one's own
//! behaviour (`Run::kernel`; docs/testing.md lists the differences).
//!
//! A guest that cannot be set up, oopses, crashes or hangs fails every test of its kernel, loudly: an oops
//! ends the guest at once (`oops=panic`), and the message quotes its first 30 lines and names the scenario
//! that was running; a hang ends at the boot's bound and names the last scenario started. These tests are
//! never skipped. `oops_*` boots a guest that crashes on purpose and checks that report.
//!
//! While the guest runs, a thread here answers the register accesses it makes through the kernel's real
//! `resource2` mmap of the ivshmem device (its BAR 2 is the host file `shm0.shm`).

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

use resetlab::amd::regs::RegsDb;
use resetlab::pci::mmio::{Access, BarMap};
use resetlab::sim::profile::SmuProfile;
use resetlab::sim::smu::{SmuEvent, SmuModel};

/// Scenarios of tools/vm/scenarios/, in the order the guest runs them. `multifunction` and `hook`
/// remove, rescan and rebind devices, so they come last.
const SCENARIOS: &[&str] = &[
    "sysfs_view",
    "snapshot",
    "ivshmem",
    "smu",
    "experiment",
    "runtime_pm",
    "multifunction",
    "reset",
    "bench",
    "resetlab_bench",
    "hook",
];

/// Bound on one kernel's boot with every scenario (setup and build excluded), in seconds. TCG runs them in
/// about 2.5 minutes on an idle 2-core machine and took 408 s on one shared by nine sessions (load 23;
/// docs/testing.md); the bound only stops a guest that hangs without an oops (an oops ends it at once).
const BOOT_BOUND_S: u64 = 1200;

/// The kernels of target/vm/kernels, in its order. `series` is what run.sh -k is given: a prefix of
/// exactly one line's KVER.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kernel {
    /// Debian bookworm's 6.1 (linux-image-amd64 of this machine's bookworm).
    V6_1,
    /// Debian trixie's 6.12 (the nearest Debian kernel to Proxmox VE 8/9's 6.8 and 6.14).
    V6_12,
}

impl Kernel {
    fn series(self) -> &'static str {
        match self {
            Kernel::V6_1 => "6.1.",
            Kernel::V6_12 => "6.12.",
        }
    }
    fn index(self) -> usize {
        self as usize
    }
}

/// One guest boot at a time: QEMU under TCG takes a whole core, and the machine has two. `BOOT_LOCK` orders
/// the boots of this test binary; `machine_boot_lock` those of every checkout on the machine.
static BOOT_LOCK: Mutex<()> = Mutex::new(());

/// How long a boot waits for another checkout's boot to end (its own bound is `BOOT_BOUND_S`).
const MACHINE_LOCK_BOUND_S: u64 = 1800;

/// An exclusive flock on `$TMPDIR/resetlab-guest-boot.lock`, held while QEMU runs: two checkouts testing at
/// once (a developer's tree and a fresh clone) take turns instead of sharing the cores. Polled, bounded.
fn machine_boot_lock() -> nix::fcntl::Flock<std::fs::File> {
    use nix::fcntl::{Flock, FlockArg};
    let path = std::env::temp_dir().join("resetlab-guest-boot.lock");
    let started = Instant::now();
    let mut said = false;
    loop {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return lock,
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {}
            Err((_, e)) => panic!("flock {}: {e}", path.display()),
        }
        if started.elapsed().as_secs() >= MACHINE_LOCK_BOUND_S {
            panic!(
                "another guest boot held {} for {MACHINE_LOCK_BOUND_S} s",
                path.display()
            );
        }
        if !said {
            let _ = writeln!(
                std::io::stderr(),
                "waiting for another checkout's guest boot to end ({})",
                path.display()
            );
            said = true;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Everything the guest reported.
struct Run {
    /// The kernel asked for, and what the guest said it runs (`uname -r`; empty if it never said).
    kernel: Kernel,
    uname: String,
    /// The scenarios asked for.
    scenarios: Vec<String>,
    out: PathBuf,
    /// run.sh's exit status (0 ok, 1 a scenario failed, 2 setup failed, 3 no exit reported, 124 timeout).
    status: Option<i32>,
    stderr: String,
    console: String,
    results: Vec<(String, String, Value)>,
    blobs: BTreeMap<(String, String), Vec<u8>>,
    ends: BTreeMap<String, i32>,
    /// Scenarios in the order the guest began them (`@@BEGIN`), and when run.sh's watcher saw each
    /// begin (seconds after QEMU's start; run.sh begun-times).
    begun: Vec<String>,
    begun_at: BTreeMap<String, f64>,
    exit: Option<i32>,
    bad_lines: Vec<String>,
    /// Requests the host-side ivshmem responder saw.
    shm_requests: Vec<u32>,
    /// What the host-side SMU model on shm0.shm saw.
    smu_events: Vec<SmuEvent>,
    /// Seconds from QEMU's start to its end (run.sh boot-seconds).
    boot_seconds: Option<f64>,
    /// When the guest oopsed: the console from the first oops line on (run.sh `oops`), and the seconds
    /// from QEMU's start to the watcher seeing it (run.sh oops-seconds; None if QEMU ended first).
    oops: Option<String>,
    oops_seen_s: Option<f64>,
    /// The bound this boot ran under.
    bound_s: u64,
    printed_console: AtomicBool,
}

impl Run {
    /// A boot that has not happened yet (nothing reported).
    fn new(kernel: Kernel, scenarios: &[&str], out: PathBuf, bound_s: u64) -> Run {
        Run {
            kernel,
            uname: String::new(),
            scenarios: scenarios.iter().map(|s| s.to_string()).collect(),
            out,
            status: None,
            stderr: String::new(),
            console: String::new(),
            results: Vec::new(),
            blobs: BTreeMap::new(),
            ends: BTreeMap::new(),
            begun: Vec::new(),
            begun_at: BTreeMap::new(),
            exit: None,
            bad_lines: Vec::new(),
            shm_requests: Vec::new(),
            smu_events: Vec::new(),
            boot_seconds: None,
            oops: None,
            oops_seen_s: None,
            bound_s,
            printed_console: AtomicBool::new(false),
        }
    }

    /// The scenario the guest was in when it stopped: the last one begun without an `@@END`; "init" when
    /// it began none; None when every scenario begun also ended.
    fn current_scenario(&self) -> Option<&str> {
        match self.begun.last() {
            None => Some("init"),
            Some(s) if !self.ends.contains_key(s) => Some(s),
            Some(_) => None,
        }
    }

    fn scenario_phrase(&self) -> String {
        match self.current_scenario() {
            Some(s) => match self.begun_at.get(s) {
                Some(t) => format!("during scenario {s} (begun {t:.1} s after QEMU started)"),
                None => format!("during scenario {s}"),
            },
            None => match self.begun.last() {
                Some(last) => format!("after scenario {last} ended (the last one started)"),
                None => "before any scenario".to_owned(),
            },
        }
    }

    /// On the guest's own clock (the console's printk timestamps): seconds from the running scenario's
    /// start (init's `resetlab-vm: @@BEGIN` kernel-log line) to the first oops line, and from that line to
    /// the console's last one (the kernel stopping).
    fn oops_timing(&self) -> Option<(f64, f64)> {
        let scenario = self.current_scenario()?;
        let oops_first = self.oops.as_deref()?.lines().next()?;
        let oops_t = printk_time(oops_first)?;
        let marker = format!("resetlab-vm: @@BEGIN {scenario}");
        let begin_t = self
            .console
            .lines()
            .filter(|l| l.trim_end().ends_with(&marker))
            .filter_map(printk_time)
            .next_back()?;
        let last_t = self.console.lines().filter_map(printk_time).next_back()?;
        Some((oops_t - begin_t, last_t - oops_t))
    }

    /// Why the boot as a whole failed, or None when the guest reported an exit. This is the message every
    /// test of the kernel fails with; `oops_*` asserts on it.
    fn boot_failure(&self) -> Option<String> {
        let k = if self.uname.is_empty() {
            format!("{} (asked for {}*)", "guest", self.kernel.series())
        } else {
            format!("guest kernel {}", self.uname)
        };
        let secs = self
            .boot_seconds
            .map(|s| format!("{s:.1} s"))
            .unwrap_or_else(|| "? s".to_owned());
        match (self.status, self.exit) {
            (Some(0 | 1), Some(_)) => None,
            (Some(4), _) => {
                let oops = self.oops.as_deref().unwrap_or("(no oops file)");
                let head: Vec<&str> = oops.lines().take(30).collect();
                let after = match (self.oops_timing(), self.current_scenario()) {
                    (Some((into, stop)), Some(s)) => format!(
                        "; on the guest's clock the oops came {into:.2} s into {s} and the kernel stopped {stop:.2} s after it"
                    ),
                    _ => String::new(),
                };
                Some(format!(
                    "{k} oopsed {}: QEMU ended at {secs}{after} (bound {} s). First {} lines of the oops:\n{}",
                    self.scenario_phrase(),
                    self.bound_s,
                    head.len(),
                    head.join("\n")
                ))
            }
            (Some(124), _) => Some(format!(
                "{k} did not finish within {} s; it hung {} (no oops on the console)",
                self.bound_s,
                self.scenario_phrase()
            )),
            (Some(2), _) => Some(
                "guest bench setup failed (tools/vm/run.sh exit 2): see run.sh stderr".to_owned(),
            ),
            (status, _) => Some(format!(
                "{k} ended after {secs} {} without reporting an exit (run.sh status {status:?})",
                self.scenario_phrase()
            )),
        }
    }

    /// Fails the calling test with `msg`; the first failure of a boot also prints the guest's console.
    fn fail(&self, msg: &str) -> ! {
        if !self.printed_console.swap(true, Ordering::SeqCst) {
            eprintln!("---- run.sh stderr ----\n{}", self.stderr);
            eprintln!(
                "---- guest console ({}/console.log) ----\n{}",
                self.out.display(),
                self.console
            );
            eprintln!("---- end of guest console ----");
        }
        panic!(
            "{msg}\n(guest output in {}: console.log, results.log; console printed by the first failing test)",
            self.out.display()
        );
    }

    /// The guest booted and reported an exit; a scenario's own failure is checked by its test.
    fn require_boot(&self) {
        if let Some(msg) = self.boot_failure() {
            self.fail(&msg)
        }
    }

    /// The scenario ran to its end with exit status 0.
    fn require_scenario(&self, scenario: &str) {
        self.require_boot();
        match self.ends.get(scenario) {
            Some(0) => {}
            Some(rc) => self.fail(&format!(
                "guest scenario {scenario} exited with status {rc}"
            )),
            None => self.fail(&format!("guest scenario {scenario} did not finish")),
        }
    }

    fn get(&self, scenario: &str, key: &str) -> Option<&Value> {
        self.results
            .iter()
            .find(|(s, k, _)| s == scenario && k == key)
            .map(|(_, _, v)| v)
    }

    fn value(&self, scenario: &str, key: &str) -> &Value {
        self.get(scenario, key)
            .unwrap_or_else(|| self.fail(&format!("guest scenario {scenario} reported no {key:?}")))
    }

    fn all(&self, scenario: &str, key: &str) -> Vec<&Value> {
        self.results
            .iter()
            .filter(|(s, k, _)| s == scenario && k == key)
            .map(|(_, _, v)| v)
            .collect()
    }

    /// A command the scenario ran with `run KEY CMD...`: asserts exit 0, returns its stdout.
    fn command_ok(&self, scenario: &str, key: &str) -> &str {
        let rec = self.value(scenario, key);
        if rec["rc"] != 0 {
            self.fail(&format!(
                "in the guest, `{}` exited with {}; stderr: {}",
                argv(rec),
                rec["rc"],
                rec["stderr"].as_str().unwrap_or("")
            ));
        }
        rec["stdout"].as_str().unwrap_or("")
    }

    /// A command the scenario ran with `run KEY CMD...`: asserts exit 0 and parses its stdout as JSON.
    fn command_json(&self, scenario: &str, key: &str) -> Value {
        let stdout = self.command_ok(scenario, key);
        serde_json::from_str(stdout).unwrap_or_else(|e| {
            let argv = argv(self.value(scenario, key));
            self.fail(&format!(
                "in the guest, `{argv}` printed no JSON ({e}); stdout: {stdout:?}"
            ))
        })
    }

    /// Name (tools/vm/topology) -> BDF the guest kernel gave the device.
    fn bdf(&self, name: &str) -> String {
        self.all("init", "device")
            .into_iter()
            .find(|d| d["name"] == name)
            .and_then(|d| d["bdf"].as_str())
            .map(str::to_owned)
            .unwrap_or_else(|| {
                self.fail(&format!(
                    "the guest found no device {name} of tools/vm/topology"
                ))
            })
    }
}

/// The timestamp of a console line from the kernel (`[   11.497928] ...`), in seconds.
fn printk_time(line: &str) -> Option<f64> {
    let rest = line.trim_start().strip_prefix('[')?;
    let (t, _) = rest.split_once(']')?;
    t.trim().parse().ok()
}

/// The command line of a `run` record, for messages.
fn argv(rec: &Value) -> String {
    let words = rec["argv"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>());
    words.unwrap_or_default().join(" ")
}

/// Decodes base64 (the guest's `base64` output, lines of 76), ignoring whitespace.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes().filter(|c| !c.is_ascii_whitespace()) {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => continue,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

fn gunzip(gz: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(gz), &mut out)?;
    Ok(out)
}

/// Parses results.log (tools/vm/guest/lib.sh describes the lines) into `run`.
fn parse_results(text: &str, run: &mut Run) {
    let mut blob: Option<(String, String, String)> = None;
    for line in text.lines().map(|l| l.trim_end_matches('\r')) {
        if let Some((scenario, key, data)) = blob.as_mut() {
            if line == "@@ENDBLOB" {
                match base64_decode(data).map(|gz| gunzip(&gz)) {
                    Some(Ok(bytes)) => {
                        run.blobs.insert((scenario.clone(), key.clone()), bytes);
                    }
                    Some(Err(e)) => run
                        .bad_lines
                        .push(format!("blob {scenario}/{key}: not gzip: {e}")),
                    None => run
                        .bad_lines
                        .push(format!("blob {scenario}/{key}: not base64")),
                }
                blob = None;
            } else {
                data.push_str(line);
            }
            continue;
        }
        let mut words = line.splitn(2, ' ');
        let (tag, rest) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
        match tag {
            "@@RESULT" => match serde_json::from_str::<Value>(rest) {
                Ok(v) => match (v["scenario"].as_str(), v["key"].as_str()) {
                    (Some(s), Some(k)) => {
                        run.results
                            .push((s.to_owned(), k.to_owned(), v["value"].clone()))
                    }
                    _ => run.bad_lines.push(line.to_owned()),
                },
                Err(_) => run.bad_lines.push(line.to_owned()),
            },
            "@@BLOB" => {
                let f: Vec<&str> = rest.split(' ').collect();
                match f.as_slice() {
                    [s, k, _len, "gzip"] => {
                        blob = Some(((*s).to_owned(), (*k).to_owned(), String::new()))
                    }
                    _ => run.bad_lines.push(line.to_owned()),
                }
            }
            "@@END" => match rest.rsplit_once(' ').map(|(s, rc)| (s, rc.parse::<i32>())) {
                Some((s, Ok(rc))) => {
                    run.ends.insert(s.to_owned(), rc);
                }
                _ => run.bad_lines.push(line.to_owned()),
            },
            "@@EXIT" => run.exit = rest.trim().parse().ok(),
            "@@BEGIN" => run.begun.push(rest.trim().to_owned()),
            "" => {}
            _ => run.bad_lines.push(line.to_owned()),
        }
    }
    if let Some((s, k, _)) = blob {
        run.bad_lines.push(format!("blob {s}/{k}: no @@ENDBLOB"));
    }
}

/// The host side of the ivshmem register: a request word at 0x80000 is answered with its NOT at 0x80004.
/// Reads and writes go through the page cache of the same file QEMU maps shared as the BAR.
fn respond(shm: &Path, stop: &AtomicBool) -> Vec<u32> {
    let mut seen = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        // Reopened every round: run.sh recreates the file before it starts QEMU.
        if let Ok(f) = OpenOptions::new().read(true).write(true).open(shm) {
            let mut word = [0u8; 4];
            // 0x80000/0x80004 (tools/vm/scenarios/ivshmem.sh): past the register BAR the SMU
            // model lays over the first 512 KiB, whose MM_DATA at 0x4 it rewrites.
            if f.read_exact_at(&mut word, 0x80000).is_ok() {
                let req = u32::from_le_bytes(word);
                if req != 0
                    && seen.last() != Some(&req)
                    && f.write_all_at(&(!req).to_le_bytes(), 0x80004).is_ok()
                {
                    seen.push(req);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    seen
}

/// The host side of the `smu` scenario: the twin's SMU model, laid out as phoenix's register BAR, on the
/// same file. run.sh removes the output directory and recreates the file before QEMU starts, so the
/// model (re)maps it whenever a 1 MiB file with a new inode appears. The GPU starts dirty; a mode 2
/// cleans it (GRBM_STATUS.GUI_ACTIVE goes to 0), so the guest's health check proves the reset ran.
fn serve_smu(shm: &Path, stop: &AtomicBool) -> Vec<SmuEvent> {
    use std::os::unix::fs::MetadataExt;
    let Ok(db) = RegsDb::embedded() else {
        return Vec::new();
    };
    let Ok(asic) = db.asic("phoenix") else {
        return Vec::new();
    };
    let mut cur: Option<(u64, BarMap, SmuModel)> = None;
    let mut events = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        match std::fs::metadata(shm) {
            Ok(m) if m.len() == 1 << 20 => {
                if cur.as_ref().map(|c| c.0) != Some(m.ino()) {
                    cur = BarMap::open_file(shm, 1 << 20, Access::ReadWrite)
                        .ok()
                        .and_then(|mut bar| {
                            let mut model =
                                SmuModel::new(asic, None, SmuProfile::default()).ok()?;
                            model.power_on(&mut bar).ok()?;
                            model.set_dirty(true);
                            Some((m.ino(), bar, model))
                        });
                }
            }
            _ => cur = None,
        }
        if let Some((_, bar, model)) = cur.as_mut() {
            if let Some(e) = model.step(bar, std::time::Instant::now()) {
                if e == SmuEvent::Mode2Done {
                    model.set_dirty(false);
                }
                events.push(e);
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    events
}

/// Boots `kernel` with `scenarios` (one at a time: `BOOT_LOCK`), serving the ivshmem BAR meanwhile, and
/// prints the one line `guest kernel: <uname -r>` straight to stderr (not through the test's captured
/// output, so that it shows in every `cargo test` and tools/test.sh run).
fn boot(kernel: Kernel, scenarios: &[&str], out: PathBuf, bound_s: u64) -> Run {
    let _one_at_a_time = BOOT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let _one_on_the_machine = machine_boot_lock();
    let stop = Arc::new(AtomicBool::new(false));
    let responder = {
        let (shm, stop) = (out.join("shm0.shm"), Arc::clone(&stop));
        std::thread::spawn(move || respond(&shm, &stop))
    };
    let smu = {
        let (shm, stop) = (out.join("shm0.shm"), Arc::clone(&stop));
        std::thread::spawn(move || serve_smu(&shm, &stop))
    };
    let started = Instant::now();
    let output = Command::new("bash")
        .arg(repo().join("tools/vm/run.sh"))
        .args(["-k", kernel.series()])
        .args(scenarios)
        .env("VM_OUT", &out)
        .env("VM_TIMEOUT", bound_s.to_string())
        .env_remove("VM_KVER")
        .stdin(Stdio::null())
        .output();
    let wall = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    let shm_requests = responder.join().unwrap_or_default();
    let smu_events = smu.join().unwrap_or_default();
    let (status, stderr) = match output {
        Ok(o) => (
            o.status.code(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        ),
        Err(e) => (None, format!("cannot run tools/vm/run.sh: {e}")),
    };
    let read = |name: &str| {
        std::fs::read(out.join(name)).map(|b| String::from_utf8_lossy(&b).into_owned())
    };
    let mut run = Run::new(kernel, scenarios, out.clone(), bound_s);
    run.status = status;
    run.stderr = stderr;
    run.console = read("console.log").unwrap_or_else(|e| format!("(no console.log: {e})"));
    run.shm_requests = shm_requests;
    run.smu_events = smu_events;
    run.boot_seconds = read("boot-seconds")
        .ok()
        .and_then(|s| s.trim().parse().ok());
    run.oops = read("oops").ok();
    run.oops_seen_s = read("oops-seconds")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok());
    for line in read("begun-times").unwrap_or_default().lines() {
        if let Some((s, t)) = line.split_once(' ') {
            if let Ok(t) = t.trim().parse() {
                run.begun_at.insert(s.to_owned(), t);
            }
        }
    }
    if let Ok(text) = read("results.log") {
        parse_results(&text, &mut run);
    }
    run.uname = run
        .get("init", "kernel")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let shown = if run.uname.is_empty() {
        format!(
            "unknown (asked for {}*; the guest never said)",
            kernel.series()
        )
    } else {
        run.uname.clone()
    };
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "guest kernel: {shown}");
    let _ = writeln!(
        err,
        "    ({} scenario(s), QEMU {} s, run.sh {:.1} s with setup and build, status {:?})",
        scenarios.len(),
        run.boot_seconds
            .map(|s| format!("{s:.1}"))
            .unwrap_or_else(|| "?".to_owned()),
        wall.as_secs_f64(),
        run.status
    );
    run
}

/// The boot of every scenario on `kernel`, made by the first test that asks.
fn guest(kernel: Kernel) -> &'static Run {
    static RUNS: [OnceLock<Run>; 2] = [OnceLock::new(), OnceLock::new()];
    RUNS[kernel.index()].get_or_init(|| {
        let dir = match kernel {
            Kernel::V6_1 => "target/vm/test",
            Kernel::V6_12 => "target/vm/test-6.12",
        };
        boot(kernel, SCENARIOS, repo().join(dir), BOOT_BOUND_S)
    })
}

/// Makes two tests of each `fn NAME(run: &Run)` (asserts on the kernel's boot of every scenario) and of
/// each `fn NAME(kernel: Kernel)` (boots on its own): `bookworm_6_1::NAME` and `trixie_6_12::NAME`. Test
/// names sort bookworm's first, so a run boots 6.1, asserts, then boots 6.12.
macro_rules! on_both_kernels {
    (shared_boot: [$($name:ident),* $(,)?], own_boot: [$($own:ident),* $(,)?] $(,)?) => {
        mod bookworm_6_1 {
            $( #[test] fn $name() { super::$name(super::guest(super::Kernel::V6_1)) } )*
            $( #[test] fn $own() { super::$own(super::Kernel::V6_1) } )*
        }
        mod trixie_6_12 {
            $( #[test] fn $name() { super::$name(super::guest(super::Kernel::V6_12)) } )*
            $( #[test] fn $own() { super::$own(super::Kernel::V6_12) } )*
        }
    };
}

/// The guest kernel's view of one device (scenario sysfs_view).
fn kernel_view(run: &Run) -> BTreeMap<String, Value> {
    run.require_scenario("sysfs_view");
    let view = run.value("sysfs_view", "kernel_view");
    let devices = view
        .as_array()
        .unwrap_or_else(|| run.fail("kernel_view is not an array"));
    devices
        .iter()
        .map(|d| (d["bdf"].as_str().unwrap_or_default().to_owned(), d.clone()))
        .collect()
}

fn kernel_methods(dev: &Value) -> Vec<String> {
    dev["reset_method"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// `resetlab list --json` output, keyed by BDF; checks the contract's shape on the way.
fn list_by_bdf(run: &Run, list: &Value, what: &str) -> BTreeMap<String, Value> {
    // `list --json` is {"schema_version", "devices": [...]} (docs/json.md).
    let arr = list
        .get("devices")
        .and_then(Value::as_array)
        .unwrap_or_else(|| run.fail(&format!("{what}: no devices array")));
    let mut by = BTreeMap::new();
    for d in arr {
        let bdf = d["bdf"]
            .as_str()
            .unwrap_or_else(|| run.fail(&format!("{what}: entry without bdf: {d}")));
        if by.insert(bdf.to_owned(), d.clone()).is_some() {
            run.fail(&format!("{what}: {bdf} listed twice"));
        }
    }
    by
}

const METHODS: &[&str] = &["flr", "af_flr", "pm", "bus", "d3cold", "remove_rescan"];

/// Where `resetlab list --json` (keyed by BDF) and the guest kernel's own view disagree.
fn list_vs_kernel(view: &BTreeMap<String, Value>, list: &BTreeMap<String, Value>) -> Vec<String> {
    let mut problems = Vec::new();
    let (kset, lset): (Vec<_>, Vec<_>) = (view.keys().collect(), list.keys().collect());
    if kset != lset {
        problems.push(format!("BDFs differ: kernel {kset:?}, resetlab {lset:?}"));
    }
    for (bdf, k) in view {
        let Some(r) = list.get(bdf) else { continue };
        for field in ["vendor", "device", "class", "driver", "iommu_group"] {
            if k[field] != r[field] {
                problems.push(format!(
                    "{bdf} {field}: kernel {}, resetlab {}",
                    k[field], r[field]
                ));
            }
        }
        let km = kernel_methods(k);
        if r["kernel_reset_methods"] != serde_json::json!(km) {
            problems.push(format!(
                "{bdf} kernel_reset_methods: kernel {km:?}, resetlab {}",
                r["kernel_reset_methods"]
            ));
        }
        if r.get("holders").is_none() {
            problems.push(format!("{bdf}: no `holders`"));
        }
        for m in METHODS {
            let e = &r["methods"][m];
            if !(e["available"].is_boolean() && e["reason"].is_string() && e["affects"].is_array())
            {
                problems.push(format!(
                    "{bdf} methods.{m}: want {{available, reason, affects}}, got {e}"
                ));
            }
        }
        // Function-level methods: the kernel's probe and resetlab's must agree.
        for m in ["flr", "af_flr", "pm"] {
            let kernel_has = km.iter().any(|x| x == m);
            if r["methods"][m]["available"].as_bool() != Some(kernel_has) {
                problems.push(format!(
                    "{bdf} {m}: kernel reset_method {km:?} (power_state {}), resetlab says {}",
                    k["power_state"], r["methods"][m]
                ));
            }
        }
    }
    problems
}

fn guest_boots_and_names_every_topology_device(run: &Run) {
    run.require_boot();
    if let Some(s) = run.boot_seconds {
        eprintln!("guest boot + {} scenarios: {s:.1} s", run.scenarios.len());
    }
    assert!(
        run.bad_lines.is_empty(),
        "malformed result lines: {:#?}",
        run.bad_lines
    );
    let errors = run.all("init", "error");
    if !errors.is_empty() {
        run.fail(&format!("guest init reported errors: {errors:?}"));
    }
    let topology =
        std::fs::read_to_string(repo().join("tools/vm/topology")).expect("read tools/vm/topology");
    let mut checked = 0;
    for line in topology.lines().map(|l| l.split('#').next().unwrap_or("")) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 4 || f[0].starts_with('%') || f[2] == "-" {
            continue;
        }
        let bdf = run.bdf(f[0]);
        let dev = run
            .all("init", "device")
            .into_iter()
            .find(|d| d["name"] == f[0])
            .cloned()
            .unwrap_or_default();
        if f.contains(&"+vfio") && dev["driver"] != "vfio-pci" {
            run.fail(&format!(
                "{} ({bdf}) is marked +vfio but bound to {}",
                f[0], dev["driver"]
            ));
        }
        checked += 1;
    }
    assert!(
        checked >= 10,
        "only {checked} PCI devices found in tools/vm/topology"
    );
    // The NIC stands for a device in use by a live host driver.
    let nic = run
        .all("init", "device")
        .into_iter()
        .find(|d| d["name"] == "nic0")
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        nic["driver"], "e1000e",
        "nic0 should be bound to its host driver"
    );
}

/// The guest runs the kernel it was asked for, and says so once (`guest kernel: …` on stderr).
fn guest_kernel_is_the_one_asked_for(run: &Run) {
    run.require_boot();
    if !run.uname.starts_with(run.kernel.series()) {
        run.fail(&format!(
            "asked for kernel {}*, the guest runs {:?}",
            run.kernel.series(),
            run.uname
        ));
    }
    let cmdline = run.value("init", "cmdline").as_str().unwrap_or_default();
    for want in ["oops=panic", "panic=-1"] {
        assert!(
            cmdline.split_whitespace().any(|w| w == want),
            "the guest kernel's command line lacks {want}: {cmdline}"
        );
    }
}

/// Drivers whose unbind races in the kernels here: none of them may be loaded in the guest, since
/// scenarios unbind and remove the devices they would drive. virtio_rng: 6.1's hwrng_unregister
/// NULL-dereferences in kthread_stop (FACTS.md, "Kernels for the guest tier"; seen in resetlab's bench).
const UNBIND_BUGS: &[&str] = &["virtio_rng"];

fn guest_loads_no_driver_with_a_known_unbind_bug(run: &Run) {
    run.require_boot();
    let modules = run.value("init", "modules").as_str().unwrap_or_default();
    for m in UNBIND_BUGS {
        if modules.split_whitespace().any(|x| x == *m) {
            run.fail(&format!(
                "module {m} is loaded in the guest ({modules}); its unbind is racy, see UNBIND_BUGS"
            ));
        }
    }
    let hwrng = run.value("init", "hwrng").as_str().unwrap_or_default();
    assert!(
        !hwrng.contains("virtio"),
        "a virtio hwrng registered ({hwrng:?}): is virtio_rng built in?"
    );
}

/// The bench's devices behave as FACTS.md ("QEMU 7.2 devices in a guest") says; if QEMU or the kernel
/// changes that, scenarios built on it must be revisited.
fn kernel_reset_methods_of_bench_devices(run: &Run) {
    let view = kernel_view(run);
    let expect = [
        ("nvme0", &["flr", "bus"][..]),
        ("vnet0", &["flr", "pm", "bus"]),
        ("nic0", &["pm", "bus"]),
        ("mf0", &["bus"]),
        ("mf1", &["pm"]),
        ("dp1", &["flr"]),
        ("rng0", &["flr", "pm", "bus"]),
        ("shm0", &["bus"]),
    ];
    for (name, methods) in expect {
        let bdf = run.bdf(name);
        let dev = view
            .get(&bdf)
            .unwrap_or_else(|| run.fail(&format!("kernel_view lacks {name} ({bdf})")));
        assert_eq!(
            kernel_methods(dev),
            methods,
            "reset_method of {name} ({bdf})"
        );
    }
    for (bdf, dev) in &view {
        assert!(
            dev["iommu_group"].is_u64(),
            "{bdf} has no IOMMU group: is intel-iommu on? {dev}"
        );
    }
}

/// `resetlab list --json` agrees with the guest kernel on every device.
fn list_json_matches_guest_kernel(run: &Run) {
    let view = kernel_view(run);
    let list = run.command_json("sysfs_view", "list");
    let by = list_by_bdf(run, &list, "resetlab list --json");
    let problems = list_vs_kernel(&view, &by);
    if !problems.is_empty() {
        run.fail(&format!(
            "resetlab list --json disagrees with the guest kernel:\n  {}",
            problems.join("\n  ")
        ));
    }
}

fn assert_errno(run: &Run, key: &str, errno: &str) {
    let v = run.value("multifunction", key);
    if v["ok"] != false || v["errno"] != errno {
        run.fail(&format!("multifunction {key}: want {errno}, got {v}"));
    }
}

/// The kernel's own behaviour on the 780M-like slot, before and after remove + rescan.
fn multifunction_fn0_gets_bus_and_reset_fails_with_enotty(run: &Run) {
    run.require_scenario("multifunction");
    let (f0, f1) = (run.bdf("mf0"), run.bdf("mf1"));
    for phase in ["before", "after"] {
        assert_eq!(
            run.value("multifunction", &format!("{phase}.fn0.reset_method")),
            "bus",
            "{phase}: fn0"
        );
        assert_eq!(
            run.value("multifunction", &format!("{phase}.fn1.reset_method")),
            "pm",
            "{phase}: fn1"
        );
        assert_errno(run, &format!("{phase}.fn0.reset"), "ENOTTY");
        let msg = &run.value("multifunction", &format!("{phase}.fn0.reset"))["message"];
        assert_eq!(
            msg, "Inappropriate ioctl for device",
            "{phase}: the message a shell shows"
        );
        assert_eq!(
            run.value("multifunction", &format!("{phase}.fn1.reset"))["ok"],
            true,
            "{phase}: fn1 pm reset"
        );
        assert_errno(run, &format!("{phase}.fn0.write_bus"), "EINVAL");
        assert_eq!(
            run.value(
                "multifunction",
                &format!("{phase}.fn0.reset_method_after_write")
            ),
            "bus"
        );
    }
    assert_eq!(
        run.value("multifunction", "removed"),
        true,
        "remove left a function behind"
    );
    assert_eq!(run.value("multifunction", "rescan")["ok"], true);
    assert_eq!(
        run.value("multifunction", "rescan.order"),
        &format!("{f0} {f1}"),
        "enumeration order on rescan"
    );
}

/// resetlab does not offer `bus` for fn0, and says why: its sibling.
fn multifunction_list_marks_bus_unavailable_because_of_sibling(run: &Run) {
    run.require_scenario("multifunction");
    let list = run.command_json("multifunction", "list");
    let by = list_by_bdf(run, &list, "resetlab list --json");
    let (f0, f1) = (run.bdf("mf0"), run.bdf("mf1"));
    let fn0 = by
        .get(&f0)
        .unwrap_or_else(|| run.fail(&format!("resetlab list lacks {f0}")));
    assert_eq!(
        fn0["kernel_reset_methods"],
        serde_json::json!(["bus"]),
        "{f0}"
    );
    let bus = &fn0["methods"]["bus"];
    assert_eq!(bus["available"], false, "{f0} methods.bus: {bus}");
    let reason = bus["reason"].as_str().unwrap_or("");
    let short = f1.strip_prefix("0000:").unwrap_or(&f1);
    assert!(
        reason.contains(short),
        "{f0} bus reason should name the sibling {f1}: {reason:?}"
    );
}

/// A snapshot taken in the guest replays on the host to the same `list --json`.
fn snapshot_from_guest_replays_on_host(run: &Run) {
    run.require_scenario("snapshot");
    let live = run.command_json("snapshot", "list");
    run.command_ok("snapshot", "snapshot");
    let tar = run
        .blobs
        .get(&("snapshot".to_owned(), "snapshot".to_owned()))
        .unwrap_or_else(|| run.fail("the guest sent no snapshot"));
    let path = run.out.join("snap.tar");
    std::fs::write(&path, tar).expect("write snap.tar");
    let host = Command::new(env!("CARGO_BIN_EXE_resetlab"))
        .arg("--sysfs")
        .arg(&path)
        .args(["list", "--json"])
        .output()
        .expect("run the host resetlab");
    assert!(
        host.status.success(),
        "host `resetlab --sysfs {} list --json` failed: {}",
        path.display(),
        String::from_utf8_lossy(&host.stderr)
    );
    let replay: Value = serde_json::from_slice(&host.stdout).unwrap_or_else(|e| {
        run.fail(&format!(
            "host replay printed no JSON ({e}): {}",
            String::from_utf8_lossy(&host.stdout)
        ))
    });
    let guest_replay = run.command_json("snapshot", "replay_list");
    for (what, other) in [("host replay", &replay), ("guest replay", &guest_replay)] {
        if other != &live {
            let (a, b) = (
                list_by_bdf(run, &live, "live list"),
                list_by_bdf(run, other, what),
            );
            let diff: Vec<String> = a
                .keys()
                .chain(b.keys())
                .filter(|k| a.get(*k) != b.get(*k))
                .map(|k| {
                    format!(
                        "{k}:\n    guest live: {:?}\n    {what}: {:?}",
                        a.get(k),
                        b.get(k)
                    )
                })
                .collect();
            run.fail(&format!(
                "{what} of the snapshot differs from the guest's list:\n  {}",
                diff.join("\n  ")
            ));
        }
    }
}

/// The kernel resets a runtime-suspended (D3hot) vfio-pci device through `reset`, even with `pm` alone:
/// reset_store() wakes it first. A tool that refuses `pm` because of D3 should wake it instead.
fn runtime_suspended_vfio_device_resets_with_pm(run: &Run) {
    run.require_scenario("runtime_pm");
    let v = |k: &str| run.value("runtime_pm", k);
    assert_eq!(v("driver"), "vfio-pci");
    assert_eq!(
        v("power_state.before"),
        "D3hot",
        "vfio-pci should have runtime-suspended the idle rng1"
    );
    assert_eq!(v("reset_method.before"), "flr pm bus");
    assert_eq!(v("set_pm")["ok"], true, "{}", v("set_pm"));
    assert_eq!(
        v("reset")["ok"],
        true,
        "pm reset from D3hot: {}",
        v("reset")
    );
    assert_eq!(v("set_default")["ok"], true, "{}", v("set_default"));
    assert_eq!(v("reset_method.after"), "flr pm bus");
}

/// A guest write through the kernel's resource2 mmap reaches a host process, and its answer comes back.
fn ivshmem_bar_roundtrip_between_guest_mmap_and_host(run: &Run) {
    run.require_scenario("ivshmem");
    assert_eq!(
        run.value("ivshmem", "resource2.size"),
        1 << 20,
        "BAR 2 = the 1 MiB backend"
    );
    assert_ne!(
        run.value("ivshmem", "resource2.read")["rc"],
        0,
        "read(2) of a memory BAR's resource2 should fail"
    );
    assert_eq!(
        run.value("ivshmem", "enable")["ok"],
        true,
        "enable the device (memory decoding)"
    );
    let req = run
        .value("ivshmem", "request")
        .as_u64()
        .unwrap_or_else(|| run.fail("no numeric request"));
    let req = u32::try_from(req).unwrap_or_else(|_| run.fail("request over 32 bits"));
    assert_eq!(
        run.value("ivshmem", "write")["ok"],
        true,
        "guest mmio write"
    );
    assert!(
        run.shm_requests.contains(&req),
        "the host never saw the guest's request {req:#x} in shm0.shm (saw {:x?})",
        run.shm_requests
    );
    let answer = run.value("ivshmem", "answer");
    assert_eq!(
        answer["ok"], true,
        "the guest never read the host's answer: {answer}"
    );
    assert_eq!(
        answer["value"], !req,
        "the guest read {} for request {req:#x}",
        answer["value"]
    );
}

/// `resetlab smu` through the guest kernel's real mmap of a BAR, answered by the twin's SMU model on the
/// host: the firmware flags over the SMN pair, TestMessage, the version, and a `send` without `--commit`
/// that only records its writes.
fn smu_client_talks_to_the_host_model_through_the_guest_mmap(run: &Run) {
    run.require_scenario("smu");
    assert_eq!(
        run.value("smu", "driver"),
        &Value::Null,
        "shm0 has no driver: the guards pass it without --force"
    );
    let t = run.command_json("smu", "smu_test");
    assert_eq!(t["firmware_running"], true, "{t}");
    assert_eq!(t["replies"][0]["message"], "TestMessage", "{t}");
    assert_eq!(t["replies"][0]["response"], 1, "{t}");
    let v = run.command_json("smu", "smu_version");
    assert_eq!(
        v["pmfw_version"]["raw"],
        SmuProfile::default().pmfw_version,
        "{v}"
    );
    let dry = run.command_json("smu", "smu_send_dry");
    assert_eq!(dry["dry_run"], true, "{dry}");
    assert!(
        dry["writes"]
            .as_array()
            .is_some_and(|w| w.len() >= 3 && w.iter().all(|x| x["dry_run"] == true)),
        "{dry}"
    );
    let mode2 = run
        .smu_events
        .iter()
        .filter(|e| **e == SmuEvent::Mode2Started)
        .count();
    assert_eq!(
        mode2, 1,
        "only the reset sends mode 2 (the dry-run send must not): {:?}",
        run.smu_events
    );
}

/// `resetlab reset --method smu_mode2` in the guest: mode 2 answered, the vendor health checks pass
/// (GRBM_STATUS idle only after the host model saw the reset), COMMAND as found.
fn smu_mode2_reset_through_the_guest_mmap_is_healthy(run: &Run) {
    run.require_scenario("smu");
    let r = run.command_json("smu", "reset");
    assert_eq!(r["success"], true, "{r:#}");
    let one = &r["runs"][0];
    assert_eq!(one["method"], "smu_mode2", "{one}");
    let items = one["health"]["items"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for name in [
        "bar_alive",
        "ifwi_ready",
        "smu_fw_running",
        "smu_responds",
        "gfx_idle",
    ] {
        let ok = items.iter().any(|i| i["name"] == name && i["ok"] == true);
        assert!(ok, "health item {name} missing or failed: {one}");
    }
    assert!(
        run.smu_events.contains(&SmuEvent::Mode2Done),
        "the host model never finished a mode 2: {:?}",
        run.smu_events
    );
    assert_eq!(
        run.value("smu", "command.before"),
        run.value("smu", "command.after"),
        "COMMAND restored"
    );
}

/// The comparison itself, on made-up data: silence on agreement, one line per disagreement.
#[test]
fn list_vs_kernel_reports_each_disagreement() {
    use serde_json::json;
    let kernel = json!({"bdf": "0000:04:00.0", "vendor": "1b36", "device": "0005", "class": "00ff00",
        "driver": "vfio-pci", "iommu_group": 11, "reset_method": ["bus"], "power_state": "D0"});
    let method = |available: bool| json!({"available": available, "reason": "r", "affects": []});
    let mut entry = json!({"bdf": "0000:04:00.0", "vendor": "1b36", "device": "0005", "class": "00ff00",
        "driver": "vfio-pci", "iommu_group": 11, "kernel_reset_methods": ["bus"], "holders": [],
        "methods": {"flr": method(false), "af_flr": method(false), "pm": method(false),
                    "bus": method(false), "d3cold": method(false), "remove_rescan": method(true)}});
    let view = BTreeMap::from([("0000:04:00.0".to_owned(), kernel)]);
    let list = |e: &Value| BTreeMap::from([("0000:04:00.0".to_owned(), e.clone())]);
    assert_eq!(list_vs_kernel(&view, &list(&entry)), Vec::<String>::new());

    entry["driver"] = Value::Null;
    entry["methods"]["pm"]["available"] = json!(true);
    entry["kernel_reset_methods"] = json!([]);
    if let Some(o) = entry.as_object_mut() {
        o.remove("holders");
    }
    entry["methods"]["d3cold"] = json!({"available": true});
    let problems = list_vs_kernel(&view, &list(&entry));
    assert_eq!(problems.len(), 5, "{problems:#?}");
    for needle in [
        "driver",
        "kernel_reset_methods",
        "holders",
        "methods.d3cold",
        " pm: ",
    ] {
        assert!(
            problems.iter().any(|p| p.contains(needle)),
            "no problem about {needle}: {problems:#?}"
        );
    }
    let other = BTreeMap::from([("0000:04:00.1".to_owned(), entry)]);
    assert!(list_vs_kernel(&view, &other)[0].starts_with("BDFs differ"));
}

#[test]
fn base64_decode_matches_known_vectors() {
    assert_eq!(base64_decode("").as_deref(), Some(&b""[..]));
    assert_eq!(base64_decode("Zm9v").as_deref(), Some(&b"foo"[..]));
    assert_eq!(base64_decode("Zm9vYg==\n").as_deref(), Some(&b"foob"[..]));
    assert_eq!(base64_decode("Zm9v\nYmE=").as_deref(), Some(&b"fooba"[..]));
    assert_eq!(base64_decode("Zm9v!"), None);
}

/// The experiment runner on a real kernel's mmap: e1000e's CTRL.RST set through BAR 0 and polled
/// until the device clears it.
fn experiment_e1000e_ctrl_rst_through_the_kernels_mmap(run: &Run) {
    run.require_scenario("experiment");
    let plan = run.command_json("experiment", "dry");
    assert_eq!(plan["bar"]["index"], 0, "{plan}");
    let refused = run.value("experiment", "refused");
    assert_eq!(
        refused["rc"], 3,
        "a live driver must be refused without --force: {refused}"
    );
    // With --force the kernel itself refuses to map a region the driver holds (STRICT_DEVMEM).
    let strict = run.value("experiment", "strict_devmem");
    assert_eq!(strict["rc"], 1, "{strict}");
    let out = strict["stdout"].as_str().unwrap_or("");
    assert!(
        out.contains("os error 22") && out.contains("iomem=relaxed"),
        "EINVAL explained: {strict}"
    );
    assert_eq!(run.value("experiment", "unbound_driver"), &Value::Null);
    let rep = run.command_json("experiment", "commit");
    assert_eq!(rep["completed"], true, "{rep}");
    let steps = rep["steps"].as_array().expect("steps");
    let modify = steps
        .iter()
        .find(|s| s["op"].as_str().is_some_and(|o| o.starts_with("modify")))
        .unwrap_or_else(|| run.fail(&format!("no modify step: {rep}")));
    assert_eq!(
        modify["written"].as_u64().unwrap() & 0x0400_0000,
        0x0400_0000,
        "RST set: {modify}"
    );
    let poll = steps
        .iter()
        .find(|s| s["op"].as_str().is_some_and(|o| o.starts_with("poll")))
        .unwrap_or_else(|| run.fail(&format!("no poll step: {rep}")));
    assert_eq!(
        poll["read"].as_u64().unwrap() & 0x0400_0000,
        0,
        "RST cleared by the device: {poll}"
    );
    run.command_json("experiment", "diff");
    assert_eq!(run.value("experiment", "rebound_driver"), "e1000e");
}

/// `resetlab bench` in the guest: rng0 through flr, kernel:flr, pm, bus and remove_rescan, 20 cycles,
/// interleaved. Every trial healthy, the spec floors kept, the device back on vfio-pci; the host
/// re-makes the reports from the trials the guest sent (target/vm/test/resetlab_bench/) and prints the table
/// docs/bench.md quotes.
fn bench_in_the_guest_runs_every_method_20_times_within_the_spec_floors(run: &Run) {
    run.require_scenario("resetlab_bench");
    let rec = run.value("resetlab_bench", "bench");
    if rec["rc"] != 0 {
        run.fail(&format!(
            "resetlab bench in the guest exited {}: {}",
            rec["rc"],
            rec["stderr"].as_str().unwrap_or("")
        ));
    }
    assert_eq!(run.value("resetlab_bench", "driver.before"), "vfio-pci");
    assert_eq!(
        run.value("resetlab_bench", "driver.after"),
        "vfio-pci",
        "remove_rescan rebinds it"
    );
    let dir = run.out.join("resetlab_bench");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create target/vm/test/bench");
    for key in ["trials", "meta"] {
        let bytes = run
            .blobs
            .get(&("resetlab_bench".to_owned(), key.to_owned()))
            .unwrap_or_else(|| run.fail(&format!("the guest sent no resetlab_bench {key}")));
        let name = if key == "trials" {
            "trials.jsonl"
        } else {
            "meta.json"
        };
        std::fs::write(dir.join(name), bytes).expect("write bench blob");
    }
    let (meta, trials) = resetlab::bench::load(&dir).unwrap_or_else(|e| run.fail(&e.one_line()));
    let methods = ["flr", "kernel:flr", "pm", "bus", "remove_rescan"];
    assert_eq!(meta.methods, methods);
    assert_eq!(meta.stopped, None);
    // One warm-up per method first (not in the statistics), then 20 cycles.
    assert_eq!(trials.len(), 21 * methods.len());
    for (i, t) in trials.iter().enumerate() {
        assert_eq!(
            t.warmup,
            i < methods.len(),
            "trial {i}: warm-ups come first"
        );
    }
    assert!(meta.warmup);
    // Spec floors resetlab itself keeps (docs/bench.md): FLR 100 ms, PM two d3hot_delay of 10 ms, SBR
    // 2 ms held + 100 ms after; its sleeps run on the clock the phases are measured with. kernel:flr's
    // 100 ms is the guest kernel's msleep (jiffies), which TCG's tick catch-up can shorten against the
    // monotonic clock (94 ms seen): reported in docs/bench.md, not asserted.
    let floor = |m: &str| match m {
        "flr" => 100.0,
        "pm" => 20.0,
        "bus" => 102.0,
        _ => 0.0,
    };
    for (i, t) in trials.iter().enumerate() {
        assert_eq!(t.method, methods[i % methods.len()], "interleaved");
        assert!(
            t.success,
            "trial {} ({}, cycle {}): {:?}",
            t.seq, t.method, t.cycle, t.reason
        );
        assert!(
            t.phases.reset >= floor(&t.method),
            "{} reset phase {} ms is under its spec floor",
            t.method,
            t.phases.reset
        );
    }
    let s = resetlab::bench::report::write_all(&dir, &meta, &trials)
        .unwrap_or_else(|e| run.fail(&e.one_line()));
    eprintln!(
        "{}",
        resetlab::bench::report::terminal(&meta, &s, Some(&dir))
    );
    let (h, r) = {
        let head: Vec<String> = ["method", "phase", "median ms", "p95 ms"]
            .iter()
            .map(|x| x.to_string())
            .collect();
        let rows: Vec<Vec<String>> = s
            .methods
            .iter()
            .flat_map(|m| {
                m.phases.iter().map(move |p| {
                    vec![
                        m.method.clone(),
                        p.phase.clone(),
                        resetlab::bench::report::fmt_ms(p.dist.median),
                        resetlab::bench::report::opt_ms(p.dist.p95),
                    ]
                })
            })
            .collect();
        (head, rows)
    };
    eprintln!("{}", resetlab::bench::report::text_table(&h, &r));
}

// ---- scenario `reset`: resetlab's reset engine against the real kernel ----------------------------------

/// A `resetlab reset --json` the reset scenario ran: exit status, report (Null when it printed none).
fn reset_report(run: &Run, key: &str) -> (i64, Value) {
    run.require_scenario("reset");
    let rec = run.value("reset", key);
    let rc = rec["rc"]
        .as_i64()
        .unwrap_or_else(|| run.fail(&format!("reset {key}: no exit status: {rec}")));
    let stdout = rec["stdout"].as_str().unwrap_or("");
    let report = if stdout.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(stdout).unwrap_or_else(|e| {
            run.fail(&format!(
                "reset {key}: `{}` printed no JSON ({e})",
                argv(rec)
            ))
        })
    };
    (rc, report)
}

/// The kernel's view of a device (lib.sh `kview`) the scenario reported under `key`.
fn kview<'a>(run: &'a Run, key: &str) -> &'a Value {
    run.value("reset", key)
}

/// The kernel's power state says the device is usable: D0, or D3hot because its driver (vfio-pci)
/// runtime-suspended it while idle.
fn powered(view: &Value) -> bool {
    view["power_state"] == "D0"
        || (view["power_state"] == "D3hot" && view["runtime_status"] == "suspended")
}

/// The method ran, the report says healthy, and the kernel agrees: the device is there, bound as
/// before, powered, with its BARs where they were.
fn assert_reset_healthy(run: &Run, key: &str, method: &str) -> Value {
    let (rc, report) = reset_report(run, key);
    let r = &report["runs"][0];
    if rc != 0 || report["success"] != true || report["method"] != method {
        run.fail(&format!("reset {key}: exit {rc}, report {report}"));
    }
    assert_eq!(r["attempted"], true, "{key}: {r}");
    assert_eq!(r["error"], Value::Null, "{key}: {r}");
    assert_eq!(
        r["health"]["healthy"], true,
        "{key}: health {}",
        r["health"]
    );
    let (before, after) = (
        kview(run, &format!("{key}.before")),
        kview(run, &format!("{key}.after")),
    );
    assert_eq!(after["present"], true, "{key}: device gone after: {after}");
    assert_eq!(after["driver"], before["driver"], "{key}: driver changed");
    assert!(powered(after), "{key}: power after: {after}");
    assert_eq!(after["resource"], before["resource"], "{key}: BARs moved");
    report
}

fn reset_raw_flr_on_nvme_and_virtio_leaves_them_healthy(run: &Run) {
    for key in ["flr.nvme", "flr.virtio"] {
        let report = assert_reset_healthy(run, key, "flr");
        let r = &report["runs"][0];
        assert_eq!(r["verdict"]["reason"], "DEVCAP.FLR is set", "{key}");
        assert!(
            r["outcome"]["did"]
                .as_str()
                .unwrap_or("")
                .contains("BCR_FLR"),
            "{key}: {r}"
        );
        // The FLR write itself went through the journal: DEVCTL with bit 15.
        let flr_write = report["writes"].as_array().and_then(|w| {
            w.iter().find(|w| {
                w["target"] == "config"
                    && w["value"]
                        .as_str()
                        .and_then(|v| u32::from_str_radix(v.trim_start_matches("0x"), 16).ok())
                        .is_some_and(|v| v & 0x8000 != 0)
            })
        });
        assert!(
            flr_write.is_some(),
            "{key}: no DEVCTL.BCR_FLR write: {}",
            report["writes"]
        );
    }
}

fn reset_kernel_flr_on_nvme_goes_through_reset_method_and_puts_it_back(run: &Run) {
    let report = assert_reset_healthy(run, "kernel_flr.nvme", "kernel:flr");
    let writes: Vec<(String, String)> = report["writes"]
        .as_array()
        .map(|w| {
            w.iter()
                .map(|w| {
                    let p = w["path"].as_str().unwrap_or("");
                    let attr = p.rsplit('/').next().unwrap_or("").to_owned();
                    (attr, w["value"].as_str().unwrap_or("").to_owned())
                })
                .filter(|(a, _)| a == "reset" || a == "reset_method")
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        writes,
        [
            ("reset_method".to_owned(), "flr".to_owned()),
            ("reset".to_owned(), "1".to_owned()),
            ("reset_method".to_owned(), "flr bus".to_owned()),
        ],
        "kernel:flr writes"
    );
}

fn reset_pm_on_e1000e_parked_on_vfio_is_healthy(run: &Run) {
    assert_eq!(kview(run, "pm.e1000e.before")["driver"], "vfio-pci");
    let report = assert_reset_healthy(run, "pm.e1000e", "pm");
    let did = report["runs"][0]["outcome"]["did"].as_str().unwrap_or("");
    assert!(did.contains("D3hot"), "{did}");
}

fn reset_bus_behind_a_downstream_port_and_a_root_port(run: &Run) {
    for (key, port) in [("bus.downstream", "dp0"), ("bus.root", "rp6")] {
        let report = assert_reset_healthy(run, key, "bus");
        let r = &report["runs"][0];
        assert_eq!(
            r["verdict"]["affects"],
            serde_json::json!([]),
            "{key}: alone on its bus"
        );
        let port = run.bdf(port);
        let did = r["outcome"]["did"].as_str().unwrap_or("");
        assert!(
            did.contains(&port),
            "{key}: the SBR should be at {port}: {did}"
        );
        let bridge_writes = report["writes"]
            .as_array()
            .map(|w| {
                w.iter()
                    .filter(|w| w["device"] == port.as_str() && w["offset"] == 0x3e)
                    .count()
            })
            .unwrap_or(0);
        assert_eq!(
            bridge_writes, 2,
            "{key}: BRIDGE_CONTROL set and cleared at {port}"
        );
    }
}

/// QEMU 7.2's pcie-root-port at 16 GT/s claims Data Link Layer Link Active reporting but never sets
/// DLLLA: the kernel's bus reset gives up after 1 s (ENOTTY), and resetlab's wait times out the same
/// way; the device is still there and restored.
fn reset_bus_behind_a_root_port_without_dllla_fails_like_the_kernel(run: &Run) {
    let (rc, report) = reset_report(run, "bus.root_dllla");
    let r = &report["runs"][0];
    assert_eq!(rc, 1, "{report}");
    assert_eq!(r["error_kind"], "timeout", "{r}");
    assert!(r["error"].as_str().unwrap_or("").contains("DLLLA"), "{r}");
    let (rc, report) = reset_report(run, "kernel_bus.root_dllla");
    let r = &report["runs"][0];
    assert_eq!(rc, 1, "{report}");
    let err = r["error"].as_str().unwrap_or("");
    assert!(
        err.contains("os error 25") && err.contains("dmesg"),
        "{err}"
    );
    // drivers/pci/pci.c pci_bridge_wait_for_secondary_bus(): 6.1 prints a fixed "1000 msec"; 6.12.y prints
    // the delay it was given (100 ms here), since "PCI: Print the actual delay time in
    // pci_bridge_wait_for_secondary_bus()" (v6.16, backported to 6.12 stable). docs/testing.md.
    let want = match run.kernel {
        Kernel::V6_1 => "Data Link Layer Link Active not set in 1000 msec",
        Kernel::V6_12 => "Data Link Layer Link Active not set in 100 msec",
    };
    let dmesg = run.value("reset", "kernel_bus.root_dllla.dmesg");
    assert!(
        dmesg.as_str().unwrap_or("").contains(want),
        "kernel {} log should say {want:?}: {dmesg}",
        run.uname
    );
    for key in ["bus.root_dllla", "kernel_bus.root_dllla"] {
        let (before, after) = (
            kview(run, &format!("{key}.before")),
            kview(run, &format!("{key}.after")),
        );
        assert_eq!(after["present"], true, "{key}");
        assert_eq!(after["driver"], before["driver"], "{key}");
        assert_eq!(after["resource"], before["resource"], "{key}");
        assert!(powered(after), "{key}: {after}");
    }
}

/// fn0 of the two-function slot: the kernel lists only `bus`. resetlab declines and says why; forced,
/// it asks the kernel, whose ENOTTY (reset) and EINVAL (reset_method ← bus) come back explained.
fn reset_kernel_on_multifunction_fn0_explains_enotty_and_einval(run: &Run) {
    let (rc, report) = reset_report(run, "mf.kernel");
    let r = &report["runs"][0];
    assert_eq!((rc, &r["attempted"]), (1, &Value::Bool(false)), "{report}");
    let reason = r["verdict"]["reason"].as_str().unwrap_or("");
    assert!(
        reason.contains("siblings") && reason.contains("ENOTTY"),
        "{reason}"
    );

    let (rc, report) = reset_report(run, "mf.kernel_forced");
    let r = &report["runs"][0];
    assert_eq!((rc, &r["attempted"]), (1, &Value::Bool(true)), "{report}");
    let err = r["error"].as_str().unwrap_or("");
    assert!(
        err.contains("Inappropriate ioctl for device") && err.contains("os error 25"),
        "{err}"
    );
    assert!(
        err.contains("siblings"),
        "the explanation names the cause: {err}"
    );
    assert_eq!(r["error_kind"], "system", "{r}");

    let (rc, report) = reset_report(run, "mf.kernel_bus_forced");
    let r = &report["runs"][0];
    assert_eq!(rc, 1, "{report}");
    let err = r["error"].as_str().unwrap_or("");
    assert!(
        err.contains("reset_method") && err.contains("os error 22") && err.contains("siblings"),
        "{err}"
    );
    // The kernel kept its list (the write was refused), and nothing else was written.
    assert_eq!(run.value("reset", "mf.reset_method_after"), "bus");
    for key in ["mf.kernel", "mf.kernel_forced", "mf.kernel_bus_forced"] {
        let after = kview(run, &format!("{key}.after"));
        assert_eq!(
            (&after["present"], &after["driver"]),
            (&Value::Bool(true), &Value::from("vfio-pci"))
        );
    }
}

/// remove + rescan of the whole slot: refused while fn1 has its live e1000e driver; forced, every
/// function comes back with the same BARs and driver (vfio-pci on fn0, e1000e on fn1).
fn reset_remove_rescan_of_the_slot_brings_every_function_back(run: &Run) {
    let (f0, f1) = (run.bdf("mf0"), run.bdf("mf1"));
    let (rc, report) = reset_report(run, "rr.slot");
    let r = &report["runs"][0];
    // A safety refusal (issue 19): exit 3, the report still on stdout.
    assert_eq!((rc, &r["attempted"]), (3, &Value::Bool(false)), "{report}");
    assert_eq!(r["verdict"]["refused"], true, "{report}");
    let reason = r["verdict"]["reason"].as_str().unwrap_or("");
    assert!(reason.contains(&format!("{f1} (e1000e)")), "{reason}");
    assert_eq!(kview(run, "rr.slot.after")["present"], true);
    assert_eq!(kview(run, "rr.slot.before.fn1")["driver"], "e1000e");

    let report = assert_reset_healthy(run, "rr.slot_forced", "remove_rescan");
    let r = &report["runs"][0];
    assert_eq!(r["verdict"]["affects"], serde_json::json!([f1]), "{r}");
    assert_eq!(kview(run, "rr.slot_forced.after")["driver"], "vfio-pci");
    let (fn1_before, fn1_after) = (
        kview(run, "rr.slot.before.fn1"),
        kview(run, "rr.slot_forced.after.fn1"),
    );
    assert_eq!(fn1_after["present"], true, "{f1} back");
    assert_eq!(
        fn1_after["driver"], "e1000e",
        "{f1} bound to its host driver again"
    );
    assert_eq!(fn1_after["resource"], fn1_before["resource"], "{f1} BARs");
    let removes: Vec<&str> = report["writes"]
        .as_array()
        .map(|w| {
            w.iter()
                .filter_map(|w| w["path"].as_str())
                .filter(|p| p.ends_with("/remove"))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(removes.len(), 2, "{removes:?}");
    assert!(
        removes[0].contains(&f0) && removes[1].contains(&f1),
        "{removes:?}"
    );
    // drivers_autoprobe off around the rescan, and back on.
    let auto: Vec<&str> = report["writes"]
        .as_array()
        .map(|w| {
            w.iter()
                .filter(|w| {
                    w["path"]
                        .as_str()
                        .is_some_and(|p| p.ends_with("drivers_autoprobe"))
                })
                .filter_map(|w| w["value"].as_str())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(auto, ["0", "1"]);
}

/// QEMU's q35 ACPI gives the device a firmware node but no _PR3: resetlab says the platform cannot
/// cut power, and forced, reports the deepest state the device reached (D3hot).
fn reset_d3cold_on_vfio_device_reports_the_platform_cannot_and_what_it_reached(run: &Run) {
    assert_eq!(run.value("reset", "d3cold.pr3"), false, "QEMU gave _PR3?");
    let (rc, report) = reset_report(run, "d3cold");
    let r = &report["runs"][0];
    assert_eq!((rc, &r["attempted"]), (1, &Value::Bool(false)), "{report}");
    let reason = r["verdict"]["reason"].as_str().unwrap_or("");
    assert!(
        reason.contains("_PR3") && reason.contains("cannot cut its power"),
        "{reason}"
    );
    let (rc, report) = reset_report(run, "d3cold.forced");
    let r = &report["runs"][0];
    assert_eq!((rc, &r["attempted"]), (1, &Value::Bool(true)), "{report}");
    let err = r["error"].as_str().unwrap_or("");
    assert!(
        err.contains("did not reach D3cold") && err.contains("deepest state reached was D3hot"),
        "{err}"
    );
    let after = kview(run, "d3cold.forced.after");
    assert_eq!(
        (&after["present"], &after["driver"]),
        (&Value::Bool(true), &Value::from("vfio-pci"))
    );
    assert!(powered(after), "{after}");
}

/// Two resets of one device started together: both succeed, and the per-device lock kept their
/// journals (every write of each) from overlapping in time.
fn reset_concurrent_resets_of_one_device_are_serialised(run: &Run) {
    run.require_scenario("reset");
    let mut spans = Vec::new();
    for i in ["1", "2"] {
        let c = run.value("reset", &format!("concurrent.{i}"));
        assert_eq!(c["rc"], 0, "reset {i}: {}", c["stderr"]);
        let report: Value = serde_json::from_str(c["stdout"].as_str().unwrap_or(""))
            .unwrap_or_else(|e| run.fail(&format!("concurrent {i}: no JSON: {e}")));
        assert_eq!(report["success"], true, "{report}");
        let times: Vec<f64> = c["trace"]
            .as_array()
            .map(|t| t.iter().filter_map(|r| r["time"].as_f64()).collect())
            .unwrap_or_default();
        assert!(times.len() >= 3, "trace {i}: {}", c["trace"]);
        let lo = times.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = times.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        spans.push((lo, hi));
    }
    let ((a0, a1), (b0, b1)) = (spans[0], spans[1]);
    assert!(a1 < b0 || b1 < a0, "journals overlap: {spans:?}");
    assert!(powered(kview(run, "concurrent.after")));
}

fn reset_of_a_device_its_live_driver_uses_is_refused_with_exit_3(run: &Run) {
    let rec = run.value("reset", "live");
    assert_eq!(rec["rc"], 3, "{rec}");
    let err = rec["stderr"].as_str().unwrap_or("");
    assert!(err.contains("e1000e") && err.contains("--force"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    let (before, after) = (kview(run, "live.before"), kview(run, "live.after"));
    assert_eq!(after["driver"], "e1000e");
    assert_eq!(after["resource"], before["resource"]);
}

fn reset_dry_run_changes_nothing(run: &Run) {
    let (rc, report) = reset_report(run, "dry");
    assert_eq!(rc, 0, "{report}");
    assert_eq!(report["dry_run"], true);
    let runs = report["runs"].as_array().cloned().unwrap_or_default();
    let methods: Vec<&str> = runs.iter().filter_map(|r| r["method"].as_str()).collect();
    assert_eq!(methods, ["flr", "pm", "bus", "remove_rescan"]);
    for r in &runs {
        assert_eq!(r["attempted"], true, "{r}");
        assert_eq!(
            r["error"],
            Value::Null,
            "a dry run plans without failing: {r}"
        );
    }
    let writes = report["writes"].as_array().cloned().unwrap_or_default();
    assert!(writes.len() >= 8, "{writes:?}");
    assert!(writes.iter().all(|w| w["dry_run"] == true));
    assert_eq!(
        run.value("reset", "dry.config_same"),
        true,
        "config bytes changed in a dry run"
    );
    let (before, after) = (kview(run, "dry.before"), kview(run, "dry.after"));
    assert_eq!(before, after, "the kernel's view changed in a dry run");
}

// ---- scenario `bench`: figures for docs/methods.md, no timing asserted ---------------------------------

fn bench_scenario_completes_and_its_figures_parse(run: &Run) {
    run.require_scenario("bench");
    let summary = run.value("bench", "summary");
    assert_eq!(summary["ok"], true, "{summary}");
    let methods = summary["methods"].as_array().cloned().unwrap_or_default();
    let names: Vec<&str> = methods
        .iter()
        .filter_map(|m| m["method"].as_str())
        .collect();
    assert_eq!(names, ["flr", "pm", "bus", "remove_rescan"]);
    for m in &methods {
        let name = &m["method"];
        assert_eq!(m["runs"], 20, "{name}: resetlab runs");
        assert_eq!(m["failed"], serde_json::json!([]), "{name}: failed runs");
        for side in ["resetlab_total", "resetlab_reset_ready", "kernel"] {
            let s = &m[side];
            assert_eq!(s["n"], 20, "{name} {side}: {s}");
            let (lo, med, hi) = (s["min"].as_f64(), s["median"].as_f64(), s["max"].as_f64());
            assert!(
                matches!((lo, med, hi), (Some(a), Some(b), Some(c)) if a <= b && b <= c),
                "{name} {side}: {s}"
            );
        }
    }
    let table = summary["table"].as_str().unwrap_or("");
    assert_eq!(table.lines().count(), 6, "{table}");
    let _ = std::fs::write(run.out.join("bench.md"), table);
    eprintln!(
        "guest bench (TCG, {}):\n{table}",
        run.value("init", "kernel")
    );
}

/// The actions of a hook report (`resetlab --json hook ...`) on one device.
fn hook_action<'a>(run: &Run, report: &'a Value, action: &str, dev: &str) -> &'a Value {
    report["actions"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|x| x["action"] == action && x["device"] == dev)
        })
        .unwrap_or_else(|| run.fail(&format!("no {action} on {dev} in {}", report["actions"])))
}

/// `resetlab hook` against the real kernel: a VM passing the multi-function slot as one whole-slot
/// hostpci entry, the four phases in Proxmox's order, four times (the third the field report's
/// remove-in-pre-stop recipe); at the end both functions are on the bus, bound to vfio-pci, answering.
fn hook_phases_cycle_on_the_real_kernel(run: &Run) {
    run.require_scenario("hook");
    let (f0, f1) = (run.bdf("mf0"), run.bdf("mf1"));
    for c in 1..=4 {
        for phase in ["pre-start", "post-start", "pre-stop", "post-stop"] {
            let key = format!("c{c}.{phase}");
            let v = run.command_json("hook", &key);
            if v["ok"] != true || v["exit_code"] != 0 {
                run.fail(&format!("{key}: {}", v["errors"]));
            }
            let managed: Vec<&str> = v["devices"]
                .as_array()
                .map(|d| d.iter().filter_map(|x| x["bdf"].as_str()).collect())
                .unwrap_or_default();
            assert_eq!(managed, [f0.as_str(), f1.as_str()], "{key}: the whole slot");
        }
        let post = run.command_json("hook", &format!("c{c}.post-stop"));
        // post-stop's default resets what its record says is dirty (issue 13): a VM without a
        // QEMU to release to leaves both functions dirty, so both are reset.
        let reset = if post["actions_planned"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x == "reset"))
        {
            "reset"
        } else {
            "reset_if_dirty"
        };
        let r0 = hook_action(run, &post, reset, &f0);
        assert_eq!(
            r0["method"], "remove_rescan",
            "c{c} fn0 (the kernel has only bus): {r0}"
        );
        let r1 = hook_action(run, &post, reset, &f1);
        assert_eq!(r1["method"], "kernel", "c{c} fn1 (pm): {r1}");
    }
    let pre_stop = run.command_json("hook", "c3.pre-stop");
    let post_stop = run.command_json("hook", "c3.post-stop");
    let rescan = run.value("hook", "setup")["rescan"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let bus_rescan = rescan.rsplit("/devices/").next().unwrap_or_default();
    for f in [&f0, &f1] {
        assert_eq!(hook_action(run, &pre_stop, "remove", f)["result"], "done");
        let e = hook_action(run, &post_stop, "ensure_present", f);
        assert_eq!(e["result"], "done", "{e}");
        assert!(
            e["detail"]
                .as_str()
                .unwrap_or_default()
                .contains(bus_rescan),
            "ensure_present should rescan the bridge's bus ({bus_rescan}): {e}"
        );
        let fin = run.value("hook", &format!("final.{f}"));
        assert_eq!(fin["present"], true, "{f}");
        assert_eq!(fin["driver"], "vfio-pci", "{f}");
        assert!(
            fin["vendor"].as_str().is_some_and(|v| v.starts_with("0x")),
            "{fin}"
        );
    }
    let list = run.command_json("hook", "final.list");
    let by = list_by_bdf(run, &list, "resetlab list --json after the hook");
    for f in [&f0, &f1] {
        let d = by
            .get(f)
            .unwrap_or_else(|| run.fail(&format!("{f} not listed")));
        assert_eq!(d["driver"], "vfio-pci", "{d}");
    }
}

/// The hook's lines reach the kernel log (`dmesg`), without their syslog level prefix.
fn hook_lines_are_in_dmesg(run: &Run) {
    run.require_scenario("hook");
    let dmesg = run.value("hook", "dmesg").as_str().unwrap_or_default();
    let f0 = run.bdf("mf0");
    for want in [
        format!("resetlab: VM 100 post-stop: {f0} reset by remove_rescan in "),
        format!("resetlab: VM 100 pre-stop: {f0} removed in "),
        "resetlab: VM 100 post-start: done in ".to_string(),
    ] {
        assert!(dmesg.contains(&want), "no {want:?} in dmesg:\n{dmesg}");
    }
    assert!(
        !dmesg.contains("<6>"),
        "the level prefix leaked into dmesg:\n{dmesg}"
    );
    // 4 cycles x 4 phases, each ending in one "done" line (the bench adds more).
    assert!(dmesg.matches(": done in ").count() >= 16, "{dmesg}");
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Benchmark (prints figures; no timing assert): each hook phase's wall time, from exec to exit, next to
/// the bare kernel operation it makes, in the TCG guest. docs/proxmox.md records the figures.
fn hook_overhead_benchmark(run: &Run) {
    run.require_scenario("hook");
    let times = |what: &str| -> Vec<f64> {
        (1..=5)
            .map(|i| {
                let v = run.value("hook", &format!("bench.{i}.{what}"));
                if v["ok"] != true {
                    run.fail(&format!("bench.{i}.{what} failed: {v}"));
                }
                v["ms"].as_f64().unwrap_or(f64::NAN)
            })
            .collect()
    };
    eprintln!("hook overhead in the guest (TCG), median of 5, ms:");
    eprintln!(
        "{:<34} {:>9} {:>9} {:>9}",
        "operation", "bare", "hook", "overhead"
    );
    for (label, bare, hook) in [
        (
            "remove both functions (pre-stop)",
            "bare.remove",
            "hook.remove",
        ),
        ("rescan the bus (post-stop)", "bare.rescan", "hook.rescan"),
        (
            "kernel reset of fn1 (post-stop)",
            "bare.reset",
            "hook.reset",
        ),
        (
            "no action (pre-stop, default)",
            "bare.nothing",
            "hook.nothing",
        ),
    ] {
        let (b, h) = (median(times(bare)), median(times(hook)));
        eprintln!("{label:<34} {b:>9.1} {h:>9.1} {:>9.1}", h - b);
    }
    eprintln!(
        "starting the binary alone (resetlab --version): {:.1} ms",
        median(times("exec.version"))
    );
    for key in [
        "bench.report.rescan-remove",
        "bench.report.rescan",
        "bench.report.reset",
    ] {
        let v = run.command_json("hook", key);
        let kernel: f64 = v["actions"]
            .as_array()
            .map(|a| a.iter().filter_map(|x| x["kernel_ms"].as_f64()).sum())
            .unwrap_or(0.0);
        eprintln!(
            "{key}: in-process {:.1} ms, of which kernel operation {kernel:.1} ms",
            v["elapsed_ms"].as_f64().unwrap_or(f64::NAN)
        );
    }
}

// ---- a guest that breaks: the harness's own report ------------------------------------------------------

/// Bound on the oops boot: two short scenarios; it only matters if the crash fails to end the guest.
const OOPS_BOUND_S: u64 = 120;

/// A scenario that crashes the kernel (`echo c >/proc/sysrq-trigger`, tools/vm/scenarios/fault_oops.sh),
/// after one that passes, in a boot of their own: the guest ends at once (oops=panic, panic=-1,
/// -no-reboot), before its bound, and the failure every test of such a boot would report names the
/// scenario, quotes the oops (its first 30 lines at most) and says when QEMU ended.
fn oops_in_a_scenario_ends_the_guest_at_once_and_is_reported(kernel: Kernel) {
    let out = repo().join(format!(
        "target/vm/test-oops-{}",
        kernel.series().trim_end_matches('.')
    ));
    let run = boot(kernel, &["sysfs_view", "fault_oops"], out, OOPS_BOUND_S);
    let msg = run
        .boot_failure()
        .unwrap_or_else(|| panic!("the crashing guest reported an exit: {}", run.stderr));
    let context = || format!("report: {msg}\n---- run.sh stderr ----\n{}", run.stderr);
    assert_eq!(
        run.status,
        Some(4),
        "run.sh should say 'oopsed' (4); {}",
        context()
    );
    assert_eq!(run.ends.get("sysfs_view"), Some(&0), "{}", context());
    assert_eq!(run.current_scenario(), Some("fault_oops"), "{}", context());
    assert!(
        msg.contains("oopsed during scenario fault_oops"),
        "names the scenario: {}",
        context()
    );
    assert!(
        msg.contains(&format!("guest kernel {}", run.uname))
            && run.uname.starts_with(kernel.series()),
        "names the kernel: {}",
        context()
    );
    // The quoted oops starts at the panic line sysrq's crash handler makes, and is at most 30 lines.
    let (_, quoted) = msg
        .split_once("lines of the oops:\n")
        .unwrap_or_else(|| panic!("no quoted oops: {}", context()));
    let first = quoted.lines().next().unwrap_or_default();
    assert!(
        first.contains("Kernel panic - not syncing")
            || first.contains("BUG: ")
            || first.contains("Oops: "),
        "first quoted line: {first:?}; {}",
        context()
    );
    assert!(
        quoted.contains("sysrq"),
        "the quote shows the cause: {}",
        context()
    );
    assert!(quoted.lines().count() <= 30, "{}", context());
    // The time: reported, and the end came from the oops, not from the bound. The one time bound here is
    // the issue's promise (a crash ends the guest within 30 s), on the guest's clock; the kernel takes
    // milliseconds of it.
    let secs = run
        .boot_seconds
        .unwrap_or_else(|| panic!("run.sh wrote no boot-seconds: {}", context()));
    assert!(
        msg.contains(&format!("QEMU ended at {secs:.1} s")),
        "{}",
        context()
    );
    assert!(
        secs < OOPS_BOUND_S as f64,
        "QEMU ran to its bound ({secs} s): the oops did not end it; {}",
        context()
    );
    let (into, stop) = run
        .oops_timing()
        .unwrap_or_else(|| panic!("no guest-clock timing of the oops: {}", context()));
    assert!(
        msg.contains(&format!(
            "the oops came {into:.2} s into fault_oops and the kernel stopped {stop:.2} s after it"
        )),
        "{}",
        context()
    );
    assert!(
        stop < 30.0,
        "the kernel ran {stop:.2} s past the oops (oops=panic should stop it at once); {}",
        context()
    );
    // What a test of this boot shows: exactly that report.
    let failed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run.require_boot()))
        .expect_err("require_boot passed a crashed guest");
    let shown = failed.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(shown.starts_with(&msg), "a test shows: {shown}");
    let mut err = std::io::stderr().lock();
    let _ = writeln!(
        err,
        "oops boot ({}): the kernel stopped {stop:.2} s after the oops, QEMU ended at {secs:.1} s (bound {OOPS_BOUND_S} s)",
        run.uname
    );
}

/// The reports of a hung guest and of one that died without an oops, on made-up runs.
#[test]
fn boot_failure_names_the_scenario_of_a_hang_and_of_a_silent_death() {
    let mut run = Run::new(Kernel::V6_12, SCENARIOS, PathBuf::from("/nonexistent"), 600);
    run.uname = "6.12.117+deb13-amd64".to_owned();
    run.status = Some(124);
    run.begun = vec!["sysfs_view".to_owned(), "snapshot".to_owned()];
    run.ends.insert("sysfs_view".to_owned(), 0);
    let msg = run.boot_failure().expect("a timeout is a failure");
    assert!(
        msg.contains("6.12.117+deb13-amd64 did not finish within 600 s")
            && msg.contains("during scenario snapshot"),
        "{msg}"
    );
    run.ends.insert("snapshot".to_owned(), 0);
    let msg = run.boot_failure().expect("a timeout is a failure");
    assert!(msg.contains("after scenario snapshot ended"), "{msg}");
    run.status = Some(3);
    run.boot_seconds = Some(42.0);
    run.begun.clear();
    run.ends.clear();
    let msg = run.boot_failure().expect("no exit is a failure");
    assert!(
        msg.contains("ended after 42.0 s during scenario init without reporting an exit"),
        "{msg}"
    );
    run.status = Some(0);
    run.exit = Some(0);
    assert_eq!(run.boot_failure(), None);
}

on_both_kernels!(
shared_boot: [
    guest_boots_and_names_every_topology_device,
    guest_loads_no_driver_with_a_known_unbind_bug,
    guest_kernel_is_the_one_asked_for,
    kernel_reset_methods_of_bench_devices,
    list_json_matches_guest_kernel,
    multifunction_fn0_gets_bus_and_reset_fails_with_enotty,
    multifunction_list_marks_bus_unavailable_because_of_sibling,
    snapshot_from_guest_replays_on_host,
    runtime_suspended_vfio_device_resets_with_pm,
    ivshmem_bar_roundtrip_between_guest_mmap_and_host,
    smu_client_talks_to_the_host_model_through_the_guest_mmap,
    smu_mode2_reset_through_the_guest_mmap_is_healthy,
    experiment_e1000e_ctrl_rst_through_the_kernels_mmap,
    bench_in_the_guest_runs_every_method_20_times_within_the_spec_floors,
    reset_raw_flr_on_nvme_and_virtio_leaves_them_healthy,
    reset_kernel_flr_on_nvme_goes_through_reset_method_and_puts_it_back,
    reset_pm_on_e1000e_parked_on_vfio_is_healthy,
    reset_bus_behind_a_downstream_port_and_a_root_port,
    reset_bus_behind_a_root_port_without_dllla_fails_like_the_kernel,
    reset_kernel_on_multifunction_fn0_explains_enotty_and_einval,
    reset_remove_rescan_of_the_slot_brings_every_function_back,
    reset_d3cold_on_vfio_device_reports_the_platform_cannot_and_what_it_reached,
    reset_concurrent_resets_of_one_device_are_serialised,
    reset_of_a_device_its_live_driver_uses_is_refused_with_exit_3,
    reset_dry_run_changes_nothing,
    bench_scenario_completes_and_its_figures_parse,
    hook_phases_cycle_on_the_real_kernel,
    hook_lines_are_in_dmesg,
    hook_overhead_benchmark,
],
own_boot: [oops_in_a_scenario_ends_the_guest_at_once_and_is_reported],
);
