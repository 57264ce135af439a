//! FIFOs and socket files in a grant. Opening a FIFO waits in the kernel until a peer opens the
//! other end, and reading one waits for a writer: either would hold a host thread of the shared
//! blocking pool for as long as a peer pleases. So a guest never gets one. Every open of a path is
//! checked three ways, for preview 1 (`p1::fs`) and for components (`p2fs`) alike:
//!
//! 1. before: the name is looked up beneath the directory without opening it, and a FIFO or a
//!    socket file is refused (`EACCES` / `access`);
//! 2. during: should a host process swap a FIFO in after that look-up, the open waits in the
//!    kernel for a partner. While any open is in progress, and for [`LINGER`] after one was
//!    abandoned (its guest killed), a watchdog thread interrupts, every [`INTERRUPT_AFTER`], each
//!    guest thread that waits for a FIFO partner (`/proc/self/task/*/wchan` reads
//!    `wait_for_partner`) with a signal whose handler does nothing and does not restart the call
//!    ([`interrupt_fifo_waiters`]); the open fails with `EINTR` and the guest is told `EACCES`.
//!    This works whatever became of the FIFO (a swapper may have unlinked it again), and while
//!    the guest is paused. Only the threads of the runtime's own executor are signalled;
//! 3. after: a descriptor that turns out to be a FIFO or a socket is closed and refused.
//!
//! A guest cannot make such files itself (WASI has no `mknod`); they come from images, from the
//! host, or from a native container sharing a volume.

use std::future::Future;
use std::os::fd::AsFd;
use std::time::Duration;

use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};

/// How long an open may wait before the threads waiting for a FIFO partner are interrupted (and
/// then again each time as long again).
pub(crate) const INTERRUPT_AFTER: Duration = Duration::from_millis(10);

/// Whether `fd` is a FIFO or a socket.
pub(crate) fn is_fifo_or_socket_fd(fd: impl AsFd) -> bool {
    rustix::fs::fstat(fd).is_ok_and(|st| {
        matches!(
            FileType::from_raw_mode(st.st_mode),
            FileType::Fifo | FileType::Socket
        )
    })
}

/// `name` beneath `dir` opened `O_PATH` (nothing is opened for reading or writing), resolved as
/// a guest's path is: never above `dir`, no magic links, the last component followed only when
/// `follow`.
pub(crate) fn lookup(dir: impl AsFd, name: &[u8], follow: bool) -> Option<rustix::fd::OwnedFd> {
    find(dir, name, follow).ok()
}

/// [`lookup`], saying why it found nothing: `EXDEV` is a path that leaves `dir` (through `..` or
/// an absolute link), which only the guest's root may resolve (`resolve::through_absolute_link`).
pub(crate) fn find(
    dir: impl AsFd,
    name: &[u8],
    follow: bool,
) -> rustix::io::Result<rustix::fd::OwnedFd> {
    find_as(dir, name, follow, OFlags::empty())
}

/// [`lookup`] with more open flags (`O_DIRECTORY` to find only a directory).
pub(crate) fn lookup_as(
    dir: impl AsFd,
    name: &[u8],
    follow: bool,
    extra: OFlags,
) -> Option<rustix::fd::OwnedFd> {
    find_as(dir, name, follow, extra).ok()
}

fn find_as(
    dir: impl AsFd,
    name: &[u8],
    follow: bool,
    extra: OFlags,
) -> rustix::io::Result<rustix::fd::OwnedFd> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::path::Path::new(std::ffi::OsStr::from_bytes(name));
    let mut flags = OFlags::PATH | OFlags::CLOEXEC | extra;
    if !follow {
        flags |= OFlags::NOFOLLOW;
    }
    crate::resolve::openat2(
        dir.as_fd(),
        path,
        flags,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
    )
}

/// Whether `name` beneath the directory `dir` is a FIFO or a socket file, looked up without
/// opening it. Anything that does not resolve is left to wasmtime-wasi, which refuses escapes and
/// reports missing files itself.
#[cfg(test)]
pub(crate) fn is_fifo_or_socket(dir: impl AsFd, name: &[u8], follow: bool) -> bool {
    lookup(dir, name, follow).is_some_and(is_fifo_or_socket_fd)
}

/// The signal that interrupts a wait for a FIFO partner: a real-time one nothing else uses.
fn interrupt_signal() -> i32 {
    libc::SIGRTMAX() - 3
}

/// Installs the do-nothing handler for [`interrupt_signal`], without `SA_RESTART`, once; false
/// (and nothing installed) when something else already handles that signal.
fn install_handler() -> bool {
    static INSTALLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *INSTALLED.get_or_init(|| {
        extern "C" fn nothing(_: libc::c_int) {}
        // SAFETY: a handler that does nothing is async-signal-safe; the structs are zeroed and
        // then filled as sigaction(2) asks; the handler is only installed over the default
        // disposition, so nobody else's handler is replaced.
        #[allow(unsafe_code, reason = "installing a signal handler that does nothing")]
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(interrupt_signal(), std::ptr::null(), &mut old) != 0
                || old.sa_sigaction != libc::SIG_DFL
            {
                tracing::warn!("the FIFO interrupt signal is taken; opens that wait on a swapped-in FIFO are not interrupted");
                return false;
            }
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = nothing as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            sa.sa_flags = 0;
            libc::sigaction(interrupt_signal(), &sa, std::ptr::null_mut()) == 0
        }
    })
}

/// The threads that run guests' blocking calls (the runtime's own executor registers them); when
/// there are none (a runtime on its embedder's executor), every thread is a candidate.
static GUEST_THREADS: std::sync::Mutex<Vec<libc::pid_t>> = std::sync::Mutex::new(Vec::new());

/// Registers the calling thread as one that runs guests (from the executor's `on_thread_start`).
pub(crate) fn register_guest_thread() {
    let tid = rustix::thread::gettid().as_raw_nonzero().get();
    GUEST_THREADS.lock().expect("guest threads").push(tid);
}

/// Forgets the calling thread (from the executor's `on_thread_stop`).
pub(crate) fn unregister_guest_thread() {
    let tid = rustix::thread::gettid().as_raw_nonzero().get();
    GUEST_THREADS
        .lock()
        .expect("guest threads")
        .retain(|&t| t != tid);
}

/// The threads of this process that wait in the kernel for a FIFO partner (none where `wchan` is
/// not readable).
fn fifo_waiters() -> Vec<libc::pid_t> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("wchan"))
                .is_ok_and(|w| matches!(w.trim(), "wait_for_partner" | "fifo_open"))
        })
        .filter_map(|t| t.file_name().to_str()?.parse().ok())
        .collect()
}

/// Interrupts every guest thread of this process that waits in the kernel for a FIFO partner;
/// returns how many.
pub(crate) fn interrupt_fifo_waiters() -> usize {
    if !install_handler() {
        return 0;
    }
    let pid = std::process::id() as libc::c_long;
    let guests = GUEST_THREADS.lock().expect("guest threads").clone();
    fifo_waiters()
        .into_iter()
        .filter(|tid| guests.is_empty() || guests.contains(tid))
        .filter(|&tid| {
            // SAFETY: tgkill only sends a signal, to a thread of this very process, whose handler
            // (installed above) does nothing.
            #[allow(unsafe_code, reason = "signalling a thread of our own")]
            let sent = unsafe {
                libc::syscall(
                    libc::SYS_tgkill,
                    pid,
                    tid as libc::c_long,
                    interrupt_signal() as libc::c_long,
                )
            };
            sent == 0
        })
        .count()
}

/// How long after an open was abandoned (its guest killed) the watchdog still looks for its
/// thread, which may not have reached the kernel's wait yet.
const LINGER: Duration = Duration::from_secs(1);

/// Opens in progress, and when one was last abandoned: what the watchdog watches.
struct Watched {
    in_flight: usize,
    abandoned: Option<std::time::Instant>,
}

static WATCHED: std::sync::Mutex<Watched> = std::sync::Mutex::new(Watched {
    in_flight: 0,
    abandoned: None,
});
static WAKE: std::sync::Condvar = std::sync::Condvar::new();

/// The process-wide watchdog: while any open is in progress (or was abandoned within
/// [`LINGER`]), every [`INTERRUPT_AFTER`] it interrupts the guest threads waiting for a FIFO
/// partner. It runs on a thread of its own, so a paused or killed guest, or a busy executor,
/// does not stop it.
fn watchdog() {
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| {
        let spawned = std::thread::Builder::new()
            .name("wasmbox-fifo-watch".into())
            .spawn(|| {
                loop {
                    {
                        let mut w = WATCHED.lock().expect("watched");
                        loop {
                            let lingering = w.abandoned.is_some_and(|t| t.elapsed() < LINGER);
                            if w.in_flight > 0 || lingering {
                                break;
                            }
                            w.abandoned = None;
                            w = WAKE.wait(w).expect("watched");
                        }
                    }
                    std::thread::sleep(INTERRUPT_AFTER);
                    let n = interrupt_fifo_waiters();
                    if n > 0 {
                        tracing::warn!(
                            threads = n,
                            "interrupted opens waiting on a FIFO (one appeared under an open)"
                        );
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "could not start the FIFO watchdog");
        }
    });
}

/// An open in progress, counted by the watchdog until dropped.
struct InFlight {
    done: bool,
}

impl InFlight {
    fn start() -> Self {
        watchdog();
        WATCHED.lock().expect("watched").in_flight += 1;
        WAKE.notify_all();
        InFlight { done: false }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut w = WATCHED.lock().expect("watched");
        w.in_flight -= 1;
        if !self.done {
            // The guest was killed (its future dropped) while the open was in progress.
            w.abandoned = Some(std::time::Instant::now());
        }
        WAKE.notify_all();
    }
}

/// Awaits `open` while the watchdog interrupts the guest threads that wait for a FIFO partner
/// (the open's own thread among them, should a FIFO appear under it), also for a while after it
/// is dropped before it returns.
pub(crate) async fn interrupting<F: Future>(open: F) -> F::Output {
    let mut watched = InFlight::start();
    let r = open.await;
    watched.done = true;
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mkfifo(path: &std::path::Path) {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            path,
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
    }

    #[test]
    fn fifos_and_sockets_are_told_from_files_and_directories() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("file"), "x").unwrap();
        std::fs::create_dir(d.path().join("dir")).unwrap();
        mkfifo(&d.path().join("fifo"));
        let _sock = std::os::unix::net::UnixListener::bind(d.path().join("sock")).unwrap();
        std::os::unix::fs::symlink("fifo", d.path().join("link")).unwrap();
        let dir = std::fs::File::open(d.path()).unwrap();
        assert!(!is_fifo_or_socket(&dir, b"file", true));
        assert!(!is_fifo_or_socket(&dir, b"dir", true));
        assert!(!is_fifo_or_socket(&dir, b"missing", true));
        assert!(is_fifo_or_socket(&dir, b"fifo", false));
        assert!(is_fifo_or_socket(&dir, b"sock", false));
        assert!(is_fifo_or_socket(&dir, b"link", true));
        // Not followed, the link itself is no FIFO; the open that follows it not either.
        assert!(!is_fifo_or_socket(&dir, b"link", false));
        // Never above the directory.
        assert!(!is_fifo_or_socket(
            std::fs::File::open(d.path().join("dir")).unwrap(),
            b"../fifo",
            true
        ));
    }

    /// Interrupting reaches every FIFO waiter of the process: the tests that make some take
    /// turns.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

    /// An open that waits on a FIFO (as when a host process swaps one in after the look-up, and
    /// maybe unlinks it again) is interrupted, at either end.
    #[test]
    fn an_open_waiting_on_a_fifo_is_interrupted() {
        let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let d = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        for write in [false, true] {
            let fifo = d.path().join(format!("fifo-{write}"));
            mkfifo(&fifo);
            let path = fifo.clone();
            let open = async move {
                let waiting = tokio::task::spawn_blocking(move || {
                    // rustix, as cap-std opens: no retry on EINTR.
                    rustix::fs::open(
                        &path,
                        if write {
                            OFlags::WRONLY
                        } else {
                            OFlags::RDONLY
                        },
                        Mode::empty(),
                    )
                });
                // Gone from its directory once the open waits: no path leads to it any more.
                while !waiting.is_finished() {
                    if !fifo_waiters().is_empty() {
                        std::fs::remove_file(&fifo).unwrap();
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                waiting.await.unwrap()
            };
            let r = rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(30), interrupting(open))
                    .await
                    .expect("the open was interrupted")
            });
            assert_eq!(r.unwrap_err(), rustix::io::Errno::INTR);
        }
    }

    /// An open abandoned while its thread is still on its way to the kernel's wait (the guest
    /// killed just after asking) is still interrupted once it gets there.
    #[test]
    fn an_abandoned_open_is_interrupted_when_its_thread_gets_to_the_wait() {
        let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("fifo");
        mkfifo(&fifo);
        let (tx, rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            // Reaches the open only after the open was abandoned.
            go_rx.recv().unwrap();
            let _ = tx.send(rustix::fs::open(&fifo, OFlags::RDONLY, Mode::empty()).err());
        });
        drop(InFlight::start());
        go_tx.send(()).unwrap();
        let got = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the waiting thread was freed");
        assert_eq!(got, Some(rustix::io::Errno::INTR));
    }
}
