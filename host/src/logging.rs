//! Logging via `tracing`, filtered by `RUST_LOG` (default: warnings), to stderr.
//!
//! Also the startup timing that `RUST_LOG=davsync::startup=debug` shows: the
//! wall time from [`mark_process_start`] (first thing in `main`) to the first
//! call into the engine, the CPU time the process's main thread had used by
//! then (exec and dynamic linking included) and the process's minor page
//! faults, logged once per process (benches/scale.rs reads it).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Installs the subscriber once; later calls do nothing.
pub fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

/// When `main` began, and the main thread's CPU time by then (exec, the
/// dynamic loader's relocations, the Rust runtime), in ns.
static PROCESS_START: OnceLock<(Instant, Option<u64>)> = OnceLock::new();

/// Records when the process started its own work (call first in `main`).
pub fn mark_process_start() {
    PROCESS_START.get_or_init(|| (Instant::now(), main_thread_cpu_ns()));
}

/// Logs, once per process, how long after [`mark_process_start`] the first
/// engine call begins (`engine`: which engine), at debug level under the
/// target `davsync::startup`.
pub fn note_engine_call(engine: &str) {
    static LOGGED: AtomicBool = AtomicBool::new(false);
    if let Some((start, cpu_at_main)) = PROCESS_START.get()
        && !LOGGED.swap(true, Ordering::Relaxed)
    {
        let micros = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
        // Wall time includes waiting for a CPU on a busy machine; the main
        // thread's own CPU time does not: since exec (`cpu_micros`) and since
        // `main` began (`main_cpu_micros`, the host's own code). The page
        // faults (several microseconds each on a VM, much of a start) do not
        // depend on load.
        let cpu_now = main_thread_cpu_ns();
        let cpu_micros = cpu_now.map_or(0, |ns| ns / 1_000);
        let main_cpu_micros =
            cpu_now.zip(*cpu_at_main).map_or(0, |(now, then)| now.saturating_sub(then) / 1_000);
        let minor_faults = minor_faults().unwrap_or(0);
        tracing::debug!(
            target: "davsync::startup",
            micros,
            cpu_micros,
            main_cpu_micros,
            minor_faults,
            engine,
            "first engine call"
        );
    }
}

/// CPU time of this thread so far (`CLOCK_THREAD_CPUTIME_ID`). The kernel
/// brings the running thread's total up to date for this clock, where
/// `/proc/thread-self/schedstat` shows it as of the last scheduler tick or
/// switch (up to a tick, milliseconds, behind).
fn main_thread_cpu_ns() -> Option<u64> {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    let ns = u64::try_from(now.tv_sec).ok()?.checked_mul(1_000_000_000)?;
    ns.checked_add(u64::try_from(now.tv_nsec).ok()?)
}

/// Minor page faults of this process so far (Linux `/proc/self/stat`).
fn minor_faults() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // After the command name in parentheses: state is field 3, minflt 10.
    stat.rsplit_once(')')?.1.split_whitespace().nth(7)?.parse().ok()
}
