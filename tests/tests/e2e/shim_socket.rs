//! The shim's socket under a containerd started with umask 000: its directory and file stay
//! private, a user other than containerd's gets no answer through it, and a socket another user
//! planted at a group's path is never handed to containerd.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Command;

use containerd_shim_protos::api::{KillRequest, StateRequest};
use containerd_shim_protos::shim_sync::TaskClient;
use containerd_shim_protos::ttrpc;

use crate::ctrd::{Containerd, FILES, Images, shim_socket};
use crate::shim::wait_until;

/// nobody's uid and gid.
const NOBODY: u32 = 65534;

fn containerd() -> Containerd {
    let c = Containerd::start_with_umask(0o000);
    c.import(&Images::get().archive(FILES));
    c
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

/// Runs `f` on a thread of its own with nobody's credentials (uid and gid 65534, no
/// supplementary groups), as `setpriv --reuid=65534 --regid=65534 --clear-groups` runs a
/// program: Linux credentials belong to each thread, and the raw system calls (unlike libc's
/// wrappers, which change every thread of the process) leave the test's other threads root.
fn as_nobody<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        become_nobody();
        f()
    })
    .join()
    .unwrap()
}

#[allow(
    unsafe_code,
    reason = "credential system calls that change the calling thread only"
)]
fn become_nobody() {
    let id = NOBODY as libc::c_long;
    // SAFETY: setgroups reads no memory for an empty list; the others take plain integers.
    unsafe {
        let none = std::ptr::null::<libc::gid_t>();
        assert_eq!(
            libc::syscall(libc::SYS_setgroups, 0 as libc::c_long, none),
            0
        );
        assert_eq!(libc::syscall(libc::SYS_setresgid, id, id, id), 0);
        assert_eq!(libc::syscall(libc::SYS_setresuid, id, id, id), 0);
    }
}

/// A ttrpc client of the task service at `socket`.
fn client(socket: &str) -> TaskClient {
    TaskClient::new(ttrpc::Client::connect(&format!("unix://{socket}")).unwrap())
}

fn ctx() -> ttrpc::context::Context {
    ttrpc::context::with_timeout(10_000_000_000)
}

#[test]
fn under_umask_000_a_shims_socket_is_private_and_answers_only_containerds_uid() {
    let c = containerd();
    c.run_detached(&[], FILES, "private", &["/app.wasm", "sleep", "600000"]);
    c.wait_status("private", "RUNNING");
    // A wasm guest's pid is its shim's.
    let shim = c.pid("private");
    let socket = shim_socket(shim).expect("the shim's listening socket");
    let path = PathBuf::from(&socket);
    assert_eq!(
        mode(path.parent().unwrap()),
        0o711,
        "the sockets' directory"
    );
    assert_eq!(mode(&path), 0o600, "the shim's socket");
    assert_eq!(std::fs::symlink_metadata(&path).unwrap().uid(), 0);
    // Another user cannot connect at all.
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg("ctr")
        .args(["--address", &socket, "version"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{out:?}");
    assert!(stderr.contains("permission denied"), "{stderr}");
    // Were the socket's mode opened up, such a user's requests would still go unanswered: the
    // shim closes connections from peers of other uids at once.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    let s = socket.clone();
    let (state, kill) = as_nobody(move || {
        let tasks = client(&s);
        let state = tasks.state(
            ctx(),
            &StateRequest {
                id: "private".into(),
                ..Default::default()
            },
        );
        let kill = tasks.kill(
            ctx(),
            &KillRequest {
                id: "private".into(),
                signal: 9,
                ..Default::default()
            },
        );
        (state.map(|r| r.bundle), kill.map(|_| ()))
    });
    assert!(
        state.is_err(),
        "nobody got the container's state: {state:?}"
    );
    assert!(kill.is_err(), "nobody's kill was answered");
    wait_until("the shim logs the refusal", || {
        c.log().lines().any(|l| {
            l.contains("refused a connection to the shim's socket") && l.contains("uid=65534")
        })
    });
    assert_eq!(c.status("private").as_deref(), Some("RUNNING"));
    // containerd's uid (root here) is answered as ever.
    let state = client(&socket)
        .state(
            ctx(),
            &StateRequest {
                id: "private".into(),
                ..Default::default()
            },
        )
        .unwrap();
    assert!(state.bundle.ends_with("/private"), "{state:?}");
    assert_eq!(c.ctr(&["task", "kill", "-s", "SIGKILL", "private"]).code, 0);
    c.wait_status("private", "STOPPED");
    assert_eq!(c.ctr(&["task", "delete", "private"]).code, 0);
}

/// A listening socket another user planted at `path`: bound by a thread with nobody's
/// credentials in a directory of nobody's beside `path`, then moved there; its file is left
/// nobody's, or given to root (so only the listener's credentials tell it apart).
struct Planted {
    listener: UnixListener,
    path: PathBuf,
    /// Its file's inode, to tell it from the shim's socket.
    ino: u64,
}

impl Planted {
    fn at(path: &Path, root_owned: bool) -> Self {
        let dir = path.parent().unwrap();
        std::fs::create_dir_all(dir).unwrap();
        let own = tempfile::Builder::new()
            .prefix(".wbt-plant")
            .tempdir_in(dir)
            .unwrap();
        std::os::unix::fs::chown(own.path(), Some(NOBODY), Some(NOBODY)).unwrap();
        let staged = own.path().join("s");
        let bind = staged.clone();
        let listener = as_nobody(move || UnixListener::bind(bind).unwrap());
        assert_eq!(std::fs::metadata(&staged).unwrap().uid(), NOBODY);
        std::fs::rename(&staged, path).unwrap();
        if root_owned {
            std::os::unix::fs::lchown(path, Some(0), Some(0)).unwrap();
        }
        // Something answers there.
        drop(UnixStream::connect(path).unwrap());
        let _ = listener.accept().unwrap();
        Planted {
            listener,
            path: path.to_path_buf(),
            ino: std::fs::symlink_metadata(path).unwrap().ino(),
        }
    }

    /// Every connection made to it since, each of which must have sent nothing.
    fn connections_carrying_data(&self) -> usize {
        use std::io::Read as _;
        self.listener.set_nonblocking(true).unwrap();
        let mut carrying = 0;
        while let Ok((mut s, _)) = self.listener.accept() {
            s.set_nonblocking(false).unwrap();
            s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
                .unwrap();
            let mut buf = [0u8; 64];
            if !matches!(s.read(&mut buf), Ok(0)) {
                carrying += 1;
            }
        }
        carrying
    }
}

impl Drop for Planted {
    fn drop(&mut self) {
        // Only if it is still the planted one (the shim replaced it otherwise).
        if std::fs::symlink_metadata(&self.path).is_ok_and(|m| m.ino() == self.ino) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[test]
fn a_socket_planted_at_a_groups_path_is_replaced_not_handed_to_containerd() {
    let c = containerd();
    for (group, root_owned) in [("planted", false), ("planted-root-file", true)] {
        let path = c.group_socket(group);
        let planted = Planted::at(&path, root_owned);
        let id = format!("{group}-app");
        let label = format!("io.containerd.runc.v2.group={group}");
        c.run_detached(
            &["--annotation", &label],
            FILES,
            &id,
            &["/app.wasm", "sleep", "600000"],
        );
        c.wait_status(&id, "RUNNING");
        // The container runs in a real shim, which serves the group's path now.
        let shim = c.pid(&id);
        assert!(c.shims().contains(&shim), "{group}: {shim} is not a shim");
        assert_eq!(
            shim_socket(shim).as_deref(),
            path.to_str(),
            "{group}: the shim serves the group's path"
        );
        assert_eq!(mode(&path), 0o600);
        assert_eq!(std::fs::symlink_metadata(&path).unwrap().uid(), 0);
        // containerd never spoke to the planted socket (the shim's own look at who served it,
        // for the root-owned file, sent nothing).
        assert_eq!(planted.connections_carrying_data(), 0, "{group}");
        let log = c.log();
        let owner = if root_owned {
            "a socket served by uid 65534"
        } else {
            "a socket owned by uid 65534"
        };
        assert!(
            log.lines().any(
                |l| l.contains("replaced what was at the group's socket path") && l.contains(owner)
            ),
            "{group}: {}",
            c.log_tail()
        );
        assert_eq!(c.ctr(&["task", "kill", "-s", "SIGKILL", &id]).code, 0);
        c.wait_status(&id, "STOPPED");
        assert_eq!(c.ctr(&["task", "delete", &id]).code, 0);
    }
}
