//! The network namespace a shim's guests live in.
//!
//! A shim serves one group of containers (a Kubernetes pod), which share one network namespace.
//! The serving process joins the namespace its first container's spec names before it starts any
//! thread, so every thread, and so every socket a guest opens, lives there. Later containers of
//! the group must name the same namespace. A spec that asks for a new namespace (no path), as a
//! plain `ctr run` does, gets one, with only loopback up, when it grants the guest any network
//! access; without a grant the guest can open no socket, so none is made for the process. An HTTP
//! component's listener is wasmbox's, though: in that case it is bound in a new namespace of its
//! own, made on a thread of its own at create ([`bind_in_new_namespace`]), so a server never
//! listens in the host's namespace unless the spec says so.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use oci_spec::runtime::{LinuxNamespaceType, Spec};

use super::error::{Result, ShimError};

/// The spec's network namespace entry: `Some(Some(path))` to join, `Some(None)` for a new one,
/// `None` for the host's.
fn wanted(spec: &Spec) -> Option<Option<PathBuf>> {
    let ns = spec
        .linux()
        .as_ref()?
        .namespaces()
        .as_ref()?
        .iter()
        .find(|n| n.typ() == LinuxNamespaceType::Network)?;
    Some(ns.path().clone())
}

/// The network namespace path a spec names, if any.
fn named(spec: &Spec) -> Option<PathBuf> {
    wanted(spec).flatten()
}

/// Whether the spec's annotations grant the guest any network access: the policy's own reading
/// of them. Malformed annotations grant nothing here; create reports them.
fn grants_network(spec: &Spec) -> bool {
    let mut policy = wasmbox_runtime::Policy::default();
    let empty = Default::default();
    let ann = spec.annotations().as_ref().unwrap_or(&empty);
    wasmbox_runtime::policy::apply_annotations(&mut policy, ann).is_ok()
        && policy.net.reaches_network()
}

/// Joins the network namespace `spec` names, if it names one. Must run before the process
/// starts any thread: `setns` moves only the calling thread, and threads started later inherit
/// it.
#[allow(unsafe_code, reason = "setns(2) on a namespace file we opened")]
pub fn join(spec: &Spec) -> std::result::Result<(), String> {
    let path = match wanted(spec) {
        None => return Ok(()),
        Some(None) if grants_network(spec) => return new_namespace(),
        Some(None) => return Ok(()),
        Some(Some(path)) => path,
    };
    let f = std::fs::File::open(&path)
        .map_err(|e| format!("open network namespace {}: {e}", path.display()))?;
    use std::os::fd::AsRawFd;
    // SAFETY: setns reads only the descriptor, which stays open for the call.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(format!(
            "join network namespace {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Moves the (single-threaded) process into a new network namespace and brings its loopback up.
#[allow(
    unsafe_code,
    reason = "unshare(2) and the SIOCSIFFLAGS ioctl on a socket we own"
)]
fn new_namespace() -> std::result::Result<(), String> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let os = |what: &str| format!("{what}: {}", std::io::Error::last_os_error());
    // SAFETY: unshare has no memory effects.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(os("create a network namespace"));
    }
    // SAFETY: socket returns a new descriptor or -1.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(os("socket for bringing loopback up"));
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *d = *s as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write `req`, which outlives the calls.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) != 0 {
            return Err(os("read loopback flags"));
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) != 0 {
            return Err(os("bring loopback up"));
        }
    }
    Ok(())
}

/// Whether an HTTP component's listener must be bound in a new namespace of its own: the spec
/// asks for a new one, which the process did not make at start (the spec grants no network).
pub fn server_needs_own_namespace(spec: &Spec) -> bool {
    matches!(wanted(spec), Some(None)) && !grants_network(spec)
}

/// Binds `addr` in a new network namespace, with only loopback up, made by a thread of its own
/// (`unshare` moves only the calling thread; the socket keeps its namespace alive).
pub fn bind_in_new_namespace(addr: std::net::SocketAddr) -> std::io::Result<std::net::TcpListener> {
    std::thread::Builder::new()
        .name("wasmbox-netns".into())
        .spawn(move || {
            new_namespace().map_err(std::io::Error::other)?;
            std::net::TcpListener::bind(addr)
        })?
        .join()
        .map_err(|_| std::io::Error::other("the thread binding the listener failed"))?
}

/// Checks that a wasm container's spec names this process's network namespace (or none).
pub fn check_same(spec: &Spec) -> Result<()> {
    let Some(path) = named(spec) else {
        return Ok(());
    };
    let want = std::fs::metadata(&path).map_err(|e| {
        ShimError::InvalidArgument(format!("network namespace {}: {e}", path.display()))
    })?;
    let ours = std::fs::metadata("/proc/thread-self/ns/net")
        .map_err(|e| ShimError::Internal(format!("own network namespace: {e}")))?;
    if (want.dev(), want.ino()) != (ours.dev(), ours.ino()) {
        return Err(ShimError::InvalidArgument(format!(
            "network namespace {} is not the one this shim's group lives in; containers that \
             share a shim (same io.kubernetes.cri.sandbox-id or io.containerd.runc.v2.group) \
             must share their network namespace",
            path.display()
        )));
    }
    Ok(())
}
