//! The ports a maintenance-only build needs too: [`RemoteTransport`],
//! [`BlobTransfer`], [`Clock`] and [`Random`] over the `remote`, `blobs`,
//! `clock` and `random` imports, and the conversions between those
//! interfaces' WIT records and the core's.
//!
//! Shared by source with the maintenance-only engine
//! (`components/maintenance`, world `remote-maintenance`), which includes this
//! file by path: it uses nothing of `crate::bindings` that the
//! `remote-maintenance` world lacks.

use davsync_core::model::{self as core_model, BlobRef, ContentHash};
use davsync_core::ports::{
    self as core_ports, BlobError, BlobTransfer, Clock, DownloadJob, Fetched, Precondition, Random,
    RemoteEntry, RemoteError, RemoteStat, RemoteTransport, UploadJob,
};

use crate::bindings::davsync::sync::{blobs, clock, random, remote, types as wit_types};
use crate::bindings::davsync::sync::{blobs as wit_blobs, remote as wit_remote};

/// [`RemoteTransport`] over the `remote` import.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct HostRemote;

impl RemoteTransport for HostRemote {
    fn get(&mut self, path: &str, bytes_max: u64) -> Result<Fetched, RemoteError> {
        remote::get(path, bytes_max).map(fetched_from_wit).map_err(remote_error_from_wit)
    }

    fn put(
        &mut self,
        path: &str,
        bytes: &[u8],
        condition: &Precondition,
    ) -> Result<Option<String>, RemoteError> {
        remote::put(path, bytes, &precondition_to_wit(condition)).map_err(remote_error_from_wit)
    }

    fn delete(&mut self, path: &str) -> Result<(), RemoteError> {
        remote::delete(path).map_err(remote_error_from_wit)
    }

    fn mkcol(&mut self, path: &str) -> Result<(), RemoteError> {
        remote::mkcol(path).map_err(remote_error_from_wit)
    }

    fn move_to(&mut self, from: &str, to: &str, overwrite: bool) -> Result<(), RemoteError> {
        remote::move_to(from, to, overwrite).map_err(remote_error_from_wit)
    }

    fn stat(&mut self, path: &str) -> Result<Option<RemoteStat>, RemoteError> {
        remote::stat(path).map(|s| s.map(remote_stat_from_wit)).map_err(remote_error_from_wit)
    }

    fn list(&mut self, path: &str) -> Result<Option<Vec<RemoteEntry>>, RemoteError> {
        let entries = remote::list(path).map_err(remote_error_from_wit)?;
        Ok(entries.map(|list| {
            list.into_iter()
                .map(|e| RemoteEntry { name: e.name, stat: remote_stat_from_wit(e.stat) })
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
        blobs::local_has(&blob_ref_to_wit(blob)).map_err(blob_error_from_wit)
    }

    fn upload(&mut self, jobs: &[UploadJob]) -> Vec<Result<(), BlobError>> {
        let jobs: Vec<blobs::UploadJob> = jobs
            .iter()
            .map(|j| blobs::UploadJob {
                blob: blob_ref_to_wit(&j.blob),
                temp_path: j.temp_path.clone(),
                final_path: j.final_path.clone(),
            })
            .collect();
        blobs::upload(&jobs).into_iter().map(|r| r.map_err(blob_error_from_wit)).collect()
    }

    fn download(&mut self, jobs: &[DownloadJob], bytes_max: u64) -> Vec<Result<(), BlobError>> {
        let jobs: Vec<blobs::DownloadJob> = jobs
            .iter()
            .map(|j| blobs::DownloadJob {
                remote_path: j.remote_path.clone(),
                blob: blob_ref_to_wit(&j.blob),
            })
            .collect();
        blobs::download(&jobs, bytes_max).into_iter().map(|r| r.map_err(blob_error_from_wit)).collect()
    }

    fn remove_local(&mut self, blob: &BlobRef) -> Result<(), BlobError> {
        blobs::remove_local(&blob_ref_to_wit(blob)).map_err(blob_error_from_wit)
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

// ---------------------------------------------------------------------------
// conversions of the remote and blobs records
// ---------------------------------------------------------------------------

pub(crate) fn remote_error_from_wit(e: wit_remote::RemoteError) -> core_ports::RemoteError {
    use core_ports::RemoteError as C;
    use wit_remote::RemoteError as W;
    match e {
        W::NotFound => C::NotFound,
        W::AlreadyExists => C::AlreadyExists,
        W::ParentMissing => C::ParentMissing,
        W::PreconditionFailed => C::PreconditionFailed,
        W::Locked => C::Locked,
        W::Unauthorized => C::Unauthorized,
        W::InsufficientStorage => C::InsufficientStorage,
        W::TooLarge(bytes_max) => C::TooLarge { bytes_max },
        W::Unavailable(s) => C::Unavailable(s),
        W::Protocol((status, message)) => C::Protocol { status, message },
    }
}

pub(crate) fn remote_error_to_wit(e: core_ports::RemoteError) -> wit_remote::RemoteError {
    use core_ports::RemoteError as C;
    use wit_remote::RemoteError as W;
    match e {
        C::NotFound => W::NotFound,
        C::AlreadyExists => W::AlreadyExists,
        C::ParentMissing => W::ParentMissing,
        C::PreconditionFailed => W::PreconditionFailed,
        C::Locked => W::Locked,
        C::Unauthorized => W::Unauthorized,
        C::InsufficientStorage => W::InsufficientStorage,
        C::TooLarge { bytes_max } => W::TooLarge(bytes_max),
        C::Unavailable(s) => W::Unavailable(s),
        C::Protocol { status, message } => W::Protocol((status, message)),
        // `RemoteError` is `#[non_exhaustive]`; today every variant is listed
        // above. A future one travels as a status-0 protocol error.
        other => W::Protocol((0, other.to_string())),
    }
}

pub(crate) fn fetched_from_wit(f: wit_remote::Fetched) -> core_ports::Fetched {
    core_ports::Fetched { bytes: f.bytes, etag: f.etag }
}

pub(crate) fn remote_stat_from_wit(s: wit_remote::RemoteStat) -> core_ports::RemoteStat {
    core_ports::RemoteStat {
        size: s.size,
        etag: s.etag,
        modified_ms: s.modified_ms,
        is_collection: s.is_collection,
    }
}

pub(crate) fn precondition_to_wit(p: &core_ports::Precondition) -> wit_remote::Precondition {
    use core_ports::Precondition as C;
    use wit_remote::Precondition as W;
    match p {
        C::None => W::None,
        C::IfMatch(etag) => W::IfMatch(etag.clone()),
        C::IfNoneMatchAny => W::IfNoneMatchAny,
    }
}

pub(crate) fn blob_error_from_wit(e: wit_blobs::BlobError) -> core_ports::BlobError {
    use core_ports::BlobError as C;
    use wit_blobs::BlobError as W;
    match e {
        W::LocalMissing(hash) => C::LocalMissing(hash),
        W::HashMismatch((expected, actual)) => {
            match (ContentHash::parse(&expected), ContentHash::parse(&actual)) {
                (Ok(expected), Ok(actual)) => C::HashMismatch { expected, actual },
                // The host broke the contract (hashes are 64 lowercase hex
                // digits); keep what it said rather than inventing a hash.
                _ => C::LocalIo(format!(
                    "download hash mismatch reported with malformed hashes: expected {expected:?}, got {actual:?}"
                )),
            }
        }
        W::TooLarge(bytes_max) => C::TooLarge { bytes_max },
        W::Remote(r) => C::Remote(remote_error_from_wit(r)),
        W::LocalIo(s) => C::LocalIo(s),
    }
}

pub(crate) fn blob_ref_to_wit(b: &core_model::BlobRef) -> wit_types::BlobRef {
    wit_types::BlobRef { hash: b.hash.to_string(), ext: b.ext.clone() }
}
