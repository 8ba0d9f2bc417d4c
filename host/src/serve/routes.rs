//! The routes, under `/api/` and `/api/v1/` alike, all behind the token.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use davsync_core::model::iso8601_utc;
use davsync_core::ports::NoProgress;
use davsync_core::{ConflictInfo, Resolution};
use serde_json::{Value, json};

use super::body::{FileRef, parse_resolve_request, parse_sync_request, resolution_name};
use super::runner::Activity;
use super::{ApiError, ApiState, BODY_BYTES_MAX, KEEP_ALIVE_INTERVAL, answer, json_body};
use crate::datalock::DataDirLock;

/// The API's router over `state`.
pub fn router(state: Arc<ApiState>) -> Router {
    let api = Router::new()
        .route("/sync/status", get(status))
        .route("/sync", post(sync))
        .route("/sync/", post(sync))
        .route("/sync/conflicts", get(conflicts))
        .route("/sync/resolve-conflict", post(resolve))
        .route("/sse/subscribe", get(subscribe));
    Router::new()
        .nest("/api/v1", api.clone())
        .nest("/api", api)
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(DefaultBodyLimit::max(BODY_BYTES_MAX))
        // Outermost: nothing, not even a 404 or 405, answers without the token.
        .layer(middleware::from_fn_with_state(state.clone(), require_token))
        .with_state(state)
}

async fn require_token(State(st): State<Arc<ApiState>>, request: Request, next: Next) -> Response {
    if st.token.admits(request.headers()) {
        next.run(request).await
    } else {
        ApiError::unauthorized().into_response()
    }
}

/// Runs engine work on the blocking pool.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(r) => r,
        Err(e) => Err(ApiError::internal(&anyhow::anyhow!("the engine's worker thread failed: {e}"))),
    }
}

async fn status(State(st): State<Arc<ApiState>>) -> Result<Response, ApiError> {
    let setup = st.setup().clone();
    let report = blocking(move || {
        let retries = setup.sync_options().remote_retries_max;
        answer(setup.syncer(Box::new(NoProgress))?.status(retries))
    })
    .await?;
    let mut v = serde_json::to_value(&report).expect("a status serializes");
    v["sync_in_progress"] = json!(st.runner.running().is_some_and(|r| r.activity == Activity::Sync));
    Ok(json_body(v.to_string()))
}

async fn sync(State(st): State<Arc<ApiState>>, body: Bytes) -> Result<Response, ApiError> {
    let request = parse_sync_request(&body)?;
    let claim = st.runner.try_claim(Activity::Sync)?;
    let runner = st.runner.clone();
    // The sync runs to its end even if this request's client goes away: the
    // work, its events and the claim's release all live in the blocking task.
    let summary = blocking(move || runner.sync_blocking(claim, request.force)).await?;
    Ok(json_body(summary.to_string()))
}

async fn conflicts(State(st): State<Arc<ApiState>>) -> Result<Response, ApiError> {
    let setup = st.setup().clone();
    let list = blocking(move || answer(setup.syncer(Box::new(NoProgress))?.conflicts())).await?;
    let items: Vec<Value> = list.iter().map(conflict_json).collect();
    Ok(json_body(json!({ "conflicts": items, "total": items.len() }).to_string()))
}

/// One conflict as the app knows it: `file_id` is the local content hash.
fn conflict_json(c: &ConflictInfo) -> Value {
    json!({
        "file_id": c.local_hash,
        "stable_id": c.stable_id,
        "filename": c.filename,
        "doc_id": c.doc_id,
        "local_modified_at": iso8601_utc(c.local_modified_at_ms),
        "local_hash": c.local_hash,
        "local_deleted": c.local_deleted,
        "remote_modified_at": c.remote_modified_at,
        "remote_hash": c.remote_hash,
        "remote_deleted": c.remote_deleted,
        "conflict_type": c.kind.as_str(),
    })
}

async fn resolve(State(st): State<Arc<ApiState>>, body: Bytes) -> Result<Response, ApiError> {
    let request = parse_resolve_request(&body)?;
    let claim = st.runner.try_claim(Activity::Resolve)?;
    let setup = st.setup().clone();
    let outcome = blocking(move || {
        let _claim = claim;
        let _data = DataDirLock::try_acquire(&setup.data)?;
        let mut syncer = setup.syncer(Box::new(NoProgress))?;
        let stable_id = match request.file {
            FileRef::StableId(id) => id,
            FileRef::FileId(hash) => {
                let list = answer(syncer.conflicts())?;
                stable_id_of_content(&list, &hash, || {
                    Ok(setup.open_store()?.list()?.iter().any(|r| r.id.as_str() == hash))
                })?
            }
        };
        let resolution = Resolution { stable_id, kind: request.kind.clone() };
        let outcome = answer(syncer.resolve(&resolution))?;
        Ok((outcome, request.kind))
    })
    .await?;
    let (outcome, kind) = outcome;
    let v = json!({
        "stable_id": outcome.stable_id,
        "resolution": resolution_name(&kind),
        "new_stable_id": outcome.new_stable_id,
        "message": outcome.message,
    });
    Ok(json_body(v.to_string()))
}

/// The one conflicted file whose local content is `hash`. None: 404 if no
/// file has that content (`exists` says), 400 if it is not in conflict; more
/// than one: 400, name it by `stable_id`.
fn stable_id_of_content(
    conflicts: &[ConflictInfo],
    hash: &str,
    exists: impl FnOnce() -> anyhow::Result<bool>,
) -> Result<String, ApiError> {
    let mut matching = conflicts.iter().filter(|c| c.local_hash == hash);
    match (matching.next(), matching.next()) {
        (Some(c), None) => Ok(c.stable_id.clone()),
        (Some(_), Some(_)) => Err(ApiError::bad_request(format!(
            "several conflicted files have content {hash}: name one by stable_id"
        ))),
        (None, _) if exists()? => {
            Err(ApiError::bad_request(format!("the file with content {hash} is not in conflict")))
        }
        (None, _) => Err(ApiError::not_found(format!("no file with file_id {hash}"))),
    }
}

async fn subscribe(State(st): State<Arc<ApiState>>) -> impl IntoResponse {
    let keep_alive = KeepAlive::new().interval(KEEP_ALIVE_INTERVAL).text("keep-alive");
    let headers = [("x-accel-buffering", "no")];
    (headers, Sse::new(st.hub.subscribe()).keep_alive(keep_alive))
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;
    use davsync_core::model::ConflictKind;

    use super::*;

    fn conflict(stable_id: &str, local_hash: &str) -> ConflictInfo {
        ConflictInfo {
            stable_id: stable_id.into(),
            filename: "f.pdf".into(),
            doc_id: "d".into(),
            local_hash: local_hash.into(),
            local_deleted: false,
            local_modified_at_ms: 0,
            remote_hash: "r".into(),
            remote_deleted: false,
            remote_modified_at: "1970-01-01T00:00:00Z".into(),
            kind: ConflictKind::BothModified,
        }
    }

    #[test]
    fn a_file_id_names_exactly_one_conflicted_file() {
        let list = [conflict("s1", "h1"), conflict("s2", "h2"), conflict("s3", "h2")];
        assert_eq!(stable_id_of_content(&list, "h1", || Ok(true)).unwrap(), "s1");
        assert_eq!(
            stable_id_of_content(&list, "h2", || Ok(true)).unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            stable_id_of_content(&list, "h9", || Ok(true)).unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            stable_id_of_content(&list, "h9", || Ok(false)).unwrap_err().status,
            StatusCode::NOT_FOUND
        );
    }

    #[test]
    fn a_conflict_has_the_fields_the_app_reads() {
        let v = conflict_json(&conflict("s1", "h1"));
        for field in [
            "file_id",
            "stable_id",
            "filename",
            "doc_id",
            "local_modified_at",
            "local_hash",
            "remote_modified_at",
            "remote_hash",
            "conflict_type",
        ] {
            assert!(v.get(field).is_some(), "missing {field}");
        }
        assert_eq!(v["conflict_type"], "both_modified");
        assert_eq!(v["local_modified_at"], iso8601_utc(0));
    }
}
