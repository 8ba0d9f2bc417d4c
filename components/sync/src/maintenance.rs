//! The exported `maintenance` interface: converts the WIT records to the
//! core's and back, and runs `davsync_core::maintenance` over the imports
//! (`remote`, `blobs.remote-hash`, `clock`, `random`). No local port is used.

use davsync_core::maintenance as cm;
use davsync_core::ports::{BlobError, BlobHasher, RemoteDigest};

use crate::bindings::davsync::sync::blobs;
use crate::bindings::exports::davsync::sync::maintenance as wit;
use crate::remote_ports::{self as convert, HostBlobs, HostClock, HostRandom, HostRemote};

impl BlobHasher for HostBlobs {
    fn remote_hash(&mut self, path: &str, bytes_max: u64) -> Result<RemoteDigest, BlobError> {
        let d = blobs::remote_hash(path, bytes_max).map_err(convert::blob_error_from_wit)?;
        let hash = davsync_core::model::ContentHash::parse(&d.hash)
            .map_err(|e| BlobError::LocalIo(format!("the host answered a malformed hash: {e}")))?;
        Ok(RemoteDigest { hash, size_bytes: d.size_bytes })
    }
}

/// Runs `f` over the ports backed by this component's imports.
fn with_io<T>(
    f: impl FnOnce(&mut cm::MaintenanceIo<'_>) -> Result<T, cm::MaintenanceError>,
) -> Result<T, wit::MaintenanceError> {
    let (mut remote, mut hasher, mut clock, mut random) = (HostRemote, HostBlobs, HostClock, HostRandom);
    let mut io = cm::MaintenanceIo {
        remote: &mut remote,
        hasher: &mut hasher,
        clock: &mut clock,
        random: &mut random,
    };
    f(&mut io).map_err(error_to_wit)
}

fn options_from_wit(o: wit::MaintenanceOptions) -> cm::MaintenanceOptions {
    cm::MaintenanceOptions {
        lease_ttl_ms: o.lease_ttl_ms,
        lock_wait_ms: o.lock_wait_ms,
        remote_retries_max: o.remote_retries_max,
        metadata_bytes_max: o.metadata_bytes_max,
        blob_bytes_max: o.blob_bytes_max,
        gc_grace_ms: o.gc_grace_ms,
        host_name: o.host_name,
    }
}

fn status_to_wit(s: cm::RemoteStatus) -> wit::RemoteState {
    wit::RemoteState {
        version: s.version,
        version_txt: s.version_txt,
        epoch: s.epoch,
        live_files: s.live_files,
        tombstones: s.tombstones,
        blob_count: s.blob_count,
        blob_bytes: s.blob_bytes,
        lease: s.lease.map(|l| wit::LeaseInfo { holder: l.holder, expires_in_ms: l.expires_in_ms }),
    }
}

fn blob_file_to_wit(b: cm::BlobFile) -> wit::BlobFile {
    wit::BlobFile { path: b.path, size_bytes: b.size_bytes, modified_ms: b.modified_ms }
}

fn verify_to_wit(r: cm::VerifyReport) -> wit::VerifyReport {
    let problems = r
        .problems
        .into_iter()
        .map(|p| wit::BlobProblem {
            path: p.path,
            stable_ids: p.stable_ids,
            fault: match p.fault {
                cm::BlobFault::Missing => wit::BlobFault::Missing,
                cm::BlobFault::HashMismatch { actual } => wit::BlobFault::HashMismatch(actual.into()),
                cm::BlobFault::TooLarge { bytes_max } => wit::BlobFault::TooLarge(bytes_max),
            },
        })
        .collect();
    wit::VerifyReport {
        version: r.version,
        blobs_checked: r.blobs_checked,
        problems,
        unreferenced: r.unreferenced.into_iter().map(blob_file_to_wit).collect(),
    }
}

fn gc_to_wit(r: cm::GcReport) -> wit::GcReport {
    wit::GcReport {
        version_before: r.version_before,
        version_after: r.version_after,
        deleted: r.deleted,
        deleted_bytes: r.deleted_bytes,
        kept_young: r.kept_young,
        kept_undated: r.kept_undated,
    }
}

fn error_to_wit(e: cm::MaintenanceError) -> wit::MaintenanceError {
    use cm::MaintenanceError as C;
    use wit::MaintenanceError as W;
    match e {
        C::Remote(r) => W::Remote(convert::remote_error_to_wit(r)),
        C::RemoteCorrupt(s) => W::RemoteCorrupt(s),
        C::RemoteTooNew { format, supported } => W::RemoteTooNew((format, supported)),
        C::NoRemote => W::NoRemote,
        C::LockHeld { holder, expires_in_ms } => W::LockHeld((holder, expires_in_ms)),
        C::LeaseLost => W::LeaseLost,
        C::Fenced => W::Fenced,
        C::Invalid(s) => W::Invalid(s),
        // `#[non_exhaustive]`: a future variant travels as `invalid`.
        other => W::Invalid(other.to_string()),
    }
}

/// The exported `maintenance` interface.
impl wit::Guest for crate::Component {
    fn remote_status(options: wit::MaintenanceOptions) -> Result<wit::RemoteState, wit::MaintenanceError> {
        let opts = options_from_wit(options);
        with_io(|io| cm::remote_status(io, &opts)).map(status_to_wit)
    }

    fn verify(options: wit::MaintenanceOptions) -> Result<wit::VerifyReport, wit::MaintenanceError> {
        let opts = options_from_wit(options);
        with_io(|io| cm::verify(io, &opts)).map(verify_to_wit)
    }

    fn gc(options: wit::MaintenanceOptions) -> Result<wit::GcReport, wit::MaintenanceError> {
        let opts = options_from_wit(options);
        with_io(|io| cm::gc(io, &opts)).map(gc_to_wit)
    }

    fn default_options() -> wit::MaintenanceOptions {
        let o = cm::MaintenanceOptions::default();
        wit::MaintenanceOptions {
            lease_ttl_ms: o.lease_ttl_ms,
            lock_wait_ms: o.lock_wait_ms,
            remote_retries_max: o.remote_retries_max,
            metadata_bytes_max: o.metadata_bytes_max,
            blob_bytes_max: o.blob_bytes_max,
            gc_grace_ms: o.gc_grace_ms,
            host_name: o.host_name,
        }
    }
}
