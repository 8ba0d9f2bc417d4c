//! The remote's published state as the simulator's invariants see it:
//! `metadata.db` with the change files after it applied, as plain rows.
//!
//! The invariants read it after every commit, so it must be cheap. A
//! checkpoint is decoded (through [`RemoteDb`], with all its checks) once
//! per distinct `metadata.db` and kept; the tail is applied to a copy of its
//! rows in memory. That is the same reading as [`history::read_state`], which
//! a sync's own rules define (the tail only when `metadata.db` is on the
//! chain from `version.txt`), without opening SQLite for every check.

use std::collections::BTreeMap;
use std::sync::Arc;

use davsync_core::history::{self, Head};
use davsync_core::model::RemoteRow;
use davsync_core::remote_db::RemoteDb;
use davsync_core::session::{METADATA_DB, VERSION_TXT};

/// One published state.
#[derive(Debug, Clone)]
pub struct State {
    /// `version.txt`, if there is one.
    pub head: Option<Head>,
    /// The state's version: `version.txt`'s, or the checkpoint's without one.
    pub version: i64,
    /// The remote's epoch (the checkpoint's).
    pub epoch: String,
    /// The state's commit id, if it has one.
    pub commit: Option<String>,
    /// The version of the last commit the rows hold: `version` unless the
    /// checkpoint is off the chain from `version.txt`.
    pub rows_version: i64,
    /// Every row, by `stable_id`.
    pub rows: BTreeMap<String, RemoteRow>,
}

/// A decoded checkpoint.
#[derive(Debug)]
struct Checkpoint {
    version: i64,
    epoch: String,
    commit: Option<String>,
    rows: BTreeMap<String, RemoteRow>,
}

/// Reads [`State`]s, keeping the last checkpoint it decoded.
#[derive(Debug, Default)]
pub struct StateReader {
    last: Option<(Vec<u8>, Arc<Checkpoint>)>,
}

impl StateReader {
    /// The state of the remote whose files `file` lends; `None` without a
    /// `metadata.db`. Errors name the file that does not fit.
    pub fn read<'f>(&mut self, file: impl Fn(&str) -> Option<&'f [u8]>) -> Result<Option<State>, String> {
        let head = match file(VERSION_TXT) {
            Some(bytes) => Some(Head::parse(bytes).map_err(|e| format!("version.txt: {e:?}"))?),
            None => None,
        };
        let Some(bytes) = file(METADATA_DB) else { return Ok(None) };
        let checkpoint = self.checkpoint(bytes)?;
        let mut state = State {
            version: head.as_ref().map_or(checkpoint.version, |h| h.version),
            epoch: checkpoint.epoch.clone(),
            commit: checkpoint.commit.clone(),
            rows_version: checkpoint.version,
            rows: checkpoint.rows.clone(),
            head,
        };
        if let Some(h) = state.head.as_ref().filter(|h| h.format >= 2) {
            state.commit = h.commit.clone().or(state.commit);
        }
        let at = (checkpoint.version, checkpoint.epoch.as_str(), checkpoint.commit.as_deref());
        for change in history::tail_after(state.head.as_ref(), at, |path| file(path).map(<[u8]>::to_vec))? {
            state.rows_version = change.version;
            state.rows.extend(change.rows.into_iter().map(|r| (r.stable_id.clone(), r)));
        }
        Ok(Some(state))
    }

    /// `metadata.db` decoded, or as last time when `bytes` are the same
    /// (compared in place: most checks find the same checkpoint).
    fn checkpoint(&mut self, bytes: &[u8]) -> Result<Arc<Checkpoint>, String> {
        if let Some((known, checkpoint)) = &self.last
            && known.as_slice() == bytes
        {
            return Ok(checkpoint.clone());
        }
        let db = RemoteDb::from_bytes(bytes).map_err(|e| format!("metadata.db: {e}"))?;
        let rows = db.rows_changed_since(0).map_err(|e| format!("metadata.db: {e}"))?;
        let checkpoint = Arc::new(Checkpoint {
            version: db.version(),
            epoch: db.epoch().to_owned(),
            commit: db.commit_id().map(str::to_owned),
            rows: rows.into_iter().map(|r| (r.stable_id.clone(), r)).collect(),
        });
        self.last = Some((bytes.to_vec(), checkpoint.clone()));
        Ok(checkpoint)
    }
}
