//! `davsync serve`: the HTTP API, with live sync progress over server-sent
//! events (README, section "HTTP API").
//!
//! Threads: axum runs on a multi-threaded tokio runtime; every engine call
//! (status, sync, conflicts, resolve) runs on tokio's blocking pool, so a sync
//! never holds up a request, and each call builds its own `Syncer` there (the
//! engine is not `Send`). One sync or resolution at a time ([`runner`]); its
//! progress reaches every subscriber through a bounded broadcast ([`hub`]).

pub mod auth;
pub mod body;
pub mod hub;
mod routes;
pub mod runner;

use std::net::ToSocketAddrs;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use davsync_core::SyncError;
use serde_json::json;

use crate::datalock::DataLockError;
use crate::setup::Setup;
use auth::ApiToken;
use hub::{ProgressHub, QUEUE_EVENTS_MAX};
use runner::{Activity, Running, SyncRunner};

pub use routes::router;

/// Largest request body accepted; the API's bodies are a few hundred bytes.
pub const BODY_BYTES_MAX: usize = 64 * 1024;
/// Interval of the SSE keep-alive comment.
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(15);

/// `davsync serve` options.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on, `host:port` (`127.0.0.1:8765`, `localhost:8765`,
    /// `[::1]:8765`). The API speaks plain HTTP: keep it on loopback or
    /// behind a TLS proxy. Port 0 picks a free port (printed on stderr).
    #[arg(long, default_value = "127.0.0.1:8765", value_parser = parse_listen)]
    pub listen: String,
    /// The API token every request must present (at least 16 characters).
    /// Prefer the environment variable: a flag shows in the process list.
    #[arg(long, env = "DAVSYNC_API_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Also sync every SECS seconds; a tick costs one status check when
    /// nothing changed.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub interval: Option<u64>,
}

/// Checks that `text` is `host:port` with a host that resolves (a name such
/// as `localhost` as well as an IP address).
fn parse_listen(text: &str) -> Result<String, String> {
    let mut addrs = text
        .to_socket_addrs()
        .map_err(|e| format!("{e} (expected host:port, e.g. 127.0.0.1:8765 or localhost:8765)"))?;
    match addrs.next() {
        Some(_) => Ok(text.to_owned()),
        None => Err(format!("{text} resolves to no address")),
    }
}

/// What every handler shares.
#[derive(Debug)]
pub struct ApiState {
    /// The secret.
    pub token: ApiToken,
    /// Syncs and resolutions, one at a time.
    pub runner: Arc<SyncRunner>,
    /// Progress to subscribers.
    pub hub: ProgressHub,
}

impl ApiState {
    /// The state for `setup` guarded by `token`.
    pub fn new(setup: Setup, token: ApiToken) -> ApiState {
        let hub = ProgressHub::new(QUEUE_EVENTS_MAX);
        ApiState { token, runner: Arc::new(SyncRunner::new(setup, hub.clone())), hub }
    }

    fn setup(&self) -> &Setup {
        self.runner.setup()
    }
}

/// Runs the server until SIGINT or SIGTERM. A running sync is allowed to
/// finish; subscribers' streams are closed.
pub fn run(setup: &Setup, args: &ServeArgs) -> Result<()> {
    let token = ApiToken::new(args.token.as_deref())?;
    // Fail now, not at the first request, if the app's database is unusable.
    setup.open_store()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("davsync-api")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(setup.clone(), token, args.clone()))
}

async fn serve(setup: Setup, token: ApiToken, args: ServeArgs) -> Result<()> {
    // Every address the host name resolves to is tried in turn.
    let listener = tokio::net::TcpListener::bind(args.listen.as_str())
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    if !addr.ip().is_loopback() {
        tracing::warn!("the API listens on {addr}, beyond this machine, in plain HTTP");
    }
    let state = Arc::new(ApiState::new(setup, token));
    if let Some(secs) = args.interval {
        tokio::spawn(runner::run_interval(state.runner.clone(), Duration::from_secs(secs)));
    }
    // Tests and scripts read this line for the port.
    eprintln!("davsync: listening on http://{addr}");
    let hub = state.hub.clone();
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            eprintln!("davsync: stopping (a running sync is allowed to finish)");
            hub.close_all();
        })
        .await
        .context("serving the API")
}

async fn shutdown_signal() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
}

/// An error answer: a status and `{"error": sentence, "kind": name}` (plus
/// `since` and `running` on a 409 for a busy data folder).
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable name.
    pub kind: &'static str,
    /// The cause, as a sentence.
    pub message: String,
    /// For a busy data folder: since when it is busy.
    pub since: Option<String>,
    /// For a busy data folder: what holds it.
    pub running: Option<&'static str>,
}

/// The JSON body of an error.
pub fn error_body(message: &str, kind: &str) -> String {
    json!({ "error": message, "kind": kind }).to_string()
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, kind, message: message.into(), since: None, running: None }
    }

    /// 422: a body that is not the expected JSON.
    pub fn unprocessable(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "malformed_body", message)
    }

    /// 400: a well-formed request that cannot apply.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid", message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 401: no token, or the wrong one.
    pub fn unauthorized() -> ApiError {
        let text = "missing or wrong API token (send Authorization: Bearer <token> or X-Session-Id: <token>)";
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", text)
    }

    /// 409: something already acts on the data folder in this server.
    pub fn busy(r: &Running) -> ApiError {
        let (what, running) = match r.activity {
            Activity::Sync => ("a sync is", "sync"),
            Activity::Resolve => ("a conflict resolution is", "resolve"),
        };
        let mut e = ApiError::new(
            StatusCode::CONFLICT,
            "sync_running",
            format!("{what} already running since {}", r.since),
        );
        e.since = Some(r.since.clone());
        e.running = Some(running);
        e
    }

    /// 500: the host or the engine itself failed.
    pub fn internal(e: &anyhow::Error) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("{e:#}"))
    }

    /// The JSON body.
    pub fn body(&self) -> String {
        let mut v = json!({ "error": self.message, "kind": self.kind });
        if let Some(since) = &self.since {
            v["since"] = json!(since);
        }
        if let Some(running) = self.running {
            v["running"] = json!(running);
        }
        v.to_string()
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> ApiError {
        ApiError::internal(&e)
    }
}

impl From<DataLockError> for ApiError {
    fn from(e: DataLockError) -> ApiError {
        match e {
            DataLockError::Busy { .. } => {
                ApiError::new(StatusCode::CONFLICT, "data_dir_locked", e.to_string())
            }
            _ => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
        }
    }
}

impl From<SyncError> for ApiError {
    fn from(e: SyncError) -> ApiError {
        use StatusCode as S;
        let (status, kind) = match &e {
            SyncError::Local(_) => (S::INTERNAL_SERVER_ERROR, "local"),
            SyncError::Remote(_) => (S::BAD_GATEWAY, "remote"),
            SyncError::RemoteCorrupt(_) => (S::BAD_GATEWAY, "remote_corrupt"),
            SyncError::RemoteTooNew { .. } => (S::BAD_GATEWAY, "remote_too_new"),
            SyncError::LockHeld { .. } => (S::SERVICE_UNAVAILABLE, "remote_locked"),
            SyncError::LeaseLost => (S::SERVICE_UNAVAILABLE, "lease_lost"),
            SyncError::Contention { .. } => (S::SERVICE_UNAVAILABLE, "contention"),
            SyncError::MassDelete { .. } => (S::CONFLICT, "mass_delete"),
            SyncError::NotFound(_) => (S::NOT_FOUND, "not_found"),
            SyncError::NotInConflict(_) => (S::BAD_REQUEST, "not_in_conflict"),
            SyncError::Invalid(_) => (S::BAD_REQUEST, "invalid"),
            _ => (S::INTERNAL_SERVER_ERROR, "error"),
        };
        ApiError::new(status, kind, e.to_string())
    }
}

/// An engine call's two layers of failure as one API error.
pub fn answer<T>(r: Result<Result<T, SyncError>>) -> Result<T, ApiError> {
    Ok(r??)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, json_body(self.body())).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(axum::http::header::WWW_AUTHENTICATE, axum::http::HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// A JSON text as a response body with its content type.
pub fn json_body(text: impl Into<String>) -> Response {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], text.into()).into_response()
}

#[cfg(test)]
mod tests {
    use davsync_core::ports::RemoteError;

    use super::*;

    #[test]
    fn engine_errors_map_to_statuses_a_client_can_act_on() {
        let status = |e: SyncError| ApiError::from(e).status;
        assert_eq!(status(SyncError::NotFound("x".into())), StatusCode::NOT_FOUND);
        assert_eq!(status(SyncError::NotInConflict("x".into())), StatusCode::BAD_REQUEST);
        assert_eq!(status(SyncError::Invalid("x".into())), StatusCode::BAD_REQUEST);
        assert_eq!(status(SyncError::MassDelete { would_delete: 20, live_total: 30 }), StatusCode::CONFLICT);
        assert!(status(SyncError::Remote(RemoteError::Unavailable("down".into()))).is_server_error());
        assert!(status(SyncError::RemoteCorrupt("bad".into())).is_server_error());
        assert!(status(SyncError::LeaseLost).is_server_error());
    }

    #[test]
    fn error_bodies_carry_the_cause_and_a_kind() {
        let e = ApiError::from(SyncError::NotFound("s1".into()));
        let v: serde_json::Value = serde_json::from_str(&e.body()).unwrap();
        assert_eq!(v["kind"], "not_found");
        assert!(v["error"].as_str().unwrap().contains("s1"));
        let trap = ApiError::from(anyhow::anyhow!("inner").context("outer"));
        assert_eq!(trap.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(trap.message, "outer: inner");
    }
}
