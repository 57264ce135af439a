//! SIGINT, SIGTERM and SIGHUP for a process that runs one guest (`wasmbox run`, a container
//! process of the OCI runtime face), handled from the moment wasmbox starts. A server takes
//! SIGHUP as a reload of its TLS certificate; to anything else it is a kill like the others.
//!
//! [`block`] runs first in `main`, before any thread exists, so every later thread inherits the
//! mask and none of the signals ever meets its default action. One thread then takes them with
//! `sigwait(2)`:
//! - while wasmbox is still loading or compiling, a signal ends it at once with 128+signal,
//!   after removing what the run has made so far (its bundle directory);
//! - between linking and the guest's start, a signal is kept, and kills the guest as it starts;
//! - once the guest runs, a signal kills it (exit 128+signal), as before.
//!
//! Other commands unblock them right after parsing, keeping their default actions.

use std::path::PathBuf;
use std::sync::Mutex;

use wasmbox_runtime::KillHandle;

enum Phase {
    /// Loading and compiling: paths to remove if a signal ends the run.
    Loading(Vec<PathBuf>),
    /// Linking and starting: a signal waits for the guest.
    Starting(Option<i32>),
    /// The guest runs.
    Running(KillHandle),
}

static PHASE: Mutex<Phase> = Mutex::new(Phase::Loading(Vec::new()));

#[allow(
    unsafe_code,
    reason = "sigset_t is plain data that sigemptyset and sigaddset fill in"
)]
fn set() -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the zeroed set; sigaddset takes valid signal numbers.
    unsafe {
        let mut s: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut s);
        libc::sigaddset(&mut s, libc::SIGINT);
        libc::sigaddset(&mut s, libc::SIGTERM);
        libc::sigaddset(&mut s, libc::SIGHUP);
        s
    }
}

#[allow(
    unsafe_code,
    reason = "pthread_sigmask on the calling thread with a filled-in set"
)]
fn mask(how: libc::c_int) {
    let s = set();
    // SAFETY: a valid set and no old-set pointer.
    unsafe {
        libc::pthread_sigmask(how, &s, std::ptr::null_mut());
    }
}

/// Blocks the signals in the calling thread and every thread started after.
pub fn block() {
    mask(libc::SIG_BLOCK);
}

/// Gives the signals their default actions back (commands other than `run`).
pub fn unblock() {
    mask(libc::SIG_UNBLOCK);
}

/// Starts the thread that takes the signals for a run.
pub fn start() -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("wasmbox-signals".into())
        .spawn(|| {
            loop {
                let sig = wait();
                handle(sig);
            }
        })
        .map(drop)
}

#[allow(unsafe_code, reason = "sigwait(2) on a filled-in set, into a local")]
fn wait() -> i32 {
    let s = set();
    let mut sig = 0;
    // SAFETY: both pointers are to live locals.
    let rc = unsafe { libc::sigwait(&s, &mut sig) };
    if rc != 0 { libc::SIGTERM } else { sig }
}

fn handle(sig: i32) {
    let mut phase = PHASE.lock().unwrap_or_else(|e| e.into_inner());
    match &mut *phase {
        Phase::Loading(paths) => remove_and_exit(paths, 128 + sig),
        Phase::Starting(pending) => *pending = Some(sig),
        Phase::Running(kill) => {
            kill.kill(sig);
        }
    }
}

fn remove_and_exit(paths: &[PathBuf], code: i32) -> ! {
    for p in paths {
        let _ = std::fs::remove_dir_all(p);
    }
    std::process::exit(code)
}

/// Registers a directory the run made, removed if a signal ends the run while it loads.
pub fn remove_on_signal(path: PathBuf) {
    if let Phase::Loading(paths) = &mut *PHASE.lock().unwrap_or_else(|e| e.into_inner()) {
        paths.push(path);
    }
}

/// Loading is over: from here a signal is kept for the guest, whose directories are removed by
/// the normal drops when it ends.
pub fn starting() {
    *PHASE.lock().unwrap_or_else(|e| e.into_inner()) = Phase::Starting(None);
}

/// The guest runs: a signal kept while it started kills it now; later ones kill it as they come.
pub fn running(kill: KillHandle) {
    let mut phase = PHASE.lock().unwrap_or_else(|e| e.into_inner());
    if let Phase::Starting(Some(sig)) = &*phase {
        kill.kill(*sig);
    }
    *phase = Phase::Running(kill);
}
