//! Statistics of a bench run: success rates with Wilson score intervals and
//! latency distributions (min / median / p95 / max) per method and phase.
//!
//! Small samples (10–50 trials) are the norm here, so the interval is Wilson's
//! score interval rather than the normal approximation, which collapses to a
//! zero-width interval at 0 % or 100 % (Wilson 1927; Agresti & Coull 1998,
//! "Approximate is better than exact").

use serde::{Deserialize, Serialize};

use super::{Trial, PHASES};

/// The normal quantile for a two-sided 95 % interval.
pub const Z95: f64 = 1.959_963_984_540_054;

/// Wilson score interval for `k` successes in `n` trials; `(0, 1)` when
/// `n == 0` (nothing is known).
pub fn wilson(k: usize, n: usize, z: f64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let k = k.min(n) as f64;
    let n = n as f64;
    let p = k / n;
    let z2 = z * z;
    let denom = 1.0 + z2 / n;
    let centre = (p + z2 / (2.0 * n)) / denom;
    let half = z / denom * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// The `q` quantile (0..=1) of sorted, finite values by linear interpolation
/// between order statistics (Hyndman & Fan type 7, numpy's and R's default).
pub fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    let q = if q.is_finite() {
        q.clamp(0.0, 1.0)
    } else {
        0.5
    };
    let h = q * last as f64;
    let lo = h.floor() as usize;
    let hi = h.ceil() as usize;
    let (a, b) = (*sorted.get(lo)?, *sorted.get(hi)?);
    let t = h - lo as f64;
    let mut r = a + t * (b - a);
    if !r.is_finite() {
        // b − a overflowed (values near f64::MAX of opposite signs).
        r = a * (1.0 - t) + b * t;
    }
    Some(r.clamp(a.min(b), a.max(b)))
}

/// A latency distribution in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Dist {
    pub n: usize,
    pub min: f64,
    pub median: f64,
    /// Only from [`P95_MIN_N`] values on (null below: too few to say).
    pub p95: Option<f64>,
    pub max: f64,
    pub mean: f64,
}

/// The fewest values a p95 is reported from. With fewer, the type-7 p95 lies
/// between the two largest values (h = 0.95 (n − 1) > n − 2): it says no more
/// than the maximum does, so it is shown as "—".
pub const P95_MIN_N: usize = 20;

impl Dist {
    /// The distribution of the finite values; `None` when there are none.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Dist> {
        let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        Some(Dist {
            n: v.len(),
            min: v[0],
            median: quantile(&v, 0.5)?,
            p95: if v.len() >= P95_MIN_N {
                quantile(&v, 0.95)
            } else {
                None
            },
            max: v[v.len() - 1],
            mean: v.iter().sum::<f64>() / v.len() as f64,
        })
    }
}

/// One phase's distribution.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PhaseDist {
    pub phase: String,
    pub dist: Dist,
}

/// VM cycles of one method.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct VmSummary {
    pub stop_ok: usize,
    pub start_ok: usize,
    pub guest_ok: usize,
    /// Start command issued → first successful guest check.
    pub ready: Option<Dist>,
}

/// Everything learnt about one method.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct MethodSummary {
    pub method: String,
    /// Run with `--force` because its probe refuses otherwise.
    pub forced: bool,
    pub trials: usize,
    /// Trials where the probe said the method applies.
    pub applies: usize,
    /// Trials where the mechanism ran.
    pub attempted: usize,
    pub successes: usize,
    pub rate: f64,
    /// 95 % Wilson score interval of the success rate.
    pub ci_low: f64,
    pub ci_high: f64,
    /// Per phase, over the trials where the mechanism ran (the probe phase
    /// over every trial).
    pub phases: Vec<PhaseDist>,
    /// The engine's whole one-method chain (scan, guards, lock included).
    pub chain: Option<Dist>,
    /// Why trials failed, most common first.
    pub reasons: Vec<(String, usize)>,
    pub vm: Option<VmSummary>,
}

impl MethodSummary {
    pub fn phase(&self, name: &str) -> Option<&Dist> {
        self.phases
            .iter()
            .find(|p| p.phase == name)
            .map(|p| &p.dist)
    }
}

/// What the harness itself costs.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Overhead {
    /// (wall time of the trial loop − time inside the engine, dirty and VM
    /// commands) / trials: choosing, recording, progress, file writes.
    pub per_trial_ms: f64,
    /// The method with the smallest median engine time among those that ran.
    pub shortest_method: Option<String>,
    pub shortest_median_ms: Option<f64>,
    /// `per_trial_ms` as a percentage of `shortest_median_ms`.
    pub percent_of_shortest: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Summary {
    /// Measured trials (warm-ups not counted).
    pub trials: usize,
    pub methods: Vec<MethodSummary>,
    pub overhead: Option<Overhead>,
    /// The warm-up trial of each method, left out of every statistic.
    #[serde(default)]
    pub warmup: Vec<WarmupTrial>,
}

/// A warm-up trial (the first of each method: cold caches, first mappings).
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct WarmupTrial {
    pub method: String,
    pub success: bool,
    pub total_ms: f64,
    pub reason: Option<String>,
}

/// Failure reasons are grouped by their text with numbers masked, so "after
/// 12.3 ms" and "after 15.1 ms" count as one.
fn reason_key(r: &str) -> String {
    let mut out = String::with_capacity(r.len());
    let mut in_num = false;
    for c in r.chars() {
        if c.is_ascii_digit() {
            if !in_num {
                out.push('#');
            }
            in_num = true;
        } else if in_num && c == '.' {
            // part of a decimal number
        } else {
            in_num = false;
            out.push(c);
        }
    }
    out
}

/// Summarises trials per method, in the order methods first appear.
/// `overhead_total_ms` is the harness's own time over the whole loop (see
/// [`Overhead`]), when known.
pub fn summarize(all: &[Trial], overhead_total_ms: Option<f64>) -> Summary {
    // Warm-up trials are reported apart (`warmup`), never in the statistics.
    let warmup: Vec<WarmupTrial> = all
        .iter()
        .filter(|t| t.warmup)
        .map(|t| WarmupTrial {
            method: t.method.clone(),
            success: t.success,
            total_ms: t.phases.total,
            reason: t.reason.clone(),
        })
        .collect();
    let measured: Vec<Trial> = all.iter().filter(|t| !t.warmup).cloned().collect();
    let trials = &measured[..];
    let mut order: Vec<&str> = Vec::new();
    for t in trials {
        if !order.contains(&t.method.as_str()) {
            order.push(&t.method);
        }
    }
    let methods: Vec<MethodSummary> = order
        .iter()
        .map(|m| {
            let ts: Vec<&Trial> = trials.iter().filter(|t| t.method == *m).collect();
            summarize_method(m, &ts)
        })
        .collect();
    let overhead = overhead_total_ms.filter(|_| !trials.is_empty()).map(|o| {
        let per_trial_ms = o.max(0.0) / trials.len() as f64;
        let shortest = methods
            .iter()
            .filter(|m| m.attempted > 0)
            .filter_map(|m| m.chain.as_ref().map(|d| (m.method.clone(), d.median)))
            .min_by(|a, b| a.1.total_cmp(&b.1));
        Overhead {
            per_trial_ms,
            percent_of_shortest: shortest
                .as_ref()
                .filter(|s| s.1 > 0.0)
                .map(|s| per_trial_ms / s.1 * 100.0),
            shortest_median_ms: shortest.as_ref().map(|s| s.1),
            shortest_method: shortest.map(|s| s.0),
        }
    });
    Summary {
        trials: trials.len(),
        methods,
        overhead,
        warmup,
    }
}

fn summarize_method(method: &str, ts: &[&Trial]) -> MethodSummary {
    let n = ts.len();
    let successes = ts.iter().filter(|t| t.success).count();
    let (lo, hi) = wilson(successes, n, Z95);
    let ran: Vec<&&Trial> = ts.iter().filter(|t| t.attempted).collect();
    let phases = PHASES
        .iter()
        .filter_map(|p| {
            let src: Vec<f64> = if *p == "probe" {
                ts.iter().map(|t| t.phases.get(p)).collect()
            } else {
                ran.iter().map(|t| t.phases.get(p)).collect()
            };
            Dist::of(src).map(|dist| PhaseDist {
                phase: p.to_string(),
                dist,
            })
        })
        .collect();
    let mut reasons: Vec<(String, usize, String)> = Vec::new();
    for t in ts.iter().filter(|t| !t.success) {
        let r = t.reason.clone().unwrap_or_else(|| "unknown".into());
        let k = reason_key(&r);
        match reasons.iter_mut().find(|x| x.2 == k) {
            Some(x) => x.1 += 1,
            None => reasons.push((r, 1, k)),
        }
    }
    reasons.sort_by_key(|r| std::cmp::Reverse(r.1));
    let vm = if ts.iter().any(|t| t.vm.is_some()) {
        let vms: Vec<_> = ts.iter().filter_map(|t| t.vm.as_ref()).collect();
        Some(VmSummary {
            stop_ok: vms.iter().filter(|v| v.stop.ok).count(),
            start_ok: vms
                .iter()
                .filter(|v| v.start.as_ref().is_some_and(|s| s.ok))
                .count(),
            guest_ok: vms
                .iter()
                .filter(|v| v.guest.as_ref().is_some_and(|s| s.ok))
                .count(),
            ready: Dist::of(vms.iter().filter_map(|v| v.ready_ms)),
        })
    } else {
        None
    };
    MethodSummary {
        method: method.to_string(),
        forced: ts.iter().any(|t| t.forced),
        trials: n,
        applies: ts.iter().filter(|t| t.applies).count(),
        attempted: ran.len(),
        successes,
        rate: if n == 0 {
            0.0
        } else {
            successes as f64 / n as f64
        },
        ci_low: lo,
        ci_high: hi,
        phases,
        chain: Dist::of(ran.iter().map(|t| t.chain_ms)),
        reasons: reasons.into_iter().map(|(r, c, _)| (r, c)).collect(),
        vm,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn wilson_matches_published_values() {
        // Newcombe (1998), "Two-sided confidence intervals for the single
        // proportion", Table I: 81/263 → 0.2553–0.3662; 15/148 → 0.0624–0.1605;
        // 0/20 → 0–0.1611; 1/29 → 0.0061–0.1718.
        let close = |a: f64, b: f64| (a - b).abs() < 5e-4;
        for (k, n, lo, hi) in [
            (81, 263, 0.2553, 0.3662),
            (15, 148, 0.0624, 0.1605),
            (0, 20, 0.0, 0.1611),
            (1, 29, 0.0061, 0.1718),
        ] {
            let (l, h) = wilson(k, n, Z95);
            assert!(close(l, lo) && close(h, hi), "{k}/{n}: {l:.4}–{h:.4}");
        }
        // Symmetric: k of n and n−k of n mirror each other.
        let (l, h) = wilson(20, 20, Z95);
        assert!((l - (1.0 - 0.1611)).abs() < 5e-4 && h == 1.0);
        assert_eq!(wilson(0, 0, Z95), (0.0, 1.0));
    }

    #[test]
    fn quantiles_interpolate_like_type_7() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(quantile(&v, 0.5), Some(2.5));
        assert_eq!(quantile(&v, 0.0), Some(1.0));
        assert_eq!(quantile(&v, 1.0), Some(4.0));
        // numpy.percentile([1,2,3,4], 95) = 3.85
        assert!((quantile(&v, 0.95).unwrap() - 3.85).abs() < 1e-12);
        assert_eq!(quantile(&[], 0.5), None);
        let d = Dist::of([5.0, f64::NAN, 1.0, 3.0]).unwrap();
        assert_eq!(
            (d.n, d.min, d.median, d.max, d.mean),
            (3, 1.0, 3.0, 5.0, 3.0)
        );
    }

    #[test]
    fn reasons_group_by_text_with_numbers_masked() {
        assert_eq!(
            reason_key("timed out after 12.5 ms (cycle 3)"),
            reason_key("timed out after 7 ms (cycle 10)")
        );
        assert_ne!(reason_key("exit 1"), reason_key("signal 1"));
    }

    proptest! {
        #[test]
        fn wilson_is_a_proper_interval(n in 0usize..10_000, k in 0usize..10_000) {
            let (lo, hi) = wilson(k, n, Z95);
            prop_assert!((0.0..=1.0).contains(&lo) && (0.0..=1.0).contains(&hi) && lo <= hi);
            if n > 0 {
                let p = k.min(n) as f64 / n as f64;
                prop_assert!(lo <= p + 1e-12 && p <= hi + 1e-12);
            }
        }

        #[test]
        fn dist_is_ordered(v in proptest::collection::vec(proptest::num::f64::ANY, 0..50)) {
            if let Some(d) = Dist::of(v) {
                prop_assert!(d.min <= d.median && d.median <= d.max);
                if let Some(p95) = d.p95 {
                    prop_assert!(d.n >= P95_MIN_N && d.median <= p95 && p95 <= d.max);
                } else {
                    prop_assert!(d.n < P95_MIN_N);
                }
            }
        }

        #[test]
        fn quantile_never_panics(v in proptest::collection::vec(-1e9f64..1e9, 0..20), q in proptest::num::f64::ANY) {
            let mut v = v;
            v.sort_by(f64::total_cmp);
            let r = quantile(&v, q);
            prop_assert_eq!(r.is_some(), !v.is_empty());
        }
    }
}
