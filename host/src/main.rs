//! The `davsync` binary: see [`davsync::cli`].

fn main() -> std::process::ExitCode {
    davsync::logging::mark_process_start();
    davsync::logging::init();
    davsync::cli::main()
}
