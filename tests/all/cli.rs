//! The `davsync` binary end to end: two data folders sharing one folder
//! remote, driven the way a person or a script would.

use crate::site::Site;

fn two_sites() -> (tempfile::TempDir, Site, Site) {
    let tmp = tempfile::tempdir().unwrap();
    let a = Site::new(tmp.path(), "a");
    let b = Site::new(tmp.path(), "b");
    a.ok(&["init"]);
    b.ok(&["init"]);
    (tmp, a, b)
}

#[test]
fn two_instances_share_a_folder_remote() {
    let (_tmp, a, b) = two_sites();
    let src = a.file("paper.pdf", b"%PDF-1.7 the paper");
    let id = a
        .ok(&["add", &src, "--doc-id", "10.1/x", "--label", "draft", "--collection", "c1"])
        .trim()
        .to_owned();
    assert_eq!(a.json(&["sync"])["uploaded"], 1);
    assert_eq!(b.json(&["sync"])["downloaded"], 1);
    assert_eq!(b.content(&id), b"%PDF-1.7 the paper");
    assert_eq!(b.row(&id)["doc_collections"], serde_json::json!(["c1"]));

    // A label set on b arrives on a with no blob moved.
    b.ok(&["set", &id, "--label", "final"]);
    let s = b.json(&["sync"]);
    assert_eq!((s["uploaded"].as_u64(), s["metadata_synced"].as_u64()), (Some(0), Some(1)));
    let s = a.json(&["sync"]);
    assert_eq!((s["downloaded"].as_u64(), s["metadata_synced"].as_u64()), (Some(0), Some(1)));
    assert_eq!(a.row(&id)["label"], "final");

    // A content edit keeps the stable id and reaches the other side.
    let v2 = a.file("paper-v2.pdf", b"%PDF-1.7 the paper, revised");
    a.ok(&["edit", &id, &v2]);
    a.ok(&["sync"]);
    assert_eq!(b.json(&["sync"])["downloaded"], 1);
    assert_eq!(b.content(&id), b"%PDF-1.7 the paper, revised");

    // A deletion reaches the other side.
    b.ok(&["rm", &id]);
    assert_eq!(b.json(&["sync"])["deleted_remote"], 1);
    assert_eq!(a.json(&["sync"])["deleted_local"], 1);
    assert_eq!(a.row(&id)["deleted"], true);

    // Nothing left to do: the next sync is skipped.
    assert_eq!(a.json(&["sync"])["skipped"], true);
    assert_eq!(a.json(&["status"])["needs_sync"], false);
}

fn conflicted(a: &Site, b: &Site) -> String {
    let id = a.ok(&["add", &a.file("x.pdf", b"base"), "--doc-id", "d"]).trim().to_owned();
    a.ok(&["sync"]);
    b.ok(&["sync"]);
    a.ok(&["edit", &id, &a.file("xa.pdf", b"from a")]);
    b.ok(&["edit", &id, &b.file("xb.pdf", b"from b")]);
    b.ok(&["sync"]);
    assert_eq!(a.json(&["sync"])["conflicts"], 1);
    let list = a.json(&["conflicts"]);
    assert_eq!(list[0]["stable_id"], id.as_str());
    assert_eq!(list[0]["kind"], "both_modified");
    id
}

#[test]
fn each_resolution_does_what_it_says() {
    for (resolution, expect_a) in
        [("local", &b"from a"[..]), ("remote", &b"from b"[..]), ("keep-both", &b"from b"[..])]
    {
        let (_tmp, a, b) = two_sites();
        let id = conflicted(&a, &b);
        let mut args = vec!["resolve", id.as_str(), resolution];
        if resolution == "keep-both" {
            args.extend(["--variant", "a-copy"]);
        }
        let out = a.json(&args);
        a.ok(&["sync"]);
        b.ok(&["sync"]);
        assert_eq!(a.content(&id), expect_a, "{resolution}");
        assert_eq!(b.content(&id), a.content(&id), "{resolution}: both sides agree");
        assert_eq!(a.json(&["conflicts"]), serde_json::json!([]), "{resolution}");
        if resolution == "keep-both" {
            let copy = out["new_stable_id"].as_str().unwrap();
            assert_eq!(b.content(copy), b"from a");
            assert_eq!(b.row(copy)["variant"], "a-copy");
        }
    }
}

#[test]
fn errors_are_one_line_and_usage_errors_exit_2() {
    let (_tmp, a, _b) = two_sites();
    let out = a.run(&["rm", "no-such-file"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("no-such-file"), "{err}");
    let out = a.run(&["sync", "--frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
    let out = a.run(&["resolve", "x", "keep-both"]);
    assert_eq!(out.status.code(), Some(1));
}

/// SPEC §2: the host works on the app's own database. Build one from the
/// SPEC column list plus a column of the app's own, with a file the app
/// already has; it must sync, and the extra column must survive.
#[test]
fn the_apps_own_database_with_an_extra_column_survives_a_sync() {
    let (_tmp, a, b) = two_sites();
    let db = a.root.join("app.db");
    let body = b"%PDF-1.4 from the app";
    let hash = {
        use sha2::Digest;
        sha2::Sha256::digest(body).iter().map(|x| format!("{x:02x}")).collect::<String>()
    };
    let dir = a.data.join("files").join(&hash[..2]);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{hash}.pdf")), body).unwrap();
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(
        "CREATE TABLE files (stable_id TEXT PRIMARY KEY, id TEXT, filename TEXT, doc_id TEXT, doc_id_type TEXT,
           file_type TEXT, mime_type TEXT, file_size INTEGER, label TEXT, variant TEXT, version INTEGER,
           is_gold_standard BOOLEAN, deleted BOOLEAN, local_modified_at TIMESTAMP, remote_version INTEGER,
           sync_status TEXT, sync_hash TEXT, created_at TIMESTAMP, updated_at TIMESTAMP, doc_collections TEXT,
           doc_metadata TEXT, file_metadata TEXT, app_note TEXT);
         CREATE TABLE sync_metadata (key TEXT PRIMARY KEY, value TEXT, updated_at TIMESTAMP);",
    )
    .unwrap();
    conn.execute(
        "INSERT INTO files VALUES ('appfile1', ?1, 'a.pdf', '10.1/app', 'doi', 'pdf', 'application/pdf', ?2,
           'app label', NULL, 1, 0, 0, '2024-05-01 12:00:00', NULL, 'modified', NULL, '2024-05-01 12:00:00',
           '2024-05-01 12:00:00', '[\"corpus1\"]', '{}', '{}', 'keep me')",
        (&hash, body.len() as i64),
    )
    .unwrap();
    drop(conn);
    let db_arg = db.to_str().unwrap();
    let s = a.json(&["--db", db_arg, "sync"]);
    assert_eq!(s["uploaded"], 1);
    let conn = rusqlite::Connection::open(&db).unwrap();
    let (note, status): (String, String) = conn
        .query_row("SELECT app_note, sync_status FROM files WHERE stable_id = 'appfile1'", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!((note.as_str(), status.as_str()), ("keep me", "synced"));
    b.ok(&["sync"]);
    assert_eq!(b.content("appfile1"), body);
    assert_eq!(b.row("appfile1")["label"], "app label");
}
