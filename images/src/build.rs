//! Building wasm images in the store from a `.wasm` file: the OCI wasm artifact form (config
//! `application/vnd.wasm.config.v0+json`, one `application/wasm` layer) or the compat form (a tar
//! layer with the wasm at `/app.wasm`, platform `wasip1`/`wasip2` on `wasm`, and the
//! `module.wasm.image/variant=compat` annotation).

use std::path::{Path, PathBuf};

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
    let process = image.process();
    let spec = BuildSpec {
        wasm: store.read_blob(digest)?,
        format: Format::Compat,
        env: process.env.to_vec(),
        args: process.cmd.to_vec(),
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
    let put = |bytes: Vec<u8>| -> Result<(Digest, u64), BuildError> {
        Ok((store.put_bytes(&bytes)?, bytes.len() as u64))
    };
    let mut process = oci_spec::image::Config::default();
    process
        .set_env(Some(spec.env.clone()))
        .set_cmd(Some(spec.args.clone()));
    let (config, config_type, layer, layer_type) = match spec.format {
        Format::Artifact => {
            if !spec.add.is_empty() {
                return Err(BuildError::Input(
                    "--add needs --format compat (an artifact has no filesystem)".into(),
                ));
            }
            let config = WasmConfig {
                architecture: "wasm",
                os,
                layer_digests: vec![Digest::of(&spec.wasm).to_string()],
                config: process,
                component: component
                    .then(|| component_world(&spec.wasm))
                    .flatten()
                    .map(|(imports, exports)| World { imports, exports }),
            };
            (
                crate::oci::to_bytes(&config),
                WASM_CONFIG,
                spec.wasm.clone(),
                "application/wasm",
            )
        }
        Format::Compat => {
            let tar = tar_layer(&spec.wasm, &spec.add)?;
            process.set_entrypoint(Some(vec!["/app.wasm".into()]));
            let mut rootfs = oci_spec::image::RootFs::default();
            rootfs
                .set_typ("layers".into())
                .set_diff_ids(vec![Digest::of(&tar).to_string()]);
            let mut config = oci_spec::image::ImageConfiguration::default();
            config
                .set_architecture(arch.into())
                .set_os(os.into())
                .set_config(Some(process))
                .set_rootfs(rootfs);
            (
                crate::oci::to_bytes(&config),
                "application/vnd.oci.image.config.v1+json",
                tar,
                "application/vnd.oci.image.layer.v1.tar",
            )
        }
    };
    let layer_digest = store.put_bytes(&layer)?;
    let (cd, cs) = put(config)?;
    let layer = crate::oci::descriptor(layer_type, &layer_digest, layer.len() as u64);
    let mut manifest =
        crate::oci::manifest(crate::oci::descriptor(config_type, &cd, cs), vec![layer]);
    match spec.format {
        Format::Artifact => manifest.set_artifact_type(Some(WASM_CONFIG.into())),
        Format::Compat => manifest.set_annotations(Some(
            [(
                "module.wasm.image/variant".to_string(),
                "compat".to_string(),
            )]
            .into(),
        )),
    };
    let manifest = crate::oci::to_bytes(&manifest);
    let (md, ms) = put(manifest)?;
    Ok(Descriptor {
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        digest: md.to_string(),
        size: ms,
        annotations: Default::default(),
        extra: Default::default(),
    })
}

/// The config of a CNCF wasm artifact (`application/vnd.wasm.config.v0+json`): its platform,
/// its layer's digest, the process settings wasmbox adds, and a component's world.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct WasmConfig<'a> {
    architecture: &'a str,
    os: &'a str,
    layer_digests: Vec<String>,
    config: oci_spec::image::Config,
    #[serde(skip_serializing_if = "Option::is_none")]
    component: Option<World>,
}

/// A component's imports and exports, by interface name.
#[derive(serde::Serialize)]
struct World {
    imports: Vec<String>,
    exports: Vec<String>,
}

/// Reads a file named on the command line (the CLI's ambient entry point for build inputs).
pub fn read_input(path: &Path) -> Result<Vec<u8>, BuildError> {
    std::fs::read(path).map_err(|source| BuildError::Add {
        path: path.display().to_string(),
        source,
    })
}
