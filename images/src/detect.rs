//! Which images hold wasm, and where the entry is, following the rules in DESIGN.md
//! ("Which wasm, which entry").

use oci_spec::image::{Descriptor, ImageConfiguration, ImageManifest};

use crate::digest::Digest;

/// Config media type of CNCF wasm OCI artifacts.
pub const WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";
/// Layer media types that are wasm binaries themselves.
pub const WASM_LAYERS: &[&str] = &[
    "application/wasm",
    "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm",
    "application/vnd.wasm.content.layer.v1+wasm",
];
/// Platform OS names of wasm images (with architecture `wasm`).
pub const WASM_OS: &[&str] = &["wasi", "wasip1", "wasip2"];
/// Annotations (or config labels) that mark a compat image as wasm.
pub const VARIANT_KEYS: &[&str] = &["module.wasm.image/variant", "run.oci.handler"];

/// Whether a variant annotation's value (`module.wasm.image/variant`, `run.oci.handler`) says
/// a container whose `args[0]` is `arg0` runs wasm: `compat` and `wasm` always; their `-smart`
/// forms (crun's) only when `args[0]` names a `.wasm` or `.wat` file, so a native sidecar under
/// a pod-wide `-smart` annotation stays native. The image detector and the shim both ask this.
pub fn variant_means_wasm(value: &str, arg0: Option<&str>) -> bool {
    let wasm_file = arg0.is_some_and(|a| {
        let a = a.rsplit_once('#').map_or(a, |(p, _)| p);
        a.ends_with(".wasm") || a.ends_with(".wat")
    });
    match value {
        "compat" | "wasm" => true,
        "compat-smart" | "wasm-smart" => wasm_file,
        _ => false,
    }
}

/// Whether a container's annotations (or an image's labels) say it runs wasm, its `args[0]`
/// being `arg0`: any of [`VARIANT_KEYS`] by [`variant_means_wasm`].
pub fn annotations_mean_wasm(
    annotations: &std::collections::HashMap<String, String>,
    arg0: Option<&str>,
) -> bool {
    VARIANT_KEYS
        .iter()
        .filter_map(|k| annotations.get(*k))
        .any(|v| variant_means_wasm(v, arg0))
}

/// Where an image's wasm lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Form {
    /// The entry is a layer that is a wasm binary (layer index and digest).
    Artifact {
        /// Index in `layers`.
        index: usize,
        /// The layer's digest.
        digest: Digest,
    },
    /// The wasm is a file in the unpacked rootfs, named by the entrypoint.
    Compat,
}

/// The outcome of looking at an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detection {
    /// Where the wasm is.
    pub form: Form,
    /// Which rule said so (for `inspect` and logs).
    pub because: String,
}

/// What an image offers, as read from its manifest and config.
pub struct ImageFacts<'a> {
    /// The manifest.
    pub manifest: &'a ImageManifest,
    /// The config (empty for an artifact's `{}`: see [`crate::oci::parse_config`]).
    pub config: &'a ImageConfiguration,
    /// Platform from the index entry (`os`, `architecture`), else the config's is used.
    pub platform: Option<(&'a str, &'a str)>,
}

impl<'a> ImageFacts<'a> {
    fn layers(&self) -> &'a [Descriptor] {
        self.manifest.layers()
    }

    /// `args[0]` of the image config: the entrypoint's first word, else the cmd's.
    pub fn arg0(&self) -> Option<&'a str> {
        let c = self.config.config().as_ref()?;
        let first = |v: &'a Option<Vec<String>>| v.as_ref().and_then(|v| v.first());
        first(c.entrypoint())
            .or_else(|| first(c.cmd()))
            .map(String::as_str)
    }

    fn platform(&self) -> Option<(String, String)> {
        match self.platform {
            Some((os, arch)) => Some((os.to_string(), arch.to_string())),
            None => crate::oci::config_platform(self.config),
        }
    }

    fn variant(&self) -> Option<(&'static str, &'a str)> {
        let labels = self
            .config
            .config()
            .as_ref()
            .and_then(|c| c.labels().as_ref());
        for key in VARIANT_KEYS {
            let v = (self.manifest.annotations().as_ref())
                .and_then(|a| a.get(*key))
                .or_else(|| labels.and_then(|l| l.get(*key)));
            if let Some(v) = v {
                return Some((key, v));
            }
        }
        None
    }

    /// Says whether (and how) the image is wasm. `None` means the manifest and config do not say;
    /// the caller may still find the wasm magic at the entrypoint after unpacking.
    pub fn detect(&self) -> Option<Detection> {
        if self.manifest.config().media_type().to_string() == WASM_CONFIG {
            let digest = crate::oci::digest(self.layers().first()?).ok()?;
            return Some(Detection {
                form: Form::Artifact { index: 0, digest },
                because: format!("config media type {WASM_CONFIG}"),
            });
        }
        for (index, l) in self.layers().iter().enumerate() {
            let mt = l.media_type().to_string();
            if WASM_LAYERS.contains(&mt.as_str()) {
                return Some(Detection {
                    form: Form::Artifact {
                        index,
                        digest: crate::oci::digest(l).ok()?,
                    },
                    because: format!("layer {index} has media type {mt}"),
                });
            }
        }
        if let Some((os, arch)) = self.platform()
            && WASM_OS.contains(&os.as_str())
            && arch == "wasm"
        {
            return Some(Detection {
                form: Form::Compat,
                because: format!("platform {os}/{arch}"),
            });
        }
        if let Some((key, v)) = self.variant()
            && variant_means_wasm(v, self.arg0())
        {
            return Some(Detection {
                form: Form::Compat,
                because: format!("{key}={v}"),
            });
        }
        None
    }

    /// What the image is, in words, for refusing one that holds no wasm.
    pub fn describe(&self) -> String {
        let platform = self
            .platform()
            .map(|(o, a)| format!("platform {o}/{a}"))
            .unwrap_or_else(|| "no platform".into());
        let mut types: Vec<String> = self
            .layers()
            .iter()
            .map(|l| l.media_type().to_string())
            .collect();
        types.dedup();
        let entry = self
            .arg0()
            .map(|a| format!("entrypoint {a}"))
            .unwrap_or_else(|| "no entrypoint".into());
        format!(
            "{platform}, {} layer(s) ({}), {entry}",
            self.layers().len(),
            types.join(", ")
        )
    }
}

/// True when `bytes` start like a wasm module or component.
pub fn is_wasm(bytes: &[u8]) -> bool {
    bytes.starts_with(b"\0asm")
}

/// Whether a wasm binary (or its first 8 bytes) is a component rather than a core module.
pub fn is_component(bytes: &[u8]) -> bool {
    wasmparser::Parser::is_component(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A manifest with a config of media type `config` and layers of these media types, each
    /// of the digest its index names (`layer(i)`), with these annotations.
    fn manifest(config: &str, layers: &[&str], annotations: serde_json::Value) -> ImageManifest {
        let layers: Vec<_> = (0..layers.len())
            .map(|i| json!({"mediaType": layers[i], "digest": layer(i).to_string(), "size": 1}))
            .collect();
        serde_json::from_value(json!({"schemaVersion": 2,
            "config": {"mediaType": config, "digest": Digest::of(b"c").to_string(), "size": 1},
            "layers": layers, "annotations": annotations}))
        .unwrap()
    }

    fn layer(i: usize) -> Digest {
        Digest::of(&[i as u8])
    }

    fn config(v: serde_json::Value) -> ImageConfiguration {
        crate::oci::parse_config(&serde_json::to_vec(&v).unwrap()).unwrap()
    }

    fn facts<'a>(m: &'a ImageManifest, c: &'a ImageConfiguration) -> ImageFacts<'a> {
        ImageFacts {
            manifest: m,
            config: c,
            platform: None,
        }
    }

    const TAR: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    const IMAGE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

    #[test]
    fn wasm_artifact_config() {
        let m = manifest(WASM_CONFIG, &["application/wasm"], json!({}));
        let d = facts(&m, &config(json!({}))).detect().unwrap();
        assert_eq!(
            d.form,
            Form::Artifact {
                index: 0,
                digest: layer(0)
            }
        );
    }

    #[test]
    fn wasm_layer_media_types() {
        for mt in WASM_LAYERS {
            let m = manifest(IMAGE_CONFIG, &[TAR, mt], json!({}));
            let d = facts(&m, &config(json!({}))).detect().unwrap();
            assert_eq!(
                d.form,
                Form::Artifact {
                    index: 1,
                    digest: layer(1)
                },
                "{mt}"
            );
        }
    }

    #[test]
    fn wasm_platforms() {
        let m = manifest(IMAGE_CONFIG, &[TAR], json!({}));
        for os in WASM_OS {
            let c = config(json!({"os": os, "architecture": "wasm"}));
            assert_eq!(facts(&m, &c).detect().unwrap().form, Form::Compat, "{os}");
        }
        let c = config(json!({"os": "linux", "architecture": "amd64"}));
        assert!(facts(&m, &c).detect().is_none());
        let index_platform = ImageFacts {
            manifest: &m,
            config: &c,
            platform: Some(("wasip2", "wasm")),
        };
        assert!(index_platform.detect().is_some());
    }

    #[test]
    fn variant_annotations_and_smart_forms() {
        let c_wasm = config(json!({"config": {"Entrypoint": ["/app.wasm"]}}));
        let c_sh = config(json!({"config": {"Cmd": ["/bin/sh"]}}));
        for key in VARIANT_KEYS {
            for (v, on_wasm, on_sh) in [
                ("compat", true, true),
                ("wasm", true, true),
                ("compat-smart", true, false),
                ("wasm-smart", true, false),
                ("other", false, false),
            ] {
                let m = manifest(IMAGE_CONFIG, &[], json!({*key: v}));
                assert_eq!(facts(&m, &c_wasm).detect().is_some(), on_wasm, "{key}={v}");
                assert_eq!(facts(&m, &c_sh).detect().is_some(), on_sh, "{key}={v}");
                // The same as a config label.
                let m = manifest(IMAGE_CONFIG, &[], json!({}));
                let c =
                    config(json!({"config": {"Entrypoint": ["/app.wasm"], "Labels": {*key: v}}}));
                assert_eq!(facts(&m, &c).detect().is_some(), on_wasm, "label {key}={v}");
            }
        }
    }

    #[test]
    fn plain_linux_image_is_described() {
        let m = manifest(IMAGE_CONFIG, &[TAR, TAR], json!({}));
        let c =
            config(json!({"os": "linux", "architecture": "amd64", "config": {"Cmd": ["/bin/sh"]}}));
        let f = facts(&m, &c);
        assert!(f.detect().is_none());
        assert_eq!(
            f.describe(),
            format!("platform linux/amd64, 2 layer(s) ({TAR}), entrypoint /bin/sh")
        );
        assert_eq!(
            facts(&m, &config(json!({}))).describe(),
            format!("no platform, 2 layer(s) ({TAR}), no entrypoint")
        );
        assert!(is_wasm(b"\0asm\x01\0\0\0"));
        assert!(!is_wasm(b"\x7fELF"));
    }
}
