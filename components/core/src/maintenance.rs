//! Looking after the shared remote (WIT `maintenance`): what state it is in
//! ([`remote_status`]), whether every live file's blob is intact
//! ([`verify`]), and removing blobs no live row references ([`gc`]).
//!
//! None of this needs a local database or data folder: the ports are the
//! remote, a [`BlobHasher`], a clock and randomness ([`MaintenanceIo`]), so
//! it runs in a serverless function as well as beside the app.
//!
//! # gc and concurrent syncs
//! A sync publishes blobs before it commits the rows that reference them,
//! and it skips the upload of a blob it finds already present (e.g. left by
//! its own crashed earlier attempt, unreferenced until now). gc must never
//! delete such a blob under a sync that is about to commit a row naming it.
//! gc therefore behaves as a commit (ARCHITECTURE.md, "Remote maintenance"):
//! 1. it takes the sync lease, so no sync runs while it decides and deletes;
//! 2. before deleting anything it commits `metadata.db` and `version.txt`
//!    one version up, with no row changed, exactly like a sync commit. A
//!    sync that looked at the blobs before gc and commits after it is fenced
//!    off by that new version (or by `If-Match` on `metadata.db`), starts
//!    over and looks at the blobs again;
//! 3. it confirms the lease (still ours, three quarters of its time left)
//!    before each deletion, as a sync does before each commit write; a
//!    lost lease stops it.
//!
//! The grace period adds a margin for blobs just uploaded. Tombstone rows
//! are kept; their blobs are not referenced (a tombstone is never
//! downloaded) and are collected.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::api::{SyncError, SyncOptions};
use crate::engine::{self, Fetched, Interrupted, Reporter};
use crate::history::{CHANGES_DIR, ChangeFile};
use crate::lease::{self, Lease};
use crate::model::{BlobRef, ContentHash, LocalRow, RowBase, iso8601_utc};
use crate::ports::{
    ApplyOutcome, BlobError, BlobHasher, BlobTransfer, Clock, DownloadJob, Io, LocalCommit, LocalError,
    LocalStore, NoProgress, Random, RemoteError, RemoteTransport, RowWrite, UploadJob,
};
use crate::remote_db::RemoteDb;
use crate::session::Session;

/// Longest name of a blob file: a hash and the longest extension.
const BLOB_NAME_LEN_MAX: usize = 64 + 1 + 16;

/// What maintenance may touch: the remote and a way to hash remote files,
/// time and randomness. No local database, no data folder.
#[allow(missing_debug_implementations)]
pub struct MaintenanceIo<'a> {
    /// The remote.
    pub remote: &'a mut dyn RemoteTransport,
    /// Streams a remote file through SHA-256.
    pub hasher: &'a mut dyn BlobHasher,
    /// Clock (waits and lease timing).
    pub clock: &'a mut dyn Clock,
    /// Randomness (the lease nonce).
    pub random: &'a mut dyn Random,
}

/// Tunables of a maintenance call. `Default` gives the documented defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MaintenanceOptions {
    /// Lease time-to-live for gc (server clock).
    pub lease_ttl_ms: u64,
    /// How long gc waits for a lease held by a sync.
    pub lock_wait_ms: u64,
    /// Retries of one remote operation on transient failures.
    pub remote_retries_max: u32,
    /// Largest `metadata.db` accepted.
    pub metadata_bytes_max: u64,
    /// Largest blob `verify` hashes; a larger one is reported, not read.
    pub blob_bytes_max: u64,
    /// gc leaves unreferenced blobs younger than this alone (server clock,
    /// by the blob's last modification).
    pub gc_grace_ms: u64,
    /// Written into gc's lease, to name it to a waiting sync.
    pub host_name: String,
}

impl Default for MaintenanceOptions {
    fn default() -> Self {
        let sync = SyncOptions::default();
        MaintenanceOptions {
            lease_ttl_ms: sync.lease_ttl_ms,
            lock_wait_ms: sync.lock_wait_ms,
            remote_retries_max: sync.remote_retries_max,
            metadata_bytes_max: sync.metadata_bytes_max,
            blob_bytes_max: sync.blob_bytes_max,
            gc_grace_ms: 24 * 3_600_000,
            host_name: "maintenance".to_owned(),
        }
    }
}

impl MaintenanceOptions {
    /// The sync options the shared lease and fetch code read.
    fn sync_options(&self) -> SyncOptions {
        SyncOptions {
            lease_ttl_ms: self.lease_ttl_ms,
            lock_wait_ms: self.lock_wait_ms,
            remote_retries_max: self.remote_retries_max,
            metadata_bytes_max: self.metadata_bytes_max,
            blob_bytes_max: self.blob_bytes_max,
            host_name: self.host_name.clone(),
            ..SyncOptions::default()
        }
    }
}

/// Why a maintenance call failed; each case is something a caller acts on
/// differently.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MaintenanceError {
    /// The remote failed (after bounded retries of transient failures).
    #[error("remote: {0}")]
    Remote(#[from] RemoteError),
    /// `metadata.db`, `version.txt` or a row is unusable; nothing was deleted.
    #[error("remote data is unusable: {0}")]
    RemoteCorrupt(String),
    /// The remote uses a newer format; nothing was deleted: upgrade davsync.
    #[error(
        "the remote uses format {format}, newer than this davsync reads (format {supported}); upgrade davsync"
    )]
    RemoteTooNew {
        /// The remote's format.
        format: u32,
        /// The newest format this davsync reads.
        supported: u32,
    },
    /// The remote has no `metadata.db` yet: no instance has synced to it.
    #[error("the remote has no metadata.db yet: nothing to report or collect")]
    NoRemote,
    /// A sync holds the lease; gc did nothing. Try again later.
    #[error("the sync lock is held by {holder}; it expires in {expires_in_ms} ms")]
    LockHeld {
        /// Who, as "instance on host".
        holder: String,
        /// Time left on the lease, by the server's clock.
        expires_in_ms: i64,
    },
    /// gc's lease was lost; it stopped. Blobs it deleted before were
    /// unreferenced and past the grace period; run it again.
    #[error("gc lost its lease and stopped; run it again")]
    LeaseLost,
    /// Someone committed while gc held the lease (a lease that was not
    /// exclusive after all); gc deleted nothing. Run it again.
    #[error("another commit happened while gc held the lease; nothing was deleted")]
    Fenced,
    /// A port misbehaved (e.g. the host answered nonsense).
    #[error("invalid: {0}")]
    Invalid(String),
}

impl From<SyncError> for MaintenanceError {
    fn from(e: SyncError) -> Self {
        match e {
            SyncError::Remote(e) => MaintenanceError::Remote(e),
            SyncError::RemoteCorrupt(why) => MaintenanceError::RemoteCorrupt(why),
            SyncError::RemoteTooNew { format, supported } => {
                MaintenanceError::RemoteTooNew { format, supported }
            }
            SyncError::LockHeld { holder, expires_in_ms } => {
                MaintenanceError::LockHeld { holder, expires_in_ms }
            }
            SyncError::LeaseLost => MaintenanceError::LeaseLost,
            other => MaintenanceError::Invalid(other.to_string()),
        }
    }
}

impl From<Interrupted> for MaintenanceError {
    fn from(e: Interrupted) -> Self {
        match e {
            Interrupted::Fenced => MaintenanceError::Fenced,
            Interrupted::Failed(e) => e.into(),
        }
    }
}

/// Who holds the sync lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseInfo {
    /// "instance … on host".
    pub holder: String,
    /// Time left by the server's clock; negative when expired but not yet broken.
    pub expires_in_ms: i64,
}

/// The remote at a glance (`remote-status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteStatus {
    /// The commit counter in `metadata.db`.
    pub version: i64,
    /// `version.txt` (none: missing). Differs from `version` only between
    /// the two writes of a commit, or after a crash between them.
    pub version_txt: Option<i64>,
    /// The remote's id, fixed at creation.
    pub epoch: String,
    /// Rows that are not deleted.
    pub live_files: u64,
    /// Deleted rows (kept for ever).
    pub tombstones: u64,
    /// Blob files on the remote, referenced or not.
    pub blob_count: u64,
    /// Their total size.
    pub blob_bytes: u64,
    /// Who holds the sync lease, if anyone.
    pub lease: Option<LeaseInfo>,
}

/// What is wrong with one live row's blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BlobFault {
    /// Not on the remote.
    Missing,
    /// The bytes hash to something else.
    HashMismatch {
        /// What they hash to.
        actual: ContentHash,
    },
    /// Larger than the configured maximum; not read.
    TooLarge {
        /// The maximum.
        bytes_max: u64,
    },
}

/// A live row's blob that is not intact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobProblem {
    /// The blob's remote path.
    pub path: String,
    /// The live rows that reference it.
    pub stable_ids: Vec<String>,
    /// What is wrong.
    pub fault: BlobFault,
}

/// A blob file on the remote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobFile {
    /// Its remote path.
    pub path: String,
    /// Its size, as the server reports it.
    pub size_bytes: u64,
    /// Last modification by the server's clock, if the server reports it.
    pub modified_ms: Option<i64>,
}

/// What `verify` found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// The `metadata.db` version checked.
    pub version: i64,
    /// Distinct blobs referenced by live rows (each hashed once).
    pub blobs_checked: u64,
    /// Referenced blobs that are missing or damaged.
    pub problems: Vec<BlobProblem>,
    /// Blob files no live row references (gc candidates once old enough).
    pub unreferenced: Vec<BlobFile>,
}

impl VerifyReport {
    /// Every live row's blob is present and intact.
    pub fn is_healthy(&self) -> bool {
        self.problems.is_empty()
    }
}

/// What `gc` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcReport {
    /// The version gc read.
    pub version_before: i64,
    /// The version gc committed before deleting (none: nothing to delete,
    /// nothing committed).
    pub version_after: Option<i64>,
    /// Paths deleted: blobs, then change files no reader needs (folded into
    /// the checkpoint, or off the chain).
    pub deleted: Vec<String>,
    /// Their total size.
    pub deleted_bytes: u64,
    /// Unreferenced blobs kept because they are younger than the grace period.
    pub kept_young: u64,
    /// Unreferenced blobs kept because the server reports no modification time.
    pub kept_undated: u64,
}

/// The remote at a glance: versions, row counts, blob count and size, lease
/// holder. Reads only; takes no lease.
pub fn remote_status(
    io: &mut MaintenanceIo<'_>,
    opts: &MaintenanceOptions,
) -> Result<RemoteStatus, MaintenanceError> {
    let sync_opts = opts.sync_options();
    let mut session = Session::new(opts.remote_retries_max);
    with_io(io, |io, _| {
        let fetched = fetch_existing(io, &sync_opts, &mut session)?;
        let db = whole(&fetched);
        let stats = db.stats().map_err(corrupt)?;
        let blobs = list_blobs(io, &mut session, None)?;
        let lease = lease::current_holder(&mut session, io, &sync_opts)?
            .map(|(holder, expires_in_ms)| LeaseInfo { holder, expires_in_ms });
        Ok(RemoteStatus {
            version: db.version(),
            version_txt: fetched.head.as_ref().map(|h| h.version),
            epoch: db.epoch().to_owned(),
            live_files: stats.live,
            tombstones: stats.tombstones,
            blob_count: blobs.len() as u64,
            blob_bytes: blobs.iter().map(|b| b.size_bytes).sum(),
            lease,
        })
    })
}

/// Checks that every live row's blob is present and hashes to the row's
/// content hash (streamed through the [`BlobHasher`]), and lists blob files
/// no live row references. Reads only; takes no lease.
pub fn verify(
    io: &mut MaintenanceIo<'_>,
    opts: &MaintenanceOptions,
) -> Result<VerifyReport, MaintenanceError> {
    let sync_opts = opts.sync_options();
    let mut session = Session::new(opts.remote_retries_max);
    with_io(io, |io, hasher| {
        let fetched = fetch_existing(io, &sync_opts, &mut session)?;
        let referenced = live_blobs(whole(&fetched))?;
        let listed = list_blobs(io, &mut session, None)?;
        let present: BTreeSet<&str> = listed.iter().map(|b| b.path.as_str()).collect();
        let mut problems = Vec::new();
        for (blob, stable_ids) in &referenced {
            let path = blob.path();
            let fault = if present.contains(path.as_str()) {
                hash_fault(io, &mut session, hasher, blob, opts.blob_bytes_max)?
            } else {
                Some(BlobFault::Missing)
            };
            if let Some(fault) = fault {
                problems.push(BlobProblem { path, stable_ids: stable_ids.clone(), fault });
            }
        }
        let referenced_paths: BTreeSet<String> = referenced.keys().map(BlobRef::path).collect();
        let unreferenced = listed.into_iter().filter(|b| !referenced_paths.contains(&b.path)).collect();
        Ok(VerifyReport {
            version: whole(&fetched).version(),
            blobs_checked: referenced.len() as u64,
            problems,
            unreferenced,
        })
    })
}

/// Deletes blob files that no live row references and that were last
/// modified more than `gc_grace_ms` ago by the server's clock, under the
/// sync lease, after committing one version up (see the module docs for
/// why). Rows, tombstones included, are never changed.
pub fn gc(io: &mut MaintenanceIo<'_>, opts: &MaintenanceOptions) -> Result<GcReport, MaintenanceError> {
    let sync_opts = opts.sync_options();
    let mut session = Session::new(opts.remote_retries_max);
    with_io(io, |io, _| {
        // A fresh owner per run: two gc runs at once (two serverless
        // invocations) must not take each other's lease for their own crash.
        let owner = format!("gc-{:016x}", io.random.next_u64());
        let mut lease = Lease::acquire(&mut session, io, &sync_opts, &owner)?;
        let result = gc_locked(io, opts, &sync_opts, &mut session, &mut lease);
        let _ = lease.release(&mut session, io, crate::session::TMP_ROOT);
        result
    })
}

fn gc_locked(
    io: &mut Io<'_>,
    opts: &MaintenanceOptions,
    sync_opts: &SyncOptions,
    session: &mut Session,
    lease: &mut Lease,
) -> Result<GcReport, MaintenanceError> {
    let mut fetched = fetch_existing(io, sync_opts, session)?;
    let referenced: BTreeSet<String> = live_blobs(whole(&fetched))?.keys().map(BlobRef::path).collect();
    let listed = list_blobs(io, session, Some(lease))?;
    let cutoff_ms = session.server_now_ms(io).saturating_sub_unsigned(opts.gc_grace_ms);
    let mut report = GcReport {
        version_before: whole(&fetched).version(),
        version_after: None,
        deleted: Vec::new(),
        deleted_bytes: 0,
        kept_young: 0,
        kept_undated: 0,
    };
    let mut doomed = Vec::new();
    for blob in listed.into_iter().filter(|b| !referenced.contains(&b.path)) {
        match blob.modified_ms {
            None => report.kept_undated += 1,
            Some(t) if t > cutoff_ms => report.kept_young += 1,
            Some(_) => doomed.push(blob),
        }
    }
    // Change files no reader needs: those at or below the checkpoint's
    // version, folded into it or off the chain (a crashed or replaced
    // commit's). A walk down the chain stops at the checkpoint's version, so
    // no reader opens them. An off-chain file above it stays until a fold
    // passes it: it may be the commit of a writer that stalled past its
    // lease and, on a server that ignores conditional writes, can still make
    // `version.txt` name it. Deleting them changes no state, so they need no
    // commit; the grace period covers a stale writer that might still write
    // a checkpoint older than the one read here.
    let history = fetched.full().expect("fetched whole");
    let mut stale_changes = Vec::new();
    if !history.off_chain() {
        for (version, _commit, listed) in list_change_files(io, session, lease)? {
            let unneeded = version <= history.checkpoint_version();
            if unneeded && listed.modified_ms.is_some_and(|t| t <= cutoff_ms) {
                stale_changes.push(listed);
            }
        }
    }
    if !doomed.is_empty() {
        let new_version = fetched.head_version() + 1;
        let now_iso = iso8601_utc(io.clock.now_ms());
        let mut reporter = Reporter::default();
        let fold = sync_opts.fold_commits;
        engine::commit_empty(io, session, lease, &mut reporter, &mut fetched, new_version, &now_iso, fold)?;
        report.version_after = Some(new_version);
    }
    for file in doomed.into_iter().chain(stale_changes) {
        // One lease check per DELETE, as a sync checks before each commit
        // write: a gc paused past its lease stops at its next file.
        lease.confirm(session, io)?;
        session.remove(io, &file.path)?;
        report.deleted_bytes += file.size_bytes;
        report.deleted.push(file.path);
    }
    Ok(report)
}

/// The change files in `changes/`, by version and commit id: only names that
/// are exactly what [`ChangeFile::path`] builds.
fn list_change_files(
    io: &mut Io<'_>,
    session: &mut Session,
    lease: &mut Lease,
) -> Result<Vec<(i64, String, BlobFile)>, MaintenanceError> {
    lease.keep_alive(session, io)?;
    let entries = session.call(io, |io| io.remote.list(CHANGES_DIR))?.unwrap_or_default();
    let mut out = Vec::new();
    for entry in entries.into_iter().filter(|e| !e.stat.is_collection) {
        let Some((version, commit)) = entry.name.strip_suffix(".json").and_then(|n| n.split_once('-')) else {
            continue;
        };
        let Ok(version) = version.parse::<i64>() else { continue };
        let path = ChangeFile::path(version, commit);
        if version < 1
            || crate::model::validate_stable_id(commit).is_err()
            || path != format!("{CHANGES_DIR}/{}", entry.name)
        {
            continue;
        }
        let (size_bytes, modified_ms) = (entry.stat.size, entry.stat.modified_ms);
        out.push((version, commit.to_owned(), BlobFile { path, size_bytes, modified_ms }));
    }
    Ok(out)
}

/// The whole remote state: `metadata.db` and the commits after it; a remote
/// without one is [`MaintenanceError::NoRemote`].
fn fetch_existing(
    io: &mut Io<'_>,
    opts: &SyncOptions,
    session: &mut Session,
) -> Result<Fetched, MaintenanceError> {
    let fetched = engine::fetch(io, opts, session, 0, None)?;
    if fetched.is_new { Err(MaintenanceError::NoRemote) } else { Ok(fetched) }
}

/// The state a [`fetch_existing`] read: always whole (it reads no tail alone).
fn whole(fetched: &Fetched) -> &RemoteDb {
    &fetched.full().expect("fetched without `since`: a whole state").db
}

fn corrupt(e: crate::remote_db::RemoteDbError) -> MaintenanceError {
    MaintenanceError::RemoteCorrupt(format!("metadata.db: {e}"))
}

/// Every blob a live row references, with the rows. Any invalid row fails
/// the whole read: a row that cannot be read could reference any blob, so
/// gc must not guess.
fn live_blobs(db: &RemoteDb) -> Result<BTreeMap<BlobRef, Vec<String>>, MaintenanceError> {
    let mut out: BTreeMap<BlobRef, Vec<String>> = BTreeMap::new();
    for row in db.rows_changed_since(0).map_err(corrupt)?.into_iter().filter(|r| !r.deleted) {
        let blob = row
            .blob()
            .map_err(|e| MaintenanceError::RemoteCorrupt(format!("row {:?}: {e}", row.stable_id)))?;
        out.entry(blob).or_default().push(row.stable_id);
    }
    Ok(out)
}

/// The blob files on the remote: files named `{hash}{ext}` inside the shard
/// folder `{hash[0..2]}`. Anything else (the lock, the temporary folder,
/// foreign files) is not a blob and is left out. With a lease, it is kept
/// alive between shard listings.
fn list_blobs(
    io: &mut Io<'_>,
    session: &mut Session,
    mut lease: Option<&mut Lease>,
) -> Result<Vec<BlobFile>, MaintenanceError> {
    let root = session.call(io, |io| io.remote.list(""))?.unwrap_or_default();
    let shards: BTreeSet<&str> = root
        .iter()
        .filter(|e| e.stat.is_collection && is_shard_name(&e.name))
        .map(|e| e.name.as_str())
        .collect();
    let mut blobs = Vec::new();
    for shard in shards {
        if let Some(lease) = lease.as_deref_mut() {
            lease.keep_alive(session, io)?;
        }
        let Some(entries) = session.call(io, |io| io.remote.list(shard))? else { continue };
        for entry in entries.into_iter().filter(|e| !e.stat.is_collection) {
            if let Some(blob) = blob_of_name(shard, &entry.name) {
                let (size_bytes, modified_ms) = (entry.stat.size, entry.stat.modified_ms);
                blobs.push(BlobFile { path: blob.path(), size_bytes, modified_ms });
            }
        }
    }
    blobs.sort_by(|a, b| a.path.cmp(&b.path));
    blobs.dedup_by(|a, b| a.path == b.path);
    Ok(blobs)
}

fn is_shard_name(name: &str) -> bool {
    name.len() == 2 && name.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The blob a file named `name` in folder `shard` is, if it is one: the
/// name must be exactly what [`BlobRef::path`] would build.
fn blob_of_name(shard: &str, name: &str) -> Option<BlobRef> {
    if name.len() > BLOB_NAME_LEN_MAX || !name.is_ascii() || name.len() < 66 {
        return None;
    }
    let (hash, ext) = name.split_at(64);
    let hash = ContentHash::parse(hash).ok()?;
    let file_type = if ext == ".tei.xml" { "tei" } else { ext.strip_prefix('.')? };
    let blob = BlobRef::new(hash, file_type).ok()?;
    (blob.ext == ext && blob.shard() == shard).then_some(blob)
}

/// Hashes one present blob; `None` when it is intact.
fn hash_fault(
    io: &mut Io<'_>,
    session: &mut Session,
    hasher: &mut dyn BlobHasher,
    blob: &BlobRef,
    bytes_max: u64,
) -> Result<Option<BlobFault>, MaintenanceError> {
    let path = blob.path();
    match session.call(io, |_| hasher.remote_hash(&path, bytes_max)) {
        Ok(d) if d.hash == blob.hash => Ok(None),
        Ok(d) => Ok(Some(BlobFault::HashMismatch { actual: d.hash })),
        // Deleted between the listing and the read.
        Err(BlobError::Remote(RemoteError::NotFound)) => Ok(Some(BlobFault::Missing)),
        Err(BlobError::TooLarge { bytes_max }) => Ok(Some(BlobFault::TooLarge { bytes_max })),
        Err(BlobError::Remote(e)) => Err(e.into()),
        Err(e) => Err(MaintenanceError::Invalid(format!("hashing {path}: {e}"))),
    }
}

/// Runs `f` with an [`Io`] over the maintenance ports. The sync-only ports
/// (local database, data folder) are [`NoLocal`], which refuses every call:
/// nothing here uses them.
fn with_io<T>(
    io: &mut MaintenanceIo<'_>,
    f: impl FnOnce(&mut Io<'_>, &mut dyn BlobHasher) -> Result<T, MaintenanceError>,
) -> Result<T, MaintenanceError> {
    let (mut local, mut blobs, mut progress) = (NoLocal, NoLocal, NoProgress);
    let mut inner = Io {
        local: &mut local,
        remote: &mut *io.remote,
        blobs: &mut blobs,
        clock: &mut *io.clock,
        random: &mut *io.random,
        progress: &mut progress,
    };
    f(&mut inner, &mut *io.hasher)
}

/// The local ports in a world without a local side (remote maintenance):
/// every call is refused with an error saying so.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoLocal;

const NO_LOCAL: &str = "remote maintenance has no local database or data folder";

impl LocalStore for NoLocal {
    fn count_unsynced(&mut self) -> Result<u64, LocalError> {
        Err(LocalError::Other(NO_LOCAL.to_owned()))
    }
    fn meta_get(&mut self, _key: &str) -> Result<Option<String>, LocalError> {
        Err(LocalError::Other(NO_LOCAL.to_owned()))
    }
    fn row_bases(&mut self) -> Result<Vec<RowBase>, LocalError> {
        Err(LocalError::Other(NO_LOCAL.to_owned()))
    }
    fn rows(&mut self, _stable_ids: &[String]) -> Result<Vec<LocalRow>, LocalError> {
        Err(LocalError::Other(NO_LOCAL.to_owned()))
    }
    fn live_rows_with_content(&mut self, _hash: &ContentHash) -> Result<u64, LocalError> {
        Err(LocalError::Other(NO_LOCAL.to_owned()))
    }
    fn apply(&mut self, _commit: &LocalCommit) -> Result<ApplyOutcome, LocalError> {
        Err(LocalError::Other(NO_LOCAL.to_owned()))
    }
    fn commit_begin(&mut self) -> Result<(), LocalError> {
        Err(LocalError::Other(NO_LOCAL.to_owned()))
    }
    fn commit_writes(&mut self, _writes: &[RowWrite]) -> Result<(), LocalError> {
        Err(LocalError::Other(NO_LOCAL.to_owned()))
    }
    fn commit_finish(&mut self, _meta: &[(String, String)]) -> Result<ApplyOutcome, LocalError> {
        Err(LocalError::Other(NO_LOCAL.to_owned()))
    }
}

impl BlobTransfer for NoLocal {
    fn local_has(&mut self, _blob: &BlobRef) -> Result<bool, BlobError> {
        Err(BlobError::LocalIo(NO_LOCAL.to_owned()))
    }
    fn upload(&mut self, jobs: &[UploadJob]) -> Vec<Result<(), BlobError>> {
        jobs.iter().map(|_| Err(BlobError::LocalIo(NO_LOCAL.to_owned()))).collect()
    }
    fn download(&mut self, jobs: &[DownloadJob], _bytes_max: u64) -> Vec<Result<(), BlobError>> {
        jobs.iter().map(|_| Err(BlobError::LocalIo(NO_LOCAL.to_owned()))).collect()
    }
    fn remove_local(&mut self, _blob: &BlobRef) -> Result<(), BlobError> {
        Err(BlobError::LocalIo(NO_LOCAL.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;

    use crate::hlc::Hlc;
    use crate::lease::{LEASE_FILE, LOCK_DIR};
    use crate::mem::{
        LocalFiles, MemBlobs, MemRemote, MemRemoteClient, MemStore, SeededRandom, ServerProfile, SimClock,
        WorldClock,
    };
    use crate::model::{FileMeta, RemoteRow};
    use crate::ports::{Fetched as Body, Precondition, RemoteEntry, RemoteStat};
    use crate::session::{METADATA_DB, VERSION_TXT};

    const T0: i64 = 1_700_000_000_000;
    const HOUR_MS: u64 = 3_600_000;

    fn meta(file_type: &str) -> FileMeta {
        FileMeta {
            filename: "f".into(),
            doc_id: "10.1/x".into(),
            doc_id_type: "doi".into(),
            file_type: file_type.into(),
            doc_collections: "[]".into(),
            doc_metadata: "{}".into(),
            file_metadata: "{}".into(),
            ..FileMeta::default()
        }
    }

    fn row(stable_id: &str, content: &[u8], deleted: bool) -> RemoteRow {
        RemoteRow {
            stable_id: stable_id.into(),
            id: ContentHash::of(content),
            meta: meta("pdf"),
            deleted,
            remote_version: 1,
            updated_at: "2024-01-01T00:00:00.000Z".into(),
            hlc: Hlc { physical_ms: T0, counter: 0, instance: "i".into() },
        }
    }

    fn pdf(content: &[u8]) -> BlobRef {
        BlobRef::new(ContentHash::of(content), "pdf").unwrap()
    }

    /// A remote and one maintenance client of it.
    struct Rig {
        world: WorldClock,
        remote: MemRemote,
        client: MemRemoteClient,
        hasher: MemBlobs,
        clock: SimClock,
        random: SeededRandom,
    }

    impl Rig {
        fn new() -> Rig {
            let world = WorldClock::new(T0);
            let remote = MemRemote::new(ServerProfile::Strict, world.clone());
            let client = MemRemoteClient::new(remote.clone());
            let hasher = MemBlobs::new(LocalFiles::new(), client.clone());
            let clock = SimClock::new(world.clone(), 0);
            Rig { world, remote, client, hasher, clock, random: SeededRandom::new(7) }
        }

        /// Live `a` (content A), live `b` (B), tombstone `t` (T), all
        /// committed at version 1, with their blobs.
        fn seeded() -> Rig {
            let rig = Rig::new();
            let mut db = RemoteDb::create("e1").unwrap();
            db.commit(&[row("a", b"A", false), row("b", b"B", false), row("t", b"T", true)], 1, "now")
                .unwrap();
            rig.remote.write_raw(METADATA_DB, &db.to_bytes().unwrap());
            rig.remote.write_raw(VERSION_TXT, b"1\n");
            for content in [&b"A"[..], b"B", b"T"] {
                rig.remote.write_raw(&pdf(content).path(), content);
            }
            rig
        }

        fn io(&mut self) -> MaintenanceIo<'_> {
            MaintenanceIo {
                remote: &mut self.client,
                hasher: &mut self.hasher,
                clock: &mut self.clock,
                random: &mut self.random,
            }
        }

        fn version(&self) -> (i64, i64) {
            let (db, head) = self.state();
            (db.version(), head.map_or(0, |h| h.version))
        }

        /// The remote's whole state: `metadata.db` and the commits after it.
        fn state(&self) -> (RemoteDb, Option<crate::history::Head>) {
            crate::history::read_state(|p| self.remote.read(p)).unwrap().expect("a metadata.db")
        }
    }

    fn opts() -> MaintenanceOptions {
        MaintenanceOptions { gc_grace_ms: HOUR_MS, lock_wait_ms: 0, ..MaintenanceOptions::default() }
    }

    #[test]
    fn status_counts_rows_blobs_and_names_the_lease_holder() {
        let mut rig = Rig::seeded();
        rig.remote.write_raw("zz/not-a-blob.pdf", b"x");
        rig.remote.write_raw(".davsync-tmp/i/whatever", b"xyz");
        let s = remote_status(&mut rig.io(), &opts()).unwrap();
        assert_eq!((s.version, s.version_txt, s.epoch.as_str()), (1, Some(1), "e1"));
        assert_eq!((s.live_files, s.tombstones, s.blob_count, s.blob_bytes), (2, 1, 3, 3));
        assert_eq!(s.lease, None);

        let lease = r#"{"owner":"inst-9","host":"laptop","nonce":"n","ttl_ms":60000}"#;
        rig.remote.write_raw(LEASE_FILE, lease.as_bytes());
        rig.world.advance(10_000);
        let s = remote_status(&mut rig.io(), &opts()).unwrap();
        let held = s.lease.expect("a lease is held");
        assert!(held.holder.contains("inst-9") && held.holder.contains("laptop"), "{}", held.holder);
        assert_eq!(held.expires_in_ms, 50_000);
    }

    #[test]
    fn a_remote_without_metadata_is_no_remote_and_garbage_is_corrupt() {
        let mut rig = Rig::new();
        assert_eq!(remote_status(&mut rig.io(), &opts()), Err(MaintenanceError::NoRemote));
        assert_eq!(verify(&mut rig.io(), &opts()).unwrap_err(), MaintenanceError::NoRemote);
        assert_eq!(gc(&mut rig.io(), &opts()).unwrap_err(), MaintenanceError::NoRemote);
        assert!(!rig.remote.exists(LOCK_DIR), "gc released the lease");
        rig.remote.write_raw(METADATA_DB, b"SQLite format 3\0 but not really");
        assert!(matches!(gc(&mut rig.io(), &opts()), Err(MaintenanceError::RemoteCorrupt(_))));
    }

    #[test]
    fn verify_reports_missing_and_damaged_blobs_and_lists_unreferenced_ones() {
        let mut rig = Rig::seeded();
        let report = verify(&mut rig.io(), &opts()).unwrap();
        assert!(report.is_healthy(), "{report:?}");
        assert_eq!((report.version, report.blobs_checked), (1, 2));
        let unreferenced: Vec<&str> = report.unreferenced.iter().map(|b| b.path.as_str()).collect();
        assert_eq!(unreferenced, vec![pdf(b"T").path().as_str()], "the tombstone's blob");

        rig.remote.write_raw(&pdf(b"A").path(), b"not A");
        rig.remote.server_mut().delete(&pdf(b"B").path()).unwrap();
        let report = verify(&mut rig.io(), &opts()).unwrap();
        assert!(!report.is_healthy());
        let got: Vec<(String, Vec<String>, BlobFault)> =
            report.problems.into_iter().map(|p| (p.path, p.stable_ids, p.fault)).collect();
        let mut want = vec![
            (
                pdf(b"A").path(),
                vec!["a".to_owned()],
                BlobFault::HashMismatch { actual: ContentHash::of(b"not A") },
            ),
            (pdf(b"B").path(), vec!["b".to_owned()], BlobFault::Missing),
        ];
        want.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(got, want);

        let small = MaintenanceOptions { blob_bytes_max: 2, ..opts() };
        let report = verify(&mut rig.io(), &small).unwrap();
        assert!(report.problems.iter().any(|p| p.fault == BlobFault::TooLarge { bytes_max: 2 }));
    }

    #[test]
    fn gc_deletes_old_unreferenced_blobs_only_after_committing_a_version() {
        let mut rig = Rig::seeded();
        let orphan = pdf(b"orphan from a crashed upload");
        rig.remote.write_raw(&orphan.path(), b"orphan from a crashed upload");
        rig.remote.write_raw("zz/foreign.pdf", b"not ours");
        rig.world.advance(2 * HOUR_MS);
        let young = pdf(b"young");
        rig.remote.write_raw(&young.path(), b"young");
        let rows_before = RemoteDb::from_bytes(&rig.remote.read(METADATA_DB).unwrap()).unwrap();
        let rows_before = rows_before.rows_changed_since(0).unwrap();

        let report = gc(&mut rig.io(), &opts()).unwrap();
        let mut want = vec![orphan.path(), pdf(b"T").path()];
        want.sort();
        assert_eq!(report.deleted, want);
        assert_eq!((report.version_before, report.version_after, report.kept_young), (1, Some(2), 1));
        assert_eq!(report.deleted_bytes, 28 + 1);
        for kept in [pdf(b"A").path(), pdf(b"B").path(), young.path(), "zz/foreign.pdf".to_owned()] {
            assert!(rig.remote.exists(&kept), "{kept} was deleted");
        }
        assert!(!rig.remote.exists(&orphan.path()) && !rig.remote.exists(&pdf(b"T").path()));
        // One version up, rows (the tombstone too) unchanged, lease released.
        assert_eq!(rig.version(), (2, 2));
        let after = rig.state().0;
        assert_eq!(after.rows_changed_since(0).unwrap(), rows_before);
        assert!(!rig.remote.exists(LOCK_DIR));

        // Nothing left to delete: no commit.
        let again = gc(&mut rig.io(), &opts()).unwrap();
        assert_eq!((again.deleted.len(), again.version_after, again.kept_young), (0, None, 1));
        assert_eq!(rig.version().0, 2);
    }

    /// A client whose calls first go through `before(method, path)`, and
    /// whose listings drop modification times when `undated`.
    struct Hooked<F: FnMut(&str, &str)> {
        inner: MemRemoteClient,
        before: F,
        undated: bool,
    }

    impl<F: FnMut(&str, &str)> RemoteTransport for Hooked<F> {
        fn get(&mut self, p: &str, max: u64) -> Result<Body, RemoteError> {
            (self.before)("GET", p);
            self.inner.get(p, max)
        }
        fn put(&mut self, p: &str, b: &[u8], c: &Precondition) -> Result<Option<String>, RemoteError> {
            (self.before)("PUT", p);
            self.inner.put(p, b, c)
        }
        fn delete(&mut self, p: &str) -> Result<(), RemoteError> {
            (self.before)("DELETE", p);
            self.inner.delete(p)
        }
        fn mkcol(&mut self, p: &str) -> Result<(), RemoteError> {
            (self.before)("MKCOL", p);
            self.inner.mkcol(p)
        }
        fn move_to(&mut self, f: &str, t: &str, o: bool) -> Result<(), RemoteError> {
            (self.before)("MOVE", f);
            self.inner.move_to(f, t, o)
        }
        fn stat(&mut self, p: &str) -> Result<Option<RemoteStat>, RemoteError> {
            (self.before)("STAT", p);
            self.inner.stat(p)
        }
        fn list(&mut self, p: &str) -> Result<Option<Vec<RemoteEntry>>, RemoteError> {
            (self.before)("LIST", p);
            let undated = self.undated;
            let strip = |mut e: RemoteEntry| {
                if undated {
                    e.stat.modified_ms = None;
                }
                e
            };
            Ok(self.inner.list(p)?.map(|l| l.into_iter().map(strip).collect()))
        }
        fn server_time_ms(&mut self) -> Option<i64> {
            self.inner.server_time_ms()
        }
    }

    /// gc through `remote` instead of the rig's own client.
    fn gc_through(rig: &mut Rig, remote: &mut dyn RemoteTransport) -> Result<GcReport, MaintenanceError> {
        let mut io =
            MaintenanceIo { remote, hasher: &mut rig.hasher, clock: &mut rig.clock, random: &mut rig.random };
        gc(&mut io, &opts())
    }

    #[test]
    fn gc_waits_for_a_held_lease_and_keeps_blobs_a_server_does_not_date() {
        let mut rig = Rig::seeded();
        let lease = r#"{"owner":"inst-9","host":"laptop","nonce":"n","ttl_ms":60000}"#;
        rig.remote.write_raw(LEASE_FILE, lease.as_bytes());
        match gc(&mut rig.io(), &opts()) {
            Err(MaintenanceError::LockHeld { holder, .. }) => assert!(holder.contains("inst-9")),
            other => panic!("{other:?}"),
        }
        assert!(rig.remote.exists(&pdf(b"T").path()) && rig.remote.exists(LEASE_FILE));

        // A listing without modification times: nothing can be judged old.
        rig.remote.server_mut().delete(LOCK_DIR).unwrap();
        rig.world.advance(2 * HOUR_MS);
        let mut undated = Hooked { inner: rig.client.clone(), before: |_: &str, _: &str| {}, undated: true };
        let report = gc_through(&mut rig, &mut undated).unwrap();
        assert_eq!((report.deleted.len(), report.kept_undated, report.version_after), (0, 1, None));
        assert!(rig.remote.exists(&pdf(b"T").path()));
    }

    #[test]
    fn gc_stops_when_its_lease_is_lost_before_a_delete() {
        let mut rig = Rig::seeded();
        rig.world.advance(2 * HOUR_MS);
        // Another holder's lease replaces gc's right after gc's commit.
        let remote = rig.remote.clone();
        let mut committed = false;
        let steal = move |method: &str, path: &str| {
            if committed && method == "GET" && path == LEASE_FILE {
                let other = r#"{"owner":"thief","host":"h","nonce":"x","ttl_ms":60000}"#;
                remote.write_raw(LEASE_FILE, other.as_bytes());
            }
            committed |= method == "PUT" && path == VERSION_TXT;
        };
        let mut thief = Hooked { inner: rig.client.clone(), before: steal, undated: false };
        assert_eq!(gc_through(&mut rig, &mut thief).unwrap_err(), MaintenanceError::LeaseLost);
        assert!(rig.remote.exists(&pdf(b"T").path()), "nothing deleted without the lease");
        assert_eq!(rig.version().0, 2, "the commit came before the deletions");
    }

    #[test]
    fn a_sync_relying_on_a_blob_gc_deletes_meanwhile_is_fenced_and_uploads_it_again() {
        let rig = Rig::seeded();
        // An earlier attempt of this very sync crashed after uploading X.
        let x = pdf(b"X");
        rig.remote.write_raw(&x.path(), b"X");
        rig.world.advance(2 * HOUR_MS);
        let (world, remote) = (rig.world.clone(), rig.remote.clone());

        // When the sync, having found X present, reads version.txt to fence
        // its commit, it has "paused" longer than its lease: gc runs then.
        let report = Rc::new(RefCell::new(None));
        let (mut gc_rig, mut seen, out) = (rig, false, report.clone());
        let watched = x.path();
        let gc_meanwhile = move |method: &str, path: &str| {
            seen |= method == "STAT" && path == watched;
            if seen && method == "GET" && path == VERSION_TXT && out.borrow().is_none() {
                gc_rig.world.advance(61_000);
                *out.borrow_mut() = Some(gc(&mut gc_rig.io(), &opts()).expect("gc runs"));
            }
        };
        let (files, mut store) = (LocalFiles::new(), MemStore::new());
        store.app_add(&files, "x", b"X", meta("pdf"), T0).unwrap();
        let client = MemRemoteClient::new(remote.clone());
        let mut blobs = MemBlobs::new(files, client.clone());
        let mut hooked = Hooked { inner: client, before: gc_meanwhile, undated: false };
        let mut clock = SimClock::new(world, 0);
        let (mut random, mut progress) = (SeededRandom::new(1), NoProgress);
        let mut io = Io {
            local: &mut store,
            remote: &mut hooked,
            blobs: &mut blobs,
            clock: &mut clock,
            random: &mut random,
            progress: &mut progress,
        };
        let sync_opts = SyncOptions { lease_ttl_ms: 60_000, ..SyncOptions::default() };
        let summary = crate::sync(&mut io, &sync_opts).expect("the sync succeeds");

        let report = report.borrow_mut().take().expect("gc ran during the sync's commit");
        assert!(report.deleted.contains(&x.path()), "gc deleted the orphan: {report:?}");
        assert_eq!(summary.uploaded, 1, "the sync noticed and uploaded X again");
        let (db, _) = crate::history::read_state(|p| remote.read(p)).unwrap().unwrap();
        assert_eq!(db.rows(&["x".to_owned()]).unwrap()[0].id, x.hash);
        assert_eq!(remote.read(&x.path()).as_deref(), Some(&b"X"[..]), "the row's blob is there");
    }
}
