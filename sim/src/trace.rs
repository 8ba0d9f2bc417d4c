//! The trace of a scenario: one line per event, hashed as it is written.
//! Two runs of one seed must give the same hash; a replay keeps the lines.

use sha2::{Digest, Sha256};

/// Lines of a run and their running hash.
#[derive(Debug)]
pub struct Trace {
    hasher: Sha256,
    lines: Option<Vec<String>>,
    count: u64,
}

impl Trace {
    /// A trace that keeps its lines only if `keep`.
    pub fn new(keep: bool) -> Trace {
        Trace { hasher: Sha256::new(), lines: keep.then(Vec::new), count: 0 }
    }

    /// Appends one line.
    pub fn line(&mut self, line: String) {
        self.hasher.update(line.as_bytes());
        self.hasher.update(b"\n");
        self.count += 1;
        if let Some(lines) = &mut self.lines {
            lines.push(line);
        }
    }

    /// Number of lines so far.
    pub fn len(&self) -> u64 {
        self.count
    }

    /// True before the first line.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The hash (hex, 16 bytes) and the kept lines.
    pub fn finish(self) -> (String, Option<Vec<String>>) {
        let digest = self.hasher.finalize();
        (digest.iter().take(16).map(|b| format!("{b:02x}")).collect(), self.lines)
    }
}
