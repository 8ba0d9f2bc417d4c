//! Conversions between the types wasmtime generates from `wit/davsync.wit`
//! and `davsync-core`'s own types. `_out` functions go host → component,
//! `_in` functions component → host. Values from the component are checked
//! like any other input: a bad hash or extension is an error, never a path.

use davsync_core::hlc::Hlc;
use davsync_core::model::{
    BlobRef, ConflictKind, ConflictRecord, ContentHash, FileMeta, InvalidValue, LocalRow, RowBase, SyncStatus,
};
use davsync_core::ports::{
    BlobError, LocalCommit, LocalError, Phase, Precondition, ProgressEvent, RemoteError, RowWrite,
};
use davsync_core::{
    ConflictInfo, FileError, ResolutionKind, ResolveOutcome, StatusReport, SyncError, SyncOptions,
    SyncSummary,
};

use crate::component::{imports as w, wit_engine as e};

pub(crate) fn hash_in(s: &str) -> Result<ContentHash, InvalidValue> {
    ContentHash::parse(s)
}

pub(crate) fn local_invalid(e: InvalidValue) -> w::local_store::LocalError {
    w::local_store::LocalError::Invalid(e.to_string())
}

fn status_out(s: SyncStatus) -> w::types::SyncStatus {
    match s {
        SyncStatus::Synced => w::types::SyncStatus::Synced,
        SyncStatus::Modified => w::types::SyncStatus::Modified,
        SyncStatus::PendingDelete => w::types::SyncStatus::PendingDelete,
        SyncStatus::DeletionSynced => w::types::SyncStatus::DeletionSynced,
        SyncStatus::Conflict => w::types::SyncStatus::Conflict,
    }
}

fn status_in(s: w::types::SyncStatus) -> SyncStatus {
    match s {
        w::types::SyncStatus::Synced => SyncStatus::Synced,
        w::types::SyncStatus::Modified => SyncStatus::Modified,
        w::types::SyncStatus::PendingDelete => SyncStatus::PendingDelete,
        w::types::SyncStatus::DeletionSynced => SyncStatus::DeletionSynced,
        w::types::SyncStatus::Conflict => SyncStatus::Conflict,
    }
}

fn kind_out(k: ConflictKind) -> w::types::ConflictKind {
    match k {
        ConflictKind::BothModified => w::types::ConflictKind::BothModified,
        ConflictKind::ModifiedLocallyDeletedRemotely => {
            w::types::ConflictKind::ModifiedLocallyDeletedRemotely
        }
        ConflictKind::DeletedLocallyModifiedRemotely => {
            w::types::ConflictKind::DeletedLocallyModifiedRemotely
        }
    }
}

fn kind_in(k: w::types::ConflictKind) -> ConflictKind {
    match k {
        w::types::ConflictKind::BothModified => ConflictKind::BothModified,
        w::types::ConflictKind::ModifiedLocallyDeletedRemotely => {
            ConflictKind::ModifiedLocallyDeletedRemotely
        }
        w::types::ConflictKind::DeletedLocallyModifiedRemotely => {
            ConflictKind::DeletedLocallyModifiedRemotely
        }
    }
}

fn meta_out(m: FileMeta) -> w::types::FileMeta {
    w::types::FileMeta {
        filename: m.filename,
        doc_id: m.doc_id,
        doc_id_type: m.doc_id_type,
        file_type: m.file_type,
        mime_type: m.mime_type,
        file_size: m.file_size,
        label: m.label,
        variant: m.variant,
        version: m.version,
        is_gold_standard: m.is_gold_standard,
        doc_collections: m.doc_collections,
        doc_metadata: m.doc_metadata,
        file_metadata: m.file_metadata,
    }
}

fn meta_in(m: w::types::FileMeta) -> FileMeta {
    FileMeta {
        filename: m.filename,
        doc_id: m.doc_id,
        doc_id_type: m.doc_id_type,
        file_type: m.file_type,
        mime_type: m.mime_type,
        file_size: m.file_size,
        label: m.label,
        variant: m.variant,
        version: m.version,
        is_gold_standard: m.is_gold_standard,
        doc_collections: m.doc_collections,
        doc_metadata: m.doc_metadata,
        file_metadata: m.file_metadata,
    }
}

fn conflict_out(c: ConflictRecord) -> w::types::ConflictRecord {
    w::types::ConflictRecord {
        kind: kind_out(c.kind),
        remote_hash: c.remote_hash.to_string(),
        remote_version: c.remote_version,
        remote_deleted: c.remote_deleted,
        remote_updated_at: c.remote_updated_at,
        base_version: c.base_version,
        base_hash: c.base_hash.map(|h| h.to_string()),
    }
}

fn conflict_in(c: w::types::ConflictRecord) -> Result<ConflictRecord, InvalidValue> {
    Ok(ConflictRecord {
        kind: kind_in(c.kind),
        remote_hash: hash_in(&c.remote_hash)?,
        remote_version: c.remote_version,
        remote_deleted: c.remote_deleted,
        remote_updated_at: c.remote_updated_at,
        base_version: c.base_version,
        base_hash: c.base_hash.as_deref().map(hash_in).transpose()?,
    })
}

pub(crate) fn local_row_out(r: LocalRow) -> w::types::LocalRow {
    w::types::LocalRow {
        stable_id: r.stable_id,
        id: r.id.to_string(),
        meta: meta_out(r.meta),
        deleted: r.deleted,
        sync_status: status_out(r.sync_status),
        remote_version: r.remote_version,
        sync_hash: r.sync_hash.map(|h| h.to_string()),
        sync_meta: r.sync_meta.map(|h| h.to_string()),
        local_modified_at_ms: r.local_modified_at_ms,
        hlc: r.hlc.map(|h| h.to_string()),
        conflict: r.conflict.map(conflict_out),
    }
}

fn local_row_in(r: w::types::LocalRow) -> Result<LocalRow, InvalidValue> {
    Ok(LocalRow {
        stable_id: r.stable_id,
        id: hash_in(&r.id)?,
        meta: meta_in(r.meta),
        deleted: r.deleted,
        sync_status: status_in(r.sync_status),
        remote_version: r.remote_version,
        sync_hash: r.sync_hash.as_deref().map(hash_in).transpose()?,
        sync_meta: r.sync_meta.as_deref().map(hash_in).transpose()?,
        local_modified_at_ms: r.local_modified_at_ms,
        hlc: r.hlc.as_deref().map(Hlc::parse).transpose()?,
        conflict: r.conflict.map(conflict_in).transpose()?,
    })
}

pub(crate) fn row_base_out(b: RowBase) -> w::types::RowBase {
    w::types::RowBase {
        stable_id: b.stable_id,
        sync_status: status_out(b.sync_status),
        remote_version: b.remote_version,
        deleted: b.deleted,
    }
}

pub(crate) fn local_commit_in(c: w::local_store::LocalCommit) -> Result<LocalCommit, InvalidValue> {
    Ok(LocalCommit { writes: row_writes_in(c.writes)?, meta: c.meta })
}

pub(crate) fn row_writes_in(writes: Vec<w::local_store::RowWrite>) -> Result<Vec<RowWrite>, InvalidValue> {
    writes
        .into_iter()
        .map(|w| {
            Ok(RowWrite { row: local_row_in(w.row)?, expected: w.expected.map(local_row_in).transpose()? })
        })
        .collect()
}

pub(crate) fn local_error_out(e: LocalError) -> w::local_store::LocalError {
    use w::local_store::LocalError as W;
    match e {
        LocalError::Busy => W::Busy,
        LocalError::ReadOnly => W::ReadOnly,
        LocalError::Invalid(m) => W::Invalid(m),
        other => W::Other(other.to_string()),
    }
}

fn local_error_in(e: w::local_store::LocalError) -> LocalError {
    use w::local_store::LocalError as W;
    match e {
        W::Busy => LocalError::Busy,
        W::ReadOnly => LocalError::ReadOnly,
        W::Invalid(m) => LocalError::Invalid(m),
        W::Other(m) => LocalError::Other(m),
    }
}

pub(crate) fn remote_error_out(e: RemoteError) -> w::remote::RemoteError {
    use w::remote::RemoteError as W;
    match e {
        RemoteError::NotFound => W::NotFound,
        RemoteError::AlreadyExists => W::AlreadyExists,
        RemoteError::ParentMissing => W::ParentMissing,
        RemoteError::PreconditionFailed => W::PreconditionFailed,
        RemoteError::Locked => W::Locked,
        RemoteError::Unauthorized => W::Unauthorized,
        RemoteError::InsufficientStorage => W::InsufficientStorage,
        RemoteError::TooLarge { bytes_max } => W::TooLarge(bytes_max),
        RemoteError::Unavailable(m) => W::Unavailable(m),
        RemoteError::Protocol { status, message } => W::Protocol((status, message)),
        other => W::Protocol((0, other.to_string())),
    }
}

pub(crate) fn remote_error_in(e: w::remote::RemoteError) -> RemoteError {
    use w::remote::RemoteError as W;
    match e {
        W::NotFound => RemoteError::NotFound,
        W::AlreadyExists => RemoteError::AlreadyExists,
        W::ParentMissing => RemoteError::ParentMissing,
        W::PreconditionFailed => RemoteError::PreconditionFailed,
        W::Locked => RemoteError::Locked,
        W::Unauthorized => RemoteError::Unauthorized,
        W::InsufficientStorage => RemoteError::InsufficientStorage,
        W::TooLarge(bytes_max) => RemoteError::TooLarge { bytes_max },
        W::Unavailable(m) => RemoteError::Unavailable(m),
        W::Protocol((status, message)) => RemoteError::Protocol { status, message },
    }
}

pub(crate) fn precondition_in(p: w::remote::Precondition) -> Precondition {
    match p {
        w::remote::Precondition::None => Precondition::None,
        w::remote::Precondition::IfMatch(etag) => Precondition::IfMatch(etag),
        w::remote::Precondition::IfNoneMatchAny => Precondition::IfNoneMatchAny,
    }
}

pub(crate) fn blob_in(b: w::types::BlobRef) -> Result<BlobRef, w::blobs::BlobError> {
    let hash = hash_in(&b.hash).map_err(|e| w::blobs::BlobError::LocalIo(e.to_string()))?;
    // The extension must be one the model itself would produce.
    let ok = b.ext.len() <= 17
        && b.ext.starts_with('.')
        && b.ext[1..]
            .split('.')
            .all(|p| !p.is_empty() && p.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
    if !ok {
        return Err(w::blobs::BlobError::LocalIo(format!("invalid blob extension {:?}", b.ext)));
    }
    Ok(BlobRef { hash, ext: b.ext })
}

pub(crate) fn blob_error_out(e: BlobError) -> w::blobs::BlobError {
    use w::blobs::BlobError as W;
    match e {
        BlobError::LocalMissing(h) => W::LocalMissing(h),
        BlobError::HashMismatch { expected, actual } => {
            W::HashMismatch((expected.to_string(), actual.to_string()))
        }
        BlobError::TooLarge { bytes_max } => W::TooLarge(bytes_max),
        BlobError::Remote(r) => W::Remote(remote_error_out(r)),
        BlobError::LocalIo(m) => W::LocalIo(m),
        other => W::LocalIo(other.to_string()),
    }
}

pub(crate) fn progress_in(p: w::progress::ProgressEvent) -> ProgressEvent {
    use w::progress::Phase as W;
    let phase = match p.phase {
        W::Check => Phase::Check,
        W::Lock => Phase::Lock,
        W::Fetch => Phase::Fetch,
        W::Compare => Phase::Compare,
        W::Upload => Phase::Upload,
        W::Download => Phase::Download,
        W::Commit => Phase::Commit,
        W::Apply => Phase::Apply,
        W::Done => Phase::Done,
    };
    ProgressEvent { percent: p.percent.min(100), phase, message: p.message }
}

// ---------------------------------------------------------------------------
// The engine export.
// ---------------------------------------------------------------------------

pub(crate) fn options_out(o: &SyncOptions) -> e::SyncOptions {
    e::SyncOptions {
        force: o.force,
        lease_ttl_ms: o.lease_ttl_ms,
        lock_wait_ms: o.lock_wait_ms,
        mass_delete_percent: o.mass_delete_percent,
        mass_delete_files_min: o.mass_delete_files_min,
        commit_attempts_max: o.commit_attempts_max,
        fold_commits: o.fold_commits,
        remote_retries_max: o.remote_retries_max,
        blob_bytes_max: o.blob_bytes_max,
        metadata_bytes_max: o.metadata_bytes_max,
        host_name: o.host_name.clone(),
    }
}

pub(crate) fn summary_in(s: e::SyncSummary) -> SyncSummary {
    SyncSummary {
        skipped: s.skipped,
        uploaded: s.uploaded,
        downloaded: s.downloaded,
        deleted_local: s.deleted_local,
        deleted_remote: s.deleted_remote,
        metadata_synced: s.metadata_synced,
        conflicts: s.conflicts,
        errors: s.errors,
        file_errors: s
            .file_errors
            .into_iter()
            .map(|f| FileError { stable_id: f.stable_id, message: f.message })
            .collect(),
        new_version: s.new_version,
        duration_ms: s.duration_ms,
        epoch_changed: s.epoch_changed,
    }
}

pub(crate) fn status_report_in(s: e::StatusReport) -> StatusReport {
    StatusReport {
        needs_sync: s.needs_sync,
        local_version: s.local_version,
        remote_version: s.remote_version,
        unsynced_count: s.unsynced_count,
        last_sync_time: s.last_sync_time,
    }
}

pub(crate) fn conflict_info_in(c: e::ConflictInfo) -> ConflictInfo {
    ConflictInfo {
        stable_id: c.stable_id,
        filename: c.filename,
        doc_id: c.doc_id,
        local_hash: c.local_hash,
        local_deleted: c.local_deleted,
        local_modified_at_ms: c.local_modified_at_ms,
        remote_hash: c.remote_hash,
        remote_deleted: c.remote_deleted,
        remote_modified_at: c.remote_modified_at,
        kind: kind_in(c.kind),
    }
}

pub(crate) fn resolution_out(k: &ResolutionKind) -> e::ResolutionKind {
    match k {
        ResolutionKind::LocalWins => e::ResolutionKind::LocalWins,
        ResolutionKind::RemoteWins => e::ResolutionKind::RemoteWins,
        ResolutionKind::KeepBoth { variant } => e::ResolutionKind::KeepBoth(variant.clone()),
    }
}

pub(crate) fn outcome_in(o: e::ResolveOutcome) -> ResolveOutcome {
    ResolveOutcome { stable_id: o.stable_id, new_stable_id: o.new_stable_id, message: o.message }
}

pub(crate) fn sync_error_in(e: e::SyncError) -> SyncError {
    match e {
        e::SyncError::Local(l) => SyncError::Local(local_error_in(l)),
        e::SyncError::Remote(r) => SyncError::Remote(remote_error_in(r)),
        e::SyncError::RemoteCorrupt(m) => SyncError::RemoteCorrupt(m),
        e::SyncError::RemoteTooNew((format, supported)) => SyncError::RemoteTooNew { format, supported },
        e::SyncError::LockHeld((holder, expires_in_ms)) => SyncError::LockHeld { holder, expires_in_ms },
        e::SyncError::LeaseLost => SyncError::LeaseLost,
        e::SyncError::MassDelete((would_delete, live_total)) => {
            SyncError::MassDelete { would_delete, live_total }
        }
        e::SyncError::Contention(attempts) => SyncError::Contention { attempts },
        e::SyncError::NotFound(id) => SyncError::NotFound(id),
        e::SyncError::NotInConflict(id) => SyncError::NotInConflict(id),
        e::SyncError::Invalid(m) => SyncError::Invalid(m),
    }
}
