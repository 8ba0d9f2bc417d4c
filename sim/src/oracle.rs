//! The ground truth: every write the simulated app made, who had seen what
//! when it was made, and the final check that nothing was lost.
//!
//! Every app write leaves a mark the final state can be traced back to:
//! content is unique per write (so its hash names the write), and every
//! write that sets metadata (add, metadata edit, deletion) stores its write
//! number in `file_metadata` as `{"w":N}`. So the converged state says, for
//! each file, which write produced its content and which its metadata.
//!
//! Causality is tracked like a vector clock: an instance *knows* a write
//! once a value naming it sits in its store (it wrote it, or a sync applied
//! it), together with everything the writer knew. That is exactly what the
//! core's hybrid logical clock promises to respect: a write made after the
//! writer saw another must win over it.

use std::collections::HashMap;

use davsync_core::hlc::Hlc;
#[cfg(test)]
use davsync_core::model::SyncStatus;
use davsync_core::model::{ContentHash, FileMeta, LocalRow, RemoteRow};

/// A write's number (also its metadata token).
pub type WriteId = u32;

/// A set of writes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Known(Vec<u64>);

impl Known {
    fn insert(&mut self, w: WriteId) {
        let (word, bit) = (w as usize / 64, w % 64);
        if self.0.len() <= word {
            self.0.resize(word + 1, 0);
        }
        self.0[word] |= 1 << bit;
    }

    /// Is `w` in the set?
    pub fn has(&self, w: WriteId) -> bool {
        self.0.get(w as usize / 64).is_some_and(|x| x & (1 << (w % 64)) != 0)
    }

    fn union(&mut self, other: &Known) {
        if self.0.len() < other.0.len() {
            self.0.resize(other.0.len(), 0);
        }
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            *a |= b;
        }
    }
}

/// What a write changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteKind {
    /// A new file: content and metadata.
    Add,
    /// New content.
    Content,
    /// New metadata.
    Meta,
    /// A deletion (with its token in the tombstone's metadata).
    Delete,
    /// The copy a `keep_both` resolution made: content and metadata.
    Copy,
}

/// One committed local write.
#[derive(Debug, Clone)]
pub struct Write {
    /// Its number.
    pub id: WriteId,
    /// The file.
    pub stable_id: String,
    /// The instance that made it.
    pub by: usize,
    /// What it changed.
    pub kind: WriteKind,
    /// The content it set.
    pub content: Option<ContentHash>,
    /// The metadata token it set.
    pub token: Option<WriteId>,
    /// Everything its instance knew when it was made.
    pub knew: Known,
    /// The scheduler step it happened at.
    pub step: u64,
    /// A conflict resolution chose to drop it.
    pub discarded: bool,
}

/// The metadata token stored in `file_metadata`.
pub fn token_json(w: WriteId) -> String {
    format!("{{\"w\":{w}}}")
}

/// Reads the token back (`None` for anything else).
pub fn token_of(meta: &FileMeta) -> Option<WriteId> {
    meta.file_metadata.strip_prefix("{\"w\":")?.strip_suffix('}')?.parse().ok()
}

/// How a conflict was resolved, as far as the oracle cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// The local side was kept; the remote side it conflicted with is dropped.
    Local,
    /// The local side was dropped (remote wins, or keep both: the local
    /// content lives on in a copy).
    Remote,
}

/// The final state of one file, as every party agrees on it.
#[derive(Debug, Clone)]
pub struct Final {
    /// Content hash.
    pub content: ContentHash,
    /// Metadata token.
    pub token: Option<WriteId>,
    /// Tombstone.
    pub deleted: bool,
}

/// The record of every write and of what each instance knows.
#[derive(Debug, Default)]
pub struct Oracle {
    writes: Vec<Write>,
    by_content: HashMap<(String, ContentHash), WriteId>,
    by_token: HashMap<(String, WriteId), WriteId>,
    knows: Vec<Known>,
    conflict_step: HashMap<(usize, String), u64>,
    /// The first (lowest) stamp a remote row carrying each metadata write
    /// had: the stamp the write was published under.
    stamps: HashMap<WriteId, Hlc>,
}

impl Oracle {
    /// An oracle for `instances` instances.
    pub fn new(instances: usize) -> Oracle {
        Oracle { knows: vec![Known::default(); instances], ..Oracle::default() }
    }

    /// The number the next write gets.
    pub fn next_id(&self) -> WriteId {
        self.writes.len() as WriteId
    }

    /// Every write so far.
    pub fn writes(&self) -> &[Write] {
        &self.writes
    }

    /// Records a committed write by instance `by`. `token` is the metadata
    /// token the row now carries (for a copy: the original's).
    pub fn record(
        &mut self,
        by: usize,
        stable_id: &str,
        kind: WriteKind,
        content: Option<ContentHash>,
        token: Option<WriteId>,
        step: u64,
    ) -> WriteId {
        let id = self.next_id();
        if let Some(h) = &content {
            self.by_content.insert((stable_id.to_owned(), h.clone()), id);
        }
        if let Some(t) = token {
            self.by_token.insert((stable_id.to_owned(), t), id);
        }
        let knew = self.knows[by].clone();
        self.writes.push(Write {
            id,
            stable_id: stable_id.to_owned(),
            by,
            kind,
            content,
            token,
            knew,
            step,
            discarded: false,
        });
        self.knows[by].insert(id);
        id
    }

    fn learn(&mut self, i: usize, w: WriteId) {
        let knew = self.writes[w as usize].knew.clone();
        self.knows[i].insert(w);
        self.knows[i].union(&knew);
    }

    /// Instance `i`'s store now holds `rows`: it knows every write they
    /// name. Fails on a value no write ever produced.
    pub fn observe<'a>(&mut self, i: usize, rows: impl Iterator<Item = &'a LocalRow>) -> Result<(), String> {
        for row in rows {
            let s = &row.stable_id;
            let Some(&c) = self.by_content.get(&(s.clone(), row.id.clone())) else {
                return Err(format!("n{i}: row {s} holds content {} that no write produced", short(&row.id)));
            };
            self.learn(i, c);
            let Some(t) = token_of(&row.meta) else {
                return Err(format!("n{i}: row {s} lost its metadata token: {:?}", row.meta.file_metadata));
            };
            let Some(&m) = self.by_token.get(&(s.clone(), t)) else {
                return Err(format!("n{i}: row {s} holds metadata w{t} that no write of it produced"));
            };
            self.learn(i, m);
        }
        Ok(())
    }

    /// The remote holds `rows` (read at a `version.txt` write, and at the
    /// end): each metadata write they carry was published under its row's
    /// stamp, or earlier. (Not the stamps of synced local rows: a
    /// `remote_wins` resolution leaves a row synced with its old stamp and
    /// its own, unpublished metadata.)
    pub fn published<'a>(&mut self, rows: impl Iterator<Item = &'a RemoteRow>) {
        for row in rows {
            let Some(t) = token_of(&row.meta) else { continue };
            let Some(&m) = self.by_token.get(&(row.stable_id.clone(), t)) else { continue };
            let first = self.stamps.entry(m).or_insert_with(|| row.hlc.clone());
            if row.hlc < *first {
                *first = row.hlc.clone();
            }
        }
    }

    /// A sync of instance `i` left `stable_id` in conflict at `step`.
    pub fn conflict_recorded(&mut self, i: usize, stable_id: &str, step: u64) {
        self.conflict_step.insert((i, stable_id.to_owned()), step);
    }

    /// Instance `i` resolved the conflict on `local` (its row before the
    /// resolution) with `choice`: the writes on the losing side are dropped
    /// by the user's decision.
    pub fn resolved(&mut self, i: usize, local: &LocalRow, choice: Choice) {
        let s = &local.stable_id;
        let recorded = self.conflict_step.get(&(i, s.clone())).copied().unwrap_or(u64::MAX);
        // The history of the remote side: its content write and what that knew.
        let remote_hash = local.conflict.as_ref().map(|c| c.remote_hash.clone());
        let remote_write = remote_hash.and_then(|h| self.by_content.get(&(s.clone(), h))).copied();
        let remote_history = remote_write.map(|w| {
            let mut k = self.writes[w as usize].knew.clone();
            k.insert(w);
            k
        });
        // The local side's history: the writes its content and metadata come
        // from, and what they knew. (Not all the instance knows now: the sync
        // that recorded the conflict taught it about others' later writes,
        // and through them, transitively, about the very remote side the
        // user overrules.)
        let mut local_history = Known::default();
        let content_write = self.by_content.get(&(s.clone(), local.id.clone()));
        let meta_write = token_of(&local.meta).and_then(|t| self.by_token.get(&(s.clone(), t)));
        for &w in content_write.into_iter().chain(meta_write) {
            local_history.insert(w);
            local_history.union(&self.writes[w as usize].knew);
        }
        for w in self.writes.iter_mut().filter(|w| &w.stable_id == s) {
            let drop = match choice {
                // The local side: what this instance knew of the file beyond
                // the remote side's history.
                Choice::Remote => {
                    self.knows[i].has(w.id) && remote_history.as_ref().is_none_or(|h| !h.has(w.id))
                }
                // The remote side: what others wrote, unknown to the local
                // side's writes, before the conflict was seen.
                Choice::Local => w.by != i && !local_history.has(w.id) && w.step <= recorded,
            };
            w.discarded |= drop;
        }
    }

    /// Checks every write against the final state `finals` (by stable id):
    /// each is in it, was superseded by a write made after it, or was
    /// dropped by a resolution. Returns the first violation.
    pub fn check_final(&self, finals: &HashMap<String, Final>) -> Result<(), String> {
        for f in finals.iter() {
            self.check_names(f.0, f.1)?;
        }
        self.check_stamps()?;
        self.check_lww_reference(finals)?;
        for w in self.writes.iter().filter(|w| !w.discarded) {
            let Some(f) = finals.get(&w.stable_id) else {
                // No remote knows the file (e.g. made and deleted before the
                // remote it reached was wiped): it must have been deleted.
                let deleted_after = w.kind == WriteKind::Delete
                    || self.writes.iter().any(|d| {
                        d.stable_id == w.stable_id && d.kind == WriteKind::Delete && d.knew.has(w.id)
                    });
                if deleted_after {
                    continue;
                }
                return Err(format!(
                    "lost write: w{} ({:?} by n{}) on {} never reached the remote",
                    w.id, w.kind, w.by, w.stable_id
                ));
            };
            match w.kind {
                WriteKind::Add | WriteKind::Copy => {
                    self.check_content(w, f)?;
                    self.check_meta(w, f)?;
                }
                WriteKind::Content => self.check_content(w, f)?,
                WriteKind::Meta => self.check_meta(w, f)?,
                WriteKind::Delete => {
                    if !f.deleted {
                        return Err(format!(
                            "resurrection: {} is live although w{} by n{} deleted it and no resolution undid that",
                            w.stable_id, w.id, w.by
                        ));
                    }
                    self.check_meta(w, f)?;
                }
            }
        }
        Ok(())
    }

    /// The hybrid logical clock respects causality: a metadata write made
    /// after its writer had seen another write's metadata of the same file
    /// is published under a later stamp (else last-write-wins could let the
    /// older one win).
    fn check_stamps(&self) -> Result<(), String> {
        for w2 in self.writes.iter().filter(|w| w.token.is_some() && !w.discarded) {
            let Some(s2) = self.stamps.get(&w2.id) else { continue };
            for w1 in self.writes.iter().filter(|w| w.stable_id == w2.stable_id && w.token.is_some()) {
                if w1.id == w2.id || !w2.knew.has(w1.id) {
                    continue;
                }
                if let Some(s1) = self.stamps.get(&w1.id)
                    && s2 <= s1
                {
                    return Err(format!(
                        "HLC order: w{} ({:?} by n{}) on {} was published under {s2}, not after w{} ({s1}), \
                         which its writer had seen",
                        w2.id, w2.kind, w2.by, w2.stable_id, w1.id
                    ));
                }
            }
        }
        Ok(())
    }

    /// Last-write-wins by the reference order: a file's final metadata is
    /// not a write that a concurrent one (neither writer had seen the other)
    /// follows in HLC order, both as first published. (The causal check above
    /// allows any order among concurrent writes; this one pins it.) Writes
    /// never published under their own stamp lost before reaching the
    /// remote and are not compared.
    fn check_lww_reference(&self, finals: &HashMap<String, Final>) -> Result<(), String> {
        for (s, f) in finals {
            let Some(wf) = f.token.and_then(|t| self.by_token.get(&(s.clone(), t))).copied() else {
                continue;
            };
            let Some(sf) = self.stamps.get(&wf) else { continue };
            let won = &self.writes[wf as usize];
            for w in self.writes.iter().filter(|w| &w.stable_id == s && w.token.is_some() && !w.discarded) {
                let concurrent = w.id != wf && !won.knew.has(w.id) && !w.knew.has(wf);
                if let Some(sw) = self.stamps.get(&w.id)
                    && concurrent
                    && sw > sf
                {
                    return Err(format!(
                        "LWW order: {s} ended with w{wf} ({:?} by n{}, published as {sf}) over the concurrent \
                         w{} ({:?} by n{}, published later as {sw})",
                        won.kind, won.by, w.id, w.kind, w.by
                    ));
                }
            }
        }
        Ok(())
    }

    fn check_names(&self, s: &str, f: &Final) -> Result<(), String> {
        if !self.by_content.contains_key(&(s.to_owned(), f.content.clone())) {
            return Err(format!("final {s} holds content {} that no write produced", short(&f.content)));
        }
        match f.token {
            Some(t) if self.by_token.contains_key(&(s.to_owned(), t)) => Ok(()),
            _ => Err(format!("final {s} holds metadata {:?} that no write produced", f.token)),
        }
    }

    /// Content may only be replaced by a content change or deletion made by
    /// an instance that had seen it (concurrent content changes are
    /// conflicts, settled by a resolution).
    fn check_content(&self, w: &Write, f: &Final) -> Result<(), String> {
        if !f.deleted && w.content.as_ref() == Some(&f.content) {
            return Ok(());
        }
        let superseded = self.writes.iter().any(|w2| {
            w2.stable_id == w.stable_id
                && matches!(w2.kind, WriteKind::Content | WriteKind::Delete)
                && w2.knew.has(w.id)
        });
        if superseded {
            return Ok(());
        }
        Err(format!(
            "lost write: content of w{} ({:?} by n{}) on {} is gone, and no later write or resolution replaced it \
             (final: {}{})",
            w.id,
            w.kind,
            w.by,
            w.stable_id,
            short(&f.content),
            if f.deleted { ", deleted" } else { "" }
        ))
    }

    /// Metadata is last-write-wins: it may lose to a concurrent write, never
    /// to one its writer had already seen.
    fn check_meta(&self, w: &Write, f: &Final) -> Result<(), String> {
        if w.token.is_none() || w.token == f.token {
            return Ok(());
        }
        let winner = f.token.and_then(|t| self.by_token.get(&(w.stable_id.clone(), t))).copied();
        match winner {
            Some(wf) if w.knew.has(wf) => Err(format!(
                "LWW order: w{} ({:?} by n{}) on {} lost to w{}, which its writer had already seen",
                w.id, w.kind, w.by, w.stable_id, wf
            )),
            Some(_) => Ok(()),
            None => Err(format!("final {} has unknown metadata {:?}", w.stable_id, f.token)),
        }
    }
}

/// The first 8 hex digits of a hash, for messages.
pub fn short(h: &ContentHash) -> String {
    h.as_str().chars().take(8).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(s: &str) -> ContentHash {
        ContentHash::of(s.as_bytes())
    }

    fn fin(content: &str, token: WriteId, deleted: bool) -> HashMap<String, Final> {
        let mut m = HashMap::new();
        m.insert("f".to_owned(), Final { content: hash(content), token: Some(token), deleted });
        m
    }

    #[test]
    fn a_write_that_saw_the_winner_must_not_lose() {
        let mut o = Oracle::new(2);
        let add = o.record(0, "f", WriteKind::Add, Some(hash("a")), Some(0), 0);
        o.learn(1, add);
        let later = o.record(1, "f", WriteKind::Meta, None, Some(1), 1);
        assert!(o.check_final(&fin("a", later, false)).is_ok());
        let err = o.check_final(&fin("a", add, false)).unwrap_err();
        assert!(err.contains("LWW order"), "{err}");
    }

    #[test]
    fn concurrent_metadata_may_lose_but_concurrent_content_may_not() {
        let mut o = Oracle::new(3);
        let add = o.record(0, "f", WriteKind::Add, Some(hash("a")), Some(0), 0);
        o.learn(1, add);
        o.learn(2, add);
        let m1 = o.record(1, "f", WriteKind::Meta, None, Some(1), 1);
        let _m2 = o.record(2, "f", WriteKind::Meta, None, Some(2), 1);
        assert!(o.check_final(&fin("a", m1, false)).is_ok(), "m2 lost to a concurrent write");
        o.record(2, "f", WriteKind::Content, Some(hash("c")), None, 2);
        let err = o.check_final(&fin("a", m1, false)).unwrap_err();
        assert!(err.contains("lost write"), "{err}");
    }

    #[test]
    fn deletion_must_stay_unless_a_resolution_undid_it() {
        let mut o = Oracle::new(2);
        let add = o.record(0, "f", WriteKind::Add, Some(hash("a")), Some(0), 0);
        o.learn(1, add);
        let del = o.record(1, "f", WriteKind::Delete, None, Some(1), 1);
        let err = o.check_final(&fin("a", add, false)).unwrap_err();
        assert!(err.contains("resurrection"), "{err}");
        assert!(o.check_final(&fin("a", del, true)).is_ok());
        let tomb = LocalRow {
            stable_id: "f".into(),
            id: hash("a"),
            meta: FileMeta { file_metadata: token_json(del), ..FileMeta::default() },
            deleted: true,
            sync_status: davsync_core::model::SyncStatus::Conflict,
            remote_version: None,
            sync_hash: None,
            sync_meta: None,
            local_modified_at_ms: 0,
            hlc: None,
            conflict: None,
        };
        o.resolved(1, &tomb, Choice::Remote);
        assert!(o.check_final(&fin("a", add, false)).is_ok());
    }

    fn synced_row(content: &str, token: WriteId, stamp_ms: i64) -> LocalRow {
        LocalRow {
            stable_id: "f".into(),
            id: hash(content),
            meta: FileMeta { file_metadata: token_json(token), ..FileMeta::default() },
            deleted: false,
            sync_status: SyncStatus::Synced,
            remote_version: Some(1),
            sync_hash: Some(hash(content)),
            sync_meta: None,
            local_modified_at_ms: 0,
            hlc: Some(Hlc { physical_ms: stamp_ms, counter: 0, instance: "i".into() }),
            conflict: None,
        }
    }

    /// Instance `i` syncs the remote row carrying `token` under `stamp_ms`.
    fn sync_in(o: &mut Oracle, i: usize, content: &str, token: WriteId, stamp_ms: i64) {
        let row = synced_row(content, token, stamp_ms);
        let remote = RemoteRow {
            stable_id: row.stable_id.clone(),
            id: row.id.clone(),
            meta: row.meta.clone(),
            deleted: false,
            remote_version: 1,
            updated_at: String::new(),
            hlc: row.hlc.clone().unwrap(),
        };
        o.published([remote].iter());
        o.observe(i, [row].iter()).unwrap();
    }

    #[test]
    fn a_write_published_under_an_older_stamp_than_one_its_writer_saw_is_refused() {
        let mut o = Oracle::new(2);
        let add = o.record(0, "f", WriteKind::Add, Some(hash("a")), Some(0), 0);
        sync_in(&mut o, 1, "a", add, 10);
        let later = o.record(1, "f", WriteKind::Meta, None, Some(1), 1);
        sync_in(&mut o, 1, "a", later, 11);
        assert!(o.check_final(&fin("a", later, false)).is_ok());
        // The same write seen later under an even older stamp: its first
        // publication was stamped before what its writer had seen.
        sync_in(&mut o, 0, "a", later, 9);
        let err = o.check_final(&fin("a", later, false)).unwrap_err();
        assert!(err.contains("HLC order"), "{err}");
    }

    #[test]
    fn the_later_published_of_two_concurrent_metadata_writes_wins() {
        let mut o = Oracle::new(3);
        let add = o.record(0, "f", WriteKind::Add, Some(hash("a")), Some(0), 0);
        sync_in(&mut o, 1, "a", add, 5);
        sync_in(&mut o, 2, "a", add, 5);
        let early = o.record(1, "f", WriteKind::Meta, None, Some(1), 1);
        let late = o.record(2, "f", WriteKind::Meta, None, Some(2), 1);
        sync_in(&mut o, 1, "a", early, 10);
        sync_in(&mut o, 2, "a", late, 20);
        assert!(o.check_final(&fin("a", late, false)).is_ok());
        let err = o.check_final(&fin("a", early, false)).unwrap_err();
        assert!(err.contains("LWW order") && err.contains("published later"), "{err}");
    }

    #[test]
    fn values_nobody_wrote_are_refused() {
        let mut o = Oracle::new(1);
        o.record(0, "f", WriteKind::Add, Some(hash("a")), Some(0), 0);
        assert!(o.check_final(&fin("zzz", 0, false)).unwrap_err().contains("no write produced"));
    }
}
