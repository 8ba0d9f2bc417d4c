//! The remote's commit history, format 2 (ARCHITECTURE.md, "Remote format").
//!
//! `version.txt` names the newest commit ([`Head`]). Every commit is a small
//! change file, `changes/<version>-<commit>.json` ([`ChangeFile`]), holding
//! the rows it wrote and naming its parent commit, so the commits form a chain
//! from the head back to `metadata.db`, which is a *checkpoint*: the whole
//! state as of one commit on that chain, folded now and then. A sync that
//! finds its own last commit on the chain reads only the change files after
//! it (the *tail*); otherwise it reads the checkpoint and every change file
//! after that.
//!
//! Change files are written once, under names no other commit can take, so a
//! stale writer on a server without conditional writes cannot overwrite a
//! commit: it can only make `version.txt` point past it, which every instance
//! that knew the lost commit notices (its commit is no longer on the chain).
//!
//! Everything here is untrusted input: sizes are capped, every field and row
//! is validated, and a file that does not fit the chain is refused.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::api::SyncError;
use crate::model::{RemoteRow, validate_stable_id};
use crate::ports::{Io, RemoteError};
use crate::remote_db::{RemoteDb, RemoteDbError};
use crate::session::Session;

/// The remote format this code writes and the newest it reads.
pub const FORMAT: u32 = 2;
/// The folder of change files.
pub const CHANGES_DIR: &str = "changes";
/// By default a fold is due once this many commits follow the checkpoint
/// ([`crate::SyncOptions::fold_commits`]).
pub const FOLD_COMMITS: u32 = 32;
/// ... or once the change files after it hold this many bytes and a quarter
/// of the checkpoint's size.
pub const FOLD_BYTES_MIN: u64 = 64 << 10;
/// Largest `version.txt` we read.
pub const HEAD_BYTES_MAX: u64 = 512;
/// Largest version number we accept (a guard against garbage, not a real limit).
pub const VERSION_MAX: i64 = 1_000_000_000_000_000;

/// What `version.txt` says: the newest commit and where the history starts.
///
/// Text form: the version on the first line (all that format 1 had), then
/// `key value` lines in this order:
///
/// ```text
/// 17
/// format 2
/// commit c00000000000000a1
/// epoch e3f9a0c2b1d4e5f60
/// checkpoint 12
/// checkpoint-bytes 98304
/// tail-bytes 3456
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// The newest commit's version.
    pub version: i64,
    /// 1: a bare number (no change files, `metadata.db` is the whole state);
    /// 2: this format.
    pub format: u32,
    /// The newest commit's id (format 2; none for a remote with no commit yet).
    pub commit: Option<String>,
    /// The remote's epoch (format 2).
    pub epoch: Option<String>,
    /// Version of the checkpoint the history starts from (format 1: `version`).
    pub checkpoint: i64,
    /// Size of `metadata.db` at that checkpoint.
    pub checkpoint_bytes: u64,
    /// Bytes of the change files after the checkpoint.
    pub tail_bytes: u64,
}

/// Why `version.txt` was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadError {
    /// Written by a newer davsync.
    TooNew(u32),
    /// Not a `version.txt` at all.
    Garbled(String),
}

impl Head {
    /// A format-1 head: just the number.
    pub fn format1(version: i64) -> Head {
        Head {
            version,
            format: 1,
            commit: None,
            epoch: None,
            checkpoint: version,
            checkpoint_bytes: 0,
            tail_bytes: 0,
        }
    }

    /// Commits after the checkpoint.
    pub fn tail_commits(&self) -> i64 {
        self.version - self.checkpoint
    }

    /// Is the tail long enough (`fold_commits` commits, or bytes relative to
    /// the checkpoint) that it should be folded into `metadata.db`?
    pub fn fold_due(&self, fold_commits: u32) -> bool {
        self.format >= 2
            && (self.tail_commits() >= i64::from(fold_commits.max(1))
                || self.tail_bytes >= FOLD_BYTES_MIN.max(self.checkpoint_bytes / 4))
    }

    /// The identity of the newest commit: what the fence and the quick check
    /// compare (a fold rewrites `version.txt` without changing it).
    pub fn commit_id(&self) -> (i64, Option<&str>) {
        (self.version, self.commit.as_deref())
    }

    /// The text written to `version.txt`.
    pub fn to_text(&self) -> String {
        if self.format < 2 {
            return format!("{}\n", self.version);
        }
        let mut text = format!("{}\nformat {}\n", self.version, self.format);
        if let Some(commit) = &self.commit {
            text.push_str(&format!("commit {commit}\n"));
        }
        if let Some(epoch) = &self.epoch {
            text.push_str(&format!("epoch {epoch}\n"));
        }
        text.push_str(&format!(
            "checkpoint {}\ncheckpoint-bytes {}\ntail-bytes {}\n",
            self.checkpoint, self.checkpoint_bytes, self.tail_bytes
        ));
        text
    }

    /// Parses `version.txt`; a bare number is format 1.
    pub fn parse(bytes: &[u8]) -> Result<Head, HeadError> {
        let garbled = |why: String| HeadError::Garbled(why);
        let text = std::str::from_utf8(bytes).map_err(|_| garbled("is not text".to_owned()))?;
        let mut lines = text.trim().lines();
        let version = parse_number(lines.next().unwrap_or(""), VERSION_MAX).map_err(garbled)?;
        let rest: Vec<&str> = lines.collect();
        if rest.is_empty() {
            return Ok(Head::format1(version));
        }
        let mut fields = rest.iter().map(|line| line.trim_end_matches('\r').split_once(' '));
        let mut next = |key: &str| -> Result<&str, HeadError> {
            match fields.next() {
                Some(Some((k, v))) if k == key => Ok(v),
                Some(_) => Err(garbled(format!("has no {key:?} line where one belongs"))),
                None => Err(garbled(format!("has no {key:?} line"))),
            }
        };
        let format = parse_number(next("format")?, 1 << 20).map_err(garbled)?;
        let format = u32::try_from(format).map_err(|_| garbled("has a bad format".to_owned()))?;
        if format > FORMAT {
            return Err(HeadError::TooNew(format));
        }
        if format < 2 {
            return Err(garbled(format!("says format {format} but has format 2 lines")));
        }
        let commit = Some(next("commit")?.to_owned());
        let epoch = Some(next("epoch")?.to_owned());
        let checkpoint = parse_number(next("checkpoint")?, VERSION_MAX).map_err(garbled)?;
        let checkpoint_bytes = parse_number(next("checkpoint-bytes")?, i64::MAX).map_err(garbled)? as u64;
        let tail_bytes = parse_number(next("tail-bytes")?, i64::MAX).map_err(garbled)? as u64;
        if fields.next().is_some() {
            return Err(garbled("has lines after tail-bytes".to_owned()));
        }
        for (name, id) in [("commit", &commit), ("epoch", &epoch)] {
            if let Some(id) = id {
                validate_stable_id(id).map_err(|e| garbled(format!("{name}: {e}")))?;
            }
        }
        if checkpoint > version {
            return Err(garbled(format!("names checkpoint {checkpoint} past its version {version}")));
        }
        Ok(Head { version, format, commit, epoch, checkpoint, checkpoint_bytes, tail_bytes })
    }
}

/// A non-negative decimal number no larger than `max`.
fn parse_number(text: &str, max: i64) -> Result<i64, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("is empty".to_owned());
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("is not a non-negative decimal number: {:?}", shorten(text)));
    }
    match text.parse::<i64>() {
        Ok(v) if v <= max => Ok(v),
        _ => Err(format!("holds an implausibly large number: {:?}", shorten(text))),
    }
}

fn shorten(s: &str) -> String {
    s.chars().take(40).collect()
}

/// A commit as a file: the rows it wrote and the commit it follows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeFile {
    /// Always [`FORMAT`].
    pub format: u32,
    /// The remote's epoch.
    pub epoch: String,
    /// This commit's version.
    pub version: i64,
    /// This commit's id (random, unique).
    pub commit: String,
    /// The version this commit follows (below `version`; versions may jump).
    pub parent_version: i64,
    /// The id of the commit it follows: none for a format-1 checkpoint or
    /// an empty remote.
    pub parent_commit: Option<String>,
    /// The rows this commit wrote, each with `remote_version == version`.
    pub rows: Vec<RemoteRow>,
}

impl ChangeFile {
    /// Where a commit's change file lives.
    pub fn path(version: i64, commit: &str) -> String {
        format!("{CHANGES_DIR}/{version}-{commit}.json")
    }

    /// This file's path.
    pub fn own_path(&self) -> String {
        ChangeFile::path(self.version, &self.commit)
    }

    /// The file's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("plain data serializes")
    }

    /// Parses and checks a downloaded change file that should be commit
    /// `(version, commit)` of the remote with `epoch`.
    pub fn parse(bytes: &[u8], version: i64, commit: &str, epoch: &str) -> Result<ChangeFile, String> {
        let file: ChangeFile =
            serde_json::from_slice(bytes).map_err(|e| format!("is not a change file: {e}"))?;
        if file.format != FORMAT {
            return Err(format!("has format {}, expected {FORMAT}", file.format));
        }
        if file.version != version || file.commit != commit {
            return Err(format!("names commit {}-{} instead", file.version, shorten(&file.commit)));
        }
        if file.epoch != epoch {
            return Err(format!("belongs to epoch {:?}, not {epoch:?}", shorten(&file.epoch)));
        }
        if file.parent_version < 0 || file.parent_version >= file.version {
            return Err(format!("has parent version {} for version {}", file.parent_version, file.version));
        }
        if let Some(parent) = &file.parent_commit {
            validate_stable_id(parent).map_err(|e| format!("parent_commit: {e}"))?;
        }
        let mut ids = BTreeSet::new();
        for row in &file.rows {
            row.validate().map_err(|e| format!("row {:?}: {e}", shorten(&row.stable_id)))?;
            if row.remote_version != version {
                return Err(format!("row {:?} has remote_version {}", row.stable_id, row.remote_version));
            }
            if !ids.insert(row.stable_id.as_str()) {
                return Err(format!("holds row {:?} twice", row.stable_id));
            }
        }
        Ok(file)
    }
}

/// Where a walk down the chain ended.
#[derive(Debug)]
pub(crate) enum Walk {
    /// The commit looked for is on the chain; the change files after it,
    /// oldest first, and their size in bytes.
    Reached(Vec<ChangeFile>, u64),
    /// It is not: the chain passed below its version without meeting it
    /// (an overwritten or lost commit, a restore, another remote).
    Off,
    /// A change file on the chain is gone.
    Missing(String),
}

/// Follows the chain from `head` back to commit `(version, commit)`, reading
/// one change file per commit. `bytes_max` caps each file.
pub(crate) fn walk_back(
    io: &mut Io<'_>,
    session: &mut Session,
    head: &Head,
    stop: (i64, Option<&str>),
    bytes_max: u64,
) -> Result<Walk, SyncError> {
    walk_chain(head, stop, |path, version, id, epoch| {
        let body = match session.call(io, |io| io.remote.get(path, bytes_max)) {
            Ok(f) => f.bytes,
            Err(RemoteError::NotFound) => return Ok(None),
            Err(RemoteError::TooLarge { bytes_max }) => {
                return Err(SyncError::RemoteCorrupt(format!("{path} is larger than {bytes_max} bytes")));
            }
            Err(e) => return Err(e.into()),
        };
        let file = ChangeFile::parse(&body, version, id, epoch)
            .map_err(|why| SyncError::RemoteCorrupt(format!("{path} {why}")))?;
        Ok(Some((file, body.len() as u64)))
    })
}

/// The walk itself, over any way to get a change file, parsed and checked
/// (`get(path, version, commit, epoch)`: the file and its size in bytes,
/// `None` when it is not there).
fn walk_chain<E>(
    head: &Head,
    stop: (i64, Option<&str>),
    mut get: impl FnMut(&str, i64, &str, &str) -> Result<Option<(ChangeFile, u64)>, E>,
) -> Result<Walk, E> {
    let (mut files, mut bytes) = (Vec::new(), 0);
    let (mut version, mut commit) = (head.version, head.commit.clone());
    let epoch = head.epoch.clone().unwrap_or_default();
    loop {
        if version == stop.0 {
            if commit.as_deref() != stop.1 {
                return Ok(Walk::Off);
            }
            files.reverse();
            return Ok(Walk::Reached(files, bytes));
        }
        let Some(id) = commit.filter(|_| version > stop.0 && head.format >= 2) else {
            return Ok(Walk::Off);
        };
        let path = ChangeFile::path(version, &id);
        let Some((file, size)) = get(&path, version, &id, &epoch)? else { return Ok(Walk::Missing(path)) };
        version = file.parent_version;
        commit = file.parent_commit.clone();
        bytes += size;
        files.push(file);
    }
}

/// Applies one commit's change file to a state (a checkpoint with the
/// commits before it applied): its rows, its version and its commit id.
pub(crate) fn apply(db: &mut RemoteDb, file: &ChangeFile) -> Result<(), RemoteDbError> {
    let updated_at = file.rows.first().map_or("", |r| r.updated_at.as_str());
    db.commit(&file.rows, file.version, updated_at)?;
    db.set_commit_id(&file.commit)
}

/// The change files to apply to a checkpoint at `(version, epoch, commit)`
/// to get the state `head` names, for checks from outside a sync, over any
/// way to read a file (`None`: not there), as a sync reads them: none with
/// a format-1 head or none, and none when the checkpoint is off the chain
/// (another epoch, or a stale writer's crossing: the checkpoint alone is
/// then the state). A missing or unfit change file is an error naming it.
pub fn tail_after(
    head: Option<&Head>,
    checkpoint: (i64, &str, Option<&str>),
    read: impl Fn(&str) -> Option<Vec<u8>>,
) -> Result<Vec<ChangeFile>, String> {
    tail_after_parsed(head, checkpoint, |path, version, commit, epoch| {
        let Some(body) = read(path) else { return Ok(None) };
        ChangeFile::parse(&body, version, commit, epoch).map(Some).map_err(|why| format!("{path} {why}"))
    })
}

/// [`tail_after`] over any way to get a change file already parsed:
/// `get(path, version, commit, epoch)` answers `None` when the file is not
/// there, or what [`ChangeFile::parse`] makes of its bytes (the error
/// naming `path`). For a reader that walks the same history again and
/// again and keeps what it parsed (the simulator's invariants).
pub fn tail_after_parsed(
    head: Option<&Head>,
    checkpoint: (i64, &str, Option<&str>),
    mut get: impl FnMut(&str, i64, &str, &str) -> Result<Option<ChangeFile>, String>,
) -> Result<Vec<ChangeFile>, String> {
    let (version, epoch, commit) = checkpoint;
    let Some(h) = head.filter(|h| h.format >= 2 && h.epoch.as_deref() == Some(epoch)) else {
        return Ok(Vec::new());
    };
    let walk = walk_chain(h, (version, commit), |path, version, commit, epoch| {
        Ok::<_, String>(get(path, version, commit, epoch)?.map(|file| (file, 0)))
    })?;
    match walk {
        Walk::Reached(files, _) => Ok(files),
        Walk::Off => Ok(Vec::new()),
        Walk::Missing(path) => Err(format!("{path} is missing")),
    }
}

/// The whole state of a remote whose files `read` returns, for checks from
/// outside a sync (tests, the simulator's invariants): `metadata.db` with
/// every commit after it applied, and `version.txt`, as a sync reads it
/// ([`tail_after`]). `None` without a `metadata.db`.
pub fn read_state(
    read: impl Fn(&str) -> Option<Vec<u8>>,
) -> Result<Option<(RemoteDb, Option<Head>)>, String> {
    let head = match read(crate::session::VERSION_TXT) {
        Some(bytes) => Some(Head::parse(&bytes).map_err(|e| format!("version.txt: {e:?}"))?),
        None => None,
    };
    let Some(bytes) = read(crate::session::METADATA_DB) else { return Ok(None) };
    let mut db = RemoteDb::from_bytes(&bytes).map_err(|e| format!("metadata.db: {e}"))?;
    let files = tail_after(head.as_ref(), (db.version(), db.epoch(), db.commit_id()), read)?;
    for file in &files {
        apply(&mut db, file).map_err(|e| format!("{}: {e}", file.own_path()))?;
    }
    Ok(Some((db, head)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hlc::Hlc;
    use crate::model::{ContentHash, FileMeta};

    fn head() -> Head {
        Head {
            version: 17,
            format: 2,
            commit: Some("c0a".to_owned()),
            epoch: Some("e1".to_owned()),
            checkpoint: 12,
            checkpoint_bytes: 98_304,
            tail_bytes: 3456,
        }
    }

    #[test]
    fn a_head_reads_back_what_it_wrote_in_both_formats() {
        assert_eq!(Head::parse(head().to_text().as_bytes()), Ok(head()));
        assert_eq!(Head::parse(b"42\n"), Ok(Head::format1(42)));
        assert_eq!(Head::format1(42).to_text(), "42\n");
        assert_eq!(Head::parse(b" 0 "), Ok(Head::format1(0)));
    }

    #[test]
    fn a_newer_format_is_refused_as_too_new() {
        let text = head().to_text().replace("format 2", "format 3");
        assert_eq!(Head::parse(text.as_bytes()), Err(HeadError::TooNew(3)));
    }

    #[test]
    fn a_garbled_head_is_refused() {
        let good = head().to_text();
        let bad = [
            String::new(),
            "abc".to_owned(),
            "-1".to_owned(),
            "1.5".to_owned(),
            "99999999999999999999".to_owned(),
            good.replace("commit c0a", "commit ../x"),
            good.replace("checkpoint 12", "checkpoint 18"),
            good.replace("epoch e1\n", ""),
            format!("{good}extra 1\n"),
            good.replace("tail-bytes", "tail_bytes"),
            good.replace("format 2", "format 1"),
        ];
        for text in bad {
            assert!(matches!(Head::parse(text.as_bytes()), Err(HeadError::Garbled(_))), "{text:?} accepted");
        }
        assert!(Head::parse(b"\xff\xfe").is_err());
    }

    #[test]
    fn a_fold_is_due_by_count_or_by_bytes_relative_to_the_checkpoint() {
        let mut h = Head { tail_bytes: 0, ..head() };
        assert!(!h.fold_due(FOLD_COMMITS));
        h.version = h.checkpoint + i64::from(FOLD_COMMITS);
        assert!(h.fold_due(FOLD_COMMITS));
        assert!(!h.fold_due(FOLD_COMMITS + 1));
        h.version = h.checkpoint + 1;
        h.checkpoint_bytes = 100 << 20;
        h.tail_bytes = 10 << 20;
        assert!(!h.fold_due(FOLD_COMMITS), "a tenth of the checkpoint");
        h.tail_bytes = 30 << 20;
        assert!(h.fold_due(FOLD_COMMITS), "over a quarter of it");
        assert!(!Head::format1(100).fold_due(1));
    }

    fn row(id: &str, version: i64) -> RemoteRow {
        RemoteRow {
            stable_id: id.to_owned(),
            id: ContentHash::of(id.as_bytes()),
            meta: FileMeta {
                filename: "a.pdf".to_owned(),
                doc_id: "10.1/x".to_owned(),
                doc_id_type: "doi".to_owned(),
                file_type: "pdf".to_owned(),
                doc_collections: "[]".to_owned(),
                doc_metadata: "{}".to_owned(),
                file_metadata: "{}".to_owned(),
                ..FileMeta::default()
            },
            deleted: false,
            remote_version: version,
            updated_at: "2026-12-07T00:00:00.000Z".to_owned(),
            hlc: Hlc { physical_ms: 5, counter: 0, instance: "i".to_owned() },
        }
    }

    fn change(rows: Vec<RemoteRow>) -> ChangeFile {
        ChangeFile {
            format: FORMAT,
            epoch: "e1".to_owned(),
            version: 7,
            commit: "c7".to_owned(),
            parent_version: 6,
            parent_commit: Some("c6".to_owned()),
            rows,
        }
    }

    #[test]
    fn a_change_file_reads_back_what_it_wrote() {
        let file = change(vec![row("a", 7), row("b", 7)]);
        assert_eq!(ChangeFile::parse(&file.to_bytes(), 7, "c7", "e1"), Ok(file.clone()));
        assert_eq!(file.own_path(), "changes/7-c7.json");
    }

    #[test]
    fn a_change_file_that_does_not_fit_its_place_is_refused() {
        let good = change(vec![row("a", 7)]);
        let cases: Vec<(ChangeFile, &str)> = vec![
            (ChangeFile { version: 8, ..good.clone() }, "names commit"),
            (ChangeFile { commit: "c8".to_owned(), ..good.clone() }, "names commit"),
            (ChangeFile { epoch: "e2".to_owned(), ..good.clone() }, "epoch"),
            (ChangeFile { parent_version: 7, ..good.clone() }, "parent version"),
            (ChangeFile { parent_commit: Some("../x".to_owned()), ..good.clone() }, "parent_commit"),
            (ChangeFile { format: 3, ..good.clone() }, "format"),
            (change(vec![row("a", 6)]), "remote_version"),
            (change(vec![row("a", 7), row("a", 7)]), "twice"),
            (change(vec![row("../a", 7)]), "row"),
        ];
        for (file, why) in cases {
            let err = ChangeFile::parse(&file.to_bytes(), 7, "c7", "e1").unwrap_err();
            assert!(err.contains(why), "{err:?} does not mention {why:?}");
        }
        for bad in [&b""[..], b"{", b"[]", b"{\"format\":2}", br#"{"x":1}"#] {
            assert!(ChangeFile::parse(bad, 7, "c7", "e1").is_err());
        }
        let mut extra: serde_json::Value = serde_json::from_slice(&good.to_bytes()).unwrap();
        extra["surprise"] = serde_json::Value::Bool(true);
        let err = ChangeFile::parse(&serde_json::to_vec(&extra).unwrap(), 7, "c7", "e1").unwrap_err();
        assert!(err.contains("unknown field"), "{err}");
    }
}
