//! Scenarios as proptest values: the list of decisions the scheduler makes.
//! A failing list shrinks toward fewer and plainer decisions (0 is always
//! the plainest option), which gives a minimal scenario to read.

use std::cell::RefCell;

use davsync_sim::{Choices, Config, Engine, Engines, Profile, TraceMode, run};
use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, RngAlgorithm, TestRng, TestRunner};

fn scenario() -> impl Strategy<Value = (usize, Profile, Vec<u32>)> {
    let profiles =
        prop_oneof![Just(Profile::Strict), Just(Profile::Weak), Just(Profile::Ignores), Just(Profile::Locks)];
    (2usize..=4, profiles, proptest::collection::vec(any::<u32>(), 0..400))
}

#[test]
fn generated_scenarios_keep_every_invariant() {
    let engines = RefCell::new(Engines::new(Engine::Native));
    // A fixed generator seed: CI runs the same cases every time.
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]);
    let config = RunnerConfig { cases: 300, failure_persistence: None, ..RunnerConfig::default() };
    let mut runner = TestRunner::new_with_rng(config, rng);
    let result = runner.run(&scenario(), |(instances, profile, decisions)| {
        let cfg = Config { instances, profile, steps: 80, ..Config::default() };
        let outcome = run(&mut engines.borrow_mut(), &cfg, 0, Choices::list(decisions), TraceMode::Off)
            .expect("engine");
        prop_assert!(outcome.failure.is_none(), "{:?}", outcome.failure);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn a_list_of_decisions_is_a_replayable_scenario() {
    let mut engines = Engines::new(Engine::Native);
    let cfg = Config::default();
    let decisions: Vec<u32> = (0..300u32).map(|i| i.wrapping_mul(2_654_435_761)).collect();
    let a = run(&mut engines, &cfg, 0, Choices::list(decisions.clone()), TraceMode::Hash).unwrap();
    let b = run(&mut engines, &cfg, 0, Choices::list(decisions), TraceMode::Hash).unwrap();
    assert!(a.trace_hash.is_some());
    assert_eq!(a.trace_hash, b.trace_hash);
    assert!(a.calls > 0, "the decisions started no engine call");
    // An empty list is the empty scenario: it still quiesces and checks.
    let empty = run(&mut engines, &cfg, 0, Choices::list(Vec::new()), TraceMode::Off).unwrap();
    assert!(empty.failure.is_none(), "{:?}", empty.failure);
}
