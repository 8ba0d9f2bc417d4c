//! The core's engine-only ports (`local-store`, `progress`), implemented by
//! calling this component's WIT imports; the others are in
//! `remote_ports`. Each struct is zero-sized: all state lives in the host.

use davsync_core::model::{ContentHash, LocalRow, RowBase};
use davsync_core::ports::{
    ApplyOutcome, LocalCommit, LocalError, LocalStore, Progress, ProgressEvent, RowWrite,
};

use crate::bindings::davsync::sync::{local_store, progress};
use crate::convert;

/// [`LocalStore`] over the `local-store` import.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct HostLocalStore;

impl LocalStore for HostLocalStore {
    fn count_unsynced(&mut self) -> Result<u64, LocalError> {
        local_store::count_unsynced().map_err(convert::local_error_from_wit)
    }

    fn meta_get(&mut self, key: &str) -> Result<Option<String>, LocalError> {
        local_store::meta_get(key).map_err(convert::local_error_from_wit)
    }

    fn row_bases(&mut self) -> Result<Vec<RowBase>, LocalError> {
        let bases = local_store::row_bases().map_err(convert::local_error_from_wit)?;
        Ok(bases.into_iter().map(convert::row_base_from_wit).collect())
    }

    fn rows(&mut self, stable_ids: &[String]) -> Result<Vec<LocalRow>, LocalError> {
        let rows = local_store::rows(stable_ids).map_err(convert::local_error_from_wit)?;
        rows.into_iter()
            .map(|r| convert::local_row_from_wit(r).map_err(|e| LocalError::Invalid(e.to_string())))
            .collect()
    }

    fn live_rows_with_content(&mut self, hash: &ContentHash) -> Result<u64, LocalError> {
        local_store::live_rows_with_content(hash.as_str()).map_err(convert::local_error_from_wit)
    }

    fn apply(&mut self, commit: &LocalCommit) -> Result<ApplyOutcome, LocalError> {
        let skipped = local_store::apply(&convert::local_commit_to_wit(commit))
            .map_err(convert::local_error_from_wit)?;
        Ok(ApplyOutcome { skipped })
    }

    fn commit_begin(&mut self) -> Result<(), LocalError> {
        local_store::commit_begin().map_err(convert::local_error_from_wit)
    }

    fn commit_writes(&mut self, writes: &[RowWrite]) -> Result<(), LocalError> {
        local_store::commit_writes(&convert::row_writes_to_wit(writes)).map_err(convert::local_error_from_wit)
    }

    fn commit_finish(&mut self, meta: &[(String, String)]) -> Result<ApplyOutcome, LocalError> {
        let skipped = local_store::commit_finish(meta).map_err(convert::local_error_from_wit)?;
        Ok(ApplyOutcome { skipped })
    }
}

/// [`Progress`] over the `progress` import.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct HostProgress;

impl Progress for HostProgress {
    fn report(&mut self, event: ProgressEvent) {
        progress::report(&convert::progress_event_to_wit(event));
    }
}
