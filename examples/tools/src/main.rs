//! `componentize` wraps a WASI preview 1 core module into a WASI preview 2
//! component using the preview 1 *command* adapter shipped with wasmtime.
//!
//! Usage: `componentize IN.wasm OUT.wasm`
//!
//! The resulting component exports `wasi:cli/run`. If the input module carries
//! `component-type` custom sections (as emitted by `wit-bindgen`), the WIT
//! world described there is merged in, so the module may import WASI 0.2
//! interfaces (for example `wasi:sockets`) directly alongside preview 1 calls.
//! The encoded component is validated before it is written.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use wasi_preview1_component_adapter_provider::{
    WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME, WASI_SNAPSHOT_PREVIEW1_COMMAND_ADAPTER,
};
use wit_component::ComponentEncoder;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, output] = args.as_slice() else {
        bail!("usage: componentize IN.wasm OUT.wasm");
    };
    let input = PathBuf::from(input);
    let output = PathBuf::from(output);

    let bytes = std::fs::read(&input).with_context(|| format!("reading {}", input.display()))?;
    let component =
        componentize(&bytes).with_context(|| format!("componentizing {}", input.display()))?;
    std::fs::write(&output, &component).with_context(|| format!("writing {}", output.display()))?;
    Ok(())
}

/// Encodes a preview 1 command module as a component using the command adapter.
fn componentize(module: &[u8]) -> Result<Vec<u8>> {
    ComponentEncoder::default()
        .module(module)
        .context("parsing core module")?
        .adapter(
            WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME,
            WASI_SNAPSHOT_PREVIEW1_COMMAND_ADAPTER,
        )
        .context("loading the preview 1 command adapter")?
        .validate(true)
        .encode()
        .context("encoding component")
}
