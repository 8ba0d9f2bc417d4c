//! The davsync host: runs the sync engine beside the app.
//!
//! - [`local_sqlite`]: the app's own SQLite database as the engine's local store.
//! - [`folder`]: the embedded default remote (a local folder that behaves like
//!   WebDAV) and blob transfer between the data folder and any remote.
//! - [`webdav`]: the WebDAV remote (streamed, concurrent blob transfers).
//! - [`component`]: the engine as a WebAssembly component in wasmtime.
//! - [`engine`]: one interface over the component and the native core.
//! - [`setup`]: the wiring for one data folder (store, remote, engine).
//! - [`cli`]: the `davsync` command line.
//! - [`serve`]: `davsync serve`, the HTTP API with live progress (SSE).
//! - [`datalock`]: one sync at a time per data folder, across processes.
#![warn(missing_docs)]

pub mod cli;
pub mod component;
pub mod datalock;
pub mod engine;
pub mod folder;
pub mod local_sqlite;
pub mod logging;
pub mod serve;
pub mod setup;
pub mod system;
pub mod webdav;
mod wit_convert;
mod wit_maintenance;
