//! The sync lock: a lease on the remote, judged by the server's clock.
//!
//! Acquire = `MKCOL version.txt.lock` (create-if-absent on most servers,
//! unlike `If-None-Match: *`), then write `version.txt.lock/lease.json`
//! naming the holder, then read it back: only a lease that reads back as ours
//! is ours. The read-back matters where MKCOL is not exclusive (rclone
//! answers 201 to MKCOL on an existing collection): of two racing writers,
//! the one whose lease file was overwritten sees the other's and waits. The lease expires
//! `ttl_ms` after the lease file was last written, by the server's
//! `getlastmodified`, so no two machines' wall clocks are ever compared. A
//! long sync renews by rewriting the file; before every commit write the
//! holder re-reads the file to make sure the lease is still its own.

use serde::{Deserialize, Serialize};

use crate::api::{SyncError, SyncOptions};
use crate::ports::{Io, Precondition, RemoteError};
use crate::session::Session;

/// The lock collection.
pub const LOCK_DIR: &str = "version.txt.lock";
/// The lease record inside it.
pub const LEASE_FILE: &str = "version.txt.lock/lease.json";
/// No lease outlives this without renewal, whatever its file claims.
pub const LEASE_TTL_MAX_MS: u64 = 15 * 60_000;
const LEASE_FILE_BYTES_MAX: u64 = 4096;
/// How often a waiting instance looks at the lock again.
const POLL_MS: u64 = 1_000;

/// The content of `lease.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// Instance id of the holder.
    pub owner: String,
    /// Host name of the holder (for humans).
    pub host: String,
    /// Random per-acquisition token: tells this lease from an older one of
    /// the same instance.
    pub nonce: String,
    /// Lifetime without renewal.
    pub ttl_ms: u64,
}

impl LeaseRecord {
    fn holder(&self) -> String {
        format!("instance {} on {}", self.owner, self.host)
    }

    /// Parses a `lease.json` read from the remote; `None` for anything that
    /// is not a lease record (garbage is no one's lease).
    pub fn parse(bytes: &[u8]) -> Option<LeaseRecord> {
        serde_json::from_slice(bytes).ok()
    }
}

/// What an instance sees when the lock is taken.
#[derive(Debug)]
struct Holder {
    record: Option<LeaseRecord>,
    expires_at_ms: i64,
}

impl Holder {
    fn name(&self) -> String {
        self.record
            .as_ref()
            .map_or_else(|| "an unknown holder (unreadable lease file)".to_owned(), LeaseRecord::holder)
    }
}

/// Who holds the lock now and how long their lease has left by the server's
/// clock (negative: expired, not yet broken); `None` when the lock is free.
/// Reads only: for status reports.
pub(crate) fn current_holder(
    session: &mut Session,
    io: &mut Io<'_>,
    opts: &SyncOptions,
) -> Result<Option<(String, i64)>, SyncError> {
    let Some(holder) = read_holder(session, io, opts, &mut None)? else { return Ok(None) };
    Ok(Some((holder.name(), holder.expires_at_ms - session.server_now_ms(io))))
}

/// A lease this instance holds.
#[derive(Debug)]
pub(crate) struct Lease {
    record: LeaseRecord,
    renewed_at_ms: i64,
}

impl Lease {
    /// Takes the lock, waiting at most `opts.lock_wait_ms` for another holder.
    pub(crate) fn acquire(
        session: &mut Session,
        io: &mut Io<'_>,
        opts: &SyncOptions,
        instance: &str,
    ) -> Result<Lease, SyncError> {
        let record = LeaseRecord {
            owner: instance.to_owned(),
            host: opts.host_name.clone(),
            nonce: format!("{:016x}", io.random.next_u64()),
            ttl_ms: opts.lease_ttl_ms.min(LEASE_TTL_MAX_MS),
        };
        let wait_started = io.clock.now_ms();
        let mut first_seen: Option<(Option<String>, i64)> = None;
        loop {
            let created = match session.call(io, |io| io.remote.mkcol(LOCK_DIR)) {
                Ok(()) => true,
                Err(RemoteError::AlreadyExists) => false,
                Err(e) => return Err(e.into()),
            };
            // Some servers (rclone) answer MKCOL on an existing collection
            // with success, so a "created" lock may already hold a lease;
            // and two writers may race to write theirs. Only a lease file
            // that reads back as ours is ours.
            if created && read_lease(session, io)?.is_none() {
                match Lease::write_record(session, io, record.clone()) {
                    Ok(lease) if read_lease(session, io)?.as_ref() == Some(&lease.record) => {
                        return Ok(lease);
                    }
                    Ok(_) => {} // another writer's lease replaced ours: it holds the lock
                    // The lock was released under us: try again.
                    Err(SyncError::Remote(RemoteError::NotFound | RemoteError::ParentMissing)) => continue,
                    Err(e) => return Err(e),
                }
            }
            let Some(holder) = read_holder(session, io, opts, &mut first_seen)? else {
                continue; // released between our MKCOL and our look
            };
            let now = session.server_now_ms(io);
            let ours_from_a_crash = holder.record.as_ref().is_some_and(|r| r.owner == instance);
            if ours_from_a_crash || holder.expires_at_ms <= now {
                break_stale(session, io, &holder)?;
                continue;
            }
            let waited = io.clock.now_ms() - wait_started;
            if waited >= opts.lock_wait_ms as i64 {
                return Err(SyncError::LockHeld {
                    holder: holder.name(),
                    expires_in_ms: holder.expires_at_ms - now,
                });
            }
            let left = (holder.expires_at_ms - now).max(1) as u64;
            io.clock.sleep_ms(POLL_MS.min(left));
        }
    }

    fn write_record(session: &mut Session, io: &mut Io<'_>, record: LeaseRecord) -> Result<Lease, SyncError> {
        let body = serde_json::to_vec(&record).expect("lease record serializes");
        let put = session.call(io, |io| io.remote.put(LEASE_FILE, &body, &Precondition::None));
        match put {
            Ok(_) => {}
            Err(e @ (RemoteError::NotFound | RemoteError::ParentMissing)) => return Err(e.into()),
            Err(e) => {
                // Do not leave a lock behind that nobody can name.
                let _ = session.remove(io, LOCK_DIR);
                return Err(e.into());
            }
        }
        let renewed_at_ms = session.server_now_ms(io);
        Ok(Lease { record, renewed_at_ms })
    }

    pub(crate) fn ttl_ms(&self) -> i64 {
        self.record.ttl_ms as i64
    }

    /// Renews when less than half the lease is left. Costs no request
    /// otherwise, so it can be called before every blob transfer.
    pub(crate) fn keep_alive(&mut self, session: &mut Session, io: &mut Io<'_>) -> Result<(), SyncError> {
        let left = self.renewed_at_ms + self.ttl_ms() - session.server_now_ms(io);
        if left < self.ttl_ms() / 2 { self.verify_and_renew(session, io) } else { Ok(()) }
    }

    /// Before a commit write: the lease must still be ours and have at least
    /// three quarters of its time left (renewing if needed), so the write
    /// lands well inside it.
    pub(crate) fn confirm(&mut self, session: &mut Session, io: &mut Io<'_>) -> Result<(), SyncError> {
        self.verify(session, io)?;
        let left = self.renewed_at_ms + self.ttl_ms() - session.server_now_ms(io);
        if left < self.ttl_ms() * 3 / 4 { self.verify_and_renew(session, io) } else { Ok(()) }
    }

    fn verify(&mut self, session: &mut Session, io: &mut Io<'_>) -> Result<(), SyncError> {
        if read_lease(session, io)?.as_ref() == Some(&self.record) {
            Ok(())
        } else {
            Err(SyncError::LeaseLost)
        }
    }

    fn verify_and_renew(&mut self, session: &mut Session, io: &mut Io<'_>) -> Result<(), SyncError> {
        // An expired lease may be broken and taken by another instance
        // between our read and our write: renewing it would overwrite the new
        // holder's lease (and let two instances commit). Take it anew instead.
        if self.expired(session, io) {
            return Err(SyncError::LeaseLost);
        }
        self.verify(session, io)?;
        let body = serde_json::to_vec(&self.record).expect("lease record serializes");
        session.call(io, |io| io.remote.put(LEASE_FILE, &body, &Precondition::None))?;
        // The same if it expired while the renewal was on its way.
        if self.expired(session, io) {
            return Err(SyncError::LeaseLost);
        }
        self.renewed_at_ms = session.server_now_ms(io);
        Ok(())
    }

    /// Has the lease run out, by the server's clock?
    fn expired(&self, session: &Session, io: &mut Io<'_>) -> bool {
        self.renewed_at_ms + self.ttl_ms() <= session.server_now_ms(io)
    }

    /// Releases the lock if it is still ours, first removing `leftovers`
    /// (the temporary upload area: while we hold the lock nobody else may
    /// write there, so whatever is in it was left by a process that died or
    /// lost its lease). Errors are returned for reporting only: an
    /// unreleased lease simply expires.
    pub(crate) fn release(
        mut self,
        session: &mut Session,
        io: &mut Io<'_>,
        leftovers: &str,
    ) -> Result<(), SyncError> {
        self.verify(session, io)?;
        session.remove(io, leftovers)?;
        session.remove(io, LOCK_DIR)?;
        Ok(())
    }
}

/// The lease record on the remote; `None` when the file is missing, too
/// large or unreadable (garbage is no one's lease).
fn read_lease(session: &mut Session, io: &mut Io<'_>) -> Result<Option<LeaseRecord>, SyncError> {
    match session.call(io, |io| io.remote.get(LEASE_FILE, LEASE_FILE_BYTES_MAX)) {
        Ok(f) => Ok(LeaseRecord::parse(&f.bytes)),
        Err(RemoteError::NotFound) | Err(RemoteError::TooLarge { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Reads who holds the lock and when their lease expires. `None` when the
/// lock vanished meanwhile.
fn read_holder(
    session: &mut Session,
    io: &mut Io<'_>,
    opts: &SyncOptions,
    first_seen: &mut Option<(Option<String>, i64)>,
) -> Result<Option<Holder>, SyncError> {
    let record = read_lease(session, io)?;
    // The lease file's age; a lock folder without a readable lease file (a
    // holder that crashed between MKCOL and PUT, or garbage) ages from the
    // folder's own time.
    let mut modified = session.call(io, |io| io.remote.stat(LEASE_FILE))?.and_then(|s| s.modified_ms);
    if modified.is_none() {
        match session.call(io, |io| io.remote.stat(LOCK_DIR))? {
            None => return Ok(None),
            Some(s) => modified = s.modified_ms,
        }
    }
    // A server that reports no times: the lease ages from when we first saw it.
    let nonce = record.as_ref().map(|r| r.nonce.clone());
    let now = session.server_now_ms(io);
    let seen_at = match first_seen {
        Some((n, at)) if *n == nonce => *at,
        _ => {
            *first_seen = Some((nonce, now));
            now
        }
    };
    let ttl = record.as_ref().map_or(opts.lease_ttl_ms, |r| r.ttl_ms).min(LEASE_TTL_MAX_MS) as i64;
    let expires_at_ms = modified.unwrap_or(seen_at) + ttl;
    Ok(Some(Holder { record, expires_at_ms }))
}

/// Breaks a stale lease, but only if the lease file still names the same
/// holder: a fresh lease taken meanwhile by someone else is left alone.
fn break_stale(session: &mut Session, io: &mut Io<'_>, stale: &Holder) -> Result<(), SyncError> {
    if read_lease(session, io)? == stale.record {
        session.remove(io, LOCK_DIR)?;
    }
    Ok(())
}
