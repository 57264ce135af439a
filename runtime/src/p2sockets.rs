//! The WASI 0.2 and 0.3 calls that make a socket, as wasmtime-wasi implements them, with one
//! change: a guest that holds its handle limit gets an error code instead of trapping on a full
//! resource table: `new-socket-limit` in WASI 0.2 (`EMFILE` to wasi-libc), `out-of-memory` in WASI
//! 0.3, which has no code of its own for it. A server at its limit keeps serving the
//! connections it has (at the limit, `accept` answers `new-socket-limit` even when no connection
//! is waiting). Other handles a guest makes (streams, pollables, WASI 0.3's accepted sockets,
//! which `listen` hands over a stream that wasmtime fills itself) trap a little past the limit,
//! where the resource table's own cap is.

use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::p2::bindings::sockets as p2;
use wasmtime_wasi::p3::bindings::sockets::types as p3;
use wasmtime_wasi::sockets::WasiSocketsView;

use crate::host::P2Host;

/// The interfaces as wasmtime-wasi 48 defines them (guests importing any 0.2.x reach these).
const TCP: &str = "wasi:sockets/tcp@0.2.12";
const TCP_CREATE: &str = "wasi:sockets/tcp-create-socket@0.2.12";
const UDP_CREATE: &str = "wasi:sockets/udp-create-socket@0.2.12";
const TYPES3: &str = "wasi:sockets/types@0.3.0";

/// Shadows the socket-making calls in `linker`, which already holds wasmtime-wasi's.
pub(crate) fn add_to_linker(linker: &mut Linker<P2Host>) -> wasmtime::Result<()> {
    use p2::network::ErrorCode;
    linker.allow_shadowing(true);
    linker.instance(TCP_CREATE)?.func_wrap(
        "create-tcp-socket",
        |mut store, (family,): (p2::network::IpAddressFamily,)| {
            let host: &mut P2Host = store.data_mut();
            if host.at_handle_limit(1) {
                return Ok((Err(ErrorCode::NewSocketLimit),));
            }
            let r = p2::tcp_create_socket::Host::create_tcp_socket(&mut host.sockets(), family);
            match r {
                Ok(s) => Ok((Ok(s),)),
                Err(e) => Ok((Err(e.downcast()?),)),
            }
        },
    )?;
    linker.instance(TCP)?.func_wrap(
        "[method]tcp-socket.accept",
        |mut store, (this,): (Resource<p2::tcp::TcpSocket>,)| {
            let host: &mut P2Host = store.data_mut();
            // The connection and its two streams.
            if host.at_handle_limit(3) {
                return Ok((Err(ErrorCode::NewSocketLimit),));
            }
            match p2::tcp::HostTcpSocket::accept(&mut host.sockets(), this) {
                Ok(s) => Ok((Ok(s),)),
                Err(e) => Ok((Err(e.downcast()?),)),
            }
        },
    )?;
    linker.instance(UDP_CREATE)?.func_wrap_async(
        "create-udp-socket",
        |mut store, (family,): (p2::network::IpAddressFamily,)| {
            Box::new(async move {
                let host: &mut P2Host = store.data_mut();
                if host.at_handle_limit(1) {
                    return Ok((Err(ErrorCode::NewSocketLimit),));
                }
                let mut view = host.sockets();
                let r = p2::udp_create_socket::Host::create_udp_socket(&mut view, family).await;
                match r {
                    Ok(s) => Ok((Ok(s),)),
                    Err(e) => Ok((Err(e.downcast()?),)),
                }
            })
        },
    )?;
    let mut types3 = linker.instance(TYPES3)?;
    types3.func_wrap(
        "[static]tcp-socket.create",
        |mut store, (family,): (p3::IpAddressFamily,)| {
            let host: &mut P2Host = store.data_mut();
            if host.at_handle_limit(1) {
                return Ok((Err(p3::ErrorCode::OutOfMemory),));
            }
            match p3::HostTcpSocket::create(&mut host.sockets(), family) {
                Ok(s) => Ok((Ok(s),)),
                Err(e) => Ok((Err(e.downcast()?),)),
            }
        },
    )?;
    types3.func_wrap_async(
        "[static]udp-socket.create",
        |mut store, (family,): (p3::IpAddressFamily,)| {
            Box::new(async move {
                let host: &mut P2Host = store.data_mut();
                if host.at_handle_limit(1) {
                    return Ok((Err(p3::ErrorCode::OutOfMemory),));
                }
                let mut view = host.sockets();
                match p3::HostUdpSocket::create(&mut view, family).await {
                    Ok(s) => Ok((Ok(s),)),
                    Err(e) => Ok((Err(e.downcast()?),)),
                }
            })
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}
