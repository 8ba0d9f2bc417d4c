//! The remote's published state as the simulator's invariants see it:
//! `metadata.db` with the change files after it applied, as plain rows.
//!
//! The invariants read it after every commit, so it must be cheap. A
//! checkpoint is decoded (through [`RemoteDb`], with all its checks) once
//! per distinct `metadata.db` and kept; the tail is applied to a copy of its
//! rows in memory, each change file parsed once per distinct bytes. That is
//! the same reading as [`history::read_state`], which a sync's own rules
//! define (the tail only when `metadata.db` is on the chain from
//! `version.txt`), without opening SQLite for every check.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use davsync_core::history::{self, ChangeFile, Head};
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

/// Reads [`State`]s, keeping the last checkpoint it decoded and every change
/// file it parsed (each is read again at every check until a fold), with
/// their bytes: a file is parsed again when its bytes differ.
#[derive(Debug, Default)]
pub struct StateReader {
    last: Option<(Vec<u8>, Arc<Checkpoint>)>,
    parsed: HashMap<String, (Vec<u8>, ChangeFile)>,
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
        let parsed = &mut self.parsed;
        let tail = history::tail_after_parsed(state.head.as_ref(), at, |path, version, commit, epoch| {
            let Some(bytes) = file(path) else { return Ok(None) };
            if let Some((known, change)) = parsed.get(path)
                && known.as_slice() == bytes
                && change.epoch == epoch
            {
                return Ok(Some(change.clone()));
            }
            let change =
                ChangeFile::parse(bytes, version, commit, epoch).map_err(|why| format!("{path} {why}"))?;
            parsed.insert(path.to_owned(), (bytes.to_vec(), change.clone()));
            Ok(Some(change))
        })?;
        for change in tail {
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

#[cfg(test)]
mod tests {
    use davsync_core::hlc::Hlc;
    use davsync_core::model::{ContentHash, FileMeta};

    use super::*;

    fn row(id: &str, label: &str, version: i64) -> RemoteRow {
        RemoteRow {
            stable_id: id.to_owned(),
            id: ContentHash::of(id.as_bytes()),
            meta: FileMeta {
                filename: "a.pdf".to_owned(),
                doc_id: "10.1/x".to_owned(),
                doc_id_type: "doi".to_owned(),
                file_type: "pdf".to_owned(),
                label: Some(label.to_owned()),
                doc_collections: "[]".to_owned(),
                doc_metadata: "{}".to_owned(),
                file_metadata: "{}".to_owned(),
                ..FileMeta::default()
            },
            deleted: false,
            remote_version: version,
            updated_at: String::new(),
            hlc: Hlc { physical_ms: 5, counter: 0, instance: "i".to_owned() },
        }
    }

    /// A remote at version 2: a checkpoint at 1 (row a) and commit 2 (`b`
    /// labelled `label`) as a change file.
    fn remote(label: &str) -> HashMap<String, Vec<u8>> {
        let mut db = RemoteDb::create("e1").unwrap();
        db.commit(&[row("a", "first", 1)], 1, "").unwrap();
        db.set_commit_id("c1").unwrap();
        let change = ChangeFile {
            format: history::FORMAT,
            epoch: "e1".to_owned(),
            version: 2,
            commit: "c2".to_owned(),
            parent_version: 1,
            parent_commit: Some("c1".to_owned()),
            rows: vec![row("b", label, 2)],
        };
        let head = Head {
            version: 2,
            format: history::FORMAT,
            commit: Some("c2".to_owned()),
            epoch: Some("e1".to_owned()),
            checkpoint: 1,
            checkpoint_bytes: 0,
            tail_bytes: 0,
        };
        HashMap::from([
            (METADATA_DB.to_owned(), db.to_bytes().unwrap()),
            (change.own_path(), change.to_bytes()),
            (VERSION_TXT.to_owned(), head.to_text().into_bytes()),
        ])
    }

    fn label_of_b(reader: &mut StateReader, files: &HashMap<String, Vec<u8>>) -> Option<String> {
        let state = reader.read(|path| files.get(path).map(Vec::as_slice)).unwrap().unwrap();
        assert_eq!((state.version, state.rows_version, state.rows.len()), (2, 2, 2));
        state.rows["b"].meta.label.clone()
    }

    #[test]
    fn a_change_file_whose_bytes_changed_is_read_again() {
        let mut reader = StateReader::default();
        let mut files = remote("old");
        assert_eq!(label_of_b(&mut reader, &files).as_deref(), Some("old"));
        assert_eq!(label_of_b(&mut reader, &files).as_deref(), Some("old"), "as parsed before");
        // The same path, other bytes (a stale writer's copy, say).
        let changed = remote("new");
        files.insert("changes/2-c2.json".to_owned(), changed["changes/2-c2.json"].clone());
        assert_eq!(label_of_b(&mut reader, &files).as_deref(), Some("new"));
        // Gone: an error naming it, not the copy parsed before.
        files.remove("changes/2-c2.json");
        let err = reader.read(|path| files.get(path).map(Vec::as_slice)).unwrap_err();
        assert!(err.contains("changes/2-c2.json is missing"), "{err}");
    }
}
