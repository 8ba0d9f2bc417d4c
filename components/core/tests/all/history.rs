//! Remote format 2 (issue 17): a synced instance reads only the change files
//! since its own commit, the history is folded into `metadata.db` now and
//! then, a format-1 remote is upgraded in place, a newer format is refused,
//! a replaced commit is noticed, and hostile change files are refused without
//! changing anything.

use davsync_core::history::{ChangeFile, FOLD_COMMITS, FORMAT, Head};
use davsync_core::hlc::Hlc;
use davsync_core::model::{ContentHash, RemoteRow};
use davsync_core::ports::RemoteTransport;
use davsync_core::{SyncError, status};

use crate::harness::{Net, Node, assert_converged, assert_refused, local_state, meta, remote_data};

fn head(net: &Net) -> Head {
    Head::parse(&net.remote.read("version.txt").expect("version.txt")).expect("a valid version.txt")
}

/// The requests the server handled since `from` (an index into its op log).
fn ops_since(net: &Net, from: usize) -> Vec<String> {
    net.remote.op_log()[from..].to_vec()
}

/// `a` and `b` hold f1 and f2, synced.
fn two_synced(net: &mut Net) -> (Node, Node) {
    let mut a = net.node("a", 0);
    let mut b = net.node("b", 0);
    a.add("f1", b"one");
    a.add("f2", b"two");
    a.sync();
    b.sync();
    (a, b)
}

#[test]
fn a_synced_instance_reads_and_writes_only_change_files() {
    let mut net = Net::strict();
    let (mut a, mut b) = two_synced(&mut net);
    let from = net.remote.op_count();
    a.set_label("f1", "relabelled");
    let s = a.sync();
    assert_eq!((s.new_version, s.metadata_synced), (2, 1));
    let ops = ops_since(&net, from);
    assert!(!ops.iter().any(|o| o.ends_with("metadata.db")), "a one-edit sync touched metadata.db: {ops:?}");
    let h = head(&net);
    let change = format!("PUT {}", ChangeFile::path(2, h.commit.as_deref().unwrap()));
    assert!(ops.contains(&change), "{ops:?}");
    assert_eq!((h.version, h.checkpoint), (2, 1));

    let from = net.remote.op_count();
    let s = b.sync();
    assert_eq!(s.metadata_synced, 1);
    let ops = ops_since(&net, from);
    assert!(!ops.iter().any(|o| o.ends_with("metadata.db")), "{ops:?}");
    assert_eq!(ops.iter().filter(|o| o.starts_with("GET changes/")).count(), 1, "{ops:?}");
    assert_eq!(b.label("f1").as_deref(), Some("relabelled"));
    assert_converged(&net, &[&a, &b]);
}

#[test]
fn the_history_is_folded_and_a_new_instance_starts_from_the_checkpoint() {
    let mut net = Net::strict();
    let (mut a, mut b) = two_synced(&mut net);
    let commits = i64::from(FOLD_COMMITS) + 5;
    for i in 0..commits {
        a.set_label("f1", &format!("edit {i}"));
        a.sync();
    }
    let h = head(&net);
    assert_eq!(h.version, 1 + commits);
    assert!(h.checkpoint > 1, "folded: {h:?}");
    assert_eq!(net.remote_db().version(), h.version, "the whole state is at the head");
    let checkpoint = davsync_core::remote_db::RemoteDb::from_bytes(&net.remote.read("metadata.db").unwrap());
    assert_eq!(
        checkpoint.unwrap().version(),
        h.checkpoint,
        "metadata.db is the checkpoint version.txt names"
    );
    // b last synced before the checkpoint: it reads it whole.
    let from = net.remote.op_count();
    b.sync();
    assert!(ops_since(&net, from).contains(&"GET metadata.db".to_owned()));
    let mut c = net.node("c", 0);
    c.sync();
    assert_eq!(c.label("f1").as_deref(), Some(&*format!("edit {}", commits - 1)));
    assert_converged(&net, &[&a, &b, &c]);
}

#[test]
fn a_sync_a_few_commits_behind_reads_the_change_files_across_a_fold() {
    let mut net = Net::strict();
    let (mut a, mut b) = two_synced(&mut net);
    let mut c = net.node("c", 0);
    c.sync();
    for i in 0..FOLD_COMMITS {
        a.set_label("f1", &format!("edit {i}"));
        a.sync();
    }
    let h = head(&net);
    assert!(h.checkpoint > 1 && h.version - 1 <= i64::from(FOLD_COMMITS), "folded past b: {h:?}");
    // b last synced at version 1, below the checkpoint but one fold's worth
    // of commits back: it reads those change files, not the checkpoint.
    let from = net.remote.op_count();
    b.sync();
    let ops = ops_since(&net, from);
    assert!(!ops.iter().any(|o| o.ends_with("metadata.db")), "{ops:?}");
    assert_eq!(ops.iter().filter(|o| o.starts_with("GET changes/")).count() as i64, h.version - 1, "{ops:?}");
    assert_eq!(b.label("f1").as_deref(), Some(&*format!("edit {}", FOLD_COMMITS - 1)));
    // Once gc has deleted the folded change files, c (as far behind) reads
    // the checkpoint instead.
    net.advance(3_600_001);
    assert!(!run_gc(&net, 3_600_000).deleted.is_empty());
    let from = net.remote.op_count();
    c.sync();
    assert!(ops_since(&net, from).contains(&"GET metadata.db".to_owned()));
    assert_converged(&net, &[&a, &b, &c]);
}

#[test]
fn a_format_1_remote_is_upgraded_in_place_and_nothing_is_lost() {
    let mut net = Net::strict();
    let (mut a, mut b) = two_synced(&mut net);
    // Make it what format 1 wrote: schema 1 without a commit id, a bare number.
    let bytes = net.remote.read("metadata.db").unwrap();
    let mut c = rusqlite::Connection::open_in_memory().unwrap();
    c.deserialize_read_exact(rusqlite::MAIN_DB, &bytes[..], bytes.len(), false).unwrap();
    c.execute_batch(
        "UPDATE sync_metadata SET value = '1' WHERE key = 'schema_version';
         DELETE FROM sync_metadata WHERE key = 'commit';",
    )
    .unwrap();
    net.remote.write_raw("metadata.db", &c.serialize(rusqlite::MAIN_DB).unwrap());
    net.remote.write_raw("version.txt", b"1\n");
    let before = net.remote_rows();

    let mut fresh = net.node("fresh", 0);
    fresh.sync();
    a.set_label("f1", "after the upgrade");
    a.add("f3", b"three");
    assert_eq!(a.sync().new_version, 2);
    let h = head(&net);
    assert_eq!((h.format, h.version, h.checkpoint), (FORMAT, 2, 1), "format 2 from the first commit on");
    let rows = net.remote_rows();
    for row in &before {
        assert!(rows.iter().any(|r| r.stable_id == row.stable_id), "{} lost", row.stable_id);
    }
    b.sync();
    fresh.sync();
    assert_eq!(b.label("f1").as_deref(), Some("after the upgrade"));
    assert_converged(&net, &[&a, &b, &fresh]);
}

#[test]
fn a_remote_in_a_newer_format_is_refused_and_nothing_changes() {
    let mut net = Net::strict();
    let (_a, mut b) = two_synced(&mut net);
    b.set_label("f2", "pending");
    let text = head(&net).to_text().replace("format 2", "format 3");
    net.remote.write_raw("version.txt", text.as_bytes());
    let (local_before, remote_before) = (local_state(&b), remote_data(&net));
    let err = b.try_sync().unwrap_err();
    assert_eq!(err, SyncError::RemoteTooNew { format: 3, supported: FORMAT });
    assert!(err.to_string().contains("upgrade davsync"), "{err}");
    assert_eq!(status(&mut b.io(), 0).unwrap_err(), err);
    assert!(local_state(&b) == local_before && remote_data(&net) == remote_before);
}

/// A rival's commit at the version `a` just committed, with another id:
/// what a stale lease holder on a server without conditional writes can do.
fn replace_last_commit(net: &Net, stable_id: &str) {
    let old = head(net);
    let row = RemoteRow {
        stable_id: stable_id.into(),
        id: ContentHash::of(b"stale"),
        meta: meta(stable_id),
        deleted: false,
        remote_version: old.version,
        updated_at: "2024-01-01T00:00:00.000Z".into(),
        hlc: Hlc { physical_ms: net.world.now_ms(), counter: 0, instance: "stale".into() },
    };
    net.remote.write_raw(&row.blob().unwrap().path(), b"stale");
    let state = net.remote_db();
    let parent = state.version() - 1;
    // The parent is the commit before the replaced one.
    let parent_commit = {
        let replaced = ChangeFile::path(old.version, old.commit.as_deref().unwrap());
        let file: ChangeFile = serde_json::from_slice(&net.remote.read(&replaced).unwrap()).unwrap();
        assert_eq!(file.parent_version, parent);
        file.parent_commit
    };
    let file = ChangeFile {
        format: FORMAT,
        epoch: old.epoch.clone().unwrap(),
        version: old.version,
        commit: "stale".into(),
        parent_version: parent,
        parent_commit,
        rows: vec![row],
    };
    net.remote.write_raw(&file.own_path(), &file.to_bytes());
    let next = Head { commit: Some("stale".into()), ..old };
    net.remote.write_raw("version.txt", next.to_text().as_bytes());
}

#[test]
fn a_commit_a_stale_writer_replaced_is_noticed_and_published_again() {
    let mut net = Net::strict();
    let (mut a, mut b) = two_synced(&mut net);
    a.add("x", b"mine");
    a.sync();
    b.sync();
    replace_last_commit(&net, "s");
    assert!(!net.remote_rows().iter().any(|r| r.stable_id == "x"), "the replaced commit is off the chain");
    // Same version number, another commit: neither quick check skips.
    assert!(status(&mut a.io(), 0).unwrap().needs_sync);
    let s = a.sync();
    assert!(!s.skipped);
    assert!(net.remote_rows().iter().any(|r| r.stable_id == "x"), "published again");
    b.sync();
    assert_converged(&net, &[&a, &b]);
    assert_eq!(b.content("s").as_deref(), Some(&b"stale"[..]));
}

/// `b` is synced and has a pending edit; `a` then committed a label edit:
/// `b`'s next sync reads exactly that change file, which the test breaks.
fn with_one_change_file(net: &mut Net) -> (Node, String) {
    let (mut a, mut b) = two_synced(net);
    b.set_label("f2", "b's pending edit");
    a.set_label("f1", "a's edit");
    a.sync();
    let h = head(net);
    (b, ChangeFile::path(h.version, h.commit.as_deref().unwrap()))
}

#[test]
fn a_hostile_or_broken_change_file_is_refused_and_nothing_changes() {
    let edit = |bytes: &[u8], f: &dyn Fn(&mut serde_json::Value)| {
        let mut v: serde_json::Value = serde_json::from_slice(bytes).unwrap();
        f(&mut v);
        serde_json::to_vec(&v).unwrap()
    };
    type Tamper = Box<dyn Fn(&[u8]) -> Vec<u8>>;
    let cases: Vec<(&str, Tamper, &[&str])> = vec![
        ("garbage", Box::new(|_| b"\x00\xffnot json".to_vec()), &["is not a change file"]),
        ("truncated", Box::new(|b| b[..b.len() / 2].to_vec()), &["is not a change file"]),
        ("empty", Box::new(|_| Vec::new()), &["is not a change file"]),
        (
            "a path for an id",
            Box::new(move |b| edit(b, &|v| v["rows"][0]["stable_id"] = "../../etc/passwd".into())),
            &["stable_id"],
        ),
        (
            "another version inside",
            Box::new(move |b| edit(b, &|v| v["version"] = 99.into())),
            &["names commit"],
        ),
        (
            "a parent after it (out of order)",
            Box::new(move |b| edit(b, &|v| v["parent_version"] = 50.into())),
            &["parent version"],
        ),
        (
            "a row of another version",
            Box::new(move |b| edit(b, &|v| v["rows"][0]["remote_version"] = 1.into())),
            &["remote_version"],
        ),
        ("another epoch", Box::new(move |b| edit(b, &|v| v["epoch"] = "e0".into())), &["epoch"]),
        (
            "an unknown field",
            Box::new(move |b| edit(b, &|v| v["sql"] = "DROP TABLE".into())),
            &["unknown field"],
        ),
        (
            "a row twice",
            Box::new(move |b| {
                edit(b, &|v| {
                    let row = v["rows"][0].clone();
                    v["rows"].as_array_mut().unwrap().push(row);
                })
            }),
            &["twice"],
        ),
    ];
    for (what, tamper, needles) in cases {
        let mut net = Net::strict();
        let (mut b, path) = with_one_change_file(&mut net);
        let bytes = net.remote.read(&path).unwrap();
        net.remote.write_raw(&path, &tamper(&bytes));
        let mut with_path = vec![path.as_str()];
        with_path.extend_from_slice(needles);
        eprintln!("case: {what}");
        assert_refused(&net, &mut b, &with_path);
    }
}

#[test]
fn a_missing_or_oversized_change_file_is_refused_and_nothing_changes() {
    let mut net = Net::strict();
    let (mut b, path) = with_one_change_file(&mut net);
    net.remote.server_mut().delete(&path).unwrap();
    assert_refused(&net, &mut b, &[&path, "missing"]);

    let mut net = Net::strict();
    let (mut b, path) = with_one_change_file(&mut net);
    let mut bytes = net.remote.read(&path).unwrap();
    bytes.resize(bytes.len() + 4096, b' ');
    net.remote.write_raw(&path, &bytes);
    b.opts.metadata_bytes_max = 2048;
    assert_refused(&net, &mut b, &[&path, "larger than 2048 bytes"]);
}

/// Runs gc against `net` with the given grace period.
fn run_gc(net: &Net, grace_ms: u64) -> davsync_core::maintenance::GcReport {
    use davsync_core::maintenance::{MaintenanceIo, MaintenanceOptions, gc};
    use davsync_core::mem::{LocalFiles, MemBlobs, MemRemoteClient, SeededRandom, SimClock};
    let mut client = MemRemoteClient::new(net.remote.clone());
    let mut hasher = MemBlobs::new(LocalFiles::new(), client.clone());
    let (mut clock, mut random) = (SimClock::new(net.world.clone(), 0), SeededRandom::new(99));
    let mut io =
        MaintenanceIo { remote: &mut client, hasher: &mut hasher, clock: &mut clock, random: &mut random };
    let opts = MaintenanceOptions { gc_grace_ms: grace_ms, lock_wait_ms: 0, ..MaintenanceOptions::default() };
    gc(&mut io, &opts).expect("gc runs")
}

#[test]
fn gc_deletes_change_files_no_reader_needs_once_they_are_old() {
    let mut net = Net::strict();
    let (mut a, mut b) = two_synced(&mut net);
    for i in 0..FOLD_COMMITS + 3 {
        a.set_label("f1", &format!("edit {i}"));
        a.sync();
    }
    let changes = |net: &Net| -> Vec<String> {
        net.remote.files().into_keys().filter(|p| p.starts_with("changes/")).collect()
    };
    // A commit that crashed before version.txt: its change file is off the chain.
    a.set_label("f2", "crashed");
    let before_crash = changes(&net);
    a.client.inject_on("PUT", "version.txt", 0, davsync_core::mem::Fault::Crash);
    assert!(a.try_sync().is_err());
    let crashed: Vec<String> = changes(&net).into_iter().filter(|p| !before_crash.contains(p)).collect();
    assert_eq!(crashed.len(), 1, "{crashed:?}");
    a.reconnect(&net);
    a.sync(); // commits the label again, under another id
    let checkpoint = head(&net).checkpoint;
    let before = changes(&net);
    assert_eq!(run_gc(&net, 3_600_000).deleted, Vec::<String>::new(), "nothing is old enough yet");
    net.advance(3_600_001);
    let report = run_gc(&net, 3_600_000);
    let version_of = |p: &str| p["changes/".len()..].split('-').next().unwrap().parse::<i64>().unwrap();
    let kept = changes(&net);
    assert!(report.deleted.iter().all(|p| p.starts_with("changes/")), "{report:?}");
    assert!(report.deleted.iter().all(|p| version_of(p) <= checkpoint), "{report:?}");
    assert!(
        report.deleted.iter().filter(|p| version_of(p) <= checkpoint).count() >= (checkpoint - 1) as usize
    );
    // The crashed commit's file is above the checkpoint: a writer stalled
    // past its lease could still name it in version.txt on a server that
    // ignores conditional writes, so it stays until a fold passes it.
    assert!(version_of(&crashed[0]) > checkpoint && kept.contains(&crashed[0]), "{kept:?}");
    assert!(kept.iter().all(|p| version_of(p) > checkpoint), "{kept:?}");
    assert_eq!(before.len(), kept.len() + report.deleted.len());
    assert_eq!(report.version_after, None, "no commit: no state changed");
    for i in 0..FOLD_COMMITS {
        a.set_label("f1", &format!("later edit {i}"));
        a.sync();
    }
    assert!(head(&net).checkpoint >= version_of(&crashed[0]), "a fold passed it");
    net.advance(3_600_001);
    let report = run_gc(&net, 3_600_000);
    assert!(report.deleted.contains(&crashed[0]), "{report:?}");
    // Everyone still syncs: b from the checkpoint, a fresh instance too.
    a.sync();
    b.sync();
    let mut c = net.node("c", 0);
    c.sync();
    assert_eq!(c.label("f2").as_deref(), Some("crashed"));
    assert_converged(&net, &[&a, &b, &c]);
}
