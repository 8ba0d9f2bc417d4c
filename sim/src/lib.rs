//! `davsync-sim`: the deterministic multi-instance simulator (SPEC §6).
//!
//! Many virtual instances of the app, each with its own store, clock (skew
//! and drift) and engine, share one in-memory WebDAV server that plays one
//! of four real servers' behaviours. A seeded scheduler interleaves them at
//! every remote operation, the workload and the faults come from the same
//! seed, and invariants are checked after every step and after quiescence.
//! The same seed gives the same trace, byte for byte, on both engines.
//!
//! - [`choices`]: where every decision comes from (a seed, or a list that
//!   proptest generates and shrinks).
//! - [`executor`]: per instance, a coroutine (native core) or a thread
//!   (component) running its engine calls, and the baton that keeps exactly
//!   one of them running at a time.
//! - [`scenario`]: the scheduler, the workload, the faults, the invariants.
//! - [`maintainer`]: the remote-maintenance job running `gc` among the
//!   syncs (with [`Config::gc`]).
//! - [`oracle`]: the record of every write and the "nothing lost" check.
//! - [`state`]: the remote's published state, read cheaply for the checks.
//! - [`trace`]: the hashed trace.
#![warn(missing_docs)]

pub mod choices;
pub mod executor;
pub mod maintainer;
pub mod oracle;
pub mod scenario;
pub mod state;
pub mod trace;

pub use choices::Choices;
pub use scenario::{Config, Engine, Engines, Outcome, Profile, run};
pub use trace::TraceMode;

/// Tunes glibc's allocator for many short scenarios in one process (the
/// test suite's; the `davsync-sim` binary allocates with mimalloc): freed
/// memory stays in the process instead of going back to the kernel at every
/// connection close. Each scenario opens dozens of in-memory SQLite
/// databases; with glibc's defaults each open grows the heap, each close
/// shrinks it, and the fresh pages fault in again (about 15% of the time,
/// mostly system time). Process-wide, idempotent, no effect on traces; a
/// no-op on other platforms.
#[allow(unsafe_code)] // one FFI call, see SAFETY
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only sets allocator parameters; any value is valid.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
        libc::mallopt(libc::M_TOP_PAD, 16 << 20);
    }
}

/// Runs the scenario of `seed`.
pub fn run_seed(engines: &mut Engines, cfg: &Config, seed: u64, trace: TraceMode) -> anyhow::Result<Outcome> {
    run(engines, cfg, seed, Choices::seeded(seed), trace)
}
