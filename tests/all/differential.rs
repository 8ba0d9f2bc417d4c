//! The same two-instance scenario through the WebAssembly component and
//! through the native core: identical summaries, identical local and remote
//! end states. Clocks and randomness are deterministic so every byte of
//! decision input is the same for both engines.

use std::path::Path;

use davsync::engine::{EngineKind, Ports, Syncer};
use davsync::folder::{FileBlobs, FolderRemote};
use davsync::local_sqlite::SqliteStore;
use davsync_core::mem::{RecordingProgress, SeededRandom, SimClock, WorldClock};
use davsync_core::model::{FileMeta, LocalRow, RemoteRow};
use davsync_core::{Resolution, ResolutionKind, SyncOptions, SyncSummary};

struct Instance {
    syncer: Syncer,
    db: std::path::PathBuf,
    data: std::path::PathBuf,
}

fn instance(
    kind: EngineKind,
    root: &Path,
    name: &str,
    remote: &Path,
    world: &WorldClock,
    seed: u64,
) -> Instance {
    let data = root.join(name);
    let db = data.join("metadata.db");
    let store = SqliteStore::open(&db, &data).unwrap();
    let folder = FolderRemote::new(remote).unwrap();
    let blobs = FileBlobs::new(store.files_dir().to_path_buf(), folder.clone());
    let ports = Ports {
        local: Box::new(store),
        remote: Box::new(folder),
        blobs: Box::new(blobs),
        clock: Box::new(SimClock::new(world.clone(), 0)),
        random: Box::new(SeededRandom::new(seed)),
        progress: Box::new(RecordingProgress::default()),
    };
    Instance { syncer: Syncer::new(kind, ports, None).unwrap(), db, data }
}

impl Instance {
    /// The app's side: a second connection to the same database, as the app
    /// itself would have.
    fn app(&self) -> SqliteStore {
        SqliteStore::open(&self.db, &self.data).unwrap()
    }

    /// Pins the app's `local_modified_at` of `id` to the world clock, so
    /// both runs stamp edits identically (the app writes the system time).
    fn pin(&self, id: &str, world: &WorldClock) {
        let conn = rusqlite::Connection::open(&self.db).unwrap();
        let at = davsync_core::model::iso8601_utc(world.now_ms());
        conn.execute("UPDATE files SET local_modified_at = ?1 WHERE stable_id = ?2", (at, id)).unwrap();
    }

    fn sync(&mut self) -> SyncSummary {
        let opts = SyncOptions { host_name: "test".into(), ..SyncOptions::default() };
        let mut s = self.syncer.sync(&opts).unwrap().unwrap();
        s.duration_ms = 0; // wall time of the machine, not of the scenario
        s
    }

    fn rows(&self) -> Vec<LocalRow> {
        self.app().list().unwrap()
    }
}

fn meta(label: &str) -> FileMeta {
    FileMeta {
        filename: format!("{label}.pdf"),
        doc_id: "10.1/x".into(),
        doc_id_type: "doi".into(),
        file_type: "pdf".into(),
        label: Some(label.into()),
        doc_collections: "[]".into(),
        doc_metadata: "{}".into(),
        file_metadata: "{}".into(),
        ..FileMeta::default()
    }
}

/// Runs the scenario on `kind`; returns every summary and the end states.
fn scenario(kind: EngineKind) -> (Vec<String>, Vec<LocalRow>, Vec<LocalRow>, Vec<RemoteRow>) {
    let tmp = tempfile::tempdir().unwrap();
    let remote = tmp.path().join("remote");
    std::fs::create_dir_all(&remote).unwrap();
    let world = WorldClock::new(1_704_067_200_000);
    let mut a = instance(kind, tmp.path(), "a", &remote, &world, 11);
    let mut b = instance(kind, tmp.path(), "b", &remote, &world, 22);
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let file = |name: &str, body: &str| {
        let p = src.join(name);
        std::fs::write(&p, body).unwrap();
        p
    };
    let mut log: Vec<String> = Vec::new();
    fn record(log: &mut Vec<String>, step: &str, s: SyncSummary) {
        log.push(format!("{step}: {}", serde_json::to_string(&s).unwrap()));
    }

    a.app().add_file(&file("one.pdf", "one"), meta("one"), Some("f1")).unwrap();
    a.pin("f1", &world);
    a.app().add_file(&file("two.pdf", "two"), meta("two"), Some("f2")).unwrap();
    a.pin("f2", &world);
    record(&mut log, "a1", a.sync());
    record(&mut log, "b1", b.sync());
    world.advance(1_000);
    b.app().set_meta("f1", |m| m.label = Some("from b".into())).unwrap();
    b.pin("f1", &world);
    a.app().replace_content("f2", &file("two2.pdf", "two v2")).unwrap();
    a.pin("f2", &world);
    record(&mut log, "b2", b.sync());
    record(&mut log, "a2", a.sync());
    world.advance(1_000);
    a.app().replace_content("f1", &file("one-a.pdf", "one by a")).unwrap();
    a.pin("f1", &world);
    b.app().replace_content("f1", &file("one-b.pdf", "one by b")).unwrap();
    b.pin("f1", &world);
    record(&mut log, "a3", a.sync());
    record(&mut log, "b3 (conflict)", b.sync());
    let conflicts = b.syncer.conflicts().unwrap().unwrap();
    log.push(format!("conflicts: {}", serde_json::to_string(&conflicts).unwrap()));
    let kb = Resolution { stable_id: "f1".into(), kind: ResolutionKind::KeepBoth { variant: "b".into() } };
    log.push(format!("{:?}", b.syncer.resolve(&kb).unwrap().unwrap()));
    record(&mut log, "b4", b.sync());
    b.app().delete("f2").unwrap();
    b.pin("f2", &world);
    record(&mut log, "b5", b.sync());
    record(&mut log, "a4", a.sync());
    record(&mut log, "a5 (skipped)", a.sync());

    // The remote's whole state: metadata.db and the change files after it.
    let state = davsync_core::history::read_state(|p| std::fs::read(remote.join(p)).ok()).unwrap();
    let remote_rows = state.unwrap().0.rows_changed_since(0).unwrap();
    (log, a.rows(), b.rows(), remote_rows)
}

#[test]
fn component_and_native_core_agree_step_by_step() {
    let native = scenario(EngineKind::Native);
    let component = scenario(EngineKind::Component);
    assert_eq!(native.0, component.0, "summaries differ");
    assert_eq!(native.1, component.1, "instance a's end state differs");
    assert_eq!(native.2, component.2, "instance b's end state differs");
    assert_eq!(native.3, component.3, "remote end state differs");
    // And the scenario did what it says.
    assert!(native.0.iter().any(|l| l.starts_with("b3 (conflict)") && l.contains("\"conflicts\":1")));
    assert!(native.0.last().unwrap().contains("\"skipped\":true"));
    assert_eq!(native.3.len(), 3, "f1, f2 (tombstone) and b's keep-both copy");
}
