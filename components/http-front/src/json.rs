//! The JSON bodies of the front: the reports with the same field names as
//! `davsync remote … --json`, and errors as `{"error", "message", …}`.

use serde_json::{Value, json};

use crate::Reply;
use crate::bindings::davsync::sync::maintenance as m;
use crate::bindings::davsync::sync::remote::RemoteError;

pub(crate) fn status(s: &m::RemoteState) -> Value {
    json!({
        "version": s.version,
        "version_txt": s.version_txt,
        "epoch": s.epoch,
        "live_files": s.live_files,
        "tombstones": s.tombstones,
        "blob_count": s.blob_count,
        "blob_bytes": s.blob_bytes,
        "lease": s.lease.as_ref().map(|l| json!({"holder": l.holder, "expires_in_ms": l.expires_in_ms})),
    })
}

fn blob_file(b: &m::BlobFile) -> Value {
    json!({"path": b.path, "size_bytes": b.size_bytes, "modified_ms": b.modified_ms})
}

pub(crate) fn verify(r: &m::VerifyReport) -> Value {
    let problems: Vec<Value> = r
        .problems
        .iter()
        .map(|p| {
            let fault = match &p.fault {
                m::BlobFault::Missing => json!({"kind": "missing"}),
                m::BlobFault::HashMismatch(actual) => json!({"kind": "hash_mismatch", "actual": actual}),
                m::BlobFault::TooLarge(bytes_max) => json!({"kind": "too_large", "bytes_max": bytes_max}),
            };
            json!({"path": p.path, "stable_ids": p.stable_ids, "fault": fault})
        })
        .collect();
    json!({
        "ok": r.problems.is_empty(),
        "version": r.version,
        "blobs_checked": r.blobs_checked,
        "problems": problems,
        "unreferenced": r.unreferenced.iter().map(blob_file).collect::<Vec<_>>(),
    })
}

pub(crate) fn gc(r: &m::GcReport) -> Value {
    json!({
        "version_before": r.version_before,
        "version_after": r.version_after,
        "deleted": r.deleted,
        "deleted_bytes": r.deleted_bytes,
        "kept_young": r.kept_young,
        "kept_undated": r.kept_undated,
    })
}

/// A refusal that never reached the engine.
pub(crate) fn refusal(status: u16, kind: &str, message: &str, headers: Vec<(&'static str, String)>) -> Reply {
    Reply { status, headers, body: json!({"error": kind, "message": message}) }
}

fn remote_kind(e: &RemoteError) -> (&'static str, String) {
    match e {
        RemoteError::NotFound => ("not-found", "not found (404)".into()),
        RemoteError::AlreadyExists => ("already-exists", "already exists".into()),
        RemoteError::ParentMissing => ("parent-missing", "parent collection missing (409)".into()),
        RemoteError::PreconditionFailed => ("precondition-failed", "precondition failed (412)".into()),
        RemoteError::Locked => ("locked", "locked (423)".into()),
        RemoteError::Unauthorized => ("unauthorized", "the WebDAV server refused the credentials".into()),
        RemoteError::InsufficientStorage => ("insufficient-storage", "insufficient storage (507)".into()),
        RemoteError::TooLarge(max) => ("too-large", format!("a body exceeds {max} bytes")),
        RemoteError::Unavailable(why) => ("unavailable", format!("unavailable: {why}")),
        RemoteError::Protocol((status, why)) => ("protocol", format!("HTTP {status}: {why}")),
    }
}

/// The HTTP status of each `maintenance-error`:
///
/// | error | status |
/// |---|---|
/// | `remote(unavailable)` | 503 |
/// | `remote(…)` otherwise | 502 |
/// | `remote-corrupt`, `remote-too-new` | 502 |
/// | `no-remote` | 404 |
/// | `lock-held`, `lease-lost`, `fenced` | 409 |
/// | `invalid` | 500 |
pub fn error_status(e: &m::MaintenanceError) -> u16 {
    match e {
        m::MaintenanceError::Remote(RemoteError::Unavailable(_)) => 503,
        m::MaintenanceError::Remote(_)
        | m::MaintenanceError::RemoteCorrupt(_)
        | m::MaintenanceError::RemoteTooNew(_) => 502,
        m::MaintenanceError::NoRemote => 404,
        m::MaintenanceError::LockHeld(_) | m::MaintenanceError::LeaseLost | m::MaintenanceError::Fenced => {
            409
        }
        m::MaintenanceError::Invalid(_) => 500,
    }
}

pub(crate) fn error(e: &m::MaintenanceError) -> Reply {
    let status = error_status(e);
    let mut headers = Vec::new();
    let body = match e {
        m::MaintenanceError::Remote(r) => {
            let (kind, message) = remote_kind(r);
            json!({"error": "remote", "remote": kind, "message": format!("the WebDAV server failed: {message}")})
        }
        m::MaintenanceError::RemoteTooNew((format, supported)) => json!({
            "error": "remote-too-new",
            "message": format!(
                "the remote uses format {format}, newer than this davsync reads (format {supported}); upgrade davsync"
            ),
        }),
        m::MaintenanceError::RemoteCorrupt(why) => {
            json!({"error": "remote-corrupt", "message": format!("the remote's metadata is unusable: {why}")})
        }
        m::MaintenanceError::NoRemote => {
            json!({"error": "no-remote", "message": "the remote has no metadata.db yet: nothing synced to it"})
        }
        m::MaintenanceError::LockHeld((holder, expires_in_ms)) => {
            let secs = u64::try_from(*expires_in_ms).unwrap_or(0).div_ceil(1000).max(1);
            headers.push(("retry-after", secs.to_string()));
            json!({
                "error": "lock-held",
                "message": format!("a sync holds the lock ({holder}); try again later"),
                "holder": holder,
                "expires_in_ms": expires_in_ms,
            })
        }
        m::MaintenanceError::LeaseLost => {
            json!({"error": "lease-lost", "message": "gc lost its lease and stopped; nothing more was deleted"})
        }
        m::MaintenanceError::Fenced => {
            json!({"error": "fenced", "message": "a sync committed while gc held the lease; nothing was deleted"})
        }
        m::MaintenanceError::Invalid(why) => json!({"error": "invalid", "message": why}),
    };
    Reply { status, headers, body }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_has_its_status_and_kind() {
        let cases = [
            (m::MaintenanceError::Remote(RemoteError::Unavailable("x".into())), 503, "remote"),
            (m::MaintenanceError::Remote(RemoteError::Unauthorized), 502, "remote"),
            (m::MaintenanceError::RemoteCorrupt("bad".into()), 502, "remote-corrupt"),
            (m::MaintenanceError::NoRemote, 404, "no-remote"),
            (m::MaintenanceError::LockHeld(("inst-z".into(), 4500)), 409, "lock-held"),
            (m::MaintenanceError::LeaseLost, 409, "lease-lost"),
            (m::MaintenanceError::Fenced, 409, "fenced"),
            (m::MaintenanceError::Invalid("no".into()), 500, "invalid"),
        ];
        for (e, status, kind) in cases {
            let reply = error(&e);
            assert_eq!((reply.status, reply.body["error"].as_str()), (status, Some(kind)), "{e:?}");
            assert!(reply.body["message"].as_str().is_some_and(|m| !m.is_empty()));
        }
        let held = error(&m::MaintenanceError::LockHeld(("inst-z".into(), 4500)));
        assert_eq!(held.headers, vec![("retry-after", "5".to_owned())]);
        assert_eq!(held.body["holder"], "inst-z");
    }
}
