//! The app's own SQLite database as the engine's [`LocalStore`].
//!
//! davsync runs beside the app on the app's database file (SPEC §2): the
//! `files` and `sync_metadata` tables belong to the app. This module reads and
//! writes them by named columns only, so columns the app adds are tolerated
//! and preserved, and it never adds a column of its own. What the app's
//! schema has no place for (a row's HLC stamp and its conflict record) lives
//! in the side table `davsync_file_state`.
//!
//! Besides the port, [`SqliteStore`] offers the app's own edit operations
//! (`add_file`, `replace_content`, `set_meta`, `delete`) for the CLI; like the
//! app, each marks the row `modified` (or `pending_delete`) in the same
//! transaction.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use davsync_core::hlc::Hlc;
use davsync_core::model::{
    BlobRef, ConflictRecord, ContentHash, FileMeta, LocalRow, RowBase, SyncStatus, extension_for,
    iso8601_utc, validate_stable_id,
};
use davsync_core::ports::{ApplyOutcome, LocalCommit, LocalError, LocalStore, RowWrite};
use rusqlite::types::{Value, ValueRef};
use rusqlite::{Connection, ErrorCode, OptionalExtension, TransactionBehavior, params, params_from_iter};
use sha2::{Digest, Sha256};

use crate::folder::{self, local_blob_path};

/// How long a statement waits for another writer before failing with
/// [`LocalError::Busy`], unless changed with [`SqliteStore::set_busy_timeout`].
pub const BUSY_TIMEOUT_DEFAULT: Duration = Duration::from_millis(5000);

/// Length of a generated `stable_id`.
const STABLE_ID_GENERATED_LEN: usize = 12;

/// The schema of SPEC §2, created only where missing, plus the indexes that
/// make `count_unsynced`, content lookups and `row_bases` cheap, plus
/// davsync's side table.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS files (
    stable_id TEXT PRIMARY KEY, id TEXT, filename TEXT, doc_id TEXT, doc_id_type TEXT,
    file_type TEXT, mime_type TEXT, file_size INTEGER, label TEXT, variant TEXT, version INTEGER,
    is_gold_standard BOOLEAN DEFAULT 0, deleted BOOLEAN DEFAULT 0, local_modified_at TIMESTAMP,
    remote_version INTEGER, sync_status TEXT DEFAULT 'synced', sync_hash TEXT,
    created_at TIMESTAMP, updated_at TIMESTAMP,
    doc_collections TEXT, doc_metadata TEXT, file_metadata TEXT
);
CREATE TABLE IF NOT EXISTS sync_metadata (key TEXT PRIMARY KEY, value TEXT, updated_at TIMESTAMP);
CREATE TABLE IF NOT EXISTS davsync_file_state (stable_id TEXT PRIMARY KEY, hlc TEXT, conflict TEXT, sync_meta TEXT);
";

/// Created after the `files` table has been checked.
const INDEXES: &str = "
CREATE INDEX IF NOT EXISTS idx_files_sync_status ON files(sync_status);
CREATE INDEX IF NOT EXISTS idx_files_id ON files(id);
CREATE INDEX IF NOT EXISTS idx_files_sync_base ON files(stable_id, sync_status, remote_version, deleted);
";

/// Columns of `files` davsync reads or writes; an app database without one
/// of them is refused at open.
const FILES_COLUMNS: [&str; 22] = [
    "stable_id",
    "id",
    "filename",
    "doc_id",
    "doc_id_type",
    "file_type",
    "mime_type",
    "file_size",
    "label",
    "variant",
    "version",
    "is_gold_standard",
    "deleted",
    "local_modified_at",
    "remote_version",
    "sync_status",
    "sync_hash",
    "created_at",
    "updated_at",
    "doc_collections",
    "doc_metadata",
    "file_metadata",
];

/// The full-row query; [`decode_row`] reads its columns by position.
const ROW_SELECT: &str = "SELECT f.stable_id, f.id, f.filename, f.doc_id, f.doc_id_type, f.file_type,
    f.mime_type, f.file_size, f.label, f.variant, f.version, f.is_gold_standard, f.deleted,
    f.local_modified_at, f.remote_version, f.sync_status, f.sync_hash, f.doc_collections,
    f.doc_metadata, f.file_metadata, s.hlc, s.conflict, s.sync_meta
    FROM files f LEFT JOIN davsync_file_state s ON s.stable_id = f.stable_id";

/// Names of [`ROW_SELECT`]'s columns, for error messages.
const ROW_COLUMNS: [&str; 23] = [
    "stable_id",
    "id",
    "filename",
    "doc_id",
    "doc_id_type",
    "file_type",
    "mime_type",
    "file_size",
    "label",
    "variant",
    "version",
    "is_gold_standard",
    "deleted",
    "local_modified_at",
    "remote_version",
    "sync_status",
    "sync_hash",
    "doc_collections",
    "doc_metadata",
    "file_metadata",
    "hlc",
    "conflict",
    "sync_meta",
];

/// A row is live unless `deleted` says otherwise (NULL reads as live).
const LIVE: &str = "(deleted IS NULL OR deleted = 0 OR lower(deleted) = 'false')";

/// The model's columns, written by both the INSERT and the UPDATE, as
/// parameters `?1..=?19` in this order (see [`model_values`]).
const INSERT_ROW: &str = "INSERT INTO files (stable_id, id, filename, doc_id, doc_id_type, file_type,
    mime_type, file_size, label, variant, version, is_gold_standard, deleted, remote_version,
    sync_status, sync_hash, doc_collections, doc_metadata, file_metadata,
    local_modified_at, created_at, updated_at)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?21)";

/// `local_modified_at` is only rewritten when its value changed (`?21`), so
/// the app's own text form survives a sync that does not touch it.
const UPDATE_ROW: &str = "UPDATE files SET id = ?2, filename = ?3, doc_id = ?4, doc_id_type = ?5,
    file_type = ?6, mime_type = ?7, file_size = ?8, label = ?9, variant = ?10, version = ?11,
    is_gold_standard = ?12, deleted = ?13, remote_version = ?14, sync_status = ?15, sync_hash = ?16,
    doc_collections = ?17, doc_metadata = ?18, file_metadata = ?19,
    local_modified_at = CASE WHEN ?21 THEN ?20 ELSE local_modified_at END, updated_at = ?22
    WHERE stable_id = ?1";

const UPSERT_FILE_STATE: &str =
    "INSERT INTO davsync_file_state (stable_id, hlc, conflict, sync_meta) VALUES (?1, ?2, ?3, ?4)
    ON CONFLICT(stable_id) DO UPDATE SET hlc = excluded.hlc, conflict = excluded.conflict,
        sync_meta = excluded.sync_meta";

/// The app's database, opened by davsync beside the app.
///
/// Reads see one consistent snapshot per call; [`LocalStore::apply`] and every
/// app operation is one `BEGIN IMMEDIATE` transaction (all or nothing).
#[derive(Debug)]
pub struct SqliteStore {
    conn: Connection,
    data_dir: PathBuf,
    files_dir: PathBuf,
    /// A local commit sent in parts ([`LocalStore::commit_begin`]) whose
    /// transaction is open on `conn`.
    open_commit: Option<OpenCommit>,
}

/// The state of a commit between `commit_begin` and `commit_finish`.
#[derive(Debug)]
struct OpenCommit {
    now: String,
    skipped: Vec<String>,
}

impl SqliteStore {
    /// Opens the app's database at `db_path` (created, with the schema of
    /// SPEC §2, where missing) in WAL mode with a 5 s busy timeout. `data_dir`
    /// is the app's data folder; blobs live in `data_dir/files/`.
    ///
    /// Fails when an existing `files` table lacks a column davsync needs or
    /// is not keyed by `stable_id`.
    pub fn open(db_path: &Path, data_dir: &Path) -> anyhow::Result<SqliteStore> {
        if let Some(parent) = db_path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        let mut conn = Connection::open(db_path)
            .with_context(|| format!("opening the app database {}", db_path.display()))?;
        conn.busy_timeout(BUSY_TIMEOUT_DEFAULT).context("setting the busy timeout")?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .map_err(|e| typed_local(e.into()))
            .with_context(|| format!("switching {} to WAL mode", db_path.display()))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(db = %db_path.display(), mode = %mode, "the app database is not in WAL mode");
        }
        create_schema(&mut conn)
            .map_err(typed_local)
            .with_context(|| format!("preparing the app database {}", db_path.display()))?;
        Ok(SqliteStore {
            conn,
            data_dir: data_dir.to_path_buf(),
            files_dir: data_dir.join("files"),
            open_commit: None,
        })
    }

    /// Changes how long a statement waits for another writer before
    /// [`LocalError::Busy`].
    pub fn set_busy_timeout(&mut self, timeout: Duration) -> anyhow::Result<()> {
        self.conn.busy_timeout(timeout).context("setting the busy timeout")
    }

    /// Whether SQLite opened the database read-only (a read-only file,
    /// folder or file system): it may still be readable, but a sync or a
    /// resolution could not record anything.
    pub fn is_read_only(&self) -> bool {
        self.conn.is_readonly(rusqlite::MAIN_DB).unwrap_or(false)
    }

    /// The app's data folder.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// `data_dir/files/`, where blobs live (what [`crate::folder::FileBlobs`]
    /// needs).
    pub fn files_dir(&self) -> &Path {
        &self.files_dir
    }

    /// The row for `stable_id`, deleted or not.
    pub fn row(&mut self, stable_id: &str) -> anyhow::Result<Option<LocalRow>> {
        read_row(&self.conn, stable_id).with_context(|| format!("reading file {stable_id}"))
    }

    /// Every row, deleted ones included, in `stable_id` order.
    pub fn list(&mut self) -> anyhow::Result<Vec<LocalRow>> {
        let tx = self.conn.transaction().context("starting a read")?;
        let mut stmt = tx.prepare(&format!("{ROW_SELECT} ORDER BY f.stable_id")).context("listing files")?;
        let mut rows = stmt.query([]).context("listing files")?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().context("listing files")? {
            out.push(decode_row(r)?);
        }
        Ok(out)
    }

    /// The app adds a file: copies `source` into the data folder under its
    /// content hash and inserts a `modified` row with `meta` (its `file_size`
    /// set to the content length). Without `stable_id` a fresh one is made.
    /// A `stable_id` already in use, even by a deleted row, is refused:
    /// stable ids are never reused.
    pub fn add_file(
        &mut self,
        source: &Path,
        meta: FileMeta,
        stable_id: Option<&str>,
    ) -> anyhow::Result<LocalRow> {
        if let Some(id) = stable_id {
            validate_stable_id(id)?;
        }
        meta.validate().context("invalid metadata")?;
        let stored = self.store_blob(source, &meta.file_type)?;
        let row = LocalRow {
            stable_id: String::new(),
            id: stored.blob.hash.clone(),
            meta: FileMeta { file_size: Some(i64::try_from(stored.len)?), ..meta },
            deleted: false,
            sync_status: SyncStatus::Modified,
            remote_version: None,
            sync_hash: None,
            sync_meta: None,
            local_modified_at_ms: now_ms(),
            hlc: None,
            conflict: None,
        };
        let inserted = self.insert_new(row, stable_id, source);
        if inserted.is_err() && stored.created {
            // Nothing refers to the copy we just made.
            let _ = std::fs::remove_file(&stored.path);
        }
        inserted
    }

    /// The app replaces a live file's content with `source`'s. The old blob
    /// stays: another row may share it, and the sync base may still need it.
    pub fn replace_content(&mut self, stable_id: &str, source: &Path) -> anyhow::Result<LocalRow> {
        let file_type = self.live_row(stable_id)?.meta.file_type;
        let stored = self.store_blob(source, &file_type)?;
        let len = i64::try_from(stored.len)?;
        self.edit_live_row(stable_id, SyncStatus::Modified, |row| {
            if row.meta.file_type != file_type {
                bail!("file {stable_id} changed type meanwhile; try again");
            }
            row.id = stored.blob.hash.clone();
            row.meta.file_size = Some(len);
            Ok(())
        })
    }

    /// The app edits a live file's metadata through `f`. `file_type` and
    /// `file_size` follow the content, so changing either is refused.
    pub fn set_meta(&mut self, stable_id: &str, f: impl FnOnce(&mut FileMeta)) -> anyhow::Result<LocalRow> {
        self.edit_live_row(stable_id, SyncStatus::Modified, |row| {
            let mut meta = row.meta.clone();
            f(&mut meta);
            if meta.file_type != row.meta.file_type || meta.file_size != row.meta.file_size {
                bail!("file_type and file_size follow the content; replace the content instead");
            }
            meta.validate().context("invalid metadata")?;
            row.meta = meta;
            Ok(())
        })
    }

    /// The app deletes a live file: the row becomes a `pending_delete`
    /// tombstone, and its blob file goes unless another live row uses it.
    pub fn delete(&mut self, stable_id: &str) -> anyhow::Result<LocalRow> {
        let row = self.edit_live_row(stable_id, SyncStatus::PendingDelete, |row| {
            row.deleted = true;
            Ok(())
        })?;
        if let Ok(blob) = row.blob()
            && !self.blob_in_live_use(&blob)?
        {
            let path = local_blob_path(&self.files_dir, &blob);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
            }
        }
        Ok(row)
    }

    fn store_blob(&self, source: &Path, file_type: &str) -> anyhow::Result<folder::StoredBlob> {
        let mut file = File::open(source).with_context(|| format!("opening {}", source.display()))?;
        folder::store_local_blob(&self.files_dir, &mut file, file_type)
            .with_context(|| format!("copying {} into the data folder", source.display()))
    }

    fn live_row(&mut self, stable_id: &str) -> anyhow::Result<LocalRow> {
        match self.row(stable_id)? {
            None => bail!("no file with stable_id {stable_id}"),
            Some(r) if r.deleted => bail!("file {stable_id} is deleted"),
            Some(r) => Ok(r),
        }
    }

    /// Inserts `row` under `stable_id` (or a fresh id) in one transaction.
    fn insert_new(
        &mut self,
        mut row: LocalRow,
        stable_id: Option<&str>,
        source: &Path,
    ) -> anyhow::Result<LocalRow> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .context("starting a write")?;
        row.stable_id = match stable_id {
            Some(id) => {
                if read_row(&tx, id)?.is_some() {
                    bail!("a file with stable_id {id} already exists (stable ids are never reused)");
                }
                id.to_owned()
            }
            None => free_stable_id(&tx, source, &row.id)?,
        };
        let now = iso8601_utc(row.local_modified_at_ms);
        insert_row(&tx, &row, &now)?;
        put_file_state(&tx, &row)?;
        tx.commit().context("committing the new file")?;
        Ok(row)
    }

    /// The app's rule (SPEC §2): an edit marks the row `status`, stamps
    /// `local_modified_at`, and (like the core's in-memory store) drops any
    /// conflict record, all in one transaction.
    fn edit_live_row(
        &mut self,
        stable_id: &str,
        status: SyncStatus,
        edit: impl FnOnce(&mut LocalRow) -> anyhow::Result<()>,
    ) -> anyhow::Result<LocalRow> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .context("starting a write")?;
        let mut row = match read_row(&tx, stable_id)? {
            None => bail!("no file with stable_id {stable_id}"),
            Some(r) if r.deleted => bail!("file {stable_id} is deleted"),
            Some(r) => r,
        };
        edit(&mut row)?;
        row.sync_status = status;
        row.local_modified_at_ms = now_ms();
        row.conflict = None;
        update_row(&tx, &row, true, &iso8601_utc(row.local_modified_at_ms))?;
        put_file_state(&tx, &row)?;
        tx.commit().with_context(|| format!("committing the change to {stable_id}"))?;
        Ok(row)
    }

    /// Does a live row still use `blob`'s file (same content, same extension)?
    fn blob_in_live_use(&mut self, blob: &BlobRef) -> anyhow::Result<bool> {
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT file_type FROM files WHERE id = ?1 AND {LIVE}"))
            .context("looking for rows sharing the content")?;
        let types = stmt
            .query_map([blob.hash.as_str()], |r| r.get::<_, Option<String>>(0))
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .context("looking for rows sharing the content")?;
        Ok(types.into_iter().flatten().any(|t| extension_for(&t).is_ok_and(|ext| ext == blob.ext)))
    }
}

impl SqliteStore {
    /// Rolls back a commit sent in parts that was not finished (the engine
    /// failed or trapped in between): every other call does this first.
    fn end_open_commit(&mut self) {
        if self.open_commit.take().is_some() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}

impl LocalStore for SqliteStore {
    fn count_unsynced(&mut self) -> Result<u64, LocalError> {
        self.end_open_commit();
        let sql = "SELECT COUNT(*) FROM files WHERE sync_status IN ('modified', 'pending_delete', 'pending_upload')";
        let n: i64 = self.conn.query_row(sql, [], |r| r.get(0)).map_err(db_err)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    fn meta_get(&mut self, key: &str) -> Result<Option<String>, LocalError> {
        self.end_open_commit();
        let value: Option<Value> = self
            .conn
            .query_row("SELECT value FROM sync_metadata WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(db_err)?;
        match value {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Text(s)) => Ok(Some(s)),
            Some(Value::Integer(i)) => Ok(Some(i.to_string())),
            Some(Value::Real(f)) => Ok(Some(f.to_string())),
            Some(Value::Blob(_)) => {
                Err(LocalError::Invalid(format!("sync_metadata {key} is a BLOB, not text")))
            }
        }
    }

    /// Read from the covering index `idx_files_sync_base`, in its order.
    fn row_bases(&mut self) -> Result<Vec<RowBase>, LocalError> {
        self.end_open_commit();
        let tx = self.conn.transaction().map_err(db_err)?;
        let mut stmt = tx
            .prepare("SELECT stable_id, sync_status, remote_version, deleted FROM files ORDER BY stable_id")
            .map_err(db_err)?;
        let mut rows = stmt.query([]).map_err(db_err)?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(db_err)? {
            let cell = |i: usize| r.get_ref(i).map_err(db_err);
            let stable_id = stable_id_of(cell(0)?)?;
            let c = Cells { stable_id: &stable_id };
            out.push(RowBase {
                sync_status: c.status("sync_status", cell(1)?)?,
                remote_version: c.int("remote_version", cell(2)?)?,
                deleted: c.flag("deleted", cell(3)?)?,
                stable_id,
            });
        }
        Ok(out)
    }

    /// One indexed lookup per id, inside one read transaction (one
    /// snapshot), or inside the open commit, which stays open.
    fn rows(&mut self, stable_ids: &[String]) -> Result<Vec<LocalRow>, LocalError> {
        if self.open_commit.is_some() {
            return read_rows(&self.conn, stable_ids);
        }
        let tx = self.conn.transaction().map_err(db_err)?;
        read_rows(&tx, stable_ids)
    }

    fn live_rows_with_content(&mut self, hash: &ContentHash) -> Result<u64, LocalError> {
        self.end_open_commit();
        let sql = format!("SELECT COUNT(*) FROM files WHERE id = ?1 AND {LIVE}");
        let n: i64 = self.conn.query_row(&sql, [hash.as_str()], |r| r.get(0)).map_err(db_err)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// One `BEGIN IMMEDIATE` transaction; see [`write_rows`].
    fn apply(&mut self, commit: &LocalCommit) -> Result<ApplyOutcome, LocalError> {
        self.end_open_commit();
        let now = iso8601_utc(now_ms());
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
        let mut outcome = ApplyOutcome::default();
        write_rows(&tx, &commit.writes, &now, &mut outcome.skipped)?;
        for (key, value) in &commit.meta {
            meta_set(&tx, key, value, &now)?;
        }
        tx.commit().map_err(db_err)?;
        Ok(outcome)
    }

    /// `BEGIN IMMEDIATE`, held on the connection until `commit_finish`.
    fn commit_begin(&mut self) -> Result<(), LocalError> {
        self.end_open_commit();
        self.conn.execute_batch("BEGIN IMMEDIATE").map_err(db_err)?;
        self.open_commit = Some(OpenCommit { now: iso8601_utc(now_ms()), skipped: Vec::new() });
        Ok(())
    }

    fn commit_writes(&mut self, writes: &[RowWrite]) -> Result<(), LocalError> {
        let Some(open) = self.open_commit.as_mut() else {
            return Err(LocalError::Other("commit_writes without commit_begin".to_owned()));
        };
        let result = write_rows(&self.conn, writes, &open.now, &mut open.skipped);
        if result.is_err() {
            self.end_open_commit();
        }
        result
    }

    fn commit_finish(&mut self, meta: &[(String, String)]) -> Result<ApplyOutcome, LocalError> {
        let Some(open) = self.open_commit.take() else {
            return Err(LocalError::Other("commit_finish without commit_begin".to_owned()));
        };
        let result = meta
            .iter()
            .try_for_each(|(key, value)| meta_set(&self.conn, key, value, &open.now))
            .and_then(|()| self.conn.execute_batch("COMMIT").map_err(db_err));
        match result {
            Ok(()) => Ok(ApplyOutcome { skipped: open.skipped }),
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }
}

/// The rows of `stable_ids` that exist, in that order.
fn read_rows(conn: &Connection, stable_ids: &[String]) -> Result<Vec<LocalRow>, LocalError> {
    let mut out = Vec::with_capacity(stable_ids.len());
    for id in stable_ids {
        if let Some(row) = read_row(conn, id)? {
            out.push(row);
        }
    }
    Ok(out)
}

/// Applies `writes` inside the caller's transaction. Each write is applied
/// only if the row still equals what the core read (`expected`, on the
/// model's fields); otherwise the app changed it meanwhile and it is
/// skipped. A current row that no longer decodes has changed too, and is
/// skipped.
fn write_rows(
    conn: &Connection,
    writes: &[RowWrite],
    now: &str,
    skipped: &mut Vec<String>,
) -> Result<(), LocalError> {
    for w in writes {
        let id = &w.row.stable_id;
        validate_stable_id(id).map_err(|e| LocalError::Invalid(e.to_string()))?;
        let current = match read_row(conn, id) {
            Ok(current) => current,
            Err(LocalError::Invalid(_)) => {
                skipped.push(id.clone());
                continue;
            }
            Err(e) => return Err(e),
        };
        if current.as_ref() != w.expected.as_ref() {
            skipped.push(id.clone());
            continue;
        }
        match current {
            None => insert_row(conn, &w.row, now)?,
            Some(cur) => {
                let modified_changed = cur.local_modified_at_ms != w.row.local_modified_at_ms;
                update_row(conn, &w.row, modified_changed, now)?;
            }
        }
        put_file_state(conn, &w.row)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Rows
// ---------------------------------------------------------------------------

/// The full row for `stable_id`, or `None`.
fn read_row(conn: &Connection, stable_id: &str) -> Result<Option<LocalRow>, LocalError> {
    let mut stmt = conn.prepare_cached(&format!("{ROW_SELECT} WHERE f.stable_id = ?1")).map_err(db_err)?;
    let mut rows = stmt.query([stable_id]).map_err(db_err)?;
    match rows.next().map_err(db_err)? {
        Some(r) => decode_row(r).map(Some),
        None => Ok(None),
    }
}

/// One [`ROW_SELECT`] row to a [`LocalRow`]. Errors name the row and column.
fn decode_row(r: &rusqlite::Row<'_>) -> Result<LocalRow, LocalError> {
    let mut v = Vec::with_capacity(ROW_COLUMNS.len());
    for i in 0..ROW_COLUMNS.len() {
        v.push(r.get_ref(i).map_err(db_err)?);
    }
    let stable_id = stable_id_of(v[0])?;
    let c = Cells { stable_id: &stable_id };
    let text = |i: usize| c.text(ROW_COLUMNS[i], v[i]);
    let text_or =
        |i: usize, default: &str| Ok::<_, LocalError>(text(i)?.unwrap_or_else(|| default.to_owned()));
    let int = |i: usize| c.int(ROW_COLUMNS[i], v[i]);
    let sync_status = c.status("sync_status", v[15])?;
    let id = text(1)?.unwrap_or_default();
    let id = ContentHash::parse(&id).map_err(|e| c.invalid("id", &e.to_string()))?;
    let sync_hash = match text(16)?.filter(|s| !s.is_empty()) {
        None => None,
        Some(h) => Some(ContentHash::parse(&h).map_err(|e| c.invalid("sync_hash", &e.to_string()))?),
    };
    let hlc = match text(20)?.filter(|s| !s.is_empty()) {
        None => None,
        Some(h) => Some(Hlc::parse(&h).map_err(|e| c.invalid("davsync_file_state.hlc", &e.to_string()))?),
    };
    let sync_meta = match text(22)?.filter(|s| !s.is_empty()) {
        None => None,
        Some(h) => Some(
            ContentHash::parse(&h).map_err(|e| c.invalid("davsync_file_state.sync_meta", &e.to_string()))?,
        ),
    };
    // A conflict record only counts while the row is in conflict: the app
    // (which does not know the side table) clears a conflict by editing the
    // row, which changes its status.
    let conflict = match text(21)?.filter(|_| sync_status == SyncStatus::Conflict) {
        None => None,
        Some(json) => Some(
            serde_json::from_str::<ConflictRecord>(&json)
                .map_err(|e| c.invalid("davsync_file_state.conflict", &e.to_string()))?,
        ),
    };
    Ok(LocalRow {
        id,
        meta: FileMeta {
            filename: text_or(2, "")?,
            doc_id: text_or(3, "")?,
            doc_id_type: text_or(4, "doi")?,
            file_type: text_or(5, "")?,
            mime_type: text(6)?,
            file_size: int(7)?,
            label: text(8)?,
            variant: text(9)?,
            version: int(10)?,
            is_gold_standard: c.flag("is_gold_standard", v[11])?,
            doc_collections: text_or(17, "[]")?,
            doc_metadata: text_or(18, "{}")?,
            file_metadata: text_or(19, "{}")?,
        },
        deleted: c.flag("deleted", v[12])?,
        sync_status,
        remote_version: int(14)?,
        sync_hash,
        sync_meta,
        local_modified_at_ms: timestamp_ms(v[13]),
        hlc,
        conflict,
        stable_id,
    })
}

fn stable_id_of(v: ValueRef<'_>) -> Result<String, LocalError> {
    match v {
        ValueRef::Text(t) => String::from_utf8(t.to_vec())
            .map_err(|_| LocalError::Invalid("a files row has a stable_id that is not UTF-8".to_owned())),
        ValueRef::Integer(i) => Ok(i.to_string()),
        other => Err(LocalError::Invalid(format!("a files row has stable_id {}", describe(other)))),
    }
}

/// Decoders for one row's cells; every error names the row.
struct Cells<'a> {
    stable_id: &'a str,
}

impl Cells<'_> {
    fn invalid(&self, column: &str, why: &str) -> LocalError {
        LocalError::Invalid(format!("files row {:?}: {column}: {why}", self.stable_id))
    }

    fn text(&self, column: &str, v: ValueRef<'_>) -> Result<Option<String>, LocalError> {
        match v {
            ValueRef::Null => Ok(None),
            ValueRef::Text(t) => {
                String::from_utf8(t.to_vec()).map(Some).map_err(|_| self.invalid(column, "not valid UTF-8"))
            }
            ValueRef::Integer(i) => Ok(Some(i.to_string())),
            ValueRef::Real(f) => Ok(Some(f.to_string())),
            ValueRef::Blob(_) => Err(self.invalid(column, "is a BLOB, expected text")),
        }
    }

    fn int(&self, column: &str, v: ValueRef<'_>) -> Result<Option<i64>, LocalError> {
        match v {
            ValueRef::Null => Ok(None),
            ValueRef::Integer(i) => Ok(Some(i)),
            ValueRef::Real(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(Some(f as i64)),
            ValueRef::Text(t) if std::str::from_utf8(t).is_ok_and(|s| s.trim().parse::<i64>().is_ok()) => {
                Ok(std::str::from_utf8(t).ok().and_then(|s| s.trim().parse().ok()))
            }
            other => Err(self.invalid(column, &format!("{} is not an integer", describe(other)))),
        }
    }

    /// A BOOLEAN column: integer != 0, or the text `true`/`false`; NULL is
    /// false, like the app.
    fn flag(&self, column: &str, v: ValueRef<'_>) -> Result<bool, LocalError> {
        match v {
            ValueRef::Null => Ok(false),
            ValueRef::Integer(i) => Ok(i != 0),
            ValueRef::Text(t) if t.eq_ignore_ascii_case(b"true") => Ok(true),
            ValueRef::Text(t) if t.eq_ignore_ascii_case(b"false") => Ok(false),
            other => Err(self.invalid(column, &format!("{} is not a boolean", describe(other)))),
        }
    }

    /// `sync_status`: one of the app's values, never guessed.
    fn status(&self, column: &str, v: ValueRef<'_>) -> Result<SyncStatus, LocalError> {
        let text = self.text(column, v)?;
        text.as_deref().and_then(SyncStatus::parse).ok_or_else(|| {
            let shown = text.map_or_else(|| "NULL".to_owned(), |s| format!("{s:?}"));
            self.invalid(
                column,
                &format!(
                    "unknown sync_status {shown} (expected synced, modified, pending_upload, \
                     pending_delete, deletion_synced or conflict)"
                ),
            )
        })
    }
}

/// A printable, bounded form of any SQLite value, for error messages.
fn describe(v: ValueRef<'_>) -> String {
    match v {
        ValueRef::Null => "NULL".to_owned(),
        ValueRef::Integer(i) => i.to_string(),
        ValueRef::Real(f) => f.to_string(),
        ValueRef::Text(t) => format!("{:?}", String::from_utf8_lossy(t).chars().take(80).collect::<String>()),
        ValueRef::Blob(b) => format!("<blob of {} bytes>", b.len()),
    }
}

/// The model's columns as parameters `?1..=?19` of [`INSERT_ROW`] and
/// [`UPDATE_ROW`].
fn model_values(row: &LocalRow) -> Vec<Value> {
    let text = |s: &str| Value::Text(s.to_owned());
    let opt_text = |s: &Option<String>| s.as_deref().map_or(Value::Null, text);
    let opt_int = |n: Option<i64>| n.map_or(Value::Null, Value::Integer);
    let m = &row.meta;
    vec![
        text(&row.stable_id),
        text(row.id.as_str()),
        text(&m.filename),
        text(&m.doc_id),
        text(&m.doc_id_type),
        text(&m.file_type),
        opt_text(&m.mime_type),
        opt_int(m.file_size),
        opt_text(&m.label),
        opt_text(&m.variant),
        opt_int(m.version),
        Value::Integer(i64::from(m.is_gold_standard)),
        Value::Integer(i64::from(row.deleted)),
        opt_int(row.remote_version),
        text(row.sync_status.as_str()),
        row.sync_hash.as_ref().map_or(Value::Null, |h| text(h.as_str())),
        text(&m.doc_collections),
        text(&m.doc_metadata),
        text(&m.file_metadata),
    ]
}

/// `local_modified_at` as davsync writes it: ISO-8601 UTC with milliseconds,
/// NULL for "unknown" (0).
fn modified_at_value(ms: i64) -> Value {
    if ms == 0 { Value::Null } else { Value::Text(iso8601_utc(ms)) }
}

fn insert_row(conn: &Connection, row: &LocalRow, now: &str) -> Result<(), LocalError> {
    let mut values = model_values(row);
    values.push(modified_at_value(row.local_modified_at_ms));
    values.push(Value::Text(now.to_owned()));
    conn.prepare_cached(INSERT_ROW).and_then(|mut s| s.execute(params_from_iter(values))).map_err(db_err)?;
    Ok(())
}

fn update_row(
    conn: &Connection,
    row: &LocalRow,
    modified_changed: bool,
    now: &str,
) -> Result<(), LocalError> {
    let mut values = model_values(row);
    values.push(modified_at_value(row.local_modified_at_ms));
    values.push(Value::Integer(i64::from(modified_changed)));
    values.push(Value::Text(now.to_owned()));
    let n = conn
        .prepare_cached(UPDATE_ROW)
        .and_then(|mut s| s.execute(params_from_iter(values)))
        .map_err(db_err)?;
    if n == 1 {
        Ok(())
    } else {
        Err(LocalError::Other(format!("updating files row {:?} changed {n} rows", row.stable_id)))
    }
}

fn put_file_state(conn: &Connection, row: &LocalRow) -> Result<(), LocalError> {
    let hlc = row.hlc.as_ref().map(Hlc::to_string);
    let conflict = match &row.conflict {
        None => None,
        Some(c) => {
            Some(serde_json::to_string(c).map_err(|e| LocalError::Other(format!("conflict record: {e}")))?)
        }
    };
    conn.prepare_cached(UPSERT_FILE_STATE)
        .and_then(|mut s| {
            s.execute(params![row.stable_id, hlc, conflict, row.sync_meta.as_ref().map(ContentHash::as_str)])
        })
        .map_err(db_err)?;
    Ok(())
}

/// Update, then insert if there was nothing to update: works whether or not
/// the app's `sync_metadata.key` carries a uniqueness constraint.
fn meta_set(conn: &Connection, key: &str, value: &str, now: &str) -> Result<(), LocalError> {
    let updated = conn
        .execute(
            "UPDATE sync_metadata SET value = ?2, updated_at = ?3 WHERE key = ?1",
            params![key, value, now],
        )
        .map_err(db_err)?;
    if updated == 0 {
        conn.execute(
            "INSERT INTO sync_metadata (key, value, updated_at) VALUES (?1, ?2, ?3)",
            params![key, value, now],
        )
        .map_err(db_err)?;
    }
    Ok(())
}

/// A stable_id nobody uses yet: 12 characters of `[a-z0-9]` from a SHA-256 of
/// the source path, the content hash, the time and an attempt counter.
fn free_stable_id(conn: &Connection, source: &Path, hash: &ContentHash) -> anyhow::Result<String> {
    const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    for attempt in 0u32..8 {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos();
        let mut h = Sha256::new();
        h.update(source.as_os_str().as_encoded_bytes());
        h.update(hash.as_str().as_bytes());
        h.update(nanos.to_le_bytes());
        h.update(attempt.to_le_bytes());
        let digest = h.finalize();
        let id: String = digest
            .iter()
            .take(STABLE_ID_GENERATED_LEN)
            .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
            .collect();
        if read_row(conn, &id)?.is_none() {
            return Ok(id);
        }
    }
    bail!("could not find an unused stable_id")
}

/// Creates what is missing of the schema, in one transaction, refusing an
/// app `files` table davsync cannot work with before touching anything.
fn create_schema(conn: &mut Connection) -> anyhow::Result<()> {
    // Nearly every open finds the schema complete: that takes reads only,
    // neither the write lock nor the DDL (a quarter of a start's SQLite time).
    if schema_is_complete(conn)? {
        return check_files_table(conn);
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(SCHEMA).context("creating the tables")?;
    check_files_table(&tx)?;
    upgrade_file_state(&tx)?;
    tx.execute_batch(INDEXES).context("creating the indexes")?;
    tx.commit()?;
    Ok(())
}

/// Adds the side-table columns later davsync versions use to a side table an
/// earlier version made (`sync_meta`: rows synced before it was recorded read
/// it as unknown).
fn upgrade_file_state(conn: &Connection) -> anyhow::Result<()> {
    if !file_state_has_sync_meta(conn)? {
        conn.execute_batch("ALTER TABLE davsync_file_state ADD COLUMN sync_meta TEXT")
            .context("adding davsync_file_state.sync_meta")?;
    }
    Ok(())
}

fn file_state_has_sync_meta(conn: &Connection) -> anyhow::Result<bool> {
    conn.query_row(
        "SELECT count(*) FROM pragma_table_info('davsync_file_state') WHERE name = 'sync_meta'",
        [],
        |r| r.get(0),
    )
    .context("reading the side table's columns")
}

/// Whether every table and index of [`SCHEMA`] and [`INDEXES`] exists, and
/// the side table has the columns [`upgrade_file_state`] adds.
fn schema_is_complete(conn: &Connection) -> anyhow::Result<bool> {
    let names: Vec<String> = [SCHEMA, INDEXES]
        .iter()
        .flat_map(|ddl| ddl.split("IF NOT EXISTS ").skip(1))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(|name| format!("'{name}'"))
        .collect();
    let sql = format!(
        "SELECT count(*) FROM sqlite_master WHERE type IN ('table', 'index') AND name IN ({})",
        names.join(", ")
    );
    let found: i64 = conn.query_row(&sql, [], |r| r.get(0)).context("reading the schema")?;
    Ok(usize::try_from(found) == Ok(names.len()) && file_state_has_sync_meta(conn)?)
}

/// Checks that an existing `files` table has every column davsync uses and is
/// keyed by `stable_id`.
fn check_files_table(conn: &Connection) -> anyhow::Result<()> {
    let mut stmt = conn.prepare("SELECT name, pk FROM pragma_table_info('files')")?;
    let cols = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?.to_ascii_lowercase(), r.get::<_, i64>(1)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(missing) = FILES_COLUMNS.iter().find(|c| !cols.iter().any(|(name, _)| name == *c)) {
        bail!("the files table has no column {missing}; davsync never adds columns to the app's table");
    }
    let keys: Vec<&str> = cols.iter().filter(|(_, pk)| *pk > 0).map(|(n, _)| n.as_str()).collect();
    if keys != ["stable_id"] {
        bail!("files must be keyed by stable_id (primary key found: {keys:?})");
    }
    Ok(())
}

/// A busy or read-only database as the typed [`LocalError`] (the app holds
/// its write lock, or the file cannot be written); anything else as it is.
fn typed_local(e: anyhow::Error) -> anyhow::Error {
    let code =
        e.chain().find_map(|c| c.downcast_ref::<rusqlite::Error>()).and_then(|e| e.sqlite_error_code());
    match code {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => anyhow::Error::new(LocalError::Busy),
        Some(ErrorCode::ReadOnly) => anyhow::Error::new(LocalError::ReadOnly),
        _ => e,
    }
}

/// Maps SQLite failures to what the core acts on.
fn db_err(e: rusqlite::Error) -> LocalError {
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => LocalError::Busy,
        Some(ErrorCode::ReadOnly) => LocalError::ReadOnly,
        _ => LocalError::Other(e.to_string()),
    }
}

fn now_ms() -> i64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

// ---------------------------------------------------------------------------
// local_modified_at
// ---------------------------------------------------------------------------

/// `local_modified_at` as the app stores it, in ms since the Unix epoch;
/// 0 when NULL or unparsable.
fn timestamp_ms(v: ValueRef<'_>) -> i64 {
    match v {
        ValueRef::Integer(ms) => ms,
        ValueRef::Real(ms) if ms.is_finite() => ms as i64,
        ValueRef::Text(t) => std::str::from_utf8(t).ok().and_then(parse_timestamp_ms).unwrap_or(0),
        _ => 0,
    }
}

/// Parses ISO-8601 (`2024-05-01T12:00:00Z`, optional fraction, `Z` or
/// `±HH:MM` offset; no offset means UTC), SQLite's `CURRENT_TIMESTAMP` form
/// (`2024-05-01 12:00:00`, UTC), or an integer of ms since the epoch.
fn parse_timestamp_ms(s: &str) -> Option<i64> {
    let s = s.trim();
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    if digits(s.strip_prefix('-').unwrap_or(s)) {
        return s.parse().ok();
    }
    let num = |from: usize, len: usize| -> Option<i64> {
        let part = s.get(from..from + len)?;
        if digits(part) { part.parse().ok() } else { None }
    };
    let at = |i: usize| s.as_bytes().get(i).copied();
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    if at(4) != Some(b'-') || at(7) != Some(b'-') || !(1..=12).contains(&month) || day < 1 {
        return None;
    }
    if day > days_in_month(year, month) {
        return None;
    }
    let mut ms = days_from_civil(year, month, day) * 86_400_000;
    if s.len() == 10 {
        return Some(ms);
    }
    if !matches!(at(10), Some(b'T' | b't' | b' ')) || at(13) != Some(b':') {
        return None;
    }
    let (hour, minute) = (num(11, 2)?, num(14, 2)?);
    let mut i = 16;
    let mut second = 0;
    if at(i) == Some(b':') {
        second = num(i + 1, 2)?;
        i += 3;
    }
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    ms += ((hour * 60 + minute) * 60 + second) * 1000;
    if matches!(at(i), Some(b'.' | b',')) {
        let frac: String = s[i + 1..].chars().take_while(char::is_ascii_digit).collect();
        if frac.is_empty() {
            return None;
        }
        i += 1 + frac.len();
        let milli: String = frac.chars().chain("000".chars()).take(3).collect();
        ms += milli.parse::<i64>().ok()?;
    }
    let zone = s[i..].trim_start();
    let offset_minutes = match zone {
        "" | "Z" | "z" => 0,
        _ => {
            let sign = match zone.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let rest = zone[1..].replace(':', "");
            if !digits(&rest) || !(rest.len() == 2 || rest.len() == 4) {
                return None;
            }
            let hours: i64 = rest[..2].parse().ok()?;
            let minutes: i64 = if rest.len() == 4 { rest[2..].parse().ok()? } else { 0 };
            sign * (hours * 60 + minutes)
        }
    };
    Some(ms - offset_minutes * 60_000)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// algorithm; the inverse of the core's `civil_from_days`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use davsync_core::model::ConflictKind;
    use davsync_core::ports::RowWrite;

    use super::*;

    /// The app's schema exactly as SPEC §2 lists it, plus a column of the app's own.
    const APP_SCHEMA: &str = "CREATE TABLE files (
        stable_id TEXT PRIMARY KEY, id TEXT, filename TEXT, doc_id TEXT, doc_id_type TEXT,
        file_type TEXT, mime_type TEXT, file_size INTEGER, label TEXT, variant TEXT, version INTEGER,
        is_gold_standard BOOLEAN DEFAULT 0, deleted BOOLEAN DEFAULT 0, local_modified_at TIMESTAMP,
        remote_version INTEGER, sync_status TEXT DEFAULT 'synced', sync_hash TEXT,
        created_at TIMESTAMP, updated_at TIMESTAMP, doc_collections TEXT, doc_metadata TEXT,
        file_metadata TEXT, app_note TEXT);
        CREATE TABLE sync_metadata (key TEXT PRIMARY KEY, value TEXT, updated_at TIMESTAMP);";

    struct Fixture {
        tmp: tempfile::TempDir,
        db: PathBuf,
        store: SqliteStore,
    }

    fn fixture() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("app.db");
        let store = SqliteStore::open(&db, &tmp.path().join("data")).unwrap();
        Fixture { tmp, db, store }
    }

    /// A fixture whose database the "app" created first, with `app_note`.
    fn app_fixture(setup: &str) -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("app.db");
        let app = Connection::open(&db).unwrap();
        app.execute_batch(APP_SCHEMA).unwrap();
        app.execute_batch(setup).unwrap();
        drop(app);
        let store = SqliteStore::open(&db, &tmp.path().join("data")).unwrap();
        Fixture { tmp, db, store }
    }

    fn hash(s: &str) -> ContentHash {
        ContentHash::of(s.as_bytes())
    }

    fn meta() -> FileMeta {
        FileMeta {
            filename: "paper.pdf".into(),
            doc_id: "10.1/x".into(),
            doc_id_type: "doi".into(),
            file_type: "pdf".into(),
            doc_collections: "[]".into(),
            doc_metadata: "{}".into(),
            file_metadata: "{}".into(),
            ..FileMeta::default()
        }
    }

    fn row(stable_id: &str, content: &str) -> LocalRow {
        LocalRow {
            stable_id: stable_id.into(),
            id: hash(content),
            meta: meta(),
            deleted: false,
            sync_status: SyncStatus::Synced,
            remote_version: Some(1),
            sync_hash: Some(hash(content)),
            sync_meta: None,
            local_modified_at_ms: 1_700_000_000_123,
            hlc: None,
            conflict: None,
        }
    }

    fn insert(store: &mut SqliteStore, r: &LocalRow) {
        let commit = LocalCommit { writes: vec![RowWrite { row: r.clone(), expected: None }], meta: vec![] };
        assert_eq!(store.apply(&commit).unwrap(), ApplyOutcome::default());
    }

    fn get(store: &mut SqliteStore, id: &str) -> Option<LocalRow> {
        store.rows(&[id.to_owned()]).unwrap().pop()
    }

    fn source(f: &Fixture, name: &str, bytes: &[u8]) -> PathBuf {
        let p = f.tmp.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    #[test]
    fn schema_is_created_on_a_fresh_file() {
        let mut f = fixture();
        let tables: Vec<String> = f
            .store
            .conn
            .prepare("SELECT name FROM sqlite_master WHERE type IN ('table', 'index') AND name NOT LIKE 'sqlite_%' ORDER BY name")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            tables,
            [
                "davsync_file_state",
                "files",
                "idx_files_id",
                "idx_files_sync_base",
                "idx_files_sync_status",
                "sync_metadata"
            ]
        );
        let mode: String = f.store.conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
        assert_eq!(mode, "wal");
        assert_eq!(f.store.count_unsynced().unwrap(), 0);
        assert_eq!(f.store.row_bases().unwrap(), vec![]);
        assert_eq!(f.store.meta_get("instance_id").unwrap(), None);
        drop(f.store);
        // Opening again is harmless.
        SqliteStore::open(&f.db, f.tmp.path()).unwrap();
    }

    #[test]
    fn a_database_missing_a_column_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("old.db");
        Connection::open(&db)
            .unwrap()
            .execute_batch("CREATE TABLE files (stable_id TEXT PRIMARY KEY, id TEXT)")
            .unwrap();
        let err = SqliteStore::open(&db, tmp.path()).unwrap_err();
        assert!(format!("{err:#}").contains("no column filename"), "{err:#}");
        let tables: i64 = Connection::open(&db)
            .unwrap()
            .query_row("SELECT COUNT(*) FROM sqlite_master", [], |r| r.get(0))
            .unwrap();
        assert_eq!(tables, 2, "nothing created: only files and its autoindex");
    }

    #[test]
    fn the_apps_extra_column_survives_an_apply() {
        let h = hash("a");
        let mut f = app_fixture(&format!(
            "INSERT INTO files (stable_id, id, filename, doc_id, file_type, sync_status, app_note, local_modified_at)
             VALUES ('a', '{h}', 'a.pdf', 'd', 'pdf', 'modified', 'keep me', '2024-05-01 12:00:00')"
        ));
        let before = get(&mut f.store, "a").unwrap();
        assert_eq!(before.meta.doc_id_type, "doi", "NULL doc_id_type reads as doi");
        assert_eq!((before.meta.doc_collections.as_str(), before.meta.file_metadata.as_str()), ("[]", "{}"));
        let after = LocalRow {
            sync_status: SyncStatus::Synced,
            remote_version: Some(3),
            sync_hash: Some(h),
            meta: FileMeta { label: Some("new".into()), ..before.meta.clone() },
            ..before.clone()
        };
        let commit = LocalCommit {
            writes: vec![RowWrite { row: after.clone(), expected: Some(before) }],
            meta: vec![],
        };
        assert_eq!(f.store.apply(&commit).unwrap().skipped, Vec::<String>::new());
        assert_eq!(get(&mut f.store, "a").unwrap(), after);
        let (note, modified): (String, String) = f
            .store
            .conn
            .query_row("SELECT app_note, local_modified_at FROM files WHERE stable_id = 'a'", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!(note, "keep me");
        assert_eq!(modified, "2024-05-01 12:00:00", "an unchanged local_modified_at keeps the app's form");
    }

    #[test]
    fn unknown_sync_status_is_invalid_and_names_the_row() {
        let h = hash("a");
        let mut f = app_fixture(&format!(
            "INSERT INTO files (stable_id, id, file_type, sync_status) VALUES ('row-7', '{h}', 'pdf', 'uploading')"
        ));
        for err in [f.store.rows(&["row-7".into()]).unwrap_err(), f.store.row_bases().unwrap_err()] {
            let LocalError::Invalid(msg) = err else { panic!("{err:?}") };
            assert!(msg.contains("row-7") && msg.contains("uploading"), "{msg}");
        }
        let mut f =
            app_fixture("INSERT INTO files (stable_id, id, file_type) VALUES ('row-8', 'not-a-hash', 'pdf')");
        let LocalError::Invalid(msg) = f.store.rows(&["row-8".into()]).unwrap_err() else { panic!() };
        assert!(msg.contains("row-8") && msg.contains("id"), "{msg}");
    }

    #[test]
    fn local_modified_at_parses_in_each_format() {
        let h = hash("a");
        let values = [
            ("iso", "'2024-05-01T12:00:00Z'", 1_714_564_800_000),
            ("iso-frac", "'2024-05-01T12:00:00.250+00:00'", 1_714_564_800_250),
            ("iso-offset", "'2024-05-01T14:00:00+02:00'", 1_714_564_800_000),
            ("sqlite", "'2024-05-01 12:00:00'", 1_714_564_800_000),
            ("ms", "1714564800123", 1_714_564_800_123),
            ("ms-text", "'1714564800123'", 1_714_564_800_123),
            ("null", "NULL", 0),
            ("garbage", "'yesterday'", 0),
            ("bad-date", "'2024-02-30 00:00:00'", 0),
        ];
        let inserts: String = values
            .iter()
            .map(|(id, v, _)| {
                format!("INSERT INTO files (stable_id, id, file_type, local_modified_at) VALUES ('{id}', '{h}', 'pdf', {v});")
            })
            .collect();
        let mut f = app_fixture(&inserts);
        for (id, _, want) in values {
            assert_eq!(get(&mut f.store, id).unwrap().local_modified_at_ms, want, "{id}");
        }
        assert_eq!(parse_timestamp_ms(&iso8601_utc(951_782_400_123)), Some(951_782_400_123));
        assert_eq!(parse_timestamp_ms("1970-01-01"), Some(0));
    }

    #[test]
    fn apply_skips_a_row_the_app_changed_and_applies_the_rest() {
        let mut f = fixture();
        insert(&mut f.store, &row("a", "a"));
        insert(&mut f.store, &row("b", "b"));
        let read = f.store.rows(&["a".into(), "b".into(), "zz".into()]).unwrap();
        assert_eq!(read.len(), 2);
        // The app edits `a` while the sync runs.
        let app = Connection::open(&f.db).unwrap();
        app.execute(
            "UPDATE files SET label = 'app edit', sync_status = 'modified' WHERE stable_id = 'a'",
            [],
        )
        .unwrap();
        let writes = read
            .iter()
            .map(|r| RowWrite {
                row: LocalRow { remote_version: Some(2), ..r.clone() },
                expected: Some(r.clone()),
            })
            .chain([
                RowWrite { row: row("new", "n"), expected: None },
                RowWrite { row: row("b", "x"), expected: None },
            ])
            .collect();
        let commit = LocalCommit { writes, meta: vec![("remote_version".into(), "2".into())] };
        let outcome = f.store.apply(&commit).unwrap();
        // `b` is applied by its first write; its second (expecting no row) is skipped.
        assert_eq!(outcome.skipped, ["a", "b"]);
        let a = get(&mut f.store, "a").unwrap();
        assert_eq!((a.meta.label.as_deref(), a.remote_version), (Some("app edit"), Some(1)));
        assert_eq!(get(&mut f.store, "b").unwrap().remote_version, Some(2));
        assert_eq!(get(&mut f.store, "new").unwrap(), row("new", "n"));
        assert_eq!(f.store.meta_get("remote_version").unwrap().as_deref(), Some("2"));
    }

    #[test]
    fn apply_is_all_or_nothing() {
        let mut f = fixture();
        insert(&mut f.store, &row("a", "a"));
        let a = get(&mut f.store, "a").unwrap();
        let commit = LocalCommit {
            writes: vec![
                RowWrite {
                    row: LocalRow { remote_version: Some(9), ..a.clone() },
                    expected: Some(a.clone()),
                },
                RowWrite { row: row("fresh", "f"), expected: None },
                RowWrite { row: row("bad/id", "x"), expected: None },
            ],
            meta: vec![("k".into(), "v".into())],
        };
        assert!(matches!(f.store.apply(&commit), Err(LocalError::Invalid(_))));
        assert_eq!(get(&mut f.store, "a").unwrap(), a);
        assert_eq!(get(&mut f.store, "fresh"), None);
        assert_eq!(f.store.meta_get("k").unwrap(), None);
    }

    #[test]
    fn a_commit_in_parts_lands_whole_or_not_at_all() {
        let mut f = fixture();
        insert(&mut f.store, &row("a", "a"));
        let a = get(&mut f.store, "a").unwrap();
        let synced =
            RowWrite { row: LocalRow { remote_version: Some(9), ..a.clone() }, expected: Some(a.clone()) };
        let fresh = RowWrite { row: row("fresh", "f"), expected: None };
        let stale = RowWrite { row: row("gone", "g"), expected: Some(row("gone", "g")) };
        // Finished: every part lands, the stale write is reported.
        f.store.commit_begin().unwrap();
        f.store.commit_writes(std::slice::from_ref(&synced)).unwrap();
        f.store.commit_writes(&[fresh.clone(), stale]).unwrap();
        let outcome = f.store.commit_finish(&[("k".into(), "v".into())]).unwrap();
        assert_eq!(outcome.skipped, vec!["gone".to_owned()]);
        assert_eq!(get(&mut f.store, "a").unwrap().remote_version, Some(9));
        assert!(get(&mut f.store, "fresh").is_some());
        assert_eq!(f.store.meta_get("k").unwrap().as_deref(), Some("v"));
        // Reading rows inside it leaves it open (and sees its writes).
        let b = row("b", "b");
        f.store.commit_begin().unwrap();
        f.store.commit_writes(&[RowWrite { row: b.clone(), expected: None }]).unwrap();
        assert!(get(&mut f.store, "b").is_some());
        // Not finished: another call rolls the parts back.
        assert_eq!(f.store.meta_get("k").unwrap().as_deref(), Some("v"));
        assert_eq!(get(&mut f.store, "b"), None);
        assert!(f.store.commit_finish(&[]).is_err(), "the open commit was rolled back");
        // A failing part rolls back the parts before it.
        f.store.commit_begin().unwrap();
        f.store.commit_writes(&[RowWrite { row: b, expected: None }]).unwrap();
        let bad = RowWrite { row: row("bad/id", "x"), expected: None };
        assert!(matches!(f.store.commit_writes(&[bad]), Err(LocalError::Invalid(_))));
        assert!(f.store.commit_finish(&[("k".into(), "w".into())]).is_err());
        assert_eq!(get(&mut f.store, "b"), None);
        assert_eq!(f.store.meta_get("k").unwrap().as_deref(), Some("v"));
        // The app can write again: no transaction was left open.
        insert(&mut f.store, &row("c", "c"));
    }

    #[test]
    fn a_held_write_lock_gives_busy_within_the_timeout() {
        let mut f = fixture();
        let app = Connection::open(&f.db).unwrap();
        app.execute_batch("BEGIN IMMEDIATE; INSERT INTO sync_metadata (key, value) VALUES ('app', 'x');")
            .unwrap();
        f.store.set_busy_timeout(Duration::from_millis(100)).unwrap();
        let started = Instant::now();
        let commit = LocalCommit { writes: vec![], meta: vec![("k".into(), "v".into())] };
        assert_eq!(f.store.apply(&commit), Err(LocalError::Busy));
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
        // WAL: readers are not blocked by the writer.
        assert_eq!(f.store.meta_get("app").unwrap(), None);
        app.execute_batch("COMMIT").unwrap();
        f.store.apply(&commit).unwrap();
        assert_eq!(f.store.meta_get("k").unwrap().as_deref(), Some("v"));
    }

    #[test]
    fn a_read_only_database_gives_read_only() {
        let mut f = fixture();
        drop(f.store);
        // Leave WAL mode so a read-only connection needs nothing but the file.
        let conn = Connection::open(&f.db).unwrap();
        conn.pragma_update(None, "journal_mode", "DELETE").unwrap();
        drop(conn);
        let conn = Connection::open_with_flags(&f.db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        f.store = SqliteStore {
            conn,
            data_dir: f.tmp.path().into(),
            files_dir: f.tmp.path().join("files"),
            open_commit: None,
        };
        let commit = LocalCommit { writes: vec![], meta: vec![("k".into(), "v".into())] };
        assert_eq!(f.store.apply(&commit), Err(LocalError::ReadOnly));
        assert_eq!(f.store.meta_get("k").unwrap(), None);
    }

    #[test]
    fn count_unsynced_counts_pending_changes_only() {
        let mut f = fixture();
        let statuses = [
            ("a", SyncStatus::Synced),
            ("b", SyncStatus::Modified),
            ("c", SyncStatus::PendingDelete),
            ("d", SyncStatus::DeletionSynced),
            ("e", SyncStatus::Conflict),
        ];
        for (id, s) in statuses {
            insert(&mut f.store, &LocalRow { sync_status: s, ..row(id, id) });
        }
        let app = Connection::open(&f.db).unwrap();
        app.execute("UPDATE files SET sync_status = 'pending_upload' WHERE stable_id = 'a'", []).unwrap();
        assert_eq!(f.store.count_unsynced().unwrap(), 3);
        let bases = f.store.row_bases().unwrap();
        assert_eq!(
            bases.iter().map(|b| b.sync_status).collect::<Vec<_>>(),
            [
                SyncStatus::Modified,
                SyncStatus::Modified,
                SyncStatus::PendingDelete,
                SyncStatus::DeletionSynced,
                SyncStatus::Conflict
            ]
        );
        let plan: String = app
            .query_row(
                "EXPLAIN QUERY PLAN SELECT COUNT(*) FROM files WHERE sync_status IN ('modified')",
                [],
                |r| r.get(3),
            )
            .unwrap();
        assert!(plan.contains("idx_files_sync_status"), "{plan}");
    }

    #[test]
    fn side_table_round_trips_hlc_conflict_and_metadata_base() {
        let mut f = fixture();
        let conflict = ConflictRecord {
            kind: ConflictKind::BothModified,
            remote_hash: hash("r"),
            remote_version: 4,
            remote_deleted: false,
            remote_updated_at: "2024-05-01T12:00:00.000Z".into(),
            base_version: Some(1),
            base_hash: Some(hash("a")),
        };
        let r = LocalRow {
            sync_status: SyncStatus::Conflict,
            hlc: Some(Hlc { physical_ms: 1_700_000_000_000, counter: 2, instance: "i1".into() }),
            sync_meta: Some(meta().digest()),
            conflict: Some(conflict),
            ..row("a", "a")
        };
        insert(&mut f.store, &r);
        assert_eq!(get(&mut f.store, "a").unwrap(), r);
        assert_eq!(f.store.live_rows_with_content(&hash("a")).unwrap(), 1);
        // The app resolves by editing the row; the stale record no longer shows.
        let app = Connection::open(&f.db).unwrap();
        app.execute("UPDATE files SET sync_status = 'modified' WHERE stable_id = 'a'", []).unwrap();
        let now = get(&mut f.store, "a").unwrap();
        assert_eq!((now.conflict, now.hlc, now.sync_meta), (None, r.hlc, r.sync_meta));
    }

    #[test]
    fn a_side_table_from_an_earlier_version_gains_the_metadata_base_column() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("app.db");
        {
            let old = Connection::open(&db).unwrap();
            old.execute_batch(&SCHEMA.replace(", sync_meta TEXT", "")).unwrap();
            old.execute("INSERT INTO davsync_file_state (stable_id, hlc) VALUES ('a', NULL)", []).unwrap();
        }
        let mut store = SqliteStore::open(&db, dir.path()).unwrap();
        insert(&mut store, &LocalRow { sync_meta: Some(meta().digest()), ..row("b", "b") });
        assert_eq!(get(&mut store, "b").unwrap().sync_meta, Some(meta().digest()));
        // Opening again finds the column and leaves it be.
        drop(store);
        SqliteStore::open(&db, dir.path()).unwrap();
    }

    #[test]
    fn app_operations_mark_rows_like_the_app() {
        let mut f = fixture();
        let src = source(&f, "paper.pdf", b"%PDF-1");
        let added = f.store.add_file(&src, meta(), None).unwrap();
        assert_eq!(added.stable_id.len(), 12);
        assert!(added.stable_id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
        assert_eq!(
            (added.sync_status, added.meta.file_size, added.id.clone()),
            (SyncStatus::Modified, Some(6), hash("%PDF-1"))
        );
        let blob = added.blob().unwrap();
        let blob_path = local_blob_path(f.store.files_dir(), &blob);
        assert_eq!(std::fs::read(&blob_path).unwrap(), b"%PDF-1");
        assert_eq!(get(&mut f.store, &added.stable_id).unwrap(), added);
        assert!(
            f.store.add_file(&src, meta(), Some(&added.stable_id)).is_err(),
            "stable ids are never reused"
        );
        let twin = f.store.add_file(&src, meta(), Some("twin")).unwrap();
        assert_eq!(f.store.live_rows_with_content(&added.id).unwrap(), 2);
        assert_eq!(f.store.count_unsynced().unwrap(), 2);

        let new_src = source(&f, "v2.pdf", b"%PDF-2!");
        let replaced = f.store.replace_content("twin", &new_src).unwrap();
        assert_eq!((replaced.id.clone(), replaced.meta.file_size), (hash("%PDF-2!"), Some(7)));
        assert!(blob_path.exists(), "the old blob stays");

        let labelled = f.store.set_meta("twin", |m| m.label = Some("gold".into())).unwrap();
        assert_eq!(
            (labelled.meta.label.as_deref(), labelled.sync_status),
            (Some("gold"), SyncStatus::Modified)
        );
        assert!(f.store.set_meta("twin", |m| m.file_type = "tei".into()).is_err());
        assert!(f.store.set_meta("twin", |m| m.doc_metadata = "[]".into()).is_err());
        assert!(f.store.set_meta("nope", |_| {}).is_err());

        // Shared content stays while another live row uses it.
        let twin2 = f.store.add_file(&src, meta(), Some("twin2")).unwrap();
        let gone = f.store.delete(&added.stable_id).unwrap();
        assert_eq!((gone.deleted, gone.sync_status), (true, SyncStatus::PendingDelete));
        assert!(blob_path.exists());
        f.store.delete(&twin2.stable_id).unwrap();
        assert!(!blob_path.exists());
        assert!(f.store.delete(&added.stable_id).is_err(), "already deleted");
        assert!(f.store.set_meta(&added.stable_id, |_| {}).is_err(), "deleted rows are not edited");
        assert!(f.store.replace_content(&added.stable_id, &new_src).is_err());

        let listed = f.store.list().unwrap();
        let mut ids = vec![added.stable_id.clone(), twin.stable_id.clone(), twin2.stable_id.clone()];
        ids.sort();
        assert_eq!(listed.iter().map(|r| r.stable_id.clone()).collect::<Vec<_>>(), ids);
        assert_eq!(f.store.count_unsynced().unwrap(), 3);
        assert!(listed.iter().all(|r| r.local_modified_at_ms > 1_700_000_000_000));
    }

    #[test]
    fn an_app_edit_clears_the_conflict_record() {
        let mut f = fixture();
        let src = source(&f, "a.pdf", b"a");
        let added = f.store.add_file(&src, meta(), Some("c1")).unwrap();
        let conflicted = LocalRow {
            sync_status: SyncStatus::Conflict,
            conflict: Some(ConflictRecord {
                kind: ConflictKind::ModifiedLocallyDeletedRemotely,
                remote_hash: added.id.clone(),
                remote_version: 2,
                remote_deleted: true,
                remote_updated_at: String::new(),
                base_version: None,
                base_hash: None,
            }),
            ..added.clone()
        };
        let commit = LocalCommit {
            writes: vec![RowWrite { row: conflicted.clone(), expected: Some(added) }],
            meta: vec![],
        };
        f.store.apply(&commit).unwrap();
        assert_eq!(get(&mut f.store, "c1").unwrap(), conflicted);
        let edited = f.store.set_meta("c1", |m| m.label = Some("x".into())).unwrap();
        assert_eq!(edited.conflict, None);
        let stored: Option<String> = f
            .store
            .conn
            .query_row("SELECT conflict FROM davsync_file_state WHERE stable_id = 'c1'", [], |r| r.get(0))
            .unwrap();
        assert_eq!(stored, None);
    }

    #[test]
    fn rows_handles_many_ids() {
        let mut f = fixture();
        let writes =
            (0..2000).map(|i| RowWrite { row: row(&format!("r{i:05}"), "c"), expected: None }).collect();
        f.store.apply(&LocalCommit { writes, meta: vec![] }).unwrap();
        let ids: Vec<String> = (0..4000).rev().map(|i| format!("r{i:05}")).collect();
        let got = f.store.rows(&ids).unwrap();
        assert_eq!(got.len(), 2000);
        assert_eq!(got[0].stable_id, "r01999", "in the order asked");
        assert_eq!(f.store.live_rows_with_content(&hash("c")).unwrap(), 2000);
    }
}
