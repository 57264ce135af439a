//! The WASI 0.2 and 0.3 filesystems as wasmtime-wasi implements them, with these changes in
//! `open-at`, as preview 1's `path_open` has them (`p1::fs`):
//!
//! - a guest that holds its handle limit gets `insufficient-memory` (`ENOMEM` to wasi-libc; WASI
//!   has no `EMFILE`) instead of trapping on a full resource table;
//! - a FIFO or a socket file is refused (`access`) before, during and after the open, as
//!   [`crate::special`] describes;
//! - in WASI 0.2, a device of `/dev` ([`crate::devices`]) opens read-only, for `p2dev` to answer;
//! - a path through an absolute symbolic link is opened inside the guest's root (`p2links`).

use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::filesystem::WasiFilesystemView;
use wasmtime_wasi::p2::bindings::filesystem::types::{
    Descriptor, DescriptorFlags, ErrorCode, HostDescriptor, OpenFlags, PathFlags,
};

use wasmtime_wasi::p3::bindings::filesystem::types as p3;

use crate::host::P2Host;
use crate::special;

/// The interfaces as wasmtime-wasi 48 defines them (guests importing any 0.2.x reach the first).
pub(crate) const TYPES: &str = "wasi:filesystem/types@0.2.12";
pub(crate) const TYPES3: &str = "wasi:filesystem/types@0.3.0";

/// Why an open is refused before it starts.
enum Refused {
    /// The guest holds its handle limit.
    Limit,
    /// The path names a FIFO or a socket file.
    Special,
}

/// What `path` beneath the guest's directory descriptor `fd` is, looked up as
/// [`special::find`] does; `None` when `fd` is no directory (wasmtime-wasi says why).
fn find(
    host: &P2Host,
    fd: &Resource<Descriptor>,
    path: &str,
    follow: bool,
) -> Option<rustix::io::Result<rustix::fd::OwnedFd>> {
    match host.table.get(fd) {
        Ok(wasmtime_wasi::filesystem::Descriptor::Dir(d)) => {
            Some(special::find(&*d.dir, path.as_bytes(), follow))
        }
        _ => None,
    }
}

/// Where an open of `path` beneath `fd` is made: moved through an absolute link if it leaves
/// `fd`'s directory through one ([`crate::p2links::moved`], with `follow_last` for its last
/// link); and what it names there (for [`check`]).
fn open_target(
    host: &mut P2Host,
    fd: &Resource<Descriptor>,
    path: &str,
    follow: bool,
    follow_last: bool,
) -> (Option<crate::p2links::Moved>, Option<rustix::fd::OwnedFd>) {
    match find(host, fd, path, follow) {
        Some(Err(rustix::io::Errno::XDEV)) => {
            match crate::p2links::moved(host, fd, path, follow_last) {
                Some(m) => {
                    let found = find(host, &m.fd(), &m.path, follow).and_then(Result::ok);
                    (Some(m), found)
                }
                None => (None, None),
            }
        }
        found => (None, found.and_then(Result::ok)),
    }
}

/// Checks an open before it starts, `target` being what it names (`moved` when it was moved
/// through an absolute link), and says which device of `/dev` it opens, if any. The same check
/// for both WASI versions, which share the descriptor type.
fn check(
    host: &mut P2Host,
    target: Option<rustix::fd::OwnedFd>,
    path: &str,
    moved: bool,
) -> Result<Option<crate::devices::Device>, Refused> {
    // A moved lookup's preopen descriptor is in the table for the call.
    if host.at_handle_limit(1 + usize::from(moved)) {
        return Err(Refused::Limit);
    }
    if target.as_ref().is_some_and(special::is_fifo_or_socket_fd) {
        tracing::debug!(%path, "FIFO or socket file not opened");
        return Err(Refused::Special);
    }
    Ok(target.as_ref().and_then(crate::devices::of_file))
}

/// After an open: true (and the descriptor is gone) when what was opened is a FIFO or a socket
/// after all, swapped in under the checks.
fn opened_special(
    host: &mut P2Host,
    d: &Resource<wasmtime_wasi::filesystem::Descriptor>,
    path: &str,
) -> bool {
    let special = matches!(
        host.table.get(d),
        Ok(wasmtime_wasi::filesystem::Descriptor::File(f)) if special::is_fifo_or_socket_fd(&*f.file)
    );
    if special {
        tracing::warn!(%path, "a FIFO or socket was opened; closed and refused");
        let _ = host
            .table
            .delete(Resource::<wasmtime_wasi::filesystem::Descriptor>::new_own(
                d.rep(),
            ));
    }
    special
}

/// WASI 0.2's `open-at` with the checks above.
async fn open_at2(
    host: &mut P2Host,
    fd: Resource<Descriptor>,
    (path_flags, path, open_flags, flags): (PathFlags, String, OpenFlags, DescriptorFlags),
    (found, moved): (Option<rustix::fd::OwnedFd>, bool),
) -> wasmtime::Result<(Result<Resource<Descriptor>, ErrorCode>,)> {
    let (open_flags, flags) = match check(host, found, &path, moved) {
        Ok(None) => (open_flags, flags),
        // A device of /dev opens its placeholder read-only; `p2dev` answers for it.
        Ok(Some(_)) => match crate::p2dev::open_flags(open_flags, flags) {
            Ok(f) => f,
            Err(code) => return Ok((Err(code),)),
        },
        Err(Refused::Limit) => return Ok((Err(ErrorCode::InsufficientMemory),)),
        Err(Refused::Special) => return Ok((Err(ErrorCode::Access),)),
    };
    let mut view = host.filesystem();
    let open = HostDescriptor::open_at(&mut view, fd, path_flags, path.clone(), open_flags, flags);
    match special::interrupting(open).await {
        Ok(d) if opened_special(host, &d, &path) => Ok((Err(ErrorCode::Access),)),
        Ok(d) => Ok((Ok(d),)),
        Err(e) => match e.downcast()? {
            // Only the FIFO watchdog's signal interrupts an open: it waited on a FIFO that
            // appeared under it.
            ErrorCode::Interrupted => Ok((Err(ErrorCode::Access),)),
            code => Ok((Err(code),)),
        },
    }
}

/// WASI 0.3's `open-at` with the checks above. WASI 0.3's descriptors get no device answers
/// yet: a device opens as the empty, read-only file it stands on.
async fn open_at3(
    accessor: &wasmtime::component::Accessor<P2Host>,
    fd: Resource<Descriptor>,
    (path_flags, path, open_flags, flags): (
        p3::PathFlags,
        String,
        p3::OpenFlags,
        p3::DescriptorFlags,
    ),
    (found, moved): (Option<rustix::fd::OwnedFd>, bool),
) -> wasmtime::Result<(Result<Resource<Descriptor>, p3::ErrorCode>,)> {
    match accessor.with(|mut access| check(access.get(), found, &path, moved)) {
        Ok(_) => {}
        Err(Refused::Limit) => return Ok((Err(p3::ErrorCode::InsufficientMemory),)),
        Err(Refused::Special) => return Ok((Err(p3::ErrorCode::Access),)),
    }
    let fs = accessor.with_getter::<wasmtime_wasi::filesystem::WasiFilesystem>(
        <P2Host as WasiFilesystemView>::filesystem,
    );
    let open =
        <wasmtime_wasi::filesystem::WasiFilesystem as p3::HostDescriptorWithStore<P2Host>>::open_at(
            &fs,
            fd,
            path_flags,
            path.clone(),
            open_flags,
            flags,
        );
    match special::interrupting(open).await {
        Ok(d) if accessor.with(|mut access| opened_special(access.get(), &d, &path)) => {
            Ok((Err(p3::ErrorCode::Access),))
        }
        Ok(d) => Ok((Ok(d),)),
        Err(e) => match e.downcast()? {
            // Only the FIFO watchdog's signal interrupts an open.
            p3::ErrorCode::Interrupted => Ok((Err(p3::ErrorCode::Access),)),
            code => Ok((Err(code),)),
        },
    }
}

/// Shadows `[method]descriptor.open-at` in `linker`, which already holds wasmtime-wasi's 0.2
/// and 0.3.
pub(crate) fn add_to_linker(linker: &mut Linker<P2Host>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    linker.instance(TYPES)?.func_wrap_async(
        "[method]descriptor.open-at",
        |mut store,
         (fd, path_flags, path, open_flags, flags): (
            Resource<Descriptor>,
            PathFlags,
            String,
            OpenFlags,
            DescriptorFlags,
        )| {
            Box::new(async move {
                let follow = path_flags.contains(PathFlags::SYMLINK_FOLLOW);
                // A path leaving its directory through an absolute link is opened from the
                // preopen holding where it leads (`p2links`); a new file's last link is not
                // followed, as the kernel's `O_CREAT | O_EXCL` does not.
                let exclusive = open_flags.contains(OpenFlags::CREATE | OpenFlags::EXCLUSIVE);
                let (moved, found) =
                    open_target(store.data_mut(), &fd, &path, follow, follow && !exclusive);
                let (fd, path) = crate::p2links::target(&moved, fd, path);
                let opened = open_at2(
                    store.data_mut(),
                    fd,
                    (path_flags, path, open_flags, flags),
                    (found, moved.is_some()),
                )
                .await;
                if let Some(m) = moved {
                    crate::p2links::done(store.data_mut(), m);
                }
                opened
            })
        },
    )?;
    linker.instance(TYPES3)?.func_wrap_concurrent(
        "[method]descriptor.open-at",
        |accessor: &wasmtime::component::Accessor<P2Host>,
         (fd, path_flags, path, open_flags, flags): (
            Resource<Descriptor>,
            p3::PathFlags,
            String,
            p3::OpenFlags,
            p3::DescriptorFlags,
        )| {
            Box::pin(async move {
                let follow = path_flags.contains(p3::PathFlags::SYMLINK_FOLLOW);
                let exclusive =
                    open_flags.contains(p3::OpenFlags::CREATE | p3::OpenFlags::EXCLUSIVE);
                let (moved, found) = accessor.with(|mut access| {
                    open_target(access.get(), &fd, &path, follow, follow && !exclusive)
                });
                let (fd, path) = crate::p2links::target(&moved, fd, path);
                let opened = open_at3(
                    accessor,
                    fd,
                    (path_flags, path, open_flags, flags),
                    (found, moved.is_some()),
                )
                .await;
                if let Some(m) = moved {
                    accessor.with(|mut access| crate::p2links::done(access.get(), m));
                }
                opened
            })
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}
