//! The component that `build.rs` produced has exactly the shape of the WIT
//! world `sync-engine`: it imports the davsync:sync interfaces and nothing
//! else (no WASI: no ambient clock, randomness or file system), and exports
//! only the engine and remote maintenance.

const COMPONENT_BYTES_MAX: usize = 3 * 1024 * 1024;

#[test]
fn component_imports_only_davsync_interfaces_and_exports_the_engine() {
    let path = env!("DAVSYNC_COMPONENT_WASM");
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    println!("component {path}: {} bytes", bytes.len());
    assert!(
        bytes.len() < COMPONENT_BYTES_MAX,
        "component is {} bytes, over the {COMPONENT_BYTES_MAX}-byte budget",
        bytes.len()
    );

    let decoded = wit_component::decode(&bytes).expect("the artifact decodes as a component");
    let wit_component::DecodedWasm::Component(resolve, world) = &decoded else {
        panic!("{path} is a WIT package, not a component");
    };
    let world = &resolve.worlds[*world];
    let mut imports: Vec<String> = world.imports.keys().map(|k| resolve.name_world_key(k)).collect();
    let mut exports: Vec<String> = world.exports.keys().map(|k| resolve.name_world_key(k)).collect();
    imports.sort();
    exports.sort();

    // `types` is listed although the world does not import it by name: the
    // imported interfaces and the engine `use` its types, so the encoder
    // imports it as an instance that carries only type definitions (no
    // functions). Any host that satisfies the world provides it.
    assert_eq!(
        imports,
        [
            "davsync:sync/blobs@0.1.0",
            "davsync:sync/clock@0.1.0",
            "davsync:sync/local-store@0.1.0",
            "davsync:sync/progress@0.1.0",
            "davsync:sync/random@0.1.0",
            "davsync:sync/remote@0.1.0",
            "davsync:sync/types@0.1.0",
        ]
    );
    // issue 9: remote maintenance is exported beside the engine.
    assert_eq!(exports, ["davsync:sync/engine@0.1.0", "davsync:sync/maintenance@0.1.0"]);

    let types = resolve
        .interfaces
        .iter()
        .find(|(_, i)| i.name.as_deref() == Some("types"))
        .map(|(_, i)| i)
        .expect("the types interface is in the decoded package");
    assert!(types.functions.is_empty(), "`types` carries type definitions only");
}
