//! `version.txt` bytes from the remote into the core's parser: never a
//! panic, and anything accepted is a non-negative counter that prints back
//! to the same number.
#![no_main]

use davsync_core::session::parse_version_txt;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = parse_version_txt(data) {
        assert!(v >= 0, "accepted negative {v}");
        assert_eq!(parse_version_txt(v.to_string().as_bytes()), Ok(v));
    }
});
