//! A small static helper for the QEMU guest bench (tools/vm/, docs/testing.md): what busybox cannot do.
//!
//! - `guest_helper write PATH VALUE`: one write(2) of VALUE to a sysfs attribute; prints
//!   `{"ok":true}` or `{"ok":false,"errno":"ENOTTY","code":25,"message":"..."}` (busybox's echo only
//!   prints a localised message, scenarios need the errno).
//! - `guest_helper mmio-read PATH OFFSET` / `mmio-write PATH OFFSET VALUE`: one 32-bit access through an
//!   mmap of PATH (a memory BAR's `resourceN`, which is mmap-only: read(2) fails on it).
//! - `guest_helper mmio-poll PATH OFFSET TIMEOUT_MS`: read until the word is non-zero, bounded.
//! - `guest_helper time CMD [ARG...]`: run CMD (output discarded), print
//!   `{"ok":true,"rc":0,"ms":12.3}` with its wall time (busybox's `date` has no sub-second clock).
//!
//! - `guest_helper time N PATH=VALUE...`: N rounds of the writes, in order; prints each round's time in
//!   ms on the monotonic clock (`{"ok":true,"ms":[...]}`): the kernel's own reset, timed as resetlab's is.
//! - `guest_helper bench-table DIR`: summarises the bench scenario's samples in DIR (`rl.M.jsonl`: one
//!   `resetlab reset --json` report a line; `k.M.jsonl`: `time` outputs) as JSON with a Markdown table.
//!
//! Numbers are decimal or 0x-hex. Exit status 0 = ok, 1 = the operation failed (JSON says how),
//! 2 = bad usage. It runs only inside the guest; it never touches the host's /sys.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::time::{Duration, Instant};

use memmap2::{MmapOptions, MmapRaw};
use serde_json::{json, Value};

const PAGE: u64 = 4096;

fn errno_json(e: &std::io::Error) -> Value {
    match e.raw_os_error() {
        Some(code) => {
            let errno = nix::errno::Errno::from_raw(code);
            // std's text is strerror's ("Inappropriate ioctl for device"), what a shell would print.
            let text = std::io::Error::from_raw_os_error(code).to_string();
            let message = text.split(" (os error").next().unwrap_or(&text);
            json!({"ok": false, "errno": format!("{errno:?}"), "code": code, "message": message})
        }
        None => json!({"ok": false, "errno": null, "code": null, "message": e.to_string()}),
    }
}

fn parse_num(s: &str) -> Option<u64> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

fn sysfs_write(path: &str, value: &str) -> Value {
    let file = OpenOptions::new().write(true).open(path);
    // sysfs hands one write(2) to the attribute's store(): its errno is the answer we want.
    match file.and_then(|mut f| f.write(value.as_bytes())) {
        Ok(_) => json!({"ok": true}),
        Err(e) => errno_json(&e),
    }
}

/// One mapped 32-bit register: the page holding `offset`, checked once here.
struct Reg {
    map: MmapRaw,
    within: usize,
}

impl Reg {
    fn map(path: &str, offset: u64) -> Result<Reg, Value> {
        if offset % 4 != 0 {
            return Err(
                json!({"ok": false, "message": format!("offset {offset:#x} is not 4-byte aligned")}),
            );
        }
        let file: File = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_SYNC)
            .open(path)
            .map_err(|e| errno_json(&e))?;
        let size = file.metadata().map_err(|e| errno_json(&e))?.len();
        if offset >= size {
            return Err(
                json!({"ok": false, "message": format!("offset {offset:#x} is past the end ({size:#x})")}),
            );
        }
        let base = offset & !(PAGE - 1);
        let len = PAGE.min(size - base);
        let map = MmapOptions::new()
            .offset(base)
            .len(len as usize)
            .map_raw(&file)
            .map_err(|e| errno_json(&e))?;
        let within = (offset - base) as usize;
        if within + 4 > map.len() {
            return Err(
                json!({"ok": false, "message": format!("offset {offset:#x} is past the mapping")}),
            );
        }
        Ok(Reg { map, within })
    }

    fn ptr(&self) -> *mut u32 {
        // SAFETY: `within + 4 <= map.len()` was checked in `map`, so the result stays inside the mapping.
        unsafe { self.map.as_mut_ptr().add(self.within) }.cast::<u32>()
    }

    fn read(&self) -> u32 {
        // SAFETY: the pointer is inside a live shared mapping and 4-byte aligned (page-aligned base plus
        // an offset checked to be a multiple of 4); a device register must be read with one volatile access.
        unsafe { self.ptr().read_volatile() }
    }

    fn write(&self, value: u32) {
        // SAFETY: as in `read`; the mapping is writable (opened read-write, mapped shared).
        unsafe { self.ptr().write_volatile(value) }
    }
}

/// `time N PATH=VALUE...`: the write sequence N times, each round timed.
fn time_writes(n: u64, writes: &[String]) -> Result<Value, Value> {
    let pairs: Vec<(&str, &str)> = writes
        .iter()
        .map(|w| {
            w.split_once('=').ok_or_else(
                || json!({"ok": false, "message": format!("want PATH=VALUE, got {w:?}")}),
            )
        })
        .collect::<Result<_, _>>()?;
    let mut ms = Vec::new();
    for round in 0..n {
        let start = Instant::now();
        for (path, value) in &pairs {
            let v = sysfs_write(path, value);
            if v["ok"] != json!(true) {
                let mut v = v;
                v["round"] = json!(round);
                v["path"] = json!(path);
                return Err(v);
            }
        }
        ms.push(start.elapsed().as_secs_f64() * 1e3);
    }
    Ok(json!({"ok": true, "ms": ms}))
}

/// The spec's floor of each benched method, in ms (PCIe r6 §6.6.2 FLR 100 ms; PCI PM 1.2 D3hot→D0
/// 10 ms, the kernel waits 10 ms each way; SBR Trst ≥ 1 ms held 2 ms by the kernel, then 100 ms).
const BENCH: &[(&str, Option<f64>)] = &[
    ("flr", Some(100.0)),
    ("pm", Some(20.0)),
    ("bus", Some(102.0)),
    ("remove_rescan", None),
];

fn stats(v: &[f64]) -> Value {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    s.sort_by(f64::total_cmp);
    let median = match s.len() {
        0 => return Value::Null,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    };
    json!({"n": s.len(), "min": s[0], "median": median, "max": s[s.len() - 1], "samples": v})
}

fn fmt_stats(v: &Value) -> String {
    match (v["min"].as_f64(), v["median"].as_f64(), v["max"].as_f64()) {
        (Some(a), Some(b), Some(c)) => format!("{a:.1} / {b:.1} / {c:.1}"),
        _ => "—".to_string(),
    }
}

fn lines(path: &std::path::Path) -> Result<Vec<Value>, Value> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        let mut v = errno_json(&e);
        v["path"] = json!(path.display().to_string());
        v
    })?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).map_err(
                |e| json!({"ok": false, "message": format!("{}: not JSON: {e}", path.display())}),
            )
        })
        .collect()
}

/// `bench-table DIR`: per method, resetlab's total and reset+ready phases and the kernel's time.
fn bench_table(dir: &str) -> Result<Value, Value> {
    let dir = std::path::Path::new(dir);
    let mut rows = Vec::new();
    let mut table = String::from(
        "| method | spec floor (ms) | resetlab total (ms) min / median / max | resetlab reset+ready (ms) \
         | kernel `reset` (ms) | resetlab runs failed |\n|---|---|---|---|---|---|\n",
    );
    for (method, floor) in BENCH {
        let reports = lines(&dir.join(format!("rl.{method}.jsonl")))?;
        let (mut total, mut mech, mut failed) = (Vec::new(), Vec::new(), Vec::new());
        for r in &reports {
            let run = &r["runs"][0];
            if r["success"] != json!(true) || run["method"] != json!(method) {
                // Why, in one line: the error, else the first failed health check.
                let items = run["health"]["items"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                let why = run["error"].as_str().map(str::to_owned).or_else(|| {
                    items
                        .iter()
                        .find(|i| i["ok"] == json!(false))
                        .map(|i| i.to_string())
                });
                failed.push(json!(why.unwrap_or_else(|| "no report".to_owned())));
                continue;
            }
            let p = &run["phases"];
            total.push(r["total_ms"].as_f64().unwrap_or(f64::NAN));
            mech.push(
                p["reset_ms"].as_f64().unwrap_or(f64::NAN)
                    + p["ready_ms"].as_f64().unwrap_or(f64::NAN),
            );
        }
        let kernel: Vec<f64> = lines(&dir.join(format!("k.{method}.jsonl")))?
            .iter()
            .flat_map(|k| k["ms"].as_array().cloned().unwrap_or_default())
            .filter_map(|x| x.as_f64())
            .collect();
        let (t, m, k) = (stats(&total), stats(&mech), stats(&kernel));
        table.push_str(&format!(
            "| `{method}` | {} | {} | {} | {} | {} of {} |\n",
            floor.map_or("—".to_string(), |f| format!("{f:.0}")),
            fmt_stats(&t),
            fmt_stats(&m),
            fmt_stats(&k),
            failed.len(),
            reports.len()
        ));
        rows.push(
            json!({"method": method, "floor_ms": floor, "runs": reports.len(), "failed": failed,
            "resetlab_total": t, "resetlab_reset_ready": m, "kernel": k}),
        );
    }
    Ok(json!({"ok": true, "methods": rows, "table": table}))
}

fn run(args: &[String]) -> Result<Value, Value> {
    let usage = || {
        json!({"ok": false, "message": "usage: guest_helper write PATH VALUE | mmio-read PATH OFFSET | \
               mmio-write PATH OFFSET VALUE | mmio-poll PATH OFFSET TIMEOUT_MS | \
               time N PATH=VALUE... | time-cmd CMD [ARG...] | bench-table DIR"})
    };
    let num = |s: &String| {
        parse_num(s).ok_or_else(|| json!({"ok": false, "message": format!("not a number: {s:?}")}))
    };
    match args {
        [cmd, path, value] if cmd == "write" => {
            let v = sysfs_write(path, value);
            if v["ok"] == json!(true) {
                Ok(v)
            } else {
                Err(v)
            }
        }
        [cmd, path, off] if cmd == "mmio-read" => {
            let reg = Reg::map(path, num(off)?)?;
            Ok(json!({"ok": true, "value": reg.read()}))
        }
        [cmd, path, off, value] if cmd == "mmio-write" => {
            let value = u32::try_from(num(value)?)
                .map_err(|_| json!({"ok": false, "message": "value over 32 bits"}))?;
            let reg = Reg::map(path, num(off)?)?;
            reg.write(value);
            Ok(json!({"ok": true}))
        }
        [cmd, path, off, ms] if cmd == "mmio-poll" => {
            let reg = Reg::map(path, num(off)?)?;
            let bound = Duration::from_millis(num(ms)?);
            let start = Instant::now();
            let mut polls = 0u64;
            loop {
                polls += 1;
                let v = reg.read();
                if v != 0 {
                    return Ok(json!({"ok": true, "value": v, "polls": polls}));
                }
                if start.elapsed() >= bound {
                    return Err(json!({"ok": false, "polls": polls,
                        "message": format!("still 0 after {} ms", bound.as_millis())}));
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        [cmd, n, writes @ ..] if cmd == "time" && !writes.is_empty() => {
            time_writes(num(n)?, writes)
        }
        [cmd, dir] if cmd == "bench-table" => bench_table(dir),
        [cmd, prog, rest @ ..] if cmd == "time-cmd" => {
            let start = Instant::now();
            let status = std::process::Command::new(prog)
                .args(rest)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .map_err(|e| errno_json(&e))?;
            let ms = start.elapsed().as_secs_f64() * 1e3;
            Ok(json!({"ok": status.success(), "rc": status.code(), "ms": ms}))
        }
        _ => Err(usage()),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (out, code) = match run(&args) {
        Ok(v) => (v, 0),
        Err(v)
            if v.get("errno").is_some() || v.get("polls").is_some() || v.get("round").is_some() =>
        {
            (v, 1)
        }
        Err(v) => (v, 2),
    };
    println!("{out}");
    std::process::exit(code);
}
