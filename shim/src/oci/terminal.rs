//! `process.terminal`: a pseudo-terminal whose master goes to the caller over `--console-socket`
//! (as runc sends it: one `SCM_RIGHTS` message), and whose slave becomes the process's stdin,
//! stdout, stderr and controlling terminal.

use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use anyhow::{Context, Result};
use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};

/// Makes the terminal, sends its master to `socket`, and takes its slave as stdio. The process
/// must lead a session of its own (`setsid`) already.
pub fn attach(socket: &Path) -> Result<()> {
    use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)
        .context("opening a pseudo-terminal")?;
    grantpt(&master).context("grantpt")?;
    unlockpt(&master).context("unlockpt")?;
    let name = ptsname(&master, Vec::new()).context("ptsname")?;
    let slave: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(Path::new(std::ffi::OsStr::from_bytes(name.as_bytes())))
        .context("opening the terminal's slave")?
        .into();
    send(socket, &master, name.as_bytes())?;
    drop(master);
    rustix::process::ioctl_tiocsctty(&slave).context("taking the terminal as controlling")?;
    for dup in [
        rustix::stdio::dup2_stdin,
        rustix::stdio::dup2_stdout,
        rustix::stdio::dup2_stderr,
    ] {
        dup(&slave).context("the terminal as stdio")?;
    }
    Ok(())
}

/// Sends `fd` over the unix socket at `path`, with `name` as the message.
fn send(path: &Path, fd: &OwnedFd, name: &[u8]) -> Result<()> {
    let sock = std::os::unix::net::UnixStream::connect(path)
        .with_context(|| format!("connecting to the console socket {}", path.display()))?;
    let fds = [fd.as_fd()];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    control.push(SendAncillaryMessage::ScmRights(&fds));
    rustix::net::sendmsg(
        &sock,
        &[std::io::IoSlice::new(name)],
        &mut control,
        SendFlags::empty(),
    )
    .context("sending the terminal")?;
    Ok(())
}
