//! The `davsync` command line. Exit status: 0 on success (conflicts are
//! reported, not failures), 1 on error with a one-line cause on stderr, 2 on
//! usage errors.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use davsync_core::maintenance::{MaintenanceError, MaintenanceOptions};
use davsync_core::model::{FileMeta, LocalRow};
use davsync_core::{Resolution, ResolutionKind, SyncError, SyncOptions};
use serde_json::{Value, json};

use crate::engine::EngineKind;
use crate::setup::{FileConfig, RemoteArgs, Setup, resolve_remote};
use crate::system::{BarProgress, LineProgress};

/// Keeps a document app's files and metadata in sync through a WebDAV server.
#[derive(Debug, Parser)]
#[command(name = "davsync", version, about)]
pub struct Cli {
    /// The app's data folder (files live under `<data>/files/`).
    #[arg(long, global = true, env = "DAVSYNC_DATA", default_value = "./davsync-data")]
    pub data: PathBuf,
    /// The app's database (default: `<data>/metadata.db`).
    #[arg(long, global = true, env = "DAVSYNC_DB")]
    pub db: Option<PathBuf>,
    /// The remote: a WebDAV URL (`https://host/path`) or a local folder.
    /// Default: `DAVSYNC_REMOTE`, else `WEBDAV_BASE_URL` + `WEBDAV_REMOTE_ROOT`,
    /// else the config file, else `./davsync-remote`.
    #[arg(long, global = true)]
    pub remote: Option<String>,
    /// WebDAV user (default: `WEBDAV_USERNAME`, else the config file). The
    /// password comes from `WEBDAV_PASSWORD` or the config file only.
    #[arg(long, global = true)]
    pub user: Option<String>,
    /// Blob transfers at once, 1-64 (default: `DAVSYNC_TRANSFERS`, else the
    /// config file, else 4).
    #[arg(long, global = true)]
    pub transfers: Option<usize>,
    /// Timeout of one WebDAV request in seconds (default 60).
    #[arg(long, global = true)]
    pub timeout_secs: Option<u64>,
    /// A `davsync.toml` (default: `DAVSYNC_CONFIG`, else `./davsync.toml` if
    /// present). Flags override environment variables, which override it.
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Lease time-to-live in ms (tests and diagnosis).
    #[arg(long, global = true, env = "DAVSYNC_LEASE_TTL_MS", hide = true)]
    pub lease_ttl_ms: Option<u64>,
    /// How long to wait for another instance's lease, in ms.
    #[arg(long, global = true, env = "DAVSYNC_LOCK_WAIT_MS", hide = true)]
    pub lock_wait_ms: Option<u64>,
    /// Print one JSON document on stdout instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Run the core natively instead of the WebAssembly component (for
    /// benchmarks and diagnosis).
    #[arg(long, global = true, value_enum, default_value = "component", hide = true)]
    pub engine: EngineKind,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the data folder, the database and the remote folder.
    Init,
    /// Add a file; prints its new stable_id.
    Add {
        /// The file to add.
        file: PathBuf,
        /// Document id (e.g. a DOI).
        #[arg(long)]
        doc_id: String,
        /// File type: pdf, tei, rng, or another [a-z0-9]{1,16}; default from the file name.
        #[arg(long = "type")]
        file_type: Option<String>,
        /// Label.
        #[arg(long)]
        label: Option<String>,
        /// Variant.
        #[arg(long)]
        variant: Option<String>,
        /// Collection (repeatable).
        #[arg(long = "collection")]
        collections: Vec<String>,
    },
    /// Replace a file's content: new hash, same stable_id.
    Edit {
        /// The file's stable_id.
        stable_id: String,
        /// The new content.
        file: PathBuf,
    },
    /// Change a file's metadata.
    Set {
        /// The file's stable_id.
        stable_id: String,
        /// New label.
        #[arg(long)]
        label: Option<String>,
        /// New variant.
        #[arg(long)]
        variant: Option<String>,
        /// New collections, comma-separated (empty string: none).
        #[arg(long)]
        collections: Option<String>,
        /// New document metadata (a JSON object).
        #[arg(long)]
        doc_meta: Option<String>,
        /// New file metadata (a JSON object).
        #[arg(long)]
        file_meta: Option<String>,
    },
    /// Delete a file (the deletion syncs as a tombstone).
    Rm {
        /// The file's stable_id.
        stable_id: String,
    },
    /// List files.
    Ls,
    /// Is a sync needed? (O(1): one COUNT, one request.)
    Status,
    /// Sync with the remote.
    Sync {
        /// Sync even if nothing seems changed, and allow a mass deletion.
        #[arg(long)]
        force: bool,
    },
    /// List recorded conflicts.
    Conflicts,
    /// Resolve a conflict; the next sync carries it out.
    Resolve {
        /// The conflicted file.
        stable_id: String,
        /// Which side wins.
        #[arg(value_enum)]
        resolution: ResolutionArg,
        /// Variant name of the copy, for keep-both.
        #[arg(long)]
        variant: Option<String>,
    },
    /// Serve the HTTP API, with live sync progress over server-sent events.
    Serve(crate::serve::ServeArgs),
    /// Look after the shared remote (no local database needed).
    Remote {
        /// What to do.
        #[command(subcommand)]
        action: RemoteAction,
    },
}

/// Remote maintenance (issue 9).
#[derive(Debug, Subcommand)]
pub enum RemoteAction {
    /// Version, epoch, live files, tombstones, blob count and size, lease holder.
    Status,
    /// Check every live file's blob is present and intact (exit 1 if not);
    /// list blobs no live file references.
    Verify,
    /// Delete blobs no live file references, older than the grace period,
    /// under the sync lease.
    Gc {
        /// Leave unreferenced blobs younger than this alone.
        #[arg(long, default_value_t = 86_400)]
        grace_secs: u64,
    },
}

/// How to resolve a conflict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ResolutionArg {
    /// Keep the local version.
    Local,
    /// Take the remote version.
    Remote,
    /// Keep local content as a new file; the original takes the remote version.
    KeepBoth,
}

/// Parses the arguments and runs; prints errors as one line.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("davsync: {}", error_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// A failure as one line: its chain of contexts and causes, without repeating
/// a cause an outer message already quotes (`SyncError::Remote` prints its
/// `RemoteError`, which is also its source).
fn error_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// The wiring these arguments describe.
pub fn setup_of(cli: &Cli) -> Result<Setup> {
    let db = cli.db.clone().unwrap_or_else(|| cli.data.join("metadata.db"));
    let config_path = cli
        .config
        .clone()
        .or_else(|| std::env::var_os("DAVSYNC_CONFIG").filter(|v| !v.is_empty()).map(PathBuf::from))
        .or_else(|| Some(PathBuf::from("davsync.toml")).filter(|p| p.is_file()));
    let file = match &config_path {
        Some(p) => FileConfig::load(p)?,
        None => FileConfig::default(),
    };
    let args = RemoteArgs {
        remote: cli.remote.clone(),
        user: cli.user.clone(),
        transfers: cli.transfers,
        timeout_secs: cli.timeout_secs,
    };
    let remote = resolve_remote(&args, &|k| std::env::var(k).ok(), &file)?;
    Ok(Setup {
        data: cli.data.clone(),
        db,
        remote,
        engine: cli.engine,
        lease_ttl_ms: cli.lease_ttl_ms,
        lock_wait_ms: cli.lock_wait_ms,
    })
}

/// The progress sink for a command: a bar on a terminal, lines otherwise.
fn progress_for(cli: &Cli) -> Box<dyn davsync_core::ports::Progress> {
    if std::io::stderr().is_terminal() && !cli.json {
        Box::new(BarProgress::new())
    } else {
        Box::new(LineProgress)
    }
}

/// A typed engine answer as an error that reads like a sentence.
fn engine_answer<T>(r: Result<Result<T, SyncError>>) -> Result<T> {
    r?.map_err(anyhow::Error::new)
}

fn run(cli: &Cli) -> Result<()> {
    let setup = setup_of(cli)?;
    match &cli.command {
        Command::Init => init(cli, &setup),
        Command::Add { file, doc_id, file_type, label, variant, collections } => {
            let meta = new_meta(file, doc_id, file_type.as_deref(), label, variant, collections)?;
            let row = setup.open_store()?.add_file(file, meta, None)?;
            print_row_result(cli, &row, &row.stable_id)
        }
        Command::Edit { stable_id, file } => {
            let row = setup.open_store()?.replace_content(stable_id, file)?;
            print_row_result(cli, &row, &format!("{} now has content {}", row.stable_id, row.id))
        }
        Command::Set { stable_id, label, variant, collections, doc_meta, file_meta } => {
            let collections = collections.as_deref().map(collections_json);
            let row = setup.open_store()?.set_meta(stable_id, |m| {
                if let Some(l) = label {
                    m.label = Some(l.clone());
                }
                if let Some(v) = variant {
                    m.variant = Some(v.clone());
                }
                if let Some(c) = collections {
                    m.doc_collections = c;
                }
                if let Some(d) = doc_meta {
                    m.doc_metadata = d.clone();
                }
                if let Some(f) = file_meta {
                    m.file_metadata = f.clone();
                }
            })?;
            print_row_result(cli, &row, &format!("{} updated", row.stable_id))
        }
        Command::Rm { stable_id } => {
            let row = setup.open_store()?.delete(stable_id)?;
            print_row_result(cli, &row, &format!("{} deleted", row.stable_id))
        }
        Command::Ls => ls(cli, &setup),
        Command::Status => {
            let report = engine_answer(
                setup.syncer(progress_for(cli))?.status(setup.sync_options().remote_retries_max),
            )?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                let remote = report.remote_version.map_or("none".to_owned(), |v| v.to_string());
                let local = report.local_version.map_or("never synced".to_owned(), |v| v.to_string());
                let verdict = if report.needs_sync { "sync needed" } else { "in sync" };
                println!(
                    "{verdict}: {} unsynced, local version {local}, remote version {remote}",
                    report.unsynced_count
                );
            }
            Ok(())
        }
        Command::Sync { force } => {
            let _data = crate::datalock::DataDirLock::try_acquire(&setup.data)?;
            let opts = SyncOptions { force: *force, ..setup.sync_options() };
            let summary = engine_answer(setup.syncer(progress_for(cli))?.sync(&opts))?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else if summary.skipped {
                println!("already in sync (version {})", summary.new_version);
            } else {
                println!(
                    "synced to version {}: {} uploaded, {} downloaded, {} deleted here, {} deleted remotely, \
                     {} metadata, {} conflicts, {} errors ({} ms)",
                    summary.new_version,
                    summary.uploaded,
                    summary.downloaded,
                    summary.deleted_local,
                    summary.deleted_remote,
                    summary.metadata_synced,
                    summary.conflicts,
                    summary.errors,
                    summary.duration_ms
                );
                for e in &summary.file_errors {
                    println!("  {}: {}", e.stable_id, e.message);
                }
                if summary.epoch_changed {
                    println!(
                        "note: the remote is not the one last synced with; nothing was deleted because of it"
                    );
                }
            }
            Ok(())
        }
        Command::Conflicts => {
            let list = engine_answer(setup.syncer(progress_for(cli))?.conflicts())?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if list.is_empty() {
                println!("no conflicts");
            } else {
                for c in &list {
                    println!("{}  {}  {}  {}", c.stable_id, c.kind.as_str(), c.filename, c.doc_id);
                }
            }
            Ok(())
        }
        Command::Resolve { stable_id, resolution, variant } => {
            let kind = match (resolution, variant) {
                (ResolutionArg::Local, _) => ResolutionKind::LocalWins,
                (ResolutionArg::Remote, _) => ResolutionKind::RemoteWins,
                (ResolutionArg::KeepBoth, Some(v)) => ResolutionKind::KeepBoth { variant: v.clone() },
                (ResolutionArg::KeepBoth, None) => bail!("keep-both needs --variant NAME for the copy"),
            };
            let res = Resolution { stable_id: stable_id.clone(), kind };
            let _data = crate::datalock::DataDirLock::try_acquire(&setup.data)?;
            let outcome = engine_answer(setup.syncer(progress_for(cli))?.resolve(&res))?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&outcome)?);
            } else {
                println!("{}: {}", outcome.stable_id, outcome.message);
            }
            Ok(())
        }
        Command::Serve(args) => crate::serve::run(&setup, args),
        Command::Remote { action } => remote(cli, &setup, action),
    }
}

/// A typed maintenance answer as an error that reads like a sentence.
fn maintenance_answer<T>(r: Result<Result<T, MaintenanceError>>) -> Result<T> {
    r?.map_err(anyhow::Error::new)
}

fn print_json(value: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn remote(cli: &Cli, setup: &Setup, action: &RemoteAction) -> Result<()> {
    let grace_ms = match action {
        RemoteAction::Gc { grace_secs } => grace_secs.saturating_mul(1000),
        _ => MaintenanceOptions::default().gc_grace_ms,
    };
    let opts = setup.maintenance_options(grace_ms);
    let mut maintainer = setup.maintainer()?;
    match action {
        RemoteAction::Status => {
            let s = maintenance_answer(maintainer.remote_status(&opts))?;
            if cli.json {
                return print_json(&s);
            }
            let txt = s.version_txt.map_or("missing".to_owned(), |v| v.to_string());
            println!("remote {}: version {} (version.txt {txt})", s.epoch, s.version);
            println!("{} live files, {} tombstones", s.live_files, s.tombstones);
            println!("{} blobs, {} bytes", s.blob_count, s.blob_bytes);
            match &s.lease {
                None => println!("lease: free"),
                Some(l) => println!("lease: held by {}, {} ms left", l.holder, l.expires_in_ms),
            }
            Ok(())
        }
        RemoteAction::Verify => {
            let r = maintenance_answer(maintainer.verify(&opts))?;
            if cli.json {
                print_json(&r)?;
            } else {
                println!(
                    "version {}: {} blobs checked, {} problems",
                    r.version,
                    r.blobs_checked,
                    r.problems.len()
                );
                for p in &r.problems {
                    println!("  {}: {:?} (files {})", p.path, p.fault, p.stable_ids.join(", "));
                }
                println!("{} unreferenced blobs", r.unreferenced.len());
                for b in &r.unreferenced {
                    println!("  {} ({} bytes)", b.path, b.size_bytes);
                }
            }
            if !r.is_healthy() {
                bail!("{} live files' blobs are missing or damaged", r.problems.len());
            }
            Ok(())
        }
        RemoteAction::Gc { .. } => {
            let r = maintenance_answer(maintainer.gc(&opts))?;
            if cli.json {
                return print_json(&r);
            }
            match r.version_after {
                Some(v) => println!(
                    "deleted {} unreferenced blobs ({} bytes) after committing version {v}",
                    r.deleted.len(),
                    r.deleted_bytes
                ),
                None => println!("nothing to delete at version {}", r.version_before),
            }
            println!("kept {} younger than the grace period, {} undated", r.kept_young, r.kept_undated);
            Ok(())
        }
    }
}

fn init(cli: &Cli, setup: &Setup) -> Result<()> {
    setup.init()?;
    let remote = setup.remote.describe();
    if cli.json {
        println!("{}", json!({"data": setup.data, "db": setup.db, "remote": remote}));
    } else {
        println!("data {}, database {}, remote {remote}", setup.data.display(), setup.db.display());
    }
    Ok(())
}

fn ls(cli: &Cli, setup: &Setup) -> Result<()> {
    let rows = setup.open_store()?.list()?;
    if cli.json {
        let list: Vec<Value> = rows.iter().map(row_json).collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    for r in &rows {
        let label = r.meta.label.as_deref().unwrap_or("");
        let gone = if r.deleted { " (deleted)" } else { "" };
        println!(
            "{}  {:<15}  {}  {}  {}{gone}",
            r.stable_id,
            r.sync_status.as_str(),
            &r.id.as_str()[..12],
            r.meta.filename,
            label
        );
    }
    Ok(())
}

/// One file as JSON: identity, state, and every metadata field (JSON columns
/// as JSON values).
pub fn row_json(r: &LocalRow) -> Value {
    let parse = |s: &str| serde_json::from_str::<Value>(s).unwrap_or_else(|_| Value::String(s.to_owned()));
    json!({
        "stable_id": r.stable_id,
        "id": r.id.as_str(),
        "sync_status": r.sync_status.as_str(),
        "deleted": r.deleted,
        "remote_version": r.remote_version,
        "filename": r.meta.filename,
        "doc_id": r.meta.doc_id,
        "doc_id_type": r.meta.doc_id_type,
        "file_type": r.meta.file_type,
        "mime_type": r.meta.mime_type,
        "file_size": r.meta.file_size,
        "label": r.meta.label,
        "variant": r.meta.variant,
        "version": r.meta.version,
        "is_gold_standard": r.meta.is_gold_standard,
        "doc_collections": parse(&r.meta.doc_collections),
        "doc_metadata": parse(&r.meta.doc_metadata),
        "file_metadata": parse(&r.meta.file_metadata),
    })
}

fn print_row_result(cli: &Cli, row: &LocalRow, text: &str) -> Result<()> {
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&row_json(row))?);
    } else {
        println!("{text}");
    }
    Ok(())
}

fn collections_json(list: &str) -> String {
    let names: Vec<&str> = list.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    serde_json::to_string(&names).expect("strings serialize")
}

/// Guesses the file type from the name: `x.pdf` → pdf, `x.tei.xml`/`x.xml` →
/// tei, `x.rng` → rng.
fn guess_type(file: &Path) -> Option<String> {
    let name = file.file_name()?.to_str()?.to_ascii_lowercase();
    let t = if name.ends_with(".pdf") {
        "pdf"
    } else if name.ends_with(".xml") {
        "tei"
    } else if name.ends_with(".rng") {
        "rng"
    } else {
        return None;
    };
    Some(t.to_owned())
}

fn mime_for(file_type: &str) -> Option<String> {
    let m = match file_type {
        "pdf" => "application/pdf",
        "tei" => "application/tei+xml",
        "rng" => "application/xml",
        _ => return None,
    };
    Some(m.to_owned())
}

fn new_meta(
    file: &Path,
    doc_id: &str,
    file_type: Option<&str>,
    label: &Option<String>,
    variant: &Option<String>,
    collections: &[String],
) -> Result<FileMeta> {
    let file_type = match file_type.map(str::to_owned).or_else(|| guess_type(file)) {
        Some(t) => t,
        None => bail!("cannot tell the type of {}: pass --type", file.display()),
    };
    let filename = file.file_name().and_then(|n| n.to_str()).unwrap_or("file").to_owned();
    let meta = FileMeta {
        filename,
        doc_id: doc_id.to_owned(),
        doc_id_type: "doi".to_owned(),
        mime_type: mime_for(&file_type),
        file_type,
        label: label.clone(),
        variant: variant.clone(),
        version: Some(1),
        doc_collections: serde_json::to_string(collections)?,
        doc_metadata: "{}".to_owned(),
        file_metadata: "{}".to_owned(),
        ..FileMeta::default()
    };
    meta.validate().context("invalid metadata")?;
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use super::*;
    use davsync_core::ports::RemoteError;

    #[test]
    fn an_error_line_names_each_cause_once() {
        let remote = SyncError::Remote(RemoteError::Unavailable("get version.txt: timeout".into()));
        let e = anyhow::Error::new(remote).context("syncing");
        assert_eq!(error_line(&e), "syncing: remote: remote unavailable: get version.txt: timeout");
        let e = anyhow::anyhow!("inner").context("outer");
        assert_eq!(error_line(&e), "outer: inner");
    }
}
