//! Conversions between the WIT records (generated in `crate::bindings`) and
//! the core's model. Pure data mapping, field by field, no decisions.
//!
//! Values coming from the host are parsed with the core's own validators
//! (`ContentHash::parse`, `Hlc::parse`): a bad value from the local store is a
//! `LocalError::Invalid`, never a panic. An `Hlc` travels as its text form.

use davsync_core::api as core_api;
use davsync_core::hlc::Hlc;
use davsync_core::model::{self as core_model, ContentHash, InvalidValue};
use davsync_core::ports as core_ports;

use crate::bindings::davsync::sync::{
    local_store as wit_local, progress as wit_progress, types as wit_types,
};
use crate::bindings::exports::davsync::sync::engine as wit_engine;
use crate::remote_ports::remote_error_to_wit;

// ---------------------------------------------------------------------------
// Shared types
// ---------------------------------------------------------------------------

fn hash_from_wit(s: String) -> Result<ContentHash, InvalidValue> {
    ContentHash::try_from(s)
}

fn sync_status_from_wit(s: wit_types::SyncStatus) -> core_model::SyncStatus {
    use core_model::SyncStatus as C;
    use wit_types::SyncStatus as W;
    match s {
        W::Synced => C::Synced,
        W::Modified => C::Modified,
        W::PendingDelete => C::PendingDelete,
        W::DeletionSynced => C::DeletionSynced,
        W::Conflict => C::Conflict,
    }
}

fn sync_status_to_wit(s: core_model::SyncStatus) -> wit_types::SyncStatus {
    use core_model::SyncStatus as C;
    use wit_types::SyncStatus as W;
    match s {
        C::Synced => W::Synced,
        C::Modified => W::Modified,
        C::PendingDelete => W::PendingDelete,
        C::DeletionSynced => W::DeletionSynced,
        C::Conflict => W::Conflict,
    }
}

fn conflict_kind_from_wit(k: wit_types::ConflictKind) -> core_model::ConflictKind {
    use core_model::ConflictKind as C;
    use wit_types::ConflictKind as W;
    match k {
        W::BothModified => C::BothModified,
        W::ModifiedLocallyDeletedRemotely => C::ModifiedLocallyDeletedRemotely,
        W::DeletedLocallyModifiedRemotely => C::DeletedLocallyModifiedRemotely,
    }
}

fn conflict_kind_to_wit(k: core_model::ConflictKind) -> wit_types::ConflictKind {
    use core_model::ConflictKind as C;
    use wit_types::ConflictKind as W;
    match k {
        C::BothModified => W::BothModified,
        C::ModifiedLocallyDeletedRemotely => W::ModifiedLocallyDeletedRemotely,
        C::DeletedLocallyModifiedRemotely => W::DeletedLocallyModifiedRemotely,
    }
}

fn file_meta_from_wit(m: wit_types::FileMeta) -> core_model::FileMeta {
    core_model::FileMeta {
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

fn file_meta_to_wit(m: &core_model::FileMeta) -> wit_types::FileMeta {
    wit_types::FileMeta {
        filename: m.filename.clone(),
        doc_id: m.doc_id.clone(),
        doc_id_type: m.doc_id_type.clone(),
        file_type: m.file_type.clone(),
        mime_type: m.mime_type.clone(),
        file_size: m.file_size,
        label: m.label.clone(),
        variant: m.variant.clone(),
        version: m.version,
        is_gold_standard: m.is_gold_standard,
        doc_collections: m.doc_collections.clone(),
        doc_metadata: m.doc_metadata.clone(),
        file_metadata: m.file_metadata.clone(),
    }
}

fn conflict_record_from_wit(
    c: wit_types::ConflictRecord,
) -> Result<core_model::ConflictRecord, InvalidValue> {
    Ok(core_model::ConflictRecord {
        kind: conflict_kind_from_wit(c.kind),
        remote_hash: hash_from_wit(c.remote_hash)?,
        remote_version: c.remote_version,
        remote_deleted: c.remote_deleted,
        remote_updated_at: c.remote_updated_at,
        base_version: c.base_version,
        base_hash: c.base_hash.map(hash_from_wit).transpose()?,
    })
}

fn conflict_record_to_wit(c: &core_model::ConflictRecord) -> wit_types::ConflictRecord {
    wit_types::ConflictRecord {
        kind: conflict_kind_to_wit(c.kind),
        remote_hash: c.remote_hash.to_string(),
        remote_version: c.remote_version,
        remote_deleted: c.remote_deleted,
        remote_updated_at: c.remote_updated_at.clone(),
        base_version: c.base_version,
        base_hash: c.base_hash.as_ref().map(ContentHash::to_string),
    }
}

pub(crate) fn local_row_from_wit(r: wit_types::LocalRow) -> Result<core_model::LocalRow, InvalidValue> {
    Ok(core_model::LocalRow {
        stable_id: r.stable_id,
        id: hash_from_wit(r.id)?,
        meta: file_meta_from_wit(r.meta),
        deleted: r.deleted,
        sync_status: sync_status_from_wit(r.sync_status),
        remote_version: r.remote_version,
        sync_hash: r.sync_hash.map(hash_from_wit).transpose()?,
        sync_meta: r.sync_meta.map(hash_from_wit).transpose()?,
        local_modified_at_ms: r.local_modified_at_ms,
        hlc: r.hlc.as_deref().map(Hlc::parse).transpose()?,
        conflict: r.conflict.map(conflict_record_from_wit).transpose()?,
    })
}

fn local_row_to_wit(r: &core_model::LocalRow) -> wit_types::LocalRow {
    wit_types::LocalRow {
        stable_id: r.stable_id.clone(),
        id: r.id.to_string(),
        meta: file_meta_to_wit(&r.meta),
        deleted: r.deleted,
        sync_status: sync_status_to_wit(r.sync_status),
        remote_version: r.remote_version,
        sync_hash: r.sync_hash.as_ref().map(ContentHash::to_string),
        sync_meta: r.sync_meta.as_ref().map(ContentHash::to_string),
        local_modified_at_ms: r.local_modified_at_ms,
        hlc: r.hlc.as_ref().map(Hlc::to_string),
        conflict: r.conflict.as_ref().map(conflict_record_to_wit),
    }
}

pub(crate) fn row_base_from_wit(b: wit_types::RowBase) -> core_model::RowBase {
    core_model::RowBase {
        stable_id: b.stable_id,
        sync_status: sync_status_from_wit(b.sync_status),
        remote_version: b.remote_version,
        deleted: b.deleted,
    }
}

// ---------------------------------------------------------------------------
// local-store
// ---------------------------------------------------------------------------

pub(crate) fn local_error_from_wit(e: wit_local::LocalError) -> core_ports::LocalError {
    use core_ports::LocalError as C;
    use wit_local::LocalError as W;
    match e {
        W::Busy => C::Busy,
        W::ReadOnly => C::ReadOnly,
        W::Invalid(s) => C::Invalid(s),
        W::Other(s) => C::Other(s),
    }
}

fn local_error_to_wit(e: core_ports::LocalError) -> wit_local::LocalError {
    use core_ports::LocalError as C;
    use wit_local::LocalError as W;
    match e {
        C::Busy => W::Busy,
        C::ReadOnly => W::ReadOnly,
        C::Invalid(s) => W::Invalid(s),
        C::Other(s) => W::Other(s),
        // `LocalError` is `#[non_exhaustive]`; today every variant is listed
        // above. A future one travels as `other` until the WIT learns it.
        other => W::Other(other.to_string()),
    }
}

pub(crate) fn local_commit_to_wit(c: &core_ports::LocalCommit) -> wit_local::LocalCommit {
    wit_local::LocalCommit { writes: row_writes_to_wit(&c.writes), meta: c.meta.clone() }
}

pub(crate) fn row_writes_to_wit(writes: &[core_ports::RowWrite]) -> Vec<wit_local::RowWrite> {
    writes
        .iter()
        .map(|w| wit_local::RowWrite {
            row: local_row_to_wit(&w.row),
            expected: w.expected.as_ref().map(local_row_to_wit),
        })
        .collect()
}

// ---------------------------------------------------------------------------
// progress
// ---------------------------------------------------------------------------

pub(crate) fn progress_event_to_wit(e: core_ports::ProgressEvent) -> wit_progress::ProgressEvent {
    use core_ports::Phase as C;
    use wit_progress::Phase as W;
    let phase = match e.phase {
        C::Check => W::Check,
        C::Lock => W::Lock,
        C::Fetch => W::Fetch,
        C::Compare => W::Compare,
        C::Upload => W::Upload,
        C::Download => W::Download,
        C::Commit => W::Commit,
        C::Apply => W::Apply,
        C::Done => W::Done,
    };
    wit_progress::ProgressEvent { percent: e.percent, phase, message: e.message }
}

// ---------------------------------------------------------------------------
// engine (the export)
// ---------------------------------------------------------------------------

pub(crate) fn options_from_wit(o: wit_engine::SyncOptions) -> core_api::SyncOptions {
    core_api::SyncOptions {
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
        host_name: o.host_name,
    }
}

pub(crate) fn summary_to_wit(s: core_api::SyncSummary) -> wit_engine::SyncSummary {
    wit_engine::SyncSummary {
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
            .map(|e| wit_engine::FileError { stable_id: e.stable_id, message: e.message })
            .collect(),
        new_version: s.new_version,
        duration_ms: s.duration_ms,
        epoch_changed: s.epoch_changed,
    }
}

pub(crate) fn status_to_wit(s: core_api::StatusReport) -> wit_engine::StatusReport {
    wit_engine::StatusReport {
        needs_sync: s.needs_sync,
        local_version: s.local_version,
        remote_version: s.remote_version,
        unsynced_count: s.unsynced_count,
        last_sync_time: s.last_sync_time,
    }
}

pub(crate) fn conflict_info_to_wit(c: core_api::ConflictInfo) -> wit_engine::ConflictInfo {
    wit_engine::ConflictInfo {
        stable_id: c.stable_id,
        filename: c.filename,
        doc_id: c.doc_id,
        local_hash: c.local_hash,
        local_deleted: c.local_deleted,
        local_modified_at_ms: c.local_modified_at_ms,
        remote_hash: c.remote_hash,
        remote_deleted: c.remote_deleted,
        remote_modified_at: c.remote_modified_at,
        kind: conflict_kind_to_wit(c.kind),
    }
}

pub(crate) fn resolution_kind_from_wit(k: wit_engine::ResolutionKind) -> core_api::ResolutionKind {
    use core_api::ResolutionKind as C;
    use wit_engine::ResolutionKind as W;
    match k {
        W::LocalWins => C::LocalWins,
        W::RemoteWins => C::RemoteWins,
        W::KeepBoth(variant) => C::KeepBoth { variant },
    }
}

pub(crate) fn resolve_outcome_to_wit(o: core_api::ResolveOutcome) -> wit_engine::ResolveOutcome {
    wit_engine::ResolveOutcome { stable_id: o.stable_id, new_stable_id: o.new_stable_id, message: o.message }
}

/// `davsync_core::SyncError` → WIT `sync-error`, variant for variant.
pub(crate) fn sync_error_to_wit(e: core_api::SyncError) -> wit_engine::SyncError {
    use core_api::SyncError as C;
    use wit_engine::SyncError as W;
    match e {
        C::Local(l) => W::Local(local_error_to_wit(l)),
        C::Remote(r) => W::Remote(remote_error_to_wit(r)),
        C::RemoteCorrupt(s) => W::RemoteCorrupt(s),
        C::RemoteTooNew { format, supported } => W::RemoteTooNew((format, supported)),
        C::LockHeld { holder, expires_in_ms } => W::LockHeld((holder, expires_in_ms)),
        C::LeaseLost => W::LeaseLost,
        C::MassDelete { would_delete, live_total } => W::MassDelete((would_delete, live_total)),
        C::Contention { attempts } => W::Contention(attempts),
        C::NotFound(id) => W::NotFound(id),
        C::NotInConflict(id) => W::NotInConflict(id),
        C::Invalid(s) => W::Invalid(s),
        // `SyncError` is `#[non_exhaustive]`; today the mapping above is 1:1.
        // A future variant travels as `invalid` with its message until the
        // WIT learns it.
        other => W::Invalid(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_row_round_trips_through_wit() {
        let hash = ContentHash::of(b"x");
        let row = core_model::LocalRow {
            stable_id: "s1".into(),
            id: hash.clone(),
            meta: core_model::FileMeta {
                file_type: "tei".into(),
                variant: Some("grobid".into()),
                ..core_model::FileMeta::default()
            },
            deleted: false,
            sync_status: core_model::SyncStatus::Conflict,
            remote_version: Some(3),
            sync_hash: Some(hash.clone()),
            sync_meta: Some(hash.clone()),
            local_modified_at_ms: 42,
            hlc: Some(Hlc { physical_ms: 1_700_000_000_000, counter: 2, instance: "inst-a".into() }),
            conflict: Some(core_model::ConflictRecord {
                kind: core_model::ConflictKind::BothModified,
                remote_hash: hash,
                remote_version: 4,
                remote_deleted: false,
                remote_updated_at: "2024-01-01T00:00:00.000Z".into(),
                base_version: Some(3),
                base_hash: None,
            }),
        };
        assert_eq!(local_row_from_wit(local_row_to_wit(&row)).unwrap(), row);
    }

    #[test]
    fn malformed_values_from_the_host_are_invalid_not_panics() {
        let mut row = local_row_to_wit(&core_model::LocalRow {
            stable_id: "s1".into(),
            id: ContentHash::of(b"x"),
            meta: core_model::FileMeta::default(),
            deleted: false,
            sync_status: core_model::SyncStatus::Synced,
            remote_version: None,
            sync_hash: None,
            sync_meta: None,
            local_modified_at_ms: 0,
            hlc: None,
            conflict: None,
        });
        row.hlc = Some("yesterday".into());
        assert_eq!(local_row_from_wit(row.clone()).unwrap_err().field, "hlc");
        row.hlc = None;
        row.id = "../../etc/passwd".into();
        assert_eq!(local_row_from_wit(row).unwrap_err().field, "id");
    }
}
