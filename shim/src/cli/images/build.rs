//! `wasmbox build`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use crate::cli::AheadOptions;
use crate::cli::store::{StoreOptions, canonical};

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
    /// The wasm module or component; with `-f`, the build context directory.
    pub wasm: PathBuf,
    /// Build from this Containerfile (Dockerfile) with the context directory's files: `FROM
    /// scratch` or a wasm image, `COPY`, `ADD`, `ENV`, `ENTRYPOINT`, `CMD`, `WORKDIR`, `LABEL`,
    /// `EXPOSE` (`RUN` is refused).
    #[arg(short = 'f', long = "file", value_name = "CONTAINERFILE")]
    pub containerfile: Option<PathBuf>,
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
    /// The platform a compat image's config names, `OS/ARCH` (e.g. `linux/amd64`, for engines
    /// that refuse others, as Docker 20.10 does); default `wasip1`/`wasip2` on `wasm`.
    #[arg(long, value_name = "OS/ARCH")]
    pub platform: Option<String>,
    /// Compiling the image's wasm.
    #[command(flatten)]
    pub ahead: AheadOptions,
}

impl BuildCommand {
    /// Builds and prints the name and digest.
    pub fn execute(self, store: &StoreOptions) -> Result<i32> {
        use wasmbox_images::build::{BuildSpec, Format, build, read_input};
        let store = store.open()?;
        let name = canonical(&self.tag)?;
        if let Some(file) = &self.containerfile {
            return self.build_containerfile(&store, &name, file);
        }
        let mut add = Vec::new();
        for a in &self.add {
            let (h, g) = a
                .split_once(':')
                .filter(|(h, g)| !h.is_empty() && g.starts_with('/'))
                .with_context(|| format!("--add {a:?}: expected HOST:/GUEST"))?;
            add.push((PathBuf::from(h), g.to_string()));
        }
        let platform = platform_of(self.platform.as_deref())?;
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
            platform,
        };
        let digest = build(&store, &name, &spec)
            .with_context(|| format!("building {name} from {}", self.wasm.display()))?;
        self.ahead.images(&store, std::slice::from_ref(&name))?;
        println!("{name} {digest}");
        Ok(0)
    }
}

impl BuildCommand {
    /// `build -f CONTAINERFILE DIR`: the image the file describes, with DIR's files.
    fn build_containerfile(
        &self,
        store: &wasmbox_images::Store,
        name: &str,
        file: &std::path::Path,
    ) -> Result<i32> {
        use wasmbox_images::containerfile;
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let mut plan =
            containerfile::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        if let Some(base) = &plan.base {
            plan.base = Some(crate::cli::store::local_name(store, base)?);
        }
        let platform = platform_of(self.platform.as_deref())?;
        let digest = containerfile::build(store, name, &self.wasm, &plan, platform)
            .with_context(|| format!("building {name} from {}", file.display()))?;
        self.ahead.images(store, &[name.to_string()])?;
        println!("{name} {digest}");
        Ok(0)
    }
}

/// `OS/ARCH` as its two parts.
fn platform_of(p: Option<&str>) -> Result<Option<(String, String)>> {
    p.map(|p| {
        p.split_once('/')
            .filter(|(os, arch)| !os.is_empty() && !arch.is_empty() && !arch.contains('/'))
            .map(|(os, arch)| (os.to_string(), arch.to_string()))
            .with_context(|| format!("--platform {p:?}: expected OS/ARCH"))
    })
    .transpose()
}
