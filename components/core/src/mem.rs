//! In-memory implementations of every port, for the core's tests and the
//! deterministic simulator (SPEC §6).
//!
//! Everything here is single-threaded and deterministic: time is a shared
//! virtual [`WorldClock`], randomness is a seeded [`SeededRandom`], and every
//! collection is ordered (`BTreeMap`/`BTreeSet`), so the same operations give
//! the same results and the same op log, byte for byte.
//!
//! - [`MemStore`] + [`LocalFiles`]: the app's local database and data folder,
//!   with the app's own edit operations (`app_*`).
//! - [`MemServer`] / [`MemRemote`]: a WebDAV server with the quirks of the
//!   real servers in TOOLCHAIN.md ([`ServerProfile`]).
//! - [`MemRemoteClient`]: one instance's connection to it, with fault
//!   injection ([`Fault`]); [`MemBlobs`] moves blobs through such a client.

use std::cell::{Cell, Ref, RefCell, RefMut};
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use crate::model::{BlobRef, ContentHash, FileMeta, LocalRow, RowBase, SyncStatus};
use crate::ports::{
    ApplyOutcome, BlobError, BlobHasher, BlobTransfer, Clock, DownloadJob, Fetched, LocalCommit, LocalError,
    LocalStore, Precondition, Progress, ProgressEvent, Random, RemoteDigest, RemoteEntry, RemoteError,
    RemoteStat, RemoteTransport, RowWrite, UploadJob, put_and_move,
};

// ---------------------------------------------------------------------------
// Time, randomness, progress
// ---------------------------------------------------------------------------

/// The simulated "true" time in ms since the Unix epoch, shared by every clone.
/// The server's `Date` and every instance's [`SimClock`] derive from it.
#[derive(Debug, Clone)]
pub struct WorldClock(Rc<Cell<i64>>);

impl WorldClock {
    /// A world clock starting at `start_ms`.
    pub fn new(start_ms: i64) -> WorldClock {
        WorldClock(Rc::new(Cell::new(start_ms)))
    }

    /// The current world time.
    pub fn now_ms(&self) -> i64 {
        self.0.get()
    }

    /// Moves time forward by `ms` (never backwards: use [`WorldClock::set`]).
    pub fn advance(&self, ms: u64) {
        let ms = i64::try_from(ms).unwrap_or(i64::MAX);
        self.0.set(self.0.get().saturating_add(ms));
    }

    /// Sets the time to `ms`, in either direction.
    pub fn set(&self, ms: i64) {
        self.0.set(ms);
    }
}

/// One instance's wall clock: world time plus a fixed skew.
#[derive(Debug, Clone)]
pub struct SimClock {
    world: WorldClock,
    skew_ms: i64,
}

impl SimClock {
    /// A clock that reads `world + skew_ms`.
    pub fn new(world: WorldClock, skew_ms: i64) -> SimClock {
        SimClock { world, skew_ms }
    }

    /// The skew against world time.
    pub fn skew_ms(&self) -> i64 {
        self.skew_ms
    }

    /// Changes the skew (a clock jump on this instance).
    pub fn set_skew_ms(&mut self, skew_ms: i64) {
        self.skew_ms = skew_ms;
    }

    /// The shared world clock.
    pub fn world(&self) -> &WorldClock {
        &self.world
    }
}

impl Clock for SimClock {
    fn now_ms(&mut self) -> i64 {
        self.world.now_ms().saturating_add(self.skew_ms)
    }

    /// Sleeping advances world time: in the simulator, waiting is what makes
    /// time pass for everyone (e.g. a stale lease expires).
    fn sleep_ms(&mut self, ms: u64) {
        self.world.advance(ms);
    }
}

/// Deterministic randomness: splitmix64 seeded explicitly.
#[derive(Debug, Clone)]
pub struct SeededRandom {
    state: u64,
}

impl SeededRandom {
    /// A generator whose sequence depends only on `seed`.
    pub fn new(seed: u64) -> SeededRandom {
        SeededRandom { state: seed }
    }
}

impl Random for SeededRandom {
    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// A progress sink that keeps every event, for assertions.
#[derive(Debug, Clone, Default)]
pub struct RecordingProgress {
    /// Every event reported, in order.
    pub events: Vec<ProgressEvent>,
}

impl Progress for RecordingProgress {
    fn report(&mut self, event: ProgressEvent) {
        self.events.push(event);
    }
}

// ---------------------------------------------------------------------------
// Local side: data folder and database
// ---------------------------------------------------------------------------

/// The local data folder: a file per [`BlobRef`], at its [`BlobRef::path`].
/// Clones share it, so the app (via [`MemStore`]'s `app_*` operations) and
/// [`MemBlobs`] see one folder.
#[derive(Debug, Clone, Default)]
pub struct LocalFiles(Rc<RefCell<BTreeMap<BlobRef, Vec<u8>>>>);

impl LocalFiles {
    /// An empty folder.
    pub fn new() -> LocalFiles {
        LocalFiles::default()
    }

    /// Writes (or replaces) the blob's file.
    pub fn put(&self, blob: &BlobRef, bytes: &[u8]) {
        self.0.borrow_mut().insert(blob.clone(), bytes.to_vec());
    }

    /// The blob's bytes, if the file exists.
    pub fn get(&self, blob: &BlobRef) -> Option<Vec<u8>> {
        self.0.borrow().get(blob).cloned()
    }

    /// Is the blob's file present?
    pub fn contains(&self, blob: &BlobRef) -> bool {
        self.0.borrow().contains_key(blob)
    }

    /// Deletes the blob's file; true if it existed.
    pub fn remove(&self, blob: &BlobRef) -> bool {
        self.0.borrow_mut().remove(blob).is_some()
    }

    /// Every file path, sorted.
    pub fn paths(&self) -> Vec<String> {
        // Sorted by hash then extension is sorted by path: the path is the
        // hash's first two digits, a slash, the hash and the extension.
        self.0.borrow().keys().map(BlobRef::path).collect()
    }

    /// Number of files.
    pub fn len(&self) -> usize {
        self.0.borrow().len()
    }

    /// True when the folder holds no file.
    pub fn is_empty(&self) -> bool {
        self.0.borrow().is_empty()
    }
}

/// The app's local database in memory: the `files` table keyed by stable_id
/// and the `sync_metadata` table.
#[derive(Debug, Clone, Default)]
pub struct MemStore {
    /// The `files` table.
    pub rows: BTreeMap<String, LocalRow>,
    /// The `sync_metadata` table.
    pub meta: BTreeMap<String, String>,
    /// Fault switch: the next [`LocalStore::apply`] (or
    /// [`LocalStore::commit_finish`]) returns this error, changes nothing,
    /// and clears the switch.
    pub fail_next_apply: Option<LocalError>,
    /// The writes of an open commit ([`LocalStore::commit_begin`]), applied
    /// by `commit_finish`; any other call but `rows` drops them (a rollback).
    staged: Option<Vec<RowWrite>>,
}

impl MemStore {
    /// An empty database.
    pub fn new() -> MemStore {
        MemStore::default()
    }

    /// The row for `stable_id`, deleted or not.
    pub fn row(&self, stable_id: &str) -> Option<&LocalRow> {
        self.rows.get(stable_id)
    }

    /// Rows not deleted, in stable_id order.
    pub fn live_rows(&self) -> impl Iterator<Item = &LocalRow> {
        self.rows.values().filter(|r| !r.deleted)
    }

    /// The app creates a file: stores the blob and inserts a `modified` row.
    /// `meta.file_size` is set to the content length.
    pub fn app_add(
        &mut self,
        files: &LocalFiles,
        stable_id: &str,
        bytes: &[u8],
        meta: FileMeta,
        now_ms: i64,
    ) -> Result<LocalRow, LocalError> {
        crate::model::validate_stable_id(stable_id).map_err(invalid)?;
        if self.rows.contains_key(stable_id) {
            // Stable ids are never reused, not even after a deletion.
            return Err(LocalError::Invalid(format!("row {stable_id} already exists")));
        }
        let id = ContentHash::of(bytes);
        let blob = BlobRef::new(id.clone(), &meta.file_type).map_err(invalid)?;
        let row = LocalRow {
            stable_id: stable_id.to_owned(),
            id,
            meta: FileMeta { file_size: Some(len_i64(bytes)), ..meta },
            deleted: false,
            sync_status: SyncStatus::Modified,
            remote_version: None,
            sync_hash: None,
            sync_meta: None,
            local_modified_at_ms: now_ms,
            hlc: None,
            conflict: None,
        };
        files.put(&blob, bytes);
        self.rows.insert(stable_id.to_owned(), row.clone());
        Ok(row)
    }

    /// The app replaces a file's content. The old blob file stays: another
    /// row may share it, and the sync base may still need it.
    pub fn app_edit_content(
        &mut self,
        files: &LocalFiles,
        stable_id: &str,
        bytes: &[u8],
        now_ms: i64,
    ) -> Result<LocalRow, LocalError> {
        let row = self.live_row_mut(stable_id)?;
        let id = ContentHash::of(bytes);
        let blob = BlobRef::new(id.clone(), &row.meta.file_type).map_err(invalid)?;
        files.put(&blob, bytes);
        row.id = id;
        row.meta.file_size = Some(len_i64(bytes));
        Ok(mark_edited(row, SyncStatus::Modified, now_ms))
    }

    /// The app edits a file's metadata through `f`. `file_type` and
    /// `file_size` follow the content (they name and size the blob), so a
    /// change to either is refused and the row is left as it was.
    pub fn app_set_meta(
        &mut self,
        stable_id: &str,
        f: impl FnOnce(&mut FileMeta),
        now_ms: i64,
    ) -> Result<LocalRow, LocalError> {
        let row = self.live_row_mut(stable_id)?;
        let mut meta = row.meta.clone();
        f(&mut meta);
        if meta.file_type != row.meta.file_type || meta.file_size != row.meta.file_size {
            return Err(LocalError::Invalid(
                "file_type and file_size follow the content; use app_edit_content".to_owned(),
            ));
        }
        row.meta = meta;
        Ok(mark_edited(row, SyncStatus::Modified, now_ms))
    }

    /// The app deletes a file: the row becomes a `pending_delete` tombstone,
    /// and its blob file goes unless another live row still uses it.
    pub fn app_delete(
        &mut self,
        files: &LocalFiles,
        stable_id: &str,
        now_ms: i64,
    ) -> Result<LocalRow, LocalError> {
        let row = self.live_row_mut(stable_id)?;
        row.deleted = true;
        let row = mark_edited(row, SyncStatus::PendingDelete, now_ms);
        if let Ok(blob) = row.blob() {
            let shared = self.live_rows().any(|r| r.blob().is_ok_and(|b| b.path() == blob.path()));
            if !shared {
                files.remove(&blob);
            }
        }
        Ok(row)
    }

    /// The live row the app may edit, or why not.
    fn live_row_mut(&mut self, stable_id: &str) -> Result<&mut LocalRow, LocalError> {
        match self.rows.get_mut(stable_id) {
            None => Err(LocalError::Invalid(format!("no row {stable_id}"))),
            Some(r) if r.deleted => Err(LocalError::Invalid(format!("row {stable_id} is deleted"))),
            Some(r) => Ok(r),
        }
    }
}

/// Applies the app's rule (SPEC §2): every local write marks the row in the
/// same step. A conflict record only lives while the status is `conflict`,
/// so an edit of a conflicted row drops it; the next sync sees the conflict
/// again from the row's base.
fn mark_edited(row: &mut LocalRow, status: SyncStatus, now_ms: i64) -> LocalRow {
    row.sync_status = status;
    row.local_modified_at_ms = now_ms;
    row.conflict = None;
    row.clone()
}

fn invalid(e: crate::model::InvalidValue) -> LocalError {
    LocalError::Invalid(e.to_string())
}

fn len_i64(bytes: &[u8]) -> i64 {
    i64::try_from(bytes.len()).unwrap_or(i64::MAX)
}

impl LocalStore for MemStore {
    fn count_unsynced(&mut self) -> Result<u64, LocalError> {
        self.staged = None;
        let n = self.rows.values().filter(|r| r.sync_status.is_pending()).count();
        Ok(n as u64)
    }

    fn meta_get(&mut self, key: &str) -> Result<Option<String>, LocalError> {
        self.staged = None;
        Ok(self.meta.get(key).cloned())
    }

    fn row_bases(&mut self) -> Result<Vec<RowBase>, LocalError> {
        self.staged = None;
        Ok(self.rows.values().map(LocalRow::base).collect())
    }

    /// Leaves an open commit open: the rows as they were before it.
    fn rows(&mut self, stable_ids: &[String]) -> Result<Vec<LocalRow>, LocalError> {
        Ok(stable_ids.iter().filter_map(|id| self.rows.get(id).cloned()).collect())
    }

    fn live_rows_with_content(&mut self, hash: &ContentHash) -> Result<u64, LocalError> {
        self.staged = None;
        Ok(self.live_rows().filter(|r| r.id == *hash).count() as u64)
    }

    /// All or nothing: the only failure is the injected one, checked before
    /// anything changes. Writes are checked and applied in order, as the
    /// `UPDATE … WHERE` statements of one SQL transaction would be.
    fn apply(&mut self, commit: &LocalCommit) -> Result<ApplyOutcome, LocalError> {
        self.staged = None;
        if let Some(e) = self.fail_next_apply.take() {
            return Err(e);
        }
        let mut outcome = ApplyOutcome::default();
        for w in &commit.writes {
            let id = &w.row.stable_id;
            if self.rows.get(id) != w.expected.as_ref() {
                // The app changed (or created) the row during the sync.
                outcome.skipped.push(id.clone());
                continue;
            }
            self.rows.insert(id.clone(), w.row.clone());
        }
        for (k, v) in &commit.meta {
            self.meta.insert(k.clone(), v.clone());
        }
        Ok(outcome)
    }

    fn commit_begin(&mut self) -> Result<(), LocalError> {
        self.staged = Some(Vec::new());
        Ok(())
    }

    fn commit_writes(&mut self, writes: &[RowWrite]) -> Result<(), LocalError> {
        let staged = self.staged.as_mut().ok_or_else(|| LocalError::Other("no open commit".to_owned()))?;
        staged.extend_from_slice(writes);
        Ok(())
    }

    /// Applies the staged writes and `meta` as one [`LocalStore::apply`].
    fn commit_finish(&mut self, meta: &[(String, String)]) -> Result<ApplyOutcome, LocalError> {
        let writes = self.staged.take().ok_or_else(|| LocalError::Other("no open commit".to_owned()))?;
        self.apply(&LocalCommit { writes, meta: meta.to_vec() })
    }
}

// ---------------------------------------------------------------------------
// The in-memory WebDAV server
// ---------------------------------------------------------------------------

/// How long after a write Apache reports a file's ETag as weak.
pub const WEAK_ETAG_WINDOW_MS: i64 = 1000;

/// Which real server's behaviour to model (TOOLCHAIN.md, "Real WebDAV servers").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerProfile {
    /// wsgidav: honours `If-Match` and `If-None-Match`.
    Strict,
    /// Apache mod_dav_fs: honours them, but for [`WEAK_ETAG_WINDOW_MS`] after
    /// a write the file's ETag is weak (`W/"…"`), and `If-Match` (a strong
    /// comparison) then fails with 412 even with the ETag just read.
    WeakEtagAfterWrite,
    /// rclone `serve webdav` (1.60, measured): ignores both headers, so
    /// writes always succeed, and answers MKCOL on an existing collection
    /// with success: it has no create-if-absent primitive at all.
    IgnoresConditionals,
    /// Nextcloud-like file locking: honours conditions, but while a PUT to a
    /// path is in flight (between [`MemServer::begin_write`] and
    /// [`MemServer::end_write`]) every GET, PUT, DELETE or MOVE of that path
    /// answers `423 Locked`.
    LocksWhileWriting,
}

/// One stored file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The body.
    pub bytes: Vec<u8>,
    /// Server-wide write counter at the write; the ETag is `"<etag_seq>"`.
    pub etag_seq: u64,
    /// World time of the write (MOVE keeps it, as a rename does).
    pub modified_ms: i64,
}

/// The server's stored state, as kept by [`MemServer::snapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemServerSnapshot {
    /// Files by path.
    pub files: BTreeMap<String, Entry>,
    /// Collections by path, with their modification time.
    pub collections: BTreeMap<String, i64>,
}

/// A WebDAV server in memory. Paths are relative, without leading slash
/// (`"ab/abc….pdf"`, `"version.txt.lock"`); the root `""` always exists.
///
/// It implements [`RemoteTransport`] itself (no faults, `Date` = now), so
/// tests can act on it directly; instances use a [`MemRemoteClient`].
#[derive(Debug)]
pub struct MemServer {
    profile: ServerProfile,
    clock: WorldClock,
    files: BTreeMap<String, Entry>,
    /// Collections with their modification time: as on the file-system
    /// backed servers, a collection's time changes when a child is created
    /// or removed (not when a child is overwritten in place).
    collections: BTreeMap<String, i64>,
    etag_counter: u64,
    /// Requests handled.
    ops: usize,
    /// One line per request handled, unless turned off
    /// ([`MemServer::keep_op_log`]).
    log: Option<Vec<String>>,
    /// Paths with a PUT in flight ([`ServerProfile::LocksWhileWriting`]).
    writing: BTreeSet<String>,
}

impl MemServer {
    /// An empty server behaving like `profile`, using `clock` as its clock.
    pub fn new(profile: ServerProfile, clock: WorldClock) -> MemServer {
        MemServer {
            profile,
            clock,
            files: BTreeMap::new(),
            collections: BTreeMap::new(),
            etag_counter: 0,
            ops: 0,
            log: Some(Vec::new()),
            writing: BTreeSet::new(),
        }
    }

    /// The modelled server.
    pub fn profile(&self) -> ServerProfile {
        self.profile
    }

    /// Switches the modelled server (e.g. mid-scenario).
    pub fn set_profile(&mut self, profile: ServerProfile) {
        self.profile = profile;
    }

    /// Every file.
    pub fn files(&self) -> &BTreeMap<String, Entry> {
        &self.files
    }

    /// Every collection path, sorted.
    pub fn collections(&self) -> Vec<String> {
        self.collections.keys().cloned().collect()
    }

    /// A file's bytes.
    pub fn read(&self, path: &str) -> Option<Vec<u8>> {
        self.bytes(path).map(<[u8]>::to_vec)
    }

    /// A file's bytes, borrowed (for checks that read without copying).
    pub fn bytes(&self, path: &str) -> Option<&[u8]> {
        self.files.get(path).map(|e| e.bytes.as_slice())
    }

    /// Is there a file or collection at `path`? (The root always exists.)
    pub fn exists(&self, path: &str) -> bool {
        path.is_empty() || self.files.contains_key(path) || self.collections.contains_key(path)
    }

    /// Test helper: writes a file directly, creating missing parent
    /// collections, ignoring profile and conditions. Not logged or counted.
    pub fn write_raw(&mut self, path: &str, bytes: &[u8]) {
        let mut parent = String::new();
        for segment in path.split('/').take(path.split('/').count() - 1) {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(segment);
            let now = self.clock.now_ms();
            self.collections.entry(parent.clone()).or_insert(now);
        }
        self.store(path, bytes.to_vec());
    }

    /// The stored state (files and collections), e.g. a nightly backup.
    pub fn snapshot(&self) -> MemServerSnapshot {
        MemServerSnapshot { files: self.files.clone(), collections: self.collections.clone() }
    }

    /// Replaces the stored state with `snapshot`: a remote restored from an
    /// older backup. Restored files are new files to the server, so they get
    /// fresh ETags (modification times are kept, as `rsync -a` would).
    pub fn restore(&mut self, snapshot: MemServerSnapshot) {
        self.files = snapshot.files;
        self.collections = snapshot.collections;
        for entry in self.files.values_mut() {
            self.etag_counter += 1;
            entry.etag_seq = self.etag_counter;
        }
    }

    /// Number of requests handled (faulted requests that never arrived are
    /// not counted).
    pub fn op_count(&self) -> usize {
        self.ops
    }

    /// One line per request handled: `"METHOD path"` (`"MOVE from to"`;
    /// `stat` is `PROPFIND`). Empty once [`MemServer::keep_op_log`] turned
    /// it off.
    pub fn op_log(&self) -> &[String] {
        self.log.as_deref().unwrap_or_default()
    }

    /// Keeps the request log (the default), or stops keeping it (and
    /// drops it): a run of many scenarios reads only [`MemServer::op_count`].
    pub fn keep_op_log(&mut self, keep: bool) {
        if keep {
            self.log.get_or_insert_with(Vec::new);
        } else {
            self.log = None;
        }
    }

    /// A PUT to `path` starts arriving: until [`MemServer::end_write`], the
    /// path is locked under [`ServerProfile::LocksWhileWriting`] (other
    /// profiles ignore this). False if a write to `path` is already in flight.
    pub fn begin_write(&mut self, path: &str) -> bool {
        self.writing.insert(path.to_owned())
    }

    /// The PUT to `path` finished or was aborted.
    pub fn end_write(&mut self, path: &str) {
        self.writing.remove(path);
    }

    /// `423` for a request touching a path that is being written.
    fn check_unlocked(&self, paths: &[&str]) -> Result<(), RemoteError> {
        let locked = self.profile == ServerProfile::LocksWhileWriting
            && paths.iter().any(|p| self.writing.contains(*p));
        if locked { Err(RemoteError::Locked) } else { Ok(()) }
    }

    /// The server clock (its `Date`).
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// The ETag the server reports for `entry` right now.
    fn etag_of(&self, entry: &Entry) -> String {
        if self.is_weak(entry) {
            format!("W/\"{}\"", entry.etag_seq)
        } else {
            format!("\"{}\"", entry.etag_seq)
        }
    }

    fn is_weak(&self, entry: &Entry) -> bool {
        self.profile == ServerProfile::WeakEtagAfterWrite
            && self.now_ms() - entry.modified_ms < WEAK_ETAG_WINDOW_MS
    }

    /// Evaluates a PUT's condition against the current file at `path`.
    fn condition_holds(&self, path: &str, condition: &Precondition) -> bool {
        if self.profile == ServerProfile::IgnoresConditionals {
            return true;
        }
        let current = self.files.get(path);
        match condition {
            Precondition::None => true,
            Precondition::IfNoneMatchAny => current.is_none(),
            Precondition::IfMatch(tag) if tag == "*" => current.is_some(),
            // Strong comparison (RFC 9110 §13.1.1): a weak ETag never matches.
            Precondition::IfMatch(tag) => {
                current.is_some_and(|e| !self.is_weak(e) && *tag == format!("\"{}\"", e.etag_seq))
            }
        }
    }

    /// Writes a file in place with a new ETag; a new file touches its parent.
    fn store(&mut self, path: &str, bytes: Vec<u8>) {
        self.etag_counter += 1;
        let entry = Entry { bytes, etag_seq: self.etag_counter, modified_ms: self.now_ms() };
        if self.files.insert(path.to_owned(), entry).is_none() {
            self.touch_parent(path);
        }
    }

    fn touch_parent(&mut self, path: &str) {
        let now = self.now_ms();
        if let Some(t) = self.collections.get_mut(parent_of(path)) {
            *t = now;
        }
    }

    fn parent_exists(&self, path: &str) -> bool {
        let parent = parent_of(path);
        parent.is_empty() || self.collections.contains_key(parent)
    }

    /// Removes whatever is at `path` (a file, or a collection with
    /// everything under it); true if something was there.
    fn remove_tree(&mut self, path: &str) -> bool {
        if self.files.remove(path).is_some() {
            self.touch_parent(path);
            return true;
        }
        if self.collections.remove(path).is_none() {
            return false;
        }
        let prefix = format!("{path}/");
        self.files.retain(|p, _| !p.starts_with(&prefix));
        self.collections.retain(|p, _| !p.starts_with(&prefix));
        self.touch_parent(path);
        true
    }

    /// Renames `from` (file or collection tree) to `to`; `to` is free.
    fn rename_tree(&mut self, from: &str, to: &str) {
        if let Some(entry) = self.files.remove(from) {
            self.files.insert(to.to_owned(), entry);
        } else if let Some(t) = self.collections.remove(from) {
            self.collections.insert(to.to_owned(), t);
            let prefix = format!("{from}/");
            self.files = rebase(std::mem::take(&mut self.files), &prefix, to);
            self.collections = rebase(std::mem::take(&mut self.collections), &prefix, to);
        }
        self.touch_parent(from);
        self.touch_parent(to);
    }

    /// Counts a request, and logs it as `line` (formatted only when the
    /// log is kept).
    fn record(&mut self, line: std::fmt::Arguments<'_>) {
        self.ops += 1;
        if let Some(log) = &mut self.log {
            log.push(line.to_string());
        }
    }
}

/// Moves every key under `prefix` (`"from/"`) to the same place under `to`.
fn rebase<V>(map: BTreeMap<String, V>, prefix: &str, to: &str) -> BTreeMap<String, V> {
    map.into_iter()
        .map(|(k, v)| match k.strip_prefix(prefix) {
            Some(rest) => (format!("{to}/{rest}"), v),
            None => (k, v),
        })
        .collect()
}

/// The parent collection of `path` (`""` for the root).
fn parent_of(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(parent, _)| parent)
}

/// Refuses paths the core must never build: empty, absolute, trailing or
/// doubled slashes, `.` and `..` segments. Answered like a real server's 400.
fn check_path(path: &str) -> Result<(), RemoteError> {
    let ok = !path.is_empty() && path.split('/').all(|s| !s.is_empty() && s != "." && s != "..");
    if ok {
        Ok(())
    } else {
        Err(RemoteError::Protocol { status: 400, message: format!("bad path {path:?}") })
    }
}

fn not_allowed(what: &str, path: &str) -> RemoteError {
    RemoteError::Protocol { status: 405, message: format!("{what} not allowed on collection {path}") }
}

impl RemoteTransport for MemServer {
    fn get(&mut self, path: &str, bytes_max: u64) -> Result<Fetched, RemoteError> {
        self.record(format_args!("GET {path}"));
        check_path(path)?;
        self.check_unlocked(&[path])?;
        if self.collections.contains_key(path) {
            return Err(not_allowed("GET", path));
        }
        let entry = self.files.get(path).ok_or(RemoteError::NotFound)?;
        if entry.bytes.len() as u64 > bytes_max {
            return Err(RemoteError::TooLarge { bytes_max });
        }
        Ok(Fetched { bytes: entry.bytes.clone(), etag: Some(self.etag_of(entry)) })
    }

    fn put(
        &mut self,
        path: &str,
        bytes: &[u8],
        condition: &Precondition,
    ) -> Result<Option<String>, RemoteError> {
        self.record(format_args!("PUT {path}"));
        check_path(path)?;
        self.check_unlocked(&[path])?;
        if self.collections.contains_key(path) {
            return Err(not_allowed("PUT", path));
        }
        if !self.parent_exists(path) {
            return Err(RemoteError::ParentMissing);
        }
        if !self.condition_holds(path, condition) {
            return Err(RemoteError::PreconditionFailed);
        }
        self.store(path, bytes.to_vec());
        Ok(self.files.get(path).map(|e| self.etag_of(e)))
    }

    fn delete(&mut self, path: &str) -> Result<(), RemoteError> {
        self.record(format_args!("DELETE {path}"));
        check_path(path)?;
        self.check_unlocked(&[path])?;
        if self.remove_tree(path) { Ok(()) } else { Err(RemoteError::NotFound) }
    }

    fn mkcol(&mut self, path: &str) -> Result<(), RemoteError> {
        self.record(format_args!("MKCOL {path}"));
        check_path(path)?;
        if self.profile == ServerProfile::IgnoresConditionals && self.collections.contains_key(path) {
            return Ok(());
        }
        if self.exists(path) {
            return Err(RemoteError::AlreadyExists);
        }
        if !self.parent_exists(path) {
            return Err(RemoteError::ParentMissing);
        }
        let now = self.now_ms();
        self.collections.insert(path.to_owned(), now);
        self.touch_parent(path);
        Ok(())
    }

    fn move_to(&mut self, from: &str, to: &str, overwrite: bool) -> Result<(), RemoteError> {
        self.record(format_args!("MOVE {from} {to}"));
        check_path(from)?;
        check_path(to)?;
        self.check_unlocked(&[from, to])?;
        if !self.exists(from) {
            return Err(RemoteError::NotFound);
        }
        if from == to || to.starts_with(&format!("{from}/")) {
            let message = format!("cannot move {from} onto or into itself ({to})");
            return Err(RemoteError::Protocol { status: 403, message });
        }
        if !self.parent_exists(to) {
            return Err(RemoteError::ParentMissing);
        }
        if self.exists(to) {
            if !overwrite {
                return Err(RemoteError::AlreadyExists);
            }
            self.remove_tree(to);
        }
        self.rename_tree(from, to);
        Ok(())
    }

    fn stat(&mut self, path: &str) -> Result<Option<RemoteStat>, RemoteError> {
        self.record(format_args!("PROPFIND {path}"));
        if path.is_empty() {
            return Ok(Some(collection_stat(None)));
        }
        check_path(path)?;
        if let Some(e) = self.files.get(path) {
            return Ok(Some(RemoteStat {
                size: e.bytes.len() as u64,
                etag: Some(self.etag_of(e)),
                modified_ms: Some(e.modified_ms),
                is_collection: false,
            }));
        }
        Ok(self.collections.get(path).map(|t| collection_stat(Some(*t))))
    }

    fn list(&mut self, path: &str) -> Result<Option<Vec<RemoteEntry>>, RemoteError> {
        self.record(format_args!("PROPFIND1 {path}"));
        if !path.is_empty() {
            check_path(path)?;
            if self.files.contains_key(path) {
                return Err(RemoteError::Protocol {
                    status: 400,
                    message: format!("{path} is not a collection"),
                });
            }
            if !self.collections.contains_key(path) {
                return Ok(None);
            }
        }
        let mut children = Vec::new();
        for (child, entry) in &self.files {
            if parent_of(child) == path {
                let stat = RemoteStat {
                    size: entry.bytes.len() as u64,
                    etag: Some(self.etag_of(entry)),
                    modified_ms: Some(entry.modified_ms),
                    is_collection: false,
                };
                children.push(RemoteEntry { name: name_of(child).to_owned(), stat });
            }
        }
        for (child, t) in &self.collections {
            if parent_of(child) == path {
                children
                    .push(RemoteEntry { name: name_of(child).to_owned(), stat: collection_stat(Some(*t)) });
            }
        }
        Ok(Some(children))
    }

    fn server_time_ms(&mut self) -> Option<i64> {
        Some(self.now_ms())
    }
}

fn name_of(path: &str) -> &str {
    path.rsplit_once('/').map_or(path, |(_, name)| name)
}

fn collection_stat(modified_ms: Option<i64>) -> RemoteStat {
    RemoteStat { size: 0, etag: None, modified_ms, is_collection: true }
}

/// The shared handle on one [`MemServer`]: every instance's client and the
/// test/simulator hold clones of it.
#[derive(Debug, Clone)]
pub struct MemRemote(pub Rc<RefCell<MemServer>>);

impl MemRemote {
    /// A new empty server.
    pub fn new(profile: ServerProfile, clock: WorldClock) -> MemRemote {
        MemRemote(Rc::new(RefCell::new(MemServer::new(profile, clock))))
    }

    /// Borrows the server.
    pub fn server(&self) -> Ref<'_, MemServer> {
        self.0.borrow()
    }

    /// Borrows the server mutably (e.g. to act on it without faults).
    pub fn server_mut(&self) -> RefMut<'_, MemServer> {
        self.0.borrow_mut()
    }

    /// A copy of every file.
    pub fn files(&self) -> BTreeMap<String, Entry> {
        self.server().files().clone()
    }

    /// A file's bytes.
    pub fn read(&self, path: &str) -> Option<Vec<u8>> {
        self.server().read(path)
    }

    /// See [`MemServer::write_raw`].
    pub fn write_raw(&self, path: &str, bytes: &[u8]) {
        self.server_mut().write_raw(path, bytes);
    }

    /// Is there a file or collection at `path`?
    pub fn exists(&self, path: &str) -> bool {
        self.server().exists(path)
    }

    /// See [`MemServer::snapshot`].
    pub fn snapshot(&self) -> MemServerSnapshot {
        self.server().snapshot()
    }

    /// See [`MemServer::restore`].
    pub fn restore(&self, snapshot: MemServerSnapshot) {
        self.server_mut().restore(snapshot);
    }

    /// Number of requests the server handled.
    pub fn op_count(&self) -> usize {
        self.server().op_count()
    }

    /// A copy of the server's op log.
    pub fn op_log(&self) -> Vec<String> {
        self.server().op_log().to_vec()
    }
}

// ---------------------------------------------------------------------------
// A client with fault injection
// ---------------------------------------------------------------------------

/// A fault injected into one operation of a [`MemRemoteClient`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// The request never reaches the server; the error is returned.
    Fail(RemoteError),
    /// The server applies the request, then the response is lost:
    /// `Unavailable("lost response")` is returned.
    LostResponse,
    /// The instance dies before sending: this and every later operation of
    /// the client fail with `Unavailable("crashed")`, nothing is applied.
    Crash,
}

/// The WebDAV method names the client uses (`stat` is `PROPFIND`).
const METHODS: [&str; 6] = ["GET", "PUT", "DELETE", "MKCOL", "MOVE", "PROPFIND"];

/// Does `path` match a fault rule's `pattern`: ending with it, or under it
/// when it names a folder (ends with `/`)?
pub fn path_matches(path: &str, pattern: &str) -> bool {
    path.ends_with(pattern) || (pattern.ends_with('/') && path.starts_with(pattern))
}

/// A fault for the `nth` matching operation after the rule was added.
#[derive(Debug, Clone)]
struct FaultRule {
    method: &'static str,
    path_suffix: String,
    nth: usize,
    seen: usize,
    fault: Fault,
}

#[derive(Debug, Default)]
struct ClientState {
    ops: usize,
    crashed: bool,
    by_index: BTreeMap<usize, Fault>,
    rules: Vec<FaultRule>,
    server_time_ms: Option<i64>,
}

impl ClientState {
    /// Counts one operation and picks its fault. An index fault wins over a
    /// rule; every matching rule counts the operation, and a rule whose turn
    /// it is is used up even when an index fault wins.
    fn next_fault(&mut self, method: &str, paths: &[&str]) -> Option<Fault> {
        let index = self.ops;
        self.ops += 1;
        if self.crashed {
            return Some(Fault::Crash);
        }
        let mut chosen = self.by_index.remove(&index);
        let mut k = 0;
        while k < self.rules.len() {
            let r = &mut self.rules[k];
            let hit = r.method == method && paths.iter().any(|p| path_matches(p, &r.path_suffix));
            if hit && r.seen == r.nth {
                let rule = self.rules.remove(k);
                chosen = chosen.or(Some(rule.fault));
                continue;
            }
            r.seen += usize::from(hit);
            k += 1;
        }
        if chosen == Some(Fault::Crash) {
            self.crashed = true;
        }
        chosen
    }
}

/// One instance's connection to a [`MemRemote`]. Clones share the op counter
/// and the fault plan, so the core and its blob mover count together.
#[derive(Debug, Clone)]
pub struct MemRemoteClient {
    remote: MemRemote,
    state: Rc<RefCell<ClientState>>,
}

impl MemRemoteClient {
    /// A fresh connection with no faults planned.
    pub fn new(remote: MemRemote) -> MemRemoteClient {
        MemRemoteClient { remote, state: Rc::default() }
    }

    /// The server this client talks to.
    pub fn remote(&self) -> &MemRemote {
        &self.remote
    }

    /// Injects `fault` into this client's operation number `op_index`
    /// (0-based, counting every operation since the client was created).
    pub fn inject(&self, op_index: usize, fault: Fault) {
        self.state.borrow_mut().by_index.insert(op_index, fault);
    }

    /// Injects `fault` into the `nth` (0-based) `method` operation on a path
    /// ending with `path_suffix` (or under it, when it ends with `/`: e.g.
    /// `changes/`), counted from now. `method` is one of GET,
    /// PUT, DELETE, MKCOL, MOVE, PROPFIND (or STAT), any case; a MOVE matches
    /// on its source or its destination.
    ///
    /// # Panics
    /// On an unknown method name: such a rule could never fire.
    pub fn inject_on(&self, method: &str, path_suffix: &str, nth: usize, fault: Fault) {
        let upper = method.to_ascii_uppercase();
        let wanted = if upper == "STAT" { "PROPFIND" } else { upper.as_str() };
        let Some(method) = METHODS.iter().copied().find(|m| *m == wanted) else {
            panic!("inject_on: unknown method {method:?}, expected one of {METHODS:?}");
        };
        let rule = FaultRule { method, path_suffix: path_suffix.to_owned(), nth, seen: 0, fault };
        self.state.borrow_mut().rules.push(rule);
    }

    /// Operations attempted so far (faulted ones included).
    pub fn ops(&self) -> usize {
        self.state.borrow().ops
    }

    /// Has a [`Fault::Crash`] fired?
    pub fn crashed(&self) -> bool {
        self.state.borrow().crashed
    }

    /// Runs one operation through the fault plan. Every real server answer,
    /// success or HTTP error, carries a `Date`, so both update the server time.
    fn call<T>(
        &mut self,
        method: &'static str,
        paths: &[&str],
        op: impl FnOnce(&mut MemServer) -> Result<T, RemoteError>,
    ) -> Result<T, RemoteError> {
        let fault = self.state.borrow_mut().next_fault(method, paths);
        let unavailable = |why: &str| RemoteError::Unavailable(why.to_owned());
        match fault {
            Some(Fault::Crash) => Err(unavailable("crashed")),
            Some(Fault::Fail(e)) => Err(e),
            Some(Fault::LostResponse) => {
                let _ = op(&mut self.remote.server_mut());
                Err(unavailable("lost response"))
            }
            None => {
                let mut server = self.remote.server_mut();
                let result = op(&mut server);
                self.state.borrow_mut().server_time_ms = Some(server.now_ms());
                result
            }
        }
    }
}

impl RemoteTransport for MemRemoteClient {
    fn get(&mut self, path: &str, bytes_max: u64) -> Result<Fetched, RemoteError> {
        self.call("GET", &[path], |s| s.get(path, bytes_max))
    }

    fn put(
        &mut self,
        path: &str,
        bytes: &[u8],
        condition: &Precondition,
    ) -> Result<Option<String>, RemoteError> {
        self.call("PUT", &[path], |s| s.put(path, bytes, condition))
    }

    fn delete(&mut self, path: &str) -> Result<(), RemoteError> {
        self.call("DELETE", &[path], |s| s.delete(path))
    }

    fn mkcol(&mut self, path: &str) -> Result<(), RemoteError> {
        self.call("MKCOL", &[path], |s| s.mkcol(path))
    }

    fn move_to(&mut self, from: &str, to: &str, overwrite: bool) -> Result<(), RemoteError> {
        self.call("MOVE", &[from, to], |s| s.move_to(from, to, overwrite))
    }

    fn stat(&mut self, path: &str) -> Result<Option<RemoteStat>, RemoteError> {
        self.call("PROPFIND", &[path], |s| s.stat(path))
    }

    fn list(&mut self, path: &str) -> Result<Option<Vec<RemoteEntry>>, RemoteError> {
        self.call("PROPFIND", &[path], |s| s.list(path))
    }

    fn server_time_ms(&mut self) -> Option<i64> {
        self.state.borrow().server_time_ms
    }
}

// ---------------------------------------------------------------------------
// Blob mover
// ---------------------------------------------------------------------------

/// Moves blobs between a [`LocalFiles`] folder and the remote through a
/// [`MemRemoteClient`], so the client's faults apply to transfers too.
#[derive(Debug, Clone)]
pub struct MemBlobs {
    /// The local data folder.
    pub files: LocalFiles,
    /// The connection (usually a clone of the core's).
    pub remote: MemRemoteClient,
}

impl MemBlobs {
    /// A blob mover for `files` over `remote`.
    pub fn new(files: LocalFiles, remote: MemRemoteClient) -> MemBlobs {
        MemBlobs { files, remote }
    }
}

fn check_hash(blob: &BlobRef, bytes: &[u8]) -> Result<(), BlobError> {
    let actual = ContentHash::of(bytes);
    if actual == blob.hash {
        Ok(())
    } else {
        Err(BlobError::HashMismatch { expected: blob.hash.clone(), actual })
    }
}

impl BlobTransfer for MemBlobs {
    fn local_has(&mut self, blob: &BlobRef) -> Result<bool, BlobError> {
        Ok(self.files.contains(blob))
    }

    /// A local file whose bytes do not match its name is refused: uploading
    /// it would put corrupt content at a content-addressed path. Jobs run one
    /// after the other, so the client's fault plan sees every request.
    fn upload(&mut self, jobs: &[UploadJob]) -> Vec<Result<(), BlobError>> {
        jobs.iter()
            .map(|job| {
                let bytes =
                    self.files.get(&job.blob).ok_or_else(|| BlobError::LocalMissing(job.blob.path()))?;
                check_hash(&job.blob, &bytes)?;
                Ok(put_and_move(&mut self.remote, job, &bytes)?)
            })
            .collect()
    }

    fn download(&mut self, jobs: &[DownloadJob], bytes_max: u64) -> Vec<Result<(), BlobError>> {
        jobs.iter()
            .map(|job| {
                let fetched =
                    self.remote.get(&job.remote_path, bytes_max).map_err(BlobError::from_download)?;
                check_hash(&job.blob, &fetched.bytes)?;
                self.files.put(&job.blob, &fetched.bytes);
                Ok(())
            })
            .collect()
    }

    fn remove_local(&mut self, blob: &BlobRef) -> Result<(), BlobError> {
        self.files.remove(blob);
        Ok(())
    }
}

/// In memory the body is whole anyway; it goes through the client so the
/// fault plan applies.
impl BlobHasher for MemBlobs {
    fn remote_hash(&mut self, path: &str, bytes_max: u64) -> Result<RemoteDigest, BlobError> {
        let fetched = self.remote.get(path, bytes_max).map_err(BlobError::from_download)?;
        Ok(RemoteDigest { hash: ContentHash::of(&fetched.bytes), size_bytes: fetched.bytes.len() as u64 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_700_000_000_000;
    const PROFILES: [ServerProfile; 3] =
        [ServerProfile::Strict, ServerProfile::WeakEtagAfterWrite, ServerProfile::IgnoresConditionals];

    fn meta(file_type: &str) -> FileMeta {
        FileMeta {
            filename: "a".into(),
            file_type: file_type.into(),
            doc_collections: "[]".into(),
            doc_metadata: "{}".into(),
            file_metadata: "{}".into(),
            ..FileMeta::default()
        }
    }

    fn setup(profile: ServerProfile) -> (WorldClock, MemRemote, MemRemoteClient) {
        let world = WorldClock::new(T0);
        let remote = MemRemote::new(profile, world.clone());
        let client = MemRemoteClient::new(remote.clone());
        (world, remote, client)
    }

    fn synced(row: &LocalRow) -> LocalRow {
        LocalRow { sync_status: SyncStatus::Synced, remote_version: Some(1), ..row.clone() }
    }

    #[test]
    fn clocks_share_world_time_with_skew_and_sleep_advances_it() {
        let world = WorldClock::new(T0);
        let mut a = SimClock::new(world.clone(), -5_000);
        let mut b = SimClock::new(world.clone(), 0);
        assert_eq!(a.now_ms(), T0 - 5_000);
        a.sleep_ms(300);
        assert_eq!(world.now_ms(), T0 + 300);
        assert_eq!(b.now_ms(), T0 + 300);
        world.set(1);
        assert_eq!(a.now_ms(), -4_999);
    }

    #[test]
    fn seeded_random_is_splitmix64() {
        let mut r = SeededRandom::new(0);
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        let (mut x, mut y) = (SeededRandom::new(42), SeededRandom::new(42));
        let xs: Vec<u64> = (0..5).map(|_| x.next_u64()).collect();
        let ys: Vec<u64> = (0..5).map(|_| y.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs[0], xs[1]);
    }

    #[test]
    fn recording_progress_keeps_events() {
        let mut p = RecordingProgress::default();
        let e = ProgressEvent { percent: 5, phase: crate::ports::Phase::Check, message: "x".into() };
        p.report(e.clone());
        assert_eq!(p.events, vec![e]);
    }

    #[test]
    fn apply_skips_rows_changed_since_expected_and_applies_the_rest() {
        let files = LocalFiles::new();
        let mut store = MemStore::new();
        let a = store.app_add(&files, "a", b"A", meta("pdf"), T0).unwrap();
        let b = store.app_add(&files, "b", b"B", meta("pdf"), T0).unwrap();
        // The app edits `a` after the core read it.
        store.app_edit_content(&files, "a", b"A2", T0 + 1).unwrap();
        let commit = LocalCommit {
            writes: vec![
                RowWrite { row: synced(&a), expected: Some(a.clone()) },
                RowWrite { row: synced(&b), expected: Some(b.clone()) },
                // Expected absent, but `b` exists: skipped too.
                RowWrite { row: synced(&b), expected: None },
            ],
            meta: vec![("version".into(), "1".into())],
        };
        let outcome = store.apply(&commit).unwrap();
        assert_eq!(outcome.skipped, vec!["a".to_string(), "b".to_string()]);
        assert_eq!(store.row("a").unwrap().id, ContentHash::of(b"A2"));
        assert_eq!(store.row("a").unwrap().sync_status, SyncStatus::Modified);
        assert_eq!(store.row("b").unwrap(), &synced(&b));
        assert_eq!(store.meta_get("version").unwrap().as_deref(), Some("1"));
        assert_eq!(store.count_unsynced().unwrap(), 1);
    }

    #[test]
    fn apply_inserts_new_rows_when_expected_absent() {
        let mut store = MemStore::new();
        let files = LocalFiles::new();
        let mut other = MemStore::new();
        let row = synced(&other.app_add(&files, "n", b"N", meta("tei"), T0).unwrap());
        let commit =
            LocalCommit { writes: vec![RowWrite { row: row.clone(), expected: None }], meta: vec![] };
        assert!(store.apply(&commit).unwrap().skipped.is_empty());
        assert_eq!(store.rows(&["n".into(), "zz".into()]).unwrap(), vec![row]);
    }

    #[test]
    fn injected_apply_failure_changes_nothing_and_clears() {
        let files = LocalFiles::new();
        let mut store = MemStore::new();
        let a = store.app_add(&files, "a", b"A", meta("pdf"), T0).unwrap();
        let before = store.clone();
        store.fail_next_apply = Some(LocalError::Busy);
        let commit = LocalCommit {
            writes: vec![RowWrite { row: synced(&a), expected: Some(a.clone()) }],
            meta: vec![("version".into(), "1".into())],
        };
        assert_eq!(store.apply(&commit), Err(LocalError::Busy));
        assert_eq!(store.rows, before.rows);
        assert_eq!(store.meta, before.meta);
        assert!(store.fail_next_apply.is_none());
        assert!(store.apply(&commit).unwrap().skipped.is_empty());
        assert_eq!(store.row("a").unwrap().sync_status, SyncStatus::Synced);
    }

    #[test]
    fn app_operations_mark_rows_and_count_unsynced_counts_them() {
        let files = LocalFiles::new();
        let mut store = MemStore::new();
        for id in ["a", "b", "c"] {
            let row = store.app_add(&files, id, id.as_bytes(), meta("pdf"), T0).unwrap();
            store.rows.insert(id.into(), synced(&row));
        }
        assert_eq!(store.count_unsynced().unwrap(), 0);

        let a = store.app_edit_content(&files, "a", b"new", T0 + 10).unwrap();
        assert_eq!((a.sync_status, a.local_modified_at_ms), (SyncStatus::Modified, T0 + 10));
        assert_eq!(a.meta.file_size, Some(3));
        assert_eq!(a.remote_version, Some(1), "the base is kept");
        assert!(files.contains(&BlobRef::new(ContentHash::of(b"a"), "pdf").unwrap()));
        assert_eq!(files.get(&a.blob().unwrap()).unwrap(), b"new");

        let b = store.app_set_meta("b", |m| m.label = Some("L".into()), T0 + 20).unwrap();
        assert_eq!((b.sync_status, b.meta.label.as_deref()), (SyncStatus::Modified, Some("L")));
        let refused = store.app_set_meta("b", |m| m.file_type = "tei".into(), T0 + 21);
        assert!(matches!(refused, Err(LocalError::Invalid(_))));

        let c = store.app_delete(&files, "c", T0 + 30).unwrap();
        assert!(c.deleted);
        assert_eq!((c.sync_status, c.local_modified_at_ms), (SyncStatus::PendingDelete, T0 + 30));
        assert!(!files.contains(&c.blob().unwrap()));
        assert_eq!(store.count_unsynced().unwrap(), 3);
        assert_eq!(store.live_rows().count(), 2);
        let bases = store.row_bases().unwrap();
        assert_eq!(bases.iter().map(|b| b.stable_id.as_str()).collect::<Vec<_>>(), ["a", "b", "c"]);
    }

    #[test]
    fn app_operations_refuse_unknown_deleted_and_duplicate_ids() {
        let files = LocalFiles::new();
        let mut store = MemStore::new();
        store.app_add(&files, "a", b"A", meta("pdf"), T0).unwrap();
        assert!(store.app_add(&files, "a", b"X", meta("pdf"), T0).is_err());
        assert!(store.app_add(&files, "../x", b"X", meta("pdf"), T0).is_err());
        assert!(store.app_add(&files, "b", b"X", meta("../x"), T0).is_err());
        assert!(store.app_edit_content(&files, "nope", b"X", T0).is_err());
        store.app_delete(&files, "a", T0).unwrap();
        assert!(store.app_delete(&files, "a", T0).is_err());
        assert!(store.app_set_meta("a", |_| {}, T0).is_err());
        assert!(store.app_edit_content(&files, "a", b"Y", T0).is_err());
    }

    #[test]
    fn app_delete_keeps_a_blob_another_live_row_uses() {
        let files = LocalFiles::new();
        let mut store = MemStore::new();
        let a = store.app_add(&files, "a", b"same", meta("pdf"), T0).unwrap();
        store.app_add(&files, "b", b"same", meta("pdf"), T0).unwrap();
        store.app_delete(&files, "a", T0).unwrap();
        assert!(files.contains(&a.blob().unwrap()));
        store.app_delete(&files, "b", T0).unwrap();
        assert!(!files.contains(&a.blob().unwrap()));
        assert!(files.is_empty());
    }

    #[test]
    fn live_rows_with_content_counts_only_live_rows() {
        let files = LocalFiles::new();
        let mut store = MemStore::new();
        store.app_add(&files, "a", b"same", meta("pdf"), T0).unwrap();
        store.app_add(&files, "b", b"same", meta("tei"), T0).unwrap();
        store.app_add(&files, "c", b"other", meta("pdf"), T0).unwrap();
        let hash = ContentHash::of(b"same");
        assert_eq!(store.live_rows_with_content(&hash).unwrap(), 2);
        store.app_delete(&files, "a", T0).unwrap();
        assert_eq!(store.live_rows_with_content(&hash).unwrap(), 1);
        assert_eq!(store.live_rows_with_content(&ContentHash::of(b"none")).unwrap(), 0);
    }

    #[test]
    fn mkcol_twice_is_already_exists_except_where_rclone_says_created() {
        for profile in PROFILES {
            let (_, remote, mut c) = setup(profile);
            c.mkcol("version.txt.lock").unwrap();
            let again = if profile == ServerProfile::IgnoresConditionals {
                Ok(())
            } else {
                Err(RemoteError::AlreadyExists)
            };
            assert_eq!(c.mkcol("version.txt.lock"), again, "{profile:?}");
            c.put("f", b"x", &Precondition::None).unwrap();
            assert_eq!(c.mkcol("f"), Err(RemoteError::AlreadyExists), "{profile:?}");
            assert_eq!(remote.server().collections(), vec!["version.txt.lock".to_string()]);
        }
    }

    #[test]
    fn if_none_match_on_existing_fails_strict_but_overwrites_when_ignored() {
        let (_, remote, mut c) = setup(ServerProfile::Strict);
        c.put("version.txt", b"1", &Precondition::IfNoneMatchAny).unwrap();
        let again = c.put("version.txt", b"2", &Precondition::IfNoneMatchAny);
        assert_eq!(again, Err(RemoteError::PreconditionFailed));
        assert_eq!(remote.read("version.txt").unwrap(), b"1");

        let (_, remote, mut c) = setup(ServerProfile::IgnoresConditionals);
        c.put("version.txt", b"1", &Precondition::IfNoneMatchAny).unwrap();
        c.put("version.txt", b"2", &Precondition::IfNoneMatchAny).unwrap();
        assert_eq!(remote.read("version.txt").unwrap(), b"2");
    }

    #[test]
    fn if_match_honoured_by_strict_and_ignored_by_rclone() {
        for (profile, stale_ok) in
            [(ServerProfile::Strict, false), (ServerProfile::IgnoresConditionals, true)]
        {
            let (_, remote, mut c) = setup(profile);
            let e1 = c.put("metadata.db", b"1", &Precondition::None).unwrap().unwrap();
            assert_eq!(c.get("metadata.db", 10).unwrap().etag.as_ref(), Some(&e1));
            c.put("metadata.db", b"2", &Precondition::IfMatch(e1.clone())).unwrap();
            let stale = c.put("metadata.db", b"3", &Precondition::IfMatch(e1));
            assert_eq!(stale.is_ok(), stale_ok, "{profile:?}");
            let want: &[u8] = if stale_ok { b"3" } else { b"2" };
            assert_eq!(remote.read("metadata.db").unwrap(), want);
        }
    }

    #[test]
    fn weak_etag_fails_if_match_within_a_second_then_matches() {
        let (world, remote, mut c) = setup(ServerProfile::WeakEtagAfterWrite);
        c.put("metadata.db", b"v1", &Precondition::None).unwrap();
        let read = c.get("metadata.db", 100).unwrap().etag.unwrap();
        assert!(read.starts_with("W/\""), "{read}");
        let cond = Precondition::IfMatch(read);
        assert_eq!(c.put("metadata.db", b"v2", &cond), Err(RemoteError::PreconditionFailed));
        world.advance(1001);
        let read = c.stat("metadata.db").unwrap().unwrap().etag.unwrap();
        assert!(read.starts_with('"'), "{read}");
        let new = c.put("metadata.db", b"v2", &Precondition::IfMatch(read)).unwrap().unwrap();
        assert!(new.starts_with("W/"), "just written again: {new}");
        assert_eq!(remote.read("metadata.db").unwrap(), b"v2");
    }

    #[test]
    fn a_path_being_written_answers_423_only_under_locks_while_writing() {
        for (profile, locks) in [(ServerProfile::LocksWhileWriting, true), (ServerProfile::Strict, false)] {
            let (_, remote, mut c) = setup(profile);
            c.put("metadata.db", b"v1", &Precondition::None).unwrap();
            assert!(remote.server_mut().begin_write("metadata.db"));
            assert!(!remote.server_mut().begin_write("metadata.db"), "one write at a time");
            let locked = |r: bool| if r && locks { Err(RemoteError::Locked) } else { Ok(()) };
            assert_eq!(c.get("metadata.db", 10).map(|_| ()), locked(true), "{profile:?}");
            assert_eq!(c.put("metadata.db", b"x", &Precondition::None).map(|_| ()), locked(true));
            assert_eq!(c.move_to("metadata.db", "m2", false), locked(true));
            if locks {
                assert_eq!(c.delete("metadata.db"), Err(RemoteError::Locked));
                assert!(c.stat("metadata.db").unwrap().is_some(), "PROPFIND is never locked");
                assert_eq!(c.get("version.txt", 10), Err(RemoteError::NotFound), "other paths are free");
                remote.server_mut().end_write("metadata.db");
                assert_eq!(c.get("metadata.db", 10).unwrap().bytes, b"v1");
            }
        }
    }

    #[test]
    fn put_into_missing_parent_and_onto_collection_fail() {
        for profile in PROFILES {
            let (_, remote, mut c) = setup(profile);
            assert_eq!(c.put("ab/x.pdf", b"x", &Precondition::None), Err(RemoteError::ParentMissing));
            assert_eq!(c.mkcol("a/b"), Err(RemoteError::ParentMissing));
            c.mkcol("ab").unwrap();
            c.put("ab/x.pdf", b"x", &Precondition::None).unwrap();
            let onto = c.put("ab", b"x", &Precondition::None);
            assert!(matches!(onto, Err(RemoteError::Protocol { status: 405, .. })));
            assert!(remote.exists("ab/x.pdf"));
        }
    }

    #[test]
    fn move_without_overwrite_onto_existing_is_already_exists() {
        let (_, remote, mut c) = setup(ServerProfile::Strict);
        c.put("tmp", b"new", &Precondition::None).unwrap();
        c.put("dst", b"old", &Precondition::None).unwrap();
        assert_eq!(c.move_to("tmp", "dst", false), Err(RemoteError::AlreadyExists));
        assert_eq!(remote.read("dst").unwrap(), b"old");
        c.move_to("tmp", "dst", true).unwrap();
        assert_eq!(remote.read("dst").unwrap(), b"new");
        assert!(!remote.exists("tmp"));
        assert_eq!(c.move_to("tmp", "dst", true), Err(RemoteError::NotFound));
        assert_eq!(c.move_to("dst", "no/dst", true), Err(RemoteError::ParentMissing));
    }

    #[test]
    fn move_renames_a_collection_tree() {
        let (_, remote, mut c) = setup(ServerProfile::Strict);
        remote.write_raw("t/a/f1", b"1");
        remote.write_raw("t/f2", b"2");
        c.move_to("t", "u", false).unwrap();
        assert_eq!(remote.server().collections(), vec!["u".to_string(), "u/a".to_string()]);
        assert_eq!(remote.files().keys().cloned().collect::<Vec<_>>(), ["u/a/f1", "u/f2"]);
        assert!(matches!(c.move_to("u", "u/a/x", false), Err(RemoteError::Protocol { .. })));
    }

    #[test]
    fn delete_of_a_collection_removes_its_children() {
        let (_, remote, mut c) = setup(ServerProfile::Strict);
        remote.write_raw("lock/owner.json", b"{}");
        remote.write_raw("lock/sub/x", b"x");
        remote.write_raw("lockfile", b"keep");
        c.delete("lock").unwrap();
        assert!(!remote.exists("lock") && !remote.exists("lock/owner.json"));
        assert!(!remote.exists("lock/sub") && !remote.exists("lock/sub/x"));
        assert_eq!(remote.read("lockfile").unwrap(), b"keep");
        assert_eq!(c.delete("lock"), Err(RemoteError::NotFound));
        assert_eq!(c.get("lock/owner.json", 10), Err(RemoteError::NotFound));
        assert_eq!(c.stat("lock").unwrap(), None);
    }

    #[test]
    fn get_over_bytes_max_is_too_large() {
        let (_, _, mut c) = setup(ServerProfile::Strict);
        c.put("f", b"12345", &Precondition::None).unwrap();
        assert_eq!(c.get("f", 4), Err(RemoteError::TooLarge { bytes_max: 4 }));
        assert_eq!(c.get("f", 5).unwrap().bytes, b"12345");
    }

    #[test]
    fn stat_reports_files_collections_and_server_time() {
        let (world, _, mut c) = setup(ServerProfile::Strict);
        assert_eq!(c.server_time_ms(), None);
        c.mkcol("d").unwrap();
        world.advance(50);
        c.put("d/f", b"abc", &Precondition::None).unwrap();
        let f = c.stat("d/f").unwrap().unwrap();
        assert_eq!((f.size, f.modified_ms, f.is_collection), (3, Some(T0 + 50), false));
        let d = c.stat("d").unwrap().unwrap();
        assert!(d.is_collection);
        assert_eq!(d.modified_ms, Some(T0 + 50), "a new child touches its parent");
        world.advance(7);
        assert_eq!(c.stat("nope").unwrap(), None);
        assert_eq!(c.server_time_ms(), Some(T0 + 57));
        assert!(c.stat("").unwrap().unwrap().is_collection);
        assert!(matches!(c.get("/abs", 1), Err(RemoteError::Protocol { status: 400, .. })));
        assert!(matches!(c.get("a/../b", 1), Err(RemoteError::Protocol { status: 400, .. })));
    }

    #[test]
    fn lost_response_applies_the_write_but_returns_an_error() {
        let (world, remote, mut c) = setup(ServerProfile::Strict);
        c.stat("x").unwrap();
        world.advance(10);
        c.inject(1, Fault::LostResponse);
        let r = c.put("version.txt", b"7", &Precondition::None);
        assert_eq!(r, Err(RemoteError::Unavailable("lost response".into())));
        assert_eq!(remote.read("version.txt").unwrap(), b"7");
        assert_eq!(c.server_time_ms(), Some(T0), "no Date seen from a lost response");
        assert_eq!(c.ops(), 2);
    }

    #[test]
    fn fail_does_not_reach_the_server() {
        let (_, remote, mut c) = setup(ServerProfile::Strict);
        c.inject(0, Fault::Fail(RemoteError::Locked));
        assert_eq!(c.mkcol("l"), Err(RemoteError::Locked));
        assert!(!remote.exists("l"));
        assert_eq!(remote.op_count(), 0);
        c.mkcol("l").unwrap();
        assert_eq!(remote.op_log(), vec!["MKCOL l".to_string()]);
    }

    #[test]
    fn without_the_request_log_requests_are_still_counted() {
        let (_, remote, mut c) = setup(ServerProfile::Strict);
        c.mkcol("a").unwrap();
        remote.server_mut().keep_op_log(false);
        c.mkcol("b").unwrap();
        c.put("b/x", b"1", &Precondition::None).unwrap();
        assert_eq!(remote.op_count(), 3);
        assert!(remote.op_log().is_empty(), "the log is dropped");
        remote.server_mut().keep_op_log(true);
        c.delete("b/x").unwrap();
        assert_eq!(remote.op_log(), vec!["DELETE b/x".to_string()]);
        assert_eq!(remote.op_count(), 4);
    }

    #[test]
    fn crash_stops_every_later_op_including_clones() {
        let (_, remote, mut c) = setup(ServerProfile::Strict);
        let mut blobs_client = c.clone();
        c.inject(1, Fault::Crash);
        c.mkcol("a").unwrap();
        let crashed = Err(RemoteError::Unavailable("crashed".into()));
        assert_eq!(c.mkcol("b"), crashed);
        assert!(c.crashed());
        assert_eq!(c.put("f", b"x", &Precondition::None), crashed.clone().map(|()| None));
        assert_eq!(blobs_client.delete("a"), crashed);
        assert_eq!(remote.op_log(), vec!["MKCOL a".to_string()]);
        assert_eq!(c.ops(), 4);
    }

    #[test]
    fn inject_on_targets_the_nth_matching_operation() {
        let (_, remote, mut c) = setup(ServerProfile::Strict);
        c.put("x/metadata.db", b"skip", &Precondition::None).unwrap_err(); // parent missing
        c.inject_on("put", "metadata.db", 1, Fault::Fail(RemoteError::InsufficientStorage));
        c.put("version.txt", b"1", &Precondition::None).unwrap();
        c.put("metadata.db", b"a", &Precondition::None).unwrap();
        let second = c.put("metadata.db", b"b", &Precondition::None);
        assert_eq!(second, Err(RemoteError::InsufficientStorage));
        c.put("metadata.db", b"c", &Precondition::None).unwrap();
        assert_eq!(remote.read("metadata.db").unwrap(), b"c");
        c.inject_on("MOVE", "final", 0, Fault::LostResponse);
        assert!(c.move_to("metadata.db", "final", false).is_err());
        assert!(remote.exists("final"));
    }

    #[test]
    #[should_panic(expected = "unknown method")]
    fn inject_on_refuses_unknown_methods() {
        let (_, _, c) = setup(ServerProfile::Strict);
        c.inject_on("PUTT", "x", 0, Fault::Crash);
    }

    #[test]
    fn snapshot_and_restore_bring_back_the_older_state() {
        let (_, remote, mut c) = setup(ServerProfile::Strict);
        c.put("version.txt", b"1", &Precondition::None).unwrap();
        let old_etag = c.stat("version.txt").unwrap().unwrap().etag;
        let backup = remote.snapshot();
        c.put("version.txt", b"2", &Precondition::None).unwrap();
        c.mkcol("ab").unwrap();
        remote.restore(backup);
        assert_eq!(remote.read("version.txt").unwrap(), b"1");
        assert!(!remote.exists("ab"));
        assert_ne!(c.stat("version.txt").unwrap().unwrap().etag, old_etag, "restored files are new");
    }

    #[test]
    fn blob_download_refuses_a_hash_mismatch_and_stores_nothing() {
        let (_, remote, c) = setup(ServerProfile::Strict);
        let files = LocalFiles::new();
        let mut blobs = MemBlobs::new(files.clone(), c);
        let blob = BlobRef::new(ContentHash::of(b"good"), "pdf").unwrap();
        let job = [DownloadJob { remote_path: blob.path(), blob: blob.clone() }];
        remote.write_raw(&blob.path(), b"evil");
        let r = blobs.download(&job, 100);
        assert!(matches!(r[..], [Err(BlobError::HashMismatch { .. })]), "{r:?}");
        assert!(files.is_empty());
        assert!(!blobs.local_has(&blob).unwrap());
        remote.write_raw(&blob.path(), b"good");
        let r = blobs.download(&job, 3);
        assert!(matches!(r[..], [Err(BlobError::TooLarge { bytes_max: 3 })]), "{r:?}");
        assert_eq!(blobs.download(&job, 100), vec![Ok(())]);
        assert_eq!(files.get(&blob).unwrap(), b"good");
    }

    #[test]
    fn blob_upload_puts_moves_and_goes_through_the_client_and_its_faults() {
        let (_, remote, c) = setup(ServerProfile::Strict);
        c.clone().mkcol("tmp").unwrap();
        c.clone().mkcol("ab").unwrap();
        let files = LocalFiles::new();
        let mut blobs = MemBlobs::new(files.clone(), c.clone());
        let blob = BlobRef::new(ContentHash::of(b"data"), "tei").unwrap();
        let job =
            |to: &str| UploadJob { blob: blob.clone(), temp_path: "tmp/up".into(), final_path: to.into() };
        assert!(matches!(blobs.upload(&[job("ab/x")])[..], [Err(BlobError::LocalMissing(_))]));
        files.put(&blob, b"data");
        c.inject(c.ops(), Fault::Fail(RemoteError::Unavailable("503".into())));
        assert!(matches!(blobs.upload(&[job("ab/x")])[..], [Err(BlobError::Remote(_))]));
        // A MOVE whose answer was lost is a transient failure; the retry
        // (the core's) finds the blob in place and succeeds.
        c.inject(c.ops() + 1, Fault::LostResponse);
        assert!(matches!(
            blobs.upload(&[job("ab/x")])[..],
            [Err(BlobError::Remote(RemoteError::Unavailable(_)))]
        ));
        assert_eq!(remote.read("ab/x").unwrap(), b"data");
        assert_eq!(blobs.upload(&[job("ab/x")]), vec![Ok(())]);
        assert_eq!(remote.read("ab/x").unwrap(), b"data");
        assert!(!remote.exists("tmp/up"), "the temporary file was moved");
        files.put(&blob, b"rot");
        assert!(matches!(blobs.upload(&[job("ab/y")])[..], [Err(BlobError::HashMismatch { .. })]));
        assert!(!remote.exists("ab/y"));
        blobs.remove_local(&blob).unwrap();
        blobs.remove_local(&blob).unwrap();
        assert!(!blobs.local_has(&blob).unwrap());
    }

    #[test]
    fn list_names_direct_children_or_none() {
        let (_, remote, mut c) = setup(ServerProfile::Strict);
        assert_eq!(c.list("ab").unwrap(), None);
        remote.write_raw("ab/f1", b"1");
        remote.write_raw("ab/sub/f2", b"22");
        let names: Vec<(String, bool, u64)> = c
            .list("ab")
            .unwrap()
            .unwrap()
            .into_iter()
            .map(|e| (e.name, e.stat.is_collection, e.stat.size))
            .collect();
        assert_eq!(names, vec![("f1".to_owned(), false, 1), ("sub".to_owned(), true, 0)]);
        assert!(c.list("ab/f1").is_err(), "a file is not a collection");
        assert!(c.list("").unwrap().unwrap().iter().any(|e| e.name == "ab"));
    }

    #[test]
    fn same_operations_give_identical_logs_and_state() {
        let run = || {
            let (world, remote, mut c) = setup(ServerProfile::WeakEtagAfterWrite);
            let mut rng = SeededRandom::new(7);
            c.mkcol("ab").unwrap();
            for i in 0..20 {
                let n = rng.next_u64() % 4;
                let path = format!("ab/f{n}");
                let _ = match rng.next_u64() % 3 {
                    0 => c.put(&path, format!("{i}").as_bytes(), &Precondition::None).map(|_| ()),
                    1 => c.delete(&path),
                    _ => c.move_to(&path, &format!("ab/f{}", (n + 1) % 4), i % 2 == 0),
                };
                world.advance(rng.next_u64() % 700);
            }
            (remote.op_log(), remote.files(), c.stat("ab").unwrap())
        };
        let first = run();
        assert_eq!(first.0.len(), 21);
        assert_eq!(first, run());
    }
}
