//! The folder remote and blob transfer.
//!
//! - [`FolderRemote`]: a local directory that behaves like the WebDAV server
//!   the core expects (the in-memory `MemServer` under the `Strict` profile):
//!   conditional writes are honoured, writes are atomic replaces, `MKCOL` is
//!   create-if-absent. It is the embedded default remote (`./davsync-remote`).
//! - [`FileBlobs`]: moves blobs between the local data folder
//!   (`<data>/files/{h[0..2]}/{h}{ext}`) and *any* [`RemoteTransport`],
//!   verifying SHA-256 on both sides.
//! - [`SharedRemote`]: one transport behind a cheap-clone handle, so the core's
//!   `remote` port and the blob mover can use the same connection.
//!
//! Nothing here decides what to sync; it only moves bytes and refuses paths
//! and contents that must never be accepted.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use davsync_core::model::{BlobRef, ContentHash};
use davsync_core::ports::{
    BlobError, BlobHasher, BlobTransfer, DownloadJob, Fetched, Precondition, RemoteDigest, RemoteEntry,
    RemoteError, RemoteStat, RemoteTransport, UploadJob, put_and_move,
};
use sha2::{Digest, Sha256};

/// Prefix of every temporary file this module creates (and of its lock
/// file). Remote paths with a segment starting with it are refused, so a core
/// path can never name, overwrite or read one of them.
pub const TEMP_PREFIX: &str = ".davsync-part-";

/// The lock file in a [`FolderRemote`]'s root that serialises mutating
/// operations between processes sharing the folder.
const LOCK_FILE_NAME: &str = ".davsync-part-folder.lock";

/// How many fresh temporary names are tried before giving up.
const TEMP_NAME_ATTEMPTS_MAX: u32 = 16;

/// Read/write buffer for hashing copies.
const COPY_BUFFER_BYTES: usize = 64 * 1024;

// ---------------------------------------------------------------------------
// The folder remote
// ---------------------------------------------------------------------------

/// A local directory as the remote: the embedded default, and a WebDAV server
/// stand-in with the `Strict` semantics of the core's `MemServer`.
///
/// What a caller may rely on:
/// - Paths are relative and `/`-separated. Empty, absolute, doubled-slash,
///   `.`/`..`, backslash or NUL paths, and names starting with
///   [`TEMP_PREFIX`], are refused with `Protocol { status: 400 }`. A symlink
///   anywhere on the path (the last segment included) is refused with
///   `Protocol { status: 403 }`: nothing outside the root is ever read or
///   written. (The root itself may be a symlink; that is the user's choice.)
/// - `put` writes a temporary file beside the target, fsyncs it and renames it
///   into place: readers see the old or the new content, never a torn file.
/// - `If-Match`/`If-None-Match: *` are honoured. Mutating operations take an
///   exclusive lock on a lock file in the root, so the check and the write are
///   atomic even between processes sharing the folder.
/// - ETags are strong, `"<len>-<mtime ns>-<inode>"` in hex, and change on
///   every write: `put` stamps the new file's mtime itself, at nanosecond
///   precision and strictly after the mtime of the file it replaces, so two
///   writes within one file-system timestamp tick, or an inode reused by the
///   file system, still give different ETags. A `move_to` keeps the moved
///   file's ETag, as a rename keeps inode and mtime.
///
/// Clones are cheap and equivalent (the struct holds only the root path).
#[derive(Debug, Clone)]
pub struct FolderRemote {
    root: PathBuf,
}

impl FolderRemote {
    /// A remote on the directory `root`, created (with its parents) if missing.
    pub fn new(root: &Path) -> anyhow::Result<FolderRemote> {
        fs::create_dir_all(root).with_context(|| format!("creating the remote folder {}", root.display()))?;
        let meta =
            fs::metadata(root).with_context(|| format!("reading the remote folder {}", root.display()))?;
        anyhow::ensure!(meta.is_dir(), "the remote folder {} is not a directory", root.display());
        Ok(FolderRemote { root: root.to_path_buf() })
    }

    /// The directory this remote lives in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file-system path for the remote `path`, after checking the path's
    /// form and that no existing component of it is a symlink.
    fn resolve(&self, path: &str) -> Result<PathBuf, RemoteError> {
        check_path(path)?;
        let mut full = self.root.clone();
        let mut exists_so_far = true;
        for segment in path.split('/') {
            full.push(segment);
            if !exists_so_far {
                continue;
            }
            match fs::symlink_metadata(&full) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(forbidden(format!("{path:?} goes through a symlink; refused")));
                }
                Ok(_) => {}
                Err(e) if is_absent(&e) => exists_so_far = false,
                Err(e) => return Err(io_error(e, "checking the path")),
            }
        }
        Ok(full)
    }

    /// Holds the folder's write lock until dropped.
    fn lock(&self) -> Result<File, RemoteError> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.root.join(LOCK_FILE_NAME))
            .map_err(|e| io_error(e, "opening the folder lock"))?;
        file.lock().map_err(|e| io_error(e, "taking the folder lock"))?;
        Ok(file)
    }
}

/// Refuses what the core must never build, like a real server's 400.
fn check_path(path: &str) -> Result<(), RemoteError> {
    let bad_segment = |s: &str| {
        s.is_empty()
            || s == "."
            || s == ".."
            || s.starts_with(TEMP_PREFIX)
            // On Windows a segment like `C:` would replace the whole path.
            || !matches!(Path::new(s).components().collect::<Vec<_>>()[..], [Component::Normal(_)])
    };
    let bad = path.is_empty() || path.contains(['\\', '\0']) || path.split('/').any(bad_segment);
    if bad {
        Err(RemoteError::Protocol { status: 400, message: format!("bad path {path:?}") })
    } else {
        Ok(())
    }
}

fn forbidden(message: String) -> RemoteError {
    RemoteError::Protocol { status: 403, message }
}

fn not_allowed(what: &str, path: &str) -> RemoteError {
    RemoteError::Protocol { status: 405, message: format!("{what} not allowed on collection {path}") }
}

/// "Nothing there": missing, or a path through a regular file.
fn is_absent(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory)
}

/// Maps a file-system failure to what a WebDAV server would have said.
fn io_error(e: io::Error, doing: &str) -> RemoteError {
    match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => RemoteError::NotFound,
        io::ErrorKind::AlreadyExists => RemoteError::AlreadyExists,
        io::ErrorKind::PermissionDenied => forbidden(format!("{doing}: {e}")),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => RemoteError::InsufficientStorage,
        _ => RemoteError::Protocol { status: 500, message: format!("{doing}: {e}") },
    }
}

/// The entry at `full` without following a symlink, or `None`.
fn entry(full: &Path) -> Result<Option<fs::Metadata>, RemoteError> {
    match fs::symlink_metadata(full) {
        Ok(m) => Ok(Some(m)),
        Err(e) if is_absent(&e) => Ok(None),
        Err(e) => Err(io_error(e, "reading metadata")),
    }
}

/// The parent of `full` must be an existing directory (409 otherwise).
fn require_parent_dir(full: &Path) -> Result<(), RemoteError> {
    let parent = full.parent().ok_or(RemoteError::ParentMissing)?;
    match entry(parent)? {
        Some(m) if m.is_dir() => Ok(()),
        _ => Err(RemoteError::ParentMissing),
    }
}

fn mtime_ns(meta: &fs::Metadata) -> u128 {
    meta.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos())
}

fn modified_ms(meta: &fs::Metadata) -> Option<i64> {
    let ns = mtime_ns(meta);
    (ns > 0).then(|| i64::try_from(ns / 1_000_000).unwrap_or(i64::MAX))
}

#[cfg(unix)]
fn inode(meta: &fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    meta.ino()
}

#[cfg(not(unix))]
fn inode(_meta: &fs::Metadata) -> u64 {
    0
}

/// The strong ETag of a regular file (see [`FolderRemote`]).
fn etag_of(meta: &fs::Metadata) -> String {
    format!("\"{:x}-{:x}-{:x}\"", meta.len(), mtime_ns(meta), inode(meta))
}

fn file_stat(meta: &fs::Metadata) -> RemoteStat {
    if meta.is_dir() {
        RemoteStat { size: 0, etag: None, modified_ms: modified_ms(meta), is_collection: true }
    } else {
        RemoteStat {
            size: meta.len(),
            etag: Some(etag_of(meta)),
            modified_ms: modified_ms(meta),
            is_collection: false,
        }
    }
}

/// Strict `If-Match` / `If-None-Match: *` evaluation against the current file.
fn condition_holds(current: Option<&fs::Metadata>, condition: &Precondition) -> bool {
    match condition {
        Precondition::None => true,
        Precondition::IfNoneMatchAny => current.is_none(),
        Precondition::IfMatch(tag) if tag == "*" => current.is_some(),
        Precondition::IfMatch(tag) => current.is_some_and(|m| *tag == etag_of(m)),
    }
}

/// Writes `bytes` to a temporary file beside `target`, stamps its mtime no
/// earlier than `mtime_not_before`, fsyncs it and renames it over `target`.
fn replace_file(target: &Path, bytes: &[u8], mtime_not_before: SystemTime) -> io::Result<fs::Metadata> {
    let dir = target.parent().ok_or_else(|| io::Error::other("target has no parent directory"))?;
    let (mut file, tmp) = create_temp(dir)?;
    let result = (|| {
        file.write_all(bytes)?;
        file.set_modified(SystemTime::now().max(mtime_not_before))?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, target)?;
        sync_dir(dir);
        fs::symlink_metadata(target)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn remove_entry(full: &Path, meta: &fs::Metadata) -> io::Result<()> {
    // remove_dir_all does not follow symlinks inside the tree.
    if meta.is_dir() { fs::remove_dir_all(full) } else { fs::remove_file(full) }
}

fn sync_parent(full: &Path) {
    if let Some(parent) = full.parent() {
        sync_dir(parent);
    }
}

impl RemoteTransport for FolderRemote {
    fn get(&mut self, path: &str, bytes_max: u64) -> Result<Fetched, RemoteError> {
        let full = self.resolve(path)?;
        let meta = entry(&full)?.ok_or(RemoteError::NotFound)?;
        if meta.is_dir() {
            return Err(not_allowed("GET", path));
        }
        if !meta.is_file() {
            return Err(forbidden(format!("{path:?} is not a regular file")));
        }
        if meta.len() > bytes_max {
            return Err(RemoteError::TooLarge { bytes_max });
        }
        let file = File::open(&full).map_err(|e| io_error(e, "opening the file"))?;
        // The ETag of the inode actually read, even if a PUT replaced the path
        // meanwhile.
        let meta = file.metadata().map_err(|e| io_error(e, "reading metadata"))?;
        let capacity = usize::try_from(meta.len().min(bytes_max)).unwrap_or(0);
        let mut bytes = Vec::with_capacity(capacity);
        file.take(bytes_max.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(|e| io_error(e, "reading the file"))?;
        if bytes.len() as u64 > bytes_max {
            return Err(RemoteError::TooLarge { bytes_max });
        }
        Ok(Fetched { bytes, etag: Some(etag_of(&meta)) })
    }

    fn put(
        &mut self,
        path: &str,
        bytes: &[u8],
        condition: &Precondition,
    ) -> Result<Option<String>, RemoteError> {
        let full = self.resolve(path)?;
        let _lock = self.lock()?;
        let current = entry(&full)?;
        if current.as_ref().is_some_and(fs::Metadata::is_dir) {
            return Err(not_allowed("PUT", path));
        }
        require_parent_dir(&full)?;
        if !condition_holds(current.as_ref(), condition) {
            return Err(RemoteError::PreconditionFailed);
        }
        // Strictly after the replaced file's mtime, so the ETag changes even
        // when the clock is coarse, stuck or stepped back.
        let not_before = current
            .as_ref()
            .and_then(|m| m.modified().ok())
            .map_or(UNIX_EPOCH, |t| t + Duration::from_nanos(1));
        let meta = replace_file(&full, bytes, not_before).map_err(|e| io_error(e, "writing the file"))?;
        Ok(Some(etag_of(&meta)))
    }

    fn delete(&mut self, path: &str) -> Result<(), RemoteError> {
        let full = self.resolve(path)?;
        let _lock = self.lock()?;
        let meta = entry(&full)?.ok_or(RemoteError::NotFound)?;
        remove_entry(&full, &meta).map_err(|e| io_error(e, "deleting"))?;
        sync_parent(&full);
        Ok(())
    }

    fn mkcol(&mut self, path: &str) -> Result<(), RemoteError> {
        let full = self.resolve(path)?;
        let _lock = self.lock()?;
        if entry(&full)?.is_some() {
            return Err(RemoteError::AlreadyExists);
        }
        require_parent_dir(&full)?;
        fs::create_dir(&full).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => RemoteError::ParentMissing,
            _ => io_error(e, "creating the collection"),
        })?;
        sync_parent(&full);
        Ok(())
    }

    fn move_to(&mut self, from: &str, to: &str, overwrite: bool) -> Result<(), RemoteError> {
        let src = self.resolve(from)?;
        let dst = self.resolve(to)?;
        let _lock = self.lock()?;
        let src_meta = entry(&src)?.ok_or(RemoteError::NotFound)?;
        if from == to || to.starts_with(&format!("{from}/")) {
            return Err(forbidden(format!("cannot move {from} onto or into itself ({to})")));
        }
        require_parent_dir(&dst)?;
        if let Some(dst_meta) = entry(&dst)? {
            if !overwrite {
                return Err(RemoteError::AlreadyExists);
            }
            // A file replaces a file atomically by rename; anything involving
            // a collection must clear the target first.
            if dst_meta.is_dir() || src_meta.is_dir() {
                remove_entry(&dst, &dst_meta).map_err(|e| io_error(e, "removing the MOVE target"))?;
            }
        }
        fs::rename(&src, &dst).map_err(|e| io_error(e, "renaming"))?;
        sync_parent(&src);
        sync_parent(&dst);
        Ok(())
    }

    fn stat(&mut self, path: &str) -> Result<Option<RemoteStat>, RemoteError> {
        if path.is_empty() {
            let meta = fs::metadata(&self.root).map_err(|e| io_error(e, "reading the root"))?;
            return Ok(Some(file_stat(&meta)));
        }
        let full = self.resolve(path)?;
        Ok(entry(&full)?.map(|m| file_stat(&m)))
    }

    fn list(&mut self, path: &str) -> Result<Option<Vec<RemoteEntry>>, RemoteError> {
        let full = if path.is_empty() { self.root.clone() } else { self.resolve(path)? };
        match entry(&full)? {
            None => return Ok(None),
            Some(m) if !m.is_dir() => return Err(forbidden(format!("{path:?} is not a collection"))),
            Some(_) => {}
        }
        let mut children = Vec::new();
        for item in fs::read_dir(&full).map_err(|e| io_error(e, "listing"))? {
            let item = item.map_err(|e| io_error(e, "listing"))?;
            let Some(name) = item.file_name().to_str().map(str::to_owned) else { continue };
            // Our own temporary files and symlinks are not part of the remote.
            if name.starts_with(TEMP_PREFIX) {
                continue;
            }
            let meta = match fs::symlink_metadata(item.path()) {
                Ok(m) if m.file_type().is_symlink() => continue,
                Ok(m) => m,
                Err(e) if is_absent(&e) => continue,
                Err(e) => return Err(io_error(e, "listing")),
            };
            children.push(RemoteEntry { name, stat: file_stat(&meta) });
        }
        children.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Some(children))
    }

    /// This process is the server: its clock is the server's clock.
    fn server_time_ms(&mut self) -> Option<i64> {
        Some(now_ms())
    }
}

fn now_ms() -> i64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

// ---------------------------------------------------------------------------
// One remote, two ports
// ---------------------------------------------------------------------------

/// A cheap-clone handle on one [`RemoteTransport`], itself a
/// `RemoteTransport`.
///
/// The core takes its `remote` and `blobs` ports as two `&mut` borrows at
/// once, so the blob mover cannot borrow the core's remote; it owns a second
/// handle instead. A transport that is already a cheap-clone handle (like
/// [`FolderRemote`]) can simply be cloned; one that is not (a client with
/// per-connection state such as the last server `Date`) goes behind this
/// wrapper, and both ports then share its state. The lock is held for one
/// call at a time and calls never nest, so it is never contended within a
/// sync; `Arc<Mutex<_>>` (rather than `Rc<RefCell<_>>`) keeps the handle
/// `Send` so a sync may run on a worker thread.
#[derive(Debug)]
pub struct SharedRemote<R>(Arc<Mutex<R>>);

impl<R> Clone for SharedRemote<R> {
    fn clone(&self) -> Self {
        SharedRemote(Arc::clone(&self.0))
    }
}

impl<R> SharedRemote<R> {
    /// Wraps `remote`.
    pub fn new(remote: R) -> SharedRemote<R> {
        SharedRemote(Arc::new(Mutex::new(remote)))
    }

    /// Exclusive access to the transport. A panic during an earlier call does
    /// not poison it: the transport holds no invariant a half-done call breaks.
    pub fn lock(&self) -> MutexGuard<'_, R> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl<R: RemoteTransport> RemoteTransport for SharedRemote<R> {
    fn get(&mut self, path: &str, bytes_max: u64) -> Result<Fetched, RemoteError> {
        self.lock().get(path, bytes_max)
    }

    fn put(
        &mut self,
        path: &str,
        bytes: &[u8],
        condition: &Precondition,
    ) -> Result<Option<String>, RemoteError> {
        self.lock().put(path, bytes, condition)
    }

    fn delete(&mut self, path: &str) -> Result<(), RemoteError> {
        self.lock().delete(path)
    }

    fn mkcol(&mut self, path: &str) -> Result<(), RemoteError> {
        self.lock().mkcol(path)
    }

    fn move_to(&mut self, from: &str, to: &str, overwrite: bool) -> Result<(), RemoteError> {
        self.lock().move_to(from, to, overwrite)
    }

    fn stat(&mut self, path: &str) -> Result<Option<RemoteStat>, RemoteError> {
        self.lock().stat(path)
    }

    fn list(&mut self, path: &str) -> Result<Option<Vec<RemoteEntry>>, RemoteError> {
        self.lock().list(path)
    }

    fn server_time_ms(&mut self) -> Option<i64> {
        self.lock().server_time_ms()
    }
}

// ---------------------------------------------------------------------------
// Blob transfer
// ---------------------------------------------------------------------------

/// Moves blobs between the local data folder's `files/` directory and a
/// remote, verifying SHA-256 both ways.
///
/// - `upload` hashes the local file before sending: a corrupt local file is
///   never published at a content-addressed path.
/// - `download` writes to a temporary file beside the target, verifies the
///   hash, fsyncs and renames; on any failure nothing is left behind.
/// - Files and shard folders that are symlinks count as absent.
///
/// Bodies are held in memory: [`RemoteTransport`] moves whole byte vectors,
/// bounded by the caller's `bytes_max` on the way down. Streaming large files
/// comes with the WebDAV transport.
///
/// `R` is owned; see [`SharedRemote`] for using the core's remote here too.
#[derive(Debug)]
pub struct FileBlobs<R> {
    files_dir: PathBuf,
    remote: R,
}

impl<R: RemoteTransport> FileBlobs<R> {
    /// A blob mover between `files_dir` (the data folder's `files/`
    /// directory, not the data folder itself) and `remote`.
    pub fn new(files_dir: impl Into<PathBuf>, remote: R) -> FileBlobs<R> {
        FileBlobs { files_dir: files_dir.into(), remote }
    }

    /// The local `files/` directory.
    pub fn files_dir(&self) -> &Path {
        &self.files_dir
    }

    /// Where `blob` lives locally.
    pub fn local_path(&self, blob: &BlobRef) -> PathBuf {
        local_blob_path(&self.files_dir, blob)
    }

    /// The transport.
    pub fn remote_mut(&mut self) -> &mut R {
        &mut self.remote
    }

    /// Gives the transport back.
    pub fn into_remote(self) -> R {
        self.remote
    }

    /// The blob's local path if it is a regular file under a real shard
    /// directory; `None` if absent (or a symlink, which counts as absent).
    fn regular_file(&self, blob: &BlobRef) -> Result<Option<PathBuf>, BlobError> {
        let shard = self.files_dir.join(blob.shard());
        let path = self.local_path(blob);
        for (p, want_dir) in [(&shard, true), (&path, false)] {
            match fs::symlink_metadata(p) {
                Ok(m) if want_dir && m.is_dir() => {}
                Ok(m) if !want_dir && m.is_file() => {}
                Ok(_) => return Ok(None),
                Err(e) if is_absent(&e) => return Ok(None),
                Err(e) => return Err(local_io(e, p)),
            }
        }
        Ok(Some(path))
    }
}

/// Where `blob` lives under a data folder's `files/` directory:
/// `{files_dir}/{h[0..2]}/{h}{ext}`. Both parts of a [`BlobRef`] are
/// validated, so the path cannot leave `files_dir`.
pub fn local_blob_path(files_dir: &Path, blob: &BlobRef) -> PathBuf {
    files_dir.join(blob.shard()).join(format!("{}{}", blob.hash, blob.ext))
}

/// Opens the local blob for reading, with its length: it must be a regular
/// file under a real shard directory (a symlink counts as missing).
pub(crate) fn open_local_blob(files_dir: &Path, blob: &BlobRef) -> Result<(File, u64), BlobError> {
    let shard = files_dir.join(blob.shard());
    let path = local_blob_path(files_dir, blob);
    let missing = || BlobError::LocalMissing(blob.path());
    for (p, want_dir) in [(&shard, true), (&path, false)] {
        match fs::symlink_metadata(p) {
            Ok(m) if want_dir && m.is_dir() => {}
            Ok(m) if !want_dir && m.is_file() => {}
            Ok(_) => return Err(missing()),
            Err(e) if is_absent(&e) => return Err(missing()),
            Err(e) => return Err(local_io(e, p)),
        }
    }
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if is_absent(&e) => return Err(missing()),
        Err(e) => return Err(local_io(e, &path)),
    };
    let len = file.metadata().map_err(|e| local_io(e, &path))?.len();
    Ok((file, len))
}

/// Streams `reader` into a temporary file in the blob's shard folder, hashing
/// on the way, refusing more than `bytes_max` bytes; keeps it (renamed into
/// place) only if it hashes to the blob's id. Nothing is left behind on any
/// failure.
pub(crate) fn store_downloaded(
    files_dir: &Path,
    blob: &BlobRef,
    reader: &mut dyn Read,
    bytes_max: u64,
) -> Result<(), BlobError> {
    let shard = files_dir.join(blob.shard());
    ensure_real_dir(&shard).map_err(|e| local_io(e, &shard))?;
    let mut limited = reader.take(bytes_max.saturating_add(1));
    let (tmp, actual, len) = write_temp_hashing(&shard, &mut limited).map_err(|e| local_io(e, &shard))?;
    if len > bytes_max {
        let _ = fs::remove_file(&tmp);
        return Err(BlobError::TooLarge { bytes_max });
    }
    if actual != blob.hash {
        let _ = fs::remove_file(&tmp);
        return Err(BlobError::HashMismatch { expected: blob.hash.clone(), actual });
    }
    let target = local_blob_path(files_dir, blob);
    if let Err(e) = fs::rename(&tmp, &target) {
        let _ = fs::remove_file(&tmp);
        return Err(local_io(e, &target));
    }
    sync_dir(&shard);
    Ok(())
}

fn local_io(e: io::Error, path: &Path) -> BlobError {
    BlobError::LocalIo(format!("{}: {e}", path.display()))
}

fn check_hash(blob: &BlobRef, bytes: &[u8]) -> Result<(), BlobError> {
    let actual = ContentHash::of(bytes);
    if actual == blob.hash {
        Ok(())
    } else {
        Err(BlobError::HashMismatch { expected: blob.hash.clone(), actual })
    }
}

impl<R: RemoteTransport> BlobTransfer for FileBlobs<R> {
    fn local_has(&mut self, blob: &BlobRef) -> Result<bool, BlobError> {
        Ok(self.regular_file(blob)?.is_some())
    }

    fn upload(&mut self, jobs: &[UploadJob]) -> Vec<Result<(), BlobError>> {
        jobs.iter()
            .map(|job| {
                let (mut file, _len) = open_local_blob(&self.files_dir, &job.blob)?;
                let mut bytes = Vec::new();
                file.read_to_end(&mut bytes).map_err(|e| local_io(e, &self.local_path(&job.blob)))?;
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
                store_downloaded(&self.files_dir, &job.blob, &mut fetched.bytes.as_slice(), bytes_max)
            })
            .collect()
    }

    fn remove_local(&mut self, blob: &BlobRef) -> Result<(), BlobError> {
        remove_local_blob(&self.files_dir, blob)
    }
}

/// The folder remote answers `get` from a local file (as its downloads do).
impl<R: RemoteTransport> BlobHasher for FileBlobs<R> {
    fn remote_hash(&mut self, path: &str, bytes_max: u64) -> Result<RemoteDigest, BlobError> {
        let fetched = self.remote.get(path, bytes_max).map_err(BlobError::from_download)?;
        hash_stream(&mut fetched.bytes.as_slice(), bytes_max).map_err(BlobError::LocalIo)?
    }
}

/// SHA-256 and length of everything `reader` yields, reading at most
/// `bytes_max + 1` bytes. The outer error is the reader's (as text); the
/// inner one says the body was over `bytes_max`.
pub(crate) fn hash_stream(
    reader: &mut dyn Read,
    bytes_max: u64,
) -> Result<Result<RemoteDigest, BlobError>, String> {
    let mut limited = reader.take(bytes_max.saturating_add(1));
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size_bytes = 0u64;
    loop {
        let n = limited.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size_bytes += n as u64;
    }
    if size_bytes > bytes_max {
        return Ok(Err(BlobError::TooLarge { bytes_max }));
    }
    Ok(Ok(RemoteDigest { hash: hex_hash(&hasher.finalize()), size_bytes }))
}

/// Deletes the local blob; no error if it is already gone. Shared by every
/// blob mover.
pub(crate) fn remove_local_blob(files_dir: &Path, blob: &BlobRef) -> Result<(), BlobError> {
    let path = local_blob_path(files_dir, blob);
    match fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if is_absent(&e) => Ok(()),
        Err(e) => Err(local_io(e, &path)),
    }
}

// ---------------------------------------------------------------------------
// Local file helpers (shared with the SQLite store's app operations)
// ---------------------------------------------------------------------------

/// Creates `dir` (and parents) and checks it is a directory, not a symlink.
fn ensure_real_dir(dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    let meta = fs::symlink_metadata(dir)?;
    if meta.is_dir() {
        Ok(())
    } else {
        Err(io::Error::other(format!("{} is not a directory (or is a symlink)", dir.display())))
    }
}

/// Removes the temporary files a killed process left in a data folder's
/// `files_dir` (its root and shard folders: where downloads and imports are
/// staged). Only the holder of the data-folder lock may call this: then no
/// other davsync process writes there. Symlinks are neither followed nor
/// removed. Returns how many files went.
pub(crate) fn remove_stale_temp_files(files_dir: &Path) -> io::Result<usize> {
    fn sweep(dir: &Path, depth: u32, removed: &mut usize) -> io::Result<()> {
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let kind = entry.file_type()?;
            let name = entry.file_name();
            if kind.is_file() && name.to_string_lossy().starts_with(TEMP_PREFIX) {
                fs::remove_file(entry.path())?;
                *removed += 1;
            } else if kind.is_dir() && depth == 0 {
                sweep(&entry.path(), 1, removed)?;
            }
        }
        Ok(())
    }
    let mut removed = 0;
    sweep(files_dir, 0, &mut removed)?;
    Ok(removed)
}

/// A new, empty temporary file in `dir`, named `.davsync-part-…`. Names
/// never collide: each is created with `create_new` and a fresh name is
/// tried if one exists.
pub(crate) fn create_temp(dir: &Path) -> io::Result<(File, PathBuf)> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let mut last_error = None;
    for _ in 0..TEMP_NAME_ATTEMPTS_MAX {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().subsec_nanos();
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!("{TEMP_PREFIX}{}-{seq}-{nanos:x}", std::process::id()));
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(f) => return Ok((f, path)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last_error = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last_error.unwrap_or_else(|| io::Error::other("no free temporary name")))
}

/// Copies `reader` into a new temporary file in `dir` while hashing it, and
/// fsyncs the file. Returns the temporary path, the content hash and the
/// length. On failure the temporary file is removed.
pub(crate) fn write_temp_hashing(
    dir: &Path,
    reader: &mut dyn Read,
) -> io::Result<(PathBuf, ContentHash, u64)> {
    let (mut file, tmp) = create_temp(dir)?;
    let result = (|| {
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; COPY_BUFFER_BYTES];
        let mut len = 0u64;
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            hasher.update(&buf[..n]);
            file.write_all(&buf[..n])?;
            len += n as u64;
        }
        file.sync_all()?;
        Ok((hex_hash(&hasher.finalize()), len))
    })();
    match result {
        Ok((hash, len)) => Ok((tmp, hash, len)),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// A blob just stored by [`store_local_blob`].
#[derive(Debug)]
pub(crate) struct StoredBlob {
    /// Its reference.
    pub(crate) blob: BlobRef,
    /// Its length in bytes.
    pub(crate) len: u64,
    /// Where it lives.
    pub(crate) path: PathBuf,
    /// True when no file was at `path` before (so a caller that fails later
    /// may remove it again).
    pub(crate) created: bool,
}

/// Copies `reader` into the data folder as a blob of `file_type`: hashed
/// while written to a temporary file in `files_dir`, fsynced, then renamed to
/// `{files_dir}/{h[0..2]}/{h}{ext}`.
pub(crate) fn store_local_blob(
    files_dir: &Path,
    reader: &mut dyn Read,
    file_type: &str,
) -> anyhow::Result<StoredBlob> {
    // Validated before anything is written.
    davsync_core::model::extension_for(file_type)?;
    ensure_real_dir(files_dir).with_context(|| format!("creating {}", files_dir.display()))?;
    let (tmp, hash, len) = write_temp_hashing(files_dir, reader)
        .with_context(|| format!("copying into {}", files_dir.display()))?;
    let placed = (|| {
        let blob = BlobRef::new(hash, file_type)?;
        let shard = files_dir.join(blob.shard());
        ensure_real_dir(&shard).with_context(|| format!("creating {}", shard.display()))?;
        let path = local_blob_path(files_dir, &blob);
        let created = fs::symlink_metadata(&path).is_err();
        fs::rename(&tmp, &path).with_context(|| format!("moving the new file to {}", path.display()))?;
        sync_dir(&shard);
        Ok(StoredBlob { blob, len, path, created })
    })();
    if placed.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    placed
}

/// Lowercase hex of a SHA-256 digest.
pub(crate) fn hex_hash(digest: &[u8]) -> ContentHash {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let hex: String = digest
        .iter()
        .flat_map(|b| [HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]])
        .map(char::from)
        .collect();
    ContentHash::parse(&hex).expect("a SHA-256 digest is 64 lowercase hex digits")
}

/// Makes a rename or removal in `dir` durable. Best effort: some platforms
/// and file systems cannot fsync a directory, and the data itself is already
/// synced.
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixture {
        _tmp: tempfile::TempDir,
        root: PathBuf,
        outside: PathBuf,
        remote: FolderRemote,
    }

    fn fixture() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("remote");
        let outside = tmp.path().join("outside");
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("secret"), b"secret").unwrap();
        let remote = FolderRemote::new(&root).unwrap();
        Fixture { _tmp: tmp, root, outside, remote }
    }

    fn is_status(r: &Result<impl std::fmt::Debug, RemoteError>, want: u16) -> bool {
        matches!(r, Err(RemoteError::Protocol { status, .. }) if *status == want)
    }

    /// Every path under `dir`, relative, sorted (files and directories).
    fn tree(dir: &Path) -> Vec<String> {
        fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
            let Ok(entries) = fs::read_dir(dir) else { return };
            for e in entries {
                let p = e.unwrap().path();
                out.push(p.strip_prefix(base).unwrap().to_string_lossy().into_owned());
                if fs::symlink_metadata(&p).unwrap().is_dir() {
                    walk(base, &p, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(dir, dir, &mut out);
        out.sort();
        out
    }

    /// The tree without the folder's own lock file.
    fn visible_tree(dir: &Path) -> Vec<String> {
        tree(dir).into_iter().filter(|p| p != LOCK_FILE_NAME).collect()
    }

    #[test]
    fn mkcol_twice_is_already_exists_and_needs_a_parent() {
        let mut f = fixture();
        f.remote.mkcol("lock").unwrap();
        assert_eq!(f.remote.mkcol("lock"), Err(RemoteError::AlreadyExists));
        assert_eq!(f.remote.mkcol("a/b"), Err(RemoteError::ParentMissing));
        f.remote.put("file", b"x", &Precondition::None).unwrap();
        assert_eq!(f.remote.mkcol("file"), Err(RemoteError::AlreadyExists));
        assert_eq!(f.remote.mkcol("file/sub"), Err(RemoteError::ParentMissing));
        assert!(f.remote.stat("lock").unwrap().unwrap().is_collection);
    }

    #[test]
    fn if_none_match_any_creates_only() {
        let mut f = fixture();
        let tag = f.remote.put("v", b"1", &Precondition::IfNoneMatchAny).unwrap().unwrap();
        assert!(tag.starts_with('"') && tag.ends_with('"'), "strong: {tag}");
        assert_eq!(
            f.remote.put("v", b"2", &Precondition::IfNoneMatchAny),
            Err(RemoteError::PreconditionFailed)
        );
        assert_eq!(f.remote.get("v", 10).unwrap().bytes, b"1");
    }

    #[test]
    fn if_match_needs_the_current_etag() {
        let mut f = fixture();
        let e1 = f.remote.put("metadata.db", b"1", &Precondition::None).unwrap().unwrap();
        assert_eq!(f.remote.get("metadata.db", 10).unwrap().etag.as_ref(), Some(&e1));
        assert_eq!(f.remote.stat("metadata.db").unwrap().unwrap().etag.as_ref(), Some(&e1));
        let e2 = f.remote.put("metadata.db", b"2", &Precondition::IfMatch(e1.clone())).unwrap().unwrap();
        assert_ne!(e1, e2);
        let stale = f.remote.put("metadata.db", b"3", &Precondition::IfMatch(e1));
        assert_eq!(stale, Err(RemoteError::PreconditionFailed));
        assert_eq!(f.remote.get("metadata.db", 10).unwrap().bytes, b"2");
        let any = Precondition::IfMatch("*".into());
        assert_eq!(f.remote.put("nope", b"x", &any), Err(RemoteError::PreconditionFailed));
        f.remote.put("metadata.db", b"4", &any).unwrap();
        let current = f.remote.get("metadata.db", 1).unwrap().etag.unwrap();
        f.remote.put("metadata.db", b"5", &Precondition::IfMatch(current)).unwrap();
        assert_eq!(f.remote.get("metadata.db", 10).unwrap().bytes, b"5");
    }

    #[test]
    fn etags_change_on_every_write_even_within_one_tick() {
        let mut f = fixture();
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..200u32 {
            // Same length every time: only mtime/inode can tell them apart.
            let tag = f.remote.put("version.txt", format!("{:04}", i % 2).as_bytes(), &Precondition::None);
            assert!(seen.insert(tag.unwrap().unwrap()), "ETag repeated at write {i}");
        }
        // Delete and re-create: the inode may be reused, the ETag still differs.
        f.remote.delete("version.txt").unwrap();
        let again = f.remote.put("version.txt", b"0000", &Precondition::None).unwrap().unwrap();
        assert!(!seen.contains(&again));
    }

    #[test]
    fn put_into_a_missing_parent_or_onto_a_collection_fails() {
        let mut f = fixture();
        assert_eq!(f.remote.put("ab/x.pdf", b"x", &Precondition::None), Err(RemoteError::ParentMissing));
        f.remote.mkcol("ab").unwrap();
        f.remote.put("ab/x.pdf", b"x", &Precondition::None).unwrap();
        assert!(is_status(&f.remote.put("ab", b"x", &Precondition::None), 405));
        assert!(is_status(&f.remote.get("ab", 10), 405));
        assert_eq!(f.remote.put("ab/x.pdf/y", b"x", &Precondition::None), Err(RemoteError::ParentMissing));
        assert_eq!(visible_tree(&f.root), ["ab", "ab/x.pdf"], "no temporary file left");
    }

    #[test]
    fn move_without_overwrite_onto_an_existing_file_is_already_exists() {
        let mut f = fixture();
        f.remote.put("tmp", b"new", &Precondition::None).unwrap();
        f.remote.put("dst", b"old", &Precondition::None).unwrap();
        assert_eq!(f.remote.move_to("tmp", "dst", false), Err(RemoteError::AlreadyExists));
        assert_eq!(f.remote.get("dst", 10).unwrap().bytes, b"old");
        let tag = f.remote.stat("tmp").unwrap().unwrap().etag;
        f.remote.move_to("tmp", "dst", true).unwrap();
        assert_eq!(f.remote.get("dst", 10).unwrap().bytes, b"new");
        assert_eq!(f.remote.stat("dst").unwrap().unwrap().etag, tag, "a rename keeps the ETag");
        assert_eq!(f.remote.stat("tmp").unwrap(), None);
        assert_eq!(f.remote.move_to("tmp", "dst", true), Err(RemoteError::NotFound));
        assert_eq!(f.remote.move_to("dst", "no/dst", true), Err(RemoteError::ParentMissing));
    }

    #[test]
    fn move_renames_collection_trees_and_refuses_moving_into_itself() {
        let mut f = fixture();
        f.remote.mkcol("t").unwrap();
        f.remote.mkcol("t/a").unwrap();
        f.remote.put("t/a/f1", b"1", &Precondition::None).unwrap();
        f.remote.mkcol("u").unwrap();
        f.remote.put("u/old", b"x", &Precondition::None).unwrap();
        assert_eq!(f.remote.move_to("t", "u", false), Err(RemoteError::AlreadyExists));
        f.remote.move_to("t", "u", true).unwrap();
        assert_eq!(visible_tree(&f.root), ["u", "u/a", "u/a/f1"]);
        assert!(is_status(&f.remote.move_to("u", "u/a/x", false), 403));
        assert!(is_status(&f.remote.move_to("u", "u", true), 403));
    }

    #[test]
    fn delete_of_a_directory_removes_its_children() {
        let mut f = fixture();
        f.remote.mkcol("lock").unwrap();
        f.remote.put("lock/owner.json", b"{}", &Precondition::None).unwrap();
        f.remote.mkcol("lock/sub").unwrap();
        f.remote.put("lock/sub/x", b"x", &Precondition::None).unwrap();
        f.remote.put("lockfile", b"keep", &Precondition::None).unwrap();
        f.remote.delete("lock").unwrap();
        assert_eq!(visible_tree(&f.root), ["lockfile"]);
        assert_eq!(f.remote.delete("lock"), Err(RemoteError::NotFound));
        assert_eq!(f.remote.get("lock/owner.json", 10), Err(RemoteError::NotFound));
        assert_eq!(f.remote.stat("lock").unwrap(), None);
        assert_eq!(f.remote.stat("lockfile/below").unwrap(), None);
    }

    #[test]
    fn bad_paths_are_refused_and_nothing_outside_is_touched() {
        let mut f = fixture();
        let before = tree(f.outside.parent().unwrap());
        let bad = [
            "../x",
            "../outside/secret",
            "/etc/passwd",
            "a//b",
            "a/./b",
            ".",
            "x/",
            "",
            "a\\b",
            "..\\outside\\secret",
            "a\0b",
            ".davsync-part-folder.lock",
            "d/.davsync-part-123",
        ];
        for path in bad {
            assert!(is_status(&f.remote.get(path, 100), 400), "get {path:?}");
            assert!(is_status(&f.remote.put(path, b"pwned", &Precondition::None), 400), "put {path:?}");
            assert!(is_status(&f.remote.delete(path), 400), "delete {path:?}");
            assert!(is_status(&f.remote.mkcol(path), 400), "mkcol {path:?}");
            assert!(is_status(&f.remote.move_to("x", path, true), 400), "move to {path:?}");
            assert!(is_status(&f.remote.move_to(path, "x", true), 400), "move from {path:?}");
            if !path.is_empty() {
                assert!(is_status(&f.remote.stat(path), 400), "stat {path:?}");
            }
        }
        assert_eq!(tree(f.outside.parent().unwrap()), before);
        assert_eq!(fs::read(f.outside.join("secret")).unwrap(), b"secret");
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_out_of_the_root_are_refused() {
        let mut f = fixture();
        std::os::unix::fs::symlink(&f.outside, f.root.join("link")).unwrap();
        std::os::unix::fs::symlink(f.outside.join("secret"), f.root.join("file")).unwrap();
        for path in ["link/secret", "link", "file", "link/new"] {
            assert!(is_status(&f.remote.get(path, 100), 403), "get {path}");
            assert!(is_status(&f.remote.put(path, b"pwned", &Precondition::None), 403), "put {path}");
            assert!(is_status(&f.remote.stat(path), 403), "stat {path}");
            assert!(is_status(&f.remote.delete(path), 403), "delete {path}");
            assert!(is_status(&f.remote.mkcol(path), 403), "mkcol {path}");
            assert!(is_status(&f.remote.move_to(path, "moved", true), 403), "move {path}");
        }
        f.remote.put("plain", b"p", &Precondition::None).unwrap();
        assert!(is_status(&f.remote.move_to("plain", "link/plain", true), 403));
        assert!(is_status(&f.remote.move_to("plain", "file", true), 403));
        assert_eq!(tree(&f.outside), ["secret"]);
        assert_eq!(fs::read(f.outside.join("secret")).unwrap(), b"secret");
        assert!(fs::symlink_metadata(f.root.join("link")).unwrap().file_type().is_symlink());
    }

    #[test]
    fn get_over_bytes_max_is_too_large() {
        let mut f = fixture();
        f.remote.put("f", b"12345", &Precondition::None).unwrap();
        assert_eq!(f.remote.get("f", 4), Err(RemoteError::TooLarge { bytes_max: 4 }));
        assert_eq!(f.remote.get("f", 5).unwrap().bytes, b"12345");
        assert_eq!(f.remote.get("f", u64::MAX).unwrap().bytes, b"12345");
        assert_eq!(f.remote.get("missing", 5), Err(RemoteError::NotFound));
    }

    #[test]
    fn stat_reports_files_collections_and_server_time() {
        let mut f = fixture();
        let before = now_ms();
        f.remote.mkcol("d").unwrap();
        f.remote.put("d/f", b"abc", &Precondition::None).unwrap();
        let st = f.remote.stat("d/f").unwrap().unwrap();
        assert_eq!((st.size, st.is_collection), (3, false));
        let modified = st.modified_ms.unwrap();
        assert!((before - 1000..=now_ms() + 1000).contains(&modified), "{modified} vs {before}");
        let d = f.remote.stat("d").unwrap().unwrap();
        assert!(d.is_collection && d.etag.is_none() && d.modified_ms.is_some());
        assert_eq!(f.remote.stat("nope").unwrap(), None);
        assert!(f.remote.stat("").unwrap().unwrap().is_collection);
        let server = f.remote.server_time_ms().unwrap();
        assert!((before..=now_ms()).contains(&server));
    }

    fn blob_of(bytes: &[u8], file_type: &str) -> BlobRef {
        BlobRef::new(ContentHash::of(bytes), file_type).unwrap()
    }

    /// One upload job, `up` → the blob's final path.
    fn up_one<R: RemoteTransport>(b: &mut FileBlobs<R>, blob: &BlobRef) -> Result<(), BlobError> {
        let job = UploadJob { blob: blob.clone(), temp_path: "up".into(), final_path: blob.path() };
        b.upload(&[job]).pop().unwrap()
    }

    fn down_one<R: RemoteTransport>(
        b: &mut FileBlobs<R>,
        path: &str,
        blob: &BlobRef,
        max: u64,
    ) -> Result<(), BlobError> {
        b.download(&[DownloadJob { remote_path: path.into(), blob: blob.clone() }], max).pop().unwrap()
    }

    #[test]
    fn blobs_round_trip_through_a_shared_remote() {
        let f = fixture();
        let tmp = tempfile::tempdir().unwrap();
        let shared = SharedRemote::new(f.remote.clone());
        let mut core_side = shared.clone();
        let mut up = FileBlobs::new(tmp.path().join("a/files"), shared.clone());
        let mut down = FileBlobs::new(tmp.path().join("b/files"), shared);
        let blob = blob_of(b"<TEI/>", "tei");
        assert!(!up.local_has(&blob).unwrap());
        assert!(matches!(up_one(&mut up, &blob), Err(BlobError::LocalMissing(_))));
        fs::create_dir_all(up.local_path(&blob).parent().unwrap()).unwrap();
        fs::write(up.local_path(&blob), b"<TEI/>").unwrap();
        assert!(up.local_has(&blob).unwrap());
        core_side.mkcol(blob.shard()).unwrap();
        up_one(&mut up, &blob).unwrap();
        assert_eq!(core_side.stat("up").unwrap(), None, "moved into place");
        down_one(&mut down, &blob.path(), &blob, 100).unwrap();
        assert_eq!(fs::read(down.local_path(&blob)).unwrap(), b"<TEI/>");
        assert!(down.local_has(&blob).unwrap());
        assert_eq!(visible_tree(down.files_dir()), [blob.shard().to_owned(), blob.path()]);
        down.remove_local(&blob).unwrap();
        down.remove_local(&blob).unwrap();
        assert!(!down.local_has(&blob).unwrap());
    }

    #[test]
    fn download_refuses_a_hash_mismatch_and_leaves_no_file() {
        let mut f = fixture();
        let tmp = tempfile::tempdir().unwrap();
        let blob = blob_of(b"good", "pdf");
        f.remote.mkcol(blob.shard()).unwrap();
        f.remote.put(&blob.path(), b"evil", &Precondition::None).unwrap();
        let mut blobs = FileBlobs::new(tmp.path().join("files"), f.remote.clone());
        let r = down_one(&mut blobs, &blob.path(), &blob, 100);
        assert!(
            matches!(r, Err(BlobError::HashMismatch { ref actual, .. }) if *actual == ContentHash::of(b"evil")),
            "{r:?}"
        );
        assert!(!blobs.local_has(&blob).unwrap());
        assert!(
            tree(blobs.files_dir()).iter().all(|p| !p.contains('.')),
            "no file, no temp: {:?}",
            tree(blobs.files_dir())
        );
        f.remote.put(&blob.path(), b"good", &Precondition::None).unwrap();
        let r = down_one(&mut blobs, &blob.path(), &blob, 3);
        assert!(matches!(r, Err(BlobError::TooLarge { bytes_max: 3 })), "{r:?}");
        assert!(matches!(
            down_one(&mut blobs, "missing", &blob, 100),
            Err(BlobError::Remote(RemoteError::NotFound))
        ));
        assert!(!blobs.local_has(&blob).unwrap());
        down_one(&mut blobs, &blob.path(), &blob, 100).unwrap();
        assert_eq!(fs::read(blobs.local_path(&blob)).unwrap(), b"good");
    }

    #[test]
    fn upload_refuses_a_corrupt_local_file() {
        let f = fixture();
        let tmp = tempfile::tempdir().unwrap();
        let blob = blob_of(b"data", "tei");
        let mut blobs = FileBlobs::new(tmp.path().join("files"), f.remote.clone());
        let path = blobs.local_path(&blob);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, b"rot!").unwrap();
        let r = up_one(&mut blobs, &blob);
        assert!(matches!(r, Err(BlobError::HashMismatch { .. })), "{r:?}");
        assert_eq!(blobs.remote_mut().stat("up").unwrap(), None, "nothing published");
    }

    #[cfg(unix)]
    #[test]
    fn a_symlinked_local_blob_counts_as_absent() {
        let f = fixture();
        let tmp = tempfile::tempdir().unwrap();
        let blob = blob_of(b"secret", "pdf");
        let mut blobs = FileBlobs::new(tmp.path().join("files"), f.remote.clone());
        let path = blobs.local_path(&blob);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(f.outside.join("secret"), &path).unwrap();
        assert!(!blobs.local_has(&blob).unwrap());
        assert!(matches!(up_one(&mut blobs, &blob), Err(BlobError::LocalMissing(_))));
    }

    #[test]
    fn store_local_blob_places_content_by_hash() {
        let tmp = tempfile::tempdir().unwrap();
        let files = tmp.path().join("files");
        let stored = store_local_blob(&files, &mut &b"hello"[..], "pdf").unwrap();
        assert_eq!(stored.blob, blob_of(b"hello", "pdf"));
        assert_eq!((stored.len, stored.created), (5, true));
        assert_eq!(fs::read(&stored.path).unwrap(), b"hello");
        let again = store_local_blob(&files, &mut &b"hello"[..], "pdf").unwrap();
        assert!(!again.created);
        assert!(store_local_blob(&files, &mut &b"x"[..], "../x").is_err());
        assert_eq!(tree(&files), [stored.blob.shard().to_owned(), stored.blob.path()]);
    }
}
