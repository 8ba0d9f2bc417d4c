//! First sync of many small files to wsgidav, side by side with `rclone copy`
//! of the same files to the same kind of server, in the same run.
//!
//! ```text
//! cargo bench -p davsync --bench webdav_upload -- [FILES] [RUNS]
//! ```
//! (defaults: 10000 files, 3 runs). Each run starts a fresh wsgidav for each
//! tool, so neither finds the other's files. Both move 4 files at a time
//! (davsync's default `transfers`, rclone's default `--transfers`). Prints
//! one table with the median of the runs and the ratio davsync / rclone.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use davsync::engine::EngineKind;
use davsync::setup::{RemoteSpec, Setup};
use davsync::webdav::WebDavConfig;
use davsync_core::model::FileMeta;

#[path = "../../tests/all/servers.rs"]
#[allow(unused_imports)]
mod servers;

use servers::{DavServer, ServerKind};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let files: usize = args.first().map(|s| s.parse()).transpose()?.unwrap_or(10_000);
    let runs: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(3);

    let work = tempfile::tempdir()?;
    let source = work.path().join("source");
    std::fs::create_dir(&source)?;
    let mut sizes = 0u64;
    for i in 0..files {
        // 1-4 KiB of distinct bytes per file.
        let len = 1024 + (i * 7919) % 3072;
        let body: Vec<u8> = (0..len).map(|j| ((i * 31 + j * 17) % 251) as u8).collect();
        sizes += len as u64;
        std::fs::write(source.join(format!("f{i:05}.pdf")), body)?;
    }
    eprintln!("{files} files, {} KiB in all; {runs} runs", sizes / 1024);

    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for run in 0..runs {
        let d = davsync_first_sync(&source, &work.path().join(format!("run{run}")))?;
        let r = rclone_copy(&source)?;
        eprintln!("run {}: davsync {:.2} s, rclone {:.2} s", run + 1, d.as_secs_f64(), r.as_secs_f64());
        ours.push(d);
        theirs.push(r);
    }
    let (d, r) = (median(&mut ours), median(&mut theirs));
    println!("| tool (4 transfers) | files | median s | files/s |");
    println!("|---|---:|---:|---:|");
    for (name, t) in [("davsync sync (first sync)", d), ("rclone copy", r)] {
        println!("| {name} | {files} | {:.2} | {:.0} |", t.as_secs_f64(), files as f64 / t.as_secs_f64());
    }
    println!("\ndavsync / rclone = {:.2}", d.as_secs_f64() / r.as_secs_f64());
    Ok(())
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Adds every file to a fresh app database (not timed), then times one
/// sync through the component, as `davsync sync` runs it.
fn davsync_first_sync(source: &Path, dir: &Path) -> Result<Duration> {
    let server = DavServer::start(ServerKind::Wsgidav, false)?;
    let setup = Setup {
        data: dir.join("data"),
        db: dir.join("data/metadata.db"),
        remote: RemoteSpec::WebDav(WebDavConfig::new(&server.url)?),
        engine: EngineKind::Component,
        lease_ttl_ms: None,
        lock_wait_ms: None,
    };
    setup.init()?;
    let mut store = setup.open_store()?;
    let mut names: Vec<_> =
        std::fs::read_dir(source)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
    names.sort();
    for p in &names {
        store.add_file(p, meta_for(p), None)?;
    }
    drop(store);

    let started = Instant::now();
    let mut syncer = setup.syncer(Box::new(davsync_core::mem::RecordingProgress::default()))?;
    let summary = syncer.sync(&setup.sync_options())?.map_err(anyhow::Error::new)?;
    let took = started.elapsed();
    if summary.uploaded as usize != names.len() || summary.errors != 0 {
        bail!("davsync uploaded {} of {} files ({} errors)", summary.uploaded, names.len(), summary.errors);
    }
    Ok(took)
}

fn meta_for(path: &Path) -> FileMeta {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("f.pdf").to_owned();
    FileMeta {
        doc_id: format!("10.1234/{name}"),
        doc_id_type: "doi".into(),
        filename: name,
        file_type: "pdf".into(),
        mime_type: Some("application/pdf".into()),
        label: Some("benchmark".into()),
        version: Some(1),
        doc_collections: r#"["bench"]"#.into(),
        doc_metadata: r#"{"title":"A benchmark document","authors":["A. Author","B. Author"]}"#.into(),
        file_metadata: "{}".into(),
        ..FileMeta::default()
    }
}

/// `rclone copy` of the same folder to a fresh wsgidav.
fn rclone_copy(source: &Path) -> Result<Duration> {
    let server = DavServer::start(ServerKind::Wsgidav, false)?;
    let started = Instant::now();
    let out = Command::new(std::env::var("DAVSYNC_RCLONE").unwrap_or_else(|_| "rclone".into()))
        .args(["copy", "--config", "/dev/null", "--transfers", "4", "--webdav-url", &server.url])
        .arg(source)
        .arg(":webdav:")
        .output()
        .context("running rclone")?;
    let took = started.elapsed();
    if !out.status.success() {
        bail!("rclone copy failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let copied = std::fs::read_dir(&server.dir)?.count();
    if copied != std::fs::read_dir(source)?.count() {
        bail!("rclone copied {copied} files");
    }
    Ok(took)
}
