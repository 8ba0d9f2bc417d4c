//! Remote maintenance end to end (issue 9): `davsync remote status|verify|gc`
//! against a real WebDAV server (wsgidav on 127.0.0.1), through the
//! component and the native core alike.

use davsync_core::model::ContentHash;
use serde_json::Value;

use crate::servers::{DavServer, ServerKind};
use crate::site::Site;

pub(crate) fn blob_rel(content: &[u8]) -> String {
    let h = ContentHash::of(content).to_string();
    format!("{}/{h}.pdf", &h[..2])
}

fn paths(list: &Value, key: Option<&str>) -> Vec<String> {
    let mut out: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|v| key.map_or(v, |k| &v[k]).as_str().unwrap().to_owned())
        .collect();
    out.sort();
    out
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// A remote with one live file (edited once, so its first content is
/// unreferenced) and one deleted file, all committed at version 4.
pub(crate) fn remote_with_garbage(dav: &DavServer, tmp: &std::path::Path) -> (Site, String) {
    let a = Site::dav(tmp, "a", dav);
    a.ok(&["init"]);
    let p1 = a.add("p1.pdf", b"%PDF one");
    let p2 = a.add("p2.pdf", b"%PDF two");
    a.ok(&["sync"]);
    a.ok(&["edit", &p1, &a.file("p1b.pdf", b"%PDF one, revised")]);
    a.ok(&["sync"]);
    a.ok(&["rm", &p2]);
    a.ok(&["sync"]);
    let head = davsync_core::history::Head::parse(&std::fs::read(dav.dir.join("version.txt")).unwrap());
    assert_eq!(head.unwrap().version, 3);
    (a, p1)
}

#[test]
fn remote_status_verify_and_gc_against_wsgidav() {
    let dav = DavServer::start(ServerKind::Wsgidav, true).expect("wsgidav starts");
    let tmp = tempfile::tempdir().unwrap();
    let (a, p1) = remote_with_garbage(&dav, tmp.path());
    // The maintainer is a separate machine: no data folder of its own.
    let m = Site::dav(tmp.path(), "maintainer", &dav);

    let s = m.json(&["remote", "status"]);
    assert_eq!((s["version"].as_i64(), s["version_txt"].as_i64()), (Some(3), Some(3)));
    assert_eq!((s["live_files"].as_u64(), s["tombstones"].as_u64()), (Some(1), Some(1)));
    assert_eq!(s["blob_count"], 3);
    assert_eq!(s["blob_bytes"], (8 + 8 + 17));
    assert_eq!(s["lease"], Value::Null);
    assert_eq!(m.json(&["--engine", "native", "remote", "status"]), s, "component and native agree");
    assert!(!m.data.exists(), "maintenance creates no local database");
    let text = m.ok(&["remote", "status"]);
    assert!(text.contains("version 3") && text.contains("1 live files, 1 tombstones"), "{text}");

    let garbage = sorted(vec![blob_rel(b"%PDF one"), blob_rel(b"%PDF two")]);
    let v = m.json(&["remote", "verify"]);
    assert_eq!((v["blobs_checked"].as_u64(), v["problems"].as_array().map(Vec::len)), (Some(1), Some(0)));
    assert_eq!(paths(&v["unreferenced"], Some("path")), garbage);

    // Within the grace period nothing goes.
    let g = m.json(&["remote", "gc", "--grace-secs", "3600"]);
    assert_eq!((g["deleted"].as_array().map(Vec::len), g["kept_young"].as_u64()), (Some(0), Some(2)));
    assert_eq!(g["version_after"], Value::Null);

    let g = m.json(&["remote", "gc", "--grace-secs", "0"]);
    assert_eq!(paths(&g["deleted"], None), garbage);
    assert_eq!((g["version_before"].as_i64(), g["version_after"].as_i64()), (Some(3), Some(4)));
    for rel in &garbage {
        assert!(!dav.dir.join(rel).exists(), "{rel} still on the server");
    }
    assert!(dav.dir.join(blob_rel(b"%PDF one, revised")).exists());
    assert!(!dav.dir.join("version.txt.lock").exists(), "gc released the lease");
    let s = m.json(&["remote", "status"]);
    assert_eq!(
        (s["version"].as_i64(), s["blob_count"].as_u64(), s["tombstones"].as_u64()),
        (Some(4), Some(1), Some(1))
    );

    // Instances carry on: the old one catches up, a new one gets the file.
    assert_eq!(a.json(&["sync"])["new_version"], 4);
    let b = Site::dav(tmp.path(), "b", &dav);
    b.ok(&["init"]);
    assert_eq!(b.json(&["sync"])["downloaded"], 1);
    assert_eq!(b.content(&p1), b"%PDF one, revised");
    assert!(m.json(&["remote", "verify"])["unreferenced"].as_array().unwrap().is_empty());
}

#[test]
fn verify_fails_on_a_damaged_blob_and_gc_respects_a_held_lease() {
    let dav = DavServer::start(ServerKind::Wsgidav, false).expect("wsgidav starts");
    let tmp = tempfile::tempdir().unwrap();
    let (_a, p1) = remote_with_garbage(&dav, tmp.path());
    let mut m = Site::dav(tmp.path(), "maintainer", &dav);

    let live = blob_rel(b"%PDF one, revised");
    dav.seed_file(&live, b"%PDF one, rotted").unwrap();
    let out = m.run(&["--json", "remote", "verify"]);
    assert!(!out.status.success(), "verify must fail on a damaged blob");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["problems"][0]["path"], live.as_str());
    assert_eq!(v["problems"][0]["stable_ids"][0], p1.as_str());
    assert_eq!(v["problems"][0]["fault"]["kind"], "hash_mismatch");
    assert_eq!(v["problems"][0]["fault"]["actual"], ContentHash::of(b"%PDF one, rotted").as_str());
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing or damaged"));
    std::fs::remove_file(dav.dir.join(&live)).unwrap();
    let v: Value = serde_json::from_slice(&m.run(&["--json", "remote", "verify"]).stdout).unwrap();
    assert_eq!(v["problems"][0]["fault"]["kind"], "missing");

    // A sync holds the lease: gc waits, then gives up and deletes nothing.
    let lease = r#"{"owner":"inst-z","host":"laptop","nonce":"n1","ttl_ms":120000}"#;
    dav.seed_file("version.txt.lock/lease.json", lease.as_bytes()).unwrap();
    let s = m.json(&["remote", "status"]);
    assert!(s["lease"]["holder"].as_str().unwrap().contains("inst-z"), "{s}");
    m.set_env("DAVSYNC_LOCK_WAIT_MS", "0");
    let out = m.run(&["remote", "gc", "--grace-secs", "0"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("lock is held") && err.contains("inst-z"), "{err}");
    assert!(dav.dir.join(blob_rel(b"%PDF two")).exists(), "nothing deleted");

    // An empty remote is reported as such, not as an error of the server.
    let empty = DavServer::start(ServerKind::Wsgidav, false).expect("wsgidav starts");
    let e = Site::dav(tmp.path(), "e", &empty);
    let out = e.run(&["remote", "status"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no metadata.db yet"));
}
