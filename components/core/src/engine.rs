//! The sync (SPEC §3), step by step. Order matters for crash safety: blobs
//! before `metadata.db`, `metadata.db` before `version.txt`, the remote
//! commit before the local one. ARCHITECTURE.md explains why each step is
//! where it is.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::api::{FileError, SyncError, SyncOptions, SyncSummary};
use crate::hlc::HlcClock;
use crate::lease::Lease;
use crate::local_state::{self, LocalState};
use crate::model::{BlobRef, LocalRow, RemoteRow, RowBase, SyncStatus, iso8601_utc};
use crate::plan::{Action, DecideContext, decide};
use crate::ports::{
    BlobError, DownloadJob, Io, LocalCommit, Phase, Precondition, ProgressEvent, RemoteError, RowWrite,
    UploadJob,
};
use crate::remote_db::RemoteDb;
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
        let remote_version = match session.read_version(io) {
            Err(SyncError::RemoteCorrupt(_)) => None,
            other => other?,
        };
        if unsynced == 0 && state.version.is_some() && remote_version == state.version {
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
    for attempt in 1..=attempts_max {
        if lease.is_none() {
            reporter.report(io, 5, Phase::Lock, "acquiring the sync lock");
            *lease = Some(Lease::acquire(session, io, opts, &state.instance)?);
        }
        let held = lease.as_mut().expect("lease acquired above");
        match attempt_once(io, opts, state, session, held, reporter) {
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
    pub(crate) db: RemoteDb,
    etag: Option<String>,
    pub(crate) is_new: bool,
    /// `version.txt` when the attempt started (the fencing token).
    pub(crate) version_txt: Option<i64>,
}

impl Fetched {
    /// The newest version anyone has published; our commit goes one past it so
    /// `version.txt` only ever grows.
    pub(crate) fn head(&self) -> i64 {
        self.db.version().max(self.version_txt.unwrap_or(0))
    }
}

pub(crate) fn fetch(
    io: &mut Io<'_>,
    opts: &SyncOptions,
    session: &mut Session,
) -> Result<Fetched, SyncError> {
    let version_txt = session.read_version(io)?;
    match session.call(io, |io| io.remote.get(METADATA_DB, opts.metadata_bytes_max)) {
        Ok(f) => {
            let db = RemoteDb::from_bytes(&f.bytes)
                .map_err(|e| SyncError::RemoteCorrupt(format!("metadata.db: {e}")))?;
            Ok(Fetched { db, etag: f.etag, is_new: false, version_txt })
        }
        Err(RemoteError::NotFound) => {
            let epoch = local_state::new_id(io, "e");
            let db = RemoteDb::create(&epoch).map_err(|e| SyncError::RemoteCorrupt(e.to_string()))?;
            Ok(Fetched { db, etag: None, is_new: true, version_txt })
        }
        Err(RemoteError::TooLarge { bytes_max }) => Err(SyncError::RemoteCorrupt(format!(
            "metadata.db is larger than the configured maximum of {bytes_max} bytes"
        ))),
        Err(e) => Err(e.into()),
    }
}

/// One decided file, with what the sync needs to carry it out.
struct Step {
    /// The local row as read; `None` also when it is the pushed row itself
    /// (see [`Step::local`]).
    local_row: Option<LocalRow>,
    /// The local row is the row of the `Push` (a plain push of the local
    /// state): kept once, not twice (100 MB at a first sync of 100,000 files).
    local_in_push: bool,
    remote: Option<RemoteRow>,
    action: Action,
    /// The remote row is this instance's own push whose sync did not finish
    /// (see [`own_push_to_verify`]): its blob is checked, and uploaded again
    /// if it is gone.
    verify_blob: bool,
}

impl Step {
    fn new(local: Option<LocalRow>, remote: Option<RemoteRow>, action: Action, verify_blob: bool) -> Step {
        let local_in_push = matches!((&action, &local), (Action::Push { row, .. }, Some(l)) if row == l);
        let local_row = if local_in_push { None } else { local };
        Step { local_row, local_in_push, remote, action, verify_blob }
    }

    /// The local row as the compare read it.
    fn local(&self) -> Option<&LocalRow> {
        match (&self.action, self.local_in_push) {
            (Action::Push { row, .. }, true) => Some(row),
            _ => self.local_row.as_ref(),
        }
    }
}

fn attempt_once(
    io: &mut Io<'_>,
    opts: &SyncOptions,
    state: &mut LocalState,
    session: &mut Session,
    lease: &mut Lease,
    reporter: &mut Reporter,
) -> Result<SyncSummary, Interrupted> {
    reporter.report(io, 10, Phase::Fetch, "downloading metadata.db");
    let mut fetched = fetch(io, opts, session)?;
    let void_base = state.epoch.as_deref() != Some(fetched.db.epoch());
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

    let mut transfer = Transfers::default();
    upload_blobs(io, session, lease, reporter, &mut steps, &mut transfer, &state.instance)?;
    download_blobs(io, opts, session, lease, reporter, &mut steps, &mut transfer)?;
    summary.uploaded = transfer.uploaded;
    summary.downloaded = transfer.downloaded;

    let now_iso = iso8601_utc(io.clock.now_ms());
    let pushes_any = steps.iter().any(|s| matches!(s.action, Action::Push { .. }));
    let needs_commit = pushes_any || fetched.is_new || fetched.version_txt != Some(fetched.db.version());
    // After a restore from an older copy, commit past every version this
    // instance has seen: a peer that recorded that number must not mistake
    // the new state for the one it already has.
    let known = if void_base { 0 } else { state.version.unwrap_or(0) };
    let needs_commit = needs_commit || fetched.head() < known;
    let final_version = if needs_commit {
        let new_version = fetched.head().max(known) + 1;
        record_own_pushes(io, &steps, &mut state.own_pushes)?;
        // Built one at a time as the merge writes them: a first sync pushes
        // every row, and a copy of them all is ~140 MB at 100,000 files.
        let pushes = steps.iter().filter_map(|s| remote_row_of(s, &now_iso, new_version));
        commit_remote(io, session, lease, reporter, &mut fetched, pushes, new_version, &now_iso)?;
        new_version
    } else {
        fetched.head()
    };
    drop(bases);

    reporter.report(io, 95, Phase::Apply, "updating the local database");
    // One transaction, sent in parts so that no call carries every row.
    io.local.commit_begin()?;
    let mut clock = state.seen.clone();
    for chunk in steps.chunks(LOCAL_COMMIT_CHUNK) {
        let writes = local_writes(chunk, final_version, &mut clock);
        if !writes.is_empty() {
            io.local.commit_writes(&writes)?;
        }
    }
    let mut meta = vec![
        (local_state::META_EPOCH.to_owned(), fetched.db.epoch().to_owned()),
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
    if transfer.errors.is_empty() {
        meta.push((local_state::META_VERSION.to_owned(), final_version.to_string()));
    }
    let outcome = io.local.commit_finish(&meta)?;
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
    let ids = candidates(state, &fetched.db, bases, ctx)?;
    let mut steps = Vec::new();
    // Rows are read in chunks: a first sync reads every row, and one call
    // carrying them all is another copy of them all (on the host side too).
    for chunk in ids.chunks(COMPARE_CHUNK) {
        let mut locals: HashMap<String, LocalRow> =
            io.local.rows(chunk)?.into_iter().map(|r| (r.stable_id.clone(), r)).collect();
        let mut remotes: HashMap<String, RemoteRow> =
            fetched.db.rows(chunk).map_err(corrupt)?.into_iter().map(|r| (r.stable_id.clone(), r)).collect();
        for id in chunk {
            let local = locals.remove(id);
            let remote = remotes.remove(id);
            if local.as_ref().is_some_and(|l| l.sync_status == SyncStatus::Conflict) {
                continue; // changed to a conflict since the bases were read
            }
            let action = decide(local.as_ref(), remote.as_ref(), ctx);
            if action != Action::Nothing {
                let verify_blob = own_push_to_verify(local.as_ref(), remote.as_ref(), &action, ctx);
                steps.push(Step::new(local, remote, action, verify_blob));
            }
        }
    }
    Ok(steps)
}

/// Rows read per `rows` call of the compare.
const COMPARE_CHUNK: usize = 1024;

/// The stable ids that need a decision, sorted and unique:
/// - pending rows, and every row when the base is void;
/// - rows whose remote version differs from their base (or the remote lacks);
/// - remote rows we do not have, newer than the version we last synced
///   (older ones were seen by an earlier sync: tombstones of files we never had).
fn candidates(
    state: &LocalState,
    db: &RemoteDb,
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
    let seen_up_to = if ctx.void_base { None } else { state.version };
    db.for_each_row_version(|id, rv| match find(id) {
        Ok(k) => remote_rv[order[k] as usize] = Some(rv),
        Err(_) if seen_up_to.is_none_or(|v| rv > v) => ids.push(id.to_owned()),
        Err(_) => {}
    })
    .map_err(corrupt)?;
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
        })
        .map_err(corrupt)?;
    }
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

fn corrupt(e: crate::remote_db::RemoteDbError) -> SyncError {
    SyncError::RemoteCorrupt(format!("metadata.db: {e}"))
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
    matches!(&step.action, Action::Pull(r) if r.deleted) && step.local().is_some_and(|l| !l.deleted)
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
    match &step.action {
        Action::Push { row, .. } if !row.deleted => Some(row.blob().map_err(|e| e.to_string())),
        Action::Pull(r) | Action::MarkSynced(r) if step.verify_blob => {
            Some(r.blob().map_err(|e| e.to_string()))
        }
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
    // Each distinct blob once, with the steps that need it.
    let mut needed: BTreeMap<BlobRef, Vec<usize>> = BTreeMap::new();
    for (i, step) in steps.iter().enumerate() {
        match blob_to_publish(step) {
            None => {}
            Some(Ok(blob)) => needed.entry(blob).or_default().push(i),
            Some(Err(why)) => {
                transfer.fail(&step_id(step), why);
                failed.insert(i);
            }
        }
    }
    if needed.is_empty() {
        drop_steps(steps, &failed);
        return Ok(());
    }
    reporter.report(io, 25, Phase::Upload, &format!("checking {} on the remote", files(needed.len())));
    let wanted: Vec<&BlobRef> = needed.keys().collect();
    let presence = remote_presence(io, session, lease, &wanted)?;

    let tmp = tmp_dir(instance);
    let mut jobs = Vec::new();
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
        let temp_path = format!("{tmp}/{}{}", blob.hash, blob.ext);
        jobs.push(UploadJob { blob: blob.clone(), temp_path, final_path: blob.path() });
    }
    if !jobs.is_empty() {
        let shards: BTreeSet<&str> = jobs.iter().map(|j| j.blob.shard()).collect();
        let folders = [TMP_ROOT, tmp.as_str()]
            .into_iter()
            .chain(shards.into_iter().filter(|s| !presence.folders.contains(*s)));
        for folder in folders {
            session.ensure_collection(io, folder)?;
        }
    }
    let total = jobs.len();
    let (mut batcher, mut rest, mut done) = (Batcher::new(lease), &jobs[..], 0);
    while !rest.is_empty() {
        let chunk = batcher.take(&mut rest);
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
    let row_blob = match &step.action {
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
    let mut needed: BTreeMap<BlobRef, Vec<usize>> = BTreeMap::new();
    for (i, step) in steps.iter().enumerate() {
        match blob_to_fetch(step) {
            None => {}
            Some(Ok(blob)) => needed.entry(blob).or_default().push(i),
            Some(Err(why)) => {
                transfer.fail(&step_id(step), why);
                failed.insert(i);
            }
        }
    }
    let mut jobs = Vec::new();
    for blob in needed.keys() {
        if !io.blobs.local_has(blob).map_err(|e| SyncError::Invalid(e.to_string()))? {
            jobs.push(DownloadJob { remote_path: blob.path(), blob: blob.clone() });
        }
    }
    let total = jobs.len();
    let (mut batcher, mut rest, mut done) = (Batcher::new(lease), &jobs[..], 0);
    while !rest.is_empty() {
        let chunk = batcher.take(&mut rest);
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
    step.local()
        .map(|l| l.stable_id.clone())
        .or_else(|| step.remote.as_ref().map(|r| r.stable_id.clone()))
        .unwrap_or_default()
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

/// The remote row a step publishes in the commit of `version`, if any.
fn remote_row_of(step: &Step, now_iso: &str, version: i64) -> Option<RemoteRow> {
    let Action::Push { row, stamp } = &step.action else { return None };
    Some(RemoteRow {
        stable_id: row.stable_id.clone(),
        id: row.id.clone(),
        meta: row.meta.clone(),
        deleted: row.deleted,
        remote_version: version,
        updated_at: now_iso.to_owned(),
        hlc: stamp.clone(),
    })
}

/// Remembers, before the remote commit, which local states this attempt
/// publishes under which stamps: if the commit lands and the local commit
/// does not, the next sync still knows which pending rows the app changed
/// after this push ([`local_state::OwnPushes`]). The records of earlier
/// attempts of the same sync are kept: their commit may have landed too.
fn record_own_pushes(
    io: &mut Io<'_>,
    steps: &[Step],
    pushes: &mut local_state::OwnPushes,
) -> Result<(), Interrupted> {
    let mut added = false;
    for step in steps {
        if let (Action::Push { stamp, .. }, Some(input)) = (&step.action, step.local()) {
            added |= pushes.insert(input, stamp);
        }
    }
    if !added {
        return Ok(());
    }
    let meta = vec![(local_state::META_PUSHED.to_owned(), pushes.encode())];
    io.local.apply(&LocalCommit { writes: Vec::new(), meta })?;
    Ok(())
}

/// Merge, upload `metadata.db`, then `version.txt` (SPEC §3 steps 7-8).
/// `pushes` are stamped `new_version`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn commit_remote<R: std::borrow::Borrow<RemoteRow>>(
    io: &mut Io<'_>,
    session: &mut Session,
    lease: &mut Lease,
    reporter: &mut Reporter,
    fetched: &mut Fetched,
    pushes: impl IntoIterator<Item = R>,
    new_version: i64,
    now_iso: &str,
) -> Result<(), Interrupted> {
    reporter.report(io, 90, Phase::Commit, &format!("committing version {new_version}"));
    fetched.db.commit(pushes, new_version, now_iso).map_err(corrupt)?;
    let (version_txt, is_new, etag) = (fetched.version_txt, fetched.is_new, fetched.etag.clone());
    // Lent by SQLite, not copied (75 MiB at 100,000 files).
    let bytes = fetched.db.bytes().map_err(corrupt)?;
    let bytes: &[u8] = &bytes;

    lease.confirm(session, io)?;
    fence(io, session, version_txt)?;
    let condition = match (etag, is_new) {
        (_, true) => Precondition::IfNoneMatchAny,
        (Some(etag), false) => Precondition::IfMatch(etag),
        (None, false) => Precondition::None,
    };
    match session.call(io, |io| io.remote.put(METADATA_DB, bytes, &condition)) {
        Ok(_) => {}
        // A new remote someone else created meanwhile: start over with theirs.
        Err(RemoteError::PreconditionFailed) if is_new => return Err(Interrupted::Fenced),
        // Either someone committed (version.txt moved: start over), or the
        // server refused an ETag it had just handed out (weak ETag right after a
        // write). Only the first is a rival commit.
        Err(RemoteError::PreconditionFailed) => {
            fence(io, session, version_txt)?;
            lease.confirm(session, io)?;
            session.call(io, |io| io.remote.put(METADATA_DB, bytes, &Precondition::None))?;
        }
        Err(e) => return Err(e.into()),
    }
    lease.confirm(session, io)?;
    // Fence again: a commit (a sync, or a gc's version bump) that landed
    // between the first fence and our `metadata.db` write was overwritten by
    // it on a server that ignores `If-Match`. Starting over takes the
    // own-push path, which checks our blobs and re-publishes what is behind.
    let version_condition = fence(io, session, version_txt)?;
    // `version.txt` too is replaced only if it is still the one the fence
    // read: a holder that stalls right here, past its lease, must not set the
    // counter back under a newer commit (where the server honours it).
    let text = format!("{new_version}\n");
    match session.call(io, |io| io.remote.put(VERSION_TXT, text.as_bytes(), &version_condition)) {
        Ok(_) => {}
        Err(RemoteError::PreconditionFailed) => {
            // A rival commit moved it (start over), or a lost response's
            // retry met our own write, or a weak ETag was refused.
            fence(io, session, version_txt)?;
            lease.confirm(session, io)?;
            session.call(io, |io| io.remote.put(VERSION_TXT, text.as_bytes(), &Precondition::None))?;
        }
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

/// Fencing: `version.txt` must still be what this attempt started from.
/// Returns the precondition that replaces exactly that `version.txt`.
fn fence(
    io: &mut Io<'_>,
    session: &mut Session,
    version_txt: Option<i64>,
) -> Result<Precondition, Interrupted> {
    let now = session.read_version_tagged(io)?;
    if now.as_ref().map(|(v, _)| *v) != version_txt {
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
fn local_writes(steps: &[Step], version: i64, clock: &mut HlcClock) -> Vec<RowWrite> {
    let mut writes = Vec::with_capacity(steps.len());
    for step in steps {
        if let Some(r) = &step.remote {
            clock.observe(&r.hlc);
        }
        let row = match &step.action {
            Action::Nothing => continue,
            Action::Push { row, stamp } => {
                clock.observe(stamp);
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
            Action::Pull(r) | Action::MarkSynced(r) => from_remote(step.local(), r),
            Action::Conflict(record) => LocalRow {
                sync_status: SyncStatus::Conflict,
                conflict: Some(record.clone()),
                ..step.local().cloned().expect("conflicts have a local row")
            },
            Action::ForgetBase => LocalRow {
                remote_version: None,
                sync_hash: None,
                sync_meta: None,
                hlc: None,
                ..step.local().cloned().expect("only local rows forget a base")
            },
        };
        writes.push(RowWrite { row, expected: step.local().cloned() });
    }
    writes
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
        let id = step_id(step);
        let applied = !skipped.contains(id.as_str());
        match &step.action {
            Action::Push { row, .. } if row.deleted => summary.deleted_remote += 1,
            Action::Push { row, .. } => {
                let same_content = step.remote.as_ref().is_some_and(|r| r.id == row.id && !r.deleted);
                if same_content {
                    summary.metadata_synced += 1;
                }
            }
            Action::Pull(r) if r.deleted => {
                summary.deleted_local += u32::from(applied && step.local().is_some_and(|l| !l.deleted));
            }
            Action::Pull(r) => {
                summary.metadata_synced += u32::from(applied && step.local().is_some_and(|l| l.id == r.id));
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
    for step in steps {
        let (Action::Pull(r), Some(local)) = (&step.action, step.local()) else { continue };
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
