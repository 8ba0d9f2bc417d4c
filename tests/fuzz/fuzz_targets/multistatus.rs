//! A PROPFIND answer body into the WebDAV client's multistatus parser: an
//! error or entries, never a panic, a hang or unbounded memory.
#![no_main]

use davsync_core::ports::RemoteStat;
use libfuzzer_sys::fuzz_target;

// The parser is compiled from the host's own source file: the host crate
// (wasmtime, and a build script that builds the component) is not built
// with sanitizers.
#[allow(dead_code, unreachable_pub)]
#[path = "../../../host/src/webdav/multistatus.rs"]
mod multistatus;

fuzz_target!(|data: &[u8]| {
    if let Ok(entries) = multistatus::parse_multistatus(data) {
        for e in entries {
            assert!(!e.stat.is_collection || e.stat.size == 0, "a collection with a size");
        }
    }
});
