//! What the engine offers its callers (the WIT `engine` export): options,
//! results and typed errors.

use serde::{Deserialize, Serialize};

use crate::model::{ConflictKind, InvalidValue};
use crate::ports::{LocalError, RemoteError};

/// Tunables of one sync. `Default` gives the documented defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SyncOptions {
    /// Skip the quick check and allow a mass deletion.
    pub force: bool,
    /// How long a lease lasts without renewal (server clock).
    pub lease_ttl_ms: u64,
    /// How long to wait for a lease held by someone else before giving up.
    pub lock_wait_ms: u64,
    /// Refuse a sync that would delete more than this share of local files …
    pub mass_delete_percent: u8,
    /// … and more than this many files.
    pub mass_delete_files_min: u64,
    /// Full attempts when other instances commit in between (fencing).
    pub commit_attempts_max: u32,
    /// Fold the history into `metadata.db` once this many commits follow
    /// the checkpoint (sooner when their change files reach a quarter of its
    /// size): bounds what an instance that fell behind, or a new one, reads.
    pub fold_commits: u32,
    /// Retries of one remote operation on transient failures (5xx, 423, network).
    pub remote_retries_max: u32,
    /// Largest blob accepted from the remote.
    pub blob_bytes_max: u64,
    /// Largest `metadata.db` accepted from the remote.
    pub metadata_bytes_max: u64,
    /// Host name written into the lease, to name the holder in errors.
    pub host_name: String,
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions {
            force: false,
            lease_ttl_ms: 120_000,
            lock_wait_ms: 60_000,
            mass_delete_percent: 50,
            mass_delete_files_min: 10,
            commit_attempts_max: 5,
            fold_commits: crate::history::FOLD_COMMITS,
            remote_retries_max: 4,
            blob_bytes_max: 1 << 30,
            metadata_bytes_max: 512 << 20,
            host_name: "unknown-host".to_owned(),
        }
    }
}

/// A per-file problem that did not stop the sync; the file is retried next time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileError {
    /// Which logical file.
    pub stable_id: String,
    /// What went wrong, as a sentence.
    pub message: String,
}

/// What one sync did (SPEC §3 step 10).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SyncSummary {
    /// Nothing to do: the quick check found no change on either side.
    pub skipped: bool,
    /// Blobs uploaded (by every attempt: one fenced off after its transfers
    /// moved them too).
    pub uploaded: u32,
    /// Blobs downloaded (by every attempt).
    pub downloaded: u32,
    /// Local files deleted because of remote tombstones.
    pub deleted_local: u32,
    /// Tombstones written to the remote.
    pub deleted_remote: u32,
    /// Rows whose metadata moved (either way) without a blob transfer.
    pub metadata_synced: u32,
    /// Conflicts newly recorded.
    pub conflicts: u32,
    /// Per-file problems (also listed in `file_errors`).
    pub errors: u32,
    /// The per-file problems.
    pub file_errors: Vec<FileError>,
    /// Remote version after the sync.
    pub new_version: i64,
    /// Wall time of the sync.
    pub duration_ms: u64,
    /// The remote is not the one this instance last synced with (new or
    /// restored remote): nothing was deleted locally because of it, local
    /// files were offered to it instead.
    pub epoch_changed: bool,
}

/// Answer of `status` (SPEC §3 step 1; O(1)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    /// A sync would do something.
    pub needs_sync: bool,
    /// Remote version at this instance's last sync (none: never synced).
    pub local_version: Option<i64>,
    /// Remote `version.txt` now (none: no remote yet).
    pub remote_version: Option<i64>,
    /// Local rows waiting to be pushed.
    pub unsynced_count: u64,
    /// When the last sync finished (ISO-8601 UTC).
    pub last_sync_time: Option<String>,
}

/// One recorded conflict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictInfo {
    /// Logical file id.
    pub stable_id: String,
    /// Filename.
    pub filename: String,
    /// Document id.
    pub doc_id: String,
    /// Local content hash.
    pub local_hash: String,
    /// Local row deleted.
    pub local_deleted: bool,
    /// Local change time (ms since epoch, app clock).
    pub local_modified_at_ms: i64,
    /// Remote content hash.
    pub remote_hash: String,
    /// Remote row is a tombstone.
    pub remote_deleted: bool,
    /// Remote change time (ISO-8601).
    pub remote_modified_at: String,
    /// Kind.
    pub kind: ConflictKind,
}

/// How to resolve a conflict (SPEC §4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResolutionKind {
    /// Keep the local version; the next sync pushes it.
    LocalWins,
    /// Take the remote version; the next sync pulls it.
    RemoteWins,
    /// Keep local content as a new logical file with this variant name; the
    /// original takes the remote version.
    KeepBoth {
        /// Variant name of the copy.
        variant: String,
    },
}

/// A resolution request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolution {
    /// The conflicted file.
    pub stable_id: String,
    /// What to do.
    pub kind: ResolutionKind,
}

/// What a resolution did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolveOutcome {
    /// The resolved file.
    pub stable_id: String,
    /// For `keep_both`: the stable id of the new copy.
    pub new_stable_id: Option<String>,
    /// A sentence saying what happens next.
    pub message: String,
}

/// Why a sync, status, or resolution failed. Each variant is something a
/// caller can act on differently.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// The local database failed.
    #[error("local database: {0}")]
    Local(#[from] LocalError),
    /// The remote failed (after bounded retries for transient errors).
    #[error("remote: {0}")]
    Remote(#[from] RemoteError),
    /// `metadata.db`, `version.txt` or the lease on the remote is unusable.
    /// Nothing was changed, locally or remotely.
    #[error("remote data is unusable: {0}")]
    RemoteCorrupt(String),
    /// The remote was written by a newer davsync, in a format this one does
    /// not know. Nothing was changed; upgrade davsync.
    #[error(
        "the remote uses format {format}, newer than this davsync reads (format {supported}); \
         upgrade davsync to sync with it"
    )]
    RemoteTooNew {
        /// The remote's format.
        format: u32,
        /// The newest format this davsync reads.
        supported: u32,
    },
    /// Another instance holds the sync lock.
    #[error("the sync lock is held by {holder}; it expires in {expires_in_ms} ms")]
    LockHeld {
        /// Who, as "instance on host".
        holder: String,
        /// Time left on the lease, by the server's clock.
        expires_in_ms: i64,
    },
    /// Our lease was broken or expired mid-sync; nothing was committed.
    #[error("the sync lease was lost during the sync; nothing was committed")]
    LeaseLost,
    /// The sync would delete too many local files.
    #[error(
        "refusing to delete {would_delete} of {live_total} local files because the remote says so; \
         sync with force to allow it"
    )]
    MassDelete {
        /// Files the sync would delete.
        would_delete: u64,
        /// Live local files.
        live_total: u64,
    },
    /// Other instances kept committing; every attempt was fenced off.
    #[error("gave up after {attempts} attempts: other instances kept committing")]
    Contention {
        /// Attempts made.
        attempts: u32,
    },
    /// No file with that stable id.
    #[error("no file with stable_id {0}")]
    NotFound(String),
    /// The file is not in conflict.
    #[error("file {0} is not in conflict")]
    NotInConflict(String),
    /// The request cannot apply (e.g. keep_both for a locally deleted file).
    #[error("invalid request: {0}")]
    Invalid(String),
}

impl From<InvalidValue> for SyncError {
    fn from(e: InvalidValue) -> Self {
        SyncError::Invalid(e.to_string())
    }
}

/// A `metadata.db` that cannot be read or merged into is the remote's fault.
impl From<crate::remote_db::RemoteDbError> for SyncError {
    fn from(e: crate::remote_db::RemoteDbError) -> Self {
        SyncError::RemoteCorrupt(format!("metadata.db: {e}"))
    }
}
