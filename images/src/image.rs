//! An image in the store: its manifest, config and wasm form, and the OCI runtime bundle it turns
//! into (the contract with the runtime crate).

use std::path::Path;

use cap_std::fs::Dir;
use oci_spec::image::{Descriptor, ImageConfiguration, ImageManifest};

use crate::blobs::Blobs;
use crate::detect::{Detection, Form, ImageFacts, is_wasm};
use crate::digest::Digest;
use crate::oci::Document;
use crate::store::{Store, StoreError};
use crate::unpack::{Budget, Compression, UnpackError, unpack_layer};

/// Most indexes followed to reach a manifest (an index of indexes is legal; a loop is not).
const MAX_INDEX_DEPTH: usize = 4;

/// Where an artifact's wasm is placed in its bundle's rootfs.
pub const ARTIFACT_ENTRY: &str = "app.wasm";

/// Errors about one image.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A store operation failed.
    #[error("image {image}")]
    Store {
        /// The image.
        image: String,
        /// Why.
        #[source]
        source: StoreError,
    },
    /// A manifest or config does not parse.
    #[error("image {image}: {what} is malformed: {reason}")]
    Malformed {
        /// The image.
        image: String,
        /// Which document.
        what: String,
        /// Why.
        reason: String,
    },
    /// The image holds no wasm.
    #[error("image {image} holds no wasm: {found}")]
    NotWasm {
        /// The image.
        image: String,
        /// What it holds instead.
        found: String,
    },
    /// No manifest of an index fits.
    #[error("image {image} has no wasm or {host} platform among {platforms}")]
    NoPlatform {
        /// The image.
        image: String,
        /// The host platform.
        host: String,
        /// What the index offers.
        platforms: String,
    },
    /// A layer did not unpack.
    #[error("image {image}, layer {layer}")]
    Unpack {
        /// The image.
        image: String,
        /// The layer's digest.
        layer: String,
        /// Why.
        #[source]
        source: UnpackError,
    },
    /// Writing the bundle failed.
    #[error("image {image}: writing bundle {path}")]
    Bundle {
        /// The image.
        image: String,
        /// Where.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl ImageError {
    /// A store operation on `image` that failed, for `map_err`.
    pub(crate) fn store(image: &str) -> impl FnOnce(StoreError) -> ImageError + '_ {
        move |source| ImageError::Store {
            image: image.to_string(),
            source,
        }
    }
}

/// An image read from the store.
#[derive(Debug, Clone)]
pub struct Image {
    /// The reference it was opened by.
    pub name: String,
    /// Digest of the (platform) manifest.
    pub manifest_digest: Digest,
    /// The manifest.
    pub manifest: ImageManifest,
    /// The config (see [`crate::oci::parse_config`]).
    pub config: ImageConfiguration,
    /// How it holds wasm, if the manifest and config say.
    pub detection: Option<Detection>,
}

/// From an index's `manifests`, the entry to run: a `wasi`/`wasip1`/`wasip2` on `wasm` one, else
/// the host's platform.
pub fn choose_platform(entries: &[Descriptor]) -> Option<&Descriptor> {
    let host = host_platform();
    let is = |m: &&Descriptor, want: &dyn Fn(&str, &str) -> bool| {
        let (os, arch) = crate::oci::platform(m);
        want(&os, &arch)
    };
    entries
        .iter()
        .find(|m| {
            is(m, &|os, arch| {
                crate::detect::WASM_OS.contains(&os) && arch == "wasm"
            })
        })
        .or_else(|| {
            entries
                .iter()
                .find(|m| is(m, &|os, arch| os == host.0 && arch == host.1))
        })
}

fn host_platform() -> (&'static str, &'static str) {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    ("linux", arch)
}

impl Image {
    /// Opens `name` (a canonical reference in the store). For an index, picks the `wasi/wasm`,
    /// `wasip1/wasm` or `wasip2/wasm` manifest, else the host's platform.
    pub fn open(store: &Store, name: &str) -> Result<Image, ImageError> {
        let desc = store.resolve(name).map_err(ImageError::store(name))?;
        let digest: Digest =
            desc.digest
                .parse()
                .map_err(|e: crate::digest::BadDigest| ImageError::Malformed {
                    image: name.to_string(),
                    what: "index entry".into(),
                    reason: e.to_string(),
                })?;
        Self::open_in(store, name, digest)
    }

    /// Opens the image `name` whose manifest or index is `digest`, reading from `blobs`. For an
    /// index, picks the manifest as [`Image::open`] does.
    pub fn open_in(blobs: &dyn Blobs, name: &str, digest: Digest) -> Result<Image, ImageError> {
        let serr = |source| ImageError::Store {
            image: name.to_string(),
            source,
        };
        let bad = |what: &str, reason: String| ImageError::Malformed {
            image: name.to_string(),
            what: what.to_string(),
            reason,
        };
        let mut digest = digest;
        let mut platform = None;
        let mut depth = 0;
        let manifest = loop {
            depth += 1;
            if depth > MAX_INDEX_DEPTH {
                return Err(bad(
                    &format!("index {digest}"),
                    format!("indexes nest deeper than {MAX_INDEX_DEPTH}"),
                ));
            }
            let bytes = blobs.read_blob(&digest).map_err(serr)?;
            let index =
                match Document::parse(&bytes).map_err(|e| bad(&format!("manifest {digest}"), e))? {
                    Document::Manifest(m) => break *m,
                    Document::Index(i) => i,
                    Document::Artifact(_) => {
                        return Err(bad(
                            &format!("manifest {digest}"),
                            "it is an artifact manifest, which names blobs, not an image".into(),
                        ));
                    }
                };
            let entries = index.manifests();
            let host = host_platform();
            let pick = choose_platform(entries).ok_or_else(|| ImageError::NoPlatform {
                image: name.to_string(),
                host: format!("{}/{}", host.0, host.1),
                platforms: entries
                    .iter()
                    .map(|m| {
                        let (o, a) = crate::oci::platform(m);
                        format!("{o}/{a}")
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
            platform = Some(crate::oci::platform(pick));
            digest = crate::oci::digest(pick).map_err(|e| bad("index entry", e.to_string()))?;
        };
        let config_digest = crate::oci::digest(manifest.config())
            .map_err(|e| bad("manifest config", e.to_string()))?;
        let config_bytes = blobs.read_blob(&config_digest).map_err(serr)?;
        let config = crate::oci::parse_config(&config_bytes)
            .map_err(|e| bad(&format!("config {config_digest}"), e))?;
        let detection = ImageFacts {
            manifest: &manifest,
            config: &config,
            platform: platform.as_ref().map(|(o, a)| (o.as_str(), a.as_str())),
        }
        .detect();
        Ok(Image {
            name: name.to_string(),
            manifest_digest: digest,
            manifest,
            config,
            detection,
        })
    }

    /// `args[0]` of its config: the entrypoint's first word, else the cmd's (decided in
    /// [`ImageFacts::arg0`]).
    pub fn arg0(&self) -> Option<&str> {
        self.facts().arg0()
    }

    fn facts(&self) -> ImageFacts<'_> {
        ImageFacts {
            manifest: &self.manifest,
            config: &self.config,
            platform: None,
        }
    }

    /// Total bytes of config and layers.
    pub fn size(&self) -> u64 {
        let layers: u64 = self.manifest.layers().iter().map(Descriptor::size).sum();
        layers + self.manifest.config().size()
    }

    /// The config's process settings: entrypoint, cmd, env and working directory, each empty
    /// when it says none.
    pub fn process(&self) -> Process<'_> {
        let c = self.config.config().as_ref();
        let list = |f: fn(&oci_spec::image::Config) -> &Option<Vec<String>>| {
            c.and_then(|c| f(c).as_deref()).unwrap_or_default()
        };
        Process {
            entrypoint: list(oci_spec::image::Config::entrypoint),
            cmd: list(oci_spec::image::Config::cmd),
            env: list(oci_spec::image::Config::env),
            cwd: c
                .and_then(|c| c.working_dir().as_deref())
                .filter(|s| !s.is_empty())
                .unwrap_or("/"),
        }
    }

    /// Writes an OCI runtime bundle for this image into `dir` (which must be empty or absent):
    /// `rootfs/` (the unpacked layers, or the artifact's wasm at `/app.wasm`) and `config.json`
    /// with the image's entrypoint, cmd, env and working directory. Returns the entry's guest path.
    pub fn write_bundle(
        &self,
        store: &Store,
        dir: &Path,
        budget: &mut Budget,
    ) -> Result<String, ImageError> {
        let io = |path: &str| {
            let path = path.to_string();
            let image = self.name.clone();
            move |source| ImageError::Bundle {
                image,
                path,
                source,
            }
        };
        std::fs::create_dir_all(dir.join("rootfs")).map_err(io("rootfs"))?;
        // Ambient authority, named: the bundle directory the caller chose.
        let root = Dir::open_ambient_dir(dir.join("rootfs"), cap_std::ambient_authority())
            .map_err(io("rootfs"))?;
        let process = self.process();
        let (args, readonly) = match &self.detection {
            Some(Detection {
                form: Form::Artifact { digest, .. },
                ..
            }) => {
                let mut src = store
                    .open_blob(digest)
                    .map_err(ImageError::store(&self.name))?;
                let mut dst = root.create(ARTIFACT_ENTRY).map_err(io(ARTIFACT_ENTRY))?;
                std::io::copy(&mut src, &mut dst).map_err(io(ARTIFACT_ENTRY))?;
                let mut args = vec![format!("/{ARTIFACT_ENTRY}")];
                args.extend_from_slice(process.cmd);
                (args, true)
            }
            _ => {
                for l in self.manifest.layers() {
                    let d = crate::oci::digest(l).map_err(|e| ImageError::Malformed {
                        image: self.name.clone(),
                        what: "layer".into(),
                        reason: e.to_string(),
                    })?;
                    let blob = store.open_blob(&d).map_err(ImageError::store(&self.name))?;
                    let compression = Compression::from_media_type(l.media_type().as_ref());
                    unpack_layer(&root, blob, compression, budget).map_err(|source| {
                        ImageError::Unpack {
                            image: self.name.clone(),
                            layer: d.to_string(),
                            source,
                        }
                    })?;
                }
                let mut args = process.entrypoint.to_vec();
                args.extend_from_slice(process.cmd);
                let entry_is_wasm = args.first().is_some_and(|a| {
                    let rel = a.split('#').next().unwrap_or(a).trim_start_matches('/');
                    let mut head = [0u8; 4];
                    root.open(rel)
                        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head))
                        .is_ok()
                        && is_wasm(&head)
                });
                if self.detection.is_none() && !entry_is_wasm {
                    return Err(ImageError::NotWasm {
                        image: self.name.clone(),
                        found: self.facts().describe(),
                    });
                }
                (args, false)
            }
        };
        let spec = crate::bundle::spec(&args, process.env, process.cwd, readonly, &self.name);
        std::fs::write(
            dir.join("config.json"),
            serde_json::to_vec_pretty(&spec).expect("a spec serializes"),
        )
        .map_err(io("config.json"))?;
        Ok(args.first().cloned().unwrap_or_default())
    }
}

/// An image config's process settings (see [`Image::process`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Process<'a> {
    /// `Entrypoint`.
    pub entrypoint: &'a [String],
    /// `Cmd`.
    pub cmd: &'a [String],
    /// `Env`.
    pub env: &'a [String],
    /// `WorkingDir`, `/` when it names none.
    pub cwd: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Descriptor;
    use serde_json::{Value, json};

    const WASM: &[u8] = b"\0asm\x01\0\0\0";

    fn put_json(s: &Store, v: &Value) -> (Digest, u64) {
        let b = serde_json::to_vec(v).unwrap();
        (s.put_bytes(&b).unwrap(), b.len() as u64)
    }

    fn desc(mt: &str, d: &Digest, size: u64) -> Descriptor {
        Descriptor {
            media_type: mt.into(),
            digest: d.to_string(),
            size,
            annotations: Default::default(),
            extra: Default::default(),
        }
    }

    fn manifest(s: &Store, config: Value, layers: Vec<(&str, Vec<u8>)>) -> (Digest, u64) {
        let (cd, cs) = put_json(s, &config);
        let layers: Vec<Value> = layers
            .into_iter()
            .map(|(mt, b)| json!({"mediaType": mt, "digest": s.put_bytes(&b).unwrap().to_string(), "size": b.len()}))
            .collect();
        let config_type = if config.get("os").is_none() && config.get("config").is_none() {
            crate::detect::WASM_CONFIG
        } else {
            "application/vnd.oci.image.config.v1+json"
        };
        put_json(
            s,
            &json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": config_type, "digest": cd.to_string(), "size": cs}, "layers": layers}),
        )
    }

    fn tar_with(path: &str, data: &[u8]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o755);
        h.set_cksum();
        b.append_data(&mut h, path, data).unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn artifact_bundle() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("s")).unwrap();
        let (d, n) = manifest(&s, json!({}), vec![("application/wasm", WASM.to_vec())]);
        s.set_ref(
            "r/a:1",
            desc("application/vnd.oci.image.manifest.v1+json", &d, n),
        )
        .unwrap();
        let img = Image::open(&s, "r/a:1").unwrap();
        assert!(matches!(
            img.detection.as_ref().unwrap().form,
            Form::Artifact { index: 0, .. }
        ));
        let b = dir.path().join("bundle");
        assert_eq!(
            img.write_bundle(&s, &b, &mut Budget::default()).unwrap(),
            "/app.wasm"
        );
        assert_eq!(std::fs::read(b.join("rootfs/app.wasm")).unwrap(), WASM);
        let spec: Value =
            serde_json::from_slice(&std::fs::read(b.join("config.json")).unwrap()).unwrap();
        assert_eq!(spec["process"]["args"], json!(["/app.wasm"]));
        assert_eq!(spec["root"]["readonly"], json!(true));
    }

    #[test]
    fn compat_bundle_from_an_index() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("s")).unwrap();
        let config = json!({"os": "wasip1", "architecture": "wasm",
            "config": {"Entrypoint": ["/bin/app.wasm"], "Cmd": ["x"], "Env": ["A=1"], "WorkingDir": "/bin"}});
        let (m, mn) = manifest(
            &s,
            config,
            vec![(
                "application/vnd.oci.image.layer.v1.tar",
                tar_with("bin/app.wasm", WASM),
            )],
        );
        let (linux, ln) = manifest(
            &s,
            json!({"os": "linux", "architecture": "amd64", "config": {}}),
            vec![],
        );
        let (idx, n) = put_json(
            &s,
            &json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": linux.to_string(), "size": ln, "platform": {"os": "linux", "architecture": "amd64"}},
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": m.to_string(), "size": mn, "platform": {"os": "wasip1", "architecture": "wasm"}}]}),
        );
        s.set_ref(
            "r/c:1",
            desc("application/vnd.oci.image.index.v1+json", &idx, n),
        )
        .unwrap();
        let img = Image::open(&s, "r/c:1").unwrap();
        assert_eq!(img.manifest_digest, m);
        let b = dir.path().join("bundle");
        assert_eq!(
            img.write_bundle(&s, &b, &mut Budget::default()).unwrap(),
            "/bin/app.wasm"
        );
        assert_eq!(std::fs::read(b.join("rootfs/bin/app.wasm")).unwrap(), WASM);
        let spec: Value =
            serde_json::from_slice(&std::fs::read(b.join("config.json")).unwrap()).unwrap();
        assert_eq!(spec["process"]["args"], json!(["/bin/app.wasm", "x"]));
        assert_eq!(spec["process"]["env"], json!(["A=1"]));
        assert_eq!(spec["process"]["cwd"], json!("/bin"));
        assert_eq!(spec["root"]["readonly"], json!(false));
    }

    #[test]
    fn plain_linux_image_is_refused_saying_what_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("s")).unwrap();
        let config =
            json!({"os": "linux", "architecture": "amd64", "config": {"Cmd": ["/bin/sh"]}});
        let (m, n) = manifest(
            &s,
            config,
            vec![(
                "application/vnd.oci.image.layer.v1.tar",
                tar_with("bin/sh", b"\x7fELF"),
            )],
        );
        s.set_ref(
            "r/l:1",
            desc("application/vnd.oci.image.manifest.v1+json", &m, n),
        )
        .unwrap();
        let img = Image::open(&s, "r/l:1").unwrap();
        let e = img
            .write_bundle(&s, &dir.path().join("b"), &mut Budget::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("holds no wasm") && e.contains("linux/amd64") && e.contains("/bin/sh"),
            "{e}"
        );
    }

    #[test]
    fn index_without_a_usable_platform() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("s")).unwrap();
        let (m, mn) = manifest(
            &s,
            json!({"os": "windows", "architecture": "amd64", "config": {}}),
            vec![],
        );
        let (idx, n) = put_json(
            &s,
            &json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": m.to_string(), "size": mn, "platform": {"os": "windows", "architecture": "amd64"}}]}),
        );
        s.set_ref(
            "r/w:1",
            desc("application/vnd.oci.image.index.v1+json", &idx, n),
        )
        .unwrap();
        let e = Image::open(&s, "r/w:1").unwrap_err().to_string();
        assert!(e.contains("windows/amd64"), "{e}");
    }
}
