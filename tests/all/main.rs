//! End-to-end tests across crates, compiled as one test binary of the host
//! (`host/Cargo.toml`, `[[test]] all`): the component's shape, the component
//! against the native core, and the `davsync` CLI.

mod cli;
mod component_shape;
mod differential;
