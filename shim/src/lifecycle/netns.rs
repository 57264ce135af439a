//! The network namespace a shim's guests live in.
//!
//! A shim serves one group of containers (a Kubernetes pod), which share one network namespace.
//! The serving process joins the namespace its first container's spec names before it starts any
//! thread, so every thread, and so every socket a guest opens, lives there. A spec that asks for a
//! new namespace (no path), as a plain `ctr run` does, gets one, with only loopback up, when it
//! grants the guest any network access; without a grant the guest can open no socket, so none is
//! made for the process. An HTTP
//! component's listener is wasmbox's, though: when the process made no namespace, it is bound in a
//! new namespace of its own, made on a thread of its own at create ([`bind_in_new_namespace`]), so
//! a server never listens in the host's namespace unless the spec says so.
//!
//! Every later wasm container of the group must ask for what the first did ([`check_same`]): the
//! host's namespace, a new one, or the same named one. A guest lives in the process's namespace
//! whatever its spec says, so any other request would be silently run somewhere it did not ask
//! for (a plain `ctr run` on the host's network, in a group a `--net-host` container began). For
//! the same reason a guest granted network is refused a new namespace the process never made.
//! Native containers are runc's, which gives each the namespaces its own spec asks for, but for
//! the host's network: a container whose spec lists no network namespace stays in the shim's, so
//! one asking for the host's is refused where the shim is elsewhere ([`check_native`]).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use oci_spec::runtime::{LinuxNamespaceType, Spec};

use super::error::{Result, ShimError};

/// A container's network namespace request, as its spec states it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// No network namespace entry: the host's (`ctr run --net-host`, `hostNetwork: true`).
    Host,
    /// An entry without a path: a new namespace (a plain `ctr run`).
    New,
    /// An entry with a path: that namespace (a pod's).
    Path(PathBuf),
}

impl Request {
    /// What `spec` asks for.
    pub fn of(spec: &Spec) -> Self {
        let entry = spec
            .linux()
            .as_ref()
            .and_then(|l| l.namespaces().as_ref())
            .and_then(|ns| ns.iter().find(|n| n.typ() == LinuxNamespaceType::Network));
        match entry {
            None => Request::Host,
            Some(n) => n.path().clone().map_or(Request::New, Request::Path),
        }
    }
}

impl std::fmt::Display for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Request::Host => f.write_str("the host's network namespace"),
            Request::New => f.write_str("a new network namespace"),
            Request::Path(p) => write!(f, "network namespace {}", p.display()),
        }
    }
}

/// The namespace this process's group lives in: what its first container asked for, and whether
/// the process made a new namespace for it.
#[derive(Debug)]
struct Group {
    request: Request,
    made: bool,
}

/// Set by [`join`], once, before any thread starts.
static GROUP: OnceLock<Group> = OnceLock::new();

/// What a process that never joined a group (a test's) lives in: the namespace it started in.
static STARTED_IN: Group = Group {
    request: Request::Host,
    made: false,
};

fn group() -> &'static Group {
    GROUP.get().unwrap_or(&STARTED_IN)
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

/// Joins the network namespace the group's first container's `spec` names, or makes a new one
/// when it asks for one and grants network; records what the group lives in for [`check_same`].
/// Must run before the process starts any thread: `setns` and `unshare` move only the calling
/// thread, and threads started later inherit it.
pub fn join(spec: Option<&Spec>) -> std::result::Result<(), String> {
    let request = spec.map_or(Request::Host, Request::of);
    let made = match &request {
        Request::Host => false,
        Request::New => {
            let make = spec.is_some_and(grants_network);
            if make {
                new_namespace()?;
            }
            make
        }
        Request::Path(path) => {
            set_namespace(path)?;
            false
        }
    };
    let _ = GROUP.set(Group { request, made });
    Ok(())
}

/// Enters the network namespace `spec` asks for, as runc does: the one it names, a new one (with
/// loopback up) when it names none, or the host's when it asks for none. For a process that runs
/// one container (the OCI runtime face); a shim's group follows [`join`]. Must run before the
/// process starts any thread.
pub fn enter(spec: &Spec) -> std::result::Result<(), String> {
    match Request::of(spec) {
        Request::Host => Ok(()),
        Request::New => new_namespace(),
        Request::Path(path) => set_namespace(&path),
    }
}

/// Moves the (single-threaded) process into the network namespace at `path`.
#[allow(unsafe_code, reason = "setns(2) on a namespace file we opened")]
fn set_namespace(path: &std::path::Path) -> std::result::Result<(), String> {
    let f = std::fs::File::open(path)
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

/// Whether an HTTP component's listener must be bound in a new network namespace of its own: the
/// spec asks for a new one, which the process did not make at start.
pub fn server_needs_own_namespace(spec: &Spec) -> bool {
    Request::of(spec) == Request::New && !group().made
}

/// Binds `addr`, and `also` when given, in one new network namespace, with only loopback up,
/// made by a thread of its own (`unshare` moves only the calling thread; the sockets keep the
/// namespace alive).
pub fn bind_in_new_namespace(
    addr: std::net::SocketAddr,
    also: Option<std::net::SocketAddr>,
) -> std::io::Result<(std::net::TcpListener, Option<std::net::TcpListener>)> {
    std::thread::Builder::new()
        .name("wasmbox-netns".into())
        .spawn(move || {
            new_namespace().map_err(std::io::Error::other)?;
            let first = std::net::TcpListener::bind(addr)?;
            let second = also.map(std::net::TcpListener::bind).transpose()?;
            Ok((first, second))
        })?
        .join()
        .map_err(|_| std::io::Error::other("the thread binding the listener failed"))?
}

/// Checks that a wasm container asks for the network namespace its group lives in: the same kind
/// of request as the group's first container, naming the same namespace if it names one. A group
/// in a new namespace the process did not make takes only guests granted no network.
pub fn check_same(spec: &Spec) -> Result<()> {
    let group = group();
    let want = Request::of(spec);
    match (&want, &group.request) {
        (Request::Host, Request::Host) => Ok(()),
        (Request::New, Request::New) if group.made || !grants_network(spec) => Ok(()),
        (Request::New, Request::New) => Err(ShimError::InvalidArgument(format!(
            "this container asks for {want} and is granted network access, but its group's shim \
             made none (the group's first container was granted no network), so its guest would \
             use the host's network; grant the group's first container network access too, or \
             run this one outside the group ({GROUPS})"
        ))),
        (Request::Path(path), Request::Path(_)) => same_as_ours(path),
        _ => Err(ShimError::InvalidArgument(format!(
            "this container asks for {want}, but its group's shim lives in {}, as its first \
             container asked; {SHARE}",
            group.request
        ))),
    }
}

/// Checks that a native container asking for the host's network namespace gets it: runc makes the
/// namespaces a spec lists and leaves its container in the shim's for the others, so in a group
/// whose shim left the namespace it started in, such a container is refused. Any other request
/// runc honours itself.
pub fn check_native(spec: &Spec) -> Result<()> {
    let group = group();
    let moved = match group.request {
        Request::Host => false,
        Request::New => group.made,
        Request::Path(_) => true,
    };
    if moved && Request::of(spec) == Request::Host {
        return Err(ShimError::InvalidArgument(format!(
            "this container asks for {}, but its group's shim lives in {}, as its first \
             container asked, and runc would start it there; {SHARE}",
            Request::Host,
            group.request
        )));
    }
    Ok(())
}

/// The annotations that put containers in one shim.
const GROUPS: &str = "io.kubernetes.cri.sandbox-id or io.containerd.runc.v2.group";
/// What containers of one shim must do.
const SHARE: &str = "containers that share a shim (same io.kubernetes.cri.sandbox-id or \
                     io.containerd.runc.v2.group) must ask for the same network namespace";

/// Checks that `path` names this process's network namespace.
fn same_as_ours(path: &Path) -> Result<()> {
    let want = std::fs::metadata(path).map_err(|e| {
        ShimError::InvalidArgument(format!("network namespace {}: {e}", path.display()))
    })?;
    let ours = std::fs::metadata("/proc/thread-self/ns/net")
        .map_err(|e| ShimError::Internal(format!("own network namespace: {e}")))?;
    if (want.dev(), want.ino()) != (ours.dev(), ours.ino()) {
        return Err(ShimError::InvalidArgument(format!(
            "network namespace {} is not the one this shim's group lives in; {SHARE}",
            path.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(linux: &str) -> Spec {
        let text = format!(r#"{{"ociVersion":"1.0.2"{linux}}}"#);
        wasmbox_runtime::policy::parse_spec(&text).unwrap()
    }

    #[test]
    fn a_request_is_the_hosts_a_new_or_a_named_namespace() {
        assert_eq!(Request::of(&spec("")), Request::Host);
        let other = r#","linux":{"namespaces":[{"type":"mount"}]}"#;
        assert_eq!(Request::of(&spec(other)), Request::Host);
        let new = r#","linux":{"namespaces":[{"type":"network"}]}"#;
        assert_eq!(Request::of(&spec(new)), Request::New);
        let named = r#","linux":{"namespaces":[{"type":"network","path":"/run/netns/x"}]}"#;
        assert_eq!(
            Request::of(&spec(named)),
            Request::Path("/run/netns/x".into())
        );
    }

    #[test]
    fn a_process_that_joined_no_group_takes_only_host_requests() {
        // Unit tests never join: the process lives where it started.
        assert!(check_same(&spec("")).is_ok());
        let new = r#","linux":{"namespaces":[{"type":"network"}]}"#;
        let e = check_same(&spec(new)).unwrap_err().to_string();
        assert!(
            e.contains("asks for a new network namespace")
                && e.contains("lives in the host's network namespace"),
            "{e}"
        );
        let own = r#","linux":{"namespaces":[{"type":"network","path":"/proc/self/ns/net"}]}"#;
        let e = check_same(&spec(own)).unwrap_err().to_string();
        assert!(
            e.contains("asks for network namespace /proc/self/ns/net"),
            "{e}"
        );
    }
}
