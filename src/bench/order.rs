//! The order of a bench run's trials: one warm-up trial per method first
//! (reported apart, left out of the statistics), then `cycles` cycles of
//! every method once. Without a seed the cycles are interleaved in the
//! order given (A B C A B C …); with `--seed N` each cycle is its own random
//! permutation (block randomisation: every method still runs once per cycle,
//! so drift over the run hits all alike, but no method always goes first or
//! always follows the same other). One seed gives one order, on any machine:
//! the generator is SplitMix64 (Steele, Lea & Flood 2014), fixed here, and
//! the shuffle is Fisher–Yates.

/// One turn of the schedule: which row runs, in which cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Turn {
    /// Index into the cycle's rows (twin VM cycles: the release row, then the
    /// methods; otherwise the methods).
    pub row: usize,
    /// Cycle from 0 (warm-ups: 0, flagged).
    pub cycle: usize,
    pub warmup: bool,
}

/// SplitMix64: a 64-bit state, one add and a mix per number.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in 0..n (n ≥ 1), without modulo bias (rejection).
    fn below(&mut self, n: usize) -> usize {
        let n = n as u64;
        let zone = u64::MAX - u64::MAX % n;
        loop {
            let v = self.next();
            if v < zone {
                return (v % n) as usize;
            }
        }
    }
}

/// The schedule of `methods` methods over `cycles` cycles.
pub fn schedule(methods: usize, cycles: usize, seed: Option<u64>, warmup: bool) -> Vec<Turn> {
    let mut rng = seed.map(SplitMix64);
    let mut out = Vec::with_capacity(methods * (cycles + usize::from(warmup)));
    let block = |cycle: usize, warm: bool, rng: &mut Option<SplitMix64>| {
        let mut idx: Vec<usize> = (0..methods).collect();
        if let Some(r) = rng {
            for i in (1..idx.len()).rev() {
                idx.swap(i, r.below(i + 1));
            }
        }
        idx.into_iter().map(move |m| Turn {
            row: m,
            cycle,
            warmup: warm,
        })
    };
    if warmup {
        out.extend(block(0, true, &mut rng));
    }
    for c in 0..cycles {
        out.extend(block(c, false, &mut rng));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_seed_cycles_interleave_in_order() {
        let s = schedule(3, 2, None, true);
        let m: Vec<(usize, usize, bool)> = s.iter().map(|x| (x.row, x.cycle, x.warmup)).collect();
        assert_eq!(
            m,
            [
                (0, 0, true),
                (1, 0, true),
                (2, 0, true),
                (0, 0, false),
                (1, 0, false),
                (2, 0, false),
                (0, 1, false),
                (1, 1, false),
                (2, 1, false)
            ]
        );
        assert_eq!(schedule(2, 1, None, false).len(), 2);
    }

    #[test]
    fn one_seed_one_order_and_every_method_once_per_cycle() {
        let a = schedule(5, 20, Some(7), true);
        assert_eq!(a, schedule(5, 20, Some(7), true));
        assert_ne!(a, schedule(5, 20, Some(8), true));
        assert_ne!(a, schedule(5, 20, None, true), "a seed shuffles");
        for c in 0..20 {
            let mut ms: Vec<usize> = a
                .iter()
                .filter(|s| !s.warmup && s.cycle == c)
                .map(|s| s.row)
                .collect();
            ms.sort();
            assert_eq!(ms, [0, 1, 2, 3, 4]);
        }
        assert_eq!(a.iter().filter(|s| s.warmup).count(), 5);
    }

    #[test]
    fn the_generator_is_splitmix64() {
        // Reference outputs of SplitMix64 seeded with 0 (Vigna's splitmix64.c).
        let mut r = SplitMix64(0);
        assert_eq!(r.next(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(r.next(), 0x6e78_9e6a_a1b9_65f4);
    }

    #[test]
    fn shuffles_are_roughly_uniform() {
        // Over many seeds, each of 3 methods leads a cycle about 1/3 of the time.
        let mut first = [0usize; 3];
        for seed in 0..3000 {
            first[schedule(3, 1, Some(seed), false)[0].row] += 1;
        }
        for f in first {
            assert!((850..=1150).contains(&f), "{first:?}");
        }
    }
}
