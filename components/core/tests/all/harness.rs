//! Virtual instances of the app sharing one in-memory WebDAV server.

use std::cell::RefCell;
use std::rc::Rc;

use davsync_core::mem::{
    Fault, LocalFiles, MemBlobs, MemRemote, MemRemoteClient, MemStore, RecordingProgress, SeededRandom,
    ServerProfile, SimClock, WorldClock,
};
use davsync_core::model::{BlobRef, FileMeta, LocalRow, RemoteRow};
use davsync_core::ports::{
    ApplyOutcome, BlobError, BlobTransfer, DownloadJob, Fetched, Io, LocalCommit, LocalError, LocalStore,
    Precondition, RemoteEntry, RemoteError, RemoteStat, RemoteTransport, UploadJob,
};
use davsync_core::remote_db::RemoteDb;
use davsync_core::{SyncError, SyncOptions, SyncSummary};

/// 2024-01-01T00:00:00Z: a fixed, realistic start for every world.
pub const T0: i64 = 1_704_067_200_000;
pub const HOUR_MS: i64 = 3_600_000;

/// The shared world: the true time and the server.
pub struct Net {
    pub world: WorldClock,
    pub remote: MemRemote,
    next_seed: u64,
}

impl Net {
    pub fn new(profile: ServerProfile) -> Net {
        let world = WorldClock::new(T0);
        let remote = MemRemote::new(profile, world.clone());
        Net { world, remote, next_seed: 1 }
    }

    /// A second handle on an existing world (for hooks that act as another party).
    pub fn from_parts(remote: MemRemote, world: WorldClock) -> Net {
        Net { world, remote, next_seed: 1_000 }
    }

    pub fn strict() -> Net {
        Net::new(ServerProfile::Strict)
    }

    /// A new instance whose wall clock is `skew_ms` off the true time.
    pub fn node(&mut self, name: &str, skew_ms: i64) -> Node {
        self.next_seed += 1;
        let files = LocalFiles::new();
        let client = MemRemoteClient::new(self.remote.clone());
        Node {
            name: name.to_owned(),
            store: AppStore::new(MemStore::new()),
            blobs: SlowBlobs {
                inner: MemBlobs::new(files.clone(), client.clone()),
                world: self.world.clone(),
                delay_ms: 0,
            },
            files,
            client: Hooked::new(client),
            clock: SimClock::new(self.world.clone(), skew_ms),
            random: SeededRandom::new(self.next_seed * 7919),
            progress: RecordingProgress::default(),
            opts: SyncOptions { host_name: format!("{name}-host"), ..SyncOptions::default() },
        }
    }

    pub fn advance(&self, ms: u64) {
        self.world.advance(ms);
    }

    /// The remote's whole state: metadata.db with the commits after it applied.
    pub fn remote_db(&self) -> RemoteDb {
        let state = davsync_core::history::read_state(|p| self.remote.read(p));
        state.expect("the remote's state is valid").expect("remote has metadata.db").0
    }

    pub fn remote_rows(&self) -> Vec<RemoteRow> {
        self.remote_db().rows_changed_since(0).expect("rows")
    }

    pub fn remote_row(&self, id: &str) -> RemoteRow {
        self.remote_rows()
            .into_iter()
            .find(|r| r.stable_id == id)
            .unwrap_or_else(|| panic!("no remote row {id}"))
    }

    pub fn version_txt(&self) -> Option<i64> {
        self.remote.read("version.txt").map(|b| davsync_core::history::Head::parse(&b).unwrap().version)
    }
}

/// One app instance: its database, data folder, connection and clock.
pub struct Node {
    pub name: String,
    pub store: AppStore,
    pub files: LocalFiles,
    pub client: Hooked,
    pub blobs: SlowBlobs,
    pub clock: SimClock,
    pub random: SeededRandom,
    pub progress: RecordingProgress,
    pub opts: SyncOptions,
}

pub fn meta(label: &str) -> FileMeta {
    FileMeta {
        filename: format!("{label}.pdf"),
        doc_id: "10.1000/xyz".into(),
        doc_id_type: "doi".into(),
        file_type: "pdf".into(),
        mime_type: Some("application/pdf".into()),
        label: Some(label.into()),
        doc_collections: r#"["corpus1"]"#.into(),
        doc_metadata: r#"{"title":"A paper"}"#.into(),
        file_metadata: "{}".into(),
        ..FileMeta::default()
    }
}

impl Node {
    pub fn io(&mut self) -> Io<'_> {
        Io {
            local: &mut self.store,
            remote: &mut self.client,
            blobs: &mut self.blobs,
            clock: &mut self.clock,
            random: &mut self.random,
            progress: &mut self.progress,
        }
    }

    pub fn try_sync(&mut self) -> Result<SyncSummary, SyncError> {
        let opts = self.opts.clone();
        davsync_core::sync(&mut self.io(), &opts)
    }

    #[track_caller]
    pub fn sync(&mut self) -> SyncSummary {
        match self.try_sync() {
            Ok(s) => s,
            Err(e) => panic!("{}: sync failed: {e}", self.name),
        }
    }

    pub fn now(&mut self) -> i64 {
        use davsync_core::ports::Clock;
        self.clock.now_ms()
    }

    pub fn add(&mut self, id: &str, content: &[u8]) -> LocalRow {
        let now = self.now();
        self.store.inner.app_add(&self.files, id, content, meta(id), now).expect("add")
    }

    pub fn edit(&mut self, id: &str, content: &[u8]) {
        let now = self.now();
        self.store.inner.app_edit_content(&self.files, id, content, now).expect("edit");
    }

    pub fn set_label(&mut self, id: &str, label: &str) {
        let now = self.now();
        self.store.inner.app_set_meta(id, |m| m.label = Some(label.into()), now).expect("set label");
    }

    pub fn set_collections(&mut self, id: &str, json: &str) {
        let now = self.now();
        self.store.inner.app_set_meta(id, |m| m.doc_collections = json.into(), now).expect("set collections");
    }

    pub fn delete(&mut self, id: &str) {
        let now = self.now();
        self.store.inner.app_delete(&self.files, id, now).expect("delete");
    }

    #[track_caller]
    pub fn row(&self, id: &str) -> LocalRow {
        self.store.inner.row(id).cloned().unwrap_or_else(|| panic!("{}: no row {id}", self.name))
    }

    pub fn label(&self, id: &str) -> Option<String> {
        self.row(id).meta.label
    }

    pub fn content(&self, id: &str) -> Option<Vec<u8>> {
        let row = self.row(id);
        self.files.get(&row.blob().unwrap())
    }

    /// A new connection for this node (after a crash killed the old one).
    pub fn reconnect(&mut self, net: &Net) {
        let client = MemRemoteClient::new(net.remote.clone());
        self.blobs.inner = MemBlobs::new(self.files.clone(), client.clone());
        self.client = Hooked::new(client);
    }
}

/// Checks that every node and the remote agree on every file.
#[track_caller]
pub fn assert_converged(net: &Net, nodes: &[&Node]) {
    let remote = net.remote_rows();
    for node in nodes {
        for r in &remote {
            match node.store.inner.row(&r.stable_id) {
                None => assert!(r.deleted, "{}: live remote file {} missing locally", node.name, r.stable_id),
                Some(l) => {
                    assert_eq!(l.deleted, r.deleted, "{}: deletion of {} differs", node.name, r.stable_id);
                    if !r.deleted {
                        assert_eq!(l.id, r.id, "{}: content of {} differs", node.name, r.stable_id);
                        assert_eq!(l.meta, r.meta, "{}: metadata of {} differs", node.name, r.stable_id);
                        let blob = l.blob().unwrap();
                        let bytes = node.files.get(&blob).expect("local blob present");
                        assert_eq!(davsync_core::model::ContentHash::of(&bytes), l.id);
                        let remote_bytes = net.remote.read(&blob.path()).expect("remote blob present");
                        assert_eq!(remote_bytes, bytes);
                    }
                }
            }
        }
        for l in node.store.inner.live_rows() {
            assert!(
                remote.iter().any(|r| r.stable_id == l.stable_id),
                "{}: local file {} never reached the remote",
                node.name,
                l.stable_id
            );
            assert!(!l.sync_status.is_pending(), "{}: {} still {}", node.name, l.stable_id, l.sync_status);
        }
    }
}

/// An edit the app makes while a sync runs.
pub type AppEdit = Box<dyn FnOnce(&mut MemStore)>;

/// The app's store, with a hook that lets the "app" write while a sync runs
/// (just before the sync's local transaction).
pub struct AppStore {
    pub inner: MemStore,
    pub before_apply: Option<AppEdit>,
}

impl AppStore {
    fn new(inner: MemStore) -> AppStore {
        AppStore { inner, before_apply: None }
    }
}

impl LocalStore for AppStore {
    fn count_unsynced(&mut self) -> Result<u64, LocalError> {
        self.inner.count_unsynced()
    }
    fn meta_get(&mut self, key: &str) -> Result<Option<String>, LocalError> {
        self.inner.meta_get(key)
    }
    fn row_bases(&mut self) -> Result<Vec<davsync_core::model::RowBase>, LocalError> {
        self.inner.row_bases()
    }
    fn rows(&mut self, ids: &[String]) -> Result<Vec<LocalRow>, LocalError> {
        self.inner.rows(ids)
    }
    fn live_rows_with_content(&mut self, hash: &davsync_core::model::ContentHash) -> Result<u64, LocalError> {
        self.inner.live_rows_with_content(hash)
    }
    fn apply(&mut self, commit: &LocalCommit) -> Result<ApplyOutcome, LocalError> {
        if !commit.writes.is_empty()
            && let Some(hook) = self.before_apply.take()
        {
            hook(&mut self.inner);
        }
        self.inner.apply(commit)
    }
    fn commit_begin(&mut self) -> Result<(), LocalError> {
        self.inner.commit_begin()
    }
    fn commit_writes(&mut self, writes: &[davsync_core::ports::RowWrite]) -> Result<(), LocalError> {
        if !writes.is_empty()
            && let Some(hook) = self.before_apply.take()
        {
            hook(&mut self.inner);
        }
        self.inner.commit_writes(writes)
    }
    fn commit_finish(&mut self, meta: &[(String, String)]) -> Result<ApplyOutcome, LocalError> {
        self.inner.commit_finish(meta)
    }
}

type OpHook = Box<dyn FnMut(&str, &str)>;

/// A connection with a hook that runs before chosen operations: lets a test
/// make another "instance" act at an exact point of this one's sync.
pub struct Hooked {
    pub inner: MemRemoteClient,
    hooks: Rc<RefCell<Vec<(String, String, OpHook)>>>,
}

impl Hooked {
    fn new(inner: MemRemoteClient) -> Hooked {
        Hooked { inner, hooks: Rc::default() }
    }

    /// Runs `hook` once, before the first `method` on a path ending in `suffix`.
    pub fn before(&self, method: &str, suffix: &str, hook: impl FnMut(&str, &str) + 'static) {
        self.hooks.borrow_mut().push((method.to_owned(), suffix.to_owned(), Box::new(hook)));
    }

    pub fn inject_on(&self, method: &str, suffix: &str, nth: usize, fault: Fault) {
        self.inner.inject_on(method, suffix, nth, fault);
    }

    fn fire(&mut self, method: &str, path: &str) {
        let pos = self
            .hooks
            .borrow()
            .iter()
            .position(|(m, s, _)| m == method && davsync_core::mem::path_matches(path, s));
        if let Some(pos) = pos {
            let (_, _, mut hook) = self.hooks.borrow_mut().remove(pos);
            hook(method, path);
        }
    }
}

impl RemoteTransport for Hooked {
    fn get(&mut self, path: &str, bytes_max: u64) -> Result<Fetched, RemoteError> {
        self.fire("GET", path);
        self.inner.get(path, bytes_max)
    }
    fn put(&mut self, path: &str, bytes: &[u8], c: &Precondition) -> Result<Option<String>, RemoteError> {
        self.fire("PUT", path);
        self.inner.put(path, bytes, c)
    }
    fn delete(&mut self, path: &str) -> Result<(), RemoteError> {
        self.fire("DELETE", path);
        self.inner.delete(path)
    }
    fn mkcol(&mut self, path: &str) -> Result<(), RemoteError> {
        self.fire("MKCOL", path);
        self.inner.mkcol(path)
    }
    fn move_to(&mut self, from: &str, to: &str, overwrite: bool) -> Result<(), RemoteError> {
        self.fire("MOVE", to);
        self.inner.move_to(from, to, overwrite)
    }
    fn stat(&mut self, path: &str) -> Result<Option<RemoteStat>, RemoteError> {
        self.fire("PROPFIND", path);
        self.inner.stat(path)
    }
    fn list(&mut self, path: &str) -> Result<Option<Vec<RemoteEntry>>, RemoteError> {
        self.fire("PROPFIND", path);
        self.inner.list(path)
    }
    fn server_time_ms(&mut self) -> Option<i64> {
        self.inner.server_time_ms()
    }
}

/// Blob transfer that takes `delay_ms` of world time per upload or
/// download (a slow network).
pub struct SlowBlobs {
    pub inner: MemBlobs,
    world: WorldClock,
    pub delay_ms: u64,
}

impl BlobTransfer for SlowBlobs {
    fn local_has(&mut self, blob: &BlobRef) -> Result<bool, BlobError> {
        self.inner.local_has(blob)
    }
    fn upload(&mut self, jobs: &[UploadJob]) -> Vec<Result<(), BlobError>> {
        self.world.advance(self.delay_ms * jobs.len() as u64);
        self.inner.upload(jobs)
    }
    fn download(&mut self, jobs: &[DownloadJob], max: u64) -> Vec<Result<(), BlobError>> {
        self.world.advance(self.delay_ms * jobs.len() as u64);
        self.inner.download(jobs, max)
    }
    fn remove_local(&mut self, blob: &BlobRef) -> Result<(), BlobError> {
        self.inner.remove_local(blob)
    }
}

/// Blob transfers (GET, PUT or MOVE of a `.pdf` blob) in a slice of the
/// server's op log.
pub fn blob_ops(log: &[String]) -> Vec<String> {
    log.iter()
        .filter(|l| {
            let mut parts = l.split(' ');
            let method = parts.next().unwrap_or("");
            matches!(method, "GET" | "PUT" | "MOVE") && parts.any(|p| p.ends_with(".pdf"))
        })
        .cloned()
        .collect()
}

/// Everything an instance keeps locally, as text to compare.
pub fn local_state(node: &Node) -> String {
    format!("{:?}\n{:?}\n{:?}", node.store.inner.rows, node.store.inner.meta, node.files.paths())
}

/// The remote's files, except the lock (a refused sync takes and releases it).
pub fn remote_data(net: &Net) -> std::collections::BTreeMap<String, Vec<u8>> {
    let files = net.remote.files();
    let lock = davsync_core::lease::LOCK_DIR;
    files.into_iter().filter(|(p, _)| !p.starts_with(lock)).map(|(p, e)| (p, e.bytes)).collect()
}

/// `b`'s sync is refused as `RemoteCorrupt` with a message containing every
/// one of `needles`; nothing changed on either side and the lock is gone.
#[track_caller]
pub fn assert_refused(net: &Net, b: &mut Node, needles: &[&str]) -> String {
    let (local_before, remote_before) = (local_state(b), remote_data(net));
    let msg = match b.try_sync() {
        Err(davsync_core::SyncError::RemoteCorrupt(msg)) => msg,
        other => panic!("expected RemoteCorrupt naming {needles:?}, got {other:?}"),
    };
    for needle in needles {
        assert!(msg.contains(needle), "{msg:?} does not name {needle:?}");
    }
    assert!(local_state(b) == local_before, "{needles:?}: local state changed");
    assert!(remote_data(net) == remote_before, "{needles:?}: remote changed");
    assert!(!net.remote.exists(davsync_core::lease::LOCK_DIR), "{needles:?}: lock left behind");
    msg
}
