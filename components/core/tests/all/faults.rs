//! Bad remote data, crashes, lost responses, rival commits, other epochs.

use davsync_core::history::{ChangeFile, FORMAT, Head};
use davsync_core::hlc::Hlc;
use davsync_core::mem::{Fault, ServerProfile};
use davsync_core::model::{BlobRef, ContentHash, RemoteRow, SyncStatus};
use davsync_core::ports::RemoteError;
use davsync_core::{SyncError, SyncOptions};

use crate::harness::{Net, Node, assert_converged, meta};

const PROFILES: [ServerProfile; 3] =
    [ServerProfile::Strict, ServerProfile::WeakEtagAfterWrite, ServerProfile::IgnoresConditionals];

/// What a stale or rogue writer does without the lease: commits a new file
/// straight into a change file and version.txt.
fn rival_commit(net: &Net, stable_id: &str) {
    let head = Head::parse(&net.remote.read("version.txt").unwrap()).unwrap();
    let v = head.version + 1;
    let content = format!("rival {stable_id}");
    let row = RemoteRow {
        stable_id: stable_id.into(),
        id: ContentHash::of(content.as_bytes()),
        meta: meta(stable_id),
        deleted: false,
        remote_version: v,
        updated_at: "2024-01-01T00:00:00.000Z".into(),
        hlc: Hlc { physical_ms: net.world.now_ms(), counter: 0, instance: "rival".into() },
    };
    net.remote.write_raw(&row.blob().unwrap().path(), content.as_bytes());
    let file = ChangeFile {
        format: FORMAT,
        epoch: head.epoch.clone().unwrap(),
        version: v,
        commit: format!("rival{v}"),
        parent_version: head.version,
        parent_commit: head.commit.clone(),
        rows: vec![row],
    };
    net.remote.write_raw(&file.own_path(), &file.to_bytes());
    let next = Head { version: v, commit: Some(file.commit), ..head };
    net.remote.write_raw("version.txt", next.to_text().as_bytes());
}

/// Everything that must stay as it was after a refused sync.
fn local_state(node: &Node) -> (String, Vec<String>) {
    (format!("{:?}{:?}", node.store.inner.rows, node.store.inner.meta), node.files.paths())
}

#[test]
fn the_mass_delete_guard_stops_and_force_overrides() {
    let mut net = Net::strict();
    let mut a = net.node("a", 0);
    let mut b = net.node("b", 0);
    for i in 0..12 {
        a.add(&format!("f{i}"), format!("c{i}").as_bytes());
    }
    a.sync();
    b.sync();
    for i in 0..11 {
        a.delete(&format!("f{i}"));
    }
    a.sync();
    let before = local_state(&b);
    let err = b.try_sync().unwrap_err();
    assert_eq!(err, SyncError::MassDelete { would_delete: 11, live_total: 12 });
    assert_eq!(local_state(&b), before, "nothing changed");
    b.opts.force = true;
    let s = b.sync();
    assert_eq!(s.deleted_local, 11);
    assert_converged(&net, &[&a, &b]);
}

#[test]
fn a_small_deletion_passes_the_guard() {
    let mut net = Net::strict();
    let mut a = net.node("a", 0);
    let mut b = net.node("b", 0);
    for i in 0..4 {
        a.add(&format!("f{i}"), format!("c{i}").as_bytes());
    }
    a.sync();
    b.sync();
    for i in 0..3 {
        a.delete(&format!("f{i}"));
    }
    a.sync();
    assert_eq!(b.sync().deleted_local, 3, "75% but only 3 files: under the 10-file floor");
}

fn assert_refused_without_change(net: &mut Net, bad: &[u8], what: &str) {
    let mut b = net.node("b", 0);
    b.add("f0", b"y");
    b.sync();
    // A first sync reads the whole remote (one that has synced reads only
    // the change files since; see the hostile-change-file tests).
    let mut a = net.node("a", 0);
    a.add("f1", b"x");
    net.remote.write_raw("metadata.db", bad);
    let remote_before = net.remote.files();
    let before = local_state(&a);
    let err = a.try_sync().unwrap_err();
    match &err {
        SyncError::RemoteCorrupt(msg) => assert!(msg.contains("metadata.db"), "{what}: {msg}"),
        other => panic!("{what}: {other:?}"),
    }
    assert_eq!(local_state(&a), before, "{what}: local changed");
    let after = net.remote.files();
    let data = |m: &std::collections::BTreeMap<String, davsync_core::mem::Entry>| {
        m.iter()
            .filter(|(p, _)| !p.starts_with("version.txt.lock"))
            .map(|(p, e)| (p.clone(), e.bytes.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(data(&after), data(&remote_before), "{what}: remote changed");
    assert!(!net.remote.exists("version.txt.lock"), "{what}: lock released");
}

#[test]
fn a_metadata_db_that_is_not_sqlite_is_refused_and_nothing_changes() {
    assert_refused_without_change(&mut Net::strict(), b"<html>502 Bad Gateway</html>", "not sqlite");
}

#[test]
fn a_truncated_metadata_db_is_refused() {
    let mut net = Net::strict();
    let mut seed = net.node("seed", 0);
    for i in 0..50 {
        seed.add(&format!("s{i}"), format!("{i}").repeat(50).as_bytes());
    }
    seed.sync();
    let full = net.remote.read("metadata.db").unwrap();
    assert_refused_without_change(&mut net, &full[..full.len() / 2], "truncated");
}

#[test]
fn a_metadata_db_with_the_wrong_schema_is_refused() {
    let mut conn = rusqlite::Connection::open_in_memory().unwrap();
    conn.execute_batch("CREATE TABLE stuff(a); INSERT INTO stuff VALUES (1);").unwrap();
    let bytes = conn.serialize(rusqlite::MAIN_DB).unwrap().to_vec();
    assert_refused_without_change(&mut Net::strict(), &bytes, "wrong schema");
}

#[test]
fn a_blob_whose_hash_does_not_match_is_never_accepted() {
    let mut net = Net::strict();
    let mut a = net.node("a", 0);
    let mut b = net.node("b", 0);
    let row = a.add("f1", b"genuine");
    a.add("f2", b"fine");
    a.sync();
    let path = row.blob().unwrap().path();
    net.remote.write_raw(&path, b"tampered");
    let s = b.sync();
    assert_eq!(s.errors, 1);
    assert_eq!(s.file_errors[0].stable_id, "f1");
    assert!(s.file_errors[0].message.contains("mismatch"), "{}", s.file_errors[0].message);
    assert!(b.store.inner.row("f1").is_none(), "no row without its content");
    assert!(!b.files.contains(&row.blob().unwrap()));
    assert_eq!(b.content("f2").unwrap(), b"fine", "the rest of the sync went on");
    // Once the blob is repaired the next sync fetches it (the quick check
    // does not skip: the version was not recorded).
    net.remote.write_raw(&path, b"genuine");
    let s = b.sync();
    assert!(!s.skipped);
    assert_eq!(b.content("f1").unwrap(), b"genuine");
    assert_converged(&net, &[&a, &b]);
}

#[test]
fn a_crash_between_metadata_upload_and_version_write_loses_nothing() {
    for profile in PROFILES {
        let mut net = Net::new(profile);
        let mut a = net.node("a", 0);
        let mut b = net.node("b", 0);
        a.add("f1", b"one");
        a.sync();
        b.sync();
        a.add("f2", b"two");
        a.set_label("f1", "relabelled");
        a.client.inject_on("PUT", "version.txt", 0, Fault::Crash);
        assert!(a.try_sync().is_err());
        assert_eq!(net.version_txt(), Some(1), "{profile:?}: version.txt not written");
        assert_eq!(a.row("f2").sync_status, SyncStatus::Modified, "local not marked synced");
        a.reconnect(&net);
        let s = a.sync();
        assert_eq!(s.conflicts, 0, "{profile:?}: our own half commit is not a rival");
        assert!(s.new_version >= 2, "{profile:?}: version.txt only grows");
        b.sync();
        assert_eq!(b.label("f1").as_deref(), Some("relabelled"));
        assert_converged(&net, &[&a, &b]);
    }
}

#[test]
fn a_lost_response_on_the_metadata_upload_is_survived() {
    for profile in PROFILES {
        let mut net = Net::new(profile);
        let mut a = net.node("a", 0);
        let mut b = net.node("b", 0);
        a.add("f1", b"one");
        a.sync();
        net.advance(5_000);
        a.add("f2", b"two");
        a.client.inject_on("PUT", "metadata.db", 0, Fault::LostResponse);
        let s = a.sync();
        assert_eq!(s.new_version, 2, "{profile:?}");
        b.sync();
        assert_converged(&net, &[&a, &b]);
    }
}

#[test]
fn a_rival_commit_is_fenced_off_and_merged_never_overwritten() {
    for profile in PROFILES {
        let mut net = Net::new(profile);
        let mut a = net.node("a", 0);
        a.add("f1", b"one");
        a.sync();
        a.add("f2", b"two");
        // The rival commits after a downloaded metadata.db, before a commits.
        let rival_net = (net.remote.clone(), net.world.clone());
        a.client.before("PROPFIND", ".pdf", move |_, _| {
            let net = Net::from_parts(rival_net.0.clone(), rival_net.1.clone());
            rival_commit(&net, "r1");
        });
        let s = a.sync();
        let rows = net.remote_rows();
        assert!(rows.iter().any(|r| r.stable_id == "r1"), "{profile:?}: rival commit kept");
        assert!(rows.iter().any(|r| r.stable_id == "f2"), "{profile:?}: our commit landed");
        assert_eq!(s.new_version, 3, "{profile:?}: 1 (a), 2 (rival, which fenced off a's first try), 3 (a)");
        let mut b = net.node("b", 0);
        b.sync();
        assert_converged(&net, &[&a, &b]);
    }
}

#[test]
fn if_match_catches_a_commit_between_fence_and_upload_where_honoured() {
    for profile in [ServerProfile::Strict, ServerProfile::WeakEtagAfterWrite] {
        let mut net = Net::new(profile);
        let mut a = net.node("a", 0);
        a.add("f1", b"one");
        a.sync();
        net.advance(5_000);
        a.add("f2", b"two");
        let parts = (net.remote.clone(), net.world.clone());
        a.client.before("PUT", "changes/", move |_, _| {
            rival_commit(&Net::from_parts(parts.0.clone(), parts.1.clone()), "r1");
        });
        a.sync();
        let rows = net.remote_rows();
        assert!(rows.iter().any(|r| r.stable_id == "r1"), "{profile:?}: rival commit kept");
        assert!(rows.iter().any(|r| r.stable_id == "f2"), "{profile:?}");
    }
}

#[test]
fn a_weak_etag_right_after_a_commit_does_not_block_the_next_one() {
    let mut net = Net::new(ServerProfile::WeakEtagAfterWrite);
    let mut a = net.node("a", 0);
    let mut b = net.node("b", 0);
    a.add("f1", b"one");
    a.sync();
    b.add("f2", b"two");
    let s = b.sync(); // no time passes: metadata.db's ETag is still weak
    assert_eq!(s.new_version, 2);
    let log = net.remote.op_log();
    let puts = log.iter().filter(|l| *l == "PUT version.txt").count();
    // a's commit and b's: b saw a weak ETag at its fence, waited for it to
    // turn strong and fenced again, then wrote with `If-Match` (a write
    // without a condition would leave a stalled holder free to set the
    // counter back), so nothing was refused.
    assert_eq!(puts, 2, "{log:?}");
    let fences = log.iter().filter(|l| *l == "GET version.txt").count();
    assert!(fences >= 3, "b fenced again after waiting: {log:?}");
    a.sync();
    assert_converged(&net, &[&a, &b]);
}

#[test]
fn a_crash_or_lost_response_at_any_remote_operation_loses_nothing() {
    for fault in [Fault::Crash, Fault::LostResponse, Fault::Fail(RemoteError::Unavailable("reset".into()))] {
        for k in 0..40 {
            let mut net = Net::strict();
            let mut a = net.node("a", 0);
            let mut b = net.node("b", 0);
            a.add("f1", b"one");
            a.add("f2", b"two");
            a.sync();
            b.sync();
            a.edit("f1", b"one v2");
            a.delete("f2");
            a.add("f3", b"three");
            b.set_label("f1", "b's label");
            b.sync();
            net.advance(2_000);
            let base = a.client.inner.ops();
            a.client.inner.inject(base + k, fault.clone());
            a.opts.remote_retries_max = 0;
            let _ = a.try_sync();
            a.reconnect(&net);
            a.opts = SyncOptions { host_name: "a-host".into(), ..SyncOptions::default() };
            net.advance(200_000); // a crashed holder's lease expires
            a.sync();
            b.sync();
            a.sync();
            assert_converged(&net, &[&a, &b]);
            assert_eq!(b.content("f1").unwrap(), b"one v2", "fault {fault:?} at op {k}");
            assert_eq!(b.label("f1").as_deref(), Some("b's label"), "fault {fault:?} at op {k}");
            assert!(b.row("f2").deleted, "fault {fault:?} at op {k}");
            assert_eq!(b.content("f3").unwrap(), b"three", "fault {fault:?} at op {k}");
        }
    }
}

/// The seed's migration path: the first instance of a database whose rows
/// are all `synced` against an earlier remote populates the new one.
fn app_db_synced_against_an_old_remote(net: &mut Net) -> Node {
    let mut a = net.node("a", 0);
    for i in 0..3 {
        a.add(&format!("f{i}"), format!("old {i}").as_bytes());
    }
    for row in a.store.inner.rows.values_mut() {
        row.sync_status = SyncStatus::Synced;
        row.remote_version = Some(7);
        row.sync_hash = Some(row.id.clone());
    }
    a.store.inner.meta.insert("remote_version".into(), "7".into());
    a.store.inner.meta.insert("remote_epoch".into(), "eold".into());
    a
}

#[test]
fn synced_rows_meeting_an_empty_remote_are_uploaded_never_deleted() {
    let mut net = Net::strict();
    let mut a = app_db_synced_against_an_old_remote(&mut net);
    let s = a.sync();
    assert!(s.epoch_changed);
    assert_eq!((s.uploaded, s.deleted_local), (3, 0));
    assert_eq!(net.remote_rows().len(), 3);
    let mut b = net.node("b", 0);
    b.sync();
    assert_converged(&net, &[&a, &b]);
}

#[test]
fn synced_rows_meeting_another_epoch_are_offered_and_its_tombstones_not_obeyed() {
    let mut net = Net::strict();
    let mut other = net.node("other", 0);
    other.add("f0", b"old 0");
    other.add("x", b"theirs");
    other.sync();
    other.delete("f0");
    other.sync();
    let mut a = app_db_synced_against_an_old_remote(&mut net);
    let s = a.sync();
    assert!(s.epoch_changed);
    assert_eq!(s.deleted_local, 0);
    assert!(!a.row("f0").deleted, "a tombstone from another epoch deletes nothing");
    assert_eq!(a.row("f0").sync_status, SyncStatus::Conflict, "the user decides");
    assert!(net.remote_rows().iter().any(|r| r.stable_id == "f1" && !r.deleted));
    assert_eq!(a.content("x").unwrap(), b"theirs");
}

#[test]
fn a_remote_restored_from_an_older_copy_is_repaired() {
    let mut net = Net::strict();
    let mut a = net.node("a", 0);
    let mut b = net.node("b", 0);
    a.add("f1", b"one");
    a.sync();
    b.sync();
    let backup = net.remote.snapshot();
    a.add("f2", b"two");
    a.sync();
    b.set_label("f1", "b's");
    b.sync();
    a.sync();
    let v_before = net.version_txt().unwrap();
    net.remote.restore(backup);
    assert!(net.version_txt().unwrap() < v_before);
    a.sync();
    assert!(net.version_txt().unwrap() > v_before, "commits go past every version seen");
    b.sync();
    a.sync();
    let mut c = net.node("c", 0);
    c.sync();
    assert_eq!(c.content("f2").unwrap(), b"two");
    assert_eq!(c.label("f1").as_deref(), Some("b's"));
    assert_converged(&net, &[&a, &b, &c]);
}

#[test]
fn an_oversized_blob_is_refused() {
    let mut net = Net::strict();
    let mut a = net.node("a", 0);
    let mut b = net.node("b", 0);
    a.add("big", &[7u8; 4096]);
    a.sync();
    b.opts.blob_bytes_max = 1024;
    let s = b.sync();
    assert_eq!(s.errors, 1);
    assert!(b.store.inner.row("big").is_none());
    let blob = BlobRef::new(ContentHash::of(&[7u8; 4096]), "pdf").unwrap();
    assert!(!b.files.contains(&blob));
}
