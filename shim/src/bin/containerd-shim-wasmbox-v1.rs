//! containerd's runtime v2 shim for wasmbox (`io.containerd.wasmbox.v1`).

fn main() {
    std::process::exit(wasmbox_shim::containerd::main());
}
