//! Builds the davsync WebAssembly component as part of `cargo build -p davsync`.
//!
//! 1. A nested `cargo build -p davsync-component --target wasm32-unknown-unknown
//!    --release` in its own target directory `<target>/davsync-component` (so it never waits
//!    on the outer build's lock), with clang as the C compiler for SQLite
//!    (TOOLCHAIN.md, route U).
//! 2. `wit-component` turns that core module into a component.
//! 3. The component lands in `{OUT_DIR}/davsync_sync.wasm`; its path reaches
//!    the crate as `env!("DAVSYNC_COMPONENT_WASM")`, its SHA-256 (hex) as
//!    `env!("DAVSYNC_COMPONENT_SHA256")`.
//!
//!
//! Issue 9, the deployable component: the same nested build also compiles the
//! engine for the `remote-maintenance` world (`davsync-maintenance-component`),
//! the WebDAV transport over wasi:http (`davsync-wasi-transport`) and the HTTP
//! front (`davsync-http-front`); each is encoded with `wit-component`, and
//! the three are composed with `wac-graph` (see [`compose_serverless`]) into
//! `{OUT_DIR}/davsync_serverless.wasm`, also copied to
//! `<target>/davsync-component/davsync-serverless.wasm` for deployment. Its path
//! reaches the crate as `env!("DAVSYNC_SERVERLESS_WASM")`.
//!
//! Quiet on success; on failure the nested build's stderr is printed.

use std::env;
use std::error::Error;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sha2::Digest;

type BoxError = Box<dyn Error + Send + Sync>;

const TARGET: &str = "wasm32-unknown-unknown";
const CLANG_MISSING: &str =
    "davsync needs clang with a wasm32 backend to build the component: apt-get install -y clang-19";

/// Inherited variables that would leak the outer build's configuration (host
/// flags, coverage instrumentation, wrappers, target directory) into the wasm
/// build. `CARGO_CFG_*` / `CARGO_FEATURE_*` are harmless and stay.
const POISONING_ENV: &[&str] = &[
    "RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_BUILD_RUSTFLAGS",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "CARGO_BUILD_RUSTC_WRAPPER",
    "CARGO_BUILD_RUSTC_WORKSPACE_WRAPPER",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET_DIR",
    "CARGO_BUILD_TARGET",
    "LLVM_PROFILE_FILE",
];

fn main() {
    if let Err(e) = run() {
        eprintln!("error: building the davsync component failed: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), BoxError> {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").ok_or("CARGO_MANIFEST_DIR unset")?);
    let root = manifest_dir.parent().ok_or("host/ has no parent directory")?.to_path_buf();
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").ok_or("OUT_DIR unset")?);

    println!("cargo:rerun-if-changed=build.rs");
    for rel in [
        "components/core/src",
        "components/core/Cargo.toml",
        "components/sync",
        "components/maintenance",
        "components/wasi-transport",
        "components/http-front",
        "host/src/webdav/multistatus.rs",
        "wit",
        "Cargo.lock",
        "Cargo.toml",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(rel).display());
    }
    println!("cargo:rerun-if-env-changed=CC_wasm32_unknown_unknown");
    println!("cargo:rerun-if-env-changed=AR_wasm32_unknown_unknown");

    let (cc, ar) = wasm_c_toolchain(&out_dir)?;
    let modules = build_core_modules(&root, &out_dir, &cc, &ar)?;
    let component = encode(&modules.join("davsync_component.wasm"))?;

    // issue 9: the deployable component.
    let serverless = compose_serverless(
        &encode(&modules.join("davsync_maintenance_component.wasm"))?,
        &encode(&modules.join("davsync_wasi_transport.wasm"))?,
        &encode(&modules.join("davsync_http_front.wasm"))?,
    )?;
    let serverless_dest = out_dir.join("davsync_serverless.wasm");
    std::fs::write(&serverless_dest, &serverless)
        .map_err(|e| format!("writing {}: {e}", serverless_dest.display()))?;
    if let Some(nested) = modules.ancestors().nth(2) {
        let copy = nested.join("davsync-serverless.wasm");
        std::fs::write(&copy, &serverless).map_err(|e| format!("writing {}: {e}", copy.display()))?;
    }
    watch_own_output(&serverless_dest)?;
    println!("cargo:rustc-env=DAVSYNC_SERVERLESS_WASM={}", serverless_dest.display());

    let dest = out_dir.join("davsync_sync.wasm");
    // The compiled-component cache is keyed by this hash: computed here once,
    // not at every start of the host (it was the largest part of startup).
    let sha256: String = sha2::Sha256::digest(&component).iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(&dest, component).map_err(|e| format!("writing {}: {e}", dest.display()))?;
    watch_own_output(&dest)?;
    println!("cargo:rustc-env=DAVSYNC_COMPONENT_WASM={}", dest.display());
    println!("cargo:rustc-env=DAVSYNC_COMPONENT_SHA256={sha256}");
    Ok(())
}

/// The C compiler and archiver for the wasm target: the caller's
/// `CC_wasm32_unknown_unknown` / `AR_wasm32_unknown_unknown` if set, else
/// `clang-19` (or a plain `clang`) and `llvm-ar`. The compiler must really
/// emit wasm32 objects; that is probed before the (long) nested build starts.
fn wasm_c_toolchain(out_dir: &Path) -> Result<(OsString, OsString), BoxError> {
    let ar = env::var_os("AR_wasm32_unknown_unknown").unwrap_or_else(|| "llvm-ar".into());
    let candidates: Vec<OsString> = match env::var_os("CC_wasm32_unknown_unknown") {
        Some(cc) => vec![cc],
        None => vec!["clang-19".into(), "clang".into()],
    };
    let probe_src = out_dir.join("wasm32-probe.c");
    let probe_obj = out_dir.join("wasm32-probe.o");
    std::fs::write(&probe_src, "int davsync_probe(int x) { return x + 1; }\n")?;
    let mut tried = Vec::new();
    for cc in candidates {
        let probe = Command::new(&cc)
            .arg(format!("--target={TARGET}"))
            .args(["-c", "-o"])
            .arg(&probe_obj)
            .arg(&probe_src)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output();
        match probe {
            Ok(out) if out.status.success() => return Ok((cc, ar)),
            Ok(out) => tried.push(format!(
                "{} cannot compile for {TARGET}: {}",
                cc.to_string_lossy(),
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            Err(e) => tried.push(format!("{}: {e}", cc.to_string_lossy())),
        }
    }
    Err(format!("{CLANG_MISSING}\n({})", tried.join("; ")).into())
}

/// The crates of the nested build: the sync component, and (issue 9) the
/// three parts of the deployable component.
const WASM_PACKAGES: &[&str] =
    &["davsync-component", "davsync-maintenance-component", "davsync-wasi-transport", "davsync-http-front"];

/// Encodes the core module at `module` as a component (its WIT world is
/// embedded in the module by wit-bindgen).
fn encode(module: &Path) -> Result<Vec<u8>, BoxError> {
    let bytes = std::fs::read(module).map_err(|e| format!("reading {}: {e}", module.display()))?;
    let component = wit_component::ComponentEncoder::default()
        .module(&bytes)?
        .validate(true)
        .encode()
        .map_err(|e| format!("encoding {} as a component: {e:#}", module.display()))?;
    Ok(component)
}

/// Composes the deployable component (issue 9): the transport's exports
/// (`types`, `remote`, `blobs`, `clock`, `random`) satisfy the engine's
/// imports; the engine's `maintenance` (and the transport's `types` and
/// `remote`, whose types `maintenance` uses) satisfy the front's; the
/// front's `wasi:http/incoming-handler` is the composition's only export.
/// What stays unsatisfied (the WASI imports of the transport and the front)
/// becomes the composition's imports, merged by name.
fn compose_serverless(engine: &[u8], transport: &[u8], front: &[u8]) -> Result<Vec<u8>, BoxError> {
    use wac_graph::types::Package;
    use wac_graph::{CompositionGraph, EncodeOptions, PackageId};

    let mut graph = CompositionGraph::new();
    let mut register = |name: &str, bytes: &[u8]| -> Result<_, BoxError> {
        let package = Package::from_bytes(name, None, bytes.to_vec(), graph.types_mut())
            .map_err(|e| format!("reading the {name} component: {e:#}"))?;
        Ok(graph.register_package(package)?)
    };
    let transport = register("davsync:wasi-transport", transport)?;
    let engine = register("davsync:maintenance", engine)?;
    let front = register("davsync:http-front", front)?;

    let names = |graph: &CompositionGraph, package: PackageId, imports: bool| -> Vec<String> {
        let world = &graph.types()[graph[package].ty()];
        let items = if imports { &world.imports } else { &world.exports };
        items.keys().cloned().collect()
    };
    let transport_exports = names(&graph, transport, false);
    let engine_exports = names(&graph, engine, false);

    let transport_i = graph.instantiate(transport);
    let engine_i = graph.instantiate(engine);
    let front_i = graph.instantiate(front);
    for name in names(&graph, engine, true) {
        if !transport_exports.contains(&name) {
            return Err(
                format!("the WASI transport does not export `{name}`, which the engine imports").into()
            );
        }
        let export = graph.alias_instance_export(transport_i, &name)?;
        graph.set_instantiation_argument(engine_i, &name, export)?;
    }
    for name in names(&graph, front, true) {
        let source = if engine_exports.contains(&name) {
            engine_i
        } else if transport_exports.contains(&name) {
            transport_i
        } else {
            continue; // a WASI import: the composition imports it
        };
        let export = graph.alias_instance_export(source, &name)?;
        graph.set_instantiation_argument(front_i, &name, export)?;
    }
    let handler = names(&graph, front, false)
        .into_iter()
        .find(|n| n.starts_with("wasi:http/incoming-handler@"))
        .ok_or("the HTTP front exports no wasi:http/incoming-handler")?;
    let export = graph.alias_instance_export(front_i, &handler)?;
    graph.export(export, &handler)?;
    let bytes = graph.encode(EncodeOptions::default()).map_err(|e| format!("composing: {e:#}"))?;
    Ok(bytes)
}

/// Runs the nested cargo build and returns the folder of the core modules.
fn build_core_modules(
    root: &Path,
    out_dir: &Path,
    cc: &OsString,
    ar: &OsString,
) -> Result<PathBuf, BoxError> {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    // One nested target dir per outer target dir, shared by every profile
    // (dev, test, clippy's check): `OUT_DIR` is `<target>/<profile>/build/<pkg>/out`.
    let target_dir = out_dir
        .ancestors()
        .nth(4)
        .map_or_else(|| out_dir.join("component-target"), |t| t.join("davsync-component"));
    let mut cmd = Command::new(cargo);
    cmd.arg("build");
    for package in WASM_PACKAGES {
        cmd.args(["-p", package]);
    }
    cmd.args(["--target", TARGET, "--release"])
        .arg("--manifest-path")
        .arg(root.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        .current_dir(root)
        .env("CC_wasm32_unknown_unknown", cc)
        .env("AR_wasm32_unknown_unknown", ar)
        .stdin(Stdio::null());
    for key in POISONING_ENV {
        cmd.env_remove(key);
    }
    for (key, _) in env::vars_os() {
        if key.to_string_lossy().starts_with("CARGO_LLVM_COV") {
            cmd.env_remove(&key);
        }
    }
    let out = cmd.output().map_err(|e| format!("running cargo for the component: {e}"))?;
    if !out.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
        return Err(format!(
            "nested `cargo build -p {} --target {TARGET}` failed ({})",
            WASM_PACKAGES.join(" -p "),
            out.status
        )
        .into());
    }
    let dir = target_dir.join(TARGET).join("release");
    for package in WASM_PACKAGES {
        let module = dir.join(format!("{}.wasm", package.replace('-', "_")));
        if !module.is_file() {
            return Err(format!("the nested build succeeded but {} is missing", module.display()).into());
        }
    }
    Ok(dir)
}

/// Makes cargo rerun this script when the component it wrote is gone (e.g.
/// `OUT_DIR` was deleted): cargo does not look at `OUT_DIR` itself, only at
/// `rerun-if-changed` paths, and treats a missing one as changed. A path that
/// is written *during* the run would look changed on every build (cargo
/// compares it with the time the run started), so the file is dated back to a
/// fixed instant long before any build; the content is unaffected, and the
/// crate still recompiles whenever this script reruns.
fn watch_own_output(dest: &Path) -> Result<(), BoxError> {
    let long_ago = std::time::UNIX_EPOCH + std::time::Duration::from_secs(86_400);
    std::fs::File::options()
        .write(true)
        .open(dest)
        .and_then(|f| f.set_modified(long_ago))
        .map_err(|e| format!("dating back {}: {e}", dest.display()))?;
    println!("cargo:rerun-if-changed={}", dest.display());
    Ok(())
}
