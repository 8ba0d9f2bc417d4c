//! Where every decision of a scenario comes from.
//!
//! A scenario never calls a random generator directly: it asks [`Choices`]
//! to pick among `n` options. From a seed the picks are a splitmix64 stream;
//! from a list (what proptest generates and shrinks) they are the list's
//! values, and an exhausted list ends the workload. Option 0 is always the
//! plainest one, so a list shrunk toward zeros is a simpler scenario.

use davsync_core::mem::SeededRandom;
use davsync_core::ports::Random;

/// The source of a scenario's decisions.
#[derive(Debug, Clone)]
pub enum Choices {
    /// A seeded stream that never runs out.
    Seeded(SeededRandom),
    /// A fixed list; `pick` answers 0 once it is used up.
    List {
        /// The decisions.
        values: Vec<u32>,
        /// How many were used.
        used: usize,
    },
}

impl Choices {
    /// Decisions drawn from `seed`.
    pub fn seeded(seed: u64) -> Choices {
        Choices::Seeded(SeededRandom::new(seed ^ 0x5EED_5EED_5EED_5EED))
    }

    /// Decisions read from `values`, in order.
    pub fn list(values: Vec<u32>) -> Choices {
        Choices::List { values, used: 0 }
    }

    /// False once a list is used up (a seeded stream never is).
    pub fn has_more(&self) -> bool {
        match self {
            Choices::Seeded(_) => true,
            Choices::List { values, used } => used < &values.len(),
        }
    }

    /// A value in `0..n` (0 when `n` is 0).
    pub fn pick(&mut self, n: u32) -> u32 {
        if n == 0 {
            return 0;
        }
        match self {
            Choices::Seeded(rng) => (rng.next_u64() % u64::from(n)) as u32,
            Choices::List { values, used } => {
                let v = values.get(*used).copied().unwrap_or(0);
                *used += 1;
                v % n
            }
        }
    }

    /// True with probability `num / den`.
    pub fn chance(&mut self, num: u32, den: u32) -> bool {
        // Inverted so that 0 (the shrink target) means "no".
        self.pick(den) >= den - num
    }

    /// An index into `weights`, chosen in proportion to them.
    pub fn weighted(&mut self, weights: &[u32]) -> usize {
        let total: u32 = weights.iter().sum();
        let mut x = self.pick(total);
        for (i, w) in weights.iter().enumerate() {
            if x < *w {
                return i;
            }
            x -= w;
        }
        0
    }

    /// A value in `lo..=hi`.
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        let span = u32::try_from(hi - lo + 1).unwrap_or(u32::MAX);
        lo + i64::from(self.pick(span))
    }
}
