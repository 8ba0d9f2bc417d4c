//! The bad-input matrix of issue 8, remote side: a hostile or broken
//! `metadata.db`, `version.txt`, lock and blobs. Each refused sync must name
//! the cause and leave the instance's local state (rows, `sync_metadata`,
//! data files) and the remote exactly as they were.
//!
//! Rows covered elsewhere: not SQLite, truncated and wrong schema in
//! `faults.rs` (`a_metadata_db_that_is_not_sqlite…`, `a_truncated…`,
//! `…_wrong_schema…`), a blob hash mismatch and an oversized blob there
//! too; our own lease from a crashed run in `lock.rs`.

use davsync_core::SyncError;
use davsync_core::lease::{LEASE_FILE, LEASE_TTL_MAX_MS, LeaseRecord};
use davsync_core::model::ContentHash;
use davsync_core::ports::RemoteTransport;

use crate::harness::{Net, Node, assert_converged, assert_refused, local_state, remote_data};

/// Instance `a` published f1 and f2; `b` synced them and has a pending label
/// edit, so a sync of `b` has something to write on both sides.
fn two_synced_nodes(net: &mut Net) -> (Node, Node) {
    let mut a = net.node("a", 0);
    let mut b = net.node("b", 0);
    a.add("f1", b"one");
    a.add("f2", b"two");
    a.sync();
    b.sync();
    b.set_label("f1", "b's pending edit");
    (a, b)
}

/// Runs `sql` on the remote `metadata.db` in place, the way a buggy or
/// hostile writer would.
fn tamper(net: &Net, sql: &str) {
    let bytes = net.remote.read("metadata.db").unwrap();
    let mut c = rusqlite::Connection::open_in_memory().unwrap();
    c.deserialize_read_exact(rusqlite::MAIN_DB, &bytes[..], bytes.len(), false).unwrap();
    c.execute_batch(sql).unwrap();
    net.remote.write_raw("metadata.db", &c.serialize(rusqlite::MAIN_DB).unwrap());
}

/// A hostile commit: `sql` (row `f2` is the natural victim) published as the
/// next version, with `f2` stamped with it, so every instance reads `f2`.
fn hostile_commit(net: &Net, sql: &str) {
    let next = net.version_txt().unwrap() + 1;
    tamper(
        net,
        &format!(
            "UPDATE file_metadata SET remote_version = {next} WHERE stable_id = 'f2';
             {sql};
             UPDATE sync_metadata SET value = '{next}' WHERE key = 'version';"
        ),
    );
    net.remote.write_raw("version.txt", next.to_string().as_bytes());
}

/// One hostile value, `f2.column = value_sql`, published: `b`'s sync is
/// refused naming `needles` and changes nothing.
#[track_caller]
fn assert_value_refused(column: &str, value_sql: &str, needles: &[&str]) {
    let mut net = Net::strict();
    let (_a, mut b) = two_synced_nodes(&mut net);
    hostile_commit(&net, &format!("UPDATE file_metadata SET {column} = {value_sql} WHERE stable_id = 'f2'"));
    assert_refused(&net, &mut b, needles);
}

#[test]
fn a_path_in_a_field_that_becomes_a_path_is_refused() {
    let hash = ContentHash::of(b"two").to_string();
    let cases = [
        ("stable_id", "'../../etc/passwd'"),
        ("stable_id", "'/etc/passwd'"),
        ("id", &format!("'../{}'", &hash[3..])),
        ("id", &format!("'/{}'", &hash[1..])),
        ("file_type", "'../../../etc/x'"),
        ("file_type", "'/abs'"),
        ("file_type", "'pdf/../../x'"),
        ("hlc", "'001700000000000-0000000001-../../x'"),
    ];
    for (column, value) in cases {
        assert_value_refused(column, value, &["metadata.db", column]);
    }
}

#[test]
fn a_content_id_that_is_not_64_hex_digits_is_refused() {
    let hash = ContentHash::of(b"two").to_string();
    let upper = hash.to_uppercase();
    for value in ["z".repeat(64), hash[..62].to_owned(), format!("{hash}00"), upper, String::new()] {
        assert_value_refused("id", &format!("'{value}'"), &["metadata.db", "\"f2\"", "id"]);
    }
}

#[test]
fn an_unknown_file_type_that_would_make_a_bad_extension_is_refused() {
    for value in ["PDF", "p df", "x".repeat(17).as_str(), "", "tei.xml", "pdf\0"] {
        let sql = format!("'{}'", value.replace('\0', "' || char(0) || '"));
        assert_value_refused("file_type", &sql, &["metadata.db", "file_type"]);
    }
}

#[test]
fn json_columns_that_are_not_json_or_the_wrong_shape_are_refused() {
    let cases = [
        ("doc_collections", "'{not json'"),
        ("doc_collections", "'{\"a\":1}'"),
        ("doc_metadata", "'[1,2]'"),
        ("doc_metadata", "'null'"),
        ("file_metadata", "'\"text\"'"),
        ("file_metadata", "x'ff'"),
    ];
    for (column, value) in cases {
        assert_value_refused(column, value, &["metadata.db", column]);
    }
}

#[test]
fn a_ten_megabyte_label_is_refused_with_a_short_message() {
    let mut net = Net::strict();
    let (_a, mut b) = two_synced_nodes(&mut net);
    // hex() doubles: 5 MiB of zeros are a 10 MiB label.
    hostile_commit(
        &net,
        "UPDATE file_metadata SET label = hex(zeroblob(5 * 1024 * 1024)) WHERE stable_id = 'f2'",
    );
    let msg = assert_refused(&net, &mut b, &["metadata.db", "label", "longer than"]);
    assert!(msg.len() < 500, "the message quotes the label: {} bytes", msg.len());
}

#[test]
fn a_version_that_goes_backwards_is_refused_or_repaired() {
    // Inside one database: a row newer than the database itself.
    let mut net = Net::strict();
    let (_a, mut b) = two_synced_nodes(&mut net);
    hostile_commit(&net, "SELECT 1");
    tamper(&net, "UPDATE sync_metadata SET value = '1' WHERE key = 'version'");
    assert_refused(&net, &mut b, &["metadata.db", "remote_version 2 > database version 1"]);

    // The whole remote behind what this instance has seen (restored from an
    // older copy, or a stale writer's overwrite): not an error; the case
    // says otherwise. The instance publishes what it knows again, past
    // every version it has seen (faults.rs: a_remote_restored_…).
    let mut net = Net::strict();
    let (mut a, mut b) = two_synced_nodes(&mut net);
    let old = net.remote.snapshot();
    b.sync();
    let seen = b.store.inner.meta["remote_version"].clone();
    net.remote.restore(old);
    b.set_label("f2", "after the restore");
    let s = b.sync();
    assert!(s.new_version > seen.parse().unwrap(), "{} after {seen}", s.new_version);
    assert_eq!(net.remote_row("f1").meta.label.as_deref(), Some("b's pending edit"));
    a.sync();
    assert_converged(&net, &[&a, &b]);
}

#[test]
fn a_version_txt_that_is_not_a_counter_is_refused() {
    let huge = "9".repeat(19);
    let cases: [(&[u8], &str); 7] = [
        (b"", "is empty"),
        (b" \n", "is empty"),
        (b"three", "not a non-negative decimal"),
        (b"-1", "not a non-negative decimal"),
        (b"0x10", "not a non-negative decimal"),
        (huge.as_bytes(), "implausibly large"),
        (b"\xff\xfe1", "not text"),
    ];
    for (bytes, why) in cases {
        let mut net = Net::strict();
        let (_a, mut b) = two_synced_nodes(&mut net);
        net.remote.write_raw("version.txt", bytes);
        assert_refused(&net, &mut b, &["version.txt", why]);
    }
    // Longer than any counter: refused without reading it all.
    let mut net = Net::strict();
    let (_a, mut b) = two_synced_nodes(&mut net);
    net.remote.write_raw("version.txt", &[b'1'; 1 << 20]);
    assert_refused(&net, &mut b, &["version.txt", "longer than"]);
}

#[test]
fn a_hostile_lock_is_a_bounded_wait_naming_the_holder_and_changes_nothing() {
    let greedy =
        LeaseRecord { owner: "i-greedy".into(), host: "evil".into(), nonce: "n".into(), ttl_ms: u64::MAX };
    let garbage: &[u8] = b"\x00\xff{\"owner\": 12";
    let cases: [(&[u8], &str); 2] =
        [(&serde_json::to_vec(&greedy).unwrap(), "instance i-greedy on evil"), (garbage, "unknown holder")];
    for (lease, holder_named) in cases {
        let mut net = Net::strict();
        let (_a, mut b) = two_synced_nodes(&mut net);
        net.remote.write_raw(LEASE_FILE, lease);
        b.opts.lock_wait_ms = 3_000;
        let (local_before, remote_before) = (local_state(&b), remote_data(&net));
        let started = net.world.now_ms();
        match b.try_sync() {
            Err(SyncError::LockHeld { holder, expires_in_ms }) => {
                assert!(holder.contains(holder_named), "{holder}");
                // A lease claims at most LEASE_TTL_MAX_MS, whatever its file says.
                assert!(expires_in_ms <= LEASE_TTL_MAX_MS as i64, "{expires_in_ms}");
            }
            other => panic!("expected LockHeld, got {other:?}"),
        }
        assert!(net.world.now_ms() - started < 10_000, "the wait is bounded by lock_wait_ms");
        assert!(local_state(&b) == local_before && remote_data(&net) == remote_before);
        assert_eq!(net.remote.read(LEASE_FILE).as_deref(), Some(lease), "someone else's lock is left alone");
        // Stale by the longest lease there is: broken, and the sync goes on.
        net.advance(LEASE_TTL_MAX_MS + 1);
        b.sync();
        assert_eq!(net.remote_row("f1").meta.label.as_deref(), Some("b's pending edit"));
    }
}

/// The blob rows where a per-file error is the answer (the case says
/// otherwise): the file is not applied, the rest of the sync goes on, the
/// version is not recorded, and a repaired blob is fetched by the next sync.
#[test]
fn a_truncated_or_missing_blob_is_a_per_file_error_and_the_rest_goes_on() {
    for (what, damage) in [("truncated", Some(&b"on"[..])), ("missing", None)] {
        let mut net = Net::strict();
        let mut a = net.node("a", 0);
        let mut c = net.node("c", 0);
        let f1 = a.add("f1", b"one");
        a.add("f2", b"two");
        a.sync();
        let path = f1.blob().unwrap().path();
        match damage {
            Some(bytes) => net.remote.write_raw(&path, bytes),
            None => {
                net.remote.server_mut().delete(&path).unwrap();
            }
        }
        let s = c.sync();
        assert_eq!((s.errors, s.file_errors[0].stable_id.as_str()), (1, "f1"), "{what}");
        let msg = &s.file_errors[0].message;
        let cause = if damage.is_some() { "mismatch" } else { "missing on the remote" };
        assert!(msg.to_lowercase().contains(cause), "{what}: {msg}");
        assert!(c.store.inner.row("f1").is_none(), "{what}: no row without its content");
        assert!(!c.files.contains(&f1.blob().unwrap()), "{what}: nothing kept");
        assert_eq!(c.content("f2").unwrap(), b"two", "{what}: the rest went on");
        assert!(!c.store.inner.meta.contains_key("remote_version"), "{what}: version not recorded");
        net.remote.write_raw(&path, b"one");
        c.sync();
        assert_converged(&net, &[&a, &c]);
    }
}

/// The first sync of a new instance that fails (here: a garbled
/// `version.txt`) leaves its local database exactly as it was: the instance
/// id it made up is stored only with its first local commit.
#[test]
fn a_failed_first_sync_leaves_the_local_database_untouched() {
    let mut net = Net::strict();
    let mut a = net.node("a", 0);
    a.add("f1", b"one");
    net.remote.write_raw("version.txt", b"garbage");
    let before = local_state(&a);
    assert!(matches!(a.try_sync(), Err(SyncError::RemoteCorrupt(_))));
    assert!(local_state(&a) == before, "local state changed: {:?}", a.store.inner.meta);
    // `status` only reads, too.
    davsync_core::status(&mut a.io(), 0).unwrap_err();
    assert!(local_state(&a) == before, "status wrote: {:?}", a.store.inner.meta);
    // The first successful sync stores the id it synced under.
    net.remote.write_raw("version.txt", b"0");
    net.remote.server_mut().delete("version.txt").unwrap();
    a.sync();
    let id = a.store.inner.meta.get("instance_id").cloned().expect("instance id stored");
    assert_eq!(net.remote_row("f1").hlc.instance, id, "the rows were stamped with the stored id");
    a.sync();
    assert_eq!(a.store.inner.meta.get("instance_id"), Some(&id), "the id is stable");
}

/// What a killed process leaves in the temporary area (its uploads, the
/// host's condition probe) is removed by the next sync that holds the lock,
/// and never by one that does not.
#[test]
fn leftovers_of_killed_processes_are_swept_only_under_the_lock() {
    let mut net = Net::strict();
    let (_a, mut b) = two_synced_nodes(&mut net);
    let leftovers = [".davsync-tmp/probe-1234", ".davsync-tmp/i-dead/ab/abcd.pdf"];
    for path in leftovers {
        net.remote.write_raw(path, b"half");
    }
    // Someone else holds the lock: nothing of theirs (or anyone's) goes.
    let holder = LeaseRecord { owner: "i-other".into(), host: "h".into(), nonce: "n".into(), ttl_ms: 60_000 };
    net.remote.write_raw(LEASE_FILE, &serde_json::to_vec(&holder).unwrap());
    b.opts.lock_wait_ms = 0;
    assert!(matches!(b.try_sync(), Err(SyncError::LockHeld { .. })));
    assert!(leftovers.iter().all(|p| net.remote.exists(p)), "swept without the lock");
    net.advance(60_001);
    b.sync();
    let left: Vec<String> =
        net.remote.files().into_keys().filter(|p| p.starts_with(".davsync-tmp")).collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
