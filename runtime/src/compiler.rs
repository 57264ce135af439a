//! Compiling in a helper process. Cranelift's memory grows with the module it compiles, not with
//! the guest's memory limit, and a module within the shape caps can take gigabytes to compile. A
//! [`crate::Runtime`] configured with [`Compiler::helper`] therefore compiles each module it has
//! not compiled before, when larger than [`IN_PROCESS_MAX`], in a child process: this very program re-executed with [`HELPER_ARG`],
//! whose writable data is capped (`RLIMIT_DATA`). A module that needs more fails to compile with
//! an error that says so, and the process that asked (a shim serving a whole pod) is untouched.
//! The child dies with the process that started it, and at the caller's deadline; it is the first
//! the kernel's OOM killer picks (`oom_score_adj` 1000); no more compile at once than there are
//! CPUs.
//!
//! The protocol: the child reads the wasm binary on stdin until end of file, compiles it with an
//! engine configured as the parent's is, and writes the serialized artifact on stdout followed by
//! a trailer (its length, then [`TRAILER_MAGIC`]); a failure is a short message on stderr. The
//! parent follows the child through a pidfd, never by its pid, since a shim's reaper may collect
//! it first. It loads the artifact as it would a cache entry, and stores it in its cache.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::time::Instant;

use rustix::event::{PollFd, PollFlags};

use crate::cache::ArtifactKind;
use crate::error::{Error, Result};

/// The first argument that makes a wasmbox binary a compiler helper (see [`helper_main`]).
pub const HELPER_ARG: &str = "__wasmbox-compile";

/// How much writable memory a compile may take unless told otherwise: 2 GiB.
pub const DEFAULT_COMPILE_MEMORY: u64 = 2 << 30;

/// The least a compile may be given: below this not even a small module compiles.
pub const MIN_COMPILE_MEMORY: u64 = 64 << 20;

/// The largest wasm compiled in the calling process even when a helper is configured: its
/// compile needs a few tens of MiB at most, and a helper would cost more than the compile.
pub const IN_PROCESS_MAX: usize = 64 << 10;

/// Ends a helper's output after the artifact's length: the compile finished.
const TRAILER_MAGIC: &[u8; 8] = b"wasmbox!";

/// Most bytes of a helper's message kept.
const MESSAGE_MAX: usize = 4 << 10;

/// Compiler threads in a helper, whatever the machine: what its memory cap must also hold.
const HELPER_THREADS: usize = 2;

/// The compile helper, as the spawner of a locked process must allow it.
pub fn spawnable() -> crate::spawner::Allowed {
    crate::spawner::Allowed {
        program: PathBuf::from(SELF_EXE),
        first_arg: Some(HELPER_ARG.into()),
    }
}

/// This very program.
const SELF_EXE: &str = "/proc/self/exe";

/// Where a [`crate::Runtime`] compiles.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Compiler(Where);

#[derive(Debug, Clone, Default, PartialEq, Eq)]
enum Where {
    #[default]
    InProcess,
    Helper {
        program: PathBuf,
        memory: u64,
    },
}

impl Compiler {
    /// In the calling process: its memory is bounded only by the module shape caps.
    pub fn in_process() -> Self {
        Compiler(Where::InProcess)
    }

    /// In this very program re-executed (`/proc/self/exe` [`HELPER_ARG`] ...), whose writable
    /// data is capped at `memory` bytes. The program must call [`helper_main`] when its first
    /// argument is [`HELPER_ARG`].
    pub fn helper(memory: u64) -> Self {
        Compiler(Where::Helper {
            program: PathBuf::from(SELF_EXE),
            memory,
        })
    }

    /// The helper to run and its cap, when compiling in one.
    pub(crate) fn helper_program(&self) -> Option<(&std::path::Path, u64)> {
        match &self.0 {
            Where::InProcess => None,
            Where::Helper { program, memory } => Some((program, *memory)),
        }
    }
}

fn kind_arg(kind: ArtifactKind) -> &'static str {
    match kind {
        ArtifactKind::Module => "module",
        ArtifactKind::Component => "component",
    }
}

/// Helpers running at once, at most one per CPU (compiling is CPU-bound; more at once would only
/// multiply the memory held).
struct Slots {
    busy: std::sync::Mutex<usize>,
    freed: std::sync::Condvar,
}

static SLOTS: Slots = Slots {
    busy: std::sync::Mutex::new(0),
    freed: std::sync::Condvar::new(),
};

struct Slot;

impl Slot {
    /// Waits for a free slot until `deadline`.
    fn take(deadline: Option<Instant>) -> Option<Slot> {
        let max = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut busy = SLOTS.busy.lock().expect("compile slots");
        while *busy >= max {
            busy = match deadline {
                None => SLOTS.freed.wait(busy).expect("compile slots"),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return None;
                    }
                    SLOTS
                        .freed
                        .wait_timeout(busy, left)
                        .expect("compile slots")
                        .0
                }
            };
        }
        *busy += 1;
        Some(Slot)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        *SLOTS.busy.lock().expect("compile slots") -= 1;
        SLOTS.freed.notify_one();
    }
}

/// A helper process, followed through its pidfd; killed when dropped before it was waited for.
struct Helper {
    pidfd: OwnedFd,
    waited: bool,
}

impl Helper {
    /// Its exit, when it can still be collected (a shim's reaper may have done it).
    fn wait(&mut self) -> Option<rustix::process::WaitIdStatus> {
        self.waited = true;
        rustix::process::waitid(
            rustix::process::WaitId::PidFd(self.pidfd.as_fd()),
            rustix::process::WaitIdOptions::EXITED,
        )
        .ok()
        .flatten()
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        if !self.waited {
            // Through the pidfd: it is this very process, never another that took its pid.
            let _ = rustix::process::pidfd_send_signal(&self.pidfd, rustix::process::Signal::KILL);
            self.wait();
        }
    }
}

/// Compiles `binary` (wasm that passed the shape check) in a helper capped at `memory` bytes,
/// and returns the serialized artifact. Kills the helper at `deadline`.
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
    let past_deadline = || Error::CompileDeadline {
        name: name.to_string(),
    };
    let _slot = Slot::take(deadline).ok_or_else(past_deadline)?;
    let pipe = || {
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .map_err(|e| fail(format!("piping: {e}")))
    };
    let ((child_in, stdin), (stdout, child_out), (stderr, child_err)) = (pipe()?, pipe()?, pipe()?);
    let pid = crate::spawner::spawn(crate::spawner::Spawn {
        program: program.to_path_buf(),
        args: vec![
            HELPER_ARG.into(),
            kind_arg(kind).into(),
            memory.to_string().into(),
            std::process::id().to_string().into(),
        ],
        env: vec![(
            "RAYON_NUM_THREADS".into(),
            HELPER_THREADS.to_string().into(),
        )],
        cwd: None,
        stdio: [child_in, child_out, child_err],
        own_group: false,
    })
    .map_err(|e| fail(format!("starting the compiler {}: {e}", program.display())))?;
    // The helper cannot end before its stdin does, so this is still our child, whoever reaps.
    let pid = rustix::process::Pid::from_raw(pid as i32)
        .ok_or_else(|| fail("the compiler has no pid".into()))?;
    let pidfd = match rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()) {
        Ok(fd) => fd,
        Err(e) => {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            let _ = rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty());
            return Err(fail(format!("following the compiler: {e}")));
        }
    };
    let mut helper = Helper {
        pidfd,
        waited: false,
    };
    for fd in [&stdin, &stdout, &stderr] {
        rustix::io::ioctl_fionbio(fd, true).map_err(|e| fail(format!("piping: {e}")))?;
    }
    let mut stdin = Some(std::fs::File::from(stdin));
    let (mut stdout, mut stderr) = (std::fs::File::from(stdout), std::fs::File::from(stderr));
    let (mut to_write, mut artifact, mut message) = (binary, Vec::new(), Vec::new());
    let (mut out_open, mut err_open) = (true, true);
    let mut buf = vec![0u8; 1 << 16];
    // Feed stdin, drain stdout and stderr, all at once: a full pipe never stalls either side.
    while out_open || err_open {
        let timeout = match deadline {
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(past_deadline());
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
        let mut fds = Vec::with_capacity(3);
        if let Some(w) = &stdin {
            fds.push(PollFd::new(w, PollFlags::OUT));
        }
        if out_open {
            fds.push(PollFd::new(&stdout, PollFlags::IN));
        }
        if err_open {
            fds.push(PollFd::new(&stderr, PollFlags::IN));
        }
        match rustix::event::poll(&mut fds, timeout.as_ref()) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(fail(format!("waiting for the compiler: {e}"))),
        }
        drop(fds);
        if let Some(w) = &mut stdin {
            match w.write(to_write) {
                Ok(n) => to_write = &to_write[n..],
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // The helper is gone early: what it said tells why.
                Err(_) => to_write = &[],
            }
            if to_write.is_empty() {
                stdin = None;
            }
        }
        if out_open {
            match stdout.read(&mut buf) {
                Ok(0) => out_open = false,
                Ok(n) => {
                    // The helper's output cannot outgrow the memory it was given.
                    if artifact.len() as u64 + n as u64 > memory {
                        return Err(fail("the compiled code is larger than the cap".into()));
                    }
                    artifact.extend_from_slice(&buf[..n]);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(fail(format!("reading from the compiler: {e}"))),
            }
        }
        if err_open {
            match stderr.read(&mut buf) {
                Ok(0) => err_open = false,
                Ok(n) => {
                    let room = MESSAGE_MAX.saturating_sub(message.len());
                    message.extend_from_slice(&buf[..n.min(room)]);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                    ) => {}
                Err(_) => err_open = false,
            }
        }
    }
    let status = helper.wait();
    if let Some(len) = artifact.len().checked_sub(16)
        && &artifact[len + 8..] == TRAILER_MAGIC
        && u64::from_le_bytes(artifact[len..len + 8].try_into().expect("8 bytes")) == len as u64
    {
        artifact.truncate(len);
        return Ok(artifact);
    }
    let message = String::from_utf8_lossy(&message).trim().to_string();
    // The allocator aborts, or an allocation of wasmtime's fails, when the cap refuses memory.
    // The message tells even when the status is gone: in a shim, its reaper may have collected
    // the helper's exit before this wait did.
    let aborted = status
        .as_ref()
        .and_then(|s| s.terminating_signal())
        .is_some_and(|s| s == libc::SIGABRT);
    let refused = message.contains("Cannot allocate memory")
        || (message.contains("memory allocation of") && message.contains("bytes failed"));
    if aborted || refused {
        return Err(Error::CompileMemory {
            name: name.to_string(),
            limit: memory,
        });
    }
    Err(fail(match (message.is_empty(), status) {
        (false, _) => message,
        (true, Some(st)) => match (st.exit_status(), st.terminating_signal()) {
            (Some(code), _) => format!("the compiler exited with status {code}"),
            (_, Some(sig)) => format!("the compiler was killed by signal {sig}"),
            _ => "the compiler stopped before it finished".into(),
        },
        (true, None) => "the compiler stopped before it finished".into(),
    }))
}

/// What a wasmbox binary runs, before anything else, when its first argument is [`HELPER_ARG`]
/// (`args` are the arguments after it: `KIND MEMORY PARENT`): caps its own writable data, dies
/// with its parent, compiles stdin to stdout. Returns the exit status.
pub fn helper_main(args: &[OsString]) -> i32 {
    match helper(args) {
        Ok(()) => 0,
        Err(e) => {
            let mut text = format!("{e:#}");
            if text.len() > MESSAGE_MAX / 2 {
                let mut end = MESSAGE_MAX / 2;
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                text.truncate(end);
                text.push_str("...");
            }
            let _ = writeln!(std::io::stderr(), "{text}");
            1
        }
    }
}

fn helper(args: &[OsString]) -> anyhow::Result<()> {
    use anyhow::Context;
    let [kind, memory, parent] = args else {
        anyhow::bail!("usage: {HELPER_ARG} module|component MEMORY PARENT-PID");
    };
    let number = |a: &OsString| a.to_str().and_then(|m| m.parse::<u64>().ok());
    let memory = number(memory).context("MEMORY is a number of bytes")?;
    let parent = number(parent).context("PARENT-PID is a number")?;
    // Nothing to outlive: the parent is waiting for this.
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
        .context("asking to die with the parent")?;
    if rustix::process::getppid().map(|p| p.as_raw_nonzero().get() as u64) != Some(parent) {
        anyhow::bail!("the parent is gone");
    }
    // Of everything on the machine, a runaway compile is what the OOM killer should take first.
    let _ = std::fs::write("/proc/self/oom_score_adj", "1000");
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
    let engine = wasmtime::Engine::new(&crate::engine_config::base_config())
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
