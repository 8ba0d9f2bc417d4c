//! Status, upload, download, deletions, metadata, convergence.

use davsync_core::mem::Fault;
use davsync_core::model::{ContentHash, SyncStatus};
use davsync_core::ports::RemoteError;
use davsync_core::{SyncError, status};

use crate::harness::{Net, assert_converged, blob_ops};

#[test]
fn status_after_a_sync_with_no_changes_needs_nothing() {
    let mut net = Net::strict();
    let mut a = net.node("a", 0);
    a.add("f1", b"pdf one");
    a.sync();
    let s = status(&mut a.io(), 0).unwrap();
    assert!(!s.needs_sync);
    assert_eq!(s.unsynced_count, 0);
    assert_eq!(s.local_version, s.remote_version);
    assert!(s.last_sync_time.is_some());
}

#[test]
fn status_counts_unsynced_rows() {
    let mut net = Net::strict();
    let mut a = net.node("a", 0);
    a.add("f1", b"one");
    a.sync();
    a.set_label("f1", "new");
    a.add("f2", b"two");
    let s = status(&mut a.io(), 0).unwrap();
    assert!(s.needs_sync);
    assert_eq!(s.unsynced_count, 2);
}

#[test]
fn status_sees_a_version_mismatch() {
    let mut net = Net::strict();
    let mut a = net.node("a", 0);
    let mut b = net.node("b", 0);
    a.sync();
    b.sync();
    b.add("f1", b"from b");
    b.sync();
    let s = status(&mut a.io(), 0).unwrap();
    assert!(s.needs_sync);
    assert_eq!(s.unsynced_count, 0);
    assert_eq!(s.remote_version, Some(s.local_version.unwrap() + 1));
}

#[test]
fn status_and_sync_fail_when_the_remote_is_unreachable() {
    let mut net = Net::strict();
    let mut a = net.node("a", 0);
    a.sync();
    for i in 0..10 {
        a.client
            .inner
            .inject(a.client.inner.ops() + i, Fault::Fail(RemoteError::Unavailable("refused".into())));
    }
    let err = status(&mut a.io(), 2).unwrap_err();
    assert!(matches!(err, SyncError::Remote(RemoteError::Unavailable(_))), "{err:?}");
    let err = a.try_sync().unwrap_err();
    assert!(matches!(err, SyncError::Remote(RemoteError::Unavailable(_))), "{err:?}");
}

#[test]
fn an_immediate_second_sync_is_skipped_with_one_request() {
    let mut net = Net::strict();
    let mut a = net.node("a", 0);
    a.add("f1", b"one");
    a.sync();
    let before = net.remote.op_count();
    let s = a.sync();
    assert!(s.skipped);
    assert_eq!(net.remote.op_count() - before, 1, "only version.txt is read");
}

#[test]
fn a_missing_remote_is_created_with_a_new_epoch() {
    let mut net = Net::strict();
    let mut a = net.node("a", 0);
    let s = a.sync();
    assert_eq!(s.new_version, 1);
    assert_eq!(net.version_txt(), Some(1));
    let db = net.remote_db();
    assert_eq!(db.version(), 1);
    assert!(db.epoch().starts_with('e'));
    assert_eq!(a.store.inner.meta.get("remote_epoch").map(String::as_str), Some(db.epoch()));
    assert!(!net.remote.exists("version.txt.lock"), "lock released");
}

#[test]
fn a_new_file_is_uploaded_to_its_content_path() {
    let mut net = Net::strict();
    let mut a = net.node("a", 0);
    let row = a.add("f1", b"%PDF-1.7 hello");
    let s = a.sync();
    assert_eq!((s.uploaded, s.downloaded), (1, 0));
    let path = row.blob().unwrap().path();
    assert!(path.starts_with(&row.id.as_str()[..2]));
    assert_eq!(net.remote.read(&path).unwrap(), b"%PDF-1.7 hello");
    let remote = net.remote_row("f1");
    assert_eq!(remote.id, row.id);
    assert_eq!(remote.remote_version, 1);
    let local = a.row("f1");
    assert_eq!(local.sync_status, SyncStatus::Synced);
    assert_eq!(local.remote_version, Some(1));
    assert_eq!(local.sync_hash, Some(row.id));
    assert!(net.remote.files().keys().all(|p| !p.starts_with(".davsync-tmp")), "no temp files left");
}

#[test]
fn a_remote_file_is_downloaded_and_verified() {
    let mut net = Net::strict();
    let mut a = net.node("a", 0);
    let mut b = net.node("b", 0);
    a.add("f1", b"bytes from a");
    a.sync();
    let s = b.sync();
    assert_eq!((s.uploaded, s.downloaded), (0, 1));
    assert_eq!(b.content("f1").unwrap(), b"bytes from a");
    assert_eq!(b.row("f1").id, ContentHash::of(b"bytes from a"));
    assert_eq!(b.row("f1").sync_status, SyncStatus::Synced);
    assert_converged(&net, &[&a, &b]);
}

#[test]
fn a_local_deletion_becomes_a_tombstone_and_reaches_the_other_side() {
    let mut net = Net::strict();
    let mut a = net.node("a", 0);
    let mut b = net.node("b", 0);
    let row = a.add("f1", b"doomed");
    a.sync();
    b.sync();
    assert!(b.content("f1").is_some());
    a.delete("f1");
    let s = a.sync();
    assert_eq!(s.deleted_remote, 1);
    let tomb = net.remote_row("f1");
    assert!(tomb.deleted, "tombstone, not a missing row");
    assert!(net.remote.files().keys().all(|p| !p.ends_with(".deleted")), "no marker files");
    let s = b.sync();
    assert_eq!(s.deleted_local, 1);
    assert!(b.row("f1").deleted);
    assert_eq!(b.row("f1").sync_status, SyncStatus::DeletionSynced);
    assert!(!b.files.contains(&row.blob().unwrap()), "blob removed locally");
    assert_converged(&net, &[&a, &b]);
}

#[test]
fn a_metadata_only_change_moves_no_blob() {
    let mut net = Net::strict();
    let mut a = net.node("a", 0);
    let mut b = net.node("b", 0);
    a.add("f1", b"content");
    a.sync();
    b.sync();
    b.set_label("f1", "gold");
    let mark = net.remote.op_count();
    a.progress.events.clear();
    b.progress.events.clear();
    let s = b.sync();
    assert_eq!((s.uploaded, s.downloaded, s.metadata_synced), (0, 0, 1));
    let s = a.sync();
    assert_eq!((s.uploaded, s.downloaded, s.metadata_synced), (0, 0, 1));
    let log = net.remote.op_log();
    assert_eq!(blob_ops(&log[mark..]), Vec::<String>::new());
    let said_upload =
        b.progress.events.iter().chain(&a.progress.events).any(|e| e.message.starts_with("uploading"));
    assert!(!said_upload, "progress claims an upload that did not happen");
    assert_eq!(a.label("f1").as_deref(), Some("gold"));
}

#[test]
fn a_collection_change_syncs() {
    let mut net = Net::strict();
    let mut a = net.node("a", 0);
    let mut b = net.node("b", 0);
    a.add("f1", b"content");
    a.sync();
    b.sync();
    a.set_collections("f1", r#"["corpus1","gold_subset"]"#);
    a.sync();
    b.sync();
    assert_eq!(b.row("f1").meta.doc_collections, r#"["corpus1","gold_subset"]"#);
    assert_converged(&net, &[&a, &b]);
}

#[test]
fn a_content_edit_keeps_the_stable_id() {
    let mut net = Net::strict();
    let mut a = net.node("a", 0);
    let mut b = net.node("b", 0);
    a.add("f1", b"v1");
    a.sync();
    b.sync();
    a.edit("f1", b"v2");
    let s = a.sync();
    assert_eq!(s.uploaded, 1);
    let s = b.sync();
    assert_eq!(s.downloaded, 1);
    assert_eq!(b.content("f1").unwrap(), b"v2");
    assert_eq!(net.remote_rows().len(), 1, "still one logical file");
    assert_converged(&net, &[&a, &b]);
}

#[test]
fn two_files_with_identical_content_share_one_blob() {
    let mut net = Net::strict();
    let mut a = net.node("a", 0);
    let mut b = net.node("b", 0);
    a.add("f1", b"same bytes");
    a.add("f2", b"same bytes");
    let s = a.sync();
    assert_eq!(s.uploaded, 1);
    let s = b.sync();
    assert_eq!(s.downloaded, 1);
    // Deleting one keeps the blob for the other.
    a.delete("f1");
    a.sync();
    b.sync();
    assert!(b.row("f1").deleted);
    assert_eq!(b.content("f2").unwrap(), b"same bytes");
    assert_converged(&net, &[&a, &b]);
}

#[test]
fn progress_is_reported_in_order_up_to_100() {
    let mut net = Net::strict();
    let mut a = net.node("a", 0);
    a.add("f1", b"x");
    a.sync();
    let pct: Vec<u8> = a.progress.events.iter().map(|e| e.percent).collect();
    assert!(pct.windows(2).all(|w| w[0] <= w[1]), "{pct:?}");
    assert_eq!(pct.last(), Some(&100));
    assert!(a.progress.events.iter().any(|e| e.message.contains("uploading")));
}

#[test]
fn three_instances_converge_after_interleaved_edits() {
    let mut net = Net::strict();
    let mut a = net.node("a", 0);
    let mut b = net.node("b", 0);
    let mut c = net.node("c", 0);
    a.add("a1", b"a1");
    b.add("b1", b"b1");
    c.add("c1", b"c1");
    a.sync();
    b.sync();
    c.sync();
    a.sync();
    b.sync();
    a.set_label("b1", "touched by a");
    b.delete("a1");
    c.edit("c1", b"c1 v2");
    net.advance(1000);
    c.sync();
    a.sync();
    b.sync();
    c.sync();
    a.sync();
    assert_converged(&net, &[&a, &b, &c]);
    assert_eq!(c.label("b1").as_deref(), Some("touched by a"));
    assert!(c.row("a1").deleted);
    assert_eq!(a.content("c1").unwrap(), b"c1 v2");
}

#[test]
fn an_app_edit_during_the_sync_is_not_overwritten() {
    let mut net = Net::strict();
    let mut a = net.node("a", 0);
    let mut b = net.node("b", 0);
    a.add("f1", b"x");
    a.sync();
    b.sync();
    b.set_label("f1", "from b");
    b.sync();
    a.set_label("f1", "a first");
    // The app edits the row again while the sync runs.
    a.store.before_apply = Some(Box::new(|s| {
        s.app_set_meta("f1", |m| m.label = Some("a second".into()), super::harness::T0 + 99_999).unwrap();
    }));
    a.sync();
    assert_eq!(a.label("f1").as_deref(), Some("a second"));
    assert_eq!(a.row("f1").sync_status, SyncStatus::Modified, "still to be pushed");
    a.sync();
    b.sync();
    assert_eq!(b.label("f1").as_deref(), Some("a second"));
    assert_converged(&net, &[&a, &b]);
}
