//! The deployable component (issue 9) under a real WASI runtime: the
//! composed `davsync-serverless.wasm` run by `wasmtime serve` (wasmtime-cli
//! 48.0.8, installed by `scripts/setup.sh`) against wsgidav on 127.0.0.1,
//! with content a native sync created. And its imports: standard WASI 0.2
//! only.
//!
//! The `wasmtime` binary: `$DAVSYNC_WASMTIME`, else
//! `${DAVSYNC_TOOLS:-$HOME/.cache/davsync-tools}/bin/wasmtime`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use davsync_core::model::ContentHash;
use serde_json::Value;

use crate::maintenance::{blob_rel, remote_with_garbage};
use crate::servers::{DavServer, HttpResponse, ServerKind, free_port, http_request};

/// The composed component, built by `host/build.rs`.
const SERVERLESS_WASM: &str = env!("DAVSYNC_SERVERLESS_WASM");
/// Compiling the component with cranelift on a loaded 2-core machine.
const START_TIMEOUT: Duration = Duration::from_secs(120);

fn wasmtime_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("DAVSYNC_WASMTIME") {
        return p.into();
    }
    let tools = std::env::var_os("DAVSYNC_TOOLS").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/davsync-tools")
    });
    tools.join("bin/wasmtime")
}

/// A `wasmtime serve` process; dropping it kills it.
struct Serve {
    child: Child,
    port: u16,
    log: tempfile::NamedTempFile,
}

impl Serve {
    /// Starts `wasmtime serve` on a free port with `env`; returns once it
    /// answers HTTP.
    fn start(env: &[(&str, &str)]) -> Result<Serve> {
        let bin = wasmtime_bin();
        if !bin.is_file() {
            bail!("{} is missing: run scripts/setup.sh to install wasmtime-cli 48.0.8", bin.display());
        }
        let port = free_port()?;
        let log = tempfile::NamedTempFile::new()?;
        let mut cmd = Command::new(&bin);
        cmd.arg("serve").arg("--addr").arg(format!("127.0.0.1:{port}")).args(["-S", "cli"]);
        for (k, v) in env {
            cmd.arg("--env").arg(format!("{k}={v}"));
        }
        cmd.arg(SERVERLESS_WASM).stdin(Stdio::null()).stdout(log.reopen()?).stderr(log.reopen()?);
        let child = cmd.spawn().with_context(|| format!("starting {}", bin.display()))?;
        let mut serve = Serve { child, port, log };
        let started = Instant::now();
        loop {
            if let Some(status) = serve.child.try_wait()? {
                bail!("wasmtime serve exited ({status}): {}", serve.logs());
            }
            if http_request(port, "GET", "/", &[], b"").is_ok() {
                return Ok(serve);
            }
            if started.elapsed() > START_TIMEOUT {
                bail!("wasmtime serve did not answer within {START_TIMEOUT:?}: {}", serve.logs());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    fn call(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, Value, HttpResponse) {
        let r = http_request(self.port, method, path, headers, b"")
            .unwrap_or_else(|e| panic!("{method} {path}: {e:#}\n{}", self.logs()));
        let json = serde_json::from_slice(&r.body)
            .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {}\n{}", r.text(), self.logs()));
        (r.status, json, r)
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect()).unwrap_or_default()
}

#[test]
fn wasmtime_serve_runs_status_verify_and_gc_against_wsgidav() {
    let dav = DavServer::start(ServerKind::Wsgidav, true).expect("wsgidav starts");
    let tmp = tempfile::tempdir().unwrap();
    // Content made by a real sync of the native host: version 3, one live
    // file, one tombstone, two unreferenced blobs.
    let (_a, p1) = remote_with_garbage(&dav, tmp.path());
    let (user, pass) = (dav.user.clone().unwrap(), dav.password.clone().unwrap());
    let serve = Serve::start(&[
        ("DAVSYNC_REMOTE_URL", &dav.url),
        ("DAVSYNC_REMOTE_USER", &user),
        ("DAVSYNC_REMOTE_PASSWORD", &pass),
        ("DAVSYNC_GC_TOKEN", "tok-3141"),
        ("DAVSYNC_GC_GRACE_MS", "3600000"),
        ("DAVSYNC_LOCK_WAIT_MS", "0"),
    ])
    .expect("wasmtime serve starts");

    let (code, s, _) = serve.call("GET", "/status", &[]);
    assert_eq!(code, 200, "{s}\n{}", serve.logs());
    assert_eq!((s["version"].as_i64(), s["version_txt"].as_i64()), (Some(3), Some(3)), "{s}");
    assert_eq!((s["live_files"].as_u64(), s["tombstones"].as_u64()), (Some(1), Some(1)), "{s}");
    assert_eq!((s["blob_count"].as_u64(), s["blob_bytes"].as_u64()), (Some(3), Some(8 + 8 + 17)), "{s}");
    assert_eq!(s["lease"], Value::Null);
    assert!(s["epoch"].as_str().is_some_and(|e| !e.is_empty()), "{s}");

    let live = blob_rel(b"%PDF one, revised");
    let garbage = sorted(vec![blob_rel(b"%PDF one"), blob_rel(b"%PDF two")]);
    let (code, v, _) = serve.call("GET", "/verify", &[]);
    assert_eq!(code, 200, "{v}");
    assert_eq!((v["ok"].as_bool(), v["blobs_checked"].as_u64()), (Some(true), Some(1)), "{v}");
    let unreferenced: Vec<String> = v["unreferenced"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["path"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(sorted(unreferenced), garbage);

    // A damaged blob, then a missing one, is reported (the body is hashed
    // as it streams through the transport).
    dav.seed_file(&live, b"%PDF one, rotted").unwrap();
    let (_, v, _) = serve.call("GET", "/verify", &[]);
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(v["problems"][0]["path"], live.as_str());
    assert_eq!(v["problems"][0]["stable_ids"][0], p1.as_str());
    assert_eq!(v["problems"][0]["fault"]["kind"], "hash_mismatch");
    assert_eq!(v["problems"][0]["fault"]["actual"], ContentHash::of(b"%PDF one, rotted").as_str());
    std::fs::remove_file(dav.dir.join(&live)).unwrap();
    let (_, v, _) = serve.call("GET", "/verify", &[]);
    assert_eq!(v["problems"][0]["fault"]["kind"], "missing", "{v}");
    dav.seed_file(&live, b"%PDF one, revised").unwrap();
    assert_eq!(serve.call("GET", "/verify", &[]).1["ok"], true);

    // Routing and the token.
    let (code, e, r) = serve.call("POST", "/gc", &[]);
    assert_eq!((code, e["error"].as_str()), (401, Some("unauthorized")), "{e}");
    assert!(r.header("www-authenticate").is_some_and(|h| h.starts_with("Bearer")));
    let (code, e, _) = serve.call("POST", "/gc", &[("Authorization", "Bearer tok-314")]);
    assert_eq!((code, e["error"].as_str()), (401, Some("unauthorized")), "{e}");
    let (code, e, r) = serve.call("GET", "/gc", &[("Authorization", "Bearer tok-3141")]);
    assert_eq!(
        (code, e["error"].as_str(), r.header("allow")),
        (405, Some("method-not-allowed"), Some("POST"))
    );
    assert_eq!(serve.call("DELETE", "/status", &[]).0, 405);
    assert_eq!(serve.call("GET", "/metrics", &[]).0, 404);
    for rel in &garbage {
        assert!(dav.dir.join(rel).exists(), "a refused gc deleted {rel}");
    }

    // One unreferenced blob is older than the grace period (1 h), the other
    // is not: gc deletes the old one only, under the lease, and commits.
    let old = blob_rel(b"%PDF one");
    let two_days_ago = SystemTime::now() - Duration::from_secs(2 * 86_400);
    std::fs::File::options()
        .write(true)
        .open(dav.dir.join(&old))
        .unwrap()
        .set_modified(two_days_ago)
        .unwrap();
    let (code, g, _) = serve.call("POST", "/gc", &[("Authorization", "Bearer tok-3141")]);
    assert_eq!(code, 200, "{g}\n{}", serve.logs());
    assert_eq!(strings(&g["deleted"]), vec![old.clone()], "{g}");
    assert_eq!((g["deleted_bytes"].as_u64(), g["kept_young"].as_u64()), (Some(8), Some(1)), "{g}");
    assert_eq!((g["version_before"].as_i64(), g["version_after"].as_i64()), (Some(3), Some(4)), "{g}");
    assert!(!dav.dir.join(&old).exists(), "gc left {old}");
    assert!(dav.dir.join(blob_rel(b"%PDF two")).exists(), "gc deleted a young blob");
    assert!(dav.dir.join(&live).exists(), "gc deleted a live blob");
    assert!(!dav.dir.join("version.txt.lock").exists(), "gc released the lease");
    let (_, s, _) = serve.call("GET", "/status", &[]);
    assert_eq!((s["version"].as_i64(), s["blob_count"].as_u64()), (Some(4), Some(2)), "{s}");

    // A sync holding the lease: gc answers 409 with the holder, deletes nothing.
    let lease = r#"{"owner":"inst-z","host":"laptop","nonce":"n1","ttl_ms":120000}"#;
    dav.seed_file("version.txt.lock/lease.json", lease.as_bytes()).unwrap();
    std::fs::File::options()
        .write(true)
        .open(dav.dir.join(blob_rel(b"%PDF two")))
        .unwrap()
        .set_modified(two_days_ago)
        .unwrap();
    let (code, e, r) = serve.call("POST", "/gc", &[("Authorization", "Bearer tok-3141")]);
    assert_eq!((code, e["error"].as_str()), (409, Some("lock-held")), "{e}");
    assert!(e["holder"].as_str().is_some_and(|h| h.contains("inst-z")), "{e}");
    assert!(r.header("retry-after").is_some());
    assert!(dav.dir.join(blob_rel(b"%PDF two")).exists());
}

#[test]
fn wasmtime_serve_refuses_gc_without_a_token_and_reports_a_missing_remote() {
    let empty = DavServer::start(ServerKind::Wsgidav, false).expect("wsgidav starts");
    let serve = Serve::start(&[("DAVSYNC_REMOTE_URL", &empty.url)]).expect("wasmtime serve starts");
    let (code, e, _) = serve.call("POST", "/gc", &[("Authorization", "Bearer anything")]);
    assert_eq!((code, e["error"].as_str()), (403, Some("gc-disabled")), "{e}");
    // Nothing synced to this remote yet.
    let (code, e, _) = serve.call("GET", "/status", &[]);
    assert_eq!((code, e["error"].as_str()), (404, Some("no-remote")), "{e}\n{}", serve.logs());
    drop(serve);

    // No remote configured at all.
    let serve = Serve::start(&[]).expect("wasmtime serve starts");
    let (code, e, _) = serve.call("GET", "/verify", &[]);
    assert_eq!((code, e["error"].as_str()), (500, Some("not-configured")), "{e}");
    assert!(e["message"].as_str().unwrap().contains("DAVSYNC_REMOTE_URL"));
}

/// Every import of the deployable component is a standard WASI 0.2
/// interface, and its only export is `wasi:http/incoming-handler`.
#[test]
fn the_deployable_component_imports_only_standard_wasi() {
    let bytes = std::fs::read(SERVERLESS_WASM).unwrap();
    let decoded = wit_component::decode(&bytes).expect("the artifact decodes as a component");
    let wit_component::DecodedWasm::Component(resolve, world) = &decoded else {
        panic!("the artifact is a WIT package, not a component");
    };
    let world = &resolve.worlds[*world];
    let imports: Vec<String> = world.imports.keys().map(|k| resolve.name_world_key(k)).collect();
    let exports: Vec<String> = world.exports.keys().map(|k| resolve.name_world_key(k)).collect();
    assert!(!imports.is_empty());
    for name in &imports {
        let standard = name.starts_with("wasi:") && name.contains("@0.2.");
        assert!(standard, "non-standard import {name:?} (all: {imports:?})");
    }
    for needed in [
        "wasi:http/outgoing-handler@",
        "wasi:cli/environment@",
        "wasi:clocks/wall-clock@",
        "wasi:random/random@",
    ] {
        assert!(imports.iter().any(|i| i.starts_with(needed)), "no {needed} import: {imports:?}");
    }
    assert_eq!(exports.len(), 1, "{exports:?}");
    assert!(exports[0].starts_with("wasi:http/incoming-handler@0.2."), "{exports:?}");
}
