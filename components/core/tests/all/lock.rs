//! The lease: acquire, release, wait, break, renew, retry.

use davsync_core::lease::{LEASE_FILE, LOCK_DIR, LeaseRecord};
use davsync_core::mem::{Fault, ServerProfile};
use davsync_core::ports::RemoteError;
use std::cell::RefCell;
use std::rc::Rc;

use davsync_core::SyncError;
use davsync_core::ports::RemoteTransport;

use crate::harness::{Net, assert_converged};

fn lease_json(owner: &str, host: &str, ttl_ms: u64) -> Vec<u8> {
    let r = LeaseRecord { owner: owner.into(), host: host.into(), nonce: "n1".into(), ttl_ms };
    serde_json::to_vec(&r).unwrap()
}

fn hold_lock(net: &Net, owner: &str, host: &str, ttl_ms: u64) {
    net.remote.write_raw(LEASE_FILE, &lease_json(owner, host, ttl_ms));
}

#[test]
fn the_lock_is_taken_and_released() {
    let mut net = Net::strict();
    let mut a = net.node("a", 0);
    a.add("f1", b"x");
    a.sync();
    let log = net.remote.op_log();
    assert!(log.iter().any(|l| l == &format!("MKCOL {LOCK_DIR}")), "{log:?}");
    assert!(log.iter().any(|l| l == &format!("PUT {LEASE_FILE}")));
    assert!(!net.remote.exists(LOCK_DIR));
}

#[test]
fn a_held_lock_means_a_bounded_wait_and_an_error_naming_the_holder() {
    let mut net = Net::strict();
    let mut a = net.node("a", 0);
    a.add("f1", b"x");
    hold_lock(&net, "i-other", "workstation-7", 600_000);
    a.opts.lock_wait_ms = 5_000;
    let started = net.world.now_ms();
    let err = a.try_sync().unwrap_err();
    let waited = net.world.now_ms() - started;
    match err {
        SyncError::LockHeld { holder, expires_in_ms } => {
            assert!(holder.contains("i-other") && holder.contains("workstation-7"), "{holder}");
            assert!(expires_in_ms > 500_000, "{expires_in_ms}");
        }
        other => panic!("{other:?}"),
    }
    assert!((5_000..10_000).contains(&waited), "waited {waited} ms");
    assert!(net.remote.exists(LEASE_FILE), "someone else's lock is left alone");
    assert_eq!(a.row("f1").sync_status, davsync_core::model::SyncStatus::Modified);
}

#[test]
fn a_lock_released_while_waiting_is_taken() {
    let mut net = Net::strict();
    let mut a = net.node("a", 0);
    a.add("f1", b"x");
    hold_lock(&net, "i-other", "h", 600_000);
    // The holder releases after our first look.
    a.client.before("MKCOL", LOCK_DIR, |_, _| {});
    let remote = net.remote.clone();
    a.client.before("MKCOL", LOCK_DIR, move |_, _| {
        remote.server_mut().delete(LOCK_DIR).unwrap();
    });
    let started = net.world.now_ms();
    a.sync();
    assert!(net.world.now_ms() - started >= 1_000, "waited one poll");
    assert_converged(&net, &[&a]);
}

#[test]
fn a_stale_lease_is_broken() {
    let mut net = Net::strict();
    let mut a = net.node("a", 0);
    a.add("f1", b"x");
    hold_lock(&net, "i-dead", "gone", 60_000);
    net.advance(60_001);
    let s = a.sync();
    assert_eq!(s.uploaded, 1);
    assert!(!net.remote.exists(LOCK_DIR));
}

#[test]
fn a_lease_far_in_the_future_still_expires_by_the_server_clock() {
    let mut net = Net::strict();
    let mut a = net.node("a", 0);
    a.add("f1", b"x");
    hold_lock(&net, "i-greedy", "h", u64::MAX);
    net.advance(davsync_core::lease::LEASE_TTL_MAX_MS + 1);
    a.sync();
    assert_converged(&net, &[&a]);
}

#[test]
fn a_garbage_lease_ages_from_its_file_time() {
    let mut net = Net::strict();
    let mut a = net.node("a", 0);
    a.add("f1", b"x");
    net.remote.write_raw(LEASE_FILE, b"\x00\x01 not json");
    a.opts.lock_wait_ms = 1_000;
    let err = a.try_sync().unwrap_err();
    assert!(matches!(err, SyncError::LockHeld { ref holder, .. } if holder.contains("unknown")), "{err:?}");
    net.advance(a.opts.lease_ttl_ms);
    a.sync();
    assert_converged(&net, &[&a]);
}

#[test]
fn our_own_lease_from_a_crashed_run_is_broken_at_once() {
    let mut net = Net::strict();
    let mut a = net.node("a", 0);
    // Not the instance's first sync: a first sync stores the instance id
    // only with its local commit, so a crash in it leaves a lease under an
    // id nobody remembers, which waits out its TTL like anyone else's.
    a.add("f0", b"w");
    a.sync();
    a.add("f1", b"x");
    a.client.inject_on("PUT", "changes/", 0, Fault::Crash);
    assert!(a.try_sync().is_err());
    assert!(net.remote.exists(LEASE_FILE), "the crash left the lease behind");
    a.reconnect(&net);
    let started = net.world.now_ms();
    a.sync();
    assert!(net.world.now_ms() - started < 1_000, "no waiting for our own stale lease");
    assert_converged(&net, &[&a]);
}

#[test]
fn a_long_sync_renews_its_lease_and_keeps_others_out() {
    let mut net = Net::strict();
    let mut a = net.node("a", 0);
    let b = Rc::new(RefCell::new(net.node("b", 0)));
    for i in 0..6 {
        a.add(&format!("f{i}"), format!("content {i}").as_bytes());
    }
    a.opts.lease_ttl_ms = 10_000;
    a.blobs.delay_ms = 4_000; // 6 uploads: 24 s, more than twice the TTL
    b.borrow_mut().add("g", b"b's");
    b.borrow_mut().opts.lock_wait_ms = 0;
    // Just before a commits, b tries to sync.
    let b_result = Rc::new(RefCell::new(None));
    let (b2, slot) = (b.clone(), b_result.clone());
    a.client.before("PUT", "metadata.db", move |_, _| {
        *slot.borrow_mut() = Some(b2.borrow_mut().try_sync());
    });
    let s = a.sync();
    assert_eq!(s.uploaded, 6);
    let puts = net.remote.op_log().iter().filter(|l| *l == &format!("PUT {LEASE_FILE}")).count();
    assert!(puts >= 3, "lease written once and renewed at least twice, got {puts}");
    let b_err = b_result.borrow_mut().take().unwrap().unwrap_err();
    assert!(
        matches!(b_err, SyncError::LockHeld { ref holder, .. } if holder.contains("a-host")),
        "{b_err:?}"
    );
    let mut b = b.borrow_mut();
    b.sync();
    a.sync();
    assert_converged(&net, &[&a, &b]);
}

#[test]
fn a_423_on_the_lock_is_retried() {
    let mut net = Net::strict();
    let mut a = net.node("a", 0);
    a.add("f1", b"x");
    a.client.inject_on("MKCOL", LOCK_DIR, 0, Fault::Fail(RemoteError::Locked));
    a.client.inject_on("MKCOL", LOCK_DIR, 0, Fault::Fail(RemoteError::Locked));
    a.sync();
    assert_converged(&net, &[&a]);
}

/// rclone answers MKCOL on an existing collection with success: the lock
/// folder is no lock there. A second instance whose MKCOL "succeeds" while
/// the first holds the lease must find the lease file and wait, not take
/// over.
#[test]
fn a_non_exclusive_mkcol_does_not_let_a_rival_in() {
    let mut net = Net::new(ServerProfile::IgnoresConditionals);
    let mut a = net.node("a", 0);
    let b = Rc::new(RefCell::new(net.node("b", 0)));
    a.add("f", b"a's");
    b.borrow_mut().add("g", b"b's");
    b.borrow_mut().opts.lock_wait_ms = 0;
    let b_result = Rc::new(RefCell::new(None));
    let (b2, slot) = (b.clone(), b_result.clone());
    a.client.before("PUT", "metadata.db", move |_, _| {
        *slot.borrow_mut() = Some(b2.borrow_mut().try_sync());
    });
    a.sync();
    let b_err = b_result.borrow_mut().take().unwrap().unwrap_err();
    assert!(
        matches!(b_err, SyncError::LockHeld { ref holder, .. } if holder.contains("a-host")),
        "{b_err:?}"
    );
    let mut b = b.borrow_mut();
    b.sync();
    a.sync();
    assert_converged(&net, &[&a, &b]);
}
