//! `status`, `conflicts` and `resolve`: the engine's other exports.
//!
//! A resolution only rewrites the local row (and asks for a sync); the next
//! sync carries it out through the ordinary three-way compare. That keeps one
//! code path for everything that touches the remote.

use crate::api::{ConflictInfo, Resolution, ResolutionKind, ResolveOutcome, StatusReport, SyncError};
use crate::local_state::{self, META_RESYNC};
use crate::model::{ConflictRecord, LocalRow, SyncStatus, TEXT_FIELD_BYTES_MAX};
use crate::ports::{Io, LocalCommit, RowWrite};
use crate::session::Session;

/// O(1) status (SPEC §3 step 1): one COUNT and one GET of `version.txt`.
/// An unreachable remote is an error, never "no sync needed".
pub fn status(io: &mut Io<'_>, remote_retries_max: u32) -> Result<StatusReport, SyncError> {
    let state = local_state::load(io)?;
    let unsynced_count = io.local.count_unsynced()?;
    let head = Session::new(remote_retries_max).read_head(io)?;
    let remote_version = head.as_ref().map(|h| h.version);
    // The same commit, not only the same number: a commit of ours that a
    // stale writer replaced has the number we recorded.
    let at_head = head
        .as_ref()
        .is_some_and(|h| Some(h.commit_id()) == state.version.map(|v| (v, state.commit.as_deref())));
    let needs_sync = unsynced_count > 0 || state.resync_requested || state.version.is_none() || !at_head;
    Ok(StatusReport {
        needs_sync,
        local_version: state.version,
        remote_version,
        unsynced_count,
        last_sync_time: state.last_sync_time,
    })
}

/// The recorded conflicts, from the local database only.
pub fn conflicts(io: &mut Io<'_>) -> Result<Vec<ConflictInfo>, SyncError> {
    let ids: Vec<String> = io
        .local
        .row_bases()?
        .into_iter()
        .filter(|b| b.sync_status == SyncStatus::Conflict)
        .map(|b| b.stable_id)
        .collect();
    let rows = io.local.rows(&ids)?;
    Ok(rows.iter().filter_map(conflict_info).collect())
}

fn conflict_info(row: &LocalRow) -> Option<ConflictInfo> {
    let c = row.conflict.as_ref()?;
    Some(ConflictInfo {
        stable_id: row.stable_id.clone(),
        filename: row.meta.filename.clone(),
        doc_id: row.meta.doc_id.clone(),
        local_hash: row.id.to_string(),
        local_deleted: row.deleted,
        local_modified_at_ms: row.local_modified_at_ms,
        remote_hash: c.remote_hash.to_string(),
        remote_deleted: c.remote_deleted,
        remote_modified_at: c.remote_updated_at.clone(),
        kind: c.kind,
    })
}

/// Records a resolution (SPEC §4); the next sync carries it out.
pub fn resolve(io: &mut Io<'_>, resolution: &Resolution) -> Result<ResolveOutcome, SyncError> {
    let id = &resolution.stable_id;
    let row =
        io.local.rows(std::slice::from_ref(id))?.pop().ok_or_else(|| SyncError::NotFound(id.clone()))?;
    let record = match (&row.sync_status, &row.conflict) {
        (SyncStatus::Conflict, Some(c)) => c.clone(),
        _ => return Err(SyncError::NotInConflict(id.clone())),
    };
    let now_ms = io.clock.now_ms();
    let (writes, new_stable_id, message) = match &resolution.kind {
        ResolutionKind::LocalWins => {
            let msg = "the local version will be pushed by the next sync";
            (vec![keep_local(&row, &record, now_ms)], None, msg.to_owned())
        }
        ResolutionKind::RemoteWins => {
            let msg = "the remote version will replace the local one at the next sync";
            (vec![take_remote(&row, &record)], None, msg.to_owned())
        }
        ResolutionKind::KeepBoth { variant } => {
            let copy = copy_as_new_file(io, &row, variant, now_ms)?;
            let new_id = copy.row.stable_id.clone();
            let msg = format!(
                "the local content is kept as new file {new_id} (variant {variant:?}); \
                 the original takes the remote version at the next sync"
            );
            (vec![take_remote(&row, &record), copy], Some(new_id), msg)
        }
    };
    let meta = vec![(META_RESYNC.to_owned(), "1".to_owned())];
    let outcome = io.local.apply(&LocalCommit { writes, meta })?;
    if !outcome.skipped.is_empty() {
        return Err(SyncError::Invalid(format!(
            "file {id} changed while it was being resolved; look at it again"
        )));
    }
    Ok(ResolveOutcome { stable_id: id.clone(), new_stable_id, message })
}

/// Local wins: rebase the local row on the remote version it conflicted with,
/// as a fresh local change; the next sync pushes it (stamped after the
/// remote's write, which this instance has seen).
fn keep_local(row: &LocalRow, record: &ConflictRecord, now_ms: i64) -> RowWrite {
    let status = if row.deleted { SyncStatus::PendingDelete } else { SyncStatus::Modified };
    let resolved = LocalRow {
        sync_status: status,
        remote_version: Some(record.remote_version),
        sync_hash: Some(record.remote_hash.clone()),
        // The remote's metadata at that version is not known here; the next
        // sync settles metadata by stamp, and this edit is stamped later.
        sync_meta: None,
        local_modified_at_ms: now_ms.max(row.local_modified_at_ms),
        conflict: None,
        ..row.clone()
    };
    RowWrite { row: resolved, expected: Some(row.clone()) }
}

/// Remote wins: drop the local change and go back to the old base, so the
/// next sync sees only the remote's change and takes it.
fn take_remote(row: &LocalRow, record: &ConflictRecord) -> RowWrite {
    let status = if row.deleted { SyncStatus::DeletionSynced } else { SyncStatus::Synced };
    let resolved = LocalRow {
        sync_status: status,
        remote_version: record.base_version,
        sync_hash: record.base_hash.clone(),
        conflict: None,
        ..row.clone()
    };
    RowWrite { row: resolved, expected: Some(row.clone()) }
}

/// Keep both: the local content becomes a new logical file.
fn copy_as_new_file(
    io: &mut Io<'_>,
    row: &LocalRow,
    variant: &str,
    now_ms: i64,
) -> Result<RowWrite, SyncError> {
    if row.deleted {
        return Err(SyncError::Invalid(format!(
            "keep_both needs local content, but {} is deleted locally; use local_wins or remote_wins",
            row.stable_id
        )));
    }
    if variant.trim().is_empty() || variant.len() > TEXT_FIELD_BYTES_MAX {
        return Err(SyncError::Invalid("keep_both needs a non-empty variant name".to_owned()));
    }
    let mut copy = row.clone();
    copy.stable_id = local_state::new_id(io, "f");
    copy.meta.variant = Some(variant.to_owned());
    copy.sync_status = SyncStatus::Modified;
    copy.remote_version = None;
    copy.sync_hash = None;
    copy.sync_meta = None;
    copy.hlc = None;
    copy.conflict = None;
    copy.local_modified_at_ms = now_ms;
    Ok(RowWrite { row: copy, expected: None })
}
