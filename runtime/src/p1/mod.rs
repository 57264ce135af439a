//! WASI preview 1 where wasmbox changes wasmtime-wasi's: the filesystem calls that must refuse
//! FIFOs and count handles (`fs`), lookups through absolute links (`links`), the devices of `/dev` (`dev`), and pre-opened sockets (`net`,
//! with their table in `sockets`), over one ABI leaf (`abi`). Each shadows calls of
//! wasmtime-wasi's preview 1 in the guest's linker; `fd_close`, which all meet, is added once,
//! here.

pub(crate) mod abi;
mod dev;
mod fs;
mod links;
mod net;
pub(crate) mod sockets;

use wasmtime::{Caller, Linker};

use crate::host::P1Host;

/// Adds the shadowed calls to `l`, which already holds wasmtime-wasi's preview 1: the filesystem
/// ones always, the socket ones when the guest has pre-opened sockets.
pub(crate) fn add_to_linker(l: &mut Linker<P1Host>, sockets: bool) -> wasmtime::Result<()> {
    fs::add_to_linker(l)?;
    dev::add_to_linker(l)?;
    links::add_to_linker(l)?;
    if sockets {
        net::add_to_linker(l)?;
    }
    l.allow_shadowing(true);
    l.func_wrap_async(
        abi::MODULE,
        "fd_close",
        |mut c: Caller<'_, P1Host>, (fd,): (i32,)| {
            Box::new(async move {
                if net::is_socket(&c, fd) {
                    c.data_mut().sockets.fds.remove(&(fd as u32));
                    return Ok(abi::SUCCESS);
                }
                fs::close(&mut c, fd).await
            })
        },
    )?;
    l.allow_shadowing(false);
    Ok(())
}
