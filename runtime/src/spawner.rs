//! Starting programs once the process is locked. [`crate::seccomp::lock_process`] denies
//! `execve` to every thread of the process, so the programs wasmbox still starts after set-up
//! (the compile helper; in the shim, runc for native containers) are started by a spawner: a
//! single-threaded process forked at start, before the lock, that execs on request and nothing
//! else. It makes each child with `CLONE_PARENT`, so the child is the caller's own: the caller
//! reaps it, waits on it through a pidfd and kills it as if it had forked it itself.
//!
//! The spawner starts only the programs it was given at start ([`Allowed`]): native code that
//! reached the process could ask it, but not for a shell.
//!
//! A process that never started a spawner (a command that does not lock itself) execs directly.
//!
//! The wire: one request per `SOCK_SEQPACKET` message, carrying the child's stdin, stdout and
//! stderr as `SCM_RIGHTS`; one reply of the child's pid and an errno (0 once the child has exec'd).

use std::ffi::{CString, OsString};
use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketFlags, SocketType,
};

/// The largest request the spawner takes: far more than an argv and environment need.
const MAX_REQUEST: usize = 256 * 1024;

/// One program to start.
#[derive(Debug)]
pub struct Spawn {
    /// The program's path (also its `argv[0]`).
    pub program: PathBuf,
    /// Its arguments after `argv[0]`.
    pub args: Vec<OsString>,
    /// Its whole environment.
    pub env: Vec<(OsString, OsString)>,
    /// Its working directory; `None` keeps the spawner's.
    pub cwd: Option<PathBuf>,
    /// Its stdin, stdout and stderr.
    pub stdio: [OwnedFd; 3],
    /// Start it in a process group of its own (signals meant for ours never reach it).
    pub own_group: bool,
}

/// A program the spawner will start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowed {
    /// Its path, as a request names it after the `PATH` lookup ([`spawn`] does it).
    pub program: PathBuf,
    /// Its first argument, when only that one is allowed (the compile helper's marker).
    pub first_arg: Option<OsString>,
}

impl Allowed {
    /// `program` (a bare name is looked up in `PATH` now), with any arguments.
    pub fn program(program: impl Into<PathBuf>) -> Self {
        Self {
            program: resolve(&program.into(), &[]),
            first_arg: None,
        }
    }

    fn allows(&self, req: &Request) -> bool {
        req.program.as_bytes() == self.program.as_os_str().as_bytes()
            && self
                .first_arg
                .as_ref()
                .is_none_or(|a| req.argv.get(1).map(|r| r.as_bytes()) == Some(a.as_bytes()))
    }
}

struct Client {
    socket: Mutex<OwnedFd>,
}

static SPAWNER: OnceLock<Client> = OnceLock::new();

/// Forks the spawner, which will start only the `allowed` programs. Must be called while the
/// process is single-threaded (a fork copies only the calling thread); refuses otherwise.
/// Idempotent.
pub fn start(allowed: Vec<Allowed>) -> std::io::Result<()> {
    if SPAWNER.get().is_some() {
        return Ok(());
    }
    let threads = thread_count();
    if threads != 1 {
        return Err(std::io::Error::other(format!(
            "starting the spawner: the process already runs {threads} threads"
        )));
    }
    let (ours, theirs) = rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )?;
    let parent = rustix::process::getpid();
    match sys::fork()? {
        0 => {
            drop(ours);
            serve(theirs, parent, &allowed)
        }
        _ => {
            drop(theirs);
            let _ = SPAWNER.set(Client {
                socket: Mutex::new(ours),
            });
            Ok(())
        }
    }
}

/// True once [`start`] has forked the spawner: programs are then started through it.
pub fn started() -> bool {
    SPAWNER.get().is_some()
}

/// Starts `s` and returns its pid. The child is the caller's own child either way.
pub fn spawn(s: Spawn) -> std::io::Result<u32> {
    let Some(client) = SPAWNER.get() else {
        return spawn_here(s);
    };
    let mut s = s;
    s.program = resolve(&s.program, &s.env);
    let request = encode(&s);
    let socket = client
        .socket
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let fds: Vec<BorrowedFd<'_>> = s.stdio.iter().map(|f| f.as_fd()).collect();
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(3))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    control.push(SendAncillaryMessage::ScmRights(&fds));
    let gone = |e: std::io::Error| std::io::Error::other(format!("the spawner: {e}"));
    retry(|| {
        rustix::net::sendmsg(
            &*socket,
            &[IoSlice::new(&request)],
            &mut control,
            SendFlags::NOSIGNAL,
        )
    })
    .map_err(|e| gone(e.into()))?;
    let mut reply = [0u8; 8];
    let n = retry(|| rustix::net::recv(&*socket, &mut reply, RecvFlags::empty()))
        .map_err(|e| gone(e.into()))?
        .0;
    if n != reply.len() {
        return Err(gone(std::io::Error::other("it has gone")));
    }
    let pid = i32::from_ne_bytes(reply[..4].try_into().expect("4 bytes"));
    let errno = i32::from_ne_bytes(reply[4..].try_into().expect("4 bytes"));
    if errno != 0 {
        if pid > 0 {
            // The child could not exec and has exited: collect it (unless a reaper already did).
            let _ = rustix::process::waitpid(
                rustix::process::Pid::from_raw(pid),
                rustix::process::WaitOptions::empty(),
            );
        }
        return Err(std::io::Error::from_raw_os_error(errno));
    }
    Ok(pid as u32)
}

/// Without a spawner: an ordinary fork and exec, with the same settings.
fn spawn_here(s: Spawn) -> std::io::Result<u32> {
    let [stdin, stdout, stderr] = s.stdio;
    let mut cmd = std::process::Command::new(&s.program);
    cmd.args(&s.args)
        .env_clear()
        .envs(s.env)
        .stdin(stdin)
        .stdout(stdout)
        .stderr(stderr);
    if let Some(cwd) = &s.cwd {
        cmd.current_dir(cwd);
    }
    if s.own_group {
        cmd.process_group(0);
    }
    // Nobody waits through the `Child`: the caller waits by pid, as for a spawner's child.
    Ok(cmd.spawn()?.id())
}

/// `program` as `execvp` finds it: a name without a slash is looked up in the `PATH` of `env`
/// (else ours); the first executable file wins. A name found nowhere is left as it is, for
/// `execve` to refuse.
fn resolve(program: &Path, env: &[(OsString, OsString)]) -> PathBuf {
    if program.as_os_str().as_bytes().contains(&b'/') {
        return program.to_path_buf();
    }
    let path = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .or_else(|| std::env::var_os("PATH"))
        .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| rustix::fs::access(p, rustix::fs::Access::EXEC_OK).is_ok() && p.is_file())
        .unwrap_or_else(|| program.to_path_buf())
}

fn retry<T>(mut f: impl FnMut() -> rustix::io::Result<T>) -> rustix::io::Result<T> {
    loop {
        match f() {
            Err(rustix::io::Errno::INTR) => continue,
            r => return r,
        }
    }
}

fn thread_count() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// A request: flags, program, working directory (empty for none), then the arguments and the
/// environment (`K=V`), each list preceded by its length.
fn encode(s: &Spawn) -> Vec<u8> {
    fn put(out: &mut Vec<u8>, b: &[u8]) {
        out.extend((b.len() as u32).to_ne_bytes());
        out.extend(b);
    }
    let mut out = vec![u8::from(s.own_group)];
    put(&mut out, s.program.as_os_str().as_bytes());
    put(
        &mut out,
        s.cwd
            .as_deref()
            .map_or(&[][..], |c| c.as_os_str().as_bytes()),
    );
    out.extend((s.args.len() as u32).to_ne_bytes());
    for a in &s.args {
        put(&mut out, a.as_bytes());
    }
    out.extend((s.env.len() as u32).to_ne_bytes());
    for (k, v) in &s.env {
        let mut kv = k.as_bytes().to_vec();
        kv.push(b'=');
        kv.extend(v.as_bytes());
        put(&mut out, &kv);
    }
    out
}

/// A decoded request, ready for `execve`.
#[derive(Debug)]
struct Request {
    own_group: bool,
    program: CString,
    cwd: Option<CString>,
    argv: Vec<CString>,
    envp: Vec<CString>,
}

fn decode(mut b: &[u8]) -> Option<Request> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (b.get(..n)?, b.get(n..)?);
        *b = rest;
        Some(head)
    }
    fn count(b: &mut &[u8]) -> Option<usize> {
        Some(u32::from_ne_bytes(take(b, 4)?.try_into().ok()?) as usize)
    }
    fn string(b: &mut &[u8]) -> Option<CString> {
        let n = count(b)?;
        CString::new(take(b, n)?).ok()
    }
    let own_group = take(&mut b, 1)?[0] != 0;
    let program = string(&mut b)?;
    let cwd = Some(string(&mut b)?).filter(|c| !c.as_bytes().is_empty());
    let mut argv = vec![program.clone()];
    for _ in 0..count(&mut b)? {
        argv.push(string(&mut b)?);
    }
    let mut envp = Vec::new();
    for _ in 0..count(&mut b)? {
        envp.push(string(&mut b)?);
    }
    (b.is_empty() && !program.as_bytes().is_empty()).then_some(Request {
        own_group,
        program,
        cwd,
        argv,
        envp,
    })
}

/// The spawner's life: one request at a time until the process that forked it closes its end
/// (or dies: the parent-death signal).
fn serve(socket: OwnedFd, parent: rustix::process::Pid, allowed: &[Allowed]) -> ! {
    let _ = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL));
    if rustix::process::getppid() != Some(parent) {
        sys::exit(0);
    }
    let _ = rustix::thread::set_name(c"wasmbox-spawner");
    // A terminal's ^C or a stop meant for the process that forked it is not for the spawner.
    sys::ignore_job_signals();
    let socket = sys::keep_only(socket);
    let mut buf = vec![0u8; MAX_REQUEST];
    loop {
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(3))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let got = retry(|| {
            rustix::net::recvmsg(
                &socket,
                &mut [IoSliceMut::new(&mut buf)],
                &mut control,
                RecvFlags::CMSG_CLOEXEC,
            )
        });
        let msg = match got {
            Ok(m) if m.bytes == 0 => sys::exit(0),
            Ok(m) => m,
            Err(_) => sys::exit(1),
        };
        let mut fds: Vec<OwnedFd> = Vec::new();
        for m in control.drain() {
            if let RecvAncillaryMessage::ScmRights(got) = m {
                fds.extend(got);
            }
        }
        let truncated = msg
            .flags
            .intersects(rustix::net::ReturnFlags::TRUNC | rustix::net::ReturnFlags::CTRUNC);
        let (pid, errno) = match (truncated, <[OwnedFd; 3]>::try_from(fds)) {
            (false, Ok(stdio)) => match decode(&buf[..msg.bytes]) {
                Some(req) if allowed.iter().any(|a| a.allows(&req)) => launch(&req, stdio),
                Some(_) => (0, libc::EACCES),
                None => (0, libc::EINVAL),
            },
            _ => (0, libc::E2BIG),
        };
        let mut reply = [0u8; 8];
        reply[..4].copy_from_slice(&pid.to_ne_bytes());
        reply[4..].copy_from_slice(&errno.to_ne_bytes());
        if retry(|| rustix::net::send(&socket, &reply, SendFlags::NOSIGNAL)).is_err() {
            sys::exit(0);
        }
    }
}

/// Starts one child; its pid and 0 once it has exec'd, or the errno it failed with.
fn launch(req: &Request, stdio: [OwnedFd; 3]) -> (i32, i32) {
    let errno = |e: std::io::Error| e.raw_os_error().unwrap_or(libc::EIO);
    // Above 2, so that putting them in place never overwrites one not yet moved.
    let mut moved = Vec::with_capacity(3);
    for fd in &stdio {
        match rustix::io::fcntl_dupfd_cloexec(fd, 3) {
            Ok(f) => moved.push(f),
            Err(e) => return (0, errno(e.into())),
        }
    }
    drop(stdio);
    let (status_read, status_write) =
        match rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC) {
            Ok(p) => p,
            Err(e) => return (0, errno(e.into())),
        };
    let argv = sys::pointers(&req.argv);
    let envp = sys::pointers(&req.envp);
    let pid = match sys::clone_parent() {
        Ok(0) => sys::child(req, &argv, &envp, &moved, &status_write),
        Ok(pid) => pid,
        Err(e) => return (0, errno(e)),
    };
    drop(status_write);
    drop(moved);
    let mut code = [0u8; 4];
    match retry(|| rustix::io::read(&status_read, &mut code)) {
        Ok(4) => (pid, i32::from_ne_bytes(code)),
        // The pipe closed at exec: the child runs the program.
        Ok(_) => (pid, 0),
        Err(e) => (pid, errno(e.into())),
    }
}

/// The system calls the standard library does not wrap: the fork, the `CLONE_PARENT` clone and
/// what the child does between the clone and its exec.
#[allow(
    unsafe_code,
    reason = "fork(2) and clone(2) in single-threaded processes; between the clone and execve \
              the child makes only async-signal-safe calls on memory prepared before the clone"
)]
mod sys {
    use std::ffi::{CString, c_char};
    use std::os::fd::{AsRawFd, OwnedFd};

    use super::Request;

    /// Signals a terminal or a job-control shell sends to a whole process group.
    const JOB_SIGNALS: [libc::c_int; 5] = [
        libc::SIGINT,
        libc::SIGQUIT,
        libc::SIGHUP,
        libc::SIGTSTP,
        libc::SIGTERM,
    ];

    pub(super) fn fork() -> std::io::Result<libc::pid_t> {
        // SAFETY: the caller checked that the process is single-threaded, so the child may go on
        // running ordinary Rust code.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(pid)
    }

    /// A fork whose child's parent is the spawner's parent.
    pub(super) fn clone_parent() -> std::io::Result<libc::pid_t> {
        // SAFETY: with no new stack the child continues on a copy of this one, like fork; the
        // spawner is single-threaded.
        let pid = unsafe {
            libc::syscall(
                libc::SYS_clone,
                (libc::CLONE_PARENT | libc::SIGCHLD) as libc::c_ulong,
                0usize,
                0usize,
                0usize,
                0usize,
            )
        };
        if pid < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(pid as libc::pid_t)
    }

    pub(super) fn pointers(strings: &[CString]) -> Vec<*const c_char> {
        strings
            .iter()
            .map(|s| s.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect()
    }

    pub(super) fn exit(code: i32) -> ! {
        // SAFETY: ends the process without running the forked copy's exit handlers.
        unsafe { libc::_exit(code) }
    }

    pub(super) fn ignore_job_signals() {
        for sig in JOB_SIGNALS {
            // SAFETY: setting a disposition to SIG_IGN touches no memory of ours.
            unsafe { libc::signal(sig, libc::SIG_IGN) };
        }
    }

    /// Closes every descriptor but stdio and `socket`, which it moves above 2 if needed.
    pub(super) fn keep_only(socket: OwnedFd) -> OwnedFd {
        let socket = if socket.as_raw_fd() < 3 {
            match rustix::io::fcntl_dupfd_cloexec(&socket, 3) {
                Ok(s) => s,
                Err(_) => exit(1),
            }
        } else {
            socket
        };
        let fd = socket.as_raw_fd() as libc::c_uint;
        // SAFETY: close_range closes descriptors only; none of them is owned by live Rust
        // objects but `socket`, which the two ranges leave out.
        unsafe {
            if fd > 3 {
                libc::syscall(
                    libc::SYS_close_range,
                    3 as libc::c_uint,
                    fd - 1,
                    0 as libc::c_uint,
                );
            }
            libc::syscall(
                libc::SYS_close_range,
                fd + 1,
                libc::c_uint::MAX,
                0 as libc::c_uint,
            );
        }
        socket
    }

    /// The child, from the clone to its exec. On failure it reports the errno on `status` and
    /// exits 127.
    pub(super) fn child(
        req: &Request,
        argv: &[*const c_char],
        envp: &[*const c_char],
        stdio: &[OwnedFd],
        status: &OwnedFd,
    ) -> ! {
        // SAFETY: only async-signal-safe calls, on memory prepared before the clone.
        unsafe {
            let fail = || -> ! {
                let e = *libc::__errno_location();
                let b = e.to_ne_bytes();
                libc::write(status.as_raw_fd(), b.as_ptr().cast(), b.len());
                libc::_exit(127)
            };
            // What a program expects at start: default dispositions and no blocked signal.
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            for sig in JOB_SIGNALS {
                libc::signal(sig, libc::SIG_DFL);
            }
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            for (i, fd) in stdio.iter().enumerate() {
                if libc::dup2(fd.as_raw_fd(), i as libc::c_int) < 0 {
                    fail();
                }
            }
            if let Some(cwd) = &req.cwd
                && libc::chdir(cwd.as_ptr()) != 0
            {
                fail();
            }
            if req.own_group && libc::setpgid(0, 0) != 0 {
                fail();
            }
            libc::execve(req.program.as_ptr(), argv.as_ptr(), envp.as_ptr());
            fail()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn null() -> OwnedFd {
        std::fs::File::open("/dev/null").unwrap().into()
    }

    #[test]
    fn a_request_decodes_to_what_was_encoded() {
        let s = Spawn {
            program: "/usr/bin/env".into(),
            args: vec!["-0".into(), "x y".into()],
            env: vec![("A".into(), "1=2".into())],
            cwd: Some("/tmp".into()),
            stdio: [null(), null(), null()],
            own_group: true,
        };
        let r = decode(&encode(&s)).unwrap();
        assert!(r.own_group);
        assert_eq!(r.program.as_bytes(), b"/usr/bin/env");
        assert_eq!(r.cwd.unwrap().as_bytes(), b"/tmp");
        let argv: Vec<_> = r.argv.iter().map(|a| a.as_bytes()).collect();
        assert_eq!(argv, [&b"/usr/bin/env"[..], b"-0", b"x y"]);
        assert_eq!(r.envp[0].as_bytes(), b"A=1=2");
    }

    #[test]
    fn a_bare_name_is_found_in_the_path_it_is_given() {
        let env = vec![("PATH".into(), "/nonexistent:/bin:/usr/bin".into())];
        let found = resolve(Path::new("sh"), &env);
        assert!(found.is_absolute() && found.ends_with("sh"), "{found:?}");
        assert_eq!(resolve(Path::new("./x"), &env), Path::new("./x"));
        assert_eq!(
            resolve(Path::new("no-such-program-anywhere"), &env),
            Path::new("no-such-program-anywhere")
        );
    }

    #[test]
    fn only_the_allowed_programs_with_their_first_argument_pass() {
        let request = |program: &str, args: &[&str]| {
            decode(&encode(&Spawn {
                program: program.into(),
                args: args.iter().map(Into::into).collect(),
                env: vec![],
                cwd: None,
                stdio: [null(), null(), null()],
                own_group: false,
            }))
            .unwrap()
        };
        let helper = Allowed {
            program: "/proc/self/exe".into(),
            first_arg: Some("__compile".into()),
        };
        let runc = Allowed::program("/usr/sbin/runc");
        assert!(helper.allows(&request("/proc/self/exe", &["__compile", "x"])));
        assert!(!helper.allows(&request("/proc/self/exe", &["run", "x"])));
        assert!(!helper.allows(&request("/proc/self/exe", &[])));
        assert!(runc.allows(&request("/usr/sbin/runc", &["delete", "x"])));
        assert!(!runc.allows(&request("/bin/sh", &["-c", "id"])));
        assert!(!runc.allows(&request("/usr/sbin/runc/../../bin/sh", &[])));
    }

    #[test]
    fn a_short_or_padded_or_nul_bearing_request_is_refused() {
        let s = Spawn {
            program: "/bin/true".into(),
            args: vec![],
            env: vec![],
            cwd: None,
            stdio: [null(), null(), null()],
            own_group: false,
        };
        let good = encode(&s);
        assert!(decode(&good).is_some());
        assert!(decode(&good[..good.len() - 1]).is_none());
        let mut padded = good.clone();
        padded.push(0);
        assert!(decode(&padded).is_none());
        let mut nul = good.clone();
        nul[5] = 0;
        assert!(decode(&nul).is_none());
    }
}
