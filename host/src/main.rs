//! The `davsync` binary: see [`davsync::cli`].

fn main() -> std::process::ExitCode {
    davsync::logging::init();
    davsync::cli::main()
}
