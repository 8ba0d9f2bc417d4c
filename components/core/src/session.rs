//! One conversation with the remote: bounded retries of transient failures,
//! the server's clock, and the small files of the remote layout.
//!
//! Remote layout (relative to the WebDAV root; see ARCHITECTURE.md):
//! `metadata.db`, `version.txt`, `version.txt.lock/` (the lease),
//! `{h[0..2]}/{h}{ext}` blobs, and `.davsync-tmp/{instance}/` for uploads in
//! flight.

use crate::api::SyncError;
use crate::ports::{BlobError, Io, RemoteError};

/// The shared metadata database.
pub const METADATA_DB: &str = "metadata.db";
/// The commit counter.
pub const VERSION_TXT: &str = "version.txt";
/// Largest `version.txt` we read.
const VERSION_TXT_BYTES_MAX: u64 = 64;
/// Largest version number we accept (a guard against garbage, not a real limit).
const VERSION_MAX: i64 = 1_000_000_000_000_000;
/// Folder for uploads in flight; each instance owns one subfolder.
pub const TMP_ROOT: &str = ".davsync-tmp";

/// First retry waits this long; each further retry doubles it.
const BACKOFF_FIRST_MS: u64 = 200;
/// No single wait is longer than this.
const BACKOFF_MAX_MS: u64 = 5_000;

/// Failures that a bounded retry may cure.
pub(crate) trait Transient {
    fn is_transient(&self) -> bool;
}

impl Transient for RemoteError {
    fn is_transient(&self) -> bool {
        RemoteError::is_transient(self)
    }
}

impl Transient for BlobError {
    fn is_transient(&self) -> bool {
        matches!(self, BlobError::Remote(e) if e.is_transient())
    }
}

/// Retry policy and server-clock estimate for one engine call.
#[derive(Debug)]
pub(crate) struct Session {
    retries_max: u32,
    /// server clock − local clock, from the latest `Date` seen.
    server_offset_ms: i64,
}

impl Session {
    pub(crate) fn new(retries_max: u32) -> Session {
        Session { retries_max, server_offset_ms: 0 }
    }

    /// Runs `op`, retrying transient failures with exponential backoff, at
    /// most `retries_max` times. Every answer updates the server clock.
    pub(crate) fn call<T, E: Transient>(
        &mut self,
        io: &mut Io<'_>,
        mut op: impl FnMut(&mut Io<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut retries = 0;
        loop {
            let result = op(io);
            self.note_server_time(io);
            match result {
                Err(e) if e.is_transient() && retries < self.retries_max => {
                    retries += 1;
                    let wait = BACKOFF_FIRST_MS.saturating_mul(1 << (retries - 1).min(16));
                    io.clock.sleep_ms(wait.min(BACKOFF_MAX_MS));
                }
                other => return other,
            }
        }
    }

    /// Runs a batch operation over `jobs`, then retries the jobs whose result
    /// is transient, with the same backoff and bound as [`Session::call`].
    /// Returns one result per job, in order; a host that answers with the
    /// wrong number of results is refused.
    pub(crate) fn call_batch<J: Clone, E: Transient>(
        &mut self,
        io: &mut Io<'_>,
        jobs: &[J],
        mut op: impl FnMut(&mut Io<'_>, &[J]) -> Vec<Result<(), E>>,
    ) -> Result<Vec<Result<(), E>>, SyncError> {
        let mut results: Vec<Option<Result<(), E>>> = (0..jobs.len()).map(|_| None).collect();
        let mut pending: Vec<usize> = (0..jobs.len()).collect();
        let mut retries = 0;
        while !pending.is_empty() {
            let batch: Vec<J> = pending.iter().map(|&i| jobs[i].clone()).collect();
            let answers = op(io, &batch);
            self.note_server_time(io);
            if answers.len() != batch.len() {
                return Err(SyncError::Invalid(format!(
                    "the host answered {} results for a batch of {} transfers",
                    answers.len(),
                    batch.len()
                )));
            }
            let retry = retries < self.retries_max;
            let mut again = Vec::new();
            for (i, answer) in pending.iter().copied().zip(answers) {
                match answer {
                    Err(e) if retry && e.is_transient() => again.push(i),
                    done => results[i] = Some(done),
                }
            }
            if !again.is_empty() {
                retries += 1;
                let wait = BACKOFF_FIRST_MS.saturating_mul(1 << (retries - 1).min(16));
                io.clock.sleep_ms(wait.min(BACKOFF_MAX_MS));
            }
            pending = again;
        }
        Ok(results.into_iter().map(|r| r.expect("every job is answered")).collect())
    }

    fn note_server_time(&mut self, io: &mut Io<'_>) {
        if let Some(server_ms) = io.remote.server_time_ms() {
            self.server_offset_ms = server_ms - io.clock.now_ms();
        }
    }

    /// The server's clock now, estimated from the latest `Date` header.
    pub(crate) fn server_now_ms(&self, io: &mut Io<'_>) -> i64 {
        io.clock.now_ms() + self.server_offset_ms
    }

    /// Reads `version.txt`: `None` when the remote has none yet.
    pub(crate) fn read_version(&mut self, io: &mut Io<'_>) -> Result<Option<i64>, SyncError> {
        Ok(self.read_version_tagged(io)?.map(|(v, _)| v))
    }

    /// Reads `version.txt` with its ETag (the precondition for replacing it).
    pub(crate) fn read_version_tagged(
        &mut self,
        io: &mut Io<'_>,
    ) -> Result<Option<(i64, Option<String>)>, SyncError> {
        match self.call(io, |io| io.remote.get(VERSION_TXT, VERSION_TXT_BYTES_MAX)) {
            Ok(fetched) => parse_version_txt(&fetched.bytes)
                .map(|v| Some((v, fetched.etag)))
                .map_err(|why| SyncError::RemoteCorrupt(format!("version.txt {why}"))),
            Err(RemoteError::NotFound) => Ok(None),
            Err(RemoteError::TooLarge { .. }) => Err(SyncError::RemoteCorrupt(format!(
                "version.txt is longer than {VERSION_TXT_BYTES_MAX} bytes"
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// Creates a collection, treating "already there" as success.
    pub(crate) fn ensure_collection(&mut self, io: &mut Io<'_>, path: &str) -> Result<(), RemoteError> {
        match self.call(io, |io| io.remote.mkcol(path)) {
            Ok(()) | Err(RemoteError::AlreadyExists) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Deletes a path, treating "not there" as success.
    pub(crate) fn remove(&mut self, io: &mut Io<'_>, path: &str) -> Result<(), RemoteError> {
        match self.call(io, |io| io.remote.delete(path)) {
            Ok(()) | Err(RemoteError::NotFound) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// Parses `version.txt`: a decimal, non-negative commit counter, optionally
/// surrounded by whitespace.
pub fn parse_version_txt(bytes: &[u8]) -> Result<i64, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "is not text".to_owned())?;
    let text = text.trim();
    if text.is_empty() {
        return Err("is empty".to_owned());
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("is not a non-negative decimal number: {:?}", shorten(text)));
    }
    match text.parse::<i64>() {
        Ok(v) if v <= VERSION_MAX => Ok(v),
        _ => Err(format!("holds an implausibly large version: {:?}", shorten(text))),
    }
}

fn shorten(s: &str) -> String {
    s.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_txt_parsing_refuses_garbage() {
        assert_eq!(parse_version_txt(b"42\n"), Ok(42));
        assert_eq!(parse_version_txt(b" 0 "), Ok(0));
        for bad in [&b""[..], b"   ", b"abc", b"-1", b"1.5", b"99999999999999999999", b"\xff\xfe"] {
            assert!(parse_version_txt(bad).is_err(), "{bad:?} accepted");
        }
    }
}
