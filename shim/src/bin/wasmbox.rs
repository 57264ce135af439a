//! The `wasmbox` command: parses arguments and dispatches; the work lives in `wasmbox_shim::cli`.

fn main() -> std::process::ExitCode {
    wasmbox_shim::cli::main()
}
