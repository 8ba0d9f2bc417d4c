//! What a davsync WebDAV client puts on the wire and how it reads the
//! answers, independent of the HTTP library: the path escaping, the PROPFIND
//! body, the body-size bounds, ETag comparison, and the table from a
//! non-success status to what the sync can do about it.
//!
//! Self-contained (only `percent-encoding`), so the native adapter
//! (`host/src/webdav.rs`, over ureq) and the WASI transport
//! (`components/wasi-transport`, over `wasi:http`, compiling this very file by
//! path) speak the same protocol and map statuses the same way.

use percent_encoding::{AsciiSet, CONTROLS};

/// Characters escaped in a path segment (RFC 3986 `pchar` minus a few
/// harmless ones).
pub(crate) const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// Largest multistatus body accepted (a shard folder of 100k files is ~200 KB).
pub(crate) const MULTISTATUS_BYTES_MAX: u64 = 32 * 1024 * 1024;
/// Largest error body read (for the message).
pub(crate) const ERROR_BODY_BYTES_MAX: u64 = 4 * 1024;
/// Fast retries of a safe request (GET, PROPFIND) whose connection failed,
/// e.g. a pooled keep-alive connection the server had closed. Everything else
/// is retried by the core, with backoff.
pub(crate) const SAFE_RETRIES: u32 = 2;

/// The PROPFIND request body: the four properties `stat` and `list` read.
pub(crate) const PROPFIND_BODY: &str = concat!(
    r#"<?xml version="1.0" encoding="utf-8"?>"#,
    r#"<D:propfind xmlns:D="DAV:"><D:prop>"#,
    r#"<D:resourcetype/><D:getcontentlength/><D:getetag/><D:getlastmodified/>"#,
    r#"</D:prop></D:propfind>"#
);

/// Is `etag` a weak validator (`W/"…"`)?
pub(crate) fn is_weak(etag: &str) -> bool {
    etag.trim_start().starts_with("W/")
}

/// RFC 7232 weak comparison: equal once the `W/` prefixes are dropped.
pub(crate) fn weak_eq(a: &str, b: &str) -> bool {
    let strip = |s: &str| s.trim().trim_start_matches("W/").to_owned();
    strip(a) == strip(b)
}

/// A URL for messages: user info removed.
pub fn redact_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            if path.is_empty() && !rest.contains('/') {
                format!("{scheme}://{host}")
            } else {
                format!("{scheme}://{host}/{path}")
            }
        }
        None => url.to_owned(),
    }
}

/// What a non-success HTTP status means to the sync. Each adapter turns it
/// into its own `RemoteError` (the core's, or the WIT one) variant by variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// 404: the resource does not exist.
    NotFound,
    /// 409: a parent collection is missing.
    ParentMissing,
    /// 412: an `If-Match` / `If-None-Match` condition failed.
    PreconditionFailed,
    /// 423: locked, e.g. while the server writes the file.
    Locked,
    /// 401: the credentials were refused.
    Unauthorized,
    /// 507: the server is out of space.
    InsufficientStorage,
    /// 3xx: redirects are not followed; the message names the `Location`.
    Redirected,
    /// 5xx (but 507): transient, worth a retry.
    ServerError,
    /// Anything else: a protocol error, the message quotes the body.
    Other,
}

/// The failure a status stands for; `None` for a success (2xx).
pub(crate) fn failure_of(status: u16) -> Option<Failure> {
    Some(match status {
        200..=299 => return None,
        404 => Failure::NotFound,
        409 => Failure::ParentMissing,
        412 => Failure::PreconditionFailed,
        423 => Failure::Locked,
        401 => Failure::Unauthorized,
        507 => Failure::InsufficientStorage,
        300..=399 => Failure::Redirected,
        500..=599 => Failure::ServerError,
        _ => Failure::Other,
    })
}

/// The adapter's `RemoteError` for a [`Failure`]: the six that carry nothing
/// map by name (both error types, the core's and the WIT one, name them
/// alike); `$with_message` builds the other three (redirect, server error,
/// anything else), whose shapes differ between the two types.
macro_rules! remote_error {
    ($error:ident, $failure:expr, $with_message:expr) => {
        match $failure {
            Failure::NotFound => $error::NotFound,
            Failure::ParentMissing => $error::ParentMissing,
            Failure::PreconditionFailed => $error::PreconditionFailed,
            Failure::Locked => $error::Locked,
            Failure::Unauthorized => $error::Unauthorized,
            Failure::InsufficientStorage => $error::InsufficientStorage,
            other => ($with_message)(other),
        }
    };
}
pub(crate) use remote_error;

/// The message of a redirect that was not followed.
pub(crate) fn redirect_message(method: &str, path: &str, location: Option<&str>) -> String {
    let to = location.map(redact_url).unwrap_or_default();
    format!("{method} {path} was redirected to {to:?}; redirects are not followed")
}

/// The message of an unexpected status: the start of the body, printable only.
pub(crate) fn other_message(method: &str, path: &str, body: &[u8]) -> String {
    let text: String = String::from_utf8_lossy(body).chars().filter(|c| !c.is_control()).take(200).collect();
    format!("{method} {path}: {text}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etag_comparison_is_weak() {
        assert!(weak_eq("W/\"1-2\"", "\"1-2\""));
        assert!(!weak_eq("\"1-2\"", "\"1-3\""));
        assert!(is_weak(" W/\"x\""));
        assert!(!is_weak("\"x\""));
    }

    #[test]
    fn urls_lose_their_user_info() {
        assert_eq!(redact_url("https://ann:pw@h/x"), "https://h/x");
        assert_eq!(redact_url("https://ann:pw@h"), "https://h");
        assert_eq!(redact_url("not a url"), "not a url");
    }

    #[test]
    fn statuses_map_to_what_the_sync_acts_on() {
        assert_eq!(failure_of(204), None);
        assert_eq!(failure_of(207), None);
        let table = [
            (404, Failure::NotFound),
            (409, Failure::ParentMissing),
            (412, Failure::PreconditionFailed),
            (423, Failure::Locked),
            (401, Failure::Unauthorized),
            (507, Failure::InsufficientStorage),
            (301, Failure::Redirected),
            (502, Failure::ServerError),
            (503, Failure::ServerError),
            (403, Failure::Other),
            (100, Failure::Other),
        ];
        for (status, failure) in table {
            assert_eq!(failure_of(status), Some(failure), "{status}");
        }
        assert_eq!(
            redirect_message("GET", "a", Some("https://u:p@h/b")),
            "GET a was redirected to \"https://h/b\"; redirects are not followed"
        );
        assert_eq!(other_message("PUT", "a", b"no\n way"), "PUT a: no way");
    }
}
