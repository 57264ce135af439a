//! `create`: the container's process is forked and sets itself up as the spec says (its network
//! namespace, its cgroup with the memory limit, a mount namespace, the seccomp lock, the module
//! loaded through the compiled-code cache, a terminal when the spec asks for one), then waits on
//! the exec FIFO for `start`, as runc's init does. `create` returns once it is ready, with its pid
//! in `--pid-file`; the process is then the caller's subreaper's (conmon's, the runc shim's).

use std::path::Path;

use anyhow::{Context, Result, bail};
use oci_spec::runtime::Spec;
use wasmbox_runtime::launch::{Entry, Wasm};

use super::args::{CreateArgs, Oci};
use super::state::{self, State};
use crate::lifecycle::Status;

/// Reads the bundle's spec.
pub fn read_spec(bundle: &Path) -> Result<Spec> {
    let path = bundle.join("config.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    wasmbox_runtime::policy::parse_spec(&text)
        .map_err(|e| anyhow::anyhow!("{}: malformed: {e}", path.display()))
}

/// Creates container `a.id` from its bundle; `Ok(None)` when its entrypoint is native (runc's).
pub fn create(oci: &Oci, a: &CreateArgs) -> Result<Option<()>> {
    let bundle = std::fs::canonicalize(&a.bundle)
        .with_context(|| format!("bundle {}", a.bundle.display()))?;
    let spec = read_spec(&bundle)?;
    let wasm = match crate::launch::classify(&bundle, spec.clone())? {
        Entry::Native => return Ok(None),
        Entry::Wasm(w) => w,
    };
    let terminal = spec
        .process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false);
    if terminal && a.console_socket.is_none() {
        bail!("process.terminal is true but no --console-socket was given");
    }
    make_root(&oci.root)?;
    let dir = state::dir(&oci.root, &a.id)?;
    match std::fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            bail!("container with id exists: {}", a.id)
        }
        Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
    }
    let made = make(oci, a, &bundle, spec, wasm, terminal, &dir);
    if made.is_err() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    made.map(Some)
}

fn make_root(root: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o711)
        .create(root)
        .with_context(|| format!("creating the state root {}", root.display()))
}

fn make(
    oci: &Oci,
    a: &CreateArgs,
    bundle: &Path,
    spec: Spec,
    wasm: Box<Wasm>,
    terminal: bool,
    dir: &Path,
) -> Result<()> {
    let fifo = state::fifo(dir);
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
    )
    .with_context(|| format!("making {}", fifo.display()))?;
    let (ready_read, ready_write) =
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).context("a pipe")?;
    let rootfs = wasm.bundle.rootfs.clone();
    let annotations = spec.annotations().clone().unwrap_or_default();
    let pid = match super::sys::fork()? {
        0 => {
            drop(ready_read);
            let console = a.console_socket.clone();
            let join = super::container::Join::Container(&spec);
            super::container::run(
                oci,
                join,
                &spec,
                wasm,
                terminal,
                console,
                ready_write,
                Some(dir),
            )
        }
        pid => pid,
    };
    drop(ready_write);
    let cgroups = super::ready::heard(ready_read, pid)?;
    let start_time = state::start_time(pid).context("the container process is gone")?;
    let st = State {
        id: a.id.clone(),
        pid,
        start_time,
        bundle: bundle.to_path_buf(),
        rootfs,
        created: wasmbox_runtime::rfc3339::nanos(std::time::SystemTime::now()),
        status: Status::Created,
        annotations: annotations.into_iter().collect(),
        cgroups,
        execs: Vec::new(),
    };
    st.save(&oci.root)?;
    let mut creating = st.oci();
    creating["status"] = "creating".into();
    if let Err(e) = super::hooks::run(&spec, super::hooks::When::Create, &creating) {
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_raw(pid).expect("a child's pid"),
            rustix::process::Signal::KILL,
        );
        let _ = rustix::process::waitpid(
            rustix::process::Pid::from_raw(pid),
            rustix::process::WaitOptions::empty(),
        );
        return Err(e);
    }
    if let Some(p) = &a.pid_file {
        write_pid_file(p, pid)?;
    }
    Ok(())
}

/// Writes `pid` to `path` atomically (a reader never sees a partial file).
pub fn write_pid_file(path: &Path, pid: i32) -> Result<()> {
    let tmp = path.with_file_name(format!(
        ".{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("pid")
    ));
    std::fs::write(&tmp, pid.to_string()).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}
