//! Issue 9: the maintenance job runs remote gc (1 s grace, virtual time)
//! among the syncs, and every invariant still holds: no lost write, every
//! live row's blob present and hash-correct, convergence. Quiescence ends
//! with a gc of no grace before the final checks.

use davsync_sim::{Config, Engine, Engines, Profile, TraceMode, run_seed};

fn gc_sweep(engine: Engine, profile: Profile, seeds: std::ops::Range<u64>) {
    let limit = std::env::var("DAVSYNC_SIM_SEEDS").ok().and_then(|v| v.parse::<u64>().ok());
    let seeds = seeds.start..limit.map_or(seeds.end, |n| seeds.end.min(seeds.start + n));
    let cfg = Config { profile, gc: true, ..Config::default() };
    let mut engines = Engines::new(engine);
    let failed: Vec<String> = seeds
        .clone()
        .filter_map(|seed| {
            let outcome = run_seed(&mut engines, &cfg, seed, TraceMode::Off).expect("engine starts");
            outcome.failure.map(|why| {
                format!("seed {seed}: {why}\n  replay: davsync-sim replay --seed {seed} --profile {profile:?} --gc")
            })
        })
        .collect();
    assert!(failed.is_empty(), "{} of {} seeds failed:\n{}", failed.len(), seeds.count(), failed.join("\n"));
}

#[test]
fn native_gc_among_syncs_2000_seeds_mixed_servers() {
    gc_sweep(Engine::Native, Profile::Mixed, 0..2_000);
}

#[test]
#[cfg(feature = "wasm")]
fn wasm_gc_among_syncs_50_seeds_mixed_servers() {
    gc_sweep(Engine::Wasm, Profile::Mixed, 0..50);
}
