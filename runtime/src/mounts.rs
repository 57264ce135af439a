//! The kernel as a second wall: each guest's filesystem is a real mount tree, built in a mount
//! namespace private to this process, and that tree is what WASI grants.
//!
//! [`enter_namespace`] (called by a binary before it starts any thread) moves the process into a
//! new mount namespace that is a slave of the host's (`rslave`): mounts made later on the host
//! still appear in it, and nothing mounted in it is seen outside. Root gets a plain mount
//! namespace; any other user gets it inside a user namespace that maps only its own uid and gid.
//!
//! [`MountTree::build`] then binds each grant's source (opened without following any symbolic
//! link) at its guest path under a private directory, every mount `nodev,nosuid`, read-only ones
//! `MOUNT_ATTR_RDONLY`. So a device node never opens, and a path under a read-only grant is
//! read-only however the guest reaches it (through a read-write parent too). Mount destinations
//! are resolved inside the tree (`RESOLVE_IN_ROOT`), so a symbolic link in a rootfs cannot move a
//! mount onto the host. The guest's preopens are the tree's directories, opened by descriptor.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;

use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// Whether this process lives in a private mount namespace, and how it got there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Namespace {
    /// A mount namespace of its own (as root).
    Private,
    /// A user namespace mapping only this user, with a mount namespace inside it.
    User,
    /// None could be made; the reason.
    Unavailable(String),
}

static NAMESPACE: OnceLock<Namespace> = OnceLock::new();

/// The namespace [`enter_namespace`] made, if it was called.
pub fn namespace() -> Option<&'static Namespace> {
    NAMESPACE.get()
}

/// True when mount trees can be built (the process is in a private mount namespace).
pub fn available() -> bool {
    matches!(namespace(), Some(Namespace::Private | Namespace::User))
}

/// Why mount trees cannot be built, when they cannot.
pub fn unavailable_reason() -> Option<String> {
    match namespace() {
        Some(Namespace::Private | Namespace::User) => None,
        Some(Namespace::Unavailable(r)) => Some(r.clone()),
        None => Some("the process did not enter a private mount namespace".into()),
    }
}

/// Moves the process into a private mount namespace, slave of the host's. Must be called before
/// the process starts any thread: `unshare` moves only the calling thread. Idempotent.
pub fn enter_namespace() -> &'static Namespace {
    NAMESPACE.get_or_init(|| match enter() {
        Ok(ns) => ns,
        Err(reason) => {
            tracing::info!(%reason, "no private mount namespace");
            Namespace::Unavailable(reason)
        }
    })
}

#[allow(
    unsafe_code,
    reason = "unshare(2) before any thread is started; it touches no memory"
)]
fn unshare(flags: libc::c_int) -> std::io::Result<()> {
    // SAFETY: unshare only changes this thread's namespaces; the caller is single-threaded.
    if unsafe { libc::unshare(flags) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn enter() -> Result<Namespace, String> {
    let ns = if rustix::process::geteuid().is_root() {
        unshare(libc::CLONE_NEWNS).map_err(|e| format!("unshare a mount namespace: {e}"))?;
        Namespace::Private
    } else {
        let (uid, gid) = (
            rustix::process::getuid().as_raw(),
            rustix::process::getgid().as_raw(),
        );
        unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS)
            .map_err(|e| format!("unshare a user and mount namespace: {e}"))?;
        let write = |file: &str, text: String| {
            std::fs::write(format!("/proc/self/{file}"), text)
                .map_err(|e| format!("write /proc/self/{file}: {e}"))
        };
        write("setgroups", "deny".into())?;
        write("uid_map", format!("{uid} {uid} 1"))?;
        write("gid_map", format!("{gid} {gid} 1"))?;
        Namespace::User
    };
    rustix::mount::mount_change(
        "/",
        rustix::mount::MountPropagationFlags::DOWNSTREAM
            | rustix::mount::MountPropagationFlags::REC,
    )
    .map_err(|e| format!("make / a recursive slave mount: {e}"))?;
    Ok(ns)
}

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const AT_RECURSIVE: libc::c_uint = 0x8000;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// Sets mount attributes (and, when not 0, the propagation type) on the mount at `fd` and, with
/// `recursive`, every mount below it.
#[allow(
    unsafe_code,
    reason = "mount_setattr(2) has no wrapper; it reads only the struct we pass"
)]
fn set_attrs(
    fd: BorrowedFd<'_>,
    attrs: u64,
    recursive: bool,
    propagation: u64,
) -> std::io::Result<()> {
    let attr = MountAttr {
        attr_set: attrs,
        attr_clr: 0,
        propagation,
        userns_fd: 0,
    };
    let flags = libc::AT_EMPTY_PATH as libc::c_uint | if recursive { AT_RECURSIVE } else { 0 };
    // SAFETY: the path is a valid empty C string, `attr` outlives the call and its size is given.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

const MS_PRIVATE: u64 = 1 << 18;

/// A detached copy of `m`'s source (with its submounts when recursive, each checked not to be a
/// kernel filesystem), with `attrs` set and private propagation.
fn clone_mount(m: &TreeMount<'_>, attrs: u64) -> Result<OwnedFd, String> {
    use rustix::mount::OpenTreeFlags as F;
    if m.recursive {
        check_submounts(&m.source.path)?;
    }
    let mut flags = F::OPEN_TREE_CLONE | F::OPEN_TREE_CLOEXEC | F::AT_EMPTY_PATH;
    if m.recursive {
        flags |= F::AT_RECURSIVE;
    }
    let fd = rustix::mount::open_tree(&m.source.fd, "", flags)
        .map_err(|e| format!("clone: {}", std::io::Error::from(e)))?;
    set_attrs(fd.as_fd(), attrs, true, MS_PRIVATE).map_err(|e| {
        format!(
            "set nodev,nosuid{}: {e}",
            if attrs & MOUNT_ATTR_RDONLY != 0 {
                ",ro"
            } else {
                ""
            }
        )
    })?;
    Ok(fd)
}

/// Makes `dir`, a directory wasmbox made itself, a read-only `nodev,nosuid` mount of itself in
/// this process's mount namespace: whatever reaches it, the kernel refuses every change (and
/// updates no access time). Undone by unmounting `dir` (`MNT_DETACH`).
pub fn seal_read_only(dir: &Path) -> Result<(), String> {
    let source = Source::own(dir).map_err(|e| format!("open {}: {e}", dir.display()))?;
    let m = TreeMount {
        source: &source,
        guest: "/",
        read_only: true,
        recursive: false,
    };
    let sealed = clone_mount(&m, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOSUID)?;
    let point = rustix::fs::open(
        dir,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("open {}: {e}", dir.display()))?;
    attach(&sealed, &point)
}

/// Attaches the detached mount `mnt` on the directory `point`.
fn attach(mnt: &OwnedFd, point: &OwnedFd) -> Result<(), String> {
    use rustix::mount::MoveMountFlags as F;
    rustix::mount::move_mount(
        mnt,
        "",
        point,
        "",
        F::MOVE_MOUNT_F_EMPTY_PATH | F::MOVE_MOUNT_T_EMPTY_PATH,
    )
    .map_err(|e| format!("attach: {}", std::io::Error::from(e)))
}

/// Refuses a recursive grant whose source has a kernel filesystem mounted below it (a chroot's
/// `/proc`, a container rootfs's `/sys`), unless [`ALLOW_KERNEL_FS_ENV`] is `1`.
fn check_submounts(source: &Path) -> Result<(), String> {
    if std::env::var(ALLOW_KERNEL_FS_ENV).is_ok_and(|v| v == "1") {
        return Ok(());
    }
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Ok(());
    };
    let prefix = format!("{}/", source.display().to_string().trim_end_matches('/'));
    for line in info.lines() {
        let mut fields = line.split(' ');
        let Some(point) = fields.nth(4) else { continue };
        let point = point.replace("\\040", " ");
        let fstype = line.split(" - ").nth(1).and_then(|r| r.split(' ').next());
        if point.starts_with(&prefix)
            && let Some(fstype) = fstype
            && crate::policy::KERNEL_FS.contains(&fstype)
        {
            return Err(format!(
                "{} has a kernel filesystem ({fstype}) mounted at {point}, which is never granted",
                source.display()
            ));
        }
    }
    Ok(())
}

fn proc_fd(fd: BorrowedFd<'_>) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Filesystems that are kernel interfaces, by `statfs` magic, refused as grant sources.
const KERNEL_FS_MAGIC: &[(i64, &str)] = &[
    (0x9fa0, "proc"),
    (0x6265_6572, "sysfs"),
    (0x1cd1, "devpts"),
    (0x1980_0202, "mqueue"),
    (0x0027_e0eb, "cgroup"),
    (0x6367_7270, "cgroup2"),
    (0x6462_6720, "debugfs"),
    (0x7363_6673, "securityfs"),
    (0x7472_6163, "tracefs"),
    (0xcafe_4a11, "bpf"),
    (0x6265_6570, "configfs"),
    (0x6165_676c, "pstore"),
    (0x4249_4e4d, "binfmt_misc"),
    (0x6573_5543, "fusectl"),
    (0xde5e_81e4, "efivarfs"),
];

/// Environment variable an operator sets to `1` to allow kernel filesystems as grant sources.
pub const ALLOW_KERNEL_FS_ENV: &str = "WASMBOX_ALLOW_KERNEL_FS";

/// A grant source, opened (`O_PATH`) without following any symbolic link, and checked.
#[derive(Debug)]
pub struct Source {
    /// The path as given.
    pub path: PathBuf,
    fd: OwnedFd,
}

impl Source {
    /// Opens `path` as a grant source: an absolute path none of whose components is a symbolic
    /// link, a directory, not on a kernel filesystem (procfs, sysfs, devtmpfs, cgroupfs, ...,
    /// unless [`ALLOW_KERNEL_FS_ENV`] is `1`).
    pub fn open(path: &Path) -> Result<Source, String> {
        let fd = open_unlinked(path, OFlags::DIRECTORY)?;
        Ok(Source {
            path: path.to_path_buf(),
            fd,
        })
    }

    /// Opens `path` as a single-file grant source: an absolute path none of whose components is
    /// a symbolic link, naming a regular file (never a device, FIFO or socket), not on a kernel
    /// filesystem.
    pub fn open_file(path: &Path) -> Result<Source, String> {
        let fd = open_unlinked(path, OFlags::NOFOLLOW)?;
        let shown = path.display();
        let st = rustix::fs::fstat(&fd).map_err(|e| format!("{shown}: {e}"))?;
        match rustix::fs::FileType::from_raw_mode(st.st_mode) {
            rustix::fs::FileType::RegularFile => {}
            // O_NOFOLLOW opened the final link itself.
            rustix::fs::FileType::Symlink => return Err(through_link(path)),
            _ => return Err(format!("{shown} is not a regular file")),
        }
        Ok(Source {
            path: path.to_path_buf(),
            fd,
        })
    }

    /// Opens a directory wasmbox made itself (a private scratch directory), without the checks.
    pub fn own(path: &Path) -> std::io::Result<Source> {
        let fd = rustix::fs::open(
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Source {
            path: path.to_path_buf(),
            fd,
        })
    }

    /// A path that names exactly the opened directory (`/proc/self/fd/N`).
    pub fn fd_path(&self) -> PathBuf {
        proc_fd(self.fd.as_fd())
    }
}

/// The kernel filesystem `fd` lies on, if any; devtmpfs (which shares tmpfs's magic) is known by
/// sharing `/dev`'s device.
fn kernel_fs(fd: BorrowedFd<'_>) -> Option<&'static str> {
    let st = rustix::fs::fstatfs(fd).ok()?;
    if let Some((_, name)) = KERNEL_FS_MAGIC.iter().find(|(m, _)| *m == st.f_type as i64) {
        return Some(name);
    }
    let dev = rustix::fs::fstat(fd).ok()?.st_dev;
    let devfs = rustix::fs::stat("/dev").ok()?;
    let devfs_type = rustix::fs::statfs("/dev").ok()?.f_type as i64;
    (devfs_type == 0x0102_1994 && devfs.st_dev == dev).then_some("devtmpfs")
}

/// Opens `path` (`O_PATH` and `flags`) as a grant source: absolute, reached without following
/// any symbolic link, and not on a kernel filesystem unless [`ALLOW_KERNEL_FS_ENV`] is `1`.
fn open_unlinked(path: &Path, flags: OFlags) -> Result<OwnedFd, String> {
    let shown = path.display();
    if !path.is_absolute() {
        return Err(format!("{shown} is not an absolute path"));
    }
    let fd = crate::resolve::openat2(
        rustix::fs::CWD,
        path,
        OFlags::PATH | OFlags::CLOEXEC | flags,
        Mode::empty(),
        ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )
    .map_err(|e| match e {
        Errno::LOOP => through_link(path),
        Errno::NOTDIR if flags.contains(OFlags::DIRECTORY) => format!("{shown} is not a directory"),
        e => format!("{shown}: {}", std::io::Error::from(e)),
    })?;
    let allow_kernel = std::env::var(ALLOW_KERNEL_FS_ENV).is_ok_and(|v| v == "1");
    if !allow_kernel && let Some(kind) = kernel_fs(fd.as_fd()) {
        return Err(format!(
            "{shown} is on a kernel filesystem ({kind}), which is never granted (an operator \
             who means it sets {ALLOW_KERNEL_FS_ENV}=1)"
        ));
    }
    Ok(fd)
}

/// Why a grant source whose path goes through a symbolic link is refused.
fn through_link(path: &Path) -> String {
    let shown = path.display();
    match first_link(path) {
        Some((link, target)) => format!(
            "{shown} goes through the symbolic link {} (-> {}); grant sources must not traverse \
             links: give the real path",
            link.display(),
            target.display()
        ),
        None => format!("{shown} goes through a symbolic link"),
    }
}

/// The first component of `path` that is a symbolic link, with its target.
fn first_link(path: &Path) -> Option<(PathBuf, PathBuf)> {
    let mut cur = PathBuf::new();
    for c in path.components() {
        cur.push(c);
        if std::fs::symlink_metadata(&cur).is_ok_and(|m| m.file_type().is_symlink()) {
            let target = std::fs::read_link(&cur).ok()?;
            return Some((cur, target));
        }
    }
    None
}

/// One directory to put in a tree.
#[derive(Debug)]
pub struct TreeMount<'a> {
    /// The opened source.
    pub source: &'a Source,
    /// Absolute guest path.
    pub guest: &'a str,
    /// Read-only.
    pub read_only: bool,
    /// Bind the source's submounts too (`rbind`).
    pub recursive: bool,
}

/// One single file to bind in a tree.
#[derive(Debug)]
pub struct TreeFile<'a> {
    /// The opened source (a regular file).
    pub source: &'a Source,
    /// Absolute guest path.
    pub guest: &'a str,
    /// Read-only.
    pub read_only: bool,
}

/// Opens (creating it empty, mode 0644, and its missing parent directories, if absent) the file
/// at `rel` inside the tree at `root`, as a mountpoint for a single-file bind. Symbolic links are
/// resolved as if `root` were `/`; anything but a regular file there is refused.
fn file_point_in_root(root: BorrowedFd<'_>, rel: &Path) -> std::io::Result<OwnedFd> {
    let resolve = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
    let open = || {
        crate::resolve::openat2(
            root,
            rel,
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
            resolve,
        )
    };
    let fd = match open() {
        Ok(fd) => fd,
        Err(Errno::NOENT) => {
            let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
                return Err(Errno::INVAL.into());
            };
            let dir = open_in_root(root, parent, OFlags::RDONLY)?;
            match rustix::fs::openat(
                &dir,
                name,
                OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o644),
            ) {
                Ok(_) | Err(Errno::EXIST) => {}
                Err(e) => return Err(e.into()),
            }
            match open() {
                Ok(fd) => fd,
                // The name is there but leads nowhere: a link to a file the rootfs lacks.
                Err(Errno::NOENT) => {
                    return Err(std::io::Error::other(
                        "it is a symbolic link to a file missing from the rootfs",
                    ));
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(e) => return Err(e.into()),
    };
    let st = rustix::fs::fstat(&fd)?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
        return Err(std::io::Error::other(
            "the path in the tree is not a regular file",
        ));
    }
    Ok(fd)
}

/// A guest's mount tree: removed (lazily unmounted, then its directory deleted) on drop.
#[derive(Debug)]
pub struct MountTree {
    dir: Option<tempfile::TempDir>,
    /// Each mount's directory in the tree, opened after mounting, in the order given.
    grants: Vec<OwnedFd>,
}

/// Opens (creating missing directories, mode 0755) `rel` inside the tree at `root`, resolving
/// every symbolic link as if `root` were `/`.
fn open_in_root(root: BorrowedFd<'_>, rel: &Path, flags: OFlags) -> std::io::Result<OwnedFd> {
    let resolve = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
    let open = |p: &Path, f: OFlags| {
        crate::resolve::openat2(
            root,
            if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            },
            f | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            resolve,
        )
    };
    match open(rel, flags) {
        Ok(fd) => return Ok(fd),
        Err(Errno::NOENT) => {}
        Err(e) => return Err(e.into()),
    }
    let mut cur = PathBuf::new();
    for c in rel.components() {
        let Component::Normal(name) = c else { continue };
        let parent = open(&cur, OFlags::PATH)?;
        match rustix::fs::mkdirat(&parent, name, Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(e.into()),
        }
        cur.push(name);
    }
    Ok(open(rel, flags)?)
}

impl MountTree {
    /// Builds the tree under a new private directory (mode 0700) in `parent`. `mounts[0]` may be
    /// the rootfs (guest `/`); the rest are bound at their guest paths in the order given (the
    /// caller puts parents first). Needs [`available`].
    ///
    /// Each mount is cloned from its opened source (`open_tree`), made `nodev,nosuid` (and
    /// read-only) and private while still detached, and only then attached at a mountpoint
    /// opened inside the tree: nothing can be redirected between setting the attributes and
    /// granting the mount, and no mount the host makes later under a source shows up in it.
    /// `files` are bound last, each over a file at its guest path (made empty if missing): a
    /// bind of one file shows none of its siblings.
    pub fn build(
        parent: &Path,
        mounts: &[TreeMount<'_>],
        files: &[TreeFile<'_>],
    ) -> Result<MountTree, String> {
        let dir = tempfile::Builder::new()
            .prefix(&crate::scratch::scratch_prefix("wasmbox-tree-"))
            .tempdir_in(parent)
            .map_err(|e| format!("create a mount tree directory in {}: {e}", parent.display()))?;
        let mut tree = MountTree {
            dir: Some(dir),
            grants: Vec::new(),
        };
        let top = tree.path().to_path_buf();
        let root_mount = mounts.first().filter(|m| m.guest == "/");
        let attrs = |m: &TreeMount<'_>, ro: bool| {
            MOUNT_ATTR_NODEV
                | MOUNT_ATTR_NOSUID
                | if ro && m.read_only {
                    MOUNT_ATTR_RDONLY
                } else {
                    0
                }
        };
        // The tree is a mount of its own, so one lazy unmount removes all of it.
        let root = match root_mount {
            // The rootfs stays writable until every mountpoint exists.
            Some(m) => clone_mount(m, attrs(m, false))
                .map_err(|e| format!("clone the rootfs {}: {e}", m.source.path.display()))?,
            None => {
                let own = Source::own(&top).map_err(|e| format!("open {}: {e}", top.display()))?;
                let m = TreeMount {
                    source: &own,
                    guest: "/",
                    read_only: false,
                    recursive: false,
                };
                clone_mount(&m, attrs(&m, false))
                    .map_err(|e| format!("clone the mount tree root: {e}"))?
            }
        };
        let top_fd = rustix::fs::open(
            &top,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| format!("open the mount tree {}: {e}", top.display()))?;
        attach(&root, &top_fd)
            .map_err(|e| format!("attach the mount tree at {}: {e}", top.display()))?;
        for m in mounts.iter().skip(usize::from(root_mount.is_some())) {
            let rel = Path::new(m.guest.trim_start_matches('/'));
            let what = || format!("mount {} at {}", m.source.path.display(), m.guest);
            let grant = clone_mount(m, attrs(m, true)).map_err(|e| format!("{}: {e}", what()))?;
            let point = open_in_root(root.as_fd(), rel, OFlags::PATH)
                .map_err(|e| format!("{}: mountpoint: {e}", what()))?;
            attach(&grant, &point).map_err(|e| format!("{}: {e}", what()))?;
            tree.grants.push(grant);
        }
        for f in files {
            let rel = Path::new(f.guest.trim_start_matches('/'));
            let what = || format!("mount the file {} at {}", f.source.path.display(), f.guest);
            let m = TreeMount {
                source: f.source,
                guest: f.guest,
                read_only: f.read_only,
                recursive: false,
            };
            let mnt = clone_mount(&m, attrs(&m, true)).map_err(|e| format!("{}: {e}", what()))?;
            let point = file_point_in_root(root.as_fd(), rel)
                .map_err(|e| format!("{}: mountpoint: {e}", what()))?;
            attach(&mnt, &point).map_err(|e| format!("{}: {e}", what()))?;
        }
        if let Some(m) = root_mount {
            if m.read_only {
                set_attrs(root.as_fd(), MOUNT_ATTR_RDONLY, false, 0)
                    .map_err(|e| format!("make the rootfs read-only: {e}"))?;
            }
            tree.grants.insert(0, root);
        }
        Ok(tree)
    }

    /// The tree's directory on the host.
    pub fn path(&self) -> &Path {
        self.dir.as_ref().expect("tree dir lives until drop").path()
    }

    /// Paths naming each mount's directory in the tree (`/proc/self/fd/N`), in the order given.
    pub fn grant_paths(&self) -> Vec<PathBuf> {
        self.grants.iter().map(|fd| proc_fd(fd.as_fd())).collect()
    }
}

impl Drop for MountTree {
    fn drop(&mut self) {
        self.grants.clear();
        let Some(dir) = self.dir.take() else { return };
        match rustix::mount::unmount(dir.path(), rustix::mount::UnmountFlags::DETACH) {
            // Nothing is mounted any more: the directory (and mountpoints made in it) can go.
            Ok(()) => drop(dir),
            Err(e) => {
                // Never delete through a mount that is still there: leave the directory.
                tracing::warn!(path = %dir.path().display(), error = %e, "unmounting a mount tree failed");
                let _ = dir.keep();
            }
        }
    }
}
