//! Every bug the simulator found, kept as the seed that found it.

use davsync_sim::{Config, Engine, Engines, Outcome, Profile, run_seed};

fn replay(cfg: &Config, seed: u64) -> Outcome {
    run_seed(&mut Engines::new(Engine::Native), cfg, seed, true).expect("engine starts")
}

fn assert_passes(cfg: &Config, seed: u64) {
    let outcome = replay(cfg, seed);
    assert!(outcome.failure.is_none(), "seed {seed}: {:?}", outcome.failure);
}

/// A lease holder stalls past its lease after writing `metadata.db`; another
/// instance breaks the lease, takes it and commits version 2. The stalled
/// one then "renewed" its expired lease (overwriting the new holder's) and
/// wrote `version.txt` 1 over 2. Fixed in `lease.rs`: an expired lease is
/// never renewed, it is taken anew.
#[test]
fn seed_17140_an_expired_lease_is_not_renewed_over_a_new_holder() {
    let cfg = Config { backward_jumps: false, freezes: false, ..Config::default() };
    let outcome = replay(&cfg, 17_140);
    assert!(outcome.failure.is_none(), "{:?}", outcome.failure);
    let trace = outcome.trace.unwrap_or_default();
    assert!(
        trace.iter().any(|l| l.contains("LeaseLost")
            || l.contains("lease was lost")
            || l.contains("PUT version.txt"))
    );
}

/// An app edit made while the instance's own first push of the file was
/// in flight (same wall-clock millisecond, the attempt retried after losing
/// its lease) tied with that push's HLC stamp and lost to it. Fixed in
/// `plan.rs`: a tie is the instance's own earlier push, so the pending
/// local row is the later write.
#[test]
fn seed_4699_an_edit_during_the_own_first_push_is_not_lost() {
    let cfg = Config { profile: Profile::Mixed, backward_jumps: false, freezes: false, ..Config::default() };
    assert_passes(&cfg, 4_699);
}

/// Found with backward clock jumps: an instance pushes a file and crashes
/// before its local commit, its clock jumps back, and the app edits the
/// file. The next sync stamped the edit by the (earlier) wall clock, below
/// the instance's own pushed stamp, and the edit lost to the older state.
/// Fixed in `engine.rs`/`plan.rs`: before its remote commit a sync records
/// the local states it publishes (`local_state::OwnPushes`); a pending row
/// that differs from the recorded input of the instance's own published row
/// was edited after that push, so it is the later write. (Treating every
/// remote row stamped by the instance as older than the pending row was
/// wrong for a pushed merge: `plan::tests::a_pushed_merge_supersedes_its_
/// input_and_later_edits_apply_on_top`.)
#[test]
fn seed_1438_an_edit_after_a_crash_and_a_backward_clock_jump_beats_the_own_older_push() {
    assert_passes(&Config { backward_jumps: true, freezes: false, ..Config::default() }, 1_438);
}
