//! A command on a pseudo-terminal, driven as a user at a keyboard drives it: the test waits for
//! the command to put its terminal in raw mode (as an attaching client does), types, and reads
//! what the screen shows.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

const PATIENCE: Duration = Duration::from_secs(60);

/// A command whose stdin, stdout and stderr are a terminal's slave, and its controlling terminal.
pub struct Pty {
    master: File,
    child: Child,
    screen: Vec<u8>,
    chunks: Receiver<Vec<u8>>,
}

impl Pty {
    /// Starts `cmd` (its program and arguments) on a new terminal, which it takes as its controlling terminal in a session
    /// of its own (util-linux's `setsid --ctty`).
    pub fn spawn(cmd: Command) -> Pty {
        use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
        let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).expect("posix_openpt");
        grantpt(&master).unwrap();
        unlockpt(&master).unwrap();
        let name = ptsname(&master, Vec::new()).unwrap();
        let slave = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open(std::ffi::OsStr::from_bytes(name.as_bytes()))
            .expect("the terminal's slave");
        let mut setsid = Command::new("setsid");
        setsid
            .args(["--ctty", "--wait"])
            .arg(cmd.get_program())
            .args(cmd.get_args());
        let io = |f: &File| Stdio::from(f.try_clone().unwrap());
        setsid
            .stdin(io(&slave))
            .stdout(io(&slave))
            .stderr(io(&slave));
        let child = setsid.spawn().expect("setsid (util-linux)");
        // Only the child holds the slave now: its exit ends the reads below (EIO).
        drop(slave);
        let master = File::from(master);
        let mut reader = master.try_clone().unwrap();
        let (tx, chunks) = channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = reader.read(&mut buf) {
                if tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        Pty {
            master,
            child,
            screen: Vec::new(),
            chunks,
        }
    }

    /// Waits until the command has turned canonical mode off on its terminal.
    pub fn wait_raw(&mut self) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let t = rustix::termios::tcgetattr(&self.master).expect("tcgetattr");
            if !t.local_modes.contains(rustix::termios::LocalModes::ICANON) {
                return;
            }
            self.drain(Duration::from_millis(20));
            assert!(
                Instant::now() < deadline,
                "the terminal never went raw; it shows {:?}",
                self.screen()
            );
        }
    }

    /// Types `bytes`.
    pub fn type_in(&mut self, bytes: &[u8]) {
        self.master.write_all(bytes).unwrap();
    }

    /// Waits until what the terminal has shown satisfies `done`.
    pub fn wait_for(&mut self, what: &str, done: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !done(&self.screen()) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero() && self.drain(left),
                "waiting for {what}; the terminal shows {:?}",
                self.screen()
            );
        }
    }

    /// Everything the terminal has shown so far.
    pub fn screen(&self) -> String {
        String::from_utf8_lossy(&self.screen).into_owned()
    }

    /// Reads for up to `wait`; false once the command has closed the terminal.
    fn drain(&mut self, wait: Duration) -> bool {
        match self.chunks.recv_timeout(wait) {
            Ok(c) => {
                self.screen.extend(c);
                true
            }
            Err(RecvTimeoutError::Timeout) => true,
            Err(RecvTimeoutError::Disconnected) => false,
        }
    }

    /// Reads until the command closes the terminal, then returns its exit code.
    pub fn finish(mut self) -> (i32, String) {
        let deadline = Instant::now() + PATIENCE;
        while self.drain(deadline.saturating_duration_since(Instant::now())) {
            assert!(
                Instant::now() < deadline,
                "the command never closed its terminal; it shows {:?}",
                self.screen()
            );
        }
        let status = self.child.wait().unwrap();
        (status.code().unwrap_or(-1), self.screen())
    }
}
