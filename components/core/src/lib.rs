//! `davsync-core`: the davsync sync algorithm as a plain library.
//!
//! It decides; it does no I/O of its own. Everything it reads or writes goes
//! through the ports in [`ports`] (mirrors of the WIT imports in `wit/`), so
//! the same code runs natively, inside the WebAssembly component, and in the
//! deterministic simulator.
//!
//! Map of the crate:
//! - [`model`]: rows, hashes, blob paths and the validation of every value
//!   that comes from the remote or the app.
//! - [`hlc`]: the hybrid logical clock that orders last-write-wins.
//! - [`ports`]: the traits the host implements (local store, remote, blobs,
//!   clock, random, progress) and their typed errors.
//! - [`remote_db`]: the shared `metadata.db`, handled as bytes in memory.
//! - [`maintenance`]: remote status, blob verification and garbage
//!   collection, for a maintenance job that owns no local side.
//! - [`mem`]: in-memory implementations of every port, with server profiles
//!   and fault injection, for tests and the simulator.
#![warn(missing_docs)]

pub mod hlc;
pub mod mem;
pub mod model;
pub mod ports;
pub mod remote_db;

pub mod api;
pub mod engine;
pub mod history;
pub mod lease;
pub mod local_state;
pub mod maintenance;
pub mod plan;
pub mod resolve;
pub mod session;

pub use api::{
    ConflictInfo, FileError, Resolution, ResolutionKind, ResolveOutcome, StatusReport, SyncError,
    SyncOptions, SyncSummary,
};
pub use engine::sync;
pub use resolve::{conflicts, resolve, status};
