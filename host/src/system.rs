//! The host's own small ports: the system clock, OS randomness, and progress
//! sinks for a terminal (a bar) or a log (plain lines).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use davsync_core::ports::{Clock, Phase, Progress, ProgressEvent, Random};
use indicatif::{ProgressBar, ProgressStyle};

/// The machine's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&mut self) -> i64 {
        let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
    }

    fn sleep_ms(&mut self, ms: u64) {
        std::thread::sleep(Duration::from_millis(ms));
    }
}

/// The operating system's random source.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsRandom;

impl Random for OsRandom {
    fn next_u64(&mut self) -> u64 {
        // An OS without a random source cannot make unique ids; stopping is
        // better than colliding.
        getrandom::u64().expect("the operating system's random source failed")
    }
}

/// A progress bar on a terminal (stderr).
#[derive(Debug)]
pub struct BarProgress {
    bar: ProgressBar,
}

impl BarProgress {
    /// A bar from 0 to 100 %.
    pub fn new() -> BarProgress {
        let bar = ProgressBar::new(100);
        let style = ProgressStyle::with_template("{spinner} [{bar:30}] {pos:>3}% {wide_msg}")
            .expect("valid template")
            .progress_chars("=> ");
        bar.set_style(style);
        BarProgress { bar }
    }
}

impl Default for BarProgress {
    fn default() -> Self {
        BarProgress::new()
    }
}

impl Progress for BarProgress {
    fn report(&mut self, event: ProgressEvent) {
        self.bar.set_position(u64::from(event.percent));
        self.bar.set_message(event.message);
        if event.phase == Phase::Done {
            self.bar.finish_and_clear();
        }
    }
}

/// Plain progress lines on stderr, for logs and pipes.
#[derive(Debug, Default)]
pub struct LineProgress;

impl Progress for LineProgress {
    fn report(&mut self, event: ProgressEvent) {
        eprintln!("[{:>3}%] {}", event.percent, event.message);
    }
}
