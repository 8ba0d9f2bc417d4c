//! What this instance remembers between syncs, in the local `sync_metadata`
//! table: its id, the remote version and epoch it last synced with, its HLC,
//! whether a resolution asked for a sync, and what an unfinished sync was
//! about to publish.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::api::SyncError;
use crate::hlc::{Hlc, HlcClock};
use crate::model::{ContentHash, LocalRow, validate_stable_id};
use crate::ports::{Io, LocalError};

/// This instance's id (random, created on first use).
pub const META_INSTANCE: &str = "instance_id";
/// The remote `version` at the last sync.
pub const META_VERSION: &str = "remote_version";
/// The id of the remote commit at `remote_version` (remote format 2): the
/// next sync reads only the commits after it while it is still on the
/// remote's history.
pub const META_COMMIT: &str = "remote_commit";
/// The remote `epoch` at the last sync.
pub const META_EPOCH: &str = "remote_epoch";
/// The HLC state after the last sync.
pub const META_HLC: &str = "hlc";
/// ISO-8601 time of the last completed sync.
pub const META_LAST_SYNC: &str = "last_sync_time";
/// Non-empty when a resolution needs the next sync to run even if nothing
/// else changed.
pub const META_RESYNC: &str = "resync_requested";
/// The local states a sync is about to publish ([`OwnPushes`]), written
/// before its remote commit and cleared by its local commit.
pub const META_PUSHED: &str = "pushed_inputs";

/// The loaded state.
#[derive(Debug, Clone)]
pub struct LocalState {
    /// Instance id.
    pub instance: String,
    /// The id was made by this load and is not stored yet: the sync stores it
    /// with its local commit, so a first sync that fails leaves the local
    /// database untouched (and `status` never writes).
    pub instance_is_new: bool,
    /// Remote version at the last sync.
    pub version: Option<i64>,
    /// The id of the remote commit at `version` (none: format 1, or none recorded).
    pub commit: Option<String>,
    /// Remote epoch at the last sync.
    pub epoch: Option<String>,
    /// HLC after the last sync.
    pub seen: HlcClock,
    /// A resolution waits for a sync.
    pub resync_requested: bool,
    /// When the last sync finished.
    pub last_sync_time: Option<String>,
    /// What a sync that did not finish was about to publish.
    pub own_pushes: OwnPushes,
}

/// The local state a push was computed from (its *input*), recorded with the
/// stamp it was published under.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushedInput {
    /// The stamp of the published row.
    pub stamp: Hlc,
    /// The input's content hash.
    pub id: ContentHash,
    /// The input was a deletion.
    pub deleted: bool,
    /// [`FileMeta::digest`] of the input's metadata.
    pub meta: ContentHash,
}

impl PushedInput {
    /// The input `row` of a push stamped `stamp`.
    pub fn of(row: &LocalRow, stamp: Hlc) -> PushedInput {
        PushedInput { stamp, id: row.id.clone(), deleted: row.deleted, meta: row.meta.digest() }
    }
}

/// The inputs of the pushes of a sync whose remote commit may have landed
/// without its local commit (a crash, a lost response, a failed local
/// write), by stable id. With them the next sync tells apart a pending row
/// that *is* the input of this instance's own published row (superseded by
/// it) from one the app edited after that push was prepared (later than it,
/// whatever the wall clock says: the clock may have jumped backwards).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnPushes(BTreeMap<String, Vec<PushedInput>>);

impl OwnPushes {
    /// None recorded.
    pub const fn new() -> OwnPushes {
        OwnPushes(BTreeMap::new())
    }

    /// True when nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Records `row` as the input of a push stamped `stamp`; false if that
    /// push was recorded already. Earlier records of the same file are kept
    /// (an earlier attempt's commit may have landed); stamps are unique, so
    /// each matches only its own push.
    pub fn insert(&mut self, row: &LocalRow, stamp: &Hlc) -> bool {
        let input = PushedInput::of(row, stamp.clone());
        let inputs = self.0.entry(row.stable_id.clone()).or_default();
        if inputs.iter().any(|i| i.stamp == input.stamp) {
            return false;
        }
        inputs.push(input);
        true
    }

    /// The recorded input of the push of `stable_id` stamped `stamp`.
    pub fn get(&self, stable_id: &str, stamp: &Hlc) -> Option<&PushedInput> {
        self.0.get(stable_id)?.iter().find(|i| &i.stamp == stamp)
    }

    /// The `sync_metadata` value (JSON).
    pub fn encode(&self) -> String {
        self.encode_with(&[])
    }

    /// The `sync_metadata` value of these records plus `more` (stable id and
    /// input; those recorded already are left out), without building the
    /// union in memory: a first sync of 100,000 files records every file.
    ///
    /// Written into a buffer of the exact size, measured by a first pass:
    /// at 100,000 files the value is ~25 MB, and a buffer grown by doubling
    /// would leave as much again behind in the component's memory.
    pub fn encode_with(&self, more: &[(&str, &PushedInput)]) -> String {
        let mut more = more.to_vec();
        if !more.is_sorted_by(|a, b| a.0 <= b.0) {
            more.sort_by(|a, b| a.0.cmp(b.0));
        }
        let union = Union { recorded: self, more: &more };
        let mut size = ByteCount(0);
        serde_json::to_writer(&mut size, &union).expect("plain data serializes");
        let mut out = Vec::with_capacity(size.0);
        serde_json::to_writer(&mut out, &union).expect("plain data serializes");
        String::from_utf8(out).expect("serde_json writes UTF-8")
    }

    /// True when some of `more` is not recorded yet.
    pub fn lacks_any(&self, more: &[(&str, &PushedInput)]) -> bool {
        more.iter().any(|(id, input)| self.get(id, &input.stamp).is_none())
    }

    /// Reads a `sync_metadata` value written by [`OwnPushes::encode`].
    pub fn parse(value: &str) -> Result<OwnPushes, serde_json::Error> {
        let mut map: BTreeMap<String, Vec<PushedInput>> = serde_json::from_str(value)?;
        map.values_mut().for_each(Vec::shrink_to_fit);
        Ok(OwnPushes(map))
    }
}

/// Recorded inputs and more, as one JSON object (stable id to inputs), in
/// stable-id order; `more` is sorted by stable id.
struct Union<'a> {
    recorded: &'a OwnPushes,
    more: &'a [(&'a str, &'a PushedInput)],
}

impl Serialize for Union<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        let mut recorded = self.recorded.0.iter().peekable();
        let mut more = self.more;
        loop {
            // The next stable id of either side, with the inputs both hold.
            let next_more = more.first().map(|(id, _)| *id);
            let next_recorded = recorded.peek().map(|(id, _)| id.as_str());
            let id = match (next_recorded, next_more) {
                (None, None) => break,
                (Some(r), Some(m)) => r.min(m),
                (Some(r), None) => r,
                (None, Some(m)) => m,
            };
            let mut inputs: Vec<&PushedInput> = Vec::new();
            if next_recorded == Some(id) {
                inputs.extend(recorded.next().map(|(_, v)| v).into_iter().flatten());
            }
            let same = more.iter().take_while(|(m, _)| *m == id).count();
            for (_, input) in &more[..same] {
                if !inputs.iter().any(|i| i.stamp == input.stamp) {
                    inputs.push(input);
                }
            }
            more = &more[same..];
            map.serialize_entry(id, &inputs)?;
        }
        map.end()
    }
}

/// A writer that only counts the bytes written to it.
struct ByteCount(usize);

impl std::io::Write for ByteCount {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Loads the state, making up an instance id on first use (not stored here:
/// see [`LocalState::instance_is_new`]). Reads only.
pub fn load(io: &mut Io<'_>) -> Result<LocalState, SyncError> {
    let (instance, instance_is_new) = match io.local.meta_get(META_INSTANCE)? {
        Some(id) => {
            validate_stable_id(&id).map_err(|e| invalid(META_INSTANCE, &e.to_string()))?;
            (id, false)
        }
        None => (new_id(io, "i"), true),
    };
    let version = match non_empty(io.local.meta_get(META_VERSION)?) {
        None => None,
        Some(v) => Some(v.trim().parse::<i64>().map_err(|_| invalid(META_VERSION, &v))?),
    };
    let commit = match non_empty(io.local.meta_get(META_COMMIT)?) {
        Some(c) => Some(validate_stable_id(&c).map(|()| c.clone()).map_err(|_| invalid(META_COMMIT, &c))?),
        None => None,
    };
    let epoch = non_empty(io.local.meta_get(META_EPOCH)?);
    let last = match non_empty(io.local.meta_get(META_HLC)?) {
        None => None,
        Some(h) => Some(Hlc::parse(&h).map_err(|e| invalid(META_HLC, &e.to_string()))?),
    };
    let seen = HlcClock::new(&instance, last.as_ref());
    let resync_requested = non_empty(io.local.meta_get(META_RESYNC)?).is_some();
    let last_sync_time = non_empty(io.local.meta_get(META_LAST_SYNC)?);
    let own_pushes = load_own_pushes(io)?;
    Ok(LocalState {
        instance,
        instance_is_new,
        version,
        commit,
        epoch,
        seen,
        resync_requested,
        last_sync_time,
        own_pushes,
    })
}

/// The recorded inputs of this instance's pushes ([`META_PUSHED`]).
pub fn load_own_pushes(io: &mut Io<'_>) -> Result<OwnPushes, SyncError> {
    match non_empty(io.local.meta_get(META_PUSHED)?) {
        None => Ok(OwnPushes::default()),
        Some(v) => OwnPushes::parse(&v).map_err(|e| invalid(META_PUSHED, &e.to_string())),
    }
}

fn non_empty(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.trim().is_empty())
}

fn invalid(key: &str, value: &str) -> SyncError {
    SyncError::Local(LocalError::Invalid(format!("sync_metadata {key} = {value:?} is not valid")))
}

/// A fresh random id with a one-letter prefix saying what it names.
pub fn new_id(io: &mut Io<'_>, prefix: &str) -> String {
    format!("{prefix}{:016x}", io.random.next_u64())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(ms: i64, content: &[u8]) -> PushedInput {
        let stamp = Hlc { physical_ms: ms, counter: 0, instance: "ime".to_owned() };
        PushedInput { stamp, id: ContentHash::of(content), deleted: false, meta: ContentHash::of(b"meta") }
    }

    #[test]
    fn encoding_with_more_records_the_union_without_repeats() {
        let (a1, a2, b1, c1) = (input(1, b"a"), input(2, b"a2"), input(3, b"b"), input(4, b"c"));
        let mut recorded = OwnPushes::new();
        recorded.0.insert("fa".to_owned(), vec![a1.clone()]);
        recorded.0.insert("fc".to_owned(), vec![c1.clone()]);
        // Unsorted, one already recorded, one file twice.
        let more = [("fb", &b1), ("fa", &a2), ("fa", &a1), ("fb", &b1)];
        assert!(recorded.lacks_any(&more));
        assert!(!recorded.lacks_any(&[("fa", &a1)]));

        let union = OwnPushes::parse(&recorded.encode_with(&more)).unwrap();
        let mut expected = BTreeMap::new();
        expected.insert("fa".to_owned(), vec![a1, a2]);
        expected.insert("fb".to_owned(), vec![b1]);
        expected.insert("fc".to_owned(), vec![c1]);
        assert_eq!(union, OwnPushes(expected));
        assert_eq!(OwnPushes::parse(&recorded.encode()).unwrap(), recorded);
        assert_eq!(OwnPushes::new().encode(), "{}");
    }
}
