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

    /// Appends the line `format!("{step:4} {text}")`, without building it
    /// unless the lines are kept (one per remote operation: this is hot).
    pub fn step_line(&mut self, step: u64, text: &str) {
        // The digits, from the right, into a buffer of spaces.
        let mut digits = [b' '; 20];
        let (mut n, mut start) = (step, digits.len());
        loop {
            start -= 1;
            digits[start] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.hasher.update(&digits[start.min(digits.len() - 4)..]);
        self.hasher.update(b" ");
        self.hasher.update(text.as_bytes());
        self.hasher.update(b"\n");
        self.count += 1;
        if let Some(lines) = &mut self.lines {
            lines.push(format!("{step:4} {text}"));
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_line_hashes_as_the_line_it_keeps() {
        for step in [0, 7, 1234, 98_765, u64::MAX] {
            let mut fast = Trace::new(true);
            fast.step_line(step, "n1 GET version.txt -> ok");
            let mut plain = Trace::new(false);
            plain.line(format!("{step:4} n1 GET version.txt -> ok"));
            let (hash, lines) = fast.finish();
            assert_eq!(hash, plain.finish().0, "step {step}");
            assert_eq!(lines.unwrap(), [format!("{step:4} n1 GET version.txt -> ok")]);
        }
    }
}
