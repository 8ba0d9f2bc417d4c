//! Logging via `tracing`, filtered by `RUST_LOG` (default: warnings), to stderr.
//!
//! Also the startup timing that `RUST_LOG=davsync::startup=debug` shows: the
//! wall time from [`mark_process_start`] (first thing in `main`) to the first
//! call into the engine, and the CPU time the process's thread had used by
//! then (exec and dynamic linking included), logged once per process
//! (benches/scale.rs reads it).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Installs the subscriber once; later calls do nothing.
pub fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

static PROCESS_START: OnceLock<Instant> = OnceLock::new();

/// Records when the process started its own work (call first in `main`).
pub fn mark_process_start() {
    PROCESS_START.get_or_init(Instant::now);
}

/// Logs, once per process, how long after [`mark_process_start`] the first
/// engine call begins (`engine`: which engine), at debug level under the
/// target `davsync::startup`.
pub fn note_engine_call(engine: &str) {
    static LOGGED: AtomicBool = AtomicBool::new(false);
    if let Some(start) = PROCESS_START.get()
        && !LOGGED.swap(true, Ordering::Relaxed)
    {
        let micros = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
        // Wall time includes waiting for a CPU on a busy machine; the main
        // thread's own CPU time since exec (Linux schedstat, in ns) does not.
        let cpu_micros = main_thread_cpu_ns().map_or(0, |ns| ns / 1_000);
        tracing::debug!(target: "davsync::startup", micros, cpu_micros, engine, "first engine call");
    }
}

/// CPU time of this thread so far, from `/proc/thread-self/schedstat` (Linux).
fn main_thread_cpu_ns() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    text.split_whitespace().next()?.parse().ok()
}
