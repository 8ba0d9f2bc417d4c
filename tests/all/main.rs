//! End-to-end tests across crates, compiled as one test binary of the host
//! (`host/Cargo.toml`, `[[test]] all`): the component's shape, the component
//! against the native core, and the `davsync` CLI; `servers` starts real WebDAV
//! servers on 127.0.0.1 (wsgidav, Apache, rclone) for them.

mod api;
// Issue 8: hostile and broken input, crash safety with real processes.
mod bad_input;
mod cli;
mod component_shape;
mod crash;
mod differential;
// issue 9
mod maintenance;
mod servers;
// issue 9: the deployable component under `wasmtime serve`
mod serverless;
mod servers_smoke;
mod site;
mod webdav;
