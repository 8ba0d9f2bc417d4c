//! The maintenance actor (issue 9): a job that runs remote `gc` with a short
//! grace period in virtual time, concurrently with the instances' syncs.
//!
//! A gc runs as one scheduler step, between any two remote operations of the
//! running syncs (which may be parked anywhere: after their presence checks,
//! before their commit, past their lease after "time passes"). It has its
//! own connection, clock (the world's, no skew) and seeded randomness, and
//! never retries or waits: a held lease or a 423 ends it, as a real job
//! would end and run again later. What it must never do shows in the
//! scenario's invariants: a live row without its blob, a lost write.
//!
//! Not modelled: gc itself paused between two of its own operations (its
//! calls are not scheduled op by op); see ARCHITECTURE.md, "Remote
//! maintenance", for the window that leaves and why the lease covers it.

use davsync_core::maintenance::{self, GcReport, MaintenanceError, MaintenanceIo, MaintenanceOptions};
use davsync_core::mem::{
    LocalFiles, MemBlobs, MemRemote, MemRemoteClient, SeededRandom, SimClock, WorldClock,
};

/// Unreferenced blobs younger than this (virtual time) are kept, on a
/// server that honours conditional writes: there gc's commit fences off a
/// sync that relies on a blob gc deletes, so the grace period only adds a
/// margin, and a short one tests that the fence alone is enough.
pub const GC_GRACE_MS: u64 = 1_000;

/// The grace period on a server that ignores conditional writes (rclone),
/// gc's default. Nothing can fence a writer there that stalled past its
/// lease (SPEC §3): it can still publish a commit naming blobs it uploaded
/// before gc ran, and only a grace period longer than such a stall keeps
/// those blobs. (Seed 9534 of `--gc`: a writer stalled 124 s, gc deleted
/// its three new blobs after 1 s, its commit then landed naming them.)
pub const GC_GRACE_UNFENCED_MS: u64 = 24 * 3_600_000;

/// The maintenance job's ports.
#[derive(Debug)]
pub struct Maintainer {
    client: MemRemoteClient,
    hasher: MemBlobs,
    clock: SimClock,
    random: SeededRandom,
}

impl Maintainer {
    /// A job on `remote`, keeping time by `world`, randomness from `seed`.
    pub fn new(remote: &MemRemote, world: &WorldClock, seed: u64) -> Maintainer {
        let client = MemRemoteClient::new(remote.clone());
        let hasher = MemBlobs::new(LocalFiles::new(), client.clone());
        let clock = SimClock::new(world.clone(), 0);
        Maintainer { client, hasher, clock, random: SeededRandom::new(seed ^ 0x6763_6763) }
    }

    /// One gc run with `grace_ms`.
    pub fn gc(&mut self, grace_ms: u64) -> Result<GcReport, MaintenanceError> {
        let opts = MaintenanceOptions {
            gc_grace_ms: grace_ms,
            lock_wait_ms: 0,
            remote_retries_max: 0,
            host_name: "sim-maintainer".to_owned(),
            ..MaintenanceOptions::default()
        };
        let mut io = MaintenanceIo {
            remote: &mut self.client,
            hasher: &mut self.hasher,
            clock: &mut self.clock,
            random: &mut self.random,
        };
        maintenance::gc(&mut io, &opts)
    }
}

/// A gc outcome as one trace line. A failure a job can meet (lease held,
/// 423, no remote yet) is an outcome, not a simulator failure; one that says
/// the remote is corrupt or the ports misbehaved is returned as an error.
pub fn describe(result: &Result<GcReport, MaintenanceError>) -> Result<String, String> {
    match result {
        Ok(r) => Ok(format!(
            "gc: deleted {} blobs {:?}, kept {} young, version {} -> {:?}",
            r.deleted.len(),
            r.deleted.iter().map(|p| p.get(3..11).unwrap_or(p)).collect::<Vec<_>>(),
            r.kept_young,
            r.version_before,
            r.version_after
        )),
        Err(e @ (MaintenanceError::RemoteCorrupt(_) | MaintenanceError::Invalid(_))) => {
            Err(format!("gc failed in a way the simulator never provokes: {e}"))
        }
        Err(e) => Ok(format!("gc stopped: {e}")),
    }
}
