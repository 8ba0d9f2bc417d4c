//! Integration tests of davsync-core: virtual instances against the
//! in-memory WebDAV server, one test binary with a module per area.

mod basics;
mod conflicts;
mod faults;
mod harness;
mod history;
mod hostile;
mod lock;
