//! The real `davsync` binary against real WebDAV servers on 127.0.0.1:
//! wsgidav, Apache mod_dav and `rclone serve webdav` (which ignores every
//! conditional header). The same scenarios run against each; on top, real
//! concurrent processes, a SIGKILL while holding the lease, a sync slower
//! than the lease TTL, and the failures a user meets (wrong password,
//! unreachable server, a full disk).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::servers::{DavServer, ServerKind};
use crate::site::Site;

fn server(kind: ServerKind, auth: bool) -> DavServer {
    DavServer::start(kind, auth).unwrap_or_else(|e| panic!("starting {}: {e:#}", kind.name()))
}

fn version_txt_at(dir: &std::path::Path) -> i64 {
    std::fs::read(dir.join("version.txt"))
        .map_or(0, |t| davsync_core::history::Head::parse(&t).unwrap().version)
}

fn version_txt(server: &DavServer) -> i64 {
    std::fs::read(server.dir.join("version.txt"))
        .map_or(0, |t| davsync_core::history::Head::parse(&t).unwrap().version)
}

/// No upload in flight is left on the remote after a clean sync.
fn assert_no_temp_files(server: &DavServer) {
    let tmp = server.dir.join(".davsync-tmp");
    let leftovers: Vec<_> = match std::fs::read_dir(&tmp) {
        Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    };
    assert!(leftovers.is_empty(), "{}: temporary files left: {leftovers:?}", server.kind.name());
}

/// Live rows by stable id: (content hash, label).
pub(crate) fn live(site: &Site) -> BTreeMap<String, (String, Value)> {
    site.rows()
        .into_iter()
        .filter(|r| r["deleted"] == false)
        .map(|r| {
            (
                r["stable_id"].as_str().unwrap().to_owned(),
                (r["id"].as_str().unwrap().to_owned(), r["label"].clone()),
            )
        })
        .collect()
}

/// The everyday scenario: add, pull, edit content and metadata, delete,
/// a conflict and its resolution.
fn everyday(kind: ServerKind) {
    let dav = server(kind, true);
    let tmp = tempfile::tempdir().unwrap();
    let a = Site::dav(tmp.path(), "a", &dav);
    let b = Site::dav(tmp.path(), "b", &dav);
    a.ok(&["init"]);
    b.ok(&["init"]);

    let p1 = a.add("p1.pdf", b"%PDF one");
    let p2 = a.add("p2.pdf", b"%PDF two");
    let s = a.json(&["sync"]);
    assert_eq!((s["uploaded"].as_u64(), s["new_version"].as_i64()), (Some(2), Some(1)), "{s}");
    let s = b.json(&["sync"]);
    assert_eq!(s["downloaded"].as_u64(), Some(2), "{s}");
    assert_eq!(b.content(&p1), b"%PDF one");

    // Content on a, metadata on b, deletion on a.
    let edited = a.file("p1-v2.pdf", b"%PDF one, revised");
    a.ok(&["edit", &p1, &edited]);
    b.ok(&["set", &p1, "--label", "reviewed"]);
    a.ok(&["rm", &p2]);
    a.ok(&["sync"]);
    b.ok(&["sync"]);
    a.ok(&["sync"]);
    assert_eq!(b.content(&p1), b"%PDF one, revised");
    assert_eq!(a.row(&p1)["label"], "reviewed");
    assert_eq!(b.row(&p2)["deleted"], true);
    assert_eq!(live(&a), live(&b));

    // Both change the content: a conflict, recorded, resolved, carried out.
    let mine = a.file("mine.pdf", b"%PDF a's");
    let theirs = b.file("theirs.pdf", b"%PDF b's");
    a.ok(&["edit", &p1, &mine]);
    b.ok(&["edit", &p1, &theirs]);
    a.ok(&["sync"]);
    let s = b.json(&["sync"]);
    assert_eq!(s["conflicts"].as_u64(), Some(1), "{s}");
    let conflicts = b.json(&["conflicts"]);
    assert_eq!(conflicts.as_array().unwrap().len(), 1, "{conflicts}");
    b.ok(&["resolve", &p1, "local"]);
    b.ok(&["sync"]);
    a.ok(&["sync"]);
    assert_eq!(a.content(&p1), b"%PDF b's");
    assert_eq!(live(&a), live(&b));
    assert_eq!(b.json(&["status"])["needs_sync"], false);
    assert_no_temp_files(&dav);
}

/// One test per server for a scenario `fn(ServerKind)`.
macro_rules! on_every_server {
    ($scenario:ident: $wsgidav:ident, $apache:ident, $rclone:ident) => {
        #[test]
        fn $wsgidav() {
            $scenario(ServerKind::Wsgidav);
        }
        #[test]
        fn $apache() {
            $scenario(ServerKind::Apache);
        }
        #[test]
        fn $rclone() {
            $scenario(ServerKind::Rclone);
        }
    };
}

on_every_server!(everyday: everyday_wsgidav, everyday_apache, everyday_rclone);

/// A newcomer's first sync to a fresh server, at a sub-path nobody has made
/// yet (`WEBDAV_BASE_URL` + `WEBDAV_REMOTE_ROOT`, as the README shows): the
/// missing collections are created, like a folder remote's folder, and then
/// everything under them: the lock, `version.txt`, `metadata.db`, the blob's
/// shard folder and the temporary area. A second instance pointed at the
/// same URL with `--remote` gets the file.
fn first_sync_creates_a_missing_remote_root(kind: ServerKind) {
    let dav = server(kind, true);
    let tmp = tempfile::tempdir().unwrap();
    let mut a = Site::dav(tmp.path(), "a", &dav);
    // No DAVSYNC_REMOTE (empty counts as unset): the app's variables.
    a.remote = String::new();
    a.set_env("WEBDAV_BASE_URL", dav.url.trim_end_matches('/'));
    a.set_env("WEBDAV_REMOTE_ROOT", "/team/pdf-tei-editor");
    let root = dav.dir.join("team").join("pdf-tei-editor");
    assert!(!dav.dir.join("team").exists());

    let id = a.add("first.pdf", b"%PDF first");
    // A status check only reads: it says a sync is needed and creates nothing.
    let status = a.json(&["status"]);
    assert_eq!(status["needs_sync"], true, "{status}");
    assert!(!dav.dir.join("team").exists(), "{}: status created the root", kind.name());

    let s = a.json(&["sync"]);
    assert_eq!((s["uploaded"].as_u64(), s["new_version"].as_i64()), (Some(1), Some(1)), "{s}");
    assert_eq!(version_txt_at(&root), 1);
    assert!(root.join("metadata.db").is_file());
    let hash = a.row(&id)["id"].as_str().unwrap().to_owned();
    let blob = root.join(&hash[..2]).join(format!("{hash}.pdf"));
    assert_eq!(std::fs::read(&blob).unwrap(), b"%PDF first", "{}: blob not in its shard", kind.name());
    // The upload went through `.davsync-tmp/<instance>/`; a clean sync
    // leaves nothing there.
    let tmp_area: Vec<_> = match std::fs::read_dir(root.join(".davsync-tmp")) {
        Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    };
    assert!(tmp_area.is_empty(), "{}: temporary files left: {tmp_area:?}", kind.name());
    assert!(!root.join("version.txt.lock").exists(), "{}: the lock was not released", kind.name());
    assert!(!dav.dir.join("version.txt").exists(), "{}: wrote above the root", kind.name());

    let mut b = Site::dav(tmp.path(), "b", &dav);
    b.remote = format!("{}team/pdf-tei-editor", dav.url);
    let s = b.json(&["sync"]);
    assert_eq!(s["downloaded"].as_u64(), Some(1), "{s}");
    assert_eq!(b.content(&id), b"%PDF first");
    assert_eq!(a.json(&["status"])["needs_sync"], false);
}

on_every_server!(
    first_sync_creates_a_missing_remote_root:
    missing_root_created_on_wsgidav,
    missing_root_created_on_apache,
    missing_root_created_on_rclone
);

/// Two processes sync the same remote at the same time, 20 rounds, with
/// edits on both sides between rounds.
fn racing(kind: ServerKind) {
    let dav = server(kind, false);
    let tmp = tempfile::tempdir().unwrap();
    let mut a = Site::dav(tmp.path(), "a", &dav);
    let mut b = Site::dav(tmp.path(), "b", &dav);
    for s in [&mut a, &mut b] {
        s.ok(&["init"]);
        // Rival syncs wait for each other's lease rather than give up.
        s.set_env("DAVSYNC_LOCK_WAIT_MS", "60000");
    }
    let shared = a.add("shared.pdf", b"%PDF shared 0");
    a.ok(&["sync"]);
    b.ok(&["sync"]);

    // Every label either side ever wrote to a file of its own, and the
    // content each wrote to the shared file.
    let mut expected: BTreeMap<String, String> = BTreeMap::new();
    let mut versions = vec![version_txt(&dav)];
    for round in 0..20 {
        for (who, site) in [("a", &a), ("b", &b)] {
            let id = site.add(&format!("{who}{round}.pdf"), format!("%PDF {who} {round}").as_bytes());
            let label = format!("{who}-label-{round}");
            site.ok(&["set", &id, "--label", &label]);
            expected.insert(id, label);
        }
        if round % 3 == 0 {
            let body = format!("%PDF shared {round}");
            let f = a.file("shared-next.pdf", body.as_bytes());
            a.ok(&["edit", &shared, &f]);
        }
        let (ca, cb) = (a.spawn(&["--json", "sync"]), b.spawn(&["--json", "sync"]));
        for (who, child) in [("a", ca), ("b", cb)] {
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{} round {round}: {who}'s sync failed: {}",
                kind.name(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let v = version_txt(&dav);
        assert!(v >= *versions.last().unwrap(), "version.txt went back: {versions:?} then {v}");
        versions.push(v);
    }
    // Quiesce: two more rounds each settle what crossed in flight.
    for _ in 0..2 {
        a.ok(&["sync"]);
        b.ok(&["sync"]);
    }
    let (la, lb) = (live(&a), live(&b));
    assert_eq!(la, lb, "{}: the instances did not converge", kind.name());
    for (id, label) in &expected {
        let (_, got) = la.get(id).unwrap_or_else(|| panic!("{id} was lost"));
        assert_eq!(got, label, "{id}: its label was lost");
    }
    let conflicts =
        a.json(&["conflicts"]).as_array().unwrap().len() + b.json(&["conflicts"]).as_array().unwrap().len();
    assert_eq!(conflicts, 0, "only a edits the shared file: nothing to conflict");
    assert_eq!(a.content(&shared), b.content(&shared));
    assert_no_temp_files(&dav);
}

on_every_server!(racing: two_processes_race_on_wsgidav, two_processes_race_on_apache, two_processes_race_on_rclone);

/// A process killed while it holds the lease: the other waits for the lease
/// to expire, then proceeds; nothing is lost.
#[test]
fn a_process_killed_holding_the_lease_delays_the_other_only_until_expiry() {
    let dav = server(ServerKind::Wsgidav, false);
    let tmp = tempfile::tempdir().unwrap();
    let mut a = Site::dav(tmp.path(), "a", &dav);
    let mut b = Site::dav(tmp.path(), "b", &dav);
    for s in [&mut a, &mut b] {
        s.ok(&["init"]);
        s.set_env("DAVSYNC_LEASE_TTL_MS", "3000");
        s.set_env("DAVSYNC_LOCK_WAIT_MS", "30000");
        s.set_env("DAVSYNC_TRANSFERS", "1");
    }
    let ids: Vec<String> =
        (0..12).map(|i| a.add(&format!("a{i}.pdf"), format!("%PDF a {i}").as_bytes())).collect();
    let from_b = b.add("b.pdf", b"%PDF b");
    // Slow every request down so that a is still inside its sync when killed.
    dav.set_faults(json!({"delay_ms": 150})).unwrap();
    let mut child = a.spawn(&["sync"]);
    let lease = dav.dir.join("version.txt.lock").join("lease.json");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !lease.exists() {
        if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!("a never took the lease: {}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(lease.exists(), "the killed process left its lease behind");
    dav.set_faults(json!({})).unwrap();

    let started = Instant::now();
    let s = b.json(&["sync"]);
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(1500), "b did not respect a's lease (waited {waited:?})");
    assert!(waited < Duration::from_secs(25), "b waited far longer than the TTL: {waited:?}");
    assert_eq!(s["errors"].as_u64(), Some(0), "{s}");
    a.ok(&["sync"]);
    b.ok(&["sync"]);
    assert_eq!(live(&a), live(&b));
    for id in ids.iter().chain([&from_b]) {
        assert!(live(&b).contains_key(id), "{id} was lost");
    }
    assert_no_temp_files(&dav);
}

/// A sync that takes longer than the lease TTL keeps its lease by renewal:
/// a rival that arrives after one TTL finds the lease alive.
#[test]
fn a_sync_slower_than_the_lease_ttl_keeps_its_lease() {
    let dav = server(ServerKind::Wsgidav, false);
    let tmp = tempfile::tempdir().unwrap();
    let mut a = Site::dav(tmp.path(), "a", &dav);
    let mut b = Site::dav(tmp.path(), "b", &dav);
    for s in [&mut a, &mut b] {
        s.ok(&["init"]);
        // HTTP dates have one-second resolution: a TTL of a few seconds
        // keeps the test quick without judging expiry within that error.
        s.set_env("DAVSYNC_LEASE_TTL_MS", "6000");
        s.set_env("DAVSYNC_TRANSFERS", "1");
    }
    b.set_env("DAVSYNC_LOCK_WAIT_MS", "0");
    for i in 0..40 {
        a.add(&format!("a{i}.pdf"), format!("%PDF slow {i}").as_bytes());
    }
    b.add("b.pdf", b"%PDF b");
    dav.set_faults(json!({"delay_ms": 150})).unwrap();
    let started = Instant::now();
    let mut child = a.spawn(&["--json", "sync"]);
    // One and a half TTLs in, a must still be syncing: only a renewed lease
    // keeps b out now.
    std::thread::sleep(Duration::from_millis(9000));
    assert!(child.try_wait().unwrap().is_none(), "a finished within 1.5 TTLs: the test proves nothing");
    let rival = b.run(&["sync"]);
    let still_running = child.try_wait().unwrap().is_none();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "a failed: {}", String::from_utf8_lossy(&out.stderr));
    assert!(still_running, "a finished while b ran ({:?}): the test proves nothing", started.elapsed());
    assert!(!rival.status.success(), "b got in while a was still syncing");
    let err = String::from_utf8_lossy(&rival.stderr);
    assert!(err.contains("lock") || err.contains("lease"), "b's error should name the lock: {err}");
    dav.set_faults(json!({})).unwrap();
    b.set_env("DAVSYNC_LOCK_WAIT_MS", "30000");
    b.ok(&["sync"]);
    a.ok(&["sync"]);
    assert_eq!(live(&a), live(&b));
}

/// Wrong credentials, an unreachable server and a full disk: one clear line
/// each, and the local database and files exactly as they were.
#[test]
fn failures_are_clear_and_leave_local_state_unchanged() {
    let dav = server(ServerKind::Wsgidav, true);
    let tmp = tempfile::tempdir().unwrap();
    let mut a = Site::dav(tmp.path(), "a", &dav);
    a.ok(&["init"]);
    a.add("first.pdf", b"%PDF first");
    a.ok(&["sync"]);
    a.add("p.pdf", b"%PDF p");

    let check = |site: &Site, what: &str, wanted: &[&str]| {
        let before = site.snapshot();
        let out = site.run(&["sync"]);
        assert!(!out.status.success(), "{what}: the sync succeeded");
        let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
        assert!(wanted.iter().any(|w| err.contains(w)), "{what}: unclear error {err:?}");
        assert!(
            !err.contains("davsync-secret") && !err.contains("wrong-secret"),
            "{what}: password leaked: {err}"
        );
        assert_eq!(site.snapshot(), before, "{what}: local state changed");
    };

    a.set_env("WEBDAV_PASSWORD", "wrong-secret");
    check(&a, "wrong password", &["unauthorized", "credentials"]);

    let mut gone = Site::dav(tmp.path(), "a", &dav);
    gone.remote = format!("http://127.0.0.1:{}/", closed_port());
    gone.set_env("DAVSYNC_TIMEOUT_SECS", "5");
    check(&gone, "unreachable server", &["unavailable", "connect", "refused"]);

    let a = Site::dav(tmp.path(), "a", &dav);
    dav.set_faults(json!({"put_status": 507})).unwrap();
    check(&a, "507 on PUT", &["storage"]);
    dav.set_faults(json!({})).unwrap();
    let s = a.json(&["sync"]);
    assert_eq!(s["uploaded"].as_u64(), Some(1), "{s}");
}

fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// The probe finds what each server honours (TOOLCHAIN.md's table, measured
/// again), and leaves nothing behind.
#[test]
fn the_probe_learns_what_each_server_honours() {
    use davsync::webdav::{WebDav, WebDavConfig};
    for kind in crate::servers::all_kinds() {
        let dav = server(kind, false);
        let client = WebDav::new(WebDavConfig::new(&dav.url).unwrap());
        let caps = client.capabilities();
        let honours = kind != ServerKind::Rclone;
        assert_eq!((caps.if_none_match, caps.if_match), (honours, honours), "{}: {caps:?}", kind.name());
        if kind == ServerKind::Apache {
            assert!(caps.weak_etag_after_write, "Apache's fresh ETags are weak: {caps:?}");
        }
        let left: Vec<_> = std::fs::read_dir(dav.dir.join(".davsync-tmp")).unwrap().collect();
        assert!(left.is_empty(), "{}: the probe left {left:?}", kind.name());
    }
}
