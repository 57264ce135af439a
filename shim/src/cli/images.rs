//! Image commands on the local store: `images`, `inspect`, `rmi`, `prune`, `load`, `save`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use wasmbox_images::detect::Form;
use wasmbox_images::{Image, Reference, Store};

/// Where the image store lives and how registries are reached.
#[derive(Args, Debug, Clone, Default)]
pub struct StoreOptions {
    /// A registry (`HOST[:PORT]`) that may be reached over plain HTTP (repeatable); loopback
    /// registries always may.
    #[arg(long = "insecure-registry", value_name = "HOST", global = true)]
    pub insecure: Vec<String>,
    /// Image store directory (default `/var/lib/wasmbox` for root, else
    /// `$XDG_DATA_HOME/wasmbox` or `~/.local/share/wasmbox`).
    #[arg(
        long = "store",
        env = "WASMBOX_STORE",
        value_name = "DIR",
        global = true
    )]
    pub store: Option<PathBuf>,
}

impl StoreOptions {
    /// Opens (creating) the store.
    pub fn open(&self) -> Result<Store> {
        Ok(Store::open(&self.dir())?)
    }

    /// The store's directory.
    pub fn dir(&self) -> PathBuf {
        self.store.clone().unwrap_or_else(default_store)
    }

    /// How registries are reached.
    fn registry(&self) -> wasmbox_images::registry::RegistryOptions {
        wasmbox_images::registry::RegistryOptions {
            insecure: self.insecure.clone(),
            auth_file: None,
        }
    }

    /// Pulls `name` into `store`, showing progress; returns the canonical name.
    pub fn pull(&self, store: &Store, name: &str) -> Result<String> {
        let r: Reference = name.parse()?;
        let progress = super::progress::StderrProgress::new();
        Ok(block_on(wasmbox_images::registry::pull(
            store,
            &r,
            &self.registry(),
            &progress,
        ))??)
    }
}

/// Runs a registry transfer to completion on a small runtime of its own.
fn block_on<F: std::future::Future>(f: F) -> Result<F::Output> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the network runtime")?;
    Ok(rt.block_on(f))
}

/// Pull an image from a registry into the store.
#[derive(Args, Debug)]
pub struct PullCommand {
    /// The image.
    pub image: String,
}

impl PullCommand {
    /// Pulls and prints the name.
    pub fn execute(self, store: &StoreOptions) -> Result<i32> {
        let s = store.open()?;
        let name = store.pull(&s, &self.image)?;
        println!("{name}");
        Ok(0)
    }
}

fn default_store() -> PathBuf {
    // SAFETY: geteuid has no preconditions.
    #[allow(unsafe_code, reason = "geteuid is always safe")]
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        return PathBuf::from("/var/lib/wasmbox");
    }
    std::env::var_os("XDG_DATA_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."))
        .join("wasmbox")
}

/// The canonical name of a reference given by a user, for a name being made (`build -t`).
pub fn canonical(name: &str) -> Result<String> {
    Ok(name.parse::<Reference>()?.to_string())
}

/// The stored name a user's `name` means: a short name is `localhost/NAME` when the store has
/// that, else Docker Hub's name (which `run` pulls when it is missing too).
pub fn local_name(store: &Store, name: &str) -> Result<String> {
    let names = Reference::local_candidates(name)?;
    let found = names
        .iter()
        .map(ToString::to_string)
        .find(|n| store.resolve(n).is_ok());
    Ok(found.unwrap_or_else(|| names[names.len() - 1].to_string()))
}

/// What wasm `bytes` are: a command module, a command component or an HTTP component.
fn workload(bytes: &[u8]) -> String {
    wasmbox_runtime::shape::guest_kind(bytes)
        .map(|k| k.to_string())
        .unwrap_or_else(|| "not wasm".into())
}

/// The image's form, and for an artifact what its wasm is (a compat image's entry is inside its
/// layers: [`compat_workload`] unpacks them).
fn kind(store: &Store, img: &Image) -> String {
    match img.detection.as_ref().map(|d| &d.form) {
        Some(Form::Artifact { digest, .. }) => {
            let blob = digest.parse().ok().and_then(|d| store.read_blob(&d).ok());
            match blob {
                Some(b) => format!("artifact, {}", workload(&b)),
                None => "artifact".into(),
            }
        }
        Some(Form::Compat) => "compat".into(),
        None => "not wasm".into(),
    }
}

/// What a compat image's entry is, read from a bundle of it written in a private directory.
fn compat_workload(store: &Store, img: &Image) -> Result<String> {
    let scratch = super::run::scratch_base()?;
    let bundles = super::run::private_dir(&scratch.join("bundles"))?;
    let dir = tempfile::Builder::new()
        .prefix(&wasmbox_runtime::scratch_prefix("wasmbox-run-"))
        .tempdir_in(&bundles)
        .context("creating a bundle directory")?;
    img.write_bundle(store, dir.path(), &mut Default::default())?;
    let bytes = wasmbox_runtime::Bundle::load(dir.path())?.read_entry()?;
    Ok(workload(&bytes))
}

/// Where the wasm entry is: the artifact's layer, or the compat image's entrypoint file.
fn entry(img: &Image) -> serde_json::Value {
    match img.detection.as_ref().map(|d| &d.form) {
        Some(Form::Artifact { index, digest }) => {
            serde_json::json!({"layer": index, "digest": digest, "path": format!("/{}", wasmbox_images::image::ARTIFACT_ENTRY)})
        }
        _ => {
            let c = &img.config["config"];
            let arg0 = c["Entrypoint"][0].as_str().or_else(|| c["Cmd"][0].as_str());
            serde_json::json!({"path": arg0})
        }
    }
}

/// List the images in the store.
#[derive(Args, Debug)]
pub struct ImagesCommand {}

impl ImagesCommand {
    /// Prints one line per image.
    pub fn execute(self, store: &StoreOptions) -> Result<i32> {
        let store = store.open()?;
        println!("{:<50} {:<19} {:>10}  KIND", "REFERENCE", "DIGEST", "SIZE");
        for (name, _) in store.refs()? {
            match Image::open(&store, &name) {
                Ok(img) => println!(
                    "{:<50} {:<19} {:>10}  {}",
                    name,
                    &img.manifest_digest.to_string()[..19],
                    img.size(),
                    kind(&store, &img)
                ),
                Err(e) => println!("{name:<50} {:<19} {:>10}  broken: {e}", "-", "-"),
            }
        }
        Ok(0)
    }
}

/// Show an image's manifest, config, detected entry and what its wasm is; or what a wasm file is.
#[derive(Args, Debug)]
pub struct InspectCommand {
    /// The image, or a wasm file.
    pub image: String,
}

impl InspectCommand {
    /// Prints JSON.
    pub fn execute(self, store: &StoreOptions) -> Result<i32> {
        if super::run::names_a_file(&self.image) {
            // Ambient authority, named: the file the user asked about.
            let bytes =
                std::fs::read(&self.image).with_context(|| format!("reading {}", self.image))?;
            let out = serde_json::json!({
                "file": self.image,
                "kind": workload(&bytes),
                "size": bytes.len(),
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
            return Ok(0);
        }
        let store = store.open()?;
        let img = Image::open(&store, &local_name(&store, &self.image)?)?;
        let kind = match img.detection.as_ref().map(|d| &d.form) {
            Some(Form::Compat) => format!("compat, {}", compat_workload(&store, &img)?),
            _ => kind(&store, &img),
        };
        let out = serde_json::json!({
            "reference": img.name,
            "digest": img.manifest_digest.to_string(),
            "kind": kind,
            "detectedBecause": img.detection.as_ref().map(|d| d.because.clone()),
            "entry": entry(&img),
            "manifest": img.manifest,
            "config": img.config,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        Ok(0)
    }
}

/// Remove images from the store (their blobs go with `prune`).
#[derive(Args, Debug)]
pub struct RmiCommand {
    /// The images.
    #[arg(required = true)]
    pub images: Vec<String>,
}

impl RmiCommand {
    /// Removes each reference.
    pub fn execute(self, store: &StoreOptions) -> Result<i32> {
        let store = store.open()?;
        for i in &self.images {
            let name = local_name(&store, i)?;
            store.remove_ref(&name)?;
            println!("Untagged: {name}");
        }
        Ok(0)
    }
}

/// Delete blobs no image refers to.
#[derive(Args, Debug)]
pub struct PruneCommand {}

impl PruneCommand {
    /// Prints what was deleted.
    pub fn execute(self, store: &StoreOptions) -> Result<i32> {
        let store = store.open()?;
        let removed = store.prune()?;
        for d in &removed {
            println!("deleted: {d}");
        }
        println!("{} blob(s) deleted", removed.len());
        Ok(0)
    }
}

/// Load images from an OCI layout (a directory or a tarball).
#[derive(Args, Debug)]
pub struct LoadCommand {
    /// The layout directory or tarball.
    #[arg(short = 'i', long = "input", value_name = "FILE")]
    pub input: PathBuf,
    /// Name the (single) image in it.
    #[arg(short = 't', long = "tag", value_name = "REF")]
    pub tag: Option<String>,
}

impl LoadCommand {
    /// Loads and prints the names.
    pub fn execute(self, store: &StoreOptions) -> Result<i32> {
        let store = store.open()?;
        let tag = self
            .tag
            .as_deref()
            .map(str::parse::<Reference>)
            .transpose()?;
        for n in wasmbox_images::archive::load(&store, &self.input, tag.as_ref())? {
            println!("Loaded image: {n}");
        }
        Ok(0)
    }
}

/// Write an image as an OCI layout tarball.
#[derive(Args, Debug)]
pub struct SaveCommand {
    /// Output file.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: PathBuf,
    /// Write a wasm artifact in compat form (its wasm at `/app.wasm` in a tar layer), which
    /// runtimes that unpack every image into a filesystem (containerd 1.6) can run. Compat
    /// images are written as they are.
    #[arg(long)]
    pub compat: bool,
    /// The image.
    pub image: String,
}

impl SaveCommand {
    /// Writes the tarball.
    pub fn execute(self, store: &StoreOptions) -> Result<i32> {
        let store = store.open()?;
        let name = local_name(&store, &self.image)?;
        let image = wasmbox_images::image::Image::open(&store, &name)
            .with_context(|| format!("saving {name}"))?;
        let artifact = matches!(
            image.detection,
            Some(wasmbox_images::detect::Detection {
                form: wasmbox_images::detect::Form::Artifact { .. },
                ..
            })
        );
        if self.compat && artifact {
            let _keep = store.keep_blobs().context("locking the store")?;
            let desc = wasmbox_images::build::compat_of(&store, &image)
                .with_context(|| format!("converting {name} to compat form"))?;
            wasmbox_images::archive::save_as(&store, &name, desc, &self.output)
                .with_context(|| format!("saving {name}"))?;
        } else {
            wasmbox_images::archive::save(&store, &name, &self.output)
                .with_context(|| format!("saving {name}"))?;
        }
        Ok(0)
    }
}

/// Image form for `build`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, Default)]
pub enum FormatArg {
    /// A wasm OCI artifact (config `application/vnd.wasm.config.v0+json`, one wasm layer).
    #[default]
    Artifact,
    /// A tar layer with the wasm at `/app.wasm`, for tools that only know container images.
    Compat,
}

/// Build an image in the store from a wasm file.
#[derive(Args, Debug)]
pub struct BuildCommand {
    /// The wasm module or component.
    pub wasm: PathBuf,
    /// The image's name.
    #[arg(short = 't', long = "tag", value_name = "REF")]
    pub tag: String,
    /// Image form.
    #[arg(long, value_enum, default_value_t = FormatArg::Artifact)]
    pub format: FormatArg,
    /// An environment variable `KEY=VALUE` (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// An argument after the program name (repeatable).
    #[arg(long = "arg", value_name = "ARG")]
    pub args: Vec<String>,
    /// Add a host file or directory at a path in the image: `HOST:GUEST` (compat only).
    #[arg(long = "add", value_name = "HOST:GUEST")]
    pub add: Vec<String>,
}

impl BuildCommand {
    /// Builds and prints the name and digest.
    pub fn execute(self, store: &StoreOptions) -> Result<i32> {
        use wasmbox_images::build::{BuildSpec, Format, build, read_input};
        let store = store.open()?;
        let name = canonical(&self.tag)?;
        let mut add = Vec::new();
        for a in &self.add {
            let (h, g) = a
                .split_once(':')
                .filter(|(h, g)| !h.is_empty() && g.starts_with('/'))
                .with_context(|| format!("--add {a:?}: expected HOST:/GUEST"))?;
            add.push((PathBuf::from(h), g.to_string()));
        }
        for e in &self.env {
            anyhow::ensure!(e.contains('='), "--env {e:?}: expected KEY=VALUE");
        }
        let spec = BuildSpec {
            wasm: read_input(&self.wasm)?,
            format: match self.format {
                FormatArg::Artifact => Format::Artifact,
                FormatArg::Compat => Format::Compat,
            },
            env: self.env,
            args: self.args,
            add,
        };
        let digest = build(&store, &name, &spec)
            .with_context(|| format!("building {name} from {}", self.wasm.display()))?;
        println!("{name} {digest}");
        Ok(0)
    }
}

/// Push an image from the store to a registry.
#[derive(Args, Debug)]
pub struct PushCommand {
    /// The image in the store.
    pub image: String,
    /// Where to push it (default: the image's own name).
    pub destination: Option<String>,
}

impl PushCommand {
    /// Pushes, printing a line per blob.
    pub fn execute(self, store: &StoreOptions) -> Result<i32> {
        let s = store.open()?;
        let name = local_name(&s, &self.image)?;
        let dest: Reference = self.destination.as_deref().unwrap_or(&name).parse()?;
        let progress = super::progress::StderrProgress::new();
        block_on(wasmbox_images::registry::push(
            &s,
            &name,
            &dest,
            &store.registry(),
            &progress,
        ))??;
        println!("{dest}");
        Ok(0)
    }
}
