//! Conflicts, resolutions, and last-write-wins across instances and clocks.

use davsync_core::model::{ConflictKind, ContentHash, SyncStatus};
use davsync_core::{Resolution, ResolutionKind, SyncError, conflicts, resolve};

use crate::harness::{HOUR_MS, Net, Node, assert_converged};

/// a and b share f1; then a edits content to `mine`, b to `theirs`; b syncs
/// first, a detects the conflict.
fn both_edit(net: &mut Net) -> (Node, Node) {
    let mut a = net.node("a", 0);
    let mut b = net.node("b", 0);
    a.add("f1", b"base");
    a.sync();
    b.sync();
    a.edit("f1", b"mine");
    b.edit("f1", b"theirs");
    b.sync();
    let s = a.sync();
    assert_eq!(s.conflicts, 1);
    (a, b)
}

fn resolve_as(node: &mut Node, kind: ResolutionKind) -> davsync_core::ResolveOutcome {
    resolve(&mut node.io(), &Resolution { stable_id: "f1".into(), kind }).unwrap()
}

#[test]
fn content_edited_on_both_sides_is_recorded_not_overwritten() {
    let mut net = Net::strict();
    let (mut a, _b) = both_edit(&mut net);
    let row = a.row("f1");
    assert_eq!(row.sync_status, SyncStatus::Conflict);
    assert_eq!(a.content("f1").unwrap(), b"mine", "local content untouched");
    assert_eq!(net.remote_row("f1").id, ContentHash::of(b"theirs"), "remote untouched");
    let list = conflicts(&mut a.io()).unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].kind, ConflictKind::BothModified);
    assert_eq!(list[0].local_hash, ContentHash::of(b"mine").to_string());
    assert_eq!(list[0].remote_hash, ContentHash::of(b"theirs").to_string());
    // The conflict is sticky and the rest of the sync goes on.
    a.add("f2", b"other");
    let s = a.sync();
    assert_eq!((s.conflicts, s.uploaded), (0, 1));
    assert_eq!(a.row("f1").sync_status, SyncStatus::Conflict);
}

#[test]
fn modified_here_and_deleted_there_is_a_conflict() {
    let mut net = Net::strict();
    let mut a = net.node("a", 0);
    let mut b = net.node("b", 0);
    a.add("f1", b"base");
    a.sync();
    b.sync();
    a.set_label("f1", "still wanted");
    b.delete("f1");
    b.sync();
    let s = a.sync();
    assert_eq!(s.conflicts, 1);
    assert_eq!(s.deleted_local, 0);
    assert_eq!(a.content("f1").unwrap(), b"base", "nothing deleted");
    assert_eq!(conflicts(&mut a.io()).unwrap()[0].kind, ConflictKind::ModifiedLocallyDeletedRemotely);
}

#[test]
fn deleted_here_and_modified_there_is_a_conflict() {
    let mut net = Net::strict();
    let mut a = net.node("a", 0);
    let mut b = net.node("b", 0);
    a.add("f1", b"base");
    a.sync();
    b.sync();
    a.delete("f1");
    b.edit("f1", b"improved");
    b.sync();
    let s = a.sync();
    assert_eq!(s.conflicts, 1);
    assert!(!net.remote_row("f1").deleted, "remote edit not overwritten by the tombstone");
    assert_eq!(conflicts(&mut a.io()).unwrap()[0].kind, ConflictKind::DeletedLocallyModifiedRemotely);
}

#[test]
fn local_wins_pushes_the_local_version() {
    let mut net = Net::strict();
    let (mut a, mut b) = both_edit(&mut net);
    let out = resolve_as(&mut a, ResolutionKind::LocalWins);
    assert!(out.new_stable_id.is_none());
    a.sync();
    b.sync();
    assert_eq!(b.content("f1").unwrap(), b"mine");
    assert!(conflicts(&mut a.io()).unwrap().is_empty());
    assert_converged(&net, &[&a, &b]);
}

#[test]
fn remote_wins_takes_the_remote_version() {
    let mut net = Net::strict();
    let (mut a, mut b) = both_edit(&mut net);
    resolve_as(&mut a, ResolutionKind::RemoteWins);
    let s = a.sync();
    assert_eq!(s.downloaded, 1);
    b.sync();
    assert_eq!(a.content("f1").unwrap(), b"theirs");
    assert_converged(&net, &[&a, &b]);
}

#[test]
fn remote_wins_over_a_remote_deletion_deletes_locally() {
    let mut net = Net::strict();
    let mut a = net.node("a", 0);
    let mut b = net.node("b", 0);
    a.add("f1", b"base");
    a.sync();
    b.sync();
    a.set_label("f1", "mine");
    b.delete("f1");
    b.sync();
    a.sync();
    resolve_as(&mut a, ResolutionKind::RemoteWins);
    let s = a.sync();
    assert_eq!(s.deleted_local, 1);
    assert!(a.row("f1").deleted);
    assert_converged(&net, &[&a, &b]);
}

#[test]
fn keep_both_makes_a_new_file_from_the_local_content() {
    let mut net = Net::strict();
    let (mut a, mut b) = both_edit(&mut net);
    let out = resolve_as(&mut a, ResolutionKind::KeepBoth { variant: "a-copy".into() });
    let copy_id = out.new_stable_id.unwrap();
    a.sync();
    b.sync();
    for node in [&a, &b] {
        assert_eq!(node.content("f1").unwrap(), b"theirs");
        assert_eq!(node.content(&copy_id).unwrap(), b"mine");
        assert_eq!(node.row(&copy_id).meta.variant.as_deref(), Some("a-copy"));
    }
    assert_converged(&net, &[&a, &b]);
}

#[test]
fn resolutions_refuse_what_cannot_apply() {
    let mut net = Net::strict();
    let mut a = net.node("a", 0);
    a.add("f1", b"x");
    a.sync();
    let not_found =
        resolve(&mut a.io(), &Resolution { stable_id: "nope".into(), kind: ResolutionKind::LocalWins });
    assert_eq!(not_found.unwrap_err(), SyncError::NotFound("nope".into()));
    let calm = resolve(&mut a.io(), &Resolution { stable_id: "f1".into(), kind: ResolutionKind::RemoteWins });
    assert_eq!(calm.unwrap_err(), SyncError::NotInConflict("f1".into()));
    // keep_both needs local content.
    let mut b = net.node("b", 0);
    b.sync();
    a.delete("f1");
    b.edit("f1", b"y");
    b.sync();
    a.sync();
    let kb = Resolution { stable_id: "f1".into(), kind: ResolutionKind::KeepBoth { variant: "v".into() } };
    assert!(matches!(resolve(&mut a.io(), &kb), Err(SyncError::Invalid(_))));
    assert_eq!(a.row("f1").sync_status, SyncStatus::Conflict, "a refused resolution changes nothing");
}

/// SPEC §4 / issue 2: C edits a label and does not sync; A edits it and
/// syncs; B, whose clock is an hour behind, syncs, then edits it and syncs; C
/// syncs last. B's edit is the latest in real time and must win everywhere,
/// although its wall-clock stamp is older than C's.
#[test]
fn last_write_wins_by_hlc_not_by_wall_clock() {
    let mut net = Net::strict();
    let mut a = net.node("a", 0);
    let mut b = net.node("b", -HOUR_MS);
    let mut c = net.node("c", 0);
    a.add("f1", b"doc");
    a.sync();
    b.sync();
    c.sync();
    net.advance(60_000);
    c.set_label("f1", "C's label");
    net.advance(60_000);
    a.set_label("f1", "A's label");
    a.sync();
    net.advance(60_000);
    b.sync();
    assert_eq!(b.label("f1").as_deref(), Some("A's label"));
    net.advance(60_000);
    b.set_label("f1", "B's label");
    assert!(
        b.row("f1").local_modified_at_ms < c.row("f1").local_modified_at_ms,
        "B's wall clock is behind C's"
    );
    b.sync();
    net.advance(60_000);
    c.sync();
    a.sync();
    b.sync();
    for node in [&a, &b, &c] {
        assert_eq!(node.label("f1").as_deref(), Some("B's label"), "on {}", node.name);
    }
    assert_converged(&net, &[&a, &b, &c]);
}

#[test]
fn a_content_edit_and_a_later_metadata_edit_merge_without_conflict() {
    let mut net = Net::strict();
    let mut a = net.node("a", 0);
    let mut b = net.node("b", 0);
    a.add("f1", b"v1");
    a.sync();
    b.sync();
    a.edit("f1", b"v2");
    net.advance(1_000);
    b.set_label("f1", "relabelled");
    b.sync();
    let s = a.sync();
    assert_eq!(s.conflicts, 0);
    b.sync();
    for node in [&a, &b] {
        assert_eq!(node.content("f1").unwrap(), b"v2");
        assert_eq!(node.label("f1").as_deref(), Some("relabelled"));
    }
    assert_converged(&net, &[&a, &b]);
}

/// A metadata-only edit here and a *later* content-only edit there. Both
/// survive: the local row keeps its metadata base (`sync_meta`), so the
/// compare sees that only this side changed the metadata. (Without the base,
/// last-write-wins took the remote row's metadata, the base, and the label
/// edit was lost.)
#[test]
fn a_metadata_edit_and_a_later_content_edit_merge_without_losing_the_label() {
    let mut net = Net::strict();
    let mut a = net.node("a", 0);
    let mut b = net.node("b", 0);
    a.add("f1", b"v1");
    a.sync();
    b.sync();
    a.set_label("f1", "mine");
    net.advance(1_000);
    b.edit("f1", b"v2");
    b.sync();
    let s = a.sync();
    assert_eq!(s.conflicts, 0);
    b.sync();
    for node in [&a, &b] {
        assert_eq!(node.content("f1").unwrap(), b"v2");
        assert_eq!(node.label("f1").as_deref(), Some("mine"), "on {}", node.name);
    }
    assert_converged(&net, &[&a, &b]);
}
