//! The WASI 0.2 and 0.3 filesystems as wasmtime-wasi implements them, with one change: `open-at`
//! of a FIFO or a socket file is refused (`access`) instead of opened, since opening one holds a
//! host thread until a peer appears (the preview 1 `path_open` refuses them the same way, in
//! `p1net`). The check looks the name up beneath the directory without opening it; a guest cannot
//! make such files (WASI has no `mknod`), so only ones already in a grant are met.

use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::filesystem::WasiFilesystemView;
use wasmtime_wasi::p2::bindings::filesystem::types::{
    Descriptor, DescriptorFlags, ErrorCode, HostDescriptor, OpenFlags, PathFlags,
};

use wasmtime_wasi::p3::bindings::filesystem::types as p3;

use crate::host::P2Host;

/// The interfaces as wasmtime-wasi 48 defines them (guests importing any 0.2.x reach the first).
const TYPES: &str = "wasi:filesystem/types@0.2.12";
const TYPES3: &str = "wasi:filesystem/types@0.3.0";

/// Whether opening `path` beneath directory descriptor `fd` is refused: it names a FIFO or a
/// socket file. The same check for both WASI versions, which share the descriptor type.
fn refused(host: &P2Host, fd: &Resource<Descriptor>, path: &str, follow: bool) -> bool {
    let refuse = matches!(
        host.table.get(fd),
        Ok(wasmtime_wasi::filesystem::Descriptor::Dir(d))
            if crate::p1net::is_fifo_or_socket(&*d.dir, path.as_bytes(), follow)
    );
    if refuse {
        tracing::debug!(%path, "FIFO or socket file not opened");
    }
    refuse
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
                if refused(host, &fd, &path, follow) {
                    return Ok((Err(ErrorCode::Access),));
                }
                let mut view = host.filesystem();
                let r = HostDescriptor::open_at(&mut view, fd, path_flags, path, open_flags, flags)
                    .await;
                match r {
                    Ok(d) => Ok((Ok(d),)),
                    Err(e) => Ok((Err(e.downcast()?),)),
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
                if accessor.with(|mut access| refused(access.get(), &fd, &path, follow)) {
                    return Ok((Err(p3::ErrorCode::Access),));
                }
                let fs = accessor.with_getter::<wasmtime_wasi::filesystem::WasiFilesystem>(
                    <P2Host as WasiFilesystemView>::filesystem,
                );
                let r =
                    <wasmtime_wasi::filesystem::WasiFilesystem as p3::HostDescriptorWithStore<
                        P2Host,
                    >>::open_at(&fs, fd, path_flags, path, open_flags, flags)
                    .await;
                match r {
                    Ok(d) => Ok((Ok(d),)),
                    Err(e) => Ok((Err(e.downcast()?),)),
                }
            })
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}
