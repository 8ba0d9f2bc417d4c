//! Hybrid logical clock: the order used for last-write-wins.
//!
//! A stamp is `(physical_ms, counter, instance)`. An instance's clock never
//! goes backwards and always moves past every stamp it has observed, so a
//! write made after the writer has seen another write orders after it, however
//! wrong the writer's wall clock is (SPEC §4). Wall-clock comparison, as in the
//! seed, silently loses every edit of an instance whose clock runs behind.

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::model::{InvalidValue, validate_stable_id};

/// One HLC stamp. Ordered by physical time, then counter, then instance id
/// (the last only breaks exact ties deterministically).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Hlc {
    /// Milliseconds since the Unix epoch, as far as the clock knows.
    pub physical_ms: i64,
    /// Logical counter for events within one millisecond (or while the wall
    /// clock lags behind an observed stamp).
    pub counter: u32,
    /// The instance that made the stamp.
    pub instance: String,
}

impl Ord for Hlc {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.physical_ms, self.counter, &self.instance).cmp(&(
            other.physical_ms,
            other.counter,
            &other.instance,
        ))
    }
}

impl PartialOrd for Hlc {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Hlc {
    /// The stamp that sorts before every real one.
    pub fn zero() -> Hlc {
        Hlc { physical_ms: 0, counter: 0, instance: String::new() }
    }

    /// Parses the text form `PPPPPPPPPPPPPPP-CCCCCCCCCC-instance` written by
    /// [`fmt::Display`]. Text order equals stamp order for non-negative times.
    pub fn parse(s: &str) -> Result<Hlc, InvalidValue> {
        let bad = |why: &str| InvalidValue::new("hlc", s, why);
        let mut parts = s.splitn(3, '-');
        let (Some(p), Some(c), Some(instance)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad("expected physical-counter-instance"));
        };
        // Digits only: `from_str` also takes a leading `+`, and "+0…01" would
        // break "text order equals stamp order" (and print back differently).
        let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(p, 15) || !digits(c, 10) {
            return Err(bad("expected a 15-digit time and a 10-digit counter"));
        }
        let physical_ms: i64 = p.parse().map_err(|_| bad("time is not a number"))?;
        let counter: u32 = c.parse().map_err(|_| bad("counter is not a number"))?;
        validate_stable_id(instance).map_err(|_| bad("instance id is not valid"))?;
        Ok(Hlc { physical_ms, counter, instance: instance.to_owned() })
    }
}

impl fmt::Display for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:015}-{:010}-{}", self.physical_ms.max(0), self.counter, self.instance)
    }
}

impl TryFrom<String> for Hlc {
    type Error = InvalidValue;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Hlc::parse(&s)
    }
}

impl From<Hlc> for String {
    fn from(h: Hlc) -> String {
        h.to_string()
    }
}

/// An instance's clock state: the largest `(physical, counter)` it has made
/// or observed. Persisted in the local `sync_metadata` between syncs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HlcClock {
    instance: String,
    physical_ms: i64,
    counter: u32,
}

impl HlcClock {
    /// A clock for `instance` that has seen `last` (or nothing).
    pub fn new(instance: &str, last: Option<&Hlc>) -> HlcClock {
        let (physical_ms, counter) = last.map_or((0, 0), |h| (h.physical_ms, h.counter));
        HlcClock { instance: instance.to_owned(), physical_ms, counter }
    }

    /// Moves the clock past `seen` (a stamp read from the remote).
    pub fn observe(&mut self, seen: &Hlc) {
        if (seen.physical_ms, seen.counter) > (self.physical_ms, self.counter) {
            self.physical_ms = seen.physical_ms;
            self.counter = seen.counter;
        }
    }

    /// Stamps an event that happens at wall time `now_ms`: later than every
    /// stamp seen so far.
    pub fn tick(&mut self, now_ms: i64) -> Hlc {
        if now_ms > self.physical_ms {
            self.physical_ms = now_ms;
            self.counter = 0;
        } else if self.counter == u32::MAX {
            self.physical_ms += 1;
            self.counter = 0;
        } else {
            self.counter += 1;
        }
        self.current()
    }

    /// The current state as a stamp of this instance.
    pub fn current(&self) -> Hlc {
        Hlc { physical_ms: self.physical_ms, counter: self.counter, instance: self.instance.clone() }
    }

    /// The instance this clock belongs to.
    pub fn instance(&self) -> &str {
        &self.instance
    }
}

/// The stamp of a local edit the app made at `modified_at_ms` (its wall clock)
/// after this instance had seen everything up to `seen`. The edit happened
/// after the last sync observed `seen`, so it must order after it.
pub fn stamp_local_edit(seen: &HlcClock, modified_at_ms: i64) -> Hlc {
    let mut clock = seen.clone();
    clock.tick(modified_at_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(p: i64, c: u32, i: &str) -> Hlc {
        Hlc { physical_ms: p, counter: c, instance: i.into() }
    }

    #[test]
    fn text_form_round_trips_and_sorts_like_stamps() {
        let a = h(1_700_000_000_000, 3, "inst-a");
        let b = h(1_700_000_000_000, 12, "inst-a");
        assert_eq!(Hlc::parse(&a.to_string()).unwrap(), a);
        assert!(a < b);
        assert!(a.to_string() < b.to_string());
    }

    #[test]
    fn parse_refuses_garbage() {
        let signed = ["+00000000000001-0000000001-a", "000000000000001-+000000001-a"];
        for bad in ["", "1-2-x", "000000000000001-0000000001-a/b", "x00000000000001-0000000001-a"]
            .iter()
            .chain(&signed)
        {
            assert!(Hlc::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tick_moves_past_observed_stamps_even_with_a_slow_wall_clock() {
        let mut clock = HlcClock::new("b", None);
        clock.observe(&h(10_000, 5, "a"));
        let mine = clock.tick(1_000); // wall clock far behind
        assert!(mine > h(10_000, 5, "a"));
        assert_eq!(mine, h(10_000, 6, "b"));
        let later = clock.tick(20_000);
        assert_eq!(later, h(20_000, 0, "b"));
    }

    #[test]
    fn local_edit_after_a_sync_orders_after_what_that_sync_saw() {
        let mut seen = HlcClock::new("b", None);
        seen.observe(&h(5_000, 0, "a"));
        assert!(stamp_local_edit(&seen, 100) > h(5_000, 0, "a"));
        assert_eq!(stamp_local_edit(&seen, 9_000), h(9_000, 0, "b"));
    }

    #[test]
    fn counter_overflow_spills_into_physical_time() {
        let mut clock = HlcClock::new("a", Some(&h(7, u32::MAX, "a")));
        assert_eq!(clock.tick(0), h(8, 0, "a"));
    }
}
