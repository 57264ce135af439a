//! The socket a group's shim serves on: private whatever the umask, handed to containerd only
//! when a shim of a trusted uid serves it, and answering only trusted uids.
//!
//! Sockets live in containerd's `/run/containerd/s/`, which containerd's own shims share. `start`
//! keeps that directory `0711`, owned by a trusted uid, and binds each socket `0600`: the mode is
//! set on the socket before it is bound, so no umask (not even 000, which containerd may be
//! started with) leaves a moment where others could connect. A socket already at a group's path
//! is handed to containerd only when its file is a trusted uid's and so is the process listening
//! on it (`SO_PEERCRED`); anything else there is removed and replaced by the new shim's socket.
//!
//! The trusted uids are root's and the shim's own effective uid. containerd runs its shims as
//! itself, so the shim's uid is containerd's; root could take the shim over in any case. The
//! serving process closes, unanswered, every connection from a peer of another uid.

use std::fs::{File, Permissions};
use std::os::unix::fs::{DirBuilderExt as _, FileTypeExt as _, MetadataExt as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use containerd_shim::protos::ttrpc::r#async::transport::Listener;

/// The mode of the sockets' directory: others may reach a socket whose name they know, never
/// list, add or remove one.
pub const DIR_MODE: u32 = 0o711;
/// The mode of a shim's socket: its owner's alone.
pub const SOCKET_MODE: u32 = 0o600;

/// Whether `uid` may own a shim's socket, serve one or connect to one: root or the shim's own
/// effective uid (containerd's, which runs its shims as itself).
pub fn trusted(uid: u32) -> bool {
    uid == 0 || uid == rustix::process::geteuid().as_raw()
}

/// A socket bound for a new serving process.
pub struct Bound {
    /// The listening socket.
    pub listener: UnixListener,
    /// What was at the socket's path and was removed for not being a trusted shim's socket.
    pub replaced: Option<String>,
}

/// Binds the group's socket at `path`, or `None` when a trusted shim already answers on it. A
/// socket nobody answers on is a dead shim's, and is replaced; so is anything at the path that is
/// not a trusted shim's socket.
pub fn listen(path: &Path) -> Result<Option<Bound>, String> {
    let parent = path
        .parent()
        .ok_or_else(|| format!("shim socket {}: no directory", path.display()))?;
    let dir = private_dir(parent)?;
    // Starts look and bind one at a time (an flock on the sockets' directory, released when this
    // returns): otherwise one could remove, as a dead shim's, the socket another has just bound.
    dir.lock()
        .map_err(|e| format!("lock {}: {e}", parent.display()))?;
    let bound = bind(path);
    drop(dir);
    bound
}

/// Makes `dir` (and any missing parent) if needed, and checks that it is a directory owned by a
/// trusted uid, with mode [`DIR_MODE`] (restored if it is not). Returns it open.
fn private_dir(dir: &Path) -> Result<File, String> {
    let shown = dir.display();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(|e| format!("create {shown}: {e}"))?;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(dir)
        .map_err(|e| format!("open {shown}: {e}"))?;
    let meta = f.metadata().map_err(|e| format!("stat {shown}: {e}"))?;
    if !trusted(meta.uid()) {
        return Err(format!(
            "{shown} is owned by uid {}, neither root nor this shim's uid: its sockets cannot be \
             trusted",
            meta.uid()
        ));
    }
    if meta.mode() & 0o7777 != DIR_MODE {
        f.set_permissions(Permissions::from_mode(DIR_MODE))
            .map_err(|e| format!("make {shown} mode {DIR_MODE:o}: {e}"))?;
    }
    Ok(f)
}

/// What is at a group's socket path.
#[derive(Debug, PartialEq, Eq)]
enum Found {
    Nothing,
    /// A trusted shim's socket, answering.
    Serving,
    /// A trusted uid's socket nobody answers on: a dead shim's.
    Dead,
    /// Anything else, described.
    Foreign(String),
}

fn look(path: &Path) -> Result<Found, String> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Found::Nothing),
        Err(e) => return Err(format!("look at the shim socket {}: {e}", path.display())),
    };
    if !meta.file_type().is_socket() {
        return Ok(Found::Foreign(format!(
            "a file of uid {} that is not a socket",
            meta.uid()
        )));
    }
    if !trusted(meta.uid()) {
        return Ok(Found::Foreign(format!(
            "a socket owned by uid {}",
            meta.uid()
        )));
    }
    let Ok(stream) = UnixStream::connect(path) else {
        return Ok(Found::Dead);
    };
    Ok(match rustix::net::sockopt::socket_peercred(&stream) {
        Ok(c) if trusted(c.uid.as_raw()) => Found::Serving,
        Ok(c) => Found::Foreign(format!(
            "a socket served by uid {} (pid {})",
            c.uid.as_raw(),
            c.pid.as_raw_nonzero()
        )),
        Err(e) => Found::Foreign(format!("a socket whose server is unknown ({e})")),
    })
}

fn bind(path: &Path) -> Result<Option<Bound>, String> {
    let shown = path.display();
    let mut replaced = None;
    for _ in 0..2 {
        match look(path)? {
            Found::Nothing => {}
            Found::Serving => return Ok(None),
            Found::Dead => std::fs::remove_file(path)
                .map_err(|e| format!("remove the dead shim socket {shown}: {e}"))?,
            Found::Foreign(what) => {
                std::fs::remove_file(path)
                    .map_err(|e| format!("remove {what} at the shim socket {shown}: {e}"))?;
                replaced = Some(what);
            }
        }
        match bind_private(path) {
            Ok(listener) => return Ok(Some(Bound { listener, replaced })),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {}
            Err(e) => return Err(format!("bind the shim socket {shown}: {e}")),
        }
    }
    Err(format!(
        "bind the shim socket {shown}: it keeps being replaced"
    ))
}

/// Binds and listens on a socket at `path` whose file has mode [`SOCKET_MODE`] from the start.
fn bind_private(path: &Path) -> std::io::Result<UnixListener> {
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )?;
    // bind(2) makes the file with the socket's own mode less the umask.
    rustix::fs::fchmod(&fd, rustix::fs::Mode::from_raw_mode(SOCKET_MODE))?;
    rustix::net::bind(&fd, &SocketAddrUnix::new(path)?)?;
    let listening = std::fs::set_permissions(path, Permissions::from_mode(SOCKET_MODE))
        .and_then(|()| Ok(rustix::net::listen(&fd, libc::SOMAXCONN)?));
    if let Err(e) = listening {
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    Ok(UnixListener::from(fd))
}

/// The ttrpc listener of the serving process: `listener`'s connections from trusted uids; others
/// are closed unanswered, and logged.
pub fn trusted_listener(listener: UnixListener) -> std::io::Result<Listener> {
    listener.set_nonblocking(true)?;
    Ok(Listener::new(TrustedPeers(
        tokio::net::UnixListener::from_std(listener)?,
    )))
}

/// Accepted connections whose peer is of a trusted uid.
struct TrustedPeers(tokio::net::UnixListener);

impl futures_core::Stream for TrustedPeers {
    type Item = std::io::Result<tokio::net::UnixStream>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            let stream = match ready!(self.0.poll_accept(cx)) {
                Ok((stream, _)) => stream,
                Err(e) => return Poll::Ready(Some(Err(e))),
            };
            match stream.peer_cred() {
                Ok(c) if trusted(c.uid()) => return Poll::Ready(Some(Ok(stream))),
                Ok(c) => tracing::warn!(
                    uid = c.uid(),
                    pid = c.pid(),
                    "refused a connection to the shim's socket: its peer is neither root nor \
                     containerd's uid"
                ),
                Err(e) => tracing::warn!(
                    error = %e,
                    "refused a connection to the shim's socket: its peer's credentials are unknown"
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_is_bound_private_in_a_private_directory_and_then_handed_out() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("s");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, Permissions::from_mode(0o777)).unwrap();
        let path = dir.join("sock");
        let bound = listen(&path).unwrap().expect("nothing there: bound");
        assert!(bound.replaced.is_none());
        let mode = |p: &Path| std::fs::symlink_metadata(p).unwrap().mode() & 0o7777;
        assert_eq!(mode(&dir), DIR_MODE);
        assert_eq!(mode(&path), SOCKET_MODE);
        // A trusted uid's shim listens there: it is handed out, not replaced.
        assert!(listen(&path).unwrap().is_none());
        drop(bound);
        // Nobody listens any more: a dead shim's socket, replaced without a word.
        let again = listen(&path).unwrap().expect("a dead socket is replaced");
        assert!(again.replaced.is_none());
        assert_eq!(mode(&path), SOCKET_MODE);
    }

    #[test]
    fn what_is_not_a_shims_socket_is_replaced() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("s/sock");
        std::fs::create_dir(t.path().join("s")).unwrap();
        std::fs::write(&path, "").unwrap();
        let bound = listen(&path).unwrap().expect("a plain file is replaced");
        assert!(
            bound.replaced.as_deref().unwrap().contains("not a socket"),
            "{:?}",
            bound.replaced
        );
        assert!(
            std::fs::symlink_metadata(&path)
                .unwrap()
                .file_type()
                .is_socket()
        );
        // A socket of another uid (only root can make one here).
        if rustix::process::geteuid().is_root() {
            drop(bound);
            std::os::unix::fs::lchown(&path, Some(65534), Some(65534)).unwrap();
            let bound = listen(&path)
                .unwrap()
                .expect("another uid's socket is replaced");
            assert_eq!(
                bound.replaced.as_deref(),
                Some("a socket owned by uid 65534")
            );
            assert_eq!(std::fs::symlink_metadata(&path).unwrap().uid(), 0);
        }
    }

    #[test]
    fn only_root_and_the_shims_uid_are_trusted() {
        assert!(trusted(0));
        assert!(trusted(rustix::process::geteuid().as_raw()));
    }
}
