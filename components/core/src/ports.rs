//! The ports through which the core meets the world. Each trait mirrors one
//! imported WIT interface of `davsync:sync` (see `wit/davsync.wit`); the
//! component implements them by calling its imports, the simulator and the
//! tests implement them in memory (see [`crate::mem`]).
//!
//! The core never opens a file or a socket: everything it reads or writes goes
//! through an [`Io`] bundle of these traits.

use crate::model::{BlobRef, ContentHash, LocalRow, RowBase};

/// A failure talking to the remote. The variants are what a WebDAV server can
/// say, folded into what the core must act on differently.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RemoteError {
    /// 404: the path does not exist.
    #[error("not found")]
    NotFound,
    /// 405 on MKCOL (or 412 on MOVE without overwrite): the path exists.
    #[error("already exists")]
    AlreadyExists,
    /// 409: the parent collection does not exist.
    #[error("parent collection missing")]
    ParentMissing,
    /// 412: a condition (`If-Match`, `If-None-Match`) did not hold.
    #[error("precondition failed")]
    PreconditionFailed,
    /// 423: the resource is locked (by a WebDAV LOCK or a write in progress).
    #[error("locked by the server (423)")]
    Locked,
    /// 401/403: credentials missing or refused.
    #[error("unauthorized: the server refused the credentials")]
    Unauthorized,
    /// 507: the server is out of space.
    #[error("the server is out of storage (507)")]
    InsufficientStorage,
    /// The body is larger than the caller allowed.
    #[error("response larger than {bytes_max} bytes")]
    TooLarge {
        /// The limit that was exceeded.
        bytes_max: u64,
    },
    /// Transient: connection refused or reset, timeout, 5xx. Worth a retry.
    #[error("remote unavailable: {0}")]
    Unavailable(String),
    /// Any other answer the core does not expect.
    #[error("unexpected response {status}: {message}")]
    Protocol {
        /// HTTP status (0 when not HTTP).
        status: u16,
        /// What the server or transport said.
        message: String,
    },
}

impl RemoteError {
    /// True for failures that a bounded retry may cure.
    pub fn is_transient(&self) -> bool {
        matches!(self, RemoteError::Unavailable(_) | RemoteError::Locked)
    }
}

/// What `stat` learns about a remote path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteStat {
    /// Size in bytes (0 for collections).
    pub size: u64,
    /// The ETag, verbatim (may be weak: `W/"…"`).
    pub etag: Option<String>,
    /// Last modification, server clock, ms since the Unix epoch.
    pub modified_ms: Option<i64>,
    /// True for a collection (directory).
    pub is_collection: bool,
}

/// One child of a listed collection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteEntry {
    /// The child's name (one path segment, as the server spelled it;
    /// untrusted: the core only compares it with names it built itself).
    pub name: String,
    /// Its properties.
    pub stat: RemoteStat,
}

/// A fetched body with its ETag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The body.
    pub bytes: Vec<u8>,
    /// The ETag, verbatim.
    pub etag: Option<String>,
}

/// A condition on a write. Servers may ignore it (see TOOLCHAIN.md): the core
/// never relies on it alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precondition {
    /// Unconditional.
    None,
    /// `If-Match: etag`.
    IfMatch(String),
    /// `If-None-Match: *` (create only).
    IfNoneMatchAny,
}

/// The remote transport (WIT `remote`). Paths are relative to the remote root,
/// `/`-separated, and built only by the core from validated parts.
pub trait RemoteTransport {
    /// GET `path`, refusing bodies over `bytes_max`.
    fn get(&mut self, path: &str, bytes_max: u64) -> Result<Fetched, RemoteError>;
    /// PUT `bytes` to `path` under `condition`; returns the new ETag if the
    /// server sent one.
    fn put(
        &mut self,
        path: &str,
        bytes: &[u8],
        condition: &Precondition,
    ) -> Result<Option<String>, RemoteError>;
    /// DELETE `path` (a file or a whole collection).
    fn delete(&mut self, path: &str) -> Result<(), RemoteError>;
    /// MKCOL `path`: create a collection if and only if nothing is there.
    /// This is the atomic create-if-absent primitive every server honours.
    fn mkcol(&mut self, path: &str) -> Result<(), RemoteError>;
    /// MOVE `from` to `to`, replacing `to` only if `overwrite`.
    fn move_to(&mut self, from: &str, to: &str, overwrite: bool) -> Result<(), RemoteError>;
    /// Properties of `path`, or `None` when it does not exist.
    fn stat(&mut self, path: &str) -> Result<Option<RemoteStat>, RemoteError>;
    /// The children of the collection `path` (WebDAV `PROPFIND Depth: 1`),
    /// or `None` when it does not exist. One request instead of a `stat`
    /// per child.
    fn list(&mut self, path: &str) -> Result<Option<Vec<RemoteEntry>>, RemoteError>;
    /// The server's clock (its `Date` header) as of the most recent response,
    /// in ms since the Unix epoch; `None` before any response carried one.
    fn server_time_ms(&mut self) -> Option<i64>;
}

/// A failure of a blob transfer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BlobError {
    /// The local data file is missing.
    #[error("local file for {0} is missing")]
    LocalMissing(String),
    /// The downloaded bytes do not hash to the expected id; nothing was kept.
    #[error("content hash mismatch: expected {expected}, got {actual}")]
    HashMismatch {
        /// The hash the row promised.
        expected: ContentHash,
        /// The hash of what arrived.
        actual: ContentHash,
    },
    /// The blob is larger than allowed; nothing was kept.
    #[error("blob larger than {bytes_max} bytes")]
    TooLarge {
        /// The limit.
        bytes_max: u64,
    },
    /// The remote side failed.
    #[error("remote: {0}")]
    Remote(#[from] RemoteError),
    /// The local file system failed.
    #[error("local I/O: {0}")]
    LocalIo(String),
}

/// One blob to publish: PUT the local bytes to `temp_path`, then MOVE them
/// to `final_path`, replacing whatever is there (the same content: paths are
/// content addressed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadJob {
    /// The local blob.
    pub blob: BlobRef,
    /// Where the bytes go first (inside this instance's temporary folder).
    pub temp_path: String,
    /// Where they end up.
    pub final_path: String,
}

/// One blob to fetch from `remote_path` into the local data folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadJob {
    /// The remote file.
    pub remote_path: String,
    /// The blob it must be (its hash is verified).
    pub blob: BlobRef,
}

/// The MOVE step of an [`UploadJob`], tolerant of a lost response: when the
/// source is gone and the destination holds a file, an earlier attempt of
/// this MOVE went through.
pub fn move_into_place(remote: &mut dyn RemoteTransport, job: &UploadJob) -> Result<(), RemoteError> {
    match remote.move_to(&job.temp_path, &job.final_path, true) {
        Err(RemoteError::NotFound) if remote.stat(&job.final_path)?.is_some_and(|s| !s.is_collection) => {
            Ok(())
        }
        other => other,
    }
}

/// An [`UploadJob`] for a blob already in memory: PUT, then
/// [`move_into_place`]. The in-memory and folder movers use it.
pub fn put_and_move(
    remote: &mut dyn RemoteTransport,
    job: &UploadJob,
    bytes: &[u8],
) -> Result<(), RemoteError> {
    remote.put(&job.temp_path, bytes, &Precondition::None)?;
    move_into_place(remote, job)
}

impl BlobError {
    /// A failed GET of a blob: a body over the limit is the blob's fault
    /// ([`BlobError::TooLarge`]), anything else the remote's.
    pub fn from_download(e: RemoteError) -> BlobError {
        match e {
            RemoteError::TooLarge { bytes_max } => BlobError::TooLarge { bytes_max },
            other => BlobError::Remote(other),
        }
    }
}

/// Blob transfer (WIT `blobs`): the host moves bytes between the local data
/// folder and the remote and verifies hashes, so file contents never cross
/// into the core (or into wasm memory).
pub trait BlobTransfer {
    /// Is the blob present in the local data folder?
    fn local_has(&mut self, blob: &BlobRef) -> Result<bool, BlobError>;
    /// Runs each [`UploadJob`]: PUT the local bytes (streamed, hash-checked
    /// on the way) to its temporary path, then [`move_into_place`]. A host
    /// may run several jobs at once. Returns one result per job, in order.
    fn upload(&mut self, jobs: &[UploadJob]) -> Vec<Result<(), BlobError>>;
    /// Runs each [`DownloadJob`]: GET into a local temporary file, verify its
    /// SHA-256 is the blob's hash and its size at most `bytes_max`, then
    /// rename it into place; on any failure nothing is left behind. A host
    /// may run several jobs at once. Returns one result per job, in order.
    fn download(&mut self, jobs: &[DownloadJob], bytes_max: u64) -> Vec<Result<(), BlobError>>;
    /// Delete the local blob (no error if already gone).
    fn remove_local(&mut self, blob: &BlobRef) -> Result<(), BlobError>;
}

/// What a streamed hash of a remote file found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteDigest {
    /// SHA-256 of the bytes.
    pub hash: ContentHash,
    /// How many bytes there were.
    pub size_bytes: u64,
}

/// Hashing a remote file without keeping it (WIT `blobs.remote-hash`): the
/// host streams the body through SHA-256, so a blob is checked without its
/// bytes entering the core. Separate from [`BlobTransfer`] because it needs
/// no local folder: remote maintenance uses it alone.
pub trait BlobHasher {
    /// GET `path` and hash the body as it arrives, refusing bodies over
    /// `bytes_max` ([`BlobError::TooLarge`]). A missing file is
    /// `BlobError::Remote(RemoteError::NotFound)`.
    fn remote_hash(&mut self, path: &str, bytes_max: u64) -> Result<RemoteDigest, BlobError>;
}

/// A failure of the local database.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LocalError {
    /// The database stayed locked by another writer past the busy timeout.
    #[error("local database is busy (locked by another writer)")]
    Busy,
    /// The database cannot be written.
    #[error("local database is read-only")]
    ReadOnly,
    /// A row or the schema holds a value the core cannot use.
    #[error("local database holds invalid data: {0}")]
    Invalid(String),
    /// Anything else.
    #[error("local database error: {0}")]
    Other(String),
}

/// One row change in a [`LocalCommit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowWrite {
    /// The row as it must be after the commit.
    pub row: LocalRow,
    /// The row as the core read it (`None`: it must not exist). When the
    /// current row differs, the app changed it during the sync: the store
    /// leaves it alone and reports it in [`ApplyOutcome::skipped`], so no
    /// concurrent local edit is ever overwritten.
    pub expected: Option<LocalRow>,
}

/// Everything one sync (or resolution) changes locally, applied in one
/// transaction: all of it or none of it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LocalCommit {
    /// Row upserts.
    pub writes: Vec<RowWrite>,
    /// `sync_metadata` keys to set.
    pub meta: Vec<(String, String)>,
}

/// What [`LocalStore::apply`] did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ApplyOutcome {
    /// Stable ids left alone because the app changed them meanwhile.
    pub skipped: Vec<String>,
}

/// The app's local database (WIT `local-store`).
pub trait LocalStore {
    /// Rows with a change to push: `sync_status` is `modified` or
    /// `pending_delete`. Must be O(1) (an indexed COUNT).
    fn count_unsynced(&mut self) -> Result<u64, LocalError>;
    /// A `sync_metadata` value.
    fn meta_get(&mut self, key: &str) -> Result<Option<String>, LocalError>;
    /// The thin summary of every row.
    fn row_bases(&mut self) -> Result<Vec<RowBase>, LocalError>;
    /// Full rows for the given stable ids (unknown ids are left out). Also
    /// allowed inside an open commit ([`LocalStore::commit_begin`]), which
    /// it leaves open: the sync reads each row it writes there just before
    /// writing it, so rows the commit has written are never asked for.
    fn rows(&mut self, stable_ids: &[String]) -> Result<Vec<LocalRow>, LocalError>;
    /// How many live (not deleted) rows have content `hash`; a blob is only
    /// removed locally when no live row uses it any more.
    fn live_rows_with_content(&mut self, hash: &ContentHash) -> Result<u64, LocalError>;
    /// Applies `commit` in one transaction.
    fn apply(&mut self, commit: &LocalCommit) -> Result<ApplyOutcome, LocalError>;
    /// A commit too large for one call, in parts (the sync's local commit:
    /// at a first sync it writes every row). Opens one transaction, which
    /// the store holds until [`LocalStore::commit_finish`]; an error from
    /// any part rolls the whole commit back, and so does any other call on
    /// the store but [`LocalStore::rows`] before `commit_finish` (and
    /// closing the store).
    fn commit_begin(&mut self) -> Result<(), LocalError>;
    /// Applies `writes` inside the open commit, as [`LocalStore::apply`]
    /// would: a row the app changed meanwhile is left alone (and reported by
    /// `commit_finish`).
    fn commit_writes(&mut self, writes: &[RowWrite]) -> Result<(), LocalError>;
    /// Sets the `sync_metadata` keys `meta` and commits everything since
    /// `commit_begin`; returns the rows left alone.
    fn commit_finish(&mut self, meta: &[(String, String)]) -> Result<ApplyOutcome, LocalError>;
}

/// Wall clock and sleeping (WIT `clock`).
pub trait Clock {
    /// Milliseconds since the Unix epoch on this instance's clock.
    fn now_ms(&mut self) -> i64;
    /// Waits `ms` milliseconds (virtual time in the simulator).
    fn sleep_ms(&mut self, ms: u64);
}

/// Randomness for ids and nonces (WIT `random`).
pub trait Random {
    /// A random 64-bit value.
    fn next_u64(&mut self) -> u64;
}

/// Phase of a sync, for progress reporting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Quick check.
    Check,
    /// Acquiring the lease.
    Lock,
    /// Downloading metadata.db.
    Fetch,
    /// Three-way compare.
    Compare,
    /// Blob uploads.
    Upload,
    /// Blob downloads.
    Download,
    /// Uploading metadata.db and version.txt.
    Commit,
    /// Updating the local database.
    Apply,
    /// Finished.
    Done,
}

/// A progress event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgressEvent {
    /// 0..=100, never decreasing within one sync.
    pub percent: u8,
    /// Which phase.
    pub phase: Phase,
    /// Human-readable line.
    pub message: String,
}

/// Progress sink (WIT `progress`).
pub trait Progress {
    /// Called as the sync advances.
    fn report(&mut self, event: ProgressEvent);
}

/// A progress sink that drops everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn report(&mut self, _event: ProgressEvent) {}
}

/// Everything the core may touch during one call.
#[allow(missing_debug_implementations)]
pub struct Io<'a> {
    /// The app's database.
    pub local: &'a mut dyn LocalStore,
    /// The remote.
    pub remote: &'a mut dyn RemoteTransport,
    /// Blob mover.
    pub blobs: &'a mut dyn BlobTransfer,
    /// Clock.
    pub clock: &'a mut dyn Clock,
    /// Randomness.
    pub random: &'a mut dyn Random,
    /// Progress sink.
    pub progress: &'a mut dyn Progress,
}
