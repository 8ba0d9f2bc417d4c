//! How the host is put together for one data folder: where the database and
//! files live, which remote, which engine. The CLI and the HTTP API both build
//! their [`Syncer`] here, so they always agree on the wiring.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use davsync_core::SyncOptions;
use davsync_core::ports::Progress;

use crate::engine::{EngineKind, Ports, Syncer};
use crate::folder::{FileBlobs, FolderRemote};
use crate::local_sqlite::SqliteStore;
use crate::system::{OsRandom, SystemClock};

/// Where the remote is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteSpec {
    /// A local folder (the embedded default).
    Folder(PathBuf),
}

impl RemoteSpec {
    /// Parses the `--remote` argument.
    pub fn parse(text: &str) -> Result<RemoteSpec> {
        if text.contains("://") {
            bail!(
                "remote {text:?} is a URL; this build syncs with a local folder remote only \
                 (the WebDAV transport is not in this build yet)"
            );
        }
        Ok(RemoteSpec::Folder(PathBuf::from(text)))
    }

    /// Human-readable, safe to log (never contains a password).
    pub fn describe(&self) -> String {
        match self {
            RemoteSpec::Folder(p) => p.display().to_string(),
        }
    }
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
        }
    }

    /// The engine over the real adapters, reporting progress to `progress`.
    pub fn syncer(&self, progress: Box<dyn Progress>) -> Result<Syncer> {
        let store = self.open_store()?;
        let files_dir = store.files_dir().to_path_buf();
        let (remote, blobs): (
            Box<dyn davsync_core::ports::RemoteTransport>,
            Box<dyn davsync_core::ports::BlobTransfer>,
        ) = match &self.remote {
            RemoteSpec::Folder(p) => {
                std::fs::create_dir_all(p)
                    .with_context(|| format!("creating the remote folder {}", p.display()))?;
                let remote = FolderRemote::new(p)?;
                let blobs = FileBlobs::new(files_dir, remote.clone());
                (Box::new(remote), Box::new(blobs))
            }
        };
        let ports = Ports {
            local: Box::new(store),
            remote,
            blobs,
            clock: Box::new(SystemClock),
            random: Box::new(OsRandom),
            progress,
        };
        Syncer::new(self.engine, ports, crate::component::default_cache_dir().as_deref())
    }

    /// Sync options with this machine's name for the lease.
    pub fn sync_options(&self) -> SyncOptions {
        let host_name = std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok().map(|s| s.trim().to_owned()))
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "unknown-host".to_owned());
        SyncOptions { host_name, ..SyncOptions::default() }
    }
}
