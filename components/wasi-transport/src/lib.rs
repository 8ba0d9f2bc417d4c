//! The davsync WebDAV transport as a component that needs no custom host.
//!
//! It exports what the `remote-maintenance` world imports (`remote`,
//! `blobs`, `clock`, `random`; world `wasi-transport` in
//! `wit/serverless.wit`) and imports only standard WASI 0.2:
//! `wasi:http/outgoing-handler` for the WebDAV requests, `wasi:clocks` and
//! `wasi:random` for the engine's clock and randomness, and
//! `wasi:cli/environment` for its configuration ([`config`]).
//!
//! It behaves like the native adapter (`host/src/webdav.rs`) and shares its
//! wire code, compiled here by path: the status table, path escaping, size
//! caps and ETag comparison (`host/src/webdav/wire.rs`, mapped to the typed
//! remote errors in [`dav::expect_success`]), PROPFIND for `stat` / `list`
//! parsed by the same multistatus parser (`host/src/webdav/multistatus.rs`),
//! MKCOL, MOVE
//! with `Overwrite`, the server clock from each answer's `Date`. Two
//! differences, both because one instance serves one request under a
//! serverless runtime: no capability probe (conditions are checked by the
//! client *and* sent to the server, see [`dav::Dav::put`]), and no parallel
//! transfers (maintenance moves no blob; it only hashes them, streamed).
//!
//! The `blobs` functions that need a local folder (`local-has`, `upload`,
//! `download`, `remove-local`) are never called in the `remote-maintenance`
//! world; here they answer a typed `local-io` error.

mod config;
mod dav;
mod http;
#[path = "../../../host/src/webdav/multistatus.rs"]
mod multistatus;
#[path = "../../../host/src/webdav/wire.rs"]
mod wire;

/// The generated bindings of the `wasi-transport` world.
///
/// wit-bindgen's generated glue is made of `unsafe` blocks; the workspace
/// denies `unsafe_code`, so it is allowed here, for generated code only.
#[allow(unsafe_code, missing_docs, missing_debug_implementations)]
mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "wasi-transport",
        generate_all,
    });

    use super::Transport;
    export!(Transport with_types_in crate::bindings);
}

use bindings::exports::davsync::sync::{blobs, clock, random, remote};
use bindings::wasi;

/// What the shared multistatus parser reports for one href: the fields of
/// the core's `RemoteStat` (this crate does not link the core, which would
/// bring SQLite along).
#[derive(Debug, Clone, PartialEq, Eq)]
struct RemoteStat {
    size: u64,
    etag: Option<String>,
    modified_ms: Option<i64>,
    is_collection: bool,
}

/// The component's exports.
#[derive(Debug)]
struct Transport;

/// Runs `f` over the configured client, or fails every call with the
/// configuration's problem.
fn with_dav<T>(
    f: impl FnOnce(&dav::Dav) -> Result<T, remote::RemoteError>,
) -> Result<T, remote::RemoteError> {
    match dav::Dav::configured() {
        Ok(d) => f(d),
        Err(e) => Err(remote::RemoteError::Protocol((0, e.to_string()))),
    }
}

impl remote::Guest for Transport {
    fn get(path: String, bytes_max: u64) -> Result<remote::Fetched, remote::RemoteError> {
        with_dav(|d| d.get(&path, bytes_max))
    }

    fn put(
        path: String,
        bytes: Vec<u8>,
        condition: remote::Precondition,
    ) -> Result<Option<String>, remote::RemoteError> {
        with_dav(|d| d.put(&path, &bytes, &condition))
    }

    fn delete(path: String) -> Result<(), remote::RemoteError> {
        with_dav(|d| d.delete(&path))
    }

    fn mkcol(path: String) -> Result<(), remote::RemoteError> {
        with_dav(|d| d.mkcol(&path))
    }

    fn move_to(from: String, to: String, overwrite: bool) -> Result<(), remote::RemoteError> {
        with_dav(|d| d.move_to(&from, &to, overwrite))
    }

    fn stat(path: String) -> Result<Option<remote::RemoteStat>, remote::RemoteError> {
        with_dav(|d| d.stat(&path))
    }

    fn list(path: String) -> Result<Option<Vec<remote::RemoteEntry>>, remote::RemoteError> {
        with_dav(|d| d.list(&path))
    }

    fn server_time_ms() -> Option<i64> {
        dav::server_time_ms()
    }
}

/// The message of every `blobs` call that needs a local folder.
fn no_local_folder(what: &str) -> blobs::BlobError {
    blobs::BlobError::LocalIo(format!(
        "{what} needs a local data folder, which the WASI transport does not have \
         (only `remote-hash` works here; the remote-maintenance world never calls {what})"
    ))
}

impl blobs::Guest for Transport {
    fn local_has(_blob: blobs::BlobRef) -> Result<bool, blobs::BlobError> {
        Err(no_local_folder("local-has"))
    }

    fn upload(jobs: Vec<blobs::UploadJob>) -> Vec<Result<(), blobs::BlobError>> {
        jobs.iter().map(|_| Err(no_local_folder("upload"))).collect()
    }

    fn download(jobs: Vec<blobs::DownloadJob>, _bytes_max: u64) -> Vec<Result<(), blobs::BlobError>> {
        jobs.iter().map(|_| Err(no_local_folder("download"))).collect()
    }

    fn remove_local(_blob: blobs::BlobRef) -> Result<(), blobs::BlobError> {
        Err(no_local_folder("remove-local"))
    }

    fn remote_hash(path: String, bytes_max: u64) -> Result<blobs::RemoteDigest, blobs::BlobError> {
        match dav::Dav::configured() {
            Ok(d) => d.remote_hash(&path, bytes_max),
            Err(e) => Err(blobs::BlobError::Remote(remote::RemoteError::Protocol((0, e.to_string())))),
        }
    }
}

impl clock::Guest for Transport {
    fn now_ms() -> i64 {
        let t = wasi::clocks::wall_clock::now();
        let ms = i128::from(t.seconds) * 1000 + i128::from(t.nanoseconds / 1_000_000);
        i64::try_from(ms).unwrap_or(i64::MAX)
    }

    fn sleep_ms(ms: u64) {
        if ms > 0 {
            wasi::clocks::monotonic_clock::subscribe_duration(ms.saturating_mul(1_000_000)).block();
        }
    }
}

impl random::Guest for Transport {
    fn next_u64() -> u64 {
        wasi::random::random::get_random_u64()
    }
}
