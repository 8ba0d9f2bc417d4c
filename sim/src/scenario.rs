//! One scenario: N instances, one remote, a seeded scheduler, the workload,
//! the faults, and the invariants.
//!
//! The scheduler runs a fixed number of steps. At each step it either lets
//! one running engine call go ahead by one remote operation (possibly
//! faulting it), or makes the world do something: an app write, starting a
//! sync, resolving a conflict, a crash, a clock jump, time passing, a backup
//! or restore of the remote. Then it quiesces: the running calls finish,
//! leases expire, every conflict is resolved and every instance syncs until
//! a whole round commits nothing. Then the final invariants are checked.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use davsync_core::history::Head;
use davsync_core::lease::LeaseRecord;
use davsync_core::local_state::{META_COMMIT, META_INSTANCE, META_VERSION};
use davsync_core::mem::{
    Fault, LocalFiles, MemBlobs, MemRemote, MemRemoteClient, MemServerSnapshot, MemStore, ServerProfile,
    WorldClock,
};
use davsync_core::model::{ContentHash, FileMeta, LocalRow, RemoteRow, SyncStatus};
use davsync_core::ports::{BlobTransfer, Precondition, RemoteError, RemoteTransport};
use davsync_core::{Resolution, ResolutionKind, SyncError, SyncOptions, SyncSummary};

use crate::choices::Choices;
use crate::executor::{Answer, Call, Executor, InstanceClock, Life, Op, Returned, Up};
use crate::oracle::{Choice, Final, Oracle, WriteKind, short, token_json, token_of};
use crate::state::{State, StateReader};
use crate::trace::{Trace, TraceMode};

/// Appends a line to the trace at the current step; its arguments are
/// formatted only when the trace is on.
macro_rules! log {
    ($sim:expr, $($arg:tt)*) => {
        $sim.trace.step($sim.step, format_args!($($arg)*))
    };
}

/// `SyncOptions::fold_commits` in the simulator: small, so that folding is
/// among the steps every scenario exercises.
const SIM_FOLD_COMMITS: u32 = 3;

/// 2024-01-01T00:00:00Z.
const T0_MS: i64 = 1_704_067_200_000;
const DAY_MS: i64 = 86_400_000;
/// Past the longest lease any instance may hold (`LEASE_TTL_MAX_MS`).
const LEASES_EXPIRE_MS: u64 = 16 * 60_000;
const HEAL_ROUNDS_MAX: u32 = 8;
const DRAIN_OPS_MAX: u32 = 20_000;

/// Which engine runs the algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Engine {
    /// `davsync-core` compiled natively.
    Native,
    /// The real `.wasm` component in wasmtime.
    Wasm,
}

/// Which WebDAV server the remote plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Profile {
    /// Honours `If-Match` / `If-None-Match` (wsgidav).
    Strict,
    /// Weak ETags for a second after a write (Apache).
    Weak,
    /// Ignores conditional headers (rclone).
    Ignores,
    /// Answers 423 while a file is being written (Nextcloud-like).
    Locks,
    /// Chosen per seed among the four.
    Mixed,
}

impl Profile {
    fn server(self, seed: u64) -> ServerProfile {
        match self {
            Profile::Strict => ServerProfile::Strict,
            Profile::Weak => ServerProfile::WeakEtagAfterWrite,
            Profile::Ignores => ServerProfile::IgnoresConditionals,
            Profile::Locks => ServerProfile::LocksWhileWriting,
            Profile::Mixed => [
                ServerProfile::Strict,
                ServerProfile::WeakEtagAfterWrite,
                ServerProfile::IgnoresConditionals,
                ServerProfile::LocksWhileWriting,
            ][(seed % 4) as usize],
        }
    }
}

/// What a scenario looks like.
#[derive(Debug, Clone)]
pub struct Config {
    /// Virtual instances.
    pub instances: usize,
    /// The server.
    pub profile: Profile,
    /// Scheduler steps before quiescence.
    pub steps: u32,
    /// Clock jumps may go backwards too (on by default; off replays seeds
    /// recorded before backward jumps were part of the workload).
    pub backward_jumps: bool,
    /// A running call's process may freeze (suspend, a long pause) for
    /// longer than a lease while the others go on (on by default; off
    /// replays seeds recorded before freezes were part of the workload).
    pub freezes: bool,
    /// A maintenance job runs remote gc among the syncs (issue 9). Off by
    /// default so that existing seeds keep their scenarios.
    pub gc: bool,
    /// The grace period of the gc among the syncs. `None`: 1 s where the
    /// server honours conditional writes (gc's commit fences), a day where
    /// nothing can fence a stalled writer (see
    /// [`GC_GRACE_UNFENCED_MS`](crate::maintainer::GC_GRACE_UNFENCED_MS)).
    pub gc_grace_ms: Option<u64>,
    /// Half of the edits and deletions go to one of the two oldest live
    /// files, so that instances often change the same file between syncs
    /// (on by default; off replays seeds recorded before).
    pub hot_files: bool,
    /// "Let a running call go on" serves a burst of one to four remote
    /// operations of that call, so that syncs complete while the app still
    /// edits (with one, hardly any sync finished before quiescence). A burst
    /// stops before a `metadata.db` write and while a body is being written,
    /// so freezes and 423s still meet those moments (on by default; off
    /// replays seeds recorded before).
    pub bursts: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            instances: 3,
            profile: Profile::Mixed,
            steps: 60,
            backward_jumps: true,
            freezes: true,
            gc: false,
            gc_grace_ms: None,
            hot_files: true,
            bursts: true,
        }
    }
}

/// What one scenario did.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Hash of the trace (none with [`TraceMode::Off`]).
    pub trace_hash: Option<String>,
    /// The trace lines, when asked for.
    pub trace: Option<Vec<String>>,
    /// The first invariant that broke, if any.
    pub failure: Option<String>,
    /// Engine calls made.
    pub calls: u32,
    /// Remote operations served.
    pub ops: u32,
}

/// The engine threads a worker reuses from one scenario to the next.
#[derive(Debug)]
pub struct Engines {
    engine: Engine,
    execs: Vec<Executor>,
}

impl Engines {
    /// No threads yet; they start on first use.
    pub fn new(engine: Engine) -> Engines {
        Engines { engine, execs: Vec::new() }
    }

    fn ensure(&mut self, n: usize) -> anyhow::Result<()> {
        while self.execs.len() < n {
            self.execs.push(Executor::spawn(self.engine, wasm_cache_dir())?);
        }
        Ok(())
    }
}

/// Runs one scenario, keeping what `trace` asks for of its trace.
pub fn run(
    engines: &mut Engines,
    cfg: &Config,
    seed: u64,
    choices: Choices,
    trace: TraceMode,
) -> anyhow::Result<Outcome> {
    engines.ensure(cfg.instances)?;
    let mut sim = Sim::new(engines, cfg, seed, choices, trace);
    let failure = sim.play().err();
    sim.abandon();
    let (calls, ops) = (sim.calls, sim.ops);
    let mut trace = sim.trace;
    if let Some(f) = &failure {
        trace.line(format_args!("FAILURE: {f}"));
    }
    let (trace_hash, trace) = trace.finish();
    Ok(Outcome { trace_hash, trace, failure, calls, ops })
}

type Check = Result<(), String>;

/// A running engine call.
struct Busy {
    sync: bool,
    pending: Option<Op>,
    /// A PUT whose bytes are arriving (server locks the path meanwhile).
    writing: Option<String>,
    crashed: bool,
    before: BTreeMap<String, LocalRow>,
    touched: BTreeSet<String>,
    uploads: u32,
    downloads: u32,
    remote_writes: u32,
    version_put: Option<i64>,
    result: Option<Returned>,
}

struct Node {
    store: Arc<Mutex<MemStore>>,
    files: LocalFiles,
    clock: InstanceClock,
    life: Arc<Life>,
    lives: u64,
    client: MemRemoteClient,
    blobs: MemBlobs,
    busy: Option<Busy>,
    conflicts: BTreeMap<String, LocalRow>,
}

fn lock(store: &Mutex<MemStore>) -> MutexGuard<'_, MemStore> {
    store.lock().unwrap_or_else(|e| e.into_inner())
}

struct Sim<'e> {
    execs: &'e [Executor],
    seed: u64,
    choices: Choices,
    world: WorldClock,
    world_ms: Arc<AtomicI64>,
    remote: MemRemote,
    nodes: Vec<Node>,
    oracle: Oracle,
    trace: Trace,
    step: u64,
    steps: u32,
    healing: bool,
    backward_jumps: bool,
    freezes: bool,
    hot_files: bool,
    bursts: bool,
    gc_grace_ms: Option<u64>,
    /// Per node: frozen (not scheduled) until this step.
    frozen_until: Vec<u64>,
    /// Every state published (`version.txt` written to name its commit)
    /// since the last restore, by (epoch, version, commit): a published
    /// commit must name one state.
    published: BTreeMap<(String, i64, Option<String>), Vec<RemoteRow>>,
    /// Reads the remote's state for the checks.
    states: StateReader,
    /// Leases have expired and syncs run one at a time: every sync must work.
    settled: bool,
    backup: Option<MemServerSnapshot>,
    version_txt: Option<i64>,
    contents: HashMap<ContentHash, Vec<u8>>,
    next_file: u32,
    calls: u32,
    ops: u32,
    /// What the last finished sync returned (none if it crashed).
    last_result: Option<Result<SyncSummary, SyncError>>,
    /// The remote-maintenance job, when [`Config::gc`].
    maintainer: Option<crate::maintainer::Maintainer>,
}

impl<'e> Sim<'e> {
    fn new(engines: &'e Engines, cfg: &Config, seed: u64, mut choices: Choices, mode: TraceMode) -> Sim<'e> {
        let world = WorldClock::new(T0_MS);
        let world_ms = Arc::new(AtomicI64::new(T0_MS));
        let profile = cfg.profile.server(seed);
        let remote = MemRemote::new(profile, world.clone());
        // The trace records every request; the server's own log would be a
        // second copy nobody reads.
        remote.server_mut().keep_op_log(false);
        let mut trace = Trace::new(mode);
        trace.line(format_args!(
            "seed {seed}: {} instances, server {profile:?}, {} steps",
            cfg.instances, cfg.steps
        ));
        let mut nodes = Vec::new();
        for i in 0..cfg.instances {
            let skew = if choices.chance(1, 2) { choices.range(-DAY_MS, DAY_MS) } else { 0 };
            let drift_ppm = choices.range(-500, 500);
            let clock = InstanceClock {
                world_ms: world_ms.clone(),
                skew_ms: Arc::new(AtomicI64::new(skew)),
                drift_ppm,
                origin_ms: T0_MS,
            };
            let store = Arc::new(Mutex::new(MemStore::new()));
            let files = LocalFiles::new();
            let client = MemRemoteClient::new(remote.clone());
            let life = Arc::new(Life::new(store.clone(), clock.clone(), life_seed(seed, i, 0)));
            trace.line(format_args!("n{i}: clock skew {skew} ms, drift {drift_ppm} ppm"));
            nodes.push(Node {
                store,
                blobs: MemBlobs::new(files.clone(), client.clone()),
                files,
                clock,
                life,
                lives: 0,
                client,
                busy: None,
                conflicts: BTreeMap::new(),
            });
        }
        let maintainer = cfg.gc.then(|| crate::maintainer::Maintainer::new(&remote, &world, seed));
        Sim {
            maintainer,
            execs: &engines.execs,
            seed,
            choices,
            world,
            world_ms,
            remote,
            nodes,
            oracle: Oracle::new(cfg.instances),
            trace,
            step: 0,
            steps: cfg.steps,
            healing: false,
            backward_jumps: cfg.backward_jumps,
            freezes: cfg.freezes,
            hot_files: cfg.hot_files,
            bursts: cfg.bursts,
            gc_grace_ms: cfg.gc_grace_ms,
            frozen_until: vec![0; cfg.instances],
            published: BTreeMap::new(),
            states: StateReader::default(),
            settled: false,
            backup: None,
            version_txt: None,
            contents: HashMap::new(),
            next_file: 0,
            calls: 0,
            ops: 0,
            last_result: None,
        }
    }

    fn advance(&mut self, ms: u64) {
        self.world.advance(ms);
        self.world_ms.store(self.world.now_ms(), Ordering::SeqCst);
    }

    // -----------------------------------------------------------------
    // The scenario
    // -----------------------------------------------------------------

    fn play(&mut self) -> Check {
        while self.step < u64::from(self.steps) && self.choices.has_more() {
            self.step += 1;
            self.one_step()?;
            self.check_step()?;
        }
        self.heal()?;
        self.check_final()
    }

    fn one_step(&mut self) -> Check {
        let waiting: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].busy.as_ref().is_some_and(|b| b.pending.is_some()))
            .filter(|&i| self.frozen_until[i] <= self.step)
            .collect();
        let idle: Vec<usize> = (0..self.nodes.len()).filter(|&i| self.nodes[i].busy.is_none()).collect();
        let in_conflict: Vec<usize> =
            idle.iter().copied().filter(|&i| !self.nodes[i].conflicts.is_empty()).collect();
        let weights = [
            if waiting.is_empty() { 0 } else { 30 }, // 0: let a running call go on
            if idle.is_empty() { 0 } else { 8 },     // 1: start a sync
            5,                                       // 2: add a file
            3,                                       // 3: edit content
            4,                                       // 4: edit metadata
            2,                                       // 5: delete
            1,                                       // 6: re-add old content
            if in_conflict.is_empty() { 0 } else { 4 }, // 7: resolve a conflict
            3,                                       // 8: time passes
            2,                                       // 9: crash / restart
            1,                                       // 10: clock jump
            // 11: backup / restore / wipe of the remote, by an admin who
            // waits until no sync runs (see README: a restore under a running
            // sync can leave a committed row without its blob).
            if self.nodes.iter().any(|n| n.busy.is_some()) { 0 } else { 1 },
            // 12: a running call's process freezes past its lease, more
            // often right before a commit (the window the lease and the
            // fence must guard)
            match (self.freezes, waiting.is_empty(), self.commit_pending(&waiting)) {
                (false, _, _) | (_, true, _) => 0,
                (true, false, false) => 2,
                (true, false, true) => 12,
            },
            // 13: remote gc among the syncs (issue 9; weight 0 keeps old seeds).
            if self.maintainer.is_some() { 3 } else { 0 },
        ];
        let n = self.nodes.len() as u32;
        match self.choices.weighted(&weights) {
            0 => {
                let i = waiting[self.choices.pick(waiting.len() as u32) as usize];
                self.serve_burst(i)
            }
            1 => {
                let i = idle[self.choices.pick(idle.len() as u32) as usize];
                self.start_sync(i, false)
            }
            2 => {
                let i = self.choices.pick(n) as usize;
                self.app_add(i, None)
            }
            3 => {
                let i = self.choices.pick(n) as usize;
                self.app_edit_content(i)
            }
            4 => {
                let i = self.choices.pick(n) as usize;
                self.app_edit_meta(i)
            }
            5 => {
                let i = self.choices.pick(n) as usize;
                self.app_delete(i)
            }
            6 => {
                let i = self.choices.pick(n) as usize;
                self.app_readd(i)
            }
            7 => {
                let i = in_conflict[self.choices.pick(in_conflict.len() as u32) as usize];
                self.resolve_one(i)
            }
            8 => {
                let ms = match self.choices.weighted(&[6, 3, 1]) {
                    0 => self.choices.range(10, 2_000),
                    1 => self.choices.range(5_000, 60_000),
                    // Longer than a lease: a parked sync outlives it.
                    _ => self.choices.range(150_000, 600_000),
                } as u64;
                log!(self, "time +{ms} ms");
                self.advance(ms);
                Ok(())
            }
            9 => {
                let i = self.choices.pick(n) as usize;
                self.crash(i)
            }
            10 => {
                let i = self.choices.pick(n) as usize;
                let mut skew =
                    if self.choices.chance(1, 3) { 0 } else { self.choices.range(-DAY_MS, DAY_MS) };
                let old = self.nodes[i].clock.skew_ms.load(Ordering::SeqCst);
                if !self.backward_jumps {
                    skew = skew.max(old);
                }
                self.nodes[i].clock.skew_ms.store(skew, Ordering::SeqCst);
                log!(self, "n{i} clock jumps to skew {skew} ms");
                Ok(())
            }
            11 => {
                self.remote_admin();
                Ok(())
            }
            12 => {
                let i = waiting[self.choices.pick(waiting.len() as u32) as usize];
                let steps = self.choices.range(5, 40) as u64;
                let ms = self.choices.range(150_000, 600_000) as u64;
                self.frozen_until[i] = self.step + steps;
                let at = Optional(self.nodes[i].busy.as_ref().and_then(|b| b.pending.as_ref()).map(OpText));
                log!(self, "n{i} freezes before {at} for {steps} steps; time +{ms} ms");
                self.advance(ms);
                Ok(())
            }
            _ => {
                // The job runs a while later: often after a parked sync's
                // lease ran out, so gc and that sync really overlap.
                let ms = self.choices.range(0, 180_000) as u64;
                log!(self, "time +{ms} ms");
                self.advance(ms);
                let grace = match (self.gc_grace_ms, self.remote.server().profile()) {
                    (Some(ms), _) => ms,
                    (None, ServerProfile::IgnoresConditionals) => crate::maintainer::GC_GRACE_UNFENCED_MS,
                    (None, _) => crate::maintainer::GC_GRACE_MS,
                };
                self.run_gc(grace)
            }
        }
    }

    /// One run of the maintenance job (issue 9).
    fn run_gc(&mut self, grace_ms: u64) -> Check {
        let before = self.read_version_txt();
        let Some(maintainer) = self.maintainer.as_mut() else { return Ok(()) };
        let result = maintainer.gc(grace_ms);
        // gc's own waits advanced the world: instance clocks follow.
        self.advance(0);
        let line = crate::maintainer::describe(&result)?;
        log!(self, "{line}");
        let now = self.read_version_txt();
        if let (Some(old), Some(new)) = (before, now)
            && new < old
        {
            return Err(format!("gc moved version.txt back from {old} to {new}"));
        }
        // The high-water mark stays (a stale holder may have set the counter
        // back just before: see `note_op`).
        self.version_txt = self.version_txt.max(now);
        Ok(())
    }

    fn remote_admin(&mut self) {
        match (self.choices.weighted(&[6, 3, 1]), self.backup.clone()) {
            (1, Some(snapshot)) => {
                self.remote.restore(snapshot);
                self.published.clear();
                self.version_txt = self.read_version_txt();
                log!(self, "remote restored from the backup (version.txt {:?})", self.version_txt);
            }
            (2, _) => {
                let empty = MemServerSnapshot { files: BTreeMap::new(), collections: BTreeMap::new() };
                self.remote.restore(empty);
                self.published.clear();
                self.version_txt = None;
                log!(self, "remote wiped: recreated empty (a new epoch)");
            }
            _ => {
                self.backup = Some(self.remote.snapshot());
                log!(self, "remote backed up (version.txt {:?})", self.read_version_txt());
            }
        }
    }

    // -----------------------------------------------------------------
    // The app
    // -----------------------------------------------------------------

    fn now_of(&self, i: usize) -> i64 {
        self.nodes[i].clock.read_ms()
    }

    /// What instance `i`'s store holds right now is what it knows before
    /// the app writes: a sync may have applied rows and still be running.
    fn refresh_knowledge(&mut self, i: usize) -> Check {
        let rows = lock(&self.nodes[i].store).rows.clone();
        self.oracle.observe(i, rows.values())
    }

    fn touch(&mut self, i: usize, stable_id: &str) {
        self.nodes[i].conflicts.remove(stable_id);
        if let Some(b) = &mut self.nodes[i].busy {
            b.touched.insert(stable_id.to_owned());
        }
    }

    fn new_content(&mut self, stable_id: &str, w: u32) -> Vec<u8> {
        let pad = self.choices.pick(40) as usize;
        let bytes = format!("{stable_id} w{w} s{} {}", self.seed, "~".repeat(pad)).into_bytes();
        self.contents.insert(ContentHash::of(&bytes), bytes.clone());
        bytes
    }

    fn app_add(&mut self, i: usize, reuse: Option<(Vec<u8>, String)>) -> Check {
        self.refresh_knowledge(i)?;
        let w = self.oracle.next_id();
        let stable_id = format!("f{}", self.next_file);
        self.next_file += 1;
        let (bytes, file_type) = match reuse {
            Some(r) => r,
            None => {
                let t = ["pdf", "tei", "rng"][self.choices.pick(3) as usize].to_owned();
                (self.new_content(&stable_id, w), t)
            }
        };
        let meta = FileMeta {
            filename: format!("{stable_id}.{file_type}"),
            doc_id: format!("10.1000/{}", self.choices.pick(4)),
            doc_id_type: "doi".to_owned(),
            file_type: file_type.clone(),
            label: Some(format!("label {w}")),
            doc_collections: "[]".to_owned(),
            doc_metadata: "{}".to_owned(),
            file_metadata: token_json(w),
            ..FileMeta::default()
        };
        let now = self.now_of(i);
        let node = &self.nodes[i];
        let row = lock(&node.store)
            .app_add(&node.files, &stable_id, &bytes, meta, now)
            .map_err(|e| e.to_string())?;
        self.touch(i, &stable_id);
        self.oracle.record(i, &stable_id, WriteKind::Add, Some(row.id.clone()), Some(w), self.step);
        log!(self, "n{i} app adds {stable_id} ({file_type}, {}) as w{w}", short(&row.id));
        Ok(())
    }

    /// A live row of instance `i`, chosen by the scenario: with hot files,
    /// half of the time one of the two first (by stable id, the same on every
    /// instance once synced), else any.
    fn pick_live(&mut self, i: usize) -> Option<String> {
        let ids: Vec<String> = lock(&self.nodes[i].store).live_rows().map(|r| r.stable_id.clone()).collect();
        if ids.is_empty() {
            return None;
        }
        let among = if self.hot_files && self.choices.chance(1, 2) { ids.len().min(2) } else { ids.len() };
        Some(ids[self.choices.pick(among as u32) as usize].clone())
    }

    fn app_edit_content(&mut self, i: usize) -> Check {
        self.refresh_knowledge(i)?;
        let Some(s) = self.pick_live(i) else { return self.app_add(i, None) };
        let w = self.oracle.next_id();
        let bytes = self.new_content(&s, w);
        let now = self.now_of(i);
        let node = &self.nodes[i];
        let row =
            lock(&node.store).app_edit_content(&node.files, &s, &bytes, now).map_err(|e| e.to_string())?;
        self.touch(i, &s);
        self.oracle.record(i, &s, WriteKind::Content, Some(row.id.clone()), None, self.step);
        log!(self, "n{i} app edits content of {s} to {} as w{w}", short(&row.id));
        Ok(())
    }

    fn app_edit_meta(&mut self, i: usize) -> Check {
        self.refresh_knowledge(i)?;
        let Some(s) = self.pick_live(i) else { return self.app_add(i, None) };
        let w = self.oracle.next_id();
        let field = self.choices.pick(3);
        let now = self.now_of(i);
        let edit = |m: &mut FileMeta| {
            m.file_metadata = token_json(w);
            match field {
                0 => m.label = Some(format!("label {w}")),
                1 => m.doc_collections = format!("[\"c{}\"]", w % 3),
                _ => m.doc_metadata = format!("{{\"title\":\"t{w}\"}}"),
            }
        };
        lock(&self.nodes[i].store).app_set_meta(&s, edit, now).map_err(|e| e.to_string())?;
        self.touch(i, &s);
        self.oracle.record(i, &s, WriteKind::Meta, None, Some(w), self.step);
        log!(self, "n{i} app edits metadata of {s} as w{w}");
        Ok(())
    }

    fn app_delete(&mut self, i: usize) -> Check {
        self.refresh_knowledge(i)?;
        let Some(s) = self.pick_live(i) else { return Ok(()) };
        let w = self.oracle.next_id();
        let now = self.now_of(i);
        let node = &self.nodes[i];
        {
            let mut store = lock(&node.store);
            // The tombstone carries the deletion's token (see oracle.rs).
            store.app_set_meta(&s, |m| m.file_metadata = token_json(w), now).map_err(|e| e.to_string())?;
            store.app_delete(&node.files, &s, now).map_err(|e| e.to_string())?;
        }
        self.touch(i, &s);
        self.oracle.record(i, &s, WriteKind::Delete, None, Some(w), self.step);
        log!(self, "n{i} app deletes {s} as w{w}");
        Ok(())
    }

    /// Adds a new file whose content some earlier file had (often a deleted one).
    fn app_readd(&mut self, i: usize) -> Check {
        let rows: Vec<LocalRow> = lock(&self.nodes[i].store).rows.values().cloned().collect();
        if rows.is_empty() {
            return self.app_add(i, None);
        }
        let row = &rows[self.choices.pick(rows.len() as u32) as usize];
        let bytes = self.contents.get(&row.id).cloned().ok_or("content registry is missing a hash")?;
        log!(self, "n{i} app re-adds the content of {}", row.stable_id);
        self.app_add(i, Some((bytes, row.meta.file_type.clone())))
    }

    // -----------------------------------------------------------------
    // Engine calls
    // -----------------------------------------------------------------

    fn options(&self, force: bool) -> SyncOptions {
        // Folds every few commits, so that crashes, lost responses and stale
        // writers meet them (32 by default would hardly happen in a scenario).
        SyncOptions {
            force,
            host_name: "sim".to_owned(),
            fold_commits: SIM_FOLD_COMMITS,
            ..SyncOptions::default()
        }
    }

    fn start_sync(&mut self, i: usize, force: bool) -> Check {
        log!(self, "n{i} sync starts{}", if force { " (force)" } else { "" });
        let call = Call::Sync(self.options(force));
        self.start_call(i, call)
    }

    /// Starts `call` on instance `i`, remembering its store as it was, and
    /// runs it to its first remote operation (or its end).
    fn start_call(&mut self, i: usize, call: Call) -> Check {
        let before = lock(&self.nodes[i].store).rows.clone();
        self.nodes[i].busy = Some(Busy {
            sync: matches!(call, Call::Sync(_)),
            pending: None,
            writing: None,
            crashed: false,
            before,
            touched: BTreeSet::new(),
            uploads: 0,
            downloads: 0,
            remote_writes: 0,
            version_put: None,
            result: None,
        });
        self.calls += 1;
        self.execs[i].start(self.nodes[i].life.clone(), call);
        self.pump(i)
    }

    /// Lets executor `i` run until it asks for a scheduled operation or
    /// finishes; unscheduled requests are answered on the way.
    fn pump(&mut self, i: usize) -> Check {
        loop {
            match self.execs[i].recv() {
                Up::Op(op) if op.is_scheduled() => {
                    self.nodes[i].busy.as_mut().expect("busy").pending = Some(op);
                    return Ok(());
                }
                Up::Op(op) => {
                    let answer = self.execute(i, &op);
                    let t = self.nodes[i].client.server_time_ms();
                    self.execs[i].answer(answer, t);
                }
                Up::Done(returned) => {
                    self.nodes[i].busy.as_mut().expect("busy").result = Some(returned);
                    return self.finish(i);
                }
            }
        }
    }

    /// Carries out operation `op` of instance `i` on the world.
    fn execute(&mut self, i: usize, op: &Op) -> Answer {
        let node = &mut self.nodes[i];
        let c = &mut node.client;
        match op {
            Op::Get { path, bytes_max } => Answer::Get(c.get(path, *bytes_max)),
            Op::Put { path, bytes, condition } => Answer::Put(c.put(path, bytes, condition)),
            Op::Delete { path } => Answer::Unit(c.delete(path)),
            Op::Mkcol { path } => Answer::Unit(c.mkcol(path)),
            Op::Move { from, to, overwrite } => Answer::Unit(c.move_to(from, to, *overwrite)),
            Op::Stat { path } => Answer::Stat(c.stat(path)),
            Op::List { path } => Answer::List(c.list(path)),
            Op::Upload { job } => {
                Answer::Blob(node.blobs.upload(std::slice::from_ref(job)).pop().expect("one result per job"))
            }
            Op::Download { job, bytes_max } => Answer::Blob(
                node.blobs.download(std::slice::from_ref(job), *bytes_max).pop().expect("one result per job"),
            ),
            Op::LocalHas { blob } => Answer::Has(node.blobs.local_has(blob)),
            Op::RemoveLocal { blob } => Answer::Blob(node.blobs.remove_local(blob)),
            Op::Sleep { ms } => {
                let ms = *ms;
                self.advance(ms);
                Answer::Slept
            }
        }
    }

    /// Lets instance `i`'s pending operation happen, maybe with a fault.
    /// Serves the pending operation of instance `i`, and with bursts up to
    /// three more of the same call (see [`Config::bursts`]).
    fn serve_burst(&mut self, i: usize) -> Check {
        let ops = if self.bursts { 1 + self.choices.pick(4) } else { 1 };
        for k in 0..ops {
            if k > 0 {
                let Some(busy) = self.nodes[i].busy.as_ref() else { break };
                let before_commit = busy.pending.as_ref().is_some_and(is_commit_write);
                if busy.pending.is_none() || busy.writing.is_some() || before_commit {
                    break;
                }
            }
            self.serve(i)?;
        }
        Ok(())
    }

    fn serve(&mut self, i: usize) -> Check {
        let busy = self.nodes[i].busy.as_mut().expect("serve a busy node");
        let op = busy.pending.take().expect("serve a pending op");
        let locks = self.remote.server().profile() == ServerProfile::LocksWhileWriting;
        if locks && busy.writing.is_none() {
            let put_path = match &op {
                Op::Put { path, .. } => Some(path.clone()),
                Op::Upload { job } => Some(job.temp_path.clone()),
                _ => None,
            };
            if let Some(path) = put_path
                && self.remote.server_mut().begin_write(&path)
            {
                // The body takes a while to arrive; others may act meanwhile.
                busy.writing = Some(path.clone());
                busy.pending = Some(op);
                log!(self, "n{i} PUT {path} begins");
                return Ok(());
            }
        }
        if let Some(path) = busy.writing.take() {
            self.remote.server_mut().end_write(&path);
        }
        let fault = self.choose_fault(&op);
        if let Some(f) = &fault {
            let c = &self.nodes[i].client;
            c.inject(c.ops(), f.clone());
        }
        let answer = self.execute(i, &op);
        self.ops += 1;
        let fault_note = Optional(fault.as_ref().map(|f| Noted(" [fault ", f, "]")));
        log!(self, "n{i} {} -> {}{fault_note}", OpText(&op), AnswerText(&op, &answer));
        let noted = self.note_op(i, &op, &answer);
        let t = self.nodes[i].client.server_time_ms();
        self.execs[i].answer(answer, t);
        let pumped = self.pump(i);
        noted.and(pumped)
    }

    fn choose_fault(&mut self, op: &Op) -> Option<Fault> {
        if self.healing || matches!(op, Op::Sleep { .. }) {
            return None;
        }
        match self.choices.weighted(&[60, 2, 2, 1]) {
            1 => Some(Fault::Fail(RemoteError::Unavailable("503 injected".to_owned()))),
            2 => Some(Fault::LostResponse),
            3 => Some(Fault::Fail(RemoteError::Locked)),
            _ => None,
        }
    }

    /// Bookkeeping of one served operation: counters for the summary check,
    /// and `version.txt` must only grow.
    fn note_op(&mut self, i: usize, op: &Op, answer: &Answer) -> Check {
        let busy = self.nodes[i].busy.as_mut().expect("busy");
        // The summary counts the blobs every attempt moved.
        match (op, answer) {
            (Op::Upload { .. }, Answer::Blob(Ok(()))) => busy.uploads += 1,
            (Op::Download { .. }, Answer::Blob(Ok(()))) => busy.downloads += 1,
            _ => {}
        }
        if matches!(
            op,
            Op::Put { .. } | Op::Delete { .. } | Op::Mkcol { .. } | Op::Move { .. } | Op::Upload { .. }
        ) {
            busy.remote_writes += 1;
        }
        let Op::Put { path, bytes, .. } = op else { return Ok(()) };
        if path != "version.txt" {
            return Ok(());
        }
        self.check_one_db_per_version(&format!("n{i}"), true)?;
        let now = self.read_version_txt();
        let busy = self.nodes[i].busy.as_mut().expect("busy");
        if now == self.version_txt {
            return Ok(());
        }
        let ours = Head::parse(bytes).ok().map(|h| h.version);
        let own_retry = busy.version_put.is_some() && busy.version_put == ours;
        if let (Some(old), Some(new)) = (self.version_txt, now)
            && new <= old
            && !own_retry
        {
            // SPEC §3, "When the server honours nothing": a holder that stalls
            // between its last lease check and this write, while another
            // instance takes the lease over and commits, cannot be fenced on a
            // server that ignores conditional requests. The counter is set
            // back; the next sync finds it behind `metadata.db` and commits
            // past it. Allowed only there, and only for a taken-over holder;
            // the high-water mark stays, and the end state must be past it.
            let ignores = self.remote.server().profile() == ServerProfile::IgnoresConditionals;
            if !ignores || self.holds_lease(i) {
                return Err(format!("version.txt went from {old} to {new} (written by n{i})"));
            }
            log!(
                self,
                "n{i}, whose lease was taken over, set version.txt back from {old} to {new} \
                 (unfenceable here); a later commit must go past {old}"
            );
            return Ok(());
        }
        if matches!(answer, Answer::Put(Ok(_))) {
            busy.version_put = ours;
        }
        self.version_txt = now;
        Ok(())
    }

    /// Is one of `waiting` about to write its commit (a change file, or
    /// `metadata.db`)?
    fn commit_pending(&self, waiting: &[usize]) -> bool {
        waiting.iter().any(|&i| {
            let pending = self.nodes[i].busy.as_ref().and_then(|b| b.pending.as_ref());
            pending.is_some_and(is_commit_write)
        })
    }

    /// A published commit names one state: were the state published as
    /// commit N (version and id) later different, an instance that recorded
    /// N would skip the difference for good (its quick check compares the
    /// commit only). Checked when `version.txt` is written (`publishing`)
    /// and at the end. The state is `metadata.db` with the change files after
    /// it applied, so a fold must not change it either. Only a restore may
    /// reuse a commit.
    fn check_one_db_per_version(&mut self, who: &str, publishing: bool) -> Check {
        let Some(state) = self.remote_state().map_err(|e| format!("{who}: {e}"))? else {
            return Ok(());
        };
        let rows: Vec<&RemoteRow> = state.rows.values().collect();
        self.check_stamps_are_clock_readings(who, &rows)?;
        self.oracle.published(rows.iter().copied());
        // The rows, leaving out `updated_at` (a wall-clock note, not state).
        let rows: Vec<RemoteRow> =
            state.rows.into_values().map(|r| RemoteRow { updated_at: String::new(), ..r }).collect();
        let key = (state.epoch, state.version, state.commit);
        match self.published.get(&key) {
            Some(known) if *known != rows => Err(format!(
                "{who}: the published state of version {} (epoch {}, commit {:?}) was replaced by another one",
                key.1, key.0, key.2
            )),
            Some(_) => Ok(()),
            None => {
                if publishing && self.read_version_txt() == Some(key.1) {
                    self.published.insert(key, rows);
                }
                Ok(())
            }
        }
    }

    /// A hybrid logical clock's physical part is always some instance's
    /// wall-clock reading (the largest it has made or seen), never a number
    /// of its own: every published stamp lies within what the instances'
    /// clocks can have shown so far (the world's time, give or take the
    /// largest skew and the drift). A clock that stopped following the wall
    /// clock (a Lamport counter, or one stuck at its first value) stays
    /// causal, so only this catches it.
    fn check_stamps_are_clock_readings(&self, who: &str, rows: &[&RemoteRow]) -> Check {
        let now = self.world_ms.load(Ordering::SeqCst);
        // Drift is at most 500 ppm of the time since T0.
        let slack = DAY_MS + (now - T0_MS) / 2_000 + 1;
        let span = (T0_MS - slack)..=(now + slack);
        match rows.iter().find(|r| !span.contains(&r.hlc.physical_ms)) {
            Some(r) => Err(format!(
                "{who}: {} is published with stamp {}, whose time no instance's clock can have shown \
                 (world time {now} ms, clocks within {slack} ms of it)",
                r.stable_id, r.hlc
            )),
            None => Ok(()),
        }
    }

    /// Does the remote lease name instance `i` as its holder?
    fn holds_lease(&self, i: usize) -> bool {
        let holder = self.remote.read("version.txt.lock/lease.json").and_then(|b| LeaseRecord::parse(&b));
        let me = lock(&self.nodes[i].store).meta.get(META_INSTANCE).cloned();
        holder.is_some_and(|h| Some(h.owner) == me)
    }

    fn read_version_txt(&self) -> Option<i64> {
        self.read_head().map(|h| h.version)
    }

    fn read_head(&self) -> Option<Head> {
        Head::parse(&self.remote.read("version.txt")?).ok()
    }

    /// The engine call of instance `i` returned: trace it and check what it did.
    fn finish(&mut self, i: usize) -> Check {
        let busy = self.nodes[i].busy.take().expect("finish a busy node");
        let returned = busy.result.clone().expect("finished");
        let rows = lock(&self.nodes[i].store).rows.clone();
        if busy.sync {
            // (A resolution's copy is recorded by `resolve` first.)
            self.oracle.observe(i, rows.values())?;
        }
        let crashed = busy.crashed;
        self.last_result = match &returned {
            Returned::Sync(r) if !crashed => Some(r.clone()),
            _ => None,
        };
        match &returned {
            Returned::Trap(e) => return Err(format!("n{i}: the engine trapped: {e}")),
            Returned::Resolve(r) => {
                log!(self, "n{i} resolve returned {}", brief(r.as_ref().map(|o| o.stable_id.clone())));
            }
            Returned::Sync(Ok(s)) => {
                log!(self, "n{i} sync {}", describe_summary(s, crashed));
                if !crashed {
                    self.check_summary(i, &busy, s, &rows)?;
                }
            }
            Returned::Sync(Err(e)) => {
                log!(self, "n{i} sync failed{}: {e}", if crashed { " (crashed)" } else { "" });
                let unexpected =
                    matches!(e, SyncError::RemoteCorrupt(_) | SyncError::Invalid(_) | SyncError::Local(_));
                if unexpected && !crashed {
                    return Err(format!("n{i}: a sync failed in a way the simulator never provokes: {e}"));
                }
                if self.settled && !crashed && !matches!(e, SyncError::MassDelete { .. }) {
                    return Err(format!("n{i}: a sync failed after the faults stopped: {e}"));
                }
            }
        }
        for row in rows.values().filter(|r| r.sync_status == SyncStatus::Conflict) {
            if !busy.before.get(&row.stable_id).is_some_and(|b| b.sync_status == SyncStatus::Conflict) {
                self.oracle.conflict_recorded(i, &row.stable_id, self.step);
            }
        }
        self.nodes[i].busy = None;
        Ok(())
    }

    /// Summary counts agree with what changed.
    fn check_summary(
        &self,
        i: usize,
        busy: &Busy,
        s: &SyncSummary,
        after: &BTreeMap<String, LocalRow>,
    ) -> Check {
        let fail = |what: String| Err(format!("n{i}: summary disagrees with what happened: {what}; {s:?}"));
        if s.skipped {
            if busy.remote_writes > 0 || s.uploaded + s.downloaded + s.conflicts > 0 {
                return fail("a skipped sync wrote".to_owned());
            }
            return Ok(());
        }
        if s.uploaded != busy.uploads {
            return fail(format!("uploaded {} but {} blobs moved into place", s.uploaded, busy.uploads));
        }
        if s.downloaded != busy.downloads {
            return fail(format!("downloaded {} but {} blobs arrived", s.downloaded, busy.downloads));
        }
        if s.errors as usize != s.file_errors.len() {
            return fail("errors != file_errors.len()".to_owned());
        }
        if let Some(v) = busy.version_put
            && v != s.new_version
        {
            return fail(format!("new_version {} but it wrote version.txt {v}", s.new_version));
        }
        // Rows the app touched during the call may or may not have been
        // read before the touch, and a touch after the local commit may have
        // undone what the sync did (an edit clears a conflict): they give the
        // counts their slack.
        let became = |pred: &dyn Fn(&LocalRow) -> bool, was: &dyn Fn(Option<&LocalRow>) -> bool| {
            let sure = after
                .values()
                .filter(|r| pred(r) && was(busy.before.get(&r.stable_id)))
                .filter(|r| !busy.touched.contains(&r.stable_id))
                .count();
            let maybe = busy.touched.iter().filter(|id| was(busy.before.get(*id))).count();
            (sure, sure + maybe)
        };
        let (lo, hi) = became(&|r| r.deleted, &|b| b.is_some_and(|b| !b.deleted));
        if !(lo..=hi).contains(&(s.deleted_local as usize)) {
            return fail(format!("deleted_local {} but {lo}..={hi} files went", s.deleted_local));
        }
        let is_conflict = |r: &LocalRow| r.sync_status == SyncStatus::Conflict;
        let (lo, hi) = became(&is_conflict, &|b| b.is_none_or(|b| !is_conflict(b)));
        if !(lo..=hi).contains(&(s.conflicts as usize)) {
            return fail(format!("conflicts {} but {lo}..={hi} rows became conflicts", s.conflicts));
        }
        Ok(())
    }

    /// Resolves one conflict of idle instance `i`.
    fn resolve_one(&mut self, i: usize) -> Check {
        let (s, row) = {
            let list: Vec<(&String, &LocalRow)> = self.nodes[i].conflicts.iter().collect();
            let (s, row) = list[self.choices.pick(list.len() as u32) as usize];
            (s.clone(), row.clone())
        };
        let kind = match self.choices.pick(3) {
            0 => ResolutionKind::RemoteWins,
            1 => ResolutionKind::LocalWins,
            _ if row.deleted => ResolutionKind::LocalWins,
            _ => ResolutionKind::KeepBoth { variant: format!("kept-{}", self.step) },
        };
        self.resolve(i, &s, &row, kind)
    }

    fn resolve(&mut self, i: usize, s: &str, row: &LocalRow, kind: ResolutionKind) -> Check {
        log!(self, "n{i} resolves {s}: {kind:?}");
        let call = Call::Resolve(Resolution { stable_id: s.to_owned(), kind: kind.clone() });
        self.start_call(i, call)?;
        // A resolution makes no remote request: it must be done already.
        if self.nodes[i].busy.is_some() {
            return Err(format!("n{i}: resolve asked the remote for something"));
        }
        self.nodes[i].conflicts.remove(s);
        let store_row = lock(&self.nodes[i].store).rows.get(s).cloned();
        if store_row.as_ref().is_some_and(|r| r.sync_status == SyncStatus::Conflict) {
            return Ok(()); // refused; the conflict stays
        }
        let choice = if kind == ResolutionKind::LocalWins { Choice::Local } else { Choice::Remote };
        self.oracle.resolved(i, row, choice);
        if let ResolutionKind::KeepBoth { .. } = kind {
            let rows = lock(&self.nodes[i].store).rows.clone();
            let copy = rows
                .values()
                .find(|r| !self.is_known_file(&r.stable_id) && r.id == row.id)
                .ok_or_else(|| format!("n{i}: keep_both made no copy of {s}"))?
                .clone();
            self.oracle.record(
                i,
                &copy.stable_id,
                WriteKind::Copy,
                Some(copy.id.clone()),
                token_of(&copy.meta),
                self.step,
            );
            log!(self, "n{i} keeps its side of {s} as {}", copy.stable_id);
        }
        let rows = lock(&self.nodes[i].store).rows.clone();
        self.oracle.observe(i, rows.values())
    }

    fn is_known_file(&self, stable_id: &str) -> bool {
        self.oracle.writes().iter().any(|w| w.stable_id == stable_id)
    }

    /// Kills instance `i` (at its pending remote operation, if it is in a
    /// call) and starts a new incarnation over the same store.
    fn crash(&mut self, i: usize) -> Check {
        let node = &mut self.nodes[i];
        if let Some(busy) = node.busy.as_mut() {
            busy.crashed = true;
            node.life.kill();
            if let Some(path) = busy.writing.take() {
                self.remote.server_mut().end_write(&path);
            }
            let pending = busy.pending.take().expect("a busy node waits at an op");
            log!(self, "n{i} crashes at {}", OpText(&pending));
            let t = self.nodes[i].client.server_time_ms();
            self.execs[i].answer(pending.crashed(), t);
            self.pump_dead(i)?;
        } else {
            log!(self, "n{i} restarts");
        }
        self.restart(i);
        Ok(())
    }

    /// Runs a killed call to its end: its ports refuse everything.
    fn pump_dead(&mut self, i: usize) -> Check {
        loop {
            match self.execs[i].recv() {
                Up::Op(op) => {
                    let t = self.nodes[i].client.server_time_ms();
                    self.execs[i].answer(op.crashed(), t);
                }
                Up::Done(returned) => {
                    self.nodes[i].busy.as_mut().expect("busy").result = Some(returned);
                    return self.finish(i);
                }
            }
        }
    }

    fn restart(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.lives += 1;
        node.client = MemRemoteClient::new(self.remote.clone());
        node.blobs = MemBlobs::new(node.files.clone(), node.client.clone());
        node.life =
            Arc::new(Life::new(node.store.clone(), node.clock.clone(), life_seed(self.seed, i, node.lives)));
    }

    /// Ends every running call (the scenario is over, maybe early).
    fn abandon(&mut self) {
        for i in 0..self.nodes.len() {
            if self.nodes[i].busy.is_some() {
                let healing = std::mem::replace(&mut self.healing, true);
                let _ = self.crash(i);
                self.healing = healing;
            }
        }
    }

    // -----------------------------------------------------------------
    // Quiescence
    // -----------------------------------------------------------------

    fn heal(&mut self) -> Check {
        self.healing = true;
        log!(self, "quiescence: faults stop, running calls finish");
        self.drain()?;
        self.advance(LEASES_EXPIRE_MS);
        self.settled = true;
        for round in 1..=HEAL_ROUNDS_MAX {
            self.step += 1;
            log!(self, "heal round {round}");
            for i in 0..self.nodes.len() {
                let open: Vec<(String, LocalRow)> =
                    self.nodes[i].conflicts.iter().map(|(s, r)| (s.clone(), r.clone())).collect();
                for (s, row) in open {
                    let kind = match self.choices.pick(3) {
                        0 => ResolutionKind::RemoteWins,
                        1 => ResolutionKind::LocalWins,
                        _ if row.deleted => ResolutionKind::RemoteWins,
                        _ => ResolutionKind::KeepBoth { variant: format!("kept-{}", self.step) },
                    };
                    self.resolve(i, &s, &row, kind)?;
                    self.check_step()?;
                }
            }
            // The job runs once more with no grace: the syncs that follow and
            // the final checks see a remote swept of every unreferenced blob.
            self.run_gc(0)?;
            let version_before = self.read_version_txt();
            let mut quiet = true;
            for i in 0..self.nodes.len() {
                let summary = self.sync_to_end(i)?;
                quiet &= summary.as_ref().is_some_and(|s| s.conflicts == 0 && s.errors == 0);
                self.check_step()?;
            }
            let pending =
                self.nodes.iter().any(|n| lock(&n.store).rows.values().any(|r| r.sync_status.is_pending()));
            let conflicts = self.nodes.iter().any(|n| !n.conflicts.is_empty());
            if quiet && !pending && !conflicts && self.read_version_txt() == version_before {
                return Ok(());
            }
        }
        Err(format!("no convergence after {HEAL_ROUNDS_MAX} rounds of syncs without faults"))
    }

    /// Lets every running call finish, interleaved, without faults.
    fn drain(&mut self) -> Check {
        for _ in 0..DRAIN_OPS_MAX {
            let waiting: Vec<usize> =
                (0..self.nodes.len()).filter(|&i| self.nodes[i].busy.is_some()).collect();
            if waiting.is_empty() {
                return Ok(());
            }
            let i = waiting[self.choices.pick(waiting.len() as u32) as usize];
            self.serve(i)?;
        }
        Err(format!("running syncs did not finish within {DRAIN_OPS_MAX} operations"))
    }

    /// One sync of instance `i`, run alone to its end (forced if the
    /// mass-delete guard stops it).
    fn sync_to_end(&mut self, i: usize) -> Result<Option<SyncSummary>, String> {
        for force in [false, true] {
            self.start_sync(i, force)?;
            let mut ops = 0;
            while self.nodes[i].busy.is_some() {
                ops += 1;
                if ops > DRAIN_OPS_MAX {
                    return Err(format!("n{i}: a sync did not finish within {DRAIN_OPS_MAX} operations"));
                }
                self.serve(i)?;
            }
            match self.last_result.take() {
                Some(Err(SyncError::MassDelete { .. })) => continue,
                Some(Ok(s)) => return Ok(Some(s)),
                _ => return Ok(None),
            }
        }
        Ok(None)
    }

    // -----------------------------------------------------------------
    // Invariants
    // -----------------------------------------------------------------

    /// Cheap invariants after every step: recorded conflicts are only
    /// changed by the app or a resolution, and every live local row has its
    /// blob.
    fn check_step(&mut self) -> Check {
        for i in 0..self.nodes.len() {
            let node = &self.nodes[i];
            let store = lock(&node.store);
            for (s, recorded) in &node.conflicts {
                if store.rows.get(s) != Some(recorded) {
                    return Err(format!(
                        "n{i}: conflict on {s} was overwritten without a resolution: now {:?}",
                        store.rows.get(s).map(|r| (r.sync_status, short(&r.id)))
                    ));
                }
            }
            for row in store.live_rows() {
                let blob = row.blob().map_err(|e| e.to_string())?;
                if !node.files.contains(&blob) {
                    return Err(format!(
                        "n{i}: live row {} has no local blob {}",
                        row.stable_id,
                        blob.path()
                    ));
                }
            }
            let current: BTreeMap<String, LocalRow> = store
                .rows
                .values()
                .filter(|r| r.sync_status == SyncStatus::Conflict)
                .map(|r| (r.stable_id.clone(), r.clone()))
                .collect();
            drop(store);
            self.nodes[i].conflicts = current;
        }
        Ok(())
    }

    /// After quiescence: everyone agrees, every blob is there and right,
    /// and no write was lost.
    fn check_final(&mut self) -> Check {
        self.check_one_db_per_version("at the end", false)?;
        let state = self.remote_state()?;
        let db_version = state.as_ref().map_or(0, |s| s.rows_version);
        let remote_rows = state.map(|s| s.rows).unwrap_or_default();
        if let (Some(high), now) = (self.version_txt, self.read_version_txt())
            && now.is_none_or(|v| v < high)
        {
            return Err(format!("version.txt ended at {now:?}, behind version {high} published before"));
        }
        if self.read_version_txt().unwrap_or(0) != db_version {
            return Err(format!(
                "version.txt {:?} != the remote state's version {db_version}",
                self.read_version_txt()
            ));
        }
        for row in remote_rows.values().filter(|r| !r.deleted) {
            let blob = row.blob().map_err(|e| e.to_string())?;
            let bytes = self
                .remote
                .read(&blob.path())
                .ok_or_else(|| format!("remote blob of {} missing", row.stable_id))?;
            if ContentHash::of(&bytes) != row.id {
                return Err(format!("remote blob of {} has the wrong hash", row.stable_id));
            }
        }
        for i in 0..self.nodes.len() {
            self.check_converged(i, &remote_rows)?;
        }
        let finals: HashMap<String, Final> = remote_rows
            .values()
            .map(|r| {
                (
                    r.stable_id.clone(),
                    Final { content: r.id.clone(), token: token_of(&r.meta), deleted: r.deleted },
                )
            })
            .collect();
        self.oracle.check_final(&finals)?;
        log!(self, "converged: {} files, version {db_version}", finals.len());
        Ok(())
    }

    fn check_converged(&self, i: usize, remote: &BTreeMap<String, RemoteRow>) -> Check {
        let node = &self.nodes[i];
        let store = lock(&node.store);
        for r in remote.values() {
            match store.rows.get(&r.stable_id) {
                None if r.deleted => {}
                None => return Err(format!("n{i}: live remote file {} missing locally", r.stable_id)),
                Some(l) => {
                    if l.deleted != r.deleted {
                        return Err(format!(
                            "n{i}: {} deleted={} locally, {} remotely",
                            r.stable_id, l.deleted, r.deleted
                        ));
                    }
                    if !r.deleted && (l.id != r.id || l.meta != r.meta) {
                        return Err(format!(
                            "n{i}: {} differs: local {} {:?}, remote {} {:?}",
                            r.stable_id,
                            short(&l.id),
                            token_of(&l.meta),
                            short(&r.id),
                            token_of(&r.meta)
                        ));
                    }
                }
            }
        }
        for l in store.rows.values() {
            if l.sync_status.is_pending() || l.sync_status == SyncStatus::Conflict {
                return Err(format!("n{i}: {} is still {}", l.stable_id, l.sync_status.as_str()));
            }
            if !l.deleted && !remote.contains_key(&l.stable_id) {
                return Err(format!("n{i}: local file {} never reached the remote", l.stable_id));
            }
            if !l.deleted {
                let blob = l.blob().map_err(|e| e.to_string())?;
                let ok = node.files.get(&blob).is_some_and(|b| ContentHash::of(&b) == l.id);
                if !ok {
                    return Err(format!("n{i}: local blob of {} missing or wrong", l.stable_id));
                }
            }
        }
        let version = store.meta.get(META_VERSION).and_then(|v| v.parse::<i64>().ok());
        let commit = store.meta.get(META_COMMIT).filter(|c| !c.is_empty()).cloned();
        let head = self.read_head();
        if (version, commit.clone())
            != (head.as_ref().map(|h| h.version), head.as_ref().and_then(|h| h.commit.clone()))
        {
            return Err(format!(
                "n{i}: remembers remote version {version:?} (commit {commit:?}), remote is at {:?}",
                head.map(|h| (h.version, h.commit))
            ));
        }
        Ok(())
    }

    /// The remote's whole state: `metadata.db` and the commits after it.
    fn remote_state(&mut self) -> Result<Option<State>, String> {
        let server = self.remote.server();
        self.states.read(|path| server.bytes(path)).map_err(|e| format!("remote state: {e}"))
    }
}

#[cfg(feature = "wasm")]
fn wasm_cache_dir() -> Option<std::path::PathBuf> {
    davsync::component::default_cache_dir()
}

#[cfg(not(feature = "wasm"))]
fn wasm_cache_dir() -> Option<std::path::PathBuf> {
    None
}

fn life_seed(seed: u64, instance: usize, life: u64) -> u64 {
    seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ ((instance as u64) << 48) ^ (life << 32) ^ 0xD5
}

/// An operation as the trace shows it.
struct OpText<'a>(&'a Op);

impl fmt::Display for OpText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Op::Get { path, .. } => write!(f, "GET {path}"),
            Op::Put { path, condition, .. } => match condition {
                Precondition::None => write!(f, "PUT {path}"),
                Precondition::IfMatch(e) => write!(f, "PUT {path} if-match {e}"),
                Precondition::IfNoneMatchAny => write!(f, "PUT {path} if-none-match *"),
            },
            Op::Delete { path } => write!(f, "DELETE {path}"),
            Op::Mkcol { path } => write!(f, "MKCOL {path}"),
            Op::Move { from, to, .. } => write!(f, "MOVE {from} {to}"),
            Op::Stat { path } => write!(f, "PROPFIND {path}"),
            Op::List { path } => write!(f, "LIST {path}"),
            Op::Upload { job } => write!(f, "UPLOAD {}", job.final_path),
            Op::Download { job, .. } => write!(f, "DOWNLOAD {}", job.remote_path),
            Op::LocalHas { blob } => write!(f, "LOCAL? {}", blob.path()),
            Op::RemoveLocal { blob } => write!(f, "RM-LOCAL {}", blob.path()),
            Op::Sleep { ms } => write!(f, "sleep {ms} ms"),
        }
    }
}

/// `ok {value:?}` or `err: {error}`.
struct Brief<'a, T, E>(&'a Result<T, E>);

impl<T: fmt::Debug, E: fmt::Display> fmt::Display for Brief<'_, T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Ok(v) => write!(f, "ok {v:?}"),
            Err(e) => write!(f, "err: {e}"),
        }
    }
}

fn brief<T: fmt::Debug, E: fmt::Display>(r: Result<T, E>) -> String {
    Brief(&r).to_string()
}

/// The answer to an operation as the trace shows it.
struct AnswerText<'a>(&'a Op, &'a Answer);

impl fmt::Display for AnswerText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.0, self.1) {
            // metadata.db's size depends on the SQLite build (the component's
            // pages are larger), not on any decision: leave it out of the trace.
            (Op::Get { path, .. }, Answer::Get(Ok(file))) if path == "metadata.db" => {
                write!(f, "ok db {:?}", file.etag)
            }
            // Change files embed nothing build-dependent, but their size
            // tells nothing either.
            (Op::Get { path, .. }, Answer::Get(Ok(file))) if path.starts_with("changes/") => {
                write!(f, "ok change {:?}", file.etag)
            }
            (_, Answer::Get(r)) => Brief(&r.as_ref().map(|file| (file.bytes.len(), &file.etag))).fmt(f),
            (_, Answer::Put(r)) => Brief(r).fmt(f),
            (_, Answer::Unit(r)) => Brief(r).fmt(f),
            (_, Answer::Stat(r)) => {
                Brief(&r.as_ref().map(|s| s.as_ref().map(|s| (s.is_collection, s.size)))).fmt(f)
            }
            (_, Answer::List(r)) => Brief(&r.as_ref().map(|l| l.as_ref().map(Vec::len))).fmt(f),
            (_, Answer::Blob(r)) => Brief(r).fmt(f),
            (_, Answer::Has(r)) => Brief(r).fmt(f),
            (_, Answer::Slept) => f.write_str("slept"),
        }
    }
}

/// `{before}{value:?}{after}`.
struct Noted<'a, T>(&'static str, &'a T, &'static str);

impl<T: fmt::Debug> fmt::Display for Noted<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{:?}{}", self.0, self.1, self.2)
    }
}

/// The value, or nothing.
struct Optional<T>(Option<T>);

impl<T: fmt::Display> fmt::Display for Optional<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(v) => v.fmt(f),
            None => Ok(()),
        }
    }
}

fn describe_summary(s: &SyncSummary, crashed: bool) -> String {
    let c = if crashed { " (crashed)" } else { "" };
    if s.skipped {
        return format!("skipped{c}");
    }
    format!(
        "ok{c}: up {} down {} del-local {} del-remote {} meta {} conflicts {} errors {} version {}{}",
        s.uploaded,
        s.downloaded,
        s.deleted_local,
        s.deleted_remote,
        s.metadata_synced,
        s.conflicts,
        s.errors,
        s.new_version,
        if s.epoch_changed { " epoch-changed" } else { "" }
    ) + &s.file_errors.iter().map(|e| format!("; {}: {}", e.stable_id, e.message)).collect::<String>()
}

/// Does `op` write a commit: a change file, or `metadata.db` (a new remote's
/// first commit, or a fold)?
fn is_commit_write(op: &Op) -> bool {
    matches!(op, Op::Put { path, .. } if path == "metadata.db" || path.starts_with("changes/"))
}
