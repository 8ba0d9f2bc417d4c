//! How the host is put together for one data folder: where the database and
//! files live, which remote, which engine. The CLI and the HTTP API both build
//! their [`Syncer`] here, so they always agree on the wiring.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use davsync_core::SyncOptions;
use davsync_core::maintenance::{MaintenanceOptions, NoLocal};
use davsync_core::ports::{Progress, RemoteTransport};

use crate::engine::{BlobPort, EngineKind, Ports, Syncer};
use crate::folder::{FileBlobs, FolderRemote};
use crate::local_sqlite::SqliteStore;
use crate::system::{OsRandom, SystemClock};
use crate::webdav::{Secret, WebDav, WebDavBlobs, WebDavConfig};

/// Where the remote is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteSpec {
    /// A local folder (the embedded default).
    Folder(PathBuf),
    /// A WebDAV server.
    WebDav(WebDavConfig),
}

impl RemoteSpec {
    /// Human-readable, safe to log (never contains a password).
    pub fn describe(&self) -> String {
        match self {
            RemoteSpec::Folder(p) => p.display().to_string(),
            RemoteSpec::WebDav(c) => match &c.username {
                Some(user) => format!("{} (as {user})", c.root_url),
                None => c.root_url.clone(),
            },
        }
    }
}

/// The default remote when nothing is configured.
pub const DEFAULT_REMOTE: &str = "./davsync-remote";

/// The settings a `davsync.toml` may hold. Every key is optional; flags and
/// environment variables override it.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// A WebDAV URL or a folder path.
    pub remote: Option<String>,
    /// Path appended to a WebDAV `remote` (like the app's `WEBDAV_REMOTE_ROOT`).
    pub remote_root: Option<String>,
    /// Basic auth user.
    pub username: Option<String>,
    /// Basic auth password (keep the file private: `chmod 600`).
    pub password: Option<String>,
    /// Blob transfers at once (default 4).
    pub transfers: Option<usize>,
    /// Timeout of one request, in seconds (default 60).
    pub timeout_secs: Option<u64>,
}

impl FileConfig {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<FileConfig> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let config: FileConfig =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        #[cfg(unix)]
        if config.password.is_some() {
            use std::os::unix::fs::PermissionsExt;
            if std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o077 != 0) {
                tracing::warn!("{} holds a password and is readable by others; chmod 600 it", path.display());
            }
        }
        Ok(config)
    }
}

/// The remote settings given on the command line.
#[derive(Debug, Default, Clone)]
pub struct RemoteArgs {
    /// `--remote`.
    pub remote: Option<String>,
    /// `--user`.
    pub user: Option<String>,
    /// `--transfers`.
    pub transfers: Option<usize>,
    /// `--timeout-secs`.
    pub timeout_secs: Option<u64>,
}

/// Decides the remote from flags, then environment, then the file, then the
/// default: `--remote` > `DAVSYNC_REMOTE` > `WEBDAV_BASE_URL` (+
/// `WEBDAV_REMOTE_ROOT`) > the file's `remote` (+ `remote_root`) >
/// [`DEFAULT_REMOTE`]. Credentials: `--user` > `WEBDAV_USERNAME` > file >
/// user info in the URL; `WEBDAV_PASSWORD` > file > URL. `env` looks a
/// variable up (the process environment in production).
pub fn resolve_remote(
    args: &RemoteArgs,
    env: &dyn Fn(&str) -> Option<String>,
    file: &FileConfig,
) -> Result<RemoteSpec> {
    let env = |k: &str| env(k).filter(|v| !v.is_empty());
    let root = env("WEBDAV_REMOTE_ROOT").or_else(|| file.remote_root.clone());
    let with_root = |base: String| match &root {
        Some(r) if !r.trim_matches('/').is_empty() => {
            format!("{}/{}", base.trim_end_matches('/'), r.trim_matches('/'))
        }
        _ => base,
    };
    let text = args
        .remote
        .clone()
        .or_else(|| env("DAVSYNC_REMOTE"))
        .or_else(|| env("WEBDAV_BASE_URL").map(with_root))
        .or_else(|| file.remote.clone().map(|r| if r.contains("://") { with_root(r) } else { r }))
        .unwrap_or_else(|| DEFAULT_REMOTE.to_owned());
    if !text.contains("://") {
        return Ok(RemoteSpec::Folder(PathBuf::from(text)));
    }
    let mut config = WebDavConfig::new(&text)?;
    if let Some(user) = args.user.clone().or_else(|| env("WEBDAV_USERNAME")).or_else(|| file.username.clone())
    {
        config.username = Some(user);
    }
    if let Some(pass) = env("WEBDAV_PASSWORD").or_else(|| file.password.clone()) {
        config.password = Some(Secret::new(pass));
    }
    let number = |k: &str| -> Result<Option<u64>> {
        env(k).map(|v| v.parse::<u64>().with_context(|| format!("{k}={v:?} is not a number"))).transpose()
    };
    let transfers = match args.transfers {
        Some(t) => Some(t as u64),
        None => number("DAVSYNC_TRANSFERS")?.or(file.transfers.map(|t| t as u64)),
    };
    if let Some(t) = transfers {
        if !(1..=64).contains(&t) {
            bail!("transfers must be between 1 and 64, not {t}");
        }
        config.transfers = t as usize;
    }
    let timeout = match args.timeout_secs {
        Some(t) => Some(t),
        None => number("DAVSYNC_TIMEOUT_SECS")?.or(file.timeout_secs),
    };
    if let Some(t) = timeout {
        if t == 0 {
            bail!("the request timeout must be at least 1 second");
        }
        config.request_timeout = Duration::from_secs(t);
    }
    Ok(RemoteSpec::WebDav(config))
}

/// Everything needed to run the engine over one data folder.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The app's data folder (files under `<data>/files/`).
    pub data: PathBuf,
    /// The app's database.
    pub db: PathBuf,
    /// The remote.
    pub remote: RemoteSpec,
    /// Which engine runs the algorithm.
    pub engine: EngineKind,
    /// Lease time-to-live override (default [`SyncOptions::default`]).
    pub lease_ttl_ms: Option<u64>,
    /// Lock wait override.
    pub lock_wait_ms: Option<u64>,
}

impl Setup {
    /// Opens (creating if needed) the app's database.
    pub fn open_store(&self) -> Result<SqliteStore> {
        SqliteStore::open(&self.db, &self.data)
    }

    /// Creates what `init` creates: the database and, for a folder remote,
    /// the folder.
    pub fn init(&self) -> Result<()> {
        self.open_store()?;
        match &self.remote {
            RemoteSpec::Folder(p) => std::fs::create_dir_all(p)
                .with_context(|| format!("creating the remote folder {}", p.display())),
            RemoteSpec::WebDav(_) => Ok(()),
        }
    }

    /// The engine over the real adapters, reporting progress to `progress`.
    /// A read-only app database is refused before anything is written.
    pub fn syncer(&self, progress: Box<dyn Progress>) -> Result<Syncer> {
        let store = self.open_store()?;
        let local_read_only = store.is_read_only();
        let ports = self.ports_over(store, progress)?;
        let syncer = Syncer::new(self.engine, ports, crate::component::default_cache_dir().as_deref())?;
        Ok(syncer.with_local_read_only(local_read_only))
    }

    /// The real adapters for this data folder and remote, reporting progress
    /// to `progress` (what [`Setup::syncer`] runs the engine on).
    pub fn ports(&self, progress: Box<dyn Progress>) -> Result<Ports> {
        self.ports_over(self.open_store()?, progress)
    }

    fn ports_over(&self, store: SqliteStore, progress: Box<dyn Progress>) -> Result<Ports> {
        let (remote, blobs) = self.remote_ports(store.files_dir())?;
        Ok(Ports {
            local: Box::new(store),
            remote,
            blobs,
            clock: Box::new(SystemClock),
            random: Box::new(OsRandom),
            progress,
        })
    }

    /// The engine for remote maintenance: the remote only. The app's
    /// database is not opened (nor created), and the local ports refuse
    /// every call ([`NoLocal`]); maintenance never makes one.
    pub fn maintainer(&self) -> Result<Syncer> {
        let (remote, blobs) = self.remote_ports(&self.data.join("files"))?;
        let ports = Ports {
            local: Box::new(NoLocal),
            remote,
            blobs,
            clock: Box::new(SystemClock),
            random: Box::new(OsRandom),
            progress: Box::new(davsync_core::ports::NoProgress),
        };
        Syncer::new(self.engine, ports, crate::component::default_cache_dir().as_deref())
    }

    /// The remote transport and blob mover for this remote.
    fn remote_ports(&self, files_dir: &Path) -> Result<(Box<dyn RemoteTransport>, Box<dyn BlobPort>)> {
        Ok(match &self.remote {
            RemoteSpec::Folder(p) => {
                std::fs::create_dir_all(p)
                    .with_context(|| format!("creating the remote folder {}", p.display()))?;
                let remote = FolderRemote::new(p)?;
                let blobs = FileBlobs::new(files_dir, remote.clone());
                (Box::new(remote), Box::new(blobs))
            }
            RemoteSpec::WebDav(config) => {
                let dav = WebDav::new(config.clone());
                (Box::new(dav.clone()), Box::new(WebDavBlobs::new(files_dir, dav)))
            }
        })
    }

    /// Maintenance options with this machine's name for gc's lease and
    /// the given grace period.
    pub fn maintenance_options(&self, gc_grace_ms: u64) -> MaintenanceOptions {
        let sync = self.sync_options();
        MaintenanceOptions {
            lease_ttl_ms: sync.lease_ttl_ms,
            lock_wait_ms: sync.lock_wait_ms,
            host_name: sync.host_name,
            gc_grace_ms,
            ..MaintenanceOptions::default()
        }
    }

    /// Sync options with this machine's name for the lease.
    pub fn sync_options(&self) -> SyncOptions {
        let host_name = std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok().map(|s| s.trim().to_owned()))
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "unknown-host".to_owned());
        let defaults = SyncOptions::default();
        SyncOptions {
            host_name,
            lease_ttl_ms: self.lease_ttl_ms.unwrap_or(defaults.lease_ttl_ms),
            lock_wait_ms: self.lock_wait_ms.unwrap_or(defaults.lock_wait_ms),
            ..defaults
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: std::collections::HashMap<String, String> =
            pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        move |k| map.get(k).cloned()
    }

    fn dav(spec: RemoteSpec) -> WebDavConfig {
        match spec {
            RemoteSpec::WebDav(c) => c,
            other => panic!("expected WebDAV, got {other:?}"),
        }
    }

    #[test]
    fn flags_override_environment_override_file() {
        let file = FileConfig {
            remote: Some("https://file.example/dav".into()),
            remote_root: Some("/root-from-file".into()),
            username: Some("file-user".into()),
            password: Some("file-pass".into()),
            transfers: Some(2),
            timeout_secs: Some(5),
        };
        let none = env_of(&[]);
        let c = dav(resolve_remote(&RemoteArgs::default(), &none, &file).unwrap());
        assert_eq!(c.root_url, "https://file.example/dav/root-from-file/");
        assert_eq!((c.username.as_deref(), c.transfers), (Some("file-user"), 2));
        assert_eq!(c.password.as_ref().map(Secret::expose), Some("file-pass"));
        assert_eq!(c.request_timeout, Duration::from_secs(5));

        let env = env_of(&[
            ("WEBDAV_BASE_URL", "http://env.example:8080"),
            ("WEBDAV_REMOTE_ROOT", "/app"),
            ("WEBDAV_USERNAME", "env-user"),
            ("WEBDAV_PASSWORD", "env-pass"),
            ("DAVSYNC_TRANSFERS", "8"),
        ]);
        let c = dav(resolve_remote(&RemoteArgs::default(), &env, &file).unwrap());
        assert_eq!(c.root_url, "http://env.example:8080/app/");
        assert_eq!((c.username.as_deref(), c.transfers), (Some("env-user"), 8));
        assert_eq!(c.password.as_ref().map(Secret::expose), Some("env-pass"));

        let args = RemoteArgs {
            remote: Some("https://flag.example/x".into()),
            user: Some("flag-user".into()),
            transfers: Some(3),
            timeout_secs: None,
        };
        let c = dav(resolve_remote(&args, &env, &file).unwrap());
        assert_eq!(c.root_url, "https://flag.example/x/");
        assert_eq!((c.username.as_deref(), c.transfers), (Some("flag-user"), 3));
        // The password has no flag (it would show in `ps`): environment wins.
        assert_eq!(c.password.as_ref().map(Secret::expose), Some("env-pass"));
    }

    #[test]
    fn nothing_configured_is_the_embedded_folder_and_bad_values_are_refused() {
        let none = env_of(&[]);
        let spec = resolve_remote(&RemoteArgs::default(), &none, &FileConfig::default()).unwrap();
        assert_eq!(spec, RemoteSpec::Folder(PathBuf::from(DEFAULT_REMOTE)));
        let url = RemoteArgs { remote: Some("http://h/".into()), ..RemoteArgs::default() };
        let bad = env_of(&[("DAVSYNC_TRANSFERS", "lots")]);
        assert!(resolve_remote(&url, &bad, &FileConfig::default()).is_err());
        let zero = RemoteArgs { transfers: Some(0), ..url.clone() };
        assert!(resolve_remote(&zero, &none, &FileConfig::default()).is_err());
        assert!(toml::from_str::<FileConfig>("remot = 'typo'").is_err(), "unknown keys are refused");
    }

    #[test]
    fn describe_never_shows_the_password() {
        let args = RemoteArgs { remote: Some("https://ann:hunter2@h/dav".into()), ..RemoteArgs::default() };
        let spec = resolve_remote(&args, &env_of(&[]), &FileConfig::default()).unwrap();
        let text = format!("{} {spec:?}", spec.describe());
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("ann"), "{text}");
    }
}
