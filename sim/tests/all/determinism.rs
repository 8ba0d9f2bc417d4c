//! Same seed, same trace: run twice, and run on both engines.

use davsync_sim::{Config, Engine, Engines, Outcome, TraceMode, run_seed};

fn outcome(engines: &mut Engines, cfg: &Config, seed: u64) -> Outcome {
    let outcome = run_seed(engines, cfg, seed, TraceMode::Lines).expect("engine starts");
    assert!(outcome.trace_hash.is_some(), "seed {seed}: no trace hash");
    outcome
}

#[test]
fn a_seed_replays_byte_for_byte() {
    let cfg = Config::default();
    let mut first = Engines::new(Engine::Native);
    let mut second = Engines::new(Engine::Native);
    for seed in [0, 7, 42, 1_000, 31_337] {
        let a = outcome(&mut first, &cfg, seed);
        let b = outcome(&mut second, &cfg, seed);
        assert_eq!(a.trace_hash, b.trace_hash, "seed {seed}: traces differ");
        assert_eq!(a.trace, b.trace);
        assert!(a.ops > 0, "seed {seed} did nothing");
    }
    // And different seeds are different scenarios.
    let c = outcome(&mut first, &cfg, 8);
    assert_ne!(outcome(&mut first, &cfg, 7).trace_hash, c.trace_hash);
}

#[test]
#[cfg(feature = "wasm")]
fn native_core_and_wasm_component_give_identical_traces() {
    use davsync_sim::Profile;
    let mut native = Engines::new(Engine::Native);
    let mut wasm = Engines::new(Engine::Wasm);
    for (seed, profile) in
        [(3, Profile::Strict), (11, Profile::Weak), (19, Profile::Ignores), (23, Profile::Locks)]
    {
        let cfg = Config { profile, ..Config::default() };
        let n = outcome(&mut native, &cfg, seed);
        let w = outcome(&mut wasm, &cfg, seed);
        if n.trace_hash != w.trace_hash {
            let (n, w) = (n.trace.unwrap_or_default(), w.trace.unwrap_or_default());
            let at = n.iter().zip(&w).position(|(a, b)| a != b).unwrap_or(n.len().min(w.len()));
            panic!(
                "seed {seed}: engines diverge at line {at}:\n native: {:?}\n wasm:   {:?}",
                n.get(at),
                w.get(at)
            );
        }
        assert!(n.failure.is_none(), "seed {seed}: {:?}", n.failure);
    }
}
