//! The bad-input matrix of issue 8, host side: hostile WebDAV answers (from
//! wsgidav's fault middleware) and a local database the app holds, made
//! read-only, or filled with a value davsync does not know. Each failure must
//! name its cause, and the data folder (database and files) must be byte
//! for byte what it was.
//!
//! Rows covered elsewhere: 401 and 507 by `webdav.rs`
//! (`failures_are_clear_and_leave_local_state_unchanged`); the HTTP API's
//! missing or wrong token by `api.rs` (`every_route_answers_401_without_the_token`),
//! bodies that are not JSON and huge bodies by
//! `malformed_bodies_are_422_and_oversized_ones_413`, unknown resolution
//! names by `conflicts_are_listed_and_each_resolution_works_through_the_api`;
//! the remote's own files (metadata.db, version.txt, lock, blobs) by
//! `components/core/tests/all/hostile.rs`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::servers::{DavServer, ServerKind};
use crate::site::Site;

/// An instance that synced once with `dav` and has a pending new file (so
/// the next sync has something to write on both sides), and a data-folder
/// snapshot taken now.
fn pending_site(tmp: &Path, dav: &DavServer) -> (Site, Vec<(PathBuf, String)>) {
    let a = Site::dav(tmp, "a", dav);
    a.ok(&["init"]);
    a.add("first.pdf", b"%PDF first");
    a.ok(&["sync"]);
    a.add("pending.pdf", b"%PDF pending");
    let before = a.snapshot();
    (a, before)
}

/// Runs `davsync sync` under `faults`: it must fail with an error containing
/// one of `wanted`, leave the data folder as it was, and leave no lock.
#[track_caller]
fn assert_refused(
    dav: &DavServer,
    site: &Site,
    before: &[(PathBuf, String)],
    faults: Value,
    wanted: &[&str],
) {
    dav.set_faults(faults.clone()).unwrap();
    let out = site.run(&["sync"]);
    dav.set_faults(json!({})).unwrap();
    assert!(!out.status.success(), "{faults}: the sync succeeded");
    let err = error_line(&out.stderr);
    assert!(wanted.iter().any(|w| err.contains(w)), "{faults}: unclear error {err:?}");
    let said = wanted.iter().map(|w| err.matches(w).count()).max();
    assert_eq!(said, Some(1), "{faults}: the error repeats itself: {err}");
    assert_eq!(site.snapshot(), before, "{faults}: local state changed");
}

/// The one error line on stderr (progress lines aside), lower case.
#[track_caller]
fn error_line(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr).to_lowercase();
    let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("davsync:")).collect();
    assert_eq!(errors.len(), 1, "one error line: {text:?}");
    errors[0].to_owned()
}

#[test]
fn hostile_propfind_answers_are_refused() {
    let dav = DavServer::start(ServerKind::Wsgidav, false).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (a, before) = pending_site(tmp.path(), &dav);
    let respond = |body: &str| json!({"respond_for": {"PROPFIND /": {"status": 207, "body": body}}});
    // Malformed multistatus: an unclosed element.
    let malformed = r#"<?xml version="1.0"?><d:multistatus xmlns:d="DAV:"><d:response><d:href>/ab/</d:href></d:multistatus>"#;
    assert_refused(&dav, &a, &before, respond(malformed), &["malformed xml"]);
    // Not a multistatus at all (a captive portal's page).
    assert_refused(&dav, &a, &before, respond("<html><body>log in</body></html>"), &["not a multistatus"]);
    // Billion laughs: refused at the DOCTYPE, nothing is expanded.
    let mut bomb = String::from(r#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol0 "lol">"#);
    for i in 1..10 {
        let prev = format!("&lol{};", i - 1);
        bomb.push_str(&format!(r#"<!ENTITY lol{i} "{}">"#, prev.repeat(10)));
    }
    bomb.push_str(
        r#"]><d:multistatus xmlns:d="DAV:"><d:response><d:href>&lol9;</d:href></d:response></d:multistatus>"#,
    );
    let started = Instant::now();
    assert_refused(&dav, &a, &before, respond(&bomb), &["doctype"]);
    assert!(started.elapsed() < Duration::from_secs(30), "the bomb took {:?}", started.elapsed());
    // An entity without a DOCTYPE is not expanded either.
    let entity =
        r#"<d:multistatus xmlns:d="DAV:"><d:response><d:href>&xxe;</d:href></d:response></d:multistatus>"#;
    assert_refused(&dav, &a, &before, respond(entity), &["unknown entity"]);
    // Once the server behaves, the pending file goes out.
    let s = a.json(&["sync"]);
    assert_eq!(s["uploaded"].as_u64(), Some(1), "{s}");
}

#[test]
fn a_redirect_to_another_host_is_not_followed_and_credentials_stay_home() {
    let dav = DavServer::start(ServerKind::Wsgidav, true).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (a, before) = pending_site(tmp.path(), &dav);
    // A listener standing in for the other host: it must never see a request.
    let elsewhere = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    elsewhere.set_nonblocking(true).unwrap();
    let to = format!("http://thief:hunter2@127.0.0.1:{}/steal", elsewhere.local_addr().unwrap().port());
    for status in [301, 302, 307, 308] {
        let faults = json!({"respond_for": {"* /": {"status": status, "headers": {"Location": to}}}});
        assert_refused(&dav, &a, &before, faults, &["redirects are not followed"]);
        assert!(elsewhere.accept().is_err(), "{status}: the client followed the redirect");
    }
    let out = a.run(&["sync"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // The redirect's own credentials are not echoed either.
    dav.set_faults(json!({"respond_for": {"* /": {"status": 302, "headers": {"Location": to}}}})).unwrap();
    a.add("third.pdf", b"%PDF third");
    let err = String::from_utf8_lossy(&a.run(&["sync"]).stderr).into_owned();
    assert!(!err.contains("hunter2") && !err.contains("davsync-secret"), "a password printed: {err}");
}

#[test]
fn a_hanging_server_times_out_in_bounded_time() {
    let dav = DavServer::start(ServerKind::Wsgidav, false).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (mut a, before) = pending_site(tmp.path(), &dav);
    a.set_env("DAVSYNC_TIMEOUT_SECS", "1");
    let started = Instant::now();
    assert_refused(&dav, &a, &before, json!({"hang": true}), &["timed out", "timeout"]);
    // Every retry of every attempt is bounded: 1 s each, plus backoff.
    let took = started.elapsed();
    assert!(took < Duration::from_secs(45), "a hanging server held the sync for {took:?}");
}

/// The app's database of `site`.
fn app_db(site: &Site) -> PathBuf {
    site.data.join("metadata.db")
}

/// The snapshot without SQLite's WAL index (`-shm`) and an empty `-wal`:
/// a reader creates or writes them while the database stays open elsewhere
/// or cannot be checkpointed (read-only); they hold no data.
fn without_wal_index(snapshot: Vec<(PathBuf, String)>) -> Vec<(PathBuf, String)> {
    let empty = davsync_core::model::ContentHash::of(b"").to_string();
    let index = |p: &Path, hash: &str| {
        let name = p.to_string_lossy();
        name.ends_with("-shm") || (name.ends_with("-wal") && hash == empty)
    };
    snapshot.into_iter().filter(|(p, h)| !index(p, h)).collect()
}

/// The app opens a write transaction on its database and keeps it.
fn app_write_lock(site: &Site) -> rusqlite::Connection {
    let app = rusqlite::Connection::open(app_db(site)).unwrap();
    app.execute_batch("BEGIN IMMEDIATE; UPDATE files SET label = label WHERE 0;").unwrap();
    app
}

#[test]
fn the_app_holding_the_write_lock_is_a_clear_busy_error_before_or_mid_sync() {
    let dav = DavServer::start(ServerKind::Wsgidav, false).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (a, _) = pending_site(tmp.path(), &dav);
    let b = Site::dav(tmp.path(), "b", &dav);
    b.ok(&["init"]);
    let busy = |out: &std::process::Output, took: Duration| {
        assert!(!out.status.success(), "the sync wrote through the app's lock");
        let err = error_line(&out.stderr);
        assert!(err.contains("local database is busy"), "unclear error {err:?}");
        assert!(took >= Duration::from_secs(4), "gave up before the busy timeout: {took:?}");
        assert!(took < Duration::from_secs(60), "waited {took:?}");
    };
    // Taking a snapshot reads the database files, which in this process
    // would drop the app's lock (POSIX locks belong to the process and go
    // with the first descriptor closed): snapshots are taken without it.
    let before = without_wal_index(a.snapshot());
    let remote_before = version_txt(&dav);

    // Held before the sync starts: refused before the remote is touched.
    let app = app_write_lock(&a);
    let started = Instant::now();
    let out = a.run(&["sync"]);
    busy(&out, started.elapsed());
    drop(app);
    assert_eq!(without_wal_index(a.snapshot()), before, "local state changed");
    assert_eq!(version_txt(&dav), remote_before, "the remote was committed to");

    // Taken while the sync runs (slowed down by the server): the sync's
    // first local write, the record of what it is about to publish (made
    // before the remote commit, see ARCHITECTURE "The commit protocol"),
    // waits out the busy timeout and fails. So nothing changes anywhere, and
    // the next sync does the whole job.
    dav.set_faults(json!({"delay_ms": 300})).unwrap();
    let started = Instant::now();
    let child = a.spawn(&["sync"]);
    let lease = dav.dir.join("version.txt.lock").join("lease.json");
    while !lease.exists() {
        assert!(started.elapsed() < Duration::from_secs(30), "the sync never took the lease");
        std::thread::sleep(Duration::from_millis(20));
    }
    let app = app_write_lock(&a);
    let out = child.wait_with_output().unwrap();
    busy(&out, started.elapsed());
    drop(app);
    dav.set_faults(json!({})).unwrap();
    assert_eq!(without_wal_index(a.snapshot()), before, "local state changed");
    assert_eq!(version_txt(&dav), remote_before, "the remote was committed to without the local record");
    a.ok(&["sync"]);
    b.ok(&["sync"]);
    assert_eq!(a.rows().len(), 2);
    assert_eq!(b.rows().len(), 2);
    assert_eq!(a.json(&["status"])["needs_sync"], false);
}

fn version_txt(dav: &DavServer) -> i64 {
    std::fs::read(dav.dir.join("version.txt"))
        .map_or(0, |t| davsync_core::history::Head::parse(&t).unwrap().version)
}

/// Makes a file unwritable even for root (`chattr +i`), or by mode where
/// that is not available; undone on drop.
struct ReadOnlyFile(PathBuf, bool);

impl ReadOnlyFile {
    fn new(path: &Path) -> ReadOnlyFile {
        let immutable =
            std::process::Command::new("chattr").arg("+i").arg(path).status().is_ok_and(|s| s.success());
        if !immutable {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o444)).unwrap();
        }
        ReadOnlyFile(path.to_path_buf(), immutable)
    }
}

impl Drop for ReadOnlyFile {
    fn drop(&mut self) {
        if self.1 {
            let _ = std::process::Command::new("chattr").arg("-i").arg(&self.0).status();
        } else {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&self.0, std::fs::Permissions::from_mode(0o644));
        }
    }
}

#[test]
fn a_read_only_app_database_is_refused_before_anything_is_written() {
    // A read-only database with a rollback journal fails the switch to WAL;
    // in WAL mode it often fails its first read (no WAL index), but not
    // always: with the index in place reads work, and without the host's
    // up-front refusal the sync committed remotely, then failed locally (seen
    // once in a full-suite run). Either way: refused before the remote is
    // touched, in the local database's terms.
    for case in ["wal", "delete", "wal, open in the app"] {
        let tmp = tempfile::tempdir().unwrap();
        let a = Site::new(tmp.path(), "a");
        a.ok(&["init"]);
        a.add("p.pdf", b"%PDF p");
        let app = rusqlite::Connection::open(app_db(&a)).unwrap();
        let mode = if case == "delete" { "delete" } else { "wal" };
        app.pragma_update_and_check(None, "journal_mode", mode, |_| Ok(())).unwrap();
        let app = case.contains("open").then_some(app);
        let before = without_wal_index(a.snapshot());
        let guard = ReadOnlyFile::new(&app_db(&a));
        let out = a.run(&["sync"]);
        assert!(!out.status.success(), "{case}: the sync succeeded on a read-only database");
        let err = error_line(&out.stderr);
        assert!(err.contains("local database is read-only"), "{case}: unclear error {err:?}");
        assert_eq!(without_wal_index(a.snapshot()), before, "{case}: local state changed");
        let remote: Vec<_> = std::fs::read_dir(tmp.path().join("remote")).unwrap().collect();
        assert!(remote.is_empty(), "{case}: the remote was written: {remote:?}");
        drop((guard, app));
        let s = a.json(&["sync"]);
        assert_eq!(s["uploaded"].as_u64(), Some(1), "{case}: {s}");
    }
}

#[test]
fn an_unknown_sync_status_is_named_and_nothing_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let a = Site::new(tmp.path(), "a");
    a.ok(&["init"]);
    let odd = a.add("odd.pdf", b"%PDF odd");
    a.ok(&["sync"]);
    a.add("pending.pdf", b"%PDF pending");
    let app = rusqlite::Connection::open(app_db(&a)).unwrap();
    app.execute("UPDATE files SET sync_status = 'archived' WHERE stable_id = ?1", [&odd]).unwrap();
    drop(app);
    let before = a.snapshot();
    let out = a.run(&["sync"]);
    assert!(!out.status.success(), "the sync guessed what 'archived' means");
    let err = error_line(&out.stderr);
    assert!(err.contains("sync_status") && err.contains("archived"), "unclear error {err:?}");
    assert_eq!(a.snapshot(), before, "local state changed");
}
