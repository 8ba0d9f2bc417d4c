//! The trace of a scenario: one line per event, hashed as it is written.
//! Two runs of one seed must give the same hash; a replay keeps the lines.
//! A run of many seeds reads neither, and turns the trace off: nothing is
//! formatted then (formatting was about a tenth of a scenario's CPU time).

use std::fmt::{self, Write as _};

use sha2::{Digest, Sha256};

/// What a run keeps of its trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceMode {
    /// Nothing: no line is formatted, and there is no hash.
    Off,
    /// The hash of the lines (the determinism checks).
    Hash,
    /// The hash and the lines themselves (replay).
    Lines,
}

/// Lines of a run and their running hash.
#[derive(Debug)]
pub struct Trace {
    /// `None` when the trace is off.
    hasher: Option<Sha256>,
    lines: Option<Vec<String>>,
    /// The line being written, reused from one line to the next.
    buf: String,
}

impl Trace {
    /// A trace that keeps what `mode` asks for.
    pub fn new(mode: TraceMode) -> Trace {
        Trace {
            hasher: (mode != TraceMode::Off).then(Sha256::new),
            lines: (mode == TraceMode::Lines).then(Vec::new),
            buf: String::new(),
        }
    }

    /// Appends the line `"{step:4} {text}"`. With the trace off, `text` is
    /// not formatted at all (one line per remote operation: this is hot).
    pub fn step(&mut self, step: u64, text: fmt::Arguments<'_>) {
        self.write(format_args!("{step:4} {text}"));
    }

    /// Appends one line.
    pub fn line(&mut self, text: fmt::Arguments<'_>) {
        self.write(text);
    }

    fn write(&mut self, text: fmt::Arguments<'_>) {
        let Some(hasher) = &mut self.hasher else { return };
        self.buf.clear();
        // Writing into a String cannot fail.
        let _ = self.buf.write_fmt(text);
        hasher.update(self.buf.as_bytes());
        hasher.update(b"\n");
        if let Some(lines) = &mut self.lines {
            lines.push(self.buf.clone());
        }
    }

    /// The hash (hex, 16 bytes; none with the trace off) and the kept lines.
    pub fn finish(self) -> (Option<String>, Option<Vec<String>>) {
        let hash = self.hasher.map(|h| h.finalize().iter().take(16).map(|b| format!("{b:02x}")).collect());
        (hash, self.lines)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash_of(lines: &[&str]) -> String {
        let mut h = Sha256::new();
        for line in lines {
            h.update(line.as_bytes());
            h.update(b"\n");
        }
        h.finalize().iter().take(16).map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn a_step_line_is_the_step_padded_to_four_then_the_text() {
        for (step, line) in [(7, "   7 n1 GET"), (1234, "1234 n1 GET"), (98_765, "98765 n1 GET")] {
            let mut trace = Trace::new(TraceMode::Lines);
            trace.step(step, format_args!("n{} GET", 1));
            let (hash, lines) = trace.finish();
            assert_eq!(lines.unwrap(), [line]);
            assert_eq!(hash.unwrap(), hash_of(&[line]), "step {step}");
        }
    }

    #[test]
    fn the_hash_does_not_depend_on_keeping_the_lines() {
        let run = |mode| {
            let mut trace = Trace::new(mode);
            trace.line(format_args!("seed {}", 3));
            trace.step(1, format_args!("n0 sync starts"));
            trace.finish()
        };
        let (kept, lines) = run(TraceMode::Lines);
        let (hashed, none) = run(TraceMode::Hash);
        assert_eq!(kept, hashed);
        assert_eq!(kept.unwrap(), hash_of(&["seed 3", "   1 n0 sync starts"]));
        assert_eq!(lines.unwrap().len(), 2);
        assert!(none.is_none());
    }

    #[test]
    fn an_off_trace_formats_nothing_and_has_no_hash() {
        struct Panics;
        impl fmt::Display for Panics {
            fn fmt(&self, _: &mut fmt::Formatter<'_>) -> fmt::Result {
                panic!("formatted with the trace off")
            }
        }
        let mut trace = Trace::new(TraceMode::Off);
        trace.step(1, format_args!("{}", Panics));
        trace.line(format_args!("{}", Panics));
        assert_eq!(trace.finish(), (None, None));
    }
}
