//! The sync (SPEC §3), step by step. Order matters for crash safety: blobs
//! before `metadata.db`, `metadata.db` before `version.txt`, the remote
//! commit before the local one. ARCHITECTURE.md explains why each step is
//! where it is.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, btree_map};

use sha2::{Digest, Sha256};

use crate::api::{FileError, SyncError, SyncOptions, SyncSummary};
use crate::history::{self, ChangeFile, FORMAT, Head, Walk, walk_back};
use crate::hlc::{Hlc, HlcClock};
use crate::lease::Lease;
use crate::local_state::{self, LocalState, PushedInput};
use crate::model::{BlobRef, LocalRow, RemoteRow, RowBase, SyncStatus, iso8601_utc};
use crate::plan::{Action, DecideContext, decide};
use crate::ports::{
    BlobError, DownloadJob, Io, LocalCommit, LocalError, Phase, Precondition, ProgressEvent, RemoteError,
    RowWrite, UploadJob,
};
use crate::remote_db::{RemoteDb, RemoteDbError};
use crate::session::{METADATA_DB, Session, TMP_ROOT, VERSION_TXT};

/// Why one attempt stopped without finishing.
pub(crate) enum Interrupted {
    /// Someone else committed in between: start over with their commit.
    Fenced,
    /// Anything else.
    Failed(SyncError),
}

impl<E: Into<SyncError>> From<E> for Interrupted {
    fn from(e: E) -> Self {
        Interrupted::Failed(e.into())
    }
}

/// Runs one sync.
pub fn sync(io: &mut Io<'_>, opts: &SyncOptions) -> Result<SyncSummary, SyncError> {
    let started_ms = io.clock.now_ms();
    let mut reporter = Reporter::default();
    reporter.report(io, 0, Phase::Check, "checking for changes");
    let mut state = local_state::load(io)?;
    let mut session = Session::new(opts.remote_retries_max);
    if !opts.force && !state.resync_requested {
        let unsynced = io.local.count_unsynced()?;
        // A garbled version.txt here (a server without atomic writes, read
        // mid-write by another instance) is no reason to skip or to fail:
        // the sync reads it again under the lease.
        let head = match session.read_head(io) {
            Err(SyncError::RemoteCorrupt(_)) => None,
            other => other?,
        };
        let at_head = |h: &Head| Some(h.commit_id()) == state.version.map(|v| (v, state.commit.as_deref()));
        if unsynced == 0 && head.as_ref().is_some_and(at_head) {
            reporter.report(io, 100, Phase::Done, "already in sync");
            let summary = SyncSummary {
                skipped: true,
                new_version: state.version.unwrap_or(0),
                duration_ms: elapsed(io, started_ms),
                ..SyncSummary::default()
            };
            return Ok(summary);
        }
    }
    let mut lease = None;
    let result = run_attempts(io, opts, &mut state, &mut session, &mut lease, &mut reporter);
    // Our own uploads in flight always go; the rest of the temporary area
    // (a killed process's uploads or probe files) only while the lock is
    // still ours.
    let _ = session.remove(io, &tmp_dir(&state.instance));
    if let Some(lease) = lease {
        let _ = lease.release(&mut session, io, TMP_ROOT);
    }
    let mut summary = result?;
    summary.duration_ms = elapsed(io, started_ms);
    reporter.report(io, 100, Phase::Done, &format!("sync complete at version {}", summary.new_version));
    Ok(summary)
}

fn elapsed(io: &mut Io<'_>, started_ms: i64) -> u64 {
    u64::try_from(io.clock.now_ms() - started_ms).unwrap_or(0)
}

fn run_attempts(
    io: &mut Io<'_>,
    opts: &SyncOptions,
    state: &mut LocalState,
    session: &mut Session,
    lease: &mut Option<Lease>,
    reporter: &mut Reporter,
) -> Result<SyncSummary, SyncError> {
    let attempts_max = opts.commit_attempts_max.max(1);
    // Blobs moved by every attempt: an attempt fenced off after its
    // transfers moved them too.
    let mut moved = (0, 0);
    for attempt in 1..=attempts_max {
        if lease.is_none() {
            reporter.report(io, 5, Phase::Lock, "acquiring the sync lock");
            *lease = Some(Lease::acquire(session, io, opts, &state.instance)?);
        }
        let held = lease.as_mut().expect("lease acquired above");
        if attempt > 1 {
            // What the attempts before recorded of their pushes (any of their
            // commits may have landed).
            state.own_pushes = local_state::load_own_pushes(io)?;
        }
        match attempt_once(io, opts, state, session, held, reporter, &mut moved) {
            Ok(summary) => return Ok(summary),
            Err(Interrupted::Fenced) => {
                let msg = format!("another instance committed first; starting over (attempt {attempt})");
                reporter.report(io, 10, Phase::Fetch, &msg);
            }
            Err(Interrupted::Failed(SyncError::LeaseLost)) if attempt < attempts_max => {
                *lease = None;
                reporter.report(io, 5, Phase::Lock, "the sync lease was lost; taking it again");
            }
            Err(Interrupted::Failed(e)) => return Err(e),
        }
    }
    Err(SyncError::Contention { attempts: attempts_max })
}

/// The remote state one attempt works on.
pub(crate) struct Fetched {
    pub(crate) view: View,
    /// `version.txt` when the attempt started (its commit is the fencing
    /// token); none when the remote has none.
    pub(crate) head: Option<Head>,
    /// No `metadata.db`: the attempt's commit creates the remote.
    pub(crate) is_new: bool,
}

/// What an attempt knows of the remote's rows.
pub(crate) enum View {
    /// Everything: the checkpoint with every later commit applied.
    Full(Box<FullView>),
    /// Only the rows changed since this instance's last sync: its commit is
    /// still on the remote's history, so every other row is as it left it.
    Tail(TailView),
}

/// The whole remote state.
pub(crate) struct FullView {
    /// `metadata.db` as downloaded, with the change files after it applied.
    pub(crate) db: RemoteDb,
    /// The checkpoint as downloaded: its ETag, version and size.
    checkpoint_etag: Option<String>,
    checkpoint_version: i64,
    checkpoint_bytes: u64,
    /// Bytes of the change files applied on top.
    tail_bytes: u64,
    /// `metadata.db` is not on the chain `version.txt` starts: it alone is
    /// the state, and the attempt commits past both.
    off_chain: bool,
    /// The commit this instance last synced to is not in the history read
    /// (a stale writer replaced it, or a restore): rows it lacks may have
    /// been published under versions it thinks it has seen.
    diverged: bool,
}

impl FullView {
    /// `db` with no checkpoint or history behind it (a remote being created).
    fn empty(db: RemoteDb) -> FullView {
        FullView {
            db,
            checkpoint_etag: None,
            checkpoint_version: 0,
            checkpoint_bytes: 0,
            tail_bytes: 0,
            off_chain: false,
            diverged: false,
        }
    }

    /// The version of the checkpoint read (0: none).
    pub(crate) fn checkpoint_version(&self) -> i64 {
        self.checkpoint_version
    }

    /// Is `metadata.db` off the chain `version.txt` starts?
    pub(crate) fn off_chain(&self) -> bool {
        self.off_chain
    }
}

/// The rows changed since this instance's last sync, newest state of each.
pub(crate) struct TailView {
    rows: HashMap<String, RemoteRow>,
}

impl Fetched {
    /// The newest version anyone has published; our commit goes one past it so
    /// `version.txt` only ever grows.
    pub(crate) fn head_version(&self) -> i64 {
        let txt = self.head.as_ref().map_or(0, |h| h.version);
        match &self.view {
            View::Full(full) => full.db.version().max(txt),
            View::Tail(_) => txt,
        }
    }

    /// The version and commit id of the state this attempt read: what a
    /// commit of it follows.
    fn state_commit(&self) -> (i64, Option<String>) {
        match (&self.view, &self.head) {
            (View::Full(full), _) => (full.db.version(), full.db.commit_id().map(str::to_owned)),
            (View::Tail(_), Some(head)) => (head.version, head.commit.clone()),
            (View::Tail(_), None) => (0, None),
        }
    }

    /// The remote's epoch.
    pub(crate) fn epoch(&self) -> &str {
        match &self.view {
            View::Full(full) => full.db.epoch(),
            View::Tail(_) => self.head.as_ref().and_then(|h| h.epoch.as_deref()).unwrap_or(""),
        }
    }

    /// The whole state (maintenance reads only whole states).
    pub(crate) fn full(&self) -> Option<&FullView> {
        match &self.view {
            View::Full(full) => Some(full),
            View::Tail(_) => None,
        }
    }

    /// The remote rows for `ids` (those it has), sorted by stable id.
    fn rows(&self, ids: &[String]) -> Result<Vec<RemoteRow>, SyncError> {
        match &self.view {
            View::Full(full) => Ok(full.db.rows(ids)?),
            View::Tail(tail) => Ok(ids.iter().filter_map(|id| tail.rows.get(id).cloned()).collect()),
        }
    }
}

/// The last sync this instance completed, from which it may read only the
/// commits after it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Since<'a> {
    version: i64,
    commit: Option<&'a str>,
    epoch: &'a str,
    /// May the attempt read only the commits after it?
    tail: bool,
}

/// Reads the remote for one attempt. With `since`, only the commits after it
/// when it is still on the remote's history ([`View::Tail`]); otherwise
/// `metadata.db` and the commits after it, with room in its buffer for
/// `pushes` rows to be added ([`RemoteDb::from_bytes_with_room`]), or a new
/// database (sized later: [`attempt_once`]).
pub(crate) fn fetch(
    io: &mut Io<'_>,
    opts: &SyncOptions,
    session: &mut Session,
    pushes: usize,
    since: Option<Since<'_>>,
) -> Result<Fetched, SyncError> {
    let head = session.read_head(io)?;
    // A sync that will push and whose commit should fold reads everything.
    let fold_next = head
        .as_ref()
        .is_some_and(|h| Head { version: h.version + 1, ..h.clone() }.fold_due(opts.fold_commits));
    // The tail is read from the last synced commit back, also across a fold
    // (an instance a few commits behind when another folded), as long as it
    // is at most one fold's worth of commits: past that, the checkpoint is
    // the cheaper read. A change file below the checkpoint may be gone (gc):
    // then the attempt reads the checkpoint instead.
    let reach = i64::from(opts.fold_commits.max(1));
    if let (Some(h), Some(since)) = (&head, since.filter(|s| s.tail && !(fold_next && pushes > 0)))
        && h.format >= 2
        && h.epoch.as_deref() == Some(since.epoch)
        && (since.version >= h.checkpoint || h.version - since.version <= reach)
        && since.version <= h.version
        && let Walk::Reached(files, _) =
            walk_back(io, session, h, (since.version, since.commit), opts.metadata_bytes_max)?
    {
        let mut rows = HashMap::new();
        for file in files {
            rows.extend(file.rows.into_iter().map(|r| (r.stable_id.clone(), r)));
        }
        return Ok(Fetched { view: View::Tail(TailView { rows }), head, is_new: false });
    }
    let checkpoint = match session.call(io, |io| io.remote.get(METADATA_DB, opts.metadata_bytes_max)) {
        Ok(f) => f,
        Err(RemoteError::NotFound) => {
            let epoch = local_state::new_id(io, "e");
            let db = RemoteDb::create(&epoch).map_err(|e| SyncError::RemoteCorrupt(e.to_string()))?;
            return Ok(Fetched { view: View::Full(Box::new(FullView::empty(db))), head, is_new: true });
        }
        Err(RemoteError::TooLarge { bytes_max }) => {
            return Err(SyncError::RemoteCorrupt(format!(
                "metadata.db is larger than the configured maximum of {bytes_max} bytes"
            )));
        }
        Err(e) => return Err(e.into()),
    };
    let tail_hint = head.as_ref().map_or(0, |h| usize::try_from(h.tail_bytes).unwrap_or(0));
    let mut db =
        RemoteDb::from_bytes_with_room(&checkpoint.bytes, room_for(pushes).saturating_add(tail_hint))?;
    let (checkpoint_version, checkpoint_bytes) = (db.version(), checkpoint.bytes.len() as u64);
    let checkpoint_commit = db.commit_id().map(str::to_owned);
    let mut lineage = vec![(checkpoint_version, checkpoint_commit)];
    drop(checkpoint.bytes);
    let mut tail_bytes = 0;
    let mut off_chain = false;
    if let Some(h) = head.as_ref().filter(|h| h.format >= 2) {
        let stop = (db.version(), db.commit_id().map(str::to_owned));
        let walk = if h.epoch.as_deref() == Some(db.epoch()) {
            walk_back(io, session, h, (stop.0, stop.1.as_deref()), opts.metadata_bytes_max)?
        } else {
            Walk::Off
        };
        match walk {
            Walk::Reached(files, bytes) => {
                tail_bytes = bytes;
                for file in &files {
                    history::apply(&mut db, file)?;
                    lineage.push((file.version, Some(file.commit.clone())));
                }
            }
            // `metadata.db` is not a state on the chain `version.txt` starts:
            // on a server that ignores conditional writes, a stale lease
            // holder wrote one of them over a newer one (two instances that
            // both created the remote, or a checkpoint and a commit crossing).
            // As in format 1, `metadata.db` is then the truth and the next
            // commit goes past both; the commits it lacks are published again
            // by the instances that recorded them (they find their commit off
            // the chain, and their rows "behind").
            Walk::Off => off_chain = true,
            Walk::Missing(path) => {
                return Err(SyncError::RemoteCorrupt(format!(
                    "{path} is missing: the history from version.txt (version {}) back to metadata.db \
                     (version {}) is broken",
                    h.version, stop.0
                )));
            }
        }
    }
    // Is the commit this instance last synced to part of the history read?
    // Not knowing (it is older than the checkpoint) is not "no".
    let diverged = since.is_some_and(|s| {
        s.epoch == db.epoch()
            && s.version >= checkpoint_version
            && !lineage.iter().any(|(v, c)| (*v, c.as_deref()) == (s.version, s.commit))
    });
    let full = FullView {
        db,
        checkpoint_etag: checkpoint.etag,
        checkpoint_version,
        checkpoint_bytes,
        tail_bytes,
        off_chain,
        diverged,
    };
    Ok(Fetched { view: View::Full(Box::new(full)), head, is_new: false })
}

/// Room to set aside in `metadata.db`'s buffer for a commit of `pushes`
/// rows: each with its index entries (~0.8 KiB in the scale bench's
/// fixture), plus page splits and the counters' pages. A commit that needs
/// more grows the buffer as usual.
fn room_for(pushes: usize) -> usize {
    pushes.saturating_mul(1 << 10).saturating_add(256 << 10)
}

/// One decided file, with what the sync needs to carry it out.
// Plain pushes are most steps (all of a first sync): they stay inline, the
// rarer and larger decisions are boxed.
#[allow(clippy::large_enum_variant)]
enum Step {
    /// A plain push: the local row exactly as the compare read it.
    Push(ThinPush),
    /// Any other decision, with the rows it was made from (boxed: a step
    /// is the size of its largest variant, and most are plain pushes).
    Full(Box<FullStep>),
}

/// A plain push, kept thin: a first sync pushes every row, and holding them
/// all took ~110 MB at 100,000 files. The merge and the local commit read
/// the row again, in chunks ([`reread_pushes`]), and use it only while it
/// is still the row the compare read (same [`row_digest`]); a row the app
/// changed meanwhile is left out of the commit and goes out with the next
/// sync, like any row the app changes during a sync.
struct ThinPush {
    stable_id: String,
    /// [`row_digest`] of the local row as the compare read it.
    read_digest: [u8; 32],
    /// The push's input and its stamp (what `pushed_inputs` records).
    input: PushedInput,
    /// The row's `file_type`: with the content hash, its blob.
    file_type: String,
    /// The remote row's stamp, if there is a remote row (the local commit's
    /// clock observes it).
    remote_hlc: Option<Hlc>,
    /// The remote row is live with the same content: a metadata push.
    same_content: bool,
}

/// A decision other than a plain push.
struct FullStep {
    /// The local row as read.
    local: Option<LocalRow>,
    remote: Option<RemoteRow>,
    action: Action,
    /// The remote row is this instance's own push whose sync did not finish
    /// (see [`own_push_to_verify`]): its blob is checked, and uploaded again
    /// if it is gone.
    verify_blob: bool,
}

impl Step {
    fn new(local: Option<LocalRow>, remote: Option<RemoteRow>, action: Action, verify_blob: bool) -> Step {
        match (action, local) {
            (Action::Push { row, stamp }, Some(l)) if row == l => {
                Step::Push(ThinPush::new(&l, remote.as_ref(), stamp))
            }
            (action, local) => Step::Full(Box::new(FullStep { local, remote, action, verify_blob })),
        }
    }

    fn stable_id(&self) -> &str {
        match self {
            Step::Push(p) => &p.stable_id,
            Step::Full(f) => f.local.as_ref().map_or_else(
                || f.remote.as_ref().map_or("", |r| r.stable_id.as_str()),
                |l| l.stable_id.as_str(),
            ),
        }
    }

    fn pushes(&self) -> bool {
        match self {
            Step::Push(_) => true,
            Step::Full(f) => matches!(f.action, Action::Push { .. }),
        }
    }

    /// The decision, unless it is a plain push.
    fn full(&self) -> Option<&FullStep> {
        match self {
            Step::Push(_) => None,
            Step::Full(f) => Some(f.as_ref()),
        }
    }
}

impl ThinPush {
    fn new(row: &LocalRow, remote: Option<&RemoteRow>, stamp: Hlc) -> ThinPush {
        ThinPush {
            stable_id: row.stable_id.clone(),
            read_digest: row_digest(row),
            input: PushedInput::of(row, stamp),
            file_type: row.meta.file_type.clone(),
            remote_hlc: remote.map(|r| r.hlc.clone()),
            same_content: remote.is_some_and(|r| r.id == row.id && !r.deleted),
        }
    }

    /// The blob the push publishes (none for a deletion).
    fn blob(&self) -> Option<Result<BlobRef, String>> {
        (!self.input.deleted)
            .then(|| BlobRef::new(self.input.id.clone(), &self.file_type).map_err(|e| e.to_string()))
    }
}

/// SHA-256 of every field of a local row: equal digests, equal rows.
fn row_digest(row: &LocalRow) -> [u8; 32] {
    Sha256::digest(serde_json::to_vec(row).expect("plain data serializes")).into()
}

/// The rows of the plain pushes in `chunk`, read again, keyed by stable id;
/// only those still exactly as the compare read them.
fn reread_pushes(io: &mut Io<'_>, chunk: &[Step]) -> Result<HashMap<String, LocalRow>, LocalError> {
    let pushes: Vec<&ThinPush> = chunk
        .iter()
        .filter_map(|s| match s {
            Step::Push(p) => Some(p),
            Step::Full(_) => None,
        })
        .collect();
    if pushes.is_empty() {
        return Ok(HashMap::new());
    }
    let ids: Vec<String> = pushes.iter().map(|p| p.stable_id.clone()).collect();
    let digests: HashMap<&str, &[u8; 32]> =
        pushes.iter().map(|p| (p.stable_id.as_str(), &p.read_digest)).collect();
    let rows = io.local.rows(&ids)?;
    Ok(rows
        .into_iter()
        .filter(|r| digests.get(r.stable_id.as_str()).is_some_and(|d| **d == row_digest(r)))
        .map(|r| (r.stable_id.clone(), r))
        .collect())
}

fn attempt_once(
    io: &mut Io<'_>,
    opts: &SyncOptions,
    state: &mut LocalState,
    session: &mut Session,
    lease: &mut Lease,
    reporter: &mut Reporter,
    moved: &mut (u32, u32),
) -> Result<SyncSummary, Interrupted> {
    reporter.report(io, 10, Phase::Fetch, "reading the remote's commits");
    let pending = usize::try_from(io.local.count_unsynced()?).unwrap_or(usize::MAX);
    // Only the commits since the last sync, unless an unfinished sync's pushes
    // or a resolution (it may set a row back to an older base) must be looked
    // at against the whole remote.
    let since = match (state.version, state.epoch.as_deref()) {
        (Some(version), Some(epoch)) => {
            let tail = state.own_pushes.is_empty() && !state.resync_requested;
            Some(Since { version, commit: state.commit.as_deref(), epoch, tail })
        }
        _ => None,
    };
    let mut fetched = fetch(io, opts, session, pending, since)?;
    let void_base = state.epoch.as_deref() != Some(fetched.epoch());
    let mut summary =
        SyncSummary { epoch_changed: void_base && state.epoch.is_some(), ..SyncSummary::default() };
    if summary.epoch_changed {
        let msg = "the remote is not the one this instance last synced with: nothing is deleted \
                   locally because of it, local files are offered to it";
        reporter.report(io, 15, Phase::Compare, msg);
    }

    reporter.report(io, 20, Phase::Compare, "comparing local and remote");
    let bases = io.local.row_bases()?;
    let ctx = DecideContext {
        instance: &state.instance,
        seen: &state.seen,
        void_base,
        own_pushes: &state.own_pushes,
    };
    let mut steps = compare(io, state, &fetched, &bases, &ctx)?;
    guard_mass_delete(opts, &bases, &steps)?;
    // Not needed past here (10 MB at 100,000 files).
    drop(bases);

    let mut transfer = Transfers::default();
    let transferred = upload_blobs(io, session, lease, reporter, &mut steps, &mut transfer, &state.instance)
        .and_then(|()| download_blobs(io, opts, session, lease, reporter, &mut steps, &mut transfer));
    moved.0 += transfer.uploaded;
    moved.1 += transfer.downloaded;
    transferred?;
    (summary.uploaded, summary.downloaded) = *moved;

    let now_iso = iso8601_utc(io.clock.now_ms());
    let pushes_any = steps.iter().any(Step::pushes);
    // A `metadata.db` ahead of, behind or off the chain of `version.txt`: a
    // format-1 crash between the two writes, a restore, a stale writer.
    let db_off_head = match &fetched.view {
        View::Full(full) => {
            full.off_chain || fetched.head.as_ref().map(|h| h.version) != Some(full.db.version())
        }
        View::Tail(_) => false,
    };
    let needs_commit = pushes_any || fetched.is_new || db_off_head;
    // After a restore from an older copy, commit past every version this
    // instance has seen: a peer that recorded that number must not mistake
    // the new state for the one it already has.
    let known = if void_base { 0 } else { state.version.unwrap_or(0) };
    let needs_commit = needs_commit || fetched.head_version() < known;
    let (final_version, final_commit) = if needs_commit {
        let new_version = fetched.head_version().max(known) + 1;
        let commit_id = local_state::new_id(io, "c");
        let parent = fetched.state_commit();
        record_own_pushes(io, &steps, &state.own_pushes)?;
        if fetched.is_new
            && let View::Full(full) = &mut fetched.view
        {
            // Made now (`create` only named it), sized now that the pushes
            // are counted, and after their record (~25 MB at 100,000 files)
            // is written and freed: in the component the buffer then takes
            // the memory the record used. Nothing is copied.
            let pushes = steps.iter().filter(|s| s.pushes()).count();
            full.db.reserve(room_for(pushes))?;
        }
        reporter.report(io, 90, Phase::Commit, &format!("committing version {new_version}"));
        let (left_out, changes) = merge_pushes(io, &mut fetched, &steps, new_version, &now_iso)?;
        drop_steps(&mut steps, &left_out);
        let commit = Commit {
            version: new_version,
            id: commit_id.clone(),
            parent,
            changes,
            fold_commits: opts.fold_commits,
        };
        publish_commit(io, session, lease, reporter, &mut fetched, commit)?;
        (new_version, Some(commit_id))
    } else {
        let version = fetched.head_version();
        (version, fetched.head.as_ref().filter(|h| h.version == version).and_then(|h| h.commit.clone()))
    };
    // The remote state is published: free it (75 MiB at 100,000 files)
    // before the local commit.
    let epoch = fetched.epoch().to_owned();
    drop(fetched);

    reporter.report(io, 95, Phase::Apply, "updating the local database");
    // One transaction, sent in parts so that no call carries every row.
    io.local.commit_begin()?;
    let mut clock = state.seen.clone();
    // Plain pushes the app changed since the merge: left alone, as the store
    // leaves a row whose `expected` no longer matches.
    let mut changed = Vec::new();
    let mut overtaken = false;
    for chunk in steps.chunks(LOCAL_COMMIT_CHUNK) {
        // Read inside the open commit (the store allows reads there).
        let mut reread = reread_pushes(io, chunk)?;
        let mut writes = local_writes(chunk, &mut reread, final_version, &mut clock, &mut changed);
        overtaken |= drop_overtaken(io, chunk, &mut writes, &mut changed)?;
        if !writes.is_empty() {
            io.local.commit_writes(&writes)?;
        }
    }
    let mut meta = vec![
        (local_state::META_EPOCH.to_owned(), epoch),
        (local_state::META_HLC.to_owned(), clock.current().to_string()),
        (local_state::META_LAST_SYNC.to_owned(), now_iso),
        (local_state::META_RESYNC.to_owned(), String::new()),
        (local_state::META_PUSHED.to_owned(), String::new()),
    ];
    if state.instance_is_new {
        meta.push((local_state::META_INSTANCE.to_owned(), state.instance.clone()));
    }
    // With a file left behind, keep the old version so the quick check sends
    // the next sync back for it.
    // Likewise with a remote change the app overtook: the next sync, reading
    // only the commits since the version recorded, must still see it.
    if transfer.errors.is_empty() && !overtaken {
        meta.push((local_state::META_VERSION.to_owned(), final_version.to_string()));
        meta.push((local_state::META_COMMIT.to_owned(), final_commit.unwrap_or_default()));
    }
    let mut outcome = io.local.commit_finish(&meta)?;
    outcome.skipped.extend(changed);
    count_outcome(&steps, &outcome.skipped, &mut summary);
    remove_deleted_blobs(io, &steps, &outcome.skipped);
    summary.errors = u32::try_from(transfer.errors.len()).unwrap_or(u32::MAX);
    summary.file_errors = transfer.errors;
    summary.new_version = final_version;
    Ok(summary)
}

/// Finds the files that need a decision and decides each (SPEC §3 step 4).
///
/// The candidates come from one pass over the remote's `(stable_id,
/// remote_version)` pairs matched against the local bases sorted by id (a
/// binary search each, nothing allocated per row); only the candidates are
/// then read in full on both sides. O(n log n) comparisons, O(changes) rows.
fn compare(
    io: &mut Io<'_>,
    state: &LocalState,
    fetched: &Fetched,
    bases: &[RowBase],
    ctx: &DecideContext<'_>,
) -> Result<Vec<Step>, SyncError> {
    let ids = match &fetched.view {
        View::Full(full) => candidates(state, &full.db, full.diverged, bases, ctx)?,
        View::Tail(tail) => tail_candidates(tail, bases),
    };
    // Sized once: a first sync makes a step of every candidate, and a vector
    // grown by doubling would hold up to twice the steps' memory.
    let mut steps = Vec::with_capacity(ids.len());
    // Rows are read in chunks: a first sync reads every row, and one call
    // carrying them all is another copy of them all (on the host side too).
    for chunk in ids.chunks(COMPARE_CHUNK) {
        let mut locals: HashMap<String, LocalRow> =
            io.local.rows(chunk)?.into_iter().map(|r| (r.stable_id.clone(), r)).collect();
        let mut remotes: HashMap<String, RemoteRow> =
            fetched.rows(chunk)?.into_iter().map(|r| (r.stable_id.clone(), r)).collect();
        for id in chunk {
            let local = locals.remove(id);
            let remote = remotes.remove(id);
            if local.as_ref().is_some_and(|l| l.sync_status == SyncStatus::Conflict) {
                continue; // changed to a conflict since the bases were read
            }
            let action = decide(local.as_ref(), remote.as_ref(), ctx);
            if action != Action::Nothing {
                let verify_blob = own_push_to_verify(local.as_ref(), remote.as_ref(), &action, ctx);
                // Read from the commits since the last sync, a row they did
                // not touch is still the base on the remote.
                let at_base = remote.is_none() && matches!(fetched.view, View::Tail(_));
                let same_content_as_base =
                    local.as_ref().is_some_and(|l| l.sync_hash.as_ref() == Some(&l.id) && !l.deleted);
                let mut step = Step::new(local, remote, action, verify_blob);
                if let Step::Push(p) = &mut step {
                    p.same_content |= at_base && same_content_as_base;
                }
                steps.push(step);
            }
        }
    }
    steps.shrink_to_fit();
    Ok(steps)
}

/// Rows read per `rows` call of the compare.
const COMPARE_CHUNK: usize = 1024;

/// The stable ids that need a decision, sorted and unique:
/// - pending rows, and every row when the base is void;
/// - rows whose remote version differs from their base (or the remote lacks);
/// - remote rows we do not have, newer than the version we last synced
///   (older ones were seen by an earlier sync: tombstones of files we never
///   had), or all of them when that sync's commit is not in the history
///   read (`diverged`).
fn candidates(
    state: &LocalState,
    db: &RemoteDb,
    diverged: bool,
    bases: &[RowBase],
    ctx: &DecideContext<'_>,
) -> Result<Vec<String>, SyncError> {
    // Local bases by stable id (a store usually lists them sorted already).
    let mut order: Vec<u32> = (0..bases.len() as u32).collect();
    if !bases.is_sorted_by(|a, b| a.stable_id <= b.stable_id) {
        order.sort_unstable_by(|&a, &b| bases[a as usize].stable_id.cmp(&bases[b as usize].stable_id));
    }
    let mut remote_rv: Vec<Option<i64>> = vec![None; bases.len()];
    let mut ids = Vec::new();
    let find = |id: &str| order.binary_search_by(|&i| bases[i as usize].stable_id.as_str().cmp(id));
    let seen_up_to = if ctx.void_base || diverged { None } else { state.version };
    db.for_each_row_version(|id, rv| match find(id) {
        Ok(k) => remote_rv[order[k] as usize] = Some(rv),
        Err(_) if seen_up_to.is_none_or(|v| rv > v) => ids.push(id.to_owned()),
        Err(_) => {}
    })?;
    // The remote lost a commit this instance knew (a row older than our base,
    // or gone): on a server that ignores conditional requests, a stalled
    // former lease holder overwrote `metadata.db` with a version built
    // elsewhere, under a number we think we have seen.
    let mut behind = false;
    for (b, remote_rv) in bases.iter().zip(remote_rv) {
        behind |= b.remote_version.is_some_and(|base| remote_rv.is_none_or(|rv| rv < base));
        if b.sync_status == SyncStatus::Conflict {
            continue;
        }
        if b.sync_status.is_pending() || ctx.void_base || remote_rv != b.remote_version {
            ids.push(b.stable_id.clone());
        }
    }
    // Then a number we have seen may name rows we have not: the files only
    // the remote has are candidates whatever their version (a second pass,
    // in this rare case only).
    if behind && seen_up_to.is_some() {
        db.for_each_row_version(|id, _| {
            if find(id).is_err() {
                ids.push(id.to_owned());
            }
        })?;
    }
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

/// The stable ids that need a decision when only the commits since the last
/// sync were read, sorted and unique: pending rows and the rows those commits
/// wrote. Every other row is, on the remote, as the last sync left it: its
/// commit is on the remote's history, and nothing after it touched the row.
/// A pending row the commits did not touch is then pushed: with no remote row
/// [`decide`] pushes it, which is what it decides for a pending row whose
/// remote row is unchanged since the base (the rows are never in conflict
/// then, and an unfinished sync's pushes are read against the whole remote).
fn tail_candidates(tail: &TailView, bases: &[RowBase]) -> Vec<String> {
    let pending = bases.iter().filter(|b| b.sync_status.is_pending()).map(|b| b.stable_id.clone());
    let mut ids: Vec<String> = tail.rows.keys().cloned().chain(pending).collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Refuses to delete more than the configured share of local files.
fn guard_mass_delete(opts: &SyncOptions, bases: &[RowBase], steps: &[Step]) -> Result<(), SyncError> {
    if opts.force {
        return Ok(());
    }
    let would_delete = steps.iter().filter(|s| deletes_locally(s)).count() as u64;
    let live_total = bases.iter().filter(|b| !b.deleted).count() as u64;
    let too_many = would_delete > opts.mass_delete_files_min
        && would_delete * 100 > live_total * u64::from(opts.mass_delete_percent);
    if too_many { Err(SyncError::MassDelete { would_delete, live_total }) } else { Ok(()) }
}

fn deletes_locally(step: &Step) -> bool {
    step.full().is_some_and(|f| {
        matches!(&f.action, Action::Pull(r) if r.deleted) && f.local.as_ref().is_some_and(|l| !l.deleted)
    })
}

/// Blob traffic of one attempt.
#[derive(Default)]
struct Transfers {
    uploaded: u32,
    downloaded: u32,
    errors: Vec<FileError>,
}

impl Transfers {
    fn fail(&mut self, stable_id: &str, message: String) {
        self.errors.push(FileError { stable_id: stable_id.to_owned(), message });
    }
}

/// The folder this instance uploads into before MOVEing blobs into place.
fn tmp_dir(instance: &str) -> String {
    format!("{TMP_ROOT}/{instance}")
}

/// The blob a step needs present on the remote (a live row being pushed).
fn blob_to_publish(step: &Step) -> Option<Result<BlobRef, String>> {
    let f = match step {
        Step::Push(p) => return p.blob(),
        Step::Full(f) => f,
    };
    match &f.action {
        Action::Push { row, .. } if !row.deleted => Some(row.blob().map_err(|e| e.to_string())),
        Action::Pull(r) | Action::MarkSynced(r) if f.verify_blob => Some(r.blob().map_err(|e| e.to_string())),
        _ => None,
    }
}

/// Is `remote` this instance's own push of a sync that did not finish (a
/// crash, a lost response, a lost lease), now settled without a new push,
/// with content we hold? Then its blob is checked on the remote. On a server
/// that ignores conditional requests, a push stalled between its fence and
/// its `metadata.db` write can land on top of a gc that had already deleted
/// the blob (its version bump fences only where the server honours
/// `If-Match`); nobody else could upload the content again.
fn own_push_to_verify(
    local: Option<&LocalRow>,
    remote: Option<&RemoteRow>,
    action: &Action,
    ctx: &DecideContext<'_>,
) -> bool {
    let (Some(l), Some(r)) = (local, remote) else { return false };
    matches!(action, Action::Pull(_) | Action::MarkSynced(_))
        && !r.deleted
        && l.id == r.id
        && l.sync_status.is_pending()
        && ctx.own_pushes.get(&l.stable_id, &r.hlc).is_some()
}

/// Most transfers handed to the host per call. The host may run them several
/// at a time; between calls the core renews the lease and reports progress.
const TRANSFER_BATCH_MAX: usize = 64;

/// Sizes transfer batches so that one batch takes at most an eighth of the
/// lease TTL: a batch cannot be interrupted to renew the lease, so it must
/// end well inside it. It starts with one transfer, doubles while batches are
/// quick, and halves when one was slow (slow network, large files).
struct Batcher {
    size: usize,
    budget_ms: i64,
}

impl Batcher {
    fn new(lease: &Lease) -> Batcher {
        Batcher { size: 1, budget_ms: (lease.ttl_ms() / 8).max(1) }
    }

    /// Splits the next batch off `rest`.
    fn take<'a, J>(&self, rest: &mut &'a [J]) -> &'a [J] {
        let (batch, tail) = rest.split_at(self.size.min(rest.len()));
        *rest = tail;
        batch
    }

    fn record(&mut self, elapsed_ms: i64) {
        if elapsed_ms * 2 <= self.budget_ms {
            self.size = (self.size * 2).min(TRANSFER_BATCH_MAX);
        } else if elapsed_ms > self.budget_ms {
            self.size = (self.size / 2).max(1);
        }
    }
}

/// Up to this many wanted blobs are looked up one `stat` each; more are
/// looked up by listing their shard folders (one request per folder).
const STAT_EACH_MAX: usize = 8;

/// Blobs up (SPEC §3 step 5): content the remote lacks goes to a temporary
/// name, then MOVEs into place, so no reader ever sees a torn blob.
#[allow(clippy::too_many_arguments)]
fn upload_blobs(
    io: &mut Io<'_>,
    session: &mut Session,
    lease: &mut Lease,
    reporter: &mut Reporter,
    steps: &mut Vec<Step>,
    transfer: &mut Transfers,
    instance: &str,
) -> Result<(), SyncError> {
    let mut failed = BTreeSet::new();
    let needed = blobs_needed(steps, blob_to_publish, transfer, &mut failed);
    if needed.is_empty() {
        drop_steps(steps, &failed);
        return Ok(());
    }
    reporter.report(io, 25, Phase::Upload, &format!("checking {} on the remote", files(needed.len())));
    let wanted: Vec<&BlobRef> = needed.keys().collect();
    let presence = remote_presence(io, session, lease, &wanted)?;

    let tmp = tmp_dir(instance);
    // The blobs to upload. Each job is made when its batch goes out: a first
    // sync uploads every blob, and all jobs at once took ~35 MB at 100,000.
    let mut to_upload: Vec<&BlobRef> = Vec::new();
    for (blob, users) in &needed {
        if presence.blobs.contains(blob) {
            continue;
        }
        if !io.blobs.local_has(blob).map_err(|e| SyncError::Invalid(e.to_string()))? {
            for &i in users {
                let why = format!("local content {} is missing; it cannot be uploaded", blob.hash);
                transfer.fail(&step_id(&steps[i]), why);
                failed.insert(i);
            }
            continue;
        }
        to_upload.push(blob);
    }
    if !to_upload.is_empty() {
        let shards: BTreeSet<&str> = to_upload.iter().map(|b| b.shard()).collect();
        let folders = [TMP_ROOT, tmp.as_str()]
            .into_iter()
            .chain(shards.into_iter().filter(|s| !presence.folders.contains(*s)));
        for folder in folders {
            session.ensure_collection(io, folder)?;
        }
    }
    let total = to_upload.len();
    let (mut batcher, mut rest, mut done) = (Batcher::new(lease), &to_upload[..], 0);
    while !rest.is_empty() {
        let chunk: Vec<UploadJob> = batcher
            .take(&mut rest)
            .iter()
            .map(|blob| UploadJob {
                blob: (*blob).clone(),
                temp_path: format!("{tmp}/{}{}", blob.hash, blob.ext),
                final_path: blob.path(),
            })
            .collect();
        let chunk = &chunk[..];
        lease.keep_alive(session, io)?;
        let pct = 25 + (35 * done / total) as u8;
        let started = io.clock.now_ms();
        reporter.report(
            io,
            pct,
            Phase::Upload,
            &format!("uploading {} ({done} of {total} done)", files(chunk.len())),
        );
        let results = session.call_batch(io, chunk, |io, jobs| io.blobs.upload(jobs))?;
        batcher.record(io.clock.now_ms() - started);
        done += chunk.len();
        for (job, result) in chunk.iter().zip(results) {
            match result {
                Ok(()) => {
                    transfer.uploaded += 1;
                    reporter.report(io, pct, Phase::Upload, &format!("uploaded {}", job.final_path));
                }
                Err(BlobError::Remote(e)) => return Err(e.into()),
                Err(e) => {
                    for &i in &needed[&job.blob] {
                        transfer
                            .fail(&step_id(&steps[i]), format!("upload of {} failed: {e}", job.final_path));
                        failed.insert(i);
                    }
                }
            }
        }
    }
    drop_steps(steps, &failed);
    Ok(())
}

/// Each distinct blob `blob_of` names, once, with the indices of the steps
/// that need it (mostly one: no spare capacity, as a first sync has an entry
/// for every file). A step whose blob is invalid fails here.
fn blobs_needed(
    steps: &[Step],
    blob_of: fn(&Step) -> Option<Result<BlobRef, String>>,
    transfer: &mut Transfers,
    failed: &mut BTreeSet<usize>,
) -> BTreeMap<BlobRef, Vec<usize>> {
    let mut needed: BTreeMap<BlobRef, Vec<usize>> = BTreeMap::new();
    for (i, step) in steps.iter().enumerate() {
        match blob_of(step) {
            None => {}
            Some(Ok(blob)) => match needed.entry(blob) {
                btree_map::Entry::Vacant(v) => {
                    v.insert(vec![i]);
                }
                btree_map::Entry::Occupied(mut o) => o.get_mut().push(i),
            },
            Some(Err(why)) => {
                transfer.fail(&step_id(step), why);
                failed.insert(i);
            }
        }
    }
    needed
}

/// "1 file", "2 files".
fn files(n: usize) -> String {
    if n == 1 { "1 file".to_owned() } else { format!("{n} files") }
}

/// What the remote already holds of the blobs a sync wants to publish.
#[derive(Default)]
struct Presence {
    /// Blobs present at their final path.
    blobs: BTreeSet<BlobRef>,
    /// Shard folders known to exist.
    folders: BTreeSet<String>,
}

/// Looks the wanted blobs up: a `stat` each when there are few, otherwise
/// one listing per shard folder, so a first sync of many files costs one
/// request per folder rather than one per file.
fn remote_presence(
    io: &mut Io<'_>,
    session: &mut Session,
    lease: &mut Lease,
    wanted: &[&BlobRef],
) -> Result<Presence, SyncError> {
    let mut presence = Presence::default();
    if wanted.len() <= STAT_EACH_MAX {
        for blob in wanted {
            let path = blob.path();
            if session.call(io, |io| io.remote.stat(&path))?.is_some_and(|s| !s.is_collection) {
                presence.blobs.insert((*blob).clone());
                presence.folders.insert(blob.shard().to_owned());
            }
        }
        return Ok(presence);
    }
    let mut by_shard: BTreeMap<&str, Vec<&BlobRef>> = BTreeMap::new();
    for blob in wanted {
        by_shard.entry(blob.shard()).or_default().push(blob);
    }
    for (shard, blobs) in by_shard {
        lease.keep_alive(session, io)?;
        let Some(entries) = session.call(io, |io| io.remote.list(shard))? else { continue };
        presence.folders.insert(shard.to_owned());
        let files: BTreeSet<&str> =
            entries.iter().filter(|e| !e.stat.is_collection).map(|e| e.name.as_str()).collect();
        for blob in blobs {
            if files.contains(format!("{}{}", blob.hash, blob.ext).as_str()) {
                presence.blobs.insert(blob.clone());
            }
        }
    }
    Ok(presence)
}

/// The blob a step needs present locally (a live row the local side takes).
fn blob_to_fetch(step: &Step) -> Option<Result<BlobRef, String>> {
    let f = match step {
        Step::Push(p) => return p.blob(),
        Step::Full(f) => f,
    };
    let row_blob = match &f.action {
        Action::Pull(r) if !r.deleted => r.blob(),
        Action::Push { row, .. } if !row.deleted => row.blob(),
        Action::MarkSynced(r) if !r.deleted => r.blob(),
        _ => return None,
    };
    Some(row_blob.map_err(|e| e.to_string()))
}

/// Blobs down (SPEC §3 step 6): the host downloads to a temporary file,
/// verifies the hash and renames into place; a mismatch is never accepted.
fn download_blobs(
    io: &mut Io<'_>,
    opts: &SyncOptions,
    session: &mut Session,
    lease: &mut Lease,
    reporter: &mut Reporter,
    steps: &mut Vec<Step>,
    transfer: &mut Transfers,
) -> Result<(), SyncError> {
    let mut failed = BTreeSet::new();
    let needed = blobs_needed(steps, blob_to_fetch, transfer, &mut failed);
    // As for uploads, each job is made when its batch goes out.
    let mut to_download: Vec<&BlobRef> = Vec::new();
    for blob in needed.keys() {
        if !io.blobs.local_has(blob).map_err(|e| SyncError::Invalid(e.to_string()))? {
            to_download.push(blob);
        }
    }
    let total = to_download.len();
    let (mut batcher, mut rest, mut done) = (Batcher::new(lease), &to_download[..], 0);
    while !rest.is_empty() {
        let chunk: Vec<DownloadJob> = batcher
            .take(&mut rest)
            .iter()
            .map(|blob| DownloadJob { remote_path: blob.path(), blob: (*blob).clone() })
            .collect();
        let chunk = &chunk[..];
        lease.keep_alive(session, io)?;
        let pct = 60 + (30 * done / total) as u8;
        let started = io.clock.now_ms();
        reporter.report(
            io,
            pct,
            Phase::Download,
            &format!("downloading {} ({done} of {total} done)", files(chunk.len())),
        );
        let results =
            session.call_batch(io, chunk, |io, jobs| io.blobs.download(jobs, opts.blob_bytes_max))?;
        batcher.record(io.clock.now_ms() - started);
        done += chunk.len();
        for (job, result) in chunk.iter().zip(results) {
            let path = &job.remote_path;
            let why = match result {
                Ok(()) => {
                    transfer.downloaded += 1;
                    reporter.report(io, pct, Phase::Download, &format!("downloaded {path}"));
                    continue;
                }
                Err(BlobError::Remote(RemoteError::NotFound)) => {
                    format!("blob {path} is missing on the remote")
                }
                Err(BlobError::Remote(e)) if !matches!(e, RemoteError::TooLarge { .. }) => {
                    return Err(e.into());
                }
                Err(e) => format!("download of {path} refused: {e}"),
            };
            for &i in &needed[&job.blob] {
                transfer.fail(&step_id(&steps[i]), why.clone());
                failed.insert(i);
            }
        }
    }
    drop_steps(steps, &failed);
    Ok(())
}

fn step_id(step: &Step) -> String {
    step.stable_id().to_owned()
}

/// Removes the steps at `indices` (their files wait for the next sync).
fn drop_steps(steps: &mut Vec<Step>, indices: &BTreeSet<usize>) {
    if indices.is_empty() {
        return;
    }
    let mut i = 0;
    steps.retain(|_| {
        let keep = !indices.contains(&i);
        i += 1;
        keep
    });
}

/// The remote row that publishes `row` stamped `stamp` in the commit of `version`.
fn remote_row(row: &LocalRow, stamp: &Hlc, now_iso: &str, version: i64) -> RemoteRow {
    RemoteRow {
        stable_id: row.stable_id.clone(),
        id: row.id.clone(),
        meta: row.meta.clone(),
        deleted: row.deleted,
        remote_version: version,
        updated_at: now_iso.to_owned(),
        hlc: stamp.clone(),
    }
}

/// Rows read again per `rows` call by the merge and the local commit.
const REREAD_CHUNK: usize = 512;

/// Merges the pushes into the remote state as the commit of `version` (SPEC
/// §3 step 7), one row at a time (no copy of them all); plain pushes are read
/// again in chunks. Returns the indices of the plain pushes left out because
/// the app changed the row since the compare (they wait for the next sync),
/// and the rows of the commit's change file (none for a new remote, whose
/// first commit is its checkpoint).
fn merge_pushes(
    io: &mut Io<'_>,
    fetched: &mut Fetched,
    steps: &[Step],
    version: i64,
    now_iso: &str,
) -> Result<(BTreeSet<usize>, Vec<RemoteRow>), SyncError> {
    let mut left_out = BTreeSet::new();
    let mut changes = Vec::new();
    let collect = !fetched.is_new;
    match &mut fetched.view {
        View::Full(full) => full.db.commit_with(version, now_iso, |merge| -> Result<(), SyncError> {
            merged_rows(io, steps, version, now_iso, &mut left_out, |row| {
                merge.upsert(&row)?;
                if collect {
                    changes.push(row);
                }
                Ok(())
            })
        })?,
        View::Tail(_) => merged_rows(io, steps, version, now_iso, &mut left_out, |row| {
            // Never publish what we would refuse to read back.
            row.validate()
                .map_err(|source| RemoteDbError::InvalidRow { stable_id: row.stable_id.clone(), source })?;
            changes.push(row);
            Ok(())
        })?,
    }
    Ok((left_out, changes))
}

/// Hands each row the pushes publish in the commit of `version` to `take`;
/// plain pushes the app changed since the compare go to `left_out`.
fn merged_rows(
    io: &mut Io<'_>,
    steps: &[Step],
    version: i64,
    now_iso: &str,
    left_out: &mut BTreeSet<usize>,
    mut take: impl FnMut(RemoteRow) -> Result<(), SyncError>,
) -> Result<(), SyncError> {
    for (c, chunk) in steps.chunks(REREAD_CHUNK).enumerate() {
        let mut reread = reread_pushes(io, chunk)?;
        for (k, step) in chunk.iter().enumerate() {
            let row = match step {
                Step::Push(p) => match reread.remove(&p.stable_id) {
                    Some(row) => remote_row(&row, &p.input.stamp, now_iso, version),
                    None => {
                        left_out.insert(c * REREAD_CHUNK + k);
                        continue;
                    }
                },
                Step::Full(f) => match &f.action {
                    Action::Push { row, stamp } => remote_row(row, stamp, now_iso, version),
                    _ => continue,
                },
            };
            take(row)?;
        }
    }
    Ok(())
}

/// Remembers, before the remote commit, which local states this attempt
/// publishes under which stamps: if the commit lands and the local commit
/// does not, the next sync still knows which pending rows the app changed
/// after this push ([`local_state::OwnPushes`]). The records of earlier
/// attempts of the same sync are kept: their commit may have landed too.
///
/// Written to the store only, with `recorded` (what it held before): the
/// union is not built in memory. A later attempt of this sync reads it back
/// ([`run_attempts`]).
fn record_own_pushes(
    io: &mut Io<'_>,
    steps: &[Step],
    recorded: &local_state::OwnPushes,
) -> Result<(), Interrupted> {
    // Plain pushes carry their input; the others' are made here.
    let full: Vec<(&str, PushedInput)> = steps
        .iter()
        .filter_map(|step| match step.full().map(|f| (&f.action, &f.local)) {
            Some((Action::Push { stamp, .. }, Some(input))) => {
                Some((input.stable_id.as_str(), PushedInput::of(input, stamp.clone())))
            }
            _ => None,
        })
        .collect();
    let inputs: Vec<(&str, &PushedInput)> = steps
        .iter()
        .filter_map(|step| match step {
            Step::Push(p) => Some((p.stable_id.as_str(), &p.input)),
            Step::Full(_) => None,
        })
        .chain(full.iter().map(|(id, input)| (*id, input)))
        .collect();
    if !recorded.lacks_any(&inputs) {
        return Ok(());
    }
    let meta = vec![(local_state::META_PUSHED.to_owned(), recorded.encode_with(&inputs))];
    io.local.apply(&LocalCommit { writes: Vec::new(), meta })?;
    Ok(())
}

/// A commit about to be published.
pub(crate) struct Commit {
    /// Its version.
    pub(crate) version: i64,
    /// Its id (random).
    pub(crate) id: String,
    /// The version and commit id of the state it was made from.
    pub(crate) parent: (i64, Option<String>),
    /// The rows it writes (its change file).
    pub(crate) changes: Vec<RemoteRow>,
    /// [`SyncOptions::fold_commits`].
    pub(crate) fold_commits: u32,
}

/// Commits nothing but a new version (gc's fence for syncs in flight).
#[allow(clippy::too_many_arguments)]
pub(crate) fn commit_empty(
    io: &mut Io<'_>,
    session: &mut Session,
    lease: &mut Lease,
    reporter: &mut Reporter,
    fetched: &mut Fetched,
    new_version: i64,
    now_iso: &str,
    fold_commits: u32,
) -> Result<(), Interrupted> {
    reporter.report(io, 90, Phase::Commit, &format!("committing version {new_version}"));
    let commit = Commit {
        version: new_version,
        id: local_state::new_id(io, "c"),
        parent: fetched.state_commit(),
        changes: Vec::new(),
        fold_commits,
    };
    if let View::Full(full) = &mut fetched.view {
        full.db.commit(std::iter::empty::<RemoteRow>(), new_version, now_iso)?;
    }
    publish_commit(io, session, lease, reporter, fetched, commit)
}

/// Publishes a commit (SPEC §3 step 8): its change file, then `version.txt`
/// naming it; a new remote's first commit is its checkpoint, `metadata.db`,
/// instead. Then folds the history into `metadata.db` when that is due.
/// `fetched` holds the state with the commit merged (its full view, if any).
fn publish_commit(
    io: &mut Io<'_>,
    session: &mut Session,
    lease: &mut Lease,
    reporter: &mut Reporter,
    fetched: &mut Fetched,
    commit: Commit,
) -> Result<(), Interrupted> {
    let token = fetched.head.as_ref().map(|h| (h.version, h.commit.clone()));
    let epoch = fetched.epoch().to_owned();
    let fold_commits = commit.fold_commits;
    let mut head = Head {
        version: commit.version,
        format: FORMAT,
        commit: Some(commit.id.clone()),
        epoch: Some(epoch.clone()),
        checkpoint: 0,
        checkpoint_bytes: 0,
        tail_bytes: 0,
    };
    if fetched.is_new {
        let View::Full(full) = &mut fetched.view else {
            return Err(Interrupted::Failed(SyncError::Invalid("a new remote is read whole".to_owned())));
        };
        full.db.set_commit_id(&commit.id)?;
        // Lent by SQLite, not copied (75 MiB at 100,000 files).
        let bytes = full.db.bytes()?;
        let bytes: &[u8] = &bytes;
        head.checkpoint = commit.version;
        head.checkpoint_bytes = bytes.len() as u64;
        lease.confirm(session, io)?;
        fence(io, session, &token)?;
        match session.call(io, |io| io.remote.put(METADATA_DB, bytes, &Precondition::IfNoneMatchAny)) {
            Ok(_) => {}
            // Someone else created the remote meanwhile: start over with theirs.
            Err(RemoteError::PreconditionFailed | RemoteError::AlreadyExists) => {
                return Err(Interrupted::Fenced);
            }
            Err(e) => return Err(e.into()),
        }
        return write_head(io, session, lease, &token, &head);
    }
    let file = ChangeFile {
        format: FORMAT,
        epoch,
        version: commit.version,
        commit: commit.id,
        parent_version: commit.parent.0,
        parent_commit: commit.parent.1,
        rows: commit.changes,
    };
    let path = file.own_path();
    let bytes = file.to_bytes();
    drop(file);
    (head.checkpoint, head.checkpoint_bytes, head.tail_bytes) = match (&fetched.view, &fetched.head) {
        (View::Full(full), _) => (full.checkpoint_version, full.checkpoint_bytes, full.tail_bytes),
        (View::Tail(_), Some(h)) => (h.checkpoint, h.checkpoint_bytes, h.tail_bytes),
        (View::Tail(_), None) => (0, 0, 0),
    };
    head.tail_bytes = head.tail_bytes.saturating_add(bytes.len() as u64);
    // No fence before the change file: it has a name of its own, so writing
    // it after a rival commit overwrites nothing (it stays off the chain, and
    // gc deletes it once a fold passes it). The fence before `version.txt`
    // is the one that decides; this saves a request on every commit.
    lease.confirm(session, io)?;
    put_once(io, session, &path, &bytes)?;
    drop(bytes);
    write_head(io, session, lease, &token, &head)?;
    if head.fold_due(fold_commits)
        && let View::Full(full) = &mut fetched.view
    {
        reporter.report(
            io,
            92,
            Phase::Commit,
            &format!("folding the history into metadata.db at {}", head.version),
        );
        if let Err(Interrupted::Failed(e)) = fold(io, session, lease, full, &head) {
            // The commit stands; the next commit folds instead.
            reporter.report(io, 93, Phase::Commit, &format!("metadata.db was not rewritten: {e}"));
        }
    }
    Ok(())
}

/// Creates a file that must not exist yet (a change file: its name is
/// unique). Meeting it already there with the same bytes is the retry of a
/// write whose answer was lost.
fn put_once(io: &mut Io<'_>, session: &mut Session, path: &str, bytes: &[u8]) -> Result<(), Interrupted> {
    let put = |io: &mut Io<'_>, session: &mut Session| {
        session.call(io, |io| io.remote.put(path, bytes, &Precondition::IfNoneMatchAny))
    };
    let mut first = put(io, session);
    // The folder is made by the first commit that needs it, not by a MKCOL
    // before every commit. A missing folder is a 409 on most servers, a 404
    // on rclone.
    if let (Err(RemoteError::ParentMissing | RemoteError::NotFound), Some((parent, _))) =
        (&first, path.rsplit_once('/'))
    {
        session.ensure_collection(io, parent)?;
        first = put(io, session);
    }
    match first {
        Ok(_) => Ok(()),
        Err(RemoteError::PreconditionFailed | RemoteError::AlreadyExists) => {
            // Read at most our own length: a larger file is not ours either.
            let same = match session.call(io, |io| io.remote.get(path, bytes.len() as u64)) {
                Ok(there) => there.bytes == bytes,
                Err(RemoteError::TooLarge { .. }) => false,
                Err(e) => return Err(e.into()),
            };
            if same {
                Ok(())
            } else {
                Err(Interrupted::Failed(SyncError::RemoteCorrupt(format!(
                    "{path} exists with other content"
                ))))
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Writes `version.txt` (`head`) over the one the attempt started from
/// (`token`), under a confirmed lease.
fn write_head(
    io: &mut Io<'_>,
    session: &mut Session,
    lease: &mut Lease,
    token: &Option<(i64, Option<String>)>,
    head: &Head,
) -> Result<(), Interrupted> {
    let text = head.to_text();
    let mut weak_waits = 0;
    let condition = loop {
        lease.confirm(session, io)?;
        // Fence again: a commit (a sync, or a gc's version bump) that landed
        // since the attempt read the remote is never written over.
        // `version.txt` is replaced only if it is still the one the fence
        // read: a holder that stalls right here, past its lease, must not
        // set the counter back under a newer commit (where the server
        // honours conditions).
        let condition = fence(io, session, token)?;
        // A weak ETag (Apache's, for a second after a write) never matches
        // `If-Match`. Writing without a condition instead left the stall
        // above unguarded (a proptest case on the weak profile: a holder
        // froze before that write and set `version.txt` back from 3 to 2),
        // so wait for the ETag to turn strong. A server whose ETags stay
        // weak is then written to as one that ignores conditions.
        let weak = matches!(&condition, Precondition::IfMatch(etag) if etag.starts_with("W/"));
        if !weak {
            break condition;
        }
        if weak_waits == WEAK_ETAG_WAITS {
            break Precondition::None;
        }
        weak_waits += 1;
        io.clock.sleep_ms(WEAK_ETAG_WAIT_MS);
    };
    match session.call(io, |io| io.remote.put(VERSION_TXT, text.as_bytes(), &condition)) {
        Ok(_) => Ok(()),
        Err(RemoteError::PreconditionFailed) => {
            // A rival commit moved it (start over), or a lost response's
            // retry met our own write.
            fence(io, session, token)?;
            lease.confirm(session, io)?;
            session.call(io, |io| io.remote.put(VERSION_TXT, text.as_bytes(), &Precondition::None))?;
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// How long [`write_head`] waits for a weak ETag of `version.txt` to turn
/// strong (Apache's are weak for the second after a write), and how often.
const WEAK_ETAG_WAIT_MS: u64 = 1_100;
const WEAK_ETAG_WAITS: u32 = 3;

/// Folds the history into `metadata.db`: writes the state at `head`'s
/// commit as the new checkpoint, then `version.txt` naming it. Only after the
/// commit is published, so `metadata.db` always holds a state on the history;
/// a crash in between leaves a checkpoint newer than `version.txt` says,
/// which readers take as it is.
fn fold(
    io: &mut Io<'_>,
    session: &mut Session,
    lease: &mut Lease,
    full: &mut FullView,
    head: &Head,
) -> Result<(), Interrupted> {
    let commit = head.commit.as_deref().unwrap_or_default();
    full.db.set_commit_id(commit)?;
    let bytes = full.db.bytes()?;
    let bytes: &[u8] = &bytes;
    lease.confirm(session, io)?;
    let Some((now, etag)) = session.read_head_tagged(io)? else { return Ok(()) };
    if now.commit_id() != head.commit_id() {
        return Ok(());
    }
    let condition = full.checkpoint_etag.clone().map_or(Precondition::IfNoneMatchAny, Precondition::IfMatch);
    match session.call(io, |io| io.remote.put(METADATA_DB, bytes, &condition)) {
        Ok(_) => {}
        Err(RemoteError::PreconditionFailed) => return Ok(()),
        Err(e) => return Err(e.into()),
    }
    lease.confirm(session, io)?;
    let folded = Head {
        checkpoint: head.version,
        checkpoint_bytes: bytes.len() as u64,
        tail_bytes: 0,
        ..head.clone()
    };
    let condition = etag.map_or(Precondition::None, Precondition::IfMatch);
    match session.call(io, |io| io.remote.put(VERSION_TXT, folded.to_text().as_bytes(), &condition)) {
        Ok(_) | Err(RemoteError::PreconditionFailed) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Fencing: `version.txt` must still name the commit this attempt started
/// from. Returns the precondition that replaces exactly that `version.txt`.
fn fence(
    io: &mut Io<'_>,
    session: &mut Session,
    token: &Option<(i64, Option<String>)>,
) -> Result<Precondition, Interrupted> {
    let now = session.read_head_tagged(io)?;
    if now.as_ref().map(|(h, _)| (h.version, h.commit.clone())) != *token {
        return Err(Interrupted::Fenced);
    }
    Ok(match now {
        None => Precondition::IfNoneMatchAny,
        Some((_, Some(etag))) => Precondition::IfMatch(etag),
        Some((_, None)) => Precondition::None,
    })
}

/// Row writes per `commit_writes` call of the local commit: bounds what one
/// call carries (and what the component holds of it at once).
const LOCAL_COMMIT_CHUNK: usize = 512;

/// The local rows as they must be after the commit (SPEC §3 step 9).
/// `reread` holds the plain pushes' rows as [`reread_pushes`] found them;
/// one missing there was changed by the app and goes to `changed`, unwritten.
fn local_writes(
    steps: &[Step],
    reread: &mut HashMap<String, LocalRow>,
    version: i64,
    clock: &mut HlcClock,
    changed: &mut Vec<String>,
) -> Vec<RowWrite> {
    let mut writes = Vec::with_capacity(steps.len());
    for step in steps {
        let f = match step {
            Step::Push(p) => {
                if let Some(h) = &p.remote_hlc {
                    clock.observe(h);
                }
                clock.observe(&p.input.stamp);
                match reread.remove(&p.stable_id) {
                    Some(read) => {
                        let row = settled_push(&read, &p.input.stamp, version);
                        writes.push(RowWrite { row, expected: Some(read) });
                    }
                    None => changed.push(p.stable_id.clone()),
                }
                continue;
            }
            Step::Full(f) => f,
        };
        if let Some(r) = &f.remote {
            clock.observe(&r.hlc);
        }
        let row = match &f.action {
            Action::Nothing => continue,
            Action::Push { row, stamp } => {
                clock.observe(stamp);
                settled_push(row, stamp, version)
            }
            Action::Pull(r) | Action::MarkSynced(r) => from_remote(f.local.as_ref(), r),
            Action::Conflict(record) => LocalRow {
                sync_status: SyncStatus::Conflict,
                conflict: Some(record.clone()),
                ..f.local.clone().expect("conflicts have a local row")
            },
            Action::ForgetBase => LocalRow {
                remote_version: None,
                sync_hash: None,
                sync_meta: None,
                hlc: None,
                ..f.local.clone().expect("only local rows forget a base")
            },
        };
        writes.push(RowWrite { row, expected: f.local.clone() });
    }
    writes
}

/// Leaves out the writes of remote changes (pulls, conflicts, new bases)
/// to rows the app changed since the compare, as the store would, and says
/// whether there were any. Read inside the open local commit, which holds
/// the database's write lock: what it finds is what the store will find.
fn drop_overtaken(
    io: &mut Io<'_>,
    chunk: &[Step],
    writes: &mut Vec<RowWrite>,
    changed: &mut Vec<String>,
) -> Result<bool, LocalError> {
    let remote_side: HashSet<&str> = chunk
        .iter()
        .filter(|s| s.full().is_some_and(|f| !matches!(f.action, Action::Push { .. })))
        .map(Step::stable_id)
        .collect();
    let ids: Vec<String> = writes
        .iter()
        .filter(|w| remote_side.contains(w.row.stable_id.as_str()))
        .map(|w| w.row.stable_id.clone())
        .collect();
    if ids.is_empty() {
        return Ok(false);
    }
    let now: HashMap<String, LocalRow> =
        io.local.rows(&ids)?.into_iter().map(|r| (r.stable_id.clone(), r)).collect();
    let before = writes.len();
    writes.retain(|w| {
        let keep = !remote_side.contains(w.row.stable_id.as_str())
            || now.get(&w.row.stable_id) == w.expected.as_ref();
        if !keep {
            changed.push(w.row.stable_id.clone());
        }
        keep
    });
    Ok(writes.len() != before)
}

/// `row` as it is once published with `stamp` in the commit of `version`.
fn settled_push(row: &LocalRow, stamp: &Hlc, version: i64) -> LocalRow {
    LocalRow {
        sync_status: settled(row.deleted),
        remote_version: Some(version),
        sync_hash: Some(row.id.clone()),
        sync_meta: Some(row.meta.digest()),
        hlc: Some(stamp.clone()),
        conflict: None,
        ..row.clone()
    }
}

fn settled(deleted: bool) -> SyncStatus {
    if deleted { SyncStatus::DeletionSynced } else { SyncStatus::Synced }
}

/// The local row that mirrors remote row `r`.
fn from_remote(local: Option<&LocalRow>, r: &RemoteRow) -> LocalRow {
    LocalRow {
        stable_id: r.stable_id.clone(),
        id: r.id.clone(),
        meta: r.meta.clone(),
        deleted: r.deleted,
        sync_status: settled(r.deleted),
        remote_version: Some(r.remote_version),
        sync_hash: Some(r.id.clone()),
        sync_meta: Some(r.meta.digest()),
        local_modified_at_ms: local.map_or(0, |l| l.local_modified_at_ms),
        hlc: Some(r.hlc.clone()),
        conflict: None,
    }
}

/// Fills the summary's counters from what was actually applied.
fn count_outcome(steps: &[Step], skipped: &[String], summary: &mut SyncSummary) {
    let skipped: BTreeSet<&str> = skipped.iter().map(String::as_str).collect();
    for step in steps {
        let applied = !skipped.contains(step.stable_id());
        let f = match step {
            Step::Push(p) if p.input.deleted => {
                summary.deleted_remote += 1;
                continue;
            }
            Step::Push(p) => {
                summary.metadata_synced += u32::from(p.same_content);
                continue;
            }
            Step::Full(f) => f,
        };
        let local = f.local.as_ref();
        match &f.action {
            Action::Push { row, .. } if row.deleted => summary.deleted_remote += 1,
            Action::Push { row, .. } => {
                let same_content = f.remote.as_ref().is_some_and(|r| r.id == row.id && !r.deleted);
                if same_content {
                    summary.metadata_synced += 1;
                }
            }
            Action::Pull(r) if r.deleted => {
                summary.deleted_local += u32::from(applied && local.is_some_and(|l| !l.deleted));
            }
            Action::Pull(r) => {
                summary.metadata_synced += u32::from(applied && local.is_some_and(|l| l.id == r.id));
            }
            Action::Conflict(_) if applied => summary.conflicts += 1,
            _ => {}
        }
    }
}

/// Deletes local blobs of files the remote deleted, once no live row uses
/// them. Runs after the local commit: a crash here leaves an unused file,
/// never a row without its file.
fn remove_deleted_blobs(io: &mut Io<'_>, steps: &[Step], skipped: &[String]) {
    for f in steps.iter().filter_map(Step::full) {
        let (Action::Pull(r), Some(local)) = (&f.action, f.local.as_ref()) else { continue };
        if !r.deleted || local.deleted || skipped.contains(&local.stable_id) {
            continue;
        }
        let Ok(blob) = local.blob() else { continue };
        if io.local.live_rows_with_content(&blob.hash).is_ok_and(|n| n == 0) {
            let _ = io.blobs.remove_local(&blob);
        }
    }
}

/// Sends progress events with a percentage that never goes down.
#[derive(Default)]
pub(crate) struct Reporter {
    percent: u8,
}

impl Reporter {
    fn report(&mut self, io: &mut Io<'_>, percent: u8, phase: Phase, message: &str) {
        self.percent = self.percent.max(percent.min(100));
        io.progress.report(ProgressEvent { percent: self.percent, phase, message: message.to_owned() });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local_state::OwnPushes;
    use crate::mem::{
        LocalFiles, MemBlobs, MemRemote, MemRemoteClient, MemStore, SeededRandom, ServerProfile, SimClock,
        WorldClock,
    };
    use crate::model::{ContentHash, FileMeta};
    use crate::ports::NoProgress;

    const NOW: &str = "2026-01-01T00:00:00.000Z";

    fn local_row(i: usize) -> LocalRow {
        let deleted = i % 3 == 2;
        LocalRow {
            stable_id: format!("f{i:03}"),
            id: ContentHash::of(format!("content {i}").as_bytes()),
            meta: FileMeta {
                filename: format!("f{i}.pdf"),
                doc_id: format!("10.1/{i}"),
                doc_id_type: "doi".into(),
                file_type: if i.is_multiple_of(2) { "pdf".into() } else { "tei".into() },
                label: Some(format!("label {i}")),
                doc_collections: "[\"a\"]".into(),
                doc_metadata: "{}".into(),
                file_metadata: "{}".into(),
                ..FileMeta::default()
            },
            deleted,
            sync_status: if deleted { SyncStatus::PendingDelete } else { SyncStatus::Modified },
            remote_version: (i % 4 == 1).then_some(3),
            sync_hash: None,
            sync_meta: None,
            local_modified_at_ms: 1_000 + i as i64,
            hlc: None,
            conflict: None,
        }
    }

    fn stamp(i: usize) -> Hlc {
        Hlc { physical_ms: 5_000 + i as i64, counter: 0, instance: "me".into() }
    }

    /// A remote row for some files, with the same content (a metadata push).
    fn remote_of(row: &LocalRow, i: usize) -> Option<RemoteRow> {
        (i % 4 == 1).then(|| RemoteRow {
            stable_id: row.stable_id.clone(),
            id: row.id.clone(),
            meta: FileMeta { label: Some("old".into()), ..row.meta.clone() },
            deleted: false,
            remote_version: 3,
            updated_at: NOW.into(),
            hlc: Hlc { physical_ms: 4_000, counter: i as u32, instance: "other".into() },
        })
    }

    /// Each push twice: as the compare makes it (thin) and with its rows (full).
    fn pushes(n: usize) -> (Vec<Step>, Vec<Step>) {
        let (mut thin, mut full) = (Vec::new(), Vec::new());
        for i in 0..n {
            let row = local_row(i);
            let action = Action::Push { row: row.clone(), stamp: stamp(i) };
            thin.push(Step::new(Some(row.clone()), remote_of(&row, i), action.clone(), false));
            let full_step =
                FullStep { local: Some(row.clone()), remote: remote_of(&row, i), action, verify_blob: false };
            full.push(Step::Full(Box::new(full_step)));
        }
        assert!(thin.iter().all(|s| matches!(s, Step::Push(_))), "plain pushes are thin");
        (thin, full)
    }

    fn with_io<T>(store: &mut MemStore, f: impl FnOnce(&mut Io<'_>) -> T) -> T {
        let world = WorldClock::new(0);
        let server = MemRemote::new(ServerProfile::Strict, world.clone());
        let mut remote = MemRemoteClient::new(server.clone());
        let mut blobs = MemBlobs::new(LocalFiles::new(), MemRemoteClient::new(server));
        let mut clock = SimClock::new(world, 0);
        let mut random = SeededRandom::new(1);
        let mut progress = NoProgress;
        let mut io = Io {
            local: store,
            remote: &mut remote,
            blobs: &mut blobs,
            clock: &mut clock,
            random: &mut random,
            progress: &mut progress,
        };
        f(&mut io)
    }

    /// What one path commits: the merged database's rows, the local writes,
    /// the clock after them, the rows left out, and the push records.
    type Committed = (Vec<RemoteRow>, Vec<RowWrite>, Hlc, Vec<String>, OwnPushes, u32, u32);

    /// A whole remote state (not a new remote: its commit has a change file).
    fn whole(db: RemoteDb) -> Fetched {
        Fetched { view: View::Full(Box::new(FullView::empty(db))), head: None, is_new: false }
    }

    #[test]
    fn a_change_file_name_taken_by_other_content_is_an_error_saying_so() {
        let mut store = store_with(0);
        with_io(&mut store, |io| {
            let mut session = Session::new(0);
            let (path, theirs) = ("changes/2-c2.json", &b"another writer's change file"[..]);
            io.remote.mkcol("changes").unwrap();
            io.remote.put(path, theirs, &Precondition::None).unwrap();
            // Shorter than theirs (read up to our length: too large), and longer.
            for ours in [&b"ours"[..], b"another writer's change file, longer"] {
                match put_once(io, &mut session, path, ours) {
                    Err(Interrupted::Failed(SyncError::RemoteCorrupt(msg))) => {
                        assert_eq!(msg, format!("{path} exists with other content"));
                    }
                    Err(Interrupted::Failed(e)) => panic!("{} bytes: {e}", ours.len()),
                    other => panic!("{} bytes: {:?}", ours.len(), other.is_ok()),
                }
            }
            // The same bytes: the retry of a write whose answer was lost.
            assert!(put_once(io, &mut session, path, theirs).is_ok());
        });
    }

    fn commit_both_ways(store: &mut MemStore, steps: &mut Vec<Step>) -> Committed {
        with_io(store, |io| {
            assert!(record_own_pushes(io, steps, &OwnPushes::new()).is_ok());
            let own = local_state::load_own_pushes(io).unwrap();
            let mut fetched = whole(RemoteDb::create("e1").unwrap());
            let (left_out, mut changes) = merge_pushes(io, &mut fetched, steps, 1, NOW).unwrap();
            drop_steps(steps, &left_out);
            let ids: Vec<String> = (0..1000).map(|i| format!("f{i:03}")).collect();
            let remote_rows = fetched.full().unwrap().db.rows(&ids).unwrap();
            // The change file holds exactly what the merge wrote.
            changes.sort_by(|a, b| a.stable_id.cmp(&b.stable_id));
            assert_eq!(changes, remote_rows);
            let mut clock = HlcClock::new("me", None);
            let (mut writes, mut changed) = (Vec::new(), Vec::new());
            for chunk in steps.chunks(7) {
                let mut reread = reread_pushes(io, chunk).unwrap();
                writes.extend(local_writes(chunk, &mut reread, 1, &mut clock, &mut changed));
            }
            let mut summary = SyncSummary::default();
            count_outcome(steps, &changed, &mut summary);
            (
                remote_rows,
                writes,
                clock.current(),
                changed,
                own,
                summary.deleted_remote,
                summary.metadata_synced,
            )
        })
    }

    fn store_with(n: usize) -> MemStore {
        let mut store = MemStore::new();
        for i in 0..n {
            let row = local_row(i);
            store.rows.insert(row.stable_id.clone(), row);
        }
        store
    }

    #[test]
    fn thin_pushes_commit_exactly_what_full_rows_commit() {
        let n = 40;
        let (mut thin, mut full) = pushes(n);
        let by_thin = commit_both_ways(&mut store_with(n), &mut thin);
        let by_full = commit_both_ways(&mut store_with(n), &mut full);
        assert_eq!(by_thin.0.len(), n, "every push merged");
        assert_eq!(by_thin.1.len(), n, "every push written locally");
        assert!(by_thin.3.is_empty());
        assert_eq!(by_thin, by_full);
    }

    #[test]
    fn a_plain_push_the_app_changed_since_the_compare_is_left_out_of_the_commit() {
        let n = 10;
        let (mut thin, _) = pushes(n);
        let mut store = store_with(n);
        store.rows.get_mut("f004").unwrap().meta.label = Some("edited during the sync".into());
        let (remote_rows, writes, ..) = commit_both_ways(&mut store, &mut thin);
        assert_eq!(remote_rows.len(), n - 1);
        assert!(remote_rows.iter().all(|r| r.stable_id != "f004"), "not published");
        assert!(writes.iter().all(|w| w.row.stable_id != "f004"), "not marked synced");
        assert_eq!(store.rows["f004"].sync_status, SyncStatus::Modified, "still pending");
    }

    #[test]
    fn a_plain_push_changed_after_the_merge_is_left_alone_by_the_local_commit() {
        let n = 10;
        let (thin, _) = pushes(n);
        let mut store = store_with(n);
        let left_out = with_io(&mut store, |io| {
            merge_pushes(io, &mut whole(RemoteDb::create("e1").unwrap()), &thin, 1, NOW).unwrap().0
        });
        assert!(left_out.is_empty());
        store.rows.get_mut("f007").unwrap().meta.label = Some("edited after the merge".into());
        let (writes, changed) = with_io(&mut store, |io| {
            let mut reread = reread_pushes(io, &thin).unwrap();
            let mut changed = Vec::new();
            let writes = local_writes(&thin, &mut reread, 1, &mut HlcClock::new("me", None), &mut changed);
            (writes, changed)
        });
        assert_eq!(changed, ["f007"]);
        assert_eq!(writes.len(), n - 1);
        assert!(
            writes
                .iter()
                .all(|w| w.expected.as_ref() == Some(&local_row(w.row.stable_id[1..].parse().unwrap())))
        );
    }

    #[test]
    fn batches_grow_while_quick_and_shrink_when_slow() {
        let mut b = Batcher { size: 1, budget_ms: 1_000 };
        let jobs: Vec<u32> = (0..200).collect();
        let mut rest = &jobs[..];
        assert_eq!(b.take(&mut rest).len(), 1);
        for want in [2, 4, 8, 16, 32, 64, 64] {
            b.record(100);
            assert_eq!(b.size, want);
        }
        b.record(700); // between half and the whole budget: keep the size
        assert_eq!(b.size, 64);
        b.record(5_000);
        assert_eq!(b.size, 32);
        for _ in 0..10 {
            b.record(5_000);
        }
        assert_eq!(b.size, 1, "never below one");
        let mut short = &jobs[..3];
        b.size = 64;
        assert_eq!(b.take(&mut short).len(), 3);
        assert!(short.is_empty());
    }
}
