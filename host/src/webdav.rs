//! The WebDAV transport: the production remote (Nextcloud, Apache mod_dav,
//! wsgidav, `rclone serve webdav`, …) over HTTP(S).
//!
//! - [`WebDav`]: a cheap-clone client (one connection pool, one record of the
//!   server's clock and capabilities) implementing [`RemoteTransport`].
//! - [`WebDavBlobs`]: [`BlobTransfer`] over it: uploads and downloads are
//!   streamed (a large PDF is never held in memory), run several at a time,
//!   and verified against their SHA-256 on both sides.
//!
//! What servers honour differs (TOOLCHAIN.md): rclone ignores every
//! conditional header, Apache hands out weak ETags for a second after a write.
//! On the first conditional write the client probes the server once, in its
//! own scratch file, and remembers what it honours ([`Capabilities`]). A
//! condition the server would ignore (or could not evaluate, like `If-Match`
//! with a weak ETag) is checked by the client itself just before the write.
//! That check is not atomic, which is why the core never relies on
//! conditions alone: every commit happens under its lease and behind the
//! `version.txt` fence.
//!
//! Credentials travel only in the `Authorization` header; no error message,
//! log line or `Debug` output contains the password.

use std::fmt;
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use base64::Engine as _;
use davsync_core::model::ContentHash;
use davsync_core::ports::{
    BlobError, BlobHasher, BlobTransfer, DownloadJob, Fetched, Precondition, RemoteDigest, RemoteEntry,
    RemoteError, RemoteStat, RemoteTransport, UploadJob, move_into_place,
};
use percent_encoding::{percent_decode_str, utf8_percent_encode};
use sha2::{Digest, Sha256};
use ureq::http::{self, HeaderMap, Method, Response, StatusCode};

use crate::folder::{open_local_blob, store_downloaded};

mod multistatus;
mod wire;
use multistatus::{DavEntry, http_date_ms, parse_multistatus};
pub use wire::redact_url;
use wire::{
    ERROR_BODY_BYTES_MAX, Failure, MULTISTATUS_BYTES_MAX, PROPFIND_BODY, SAFE_RETRIES, SEGMENT, failure_of,
    is_weak, weak_eq,
};

/// A password that never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// How to reach the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebDavConfig {
    /// The remote root, `http(s)://host[:port]/path/` (always ends with `/`;
    /// no credentials in it).
    pub root_url: String,
    /// Basic auth user.
    pub username: Option<String>,
    /// Basic auth password.
    pub password: Option<Secret>,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Timeout for one request, headers and small bodies.
    pub request_timeout: Duration,
    /// Blob transfers at once.
    pub transfers: usize,
}

impl WebDavConfig {
    /// A config for `root_url` with default timeouts and 4 transfers. User
    /// info in the URL (`https://user:pass@host/`) is moved into
    /// `username`/`password`; a URL that is not http(s) is refused.
    pub fn new(root_url: &str) -> anyhow::Result<WebDavConfig> {
        let (scheme, rest) = root_url
            .split_once("://")
            .ok_or_else(|| anyhow::anyhow!("remote URL {root_url:?} has no scheme"))?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "http" && scheme != "https" {
            anyhow::bail!("remote URL scheme {scheme:?} is not supported (use http or https)");
        }
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (userinfo, host) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        if host.is_empty() {
            anyhow::bail!("remote URL {} has no host", redact_url(root_url));
        }
        let (username, password) = match userinfo {
            None => (None, None),
            Some(u) => {
                let (user, pass) = u.split_once(':').unwrap_or((u, ""));
                let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
                (Some(decode(user)), (!pass.is_empty()).then(|| Secret::new(decode(pass))))
            }
        };
        let path = path.trim_matches('/');
        let root_url = if path.is_empty() {
            format!("{scheme}://{host}/")
        } else {
            format!("{scheme}://{host}/{path}/")
        };
        Ok(WebDavConfig {
            root_url,
            username,
            password,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            transfers: 4,
        })
    }
}

/// What the server was found to honour (probed once per client).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// `PUT` with `If-None-Match: *` on an existing file is refused (412).
    pub if_none_match: bool,
    /// `PUT` with a wrong `If-Match` is refused (412).
    pub if_match: bool,
    /// Right after a write, the server's ETag was weak (`W/"…"`), so an
    /// `If-Match` with it would fail even when nothing changed.
    pub weak_etag_after_write: bool,
}

impl Capabilities {
    /// The assumption when a probe cannot be made: honour nothing, and check
    /// every condition client-side.
    pub const NONE: Capabilities =
        Capabilities { if_none_match: false, if_match: false, weak_etag_after_write: true };
}

struct Inner {
    agent: ureq::Agent,
    config: WebDavConfig,
    /// `Basic …`, if credentials are configured.
    authorization: Option<String>,
    /// The `Date` of the latest response, ms since the Unix epoch.
    server_time_ms: Mutex<Option<i64>>,
    capabilities: OnceLock<Capabilities>,
}

/// The WebDAV client. Clones share one connection pool, clock record and
/// capability record, so the core's `remote` port and the blob mover's
/// workers are one client.
#[derive(Clone)]
pub struct WebDav(Arc<Inner>);

impl fmt::Debug for WebDav {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebDav").field("config", &self.0.config).finish_non_exhaustive()
    }
}

/// An answer: status, headers, and the body still to be read.
type Answer = Response<ureq::Body>;

impl WebDav {
    /// A client for `config`. Makes no request.
    pub fn new(config: WebDavConfig) -> WebDav {
        let agent_config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .allow_non_standard_methods(true)
            .max_redirects(0)
            .timeout_connect(Some(config.connect_timeout))
            .timeout_recv_response(Some(config.request_timeout))
            .timeout_send_request(Some(config.request_timeout))
            .timeout_per_read(Some(config.request_timeout))
            .timeout_per_write(Some(config.request_timeout))
            .max_idle_connections_per_host(config.transfers.max(1) + 2)
            .user_agent(concat!("davsync/", env!("CARGO_PKG_VERSION")))
            .build();
        let authorization = config.username.as_ref().map(|user| {
            let pass = config.password.as_ref().map_or("", Secret::expose);
            let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
            format!("Basic {token}")
        });
        WebDav(Arc::new(Inner {
            agent: agent_config.new_agent(),
            config,
            authorization,
            server_time_ms: Mutex::new(None),
            capabilities: OnceLock::new(),
        }))
    }

    /// The configuration.
    pub fn config(&self) -> &WebDavConfig {
        &self.0.config
    }

    /// The full URL of a remote path (segments percent-encoded).
    fn url(&self, path: &str) -> String {
        let mut url = self.0.config.root_url.clone();
        let encoded: Vec<String> =
            path.split('/').map(|s| utf8_percent_encode(s, SEGMENT).to_string()).collect();
        url.push_str(&encoded.join("/"));
        url
    }

    /// Sends one request. Transport failures become `Unavailable`; every
    /// answer's `Date` updates the server clock.
    fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: Body<'_>,
    ) -> Result<Answer, RemoteError> {
        self.send_at(method, &self.url(path), path, headers, body)
    }

    /// [`WebDav::send`] to a full `url` (`path` names it in error messages).
    fn send_at(
        &self,
        method: &str,
        url: &str,
        path: &str,
        headers: &[(&str, String)],
        body: Body<'_>,
    ) -> Result<Answer, RemoteError> {
        let safe = matches!(method, "GET" | "PROPFIND") && matches!(body, Body::Empty | Body::Bytes(_));
        let mut attempt = 0;
        loop {
            match self.send_to(method, url, path, headers, &body) {
                Err(RemoteError::Unavailable(_)) if safe && attempt < SAFE_RETRIES => {
                    attempt += 1;
                    std::thread::sleep(Duration::from_millis(50 << attempt));
                }
                other => return other,
            }
        }
    }

    /// Sends one request to `url` (`path` names it in error messages).
    fn send_to(
        &self,
        method: &str,
        url: &str,
        path: &str,
        headers: &[(&str, String)],
        body: &Body<'_>,
    ) -> Result<Answer, RemoteError> {
        let method = Method::from_bytes(method.as_bytes())
            .map_err(|_| RemoteError::Protocol { status: 0, message: format!("bad method {method}") })?;
        let mut builder = http::Request::builder().method(method.clone()).uri(url);
        if let Some(auth) = &self.0.authorization {
            builder = builder.header("Authorization", auth);
        }
        for (name, value) in headers {
            builder = builder.header(*name, value);
        }
        let failed = |e: ureq::Error| transport_error(&method, path, e);
        fn built<B>(r: Result<http::Request<B>, http::Error>) -> Result<http::Request<B>, RemoteError> {
            r.map_err(|e| RemoteError::Protocol { status: 0, message: format!("building a request: {e}") })
        }
        let answer = match body {
            Body::Empty => self.0.agent.run(built(builder.body(()))?).map_err(failed)?,
            Body::Bytes(bytes) => {
                let request = built(builder.header("Content-Length", bytes.len().to_string()).body(*bytes))?;
                self.0.agent.run(request).map_err(failed)?
            }
            Body::Stream(cell) => {
                let mut guard =
                    cell.lock().map_err(|_| RemoteError::Unavailable("upload stream poisoned".into()))?;
                let (reader, len) = &mut *guard;
                let len = *len;
                let body = ureq::SendBody::from_reader(reader);
                let request = built(builder.header("Content-Length", len.to_string()).body(body))?;
                self.0.agent.run(request).map_err(failed)?
            }
        };
        self.note_date(answer.headers());
        Ok(answer)
    }

    fn note_date(&self, headers: &HeaderMap) {
        if let Some(ms) = header_str(headers, "Date").and_then(http_date_ms)
            && let Ok(mut t) = self.0.server_time_ms.lock()
        {
            *t = Some(ms);
        }
    }

    /// What the server honours; probed on first need.
    pub fn capabilities(&self) -> Capabilities {
        *self.0.capabilities.get_or_init(|| self.probe().unwrap_or(Capabilities::NONE))
    }

    /// Writes a scratch file under the temporary root and tries conditional
    /// writes on it. Any failure means "assume nothing is honoured".
    fn probe(&self) -> Result<Capabilities, RemoteError> {
        let folder = davsync_core::session::TMP_ROOT;
        match self.mkcol(folder) {
            Ok(()) | Err(RemoteError::AlreadyExists) => {}
            Err(e) => return Err(e),
        }
        let nonce: u64 = getrandom::u64().unwrap_or_default();
        let path = format!("{folder}/probe-{nonce:016x}");
        let result = (|| {
            let etag = self.put_raw(&path, b"probe 1", &[])?;
            let refused = |r: Result<Option<String>, RemoteError>| match r {
                Err(RemoteError::PreconditionFailed) => Ok(true),
                Ok(_) => Ok(false),
                Err(e) => Err(e),
            };
            let if_none_match = refused(self.put_raw(&path, b"probe 2", &[("If-None-Match", "*".into())]))?;
            let if_match =
                refused(self.put_raw(&path, b"probe 3", &[("If-Match", "\"davsync-no-such-etag\"".into())]))?;
            let weak = etag.as_deref().is_some_and(is_weak)
                || self.stat(&path)?.and_then(|s| s.etag).as_deref().is_some_and(is_weak);
            Ok(Capabilities { if_none_match, if_match, weak_etag_after_write: weak })
        })();
        let _ = self.delete(&path);
        let caps = result?;
        tracing::debug!(?caps, "probed the WebDAV server");
        Ok(caps)
    }

    fn put_raw(
        &self,
        path: &str,
        bytes: &[u8],
        headers: &[(&str, String)],
    ) -> Result<Option<String>, RemoteError> {
        self.creating_root(|dav| {
            let answer = dav.send("PUT", path, headers, Body::Bytes(bytes))?;
            expect_success("PUT", path, answer).map(|a| header_str(a.headers(), "ETag").map(str::to_owned))
        })
    }

    /// Runs `write`; when it finds a parent collection missing because the
    /// remote root itself does not exist yet (a fresh server, or a sub-path
    /// such as `WEBDAV_REMOTE_ROOT` that nobody made), creates the root and
    /// its missing parents, like a folder remote's `create_dir_all`, and runs
    /// `write` once more. Costs nothing unless the server answers 409.
    fn creating_root<T>(&self, write: impl Fn(&Self) -> Result<T, RemoteError>) -> Result<T, RemoteError> {
        match write(self) {
            Err(RemoteError::ParentMissing) if self.stat("")?.is_none() => {
                self.create_root()?;
                write(self)
            }
            other => other,
        }
    }

    /// MKCOLs the root collection, first its missing ancestors up to the
    /// server's root. A rival creating it at the same time is fine; a server
    /// that refuses gets an error that names the root and what to do.
    fn create_root(&self) -> Result<(), RemoteError> {
        let root = &self.0.config.root_url;
        let shown = redact_url(root);
        let after_scheme = root.find("://").map_or(0, |i| i + 3);
        let path_at = root[after_scheme..].find('/').map_or(root.len(), |i| after_scheme + i + 1);
        let (server, path) = root.split_at(path_at);
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let url_of = |depth: usize| format!("{server}{}/", segments[..depth].join("/"));
        let refused = |url: &str, e: RemoteError| match e {
            e @ (RemoteError::Unauthorized
            | RemoteError::Unavailable(_)
            | RemoteError::InsufficientStorage) => e,
            e => RemoteError::Protocol {
                status: 0,
                message: format!(
                    "the remote root collection {shown} does not exist and could not be created \
                     (MKCOL {}: {e}); create it on the server or check the URL",
                    redact_url(url)
                ),
            },
        };
        // Up from the root until a collection is made or found there ...
        let mut depth = segments.len();
        loop {
            if depth == 0 {
                return Err(refused(server, RemoteError::ParentMissing));
            }
            let url = url_of(depth);
            match self.mkcol_url(&url, &url) {
                Ok(()) | Err(RemoteError::AlreadyExists) => break,
                Err(RemoteError::ParentMissing) => depth -= 1,
                Err(e) if self.stat("")?.is_some() => {
                    tracing::debug!("MKCOL {url}: {e}, but the remote root exists now");
                    return Ok(());
                }
                Err(e) => return Err(refused(&url, e)),
            }
        }
        // ... then down again to the root.
        for d in depth + 1..=segments.len() {
            let url = url_of(d);
            match self.mkcol_url(&url, &url) {
                Ok(()) | Err(RemoteError::AlreadyExists) => {}
                Err(e) if self.stat("")?.is_some() => {
                    tracing::debug!("MKCOL {url}: {e}, but the remote root exists now");
                    return Ok(());
                }
                Err(e) => return Err(refused(&url, e)),
            }
        }
        tracing::info!("created the remote root collection {shown}");
        Ok(())
    }

    /// MKCOL of one collection below the root, `path`.
    fn mkcol_once(&self, path: &str) -> Result<(), RemoteError> {
        self.mkcol_url(&self.url(path), path)
    }

    /// MKCOL of the collection at `url` (`label` names it in errors). 405
    /// (and Apache's 403 for a lost race, when the collection is there) is
    /// [`RemoteError::AlreadyExists`].
    fn mkcol_url(&self, url: &str, label: &str) -> Result<(), RemoteError> {
        let answer = self.send_at("MKCOL", url, label, &[], Body::Empty)?;
        // 405 Method Not Allowed: something is already there (RFC 4918 9.3.1).
        if answer.status() == StatusCode::METHOD_NOT_ALLOWED {
            return Err(RemoteError::AlreadyExists);
        }
        // Apache answers 403 when a rival's MKCOL of the same path won the
        // race between its existence check and its mkdir.
        if answer.status() == StatusCode::FORBIDDEN
            && self.stat_at(url, label)?.is_some_and(|s| s.is_collection)
        {
            return Err(RemoteError::AlreadyExists);
        }
        expect_success("MKCOL", label, answer).map(drop)
    }

    /// PROPFIND with `depth`; the parsed responses, or `None` on 404.
    fn propfind(&self, path: &str, depth: &str) -> Result<Option<Vec<DavEntry>>, RemoteError> {
        self.propfind_at(&self.url(path), path, depth)
    }

    /// [`WebDav::propfind`] of a full `url` (`path` names it in errors).
    fn propfind_at(&self, url: &str, path: &str, depth: &str) -> Result<Option<Vec<DavEntry>>, RemoteError> {
        let headers =
            [("Depth", depth.to_owned()), ("Content-Type", "application/xml; charset=utf-8".to_owned())];
        let answer = self.send_at("PROPFIND", url, path, &headers, Body::Bytes(PROPFIND_BODY.as_bytes()))?;
        if answer.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let mut answer = expect_success("PROPFIND", path, answer)?;
        let body = answer
            .body_mut()
            .with_config()
            .limit(MULTISTATUS_BYTES_MAX)
            .read_to_vec()
            .map_err(|e| transport_error(&Method::GET, path, e))?;
        parse_multistatus(&body)
            .map(Some)
            .map_err(|why| RemoteError::Protocol { status: 207, message: format!("PROPFIND {path}: {why}") })
    }

    /// The path of `path` as the server's hrefs spell it (decoded, no
    /// trailing slash), for telling the listed collection from its children.
    fn decoded_path_of(&self, path: &str) -> String {
        let root = self.0.config.root_url.split_once("://").map_or("", |(_, r)| r);
        let root_path = root.split_once('/').map_or("", |(_, p)| p);
        let root_path = percent_decode_str(root_path).decode_utf8_lossy();
        let full = format!("/{root_path}{path}");
        full.trim_end_matches('/').to_owned()
    }

    /// Checks a condition the server would not check itself (see the module
    /// docs): `Ok(())` means the write may go ahead.
    fn check_condition_here(&self, path: &str, condition: &Precondition) -> Result<(), RemoteError> {
        let current = self.stat(path)?;
        let holds = match condition {
            Precondition::None => true,
            Precondition::IfNoneMatchAny => current.is_none(),
            Precondition::IfMatch(want) => {
                current.and_then(|s| s.etag).is_some_and(|have| weak_eq(&have, want))
            }
        };
        if holds { Ok(()) } else { Err(RemoteError::PreconditionFailed) }
    }
}

/// A request body.
enum Body<'a> {
    Empty,
    Bytes(&'a [u8]),
    /// A streamed body and its exact length. Sent once: not retried here.
    Stream(Mutex<(&'a mut dyn Read, u64)>),
}

impl RemoteTransport for WebDav {
    fn get(&mut self, path: &str, bytes_max: u64) -> Result<Fetched, RemoteError> {
        let answer = self.send("GET", path, &[], Body::Empty)?;
        let mut answer = expect_success("GET", path, answer)?;
        let etag = header_str(answer.headers(), "ETag").map(str::to_owned);
        if answer.body().content_length().is_some_and(|n| n > bytes_max) {
            return Err(RemoteError::TooLarge { bytes_max });
        }
        let bytes = answer.body_mut().with_config().limit(bytes_max).read_to_vec().map_err(|e| match e {
            ureq::Error::BodyExceedsLimit(_) => RemoteError::TooLarge { bytes_max },
            other => transport_error(&Method::GET, path, other),
        })?;
        Ok(Fetched { bytes, etag })
    }

    fn put(
        &mut self,
        path: &str,
        bytes: &[u8],
        condition: &Precondition,
    ) -> Result<Option<String>, RemoteError> {
        let caps = if matches!(condition, Precondition::None) { None } else { Some(self.capabilities()) };
        let header = match (condition, caps) {
            (Precondition::None, _) => None,
            (Precondition::IfNoneMatchAny, Some(c)) if c.if_none_match => {
                Some(("If-None-Match", "*".to_owned()))
            }
            (Precondition::IfMatch(etag), Some(c)) if c.if_match && !is_weak(etag) => {
                Some(("If-Match", etag.clone()))
            }
            (condition, _) => {
                self.check_condition_here(path, condition)?;
                None
            }
        };
        let headers: Vec<(&str, String)> = header.into_iter().collect();
        self.put_raw(path, bytes, &headers)
    }

    fn delete(&mut self, path: &str) -> Result<(), RemoteError> {
        let answer = self.send("DELETE", path, &[], Body::Empty)?;
        expect_success("DELETE", path, answer).map(drop)
    }

    fn mkcol(&mut self, path: &str) -> Result<(), RemoteError> {
        WebDav::mkcol(self, path)
    }

    fn move_to(&mut self, from: &str, to: &str, overwrite: bool) -> Result<(), RemoteError> {
        let headers =
            [("Destination", self.url(to)), ("Overwrite", if overwrite { "T" } else { "F" }.to_owned())];
        let answer = self.send("MOVE", from, &headers, Body::Empty)?;
        if !overwrite && answer.status() == StatusCode::PRECONDITION_FAILED {
            return Err(RemoteError::AlreadyExists);
        }
        expect_success("MOVE", from, answer).map(drop)
    }

    fn stat(&mut self, path: &str) -> Result<Option<RemoteStat>, RemoteError> {
        WebDav::stat(self, path)
    }

    fn list(&mut self, path: &str) -> Result<Option<Vec<RemoteEntry>>, RemoteError> {
        let Some(entries) = self.propfind(path, "1")? else { return Ok(None) };
        let own = self.decoded_path_of(path);
        let mut children = Vec::new();
        let mut found_self = false;
        for e in entries {
            let href = e.href_path.trim_end_matches('/');
            if href == own {
                if !e.stat.is_collection {
                    return Err(RemoteError::Protocol {
                        status: 207,
                        message: format!("{path} is not a collection"),
                    });
                }
                found_self = true;
                continue;
            }
            let Some((parent, name)) = href.rsplit_once('/') else { continue };
            // Only direct children of the listed collection count.
            if parent != own || name.is_empty() {
                continue;
            }
            children.push(RemoteEntry { name: name.to_owned(), stat: e.stat });
        }
        if !found_self && children.is_empty() {
            tracing::debug!(path, "PROPFIND answer named neither the collection nor children");
        }
        Ok(Some(children))
    }

    fn server_time_ms(&mut self) -> Option<i64> {
        self.0.server_time_ms.lock().ok().and_then(|t| *t)
    }
}

impl WebDav {
    /// Properties of `path` (PROPFIND depth 0); `None` on 404.
    pub fn stat(&self, path: &str) -> Result<Option<RemoteStat>, RemoteError> {
        self.stat_at(&self.url(path), path)
    }

    /// [`WebDav::stat`] of a full `url` (`path` names it in errors).
    fn stat_at(&self, url: &str, path: &str) -> Result<Option<RemoteStat>, RemoteError> {
        let Some(entries) = self.propfind_at(url, path, "0")? else { return Ok(None) };
        let mut entries = entries.into_iter();
        match entries.next() {
            Some(e) => Ok(Some(e.stat)),
            None => Err(RemoteError::Protocol {
                status: 207,
                message: format!("PROPFIND {path}: the answer describes nothing"),
            }),
        }
    }

    /// MKCOL through a shared reference; creates the remote root first if
    /// it is missing.
    fn mkcol(&self, path: &str) -> Result<(), RemoteError> {
        self.creating_root(|dav| dav.mkcol_once(path))
    }

    fn delete(&self, path: &str) -> Result<(), RemoteError> {
        let mut this = self.clone();
        RemoteTransport::delete(&mut this, path)
    }
}

fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// A transport failure (no HTTP answer) as a transient error.
fn transport_error(method: &Method, path: &str, e: ureq::Error) -> RemoteError {
    RemoteError::Unavailable(format!("{method} {path}: {e}"))
}

/// Maps a non-success status to the error the core acts on (the shared
/// table, `wire::failure_of`); passes 2xx on.
fn expect_success(method: &str, path: &str, mut answer: Answer) -> Result<Answer, RemoteError> {
    let status = answer.status().as_u16();
    let Some(failure) = failure_of(status) else { return Ok(answer) };
    Err(wire::remote_error!(RemoteError, failure, |failure| match failure {
        Failure::Redirected => RemoteError::Protocol {
            status,
            message: wire::redirect_message(method, path, header_str(answer.headers(), "Location")),
        },
        Failure::ServerError => RemoteError::Unavailable(format!("{method} {path}: server error {status}")),
        _ => {
            let body =
                answer.body_mut().with_config().limit(ERROR_BODY_BYTES_MAX).read_to_vec().unwrap_or_default();
            RemoteError::Protocol { status, message: wire::other_message(method, path, &body) }
        }
    }))
}

// ---------------------------------------------------------------------------
// Blob transfers
// ---------------------------------------------------------------------------

/// Streams blobs between the local data folder and a [`WebDav`] server,
/// `transfers` at a time.
#[derive(Debug)]
pub struct WebDavBlobs {
    files_dir: PathBuf,
    dav: WebDav,
}

impl WebDavBlobs {
    /// A blob mover between `files_dir` (the data folder's `files/`) and `dav`.
    pub fn new(files_dir: impl Into<PathBuf>, dav: WebDav) -> WebDavBlobs {
        WebDavBlobs { files_dir: files_dir.into(), dav }
    }

    fn upload_one(&self, job: &UploadJob) -> Result<(), BlobError> {
        let (file, len) = open_local_blob(&self.files_dir, &job.blob)?;
        let mut reader = HashingReader::new(file);
        let answer = self.dav.send("PUT", &job.temp_path, &[], Body::Stream(Mutex::new((&mut reader, len))));
        let answer = answer.and_then(|a| expect_success("PUT", &job.temp_path, a));
        if let Some(e) = reader.error.take() {
            return Err(BlobError::LocalIo(format!("reading {}: {e}", job.blob.path())));
        }
        answer?;
        let actual = reader.finish();
        if actual != job.blob.hash {
            // The local file changed or was corrupt: never publish it.
            let _ = self.dav.delete(&job.temp_path);
            return Err(BlobError::HashMismatch { expected: job.blob.hash.clone(), actual });
        }
        move_into_place(&mut self.dav.clone(), job)?;
        Ok(())
    }

    fn download_one(&self, job: &DownloadJob, bytes_max: u64) -> Result<(), BlobError> {
        let answer = self.dav.send("GET", &job.remote_path, &[], Body::Empty)?;
        let answer = expect_success("GET", &job.remote_path, answer)?;
        if answer.body().content_length().is_some_and(|n| n > bytes_max) {
            return Err(BlobError::TooLarge { bytes_max });
        }
        let mut reader = NetReader { inner: answer.into_body().into_reader(), error: None };
        let stored = store_downloaded(&self.files_dir, &job.blob, &mut reader, bytes_max);
        match (stored, reader.error) {
            // A broken connection mid-body is the network's fault: retryable.
            (Err(_), Some(e)) => {
                Err(BlobError::Remote(RemoteError::Unavailable(format!("GET {}: {e}", job.remote_path))))
            }
            (r, _) => r,
        }
    }

    /// Runs `work` over `jobs` on up to `transfers` threads; results in order.
    fn run_all<J: Sync>(
        &self,
        jobs: &[J],
        work: impl Fn(&J) -> Result<(), BlobError> + Sync,
    ) -> Vec<Result<(), BlobError>> {
        let workers = self.dav.config().transfers.clamp(1, 64).min(jobs.len());
        if workers <= 1 {
            return jobs.iter().map(work).collect();
        }
        let next = AtomicUsize::new(0);
        let results: Vec<Mutex<Option<Result<(), BlobError>>>> =
            jobs.iter().map(|_| Mutex::new(None)).collect();
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(job) = jobs.get(i) else { break };
                        let r = work(job);
                        if let Ok(mut slot) = results[i].lock() {
                            *slot = Some(r);
                        }
                    }
                });
            }
        });
        results
            .into_iter()
            .map(|slot| {
                slot.into_inner().ok().flatten().unwrap_or_else(|| {
                    Err(BlobError::LocalIo("a transfer worker stopped without an answer".to_owned()))
                })
            })
            .collect()
    }
}

impl BlobTransfer for WebDavBlobs {
    fn local_has(&mut self, blob: &davsync_core::model::BlobRef) -> Result<bool, BlobError> {
        match open_local_blob(&self.files_dir, blob) {
            Ok(_) => Ok(true),
            Err(BlobError::LocalMissing(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn upload(&mut self, jobs: &[UploadJob]) -> Vec<Result<(), BlobError>> {
        self.run_all(jobs, |job| self.upload_one(job))
    }

    fn download(&mut self, jobs: &[DownloadJob], bytes_max: u64) -> Vec<Result<(), BlobError>> {
        self.run_all(jobs, |job| self.download_one(job, bytes_max))
    }

    fn remove_local(&mut self, blob: &davsync_core::model::BlobRef) -> Result<(), BlobError> {
        crate::folder::remove_local_blob(&self.files_dir, blob)
    }
}

/// Streams the body through SHA-256 in fixed-size chunks: a blob of any
/// size is checked in constant memory.
impl BlobHasher for WebDavBlobs {
    fn remote_hash(&mut self, path: &str, bytes_max: u64) -> Result<RemoteDigest, BlobError> {
        let answer = expect_success("GET", path, self.dav.send("GET", path, &[], Body::Empty)?)?;
        if answer.body().content_length().is_some_and(|n| n > bytes_max) {
            return Err(BlobError::TooLarge { bytes_max });
        }
        let mut reader = NetReader { inner: answer.into_body().into_reader(), error: None };
        crate::folder::hash_stream(&mut reader, bytes_max).map_err(|e| {
            let why = reader.error.take().unwrap_or(e);
            BlobError::Remote(RemoteError::Unavailable(format!("GET {path}: {why}")))
        })?
    }
}

/// Hashes what passes through; remembers a read error (the local file's).
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    error: Option<io::Error>,
}

impl<R: Read> HashingReader<R> {
    fn new(inner: R) -> Self {
        HashingReader { inner, hasher: Sha256::new(), error: None }
    }

    fn finish(self) -> ContentHash {
        crate::folder::hex_hash(&self.hasher.finalize())
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.hasher.update(&buf[..n]);
                Ok(n)
            }
            Err(e) => {
                let copy = io::Error::new(e.kind(), e.to_string());
                self.error = Some(e);
                Err(copy)
            }
        }
    }
}

/// Remembers a read error (the network's).
struct NetReader<R> {
    inner: R,
    error: Option<String>,
}

impl<R: Read> Read for NetReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).inspect_err(|e| self.error = Some(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_moves_credentials_out_of_the_url_and_normalises_the_root() {
        let c = WebDavConfig::new("https://ann:s%40cret@dav.example:8443/remote.php/dav/files/ann").unwrap();
        assert_eq!(c.root_url, "https://dav.example:8443/remote.php/dav/files/ann/");
        assert_eq!(c.username.as_deref(), Some("ann"));
        assert_eq!(c.password.as_ref().map(Secret::expose), Some("s@cret"));
        let debug = format!("{c:?}");
        assert!(!debug.contains("s@cret") && !debug.contains("s%40cret"), "the password leaked: {debug}");
        assert_eq!(WebDavConfig::new("http://h:1").unwrap().root_url, "http://h:1/");
        assert!(WebDavConfig::new("ftp://h/").is_err());
        assert!(WebDavConfig::new("http:///x").is_err());
        assert_eq!(redact_url("https://ann:pw@h/x"), "https://h/x");
    }

    #[test]
    fn urls_encode_each_segment() {
        let dav = WebDav::new(WebDavConfig::new("http://h/root dir/").unwrap());
        assert_eq!(dav.url("ab/a b#c.pdf"), "http://h/root dir/ab/a%20b%23c.pdf");
    }
}
