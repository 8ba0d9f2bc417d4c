//! Live sync progress for any number of SSE subscribers.
//!
//! One [`tokio::sync::broadcast`] ring of [`QUEUE_EVENTS_MAX`] events carries
//! every sync's events to every subscriber. Publishing never waits: the sync
//! thread only takes a short mutex and pushes into the ring. A subscriber that
//! reads too slowly (or not at all) falls behind by at most the ring's size;
//! past that it skips the oldest events and is told how many it missed. So a
//! slow or dead client never slows a sync, and memory stays bounded whatever
//! the clients do. A closed stream drops its receiver, which is all the
//! cleanup there is.

use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::response::sse::Event;
use davsync_core::ports::{Progress, ProgressEvent};
use futures_util::Stream;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::watch;

/// Events one subscriber may fall behind before it starts skipping.
pub const QUEUE_EVENTS_MAX: usize = 256;

/// One server-sent event, as broadcast.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HubEvent {
    /// `syncProgress`: integer percent, never decreasing within a sync.
    Progress(u8),
    /// `syncMessage`: a line per phase and per file.
    Message(Arc<str>),
    /// `syncComplete`: the summary JSON, byte for byte the POST response.
    Complete(Arc<str>),
    /// `syncError`: `{"error": cause, "kind": …}`.
    Error(Arc<str>),
}

impl HubEvent {
    /// The event as written on the wire.
    pub fn to_sse(&self) -> Event {
        match self {
            HubEvent::Progress(p) => Event::default().event("syncProgress").data(p.to_string()),
            HubEvent::Message(m) => Event::default().event("syncMessage").data(one_line(m)),
            HubEvent::Complete(body) => Event::default().event("syncComplete").data(&**body),
            HubEvent::Error(body) => Event::default().event("syncError").data(&**body),
        }
    }
}

/// SSE data cannot hold a bare newline; messages are lines anyway.
fn one_line(text: &str) -> String {
    text.replace(['\r', '\n'], " ")
}

#[derive(Debug, Default)]
struct Current {
    /// Percent of the sync in progress (none: no sync running).
    percent: Option<u8>,
}

/// The broadcast point between syncs and subscribers. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ProgressHub {
    inner: Arc<HubInner>,
}

#[derive(Debug)]
struct HubInner {
    tx: broadcast::Sender<HubEvent>,
    // Publishing and subscribing both hold this lock, so a new subscriber's
    // snapshot of the current percent and its place in the ring agree: it never
    // sees the percent go down.
    current: Mutex<Current>,
    shutdown: watch::Sender<bool>,
}

impl ProgressHub {
    /// A hub whose subscribers may each fall `queue_events_max` events behind.
    pub fn new(queue_events_max: usize) -> ProgressHub {
        let (tx, _) = broadcast::channel(queue_events_max.max(1));
        let (shutdown, _) = watch::channel(false);
        ProgressHub { inner: Arc::new(HubInner { tx, current: Mutex::new(Current::default()), shutdown }) }
    }

    fn current(&self) -> MutexGuard<'_, Current> {
        // The state is a plain percent: still meaningful after a panic elsewhere.
        self.inner.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn publish_locked(&self, current: &mut Current, event: HubEvent) {
        if let HubEvent::Progress(p) = event {
            current.percent = Some(p);
        }
        // No subscriber is not an error: the event just has no audience.
        let _ = self.inner.tx.send(event);
    }

    /// Marks a sync as started; the returned handle publishes its events and
    /// its end. Dropping the handle without an end publishes a `syncError`.
    pub fn begin_sync(&self) -> Arc<SyncBroadcast> {
        let mut cur = self.current();
        self.publish_locked(&mut cur, HubEvent::Progress(0));
        let state = Mutex::new(BroadcastState { last_percent: 0, ended: false });
        Arc::new(SyncBroadcast { hub: self.clone(), state })
    }

    /// How many subscribers are connected.
    pub fn subscriber_count(&self) -> usize {
        self.inner.tx.receiver_count()
    }

    /// Ends every subscriber's stream (server shutdown).
    pub fn close_all(&self) {
        self.inner.shutdown.send_replace(true);
    }

    /// A new subscriber's event stream: `connected`, then the current percent
    /// if a sync is running, then every event from now on.
    pub fn subscribe(&self) -> impl Stream<Item = Result<Event, Infallible>> + Send + use<> {
        let (rx, percent) = {
            let cur = self.current();
            (self.inner.tx.subscribe(), cur.percent)
        };
        let connected = serde_json::json!({ "sync_in_progress": percent.is_some() }).to_string();
        let mut first = vec![Event::default().event("connected").data(connected)];
        if let Some(p) = percent {
            first.push(HubEvent::Progress(p).to_sse());
        }
        first.reverse();
        let state = Subscriber { first, rx, shutdown: self.inner.shutdown.subscribe() };
        futures_util::stream::unfold(state, |mut s| async move {
            let event = s.next().await?;
            Some((Ok(event), s))
        })
    }
}

struct Subscriber {
    /// Events to send before the live ones, last first.
    first: Vec<Event>,
    rx: broadcast::Receiver<HubEvent>,
    shutdown: watch::Receiver<bool>,
}

impl Subscriber {
    async fn next(&mut self) -> Option<Event> {
        if let Some(e) = self.first.pop() {
            return Some(e);
        }
        if *self.shutdown.borrow() {
            return None;
        }
        tokio::select! {
            r = self.rx.recv() => match r {
                Ok(event) => Some(event.to_sse()),
                Err(RecvError::Lagged(missed)) => {
                    let text = format!("this client reads too slowly: {missed} progress events were skipped");
                    Some(HubEvent::Message(text.into()).to_sse())
                }
                Err(RecvError::Closed) => None,
            },
            _ = self.shutdown.changed() => None,
        }
    }
}

/// One running sync's voice on the hub, shared by the engine's progress port
/// and the code that ends the sync.
#[derive(Debug)]
pub struct SyncBroadcast {
    hub: ProgressHub,
    state: Mutex<BroadcastState>,
}

#[derive(Debug)]
struct BroadcastState {
    last_percent: u8,
    ended: bool,
}

impl SyncBroadcast {
    fn state(&self) -> MutexGuard<'_, BroadcastState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Publishes a progress report: the percent when it moved, then the line.
    /// Nothing after the end.
    pub fn report(&self, percent: u8, message: &str) {
        let mut st = self.state();
        if st.ended {
            return;
        }
        let mut cur = self.hub.current();
        let percent = percent.clamp(st.last_percent, 100);
        if percent != st.last_percent {
            st.last_percent = percent;
            self.hub.publish_locked(&mut cur, HubEvent::Progress(percent));
        }
        self.hub.publish_locked(&mut cur, HubEvent::Message(message.into()));
    }

    /// Publishes `syncComplete` with `body` and ends the sync.
    pub fn complete(&self, body: Arc<str>) {
        self.end(HubEvent::Complete(body));
    }

    /// Publishes `syncError` with `body` and ends the sync.
    pub fn fail(&self, body: Arc<str>) {
        self.end(HubEvent::Error(body));
    }

    fn end(&self, event: HubEvent) {
        let mut st = self.state();
        if st.ended {
            return;
        }
        st.ended = true;
        let mut cur = self.hub.current();
        self.hub.publish_locked(&mut cur, event);
        cur.percent = None;
    }
}

impl Drop for SyncBroadcast {
    fn drop(&mut self) {
        let body = super::error_body("the sync stopped unexpectedly", "internal");
        self.end(HubEvent::Error(body.into()));
    }
}

/// The engine's progress port, feeding a [`SyncBroadcast`].
#[derive(Debug)]
pub struct HubProgress {
    sync: Arc<SyncBroadcast>,
}

impl HubProgress {
    /// A progress sink publishing through `sync`.
    pub fn new(sync: Arc<SyncBroadcast>) -> HubProgress {
        HubProgress { sync }
    }
}

impl Progress for HubProgress {
    fn report(&mut self, event: ProgressEvent) {
        self.sync.report(event.percent, &event.message);
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    /// The wire text of the next event.
    async fn next_text(s: &mut (impl Stream<Item = Result<Event, Infallible>> + Unpin)) -> String {
        use axum::response::IntoResponse;
        let event = s.next().await.expect("an event").unwrap();
        // Render through axum's own SSE encoder: a one-event stream.
        let one = futures_util::stream::iter([Ok::<_, Infallible>(event)]);
        let body = axum::response::sse::Sse::new(one).into_response().into_body();
        let bytes = axum::body::to_bytes(body, 1 << 16).await.unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[test]
    fn a_subscriber_gets_connected_then_every_event_in_order() {
        rt().block_on(async {
            let hub = ProgressHub::new(16);
            let mut s = Box::pin(hub.subscribe());
            assert!(
                next_text(&mut s).await.starts_with("event: connected\ndata: {\"sync_in_progress\":false}")
            );
            let sync = hub.begin_sync();
            sync.report(10, "downloading metadata.db");
            sync.complete(r#"{"skipped":false}"#.into());
            assert_eq!(next_text(&mut s).await, "event: syncProgress\ndata: 0\n\n");
            assert_eq!(next_text(&mut s).await, "event: syncProgress\ndata: 10\n\n");
            assert_eq!(next_text(&mut s).await, "event: syncMessage\ndata: downloading metadata.db\n\n");
            assert_eq!(next_text(&mut s).await, "event: syncComplete\ndata: {\"skipped\":false}\n\n");
        });
    }

    #[test]
    fn a_late_subscriber_first_gets_the_current_percent() {
        rt().block_on(async {
            let hub = ProgressHub::new(16);
            let sync = hub.begin_sync();
            sync.report(40, "uploading a");
            let mut s = Box::pin(hub.subscribe());
            assert!(next_text(&mut s).await.contains("{\"sync_in_progress\":true}"));
            assert_eq!(next_text(&mut s).await, "event: syncProgress\ndata: 40\n\n");
            sync.report(60, "uploading b");
            assert_eq!(next_text(&mut s).await, "event: syncProgress\ndata: 60\n\n");
        });
    }

    #[test]
    fn a_subscriber_that_never_reads_holds_at_most_the_queue_and_is_told_what_it_missed() {
        rt().block_on(async {
            let hub = ProgressHub::new(8);
            let mut s = Box::pin(hub.subscribe());
            let sync = hub.begin_sync();
            // Far more events than the queue holds: publishing never waits.
            for n in 0..1000u32 {
                sync.report((n / 10) as u8, &format!("file {n}"));
            }
            assert!(next_text(&mut s).await.starts_with("event: connected"));
            let skipped = next_text(&mut s).await;
            assert!(skipped.contains("skipped"), "{skipped}");
            // Then exactly the last 8 events: the newest ones, still in order.
            let mut rest = Vec::new();
            for _ in 0..8 {
                rest.push(next_text(&mut s).await);
            }
            assert_eq!(rest.last().unwrap(), "event: syncMessage\ndata: file 999\n\n");
            sync.complete("{}".into());
            assert!(next_text(&mut s).await.starts_with("event: syncComplete"));
        });
    }

    #[test]
    fn a_dropped_stream_unsubscribes_and_shutdown_ends_the_others() {
        rt().block_on(async {
            let hub = ProgressHub::new(8);
            let a = hub.subscribe();
            let mut b = Box::pin(hub.subscribe());
            assert_eq!(hub.subscriber_count(), 2);
            drop(a);
            assert_eq!(hub.subscriber_count(), 1);
            let _ = next_text(&mut b).await; // connected
            hub.close_all();
            assert!(b.next().await.is_none());
        });
    }

    #[test]
    fn a_sync_dropped_without_an_end_publishes_a_sync_error() {
        rt().block_on(async {
            let hub = ProgressHub::new(8);
            let mut s = Box::pin(hub.subscribe());
            drop(hub.begin_sync());
            let _ = next_text(&mut s).await; // connected
            let _ = next_text(&mut s).await; // 0 %
            let e = next_text(&mut s).await;
            assert!(e.starts_with("event: syncError\ndata: {") && e.contains("unexpectedly"), "{e}");
            // And the hub no longer reports a sync in progress.
            let mut late = Box::pin(hub.subscribe());
            assert!(next_text(&mut late).await.contains("\"sync_in_progress\":false"));
        });
    }

    #[test]
    fn messages_stay_on_one_line() {
        assert_eq!(one_line("a\nb\r\nc"), "a b  c");
    }
}
