//! Conversions for the `maintenance` export (issue 9), in the style of
//! [`crate::wit_convert`]: `_out` host → component, `_in` component → host.
//! Hashes and paths from the component are checked like any other input.

use davsync_core::maintenance::{
    BlobFault, BlobFile, BlobProblem, GcReport, LeaseInfo, MaintenanceError, MaintenanceOptions,
    RemoteStatus, VerifyReport,
};
use davsync_core::model::ContentHash;

use crate::component::wit_maintenance as m;

pub(crate) fn options_out(o: &MaintenanceOptions) -> m::MaintenanceOptions {
    m::MaintenanceOptions {
        lease_ttl_ms: o.lease_ttl_ms,
        lock_wait_ms: o.lock_wait_ms,
        remote_retries_max: o.remote_retries_max,
        metadata_bytes_max: o.metadata_bytes_max,
        blob_bytes_max: o.blob_bytes_max,
        gc_grace_ms: o.gc_grace_ms,
        host_name: o.host_name.clone(),
    }
}

pub(crate) fn status_in(s: m::RemoteState) -> RemoteStatus {
    RemoteStatus {
        version: s.version,
        version_txt: s.version_txt,
        epoch: s.epoch,
        live_files: s.live_files,
        tombstones: s.tombstones,
        blob_count: s.blob_count,
        blob_bytes: s.blob_bytes,
        lease: s.lease.map(|l| LeaseInfo { holder: l.holder, expires_in_ms: l.expires_in_ms }),
    }
}

fn fault_in(f: m::BlobFault) -> Result<BlobFault, MaintenanceError> {
    Ok(match f {
        m::BlobFault::Missing => BlobFault::Missing,
        m::BlobFault::HashMismatch(h) => BlobFault::HashMismatch {
            actual: ContentHash::parse(&h).map_err(|e| MaintenanceError::Invalid(e.to_string()))?,
        },
        m::BlobFault::TooLarge(bytes_max) => BlobFault::TooLarge { bytes_max },
    })
}

fn blob_file_in(b: m::BlobFile) -> BlobFile {
    BlobFile { path: b.path, size_bytes: b.size_bytes, modified_ms: b.modified_ms }
}

pub(crate) fn verify_in(r: m::VerifyReport) -> Result<VerifyReport, MaintenanceError> {
    let problems = r
        .problems
        .into_iter()
        .map(|p| Ok(BlobProblem { path: p.path, stable_ids: p.stable_ids, fault: fault_in(p.fault)? }))
        .collect::<Result<_, MaintenanceError>>()?;
    Ok(VerifyReport {
        version: r.version,
        blobs_checked: r.blobs_checked,
        problems,
        unreferenced: r.unreferenced.into_iter().map(blob_file_in).collect(),
    })
}

pub(crate) fn gc_in(r: m::GcReport) -> GcReport {
    GcReport {
        version_before: r.version_before,
        version_after: r.version_after,
        deleted: r.deleted,
        deleted_bytes: r.deleted_bytes,
        kept_young: r.kept_young,
        kept_undated: r.kept_undated,
    }
}

pub(crate) fn error_in(e: m::MaintenanceError) -> MaintenanceError {
    match e {
        m::MaintenanceError::Remote(r) => MaintenanceError::Remote(crate::wit_convert::remote_error_in(r)),
        m::MaintenanceError::RemoteCorrupt(s) => MaintenanceError::RemoteCorrupt(s),
        m::MaintenanceError::RemoteTooNew((format, supported)) => {
            MaintenanceError::RemoteTooNew { format, supported }
        }
        m::MaintenanceError::NoRemote => MaintenanceError::NoRemote,
        m::MaintenanceError::LockHeld((holder, expires_in_ms)) => {
            MaintenanceError::LockHeld { holder, expires_in_ms }
        }
        m::MaintenanceError::LeaseLost => MaintenanceError::LeaseLost,
        m::MaintenanceError::Fenced => MaintenanceError::Fenced,
        m::MaintenanceError::Invalid(s) => MaintenanceError::Invalid(s),
    }
}
