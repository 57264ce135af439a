//! Building wasm images in the store from a `.wasm` file: the OCI wasm artifact form (config
//! `application/vnd.wasm.config.v0+json`, one `application/wasm` layer) or the compat form (a tar
//! layer with the wasm at `/app.wasm`, platform `wasip1`/`wasip2` on `wasm`, and the
//! `module.wasm.image/variant=compat` annotation).

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::detect::WASM_CONFIG;
use crate::digest::Digest;
use crate::store::{Descriptor, Store, StoreError};

/// Which image form to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A CNCF wasm OCI artifact.
    Artifact,
    /// A tar layer holding `/app.wasm` (and any added files).
    Compat,
}

/// What to build.
#[derive(Debug, Clone)]
pub struct BuildSpec {
    /// The wasm binary.
    pub wasm: Vec<u8>,
    /// The form.
    pub format: Format,
    /// `KEY=VALUE` environment.
    pub env: Vec<String>,
    /// Arguments after the program name.
    pub args: Vec<String>,
    /// Extra host files or directories and where they go (compat only).
    pub add: Vec<(PathBuf, String)>,
    /// The platform a compat image's config names (`OS/ARCH`, e.g. `linux/amd64` for engines
    /// that refuse other platforms, as Docker 20.10 does); `None`: `wasip1`/`wasip2` on `wasm`.
    /// The wasm is still found by its magic bytes.
    pub platform: Option<(String, String)>,
}

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The input is not a wasm binary.
    #[error("{0}")]
    Input(String),
    /// Reading an added file failed.
    #[error("adding {path}")]
    Add {
        /// The host path.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Storing failed.
    #[error("storing the image")]
    Store(#[from] StoreError),
}

/// Top-level import and export names of a component (for the artifact config).
pub fn component_world(wasm: &[u8]) -> Option<(Vec<String>, Vec<String>)> {
    use wasmparser::{Parser, Payload};
    let (mut imports, mut exports) = (Vec::new(), Vec::new());
    let mut depth = 0usize;
    for p in Parser::new(0).parse_all(wasm) {
        match p.ok()? {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(s) if depth == 0 => {
                for i in s {
                    imports.push(i.ok()?.name.0.to_string());
                }
            }
            Payload::ComponentExportSection(s) if depth == 0 => {
                for e in s {
                    exports.push(e.ok()?.name.0.to_string());
                }
            }
            _ => {}
        }
    }
    Some((imports, exports))
}

fn tar_layer(wasm: &[u8], add: &[(PathBuf, String)]) -> Result<Vec<u8>, BuildError> {
    let mut b = tar::Builder::new(Vec::new());
    b.mode(tar::HeaderMode::Deterministic);
    let mut h = tar::Header::new_ustar();
    h.set_size(wasm.len() as u64);
    h.set_mode(0o755);
    h.set_mtime(0);
    h.set_cksum();
    b.append_data(&mut h, "app.wasm", wasm)
        .expect("writing to memory");
    for (host, guest) in add {
        let err = |source| BuildError::Add {
            path: host.display().to_string(),
            source,
        };
        let guest = guest.trim_start_matches('/');
        let meta = std::fs::metadata(host).map_err(err)?;
        if meta.is_dir() {
            b.append_dir_all(guest, host).map_err(err)?;
        } else {
            b.append_path_with_name(host, guest).map_err(err)?;
        }
    }
    Ok(b.into_inner().expect("writing to memory"))
}

/// Builds the image in `store` and names it `name`. Returns the manifest digest.
pub fn build(store: &Store, name: &str, spec: &BuildSpec) -> Result<Digest, BuildError> {
    let _keep = store.keep_blobs()?;
    let desc = put_image(store, spec)?;
    let digest = desc.digest.parse().expect("a digest we computed");
    store.set_ref(name, desc)?;
    Ok(digest)
}

/// The compat form of a wasm artifact: its wasm at `/app.wasm` in a tar layer, with the artifact's
/// environment and arguments. This is the form container runtimes that unpack every image into a
/// filesystem (containerd 1.6) can run. The blobs are stored unnamed; returns the manifest's
/// descriptor. The caller holds the store's blob lock.
pub fn compat_of(store: &Store, image: &crate::image::Image) -> Result<Descriptor, BuildError> {
    let Some(crate::detect::Detection {
        form: crate::detect::Form::Artifact { digest, .. },
        ..
    }) = &image.detection
    else {
        return Err(BuildError::Input(format!(
            "{} is not a wasm artifact; only artifacts are converted",
            image.name
        )));
    };
    let digest: Digest = digest
        .parse()
        .map_err(|e: crate::digest::BadDigest| BuildError::Input(e.to_string()))?;
    let strings = |key: &str| -> Vec<String> {
        image.config["config"][key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect()
    };
    let spec = BuildSpec {
        wasm: store.read_blob(&digest)?,
        format: Format::Compat,
        env: strings("Env"),
        args: strings("Cmd"),
        add: Vec::new(),
        platform: None,
    };
    put_image(store, &spec)
}

/// Stores the image's blobs and returns its manifest's descriptor (unnamed).
fn put_image(store: &Store, spec: &BuildSpec) -> Result<Descriptor, BuildError> {
    if !spec.wasm.starts_with(b"\0asm") || spec.wasm.len() < 8 {
        return Err(BuildError::Input(
            "the input is not a wasm binary (no wasm magic number)".into(),
        ));
    }
    let component = crate::detect::is_component(&spec.wasm);
    let os = if component { "wasip2" } else { "wasip1" };
    if spec.platform.is_some() && spec.format != Format::Compat {
        return Err(BuildError::Input(
            "--platform needs --format compat (an artifact's platform is wasm)".into(),
        ));
    }
    let (os, arch) = match &spec.platform {
        Some((os, arch)) => (os.as_str(), arch.as_str()),
        None => (os, "wasm"),
    };
    let put_json = |v: &Value| -> Result<(Digest, u64), BuildError> {
        let b = serde_json::to_vec(v).expect("json serializes");
        Ok((store.put_bytes(&b)?, b.len() as u64))
    };
    let (config, config_type, layer, layer_type, annotations) = match spec.format {
        Format::Artifact => {
            if !spec.add.is_empty() {
                return Err(BuildError::Input(
                    "--add needs --format compat (an artifact has no filesystem)".into(),
                ));
            }
            let layer_digest = Digest::of(&spec.wasm);
            let mut config = json!({"architecture": "wasm", "os": os, "layerDigests": [layer_digest.to_string()],
                "config": {"Env": spec.env, "Cmd": spec.args}});
            if component && let Some((imports, exports)) = component_world(&spec.wasm) {
                config["component"] = json!({"imports": imports, "exports": exports});
            }
            (
                config,
                WASM_CONFIG,
                spec.wasm.clone(),
                "application/wasm",
                json!({}),
            )
        }
        Format::Compat => {
            let tar = tar_layer(&spec.wasm, &spec.add)?;
            let config = json!({"architecture": arch, "os": os,
                "config": {"Entrypoint": ["/app.wasm"], "Cmd": spec.args, "Env": spec.env},
                "rootfs": {"type": "layers", "diff_ids": [Digest::of(&tar).to_string()]}});
            (
                config,
                "application/vnd.oci.image.config.v1+json",
                tar,
                "application/vnd.oci.image.layer.v1.tar",
                json!({"module.wasm.image/variant": "compat"}),
            )
        }
    };
    let layer_digest = store.put_bytes(&layer)?;
    let (cd, cs) = put_json(&config)?;
    let mut manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": config_type, "digest": cd.to_string(), "size": cs},
        "layers": [{"mediaType": layer_type, "digest": layer_digest.to_string(), "size": layer.len()}],
    });
    if spec.format == Format::Artifact {
        manifest["artifactType"] = json!(WASM_CONFIG);
    }
    if annotations.as_object().is_some_and(|o| !o.is_empty()) {
        manifest["annotations"] = annotations;
    }
    let (md, ms) = put_json(&manifest)?;
    Ok(Descriptor {
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        digest: md.to_string(),
        size: ms,
        annotations: Default::default(),
        extra: Default::default(),
    })
}

/// Reads a file named on the command line (the CLI's ambient entry point for build inputs).
pub fn read_input(path: &Path) -> Result<Vec<u8>, BuildError> {
    std::fs::read(path).map_err(|source| BuildError::Add {
        path: path.display().to_string(),
        source,
    })
}
