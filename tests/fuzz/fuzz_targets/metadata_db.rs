//! Remote `metadata.db` bytes into the core's validator and reader, the way
//! a sync uses them: open (header, length, integrity, schema, counters),
//! read every row, count, then merge one row and reopen what we would upload.
//! Never a panic; a database we accept and commit to must read back.
#![no_main]

use davsync_core::hlc::Hlc;
use davsync_core::model::{ContentHash, FileMeta, RemoteRow};
use davsync_core::remote_db::RemoteDb;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(mut db) = RemoteDb::from_bytes(data) else { return };
    let versions = db.row_versions();
    let _ = db.rows_changed_since(0);
    let _ = db.stats();
    if let Ok(versions) = versions {
        let ids: Vec<String> = versions.into_keys().take(8).collect();
        let _ = db.rows(&ids);
    }
    let version = db.version();
    let Some(next) = version.checked_add(1) else { return };
    let row = RemoteRow {
        stable_id: "fuzz-row".into(),
        id: ContentHash::of(b"fuzz"),
        meta: FileMeta {
            filename: "f.pdf".into(),
            doc_id: "10.1/x".into(),
            doc_id_type: "doi".into(),
            file_type: "pdf".into(),
            doc_collections: "[]".into(),
            doc_metadata: "{}".into(),
            file_metadata: "{}".into(),
            ..FileMeta::default()
        },
        deleted: false,
        remote_version: next,
        updated_at: "2024-01-01T00:00:00.000Z".into(),
        hlc: Hlc { physical_ms: 1_700_000_000_000, counter: 0, instance: "fuzz".into() },
    };
    if db.commit(&[row.clone()], next, "2024-01-01T00:00:00.000Z").is_ok() {
        let bytes = db.to_bytes().expect("a committed database serializes");
        let back = RemoteDb::from_bytes(&bytes).expect("what we upload, we can read back");
        assert_eq!(back.version(), next);
        assert_eq!(back.rows(&[row.stable_id.clone()]).expect("our row reads back"), vec![row]);
    }
});
