//! The WASI 0.2 and 0.3 filesystems as wasmtime-wasi implements them, with these changes in
//! `open-at`, as preview 1's `path_open` has them (`p1::fs`):
//!
//! - a guest that holds its handle limit gets `insufficient-memory` (`ENOMEM` to wasi-libc; WASI
//!   has no `EMFILE`) instead of trapping on a full resource table;
//! - a FIFO or a socket file is refused (`access`) before, during and after the open, as
//!   [`crate::special`] describes;
//! - in WASI 0.2, a device of `/dev` ([`crate::devices`]) opens read-only, for `p2dev` to answer.

use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::filesystem::WasiFilesystemView;
use wasmtime_wasi::p2::bindings::filesystem::types::{
    Descriptor, DescriptorFlags, ErrorCode, HostDescriptor, OpenFlags, PathFlags,
};

use wasmtime_wasi::p3::bindings::filesystem::types as p3;

use crate::host::P2Host;
use crate::special;

/// The interfaces as wasmtime-wasi 48 defines them (guests importing any 0.2.x reach the first).
const TYPES: &str = "wasi:filesystem/types@0.2.12";
const TYPES3: &str = "wasi:filesystem/types@0.3.0";

/// Why an open is refused before it starts.
enum Refused {
    /// The guest holds its handle limit.
    Limit,
    /// The path names a FIFO or a socket file.
    Special,
}

/// Checks an open of `path` beneath directory descriptor `fd` before it starts, and says which
/// device of `/dev` it opens, if any. The same check for both WASI versions, which share the
/// descriptor type.
fn check(
    host: &mut P2Host,
    fd: &Resource<Descriptor>,
    path: &str,
    follow: bool,
) -> Result<Option<crate::devices::Device>, Refused> {
    if host.at_handle_limit(1) {
        return Err(Refused::Limit);
    }
    let target = match host.table.get(fd) {
        Ok(wasmtime_wasi::filesystem::Descriptor::Dir(d)) => {
            special::lookup(&*d.dir, path.as_bytes(), follow)
        }
        // Not a directory: wasmtime-wasi says why.
        _ => None,
    };
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

/// Shadows `[method]descriptor.open-at` in `linker`, which already holds wasmtime-wasi's 0.2.
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
                let host: &mut P2Host = store.data_mut();
                let follow = path_flags.contains(PathFlags::SYMLINK_FOLLOW);
                let (open_flags, flags) = match check(host, &fd, &path, follow) {
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
                let open = HostDescriptor::open_at(
                    &mut view,
                    fd,
                    path_flags,
                    path.clone(),
                    open_flags,
                    flags,
                );
                match special::interrupting(open).await {
                    Ok(d) if opened_special(store.data_mut(), &d, &path) => {
                        Ok((Err(ErrorCode::Access),))
                    }
                    Ok(d) => Ok((Ok(d),)),
                    Err(e) => match e.downcast()? {
                        // Only the FIFO watchdog's signal interrupts an open: it waited on a
                        // FIFO that appeared under it.
                        ErrorCode::Interrupted => Ok((Err(ErrorCode::Access),)),
                        code => Ok((Err(code),)),
                    },
                }
            })
        },
    )?;
    linker.instance(TYPES3)?.func_wrap_concurrent(
        "[method]descriptor.open-at",
        |accessor: &wasmtime::component::Accessor<P2Host>,
         (fd, path_flags, path, open_flags, flags): (
            Resource<wasmtime_wasi::filesystem::Descriptor>,
            p3::PathFlags,
            String,
            p3::OpenFlags,
            p3::DescriptorFlags,
        )| {
            Box::pin(async move {
                let follow = path_flags.contains(p3::PathFlags::SYMLINK_FOLLOW);
                // WASI 0.3's descriptors get no device answers yet: a device opens as the
                // empty, read-only file it stands on.
                match accessor.with(|mut access| check(access.get(), &fd, &path, follow)) {
                    Ok(_) => {}
                    Err(Refused::Limit) => return Ok((Err(p3::ErrorCode::InsufficientMemory),)),
                    Err(Refused::Special) => return Ok((Err(p3::ErrorCode::Access),)),
                }
                let fs = accessor.with_getter::<wasmtime_wasi::filesystem::WasiFilesystem>(
                    <P2Host as WasiFilesystemView>::filesystem,
                );
                let open =
                    <wasmtime_wasi::filesystem::WasiFilesystem as p3::HostDescriptorWithStore<
                        P2Host,
                    >>::open_at(
                        &fs, fd, path_flags, path.clone(), open_flags, flags
                    );
                match special::interrupting(open).await {
                    Ok(d)
                        if accessor.with(|mut access| opened_special(access.get(), &d, &path)) =>
                    {
                        Ok((Err(p3::ErrorCode::Access),))
                    }
                    Ok(d) => Ok((Ok(d),)),
                    Err(e) => match e.downcast()? {
                        // Only the FIFO watchdog's signal interrupts an open.
                        p3::ErrorCode::Interrupted => Ok((Err(p3::ErrorCode::Access),)),
                        code => Ok((Err(code),)),
                    },
                }
            })
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}
