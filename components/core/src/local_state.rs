//! What this instance remembers between syncs, in the local `sync_metadata`
//! table: its id, the remote version and epoch it last synced with, its HLC,
//! and whether a resolution asked for a sync.

use crate::api::SyncError;
use crate::hlc::{Hlc, HlcClock};
use crate::model::validate_stable_id;
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
    Ok(LocalState { instance, instance_is_new, version, epoch, seen, resync_requested, last_sync_time })
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
