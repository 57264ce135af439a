//! Compiling ahead of the first start: the wasm of images and files compiled into the
//! compiled-code cache that `run`, `serve` and the shim load from (the same directory, key and
//! ownership rules: [`wasmbox_runtime::launch::Settings`] decides it for all of them).
//! `wasmbox compile IMAGE|FILE...` does it on demand; `pull`, `load` and `build` do it for the
//! images they bring unless `--no-compile`, and a wasm that does not compile there is reported
//! without failing them (`run` reports it again).

use std::io::{IsTerminal as _, Read as _};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use wasmbox_images::Store;
use wasmbox_runtime::{LoadedFrom, Runtime};

use super::options::CacheOptions;
use super::store::{StoreOptions, local_name};
use super::target::names_a_file;

/// How `pull`, `load` and `build` compile the images they bring.
#[derive(Args, Debug, Clone, Default)]
pub struct AheadOptions {
    /// Do not compile the image's wasm now (its first start compiles it).
    #[arg(long)]
    pub no_compile: bool,
    /// Where to compile to.
    #[command(flatten)]
    pub cache: CacheOptions,
}

impl AheadOptions {
    /// Compiles the wasm of each image of `names` in `store`, unless told not to; what does
    /// not compile is reported on stderr, and fails nothing. An image with no wasm (a native
    /// one) has nothing to compile: its start says what it holds.
    pub fn images(&self, store: &Store, names: &[String]) -> Result<()> {
        if self.no_compile || self.cache.no_cache {
            return Ok(());
        }
        let ahead = match Ahead::new(&self.cache) {
            Ok(a) => a,
            Err(e) => {
                eprintln!("wasmbox: not compiled ahead: {e:#}");
                return Ok(());
            }
        };
        for name in names {
            let Some(image) = wasmbox_images::Image::open(store, name)
                .ok()
                .filter(|i| i.detection.is_some())
            else {
                continue;
            };
            match ahead.image(store, &image, name) {
                Ok(failed) => {
                    for f in failed {
                        eprintln!("wasmbox: {f} (its first start will say so again)");
                    }
                }
                Err(e) => eprintln!("wasmbox: {name}: not compiled ahead: {e:#}"),
            }
        }
        Ok(())
    }
}

/// Compile wasm files and images into the compiled-code cache, so their first start is warm.
#[derive(Args, Debug)]
pub struct CompileCommand {
    /// Where to compile to.
    #[command(flatten)]
    pub cache: CacheOptions,
    /// Wasm files (`FILE.wasm`) and images in the store (`REF`).
    #[arg(value_name = "IMAGE|FILE", required = true)]
    pub targets: Vec<String>,
}

impl CompileCommand {
    /// Compiles each; exit status 1 when any wasm did not compile.
    pub fn execute(self, store: &StoreOptions) -> Result<i32> {
        if self.cache.no_cache {
            bail!("--no-cache leaves nowhere to compile to");
        }
        let ahead = Ahead::new(&self.cache)?;
        let mut failed = Vec::new();
        let mut opened = None;
        for what in &self.targets {
            if names_a_file(what) {
                let path = Path::new(what);
                // Ambient authority, named: the file the user asked to compile.
                let bytes =
                    std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
                if let Err(f) = ahead.wasm(what, &bytes) {
                    failed.push(f);
                }
                continue;
            }
            let store = match &opened {
                Some(s) => s,
                None => opened.insert(store.open()?),
            };
            let name = local_name(store, what)?;
            if store.resolve(&name).is_err() {
                bail!(
                    "{what}: no such file, and no image of that name in the store (pull it first)"
                );
            }
            let image = wasmbox_images::Image::open(store, &name)?;
            failed.extend(ahead.image(store, &image, &name)?);
        }
        for f in &failed {
            eprintln!("wasmbox: {f}");
        }
        Ok(if failed.is_empty() { 0 } else { 1 })
    }
}

/// A wasm that did not compile: the error, which names it (a file's path, or an image's name
/// and the path in it) and says why.
#[derive(Debug)]
pub struct Failed(anyhow::Error);

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

/// Compiles wasm into the cache, one at a time, telling a terminal what it does.
struct Ahead {
    runtime: Runtime,
    terminal: bool,
}

impl Ahead {
    fn new(cache: &CacheOptions) -> Result<Self> {
        let config = cache.settings().config()?;
        if config.cache_dir.is_none() {
            bail!("no compiled-code cache directory: give --cache-dir or set WASMBOX_CACHE_DIR");
        }
        Ok(Self {
            runtime: Runtime::new(config)?,
            terminal: std::io::stderr().is_terminal(),
        })
    }

    /// Compiles `bytes` (named `name`) into the cache, unless compiled there already.
    fn wasm(&self, name: &str, bytes: &[u8]) -> Result<LoadedFrom, Failed> {
        if self.terminal {
            eprintln!("compiling {name} ({})…", megabytes(bytes.len()));
        }
        let started = Instant::now();
        match self.runtime.compile_to_cache(name, bytes) {
            Ok(from) => {
                if self.terminal {
                    match from {
                        LoadedFrom::Compiled => eprintln!(
                            "compiled {name} in {:.1} s",
                            started.elapsed().as_secs_f64()
                        ),
                        _ => eprintln!("{name}: compiled already"),
                    }
                }
                Ok(from)
            }
            Err(e) => Err(Failed(e.into())),
        }
    }

    /// Compiles every wasm module and component in image `name`: the files of its root
    /// filesystem that are wasm binaries, read from a bundle of it written in a private
    /// directory and removed after.
    fn image(
        &self,
        store: &Store,
        image: &wasmbox_images::Image,
        name: &str,
    ) -> Result<Vec<Failed>> {
        let scratch = super::scratch::scratch_base()?;
        let dir = super::target::bundle_of(store, image, &scratch, "wasmbox-compile-")?;
        let rootfs = dir.path().join("rootfs");
        let mut failed = Vec::new();
        for (guest, host) in wasm_files(&rootfs)? {
            let bytes =
                std::fs::read(&host).with_context(|| format!("reading {}", host.display()))?;
            if let Err(f) = self.wasm(&format!("{name}:{guest}"), &bytes) {
                failed.push(f);
            }
        }
        Ok(failed)
    }
}

/// The regular files beneath `root` that are wasm binaries (links are not followed): their
/// paths in the image, and on the host.
fn wasm_files(root: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut found = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries =
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
            let path = entry.path();
            let kind = entry.file_type()?;
            if kind.is_dir() {
                dirs.push(path);
            } else if kind.is_file() && starts_as_wasm(&path) {
                let guest = path.strip_prefix(root).unwrap_or(&path);
                found.push((format!("/{}", guest.display()), path));
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Whether the file at `path` begins as a wasm binary does.
fn starts_as_wasm(path: &Path) -> bool {
    let mut head = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|()| wasmbox_images::detect::is_wasm(&head))
}

/// `n` bytes as a person reads them.
fn megabytes(n: usize) -> String {
    if n >= 1 << 20 {
        format!("{:.1} MB", n as f64 / f64::from(1 << 20))
    } else {
        format!("{} KB", n.div_ceil(1 << 10))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wasm_of_a_tree_is_found_by_its_bytes_and_links_are_not_followed() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("usr/lib/app")).unwrap();
        std::fs::write(r.join("app.wasm"), b"\0asm\x01\0\0\0").unwrap();
        std::fs::write(r.join("usr/lib/app/plugin"), b"\0asm\x0d\0\x01\0").unwrap();
        std::fs::write(r.join("usr/lib/app/notes.wasm"), b"not wasm").unwrap();
        std::fs::write(r.join("short"), b"\0a").unwrap();
        std::os::unix::fs::symlink("/app.wasm", r.join("link.wasm")).unwrap();
        let found: Vec<String> = wasm_files(r).unwrap().into_iter().map(|(g, _)| g).collect();
        assert_eq!(found, ["/app.wasm", "/usr/lib/app/plugin"]);
    }

    #[test]
    fn sizes_read_as_people_say_them() {
        assert_eq!(megabytes(100), "1 KB");
        assert_eq!(megabytes(18 << 20), "18.0 MB");
        assert_eq!(megabytes(3 << 19), "1.5 MB");
    }
}
