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

    /// Records `row` as the input of a push stamped `stamp`; false if that
    /// push was recorded already. Earlier records of the same file are kept
    /// (an earlier attempt's commit may have landed); stamps are unique, so
    /// each matches only its own push.
    pub fn insert(&mut self, row: &LocalRow, stamp: &Hlc) -> bool {
        let input = PushedInput {
            stamp: stamp.clone(),
            id: row.id.clone(),
            deleted: row.deleted,
            meta: row.meta.digest(),
        };
        self.insert_input(&row.stable_id, &input)
    }

    /// [`OwnPushes::insert`] of an input already taken from its row.
    pub fn insert_input(&mut self, stable_id: &str, input: &PushedInput) -> bool {
        let inputs = self.0.entry(stable_id.to_owned()).or_default();
        if inputs.iter().any(|i| i.stamp == input.stamp) {
            return false;
        }
        inputs.push(input.clone());
        true
    }

    /// The recorded input of the push of `stable_id` stamped `stamp`.
    pub fn get(&self, stable_id: &str, stamp: &Hlc) -> Option<&PushedInput> {
        self.0.get(stable_id)?.iter().find(|i| &i.stamp == stamp)
    }

    /// The `sync_metadata` value (JSON).
    pub fn encode(&self) -> String {
        serde_json::to_string(&self.0).expect("plain data serializes")
    }

    /// Reads a `sync_metadata` value written by [`OwnPushes::encode`].
    pub fn parse(value: &str) -> Result<OwnPushes, serde_json::Error> {
        let map: BTreeMap<String, Vec<PushedInput>> = serde_json::from_str(value)?;
        Ok(OwnPushes(map))
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
    let epoch = non_empty(io.local.meta_get(META_EPOCH)?);
    let last = match non_empty(io.local.meta_get(META_HLC)?) {
        None => None,
        Some(h) => Some(Hlc::parse(&h).map_err(|e| invalid(META_HLC, &e.to_string()))?),
    };
    let seen = HlcClock::new(&instance, last.as_ref());
    let resync_requested = non_empty(io.local.meta_get(META_RESYNC)?).is_some();
    let last_sync_time = non_empty(io.local.meta_get(META_LAST_SYNC)?);
    let own_pushes = match non_empty(io.local.meta_get(META_PUSHED)?) {
        None => OwnPushes::default(),
        Some(v) => OwnPushes::parse(&v).map_err(|e| invalid(META_PUSHED, &e.to_string()))?,
    };
    Ok(LocalState {
        instance,
        instance_is_new,
        version,
        epoch,
        seen,
        resync_requested,
        last_sync_time,
        own_pushes,
    })
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
