//! The data model shared by every side of the sync: file metadata, local rows,
//! remote rows, and the validation that guards every value that becomes a path.
//!
//! Everything that arrives from the remote is untrusted. The constructors and
//! `validate` functions here are the single place where a string is allowed to
//! turn into a blob path; nothing else in the crate builds paths.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::hlc::Hlc;

/// Longest accepted `stable_id`, in bytes.
pub const STABLE_ID_LEN_MAX: usize = 64;
/// Longest accepted free-text metadata field (filename, label, doc_id, …), in bytes.
pub const TEXT_FIELD_BYTES_MAX: usize = 4096;
/// Longest accepted JSON metadata column, in bytes.
pub const JSON_FIELD_BYTES_MAX: usize = 256 * 1024;

/// Local `sync_status` of a row, exactly the strings the app stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncStatus {
    /// Matches the remote as of the row's `remote_version`.
    Synced,
    /// Changed locally (content and/or metadata) since the last sync.
    Modified,
    /// Deleted locally; the tombstone has not reached the remote yet.
    PendingDelete,
    /// Deleted, and the deletion is recorded on the remote.
    DeletionSynced,
    /// Both sides changed incompatibly; waits for a resolution.
    Conflict,
}

impl SyncStatus {
    /// The string stored in the app's `sync_status` column.
    pub fn as_str(self) -> &'static str {
        match self {
            SyncStatus::Synced => "synced",
            SyncStatus::Modified => "modified",
            SyncStatus::PendingDelete => "pending_delete",
            SyncStatus::DeletionSynced => "deletion_synced",
            SyncStatus::Conflict => "conflict",
        }
    }

    /// Parses the app's column value. The app's own legacy value
    /// `pending_upload` (seed, "Sync Operations") means the same as `modified`.
    pub fn parse(s: &str) -> Option<SyncStatus> {
        Some(match s {
            "synced" => SyncStatus::Synced,
            "modified" | "pending_upload" => SyncStatus::Modified,
            "pending_delete" => SyncStatus::PendingDelete,
            "deletion_synced" => SyncStatus::DeletionSynced,
            "conflict" => SyncStatus::Conflict,
            _ => return None,
        })
    }

    /// True when the row carries a local change the next sync must push.
    pub fn is_pending(self) -> bool {
        matches!(self, SyncStatus::Modified | SyncStatus::PendingDelete)
    }
}

impl fmt::Display for SyncStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A content hash: 64 lowercase hex digits of SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ContentHash(String);

impl ContentHash {
    /// Validates `s` as a lowercase hex SHA-256 digest.
    pub fn parse(s: &str) -> Result<ContentHash, InvalidValue> {
        let ok = s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if ok {
            Ok(ContentHash(s.to_owned()))
        } else {
            Err(InvalidValue::new("id", s, "must be 64 lowercase hex digits (SHA-256)"))
        }
    }

    /// Hashes `bytes`.
    pub fn of(bytes: &[u8]) -> ContentHash {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(bytes);
        let mut hex = String::with_capacity(64);
        for b in digest.iter() {
            hex.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
            hex.push(char::from(b"0123456789abcdef"[usize::from(b & 0xf)]));
        }
        ContentHash(hex)
    }

    /// The hex string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ContentHash {
    type Error = InvalidValue;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        ContentHash::parse(&s)
    }
}

impl From<ContentHash> for String {
    fn from(h: ContentHash) -> String {
        h.0
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A value from the remote or the app that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field} {value:?}: {reason}")]
pub struct InvalidValue {
    /// Which field.
    pub field: String,
    /// The offending value, cut to 80 characters.
    pub value: String,
    /// Why it was refused.
    pub reason: String,
}

impl InvalidValue {
    /// Builds the error, shortening long values so error messages stay readable.
    pub fn new(field: &str, value: &str, reason: &str) -> InvalidValue {
        let value: String = value.chars().take(80).collect();
        InvalidValue { field: field.to_owned(), value, reason: reason.to_owned() }
    }
}

/// Validates a `stable_id`: 1..=64 characters of `[A-Za-z0-9_-]`.
pub fn validate_stable_id(s: &str) -> Result<(), InvalidValue> {
    let ok = !s.is_empty()
        && s.len() <= STABLE_ID_LEN_MAX
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(InvalidValue::new("stable_id", s, "must be 1-64 characters of [A-Za-z0-9_-]"))
    }
}

/// File extension for a `file_type` (SPEC §2), or an error for anything that
/// could not safely become part of a path.
pub fn extension_for(file_type: &str) -> Result<String, InvalidValue> {
    match file_type {
        "pdf" => Ok(".pdf".to_owned()),
        "tei" => Ok(".tei.xml".to_owned()),
        "rng" => Ok(".rng".to_owned()),
        other => {
            let ok = !other.is_empty()
                && other.len() <= 16
                && other.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
            if ok {
                Ok(format!(".{other}"))
            } else {
                Err(InvalidValue::new("file_type", other, "must be 1-16 characters of [a-z0-9]"))
            }
        }
    }
}

/// A reference to one stored blob: its content hash and extension. The only
/// way to name a blob path; both halves are validated at construction.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BlobRef {
    /// Content hash.
    pub hash: ContentHash,
    /// Extension including the leading dot, e.g. `.tei.xml`.
    pub ext: String,
}

impl BlobRef {
    /// Builds the reference for content `hash` of a file of `file_type`.
    pub fn new(hash: ContentHash, file_type: &str) -> Result<BlobRef, InvalidValue> {
        Ok(BlobRef { hash, ext: extension_for(file_type)? })
    }

    /// Relative path, local and remote alike: `{h[0..2]}/{h}{ext}`.
    pub fn path(&self) -> String {
        let h = self.hash.as_str();
        format!("{}/{}{}", &h[..2], h, self.ext)
    }

    /// The shard folder, `{h[0..2]}`.
    pub fn shard(&self) -> &str {
        &self.hash.as_str()[..2]
    }
}

/// The synced metadata of one logical file: everything that travels through
/// the remote `metadata.db` besides identity, content hash and deletion.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FileMeta {
    /// Original filename.
    pub filename: String,
    /// Document id, e.g. a DOI.
    pub doc_id: String,
    /// Kind of document id, e.g. `doi`.
    pub doc_id_type: String,
    /// `pdf`, `tei`, `rng`, or another `[a-z0-9]{1,16}` type.
    pub file_type: String,
    /// MIME type.
    pub mime_type: Option<String>,
    /// Content size in bytes.
    pub file_size: Option<i64>,
    /// Human label.
    pub label: Option<String>,
    /// Variant name (e.g. the extraction model).
    pub variant: Option<String>,
    /// Application-level version number of the file.
    pub version: Option<i64>,
    /// Gold-standard flag.
    pub is_gold_standard: bool,
    /// JSON array of collection names.
    pub doc_collections: String,
    /// JSON object.
    pub doc_metadata: String,
    /// JSON object.
    pub file_metadata: String,
}

impl FileMeta {
    /// A digest of everything but `file_size` (which follows the content):
    /// equal digests mean equal metadata. Stable across builds and targets
    /// (SHA-256 of the fields' JSON in declaration order), because it is
    /// stored as a row's metadata base and compared by later versions.
    pub fn digest(&self) -> ContentHash {
        let meta = FileMeta { file_size: None, ..self.clone() };
        ContentHash::of(&serde_json::to_vec(&meta).expect("plain data serializes"))
    }

    /// Checks every field an attacker could abuse: lengths, the file type
    /// (it becomes an extension), and that the JSON columns are JSON of the
    /// right shape.
    pub fn validate(&self) -> Result<(), InvalidValue> {
        for (field, value) in [
            ("filename", Some(self.filename.as_str())),
            ("doc_id", Some(self.doc_id.as_str())),
            ("doc_id_type", Some(self.doc_id_type.as_str())),
            ("mime_type", self.mime_type.as_deref()),
            ("label", self.label.as_deref()),
            ("variant", self.variant.as_deref()),
        ] {
            if let Some(v) = value
                && v.len() > TEXT_FIELD_BYTES_MAX
            {
                let reason = format!("longer than {TEXT_FIELD_BYTES_MAX} bytes ({} bytes)", v.len());
                return Err(InvalidValue::new(field, v, &reason));
            }
        }
        extension_for(&self.file_type)?;
        if let Some(size) = self.file_size
            && size < 0
        {
            return Err(InvalidValue::new("file_size", &size.to_string(), "must not be negative"));
        }
        validate_json("doc_collections", &self.doc_collections, JsonShape::Array)?;
        validate_json("doc_metadata", &self.doc_metadata, JsonShape::Object)?;
        validate_json("file_metadata", &self.file_metadata, JsonShape::Object)?;
        Ok(())
    }
}

#[derive(Clone, Copy)]
enum JsonShape {
    Array,
    Object,
}

fn validate_json(field: &str, value: &str, shape: JsonShape) -> Result<(), InvalidValue> {
    if value.len() > JSON_FIELD_BYTES_MAX {
        return Err(InvalidValue::new(field, value, "JSON column too large"));
    }
    let parsed: serde_json::Value = serde_json::from_str(value)
        .map_err(|e| InvalidValue::new(field, value, &format!("not JSON: {e}")))?;
    let ok = match shape {
        JsonShape::Array => parsed.is_array(),
        JsonShape::Object => parsed.is_object(),
    };
    if ok {
        Ok(())
    } else {
        let want = match shape {
            JsonShape::Array => "a JSON array",
            JsonShape::Object => "a JSON object",
        };
        Err(InvalidValue::new(field, value, &format!("must be {want}")))
    }
}

/// What a conflict is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConflictKind {
    /// Content changed on both sides to different hashes.
    BothModified,
    /// Changed here, deleted on the remote.
    ModifiedLocallyDeletedRemotely,
    /// Deleted here, changed on the remote.
    DeletedLocallyModifiedRemotely,
}

impl ConflictKind {
    /// Stable snake_case name, used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            ConflictKind::BothModified => "both_modified",
            ConflictKind::ModifiedLocallyDeletedRemotely => "modified_locally_deleted_remotely",
            ConflictKind::DeletedLocallyModifiedRemotely => "deleted_locally_modified_remotely",
        }
    }
}

/// What the sync saw of the remote side when it recorded a conflict. Kept with
/// the local row so `conflicts` can be answered offline and `resolve` knows
/// which remote version it is resolving against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictRecord {
    /// Kind of conflict.
    pub kind: ConflictKind,
    /// The remote row's content hash.
    pub remote_hash: ContentHash,
    /// The remote row's `remote_version` when the conflict was seen.
    pub remote_version: i64,
    /// Whether the remote row was a tombstone.
    pub remote_deleted: bool,
    /// The remote row's `updated_at`.
    pub remote_updated_at: String,
    /// The local row's base (`remote_version`) when the conflict was seen.
    pub base_version: Option<i64>,
    /// The local row's base content (`sync_hash`) when the conflict was seen.
    pub base_hash: Option<ContentHash>,
}

/// One row of the app's local `files` table, as the core sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalRow {
    /// Logical file id; never changes.
    pub stable_id: String,
    /// Current content hash.
    pub id: ContentHash,
    /// Synced metadata.
    pub meta: FileMeta,
    /// Deleted locally.
    pub deleted: bool,
    /// Sync state.
    pub sync_status: SyncStatus,
    /// Base: the row's `remote_version` at the last sync (none: never synced).
    pub remote_version: Option<i64>,
    /// Base: the content hash at the last sync.
    pub sync_hash: Option<ContentHash>,
    /// Base: [`FileMeta::digest`] of the metadata at the last sync (kept by
    /// the host beside the app's table, like `hlc`). None when unknown: never
    /// synced, or synced before davsync recorded it. With it the compare tells
    /// which side changed the metadata; without it, a change on either side
    /// counts as a change on both and last-write-wins decides.
    pub sync_meta: Option<ContentHash>,
    /// When the app last changed the row, milliseconds since the Unix epoch
    /// on the app's clock (0 when unknown).
    pub local_modified_at_ms: i64,
    /// HLC stamp of the row's last synced write (kept by the host beside the
    /// app's table; none for rows never synced by davsync).
    pub hlc: Option<Hlc>,
    /// Set while `sync_status` is `conflict`.
    pub conflict: Option<ConflictRecord>,
}

impl LocalRow {
    /// The blob this row's content lives in.
    pub fn blob(&self) -> Result<BlobRef, InvalidValue> {
        BlobRef::new(self.id.clone(), &self.meta.file_type)
    }

    /// A cheap summary used to decide which rows need a full look.
    pub fn base(&self) -> RowBase {
        RowBase {
            stable_id: self.stable_id.clone(),
            sync_status: self.sync_status,
            remote_version: self.remote_version,
            deleted: self.deleted,
        }
    }
}

/// The thin per-row summary the local store lists for every row, so the
/// compare step can find the rows that need work without loading them all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowBase {
    /// Logical file id.
    pub stable_id: String,
    /// Sync state.
    pub sync_status: SyncStatus,
    /// Row version at the last sync.
    pub remote_version: Option<i64>,
    /// Deleted locally.
    pub deleted: bool,
}

/// One row of the remote `file_metadata` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteRow {
    /// Logical file id (primary key).
    pub stable_id: String,
    /// Content hash.
    pub id: ContentHash,
    /// Synced metadata.
    pub meta: FileMeta,
    /// Tombstone.
    pub deleted: bool,
    /// Commit in which the row last changed.
    pub remote_version: i64,
    /// Readable UTC ISO-8601 time of the last change.
    pub updated_at: String,
    /// Hybrid-logical-clock stamp of the last change.
    pub hlc: Hlc,
}

impl RemoteRow {
    /// The blob this row's content lives in.
    pub fn blob(&self) -> Result<BlobRef, InvalidValue> {
        BlobRef::new(self.id.clone(), &self.meta.file_type)
    }

    /// Validates every field that came from the remote.
    pub fn validate(&self) -> Result<(), InvalidValue> {
        validate_stable_id(&self.stable_id)?;
        self.meta.validate()?;
        if self.remote_version < 1 {
            return Err(InvalidValue::new(
                "remote_version",
                &self.remote_version.to_string(),
                "must be at least 1",
            ));
        }
        if self.updated_at.len() > 64 {
            return Err(InvalidValue::new("updated_at", &self.updated_at, "too long"));
        }
        Ok(())
    }

    /// True when `local` carries exactly this row's synced state
    /// (content, metadata, deletion).
    pub fn same_state_as(&self, local: &LocalRow) -> bool {
        self.id == local.id && self.meta == local.meta && self.deleted == local.deleted
    }
}

/// Formats milliseconds since the Unix epoch as UTC ISO-8601
/// (`2024-05-01T12:00:00.000Z`).
pub fn iso8601_utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z", sod / 3600, (sod % 3600) / 60, sod % 60)
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions_follow_the_spec_and_refuse_path_tricks() {
        assert_eq!(extension_for("pdf").unwrap(), ".pdf");
        assert_eq!(extension_for("tei").unwrap(), ".tei.xml");
        assert_eq!(extension_for("rng").unwrap(), ".rng");
        assert_eq!(extension_for("json").unwrap(), ".json");
        for bad in ["", "../x", "a/b", "PDF", "x.y", "abcdefghijklmnopq", "a\0"] {
            assert!(extension_for(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn content_hash_accepts_only_lowercase_sha256_hex() {
        let h = ContentHash::of(b"hello");
        assert_eq!(h.as_str(), "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
        assert!(ContentHash::parse(h.as_str()).is_ok());
        assert!(ContentHash::parse(&h.as_str().to_uppercase()).is_err());
        assert!(ContentHash::parse("../../etc/passwd").is_err());
        assert!(ContentHash::parse(&h.as_str()[..63]).is_err());
    }

    #[test]
    fn blob_path_is_sharded_by_hash_prefix() {
        let b = BlobRef::new(ContentHash::of(b"hello"), "tei").unwrap();
        assert_eq!(b.path(), format!("2c/{}.tei.xml", b.hash));
        assert_eq!(b.shard(), "2c");
    }

    #[test]
    fn stable_ids_refuse_separators() {
        assert!(validate_stable_id("abc-DEF_123").is_ok());
        for bad in ["", "a/b", "..", "a b", &"x".repeat(65)] {
            assert!(validate_stable_id(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn meta_validation_checks_json_shape_and_sizes() {
        let ok = FileMeta {
            file_type: "pdf".into(),
            doc_collections: "[]".into(),
            doc_metadata: "{}".into(),
            file_metadata: "{}".into(),
            ..FileMeta::default()
        };
        ok.validate().unwrap();
        let bad_json = FileMeta { doc_metadata: "{not json".into(), ..ok.clone() };
        assert_eq!(bad_json.validate().unwrap_err().field, "doc_metadata");
        let wrong_shape = FileMeta { doc_collections: "{}".into(), ..ok.clone() };
        assert_eq!(wrong_shape.validate().unwrap_err().field, "doc_collections");
        let huge = FileMeta { label: Some("x".repeat(10 * 1024 * 1024)), ..ok.clone() };
        assert_eq!(huge.validate().unwrap_err().field, "label");
        let bad_type = FileMeta { file_type: "../../x".into(), ..ok };
        assert_eq!(bad_type.validate().unwrap_err().field, "file_type");
    }

    #[test]
    fn iso8601_formats_known_instants() {
        assert_eq!(iso8601_utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601_utc(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(iso8601_utc(1_700_000_000_000), "2023-11-14T22:13:20.000Z");
    }

    #[test]
    fn legacy_pending_upload_reads_as_modified() {
        assert_eq!(SyncStatus::parse("pending_upload"), Some(SyncStatus::Modified));
        assert_eq!(SyncStatus::parse("bogus"), None);
        for s in [
            SyncStatus::Synced,
            SyncStatus::Modified,
            SyncStatus::PendingDelete,
            SyncStatus::DeletionSynced,
            SyncStatus::Conflict,
        ] {
            assert_eq!(SyncStatus::parse(s.as_str()), Some(s));
        }
    }
}
