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

fn run(args: &[String]) -> Result<Value, Value> {
    let usage = || {
        json!({"ok": false, "message": "usage: guest_helper write PATH VALUE | mmio-read PATH OFFSET | \
               mmio-write PATH OFFSET VALUE | mmio-poll PATH OFFSET TIMEOUT_MS | time CMD [ARG...]"})
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
        [cmd, prog, rest @ ..] if cmd == "time" => {
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
        Err(v) if v.get("errno").is_some() || v.get("polls").is_some() => (v, 1),
        Err(v) => (v, 2),
    };
    println!("{out}");
    std::process::exit(code);
}
