//! The shared remote `metadata.db`, handled entirely in memory as bytes.
//!
//! The adapter downloads the file and hands the bytes in; the core opens them
//! in an in-memory SQLite connection, reads and merges, and hands bytes back
//! for upload. Every byte is untrusted: another (buggy) instance or a hostile
//! server may have written it. So [`RemoteDb::from_bytes`] checks the header,
//! SQLite's own integrity check, the schema (no triggers or views that could
//! turn our upserts into something else) and the commit counters, and every
//! row is validated when it is read.

use std::borrow::Borrow;
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use rusqlite::config::DbConfig;
use rusqlite::types::{Value, ValueRef};
use rusqlite::{Connection, MAIN_DB, OptionalExtension, Statement, params, params_from_iter};

use crate::hlc::Hlc;
use crate::model::{ContentHash, FileMeta, InvalidValue, RemoteRow, validate_stable_id};

/// The remote schema (SPEC §2): the seed's columns, keyed by `stable_id`, plus `hlc`.
const SCHEMA: &str = "
CREATE TABLE file_metadata (
  stable_id TEXT PRIMARY KEY NOT NULL, id TEXT NOT NULL, filename TEXT NOT NULL, doc_id TEXT NOT NULL,
  doc_id_type TEXT DEFAULT 'doi', file_type TEXT NOT NULL, mime_type TEXT, file_size INTEGER,
  label TEXT, variant TEXT, version INTEGER DEFAULT 1, is_gold_standard BOOLEAN DEFAULT 0,
  doc_collections TEXT, doc_metadata TEXT, file_metadata TEXT, deleted BOOLEAN DEFAULT 0,
  remote_version INTEGER, updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP, hlc TEXT NOT NULL);
CREATE INDEX idx_file_metadata_id ON file_metadata(id);
CREATE INDEX idx_doc_id ON file_metadata(doc_id);
CREATE INDEX idx_deleted ON file_metadata(deleted) WHERE deleted = 1;
CREATE INDEX idx_remote_version ON file_metadata(remote_version);
CREATE TABLE sync_metadata (key TEXT PRIMARY KEY, value TEXT, updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP);
";

/// The `file_metadata` columns the core reads and writes, in the order
/// [`decode`] expects them. Other columns are left alone by upserts.
const COLUMNS: [&str; 19] = [
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
    "doc_collections",
    "doc_metadata",
    "file_metadata",
    "deleted",
    "remote_version",
    "updated_at",
    "hlc",
];

const SYNC_COLUMNS: [&str; 3] = ["key", "value", "updated_at"];

/// Ids per `IN (...)` query in [`RemoteDb::rows`]; well under every SQLite
/// build's bound-parameter limit.
const CHUNK: usize = 500;

/// Up to this many ids, [`RemoteDb::rows`] looks each one up.
const FEW_IDS: usize = 16;

/// A failure to open, read or update the remote `metadata.db`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RemoteDbError {
    /// Too short, or the header is not `SQLite format 3\0`.
    #[error("metadata.db is not a SQLite database")]
    NotSqlite,
    /// SQLite refused the bytes, or its integrity check failed (e.g. a truncated upload).
    #[error("metadata.db is corrupt: {0}")]
    Corrupt(String),
    /// A valid SQLite database, but not a davsync remote this version understands.
    #[error("metadata.db has the wrong schema: {0}")]
    WrongSchema(String),
    /// A row failed validation; the message names the row and the field.
    #[error("metadata.db row {stable_id:?} is invalid: {source}")]
    InvalidRow {
        /// The row's `stable_id` (or a description of it when it is not text).
        stable_id: String,
        /// What is wrong, naming the field.
        source: InvalidValue,
    },
    /// Any other SQLite error while operating on a valid database.
    #[error("metadata.db: {0}")]
    Sqlite(String),
}

fn sql_err(e: rusqlite::Error) -> RemoteDbError {
    RemoteDbError::Sqlite(e.to_string())
}

fn corrupt(e: rusqlite::Error) -> RemoteDbError {
    RemoteDbError::Corrupt(e.to_string())
}

/// An in-memory connection for a remote database, set up before anything
/// reads its (untrusted) schema: the one a dropped [`RemoteDb`] left idle on
/// this thread ([`Pooled`]), or a new one.
fn open_connection() -> Result<Connection, RemoteDbError> {
    if let Some(conn) = IDLE.with_borrow_mut(Vec::pop) {
        return Ok(conn);
    }
    let conn = Connection::open_in_memory().map_err(sql_err)?;
    // Functions in a hostile schema (defaults, indexes, CHECKs) may then only
    // be innocuous ones. (`PRAGMA trusted_schema = OFF`, without parsing SQL.)
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_TRUSTED_SCHEMA, false).map_err(sql_err)?;
    Ok(conn)
}

/// A new remote's database: the empty schema, in a resizable buffer with
/// `room` spare bytes, and its counters (version 0, `epoch`, the current
/// schema version).
fn new_database(epoch: &str, room: usize) -> Result<Pooled, RemoteDbError> {
    let mut conn = open_connection()?;
    // The empty schema (a few pages) is built in memory once, then copied
    // into a resizable buffer that every later write grows.
    static EMPTY: OnceLock<Vec<u8>> = OnceLock::new();
    let empty = match EMPTY.get() {
        Some(empty) => empty,
        None => {
            let mut scratch = Connection::open_in_memory().map_err(sql_err)?;
            scratch.execute_batch(SCHEMA).map_err(sql_err)?;
            let empty = scratch.serialize(MAIN_DB).map_err(sql_err)?.to_vec();
            EMPTY.get_or_init(|| empty)
        }
    };
    deserialize_with_room(&mut conn, &[empty], room).map_err(sql_err)?;
    // updated_at is NULL rather than CURRENT_TIMESTAMP: the core has no
    // clock here, and SQLite's own would make the bytes nondeterministic.
    conn.execute(
        "INSERT INTO sync_metadata (key, value, updated_at)
         VALUES ('version', '0', NULL), ('epoch', ?1, NULL), ('schema_version', ?2, NULL)",
        params![epoch, RemoteDb::SCHEMA_VERSION.to_string()],
    )
    .map_err(sql_err)?;
    Ok(Pooled::new(conn, empty.len().saturating_add(room)))
}

thread_local! {
    /// The connections of the last small [`RemoteDb`]s this thread dropped.
    static IDLE: RefCell<Vec<Connection>> = const { RefCell::new(Vec::new()) };
}

/// A [`RemoteDb`] whose buffer holds at most this many bytes leaves its
/// connection idle for the next one ([`Pooled`]); a larger one frees it.
const IDLE_BYTES_MAX: usize = 1 << 20;

/// At most this many idle connections per thread.
const IDLE_MAX: usize = 4;

/// A [`RemoteDb`]'s connection, left idle on its thread when the database is
/// dropped, if small, for the next one to use.
///
/// Setting up a connection is about a fifth of what opening a small remote
/// costs: SQLite registers its built-in extensions, and the first
/// `sqlite3_deserialize` (an `ATTACH`) loads the schema of the empty
/// database it then replaces. A reused one has neither left to do.
/// Deserializing replaces its database, schema and per-database settings
/// included; the connection's own settings (`trusted_schema` off) stay; its
/// cached statements are dropped before it is kept. Only a connection at
/// rest is kept (no open transaction), and only one whose database passed
/// [`RemoteDb::from_bytes`]' checks or is a new remote ([`new_database`]):
/// a refused database's connection is dropped with the error.
#[derive(Debug)]
struct Pooled {
    conn: Option<Connection>,
    /// The bytes its buffer was last given ([`deserialize_with_room`]'s
    /// length plus room); SQLite grows it to at most twice what it needs.
    given: usize,
}

impl Pooled {
    fn new(conn: Connection, given: usize) -> Pooled {
        Pooled { conn: Some(conn), given }
    }
}

impl std::ops::Deref for Pooled {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn.as_ref().expect("a pooled connection is taken only when dropped")
    }
}

impl std::ops::DerefMut for Pooled {
    fn deref_mut(&mut self) -> &mut Connection {
        self.conn.as_mut().expect("a pooled connection is taken only when dropped")
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.take() else { return };
        let small = self.given <= IDLE_BYTES_MAX
            && conn.serialize(MAIN_DB).is_ok_and(|bytes| bytes.len() <= IDLE_BYTES_MAX);
        if small && conn.is_autocommit() {
            conn.flush_prepared_statement_cache();
            // (Not kept when the thread is exiting: the list is gone then.)
            let _ = IDLE.try_with(|idle| {
                let mut idle = idle.borrow_mut();
                if idle.len() < IDLE_MAX {
                    idle.push(conn);
                }
            });
        }
    }
}

/// Makes `pieces` (one database's bytes, in order) the connection's main
/// database: one resizable SQLite-owned buffer (`memdb`) of their length
/// plus `room` spare bytes. rusqlite's `deserialize` sizes the buffer
/// exactly, so the first write that adds a page reallocates it.
#[allow(unsafe_code)]
fn deserialize_with_room(conn: &mut Connection, pieces: &[&[u8]], room: usize) -> rusqlite::Result<()> {
    use rusqlite::ffi;
    let len: usize = pieces.iter().map(|p| p.len()).sum();
    let sizes =
        len.checked_add(room).and_then(|cap| Some((i64::try_from(len).ok()?, i64::try_from(cap).ok()?)));
    let Some((len64, cap64)) = sizes else {
        return Err(rusqlite::Error::SqliteFailure(ffi::Error::new(ffi::SQLITE_TOOBIG), None));
    };
    // SAFETY: sqlite3_malloc64 returns null or a buffer of `cap64` bytes.
    let buf = unsafe { ffi::sqlite3_malloc64(cap64.unsigned_abs()) }.cast::<u8>();
    if buf.is_null() {
        return Err(rusqlite::Error::SqliteFailure(ffi::Error::new(ffi::SQLITE_NOMEM), None));
    }
    let mut at = 0;
    for piece in pieces {
        // SAFETY: `at + piece.len() <= len <= cap`, so the destination lies in
        // the new buffer, which no Rust slice aliases.
        unsafe { std::ptr::copy_nonoverlapping(piece.as_ptr(), buf.add(at), piece.len()) };
        at += piece.len();
    }
    let flags = ffi::SQLITE_DESERIALIZE_FREEONCLOSE | ffi::SQLITE_DESERIALIZE_RESIZEABLE;
    // SAFETY: the handle is this open connection's; `buf` comes from
    // sqlite3_malloc64, holds `cap64` bytes of which the first `len64` are
    // written, and is handed to SQLite (FREEONCLOSE: it frees the buffer on
    // close, and on failure before returning).
    let rc = unsafe { ffi::sqlite3_deserialize(conn.handle(), c"main".as_ptr(), buf, len64, cap64, flags) };
    if rc != ffi::SQLITE_OK {
        return Err(rusqlite::Error::SqliteFailure(ffi::Error::new(rc), None));
    }
    // Set on the new `main` (deserializing replaces it, settings and all).
    // The page cache only saves copying pages out of the buffer that holds
    // them all anyway: 2 MiB, not the wasm build's default of 16.
    conn.execute_batch(&format!("PRAGMA cache_size = -{};", PAGE_CACHE_KIB))
}

/// The page cache of a remote database's connection, in KiB.
const PAGE_CACHE_KIB: u32 = 2048;

fn wrong(msg: impl Into<String>) -> RemoteDbError {
    RemoteDbError::WrongSchema(msg.into())
}

/// Live rows and tombstones in the remote database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RemoteDbStats {
    /// Rows with `deleted = 0`.
    pub live: u64,
    /// Rows with `deleted = 1`.
    pub tombstones: u64,
}

/// The remote `metadata.db`, opened in memory, with its commit counter
/// (`version`) and `epoch` read and checked once at open.
#[derive(Debug)]
pub struct RemoteDb {
    /// `None`: a new remote ([`RemoteDb::create`]) not written yet. SQLite
    /// is set up at its first write ([`RemoteDb::written`]): most attempts
    /// that find no remote make one, and some of them never commit.
    conn: Option<Pooled>,
    version: i64,
    epoch: String,
    /// The id of the commit `version` is (schema 2; none before that).
    commit: Option<String>,
}

impl RemoteDb {
    /// The `schema_version` this code writes: 2 adds `sync_metadata.commit`,
    /// the id of the commit the database is a checkpoint of (remote format 2).
    pub const SCHEMA_VERSION: i64 = 2;
    /// The oldest `schema_version` it reads (format 1's `metadata.db`).
    pub const SCHEMA_VERSION_MIN: i64 = 1;

    /// A brand-new remote: version 0, the given `epoch`, current schema.
    /// Only named here: SQLite sets it up at its first write (reads find it
    /// empty), in a buffer sized by [`RemoteDb::reserve`] if that comes first.
    ///
    /// Like a downloaded database, it lives in one resizable buffer (SQLite's
    /// `memdb`), not in a `:memory:` page cache: [`RemoteDb::bytes`] then
    /// lends that buffer instead of copying every page into a new one, and
    /// the pages are not held twice (a first sync of 100,000 files builds a
    /// 75 MiB database; as `:memory:` it took ~85 MB of cache plus the 75 MiB
    /// copy to upload it).
    pub fn create(epoch: &str) -> Result<RemoteDb, RemoteDbError> {
        validate_stable_id(epoch).map_err(|e| wrong(format!("epoch: {e}")))?;
        Ok(RemoteDb { conn: None, version: 0, epoch: epoch.to_owned(), commit: None })
    }

    /// The connection, set up first for a new remote: the empty schema
    /// with room for `room` more bytes, and its counters.
    fn written(&mut self, room: usize) -> Result<&mut Pooled, RemoteDbError> {
        let conn = match self.conn.take() {
            Some(conn) => conn,
            None => new_database(&self.epoch, room)?,
        };
        Ok(self.conn.insert(conn))
    }

    /// Opens downloaded bytes after checking header, integrity, schema and
    /// counters. Rows are validated later, when read.
    pub fn from_bytes(bytes: &[u8]) -> Result<RemoteDb, RemoteDbError> {
        RemoteDb::from_bytes_with_room(bytes, 0)
    }

    /// [`RemoteDb::from_bytes`] into a buffer with `room` spare bytes for the
    /// rows a commit will add. SQLite grows a full buffer to twice what it
    /// needs and moves it: natively a cheap `mremap`, but in the component
    /// the old buffer stays part of its linear memory, which never shrinks.
    /// Room that is never written costs no memory (the pages are not touched).
    pub fn from_bytes_with_room(bytes: &[u8], room: usize) -> Result<RemoteDb, RemoteDbError> {
        if bytes.len() < 100 || &bytes[..16] != b"SQLite format 3\0" {
            return Err(RemoteDbError::NotSqlite);
        }
        check_length(bytes)?;
        // A WAL-mode header (read/write versions 2) refuses to deserialize;
        // memory has no WAL, so present it as a rollback-journal database.
        let versions = [bytes[18], bytes[19]].map(|b| if b == 2 { 1 } else { b });
        let mut conn = open_connection()?;
        deserialize_with_room(&mut conn, &[&bytes[..18], &versions, &bytes[20..]], room).map_err(corrupt)?;
        let check: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0)).map_err(corrupt)?;
        if check != "ok" {
            return Err(RemoteDbError::Corrupt(check));
        }
        check_no_active_schema(&conn)?;
        check_table(&conn, "file_metadata", &COLUMNS, "stable_id")?;
        check_table(&conn, "sync_metadata", &SYNC_COLUMNS, "key")?;
        let (version, epoch, commit) = read_counters(&conn)?;
        check_row_versions(&conn, version)?;
        let conn = Some(Pooled::new(conn, bytes.len().saturating_add(room)));
        Ok(RemoteDb { conn, version, epoch, commit })
    }

    /// Gives the database a buffer with `room` spare bytes for the rows a
    /// commit will add (see [`RemoteDb::from_bytes_with_room`]). A new
    /// remote not written yet is made in it, nothing copied; any other
    /// database is copied into it.
    pub fn reserve(&mut self, room: usize) -> Result<(), RemoteDbError> {
        let Some(conn) = self.conn.as_mut() else {
            // Not made yet: made with the room, nothing to copy.
            return self.written(room).map(drop);
        };
        let bytes = conn.serialize(MAIN_DB).map_err(sql_err)?.to_vec();
        conn.given = bytes.len().saturating_add(room);
        deserialize_with_room(conn, &[&bytes], room).map_err(sql_err)
    }

    /// The commit counter (`sync_metadata.version`).
    pub fn version(&self) -> i64 {
        self.version
    }

    /// The remote's random id, fixed at creation.
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// The id of the commit this database is at (none: format 1, or empty).
    pub fn commit_id(&self) -> Option<&str> {
        self.commit.as_deref()
    }

    /// Records that the database is at commit `commit` (of its current
    /// version), in the current schema: what a checkpoint carries.
    pub fn set_commit_id(&mut self, commit: &str) -> Result<(), RemoteDbError> {
        validate_stable_id(commit).map_err(|e| wrong(format!("commit: {e}")))?;
        self.written(0)?
            .prepare_cached(
                "INSERT INTO sync_metadata (key, value, updated_at)
                 VALUES ('commit', ?1, NULL), ('schema_version', ?2, NULL)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            )
            .and_then(|mut stmt| stmt.execute(params![commit, Self::SCHEMA_VERSION.to_string()]))
            .map_err(sql_err)?;
        self.commit = Some(commit.to_owned());
        Ok(())
    }

    /// `stable_id -> remote_version` for every row, ids and versions checked.
    pub fn row_versions(&self) -> Result<HashMap<String, i64>, RemoteDbError> {
        let mut out = HashMap::new();
        self.for_each_row_version(|id, version| {
            out.insert(id.to_owned(), version);
        })?;
        Ok(out)
    }

    /// Calls `f(stable_id, remote_version)` for every row, in table order,
    /// ids and versions checked as in [`RemoteDb::row_versions`] but with
    /// nothing allocated per row: the compare's one pass over all rows.
    pub fn for_each_row_version(&self, mut f: impl FnMut(&str, i64)) -> Result<(), RemoteDbError> {
        let Some(conn) = &self.conn else { return Ok(()) };
        let mut stmt =
            conn.prepare("SELECT stable_id, remote_version FROM file_metadata").map_err(sql_err)?;
        let mut rows = stmt.query([]).map_err(sql_err)?;
        while let Some(r) = rows.next().map_err(sql_err)? {
            let (id, ver) = (r.get_ref(0).map_err(sql_err)?, r.get_ref(1).map_err(sql_err)?);
            let (stable_id, version) = decode_version(id, ver).map_err(|source| invalid_row(id, source))?;
            f(stable_id, version);
        }
        Ok(())
    }

    /// The full, validated rows for `stable_ids`, sorted by `stable_id`;
    /// ids the remote does not have are left out.
    pub fn rows(&self, stable_ids: &[String]) -> Result<Vec<RemoteRow>, RemoteDbError> {
        let Some(conn) = &self.conn else { return Ok(Vec::new()) };
        let mut seen = HashSet::new();
        let ids: Vec<&str> = stable_ids.iter().map(String::as_str).filter(|id| seen.insert(*id)).collect();
        let mut out = Vec::with_capacity(ids.len());
        if ids.len() <= FEW_IDS {
            // A few ids (a sync with a few changes): one lookup each, by a
            // statement prepared once per connection; an `IN` list costs a
            // new statement per length, more to prepare than the rows it reads.
            let mut stmt = conn.prepare_cached(select_one()).map_err(sql_err)?;
            for id in &ids {
                collect_rows(&mut stmt, &[id], &mut out)?;
            }
        } else {
            let select_in =
                |n: usize| format!("{} WHERE stable_id IN ({})", select_all(), vec!["?"; n].join(","));
            // Every chunk but the last has the same size: prepare that one once.
            let mut full = if ids.len() >= CHUNK {
                Some(conn.prepare(&select_in(CHUNK)).map_err(sql_err)?)
            } else {
                None
            };
            for chunk in ids.chunks(CHUNK) {
                match full.as_mut().filter(|_| chunk.len() == CHUNK) {
                    Some(stmt) => collect_rows(stmt, chunk, &mut out)?,
                    None => {
                        let mut stmt = conn.prepare(&select_in(chunk.len())).map_err(sql_err)?;
                        collect_rows(&mut stmt, chunk, &mut out)?;
                    }
                }
            }
        }
        out.sort_by(|a, b| a.stable_id.cmp(&b.stable_id));
        Ok(out)
    }

    /// Validated rows with `remote_version > version`, sorted by `stable_id`.
    /// A row without a `remote_version` is an error, not silently skipped.
    pub fn rows_changed_since(&self, version: i64) -> Result<Vec<RemoteRow>, RemoteDbError> {
        let Some(conn) = &self.conn else { return Ok(Vec::new()) };
        let filter = "WHERE remote_version > ?1 OR remote_version IS NULL ORDER BY stable_id";
        let sql = format!("{} {filter}", select_all());
        let mut stmt = conn.prepare(&sql).map_err(sql_err)?;
        let mut out = Vec::new();
        collect_rows(&mut stmt, &[version], &mut out)?;
        Ok(out)
    }

    /// Counts live rows and tombstones.
    pub fn stats(&self) -> Result<RemoteDbStats, RemoteDbError> {
        let Some(conn) = &self.conn else { return Ok(RemoteDbStats::default()) };
        // `CASE WHEN deleted` is SQLite's truthiness: the same "integer != 0"
        // rule the row reader applies (NULL counts as live).
        let sql = "SELECT COUNT(*), COALESCE(SUM(CASE WHEN deleted THEN 1 ELSE 0 END), 0) FROM file_metadata";
        let (total, dead): (i64, i64) =
            conn.query_row(sql, [], |r| Ok((r.get(0)?, r.get(1)?))).map_err(sql_err)?;
        let count = |n: i64| u64::try_from(n).map_err(|_| RemoteDbError::Sqlite(format!("bad count {n}")));
        Ok(RemoteDbStats { live: count(total - dead)?, tombstones: count(dead)? })
    }

    /// Upserts `rows` and sets the version to `new_version`, in one
    /// transaction: on any error nothing changes. Requires
    /// `new_version > self.version()` and every row stamped `new_version`.
    /// Rows are taken one at a time (validated, then written), so a caller
    /// can build them lazily instead of holding them all.
    pub fn commit<R: Borrow<RemoteRow>>(
        &mut self,
        rows: impl IntoIterator<Item = R>,
        new_version: i64,
        now_iso: &str,
    ) -> Result<(), RemoteDbError> {
        self.commit_with(new_version, now_iso, |merge| {
            rows.into_iter().try_for_each(|row| merge.upsert(row.borrow()))
        })
    }

    /// [`RemoteDb::commit`] for a caller whose rows come from I/O of its own
    /// that may fail part-way: `produce` hands each row to [`Merge::upsert`];
    /// an error from it (or from an upsert) rolls everything back and is
    /// returned as it is.
    pub fn commit_with<E: From<RemoteDbError>>(
        &mut self,
        new_version: i64,
        now_iso: &str,
        produce: impl FnOnce(&mut Merge<'_, '_>) -> Result<(), E>,
    ) -> Result<(), E> {
        if new_version <= self.version {
            let msg =
                format!("commit version {new_version} is not above the current version {}", self.version);
            return Err(RemoteDbError::Sqlite(msg).into());
        }
        // Dropped without `commit()` on any error below: rolled back.
        let tx = self.written(0)?.transaction().map_err(sql_err)?;
        {
            let mut upsert = tx.prepare_cached(upsert_sql()).map_err(sql_err)?;
            produce(&mut Merge { upsert: &mut upsert, new_version })?;
        }
        let changed = tx
            .prepare_cached("UPDATE sync_metadata SET value = ?1, updated_at = ?2 WHERE key = 'version'")
            .and_then(|mut stmt| stmt.execute(params![new_version.to_string(), now_iso]))
            .map_err(sql_err)?;
        if changed != 1 {
            return Err(RemoteDbError::Sqlite(format!("updated {changed} version rows instead of 1")).into());
        }
        // The commit id named the version before: the caller names the new one.
        tx.prepare_cached("DELETE FROM sync_metadata WHERE key = 'commit'")
            .and_then(|mut stmt| stmt.execute([]))
            .map_err(sql_err)?;
        tx.commit().map_err(sql_err)?;
        self.version = new_version;
        self.commit = None;
        Ok(())
    }

    /// The database as bytes, ready to upload; [`RemoteDb::from_bytes`] reopens them.
    pub fn to_bytes(&mut self) -> Result<Vec<u8>, RemoteDbError> {
        Ok(self.bytes()?.to_vec())
    }

    /// The database as bytes without a copy where SQLite allows it: a
    /// database opened by [`RemoteDb::from_bytes`] lives in one buffer,
    /// which is lent out as it is (75 MiB at 100,000 rows, not copied twice).
    pub fn bytes(&mut self) -> Result<impl std::ops::Deref<Target = [u8]> + '_, RemoteDbError> {
        self.written(0)?.serialize(MAIN_DB).map_err(sql_err)
    }
}

/// The rows of an open commit ([`RemoteDb::commit_with`]).
#[allow(missing_debug_implementations)]
pub struct Merge<'tx, 's> {
    upsert: &'s mut Statement<'tx>,
    new_version: i64,
}

impl Merge<'_, '_> {
    /// Validates `row`, which must be stamped with the commit's version,
    /// and upserts it.
    pub fn upsert(&mut self, row: &RemoteRow) -> Result<(), RemoteDbError> {
        let invalid = |source| RemoteDbError::InvalidRow { stable_id: row.stable_id.clone(), source };
        if row.remote_version != self.new_version {
            let reason = format!("must equal the commit's version {}", self.new_version);
            let value = row.remote_version.to_string();
            return Err(invalid(InvalidValue::new("remote_version", &value, &reason)));
        }
        // Never write what we would refuse to read back.
        row.validate().map_err(invalid)?;
        upsert_row(self.upsert, row).map_err(sql_err)?;
        Ok(())
    }
}

fn select_all() -> String {
    format!("SELECT {} FROM file_metadata", COLUMNS.join(", "))
}

/// [`select_all`] of one row, by `stable_id`.
fn select_one() -> &'static str {
    static SQL: OnceLock<String> = OnceLock::new();
    SQL.get_or_init(|| format!("{} WHERE stable_id = ?1", select_all()))
}

fn upsert_sql() -> &'static str {
    static SQL: OnceLock<String> = OnceLock::new();
    SQL.get_or_init(|| {
        let names = COLUMNS.join(", ");
        let slots: Vec<String> = (1..=COLUMNS.len()).map(|i| format!("?{i}")).collect();
        let sets: Vec<String> = COLUMNS[1..].iter().map(|c| format!("{c} = excluded.{c}")).collect();
        format!(
            "INSERT INTO file_metadata ({names}) VALUES ({}) ON CONFLICT(stable_id) DO UPDATE SET {}",
            slots.join(", "),
            sets.join(", ")
        )
    })
}

/// Runs [`upsert_sql`] for `row`, parameters in [`COLUMNS`] order.
fn upsert_row(stmt: &mut Statement<'_>, row: &RemoteRow) -> rusqlite::Result<usize> {
    let m = &row.meta;
    stmt.execute(params![
        row.stable_id,
        row.id.as_str(),
        m.filename,
        m.doc_id,
        m.doc_id_type,
        m.file_type,
        m.mime_type,
        m.file_size,
        m.label,
        m.variant,
        m.version,
        m.is_gold_standard,
        m.doc_collections,
        m.doc_metadata,
        m.file_metadata,
        row.deleted,
        row.remote_version,
        row.updated_at,
        row.hlc.to_string(),
    ])
}

/// Runs a `select_all` statement and appends its rows, validated.
fn collect_rows<P: rusqlite::ToSql>(
    stmt: &mut Statement<'_>,
    params: &[P],
    out: &mut Vec<RemoteRow>,
) -> Result<(), RemoteDbError> {
    let mut rows = stmt.query(params_from_iter(params)).map_err(sql_err)?;
    while let Some(r) = rows.next().map_err(sql_err)? {
        let values =
            (0..COLUMNS.len()).map(|i| r.get_ref(i)).collect::<Result<Vec<_>, _>>().map_err(sql_err)?;
        out.push(decode(&values).map_err(|source| invalid_row(values[0], source))?);
    }
    Ok(())
}

/// Catches truncated uploads that `quick_check` can miss (SQLite reads the
/// missing tail as zeros, and a zeroed index page only shows up in a full
/// `integrity_check`): a database is whole pages, as many as its header says.
fn check_length(bytes: &[u8]) -> Result<(), RemoteDbError> {
    let page = match u16::from_be_bytes([bytes[16], bytes[17]]) {
        1 => 65_536,
        n => u64::from(n),
    };
    let len = bytes.len() as u64; // u64: a 32-bit usize overflows below
    if !page.is_power_of_two() || page < 512 {
        return Ok(()); // not a size SQLite accepts: it will refuse the file itself
    }
    // The header's page count is trusted only when the change counter
    // matches "version-valid-for", as SQLite does.
    let counted = u32::from_be_bytes([bytes[28], bytes[29], bytes[30], bytes[31]]);
    let valid = counted > 0 && bytes[24..28] == bytes[92..96];
    let expected = if valid { u64::from(counted) * page } else { 0 };
    if !len.is_multiple_of(page) || len < expected {
        let msg = format!("truncated: {len} bytes, pages of {page}, header says {counted} pages");
        return Err(RemoteDbError::Corrupt(msg));
    }
    Ok(())
}

/// Refuses triggers, views and virtual tables: each could make a read or an
/// upsert of ours run the author's SQL instead of (or besides) our own.
fn check_no_active_schema(conn: &Connection) -> Result<(), RemoteDbError> {
    let found = |kind: String, name: String| Err(wrong(format!("{kind} {name:?} is not allowed")));
    let trigger = "SELECT type, name FROM sqlite_master WHERE type = 'trigger' LIMIT 1";
    let row: Option<(String, String)> =
        conn.query_row(trigger, [], |r| Ok((r.get(0)?, r.get(1)?))).optional().map_err(corrupt)?;
    if let Some((kind, name)) = row {
        return found(kind, name);
    }
    // Views and virtual tables as SQLite parsed them (whatever the schema
    // table's `type` column says), by the `PRAGMA` statement: a third of
    // the cost of the `pragma_table_list` function. Its columns: schema,
    // name, type, ncol, wr, strict.
    let mut stmt = conn.prepare("PRAGMA main.table_list").map_err(corrupt)?;
    let mut rows = stmt.query([]).map_err(corrupt)?;
    while let Some(r) = rows.next().map_err(corrupt)? {
        let kind: String = r.get(2).map_err(corrupt)?;
        if kind != "table" {
            return found(kind, r.get(1).map_err(corrupt)?);
        }
    }
    Ok(())
}

/// Checks that `table` has the `required` columns and exactly `pk` as primary
/// key (the upserts' `ON CONFLICT` target). Extra columns are fine.
fn check_table(conn: &Connection, table: &str, required: &[&str], pk: &str) -> Result<(), RemoteDbError> {
    // The `PRAGMA` statement rather than the `pragma_table_info` function:
    // half the cost (no virtual table), and `table` is one of our constants.
    // Its columns: cid, name, type, notnull, dflt_value, pk.
    let mut stmt = conn.prepare(&format!("PRAGMA table_info(\"{table}\")")).map_err(corrupt)?;
    let mut rows = stmt.query([]).map_err(corrupt)?;
    let (mut any, mut found, mut keys) = (false, vec![false; required.len()], Vec::new());
    while let Some(r) = rows.next().map_err(corrupt)? {
        any = true;
        let name = r.get_ref(1).and_then(|v| Ok(v.as_str()?)).map_err(corrupt)?;
        if let Some(i) = required.iter().position(|c| c.eq_ignore_ascii_case(name)) {
            found[i] = true;
        }
        if r.get::<_, i64>(5).map_err(corrupt)? > 0 {
            keys.push(name.to_ascii_lowercase());
        }
    }
    if !any {
        return Err(wrong(format!("table {table} is missing")));
    }
    if let Some(missing) = found.iter().position(|f| !f).map(|i| required[i]) {
        return Err(wrong(format!("table {table} has no column {missing}")));
    }
    if keys != [pk] {
        return Err(wrong(format!("{table}.{pk} must be the primary key (found {keys:?})")));
    }
    Ok(())
}

/// Reads and checks `version`, `epoch`, `schema_version` and (schema 2)
/// `commit`.
fn read_counters(conn: &Connection) -> Result<(i64, String, Option<String>), RemoteDbError> {
    // One statement for all four keys (each prepared statement costs more
    // than the rows it reads), and a plain scan: the table holds a few rows,
    // fewer than an `IN` list's lookups cost to set up.
    const KEYS: [&str; 4] = ["schema_version", "version", "epoch", "commit"];
    let mut values: [Option<Value>; 4] = Default::default();
    let mut stmt = conn.prepare("SELECT key, value FROM sync_metadata").map_err(corrupt)?;
    let mut rows = stmt.query([]).map_err(corrupt)?;
    while let Some(r) = rows.next().map_err(corrupt)? {
        let ValueRef::Text(key) = r.get_ref(0).map_err(corrupt)? else { continue };
        if let Some(i) = KEYS.iter().position(|k| k.as_bytes() == key) {
            values[i] = Some(r.get(1).map_err(corrupt)?);
        }
    }
    let get = |key: &str| -> Result<String, RemoteDbError> {
        match KEYS.iter().position(|k| *k == key).and_then(|i| values[i].as_ref()) {
            Some(Value::Text(s)) => Ok(s.clone()),
            Some(Value::Integer(i)) => Ok(i.to_string()),
            Some(_) => Err(wrong(format!("sync_metadata {key} is not text"))),
            None => Err(wrong(format!("sync_metadata has no {key}"))),
        }
    };
    let schema = get("schema_version")?;
    let known = (RemoteDb::SCHEMA_VERSION_MIN..=RemoteDb::SCHEMA_VERSION).map(|v| v.to_string());
    if !known.into_iter().any(|v| v == schema) {
        return Err(wrong(format!("unknown schema_version {schema:?}")));
    }
    let text = get("version")?;
    // Digits only: `parse` alone would also take "+5".
    let digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    let version = text
        .parse::<i64>()
        .ok()
        .filter(|_| digits)
        .ok_or_else(|| wrong(format!("version {text:?} is not a non-negative integer")))?;
    let epoch = get("epoch")?;
    validate_stable_id(&epoch).map_err(|e| wrong(format!("epoch: {e}")))?;
    let commit = match get("commit") {
        Ok(commit) if schema != "1" => {
            validate_stable_id(&commit).map_err(|e| wrong(format!("commit: {e}")))?;
            Some(commit)
        }
        _ => None,
    };
    Ok((version, epoch, commit))
}

/// One indexed MAX(): no row may be newer than the database's own version.
/// SQLite sorts TEXT and BLOB above every number, so a non-integer
/// `remote_version` anywhere is what MAX() returns.
fn check_row_versions(conn: &Connection, version: i64) -> Result<(), RemoteDbError> {
    let (id, max): (Value, Value) = conn
        .query_row("SELECT stable_id, MAX(remote_version) FROM file_metadata", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .map_err(corrupt)?;
    let row = describe(ValueRef::from(&id));
    match max {
        Value::Null => Ok(()),
        Value::Integer(n) if n <= version => Ok(()),
        Value::Integer(n) => {
            Err(wrong(format!("row {row:?} has remote_version {n} > database version {version}")))
        }
        _ => Err(wrong(format!("row {row:?} has a non-integer remote_version"))),
    }
}

fn invalid_row(stable_id: ValueRef<'_>, source: InvalidValue) -> RemoteDbError {
    RemoteDbError::InvalidRow { stable_id: describe(stable_id), source }
}

/// A printable, bounded form of any SQLite value, for error messages.
fn describe(v: ValueRef<'_>) -> String {
    match v {
        ValueRef::Null => "NULL".to_owned(),
        ValueRef::Integer(i) => i.to_string(),
        ValueRef::Real(f) => f.to_string(),
        ValueRef::Text(t) => String::from_utf8_lossy(&t[..t.len().min(320)]).chars().take(80).collect(),
        ValueRef::Blob(b) => format!("<blob of {} bytes>", b.len()),
    }
}

/// A TEXT column, NULL allowed, borrowed from the row. Anything else is
/// type confusion.
fn opt_str<'a>(i: usize, v: ValueRef<'a>) -> Result<Option<&'a str>, InvalidValue> {
    match v {
        ValueRef::Null => Ok(None),
        ValueRef::Text(t) => match std::str::from_utf8(t) {
            Ok(s) => Ok(Some(s)),
            Err(_) => Err(InvalidValue::new(COLUMNS[i], &describe(v), "is not valid UTF-8")),
        },
        _ => Err(InvalidValue::new(COLUMNS[i], &describe(v), "must be TEXT")),
    }
}

/// A TEXT column, NULL refused, borrowed from the row.
fn req_str<'a>(i: usize, v: ValueRef<'a>) -> Result<&'a str, InvalidValue> {
    opt_str(i, v)?.ok_or_else(|| InvalidValue::new(COLUMNS[i], "NULL", "must not be NULL"))
}

fn opt_text(i: usize, v: ValueRef<'_>) -> Result<Option<String>, InvalidValue> {
    Ok(opt_str(i, v)?.map(str::to_owned))
}

fn req_text(i: usize, v: ValueRef<'_>) -> Result<String, InvalidValue> {
    req_str(i, v).map(str::to_owned)
}

/// An INTEGER column, NULL allowed.
fn opt_int(i: usize, v: ValueRef<'_>) -> Result<Option<i64>, InvalidValue> {
    match v {
        ValueRef::Null => Ok(None),
        ValueRef::Integer(n) => Ok(Some(n)),
        _ => Err(InvalidValue::new(COLUMNS[i], &describe(v), "must be an INTEGER")),
    }
}

/// A BOOLEAN column: integer != 0; NULL reads as false, like the app.
fn flag(i: usize, v: ValueRef<'_>) -> Result<bool, InvalidValue> {
    Ok(opt_int(i, v)?.is_some_and(|n| n != 0))
}

/// The two columns [`RemoteDb::for_each_row_version`] reads, checked.
fn decode_version<'a>(id: ValueRef<'a>, ver: ValueRef<'_>) -> Result<(&'a str, i64), InvalidValue> {
    let stable_id = req_str(0, id)?;
    validate_stable_id(stable_id)?;
    Ok((stable_id, remote_version(ver)?))
}

fn remote_version(v: ValueRef<'_>) -> Result<i64, InvalidValue> {
    let n = opt_int(16, v)?.ok_or_else(|| InvalidValue::new("remote_version", "NULL", "must not be NULL"))?;
    if n < 1 {
        return Err(InvalidValue::new("remote_version", &n.to_string(), "must be at least 1"));
    }
    Ok(n)
}

/// One row's values, in [`COLUMNS`] order, to a validated [`RemoteRow`].
fn decode(v: &[ValueRef<'_>]) -> Result<RemoteRow, InvalidValue> {
    let or = |i: usize, default: &str| {
        Ok::<_, InvalidValue>(opt_text(i, v[i])?.unwrap_or_else(|| default.to_owned()))
    };
    let row = RemoteRow {
        stable_id: req_text(0, v[0])?,
        id: ContentHash::parse(&req_text(1, v[1])?)?,
        meta: FileMeta {
            filename: req_text(2, v[2])?,
            doc_id: req_text(3, v[3])?,
            doc_id_type: or(4, "doi")?,
            file_type: req_text(5, v[5])?,
            mime_type: opt_text(6, v[6])?,
            file_size: opt_int(7, v[7])?,
            label: opt_text(8, v[8])?,
            variant: opt_text(9, v[9])?,
            version: opt_int(10, v[10])?,
            is_gold_standard: flag(11, v[11])?,
            doc_collections: or(12, "[]")?,
            doc_metadata: or(13, "{}")?,
            file_metadata: or(14, "{}")?,
        },
        deleted: flag(15, v[15])?,
        remote_version: remote_version(v[16])?,
        updated_at: or(17, "")?,
        hlc: Hlc::parse(&req_text(18, v[18])?)?,
    };
    row.validate()?;
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The database's SQLite connection (it must have been written).
    fn sql(db: &RemoteDb) -> &Connection {
        db.conn.as_deref().expect("a database SQLite has set up")
    }

    fn row(stable_id: &str, v: i64) -> RemoteRow {
        RemoteRow {
            stable_id: stable_id.into(),
            id: ContentHash::of(stable_id.as_bytes()),
            meta: FileMeta {
                filename: format!("{stable_id}.pdf"),
                doc_id: "10.1000/x".into(),
                doc_id_type: "doi".into(),
                file_type: "pdf".into(),
                mime_type: Some("application/pdf".into()),
                file_size: Some(42),
                label: Some("label".into()),
                variant: None,
                version: Some(1),
                is_gold_standard: true,
                doc_collections: r#"["c1"]"#.into(),
                doc_metadata: r#"{"k":1}"#.into(),
                file_metadata: "{}".into(),
            },
            deleted: false,
            remote_version: v,
            updated_at: "2024-05-01T12:00:00.000Z".into(),
            hlc: Hlc { physical_ms: 1_700_000_000_000, counter: 3, instance: "inst-a".into() },
        }
    }

    /// A remote at version 1 holding rows a, b, c, as bytes.
    fn sample() -> Vec<u8> {
        let mut db = RemoteDb::create("epoch-1").unwrap();
        db.commit(&[row("a", 1), row("b", 1), row("c", 1)], 1, "2024-05-01T12:00:00.000Z").unwrap();
        db.to_bytes().unwrap()
    }

    /// Runs `sql` on a raw copy of `bytes`, the way a buggy or hostile writer would.
    fn tamper(bytes: &[u8], sql: &str) -> Vec<u8> {
        let mut c = Connection::open_in_memory().unwrap();
        c.deserialize_read_exact(MAIN_DB, bytes, bytes.len(), false).unwrap();
        c.execute_batch(sql).unwrap();
        c.serialize(MAIN_DB).unwrap().to_vec()
    }

    fn ids(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn assert_wrong_schema(bytes: &[u8], needle: &str) {
        match RemoteDb::from_bytes(bytes) {
            Err(RemoteDbError::WrongSchema(msg)) => {
                assert!(msg.contains(needle), "{msg:?} lacks {needle:?}")
            }
            other => panic!("expected WrongSchema({needle}), got {:?}", other.map(|d| d.version())),
        }
    }

    fn assert_invalid_row(bytes: &[u8], stable_id: &str, field: &str) {
        let db = RemoteDb::from_bytes(bytes).unwrap();
        let err = db.rows(&ids(&[stable_id])).unwrap_err();
        let msg = err.to_string();
        match err {
            RemoteDbError::InvalidRow { stable_id: id, source } => {
                assert_eq!((id.as_str(), source.field.as_str()), (stable_id, field));
                assert!(msg.contains(stable_id) && msg.contains(field), "{msg}");
            }
            other => panic!("expected InvalidRow for {field}, got {other:?}"),
        }
        // The bulk read refuses the same row.
        assert!(matches!(db.rows_changed_since(0), Err(RemoteDbError::InvalidRow { .. })));
    }

    #[test]
    fn round_trip_keeps_version_epoch_and_rows() {
        let mut db = RemoteDb::create("epoch-1").unwrap();
        assert_eq!((db.version(), db.epoch()), (0, "epoch-1"));
        let empty = RemoteDb::from_bytes(&db.to_bytes().unwrap()).unwrap();
        assert_eq!((empty.version(), empty.epoch()), (0, "epoch-1"));
        let mut tomb = row("b", 1);
        tomb.deleted = true;
        tomb.meta.label = None;
        let written = vec![row("a", 1), tomb];
        db.commit(&written, 1, "2024-05-01T12:00:00.000Z").unwrap();
        let back = RemoteDb::from_bytes(&db.to_bytes().unwrap()).unwrap();
        assert_eq!((back.version(), back.epoch()), (1, "epoch-1"));
        assert_eq!(back.rows(&ids(&["a", "b"])).unwrap(), written);
        assert_eq!(back.rows_changed_since(0).unwrap(), written);
        assert_eq!(back.stats().unwrap(), RemoteDbStats { live: 1, tombstones: 1 });
        let versions = back.row_versions().unwrap();
        assert_eq!(versions, HashMap::from([("a".to_string(), 1), ("b".to_string(), 1)]));
    }

    #[test]
    fn commit_rolls_back_entirely_when_a_row_fails_a_constraint() {
        // A seed-style unique index on the content hash: the second row collides.
        let bytes = tamper(&sample(), "CREATE UNIQUE INDEX uniq_id ON file_metadata(id);");
        let mut db = RemoteDb::from_bytes(&bytes).unwrap();
        let mut changed = row("a", 2);
        changed.meta.label = Some("new".into());
        let mut clash = row("d", 2);
        clash.id = row("b", 1).id;
        let err = db.commit(&[changed, clash], 2, "now").unwrap_err();
        assert!(matches!(err, RemoteDbError::Sqlite(ref m) if m.contains("UNIQUE")), "{err:?}");
        assert_eq!(db.version(), 1);
        let reopened = RemoteDb::from_bytes(&db.to_bytes().unwrap()).unwrap();
        assert_eq!(reopened.version(), 1);
        assert_eq!(reopened.rows(&ids(&["a", "d"])).unwrap(), vec![row("a", 1)]);
    }

    #[test]
    fn commit_checks_its_preconditions_before_writing() {
        let mut db = RemoteDb::from_bytes(&sample()).unwrap();
        let before = db.to_bytes().unwrap();
        assert!(matches!(db.commit(&[row("d", 1)], 1, "now"), Err(RemoteDbError::Sqlite(_))));
        match db.commit(&[row("d", 2), row("e", 3)], 2, "now") {
            Err(RemoteDbError::InvalidRow { stable_id, source }) => {
                assert_eq!((stable_id.as_str(), source.field.as_str()), ("e", "remote_version"));
            }
            other => panic!("{other:?}"),
        }
        let mut bad = row("f", 2);
        bad.meta.file_type = "../x".into();
        assert!(matches!(db.commit(&[bad], 2, "now"), Err(RemoteDbError::InvalidRow { .. })));
        assert_eq!(db.version(), 1);
        assert_eq!(db.to_bytes().unwrap(), before);
    }

    #[test]
    fn bytes_that_are_not_sqlite_are_refused() {
        for bytes in [&b""[..], b"SQLite format 3\0", &[0u8; 4096], &b"PK\x03\x04".repeat(100)] {
            assert!(matches!(RemoteDb::from_bytes(bytes), Err(RemoteDbError::NotSqlite)));
        }
    }

    #[test]
    fn truncated_or_damaged_bytes_are_errors_not_panics() {
        let good = sample();
        // Every cut: page boundaries, mid-page, and one byte short.
        let pages = (4096..good.len()).step_by(4096);
        let cuts = (100..good.len()).step_by(509).chain(pages).chain([good.len() - 1]);
        for cut in cuts {
            let r = RemoteDb::from_bytes(&good[..cut]);
            assert!(matches!(r, Err(RemoteDbError::Corrupt(_))), "cut {cut}");
        }
        let mut scribbled = good.clone();
        scribbled[good.len() / 2..].fill(0xA5);
        let r = RemoteDb::from_bytes(&scribbled);
        assert!(matches!(r, Err(RemoteDbError::Corrupt(_))), "{:?}", r.err());
    }

    #[test]
    fn a_database_with_another_schema_is_wrong_schema() {
        let mut c = Connection::open_in_memory().unwrap();
        c.execute_batch("CREATE TABLE files (x TEXT); INSERT INTO files VALUES ('y');").unwrap();
        assert_wrong_schema(&c.serialize(MAIN_DB).unwrap(), "file_metadata is missing");
        let good = sample();
        assert_wrong_schema(&tamper(&good, "ALTER TABLE file_metadata DROP COLUMN hlc;"), "no column hlc");
        assert_wrong_schema(&tamper(&good, "DELETE FROM sync_metadata WHERE key = 'epoch';"), "no epoch");
        let set = |k: &str, v: &str| {
            tamper(&good, &format!("UPDATE sync_metadata SET value = '{v}' WHERE key = '{k}'"))
        };
        assert_wrong_schema(&set("version", "-1"), "version");
        assert_wrong_schema(&set("version", "+1"), "version");
        assert_wrong_schema(&set("epoch", "../e"), "epoch");
        assert_wrong_schema(&set("schema_version", "3"), "schema_version");
        let rekeyed = "ALTER TABLE sync_metadata RENAME TO old;
            CREATE TABLE sync_metadata (key TEXT, value TEXT, updated_at TIMESTAMP, PRIMARY KEY (key, value));
            INSERT INTO sync_metadata SELECT * FROM old; DROP TABLE old;";
        assert_wrong_schema(&tamper(&good, rekeyed), "sync_metadata.key must be the primary key");
        assert_wrong_schema(&tamper(&good, "DROP TABLE sync_metadata;"), "table sync_metadata is missing");
    }

    #[test]
    fn a_wal_mode_header_still_opens() {
        let mut bytes = sample();
        bytes[18] = 2;
        bytes[19] = 2;
        let mut db = RemoteDb::from_bytes(&bytes).unwrap();
        assert_eq!(db.rows(&ids(&["a", "b", "c"])).unwrap().len(), 3);
        let out = db.to_bytes().unwrap();
        assert_eq!((out[18], out[19]), (1, 1));
    }

    #[test]
    fn triggers_views_and_virtual_tables_are_refused() {
        let good = sample();
        let trigger = "CREATE TRIGGER t AFTER UPDATE ON file_metadata BEGIN DELETE FROM file_metadata; END;";
        assert_wrong_schema(&tamper(&good, trigger), "trigger \"t\"");
        assert_wrong_schema(&tamper(&good, "CREATE VIEW v AS SELECT 1;"), "view \"v\"");
        assert_wrong_schema(&tamper(&good, "CREATE VIRTUAL TABLE vt USING fts5(x);"), "vt");
        // The trigger check reads the schema table's `type`: a trigger whose
        // row says it is something else must not get past SQLite itself.
        for kind in ["table", "index", "view"] {
            let lie = format!(
                "PRAGMA writable_schema = ON; INSERT INTO sqlite_master VALUES ('{kind}', 't', 'file_metadata', 0, \
                 'CREATE TRIGGER t AFTER UPDATE ON file_metadata BEGIN DELETE FROM file_metadata; END');"
            );
            let refused = RemoteDb::from_bytes(&tamper(&good, &lie));
            assert!(
                matches!(refused, Err(RemoteDbError::Corrupt(_))),
                "{kind}: {:?}",
                refused.map(|d| d.version())
            );
        }
    }

    #[test]
    fn hostile_rows_are_refused_naming_row_and_field() {
        let good = sample();
        let set = |col: &str, expr: &str| {
            tamper(&good, &format!("UPDATE file_metadata SET {col} = {expr} WHERE stable_id = 'b'"))
        };
        assert_invalid_row(&set("file_type", "'../../etc'"), "b", "file_type");
        assert_invalid_row(&set("id", "'not-a-hash'"), "b", "id");
        assert_invalid_row(&set("doc_metadata", "'{not json'"), "b", "doc_metadata");
        assert_invalid_row(&set("label", "hex(zeroblob(5 * 1024 * 1024))"), "b", "label");
        assert_invalid_row(&set("file_size", "x'00ff'"), "b", "file_size");
        assert_invalid_row(&set("filename", "x'ff'"), "b", "filename");
        assert_invalid_row(&set("hlc", "'yesterday'"), "b", "hlc");
        assert_invalid_row(&set("remote_version", "NULL"), "b", "remote_version");
        assert_invalid_row(&set("deleted", "'yes'"), "b", "deleted");
        // Rows the caller did not ask for stay unread, so they cannot fail.
        let db = RemoteDb::from_bytes(&set("file_type", "'../x'")).unwrap();
        assert_eq!(db.rows(&ids(&["a"])).unwrap(), vec![row("a", 1)]);
        let bad_id = tamper(&good, "UPDATE file_metadata SET stable_id = '../up' WHERE stable_id = 'b'");
        assert!(matches!(RemoteDb::from_bytes(&bad_id).unwrap().row_versions(),
            Err(RemoteDbError::InvalidRow { stable_id, .. }) if stable_id == "../up"));
    }

    #[test]
    fn a_row_newer_than_the_database_is_wrong_schema() {
        let good = sample();
        let newer = tamper(&good, "UPDATE file_metadata SET remote_version = 7 WHERE stable_id = 'c'");
        assert_wrong_schema(&newer, "row \"c\" has remote_version 7 > database version 1");
        let text = tamper(&good, "UPDATE file_metadata SET remote_version = 'abc' WHERE stable_id = 'a'");
        assert_wrong_schema(&text, "row \"a\" has a non-integer remote_version");
    }

    #[test]
    fn extra_columns_survive_commits() {
        let sql = "ALTER TABLE file_metadata ADD COLUMN app_extra TEXT; UPDATE file_metadata SET app_extra = 'keep';";
        let mut db = RemoteDb::from_bytes(&tamper(&sample(), sql)).unwrap();
        let mut changed = row("a", 2);
        changed.meta.label = Some("edited".into());
        db.commit(&[changed.clone(), row("d", 2)], 2, "now").unwrap();
        let bytes = db.to_bytes().unwrap();
        assert_eq!(RemoteDb::from_bytes(&bytes).unwrap().rows(&ids(&["a"])).unwrap(), vec![changed]);
        let mut c = Connection::open_in_memory().unwrap();
        c.deserialize_read_exact(MAIN_DB, &bytes[..], bytes.len(), false).unwrap();
        let extra = |id: &str| -> Option<String> {
            c.query_row("SELECT app_extra FROM file_metadata WHERE stable_id = ?1", [id], |r| r.get(0))
                .unwrap()
        };
        assert_eq!((extra("a"), extra("d")), (Some("keep".into()), None));
        let updated: String = c
            .query_row("SELECT updated_at FROM sync_metadata WHERE key = 'version'", [], |r| r.get(0))
            .unwrap();
        assert_eq!(updated, "now");
    }

    #[test]
    fn rows_returns_the_requested_rows_in_chunks() {
        let db = RemoteDb::from_bytes(&sample()).unwrap();
        let got = db.rows(&ids(&["c", "a", "zz", "b", "a"])).unwrap();
        assert_eq!(got, vec![row("a", 1), row("b", 1), row("c", 1)]);
        let mut big = RemoteDb::create("e").unwrap();
        let many: Vec<RemoteRow> = (0..CHUNK * 2 + 7).map(|i| row(&format!("r{i:05}"), 1)).collect();
        big.commit(&many, 1, "now").unwrap();
        let mut wanted: Vec<String> = many.iter().map(|r| r.stable_id.clone()).collect();
        wanted.push("missing".into());
        assert_eq!(big.rows(&wanted).unwrap(), many);
        assert!(big.rows(&[]).unwrap().is_empty());
        // Around the switch from one lookup per id to `IN` lists, with a
        // duplicate and a missing id each time: the same answer.
        for n in [FEW_IDS - 1, FEW_IDS, FEW_IDS + 1] {
            let mut some: Vec<String> = wanted[..n].iter().rev().cloned().collect();
            some.extend([wanted[0].clone(), "missing".to_owned()]);
            assert_eq!(big.rows(&some).unwrap(), many[..n], "{n} ids");
        }
    }

    #[test]
    fn rows_changed_since_filters_by_version() {
        let mut db = RemoteDb::from_bytes(&sample()).unwrap();
        db.commit(&[row("b", 2)], 2, "now").unwrap();
        db.commit(&[row("d", 3)], 3, "now").unwrap();
        assert_eq!(db.rows_changed_since(1).unwrap(), vec![row("b", 2), row("d", 3)]);
        assert_eq!(db.rows_changed_since(2).unwrap(), vec![row("d", 3)]);
        assert!(db.rows_changed_since(3).unwrap().is_empty());
        assert_eq!(db.rows_changed_since(0).unwrap().len(), 4);
    }

    #[test]
    fn null_columns_read_as_their_defaults() {
        let sql = "UPDATE file_metadata SET doc_id_type = NULL, doc_collections = NULL, doc_metadata = NULL,
                   file_metadata = NULL, is_gold_standard = NULL, deleted = NULL, updated_at = NULL WHERE stable_id = 'a'";
        let db = RemoteDb::from_bytes(&tamper(&sample(), sql)).unwrap();
        let got = db.rows(&ids(&["a"])).unwrap().remove(0);
        assert_eq!(got.meta.doc_id_type, "doi");
        assert_eq!((got.meta.doc_collections.as_str(), got.meta.doc_metadata.as_str()), ("[]", "{}"));
        assert_eq!(got.meta.file_metadata, "{}");
        assert!(!got.meta.is_gold_standard && !got.deleted);
        assert_eq!(got.updated_at, "");
        assert_eq!(db.stats().unwrap(), RemoteDbStats { live: 3, tombstones: 0 });
    }

    #[test]
    fn create_refuses_a_bad_epoch() {
        assert!(matches!(RemoteDb::create("../e"), Err(RemoteDbError::WrongSchema(_))));
    }

    /// Forbids the database's buffer to grow (SQLite's `memdb` size limit,
    /// set to what it holds now): a write past the buffer's end then fails.
    #[allow(unsafe_code)]
    fn forbid_growth(db: &mut RemoteDb) {
        let mut limit: i64 = 0; // clamped up to the current size
        // SAFETY: the handle is the open connection's, and SIZE_LIMIT reads
        // and writes one sqlite3_int64 through the pointer.
        let rc = unsafe {
            rusqlite::ffi::sqlite3_file_control(
                db.written(0).unwrap().handle(),
                c"main".as_ptr(),
                rusqlite::ffi::SQLITE_FCNTL_SIZE_LIMIT,
                (&raw mut limit).cast(),
            )
        };
        assert_eq!(rc, rusqlite::ffi::SQLITE_OK);
    }

    #[test]
    fn a_commit_that_fits_the_room_set_aside_does_not_grow_the_buffer() {
        let rows: Vec<RemoteRow> = (0..2_000).map(|i| row(&format!("r{i}"), 1)).collect();
        let more: Vec<RemoteRow> = (0..2_000).map(|i| row(&format!("s{i}"), 2)).collect();
        let fits = |mut db: RemoteDb, rows: &[RemoteRow], version| {
            forbid_growth(&mut db);
            db.commit(rows, version, "now").is_ok()
        };
        let mut roomy = RemoteDb::create("e1").unwrap();
        roomy.reserve(4 << 20).unwrap();
        assert!(fits(roomy, &rows, 1));
        assert!(!fits(RemoteDb::create("e1").unwrap(), &rows, 1));

        let mut db = RemoteDb::create("e1").unwrap();
        db.commit(&rows, 1, "now").unwrap();
        let bytes = db.to_bytes().unwrap();
        assert!(fits(RemoteDb::from_bytes_with_room(&bytes, 4 << 20).unwrap(), &more, 2));
        assert!(!fits(RemoteDb::from_bytes(&bytes).unwrap(), &more, 2));
        // The room is not part of the database, and the settings hold.
        let mut db = RemoteDb::from_bytes_with_room(&bytes, 4 << 20).unwrap();
        assert_eq!(db.to_bytes().unwrap(), bytes);
        db.reserve(1 << 20).unwrap();
        assert_eq!(db.to_bytes().unwrap(), bytes);
        let cache: i64 = sql(&db).query_row("PRAGMA cache_size", [], |r| r.get(0)).unwrap();
        assert_eq!(cache, -i64::from(PAGE_CACHE_KIB));
        let trusted: i64 = sql(&db).query_row("PRAGMA trusted_schema", [], |r| r.get(0)).unwrap();
        assert_eq!(trusted, 0);
    }

    #[test]
    fn a_new_database_is_one_buffer_that_is_lent_not_copied() {
        let mut db = RemoteDb::create("e1").unwrap();
        let rows: Vec<RemoteRow> = (0..2_000).map(|i| row(&format!("r{i}"), 1)).collect();
        db.commit(&rows, 1, "now").unwrap();
        let conn = db.conn.as_deref_mut().expect("written");
        assert!(matches!(conn.serialize(MAIN_DB).unwrap(), rusqlite::serialize::Data::Shared(_)));
        let bytes = db.to_bytes().unwrap();
        let reopened = RemoteDb::from_bytes(&bytes).unwrap();
        assert_eq!((reopened.version(), reopened.epoch()), (1, "e1"));
        assert_eq!(reopened.rows(&ids(&["r0", "r1999"])).unwrap().len(), 2);
    }

    #[test]
    fn commit_with_rolls_back_on_the_producer_s_error() {
        let mut db = RemoteDb::create("e1").unwrap();
        let result: Result<(), RemoteDbError> = db.commit_with(1, "now", |merge| {
            merge.upsert(&row("a", 1))?;
            Err(RemoteDbError::Sqlite("the producer failed".into()))
        });
        assert!(result.is_err());
        assert_eq!(db.version(), 0);
        assert!(db.rows(&ids(&["a"])).unwrap().is_empty(), "rolled back");
        db.commit_with(1, "now", |merge| merge.upsert(&row("a", 1))).unwrap();
        assert_eq!(db.version(), 1);
        assert_eq!(db.rows(&ids(&["a"])).unwrap().len(), 1);
    }

    fn idle_connections() -> usize {
        IDLE.with_borrow(Vec::len)
    }

    fn no_idle_connections() {
        IDLE.with_borrow_mut(Vec::clear);
    }

    #[test]
    fn a_dropped_small_database_leaves_its_connection_to_the_next_one() {
        let bytes = sample();
        no_idle_connections();
        let db = RemoteDb::from_bytes(&bytes).unwrap();
        drop(db);
        assert_eq!(idle_connections(), 1);
        let db = RemoteDb::from_bytes(&bytes).unwrap();
        assert_eq!(idle_connections(), 0, "the next database takes it");
        let mut other = RemoteDb::create("e2").unwrap();
        other.commit(&[row("a", 1)], 1, "now").unwrap();
        drop((db, other));
        assert_eq!(idle_connections(), 2);
        let dbs: Vec<RemoteDb> = (0..IDLE_MAX + 1).map(|_| RemoteDb::from_bytes(&bytes).unwrap()).collect();
        drop(dbs);
        assert_eq!(idle_connections(), IDLE_MAX, "at most {IDLE_MAX} stay idle");
    }

    #[test]
    fn a_new_remote_is_set_up_in_sqlite_only_when_written() {
        let bytes = sample();
        no_idle_connections();
        drop(RemoteDb::from_bytes(&bytes).unwrap());
        let mut db = RemoteDb::create("e2").unwrap();
        // Reads find it empty, and take no connection.
        assert!(db.rows(&ids(&["a"])).unwrap().is_empty());
        assert!(db.rows_changed_since(0).unwrap().is_empty());
        assert_eq!(db.stats().unwrap(), RemoteDbStats::default());
        let mut seen = 0;
        db.for_each_row_version(|_, _| seen += 1).unwrap();
        assert_eq!((seen, idle_connections()), (0, 1));
        // Its first write sets it up: an empty remote with its counters.
        let empty = db.to_bytes().unwrap();
        assert_eq!(idle_connections(), 0);
        let reopened = RemoteDb::from_bytes(&empty).unwrap();
        assert_eq!((reopened.version(), reopened.epoch(), reopened.commit_id()), (0, "e2", None));
        assert_eq!(reopened.stats().unwrap(), RemoteDbStats::default());
    }

    #[test]
    fn a_reused_connection_holds_only_the_new_database() {
        // A database with another table, a row `z`, and statements cached.
        let mut first = RemoteDb::from_bytes(&tamper(&sample(), "CREATE TABLE extra (x);")).unwrap();
        first.commit(&[row("z", 2)], 2, "now").unwrap();
        assert_eq!(first.rows(&ids(&["z"])).unwrap().len(), 1);
        let bytes = sample();
        no_idle_connections();
        drop(first);
        assert_eq!(idle_connections(), 1);
        let db = RemoteDb::from_bytes(&bytes).unwrap();
        assert_eq!(idle_connections(), 0, "reused");
        assert_eq!((db.version(), db.epoch()), (1, "epoch-1"));
        assert!(db.rows(&ids(&["z"])).unwrap().is_empty());
        assert_eq!(db.rows(&ids(&["a", "b", "c"])).unwrap().len(), 3);
        let extra: i64 = sql(&db)
            .query_row("SELECT COUNT(*) FROM sqlite_master WHERE name = 'extra'", [], |r| r.get(0))
            .unwrap();
        assert_eq!(extra, 0);
        let trusted: i64 = sql(&db).query_row("PRAGMA trusted_schema", [], |r| r.get(0)).unwrap();
        assert_eq!(trusted, 0, "the connection's settings hold");
    }

    #[test]
    fn a_large_or_refused_database_leaves_no_connection() {
        let good = sample();
        let hostile = tamper(&good, "CREATE VIEW v AS SELECT 1;");
        no_idle_connections();
        // Room past the bound (the buffer may come to hold it).
        drop(RemoteDb::from_bytes_with_room(&good, IDLE_BYTES_MAX + 1).unwrap());
        assert_eq!(idle_connections(), 0);
        // A database grown past the bound by its commits.
        let mut db = RemoteDb::create("e1").unwrap();
        let big = "x".repeat(4000);
        let rows: Vec<RemoteRow> = (0..400)
            .map(|i| {
                let mut r = row(&format!("r{i}"), 1);
                r.meta.label = Some(big.clone());
                r
            })
            .collect();
        db.commit(&rows, 1, "now").unwrap();
        assert!(db.bytes().unwrap().len() > IDLE_BYTES_MAX);
        drop(db);
        assert_eq!(idle_connections(), 0);
        // A refused database's connection (it read that schema) is dropped.
        drop(RemoteDb::from_bytes(&good).unwrap());
        assert_eq!(idle_connections(), 1);
        assert!(RemoteDb::from_bytes(&hostile).is_err());
        assert_eq!(idle_connections(), 0);
    }
}
