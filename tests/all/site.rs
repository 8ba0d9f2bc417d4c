//! One app instance driven through the real `davsync` binary: its own data
//! folder, a remote (a folder or a WebDAV URL), and credentials in the
//! environment, the way a person or a script would run it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value;

use crate::servers::DavServer;

pub struct Site {
    pub root: PathBuf,
    pub data: PathBuf,
    /// `DAVSYNC_REMOTE`.
    pub remote: String,
    /// Extra environment (credentials, lease TTL, …).
    pub env: Vec<(String, String)>,
}

impl Site {
    /// An instance `name` under `root` whose remote is the folder `root/remote`.
    pub fn new(root: &Path, name: &str) -> Site {
        let remote = root.join("remote").to_str().expect("UTF-8 temp path").to_owned();
        Site { root: root.to_path_buf(), data: root.join(name), remote, env: Vec::new() }
    }

    /// An instance `name` under `root` syncing with `server` (with its
    /// credentials, if it has any).
    pub fn dav(root: &Path, name: &str, server: &DavServer) -> Site {
        let mut site = Site { remote: server.url.clone(), ..Site::new(root, name) };
        if let (Some(user), Some(pass)) = (&server.user, &server.password) {
            site.set_env("WEBDAV_USERNAME", user);
            site.set_env("WEBDAV_PASSWORD", pass);
        }
        site
    }

    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_owned(), value.to_owned()));
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let cache = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("component-cache");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_davsync"));
        cmd.args(args)
            .env("DAVSYNC_DATA", &self.data)
            .env("DAVSYNC_REMOTE", &self.remote)
            .env("XDG_CACHE_HOME", cache)
            .current_dir(&self.root);
        for key in [
            "DAVSYNC_DB",
            "DAVSYNC_CONFIG",
            "WEBDAV_BASE_URL",
            "WEBDAV_USERNAME",
            "WEBDAV_PASSWORD",
            "WEBDAV_REMOTE_ROOT",
            "DAVSYNC_TRANSFERS",
            "DAVSYNC_LEASE_TTL_MS",
            "DAVSYNC_LOCK_WAIT_MS",
        ] {
            cmd.env_remove(key);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("davsync runs")
    }

    /// Starts `davsync args` in the background (output captured).
    pub fn spawn(&self, args: &[&str]) -> Child {
        self.command(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("davsync starts")
    }

    #[track_caller]
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "davsync {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    #[track_caller]
    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.ok(&all)).expect("stdout is one JSON document")
    }

    /// Writes a file next to the data folders; returns its path.
    pub fn file(&self, name: &str, body: &[u8]) -> String {
        let p = self.root.join(name);
        std::fs::write(&p, body).unwrap();
        p.to_str().unwrap().to_owned()
    }

    /// Adds a PDF with `body`; returns its stable id.
    pub fn add(&self, name: &str, body: &[u8]) -> String {
        let src = self.file(name, body);
        self.ok(&["add", &src, "--doc-id", &format!("10.1/{name}")]).trim().to_owned()
    }

    pub fn rows(&self) -> Vec<Value> {
        self.json(&["ls"]).as_array().unwrap().clone()
    }

    pub fn row(&self, stable_id: &str) -> Value {
        self.rows().into_iter().find(|r| r["stable_id"] == stable_id).expect("row listed")
    }

    pub fn content(&self, stable_id: &str) -> Vec<u8> {
        let row = self.row(stable_id);
        let id = row["id"].as_str().unwrap();
        std::fs::read(self.data.join("files").join(&id[..2]).join(format!("{id}.pdf"))).unwrap()
    }

    /// The SHA-256 of every file in the data folder (database and files),
    /// for "nothing changed" checks.
    pub fn snapshot(&self) -> Vec<(PathBuf, String)> {
        let mut out = Vec::new();
        let mut stack = vec![self.data.clone()];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else if !p.file_name().unwrap().to_str().unwrap().ends_with(".lock") {
                    let bytes = std::fs::read(&p).unwrap();
                    out.push((p.clone(), davsync_core::model::ContentHash::of(&bytes).to_string()));
                }
            }
        }
        out.sort();
        out
    }
}
