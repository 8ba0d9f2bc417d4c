//! Request bodies: parsed by hand from bytes so every malformed body gets the
//! same answer (422 with the parser's reason) whatever its content type, and a
//! well-formed request that cannot apply gets a 400.

use davsync_core::ResolutionKind;
use serde::Deserialize;

use super::ApiError;

/// `POST /sync`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct SyncRequest {
    /// Skip the quick check and allow a mass deletion.
    #[serde(default)]
    pub force: bool,
}

/// Parses `POST /sync`'s body; an empty body means `{}`.
pub fn parse_sync_request(body: &[u8]) -> Result<SyncRequest, ApiError> {
    if body.trim_ascii().is_empty() {
        return Ok(SyncRequest::default());
    }
    from_object(body)
}

/// Deserializes a JSON object (serde would also take an array for a struct).
fn from_object<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(malformed)?;
    if !value.is_object() {
        return Err(ApiError::unprocessable("malformed request body: expected a JSON object"));
    }
    serde_json::from_value(value).map_err(malformed)
}

/// Which file a resolution is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileRef {
    /// By logical id.
    StableId(String),
    /// By content hash (the conflict list's `file_id`): must name exactly one
    /// conflicted file.
    FileId(String),
}

/// `POST /sync/resolve-conflict`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolveRequest {
    /// The file.
    pub file: FileRef,
    /// What to do.
    pub kind: ResolutionKind,
}

#[derive(Deserialize)]
struct RawResolve {
    stable_id: Option<String>,
    file_id: Option<String>,
    resolution: String,
    new_variant: Option<String>,
}

/// Parses `POST /sync/resolve-conflict`'s body. `stable_id` wins when both
/// ids are given; `new_variant` is required by (and only read for)
/// `keep_both`.
pub fn parse_resolve_request(body: &[u8]) -> Result<ResolveRequest, ApiError> {
    let raw: RawResolve = from_object(body)?;
    let file = match (raw.stable_id, raw.file_id) {
        (Some(s), _) if !s.is_empty() => FileRef::StableId(s),
        (_, Some(f)) if !f.is_empty() => FileRef::FileId(f),
        _ => return Err(ApiError::unprocessable("the body needs a non-empty stable_id or file_id")),
    };
    let kind = match raw.resolution.as_str() {
        "local_wins" => ResolutionKind::LocalWins,
        "remote_wins" => ResolutionKind::RemoteWins,
        "keep_both" => match raw.new_variant {
            Some(v) if !v.trim().is_empty() => ResolutionKind::KeepBoth { variant: v },
            _ => return Err(ApiError::bad_request("keep_both needs new_variant: the copy's variant name")),
        },
        other => {
            return Err(ApiError::bad_request(format!(
                "unknown resolution {other:?}: use local_wins, remote_wins or keep_both"
            )));
        }
    };
    Ok(ResolveRequest { file, kind })
}

/// The API's name of a resolution.
pub fn resolution_name(kind: &ResolutionKind) -> &'static str {
    match kind {
        ResolutionKind::LocalWins => "local_wins",
        ResolutionKind::RemoteWins => "remote_wins",
        ResolutionKind::KeepBoth { .. } => "keep_both",
    }
}

fn malformed(e: serde_json::Error) -> ApiError {
    ApiError::unprocessable(format!("malformed request body: {e}"))
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use super::*;

    #[test]
    fn sync_request_reads_force_and_tolerates_an_empty_body_or_extra_fields() {
        assert_eq!(parse_sync_request(b"").unwrap(), SyncRequest { force: false });
        assert_eq!(parse_sync_request(b" {} ").unwrap(), SyncRequest { force: false });
        assert_eq!(parse_sync_request(br#"{"force":true}"#).unwrap(), SyncRequest { force: true });
        assert_eq!(parse_sync_request(br#"{"force":false,"x":1}"#).unwrap(), SyncRequest { force: false });
    }

    #[test]
    fn malformed_sync_bodies_are_422_with_the_reason() {
        for body in [&br#"{"force":"invalid"}"#[..], b"{", b"[]", b"null", br#"{"force":1}"#] {
            let e = parse_sync_request(body).unwrap_err();
            assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", String::from_utf8_lossy(body));
            assert!(e.message.starts_with("malformed request body"), "{}", e.message);
        }
    }

    #[test]
    fn resolve_requests_name_a_file_and_a_known_resolution() {
        let r = parse_resolve_request(br#"{"stable_id":"s1","resolution":"local_wins"}"#).unwrap();
        assert_eq!(
            r,
            ResolveRequest { file: FileRef::StableId("s1".into()), kind: ResolutionKind::LocalWins }
        );
        let r = parse_resolve_request(br#"{"file_id":"ab","resolution":"remote_wins"}"#).unwrap();
        assert_eq!(r.file, FileRef::FileId("ab".into()));
        assert_eq!(r.kind, ResolutionKind::RemoteWins);
        let r = parse_resolve_request(
            br#"{"stable_id":"s","file_id":"f","resolution":"keep_both","new_variant":"v2"}"#,
        )
        .unwrap();
        assert_eq!(r.file, FileRef::StableId("s".into()));
        assert_eq!(r.kind, ResolutionKind::KeepBoth { variant: "v2".into() });
    }

    #[test]
    fn resolve_shape_errors_are_422_and_inapplicable_ones_400() {
        let status = |b: &[u8]| parse_resolve_request(b).unwrap_err().status;
        assert_eq!(status(b""), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(status(br#"{"resolution":"local_wins"}"#), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            status(br#"{"stable_id":"","resolution":"local_wins"}"#),
            StatusCode::UNPROCESSABLE_ENTITY
        );
        assert_eq!(status(br#"{"stable_id":"s"}"#), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(status(br#"{"stable_id":"s","resolution":true}"#), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(status(br#"{"stable_id":"s","resolution":"mine"}"#), StatusCode::BAD_REQUEST);
        assert_eq!(status(br#"{"stable_id":"s","resolution":"keep_both"}"#), StatusCode::BAD_REQUEST);
        assert_eq!(
            status(br#"{"stable_id":"s","resolution":"keep_both","new_variant":" "}"#),
            StatusCode::BAD_REQUEST
        );
    }
}
