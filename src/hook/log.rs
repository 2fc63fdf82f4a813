//! The hook's log: one line per action, to the kernel log (so `dmesg` shows it beside the
//! kernel's own PCI lines, as the field report's script did with `echo … > /dev/kmsg`) and to
//! stderr (which Proxmox shows in the task log).
//!
//! `/dev/kmsg` comes from [`Machine::dev`](crate::machine::Machine::dev): for a twin or snapshot root that is `<root>/dev/kmsg`,
//! a regular file if a test made one, else absent (then only stderr gets the line). The machine's
//! own `/dev/kmsg` is used only with the live `/sys`.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;

use crate::machine::Machine;

/// The most a line may carry: `devkmsg_write` (kernel/printk/printk.c) refuses a write longer
/// than `PRINTKRB_RECORD_MAX` (1024) with EINVAL; keep well below it.
const MAX_LINE: usize = 900;

/// Syslog severity of a line (`<N>` prefix, the lower three bits: `devkmsg_write` takes the
/// level from it and keeps LOG_USER as the facility when the prefix's facility bits are 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Err,
    Warning,
    Info,
}

impl Level {
    /// include/linux/kern_levels.h: KERN_ERR 3, KERN_WARNING 4, KERN_INFO 6.
    fn syslog(self) -> u8 {
        match self {
            Level::Err => 3,
            Level::Warning => 4,
            Level::Info => 6,
        }
    }
}

/// One logged line, as it went out (without the `<N>` prefix).
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct LogLine {
    pub level: Level,
    /// Milliseconds since the hook started.
    pub t_ms: f64,
    pub text: String,
}

pub struct Logger {
    kmsg: Option<PathBuf>,
    stderr: bool,
    start: Instant,
    prefix: String,
    pub lines: Vec<LogLine>,
}

/// One line: newlines and other control characters become spaces; long text is cut at a
/// character boundary.
fn one_line(text: &str) -> String {
    let mut s: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if s.len() > MAX_LINE {
        let mut cut = MAX_LINE;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

impl Logger {
    /// `prefix` starts every line (`resetlab: VM 100 post-stop: `).
    pub fn new(host: &Machine, prefix: String, stderr: bool) -> Logger {
        Logger {
            kmsg: Some(host.kmsg()),
            stderr,
            start: Instant::now(),
            prefix,
            lines: Vec::new(),
        }
    }

    pub fn info(&mut self, text: impl AsRef<str>) {
        self.line(Level::Info, text.as_ref());
    }

    pub fn warn(&mut self, text: impl AsRef<str>) {
        self.line(Level::Warning, text.as_ref());
    }

    pub fn err(&mut self, text: impl AsRef<str>) {
        self.line(Level::Err, text.as_ref());
    }

    pub fn line(&mut self, level: Level, text: &str) {
        let text = one_line(&format!("{}{text}", self.prefix));
        if self.stderr {
            // A reader that went away (Proxmox's task log closed) is not a
            // reason to stop a hook half-way: the line is still in kmsg.
            use std::io::Write as _;
            let _ = writeln!(std::io::stderr(), "{text}");
        }
        self.write_kmsg(level, &text);
        self.lines.push(LogLine {
            level,
            t_ms: self.start.elapsed().as_secs_f64() * 1e3,
            text,
        });
    }

    /// Opens the log for every line: the kernel rate-limits writes per open file (`devkmsg_open`
    /// gives each open its own `ratelimit_state`, 10 lines per 5 s unless `printk.devkmsg=on`),
    /// and a phase with several devices writes more than that. Never creates the file; a log
    /// that cannot be written (absent in a twin, not root) is given up for the rest of the run.
    fn write_kmsg(&mut self, level: Level, text: &str) {
        let Some(path) = &self.kmsg else { return };
        let ok = OpenOptions::new()
            .append(true)
            .open(path)
            .and_then(|mut f| f.write_all(format!("<{}>{text}\n", level.syslog()).as_bytes()));
        if ok.is_err() {
            self.kmsg = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_go_to_the_twins_kmsg_file_with_their_level() {
        let dir = tempfile::tempdir().unwrap();
        let host = Machine::new(dir.path().join("sys"));
        std::fs::create_dir_all(&host.dev).unwrap();
        std::fs::write(host.dev.join("kmsg"), "").unwrap();
        let mut log = Logger::new(&host, "resetlab: VM 100 post-stop: ".into(), false);
        log.info("0000:c5:00.0 reset by remove_rescan in 412 ms");
        log.err("two\nlines");
        let text = std::fs::read_to_string(host.dev.join("kmsg")).unwrap();
        assert_eq!(
            text,
            "<6>resetlab: VM 100 post-stop: 0000:c5:00.0 reset by remove_rescan in 412 ms\n\
             <3>resetlab: VM 100 post-stop: two lines\n"
        );
        assert_eq!(log.lines.len(), 2);
    }

    #[test]
    fn an_absent_kmsg_is_tolerated_and_never_created() {
        let dir = tempfile::tempdir().unwrap();
        let host = Machine::new(dir.path().join("sys"));
        let mut log = Logger::new(&host, String::new(), false);
        log.info("x");
        assert!(!host.dev.join("kmsg").exists());
        assert_eq!(log.lines[0].text, "x");
    }

    #[test]
    fn long_lines_are_cut_at_a_char_boundary() {
        let s = "é".repeat(600);
        let l = one_line(&s);
        assert!(l.len() <= MAX_LINE + '…'.len_utf8());
        assert!(l.ends_with('…'));
    }
}
