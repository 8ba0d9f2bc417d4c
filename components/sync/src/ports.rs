//! The core's ports, implemented by calling this component's WIT imports.
//! Each struct is zero-sized: all state lives in the host.

use davsync_core::model::{BlobRef, ContentHash, LocalRow, RowBase};
use davsync_core::ports::{
    ApplyOutcome, BlobError, BlobTransfer, Clock, DownloadJob, Fetched, LocalCommit, LocalError, LocalStore,
    Precondition, Progress, ProgressEvent, Random, RemoteEntry, RemoteError, RemoteStat, RemoteTransport,
    RowWrite, UploadJob,
};

use crate::bindings::davsync::sync::{blobs, clock, local_store, progress, random, remote};
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

/// [`RemoteTransport`] over the `remote` import.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct HostRemote;

impl RemoteTransport for HostRemote {
    fn get(&mut self, path: &str, bytes_max: u64) -> Result<Fetched, RemoteError> {
        remote::get(path, bytes_max).map(convert::fetched_from_wit).map_err(convert::remote_error_from_wit)
    }

    fn put(
        &mut self,
        path: &str,
        bytes: &[u8],
        condition: &Precondition,
    ) -> Result<Option<String>, RemoteError> {
        remote::put(path, bytes, &convert::precondition_to_wit(condition))
            .map_err(convert::remote_error_from_wit)
    }

    fn delete(&mut self, path: &str) -> Result<(), RemoteError> {
        remote::delete(path).map_err(convert::remote_error_from_wit)
    }

    fn mkcol(&mut self, path: &str) -> Result<(), RemoteError> {
        remote::mkcol(path).map_err(convert::remote_error_from_wit)
    }

    fn move_to(&mut self, from: &str, to: &str, overwrite: bool) -> Result<(), RemoteError> {
        remote::move_to(from, to, overwrite).map_err(convert::remote_error_from_wit)
    }

    fn stat(&mut self, path: &str) -> Result<Option<RemoteStat>, RemoteError> {
        remote::stat(path)
            .map(|s| s.map(convert::remote_stat_from_wit))
            .map_err(convert::remote_error_from_wit)
    }

    fn list(&mut self, path: &str) -> Result<Option<Vec<RemoteEntry>>, RemoteError> {
        let entries = remote::list(path).map_err(convert::remote_error_from_wit)?;
        Ok(entries.map(|list| {
            list.into_iter()
                .map(|e| RemoteEntry { name: e.name, stat: convert::remote_stat_from_wit(e.stat) })
                .collect()
        }))
    }

    fn server_time_ms(&mut self) -> Option<i64> {
        remote::server_time_ms()
    }
}

/// [`BlobTransfer`] over the `blobs` import.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct HostBlobs;

impl BlobTransfer for HostBlobs {
    fn local_has(&mut self, blob: &BlobRef) -> Result<bool, BlobError> {
        blobs::local_has(&convert::blob_ref_to_wit(blob)).map_err(convert::blob_error_from_wit)
    }

    fn upload(&mut self, jobs: &[UploadJob]) -> Vec<Result<(), BlobError>> {
        let jobs: Vec<blobs::UploadJob> = jobs
            .iter()
            .map(|j| blobs::UploadJob {
                blob: convert::blob_ref_to_wit(&j.blob),
                temp_path: j.temp_path.clone(),
                final_path: j.final_path.clone(),
            })
            .collect();
        blobs::upload(&jobs).into_iter().map(|r| r.map_err(convert::blob_error_from_wit)).collect()
    }

    fn download(&mut self, jobs: &[DownloadJob], bytes_max: u64) -> Vec<Result<(), BlobError>> {
        let jobs: Vec<blobs::DownloadJob> = jobs
            .iter()
            .map(|j| blobs::DownloadJob {
                remote_path: j.remote_path.clone(),
                blob: convert::blob_ref_to_wit(&j.blob),
            })
            .collect();
        blobs::download(&jobs, bytes_max)
            .into_iter()
            .map(|r| r.map_err(convert::blob_error_from_wit))
            .collect()
    }

    fn remove_local(&mut self, blob: &BlobRef) -> Result<(), BlobError> {
        blobs::remove_local(&convert::blob_ref_to_wit(blob)).map_err(convert::blob_error_from_wit)
    }
}

/// [`Clock`] over the `clock` import.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct HostClock;

impl Clock for HostClock {
    fn now_ms(&mut self) -> i64 {
        clock::now_ms()
    }

    fn sleep_ms(&mut self, ms: u64) {
        clock::sleep_ms(ms);
    }
}

/// [`Random`] over the `random` import.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct HostRandom;

impl Random for HostRandom {
    fn next_u64(&mut self) -> u64 {
        random::next_u64()
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
