//! davsync at scale (issue 7): is the no-change check really O(1), what does
//! a one-edit sync cost at 100,000 files, and what does the component cost
//! compared with the native core. Issue 17 (remote format 2): how many bytes
//! a one-edit sync moves on the wire, a folding edit beside a normal one, and
//! a new instance's first sync from the checkpoint.
//!
//! ```text
//! cargo bench -p davsync --bench scale -- [--sizes 1000,10000,100000] [--runs 3] [--status-calls 30]
//!     [--only status,baseline,edit,join,fold,bulk,startup] [--first-sync-again]
//! ```
//!
//! `--only` measures only the named parts (default: all). `--first-sync-again`
//! also repeats each size's first sync (both engines, child processes under
//! `/usr/bin/time`) from a copy of the fixture's app database reset to "never
//! synced", to a fresh folder remote on tmpfs, for the current build's peak
//! RSS (the fixture's own first sync was measured with the build that made it).
//!
//! Fixtures: for each size, an app database and data folder (half PDFs, half
//! TEI XML files of 0.3-1.5 KiB, SPEC metadata with realistic JSON, five
//! collections), synced once to a folder remote (that first sync, run as a
//! child `davsync sync` under `/usr/bin/time`, gives the first-sync time and
//! peak RSS). That folder is then the remote of every measurement, served by
//! wsgidav or used directly as a folder remote: its layout is the WebDAV
//! layout. Fixtures are cached under
//! `target/davsync-scale/v{FORMAT}-{size}/` (or `$DAVSYNC_SCALE_DIR`); each
//! measured sync leaves them synced, so later runs reuse them.
//!
//! Each run measures, per size (medians over runs in the table):
//! - `status`: the no-change status check (`Syncer::status`, component), K calls;
//! - `baseline`: an O(n) scan baseline, implemented here only: `PROPFIND
//!   Depth: 1` of the root and of every shard folder, plus a walk of the local
//!   data folder, comparing names and sizes with the remote and mtimes with the
//!   previous scan, no hashing;
//! - `edit`: a sync of one metadata edit, with its phases (from progress
//!   events and a timing wrapper around the remote port). Never the commit
//!   that folds the history into `metadata.db`: when the next commit would
//!   fold, an unmeasured commit (native core, folder remote) folds first;
//! - `join`: a second instance's first sync: a copy of the app database
//!   reset to "never synced" (a new instance id, no bases, no epoch) with the
//!   same files, so it reads `metadata.db` and the change files after it,
//!   compares every row and records every base, but transfers no blob; then
//!   that instance commits [`TAIL_COMMITS`] label edits and the first
//!   instance syncs one edit of its own, reading their change files;
//! - `fold`: unmeasured commits until the next one folds, then a one-edit
//!   sync that folds (reads the whole state, writes `metadata.db`);
//! - `bulk` (sizes up to 10,000): a sync after the app changed the
//!   collections of every file, through the native core and the component.
//!
//! The syncs through wsgidav in `edit`, `join` and `fold` go through a
//! loopback relay in this process that counts the bytes each way (HTTP
//! headers and bodies: what crosses the wire); the remote port wrapper also
//! counts the bodies of GET and PUT.
//!
//! And once: host process start to first engine call (child `davsync
//! status` with `RUST_LOG=davsync::startup=debug`, cached compiled component):
//! median and quartiles of the CPU time, wall time and page faults the child
//! logs.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail, ensure};
use davsync::engine::{EngineKind, Syncer};
use davsync::folder::FolderRemote;
use davsync::local_sqlite::SqliteStore;
use davsync::setup::{RemoteSpec, Setup};
use davsync::webdav::{WebDav, WebDavConfig};
use davsync_core::history::Head;
use davsync_core::model::iso8601_utc;
use davsync_core::ports::{
    Fetched, Phase, Precondition, Progress, ProgressEvent, RemoteEntry, RemoteError, RemoteStat,
    RemoteTransport,
};
use davsync_core::{SyncOptions, SyncSummary};
use sha2::{Digest, Sha256};

#[path = "../../tests/all/servers.rs"]
#[allow(unused_imports)]
mod servers;

use servers::{DavServer, ServerKind};

/// Bump when the generated fixture changes, so stale caches are not reused
/// (2: its remote is in remote format 2, issue 17).
const FORMAT_VERSION: u32 = 2;
/// Commits another instance makes before the first one's `join` edit.
const TAIL_COMMITS: usize = 8;
/// Sizes up to this get the bulk-edit sync (native vs component).
const BULK_SIZE_MAX: usize = 10_000;
/// Child runs of `davsync status` for the startup figure: enough for its
/// quartiles to hold still on a shared machine.
const STARTUP_RUNS: usize = 60;

const COLLECTIONS: [&str; 5] = ["corpus-a", "corpus-b", "training-2024", "gold", "reviewed"];

fn main() -> Result<()> {
    let opts = Options::parse()?;
    let root = std::env::var_os("DAVSYNC_SCALE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/davsync-scale"));
    eprintln!("load before: {}", loadavg());
    let mut results = Vec::new();
    for &size in &opts.sizes {
        let fixture = Fixture::ensure(&root, size)?;
        let mut r = measure_size(&fixture, &opts)?;
        if opts.first_sync_again {
            for engine in ["native", "component"] {
                let again = fixture.first_sync_again(engine)?;
                eprintln!("  first sync again, {engine}: {:.1} s, {} KiB", again.seconds, again.max_rss_kib);
                r.again.push((engine, again));
            }
        }
        results.push(r);
    }
    let startup = if opts.wants("startup") {
        measure_startup(&Fixture::ensure(&root, opts.sizes[0])?)?
    } else {
        Startup::default()
    };
    eprintln!("load after: {}", loadavg());
    print_table(&opts, &results, &startup);
    let _ = std::fs::remove_dir_all(root.join("trash"));
    Ok(())
}

struct Options {
    sizes: Vec<usize>,
    runs: usize,
    status_calls: usize,
    /// The parts to measure; empty: all.
    only: Vec<String>,
    first_sync_again: bool,
}

impl Options {
    fn parse() -> Result<Options> {
        let mut o = Options {
            sizes: vec![1_000, 10_000, 100_000],
            runs: 3,
            status_calls: 30,
            only: Vec::new(),
            first_sync_again: false,
        };
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            let mut value = || args.next().with_context(|| format!("{a} needs a value"));
            match a.as_str() {
                "--sizes" => {
                    o.sizes = value()?.split(',').map(str::parse).collect::<Result<_, _>>()?;
                }
                "--runs" => o.runs = value()?.parse()?,
                "--status-calls" => o.status_calls = value()?.parse()?,
                "--only" => o.only = value()?.split(',').map(str::to_owned).collect(),
                "--first-sync-again" => o.first_sync_again = true,
                "--bench" => {} // cargo bench passes it
                other => bail!("unknown argument {other:?}"),
            }
        }
        ensure!(!o.sizes.is_empty() && o.runs > 0 && o.status_calls > 0, "nothing to measure");
        Ok(o)
    }

    fn wants(&self, part: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|p| p == part)
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim().to_owned()
}

fn median(v: &[f64]) -> f64 {
    quantile(v, 0.5)
}

/// The value at fraction `q` (0 to 1) of the sorted values (nearest rank).
fn quantile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// "median (p25-p75)", each value divided by `scale` and printed with
/// `decimals` decimals.
fn median_iqr(v: &[f64], scale: f64, decimals: usize) -> String {
    let [lo, mid, hi] = [0.25, 0.5, 0.75].map(|q| quantile(v, q) / scale);
    format!("{mid:.decimals$} (IQR {lo:.decimals$}-{hi:.decimals$})")
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

// ---------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------

/// One cached fixture: an instance's data folder and the remote it synced to.
struct Fixture {
    size: usize,
    dir: PathBuf,
    first_sync: FirstSync,
}

/// The first sync that built the fixture (child `davsync sync`).
#[derive(serde::Serialize, serde::Deserialize)]
struct FirstSync {
    seconds: f64,
    max_rss_kib: u64,
    uploaded: u32,
    when: String,
}

impl Fixture {
    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn db(&self) -> PathBuf {
        self.data().join("app.db")
    }

    fn remote(&self) -> PathBuf {
        self.dir.join("remote")
    }

    /// The instance that made the fixture.
    fn instance(&self) -> Instance {
        Instance { db: self.db(), data: self.data() }
    }

    /// The remote's `version.txt`.
    fn head(&self) -> Result<Head> {
        let bytes = std::fs::read(self.remote().join("version.txt"))?;
        Head::parse(&bytes).map_err(|e| anyhow::anyhow!("version.txt: {e:?}"))
    }

    /// Would the remote's next commit fold the history into `metadata.db`?
    fn next_commit_folds(&self) -> Result<bool> {
        let head = self.head()?;
        Ok(Head { version: head.version + 1, ..head }.fold_due(davsync_core::history::FOLD_COMMITS))
    }

    /// A second instance with the same files: a copy of the app database
    /// reset to "never synced" (a new instance id, no bases, no epoch),
    /// sharing the data folder. Lives as long as the returned folder.
    fn new_instance(&self) -> Result<(tempfile::TempDir, Instance)> {
        let scratch = tempfile::Builder::new().prefix("instance-").tempdir_in(&self.dir)?;
        let db = scratch.path().join("app.db");
        reset_copy(&self.db(), &db)?;
        Ok((scratch, Instance { db, data: self.data() }))
    }

    fn ensure(root: &Path, size: usize) -> Result<Fixture> {
        let dir = root.join(format!("v{FORMAT_VERSION}-{size}"));
        let ready = dir.join("first-sync.json");
        if let Ok(text) = std::fs::read_to_string(&ready) {
            let first_sync = serde_json::from_str(&text).context("reading the fixture's first-sync.json")?;
            return Ok(Fixture { size, dir, first_sync });
        }
        if dir.exists() {
            // Deleting 100k files is slow (minutes on a disk mounted with
            // `discard`): move them aside now, delete them at the end.
            let trash = root.join("trash");
            std::fs::create_dir_all(&trash)?;
            let aside = tempfile::Builder::new().prefix("stale-").tempdir_in(&trash)?.keep();
            std::fs::rename(&dir, aside.join("fixture"))?;
        }
        std::fs::create_dir_all(dir.join("remote"))?;
        let mut fixture = Fixture {
            size,
            dir,
            first_sync: FirstSync { seconds: 0.0, max_rss_kib: 0, uploaded: 0, when: String::new() },
        };
        eprintln!("fixture {size}: generating files and app database");
        generate(&fixture.data(), &fixture.db(), size)?;
        eprintln!("fixture {size}: first sync (a child davsync, timed)");
        fixture.first_sync = fixture.first_sync()?;
        std::fs::write(&ready, serde_json::to_vec_pretty(&fixture.first_sync)?)?;
        Ok(fixture)
    }

    /// The first sync, as a child `davsync sync` under `/usr/bin/time`, to a
    /// folder remote staged on tmpfs (`/dev/shm`, when there is one), then
    /// copied into the fixture. The staging only spares the 4 fsyncs per blob
    /// of the folder remote (9 ms each on the development machine, 100k files
    /// would take an hour); the layout is the same as a WebDAV server's.
    fn first_sync(&self) -> Result<FirstSync> {
        let (stage, first) = self.first_sync_child(&self.db(), "component")?;
        let staged = stage.path().join("remote");
        std::fs::remove_dir(self.remote())?;
        let copied = Command::new("cp").arg("-a").arg(&staged).arg(self.remote()).status()?;
        ensure!(copied.success(), "copying the staged remote failed");
        Ok(first)
    }

    /// A first sync again: a copy of the (synced) app database with every
    /// row reset to "never synced", to a fresh remote on tmpfs.
    fn first_sync_again(&self, engine: &str) -> Result<FirstSync> {
        let scratch = tempfile::Builder::new().prefix("again-").tempdir_in(&self.dir)?;
        let db = scratch.path().join("app.db");
        reset_copy(&self.db(), &db)?;
        let (_stage, first) = self.first_sync_child(&db, engine)?;
        Ok(first)
    }

    /// A child `davsync sync` of `db` (with the fixture's data folder) under
    /// `/usr/bin/time` to a new folder remote in a temporary folder (on
    /// tmpfs when there is one), which is returned.
    fn first_sync_child(&self, db: &Path, engine: &str) -> Result<(tempfile::TempDir, FirstSync)> {
        let shm = Path::new("/dev/shm");
        let stage = if shm.is_dir() {
            tempfile::Builder::new().prefix("davsync-scale-").tempdir_in(shm)?
        } else {
            tempfile::Builder::new().prefix("first-sync-").tempdir_in(&self.dir)?
        };
        let staged = stage.path().join("remote");
        let rss_file = self.dir.join("first-sync.time");
        let started = Instant::now();
        let out = Command::new("/usr/bin/time")
            .args(["-f", "%M"])
            .arg("-o")
            .arg(&rss_file)
            .arg(env!("CARGO_BIN_EXE_davsync"))
            .arg("--data")
            .arg(self.data())
            .arg("--db")
            .arg(db)
            .arg("--remote")
            .arg(&staged)
            .args(["--engine", engine, "--json", "sync"])
            .output()
            .context("running /usr/bin/time davsync sync")?;
        let seconds = started.elapsed().as_secs_f64();
        if !out.status.success() {
            bail!("first sync failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let summary: SyncSummary = serde_json::from_slice(&out.stdout).context("the sync summary")?;
        ensure!(summary.uploaded as usize == self.size && summary.errors == 0, "first sync: {summary:?}");
        let rss = std::fs::read_to_string(&rss_file)?;
        let max_rss_kib = rss.lines().last().unwrap_or_default().trim().parse().context("time's %M")?;
        let first =
            FirstSync { seconds, max_rss_kib, uploaded: summary.uploaded, when: iso8601_utc(now_ms()) };
        Ok((stage, first))
    }
}

/// Copies the app database `from` to `to` with every row reset to "never
/// synced" and no sync metadata (so also a new instance id).
fn reset_copy(from: &Path, to: &Path) -> Result<()> {
    let src = rusqlite::Connection::open(from)?;
    src.execute("VACUUM INTO ?1", [to.to_string_lossy()])?;
    drop(src);
    let conn = rusqlite::Connection::open(to)?;
    conn.execute_batch(
        "UPDATE files SET sync_status = 'modified', remote_version = NULL, sync_hash = NULL;
         DELETE FROM davsync_file_state; DELETE FROM sync_metadata;",
    )?;
    Ok(())
}

/// An app instance: its database and data folder.
struct Instance {
    db: PathBuf,
    data: PathBuf,
}

fn now_ms() -> i64 {
    let d = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A deterministic pseudo-random stream (splitmix64).
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[(self.next() % from.len() as u64) as usize]
    }
}

fn stable_id_of(i: usize) -> String {
    const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut m = Mix(i as u64 ^ 0x5ca1e);
    (0..12).map(|_| char::from(ALPHABET[(m.next() % 36) as usize])).collect()
}

/// One generated file: its bytes and the `files` row the app would write.
struct GeneratedFile {
    bytes: Vec<u8>,
    values: Vec<rusqlite::types::Value>,
    rel_path: String,
}

/// File `i`: documents come in pairs, a PDF and its TEI transcription.
fn generated_file(i: usize, now_iso: &str) -> GeneratedFile {
    use rusqlite::types::Value::{Integer, Null, Text};
    let mut m = Mix(i as u64);
    let doc = i / 2;
    let tei = i % 2 == 1;
    let len = 300 + (m.next() % 1200) as usize;
    let mut bytes = if tei {
        format!("<TEI xmlns=\"http://www.tei-c.org/ns/1.0\"><!-- doc {doc} -->").into_bytes()
    } else {
        format!("%PDF-1.7\n% doc {doc}\n").into_bytes()
    };
    while bytes.len() < len {
        bytes.extend_from_slice(&m.next().to_le_bytes());
    }
    let hash: String = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
    let (file_type, ext, mime) =
        if tei { ("tei", ".tei.xml", "application/tei+xml") } else { ("pdf", ".pdf", "application/pdf") };
    let surnames = ["Müller", "Smith", "Garcia", "Nakamura", "Okafor", "Dubois", "Rossi", "Kowalski"];
    let authors: Vec<String> = (0..1 + m.next() % 4)
        .map(|k| format!(r#"{{"given":"A{k}.","family":"{}"}}"#, m.pick(&surnames)))
        .collect();
    let journal = m.pick(&["Journal of Legal History", "Zeitschrift für Rechtsgeschichte", "Law & Society"]);
    let doc_metadata = format!(
        r#"{{"title":"On the history of document {doc}: sources, editions and commentary","authors":[{}],"date":"{}","journal":"{journal}","volume":"{}","pages":"{}-{}","publisher":"Bench Press","language":"{}"}}"#,
        authors.join(","),
        1950 + doc % 70,
        1 + doc % 40,
        doc % 300,
        doc % 300 + 20,
        m.pick(&["de", "en", "fr", "it"]),
    );
    let file_metadata = if tei {
        format!(
            r#"{{"extractor":"grobid","extractor_version":"0.8.1","pages":{},"status":"{}"}}"#,
            4 + m.next() % 60,
            m.pick(&["draft", "checked", "final"])
        )
    } else {
        format!(r#"{{"pages":{},"source":"upload"}}"#, 4 + m.next() % 60)
    };
    let mut collections = vec![COLLECTIONS[doc % 3]];
    if doc.is_multiple_of(7) {
        collections.push(COLLECTIONS[3 + doc % 2]);
    }
    let doc_collections = serde_json::to_string(&collections).expect("strings serialize");
    let values = vec![
        Text(stable_id_of(i)),
        Text(hash.clone()),
        Text(format!("doc-{doc:06}{ext}")),
        Text(format!("10.5555/bench.{doc}")),
        Text("doi".into()),
        Text(file_type.into()),
        Text(mime.into()),
        Integer(bytes.len() as i64),
        Text(m.pick(&["original", "transcription", "annotated"]).into()),
        if tei { Text("grobid-0.8.1".into()) } else { Null },
        Integer(1),
        Integer(i64::from(i.is_multiple_of(50))),
        Integer(0),
        Text(now_iso.into()),
        Text("modified".into()),
        Text(now_iso.into()),
        Text(now_iso.into()),
        Text(doc_collections),
        Text(doc_metadata),
        Text(file_metadata),
    ];
    GeneratedFile { rel_path: format!("{}/{hash}{ext}", &hash[..2]), bytes, values }
}

/// Writes `size` files into `data/files/` and their rows into the app
/// database, in one transaction, as the app's import would (bench data: no
/// fsync).
fn generate(data: &Path, db: &Path, size: usize) -> Result<()> {
    drop(SqliteStore::open(db, data)?); // the app's schema
    let mut conn = rusqlite::Connection::open(db)?;
    let tx = conn.transaction()?;
    {
        let mut insert = tx.prepare(
            "INSERT INTO files (stable_id, id, filename, doc_id, doc_id_type, file_type, mime_type,
             file_size, label, variant, version, is_gold_standard, deleted, local_modified_at,
             sync_status, created_at, updated_at, doc_collections, doc_metadata, file_metadata)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)",
        )?;
        let now_iso = iso8601_utc(now_ms());
        for i in 0..size {
            let f = generated_file(i, &now_iso);
            let path = data.join("files").join(&f.rel_path);
            std::fs::create_dir_all(path.parent().expect("a shard folder"))?;
            std::fs::write(&path, &f.bytes)?;
            insert.execute(rusqlite::params_from_iter(f.values))?;
        }
    }
    tx.commit()?;
    Ok(())
}

// ---------------------------------------------------------------------------
// Instrumented ports
// ---------------------------------------------------------------------------

/// What happened during one engine call, with times.
#[derive(Clone, Default)]
struct Trace(Arc<Mutex<Vec<Event>>>);

#[derive(Clone, Debug)]
enum Event {
    Progress {
        at: Stamp,
        phase: Phase,
        percent: u8,
    },
    /// A remote call, with the body bytes it sent (`up`: a PUT's) and
    /// received (`down`: a GET's).
    Remote {
        start: Stamp,
        end: Stamp,
        op: &'static str,
        path: String,
        up: u64,
        down: u64,
    },
}

/// A moment: wall clock, and the CPU time of the thread the sync runs on
/// (load-insensitive: the machine is shared, wall times are inflated).
#[derive(Clone, Copy, Debug)]
struct Stamp {
    wall: Instant,
    cpu_ms: f64,
}

impl Stamp {
    fn now() -> Stamp {
        Stamp { wall: Instant::now(), cpu_ms: thread_cpu_ms() }
    }
}

/// CPU time of the calling thread (`/proc/thread-self/schedstat`, ns).
fn thread_cpu_ms() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|n| n.parse::<f64>().ok()))
        .map_or(f64::NAN, |ns| ns / 1e6)
}

/// CPU time (user + system) of process `pid` so far, ms (10 ms resolution).
fn process_cpu_ms(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses): utime is the
    // 12th, stime the 13th of those.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest.split_whitespace().map(|x| x.parse().unwrap_or(f64::NAN)).collect();
    if f.len() < 13 { f64::NAN } else { (f[11] + f[12]) * 10.0 }
}

impl Trace {
    fn push(&self, e: Event) {
        self.0.lock().expect("trace lock").push(e);
    }

    fn take(&self) -> Vec<Event> {
        std::mem::take(&mut *self.0.lock().expect("trace lock"))
    }
}

impl Progress for Trace {
    fn report(&mut self, event: ProgressEvent) {
        self.push(Event::Progress { at: Stamp::now(), phase: event.phase, percent: event.percent });
    }
}

/// A remote port that records the time (and the GET and PUT body bytes) of
/// every call.
struct Timed<R> {
    inner: R,
    trace: Trace,
}

impl<R> Timed<R> {
    fn run<T>(&mut self, op: &'static str, path: &str, f: impl FnOnce(&mut R) -> T) -> T {
        self.run_counted(op, path, 0, f, |_| 0)
    }

    fn run_counted<T>(
        &mut self,
        op: &'static str,
        path: &str,
        up: u64,
        f: impl FnOnce(&mut R) -> T,
        down: impl FnOnce(&T) -> u64,
    ) -> T {
        let start = Stamp::now();
        let out = f(&mut self.inner);
        let end = Stamp::now();
        let down = down(&out);
        self.trace.push(Event::Remote { start, end, op, path: path.to_owned(), up, down });
        out
    }
}

impl RemoteTransport for Timed<Box<dyn RemoteTransport>> {
    fn get(&mut self, path: &str, bytes_max: u64) -> Result<Fetched, RemoteError> {
        let body = |out: &Result<Fetched, RemoteError>| out.as_ref().map_or(0, |f| f.bytes.len() as u64);
        self.run_counted("GET", path, 0, |r| r.get(path, bytes_max), body)
    }

    fn put(&mut self, path: &str, bytes: &[u8], c: &Precondition) -> Result<Option<String>, RemoteError> {
        self.run_counted("PUT", path, bytes.len() as u64, |r| r.put(path, bytes, c), |_| 0)
    }

    fn delete(&mut self, path: &str) -> Result<(), RemoteError> {
        self.run("DELETE", path, |r| r.delete(path))
    }

    fn mkcol(&mut self, path: &str) -> Result<(), RemoteError> {
        self.run("MKCOL", path, |r| r.mkcol(path))
    }

    fn move_to(&mut self, from: &str, to: &str, overwrite: bool) -> Result<(), RemoteError> {
        self.run("MOVE", from, |r| r.move_to(from, to, overwrite))
    }

    fn stat(&mut self, path: &str) -> Result<Option<RemoteStat>, RemoteError> {
        self.run("STAT", path, |r| r.stat(path))
    }

    fn list(&mut self, path: &str) -> Result<Option<Vec<RemoteEntry>>, RemoteError> {
        self.run("LIST", path, |r| r.list(path))
    }

    fn server_time_ms(&mut self) -> Option<i64> {
        self.inner.server_time_ms()
    }
}

/// A TCP relay on 127.0.0.1 in front of a server, counting the bytes that
/// cross it each way: HTTP headers and bodies, what a network would carry.
#[derive(Clone)]
struct Relay {
    url: String,
    /// Client to server, server to client.
    bytes: [Arc<AtomicU64>; 2],
}

impl Relay {
    /// Starts relaying to `to` (`host:port`); runs until the process ends.
    fn start(to: &str) -> Result<Relay> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let url = format!("http://{}/", listener.local_addr()?);
        let bytes = [Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0))];
        let (to, counters) = (to.to_owned(), bytes.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(&to) else { continue };
                let _ = (client.set_nodelay(true), server.set_nodelay(true));
                let pipes = [
                    (client.try_clone(), server.try_clone(), 0),
                    (server.try_clone(), client.try_clone(), 1),
                ];
                for (from, into, way) in pipes {
                    let (Ok(from), Ok(into)) = (from, into) else { continue };
                    let counter = counters[way].clone();
                    std::thread::spawn(move || pump(from, into, &counter));
                }
            }
        });
        Ok(Relay { url, bytes })
    }

    /// Bytes relayed so far: (client to server, server to client).
    fn counts(&self) -> (u64, u64) {
        (self.bytes[0].load(Ordering::Relaxed), self.bytes[1].load(Ordering::Relaxed))
    }
}

/// Copies `from` into `into`, counting, until `from` ends; then ends `into`.
fn pump(mut from: TcpStream, mut into: TcpStream, counter: &AtomicU64) {
    let mut buf = vec![0u8; 64 << 10];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 {
            break;
        }
        // Counted before the peer can see the bytes, so a sync that has
        // returned has been counted in full.
        counter.fetch_add(n as u64, Ordering::Relaxed);
        if into.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = into.shutdown(Shutdown::Write);
}

/// Which remote a measurement goes through (all serve the same folder).
#[derive(Clone)]
enum Remote {
    Dav(String),
    /// wsgidav through a [`Relay`].
    Relayed(Relay),
    Folder(PathBuf),
}

impl Remote {
    fn name(&self) -> &'static str {
        match self {
            Remote::Dav(_) | Remote::Relayed(_) => "wsgidav",
            Remote::Folder(_) => "folder",
        }
    }

    /// Bytes relayed so far each way (none unless relayed).
    fn wire(&self) -> Option<(u64, u64)> {
        match self {
            Remote::Relayed(relay) => Some(relay.counts()),
            _ => None,
        }
    }
}

/// The host's real adapters (as `Setup::syncer` wires them), with the remote
/// port timed and progress recorded into `trace`.
fn syncer(inst: &Instance, remote: &Remote, engine: EngineKind, trace: &Trace) -> Result<Syncer> {
    let remote = match remote {
        Remote::Dav(url) => RemoteSpec::WebDav(WebDavConfig::new(url)?),
        Remote::Relayed(relay) => RemoteSpec::WebDav(WebDavConfig::new(&relay.url)?),
        Remote::Folder(dir) => RemoteSpec::Folder(dir.clone()),
    };
    let (data, db) = (inst.data.clone(), inst.db.clone());
    let setup = Setup { data, db, remote, engine, lease_ttl_ms: None, lock_wait_ms: None };
    let mut ports = setup.ports(Box::new(trace.clone()))?;
    ports.remote = Box::new(Timed { inner: ports.remote, trace: trace.clone() });
    Syncer::new(engine, ports, davsync::component::default_cache_dir().as_deref())
}

// ---------------------------------------------------------------------------
// Measurements
// ---------------------------------------------------------------------------

/// Medians-to-be of one size: every figure's samples.
#[derive(Default)]
struct SizeResult {
    size: usize,
    metadata_db_bytes: u64,
    first_sync_s: f64,
    first_sync_rss_kib: u64,
    /// `{remote}` → per-call status times, ms.
    status_ms: HashMap<&'static str, Vec<f64>>,
    /// `{remote}` → baseline scan times, ms.
    baseline_ms: HashMap<&'static str, Vec<f64>>,
    /// A case (`"{remote} {engine}"`, [`AFTER_OTHERS`], [`FOLDING`],
    /// [`JOIN`]) → its measured syncs.
    edit: HashMap<String, Vec<Breakdown>>,
    /// The same syncs in CPU time.
    edit_cpu: HashMap<String, Vec<Breakdown>>,
    /// Commits after the checkpoint when each `join` sync ran.
    join_tail_commits: Vec<f64>,
    bulk_native_ms: Vec<f64>,
    bulk_component_ms: Vec<f64>,
    /// `--first-sync-again`: (engine, the repeated first sync).
    again: Vec<(&'static str, FirstSync)>,
}

fn measure_size(f: &Fixture, opts: &Options) -> Result<SizeResult> {
    let server = DavServer::start_serving(ServerKind::Wsgidav, false, Some(&f.remote()))?;
    let remotes = [Remote::Dav(server.url.clone()), Remote::Folder(f.remote())];
    let host_port = server.url.trim_start_matches("http://").trim_end_matches('/');
    let relayed = Remote::Relayed(Relay::start(host_port)?);
    let mut r = SizeResult {
        size: f.size,
        first_sync_s: f.first_sync.seconds,
        first_sync_rss_kib: f.first_sync.max_rss_kib,
        ..SizeResult::default()
    };
    let mut snapshots: HashMap<&'static str, Snapshot> = HashMap::new();
    let mut fillers = 0;
    let me = f.instance();
    for run in 0..opts.runs {
        eprintln!("size {}: run {} of {} (load {})", f.size, run + 1, opts.runs, loadavg());
        for remote in &remotes {
            if opts.wants("status") {
                let samples = status_times(f, remote, opts.status_calls)?;
                r.status_ms.entry(remote.name()).or_default().extend(samples);
            }
            if opts.wants("baseline") {
                let snapshot = snapshots.entry(remote.name()).or_default();
                let took = baseline_scan(f, remote, snapshot)?;
                r.baseline_ms.entry(remote.name()).or_default().push(took);
            }
        }
        let edits = if opts.wants("edit") { &EDIT_CASES[..] } else { &[][..] };
        for &(remote, engine) in edits {
            let remote = if remote == 0 { &relayed } else { &remotes[1] };
            let pid = matches!(remote, Remote::Relayed(_)).then(|| server.pid());
            let key = format!("{} {}", remote.name(), engine_name(engine));
            no_fold_next(f, &me, &mut fillers)?;
            r.record(&key, one_edit_sync(f, &me, remote, engine, run, pid, &key, 0)?);
        }
        if opts.wants("join") {
            let head = f.head()?;
            r.join_tail_commits.push((head.version - head.checkpoint) as f64);
            let (_scratch, other) = f.new_instance()?;
            let (summary, b, cpu) =
                measured_sync(&other, &relayed, EngineKind::Component, Some(server.pid()), JOIN)?;
            let moved = summary.uploaded + summary.downloaded + summary.metadata_synced;
            ensure!(moved == 0 && summary.errors == 0 && summary.conflicts == 0, "join: {summary:?}");
            r.record(JOIN, (b, cpu));
            for _ in 0..TAIL_COMMITS {
                filler_commit(f, &other, fillers)?;
                fillers += 1;
            }
            no_fold_next(f, &other, &mut fillers)?;
            let pid = Some(server.pid());
            let edit = one_edit_sync(
                f,
                &me,
                &relayed,
                EngineKind::Component,
                run,
                pid,
                AFTER_OTHERS,
                TAIL_COMMITS as u32,
            )?;
            r.record(AFTER_OTHERS, edit);
        }
        if opts.wants("fold") {
            while !f.next_commit_folds()? {
                filler_commit(f, &me, fillers)?;
                fillers += 1;
            }
            let pid = Some(server.pid());
            let (b, cpu) = one_edit_sync(f, &me, &relayed, EngineKind::Component, run, pid, FOLDING, 0)?;
            ensure!(b.checkpoint_written == 1.0, "the folding edit did not write metadata.db: {b:?}");
            r.record(FOLDING, (b, cpu));
        }
        if f.size <= BULK_SIZE_MAX && opts.wants("bulk") {
            // Alternate the order, so neither engine always goes first.
            let order = if run % 2 == 0 {
                [EngineKind::Native, EngineKind::Component]
            } else {
                [EngineKind::Component, EngineKind::Native]
            };
            for engine in order {
                let took = bulk_edit_sync(f, &remotes[1], engine, run)?;
                match engine {
                    EngineKind::Native => r.bulk_native_ms.push(took),
                    EngineKind::Component => r.bulk_component_ms.push(took),
                }
            }
        }
    }
    eprintln!("size {}: {fillers} unmeasured commits", f.size);
    r.metadata_db_bytes = std::fs::metadata(f.remote().join("metadata.db"))?.len();
    Ok(r)
}

impl SizeResult {
    fn record(&mut self, case: &str, (b, cpu): (Breakdown, Breakdown)) {
        self.edit.entry(case.to_owned()).or_default().push(b);
        self.edit_cpu.entry(case.to_owned()).or_default().push(cpu);
    }
}

/// A measured normal edit never folds: when the next commit would, `who`
/// makes it first (an unmeasured commit, counted in `fillers`).
fn no_fold_next(f: &Fixture, who: &Instance, fillers: &mut usize) -> Result<()> {
    if f.next_commit_folds()? {
        filler_commit(f, who, *fillers)?;
        *fillers += 1;
    }
    Ok(())
}

/// The one-edit syncs of each run: (0: wsgidav through the relay, 1: the
/// folder remote; engine).
const EDIT_CASES: [(usize, EngineKind); 3] =
    [(0, EngineKind::Component), (0, EngineKind::Native), (1, EngineKind::Component)];
/// A one-edit sync (wsgidav, component) after another instance's commits.
const AFTER_OTHERS: &str = "wsgidav component, after another instance's commits";
/// A one-edit sync (wsgidav, component) whose commit folds.
const FOLDING: &str = "wsgidav component, folding";
/// A new instance's first sync (wsgidav, component), no blob to move.
const JOIN: &str = "new instance's first sync, wsgidav component";

fn engine_name(e: EngineKind) -> &'static str {
    match e {
        EngineKind::Native => "native",
        EngineKind::Component => "component",
    }
}

fn retries() -> u32 {
    SyncOptions::default().remote_retries_max
}

/// `calls` no-change status checks through one engine (a fresh component
/// instance each, as the CLI and the API make), each timed.
fn status_times(f: &Fixture, remote: &Remote, calls: usize) -> Result<Vec<f64>> {
    let trace = Trace::default();
    let mut s = syncer(&f.instance(), remote, EngineKind::Component, &trace)?;
    let mut out = Vec::with_capacity(calls);
    for i in 0..=calls {
        let started = Instant::now();
        let report = s.status(retries())?.map_err(anyhow::Error::new)?;
        let took = ms(started.elapsed());
        ensure!(!report.needs_sync, "the fixture is not in sync: {report:?}");
        if i > 0 {
            out.push(took); // the first call warms caches and the connection
        }
    }
    Ok(out)
}

/// What a scan-based sync learns about one blob.
type Seen = HashMap<String, (u64, Option<SystemTime>)>;

/// The previous scan's local view, for the mtime comparison.
#[derive(Default)]
struct Snapshot {
    local: Seen,
}

/// The honest O(n) baseline: list every shard folder on the remote (PROPFIND
/// Depth 1; the folder remote lists directories), walk the local data folder
/// reading each file's size and mtime, compare names and sizes with the
/// remote and mtimes with the previous scan. No hashing.
fn baseline_scan(f: &Fixture, remote: &Remote, snapshot: &mut Snapshot) -> Result<f64> {
    let started = Instant::now();
    let mut transport: Box<dyn RemoteTransport> = match remote {
        Remote::Dav(url) => Box::new(WebDav::new(WebDavConfig::new(url)?)),
        Remote::Relayed(relay) => Box::new(WebDav::new(WebDavConfig::new(&relay.url)?)),
        Remote::Folder(dir) => Box::new(FolderRemote::new(dir)?),
    };
    let mut remote_files: HashMap<String, u64> = HashMap::new();
    let top = transport.list("")?.context("the remote root is missing")?;
    for folder in top.iter().filter(|e| e.stat.is_collection && is_shard(&e.name)) {
        for e in transport.list(&folder.name)?.unwrap_or_default() {
            if !e.stat.is_collection {
                remote_files.insert(format!("{}/{}", folder.name, e.name), e.stat.size);
            }
        }
    }
    let mut local: Seen = HashMap::with_capacity(remote_files.len());
    for shard in std::fs::read_dir(f.data().join("files"))? {
        let shard = shard?;
        let shard_name = shard.file_name().to_string_lossy().into_owned();
        if !is_shard(&shard_name) {
            continue;
        }
        for file in std::fs::read_dir(shard.path())? {
            let file = file?;
            let meta = file.metadata()?;
            let name = format!("{shard_name}/{}", file.file_name().to_string_lossy());
            local.insert(name, (meta.len(), meta.modified().ok()));
        }
    }
    let mut differ = 0usize;
    for (name, (size, mtime)) in &local {
        let same_remote = remote_files.get(name) == Some(size);
        let same_mtime = snapshot.local.get(name).is_none_or(|(_, m)| m == mtime);
        differ += usize::from(!same_remote || !same_mtime);
    }
    differ += remote_files.keys().filter(|k| !local.contains_key(*k)).count();
    let took = ms(started.elapsed());
    ensure!(local.len() >= f.size && differ == 0, "baseline: {} local files, {differ} differ", local.len());
    snapshot.local = local;
    Ok(took)
}

fn is_shard(name: &str) -> bool {
    name.len() == 2 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// One sync, split into phases by its progress events and remote calls, with
/// what it moved. Every field is a number so that medians are taken alike;
/// the counts are the same in the wall-time and the CPU-time breakdown.
#[derive(Clone, Debug, Default)]
struct Breakdown {
    total: f64,
    /// Engine start (instantiation) to the first event, plus the quick check
    /// and the lock.
    check_lock: f64,
    /// `version.txt`, the change files; for a whole-state read also
    /// `metadata.db` (its download, open, validation) and the tail applied.
    read_remote: f64,
    /// Of `read_remote`: the GET of `metadata.db` (0: not read).
    checkpoint_get: f64,
    compare: f64,
    /// Blob presence, and the push record (`pushed_inputs`) written before
    /// the commit.
    blob_check: f64,
    /// The change file (merge), lease, fence, `version.txt`.
    commit: f64,
    /// Folding: `metadata.db` and `version.txt` again (0: no fold).
    fold: f64,
    local_apply: f64,
    release: f64,
    /// CPU time of the WebDAV server process during the sync (NaN: none).
    server_cpu: f64,
    /// Bytes on the wire (HTTP headers and bodies), client to server and
    /// back (NaN: not relayed).
    wire_up: f64,
    wire_down: f64,
    /// Body bytes at the remote port: PUT bodies sent, GET bodies received.
    body_up: f64,
    body_down: f64,
    /// Calls of the remote port (one HTTP request each, retries aside).
    requests: f64,
    /// GETs of change files.
    change_files_read: f64,
    /// `metadata.db` read / written (0 or 1).
    checkpoint_read: f64,
    checkpoint_written: f64,
}

/// A remote call in a trace: (start, end, op, path, body bytes up, down).
type Call<'a> = (Stamp, Stamp, &'static str, &'a str, u64, u64);

impl Breakdown {
    /// Phases in wall time (`cpu` false) or in the sync thread's CPU time;
    /// `wire`: the relay's byte counts during the sync.
    fn from_trace(
        (started, ended): (Stamp, Stamp),
        events: &[Event],
        cpu: bool,
        wire: Option<(u64, u64)>,
    ) -> Result<Breakdown> {
        let ms = |d: (Stamp, Stamp)| {
            if cpu { d.1.cpu_ms - d.0.cpu_ms } else { (d.1.wall - d.0.wall).as_secs_f64() * 1e3 }
        };
        let at_where = |want: &dyn Fn(Phase, u8) -> bool| {
            events.iter().find_map(|e| match e {
                Event::Progress { at, phase, percent } if want(*phase, *percent) => Some(*at),
                _ => None,
            })
        };
        let at = |p: Phase| at_where(&|phase, _| phase == p);
        let calls: Vec<Call<'_>> = events
            .iter()
            .filter_map(|e| match e {
                Event::Remote { start, end, op, path, up, down } => {
                    Some((*start, *end, *op, path.as_str(), *up, *down))
                }
                _ => None,
            })
            .collect();
        let need = |p: Phase| at(p).with_context(|| format!("no {p:?} event"));
        let (fetch, compare, apply) = (need(Phase::Fetch)?, need(Phase::Compare)?, need(Phase::Apply)?);
        // A sync with nothing to publish (a new instance's first) has no commit.
        let commit = at(Phase::Commit).unwrap_or(apply);
        let upload = at(Phase::Upload).unwrap_or(commit);
        let fold = at_where(&|phase, percent| phase == Phase::Commit && percent == 92).unwrap_or(apply);
        let after_apply = calls.iter().map(|c| c.0).find(|s| s.wall >= apply.wall).unwrap_or(ended);
        let sum = |keep: &dyn Fn(&Call<'_>) -> bool, of: &dyn Fn(&Call<'_>) -> f64| {
            // (An empty f64 sum is -0.0.)
            calls.iter().filter(|c| keep(c)).map(of).fold(0.0, |a, b| a + b)
        };
        let is_checkpoint = |c: &Call<'_>| c.3 == "metadata.db";
        let (up, down) = wire.map_or((f64::NAN, f64::NAN), |(u, d)| (u as f64, d as f64));
        Ok(Breakdown {
            total: ms((started, ended)),
            check_lock: ms((started, fetch)),
            read_remote: ms((fetch, compare)),
            checkpoint_get: sum(&|c| c.2 == "GET" && is_checkpoint(c), &|c| ms((c.0, c.1))),
            compare: ms((compare, upload)),
            blob_check: ms((upload, commit)),
            commit: ms((commit, fold)),
            fold: ms((fold, apply)),
            local_apply: ms((apply, after_apply)),
            release: ms((after_apply, ended)),
            server_cpu: f64::NAN,
            wire_up: up,
            wire_down: down,
            body_up: sum(&|_| true, &|c| c.4 as f64),
            body_down: sum(&|_| true, &|c| c.5 as f64),
            requests: calls.len() as f64,
            change_files_read: sum(&|c| c.2 == "GET" && c.3.starts_with("changes/"), &|_| 1.0),
            checkpoint_read: sum(&|c| c.2 == "GET" && is_checkpoint(c), &|_| 1.0),
            checkpoint_written: sum(&|c| c.2 == "PUT" && is_checkpoint(c), &|_| 1.0),
        })
    }

    fn median_of(v: &[Breakdown]) -> Breakdown {
        let m = |f: fn(&Breakdown) -> f64| median(&v.iter().map(f).collect::<Vec<_>>());
        Breakdown {
            total: m(|b| b.total),
            check_lock: m(|b| b.check_lock),
            read_remote: m(|b| b.read_remote),
            checkpoint_get: m(|b| b.checkpoint_get),
            compare: m(|b| b.compare),
            blob_check: m(|b| b.blob_check),
            commit: m(|b| b.commit),
            fold: m(|b| b.fold),
            local_apply: m(|b| b.local_apply),
            release: m(|b| b.release),
            server_cpu: m(|b| b.server_cpu),
            wire_up: m(|b| b.wire_up),
            wire_down: m(|b| b.wire_down),
            body_up: m(|b| b.body_up),
            body_down: m(|b| b.body_down),
            requests: m(|b| b.requests),
            change_files_read: m(|b| b.change_files_read),
            checkpoint_read: m(|b| b.checkpoint_read),
            checkpoint_written: m(|b| b.checkpoint_written),
        }
    }
}

/// One timed sync of `inst`. Returns its summary and its breakdown in wall
/// time and in CPU time (the sync's thread; `server_cpu`: the WebDAV server's
/// process, `server_pid`), and prints both and its remote calls as `name`.
fn measured_sync(
    inst: &Instance,
    remote: &Remote,
    engine: EngineKind,
    server_pid: Option<u32>,
    name: &str,
) -> Result<(SyncSummary, Breakdown, Breakdown)> {
    let trace = Trace::default();
    let mut s = syncer(inst, remote, engine, &trace)?;
    let server_before = server_pid.map_or(f64::NAN, process_cpu_ms);
    let wire_before = remote.wire();
    let started = Stamp::now();
    let summary = s.sync(&SyncOptions::default())?.map_err(anyhow::Error::new)?;
    let ended = Stamp::now();
    let wire = remote.wire().zip(wire_before).map(|(after, before)| (after.0 - before.0, after.1 - before.1));
    let server_cpu = server_pid.map_or(f64::NAN, process_cpu_ms) - server_before;
    drop(s);
    let events = trace.take();
    let b = Breakdown::from_trace((started, ended), &events, false, wire)?;
    let cpu = Breakdown { server_cpu, ..Breakdown::from_trace((started, ended), &events, true, wire)? };
    let calls: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            Event::Remote { op, path, up, down, .. } => Some(format!("{op} {path} {up}/{down}")),
            Event::Progress { .. } => None,
        })
        .collect();
    eprintln!("  {name}: {:.0} ms {b:?}", b.total);
    eprintln!("  {name}: CPU {:.0} ms, server CPU {server_cpu:.0} ms {cpu:?}", cpu.total);
    eprintln!("  {name}: calls (body bytes up/down): {}", calls.join(", "));
    Ok((summary, b, cpu))
}

/// The app of `inst` edits the label of file `pick` (any number: taken
/// modulo the size) to `label`.
fn edit_label(inst: &Instance, size: usize, pick: usize, label: String) -> Result<()> {
    let target = stable_id_of(pick.wrapping_mul(7919).wrapping_add(13) % size);
    SqliteStore::open(&inst.db, &inst.data)?.set_meta(&target, |m| m.label = Some(label))?;
    Ok(())
}

/// The app edits one file's label; then one timed sync, which must publish
/// it and pull at most `others` edits of other instances (nothing else).
#[allow(clippy::too_many_arguments)]
fn one_edit_sync(
    f: &Fixture,
    inst: &Instance,
    remote: &Remote,
    engine: EngineKind,
    run: usize,
    server_pid: Option<u32>,
    name: &str,
    others: u32,
) -> Result<(Breakdown, Breakdown)> {
    let label = format!("edited in run {run}: {name}");
    edit_label(inst, f.size, run, label)?;
    let (summary, b, cpu) = measured_sync(inst, remote, engine, server_pid, name)?;
    let moved = summary.metadata_synced;
    ensure!((1..=1 + others).contains(&moved) && summary.errors == 0, "one-edit sync: {summary:?}");
    Ok((b, cpu))
}

/// An unmeasured commit of one label edit by `inst` (native core, folder
/// remote): to move the remote's history along.
fn filler_commit(f: &Fixture, inst: &Instance, n: usize) -> Result<()> {
    edit_label(inst, f.size, 100_003 + n, format!("filler {n} at {}", now_ms()))?;
    let mut s = syncer(inst, &Remote::Folder(f.remote()), EngineKind::Native, &Trace::default())?;
    let summary = s.sync(&SyncOptions::default())?.map_err(anyhow::Error::new)?;
    ensure!(summary.errors == 0 && !summary.skipped, "filler commit: {summary:?}");
    Ok(())
}

/// The app changes every live file's collections in one transaction (as a
/// bulk "add to collection" would); then one timed sync.
fn bulk_edit_sync(f: &Fixture, remote: &Remote, engine: EngineKind, run: usize) -> Result<f64> {
    let conn = rusqlite::Connection::open(f.db())?;
    let collections = format!(r#"["{}","bulk-{run}-{}"]"#, COLLECTIONS[run % 5], engine_name(engine));
    let now = iso8601_utc(now_ms());
    let n = conn.execute(
        "UPDATE files SET doc_collections = ?1, sync_status = 'modified', local_modified_at = ?2,
         updated_at = ?2 WHERE deleted = 0",
        rusqlite::params![collections, now],
    )?;
    drop(conn);
    let trace = Trace::default();
    let mut s = syncer(&f.instance(), remote, engine, &trace)?;
    let started = Instant::now();
    let summary = s.sync(&SyncOptions::default())?.map_err(anyhow::Error::new)?;
    let took = ms(started.elapsed());
    ensure!(summary.metadata_synced as usize == n && summary.errors == 0, "bulk sync: {summary:?}");
    eprintln!("  bulk edit of {n} files, {} {}: {took:.0} ms", remote.name(), engine_name(engine));
    Ok(took)
}

/// Host process start to the first engine call, as the host itself measures
/// it (`davsync::logging`), over child `davsync status` runs with the
/// compiled component cached. Also the child's whole wall time.
#[derive(Default)]
struct Startup {
    first_call_us: Vec<f64>,
    first_call_cpu_us: Vec<f64>,
    /// CPU time from `main()` to the first call: the host's own code.
    first_call_main_cpu_us: Vec<f64>,
    /// Minor page faults by the first call: the same on a busy machine.
    first_call_faults: Vec<f64>,
    process_ms: Vec<f64>,
}

fn measure_startup(f: &Fixture) -> Result<Startup> {
    let mut s = Startup::default();
    for i in 0..=STARTUP_RUNS {
        let started = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_davsync"))
            .arg("--data")
            .arg(f.data())
            .arg("--db")
            .arg(f.db())
            .arg("--remote")
            .arg(f.remote())
            .args(["--json", "status"])
            .env("RUST_LOG", "davsync::startup=debug")
            .env("NO_COLOR", "1")
            .output()?;
        let took = ms(started.elapsed());
        ensure!(out.status.success(), "davsync status: {}", String::from_utf8_lossy(&out.stderr));
        let stderr = String::from_utf8_lossy(&out.stderr);
        let field = |name: &str| {
            stderr
                .split(&format!(" {name}="))
                .nth(1)
                .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|n| n.parse::<f64>().ok())
                .with_context(|| format!("no {name} in {stderr:?}"))
        };
        let (micros, cpu_micros, faults) = (field("micros")?, field("cpu_micros")?, field("minor_faults")?);
        let main_cpu_micros = field("main_cpu_micros")?;
        if i > 0 {
            // The first run may compile and cache the component.
            s.first_call_us.push(micros);
            s.first_call_cpu_us.push(cpu_micros);
            s.first_call_main_cpu_us.push(main_cpu_micros);
            s.first_call_faults.push(faults);
            s.process_ms.push(took);
        }
    }
    Ok(s)
}

// ---------------------------------------------------------------------------
// The table
// ---------------------------------------------------------------------------

/// A named column of [`Breakdown`].
type BreakdownPart = (&'static str, fn(&Breakdown) -> f64);

fn print_table(opts: &Options, results: &[SizeResult], startup: &Startup) {
    let head: Vec<String> = results.iter().map(|r| format!("{} files", r.size)).collect();
    println!("\nmedians of {} runs ({} status calls per run and remote)\n", opts.runs, opts.status_calls);
    println!("| figure | {} |", head.join(" | "));
    println!("|---|{}", "---:|".repeat(results.len()));
    let row = |name: &str, cell: &dyn Fn(&SizeResult) -> String| {
        let cells: Vec<String> = results.iter().map(cell).collect();
        println!("| {name} | {} |", cells.join(" | "));
    };
    let first = &results[0];
    row("remote metadata.db, MiB", &|r| format!("{:.1}", r.metadata_db_bytes as f64 / 1048576.0));
    for remote in ["wsgidav", "folder"] {
        let status = |r: &SizeResult| median(r.status_ms.get(remote).map_or(&[][..], |v| v));
        let base = |r: &SizeResult| median(r.baseline_ms.get(remote).map_or(&[][..], |v| v));
        row(&format!("(1) no-change status, {remote}, ms"), &|r| format!("{:.2}", status(r)));
        row(&format!("(1) status / status at {} files, {remote}", first.size), &|r| {
            format!("{:.2}", status(r) / status(first))
        });
        row(&format!("(2) O(n) scan baseline, {remote}, ms"), &|r| format!("{:.0}", base(r)));
        row(&format!("(2) baseline / status, {remote}"), &|r| format!("{:.0}x", base(r) / status(r)));
    }
    let cases = ["wsgidav component", "wsgidav native", "folder component", AFTER_OTHERS, FOLDING, JOIN];
    let wall = |r: &SizeResult, case: &str| Breakdown::median_of(r.edit.get(case).map_or(&[][..], |v| v));
    let cpu = |r: &SizeResult, case: &str| Breakdown::median_of(r.edit_cpu.get(case).map_or(&[][..], |v| v));
    let kib = |x: f64| format!("{:.1}", x / 1024.0);
    for case in cases.into_iter().filter(|c| results.iter().any(|r| r.edit.contains_key(*c))) {
        row(&format!("(3) {case}, ms"), &|r| format!("{:.0}", wall(r, case).total));
        row(&format!("(3) … CPU of the sync's thread / of the server, {case}, ms"), &|r| {
            format!("{:.0} / {:.0}", cpu(r, case).total, cpu(r, case).server_cpu)
        });
        if case.starts_with("wsgidav") || case == JOIN {
            row(&format!("(3) … bytes on the wire up + down = total, {case}, KiB"), &|r| {
                let b = wall(r, case);
                format!("{} + {} = **{}**", kib(b.wire_up), kib(b.wire_down), kib(b.wire_up + b.wire_down))
            });
        }
        row(&format!("(3) … GET/PUT bodies up / down, {case}, KiB"), &|r| {
            format!("{} / {}", kib(wall(r, case).body_up), kib(wall(r, case).body_down))
        });
        row(&format!("(3) … requests, change files read, metadata.db read / written, {case}"), &|r| {
            let b = wall(r, case);
            let n = [b.requests, b.change_files_read, b.checkpoint_read, b.checkpoint_written];
            format!("{:.0}, {:.0}, {:.0} / {:.0}", n[0], n[1], n[2], n[3])
        });
    }
    if results.iter().any(|r| !r.join_tail_commits.is_empty()) {
        row("(3) … commits after the checkpoint at the new instance's first sync", &|r| {
            format!("{:.0}", median(&r.join_tail_commits))
        });
    }
    let parts: [BreakdownPart; 10] = [
        ("engine start, quick check, lock", |b| b.check_lock),
        ("read remote (version.txt, change files; metadata.db when whole)", |b| b.read_remote),
        ("… of which GET metadata.db", |b| b.checkpoint_get),
        ("compare", |b| b.compare),
        ("blob check, push record", |b| b.blob_check),
        ("commit: change file, lease, fence, version.txt", |b| b.commit),
        ("fold: metadata.db, version.txt again", |b| b.fold),
        ("local apply", |b| b.local_apply),
        ("release + cleanup", |b| b.release),
        ("total", |b| b.total),
    ];
    for case in ["wsgidav component", AFTER_OTHERS, FOLDING, JOIN] {
        if !results.iter().any(|r| r.edit.contains_key(case)) {
            continue;
        }
        for (name, part) in parts {
            // A phase that did not happen in any run of this case is left out.
            let happened =
                results.iter().any(|r| r.edit.get(case).is_some_and(|v| v.iter().any(|b| part(b) > 0.0)));
            if !happened {
                continue;
            }
            row(&format!("(3) … {name} ({case}), ms wall / CPU"), &|r| {
                format!("{:.0} / {:.0}", part(&wall(r, case)), part(&cpu(r, case)))
            });
        }
    }
    let bulk = |v: &[f64]| if v.is_empty() { "–".to_owned() } else { format!("{:.0}", median(v)) };
    row("(4) sync of a bulk edit of every file, native, ms", &|r| bulk(&r.bulk_native_ms));
    row("(4) same, component, ms", &|r| bulk(&r.bulk_component_ms));
    row("(4) component / native", &|r| {
        let ratios: Vec<f64> =
            r.bulk_component_ms.iter().zip(&r.bulk_native_ms).map(|(c, n)| c / n).collect();
        if ratios.is_empty() { "–".to_owned() } else { format!("{:.2}", median(&ratios)) }
    });
    row("(6) first sync, folder remote on tmpfs (child process), s", &|r| format!("{:.1}", r.first_sync_s));
    row("(6) … its peak RSS, MiB", &|r| format!("{:.0}", r.first_sync_rss_kib as f64 / 1024.0));
    for engine in ["native", "component"] {
        let again = |r: &SizeResult| {
            r.again.iter().find(|(e, _)| *e == engine).map(|(_, a)| (a.seconds, a.max_rss_kib))
        };
        if results.iter().any(|r| again(r).is_some()) {
            row(&format!("(6) first sync again, {engine}, s"), &|r| {
                again(r).map_or("–".to_owned(), |(s, _)| format!("{s:.1}"))
            });
            row("(6) … its peak RSS, MiB", &|r| {
                again(r).map_or("–".to_owned(), |(_, k)| format!("{:.0}", k as f64 / 1024.0))
            });
        }
    }
    println!(
        "\n(5) host start to first engine call (cached component, `davsync status`, {} runs), \
         median (interquartile range): CPU time {} ms (exec to first call), of which {} ms from \
         main(); wall time {} ms (main() to first call), minor page faults {}; whole child \
         process wall time {} ms",
        startup.first_call_us.len(),
        median_iqr(&startup.first_call_cpu_us, 1e3, 2),
        median_iqr(&startup.first_call_main_cpu_us, 1e3, 2),
        median_iqr(&startup.first_call_us, 1e3, 2),
        median_iqr(&startup.first_call_faults, 1.0, 0),
        median_iqr(&startup.process_ms, 1.0, 1)
    );
}
