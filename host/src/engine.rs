//! One interface over the two ways to run the sync: the WebAssembly component
//! (the default) or the core compiled natively (for benchmarks and diagnosis).
//! Both act on the same [`Ports`].

use std::path::Path;

use anyhow::Result;
use davsync_core::maintenance::{
    self, GcReport, MaintenanceError, MaintenanceIo, MaintenanceOptions, RemoteStatus, VerifyReport,
};
use davsync_core::ports::{
    BlobHasher, BlobTransfer, Clock, Io, LocalError, LocalStore, Progress, Random, RemoteTransport,
};
use davsync_core::{
    ConflictInfo, Resolution, ResolveOutcome, StatusReport, SyncError, SyncOptions, SyncSummary,
};

use crate::component::ComponentEngine;
use crate::wit_convert as conv;

/// Everything the engine acts on: the host's real adapters.
#[allow(missing_debug_implementations)]
pub struct Ports {
    /// The app's database.
    pub local: Box<dyn LocalStore>,
    /// The remote.
    pub remote: Box<dyn RemoteTransport>,
    /// Blob mover between the data folder and the remote (and remote hasher).
    pub blobs: Box<dyn BlobPort>,
    /// Wall clock.
    pub clock: Box<dyn Clock>,
    /// Randomness.
    pub random: Box<dyn Random>,
    /// Progress sink.
    pub progress: Box<dyn Progress>,
}

impl Ports {
    /// The core's view of these ports.
    pub fn io(&mut self) -> Io<'_> {
        Io {
            local: self.local.as_mut(),
            remote: self.remote.as_mut(),
            blobs: self.blobs.as_mut(),
            clock: self.clock.as_mut(),
            random: self.random.as_mut(),
            progress: self.progress.as_mut(),
        }
    }
}

/// A blob mover that can also hash remote blobs (for `verify`).
pub trait BlobPort: BlobTransfer + BlobHasher {}

impl<T: BlobTransfer + BlobHasher> BlobPort for T {}

impl Ports {
    /// The maintenance view of these ports (no local side).
    pub fn maintenance_io(&mut self) -> MaintenanceIo<'_> {
        MaintenanceIo {
            remote: self.remote.as_mut(),
            hasher: self.blobs.as_mut(),
            clock: self.clock.as_mut(),
            random: self.random.as_mut(),
        }
    }
}

/// Which engine runs the algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EngineKind {
    /// The WebAssembly component in wasmtime (default).
    Component,
    /// `davsync-core` compiled into the host.
    Native,
}

enum Runner {
    Native,
    Component(Box<ComponentEngine>),
}

/// A sync engine bound to its ports.
#[allow(missing_debug_implementations)]
pub struct Syncer {
    runner: Runner,
    ports: Option<Ports>,
    local_read_only: bool,
}

impl Syncer {
    /// Prepares `kind` over `ports`. The component is compiled once and cached
    /// in `cache_dir` (none: compile every time).
    pub fn new(kind: EngineKind, ports: Ports, cache_dir: Option<&Path>) -> Result<Syncer> {
        let runner = match kind {
            EngineKind::Native => Runner::Native,
            EngineKind::Component => Runner::Component(Box::new(ComponentEngine::load(cache_dir)?)),
        };
        Ok(Syncer { runner, ports: Some(ports), local_read_only: false })
    }

    /// Marks the local store as one that cannot be written: `sync` and
    /// `resolve` then fail with [`LocalError::ReadOnly`] before they touch
    /// anything (a sync would otherwise commit to the remote and only then
    /// find it cannot record that locally).
    pub fn with_local_read_only(mut self, read_only: bool) -> Syncer {
        self.local_read_only = read_only;
        self
    }

    fn refuse_if_read_only(&self) -> Option<SyncError> {
        self.local_read_only.then_some(SyncError::Local(LocalError::ReadOnly))
    }

    /// The ports, for the host's own (app-side) operations between calls.
    pub fn ports_mut(&mut self) -> &mut Ports {
        self.ports.as_mut().expect("ports are always returned after a call")
    }

    fn call<T>(
        &mut self,
        native: impl FnOnce(&mut Ports) -> T,
        wasm: impl FnOnce(
            &mut wasmtime::Store<crate::component::HostState>,
            &crate::component::SyncEngine,
        ) -> wasmtime::Result<T>,
    ) -> Result<T> {
        let mut ports = self.ports.take().expect("ports are always returned after a call");
        let (result, ports) = match &self.runner {
            Runner::Native => {
                crate::logging::note_engine_call("native");
                let r = native(&mut ports);
                (Ok(r), ports)
            }
            Runner::Component(c) => c.with_instance(ports, |store, bindings| {
                crate::logging::note_engine_call("component");
                wasm(store, bindings)
            }),
        };
        self.ports = Some(ports);
        result
    }

    /// Runs one sync. The outer error is a failure of the engine itself (a
    /// trap); the inner one is the sync's typed answer.
    pub fn sync(&mut self, opts: &SyncOptions) -> Result<Result<SyncSummary, SyncError>> {
        if let Some(e) = self.refuse_if_read_only() {
            return Ok(Err(e));
        }
        let wit_opts = conv::options_out(opts);
        self.call(
            |p| davsync_core::sync(&mut p.io(), opts),
            |store, b| {
                let r = b.davsync_sync_engine().call_sync(store, &wit_opts)?;
                Ok(r.map(conv::summary_in).map_err(conv::sync_error_in))
            },
        )
    }

    /// The O(1) status.
    pub fn status(&mut self, remote_retries_max: u32) -> Result<Result<StatusReport, SyncError>> {
        self.call(
            |p| davsync_core::status(&mut p.io(), remote_retries_max),
            |store, b| {
                let r = b.davsync_sync_engine().call_status(store, remote_retries_max)?;
                Ok(r.map(conv::status_report_in).map_err(conv::sync_error_in))
            },
        )
    }

    /// The recorded conflicts.
    pub fn conflicts(&mut self) -> Result<Result<Vec<ConflictInfo>, SyncError>> {
        self.call(
            |p| davsync_core::conflicts(&mut p.io()),
            |store, b| {
                let r = b.davsync_sync_engine().call_conflicts(store)?;
                Ok(r.map(|v| v.into_iter().map(conv::conflict_info_in).collect())
                    .map_err(conv::sync_error_in))
            },
        )
    }

    /// Records a resolution.
    pub fn resolve(&mut self, resolution: &Resolution) -> Result<Result<ResolveOutcome, SyncError>> {
        if let Some(e) = self.refuse_if_read_only() {
            return Ok(Err(e));
        }
        let kind = conv::resolution_out(&resolution.kind);
        self.call(
            |p| davsync_core::resolve(&mut p.io(), resolution),
            |store, b| {
                let r = b.davsync_sync_engine().call_resolve(store, &resolution.stable_id, &kind)?;
                Ok(r.map(conv::outcome_in).map_err(conv::sync_error_in))
            },
        )
    }

    // --- issue 9: remote maintenance ---

    /// The remote at a glance.
    pub fn remote_status(
        &mut self,
        opts: &MaintenanceOptions,
    ) -> Result<Result<RemoteStatus, MaintenanceError>> {
        let wit_opts = crate::wit_maintenance::options_out(opts);
        self.call(
            |p| maintenance::remote_status(&mut p.maintenance_io(), opts),
            |store, b| {
                let r = b.davsync_sync_maintenance().call_remote_status(store, &wit_opts)?;
                Ok(r.map(crate::wit_maintenance::status_in).map_err(crate::wit_maintenance::error_in))
            },
        )
    }

    /// Every live row's blob present and intact; unreferenced blobs listed.
    pub fn verify(&mut self, opts: &MaintenanceOptions) -> Result<Result<VerifyReport, MaintenanceError>> {
        let wit_opts = crate::wit_maintenance::options_out(opts);
        self.call(
            |p| maintenance::verify(&mut p.maintenance_io(), opts),
            |store, b| {
                let r = b.davsync_sync_maintenance().call_verify(store, &wit_opts)?;
                Ok(r.map_err(crate::wit_maintenance::error_in).and_then(crate::wit_maintenance::verify_in))
            },
        )
    }

    /// Deletes old unreferenced blobs under the lease.
    pub fn gc(&mut self, opts: &MaintenanceOptions) -> Result<Result<GcReport, MaintenanceError>> {
        let wit_opts = crate::wit_maintenance::options_out(opts);
        self.call(
            |p| maintenance::gc(&mut p.maintenance_io(), opts),
            |store, b| {
                let r = b.davsync_sync_maintenance().call_gc(store, &wit_opts)?;
                Ok(r.map(crate::wit_maintenance::gc_in).map_err(crate::wit_maintenance::error_in))
            },
        )
    }
}
