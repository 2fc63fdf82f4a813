//! What a bench run records about where and how it ran (`meta.json`): the
//! command line, ISO 8601 times, kernel, resetlab's version and commit, the
//! host (live or twin) and the firmware versions that are readable without
//! writing anything.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::pci::Bdf;

use crate::machine::Machine;

/// Firmware versions; "unknown" where nothing readable says.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Firmware {
    /// The SMU's PMFW version (amdgpu's `pp_dpm_*` do not show it; resetlab
    /// reads it only with `smu DEV version`, which writes the mailbox, so the
    /// bench does not).
    pub pmfw: String,
    /// The device's `vbios_version` attribute (amdgpu publishes it).
    pub vbios: String,
    /// DMI `bios_version` (and `bios_date`).
    pub bios: String,
}

pub const UNKNOWN: &str = "unknown";

fn read_trim(p: &Path) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// The firmware of `dev` as sysfs shows it (under the host's sysfs root, so a
/// twin or snapshot reports its own, or "unknown").
pub fn firmware(host: &Machine, dev: &Bdf) -> Firmware {
    let vbios = read_trim(&host.device_dir(dev).join("vbios_version"));
    let dmi = host.sysfs.join("class/dmi/id");
    let bios =
        read_trim(&dmi.join("bios_version")).map(|v| match read_trim(&dmi.join("bios_date")) {
            Some(d) => format!("{v} ({d})"),
            None => v,
        });
    Firmware {
        pmfw: format!("{UNKNOWN} (read it with: resetlab smu {dev} version)"),
        vbios: vbios.unwrap_or_else(|| UNKNOWN.into()),
        bios: bios.unwrap_or_else(|| UNKNOWN.into()),
    }
}

/// The kernel release of the machine the trials ran on (`uname -r`; a twin's is the one
/// beside its tree).
pub fn kernel_release(host: &Machine) -> String {
    host.kernel_release().unwrap_or_else(|| UNKNOWN.into())
}

/// The commit resetlab was built from (build.rs: `<hash>` or `<hash>, dirty`); None
/// outside a git checkout.
pub fn commit() -> Option<String> {
    env!("RESETLAB_GIT_COMMIT")
        .strip_prefix("commit ")
        .map(str::to_string)
}

/// Civil date and time (UTC) of a Unix time (H. Hinnant's days-to-civil).
pub fn civil(unix: f64) -> (i64, i64, i64, i64, i64, i64, i64) {
    let ms_total = if unix.is_finite() && unix > 0.0 {
        (unix * 1000.0).round() as i64
    } else {
        0
    };
    let secs = ms_total.div_euclid(1000);
    let ms = ms_total.rem_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, rem / 3600, rem % 3600 / 60, rem % 60, ms)
}

/// ISO 8601 / RFC 3339 UTC with milliseconds: `2026-12-01T07:40:00.000Z`.
pub fn iso8601(unix: f64) -> String {
    let (y, m, d, h, mi, s, ms) = civil(unix);
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_times() {
        assert_eq!(iso8601(0.0), "1970-01-01T00:00:00.000Z");
        // date -u -d @1764574800.25 → 2025-12-01T07:40:00.25
        assert_eq!(iso8601(1_764_574_800.25), "2025-12-01T07:40:00.250Z");
        // A leap day: 2024-02-29T12:00:00Z = 1709208000.
        assert_eq!(iso8601(1_709_208_000.0), "2024-02-29T12:00:00.000Z");
    }
}
