//! `componentize` wraps a WASI preview 1 core module into a WASI preview 2
//! component using a preview 1 adapter shipped with wasmtime: the *command*
//! adapter, or with `--proxy` the *proxy* adapter (for `wasi:http/proxy`
//! handlers built as reactors, whose preview 1 calls are stdio, clocks and
//! random).
//!
//! Usage: `componentize [--proxy] IN.wasm OUT.wasm`
//!
//! Without `--proxy` the resulting component exports `wasi:cli/run`. If the input module carries
//! `component-type` custom sections (as emitted by `wit-bindgen`), the WIT
//! world described there is merged in, so the module may import WASI 0.2
//! interfaces (for example `wasi:sockets`) directly alongside preview 1 calls.
//! The encoded component is validated before it is written.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use wasi_preview1_component_adapter_provider::{
    WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME, WASI_SNAPSHOT_PREVIEW1_COMMAND_ADAPTER,
    WASI_SNAPSHOT_PREVIEW1_PROXY_ADAPTER,
};
use wit_component::ComponentEncoder;

fn main() -> Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let proxy = args.first().is_some_and(|a| a == "--proxy");
    if proxy {
        args.remove(0);
    }
    let [input, output] = args.as_slice() else {
        bail!("usage: componentize [--proxy] IN.wasm OUT.wasm");
    };
    let input = PathBuf::from(input);
    let output = PathBuf::from(output);

    let bytes = std::fs::read(&input).with_context(|| format!("reading {}", input.display()))?;
    let component = componentize(&bytes, proxy)
        .with_context(|| format!("componentizing {}", input.display()))?;
    std::fs::write(&output, &component).with_context(|| format!("writing {}", output.display()))?;
    Ok(())
}

/// Encodes a preview 1 module as a component using the command (or proxy) adapter.
fn componentize(module: &[u8], proxy: bool) -> Result<Vec<u8>> {
    let adapter = if proxy {
        WASI_SNAPSHOT_PREVIEW1_PROXY_ADAPTER
    } else {
        WASI_SNAPSHOT_PREVIEW1_COMMAND_ADAPTER
    };
    ComponentEncoder::default()
        .module(module)
        .context("parsing core module")?
        .adapter(WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME, adapter)
        .context("loading the preview 1 adapter")?
        .validate(true)
        .encode()
        .context("encoding component")
}
