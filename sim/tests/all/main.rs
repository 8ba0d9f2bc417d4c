//! The simulator's test suite, one binary: seed sweeps on both engines,
//! determinism, proptest scenarios with shrinking, and pinned seeds.

mod determinism;
// issue 9
mod gc;
mod pinned;
mod props;
mod seeds;

use davsync_sim::{Config, Engine, Engines, Profile, TraceMode, run_seed};

/// Runs `seeds` on `engine` and fails with every failing seed's replay line.
/// `DAVSYNC_SIM_SEEDS=n` runs only the first `n` of each range (a quick run,
/// e.g. under cargo-mutants).
pub fn sweep(engine: Engine, profile: Profile, seeds: std::ops::Range<u64>) {
    let limit = std::env::var("DAVSYNC_SIM_SEEDS").ok().and_then(|v| v.parse::<u64>().ok());
    let seeds = seeds.start..limit.map_or(seeds.end, |n| seeds.end.min(seeds.start + n));
    davsync_sim::tune_allocator();
    let cfg = Config { profile, ..Config::default() };
    let mut engines = Engines::new(engine);
    let mut failed = Vec::new();
    for seed in seeds.clone() {
        let outcome = run_seed(&mut engines, &cfg, seed, TraceMode::Off).expect("engine starts");
        if let Some(why) = outcome.failure {
            failed.push(format!(
                "seed {seed}: {why}\n  replay: davsync-sim replay --seed {seed} --engine {engine:?} --profile {profile:?}"
            ));
        }
    }
    assert!(failed.is_empty(), "{} of {} seeds failed:\n{}", failed.len(), seeds.count(), failed.join("\n"));
}
