//! Guest tier: `resetlab release` against a real QEMU and a real Linux guest's ACPI hotplug.
//!
//! For every kernel of the guest tier (`target/vm/kernels`, or `tools/vm/setup.sh`'s one kernel when
//! that file is absent) this boots its own QEMU (q35, TCG) with e1000e NICs on hot-pluggable
//! `pcie-root-port`s, named as Proxmox names passed-through devices (`hostpci0`, `hostpci1`, and a
//! multi-function `hostpci2.0`/`hostpci2.1`), a QMP socket, and the tiny initramfs of
//! `tools/vm/release-guest.sh` (busybox, e1000e, an init that idles and logs each PCI function that
//! disappears through /dev/kmsg). Then, against that one QEMU:
//!
//! 1. `release --id hostpci0 --json`: released, its time reported, the guest saw it go; then
//!    `device_add` puts it back and it is released again, `RESETLAB_RELEASE_ROUNDS` times (3);
//! 2. `release --id hostpci2.1 --json`: one `device_del` to function 0, both functions reported released;
//! 3. QMP `stop`, then `release --id hostpci1 --timeout-ms 1500`: exit 4, the line says the guest is
//!    paused, the device is still in the guest;
//! 4. QMP `cont`: the guest ejects hostpci1 then (a paused guest ejects nothing until resumed).
//!
//! Prints per kernel: resetlab's wall time, its reported release time and the guest's own eject time
//! (kernel clock, from acpiphp's "Eject request" to the function gone), median and range over the
//! rounds. Every wait is bounded; QEMU is
//! killed when the guard drops, a panicking test included. One QEMU at a time.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use resetlab::journal::Journal;
use resetlab::qmp::Client;

const BOOT_BOUND: Duration = Duration::from_secs(300);
const STEP_BOUND: Duration = Duration::from_secs(60);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

struct Kernel {
    kver: String,
    vmlinuz: PathBuf,
    modules: PathBuf,
}

/// Runs tools/vm/setup.sh (installs QEMU and busybox when missing, fetches the kernels; idempotent)
/// and returns the tier's kernels.
fn kernels() -> Vec<Kernel> {
    let out = Command::new(repo().join("tools/vm/setup.sh"))
        .stdin(Stdio::null())
        .output()
        .expect("run tools/vm/setup.sh");
    assert!(
        out.status.success(),
        "tools/vm/setup.sh failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let list = repo().join("target/vm/kernels");
    if let Ok(text) = std::fs::read_to_string(&list) {
        let ks: Vec<Kernel> = text
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                match f.as_slice() {
                    [kver, vmlinuz, modules] => Some(Kernel {
                        kver: kver.to_string(),
                        vmlinuz: vmlinuz.into(),
                        modules: modules.into(),
                    }),
                    _ => None,
                }
            })
            .collect();
        assert!(!ks.is_empty(), "{} lists no kernel", list.display());
        return ks;
    }
    let env = String::from_utf8_lossy(&out.stdout).to_string();
    let get = |k: &str| {
        env.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("setup.sh printed no {k}:\n{env}"))
            .to_string()
    };
    vec![Kernel {
        kver: get("VM_KVER"),
        vmlinuz: get("VM_KERNEL").into(),
        modules: get("VM_MODULES").into(),
    }]
}

/// A running QEMU, killed on drop.
struct Qemu {
    child: Child,
    dir: PathBuf,
    console: PathBuf,
    qmp: PathBuf,
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Qemu {
    fn boot(k: &Kernel) -> Qemu {
        let dir = repo().join("target/vm/release").join(&k.kver);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let initrd = dir.join("initramfs.cpio");
        let st = Command::new(repo().join("tools/vm/release-guest.sh"))
            .arg(&k.modules)
            .arg(&initrd)
            .status()
            .expect("run tools/vm/release-guest.sh");
        assert!(st.success(), "tools/vm/release-guest.sh failed: {st}");
        let console = dir.join("console.log");
        let qmp = dir.join("qmp.sock");
        let mut args: Vec<String> = [
            "-machine",
            "q35",
            "-accel",
            "tcg",
            "-cpu",
            "max",
            "-m",
            "256",
            "-smp",
            "1",
            "-nodefaults",
            "-no-reboot",
            "-display",
            "none",
            "-monitor",
            "none",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend([
            "-chardev".into(),
            format!("file,id=con,path={}", console.display()),
            "-serial".into(),
            "chardev:con".into(),
            "-kernel".into(),
            k.vmlinuz.display().to_string(),
            "-initrd".into(),
            initrd.display().to_string(),
            // acpiphp's "Eject request" is a debug message: dyndbg turns it on, ignore_loglevel
            // puts it on the console. An oops panics, and the panic ends QEMU (-no-reboot): a
            // broken guest fails the test at once instead of at a bound.
            "-append".into(),
            "console=ttyS0 panic=-1 oops=panic rdinit=/init ignore_loglevel dyndbg=\"file acpiphp_glue.c +p\""
                .into(),
            "-qmp".into(),
            format!("unix:{},server=on,wait=off", qmp.display()),
        ]);
        for d in [
            "pcie-root-port,id=rp0,chassis=1,slot=1,bus=pcie.0,addr=2.0",
            "e1000e,id=hostpci0,bus=rp0,addr=0.0",
            "pcie-root-port,id=rp1,chassis=2,slot=2,bus=pcie.0,addr=3.0",
            "e1000e,id=hostpci1,bus=rp1,addr=0.0",
            "pcie-root-port,id=rp2,chassis=3,slot=3,bus=pcie.0,addr=4.0",
            "e1000e,id=hostpci2.0,bus=rp2,addr=0.0,multifunction=on",
            "e1000e,id=hostpci2.1,bus=rp2,addr=0.1",
        ] {
            args.push("-device".into());
            args.push(d.into());
        }
        let err = std::fs::File::create(dir.join("qemu.out")).unwrap();
        let child = Command::new("qemu-system-x86_64")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(err.try_clone().unwrap())
            .stderr(err)
            .spawn()
            .expect("start qemu-system-x86_64");
        let mut q = Qemu {
            child,
            dir,
            console,
            qmp,
        };
        q.wait_console("@@UP", 0, 1, BOOT_BOUND);
        q
    }

    fn console(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.console).unwrap_or_default()).to_string()
    }

    fn fail(&mut self, msg: &str) -> ! {
        let out = std::fs::read_to_string(self.dir.join("qemu.out")).unwrap_or_default();
        panic!(
            "{msg}\n---- qemu ----\n{out}\n---- console ({}) ----\n{}",
            self.console.display(),
            self.console()
        );
    }

    /// Polls the console until `needle` appears `count` times after byte `from`; fails if QEMU
    /// exits or the bound passes.
    fn wait_console(&mut self, needle: &str, from: usize, count: usize, bound: Duration) {
        let end = Instant::now() + bound;
        loop {
            let text = self.console();
            if text
                .get(from..)
                .is_some_and(|t| t.matches(needle).count() >= count)
            {
                return;
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                self.fail(&format!(
                    "QEMU exited ({st}) before the console showed {needle:?}"
                ));
            }
            if Instant::now() > end {
                self.fail(&format!(
                    "the console did not show {needle:?} ({count}x) within {} s",
                    bound.as_secs()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs resetlab with `args`, bounded (the command's own bound is shorter).
    fn resetlab(&mut self, args: &[&str]) -> (Output, Duration) {
        let t = Instant::now();
        let mut child = Command::new(env!("CARGO_BIN_EXE_resetlab"))
            .arg("release")
            .arg("--qmp")
            .arg(&self.qmp)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run resetlab");
        loop {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            if t.elapsed() > STEP_BOUND {
                let _ = child.kill();
                let _ = child.wait();
                self.fail(&format!(
                    "resetlab release {args:?} ran past {STEP_BOUND:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let wall = t.elapsed();
        (child.wait_with_output().unwrap(), wall)
    }

    /// A library client for the steps resetlab itself does not do (stop, cont). QEMU serves one QMP
    /// client at a time: drop it before running resetlab.
    fn client(&mut self) -> Client {
        match Client::connect(&self.qmp, STEP_BOUND) {
            Ok(c) => c,
            Err(e) => self.fail(&format!("QMP connect: {}", e.one_line())),
        }
    }
}

fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "resetlab printed no JSON ({e}):\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The kernel timestamp (s) of the first console line containing `needle` after `from`.
fn stamp(console: &str, needle: &str, from: usize) -> Option<(f64, usize)> {
    let at = console[from..].find(needle)? + from;
    let line_start = console[..at].rfind('\n').map_or(0, |p| p + 1);
    let line = &console[line_start..at];
    let ts = line
        .trim_start()
        .strip_prefix('[')?
        .split(']')
        .next()?
        .trim();
    Some((ts.parse().ok()?, at + needle.len()))
}

/// The guest's own eject time (ms, kernel clock) of the release whose console part starts at
/// `from`: acpiphp's "Eject request" to the last function `gone`.
fn guest_eject_ms(console: &str, from: usize, functions: usize) -> Option<f64> {
    let (t0, mut pos) = stamp(console, "Eject request", from)?;
    let mut t1 = t0;
    for _ in 0..functions {
        let (t, p) = stamp(console, "release-guest: gone", pos)?;
        t1 = t;
        pos = p;
    }
    Some((t1 - t0) * 1e3)
}

fn released_ms(d: &Value) -> f64 {
    assert_eq!(d["outcome"], "released", "{d}");
    let ms = d["ms"].as_f64().expect("ms");
    assert!(ms > 0.0, "{d}");
    ms
}

/// One release of hostpci0: resetlab's wall time, its reported time, the guest's own eject time.
struct Round {
    wall_ms: f64,
    ms: f64,
    guest_ms: Option<f64>,
}

/// Rounds of release (and plug back) of hostpci0 per kernel: `RESETLAB_RELEASE_ROUNDS`, default 3.
fn rounds_wanted() -> usize {
    std::env::var("RESETLAB_RELEASE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n >= 1)
        .unwrap_or(3)
}

#[test]
fn release_unplugs_through_the_real_guest_and_a_paused_guest_is_a_bounded_failure() {
    let mut figures = Vec::new();
    for k in kernels() {
        let mut q = Qemu::boot(&k);

        // 1. One function, released by the guest; plugged back in (device_add) and released
        //    again for each further round.
        let mut j = Journal::new(false);
        let mut rounds = Vec::new();
        for round in 0..rounds_wanted() {
            if round > 0 {
                let from = q.console().len();
                let mut c = q.client();
                c.execute_recorded(
                    &mut j,
                    Some("hostpci0"),
                    "device_add",
                    json!({"driver": "e1000e", "id": "hostpci0", "bus": "rp0", "addr": "0.0"}),
                    STEP_BOUND,
                )
                .unwrap();
                drop(c);
                q.wait_console("release-guest: added", from, 1, STEP_BOUND);
            }
            let before = q.console().len();
            let (out, wall) = q.resetlab(&["--id", "hostpci0", "--json"]);
            let r = json_of(&out);
            assert_eq!(out.status.code(), Some(0), "{r}");
            assert_eq!(r["devices"].as_array().unwrap().len(), 1, "{r}");
            let ms = released_ms(&r["devices"][0]);
            assert_eq!(r["released_ms"].as_f64(), Some(ms));
            q.wait_console("release-guest: gone", before, 1, STEP_BOUND);
            let guest = guest_eject_ms(&q.console(), before, 1);
            rounds.push(Round {
                wall_ms: wall.as_secs_f64() * 1e3,
                ms,
                guest_ms: guest,
            });
        }

        // 2. A multi-function slot: one device_del to function 0, each function reported.
        let before = q.console().len();
        let trace = q.dir.join("multi.trace");
        let (out, _) = q.resetlab(&[
            "--id",
            "hostpci2.1",
            "--json",
            "--trace",
            trace.to_str().unwrap(),
        ]);
        let r = json_of(&out);
        assert_eq!(out.status.code(), Some(0), "{r}");
        let devs = r["devices"].as_array().unwrap();
        let ids: Vec<&str> = devs.iter().map(|d| d["id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["hostpci2.0", "hostpci2.1"], "{r}");
        let multi: Vec<f64> = devs.iter().map(released_ms).collect();
        let sent: Vec<Value> = std::fs::read_to_string(&trace)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .filter(|v: &Value| v["target"] == "qmp")
            .collect();
        assert_eq!(sent.len(), 1, "one device_del for the slot: {sent:?}");
        assert_eq!(sent[0]["device"], "hostpci2.0");
        q.wait_console("release-guest: gone", before, 2, STEP_BOUND);
        let guest2 = guest_eject_ms(&q.console(), before, 2);

        // 3. A paused guest: bounded, explained, exit 4, and the device stays.
        let mut c = q.client();
        c.execute_recorded(&mut j, None, "stop", Value::Null, STEP_BOUND)
            .unwrap();
        drop(c);
        let before = q.console().len();
        let (out, paused_wall) = q.resetlab(&["--id", "hostpci1", "--timeout-ms", "1500"]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert_eq!(out.status.code(), Some(4), "{text}");
        assert!(text.contains("not released within 1500 ms"), "{text}");
        assert!(text.contains("paused"), "{text}");
        assert!(
            !q.console()[before..].contains("release-guest: gone"),
            "a paused guest ejected something"
        );

        // 4. Resumed, the guest serves the pending request.
        let mut c = q.client();
        let t = Instant::now();
        c.execute_recorded(&mut j, None, "cont", Value::Null, STEP_BOUND)
            .unwrap();
        let mut deleted = false;
        while !deleted && t.elapsed() < STEP_BOUND {
            match c.next_event(t + STEP_BOUND) {
                Ok(Some(e)) => deleted = e.is_device_deleted("hostpci1"),
                Ok(None) => break,
                Err(e) => q.fail(&format!("waiting for DEVICE_DELETED: {}", e.one_line())),
            }
        }
        if !deleted {
            q.fail("hostpci1 was not deleted after cont");
        }
        let resumed_ms = t.elapsed().as_secs_f64() * 1e3;
        drop(c);

        let fmt = |g: Option<f64>| g.map_or("n/a".to_string(), |g| format!("{g:.0} ms"));
        let stat = |f: &dyn Fn(&Round) -> Option<f64>| {
            let mut v: Vec<f64> = rounds.iter().filter_map(f).collect();
            v.sort_by(f64::total_cmp);
            match v.as_slice() {
                [] => "n/a".to_string(),
                [one] => format!("{one:.0} ms"),
                _ => format!(
                    "median {:.0} ms (min {:.0}, max {:.0})",
                    v[v.len() / 2],
                    v[0],
                    v[v.len() - 1]
                ),
            }
        };
        figures.push(format!(
            "{}: hostpci0 x{}: resetlab wall {}, released {}, guest eject {}; \
             hostpci2.0/.1 released in {:.1}/{:.1} ms (guest eject {}); paused: exit 4 after {:.0} ms; \
             after cont, deleted in {resumed_ms:.0} ms",
            k.kver,
            rounds.len(),
            stat(&|r| Some(r.wall_ms)),
            stat(&|r| Some(r.ms)),
            stat(&|r| r.guest_ms),
            multi[0],
            multi[1],
            fmt(guest2),
            paused_wall.as_secs_f64() * 1e3,
        ));
        drop(q);
    }
    for f in &figures {
        eprintln!("release figures: {f}");
    }
}
