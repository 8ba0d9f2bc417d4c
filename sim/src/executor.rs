//! Engine executors and the baton.
//!
//! An engine call (`sync`, `resolve`) is synchronous and may run for many
//! remote operations, so each virtual instance runs its calls in its own
//! *executor*: the native core on a stackful coroutine (corosensei) on the
//! coordinator's own thread, the real component (through
//! `davsync::engine::Syncer`, in wasmtime) on a thread of its own. The
//! executor's ports are proxies: every remote operation, blob transfer and
//! sleep goes to the coordinator, which owns the in-memory world, and the
//! executor waits until it answers (the coroutine suspends; the thread
//! blocks on a channel). Exactly one of them runs at a time, and the order of
//! everything is decided by the coordinator's seeded scheduler: the same
//! seed, the same run. A coroutine switch costs nanoseconds where a thread
//! hand-off costs two kernel wake-ups, which is most of the difference in
//! scenarios per second between the two.
//!
//! The app's database (`MemStore`) is shared behind a mutex and read
//! directly by the executor; that is safe for determinism because the
//! coordinator never runs while an executor does. A crashed incarnation
//! ([`Life::kill`]) refuses every further port call, so a killed process
//! keeps exactly what its store had committed.

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use corosensei::stack::DefaultStack;
use corosensei::{Coroutine, CoroutineResult, Yielder};
use davsync_core::mem::{MemStore, SeededRandom};
use davsync_core::model::{BlobRef, ContentHash, LocalRow, RowBase};
use davsync_core::ports::{
    ApplyOutcome, BlobError, BlobTransfer, Clock, DownloadJob, Fetched, Io, LocalCommit, LocalError,
    LocalStore, NoProgress, Precondition, Random, RemoteEntry, RemoteError, RemoteStat, RemoteTransport,
    UploadJob,
};
use davsync_core::{Resolution, ResolveOutcome, SyncError, SyncOptions, SyncSummary};

use crate::scenario::Engine;

/// One request of an executor to the coordinator. The fields are the
/// parameters of the port method of the same name.
#[allow(missing_docs)]
#[derive(Debug, Clone)]
pub enum Op {
    /// `RemoteTransport::get`.
    Get { path: String, bytes_max: u64 },
    /// `RemoteTransport::put`.
    Put { path: String, bytes: Vec<u8>, condition: Precondition },
    /// `RemoteTransport::delete`.
    Delete { path: String },
    /// `RemoteTransport::mkcol`.
    Mkcol { path: String },
    /// `RemoteTransport::move_to`.
    Move { from: String, to: String, overwrite: bool },
    /// `RemoteTransport::stat`.
    Stat { path: String },
    /// `RemoteTransport::list`.
    List { path: String },
    /// One job of `BlobTransfer::upload`.
    Upload { job: UploadJob },
    /// One job of `BlobTransfer::download`.
    Download { job: DownloadJob, bytes_max: u64 },
    /// `BlobTransfer::local_has` (answered at once, not a scheduling point).
    LocalHas { blob: BlobRef },
    /// `BlobTransfer::remove_local` (answered at once).
    RemoveLocal { blob: BlobRef },
    /// `Clock::sleep_ms`: time passes for everyone.
    Sleep { ms: u64 },
}

impl Op {
    /// Does the scheduler decide when this runs? Local blob questions are
    /// answered at once; everything that talks to the server, and sleeping,
    /// is a point where another instance may go first.
    pub fn is_scheduled(&self) -> bool {
        !matches!(self, Op::LocalHas { .. } | Op::RemoveLocal { .. })
    }

    /// The answer a dead incarnation gets without asking anyone.
    pub fn crashed(&self) -> Answer {
        let gone = || RemoteError::Unavailable("crashed".to_owned());
        match self {
            Op::Get { .. } => Answer::Get(Err(gone())),
            Op::Put { .. } => Answer::Put(Err(gone())),
            Op::Delete { .. } | Op::Mkcol { .. } | Op::Move { .. } => Answer::Unit(Err(gone())),
            Op::Stat { .. } => Answer::Stat(Err(gone())),
            Op::List { .. } => Answer::List(Err(gone())),
            Op::Upload { .. } | Op::Download { .. } => Answer::Blob(Err(BlobError::Remote(gone()))),
            Op::LocalHas { .. } => Answer::Has(Err(BlobError::LocalIo("crashed".to_owned()))),
            Op::RemoveLocal { .. } => Answer::Blob(Err(BlobError::LocalIo("crashed".to_owned()))),
            Op::Sleep { .. } => Answer::Slept,
        }
    }
}

/// The coordinator's answer to an [`Op`].
#[derive(Debug, Clone)]
pub enum Answer {
    /// To `Get`.
    Get(Result<Fetched, RemoteError>),
    /// To `Put`.
    Put(Result<Option<String>, RemoteError>),
    /// To `Delete`, `Mkcol`, `Move`.
    Unit(Result<(), RemoteError>),
    /// To `Stat`.
    Stat(Result<Option<RemoteStat>, RemoteError>),
    /// To `List`.
    List(Result<Option<Vec<RemoteEntry>>, RemoteError>),
    /// To `Upload`, `Download`, `RemoveLocal`.
    Blob(Result<(), BlobError>),
    /// To `LocalHas`.
    Has(Result<bool, BlobError>),
    /// To `Sleep`.
    Slept,
}

/// An engine call.
#[derive(Debug, Clone)]
pub enum Call {
    /// `sync(options)`.
    Sync(SyncOptions),
    /// `resolve(resolution)`.
    Resolve(Resolution),
}

/// What an engine call returned.
#[derive(Debug, Clone)]
pub enum Returned {
    /// From `sync`.
    Sync(Result<SyncSummary, SyncError>),
    /// From `resolve`.
    Resolve(Result<ResolveOutcome, SyncError>),
    /// The engine itself failed (a wasm trap).
    Trap(String),
}

/// Executor → coordinator.
#[derive(Debug)]
pub enum Up {
    /// Please carry out this operation and answer.
    Op(Op),
    /// The call finished.
    Done(Returned),
}

enum Down {
    Call { life: Arc<Life>, call: Call },
    Answer { answer: Answer, server_time_ms: Option<i64> },
    Stop,
}

/// One incarnation of an instance's process: what its ports act on. A
/// restart makes a new one over the same store; a crash kills the old one.
#[derive(Debug)]
pub struct Life {
    store: Arc<Mutex<MemStore>>,
    dead: AtomicBool,
    clock: InstanceClock,
    random: Mutex<SeededRandom>,
    server_time_ms: Mutex<Option<i64>>,
}

impl Life {
    /// A live incarnation over `store`, with `clock` and randomness from `seed`.
    pub fn new(store: Arc<Mutex<MemStore>>, clock: InstanceClock, seed: u64) -> Life {
        Life {
            store,
            dead: AtomicBool::new(false),
            clock,
            random: Mutex::new(SeededRandom::new(seed)),
            server_time_ms: Mutex::new(None),
        }
    }

    /// The process dies: every later port call fails, nothing more is written.
    pub fn kill(&self) {
        self.dead.store(true, Ordering::SeqCst);
    }

    fn is_dead(&self) -> bool {
        self.dead.load(Ordering::SeqCst)
    }
}

/// An instance's wall clock: world time plus a skew (which a clock jump may
/// change at any moment) plus a drift in parts per million since `origin_ms`.
#[derive(Debug, Clone)]
pub struct InstanceClock {
    /// The true time, written only by the coordinator.
    pub world_ms: Arc<AtomicI64>,
    /// The instance's offset from true time.
    pub skew_ms: Arc<AtomicI64>,
    /// How fast the clock runs off, in ppm.
    pub drift_ppm: i64,
    /// When the drift started.
    pub origin_ms: i64,
}

impl InstanceClock {
    /// What this clock reads now.
    pub fn read_ms(&self) -> i64 {
        let world = self.world_ms.load(Ordering::SeqCst);
        let drift = (world - self.origin_ms).saturating_mul(self.drift_ppm) / 1_000_000;
        world + self.skew_ms.load(Ordering::SeqCst) + drift
    }
}

/// What the coordinator sends back for an operation: the answer and, if the
/// server said, its clock.
type Reply = (Answer, Option<i64>);

/// The executor side of the baton: how a port proxy asks the coordinator.
trait Baton {
    /// Hands `op` to the coordinator and waits for its reply.
    fn hand_over(&self, op: Op) -> Reply;
    /// The incarnation the running call acts for.
    fn life(&self) -> Arc<Life>;
}

/// The baton of an executor thread: two channels.
struct ThreadBaton {
    up: Sender<Up>,
    down: Receiver<Down>,
    life: RefCell<Option<Arc<Life>>>,
}

impl Baton for ThreadBaton {
    fn hand_over(&self, op: Op) -> Reply {
        self.up.send(Up::Op(op)).expect("the coordinator outlives its executors");
        match self.down.recv() {
            Ok(Down::Answer { answer, server_time_ms }) => (answer, server_time_ms),
            _ => panic!("executor: expected an answer from the coordinator"),
        }
    }

    fn life(&self) -> Arc<Life> {
        self.life.borrow().clone().expect("ports are only used during a call")
    }
}

/// The baton of a coroutine: suspending it hands the operation to whoever
/// resumed it.
struct CoBaton<'y> {
    yielder: &'y Yielder<Reply, Op>,
    life: Arc<Life>,
}

impl Baton for CoBaton<'_> {
    fn hand_over(&self, op: Op) -> Reply {
        self.yielder.suspend(op)
    }

    fn life(&self) -> Arc<Life> {
        self.life.clone()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Every port of an executor, backed by its [`Baton`].
struct Proxy<B>(Rc<B>);

impl<B> Clone for Proxy<B> {
    fn clone(&self) -> Self {
        Proxy(self.0.clone())
    }
}

impl<B: Baton> Proxy<B> {
    /// Sends `op` and waits until the coordinator answers it; a dead
    /// incarnation gets its answer without asking.
    fn ask(&self, op: Op) -> Answer {
        let life = self.0.life();
        if life.is_dead() {
            return op.crashed();
        }
        let (answer, server_time_ms) = self.0.hand_over(op);
        if server_time_ms.is_some() {
            *lock(&life.server_time_ms) = server_time_ms;
        }
        answer
    }

    fn store(&self) -> Result<(Arc<Life>, Arc<Mutex<MemStore>>), LocalError> {
        let life = self.0.life();
        if life.is_dead() {
            return Err(LocalError::Other("crashed".to_owned()));
        }
        let store = life.store.clone();
        Ok((life, store))
    }
}

fn unexpected(what: &str, answer: Answer) -> ! {
    panic!("executor: answer {answer:?} does not fit {what}")
}

impl<B: Baton> RemoteTransport for Proxy<B> {
    fn get(&mut self, path: &str, bytes_max: u64) -> Result<Fetched, RemoteError> {
        match self.ask(Op::Get { path: path.to_owned(), bytes_max }) {
            Answer::Get(r) => r,
            a => unexpected("get", a),
        }
    }

    fn put(
        &mut self,
        path: &str,
        bytes: &[u8],
        condition: &Precondition,
    ) -> Result<Option<String>, RemoteError> {
        let op = Op::Put { path: path.to_owned(), bytes: bytes.to_vec(), condition: condition.clone() };
        match self.ask(op) {
            Answer::Put(r) => r,
            a => unexpected("put", a),
        }
    }

    fn delete(&mut self, path: &str) -> Result<(), RemoteError> {
        match self.ask(Op::Delete { path: path.to_owned() }) {
            Answer::Unit(r) => r,
            a => unexpected("delete", a),
        }
    }

    fn mkcol(&mut self, path: &str) -> Result<(), RemoteError> {
        match self.ask(Op::Mkcol { path: path.to_owned() }) {
            Answer::Unit(r) => r,
            a => unexpected("mkcol", a),
        }
    }

    fn move_to(&mut self, from: &str, to: &str, overwrite: bool) -> Result<(), RemoteError> {
        match self.ask(Op::Move { from: from.to_owned(), to: to.to_owned(), overwrite }) {
            Answer::Unit(r) => r,
            a => unexpected("move", a),
        }
    }

    fn stat(&mut self, path: &str) -> Result<Option<RemoteStat>, RemoteError> {
        match self.ask(Op::Stat { path: path.to_owned() }) {
            Answer::Stat(r) => r,
            a => unexpected("stat", a),
        }
    }

    fn list(&mut self, path: &str) -> Result<Option<Vec<RemoteEntry>>, RemoteError> {
        match self.ask(Op::List { path: path.to_owned() }) {
            Answer::List(r) => r,
            a => unexpected("list", a),
        }
    }

    fn server_time_ms(&mut self) -> Option<i64> {
        *lock(&self.0.life().server_time_ms)
    }
}

/// Batches are split into one scheduled operation per job, so other
/// instances can act between the transfers of one batch.
impl<B: Baton> BlobTransfer for Proxy<B> {
    fn local_has(&mut self, blob: &BlobRef) -> Result<bool, BlobError> {
        match self.ask(Op::LocalHas { blob: blob.clone() }) {
            Answer::Has(r) => r,
            a => unexpected("local_has", a),
        }
    }

    fn upload(&mut self, jobs: &[UploadJob]) -> Vec<Result<(), BlobError>> {
        jobs.iter()
            .map(|job| match self.ask(Op::Upload { job: job.clone() }) {
                Answer::Blob(r) => r,
                a => unexpected("upload", a),
            })
            .collect()
    }

    fn download(&mut self, jobs: &[DownloadJob], bytes_max: u64) -> Vec<Result<(), BlobError>> {
        jobs.iter()
            .map(|job| match self.ask(Op::Download { job: job.clone(), bytes_max }) {
                Answer::Blob(r) => r,
                a => unexpected("download", a),
            })
            .collect()
    }

    fn remove_local(&mut self, blob: &BlobRef) -> Result<(), BlobError> {
        match self.ask(Op::RemoveLocal { blob: blob.clone() }) {
            Answer::Blob(r) => r,
            a => unexpected("remove_local", a),
        }
    }
}

/// The host's blob port also hashes remote files (issue 9, `verify`): here
/// through a scheduled GET, like every other remote read.
impl<B: Baton> davsync_core::ports::BlobHasher for Proxy<B> {
    fn remote_hash(
        &mut self,
        path: &str,
        bytes_max: u64,
    ) -> Result<davsync_core::ports::RemoteDigest, BlobError> {
        let fetched = RemoteTransport::get(self, path, bytes_max).map_err(BlobError::from_download)?;
        let size_bytes = fetched.bytes.len() as u64;
        Ok(davsync_core::ports::RemoteDigest { hash: ContentHash::of(&fetched.bytes), size_bytes })
    }
}

impl<B: Baton> LocalStore for Proxy<B> {
    fn count_unsynced(&mut self) -> Result<u64, LocalError> {
        let (_life, store) = self.store()?;
        lock(&store).count_unsynced()
    }

    fn meta_get(&mut self, key: &str) -> Result<Option<String>, LocalError> {
        let (_life, store) = self.store()?;
        lock(&store).meta_get(key)
    }

    fn row_bases(&mut self) -> Result<Vec<RowBase>, LocalError> {
        let (_life, store) = self.store()?;
        lock(&store).row_bases()
    }

    fn rows(&mut self, stable_ids: &[String]) -> Result<Vec<LocalRow>, LocalError> {
        let (_life, store) = self.store()?;
        lock(&store).rows(stable_ids)
    }

    fn live_rows_with_content(&mut self, hash: &ContentHash) -> Result<u64, LocalError> {
        let (_life, store) = self.store()?;
        lock(&store).live_rows_with_content(hash)
    }

    fn apply(&mut self, commit: &LocalCommit) -> Result<ApplyOutcome, LocalError> {
        let (_life, store) = self.store()?;
        lock(&store).apply(commit)
    }

    fn commit_begin(&mut self) -> Result<(), LocalError> {
        let (_life, store) = self.store()?;
        lock(&store).commit_begin()
    }

    fn commit_writes(&mut self, writes: &[davsync_core::ports::RowWrite]) -> Result<(), LocalError> {
        let (_life, store) = self.store()?;
        lock(&store).commit_writes(writes)
    }

    fn commit_finish(&mut self, meta: &[(String, String)]) -> Result<ApplyOutcome, LocalError> {
        let (_life, store) = self.store()?;
        lock(&store).commit_finish(meta)
    }
}

impl<B: Baton> Clock for Proxy<B> {
    fn now_ms(&mut self) -> i64 {
        self.0.life().clock.read_ms()
    }

    fn sleep_ms(&mut self, ms: u64) {
        match self.ask(Op::Sleep { ms }) {
            Answer::Slept => {}
            a => unexpected("sleep", a),
        }
    }
}

impl<B: Baton> Random for Proxy<B> {
    fn next_u64(&mut self) -> u64 {
        lock(&self.0.life().random).next_u64()
    }
}

/// The coordinator's handle on one executor.
#[derive(Debug)]
pub struct Executor(Inner);

#[derive(Debug)]
enum Inner {
    /// The native core on a coroutine of the coordinator's thread.
    Co(RefCell<CoExecutor>),
    /// The component, in wasmtime on a thread of its own.
    Thread(ThreadExecutor),
}

/// The stack of a coroutine running the native core (SQLite included).
const CO_STACK_BYTES: usize = 8 << 20;

/// A coroutine per call, and the reply it gets when next resumed.
struct CoExecutor {
    call: Option<Coroutine<Reply, Op, Returned, DefaultStack>>,
    reply: Reply,
    /// The stack of the last call that returned, for the next one: a new
    /// stack is an `mmap` and a guard page, dropping it an `munmap` that
    /// flushes every core's TLB (an eighth of the simulator's time when each
    /// call had its own).
    spare: Option<DefaultStack>,
}

impl std::fmt::Debug for CoExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoExecutor").field("running", &self.call.is_some()).finish()
    }
}

/// An executor thread and its two channels.
#[derive(Debug)]
struct ThreadExecutor {
    down: Sender<Down>,
    up: Receiver<Up>,
    thread: Option<JoinHandle<()>>,
}

impl Executor {
    /// Starts an executor running `kind`; `cache_dir` caches the compiled
    /// component.
    pub fn spawn(kind: Engine, cache_dir: Option<PathBuf>) -> anyhow::Result<Executor> {
        if kind == Engine::Native {
            let co = CoExecutor { call: None, reply: (Answer::Slept, None), spare: None };
            return Ok(Executor(Inner::Co(RefCell::new(co))));
        }
        let (down_tx, down_rx) = channel();
        let (up_tx, up_rx) = channel();
        let (ready_tx, ready_rx) = channel();
        let thread = std::thread::Builder::new()
            .name("davsync-sim-executor".to_owned())
            .stack_size(8 << 20)
            .spawn(move || executor_main(kind, cache_dir, up_tx, down_rx, ready_tx))?;
        match ready_rx.recv() {
            Ok(Ok(())) => {
                Ok(Executor(Inner::Thread(ThreadExecutor { down: down_tx, up: up_rx, thread: Some(thread) })))
            }
            Ok(Err(e)) => Err(anyhow::anyhow!("starting the {kind:?} engine: {e}")),
            Err(_) => Err(anyhow::anyhow!("the {kind:?} engine thread died while starting")),
        }
    }

    /// Starts `call` on `life`. The caller must then [`Executor::recv`].
    pub fn start(&self, life: Arc<Life>, call: Call) {
        match &self.0 {
            Inner::Co(co) => {
                let mut co = co.borrow_mut();
                // A call left unfinished by an earlier scenario is dropped
                // (its stack unwound) here.
                co.call = None;
                let stack = match co.spare.take() {
                    Some(stack) => stack,
                    None => DefaultStack::new(CO_STACK_BYTES).expect("a coroutine stack"),
                };
                let coroutine =
                    Coroutine::with_stack(stack, move |yielder: &Yielder<Reply, Op>, _start: Reply| {
                        run_native(&Proxy(Rc::new(CoBaton { yielder, life })), call)
                    });
                co.call = Some(coroutine);
                co.reply = (Answer::Slept, None);
            }
            Inner::Thread(t) => t.down.send(Down::Call { life, call }).expect("executor alive"),
        }
    }

    /// Runs the executor until its next request or its result.
    pub fn recv(&self) -> Up {
        match &self.0 {
            Inner::Co(co) => {
                let mut co = co.borrow_mut();
                let reply = std::mem::replace(&mut co.reply, (Answer::Slept, None));
                let coroutine = co.call.as_mut().expect("a call was started");
                match coroutine.resume(reply) {
                    CoroutineResult::Yield(op) => Up::Op(op),
                    CoroutineResult::Return(returned) => {
                        co.spare = co.call.take().map(Coroutine::into_stack);
                        Up::Done(returned)
                    }
                }
            }
            Inner::Thread(t) => t.up.recv().expect("executor alive"),
        }
    }

    /// Answers the pending request; the caller must then [`Executor::recv`].
    pub fn answer(&self, answer: Answer, server_time_ms: Option<i64>) {
        match &self.0 {
            Inner::Co(co) => co.borrow_mut().reply = (answer, server_time_ms),
            Inner::Thread(t) => t.down.send(Down::Answer { answer, server_time_ms }).expect("executor alive"),
        }
    }
}

impl Drop for ThreadExecutor {
    fn drop(&mut self) {
        let _ = self.down.send(Down::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs `call` on the native core with `proxy` as every port.
fn run_native<B: Baton>(proxy: &Proxy<B>, call: Call) -> Returned {
    let (mut local, mut remote, mut blobs, mut clock, mut random) =
        (proxy.clone(), proxy.clone(), proxy.clone(), proxy.clone(), proxy.clone());
    let mut io = Io {
        local: &mut local,
        remote: &mut remote,
        blobs: &mut blobs,
        clock: &mut clock,
        random: &mut random,
        progress: &mut NoProgress,
    };
    match call {
        Call::Sync(opts) => Returned::Sync(davsync_core::sync(&mut io, &opts)),
        Call::Resolve(r) => Returned::Resolve(davsync_core::resolve(&mut io, &r)),
    }
}

/// The engine an executor thread runs its calls on.
enum Runner {
    /// `davsync-core` called directly (only when asked for on a thread).
    Native(Proxy<ThreadBaton>),
    /// The component in wasmtime, through the host's `Syncer`.
    #[cfg(feature = "wasm")]
    Wasm(Box<davsync::engine::Syncer>),
}

impl Runner {
    fn new(kind: Engine, proxy: Proxy<ThreadBaton>, cache_dir: Option<PathBuf>) -> Result<Runner, String> {
        match kind {
            Engine::Native => Ok(Runner::Native(proxy)),
            #[cfg(feature = "wasm")]
            Engine::Wasm => {
                use davsync::engine::{EngineKind, Ports, Syncer};
                let ports = Ports {
                    local: Box::new(proxy.clone()),
                    remote: Box::new(proxy.clone()),
                    blobs: Box::new(proxy.clone()),
                    clock: Box::new(proxy.clone()),
                    random: Box::new(proxy),
                    progress: Box::new(NoProgress),
                };
                let syncer = Syncer::new(EngineKind::Component, ports, cache_dir.as_deref())
                    .map_err(|e| format!("{e:#}"))?;
                Ok(Runner::Wasm(Box::new(syncer)))
            }
            #[cfg(not(feature = "wasm"))]
            Engine::Wasm => {
                let _ = cache_dir;
                Err("davsync-sim was built without the `wasm` feature".to_owned())
            }
        }
    }

    fn run(&mut self, call: Call) -> Returned {
        match self {
            Runner::Native(proxy) => run_native(proxy, call),
            #[cfg(feature = "wasm")]
            Runner::Wasm(syncer) => {
                let returned = match call {
                    Call::Sync(opts) => syncer.sync(&opts).map(Returned::Sync),
                    Call::Resolve(r) => syncer.resolve(&r).map(Returned::Resolve),
                };
                returned.unwrap_or_else(|e| Returned::Trap(format!("{e:#}")))
            }
        }
    }
}

fn executor_main(
    kind: Engine,
    cache_dir: Option<PathBuf>,
    up: Sender<Up>,
    down: Receiver<Down>,
    ready: Sender<Result<(), String>>,
) {
    let link = Rc::new(ThreadBaton { up, down, life: RefCell::new(None) });
    let mut runner = match Runner::new(kind, Proxy(link.clone()), cache_dir) {
        Ok(r) => {
            let _ = ready.send(Ok(()));
            r
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    loop {
        let (life, call) = match link.down.recv() {
            Ok(Down::Call { life, call }) => (life, call),
            Ok(Down::Stop) | Err(_) => return,
            Ok(Down::Answer { .. }) => panic!("executor: an answer with no request"),
        };
        *link.life.borrow_mut() = Some(life);
        let returned = runner.run(call);
        *link.life.borrow_mut() = None;
        if link.up.send(Up::Done(returned)).is_err() {
            return;
        }
    }
}
