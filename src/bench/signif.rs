//! Tests of the differences `bench report A B` shows: Fisher's exact test
//! for success rates (2×2 table, two-sided) and the Mann–Whitney U test for
//! latencies (two-sided, normal approximation with tie and continuity
//! corrections; exact for small samples without ties).
//!
//! Fisher (1922), two-sided p = Σ P(table) over tables as or less likely
//! than the observed, with the hypergeometric probabilities (with a 1e-7
//! relative tolerance on "as likely", as R's fisher.test).
//! Mann & Whitney (1947); the exact null distribution by the usual counting
//! recursion, the approximation with the tie-corrected variance and a
//! continuity correction of ½ (the form R's wilcox.test(correct = TRUE) uses).

/// ln(n!) by summation: n here is a trial count (hundreds at most).
fn ln_fact(n: usize) -> f64 {
    (2..=n).map(|i| (i as f64).ln()).sum()
}

fn ln_choose(n: usize, k: usize) -> f64 {
    ln_fact(n) - ln_fact(k) - ln_fact(n - k)
}

/// Two-sided Fisher exact p for successes `a` of `n1` against `b` of `n2`.
pub fn fisher_exact(a: usize, n1: usize, b: usize, n2: usize) -> f64 {
    let (a, b) = (a.min(n1), b.min(n2));
    let k = a + b; // successes in all
    let n = n1 + n2;
    if n == 0 {
        return 1.0;
    }
    let lo = k.saturating_sub(n2);
    let hi = k.min(n1);
    let denom = ln_choose(n, k);
    let p = |x: usize| (ln_choose(n1, x) + ln_choose(n2, k - x) - denom).exp();
    let observed = p(a);
    let total: f64 = (lo..=hi)
        .map(p)
        .filter(|&q| q <= observed * (1.0 + 1e-7))
        .sum();
    total.min(1.0)
}

/// The standard normal upper tail, 1 − Φ(z), for z ≥ 0 (Abramowitz &
/// Stegun 7.1.26 on erfc; absolute error < 1.5e-7).
fn norm_sf(z: f64) -> f64 {
    let x = z.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * x);
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erfc = poly * (-x * x).exp();
    let sf = 0.5 * erfc;
    if z >= 0.0 {
        sf
    } else {
        1.0 - sf
    }
}

/// Result of a Mann–Whitney U test.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, schemars::JsonSchema)]
pub struct MannWhitney {
    /// U of the first sample (pairs where it is larger, ties counting ½).
    pub u: f64,
    /// Two-sided p.
    pub p: f64,
    /// Whether `p` is from the exact null distribution.
    pub exact: bool,
}

/// Exact two-sided p for U with sizes m, n (no ties): counts of rank
/// arrangements with each U value, by f(m, n, u) = f(m−1, n, u−n) + f(m, n−1, u).
fn exact_u_p(u: f64, m: usize, n: usize) -> f64 {
    let max = m * n;
    // dp[j][u]: arrangements of i x-values and j y-values with statistic u.
    let mut prev: Vec<Vec<f64>> = (0..=n)
        .map(|_| {
            let mut v = vec![0.0; max + 1];
            v[0] = 1.0;
            v
        })
        .collect();
    for _i in 1..=m {
        let mut cur: Vec<Vec<f64>> = vec![vec![0.0; max + 1]; n + 1];
        cur[0][0] = 1.0;
        for j in 1..=n {
            for s in 0..=max {
                let a = if s >= j { prev[j][s - j] } else { 0.0 };
                cur[j][s] = a + cur[j - 1][s];
            }
        }
        prev = cur;
    }
    let counts = &prev[n];
    let total: f64 = counts.iter().sum();
    let u_lo = u.min(max as f64 - u);
    let tail: f64 = counts
        .iter()
        .enumerate()
        .filter(|(s, _)| (*s as f64) <= u_lo + 1e-9)
        .map(|(_, c)| c)
        .sum();
    (2.0 * tail / total).min(1.0)
}

/// Two-sided Mann–Whitney U test of `x` against `y`; None when either is empty.
pub fn mann_whitney(x: &[f64], y: &[f64]) -> Option<MannWhitney> {
    let (m, n) = (x.len(), y.len());
    if m == 0 || n == 0 {
        return None;
    }
    // Midranks of the pooled sample.
    let mut all: Vec<(f64, bool)> = x
        .iter()
        .map(|&v| (v, true))
        .chain(y.iter().map(|&v| (v, false)))
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut rank_x = 0.0;
    let mut tie_term = 0.0;
    let mut i = 0;
    while i < all.len() {
        let mut j = i;
        while j + 1 < all.len() && all[j + 1].0 == all[i].0 {
            j += 1;
        }
        let r = (i + j) as f64 / 2.0 + 1.0;
        let t = (j - i + 1) as f64;
        tie_term += t * t * t - t;
        rank_x += all[i..=j].iter().filter(|e| e.1).count() as f64 * r;
        i = j + 1;
    }
    let u = rank_x - (m * (m + 1)) as f64 / 2.0;
    let (mf, nf) = (m as f64, n as f64);
    if tie_term == 0.0 && m < 50 && n < 50 {
        return Some(MannWhitney {
            u,
            p: exact_u_p(u, m, n),
            exact: true,
        });
    }
    let mu = mf * nf / 2.0;
    let big_n = mf + nf;
    let var = mf * nf / 12.0 * ((big_n + 1.0) - tie_term / (big_n * (big_n - 1.0)));
    if var <= 0.0 {
        return Some(MannWhitney {
            u,
            p: 1.0,
            exact: false,
        });
    }
    let d = u - mu;
    let z = (d.abs() - 0.5).max(0.0) / var.sqrt();
    Some(MannWhitney {
        u,
        p: (2.0 * norm_sf(z)).min(1.0),
        exact: false,
    })
}

/// The level below which a difference is called significant.
pub const ALPHA: f64 = 0.05;

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn fisher_matches_known_values() {
        // Fisher's tea tasting: 3 of 4 vs 1 of 4; R: fisher.test(matrix(c(3,1,1,3),2)) p = 0.4857.
        assert!(close(fisher_exact(3, 4, 1, 4), 0.485_714, 1e-5));
        // R: fisher.test(matrix(c(10,0,0,10),2))$p.value = 1.082509e-05.
        assert!(close(fisher_exact(10, 10, 0, 10), 1.082_509e-5, 1e-10));
        // 20/20 vs 12/20: 0.003276003 (the hypergeometric sum done independently
        // with exact integer binomials, Python's math.comb).
        assert!(close(fisher_exact(20, 20, 12, 20), 0.003_276_003, 1e-8));
        // Equal tables: p = 1.
        assert!(close(fisher_exact(5, 10, 5, 10), 1.0, 1e-12));
        assert!(close(fisher_exact(0, 0, 0, 0), 1.0, 0.0));
    }

    #[test]
    fn mann_whitney_matches_known_values() {
        // Complete separation of 5 and 5: U = 0, p = 2/252 = 0.007937 (exact; also
        // checked by enumerating all 252 splits).
        let r = mann_whitney(&[1., 2., 3., 4., 5.], &[6., 7., 8., 9., 10.]).unwrap();
        assert_eq!(r.u, 0.0);
        assert!(r.exact && close(r.p, 0.007_937, 1e-6), "{r:?}");
        // U = 3 for 4 against 5: p = 14/126 = 0.1111 (enumeration of all 126 splits).
        let r = mann_whitney(&[1.1, 2.2, 3.3, 4.4], &[2.5, 3.5, 4.5, 5.5, 6.5]).unwrap();
        assert_eq!(r.u, 3.0);
        assert!(close(r.p, 0.111_111, 1e-5), "{r:?}");
        // Ties: U = 6; tie-corrected variance 19.444, continuity-corrected
        // z = 1.2851, p = 0.198829 (computed independently in Python with math.erfc).
        let r = mann_whitney(&[1., 2., 2., 3., 4.], &[2., 3., 3., 5., 6.]).unwrap();
        assert_eq!(r.u, 6.0);
        assert!(!r.exact && close(r.p, 0.198_829, 1e-5), "{r:?}");
        // Identical samples: no evidence.
        let r = mann_whitney(&[1., 1., 1.], &[1., 1., 1.]).unwrap();
        assert!(close(r.p, 1.0, 1e-12), "{r:?}");
        assert!(mann_whitney(&[], &[1.0]).is_none());
    }

    #[test]
    fn the_normal_tail_is_right() {
        assert!(close(norm_sf(0.0), 0.5, 1e-7));
        assert!(close(norm_sf(1.959_964), 0.025, 1e-6));
        assert!(close(norm_sf(-1.0), 0.841_345, 1e-6));
    }
}
