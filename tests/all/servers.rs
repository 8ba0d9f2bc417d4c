//! Real WebDAV servers on 127.0.0.1 for the end-to-end tests: wsgidav
//! (WsgiDAV + cheroot, with fault injection), Apache 2.4 mod_dav_fs, and
//! `rclone serve webdav`. `scripts/setup.sh` installs all three; a missing
//! one is an error naming that script, never a silent skip.
//!
//! ```ignore
//! for kind in servers::all_kinds() {
//!     let server = DavServer::start(kind, true)?; // with Basic auth
//!     // server.url == "http://127.0.0.1:PORT/", server.dir is the served folder
//!     let r = server.request("MKCOL", "docs/", &[], b"")?;
//!     assert_eq!(r.status, 201);
//! } // Drop stops the server (its whole process group) and removes its files
//! ```
//!
//! Binaries, each overridable by an environment variable:
//! `DAVSYNC_WSGIDAV_PYTHON` (default `${DAVSYNC_VENV:-$HOME/.cache/davsync-venv}/bin/python`),
//! `DAVSYNC_APACHE2` (`/usr/sbin/apache2`), `DAVSYNC_APACHE_MODULES`
//! (`/usr/lib/apache2/modules`), `DAVSYNC_HTPASSWD` (`htpasswd`),
//! `DAVSYNC_RCLONE` (`rclone`).
// Not every test binary build uses every helper.
#![allow(dead_code)]

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// How long a server may take to answer its first request.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Read/write timeout of [`DavServer::request`].
const IO_TIMEOUT: Duration = Duration::from_secs(10);
const SETUP_HINT: &str = "run scripts/setup.sh (as root) to install it: it apt-get installs \
     apache2 and rclone and creates the wsgidav venv";

/// Which server implementation to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerKind {
    /// WsgiDAV 4.4 on cheroot, via `tests/servers/wsgidav_serve.py`; the only
    /// one with fault injection ([`DavServer::set_faults`]).
    Wsgidav,
    /// Apache 2.4 with mod_dav_fs and `tests/servers/apache.conf.template`.
    Apache,
    /// `rclone serve webdav`.
    Rclone,
}

impl ServerKind {
    pub fn name(self) -> &'static str {
        match self {
            ServerKind::Wsgidav => "wsgidav",
            ServerKind::Apache => "apache",
            ServerKind::Rclone => "rclone",
        }
    }
}

/// Every server kind, for tests that run one scenario against each.
pub fn all_kinds() -> [ServerKind; 3] {
    [ServerKind::Wsgidav, ServerKind::Apache, ServerKind::Rclone]
}

/// A running WebDAV server serving [`DavServer::dir`]. Dropping it stops the
/// server and deletes its folder.
#[derive(Debug)]
pub struct DavServer {
    pub kind: ServerKind,
    /// `http://127.0.0.1:PORT/`: the WebDAV root, with a trailing slash.
    pub url: String,
    pub port: u16,
    /// Basic auth credentials when started with `auth: true`.
    pub user: Option<String>,
    pub password: Option<String>,
    /// The served folder on disk.
    pub dir: PathBuf,
    /// From spawn to the first HTTP answer.
    pub startup: Duration,
    child: Child,
    base: tempfile::TempDir,
    /// Apache's worker user when the tests run as root (files the server must
    /// write have to belong to it).
    owner: Option<(u32, u32)>,
}

/// The answer to [`DavServer::request`].
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl DavServer {
    /// Starts a server of `kind` on a free port of 127.0.0.1, serving a new
    /// empty temp folder, with Basic auth (user `davsync`, password
    /// `davsync-secret`) when `auth`, anonymous otherwise. Returns once it
    /// answers HTTP; fails with its stderr if it does not within 20 s.
    pub fn start(kind: ServerKind, auth: bool) -> Result<DavServer> {
        Self::start_serving(kind, auth, None)
    }

    /// [`DavServer::start`] serving the existing folder `served` (left in
    /// place when the server stops) instead of a new empty one.
    pub fn start_serving(kind: ServerKind, auth: bool, served: Option<&Path>) -> Result<DavServer> {
        let mut last_err = None;
        // A port found free can be taken before the server binds it: retry.
        for _ in 0..3 {
            match Self::start_once(kind, auth, served) {
                Ok(server) => return Ok(server),
                Err(e) if format!("{e:#}").to_lowercase().contains("in use") => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_err.expect("three attempts"))
    }

    fn start_once(kind: ServerKind, auth: bool, served: Option<&Path>) -> Result<DavServer> {
        let base = tempfile::Builder::new().prefix(&format!("davsync-{}-", kind.name())).tempdir()?;
        let dir = match served {
            Some(dir) => dir.to_path_buf(),
            None => {
                let dir = base.path().join("dav");
                std::fs::create_dir(&dir)?;
                dir
            }
        };
        let port = free_port()?;
        let (user, password) = if auth {
            (Some("davsync".to_string()), Some("davsync-secret".to_string()))
        } else {
            (None, None)
        };
        let creds = user.as_deref().zip(password.as_deref());
        let mut owner = None;
        let mut cmd = match kind {
            ServerKind::Wsgidav => wsgidav_command(base.path(), &dir, port, creds)?,
            ServerKind::Rclone => rclone_command(base.path(), &dir, port, creds)?,
            ServerKind::Apache => {
                let (cmd, o) = apache_command(base.path(), &dir, port, creds)?;
                owner = o;
                cmd
            }
        };
        let stdout = std::fs::File::create(base.path().join("stdout.log"))?;
        let stderr = std::fs::File::create(base.path().join("stderr.log"))?;
        cmd.stdin(Stdio::null()).stdout(stdout).stderr(stderr);
        let program = cmd.get_program().to_string_lossy().into_owned();
        let started = Instant::now();
        let child = cmd.spawn().map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                anyhow::anyhow!("{} server: `{program}` not found; {SETUP_HINT}", kind.name())
            } else {
                anyhow::anyhow!("{} server: cannot run `{program}`: {e}", kind.name())
            }
        })?;
        let mut server = DavServer {
            kind,
            url: format!("http://127.0.0.1:{port}/"),
            port,
            user,
            password,
            dir,
            startup: Duration::ZERO,
            child,
            base,
            owner,
        };
        server.wait_ready(started)?;
        server.startup = started.elapsed();
        Ok(server)
    }

    fn wait_ready(&mut self, started: Instant) -> Result<()> {
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{} server exited ({status}) before answering on port {} (if something is \
                     not installed: {SETUP_HINT}):\n{}",
                    self.kind.name(),
                    self.port,
                    self.logs()
                );
            }
            if probe(self.port) {
                return Ok(());
            }
            if started.elapsed() > START_TIMEOUT {
                bail!(
                    "{} server did not answer on port {} within {:?}:\n{}",
                    self.kind.name(),
                    self.port,
                    START_TIMEOUT,
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The server's stderr (and Apache's error log), for error messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for name in ["stderr.log", "stdout.log", "error.log"] {
            if let Ok(text) = std::fs::read_to_string(self.base.path().join(name))
                && !text.trim().is_empty()
            {
                let _ = writeln!(out, "--- {name}:\n{}", text.trim_end());
            }
        }
        out
    }

    /// `url` joined with a path relative to the root (`"a/b.txt"`; already
    /// percent-encoded where needed).
    pub fn url_of(&self, rel: &str) -> String {
        format!("{}{}", self.url, rel.trim_start_matches('/'))
    }

    /// Writes a file into the served folder behind the server's back (making
    /// its parent folders), owned so that the server can change it.
    pub fn seed_file(&self, rel: &str, bytes: &[u8]) -> Result<PathBuf> {
        let path = self.dir.join(rel);
        let parent = path.parent().expect("inside dir");
        std::fs::create_dir_all(parent)?;
        std::fs::write(&path, bytes)?;
        if let Some((uid, gid)) = self.owner {
            let mut p = path.as_path();
            while p != self.dir {
                std::os::unix::fs::chown(p, Some(uid), Some(gid))?;
                p = p.parent().expect("inside dir");
            }
        }
        Ok(path)
    }

    /// One HTTP/1.1 request (`Connection: close`) to `rel` under the root,
    /// with the server's credentials if it has any.
    pub fn request(
        &self,
        method: &str,
        rel: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<HttpResponse> {
        let creds = self.user.as_deref().zip(self.password.as_deref());
        self.request_as(creds, method, rel, headers, body)
    }

    /// [`DavServer::request`] with other (or no) Basic credentials.
    pub fn request_as(
        &self,
        creds: Option<(&str, &str)>,
        method: &str,
        rel: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<HttpResponse> {
        let auth = creds.map(|(u, p)| format!("Basic {}", base64(format!("{u}:{p}").as_bytes())));
        let mut all: Vec<(&str, &str)> = headers.to_vec();
        if let Some(a) = &auth {
            all.push(("Authorization", a));
        }
        let path = format!("/{}", rel.trim_start_matches('/'));
        http_request(self.port, method, &path, &all, body)
            .with_context(|| format!("{} {method} {path}", self.kind.name()))
    }

    /// The server's process id (the bench reads its CPU time).
    #[allow(dead_code)]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// wsgidav only: replaces the injected faults (see
    /// `tests/servers/wsgidav_serve.py` for the keys; `json!({})` clears
    /// them). Takes effect from the next request on.
    pub fn set_faults(&self, faults: serde_json::Value) -> Result<()> {
        self.require_wsgidav("set_faults")?;
        let tmp = self.base.path().join("faults.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(&faults)?)?;
        std::fs::rename(&tmp, self.base.path().join("faults.json"))?;
        Ok(())
    }

    /// wsgidav only: requests that reached the server since it started,
    /// faulted ones and the readiness probe included.
    pub fn request_count(&self) -> Result<u64> {
        self.require_wsgidav("request_count")?;
        let path = self.base.path().join("requests.count");
        let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
        Ok(text.trim().parse()?)
    }

    fn require_wsgidav(&self, what: &str) -> Result<()> {
        if self.kind != ServerKind::Wsgidav {
            bail!("{what} is only supported by the wsgidav server, not {}", self.kind.name());
        }
        Ok(())
    }
}

impl Drop for DavServer {
    fn drop(&mut self) {
        // SIGTERM first: Apache then stops its worker processes itself. (No
        // process group of their own: a Ctrl-C of the test run reaches them.)
        let _ = Command::new("kill")
            .args(["-s", "TERM", &self.child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

/// Whether something answers HTTP on the port (any status: 401 counts).
fn probe(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let req = format!("OPTIONS / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.")
}

/// A minimal HTTP/1.1 client: one request per connection, body read to EOF,
/// chunked bodies decoded.
pub fn http_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<HttpResponse> {
    let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port))?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    for (name, value) in headers {
        let _ = write!(req, "{name}: {value}\r\n");
    }
    let _ = write!(req, "Content-Length: {}\r\n\r\n", body.len());
    s.write_all(req.as_bytes())?;
    // A server may answer (e.g. an injected fault) without reading the body.
    if let Err(e) = s.write_all(body)
        && !matches!(e.kind(), std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset)
    {
        return Err(e.into());
    }
    let mut raw = Vec::new();
    if let Err(e) = s.read_to_end(&mut raw) {
        // A reset after a complete answer is fine (unread request body).
        if raw.is_empty() || e.kind() != std::io::ErrorKind::ConnectionReset {
            return Err(e.into());
        }
    }
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> Result<HttpResponse> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").context("no end of HTTP header in the answer")?;
    let head = std::str::from_utf8(&raw[..end]).context("non-UTF-8 HTTP header")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut response = HttpResponse { status, headers, body: raw[end + 4..].to_vec() };
    if response.header("Transfer-Encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        response.body = dechunk(&response.body)?;
    }
    Ok(response)
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = data.windows(2).position(|w| w == b"\r\n").context("truncated chunk size")?;
        let size_text = std::str::from_utf8(&data[..eol])?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        anyhow::ensure!(data.len() >= size + 2, "truncated chunk");
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn env_or(var: &str, default: impl FnOnce() -> String) -> String {
    std::env::var(var).ok().filter(|v| !v.is_empty()).unwrap_or_else(default)
}

fn home() -> String {
    std::env::var("HOME").unwrap_or_else(|_| "/root".into())
}

/// Fails, naming scripts/setup.sh, when `program` is neither an existing path
/// nor found on PATH.
fn require_program(what: &str, program: &str) -> Result<()> {
    let found = if program.contains('/') {
        Path::new(program).is_file()
    } else {
        std::env::var_os("PATH")
            .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
    };
    if !found {
        bail!("{what}: `{program}` not found; {SETUP_HINT}");
    }
    Ok(())
}

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

fn wsgidav_command(base: &Path, dir: &Path, port: u16, creds: Option<(&str, &str)>) -> Result<Command> {
    let python = env_or("DAVSYNC_WSGIDAV_PYTHON", || {
        let venv = env_or("DAVSYNC_VENV", || format!("{}/.cache/davsync-venv", home()));
        format!("{venv}/bin/python")
    });
    require_program("wsgidav server (venv python, DAVSYNC_WSGIDAV_PYTHON)", &python)?;
    let mut cmd = Command::new(python);
    cmd.arg(repo_file("tests/servers/wsgidav_serve.py"))
        .arg("--root")
        .arg(dir)
        .args(["--port", &port.to_string()])
        .arg("--faults")
        .arg(base.join("faults.json"))
        .arg("--count-file")
        .arg(base.join("requests.count"))
        .env("PYTHONDONTWRITEBYTECODE", "1");
    if let Some((user, password)) = creds {
        cmd.args(["--user", user, "--password", password]);
    }
    Ok(cmd)
}

fn rclone_command(base: &Path, dir: &Path, port: u16, creds: Option<(&str, &str)>) -> Result<Command> {
    let rclone = env_or("DAVSYNC_RCLONE", || "rclone".into());
    require_program("rclone server (DAVSYNC_RCLONE)", &rclone)?;
    // An empty config of its own: nothing from ~/.config/rclone is read.
    let config = base.join("rclone.conf");
    std::fs::write(&config, "")?;
    let mut cmd = Command::new(rclone);
    cmd.args(["serve", "webdav"])
        .arg(dir)
        .args(["--addr", &format!("127.0.0.1:{port}")])
        .arg("--config")
        .arg(&config)
        .arg("--cache-dir")
        .arg(base.join("rclone-cache"))
        // Without this rclone's VFS caches listings for 5 minutes and does not
        // see files written into `dir` behind its back (a PUT there is a 404).
        .args(["--dir-cache-time", "0s"])
        .args(["--log-level", "ERROR"]);
    if let Some((user, password)) = creds {
        cmd.args(["--user", user, "--pass", password]);
    }
    Ok(cmd)
}

/// Builds the Apache config from the template. Returns the worker user's
/// uid/gid when running as root (Apache then switches to it).
fn apache_command(
    base: &Path,
    dir: &Path,
    port: u16,
    creds: Option<(&str, &str)>,
) -> Result<(Command, Option<(u32, u32)>)> {
    use std::os::unix::fs::PermissionsExt;
    let apache = env_or("DAVSYNC_APACHE2", || "/usr/sbin/apache2".into());
    require_program("apache server (DAVSYNC_APACHE2)", &apache)?;
    let modules = env_or("DAVSYNC_APACHE_MODULES", || "/usr/lib/apache2/modules".into());
    anyhow::ensure!(
        Path::new(&modules).join("mod_dav_fs.so").is_file(),
        "apache server: no mod_dav_fs.so in {modules} (DAVSYNC_APACHE_MODULES); {SETUP_HINT}"
    );
    let state = base.join("state");
    std::fs::create_dir(&state)?;

    let (run_as, owner) = if effective_uid()? == 0 {
        let (name, uid, gid) = ["www-data", "nobody"]
            .into_iter()
            .find_map(|n| passwd_entry(n).map(|(u, g)| (n, u, g)))
            .context("apache server: neither www-data nor nobody in /etc/passwd")?;
        // The workers run as that user: they must reach and write the folders.
        std::fs::set_permissions(base, std::fs::Permissions::from_mode(0o755))?;
        std::os::unix::fs::chown(dir, Some(uid), Some(gid))?;
        std::os::unix::fs::chown(&state, Some(uid), Some(gid))?;
        (format!("User {name}\nGroup #{gid}"), Some((uid, gid)))
    } else {
        (String::new(), None)
    };

    let access = match creds {
        None => "    Require all granted".to_string(),
        Some((user, password)) => {
            let htpasswd = env_or("DAVSYNC_HTPASSWD", || "htpasswd".into());
            require_program("apache server (htpasswd, DAVSYNC_HTPASSWD)", &htpasswd)?;
            // {SHA} hashes: checked fast on every request (bcrypt is slow).
            let out = Command::new(&htpasswd)
                .args(["-n", "-b", "-s", user, password])
                .output()
                .with_context(|| format!("running {htpasswd}"))?;
            anyhow::ensure!(
                out.status.success(),
                "htpasswd failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let file = state.join("htpasswd");
            std::fs::write(&file, &out.stdout)?;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644))?;
            format!(
                "    AuthType Basic\n    AuthName \"davsync test\"\n    AuthBasicProvider file\n    \
                 AuthUserFile \"{}\"\n    Require valid-user",
                file.display()
            )
        }
    };

    let template = std::fs::read_to_string(repo_file("tests/servers/apache.conf.template"))?;
    let conf = template
        .replace("@BASE@", &base.display().to_string())
        .replace("@DAV@", &dir.display().to_string())
        .replace("@STATE@", &state.display().to_string())
        .replace("@PORT@", &port.to_string())
        .replace("@MODULES@", &modules)
        .replace("@RUN_AS@", &run_as)
        .replace("@ACCESS@", &access);
    let conf_path = base.join("apache.conf");
    std::fs::write(&conf_path, conf)?;
    let mut cmd = Command::new(apache);
    cmd.arg("-f").arg(&conf_path).arg("-DFOREGROUND");
    Ok((cmd, owner))
}

fn effective_uid() -> Result<u32> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status.lines().find_map(|l| l.strip_prefix("Uid:")).context("no Uid: in /proc/self/status")?;
    // Real, effective, saved, filesystem.
    Ok(line.split_whitespace().nth(1).context("short Uid: line")?.parse()?)
}

fn passwd_entry(name: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() > 3 && f[0] == name { Some((f[2].parse().ok()?, f[3].parse().ok()?)) } else { None }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_base64_matches_rfc4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn servers_dechunk() {
        let raw =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n";
        let r = parse_response(raw).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body, b"abcde");
    }
}
