//! `version.txt.lock/lease.json` bytes from the remote into the core's lease
//! parser: never a panic, and an accepted record survives a round trip.
#![no_main]

use davsync_core::lease::LeaseRecord;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(record) = LeaseRecord::parse(data) {
        let bytes = serde_json::to_vec(&record).expect("a parsed record serializes");
        assert_eq!(LeaseRecord::parse(&bytes), Some(record));
    }
});
