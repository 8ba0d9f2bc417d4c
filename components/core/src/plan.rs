//! The three-way compare (SPEC §3 step 4, §4): for one logical file, given
//! the local row (with its base: `remote_version`, `sync_hash`) and the
//! remote row, decide what the sync does. Pure: no I/O, so every case is a
//! unit test.

use crate::hlc::{Hlc, HlcClock, stamp_local_edit};
use crate::local_state::{OwnPushes, PushedInput};
use crate::model::{ConflictKind, ConflictRecord, FileMeta, LocalRow, RemoteRow, SyncStatus};

/// What the compare knows beyond the two rows.
#[derive(Debug)]
pub struct DecideContext<'a> {
    /// This instance's id.
    pub instance: &'a str,
    /// The HLC state as of the end of the last sync: every local edit still
    /// pending happened after it.
    pub seen: &'a HlcClock,
    /// Bases are void: the remote is not the one the local rows were synced
    /// with (first sync of this database, or a new epoch).
    pub void_base: bool,
    /// The inputs of this instance's pushes whose local commit may not have
    /// happened.
    pub own_pushes: &'a OwnPushes,
}

/// The decision for one logical file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Nothing to do.
    Nothing,
    /// Write `row` (content, metadata, deletion) to the remote with `stamp`,
    /// then store it locally as synced. `row` may differ from the local row
    /// when both sides' changes were merged.
    Push {
        /// The state to publish.
        row: LocalRow,
        /// Its HLC stamp.
        stamp: Hlc,
    },
    /// Take the remote row locally (new file, update, or deletion).
    Pull(RemoteRow),
    /// Both sides already agree: record the remote row as the new base.
    MarkSynced(RemoteRow),
    /// Record a conflict on the local row; change nothing else.
    Conflict(ConflictRecord),
    /// Forget a base that belongs to another remote (void sync of a row that
    /// needs no push).
    ForgetBase,
}

/// The stamp of the local row's state: a pending edit is stamped after
/// everything this instance had seen; an already-synced state keeps the stamp
/// it was synced with.
pub fn local_stamp(local: &LocalRow, ctx: &DecideContext<'_>) -> Hlc {
    match (&local.hlc, local.sync_status.is_pending()) {
        (Some(h), false) => h.clone(),
        _ => stamp_local_edit(ctx.seen, local.local_modified_at_ms),
    }
}

/// Decides what to do with one logical file. `local` rows in conflict never
/// reach here (they wait for a resolution).
pub fn decide(local: Option<&LocalRow>, remote: Option<&RemoteRow>, ctx: &DecideContext<'_>) -> Action {
    match (local, remote) {
        (None, None) => Action::Nothing,
        (None, Some(r)) if r.deleted => Action::Nothing,
        (None, Some(r)) => Action::Pull(r.clone()),
        (Some(l), None) => decide_remote_missing(l, ctx),
        (Some(l), Some(r)) => decide_both(l, r, ctx),
    }
}

/// The remote has no row: it never heard of the file, or it lost it
/// (restored from an older copy, overwritten commit, new remote).
fn decide_remote_missing(l: &LocalRow, ctx: &DecideContext<'_>) -> Action {
    let had_base = l.remote_version.is_some() && !ctx.void_base;
    match (l.deleted, l.sync_status) {
        (false, _) => push_local(l, ctx),
        (true, SyncStatus::PendingDelete) => push_local(l, ctx),
        // A deletion this remote once recorded and lost: record it again.
        (true, _) if had_base => push_local(l, ctx),
        // A deletion recorded on the remote this instance synced with before
        // (void base): offered to this one like a live file. The new remote
        // may be the same remote recreated under a stalled creator on a
        // server that ignores conditional writes, and another instance may
        // still offer the file live; without the tombstone it would come
        // back (seed 14946).
        (true, _) if ctx.void_base && l.remote_version.is_some() => push_local(l, ctx),
        (true, _) if l.remote_version.is_some() || l.sync_hash.is_some() => Action::ForgetBase,
        (true, _) => Action::Nothing,
    }
}

fn push_local(l: &LocalRow, ctx: &DecideContext<'_>) -> Action {
    Action::Push { row: l.clone(), stamp: local_stamp(l, ctx) }
}

fn decide_both(l: &LocalRow, r: &RemoteRow, ctx: &DecideContext<'_>) -> Action {
    if r.same_state_as(l) {
        let already = !ctx.void_base
            && l.remote_version == Some(r.remote_version)
            && l.sync_hash.as_ref() == Some(&r.id)
            && !l.sync_status.is_pending();
        return if already { Action::Nothing } else { Action::MarkSynced(r.clone()) };
    }
    if l.sync_status.is_pending()
        && let Some(input) = ctx.own_pushes.get(&l.stable_id, &r.hlc)
    {
        return decide_after_own_push(l, r, input, ctx);
    }
    let base = if ctx.void_base { None } else { l.remote_version };
    // The remote lost what we know it had: our state must be published again.
    let behind = base.is_some_and(|b| r.remote_version < b);
    // Our own earlier commit whose local bookkeeping crashed counts as a
    // remote change too: it may be a merge that carries others' edits, and
    // the ordinary compare settles it (same state, or LWW by stamp).
    let remote_changed = r.remote_version > base.unwrap_or(0);
    // Under a void base every local file, live or deleted, is offered to the
    // remote: a live file against a remote deletion, or a deletion against a
    // remote live file, is a conflict, never a silent deletion or return.
    let local_changed = l.sync_status.is_pending() || behind || ctx.void_base;
    match (local_changed, remote_changed) {
        (true, false) => push_local(l, ctx),
        (false, true) => Action::Pull(r.clone()),
        (true, true) => decide_concurrent(l, r, base, ctx),
        (false, false) => Action::Nothing,
    }
}

/// `r` is this instance's own push of `input`, and its local commit never
/// happened (a crash, a lost response), so `l` is still pending. If `l` still
/// is that input, the push (possibly a merge carrying others' changes)
/// supersedes it. Otherwise the app changed the row after the push was
/// prepared: a later write, whatever the wall clock said when it was made
/// (it may have jumped backwards), applied on top of the push.
fn decide_after_own_push(
    l: &LocalRow,
    r: &RemoteRow,
    input: &PushedInput,
    ctx: &DecideContext<'_>,
) -> Action {
    let content = l.id != input.id;
    let meta = l.meta.digest() != input.meta;
    let deleted = l.deleted != input.deleted;
    if !content && !meta && !deleted {
        return Action::Pull(r.clone());
    }
    let after = r.hlc.clone().max(ctx.seen.current());
    let stamp = HlcClock::new(ctx.instance, Some(&after)).tick(l.local_modified_at_ms);
    if deleted {
        return Action::Push { row: l.clone(), stamp };
    }
    if l.deleted {
        // Deleted before and after: the published deletion stands.
        return Action::Pull(r.clone());
    }
    // The push took another instance's content, and the app has replaced the
    // content since: both sides changed it.
    if content && r.id != input.id && l.id != r.id {
        let base = if ctx.void_base { None } else { l.remote_version };
        return conflict(l, r, base, ConflictKind::BothModified, ctx);
    }
    let mut merged = l.clone();
    if !content {
        merged.id = r.id.clone();
        merged.meta.file_size = r.meta.file_size;
    }
    if !meta {
        merged.meta = FileMeta { file_size: merged.meta.file_size, ..r.meta.clone() };
    }
    if r.same_state_as(&merged) {
        return Action::Pull(r.clone());
    }
    Action::Push { row: merged, stamp }
}

/// Records a conflict of `l` with `r` over `base`.
fn conflict(
    l: &LocalRow,
    r: &RemoteRow,
    base: Option<i64>,
    kind: ConflictKind,
    ctx: &DecideContext<'_>,
) -> Action {
    let base_hash = if ctx.void_base { None } else { l.sync_hash.clone() };
    Action::Conflict(ConflictRecord {
        kind,
        remote_hash: r.id.clone(),
        remote_version: r.remote_version,
        remote_deleted: r.deleted,
        remote_updated_at: r.updated_at.clone(),
        base_version: base,
        base_hash,
    })
}

/// Last-write-wins between the pending local state (stamped `mine`) and the
/// remote row. A tie is this instance's own push of an earlier state, stamped
/// from the same clock state and wall-clock millisecond (a retried attempt, or
/// a crash before the local commit); a merge's stamp is always strictly later.
/// The pending local row differs from it, so it was edited after that push was
/// prepared: it is the later write.
fn local_wins_lww(mine: &Hlc, r: &RemoteRow) -> bool {
    *mine >= r.hlc
}

/// Both sides changed since the base.
fn decide_concurrent(l: &LocalRow, r: &RemoteRow, base: Option<i64>, ctx: &DecideContext<'_>) -> Action {
    let base_hash = if ctx.void_base { None } else { l.sync_hash.as_ref() };
    let conflict = |kind| conflict(l, r, base, kind, ctx);
    match (l.deleted, r.deleted) {
        (true, true) => return Action::MarkSynced(r.clone()),
        (true, false) => return conflict(ConflictKind::DeletedLocallyModifiedRemotely),
        (false, true) => return conflict(ConflictKind::ModifiedLocallyDeletedRemotely),
        (false, false) => {}
    }
    let local_content = base_hash != Some(&l.id);
    let remote_content = base_hash != Some(&r.id);
    if local_content && remote_content && l.id != r.id {
        return conflict(ConflictKind::BothModified);
    }
    // Metadata: three-way against the base when it is known; when both sides
    // changed it (or the base is unknown), last write wins per file by HLC.
    // Content follows the side that changed it.
    let mine = local_stamp(l, ctx);
    let base_meta = if ctx.void_base { None } else { l.sync_meta.as_ref() };
    let take_local_meta = match base_meta.map(|b| (l.meta.digest() != *b, r.meta.digest() != *b)) {
        Some((_, false)) => true,
        Some((true, true)) | None => local_wins_lww(&mine, r),
        Some((false, true)) => false,
    };
    let meta_winner: &FileMeta = if take_local_meta { &l.meta } else { &r.meta };
    let (id, file_size) = if local_content && l.id != r.id {
        (l.id.clone(), l.meta.file_size)
    } else {
        (r.id.clone(), r.meta.file_size)
    };
    let mut merged = l.clone();
    merged.id = id;
    merged.meta = FileMeta { file_size, ..meta_winner.clone() };
    if r.same_state_as(&merged) {
        return Action::Pull(r.clone());
    }
    // The merged state is a new write: stamp it after both inputs.
    let latest = mine.max(r.hlc.clone());
    let mut clock = HlcClock::new(ctx.instance, Some(&latest));
    let stamp = clock.tick(latest.physical_ms);
    Action::Push { row: merged, stamp }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ContentHash;

    const ME: &str = "me";
    static NO_PUSHES: OwnPushes = OwnPushes::new();

    fn meta(label: &str) -> FileMeta {
        FileMeta {
            filename: "a.pdf".into(),
            doc_id: "10.1/x".into(),
            doc_id_type: "doi".into(),
            file_type: "pdf".into(),
            label: Some(label.into()),
            doc_collections: "[]".into(),
            doc_metadata: "{}".into(),
            file_metadata: "{}".into(),
            ..FileMeta::default()
        }
    }

    fn hlc(p: i64, who: &str) -> Hlc {
        Hlc { physical_ms: p, counter: 0, instance: who.into() }
    }

    fn remote(content: &[u8], label: &str, rv: i64, stamp: Hlc) -> RemoteRow {
        RemoteRow {
            stable_id: "s1".into(),
            id: ContentHash::of(content),
            meta: meta(label),
            deleted: false,
            remote_version: rv,
            updated_at: "t".into(),
            hlc: stamp,
        }
    }

    /// A local row synced at `rv` with `content`/`label`.
    fn synced(content: &[u8], label: &str, rv: i64, stamp: Hlc) -> LocalRow {
        LocalRow {
            stable_id: "s1".into(),
            id: ContentHash::of(content),
            meta: meta(label),
            deleted: false,
            sync_status: SyncStatus::Synced,
            remote_version: Some(rv),
            sync_hash: Some(ContentHash::of(content)),
            sync_meta: Some(meta(label).digest()),
            local_modified_at_ms: 0,
            hlc: Some(stamp),
            conflict: None,
        }
    }

    fn ctx(seen: &HlcClock) -> DecideContext<'_> {
        DecideContext { instance: ME, seen, void_base: false, own_pushes: &NO_PUSHES }
    }

    fn modified(mut l: LocalRow, at_ms: i64) -> LocalRow {
        l.sync_status = SyncStatus::Modified;
        l.local_modified_at_ms = at_ms;
        l
    }

    #[test]
    fn unchanged_on_both_sides_does_nothing() {
        let seen = HlcClock::new(ME, None);
        let l = synced(b"a", "x", 3, hlc(1, "o"));
        let r = remote(b"a", "x", 3, hlc(1, "o"));
        assert_eq!(decide(Some(&l), Some(&r), &ctx(&seen)), Action::Nothing);
    }

    #[test]
    fn remote_metadata_change_is_pulled() {
        let seen = HlcClock::new(ME, None);
        let l = synced(b"a", "x", 3, hlc(1, "o"));
        let r = remote(b"a", "y", 4, hlc(2, "o"));
        assert_eq!(decide(Some(&l), Some(&r), &ctx(&seen)), Action::Pull(r));
    }

    #[test]
    fn local_change_is_pushed_with_a_stamp_after_what_was_seen() {
        let mut seen = HlcClock::new(ME, None);
        seen.observe(&hlc(10_000, "o"));
        let l = modified(synced(b"a", "x", 3, hlc(1, "o")), 5);
        let r = remote(b"a", "y", 3, hlc(1, "o"));
        match decide(Some(&l), Some(&r), &ctx(&seen)) {
            Action::Push { row, stamp } => {
                assert_eq!(row, l);
                assert!(stamp > hlc(10_000, "o"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn content_changed_on_both_sides_is_a_conflict() {
        let seen = HlcClock::new(ME, None);
        let mut l = modified(synced(b"a", "x", 3, hlc(1, "o")), 5);
        l.id = ContentHash::of(b"mine");
        let r = remote(b"theirs", "x", 4, hlc(2, "o"));
        match decide(Some(&l), Some(&r), &ctx(&seen)) {
            Action::Conflict(c) => {
                assert_eq!(c.kind, ConflictKind::BothModified);
                assert_eq!(c.remote_version, 4);
                assert_eq!(c.base_version, Some(3));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn same_new_content_on_both_sides_is_not_a_conflict() {
        let seen = HlcClock::new(ME, None);
        let mut l = modified(synced(b"a", "x", 3, hlc(1, "o")), 5);
        l.id = ContentHash::of(b"same");
        let r = remote(b"same", "x", 4, hlc(2, "o"));
        assert_eq!(decide(Some(&l), Some(&r), &ctx(&seen)), Action::MarkSynced(r));
    }

    #[test]
    fn modified_here_deleted_there_is_a_conflict_both_ways() {
        let seen = HlcClock::new(ME, None);
        let l = modified(synced(b"a", "x", 3, hlc(1, "o")), 5);
        let mut r = remote(b"a", "x", 4, hlc(2, "o"));
        r.deleted = true;
        assert!(matches!(
            decide(Some(&l), Some(&r), &ctx(&seen)),
            Action::Conflict(ConflictRecord { kind: ConflictKind::ModifiedLocallyDeletedRemotely, .. })
        ));
        let mut l = synced(b"a", "x", 3, hlc(1, "o"));
        l.deleted = true;
        l.sync_status = SyncStatus::PendingDelete;
        let r = remote(b"a", "y", 4, hlc(2, "o"));
        assert!(matches!(
            decide(Some(&l), Some(&r), &ctx(&seen)),
            Action::Conflict(ConflictRecord { kind: ConflictKind::DeletedLocallyModifiedRemotely, .. })
        ));
    }

    #[test]
    fn metadata_on_both_sides_goes_to_the_later_stamp() {
        // Remote edit stamped at 20s; our edit at 30s on our clock wins …
        let seen = HlcClock::new(ME, None);
        let l = modified(synced(b"a", "x", 3, hlc(1, "o")), 30_000);
        let mut l_label = l.clone();
        l_label.meta.label = Some("mine".into());
        let r = remote(b"a", "theirs", 4, hlc(20_000, "o"));
        match decide(Some(&l_label), Some(&r), &ctx(&seen)) {
            Action::Push { row, stamp } => {
                assert_eq!(row.meta.label.as_deref(), Some("mine"));
                assert!(stamp > r.hlc);
            }
            other => panic!("{other:?}"),
        }
        // … and our edit at 10s loses to it.
        let mut older = l_label.clone();
        older.local_modified_at_ms = 10_000;
        assert_eq!(decide(Some(&older), Some(&r), &ctx(&seen)), Action::Pull(r));
    }

    #[test]
    fn content_from_one_side_and_metadata_from_the_other_merge() {
        let seen = HlcClock::new(ME, None);
        // Local changed content early; remote changed the label later.
        let mut l = modified(synced(b"a", "x", 3, hlc(1, "o")), 1_000);
        l.id = ContentHash::of(b"new content");
        l.meta.file_size = Some(11);
        let r = remote(b"a", "relabelled", 4, hlc(50_000, "o"));
        match decide(Some(&l), Some(&r), &ctx(&seen)) {
            Action::Push { row, stamp } => {
                assert_eq!(row.id, ContentHash::of(b"new content"));
                assert_eq!(row.meta.file_size, Some(11));
                assert_eq!(row.meta.label.as_deref(), Some("relabelled"));
                assert!(stamp > r.hlc);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn metadata_changed_on_one_side_only_is_kept_whatever_the_stamps() {
        let seen = HlcClock::new(ME, None);
        // Our label edit at 1s; their content-only edit at 50s keeps the base
        // label "x": the merge has their content and our label …
        let mut l = modified(synced(b"a", "x", 3, hlc(1, "o")), 1_000);
        l.meta.label = Some("mine".into());
        let mut r = remote(b"theirs", "x", 4, hlc(50_000, "o"));
        r.meta.file_size = Some(6);
        let Action::Push { row, stamp } = decide(Some(&l), Some(&r), &ctx(&seen)) else {
            panic!("expected a push")
        };
        assert_eq!(row.id, ContentHash::of(b"theirs"));
        assert_eq!((row.meta.label.as_deref(), row.meta.file_size), (Some("mine"), Some(6)));
        assert!(stamp > r.hlc);
        // … and our content-only edit at 50s keeps their earlier label edit.
        let mut l = modified(synced(b"a", "x", 3, hlc(1, "o")), 50_000);
        l.id = ContentHash::of(b"mine");
        let r = remote(b"a", "theirs", 4, hlc(1_000, "o"));
        let Action::Push { row, stamp } = decide(Some(&l), Some(&r), &ctx(&seen)) else {
            panic!("expected a push")
        };
        assert_eq!((row.id.clone(), row.meta.label.as_deref()), (ContentHash::of(b"mine"), Some("theirs")));
        assert!(stamp > r.hlc && stamp.physical_ms >= 50_000);
    }

    #[test]
    fn without_a_metadata_base_the_later_stamp_wins() {
        let seen = HlcClock::new(ME, None);
        let mut l = modified(synced(b"a", "x", 3, hlc(1, "o")), 1_000);
        l.sync_meta = None;
        l.meta.label = Some("mine".into());
        let r = remote(b"theirs", "x", 4, hlc(50_000, "o"));
        // The label edit looks concurrent with the later write, which wins.
        assert_eq!(decide(Some(&l), Some(&r), &ctx(&seen)), Action::Pull(r));
    }

    #[test]
    fn our_own_unacknowledged_commit_settles_by_state_and_stamp() {
        let seen = HlcClock::new(ME, None);
        // We pushed label "x2" (rv 4) but crashed before recording it, then
        // edited again: the later edit wins by stamp.
        let mut l = modified(synced(b"a", "x", 3, hlc(1, "o")), 5);
        l.meta.label = Some("x3".into());
        let r = remote(b"a", "x2", 4, hlc(4, ME));
        assert!(matches!(decide(Some(&l), Some(&r), &ctx(&seen)), Action::Push { .. }));
        // Our pushed merge carried someone else's label: it is kept.
        let l = modified(synced(b"a", "x", 3, hlc(1, "o")), 5);
        let mut merged = remote(b"a", "theirs", 4, hlc(6, ME));
        merged.id = ContentHash::of(b"a");
        assert_eq!(decide(Some(&l), Some(&merged), &ctx(&seen)), Action::Pull(merged.clone()));
        // Without the further edit the two simply agree.
        let mut l = modified(synced(b"a", "x", 3, hlc(1, "o")), 5);
        l.meta.label = Some("x2".into());
        assert_eq!(decide(Some(&l), Some(&r), &ctx(&seen)), Action::MarkSynced(r));
    }

    /// We published `input` as `pushed` (stamp `hlc(100, ME)`, rv 4) and
    /// crashed before the local commit; the app then changed the row to
    /// `now`, with a wall clock far behind the push's (a backward jump).
    fn after_own_push(input: &LocalRow, pushed: &RemoteRow, now: &LocalRow) -> Action {
        let seen = HlcClock::new(ME, Some(&hlc(50, ME)));
        let mut pushes = OwnPushes::default();
        pushes.insert(input, &pushed.hlc);
        decide(
            Some(now),
            Some(pushed),
            &DecideContext { instance: ME, seen: &seen, void_base: false, own_pushes: &pushes },
        )
    }

    #[test]
    fn an_edit_after_the_own_unacknowledged_push_wins_despite_a_backward_clock() {
        let input = {
            let mut l = modified(synced(b"a", "x", 3, hlc(1, "o")), 90);
            l.meta.label = Some("x2".into());
            l
        };
        let pushed = remote(b"a", "x2", 4, hlc(100, ME));
        let mut edited = input.clone();
        edited.meta.label = Some("x3".into());
        edited.local_modified_at_ms = 7;
        let Action::Push { row, stamp } = after_own_push(&input, &pushed, &edited) else {
            panic!("expected a push")
        };
        assert_eq!(row.meta.label.as_deref(), Some("x3"));
        assert!(stamp > pushed.hlc, "{stamp} must be later than the push {}", pushed.hlc);
        // Unchanged since the push: the push stands.
        assert_eq!(after_own_push(&input, &pushed, &input), Action::MarkSynced(pushed.clone()));
        // Deleted since the push: the deletion is published.
        let mut gone = input.clone();
        gone.deleted = true;
        gone.sync_status = SyncStatus::PendingDelete;
        assert!(matches!(after_own_push(&input, &pushed, &gone), Action::Push { row, .. } if row.deleted));
    }

    #[test]
    fn a_pushed_merge_supersedes_its_input_and_later_edits_apply_on_top() {
        // We merged their content "b" with our label "mine" and published it.
        let input = {
            let mut l = modified(synced(b"a", "x", 3, hlc(1, "o")), 90);
            l.meta.label = Some("mine".into());
            l
        };
        let pushed = remote(b"b", "mine", 5, hlc(100, ME));
        // The input itself: the merge supersedes it.
        assert_eq!(after_own_push(&input, &pushed, &input), Action::Pull(pushed.clone()));
        // A later label edit keeps the merged content.
        let mut relabelled = input.clone();
        relabelled.meta.label = Some("later".into());
        relabelled.local_modified_at_ms = 7;
        let Action::Push { row, .. } = after_own_push(&input, &pushed, &relabelled) else {
            panic!("expected a push")
        };
        assert_eq!((row.id.clone(), row.meta.label.as_deref()), (ContentHash::of(b"b"), Some("later")));
        // New content on top of their content: both changed it.
        let mut replaced = input.clone();
        replaced.id = ContentHash::of(b"c");
        assert!(matches!(
            after_own_push(&input, &pushed, &replaced),
            Action::Conflict(ConflictRecord { kind: ConflictKind::BothModified, .. })
        ));
        // A push stamped otherwise (an older attempt that never landed) is not ours.
        let mut other = pushed.clone();
        other.hlc = hlc(101, ME);
        let seen = HlcClock::new(ME, None);
        let mut pushes = OwnPushes::default();
        pushes.insert(&input, &pushed.hlc);
        let c = DecideContext { instance: ME, seen: &seen, void_base: false, own_pushes: &pushes };
        assert_eq!(decide(Some(&input), Some(&other), &c), decide(Some(&input), Some(&other), &ctx(&seen)));
    }

    #[test]
    fn a_remote_behind_our_base_gets_our_state_again() {
        let seen = HlcClock::new(ME, None);
        let l = synced(b"a", "x", 9, hlc(9, "o"));
        let r = remote(b"a", "old", 5, hlc(5, "o"));
        assert_eq!(
            decide(Some(&l), Some(&r), &ctx(&seen)),
            Action::Push { row: l.clone(), stamp: hlc(9, "o") }
        );
        assert_eq!(decide(Some(&l), None, &ctx(&seen)), Action::Push { row: l.clone(), stamp: hlc(9, "o") });
        let mut gone = l;
        gone.deleted = true;
        gone.sync_status = SyncStatus::DeletionSynced;
        assert!(matches!(decide(Some(&gone), None, &ctx(&seen)), Action::Push { .. }));
    }

    #[test]
    fn a_void_base_never_deletes_and_offers_local_files() {
        let seen = HlcClock::new(ME, None);
        let c = DecideContext { instance: ME, seen: &seen, void_base: true, own_pushes: &NO_PUSHES };
        let l = synced(b"a", "x", 9, hlc(9, "o"));
        assert!(matches!(decide(Some(&l), None, &c), Action::Push { .. }));
        let mut r = remote(b"a", "x", 2, hlc(2, "o"));
        r.deleted = true;
        assert!(matches!(decide(Some(&l), Some(&r), &c), Action::Conflict(_)));
        let mut old_deletion = l.clone();
        old_deletion.deleted = true;
        old_deletion.sync_status = SyncStatus::DeletionSynced;
        // A deletion is offered too: pushed where the remote lacks the file,
        // a conflict where it has it live, agreed where it has it deleted.
        assert!(matches!(decide(Some(&old_deletion), None, &c), Action::Push { row, .. } if row.deleted));
        let live = remote(b"a", "x", 2, hlc(2, "o"));
        assert!(matches!(decide(Some(&old_deletion), Some(&live), &c), Action::Conflict(_)));
        assert!(matches!(decide(Some(&old_deletion), Some(&r), &c), Action::MarkSynced(_)));
        let same = remote(b"a", "x", 2, hlc(2, "o"));
        assert_eq!(decide(Some(&l), Some(&same), &c), Action::MarkSynced(same));
    }

    #[test]
    fn remote_only_rows_are_pulled_unless_tombstones() {
        let seen = HlcClock::new(ME, None);
        let r = remote(b"a", "x", 2, hlc(2, "o"));
        assert_eq!(decide(None, Some(&r), &ctx(&seen)), Action::Pull(r.clone()));
        let mut t = r;
        t.deleted = true;
        assert_eq!(decide(None, Some(&t), &ctx(&seen)), Action::Nothing);
    }

    #[test]
    fn remote_deletion_of_an_unchanged_file_is_pulled() {
        let seen = HlcClock::new(ME, None);
        let l = synced(b"a", "x", 3, hlc(1, "o"));
        let mut r = remote(b"a", "x", 4, hlc(2, "o"));
        r.deleted = true;
        assert_eq!(decide(Some(&l), Some(&r), &ctx(&seen)), Action::Pull(r));
    }
}
