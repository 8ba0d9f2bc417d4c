//! Each real WebDAV server of `servers.rs` starts and does the WebDAV basics
//! the sync relies on; wsgidav's fault injection and request count work.
//!
//! What the servers do with conditional requests and MKCOL, as asserted by
//! `conditionals_and_mkcol` below (rclone 1.60.1, Apache 2.4.71, wsgidav 4.4.0):
//!
//! | request                                  | wsgidav | apache                  | rclone            |
//! |------------------------------------------|---------|-------------------------|-------------------|
//! | `PUT If-None-Match: *`, file exists      | 412     | 412                     | 201: overwrites   |
//! | `PUT If-Match: <ETag just read>`         | 204     | 412 if the ETag is weak `W/"…"` (file changed < 1 s ago), else 204 | 201 |
//! | `PUT If-Match: "bogus"`                  | 412     | 412                     | 201: overwrites   |
//! | `MKCOL` on an existing collection        | 405     | 405                     | 201: no error!    |
//! | `PUT` answer for a new / existing file   | 201/204 | 201/204                 | 201/201           |

use std::time::{Duration, Instant};

use serde_json::json;

use crate::servers::{DavServer, HttpResponse, ServerKind, all_kinds};

fn start(kind: ServerKind, auth: bool) -> DavServer {
    let server = DavServer::start(kind, auth).unwrap_or_else(|e| panic!("{e:#}"));
    eprintln!("{} (auth: {auth}) answered after {:?}", kind.name(), server.startup);
    server
}

#[track_caller]
fn expect(r: &HttpResponse, status: u16, what: &str) {
    assert_eq!(r.status, status, "{what}: {} {}", r.status, r.text());
}

/// MKCOL, PUT, GET, PROPFIND, MOVE, DELETE of a tree, and Basic auth.
fn basics(kind: ServerKind) {
    let s = start(kind, true);
    let req = |m: &str, p: &str, h: &[(&str, &str)], b: &[u8]| s.request(m, p, h, b).unwrap();

    expect(&req("MKCOL", "d/", &[], b""), 201, "MKCOL d/");
    expect(&req("PUT", "d/a.txt", &[], b"hello"), 201, "PUT new file");
    let got = req("GET", "d/a.txt", &[], b"");
    expect(&got, 200, "GET");
    assert_eq!(got.body, b"hello");
    assert_eq!(std::fs::read(s.dir.join("d/a.txt")).unwrap(), b"hello");

    // A large body: nothing limits uploads.
    let big = vec![b'x'; 4 << 20];
    let put = req("PUT", "d/big.bin", &[], &big);
    assert!(put.status == 201 || put.status == 204, "big PUT: {}", put.status);
    assert_eq!(std::fs::metadata(s.dir.join("d/big.bin")).unwrap().len(), big.len() as u64);

    let list = req("PROPFIND", "d/", &[("Depth", "1")], b"");
    expect(&list, 207, "PROPFIND Depth 1");
    assert!(list.text().contains("a.txt") && list.text().contains("big.bin"), "{}", list.text());

    let dest = s.url_of("d/b.txt");
    expect(&req("MOVE", "d/a.txt", &[("Destination", &dest), ("Overwrite", "F")], b""), 201, "MOVE");
    expect(&req("GET", "d/a.txt", &[], b""), 404, "GET moved-away file");
    assert_eq!(req("GET", "d/b.txt", &[], b"").body, b"hello");

    // A collection with content goes in one DELETE (Depth: infinity).
    expect(&req("MKCOL", "d/sub/", &[], b""), 201, "MKCOL d/sub/");
    expect(&req("PUT", "d/sub/f.txt", &[], b"f"), 201, "PUT d/sub/f.txt");
    expect(&req("DELETE", "d/", &[], b""), 204, "DELETE d/");
    expect(&req("GET", "d/sub/f.txt", &[], b""), 404, "GET in deleted tree");
    assert!(!s.dir.join("d").exists());

    let wrong = s.request_as(Some(("davsync", "wrong")), "GET", "", &[], b"").unwrap();
    expect(&wrong, 401, "wrong password");
    expect(&s.request_as(None, "PUT", "x.txt", &[], b"x").unwrap(), 401, "no credentials");
    assert!(!s.dir.join("x.txt").exists());
}

#[test]
fn servers_wsgidav_basics() {
    basics(ServerKind::Wsgidav);
}

#[test]
fn servers_apache_basics() {
    basics(ServerKind::Apache);
}

#[test]
fn servers_rclone_basics() {
    basics(ServerKind::Rclone);
}

/// Pins the table at the top of this file, for every server, anonymous.
#[test]
fn servers_conditionals_and_mkcol() {
    let servers: Vec<DavServer> = all_kinds().into_iter().map(|k| start(k, false)).collect();
    for s in &servers {
        let name = s.kind.name();
        let req = |m: &str, p: &str, h: &[(&str, &str)], b: &[u8]| s.request(m, p, h, b).unwrap();
        let rclone = s.kind == ServerKind::Rclone;

        expect(&req("PUT", "c.txt", &[], b"one"), 201, name);
        let r = req("PUT", "c.txt", &[("If-None-Match", "*")], b"two");
        expect(&r, if rclone { 201 } else { 412 }, &format!("{name}: If-None-Match: *"));
        let expected_body: &[u8] = if rclone { b"two" } else { b"one" };
        assert_eq!(std::fs::read(s.dir.join("c.txt")).unwrap(), expected_body, "{name}");

        let etag = req("GET", "c.txt", &[], b"").header("ETag").unwrap().to_string();
        let r = req("PUT", "c.txt", &[("If-Match", &etag)], b"three");
        let want = match s.kind {
            ServerKind::Wsgidav => 204,
            ServerKind::Apache if etag.starts_with("W/") => 412,
            ServerKind::Apache => 204,
            ServerKind::Rclone => 201,
        };
        expect(&r, want, &format!("{name}: If-Match {etag}"));

        let r = req("PUT", "c.txt", &[("If-Match", "\"bogus\"")], b"four");
        expect(&r, if rclone { 201 } else { 412 }, &format!("{name}: If-Match bogus"));

        expect(&req("MKCOL", "m/", &[], b""), 201, name);
        let r = req("MKCOL", "m/", &[], b"");
        expect(&r, if rclone { 201 } else { 405 }, &format!("{name}: MKCOL existing"));
    }
}

#[test]
fn servers_wsgidav_faults_and_count() {
    let s = start(ServerKind::Wsgidav, false);
    let req = |m: &str, p: &str| s.request(m, p, &[], if m == "PUT" { b"data" } else { b"" }).unwrap();
    let before = s.request_count().unwrap();
    assert!(before >= 1, "the readiness probe is a request");

    s.set_faults(json!({"put_status": 507})).unwrap();
    expect(&req("PUT", "a.txt"), 507, "put_status");
    assert!(!s.dir.join("a.txt").exists());
    expect(&req("MKCOL", "d/"), 201, "MKCOL under put_status");

    s.set_faults(json!({"status_for": {"PUT /d/": 503, "* /e": 500}})).unwrap();
    expect(&req("PUT", "d/x"), 503, "status_for PUT /d/");
    expect(&req("PUT", "x"), 201, "status_for, other path");
    expect(&req("GET", "e/f"), 500, "status_for * /e");

    s.set_faults(json!({"fail_after_requests": 2})).unwrap();
    expect(&req("PUT", "y1"), 201, "first of fail_after_requests");
    expect(&req("PUT", "y2"), 201, "second of fail_after_requests");
    expect(&req("GET", "y1"), 503, "after fail_after_requests");

    s.set_faults(json!({"fail_after_requests": 1, "put_status": 507})).unwrap();
    expect(&req("PUT", "z1"), 201, "before the put fault");
    expect(&req("PUT", "z2"), 507, "put fault after 1 request");
    expect(&req("GET", "z1"), 200, "GET unaffected");

    s.set_faults(json!({"delay_ms": 150})).unwrap();
    let t = Instant::now();
    expect(&req("GET", "z1"), 200, "delayed");
    assert!(t.elapsed() >= Duration::from_millis(150));

    // A hanging server, released at runtime.
    s.set_faults(json!({"hang": true})).unwrap();
    std::thread::scope(|scope| {
        let t = Instant::now();
        let pending = scope.spawn(|| s.request("GET", "z1", &[], b"").unwrap());
        std::thread::sleep(Duration::from_millis(300));
        assert!(!pending.is_finished(), "hang: answered anyway");
        s.set_faults(json!({})).unwrap();
        expect(&pending.join().unwrap(), 200, "released hang");
        assert!(t.elapsed() >= Duration::from_millis(300));
    });

    expect(&req("PUT", "a.txt"), 201, "faults cleared");
    // 14 requests since `before`, each counted once, faulted or not.
    assert_eq!(s.request_count().unwrap(), before + 14);
}

/// Auth off works for Apache's and rclone's anonymous configs too (wsgidav's
/// is covered above).
#[test]
fn servers_anonymous_read_write() {
    for kind in [ServerKind::Apache, ServerKind::Rclone] {
        let s = start(kind, false);
        assert!(s.user.is_none() && s.password.is_none());
        expect(&s.request("PUT", "a.txt", &[], b"anon").unwrap(), 201, kind.name());
        assert_eq!(s.request("GET", "a.txt", &[], b"").unwrap().body, b"anon");
        let seeded = s.seed_file("seed/s.txt", b"seed").unwrap();
        assert!(seeded.exists());
        let r = s.request("PUT", "seed/s.txt", &[], b"new").unwrap();
        assert!(r.status == 201 || r.status == 204, "PUT over a seeded file: {}", r.status);
        expect(&s.request("DELETE", "seed/", &[], b"").unwrap(), 204, "DELETE seeded folder");
    }
}

#[test]
fn servers_faults_are_wsgidav_only() {
    let s = start(ServerKind::Apache, false);
    assert!(s.set_faults(json!({})).is_err());
    assert!(s.request_count().is_err());
}
