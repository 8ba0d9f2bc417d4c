//! Who may act on the data folder now, and the blocking work itself.
//!
//! Every sync and resolution first takes a [`RunClaim`] (one at a time per
//! server: the second gets a 409 saying since when the first runs), then, on
//! a blocking thread, the [`DataDirLock`] (one at a time per data folder, across
//! processes: the CLI takes it too). Syncs publish their progress through the
//! [`ProgressHub`].

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use davsync_core::model::iso8601_utc;
use davsync_core::ports::{Clock, NoProgress};
use davsync_core::{SyncOptions, SyncSummary};
use serde_json::Value;

use super::hub::{HubProgress, ProgressHub};
use super::{ApiError, answer};
use crate::datalock::DataDirLock;
use crate::setup::Setup;
use crate::system::SystemClock;

/// What holds the data folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activity {
    /// A sync (from `POST /sync` or the interval).
    Sync,
    /// A conflict resolution.
    Resolve,
}

/// The operation in progress.
#[derive(Debug, Clone)]
pub struct Running {
    /// What it is.
    pub activity: Activity,
    /// When it started (ISO-8601 UTC).
    pub since: String,
}

/// The right to act on the data folder; released when dropped.
#[derive(Debug)]
pub struct RunClaim {
    slot: Arc<Mutex<Option<Running>>>,
}

impl Drop for RunClaim {
    fn drop(&mut self) {
        *lock(&self.slot) = None;
    }
}

fn lock(slot: &Mutex<Option<Running>>) -> MutexGuard<'_, Option<Running>> {
    slot.lock().unwrap_or_else(|p| p.into_inner())
}

/// The one place that says what holds the data folder in this server.
#[derive(Debug, Clone, Default)]
pub struct ClaimSlot {
    slot: Arc<Mutex<Option<Running>>>,
}

impl ClaimSlot {
    /// What runs now, if anything.
    pub fn running(&self) -> Option<Running> {
        lock(&self.slot).clone()
    }

    /// Claims the data folder for `activity`, or says what holds it (409).
    pub fn try_claim(&self, activity: Activity) -> Result<RunClaim, ApiError> {
        let mut slot = lock(&self.slot);
        if let Some(r) = slot.as_ref() {
            return Err(ApiError::busy(r));
        }
        *slot = Some(Running { activity, since: iso8601_utc(SystemClock.now_ms()) });
        Ok(RunClaim { slot: self.slot.clone() })
    }
}

/// Runs syncs and resolutions for one data folder, one at a time.
#[derive(Debug)]
pub struct SyncRunner {
    setup: Setup,
    hub: ProgressHub,
    claims: ClaimSlot,
}

impl SyncRunner {
    /// A runner over `setup`, publishing to `hub`.
    pub fn new(setup: Setup, hub: ProgressHub) -> SyncRunner {
        SyncRunner { setup, hub, claims: ClaimSlot::default() }
    }

    /// The wiring.
    pub fn setup(&self) -> &Setup {
        &self.setup
    }

    /// What runs now, if anything.
    pub fn running(&self) -> Option<Running> {
        self.claims.running()
    }

    /// Claims the data folder for `activity`, or says what holds it (409).
    pub fn try_claim(&self, activity: Activity) -> Result<RunClaim, ApiError> {
        self.claims.try_claim(activity)
    }

    /// One sync, on the calling (blocking) thread. Its events go to every
    /// subscriber; `Ok` is the summary JSON, the same bytes `syncComplete`
    /// carried, and `Err` is what `syncError` carried.
    pub fn sync_blocking(&self, claim: RunClaim, force: bool) -> Result<Arc<str>, ApiError> {
        let broadcast = self.hub.begin_sync();
        let result = self.sync_locked(force, HubProgress::new(broadcast.clone()));
        let answer = match result {
            Ok(summary) => {
                let body: Arc<str> = summary_json(&summary).into();
                broadcast.complete(body.clone());
                Ok(body)
            }
            Err(e) => {
                broadcast.fail(e.body().into());
                Err(e)
            }
        };
        drop(claim);
        answer
    }

    fn sync_locked(&self, force: bool, progress: HubProgress) -> Result<SyncSummary, ApiError> {
        let _data = DataDirLock::try_acquire(&self.setup.data)?;
        let opts = SyncOptions { force, ..self.setup.sync_options() };
        let mut syncer = self.setup.syncer(Box::new(progress))?;
        answer(syncer.sync(&opts))
    }

    /// The interval's work: a sync only when the status says one is needed.
    /// Returns the summary when a sync ran.
    pub fn periodic_blocking(&self, claim: RunClaim) -> Result<Option<Arc<str>>, ApiError> {
        let retries = self.setup.sync_options().remote_retries_max;
        let status = answer(self.setup.syncer(Box::new(NoProgress))?.status(retries))?;
        if !status.needs_sync {
            return Ok(None);
        }
        self.sync_blocking(claim, false).map(Some)
    }
}

/// The summary as the API returns it: the engine's fields plus a sentence.
pub fn summary_json(s: &SyncSummary) -> String {
    let mut v = serde_json::to_value(s).expect("a summary serializes");
    if let Value::Object(map) = &mut v {
        map.insert("message".to_owned(), Value::String(summary_message(s)));
    }
    v.to_string()
}

fn summary_message(s: &SyncSummary) -> String {
    if s.skipped {
        return format!("already in sync (version {})", s.new_version);
    }
    let mut text = format!(
        "synced to version {}: {} uploaded, {} downloaded, {} deleted here, {} deleted remotely, \
         {} metadata, {} conflicts, {} errors",
        s.new_version,
        s.uploaded,
        s.downloaded,
        s.deleted_local,
        s.deleted_remote,
        s.metadata_synced,
        s.conflicts,
        s.errors
    );
    if s.epoch_changed {
        text.push_str("; the remote is not the one last synced with, so nothing was deleted because of it");
    }
    text
}

/// Runs the interval syncs until the process ends. A tick finds the folder
/// busy → skipped; a failure is logged and the next tick tries again.
pub async fn run_interval(runner: Arc<SyncRunner>, every: Duration) {
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Ok(claim) = runner.try_claim(Activity::Sync) else {
            tracing::debug!("interval sync skipped: the data folder is busy");
            continue;
        };
        let r = runner.clone();
        match tokio::task::spawn_blocking(move || r.periodic_blocking(claim)).await {
            Ok(Ok(Some(_))) => tracing::info!("interval sync done"),
            Ok(Ok(None)) => tracing::debug!("interval: nothing to sync"),
            Ok(Err(e)) => tracing::warn!("interval sync failed: {}", e.message),
            Err(e) => tracing::error!("interval sync panicked: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_json_has_the_api_fields_and_a_message() {
        let s = SyncSummary { uploaded: 2, new_version: 7, duration_ms: 12, ..SyncSummary::default() };
        let v: Value = serde_json::from_str(&summary_json(&s)).unwrap();
        for field in [
            "skipped",
            "uploaded",
            "downloaded",
            "deleted_local",
            "deleted_remote",
            "metadata_synced",
            "conflicts",
            "errors",
            "new_version",
            "duration_ms",
            "message",
        ] {
            assert!(v.get(field).is_some(), "missing {field} in {v}");
        }
        assert_eq!(v["uploaded"], 2);
        assert!(v["message"].as_str().unwrap().starts_with("synced to version 7: 2 uploaded"));
        let skipped = SyncSummary { skipped: true, new_version: 3, ..SyncSummary::default() };
        assert_eq!(summary_message(&skipped), "already in sync (version 3)");
    }

    #[test]
    fn one_claim_at_a_time_and_a_dropped_claim_frees_the_folder() {
        let slot = ClaimSlot::default();
        let claim = slot.try_claim(Activity::Sync).unwrap();
        let busy = slot.try_claim(Activity::Resolve).unwrap_err();
        assert_eq!(busy.status, axum::http::StatusCode::CONFLICT);
        let since = busy.since.clone().expect("a 409 says since when");
        assert!(busy.body().contains(&since));
        assert_eq!(slot.running().map(|r| r.activity), Some(Activity::Sync));
        drop(claim);
        assert!(slot.running().is_none());
        let _again = slot.try_claim(Activity::Resolve).unwrap();
    }
}
