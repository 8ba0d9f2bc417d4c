//! WebDAV over [`crate::http`]: the `remote` operations and the streamed
//! `remote-hash`, mirroring the native adapter (`host/src/webdav.rs`).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use percent_encoding::{percent_decode_str, utf8_percent_encode};
use sha2::{Digest, Sha256};

use crate::bindings::exports::davsync::sync::blobs::{BlobError, RemoteDigest};
use crate::bindings::exports::davsync::sync::remote::{
    Fetched, Precondition, RemoteEntry, RemoteError, RemoteStat,
};
use crate::bindings::wasi;
use crate::config::{Config, ConfigError};
use crate::http::{self, Answer, ReadError, Request};
use crate::multistatus::{DavEntry, http_date_ms, parse_multistatus};
use crate::wire::{
    self, ERROR_BODY_BYTES_MAX, Failure, MULTISTATUS_BYTES_MAX, PROPFIND_BODY, SAFE_RETRIES, SEGMENT,
    failure_of, is_weak, weak_eq,
};

/// The server's `Date` of the latest answer (valid when `SERVER_TIME_SET`).
static SERVER_TIME_MS: AtomicI64 = AtomicI64::new(0);
static SERVER_TIME_SET: AtomicBool = AtomicBool::new(false);

/// The `Date` of the latest answer, ms since the Unix epoch.
pub(crate) fn server_time_ms() -> Option<i64> {
    SERVER_TIME_SET.load(Ordering::Relaxed).then(|| SERVER_TIME_MS.load(Ordering::Relaxed))
}

/// The WebDAV client of this instance.
#[derive(Debug)]
pub(crate) struct Dav {
    config: Config,
}

impl Dav {
    /// The client, configured from the environment on first use.
    pub(crate) fn configured() -> Result<&'static Dav, &'static ConfigError> {
        static DAV: OnceLock<Result<Dav, ConfigError>> = OnceLock::new();
        DAV.get_or_init(|| {
            let vars = wasi::cli::environment::get_environment();
            Config::from_env(&vars).map(|config| Dav { config })
        })
        .as_ref()
    }

    /// The absolute path (percent-encoded) of a remote path.
    fn abs_path(&self, path: &str) -> String {
        let encoded: Vec<String> =
            path.split('/').map(|s| utf8_percent_encode(s, SEGMENT).to_string()).collect();
        format!("{}{}", self.config.base_path, encoded.join("/"))
    }

    /// The full URL of a remote path (MOVE's `Destination`).
    fn url(&self, path: &str) -> String {
        let scheme = if self.config.https { "https" } else { "http" };
        format!("{scheme}://{}{}", self.config.authority, self.abs_path(path))
    }

    /// The path of `path` as the server's hrefs spell it (decoded, no
    /// trailing slash).
    fn decoded_path_of(&self, path: &str) -> String {
        let base = percent_decode_str(&self.config.base_path).decode_utf8_lossy();
        format!("{base}{path}").trim_end_matches('/').to_owned()
    }

    /// Sends one request; safe ones (GET, PROPFIND) are retried twice on a
    /// transport failure. Every answer's `Date` updates the server clock.
    fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> Result<Answer, RemoteError> {
        let safe = matches!(method, "GET" | "PROPFIND");
        let abs = self.abs_path(path);
        let mut all: Vec<(&str, String)> = headers.to_vec();
        if let Some(auth) = &self.config.authorization {
            all.push(("Authorization", auth.clone()));
        }
        let request = Request {
            method,
            https: self.config.https,
            authority: &self.config.authority,
            path: &abs,
            headers: all,
            body,
            connect_timeout_ms: self.config.connect_timeout_ms,
            timeout_ms: self.config.timeout_ms,
        };
        let mut attempt = 0;
        loop {
            match http::send(&request) {
                Ok(answer) => {
                    if let Some(ms) = answer.header("Date").and_then(http_date_ms) {
                        SERVER_TIME_MS.store(ms, Ordering::Relaxed);
                        SERVER_TIME_SET.store(true, Ordering::Relaxed);
                    }
                    return Ok(answer);
                }
                Err(_) if safe && attempt < SAFE_RETRIES => {
                    attempt += 1;
                    wasi::clocks::monotonic_clock::subscribe_duration((50u64 << attempt) * 1_000_000).block();
                }
                Err(e) => return Err(RemoteError::Unavailable(format!("{method} {path}: {}", e.0))),
            }
        }
    }

    pub(crate) fn get(&self, path: &str, bytes_max: u64) -> Result<Fetched, RemoteError> {
        let mut answer = expect_success("GET", path, self.send("GET", path, &[], &[])?)?;
        let etag = answer.header("ETag").map(str::to_owned);
        let bytes = answer.read_to_vec(bytes_max).map_err(|e| match e {
            ReadError::TooLarge => RemoteError::TooLarge(bytes_max),
            ReadError::Net(why) => RemoteError::Unavailable(format!("GET {path}: {why}")),
        })?;
        Ok(Fetched { bytes, etag })
    }

    /// PUT. A condition is checked here first (a `PROPFIND` just before the
    /// write: servers that ignore conditional headers exist, see
    /// TOOLCHAIN.md) *and* sent to the server, which makes it atomic where
    /// the server honours it. An `If-Match` with a weak ETag is not sent (a
    /// server that hands out weak ETags right after a write refuses it
    /// although nothing changed); the client-side check covers it. The core
    /// never relies on conditions alone (lease + `version.txt` fence).
    pub(crate) fn put(
        &self,
        path: &str,
        bytes: &[u8],
        condition: &Precondition,
    ) -> Result<Option<String>, RemoteError> {
        let mut headers: Vec<(&str, String)> = Vec::new();
        match condition {
            Precondition::None => {}
            Precondition::IfNoneMatchAny => {
                if self.stat(path)?.is_some() {
                    return Err(RemoteError::PreconditionFailed);
                }
                headers.push(("If-None-Match", "*".to_owned()));
            }
            Precondition::IfMatch(want) => {
                let have = self.stat(path)?.and_then(|s| s.etag);
                if !have.is_some_and(|have| weak_eq(&have, want)) {
                    return Err(RemoteError::PreconditionFailed);
                }
                if !is_weak(want) {
                    headers.push(("If-Match", want.clone()));
                }
            }
        }
        let answer = expect_success("PUT", path, self.send("PUT", path, &headers, bytes)?)?;
        Ok(answer.header("ETag").map(str::to_owned))
    }

    pub(crate) fn delete(&self, path: &str) -> Result<(), RemoteError> {
        expect_success("DELETE", path, self.send("DELETE", path, &[], &[])?).map(drop)
    }

    pub(crate) fn mkcol(&self, path: &str) -> Result<(), RemoteError> {
        let answer = self.send("MKCOL", path, &[], &[])?;
        // 405 Method Not Allowed: something is already there (RFC 4918 9.3.1).
        if answer.status == 405 {
            return Err(RemoteError::AlreadyExists);
        }
        // Apache answers 403 when a rival's MKCOL of the same path won the
        // race between its existence check and its mkdir.
        if answer.status == 403 && self.stat(path)?.is_some_and(|s| s.is_collection) {
            return Err(RemoteError::AlreadyExists);
        }
        expect_success("MKCOL", path, answer).map(drop)
    }

    pub(crate) fn move_to(&self, from: &str, to: &str, overwrite: bool) -> Result<(), RemoteError> {
        let headers =
            [("Destination", self.url(to)), ("Overwrite", if overwrite { "T" } else { "F" }.to_owned())];
        let answer = self.send("MOVE", from, &headers, &[])?;
        if !overwrite && answer.status == 412 {
            return Err(RemoteError::AlreadyExists);
        }
        expect_success("MOVE", from, answer).map(drop)
    }

    /// PROPFIND with `depth`; the parsed responses, or `None` on 404.
    fn propfind(&self, path: &str, depth: &str) -> Result<Option<Vec<DavEntry>>, RemoteError> {
        let headers =
            [("Depth", depth.to_owned()), ("Content-Type", "application/xml; charset=utf-8".to_owned())];
        let answer = self.send("PROPFIND", path, &headers, PROPFIND_BODY.as_bytes())?;
        if answer.status == 404 {
            return Ok(None);
        }
        let mut answer = expect_success("PROPFIND", path, answer)?;
        let body = answer.read_to_vec(MULTISTATUS_BYTES_MAX).map_err(|e| match e {
            ReadError::TooLarge => RemoteError::TooLarge(MULTISTATUS_BYTES_MAX),
            ReadError::Net(why) => RemoteError::Unavailable(format!("PROPFIND {path}: {why}")),
        })?;
        parse_multistatus(&body)
            .map(Some)
            .map_err(|why| RemoteError::Protocol((207, format!("PROPFIND {path}: {why}"))))
    }

    /// Properties of `path` (PROPFIND depth 0); `None` on 404.
    pub(crate) fn stat(&self, path: &str) -> Result<Option<RemoteStat>, RemoteError> {
        let Some(entries) = self.propfind(path, "0")? else { return Ok(None) };
        match entries.into_iter().next() {
            Some(e) => Ok(Some(stat_to_wit(e.stat))),
            None => {
                Err(RemoteError::Protocol((207, format!("PROPFIND {path}: the answer describes nothing"))))
            }
        }
    }

    /// Children of the collection `path` (PROPFIND depth 1); `None` on 404.
    pub(crate) fn list(&self, path: &str) -> Result<Option<Vec<RemoteEntry>>, RemoteError> {
        let Some(entries) = self.propfind(path, "1")? else { return Ok(None) };
        let own = self.decoded_path_of(path);
        let mut children = Vec::new();
        for e in entries {
            let href = e.href_path.trim_end_matches('/');
            if href == own {
                if !e.stat.is_collection {
                    return Err(RemoteError::Protocol((207, format!("{path} is not a collection"))));
                }
                continue;
            }
            let Some((parent, name)) = href.rsplit_once('/') else { continue };
            // Only direct children of the listed collection count.
            if parent != own || name.is_empty() {
                continue;
            }
            children.push(RemoteEntry { name: name.to_owned(), stat: stat_to_wit(e.stat) });
        }
        Ok(Some(children))
    }

    /// GETs `path` and hashes the body as it arrives, keeping nothing.
    pub(crate) fn remote_hash(&self, path: &str, bytes_max: u64) -> Result<RemoteDigest, BlobError> {
        let mut answer =
            expect_success("GET", path, self.send("GET", path, &[], &[]).map_err(BlobError::Remote)?)
                .map_err(BlobError::Remote)?;
        if answer.content_length().is_some_and(|n| n > bytes_max) {
            return Err(BlobError::TooLarge(bytes_max));
        }
        let mut hasher = Sha256::new();
        let mut size: u64 = 0;
        loop {
            match answer.read_chunk() {
                Ok(Some(chunk)) => {
                    size = size.saturating_add(chunk.len() as u64);
                    if size > bytes_max {
                        return Err(BlobError::TooLarge(bytes_max));
                    }
                    hasher.update(&chunk);
                }
                Ok(None) => break,
                Err(ReadError::TooLarge) => return Err(BlobError::TooLarge(bytes_max)),
                Err(ReadError::Net(why)) => {
                    return Err(BlobError::Remote(RemoteError::Unavailable(format!("GET {path}: {why}"))));
                }
            }
        }
        let hash = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
        Ok(RemoteDigest { hash, size_bytes: size })
    }
}

fn stat_to_wit(s: crate::RemoteStat) -> RemoteStat {
    RemoteStat { size: s.size, etag: s.etag, modified_ms: s.modified_ms, is_collection: s.is_collection }
}

/// Maps a non-success status to the error the engine acts on (the table
/// shared with the native adapter, `wire::failure_of`); passes 2xx on.
fn expect_success(method: &str, path: &str, mut answer: Answer) -> Result<Answer, RemoteError> {
    let status = answer.status;
    let Some(failure) = failure_of(status) else { return Ok(answer) };
    Err(wire::remote_error!(RemoteError, failure, |failure| match failure {
        Failure::Redirected => {
            RemoteError::Protocol((status, wire::redirect_message(method, path, answer.header("Location"))))
        }
        Failure::ServerError => RemoteError::Unavailable(format!("{method} {path}: server error {status}")),
        _ => {
            let body = answer.read_to_vec(ERROR_BODY_BYTES_MAX).unwrap_or_default();
            RemoteError::Protocol((status, wire::other_message(method, path, &body)))
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_encoded_per_segment_under_the_root() {
        let vars = vec![("DAVSYNC_REMOTE_URL".to_owned(), "http://u:p@h:1/root%20dir".to_owned())];
        let dav = Dav { config: Config::from_env(&vars).unwrap() };
        assert_eq!(dav.abs_path("ab/a b#c.pdf"), "/root%20dir/ab/a%20b%23c.pdf");
        assert_eq!(dav.url("x/y"), "http://h:1/root%20dir/x/y");
        assert_eq!(dav.decoded_path_of("ab/"), "/root dir/ab");
    }
}
