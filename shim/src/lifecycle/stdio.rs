//! The FIFOs containerd names for a process's stdin, stdout and stderr.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;

use wasmbox_runtime::{Input, Output, Stdio};

use super::error::{Result, ShimError};

/// The stdio paths of one process, as containerd sent them (empty: none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StdioPaths {
    /// stdin FIFO.
    pub stdin: String,
    /// stdout FIFO.
    pub stdout: String,
    /// stderr FIFO.
    pub stderr: String,
    /// Whether a terminal was asked for.
    pub terminal: bool,
}

impl StdioPaths {
    /// Refuses a terminal: wasm guests have no tty, and wasmbox does not relay one for native
    /// containers either.
    pub fn check(&self) -> Result<()> {
        if self.terminal {
            return Err(ShimError::InvalidArgument(
                "a terminal (tty) was requested, but wasmbox containers have no terminal; run \
                 without -t"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Opens the FIFOs for a wasm guest. stdin is opened for reading without waiting for a writer;
    /// the guest reads it through the reactor. stdout and stderr are opened once the client has
    /// them open for reading (see [`open_out_fifo`]).
    pub async fn open_wasm(&self) -> Result<Stdio> {
        Ok(Stdio {
            stdin: match self.stdin.as_str() {
                "" => Input::Null,
                p => Input::File(open_in(p)?),
            },
            stdout: open_out(&self.stdout).await?,
            stderr: open_out(&self.stderr).await?,
        })
    }

    /// Opens the FIFOs as the three files a native process inherits (`/dev/null` where none),
    /// in blocking mode.
    pub async fn open_native(&self) -> Result<[File; 3]> {
        let null = |write: bool| {
            OpenOptions::new()
                .read(!write)
                .write(write)
                .open("/dev/null")
                .map_err(|e| io_err("/dev/null", e))
        };
        let stdin = match self.stdin.as_str() {
            "" => null(false)?,
            p => {
                let f = open_in(p)?;
                set_blocking(&f).map_err(|e| io_err(p, e))?;
                f
            }
        };
        let mut outs = Vec::with_capacity(2);
        for p in [&self.stdout, &self.stderr] {
            outs.push(match p.as_str() {
                "" => null(true)?,
                p => {
                    let f = open_writer(p).await?;
                    set_blocking(&f).map_err(|e| io_err(p, e))?;
                    f
                }
            });
        }
        let [stdout, stderr]: [File; 2] = outs.try_into().expect("two outputs");
        Ok([stdin, stdout, stderr])
    }
}

/// How long to wait for a client to open an output FIFO before writing into it anyway.
const READER_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Opens an output FIFO for writing once its reader (the client: `ctr`, CRI) has it open. Data
/// written to a FIFO nobody has opened for reading is lost when the writer closes, so a guest that
/// prints and exits at once, before the client's open, would lose its output. If no reader comes
/// within [`READER_WAIT`], the FIFO is opened read-write, which never blocks.
async fn open_out_fifo(path: &str) -> Result<File> {
    let deadline = std::time::Instant::now() + READER_WAIT;
    loop {
        match OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
        {
            Ok(f) => return Ok(f),
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
                if std::time::Instant::now() >= deadline {
                    tracing::info!(path, "no reader on the output FIFO; writing without one");
                    return open_rw(path);
                }
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            Err(e) => return Err(io_err(path, e)),
        }
    }
}

/// Opens an output: a `file://` log URI for appending, else a FIFO once it has a reader.
async fn open_writer(path: &str) -> Result<File> {
    if path.contains("://") {
        open_rw(path)
    } else {
        open_out_fifo(path).await
    }
}

fn io_err(path: &str, e: std::io::Error) -> ShimError {
    ShimError::Internal(format!("open stdio {path}: {e}"))
}

fn open_in(path: &str) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| io_err(path, e))
}

/// Opens an output read-write (a FIFO), or a `file://` log URI (`ctr run --log-uri`) for
/// appending. Other URI schemes (`binary://` loggers) are refused.
fn open_rw(path: &str) -> Result<File> {
    if let Some(file) = path.strip_prefix("file://") {
        return OpenOptions::new()
            .append(true)
            .create(true)
            .open(file)
            .map_err(|e| io_err(file, e));
    }
    if let Some((scheme, _)) = path.split_once("://") {
        return Err(ShimError::InvalidArgument(format!(
            "log URI {path:?}: the {scheme}:// scheme is not supported; use a FIFO or file://"
        )));
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| io_err(path, e))
}

async fn open_out(path: &str) -> Result<Output> {
    Ok(match path {
        "" => Output::Null,
        p => Output::File(std::sync::Arc::new(open_writer(p).await?)),
    })
}

#[allow(unsafe_code, reason = "fcntl on a file descriptor we own")]
fn set_blocking(f: &File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = f.as_raw_fd();
    // SAFETY: `fd` is open for the lifetime of `f`; F_GETFL/F_SETFL touch only its flags.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
