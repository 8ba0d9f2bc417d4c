//! `davsync serve` end to end: the real binary on a loopback port, driven by a
//! real HTTP client (ureq), with the CLI acting on the same data folders.
//!
//! A sync is held mid-way deterministically by a lease that a "rival" holds
//! on the remote: the sync waits for it (up to its `lock_wait_ms`), and
//! the test releases it by removing the lock folder once it has checked what
//! it wanted to check while the sync ran.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const TOKEN: &str = "api-test-token-0123456789";
/// Generous bound on any one request or stream, so a broken server fails the
/// test instead of hanging it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

fn cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("component-cache")
}

/// One data folder on a shared folder remote.
struct Instance {
    root: PathBuf,
    data: PathBuf,
    remote: PathBuf,
}

impl Instance {
    fn new(root: &Path, name: &str) -> Instance {
        Instance { root: root.to_path_buf(), data: root.join(name), remote: root.join("remote") }
    }

    fn command(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_davsync"));
        c.env("DAVSYNC_DATA", &self.data)
            .env("DAVSYNC_REMOTE", &self.remote)
            .env_remove("DAVSYNC_DB")
            .env_remove("DAVSYNC_API_TOKEN")
            .env_remove("DAVSYNC_LEASE_TTL_MS")
            .env_remove("DAVSYNC_LOCK_WAIT_MS")
            .env("XDG_CACHE_HOME", cache_dir())
            .current_dir(&self.root);
        c
    }

    fn cli(&self, args: &[&str]) -> Output {
        self.command().args(args).output().expect("davsync runs")
    }

    #[track_caller]
    fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(out.status.success(), "davsync {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// Adds a PDF with `body`; returns its stable id.
    fn add(&self, name: &str, body: &[u8]) -> String {
        let src = self.write(name, body);
        self.ok(&["add", &src, "--doc-id", &format!("10.1/{name}")]).trim().to_owned()
    }

    fn edit(&self, stable_id: &str, body: &[u8]) {
        let src = self.write(&format!("{stable_id}.new.pdf"), body);
        self.ok(&["edit", stable_id, &src]);
    }

    fn write(&self, name: &str, body: &[u8]) -> String {
        let p = self.root.join(format!("src-{name}"));
        std::fs::write(&p, body).unwrap();
        p.to_str().unwrap().to_owned()
    }

    fn ls(&self) -> Vec<Value> {
        let out = self.ok(&["--json", "ls"]);
        serde_json::from_str::<Value>(&out).unwrap().as_array().unwrap().clone()
    }

    fn row(&self, stable_id: &str) -> Value {
        self.ls().into_iter().find(|r| r["stable_id"] == stable_id).expect("row listed")
    }

    fn serve(&self, extra: &[&str]) -> Server {
        self.serve_on("127.0.0.1:0", extra)
    }

    fn serve_on(&self, listen: &str, extra: &[&str]) -> Server {
        let mut child = self
            .command()
            .args(["serve", "--listen", listen])
            .args(extra)
            .env("DAVSYNC_API_TOKEN", TOKEN)
            // The held-lock tests keep a sync waiting; give them a wide margin.
            .env("DAVSYNC_LOCK_WAIT_MS", "120000")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("davsync serve starts");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        // Reads the address, then keeps draining stderr so the server never
        // blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.strip_prefix("davsync: listening on http://") {
                    let _ = tx.send(Ok(addr.to_owned()));
                } else {
                    let _ = tx.send(Err(line));
                }
            }
        });
        let mut early = Vec::new();
        let base = loop {
            match rx.recv_timeout(REQUEST_TIMEOUT) {
                Ok(Ok(addr)) => break addr,
                Ok(Err(line)) => early.push(line),
                Err(_) => panic!("davsync serve did not start: {early:?}"),
            }
        };
        Server { child, base }
    }

    /// Makes the remote's sync lock look held by another instance, for ten
    /// minutes: a sync then waits in its "acquiring the sync lock" step.
    fn hold_remote_lock(&self) -> RemoteLockHeld {
        let dir = self.remote.join("version.txt.lock");
        std::fs::create_dir_all(&dir).unwrap();
        let lease = json!({"owner": "rival", "host": "elsewhere", "nonce": "1", "ttl_ms": 600_000});
        std::fs::write(dir.join("lease.json"), lease.to_string()).unwrap();
        RemoteLockHeld { dir }
    }
}

struct RemoteLockHeld {
    dir: PathBuf,
}

impl RemoteLockHeld {
    fn release(self) {
        std::fs::remove_dir_all(&self.dir).unwrap();
    }
}

fn hash(body: &[u8]) -> String {
    Sha256::digest(body).iter().map(|b| format!("{b:02x}")).collect()
}

/// A running `davsync serve`, killed when dropped.
struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug, Clone, Copy)]
enum Auth<'a> {
    None,
    Bearer(&'a str),
    Session(&'a str),
    Raw(&'a str),
}

#[derive(Debug)]
struct Reply {
    status: u16,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(REQUEST_TIMEOUT))
        .build()
        .into()
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.base)
    }

    fn request(&self, method: &str, path: &str, body: Option<&str>, auth: Auth<'_>) -> Reply {
        send(&self.url(path), method, body, auth)
    }

    fn get(&self, path: &str) -> Reply {
        self.request("GET", path, None, Auth::Bearer(TOKEN))
    }

    fn post(&self, path: &str, body: &str) -> Reply {
        self.request("POST", path, Some(body), Auth::Bearer(TOKEN))
    }

    /// `POST /api/sync` on another thread (it blocks until the sync ends).
    fn post_sync_in_background(&self, body: &'static str) -> std::thread::JoinHandle<Reply> {
        let url = self.url("/api/sync");
        std::thread::spawn(move || send(&url, "POST", Some(body), Auth::Bearer(TOKEN)))
    }

    fn status(&self) -> Value {
        let r = self.get("/api/sync/status");
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()
    }

    fn subscribe(&self) -> Events {
        let resp = agent()
            .get(self.url("/api/sse/subscribe"))
            .header("X-Session-Id", TOKEN)
            .call()
            .expect("subscribe");
        assert_eq!(resp.status(), 200);
        let ct = resp.headers().get("content-type").unwrap().to_str().unwrap().to_owned();
        assert!(ct.starts_with("text/event-stream"), "{ct}");
        Events { lines: BufReader::new(resp.into_body().into_reader()) }
    }
}

fn send(url: &str, method: &str, body: Option<&str>, auth: Auth<'_>) -> Reply {
    let agent = agent();
    let header = match auth {
        Auth::None => None,
        Auth::Bearer(t) => Some(("Authorization", format!("Bearer {t}"))),
        Auth::Session(t) => Some(("X-Session-Id", t.to_owned())),
        Auth::Raw(v) => Some(("Authorization", v.to_owned())),
    };
    let result = match method {
        "GET" => {
            let mut r = agent.get(url);
            if let Some((k, v)) = &header {
                r = r.header(*k, v);
            }
            r.call()
        }
        "POST" => {
            let mut r = agent.post(url).header("Content-Type", "application/json");
            if let Some((k, v)) = &header {
                r = r.header(*k, v);
            }
            r.send(body.unwrap_or(""))
        }
        other => panic!("method {other}"),
    };
    let mut resp = result.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    Reply { status: resp.status().as_u16(), body: resp.body_mut().read_to_string().unwrap() }
}

/// One subscriber's event stream, read as it arrives.
struct Events {
    lines: BufReader<ureq::BodyReader<'static>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Event {
    name: String,
    data: String,
}

impl Events {
    /// The next event (comments such as the keep-alive are skipped).
    fn next(&mut self) -> Event {
        let (mut name, mut data) = (String::new(), Vec::<String>::new());
        loop {
            let mut line = String::new();
            let n = self.lines.read_line(&mut line).expect("reading the event stream");
            assert!(n > 0, "the event stream ended");
            let line = line.trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                if name.is_empty() && data.is_empty() {
                    continue;
                }
                return Event { name, data: data.join("\n") };
            }
            if let Some(v) = line.strip_prefix("event:") {
                name = v.trim_start().to_owned();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push(v.strip_prefix(' ').unwrap_or(v).to_owned());
            }
        }
    }

    /// Events up to and including the first that `stop` accepts.
    fn until(&mut self, stop: impl Fn(&Event) -> bool) -> Vec<Event> {
        let mut seen = Vec::new();
        loop {
            let e = self.next();
            let done = stop(&e);
            seen.push(e);
            if done {
                return seen;
            }
        }
    }

    /// Up to the sync's end (`syncComplete` or `syncError`).
    fn until_end(&mut self) -> Vec<Event> {
        self.until(|e| e.name == "syncComplete" || e.name == "syncError")
    }

    fn until_message(&mut self, text: &str) -> Vec<Event> {
        self.until(|e| e.name == "syncMessage" && e.data.contains(text))
    }
}

fn one_instance() -> (tempfile::TempDir, Instance) {
    let tmp = tempfile::tempdir().unwrap();
    let a = Instance::new(tmp.path(), "a");
    a.ok(&["init"]);
    (tmp, a)
}

/// `--listen` takes a host name, as a newcomer writes it: `localhost:PORT`.
#[test]
fn serve_listens_on_a_host_name() {
    let (_tmp, a) = one_instance();
    let server = a.serve_on("localhost:0", &[]);
    assert!(server.base.starts_with("127.0.0.1:") || server.base.starts_with("[::1]:"), "{}", server.base);
    // Answers: an instance that never synced needs a sync.
    assert_eq!(server.status()["needs_sync"], true);
    let out = a.cli(&["serve", "--listen", "127.0.0.1", "--token", TOKEN]);
    assert_eq!(out.status.code(), Some(2), "a port is required");
    assert!(String::from_utf8_lossy(&out.stderr).contains("host:port"));
}

/// The README's `davsync serve` block, run as written by bash in a fresh
/// folder (the embedded default data folder and remote, the default
/// address): the server starts, and the block's own request gets the
/// status. Uses the documented port, 8765.
#[test]
fn the_readme_serve_block_runs_as_written() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let section = readme.split("\n## HTTP API").nth(1).expect("README has an HTTP API section");
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("\n```").next())
        .expect("the HTTP API section has a sh block");
    assert!(block.contains("davsync serve"), "{block}");
    let tmp = tempfile::tempdir().unwrap();
    let bin = tmp.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_davsync"), bin.join("davsync")).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    // Whatever the block starts in the background is stopped when it ends.
    let script = format!("set -eu\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n{block}\n");
    let out = Command::new("bash")
        .args(["-c", &script])
        .current_dir(tmp.path())
        .env("PATH", path)
        .env("XDG_CACHE_HOME", cache_dir())
        .env_remove("DAVSYNC_API_TOKEN")
        .env_remove("DAVSYNC_DATA")
        .env_remove("DAVSYNC_REMOTE")
        .env_remove("DAVSYNC_DB")
        .env_remove("DAVSYNC_CONFIG")
        .env_remove("WEBDAV_BASE_URL")
        .stdin(Stdio::null())
        .output()
        .expect("bash runs");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the README block failed:\n{block}\nstdout: {stdout}\nstderr: {stderr}");
    assert!(stderr.contains("davsync: listening on http://127.0.0.1:8765"), "{stderr}");
    let status: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    // A fresh folder has never synced.
    assert_eq!(status["needs_sync"], true, "{status}");
    assert_eq!(status["sync_in_progress"], false, "{status}");
}

#[test]
fn serve_refuses_to_start_without_a_token() {
    let (_tmp, a) = one_instance();
    let out = a.cli(&["serve", "--listen", "127.0.0.1:0"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("DAVSYNC_API_TOKEN") && err.contains("--token"), "{err}");
    let out = a.cli(&["serve", "--listen", "127.0.0.1:0", "--token", "short"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("too short"));
}

#[test]
fn every_route_answers_401_without_the_token() {
    let (_tmp, a) = one_instance();
    a.add("p.pdf", b"%PDF one");
    let server = a.serve(&[]);
    let routes = [
        ("GET", "/sync/status"),
        ("POST", "/sync"),
        ("GET", "/sync/conflicts"),
        ("POST", "/sync/resolve-conflict"),
        ("GET", "/sse/subscribe"),
        ("GET", "/no/such/route"),
    ];
    let wrong = "wrong-token-wrong-token";
    let right_scheme_less = TOKEN;
    for prefix in ["/api", "/api/v1"] {
        for (method, route) in routes {
            let path = format!("{prefix}{route}");
            for auth in [
                Auth::None,
                Auth::Bearer(wrong),
                Auth::Session(wrong),
                Auth::Raw(right_scheme_less),
                Auth::Raw(&format!("Basic {TOKEN}")),
            ] {
                let r = server.request(method, &path, Some(r#"{"force":true}"#), auth);
                assert_eq!(r.status, 401, "{method} {path} with {auth:?}: {}", r.body);
                assert_eq!(r.json()["kind"], "unauthorized");
            }
        }
    }
    // None of those started a sync.
    let status = server.status();
    assert_eq!(status["local_version"], Value::Null);
    assert_eq!(status["unsynced_count"], 1);
    // Both header forms work, under both prefixes.
    for path in ["/api/sync/status", "/api/v1/sync/status"] {
        assert_eq!(server.request("GET", path, None, Auth::Bearer(TOKEN)).status, 200);
        assert_eq!(server.request("GET", path, None, Auth::Session(TOKEN)).status, 200);
    }
}

#[test]
fn status_reflects_a_sync_and_a_later_local_change() {
    let (_tmp, a) = one_instance();
    let id = a.add("p.pdf", b"%PDF status");
    let server = a.serve(&[]);
    let before = server.status();
    assert_eq!(before["needs_sync"], true);
    assert_eq!(before["unsynced_count"], 1);
    assert_eq!(before["local_version"], Value::Null);
    assert_eq!(before["sync_in_progress"], false);
    assert!(before.get("remote_version").is_some() && before.get("last_sync_time").is_some());

    let sync = server.post("/api/sync", r#"{"force": false}"#);
    assert_eq!(sync.status, 200, "{}", sync.body);
    let summary = sync.json();
    assert_eq!(summary["uploaded"], 1);
    assert_eq!(summary["skipped"], false);
    for field in [
        "skipped",
        "uploaded",
        "downloaded",
        "deleted_local",
        "deleted_remote",
        "metadata_synced",
        "conflicts",
        "errors",
        "new_version",
        "duration_ms",
        "message",
    ] {
        assert!(summary.get(field).is_some(), "summary lacks {field}: {summary}");
    }

    let after = server.status();
    assert_eq!(after["needs_sync"], false);
    assert_eq!(after["unsynced_count"], 0);
    assert_eq!(after["local_version"], summary["new_version"]);
    assert_eq!(after["remote_version"], summary["new_version"]);
    assert!(after["last_sync_time"].is_string());

    a.ok(&["set", &id, "--label", "changed"]);
    let changed = server.status();
    assert_eq!(changed["needs_sync"], true);
    assert_eq!(changed["unsynced_count"], 1);

    let again = server.post("/api/v1/sync", "{}").json();
    assert_eq!(again["skipped"], false);
    assert_eq!(again["metadata_synced"], 1);
    let idle = server.post("/api/sync", "").json();
    assert_eq!(idle["skipped"], true, "{idle}");
}

#[test]
fn two_subscribers_see_the_progress_in_order_and_the_summary_of_the_post() {
    let (_tmp, a) = one_instance();
    let bodies: Vec<Vec<u8>> = (0..3).map(|n| format!("%PDF file {n}").into_bytes()).collect();
    for (n, body) in bodies.iter().enumerate() {
        a.add(&format!("p{n}.pdf"), body);
    }
    let server = a.serve(&[]);
    let mut first = server.subscribe();
    let mut second = server.subscribe();
    for s in [&mut first, &mut second] {
        let hello = s.next();
        assert_eq!(hello.name, "connected");
        assert_eq!(serde_json::from_str::<Value>(&hello.data).unwrap()["sync_in_progress"], false);
    }

    let reply = server.post("/api/sync", r#"{"force":false}"#);
    assert_eq!(reply.status, 200, "{}", reply.body);
    let seen_first = first.until_end();
    let seen_second = second.until_end();
    assert_eq!(seen_first, seen_second, "every subscriber gets every event, in the same order");

    let last = seen_first.last().unwrap();
    assert_eq!(last.name, "syncComplete");
    assert_eq!(last.data, reply.body, "syncComplete carries exactly the POST's answer");

    let percents: Vec<u8> =
        seen_first.iter().filter(|e| e.name == "syncProgress").map(|e| e.data.parse().unwrap()).collect();
    assert_eq!(percents.first(), Some(&0));
    assert_eq!(percents.last(), Some(&100));
    assert!(percents.windows(2).all(|w| w[0] < w[1]), "progress only goes up: {percents:?}");

    let messages: Vec<&str> =
        seen_first.iter().filter(|e| e.name == "syncMessage").map(|e| e.data.as_str()).collect();
    let at = |text: &str| {
        messages
            .iter()
            .position(|m| m.contains(text))
            .unwrap_or_else(|| panic!("no {text:?} in {messages:?}"))
    };
    assert!(at("checking for changes") < at("acquiring the sync lock"));
    // A line per file, naming its blob, between taking the lock and the commit.
    for body in &bodies {
        let blob = at(&hash(body));
        assert!(at("acquiring the sync lock") < blob && blob < at("committing version"));
    }
    assert!(at("committing version") < at("sync complete"));
}

#[test]
fn malformed_bodies_are_422_and_oversized_ones_413() {
    let (_tmp, a) = one_instance();
    a.add("p.pdf", b"%PDF malformed");
    let server = a.serve(&[]);
    for path in ["/api/sync", "/api/v1/sync"] {
        for body in [r#"{"force":"invalid"}"#, "{", "[1]", r#"{"force":1}"#] {
            let r = server.post(path, body);
            assert_eq!(r.status, 422, "{path} {body}: {}", r.body);
            assert_eq!(r.json()["kind"], "malformed_body");
        }
    }
    for body in ["", r#"{"resolution":5,"stable_id":"x"}"#, r#"{"resolution":"local_wins"}"#] {
        let r = server.post("/api/sync/resolve-conflict", body);
        assert_eq!(r.status, 422, "{body}: {}", r.body);
    }
    let huge = format!(r#"{{"force":false,"pad":"{}"}}"#, "x".repeat(200 * 1024));
    assert_eq!(server.post("/api/sync", &huge).status, 413);
    // No sync ran.
    assert_eq!(server.status()["local_version"], Value::Null);
}

#[test]
fn a_second_sync_while_one_runs_is_409_and_the_cli_is_locked_out() {
    let (_tmp, a) = one_instance();
    let id = a.add("p.pdf", b"%PDF held");
    let lock = a.hold_remote_lock();
    let server = a.serve(&[]);
    let mut watcher = server.subscribe();
    assert_eq!(watcher.next().name, "connected");
    let first = server.post_sync_in_background(r#"{"force":false}"#);
    watcher.until_message("acquiring the sync lock");

    // The sync now waits for the rival's lease.
    let second = server.post("/api/sync", r#"{"force":true}"#);
    assert_eq!(second.status, 409, "{}", second.body);
    let busy = second.json();
    assert_eq!(busy["kind"], "sync_running");
    assert_eq!(busy["running"], "sync");
    let since = busy["since"].as_str().expect("since when");
    assert!(since.contains('T') && busy["error"].as_str().unwrap().contains(since), "{busy}");
    assert_eq!(server.status()["sync_in_progress"], true);

    // A subscriber joining now first learns where the sync is.
    let mut late = server.subscribe();
    let hello = late.next();
    assert_eq!(serde_json::from_str::<Value>(&hello.data).unwrap()["sync_in_progress"], true);
    assert_eq!(late.next(), Event { name: "syncProgress".into(), data: "5".into() });

    // Resolutions wait too, through the API and the CLI.
    let r = server.post(
        "/api/sync/resolve-conflict",
        &json!({"stable_id": id, "resolution": "local_wins"}).to_string(),
    );
    assert_eq!(r.status, 409, "{}", r.body);
    for args in [&["sync"][..], &["resolve", &id, "local"]] {
        let out = a.cli(args);
        assert!(!out.status.success(), "{args:?} ran beside the server's sync");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("davsync.lock") && err.contains("another davsync sync is running"), "{err}");
    }

    lock.release();
    let done = first.join().unwrap();
    assert_eq!(done.status, 200, "{}", done.body);
    assert_eq!(done.json()["uploaded"], 1);
    let end = late.until_end();
    assert_eq!(end.last().unwrap().data, done.body);
    // The folder is free again, for the API and the CLI.
    assert_eq!(server.post("/api/sync", "{}").json()["skipped"], true);
    a.ok(&["sync"]);
}

#[test]
fn a_subscriber_leaving_mid_sync_does_not_harm_the_sync() {
    let tmp = tempfile::tempdir().unwrap();
    let a = Instance::new(tmp.path(), "a");
    let b = Instance::new(tmp.path(), "b");
    a.ok(&["init"]);
    b.ok(&["init"]);
    a.add("p1.pdf", b"%PDF leave 1");
    a.add("p2.pdf", b"%PDF leave 2");
    let lock = a.hold_remote_lock();
    let server = a.serve(&[]);
    let mut leaving = server.subscribe();
    let mut staying = server.subscribe();
    let post = server.post_sync_in_background("{}");
    leaving.until_message("acquiring the sync lock");
    drop(leaving);
    staying.until_message("acquiring the sync lock");

    lock.release();
    let done = post.join().unwrap();
    assert_eq!(done.status, 200, "{}", done.body);
    assert_eq!(done.json()["uploaded"], 2);
    let end = staying.until_end();
    assert_eq!(end.last().unwrap().name, "syncComplete");
    assert_eq!(end.last().unwrap().data, done.body);
    assert_eq!(server.status()["needs_sync"], false);
    // The commit is whole: another instance gets both files.
    let pulled: Value = serde_json::from_str(&b.ok(&["--json", "sync"])).unwrap();
    assert_eq!(pulled["downloaded"], 2);
}

#[test]
fn conflicts_are_listed_and_each_resolution_works_through_the_api() {
    let tmp = tempfile::tempdir().unwrap();
    let a = Instance::new(tmp.path(), "a");
    let b = Instance::new(tmp.path(), "b");
    a.ok(&["init"]);
    b.ok(&["init"]);
    let ids: Vec<String> =
        (0..3).map(|n| a.add(&format!("c{n}.pdf"), format!("%PDF base {n}").as_bytes())).collect();
    let server = a.serve(&[]);
    assert_eq!(server.post("/api/sync", "{}").status, 200);
    b.ok(&["sync"]);
    let content = |side: &str, n: usize| format!("%PDF {side} edit {n}").into_bytes();
    for (n, id) in ids.iter().enumerate() {
        b.edit(id, &content("b", n));
    }
    b.ok(&["sync"]);
    for (n, id) in ids.iter().enumerate() {
        a.edit(id, &content("a", n));
    }
    let sync = server.post("/api/sync", "{}").json();
    assert_eq!(sync["conflicts"], 3, "{sync}");

    let listed = server.get("/api/sync/conflicts");
    assert_eq!(listed.status, 200, "{}", listed.body);
    let listed = listed.json();
    assert_eq!(listed["total"], 3);
    for (n, id) in ids.iter().enumerate() {
        let c = listed["conflicts"].as_array().unwrap().iter().find(|c| c["stable_id"] == **id).unwrap();
        assert_eq!(c["file_id"], hash(&content("a", n)));
        assert_eq!(c["local_hash"], hash(&content("a", n)));
        assert_eq!(c["remote_hash"], hash(&content("b", n)));
        assert_eq!(c["filename"], format!("src-c{n}.pdf"));
        assert_eq!(c["doc_id"], format!("10.1/c{n}.pdf"));
        assert_eq!(c["conflict_type"], "both_modified");
        assert!(c["local_modified_at"].as_str().unwrap().contains('T'));
        assert!(c["remote_modified_at"].as_str().unwrap().contains('T'));
    }
    assert_eq!(server.get("/api/v1/sync/conflicts").json()["total"], 3);

    let resolve = |body: Value| server.post("/api/sync/resolve-conflict", &body.to_string());
    // What cannot apply.
    let r = resolve(json!({"stable_id": "no-such-file", "resolution": "local_wins"}));
    assert_eq!(r.status, 404, "{}", r.body);
    let r = resolve(json!({"file_id": hash(b"nothing has this"), "resolution": "local_wins"}));
    assert_eq!(r.status, 404, "{}", r.body);
    let r = resolve(json!({"stable_id": ids[0], "resolution": "mine_wins"}));
    assert_eq!(r.status, 400, "{}", r.body);
    let r = resolve(json!({"stable_id": ids[2], "resolution": "keep_both"}));
    assert_eq!(r.status, 400, "{}", r.body);

    // Each resolution, by stable_id and by file_id.
    let r = resolve(json!({"stable_id": ids[0], "resolution": "local_wins"}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["resolution"], "local_wins");
    let r = resolve(json!({"stable_id": ids[0], "resolution": "local_wins"}));
    assert_eq!(r.status, 400, "resolving twice: {}", r.body);
    assert_eq!(r.json()["kind"], "not_in_conflict");
    let r = resolve(json!({"file_id": hash(&content("a", 1)), "resolution": "remote_wins"}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["stable_id"], ids[1]);
    let r = server.post(
        "/api/v1/sync/resolve-conflict",
        &json!({"stable_id": ids[2], "resolution": "keep_both", "new_variant": "mine"}).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let copy = r.json()["new_stable_id"].as_str().expect("keep_both names the copy").to_owned();

    let sync = server.post("/api/sync", "{}");
    assert_eq!(sync.status, 200, "{}", sync.body);
    assert_eq!(server.get("/api/sync/conflicts").json()["total"], 0);
    b.ok(&["sync"]);
    // local_wins: a's content everywhere. remote_wins: b's content everywhere.
    assert_eq!(b.row(&ids[0])["id"], hash(&content("a", 0)));
    assert_eq!(a.row(&ids[0])["id"], hash(&content("a", 0)));
    assert_eq!(a.row(&ids[1])["id"], hash(&content("b", 1)));
    // keep_both: the original takes b's content, the copy keeps a's.
    assert_eq!(a.row(&ids[2])["id"], hash(&content("b", 2)));
    let a_copy = a.row(&copy);
    assert_eq!(a_copy["id"], hash(&content("a", 2)));
    assert_eq!(a_copy["variant"], "mine");
    assert_eq!(b.row(&copy)["id"], hash(&content("a", 2)));
}

#[test]
fn a_failing_sync_yields_sync_error_and_a_5xx_with_the_cause() {
    let tmp = tempfile::tempdir().unwrap();
    // The remote folder cannot exist: its parent is a regular file.
    std::fs::write(tmp.path().join("blocker"), b"not a folder").unwrap();
    let a = Instance {
        root: tmp.path().into(),
        data: tmp.path().join("a"),
        remote: tmp.path().join("blocker/remote"),
    };
    a.add("p.pdf", b"%PDF failing");
    let server = a.serve(&[]);
    let mut watcher = server.subscribe();
    assert_eq!(watcher.next().name, "connected");

    let r = server.post("/api/sync", "{}");
    assert!((500..600).contains(&r.status), "{} {}", r.status, r.body);
    let cause = r.json()["error"].as_str().unwrap().to_owned();
    assert!(cause.contains("blocker"), "the cause names the remote: {cause}");
    let end = watcher.until_end();
    let last = end.last().unwrap();
    assert_eq!(last.name, "syncError");
    assert_eq!(last.data, r.body, "syncError carries the same cause");

    let status = server.get("/api/sync/status");
    assert!((500..600).contains(&status.status), "{}", status.body);
    // The failure released the folder: the next attempt fails the same way, not with 409.
    assert!((500..600).contains(&server.post("/api/sync", "{}").status));
}

#[test]
fn the_interval_syncs_a_local_change_by_itself() {
    let (_tmp, a) = one_instance();
    let server = a.serve(&["--interval", "1"]);
    let mut watcher = server.subscribe();
    assert_eq!(watcher.next().name, "connected");
    a.add("p.pdf", b"%PDF interval");
    // Whichever tick sees the new file uploads it; others may come before.
    let end = watcher.until(|e| {
        e.name == "syncError"
            || (e.name == "syncComplete" && serde_json::from_str::<Value>(&e.data).unwrap()["uploaded"] == 1)
    });
    assert_eq!(end.last().unwrap().name, "syncComplete", "{end:?}");
    assert_eq!(server.status()["unsynced_count"], 0);
}
