//! The sync engine as a WebAssembly component, run by wasmtime.
//!
//! The component (built by `build.rs` from `components/sync`) imports only the
//! `davsync:sync` interfaces; this module implements them by delegating to the
//! same port traits the native core uses, so [`crate::engine::Ports`] serve
//! both engines. Compilation happens once: the compiled artifact is cached on
//! disk, keyed by the component's bytes and wasmtime's compatibility hash
//! (version + engine configuration), and imports are resolved once through an
//! `InstancePre`.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use davsync_core::ports::{
    DownloadJob, Fetched, Precondition, RemoteEntry, RemoteError, RemoteStat, RemoteTransport, UploadJob,
};
use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker, WasmList};
use wasmtime::{Config, Engine, Store, StoreContextMut};

use crate::engine::Ports;
use crate::wit_convert as conv;

/// Generated from `wit/davsync.wit`; documented there.
mod bindings {
    #![allow(missing_docs)]
    wasmtime::component::bindgen!({
        world: "sync-engine",
        path: "../wit",
    });
}

pub(crate) use bindings::davsync::sync as imports;
pub(crate) use bindings::exports::davsync::sync::engine as wit_engine;
pub(crate) use bindings::exports::davsync::sync::maintenance as wit_maintenance;
pub(crate) use bindings::{SyncEngine, SyncEnginePre};

/// The component's bytes, built by `build.rs`.
pub const COMPONENT_WASM: &[u8] = include_bytes!(env!("DAVSYNC_COMPONENT_WASM"));

/// SHA-256 (hex) of [`COMPONENT_WASM`], computed by `build.rs` so that a
/// start of the host does not hash the megabyte again.
const COMPONENT_SHA256: &str = env!("DAVSYNC_COMPONENT_SHA256");

/// Most bytes the guest may hand the host in one import call (wasmtime's
/// "hostcall fuel"; its default of 128 MiB is a guard against hostile guests).
/// Ours is our own, embedded component, and its largest legitimate transfers
/// grow with the data: `put` of a `metadata.db` of up to `metadata_bytes_max`
/// (512 MiB by default) and the local commit of a first sync (about 2.5 KiB
/// per file, so 100,000 files already exceed 128 MiB). The guest's whole
/// 32-bit memory is 4 GiB; 2 GiB bounds a single call well above both.
const HOSTCALL_FUEL_BYTES: usize = 2 << 30;

/// A compiled, linked component, ready to instantiate (cheaply) per call.
pub struct ComponentEngine {
    engine: Engine,
    pre: SyncEnginePre<HostState>,
}

impl std::fmt::Debug for ComponentEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComponentEngine").finish_non_exhaustive()
    }
}

/// What the component's imports act on during one call.
pub(crate) struct HostState {
    pub(crate) ports: Ports,
    /// The guest's linear memory, which only ever grows within a call.
    memory: MemoryWatermark,
}

/// Records the largest size the guest's linear memory grew to (it never
/// shrinks, so this is what one call costs in host memory); allows every
/// growth, as wasmtime's default does (the guest is our own component).
#[derive(Debug, Default)]
struct MemoryWatermark {
    peak_bytes: usize,
}

impl wasmtime::ResourceLimiter for MemoryWatermark {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.peak_bytes = self.peak_bytes.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        _desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(true)
    }
}

impl ComponentEngine {
    /// Compiles (or loads from `cache_dir`) the embedded component and links
    /// the host's imports.
    pub fn load(cache_dir: Option<&Path>) -> Result<ComponentEngine> {
        let (engine, component) = load_or_compile(cache_dir)?;
        let mut linker = Linker::<HostState>::new(&engine);
        wt(SyncEngine::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s))
            .context("linking the host's imports")?;
        wt(link_put_in_place(&mut linker)).context("linking remote.put")?;
        let pre = wt(linker.instantiate_pre(&component)).context("resolving the component's imports")?;
        let pre = wt(SyncEnginePre::new(pre)).context("checking the component's exports")?;
        Ok(ComponentEngine { engine, pre })
    }

    /// Runs `call` against a fresh instance whose imports act on `ports`;
    /// returns the ports afterwards (a trap never loses them).
    pub(crate) fn with_instance<T>(
        &self,
        ports: Ports,
        call: impl FnOnce(&mut Store<HostState>, &SyncEngine) -> wasmtime::Result<T>,
    ) -> (Result<T>, Ports) {
        let mut store = Store::new(&self.engine, HostState { ports, memory: MemoryWatermark::default() });
        store.set_hostcall_fuel(HOSTCALL_FUEL_BYTES);
        // Only when asked for: with a limiter, an instantiation takes ~50 more
        // page faults (a start-up cost, issue 7 goal 5).
        let watch_memory = tracing::enabled!(target: "davsync::memory", tracing::Level::DEBUG);
        if watch_memory {
            store.limiter(|state| &mut state.memory);
        }
        let result = wt(self.pre.instantiate(&mut store))
            .context("instantiating the sync component")
            .and_then(|bindings| wt(call(&mut store, &bindings)).context("the sync component trapped"));
        let state = store.into_data();
        if watch_memory {
            let peak_mib = state.memory.peak_bytes as f64 / 1_048_576.0;
            tracing::debug!(target: "davsync::memory", peak_mib, "the guest's linear memory at its largest");
        }
        (result, state.ports)
    }
}

/// The `remote` interface's name in the linker.
const REMOTE_INTERFACE: &str = "davsync:sync/remote@0.1.0";

/// Links `remote.put` so that the body is handed to the transport as a slice
/// of the guest's memory, where the generated binding would first copy it
/// into a host `Vec` (a `metadata.db` of 75 MiB at 100,000 files, held
/// twice at the peak of a first sync). Replaces the generated definition.
fn link_put_in_place(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    type PutParams = (String, WasmList<u8>, imports::remote::Precondition);
    linker.allow_shadowing(true);
    linker.instance(REMOTE_INTERFACE)?.func_wrap(
        "put",
        |mut store: StoreContextMut<'_, HostState>, (path, bytes, condition): PutParams| {
            // The transport is taken out of the store for the call: the body
            // borrows the store's memory while the transport is used mutably.
            let mut remote = std::mem::replace(&mut store.data_mut().ports.remote, Box::new(InUse));
            let condition = conv::precondition_in(condition);
            let result = remote.put(&path, bytes.as_le_slice(&store), &condition);
            store.data_mut().ports.remote = remote;
            Ok((result.map_err(conv::remote_error_out),))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// Stands in for the remote transport while `put` holds it; nothing can
/// call it then (the guest is suspended in that `put`).
struct InUse;

impl InUse {
    fn refuse<T>() -> Result<T, RemoteError> {
        Err(RemoteError::Unavailable("the remote transport is in use by a put".to_owned()))
    }
}

impl RemoteTransport for InUse {
    fn get(&mut self, _path: &str, _bytes_max: u64) -> Result<Fetched, RemoteError> {
        InUse::refuse()
    }
    fn put(&mut self, _path: &str, _bytes: &[u8], _c: &Precondition) -> Result<Option<String>, RemoteError> {
        InUse::refuse()
    }
    fn delete(&mut self, _path: &str) -> Result<(), RemoteError> {
        InUse::refuse()
    }
    fn mkcol(&mut self, _path: &str) -> Result<(), RemoteError> {
        InUse::refuse()
    }
    fn move_to(&mut self, _from: &str, _to: &str, _overwrite: bool) -> Result<(), RemoteError> {
        InUse::refuse()
    }
    fn stat(&mut self, _path: &str) -> Result<Option<RemoteStat>, RemoteError> {
        InUse::refuse()
    }
    fn list(&mut self, _path: &str) -> Result<Option<Vec<RemoteEntry>>, RemoteError> {
        InUse::refuse()
    }
    fn server_time_ms(&mut self) -> Option<i64> {
        None
    }
}

/// wasmtime has its own error type; the host speaks anyhow.
fn wt<T>(r: wasmtime::Result<T>) -> Result<T> {
    r.map_err(anyhow::Error::from)
}

/// Where compiled components are cached by default.
pub fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("davsync"))
}

fn cache_key(engine: &Engine) -> String {
    // `Engine::precompile_compatibility_hash` covers the wasmtime version and
    // every engine setting that affects compiled code; for an engine without
    // a compiler, all but the CPU features, which wasmtime checks at load.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    let mut digest = Sha256::new();
    digest.update(COMPONENT_SHA256.as_bytes());
    digest.update(h.finish().to_le_bytes());
    let d = digest.finalize();
    d.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// A wasmtime engine with our settings; `compiler`: whether it can compile
/// (building cranelift for this CPU is most of the cost of a new engine).
fn new_engine(compiler: bool) -> Result<Engine> {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.enable_compiler(compiler);
    wt(Engine::new(&config)).context("creating the wasmtime engine")
}

fn compile(engine: &Engine) -> Result<Component> {
    wt(Component::from_binary(engine, COMPONENT_WASM)).context("compiling the sync component")
}

/// The compiled component and the engine it belongs to. A cached artifact
/// is loaded by an engine without a compiler, which needs none; wasmtime
/// still checks the artifact's settings and CPU features against this
/// engine and host, and one that does not fit is compiled again.
fn load_or_compile(cache_dir: Option<&Path>) -> Result<(Engine, Component)> {
    let Some(dir) = cache_dir else {
        let engine = new_engine(true)?;
        let component = compile(&engine)?;
        return Ok((engine, component));
    };
    let loader = new_engine(false)?;
    let path = dir.join(format!("sync-{}.cwasm", cache_key(&loader)));
    if path.is_file() {
        match deserialize_cached(&loader, &path) {
            Ok(c) => return Ok((loader, c)),
            Err(e) => tracing::warn!("ignoring unusable cached component {}: {e:#}", path.display()),
        }
    }
    let engine = new_engine(true)?;
    let component = compile(&engine)?;
    if let Err(e) = store_cached(&component, dir, &path) {
        tracing::warn!("could not cache the compiled component in {}: {e:#}", dir.display());
    }
    give_back_freed_memory();
    Ok((engine, component))
}

/// Hands the heap memory freed since start back to the kernel. Compiling
/// the component (once per install) peaks at ~70 MB of short-lived
/// allocations, which glibc would otherwise keep for the rest of the
/// process, on top of what the call then needs (a first sync of 100,000
/// files: 247 MB peak instead of 212 when it compiled first).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn give_back_freed_memory() {
    // SAFETY: malloc_trim only releases free memory of glibc's own arenas.
    unsafe { libc::malloc_trim(0) };
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn give_back_freed_memory() {}

#[allow(unsafe_code)]
fn deserialize_cached(engine: &Engine, path: &Path) -> Result<Component> {
    // SAFETY: wasmtime requires that the file is a trusted artifact of
    // `Component::serialize` for this engine. We only load files we wrote
    // ourselves, named by the hash of the component bytes and of the engine's
    // compatibility hash, written atomically (temp file + rename).
    wt(unsafe { Component::deserialize_file(engine, path) })
}

fn store_cached(component: &Component, dir: &Path, path: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let bytes = wt(component.serialize())?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut tmp, &bytes)?;
    tmp.persist(path)?;
    Ok(())
}

// ---------------------------------------------------------------------------
// The imports: each delegates to the core port it mirrors.
// ---------------------------------------------------------------------------

impl imports::types::Host for HostState {}

impl imports::local_store::Host for HostState {
    fn count_unsynced(&mut self) -> Result<u64, imports::local_store::LocalError> {
        self.ports.local.count_unsynced().map_err(conv::local_error_out)
    }

    fn meta_get(&mut self, key: String) -> Result<Option<String>, imports::local_store::LocalError> {
        self.ports.local.meta_get(&key).map_err(conv::local_error_out)
    }

    fn row_bases(&mut self) -> Result<Vec<imports::types::RowBase>, imports::local_store::LocalError> {
        let bases = self.ports.local.row_bases().map_err(conv::local_error_out)?;
        Ok(bases.into_iter().map(conv::row_base_out).collect())
    }

    fn rows(
        &mut self,
        ids: Vec<String>,
    ) -> Result<Vec<imports::types::LocalRow>, imports::local_store::LocalError> {
        let rows = self.ports.local.rows(&ids).map_err(conv::local_error_out)?;
        Ok(rows.into_iter().map(conv::local_row_out).collect())
    }

    fn live_rows_with_content(&mut self, hash: String) -> Result<u64, imports::local_store::LocalError> {
        let hash = conv::hash_in(&hash).map_err(conv::local_invalid)?;
        self.ports.local.live_rows_with_content(&hash).map_err(conv::local_error_out)
    }

    fn apply(
        &mut self,
        commit: imports::local_store::LocalCommit,
    ) -> Result<Vec<String>, imports::local_store::LocalError> {
        let commit = conv::local_commit_in(commit).map_err(conv::local_invalid)?;
        let outcome = self.ports.local.apply(&commit).map_err(conv::local_error_out)?;
        Ok(outcome.skipped)
    }

    fn commit_begin(&mut self) -> Result<(), imports::local_store::LocalError> {
        self.ports.local.commit_begin().map_err(conv::local_error_out)
    }

    fn commit_writes(
        &mut self,
        writes: Vec<imports::local_store::RowWrite>,
    ) -> Result<(), imports::local_store::LocalError> {
        // A commit with a write the guest got wrong must not land in part:
        // any other call on the store rolls the open commit back.
        let writes = match conv::row_writes_in(writes) {
            Ok(writes) => writes,
            Err(e) => {
                let _ = self.ports.local.count_unsynced();
                return Err(conv::local_invalid(e));
            }
        };
        self.ports.local.commit_writes(&writes).map_err(conv::local_error_out)
    }

    fn commit_finish(
        &mut self,
        meta: Vec<(String, String)>,
    ) -> Result<Vec<String>, imports::local_store::LocalError> {
        let outcome = self.ports.local.commit_finish(&meta).map_err(conv::local_error_out)?;
        Ok(outcome.skipped)
    }
}

impl imports::remote::Host for HostState {
    fn get(
        &mut self,
        path: String,
        bytes_max: u64,
    ) -> Result<imports::remote::Fetched, imports::remote::RemoteError> {
        let f = self.ports.remote.get(&path, bytes_max).map_err(conv::remote_error_out)?;
        Ok(imports::remote::Fetched { bytes: f.bytes, etag: f.etag })
    }

    /// Not linked: [`link_put_in_place`] replaces it (the generated trait
    /// still needs it).
    fn put(
        &mut self,
        path: String,
        bytes: Vec<u8>,
        condition: imports::remote::Precondition,
    ) -> Result<Option<String>, imports::remote::RemoteError> {
        let condition = conv::precondition_in(condition);
        self.ports.remote.put(&path, &bytes, &condition).map_err(conv::remote_error_out)
    }

    fn delete(&mut self, path: String) -> Result<(), imports::remote::RemoteError> {
        self.ports.remote.delete(&path).map_err(conv::remote_error_out)
    }

    fn mkcol(&mut self, path: String) -> Result<(), imports::remote::RemoteError> {
        self.ports.remote.mkcol(&path).map_err(conv::remote_error_out)
    }

    fn move_to(
        &mut self,
        from: String,
        to: String,
        overwrite: bool,
    ) -> Result<(), imports::remote::RemoteError> {
        self.ports.remote.move_to(&from, &to, overwrite).map_err(conv::remote_error_out)
    }

    fn stat(
        &mut self,
        path: String,
    ) -> Result<Option<imports::remote::RemoteStat>, imports::remote::RemoteError> {
        let stat = self.ports.remote.stat(&path).map_err(conv::remote_error_out)?;
        Ok(stat.map(|s| imports::remote::RemoteStat {
            size: s.size,
            etag: s.etag,
            modified_ms: s.modified_ms,
            is_collection: s.is_collection,
        }))
    }

    fn list(
        &mut self,
        path: String,
    ) -> Result<Option<Vec<imports::remote::RemoteEntry>>, imports::remote::RemoteError> {
        let entries = self.ports.remote.list(&path).map_err(conv::remote_error_out)?;
        Ok(entries.map(|list| {
            list.into_iter()
                .map(|e| imports::remote::RemoteEntry {
                    name: e.name,
                    stat: imports::remote::RemoteStat {
                        size: e.stat.size,
                        etag: e.stat.etag,
                        modified_ms: e.stat.modified_ms,
                        is_collection: e.stat.is_collection,
                    },
                })
                .collect()
        }))
    }

    fn server_time_ms(&mut self) -> Option<i64> {
        self.ports.remote.server_time_ms()
    }
}

/// Runs a batch whose jobs each carry a blob reference from the guest:
/// invalid references are answered at once, the rest go to `run` together.
fn batch<J, T>(
    jobs: Vec<J>,
    convert: impl Fn(J) -> Result<T, imports::blobs::BlobError>,
    run: impl FnOnce(&[T]) -> Vec<Result<(), davsync_core::ports::BlobError>>,
) -> Vec<Result<(), imports::blobs::BlobError>> {
    let converted: Vec<Result<T, imports::blobs::BlobError>> = jobs.into_iter().map(convert).collect();
    let mut valid: Vec<T> = Vec::new();
    let mut slots = Vec::with_capacity(converted.len());
    for c in converted {
        match c {
            Ok(job) => {
                valid.push(job);
                slots.push(None);
            }
            Err(e) => slots.push(Some(Err(e))),
        }
    }
    let mut answers = run(&valid).into_iter();
    slots
        .into_iter()
        .map(|slot| match slot {
            Some(err) => err,
            None => match answers.next() {
                Some(r) => r.map_err(conv::blob_error_out),
                None => {
                    Err(imports::blobs::BlobError::LocalIo("the transfer was not carried out".to_owned()))
                }
            },
        })
        .collect()
}

impl imports::blobs::Host for HostState {
    fn local_has(&mut self, blob: imports::types::BlobRef) -> Result<bool, imports::blobs::BlobError> {
        let blob = conv::blob_in(blob)?;
        self.ports.blobs.local_has(&blob).map_err(conv::blob_error_out)
    }

    fn upload(&mut self, jobs: Vec<imports::blobs::UploadJob>) -> Vec<Result<(), imports::blobs::BlobError>> {
        let blobs = &mut self.ports.blobs;
        batch(
            jobs,
            |j| {
                let blob = conv::blob_in(j.blob)?;
                Ok(UploadJob { blob, temp_path: j.temp_path, final_path: j.final_path })
            },
            |jobs| blobs.upload(jobs),
        )
    }

    fn download(
        &mut self,
        jobs: Vec<imports::blobs::DownloadJob>,
        bytes_max: u64,
    ) -> Vec<Result<(), imports::blobs::BlobError>> {
        let blobs = &mut self.ports.blobs;
        batch(
            jobs,
            |j| Ok(DownloadJob { remote_path: j.remote_path, blob: conv::blob_in(j.blob)? }),
            |jobs| blobs.download(jobs, bytes_max),
        )
    }

    fn remove_local(&mut self, blob: imports::types::BlobRef) -> Result<(), imports::blobs::BlobError> {
        let blob = conv::blob_in(blob)?;
        self.ports.blobs.remove_local(&blob).map_err(conv::blob_error_out)
    }

    fn remote_hash(
        &mut self,
        path: String,
        bytes_max: u64,
    ) -> Result<imports::blobs::RemoteDigest, imports::blobs::BlobError> {
        let d = self.ports.blobs.remote_hash(&path, bytes_max).map_err(conv::blob_error_out)?;
        Ok(imports::blobs::RemoteDigest { hash: d.hash.into(), size_bytes: d.size_bytes })
    }
}

impl imports::clock::Host for HostState {
    fn now_ms(&mut self) -> i64 {
        self.ports.clock.now_ms()
    }

    fn sleep_ms(&mut self, ms: u64) {
        self.ports.clock.sleep_ms(ms);
    }
}

impl imports::random::Host for HostState {
    fn next_u64(&mut self) -> u64 {
        self.ports.random.next_u64()
    }
}

impl imports::progress::Host for HostState {
    fn report(&mut self, event: imports::progress::ProgressEvent) {
        self.ports.progress.report(conv::progress_in(event));
    }
}
