//! The CI budget: 10,000 native three-instance scenarios (2,500 per server
//! profile) and 200 on the real component. Split into tests so the harness
//! runs them on both cores.

use davsync_sim::{Engine, Profile};

use crate::sweep;

#[test]
fn native_strict_server_2500_seeds() {
    sweep(Engine::Native, Profile::Strict, 0..2_500);
}

#[test]
fn native_weak_etag_server_2500_seeds() {
    sweep(Engine::Native, Profile::Weak, 2_500..5_000);
}

#[test]
fn native_server_ignoring_conditionals_2500_seeds() {
    sweep(Engine::Native, Profile::Ignores, 5_000..7_500);
}

#[test]
fn native_server_locking_while_writing_2500_seeds() {
    sweep(Engine::Native, Profile::Locks, 7_500..10_000);
}

#[test]
#[cfg(feature = "wasm")]
fn wasm_component_100_seeds_mixed_servers() {
    sweep(Engine::Wasm, Profile::Mixed, 0..100);
}

#[test]
#[cfg(feature = "wasm")]
fn wasm_component_100_more_seeds_mixed_servers() {
    sweep(Engine::Wasm, Profile::Mixed, 100..200);
}
