//! Compiling in a helper process. Cranelift's memory grows with the module it compiles, not with
//! the guest's memory limit, and a module within the shape caps can take gigabytes to compile. A
//! [`crate::Runtime`] configured with [`Compiler::Helper`] therefore compiles each module it has
//! not compiled before in a child process: the same program re-executed with [`HELPER_ARG`],
//! whose writable data is capped (`RLIMIT_DATA`). A module that needs more fails to compile with
//! an error that says so, and the process that asked (a shim serving a whole pod) is untouched.
//! The child dies with the thread that started it, and at the caller's deadline.
//!
//! The protocol: the child reads the wasm binary on stdin until end of file, compiles it with an
//! engine configured as the parent's is, and writes the serialized artifact on stdout followed by
//! a trailer (its length, then [`TRAILER_MAGIC`]); a failure is a message on stderr. The outcome
//! is read from the output alone, never from the exit status, which a shim's reaper may collect
//! first. The parent loads the artifact as it would a cache entry, and stores it in its cache.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::cache::ArtifactKind;
use crate::error::{Error, Result};

/// The first argument that makes a wasmbox binary a compiler helper (see [`helper_main`]).
pub const HELPER_ARG: &str = "__wasmbox-compile";

/// How much writable memory a compile may take unless told otherwise: 2 GiB.
pub const DEFAULT_COMPILE_MEMORY: u64 = 2 << 30;

/// The least a compile may be given: below this not even a small module compiles.
pub const MIN_COMPILE_MEMORY: u64 = 64 << 20;

/// Ends a helper's output after the artifact's length: the compile finished.
const TRAILER_MAGIC: &[u8; 8] = b"wasmbox!";

/// Most bytes of compiled artifact a helper may hand back (wasm is at most 256 MiB; its native
/// code is a few times that at most).
const MAX_ARTIFACT: u64 = 4 << 30;

/// Where a [`crate::Runtime`] compiles.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Compiler {
    /// In the calling process: its memory is bounded only by the module shape caps.
    #[default]
    InProcess,
    /// In a child process, `program HELPER_ARG KIND MEMORY`, whose writable data is capped at
    /// `memory` bytes. `program` must call [`helper_main`] when its first argument is
    /// [`HELPER_ARG`].
    Helper {
        /// The program to run (usually `/proc/self/exe`: this very binary).
        program: PathBuf,
        /// Cap on the helper's writable data, in bytes.
        memory: u64,
    },
}

impl Compiler {
    /// This very program re-executed as the helper, capped at `memory` bytes.
    pub fn this_program(memory: u64) -> Self {
        Compiler::Helper {
            program: PathBuf::from("/proc/self/exe"),
            memory,
        }
    }
}

fn kind_arg(kind: ArtifactKind) -> &'static str {
    match kind {
        ArtifactKind::Module => "module",
        ArtifactKind::Component => "component",
    }
}

/// Compiles `binary` (wasm that passed the shape check) in a helper, and returns the serialized
/// artifact. Kills the helper at `deadline`.
pub(crate) fn compile_in_helper(
    program: &std::path::Path,
    memory: u64,
    name: &str,
    kind: ArtifactKind,
    binary: &[u8],
    deadline: Option<Instant>,
) -> Result<Vec<u8>> {
    let fail = |reason: String| Error::CompileHelper {
        name: name.to_string(),
        reason,
    };
    let mut child = Command::new(program)
        .arg(HELPER_ARG)
        .arg(kind_arg(kind))
        .arg(memory.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_clear()
        .spawn()
        .map_err(|e| fail(format!("starting the compiler {}: {e}", program.display())))?;
    // Kill and reap the helper whatever happens below.
    struct Reap(std::process::Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut stdin = child.stdin.take().expect("piped");
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let mut child = Reap(child);
    // The helper reads all of its input before it writes anything, so this cannot deadlock.
    let written = stdin.write_all(binary);
    drop(stdin);
    let mut artifact = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let wait = match deadline {
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(Error::CompileDeadline {
                        name: name.to_string(),
                    });
                }
                Some(
                    rustix::event::Timespec::try_from(left).unwrap_or(rustix::event::Timespec {
                        tv_sec: i64::MAX,
                        tv_nsec: 0,
                    }),
                )
            }
            None => None,
        };
        let mut fds = [rustix::event::PollFd::new(
            &stdout,
            rustix::event::PollFlags::IN,
        )];
        match rustix::event::poll(&mut fds, wait.as_ref()) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(fail(format!("waiting for the compiler: {e}"))),
        }
        match stdout.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if artifact.len() as u64 + n as u64 > MAX_ARTIFACT {
                    return Err(fail("the compiled code is too large".into()));
                }
                artifact.extend_from_slice(&buf[..n]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(fail(format!("reading from the compiler: {e}"))),
        }
    }
    let mut message = Vec::new();
    let _ = (&mut stderr).take(64 << 10).read_to_end(&mut message);
    let message = String::from_utf8_lossy(&message).trim().to_string();
    // The helper is done (its stdout is closed): collect it unless a reaper of the process (a
    // shim's) did. Not killed from here on: once collected, its pid may be another process's.
    let status = child.0.wait().ok();
    std::mem::forget(child);
    if let Some(len) = artifact.len().checked_sub(16)
        && &artifact[len + 8..] == TRAILER_MAGIC
        && u64::from_le_bytes(artifact[len..len + 8].try_into().expect("8 bytes")) == len as u64
        && written.is_ok()
    {
        artifact.truncate(len);
        return Ok(artifact);
    }
    // The allocator aborts, or an mmap fails, when the data cap refuses more memory.
    if message.contains("memory allocation of") || message.contains("Cannot allocate memory") {
        return Err(Error::CompileMemory {
            name: name.to_string(),
            limit: memory,
        });
    }
    Err(fail(match (message.is_empty(), status) {
        (false, _) => message,
        (true, Some(st)) => format!("the compiler failed ({st})"),
        (true, None) => "the compiler stopped before it finished".into(),
    }))
}

/// What a wasmbox binary runs, before anything else, when its first argument is [`HELPER_ARG`]
/// (`args` are the arguments after it: `KIND MEMORY`): caps its own writable data, dies with its
/// parent, compiles stdin to stdout. Returns the exit status.
pub fn helper_main(args: &[OsString]) -> i32 {
    match helper(args) {
        Ok(()) => 0,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "{e:#}");
            1
        }
    }
}

fn helper(args: &[OsString]) -> anyhow::Result<()> {
    use anyhow::Context;
    let [kind, memory] = args else {
        anyhow::bail!("usage: {HELPER_ARG} module|component MEMORY");
    };
    let memory: u64 = memory
        .to_str()
        .and_then(|m| m.parse().ok())
        .context("MEMORY is a number of bytes")?;
    // Nothing to outlive: the parent is waiting for this.
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
        .context("asking to die with the parent")?;
    if rustix::process::getppid().is_none_or(|p| p.as_raw_nonzero().get() == 1) {
        anyhow::bail!("the parent is gone");
    }
    rustix::process::setrlimit(
        rustix::process::Resource::Data,
        rustix::process::Rlimit {
            current: Some(memory),
            maximum: Some(memory),
        },
    )
    .context("capping the compiler's memory")?;
    let mut binary = Vec::new();
    std::io::stdin()
        .take(crate::shape::MAX_WASM_BYTES as u64 + 1)
        .read_to_end(&mut binary)
        .context("reading the wasm")?;
    let engine = wasmtime::Engine::new(&crate::engine::base_config())
        .map_err(anyhow::Error::from)
        .context("making the engine")?;
    let artifact = match kind.to_str() {
        Some("module") => engine.precompile_module(&binary),
        Some("component") => engine.precompile_component(&binary),
        _ => anyhow::bail!("KIND is module or component"),
    }
    .map_err(anyhow::Error::from)?;
    let mut out = std::io::stdout().lock();
    out.write_all(&artifact)
        .and_then(|()| out.write_all(&(artifact.len() as u64).to_le_bytes()))
        .and_then(|()| out.write_all(TRAILER_MAGIC))
        .and_then(|()| out.flush())
        .context("writing the compiled code")?;
    Ok(())
}
