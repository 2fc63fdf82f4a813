//! `list`'s default view: one line per function, fitted to a width. Names
//! are truncated to fit; the verdict never is (when even a short name leaves
//! it no room, it moves to a continuation line of its own).

use std::collections::BTreeMap;

use crate::inventory::DeviceReport;
use crate::pci::{names, Bdf};
use crate::reset::{is_parking_driver, Verdict, METHODS};

/// Below this a name says nothing; the verdict moves to its own line instead.
const MIN_NAME: usize = 12;
const DRIVER_MAX: usize = 12;

fn width_of(s: &str) -> usize {
    s.chars().count()
}

/// `s` cut to `w` characters, the cut marked with `…`.
fn fit(s: &str, w: usize) -> String {
    if width_of(s) <= w {
        return format!("{s:<w$}");
    }
    if w == 0 {
        return String::new();
    }
    let mut t: String = s.chars().take(w - 1).collect();
    t.push('…');
    t
}

/// The live host drivers a method would also hit: `ccp, xhci_hcd on 2`.
fn live_drivers(affects: &[Bdf], drivers: &BTreeMap<Bdf, Option<String>>) -> String {
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    for b in affects {
        if let Some(Some(d)) = drivers.get(b) {
            if !is_parking_driver(Some(d)) {
                *count.entry(d.as_str()).or_default() += 1;
            }
        }
    }
    let v: Vec<String> = count
        .iter()
        .map(|(d, n)| {
            if *n > 1 {
                format!("{d} on {n}")
            } else {
                d.to_string()
            }
        })
        .collect();
    v.join(", ")
}

/// Why a method that exists here is refused right now, in a few words; None
/// for absences (no capability, no attribute), which the compact view omits.
fn blocker(
    v: &Verdict,
    drivers: &BTreeMap<Bdf, Option<String>>,
    own: Option<&str>,
) -> Option<String> {
    Some(match v.code {
        "siblings_live_driver" | "slot_live_driver" => live_drivers(&v.affects, drivers),
        "quirk_no_pm_reset" => "kernel quirk".into(),
        "kernel_bus_siblings" => "only bus, siblings present".into(),
        "amdgpu_bound" => "amdgpu bound".into(),
        "needs_vfio_idle" => format!("{} bound", own.unwrap_or("driver")),
        "not_in_d0" => "not in D0".into(),
        "smu_unknown_state" => "SMU state unknown".into(),
        "bar_all_ones" => "BAR reads all-ones".into(),
        _ => return None,
    })
}

/// The compact verdict: `reset: smu_mode2 remove_rescan · bus✗(xhci_hcd on 2)`.
pub fn verdict(r: &DeviceReport, drivers: &BTreeMap<Bdf, Option<String>>) -> String {
    let (mut yes, mut blocked, mut unknown) = (vec![], vec![], vec![]);
    for m in METHODS {
        let Some(v) = r.methods.get(m.name) else {
            continue;
        };
        if v.unknown {
            unknown.push(m.name);
        } else if v.available {
            yes.push(m.name.to_string());
        } else if let Some(b) = blocker(v, drivers, r.driver.as_deref()) {
            blocked.push(format!("{}✗({b})", m.name));
        }
    }
    let mut s = format!(
        "reset: {}",
        if yes.is_empty() {
            "none".to_string()
        } else {
            yes.join(" ")
        }
    );
    for b in blocked {
        s.push_str(" · ");
        s.push_str(&b);
    }
    if !unknown.is_empty() {
        s.push_str(&format!(
            " · {} unknown (config needs root)",
            unknown.join(" ")
        ));
    }
    s
}

/// The verdict over lines of `w` characters, broken only between its
/// ` · ` parts (a part is never split; one wider than `w` stands alone).
fn wrap(v: &str, w: usize) -> Vec<String> {
    let mut lines: Vec<String> = vec![];
    for part in v.split(" · ") {
        match lines.last_mut() {
            Some(l) if width_of(l) + 3 + width_of(part) <= w => {
                l.push_str(" · ");
                l.push_str(part);
            }
            Some(_) => lines.push(format!("· {part}")),
            None => lines.push(part.to_string()),
        }
    }
    lines
}

/// The lines of the view: a header, then one line per report.
pub fn lines(
    reports: &[DeviceReport],
    drivers: &BTreeMap<Bdf, Option<String>>,
    width: usize,
) -> Vec<String> {
    // As lspci: a filter that matches nothing prints nothing.
    if reports.is_empty() {
        return vec![];
    }
    let dw = reports
        .iter()
        .map(|r| width_of(r.driver.as_deref().unwrap_or("-")))
        .max()
        .unwrap_or(1)
        .clamp(6, DRIVER_MAX);
    let bw = if reports.iter().all(|r| r.bdf.domain == 0) {
        7
    } else {
        12
    };
    let bdf = |b: &Bdf| {
        if bw == 7 {
            b.short()
        } else {
            b.to_string()
        }
    };
    // BDF, ids, group, driver, each followed by one space.
    let fixed = bw + 1 + 9 + 1 + 3 + 1 + dw + 1;
    let mut out = vec![format!(
        "{:<bw$} {:<9} {:>3} {:<dw$} NAME  RESET",
        "BDF", "ID", "GRP", "DRIVER"
    )];
    for r in reports {
        let v = verdict(r, drivers);
        let group = r.iommu_group.map_or("-".to_string(), |g| g.to_string());
        let head = format!(
            "{:<bw$} {}:{} {:>3} {} ",
            bdf(&r.bdf),
            r.vendor,
            r.device,
            group,
            fit(r.driver.as_deref().unwrap_or("-"), dw)
        );
        let name = names::short_name(
            u16::from_str_radix(&r.vendor, 16).unwrap_or(0),
            u16::from_str_radix(&r.device, 16).unwrap_or(0),
        );
        let room = width.saturating_sub(fixed + width_of(&v) + 1);
        if room >= MIN_NAME.min(width_of(&name)) {
            let n = fit(&name, room.min(width_of(&name)));
            out.push(format!("{head}{n} {v}"));
        } else {
            out.push(format!(
                "{head}{}",
                fit(&name, width.saturating_sub(fixed)).trim_end()
            ));
            let indent = bw + 1;
            out.extend(
                wrap(&v, width.saturating_sub(indent))
                    .into_iter()
                    .map(|l| format!("{:indent$}{l}", "")),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_truncates_with_a_mark() {
        assert_eq!(fit("abcdef", 4), "abc…");
        assert_eq!(fit("ab", 4), "ab  ");
        assert_eq!(fit("ab", 0), "");
    }

    #[test]
    fn wrap_breaks_between_parts_only() {
        assert_eq!(wrap("reset: a · b(x) · c", 80), vec!["reset: a · b(x) · c"]);
        assert_eq!(
            wrap("reset: a · bbbbbb · c", 12),
            vec!["reset: a", "· bbbbbb · c"]
        );
    }
}
