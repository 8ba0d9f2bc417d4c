//! The davsync engine for remote maintenance alone: the `remote-maintenance`
//! world of `wit/davsync.wit`, which imports `remote`, `blobs`, `clock` and
//! `random` and exports `maintenance`.
//!
//! The full component (`components/sync`, world `sync-engine`) also imports
//! `local-store` and `progress`, which a serverless deployment has no use for
//! and no standard runtime provides. This crate compiles the very same guest
//! sources for the maintenance export (the `maintenance` module, the
//! remote/blob/clock/random ports and the SQLite host hooks are included by
//! path from `components/sync/src`), against bindings generated for the
//! smaller world. Nothing here is a copy: a change to the guest shows up in
//! both builds.

#[path = "../../sync/src/maintenance.rs"]
mod maintenance;
#[path = "../../sync/src/remote_ports.rs"]
mod remote_ports;
#[cfg(target_arch = "wasm32")]
#[path = "../../sync/src/sqlite_hooks.rs"]
mod sqlite_hooks;

/// The generated bindings of the `remote-maintenance` world.
///
/// wit-bindgen's generated glue is made of `unsafe` blocks; the workspace
/// denies `unsafe_code`, so it is allowed here, for generated code only.
#[allow(unsafe_code, missing_docs, missing_debug_implementations)]
mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "remote-maintenance",
    });

    use super::Component;
    export!(Component with_types_in crate::bindings);
}

/// The component's only export, `maintenance` (implemented in
/// `components/sync/src/maintenance.rs`).
#[derive(Debug)]
struct Component;
