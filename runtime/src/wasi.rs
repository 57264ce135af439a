//! Turns a [`Policy`] and stdio into a WASI context. Every path (CLI, runc-compatible runtime,
//! shim) goes through [`build_ctx`], so what a guest is granted cannot drift between them.

use std::net::SocketAddr;

use wasmtime_wasi::cli::{AsyncStdinStream, AsyncStdoutStream, StdoutStream};
use wasmtime_wasi::sockets::SocketAddrUse;
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use crate::error::{Error, Result, boxed};
use crate::net::AddrUse;
use crate::policy::Policy;

/// Where a guest's stdin comes from.
#[derive(Debug, Default)]
pub enum Input {
    /// The host process's stdin.
    Inherit,
    /// Empty.
    #[default]
    Null,
    /// A file or FIFO.
    File(std::fs::File),
    /// Fixed bytes.
    Bytes(Vec<u8>),
}

/// Where a guest's stdout or stderr goes.
#[derive(Debug, Default, Clone)]
pub enum Output {
    /// The host process's stream.
    Inherit,
    /// Discarded.
    #[default]
    Null,
    /// A file or FIFO.
    File(std::sync::Arc<std::fs::File>),
    /// An in-memory buffer, readable with [`Output::contents`].
    Memory(wasmtime_wasi::p2::pipe::MemoryOutputPipe),
}

impl Output {
    /// A fresh in-memory buffer (up to 64 MiB).
    pub fn memory() -> Self {
        Output::Memory(wasmtime_wasi::p2::pipe::MemoryOutputPipe::new(64 << 20))
    }

    /// What an in-memory buffer holds.
    pub fn contents(&self) -> Vec<u8> {
        match self {
            Output::Memory(p) => p.contents().to_vec(),
            _ => Vec::new(),
        }
    }
}

/// The three standard streams of a guest.
#[derive(Debug, Default)]
pub struct Stdio {
    /// stdin.
    pub stdin: Input,
    /// stdout.
    pub stdout: Output,
    /// stderr.
    pub stderr: Output,
}

impl Stdio {
    /// The host process's own streams.
    pub fn inherit() -> Self {
        Self {
            stdin: Input::Inherit,
            stdout: Output::Inherit,
            stderr: Output::Inherit,
        }
    }
}

fn is_fifo(f: &std::fs::File) -> bool {
    use std::os::unix::fs::FileTypeExt;
    f.metadata().is_ok_and(|m| m.file_type().is_fifo())
}

/// Stdin from a file or FIFO that never blocks an executor thread: a FIFO is read through the
/// reactor, anything else through tokio's blocking pool. Needs the executor's context.
fn async_input(f: std::fs::File) -> std::io::Result<AsyncStdinStream> {
    Ok(if is_fifo(&f) {
        AsyncStdinStream::new(tokio::net::unix::pipe::Receiver::from_file(f)?)
    } else {
        AsyncStdinStream::new(tokio::fs::File::from_std(f))
    })
}

fn put(b: &mut WasiCtxBuilder, s: impl StdoutStream + 'static, stderr: bool) {
    if stderr {
        b.stderr(s);
    } else {
        b.stdout(s);
    }
}

fn set_output(b: &mut WasiCtxBuilder, out: Output, stderr: bool) -> std::io::Result<()> {
    match out {
        Output::Inherit if stderr => {
            b.inherit_stderr();
        }
        Output::Inherit => {
            b.inherit_stdout();
        }
        Output::Null => put(b, wasmtime_wasi::p2::pipe::SinkOutputStream, stderr),
        Output::File(f) => {
            let f = f.try_clone()?;
            if is_fifo(&f) {
                // A FIFO's reader may be slow: write through the reactor, never blocking a thread.
                let tx = tokio::net::unix::pipe::Sender::from_file(f)?;
                put(b, AsyncStdoutStream::new(64 << 10, tx), stderr)
            } else {
                put(b, wasmtime_wasi::cli::OutputFile::new(f), stderr)
            }
        }
        Output::Memory(p) => put(b, p, stderr),
    }
    Ok(())
}

/// The WASI context builder for a guest: arguments, environment, working directory, the
/// directories (`preopens`: a path naming each opened directory, its guest path, whether it is
/// read-only), stdio and the network policy. Nothing is granted that the policy does not name.
pub(crate) fn build_ctx(
    policy: &Policy,
    preopens: &[(std::path::PathBuf, String, bool)],
    stdio: Stdio,
) -> Result<WasiCtxBuilder> {
    let mut b = WasiCtxBuilder::new();
    b.args(&policy.args);
    b.envs(&policy.env);
    // The guest sees exactly the environment it was given. Components read the working
    // directory from wasi:cli; preview 1 guests get it as their first preopen (see
    // `Filesystem::preopen_cwd_first`).
    if !policy.cwd.is_empty() {
        b.initial_cwd(&policy.cwd);
    }
    match stdio.stdin {
        Input::Inherit => {
            b.inherit_stdin();
        }
        Input::Null => {
            b.stdin(wasmtime_wasi::p2::pipe::ClosedInputStream);
        }
        Input::File(f) => {
            b.stdin(async_input(f).map_err(|source| Error::Stdio {
                stream: "stdin",
                source,
            })?);
        }
        Input::Bytes(v) => {
            b.stdin(wasmtime_wasi::p2::pipe::MemoryInputPipe::new(v));
        }
    }
    set_output(&mut b, stdio.stdout, false).map_err(|source| Error::Stdio {
        stream: "stdout",
        source,
    })?;
    set_output(&mut b, stdio.stderr, true).map_err(|source| Error::Stdio {
        stream: "stderr",
        source,
    })?;
    for (host, guest, read_only) in preopens {
        let perms = if *read_only {
            FsPerms::ReadOnly
        } else {
            FsPerms::ReadWrite
        };
        b.preopened_dir(host, guest, perms)
            .map_err(|e| Error::Preopen {
                host: host.clone(),
                guest: guest.clone(),
                source: boxed(e),
            })?;
    }
    let net = policy.net.clone();
    // No socket at all without a grant (as `wasmtime run` without `-Sinherit-network`); with
    // one, every address is checked below.
    b.allow_tcp(net.any());
    b.allow_udp(net.any());
    b.allow_ip_name_lookup(net.dns);
    b.socket_addr_check(move |addr: SocketAddr, use_: SocketAddrUse| {
        let use_ = match use_ {
            SocketAddrUse::TcpBind => AddrUse::TcpBind,
            SocketAddrUse::TcpListen => AddrUse::TcpListen,
            SocketAddrUse::TcpAccept => AddrUse::TcpAccept,
            SocketAddrUse::TcpConnect => AddrUse::TcpConnect,
            SocketAddrUse::UdpBind => AddrUse::UdpBind,
            SocketAddrUse::UdpSend => AddrUse::UdpSend,
            SocketAddrUse::UdpReceive => AddrUse::UdpReceive,
        };
        let ok = net.allows(&addr, use_);
        if !ok {
            tracing::debug!(%addr, ?use_, "socket address denied");
        }
        Box::pin(async move { ok })
    });
    Ok(b)
}
