//! The davsync HTTP front: a `wasi:http/incoming-handler` that serves the
//! imported `maintenance` interface as JSON (world `http-front`,
//! `wit/serverless.wit`).
//!
//! | route | does | answers |
//! |---|---|---|
//! | `GET /status` | `remote-status` | 200 + the remote at a glance |
//! | `GET /verify` | `verify` | 200 + the report (`"ok": false` when a live blob is missing or damaged) |
//! | `POST /gc` | `gc`, with `Authorization: Bearer $DAVSYNC_GC_TOKEN` | 200 + what was deleted; 401 without or with a wrong token; 403 when no token is configured |
//!
//! Another method on those paths is 405 (with `Allow`), any other path 404.
//! Every error is a JSON object `{"error": kind, "message": text, …}`; the
//! mapping of each `maintenance-error` to an HTTP status is [`error_status`].
//! Settings come from `wasi:cli/environment` ([`Settings`]).

mod json;

/// The generated bindings of the `http-front` world.
///
/// wit-bindgen's generated glue is made of `unsafe` blocks; the workspace
/// denies `unsafe_code`, so it is allowed here, for generated code only.
#[allow(unsafe_code, missing_docs, missing_debug_implementations)]
mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "http-front",
        generate_all,
    });

    use super::Front;
    export!(Front with_types_in crate::bindings);
}

use bindings::davsync::sync::maintenance as m;
use bindings::exports::wasi::http::incoming_handler;
use bindings::wasi::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

pub use json::error_status;

/// The front's settings, from environment variables `(name, value)`:
///
/// | variable | meaning | default |
/// |---|---|---|
/// | `DAVSYNC_GC_TOKEN` | bearer token `POST /gc` requires; unset: gc refused | none |
/// | `DAVSYNC_GC_GRACE_MS` | gc keeps unreferenced blobs younger than this | 86400000 (24 h) |
/// | `DAVSYNC_LEASE_TTL_MS`, `DAVSYNC_LOCK_WAIT_MS`, `DAVSYNC_REMOTE_RETRIES_MAX`, `DAVSYNC_METADATA_BYTES_MAX`, `DAVSYNC_BLOB_BYTES_MAX` | the engine's tunables | the engine's `default-options` (the CLI's) |
/// | `DAVSYNC_HOST_NAME` | written into gc's lease | `serverless` |
/// | `DAVSYNC_REMOTE_URL` | checked to be set here; read by the transport | required |
#[derive(Clone)]
pub struct Settings {
    /// The gc bearer token, if gc is enabled.
    pub gc_token: Option<String>,
    /// The engine's options.
    pub options: m::MaintenanceOptions,
    /// Whether `DAVSYNC_REMOTE_URL` is set.
    pub remote_configured: bool,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("gc_token", &self.gc_token.as_ref().map(|_| "***"))
            .field("options", &self.options)
            .field("remote_configured", &self.remote_configured)
            .finish()
    }
}

impl Settings {
    /// Reads the settings over `d`, the engine's defaults; a malformed
    /// number is an error naming the variable.
    pub fn from_env(vars: &[(String, String)], d: m::MaintenanceOptions) -> Result<Settings, String> {
        let var = |name: &str| {
            vars.iter().find(|(n, _)| n == name).map(|(_, v)| v.trim()).filter(|v| !v.is_empty())
        };
        fn num<T: std::str::FromStr>(value: Option<&str>, name: &str, default: T) -> Result<T, String> {
            match value {
                None => Ok(default),
                Some(v) => v.parse().map_err(|_| format!("{name}={v:?} is not a valid number")),
            }
        }
        let options = m::MaintenanceOptions {
            lease_ttl_ms: num(var("DAVSYNC_LEASE_TTL_MS"), "DAVSYNC_LEASE_TTL_MS", d.lease_ttl_ms)?,
            lock_wait_ms: num(var("DAVSYNC_LOCK_WAIT_MS"), "DAVSYNC_LOCK_WAIT_MS", d.lock_wait_ms)?,
            remote_retries_max: num(
                var("DAVSYNC_REMOTE_RETRIES_MAX"),
                "DAVSYNC_REMOTE_RETRIES_MAX",
                d.remote_retries_max,
            )?,
            metadata_bytes_max: num(
                var("DAVSYNC_METADATA_BYTES_MAX"),
                "DAVSYNC_METADATA_BYTES_MAX",
                d.metadata_bytes_max,
            )?,
            blob_bytes_max: num(var("DAVSYNC_BLOB_BYTES_MAX"), "DAVSYNC_BLOB_BYTES_MAX", d.blob_bytes_max)?,
            gc_grace_ms: num(var("DAVSYNC_GC_GRACE_MS"), "DAVSYNC_GC_GRACE_MS", d.gc_grace_ms)?,
            host_name: var("DAVSYNC_HOST_NAME").map_or_else(|| "serverless".to_owned(), str::to_owned),
        };
        Ok(Settings {
            gc_token: var("DAVSYNC_GC_TOKEN").map(str::to_owned),
            options,
            remote_configured: var("DAVSYNC_REMOTE_URL").is_some(),
        })
    }
}

/// What a request asks for, once routed and authorized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET /status`.
    Status,
    /// `GET /verify`.
    Verify,
    /// `POST /gc` with the right token.
    Gc,
    /// Answer this status and JSON error without calling the engine.
    Refuse {
        /// HTTP status.
        status: u16,
        /// Machine-readable kind.
        kind: &'static str,
        /// For people.
        message: String,
        /// Extra headers (`Allow`, `WWW-Authenticate`).
        headers: Vec<(&'static str, String)>,
    },
}

/// Routes `method path` (query ignored) with the `Authorization` header value.
pub fn route(
    method: &str,
    path_with_query: &str,
    authorization: Option<&str>,
    gc_token: Option<&str>,
) -> Route {
    let path = path_with_query.split(['?', '#']).next().unwrap_or("");
    let path = if path.len() > 1 { path.trim_end_matches('/') } else { path };
    let allowed = match path {
        "/status" | "/verify" => "GET",
        "/gc" => "POST",
        _ => {
            return Route::Refuse {
                status: 404,
                kind: "not-found",
                message: format!("no route {path:?}: use GET /status, GET /verify or POST /gc"),
                headers: Vec::new(),
            };
        }
    };
    if method != allowed {
        return Route::Refuse {
            status: 405,
            kind: "method-not-allowed",
            message: format!("{path} takes {allowed}, not {method}"),
            headers: vec![("allow", allowed.to_owned())],
        };
    }
    match path {
        "/status" => Route::Status,
        "/verify" => Route::Verify,
        _ => {
            let Some(token) = gc_token else {
                return Route::Refuse {
                    status: 403,
                    kind: "gc-disabled",
                    message: "gc is disabled: DAVSYNC_GC_TOKEN is not configured".to_owned(),
                    headers: Vec::new(),
                };
            };
            let given = authorization.and_then(|a| {
                let (scheme, value) = a.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| value.trim())
            });
            match given {
                Some(g) if constant_time_eq(g.as_bytes(), token.as_bytes()) => Route::Gc,
                _ => Route::Refuse {
                    status: 401,
                    kind: "unauthorized",
                    message: "POST /gc needs `Authorization: Bearer <DAVSYNC_GC_TOKEN>`".to_owned(),
                    headers: vec![("www-authenticate", "Bearer realm=\"davsync\"".to_owned())],
                },
            }
        }
    }
}

/// Compares without an early exit on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, x) in a.iter().enumerate() {
        diff |= usize::from(x ^ b.get(i).copied().unwrap_or(!x));
    }
    diff == 0
}

/// The component's export.
#[derive(Debug)]
struct Front;

/// An answer to send: status, extra headers, JSON body.
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: serde_json::Value,
}

fn method_name(m: &Method) -> String {
    match m {
        Method::Get => "GET".into(),
        Method::Head => "HEAD".into(),
        Method::Post => "POST".into(),
        Method::Put => "PUT".into(),
        Method::Delete => "DELETE".into(),
        Method::Connect => "CONNECT".into(),
        Method::Options => "OPTIONS".into(),
        Method::Trace => "TRACE".into(),
        Method::Patch => "PATCH".into(),
        Method::Other(s) => s.clone(),
    }
}

fn answer(request: &IncomingRequest) -> Reply {
    let vars = bindings::wasi::cli::environment::get_environment();
    let settings = match Settings::from_env(&vars, m::default_options()) {
        Ok(s) => s,
        Err(message) => return json::refusal(500, "bad-configuration", &message, Vec::new()),
    };
    let method = method_name(&request.method());
    let path = request.path_with_query().unwrap_or_default();
    let authorization = {
        let headers = request.headers();
        headers.get("authorization").into_iter().next().and_then(|v| String::from_utf8(v).ok())
    };
    let call = match route(&method, &path, authorization.as_deref(), settings.gc_token.as_deref()) {
        Route::Refuse { status, kind, message, headers } => {
            return json::refusal(status, kind, &message, headers);
        }
        call => call,
    };
    if !settings.remote_configured {
        let message = "DAVSYNC_REMOTE_URL is not set: the WebDAV root to look after";
        return json::refusal(500, "not-configured", message, Vec::new());
    }
    let options = &settings.options;
    let result = match call {
        Route::Status => m::remote_status(options).map(|s| json::status(&s)),
        Route::Verify => m::verify(options).map(|r| json::verify(&r)),
        // `Route::Gc` (refusals returned above).
        _ => m::gc(options).map(|r| json::gc(&r)),
    };
    match result {
        Ok(body) => Reply { status: 200, headers: Vec::new(), body },
        Err(e) => json::error(&e),
    }
}

impl incoming_handler::Guest for Front {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let reply = answer(&request);
        drop(request);
        let mut body = serde_json::to_vec_pretty(&reply.body).unwrap_or_default();
        body.push(b'\n');
        let mut entries: Vec<(String, Vec<u8>)> = vec![
            ("content-type".into(), b"application/json".to_vec()),
            ("content-length".into(), body.len().to_string().into_bytes()),
            ("cache-control".into(), b"no-store".to_vec()),
        ];
        entries.extend(reply.headers.into_iter().map(|(n, v)| (n.to_owned(), v.into_bytes())));
        // Headers are ours and valid; should the runtime still refuse them,
        // the response goes out without the extra ones.
        let fields = Fields::from_list(&entries).unwrap_or_else(|_| Fields::new());
        let response = OutgoingResponse::new(fields);
        let _ = response.set_status_code(reply.status);
        let Ok(out_body) = response.body() else { return };
        ResponseOutparam::set(response_out, Ok(response));
        if let Ok(stream) = out_body.write() {
            for chunk in body.chunks(4096) {
                if stream.blocking_write_and_flush(chunk).is_err() {
                    break;
                }
            }
        }
        let _ = OutgoingBody::finish(out_body, None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(r: &Route) -> (u16, &'static str) {
        match r {
            Route::Refuse { status, kind, .. } => (*status, kind),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn routes_methods_and_tokens() {
        let t = Some("s3cret");
        assert_eq!(route("GET", "/status", None, None), Route::Status);
        assert_eq!(route("GET", "/verify?x=1", None, t), Route::Verify);
        assert_eq!(route("GET", "/status/", None, t), Route::Status);
        assert_eq!(refused(&route("GET", "/", None, t)), (404, "not-found"));
        assert_eq!(refused(&route("GET", "/statusx", None, t)), (404, "not-found"));
        assert_eq!(refused(&route("POST", "/status", None, t)), (405, "method-not-allowed"));
        assert_eq!(refused(&route("GET", "/gc", Some("Bearer s3cret"), t)), (405, "method-not-allowed"));
        assert_eq!(refused(&route("POST", "/gc", Some("Bearer s3cret"), None)), (403, "gc-disabled"));
        assert_eq!(refused(&route("POST", "/gc", None, t)), (401, "unauthorized"));
        assert_eq!(refused(&route("POST", "/gc", Some("Bearer s3cre"), t)), (401, "unauthorized"));
        assert_eq!(refused(&route("POST", "/gc", Some("Basic s3cret"), t)), (401, "unauthorized"));
        assert_eq!(refused(&route("POST", "/gc", Some("Bearer s3cretX"), t)), (401, "unauthorized"));
        assert_eq!(route("POST", "/gc", Some("bearer  s3cret "), t), Route::Gc);
    }

    fn defaults() -> m::MaintenanceOptions {
        m::MaintenanceOptions {
            lease_ttl_ms: 1,
            lock_wait_ms: 2,
            remote_retries_max: 3,
            metadata_bytes_max: 4,
            blob_bytes_max: 5,
            gc_grace_ms: 6,
            host_name: "maintenance".into(),
        }
    }

    #[test]
    fn settings_defaults_and_errors() {
        let env = |p: &[(&str, &str)]| {
            p.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect::<Vec<_>>()
        };
        let s = Settings::from_env(&env(&[("DAVSYNC_REMOTE_URL", "http://h/")]), defaults()).unwrap();
        assert_eq!(s.gc_token, None);
        assert!(s.remote_configured);
        let o = &s.options;
        assert_eq!((o.lease_ttl_ms, o.lock_wait_ms, o.remote_retries_max), (1, 2, 3));
        assert_eq!((o.metadata_bytes_max, o.blob_bytes_max, o.gc_grace_ms), (4, 5, 6));
        assert_eq!(o.host_name, "serverless");
        let vars = env(&[
            ("DAVSYNC_GC_TOKEN", "t0ken"),
            ("DAVSYNC_GC_GRACE_MS", "0"),
            ("DAVSYNC_LOCK_WAIT_MS", "9"),
        ]);
        let s = Settings::from_env(&vars, defaults()).unwrap();
        assert_eq!(
            (s.gc_token.as_deref(), s.options.gc_grace_ms, s.remote_configured),
            (Some("t0ken"), 0, false)
        );
        assert_eq!(s.options.lock_wait_ms, 9);
        assert!(!format!("{s:?}").contains("t0ken"), "Debug hides the token");
        let e = Settings::from_env(&env(&[("DAVSYNC_LOCK_WAIT_MS", "-1")]), defaults()).unwrap_err();
        assert!(e.contains("DAVSYNC_LOCK_WAIT_MS"), "{e}");
    }
}
