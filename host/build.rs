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
        "wit",
        "Cargo.lock",
        "Cargo.toml",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(rel).display());
    }
    println!("cargo:rerun-if-env-changed=CC_wasm32_unknown_unknown");
    println!("cargo:rerun-if-env-changed=AR_wasm32_unknown_unknown");

    let (cc, ar) = wasm_c_toolchain(&out_dir)?;
    let module = build_core_module(&root, &out_dir, &cc, &ar)?;

    let bytes = std::fs::read(&module).map_err(|e| format!("reading {}: {e}", module.display()))?;
    let component = wit_component::ComponentEncoder::default()
        .module(&bytes)?
        .validate(true)
        .encode()
        .map_err(|e| format!("encoding {} as a component: {e:#}", module.display()))?;
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

/// Runs the nested cargo build and returns the path of the core module.
fn build_core_module(root: &Path, out_dir: &Path, cc: &OsString, ar: &OsString) -> Result<PathBuf, BoxError> {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    // One nested target dir per outer target dir, shared by every profile
    // (dev, test, clippy's check): `OUT_DIR` is `<target>/<profile>/build/<pkg>/out`.
    let target_dir = out_dir
        .ancestors()
        .nth(4)
        .map_or_else(|| out_dir.join("component-target"), |t| t.join("davsync-component"));
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .args(["-p", "davsync-component", "--target", TARGET, "--release"])
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
            "nested `cargo build -p davsync-component --target {TARGET}` failed ({})",
            out.status
        )
        .into());
    }
    let module = target_dir.join(TARGET).join("release").join("davsync_component.wasm");
    if !module.is_file() {
        return Err(format!("the nested build succeeded but {} is missing", module.display()).into());
    }
    Ok(module)
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
