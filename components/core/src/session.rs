//! One conversation with the remote: bounded retries of transient failures,
//! the server's clock, and the small files of the remote layout.
//!
//! Remote layout (relative to the WebDAV root; see ARCHITECTURE.md):
//! `metadata.db`, `version.txt`, `version.txt.lock/` (the lease),
//! `{h[0..2]}/{h}{ext}` blobs, and `.davsync-tmp/{instance}/` for uploads in
//! flight.

use crate::api::SyncError;
use crate::history::{FORMAT, HEAD_BYTES_MAX, Head, HeadError};
use crate::ports::{BlobError, Io, RemoteError};

/// The shared metadata database.
pub const METADATA_DB: &str = "metadata.db";
/// The commit counter.
pub const VERSION_TXT: &str = "version.txt";
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
    pub(crate) fn read_head(&mut self, io: &mut Io<'_>) -> Result<Option<Head>, SyncError> {
        Ok(self.read_head_tagged(io)?.map(|(h, _)| h))
    }

    /// Reads `version.txt` with its ETag (the precondition for replacing it).
    pub(crate) fn read_head_tagged(
        &mut self,
        io: &mut Io<'_>,
    ) -> Result<Option<(Head, Option<String>)>, SyncError> {
        match self.call(io, |io| io.remote.get(VERSION_TXT, HEAD_BYTES_MAX)) {
            Ok(fetched) => parse_head(&fetched.bytes).map(|h| Some((h, fetched.etag))),
            Err(RemoteError::NotFound) => Ok(None),
            Err(RemoteError::TooLarge { .. }) => {
                Err(SyncError::RemoteCorrupt(format!("version.txt is longer than {HEAD_BYTES_MAX} bytes")))
            }
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

/// Parses `version.txt` ([`Head::parse`]) into the error a sync reports.
pub(crate) fn parse_head(bytes: &[u8]) -> Result<Head, SyncError> {
    Head::parse(bytes).map_err(|e| match e {
        HeadError::TooNew(format) => SyncError::RemoteTooNew { format, supported: FORMAT },
        HeadError::Garbled(why) => SyncError::RemoteCorrupt(format!("version.txt {why}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_txt_errors_say_what_to_do() {
        let too_new = parse_head(b"3\nformat 9\n").unwrap_err();
        assert_eq!(too_new, SyncError::RemoteTooNew { format: 9, supported: FORMAT });
        assert!(
            matches!(parse_head(b"abc"), Err(SyncError::RemoteCorrupt(m)) if m.starts_with("version.txt"))
        );
        assert_eq!(parse_head(b"42\n").unwrap(), Head::format1(42));
    }
}
