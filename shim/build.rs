//! Link settings for wasmbox's binaries.

fn main() {
    // Relative relocations packed (DT_RELR): the binaries stay position-independent (ASLR), but
    // the loader reads a few kilobytes instead of two megabytes of relocations at every exec,
    // and the shim is exec'd three times per container.
    println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    println!("cargo:rerun-if-changed=build.rs");
}
