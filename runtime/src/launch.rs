//! One launch path for every face that runs a bundle (`wasmbox run`, the containerd shim): what
//! the bundle's entrypoint is, decided once with the rootfs opened once; the runtime's settings,
//! read from flags and the environment in one place; and preparing the guest under a deadline
//! that hands it what is left.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use oci_spec::runtime::Spec;

use crate::compiler::{Compiler, DEFAULT_COMPILE_MEMORY, MIN_COMPILE_MEMORY};
use crate::error::{Error, Result};
use crate::policy::{Bundle, locate_entry, rootfs_of};
use crate::{GuestKind, Prepared, Runtime, RuntimeConfig};

/// Where the compiled-code cache is, when no flag says.
pub const CACHE_DIR_ENV: &str = "WASMBOX_CACHE_DIR";
/// The cap on one compile's memory, when no flag says.
pub const COMPILE_MEMORY_ENV: &str = "WASMBOX_COMPILE_MEMORY";

/// The bytes read to tell wasm from anything else.
const HEAD: u64 = 64;

/// The settings every face takes, as flags or from the environment.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// `--cache-dir`; else [`CACHE_DIR_ENV`]; else [`crate::cache::default_dir`].
    pub cache_dir: Option<PathBuf>,
    /// `--no-cache`: compile without reading or writing the cache.
    pub no_cache: bool,
    /// `--compile-memory`; else [`COMPILE_MEMORY_ENV`]; else [`DEFAULT_COMPILE_MEMORY`].
    pub compile_memory: Option<u64>,
}

/// The cache's cap, from [`crate::cache::cap::MAX_ENV`] (a size), else the default. A value that
/// does not parse is an error naming the variable.
pub fn cache_max() -> Result<u64> {
    use crate::cache::cap::{DEFAULT_MAX, MAX_ENV};
    match std::env::var(MAX_ENV) {
        Ok(v) if !v.is_empty() => crate::policy::parse_size(&v).map_err(|reason| Error::Setting {
            name: MAX_ENV,
            reason,
        }),
        _ => Ok(DEFAULT_MAX),
    }
}

impl Settings {
    /// The runtime configuration they ask for: compiling in a helper (this very program
    /// re-executed) whose memory is capped; the other fields are the defaults, for the face to
    /// set. An environment variable that does not parse is an error naming it.
    pub fn config(&self) -> Result<RuntimeConfig> {
        let compile_memory = match self.compile_memory {
            Some(m) => m,
            None => match std::env::var(COMPILE_MEMORY_ENV) {
                Ok(v) => parse_compile_memory(&v).map_err(|reason| Error::Setting {
                    name: COMPILE_MEMORY_ENV,
                    reason,
                })?,
                Err(_) => DEFAULT_COMPILE_MEMORY,
            },
        };
        let cache_dir = self.cache_dir();
        Ok(RuntimeConfig {
            cache_max: cache_dir.as_ref().map(|_| cache_max()).transpose()?,
            cache_dir,
            compiler: Compiler::helper(compile_memory),
            ..Default::default()
        })
    }
}

impl Settings {
    /// The compiled-code cache directory they name: none with `--no-cache`.
    pub fn cache_dir(&self) -> Option<PathBuf> {
        if self.no_cache {
            return None;
        }
        self.cache_dir
            .clone()
            .or_else(|| {
                std::env::var_os(CACHE_DIR_ENV)
                    .filter(|v| !v.is_empty())
                    .map(Into::into)
            })
            .or_else(crate::cache::default_dir)
    }
}

/// Parses a compile memory cap (a size, as `--memory` takes), at least [`MIN_COMPILE_MEMORY`].
pub fn parse_compile_memory(s: &str) -> std::result::Result<u64, String> {
    let n = crate::policy::parse_size(s)?;
    if n < MIN_COMPILE_MEMORY {
        return Err(format!(
            "{s:?} is too little to compile in (at least {} MiB)",
            MIN_COMPILE_MEMORY >> 20
        ));
    }
    Ok(n)
}

/// A bundle's entrypoint, classified.
pub enum Entry {
    /// Wasm: a guest of ours.
    Wasm(Box<Wasm>),
    /// Anything else: a native program, for runc.
    Native,
}

/// A wasm entrypoint with everything a face needs to launch it.
pub struct Wasm {
    /// The bundle, with the policy derived from its spec.
    pub bundle: Bundle,
    /// The entry's bytes, read through the rootfs (never following a link out of it).
    pub bytes: Vec<u8>,
    /// What it is by its exports (`None`: wasm text that does not parse, which loading reports).
    pub kind: Option<GuestKind>,
}

impl Wasm {
    /// The entry's name as messages give it: its path in the container.
    pub fn name(&self) -> String {
        format!("/{}", self.bundle.entry.display())
    }
}

impl Entry {
    /// Classifies the entrypoint of the bundle at `dir`, whose parsed `config.json` is `spec`,
    /// by its bytes: wasm binary or wasm text is ours, anything else is native.
    /// `annotated_wasm` says the spec's annotations call the workload wasm (the images crate's
    /// rule, which the caller applies): such an entry must be wasm. Fails with a clear message
    /// when the entrypoint is missing or is precompiled code.
    pub fn classify(dir: &Path, spec: Spec, annotated_wasm: bool) -> Result<Entry> {
        let entry_err = |reason: String| Error::Entrypoint { reason };
        let rootfs = rootfs_of(dir, &spec)?;
        let process = spec.process().as_ref().ok_or_else(|| Error::Spec {
            path: dir.join("config.json"),
            reason: "no process".into(),
        })?;
        let arg0 = process
            .args()
            .as_ref()
            .and_then(|a| a.first())
            .ok_or_else(|| Error::Spec {
                path: dir.join("config.json"),
                reason: "process.args is empty".into(),
            })?
            .clone();
        // Ambient authority, named: opening the container's rootfs, once.
        let root = cap_std::fs::Dir::open_ambient_dir(&rootfs, cap_std::ambient_authority())
            .map_err(|e| entry_err(format!("rootfs {}: {e}", rootfs.display())))?;
        let Some(entry) = locate_entry(&root, process) else {
            return Err(entry_err(format!(
                "entrypoint {arg0:?} does not exist in the container's rootfs"
            )));
        };
        let shown = format!("/{}", entry.display());
        let mut bytes = Vec::new();
        // Its links resolved inside the rootfs, as the container's root sees them.
        let file = crate::resolve::open_in_root(
            std::os::fd::AsFd::as_fd(&root),
            &entry,
            // Never waiting on a FIFO planted at the entry's path.
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::NOCTTY,
        )
        .ok()
        .map(std::fs::File::from);
        let readable = file
            .as_ref()
            .is_some_and(|f| f.take(HEAD).read_to_end(&mut bytes).is_ok());
        let text = entry.extension().is_some_and(|e| e == "wat") || looks_like_text(&bytes);
        let wasm = readable && (crate::shape::is_wasm(&bytes) || text);
        let elf = bytes.starts_with(b"\x7fELF");
        if let Some(mut f) = file.filter(|_| readable && (wasm || elf)) {
            // The whole of it: wasm to load, or an ELF file to check for precompiled code. At
            // most one byte past what is compiled, so a huge file is refused as such.
            let most = crate::shape::MAX_WASM_BYTES as u64 + 1;
            (&mut f)
                .take(most - bytes.len() as u64)
                .read_to_end(&mut bytes)
                .map_err(|source| Error::ReadEntry {
                    entry: shown.clone(),
                    rootfs: rootfs.clone(),
                    source,
                })?;
        }
        if crate::is_precompiled(&bytes) {
            return Err(entry_err(format!(
                "entrypoint {shown} is precompiled native code (.cwasm); wasmbox only runs \
                 precompiled code it compiled itself"
            )));
        }
        if !wasm {
            if annotated_wasm {
                return Err(entry_err(format!(
                    "entrypoint {shown} is annotated as wasm but is not a wasm binary"
                )));
            }
            return Ok(Entry::Native);
        }
        let bundle = Bundle::with_entry(dir, spec, rootfs, Some(entry))?;
        let kind = crate::shape::guest_kind(&bytes);
        Ok(Entry::Wasm(Box::new(Wasm {
            bundle,
            bytes,
            kind,
        })))
    }
}

/// Wasm text begins with a parenthesis or a comment.
fn looks_like_text(head: &[u8]) -> bool {
    let t = head.trim_ascii_start();
    t.starts_with(b"(") || t.starts_with(b";;")
}

impl Wasm {
    /// [`prepare`]s this entrypoint under its bundle's policy.
    pub fn prepare(&self, runtime: &Runtime, since: Instant) -> Result<Prepared> {
        prepare(
            runtime,
            &self.name(),
            &self.bytes,
            self.bundle.policy.clone(),
            since,
        )
    }
}

/// Loads (from the cache, or compiling) and links the wasm `bytes` named `name` under `policy`,
/// within the policy's deadline (`limits.timeout`) counted from `since`, when the launch began: a
/// compile still running then is ended ([`Error::LoadDeadline`]), and the guest gets what is left
/// of it.
pub fn prepare(
    runtime: &Runtime,
    name: &str,
    bytes: &[u8],
    policy: crate::Policy,
    since: Instant,
) -> Result<Prepared> {
    let timeout = policy.limits.timeout;
    let deadline = timeout.and_then(|t| since.checked_add(t));
    let past = |after| Error::LoadDeadline {
        name: name.to_string(),
        after,
    };
    let loading = Instant::now();
    let span = crate::trace::Operation::start(
        "wasmbox.load",
        &[
            ("wasmbox.wasm.name", name.to_string()),
            ("wasmbox.wasm.bytes", bytes.len().to_string()),
        ],
    );
    let loaded = runtime.load_by(name, bytes, deadline);
    match &loaded {
        Ok((_, from)) => span.set(
            "wasmbox.load.from",
            match from {
                crate::LoadedFrom::Cache => "cache",
                crate::LoadedFrom::Compiled => "compiled",
                crate::LoadedFrom::Memory => "memory",
            }
            .to_string(),
        ),
        Err(e) => span.fail(&e.to_string()),
    }
    drop(span);
    let (program, from) = match loaded {
        Ok(loaded) => loaded,
        Err(Error::CompileDeadline { .. }) => return Err(past(timeout.unwrap_or_default())),
        Err(e) => return Err(e),
    };
    let took = loading.elapsed();
    let mut prepared = runtime.prepare(&program, policy)?;
    prepared.set_loaded(from, took);
    if let Some(t) = timeout {
        let left = t.saturating_sub(since.elapsed());
        if left.is_zero() {
            return Err(past(t));
        }
        prepared.set_timeout(Some(left));
    }
    Ok(prepared)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle(config: &str, files: &[(&str, &[u8])]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("rootfs")).unwrap();
        for (p, b) in files {
            let p = d.path().join("rootfs").join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, b).unwrap();
        }
        std::fs::write(d.path().join("config.json"), config).unwrap();
        d
    }

    fn spec_with(args: &str) -> Spec {
        let text = format!(
            r#"{{"ociVersion":"1.0.2","root":{{"path":"rootfs"}},"process":{{"cwd":"/","args":{args},"env":["PATH=/bin"],"user":{{"uid":0,"gid":0}}}}}}"#
        );
        crate::policy::parse_spec(&text).unwrap()
    }

    fn err(r: Result<Entry>) -> String {
        match r {
            Err(e) => e.to_string(),
            Ok(_) => panic!("expected an error"),
        }
    }

    #[test]
    fn entries_are_classified_by_their_bytes() {
        let wasm = wat::parse_str("(module (func (export \"_start\")))").unwrap();
        let d = bundle(
            "{}",
            &[
                ("app.wasm", &wasm),
                ("bin/tool", b"\x7fELF\x02\x01\x01\0"),
                ("text.wasm", b"  (module)"),
            ],
        );
        let Entry::Wasm(w) =
            Entry::classify(d.path(), spec_with(r#"["app.wasm"]"#), false).unwrap()
        else {
            panic!("app.wasm is wasm");
        };
        assert_eq!(w.bytes, wasm);
        assert_eq!(w.kind, Some(GuestKind::CommandModule));
        assert_eq!(w.name(), "/app.wasm");
        // Wasm text, whatever its name.
        assert!(matches!(
            Entry::classify(d.path(), spec_with(r#"["/text.wasm"]"#), false).unwrap(),
            Entry::Wasm(_)
        ));
        // A bare name is looked up in PATH, as runc does; a native binary goes to runc.
        assert!(matches!(
            Entry::classify(d.path(), spec_with(r#"["tool"]"#), false).unwrap(),
            Entry::Native
        ));
        let e = err(Entry::classify(
            d.path(),
            spec_with(r#"["/bin/tool"]"#),
            true,
        ));
        assert!(
            e.contains("annotated as wasm but is not a wasm binary"),
            "{e}"
        );
        let e = err(Entry::classify(
            d.path(),
            spec_with(r#"["/nope.wasm"]"#),
            false,
        ));
        assert!(e.contains("does not exist"), "{e}");
        let e = err(Entry::classify(d.path(), spec_with("[]"), false));
        assert!(e.contains("process.args is empty"), "{e}");
    }

    #[test]
    fn a_fifo_at_the_entrys_path_is_never_waited_on() {
        let d = bundle("{}", &[]);
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            d.path().join("rootfs/app.wasm"),
            rustix::fs::Mode::from_raw_mode(0o600),
        )
        .unwrap();
        // Nothing writes to it: read at once as empty, so not wasm.
        assert!(matches!(
            Entry::classify(d.path(), spec_with(r#"["/app.wasm"]"#), false).unwrap(),
            Entry::Native
        ));
    }

    #[test]
    fn an_entry_linked_to_a_host_path_names_the_rootfss_path() {
        let wasm = wat::parse_str("(module (func (export \"_start\")))").unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("real.wasm"), &wasm).unwrap();
        let d = bundle("{}", &[]);
        std::os::unix::fs::symlink(
            outside.path().join("real.wasm"),
            d.path().join("rootfs/app.wasm"),
        )
        .unwrap();
        // Resolved as the container's root sees it: the rootfs has nothing there.
        let e = err(Entry::classify(
            d.path(),
            spec_with(r#"["/app.wasm"]"#),
            false,
        ));
        assert!(e.contains("does not exist"), "{e}");
        // What the rootfs has at that path is what runs.
        let inside = d
            .path()
            .join("rootfs")
            .join(outside.path().strip_prefix("/").unwrap());
        std::fs::create_dir_all(&inside).unwrap();
        std::fs::write(inside.join("real.wasm"), b"(module)").unwrap();
        match Entry::classify(d.path(), spec_with(r#"["/app.wasm"]"#), false).unwrap() {
            Entry::Wasm(w) => assert_eq!(w.bytes, b"(module)"),
            Entry::Native => panic!("the rootfs's file is wasm text"),
        }
    }

    #[test]
    fn a_compile_memory_setting_below_the_least_is_refused_naming_it() {
        assert!(
            parse_compile_memory("32m")
                .unwrap_err()
                .contains("too little")
        );
        assert_eq!(parse_compile_memory("1g").unwrap(), 1 << 30);
        let s = Settings {
            cache_dir: Some("/x".into()),
            compile_memory: Some(MIN_COMPILE_MEMORY),
            ..Default::default()
        };
        assert_eq!(
            s.config().unwrap().cache_dir.as_deref(),
            Some(Path::new("/x"))
        );
        let s = Settings {
            no_cache: true,
            compile_memory: Some(MIN_COMPILE_MEMORY),
            ..Default::default()
        };
        assert_eq!(s.config().unwrap().cache_dir, None);
    }
}
