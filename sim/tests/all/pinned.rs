//! Every bug the simulator found, kept as the seed that found it.

use davsync_sim::{Config, Engine, Engines, Outcome, Profile, TraceMode, run_seed};

fn replay(cfg: &Config, seed: u64) -> Outcome {
    run_seed(&mut Engines::new(Engine::Native), cfg, seed, TraceMode::Lines).expect("engine starts")
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
    let cfg = Config {
        backward_jumps: false,
        freezes: false,
        hot_files: false,
        bursts: false,
        ..Config::default()
    };
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
    let cfg = Config {
        profile: Profile::Mixed,
        backward_jumps: false,
        freezes: false,
        hot_files: false,
        bursts: false,
        ..Config::default()
    };
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
    assert_passes(
        &Config {
            backward_jumps: true,
            freezes: false,
            hot_files: false,
            bursts: false,
            ..Config::default()
        },
        1_438,
    );
}

/// Found once bursts let syncs finish while the app still edits: a holder
/// stalls between its last lease check and its `version.txt` write while
/// another instance takes the lease over and commits; the late write set
/// the counter back (2 → 1), and an instance that had recorded 1 would skip
/// version 2. Fixed in `engine.rs`: `version.txt` is replaced with `If-Match`
/// on the ETag the fence read (`If-None-Match: *` when there was none).
#[test]
fn seed_348_a_stalled_holder_does_not_set_version_txt_back() {
    assert_passes(&Config::default(), 348);
}

/// The same stall on a server that ignores conditional requests, one step
/// earlier: the stale holder overwrote the new holder's `metadata.db` of
/// version 2 with its own version 2. The new holder had recorded version 2,
/// so it skipped the other's file, which the overwrite had published under
/// that number. Fixed in `engine.rs`: a sync that finds the remote behind
/// what it knew (a row older than its base, or gone) looks at every remote
/// row, not only those past the version it recorded.
#[test]
fn seed_302_a_remote_behind_us_is_compared_in_full() {
    assert_passes(&Config { steps: 200, ..Config::default() }, 302);
}

/// With gc among the syncs, on a server that ignores conditional requests: a
/// sync fenced, then gc bumped the version and deleted two blobs the sync had
/// just uploaded (unreferenced until its commit), then the sync's
/// `metadata.db` landed anyway and it crashed. Its rows now named deleted
/// blobs, and after its restart it took its own pushed rows as settled, so
/// nothing uploaded them again. Fixed in `engine.rs`: a sync settling its
/// own unfinished push checks the blob and uploads it if it is gone, and a
/// second fence after the `metadata.db` write starts over when a commit
/// landed in between.
/// Found with a 1 s grace period on every server, kept so: the fix does not
/// rely on the grace period.
#[test]
fn seed_262_gc_under_a_stalled_push_on_rclone_loses_no_blob() {
    assert_passes(&Config { gc: true, gc_grace_ms: Some(1_000), ..Config::default() }, 262);
}

/// Remote format 2 with gc: a lease holder wrote its change file, stalled
/// past its lease, and gc (1 s grace) deleted that file as off the chain;
/// the holder's `version.txt` then landed naming it, and every reader
/// refused the remote ("changes/2-… is missing"). Fixed in `maintenance.rs`:
/// gc deletes only change files at or below the checkpoint, which no walk
/// down the chain reads. Seed 2555 is on a server that honours conditional
/// writes, 4402 on one that ignores them.
#[test]
fn seeds_2555_4402_gc_keeps_change_files_a_stalled_writer_may_still_name() {
    for seed in [2555, 4402] {
        assert_passes(&Config { gc: true, gc_grace_ms: Some(1_000), ..Config::default() }, seed);
    }
}

/// With gc among the syncs on a server that ignores conditional writes: a
/// writer stalled 124 s between uploading three blobs and its commit, gc
/// (then with a 1 s grace there too) deleted them as unreferenced, and the
/// commit landed naming them; no instance could download them again. Nothing
/// can fence that writer (SPEC §3); gc's grace period, a day by default, is
/// what keeps those blobs, so the simulator now runs gc with it on such a
/// server (`maintainer::GC_GRACE_UNFENCED_MS`).
#[test]
fn seed_9534_on_rclone_gc_grace_outlasts_a_stalled_writer() {
    assert_passes(&Config { gc: true, ..Config::default() }, 9534);
}

/// Two instances created the remote on a server that ignores conditional
/// writes: the stalled creator's `metadata.db` replaced the remote another
/// had created and committed to, including one file's deletion. Every
/// instance then saw a new epoch (a void base); the one still holding the
/// file offered it live, the one that deleted it forgot its deletion as
/// "another remote's business", and the file came back. Fixed in `plan.rs`:
/// under a void base a deletion is offered like a live file (pushed where
/// the remote lacks the file, a conflict where it has it live).
#[test]
fn seed_14946_a_deletion_survives_a_remote_recreated_under_it() {
    assert_passes(&Config::default(), 14_946);
}

/// Remote format 2 (issue 17), on a server that ignores conditional
/// requests: two instances both created the remote (one of them a stale
/// lease holder), so `metadata.db` came from one and `version.txt` (its
/// epoch, its commit) from the other, or a stale holder's checkpoint landed
/// across another's commit. Readers refused the remote as corrupt: its
/// `metadata.db` was not on the chain `version.txt` starts. Fixed in
/// `engine.rs`: as in format 1, `metadata.db` is then the state and the next
/// commit goes past both; the instances whose commits are lost find their
/// commit off the chain and publish their rows again.
#[test]
fn seeds_382_458_a_checkpoint_off_the_chain_is_the_state() {
    for seed in [302, 382, 458, 546, 590, 726, 990] {
        assert_passes(&Config::default(), seed);
    }
}
