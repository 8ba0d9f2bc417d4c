//! The davsync WebAssembly component.
//!
//! This crate will become the thin wit-bindgen guest that exposes
//! [`davsync_core`] through the `davsync:sync` WIT world (see `wit/`). Until
//! that work lands (issue 3) it only re-exports the core so the workspace
//! layout is complete and the crate builds on every target.

pub use davsync_core as core;
