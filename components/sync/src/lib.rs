//! The davsync WebAssembly component: a thin wit-bindgen guest over
//! [`davsync_core`].
//!
//! It exports the WIT `engine` interface by calling the core, and hands the
//! core an [`Io`] bundle whose ports are zero-sized structs that call the
//! component's imports (`local-store`, `remote`, `blobs`, `clock`, `random`,
//! `progress`). Nothing here decides anything: this crate only converts types
//! between the WIT records and the core's model (see [`convert`]).
//!
//! Built for `wasm32-unknown-unknown` and encoded into a component by
//! `host/build.rs` (TOOLCHAIN.md, route U). SQLite (inside the core, for the
//! remote `metadata.db`) reaches time and randomness only through the hooks in
//! `sqlite_hooks`, which call the same imports, so the component imports
//! nothing but the `davsync:sync` interfaces.

mod convert;
mod maintenance;
mod ports;
mod remote_ports;
#[cfg(target_arch = "wasm32")]
mod sqlite_hooks;

/// The generated bindings of the `sync-engine` world.
///
/// wit-bindgen's generated glue (canonical-ABI lifting and lowering, the
/// `link_section` carrying the component type, the export trampolines) is
/// made of `unsafe` blocks; the workspace denies `unsafe_code`, so it is
/// allowed here, for generated code only.
#[allow(unsafe_code, missing_docs, missing_debug_implementations)]
mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "sync-engine",
    });

    use super::Component;
    export!(Component with_types_in crate::bindings);
}

use bindings::exports::davsync::sync::engine as wit;
use davsync_core::ports::Io;

/// The component's exports: `engine` (here) and `maintenance`
/// ([`maintenance`]). Each call builds ports over the imports and runs the
/// matching core function.
#[derive(Debug)]
struct Component;

/// Runs `f` with the ports backed by this component's imports and converts
/// its error to the WIT `sync-error`.
fn with_io<T>(
    f: impl FnOnce(&mut Io<'_>) -> Result<T, davsync_core::SyncError>,
) -> Result<T, wit::SyncError> {
    let mut local = ports::HostLocalStore;
    let mut remote = remote_ports::HostRemote;
    let mut blobs = remote_ports::HostBlobs;
    let mut clock = remote_ports::HostClock;
    let mut random = remote_ports::HostRandom;
    let mut progress = ports::HostProgress;
    let mut io = Io {
        local: &mut local,
        remote: &mut remote,
        blobs: &mut blobs,
        clock: &mut clock,
        random: &mut random,
        progress: &mut progress,
    };
    f(&mut io).map_err(convert::sync_error_to_wit)
}

impl wit::Guest for Component {
    fn status(remote_retries_max: u32) -> Result<wit::StatusReport, wit::SyncError> {
        let report = with_io(|io| davsync_core::status(io, remote_retries_max))?;
        Ok(convert::status_to_wit(report))
    }

    fn sync(options: wit::SyncOptions) -> Result<wit::SyncSummary, wit::SyncError> {
        let options = convert::options_from_wit(options);
        let summary = with_io(|io| davsync_core::sync(io, &options))?;
        Ok(convert::summary_to_wit(summary))
    }

    fn conflicts() -> Result<Vec<wit::ConflictInfo>, wit::SyncError> {
        let list = with_io(davsync_core::conflicts)?;
        Ok(list.into_iter().map(convert::conflict_info_to_wit).collect())
    }

    fn resolve(stable_id: String, kind: wit::ResolutionKind) -> Result<wit::ResolveOutcome, wit::SyncError> {
        let resolution =
            davsync_core::Resolution { stable_id, kind: convert::resolution_kind_from_wit(kind) };
        let outcome = with_io(|io| davsync_core::resolve(io, &resolution))?;
        Ok(convert::resolve_outcome_to_wit(outcome))
    }
}
