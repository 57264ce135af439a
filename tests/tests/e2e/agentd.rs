//! A running `wasmbox agent` against a test's containerd, the fixture the agent's tests drive:
//! its log read line by line, waited on for what it says.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use crate::common::wasmbox_bin;
use crate::ctrd::Containerd;

const WITHIN: Duration = Duration::from_secs(120);

/// A running agent (killed when dropped) and the lines it has logged.
pub(crate) struct Agent {
    child: Child,
    lines: Receiver<String>,
    pub(crate) log: Vec<String>,
}

impl Agent {
    pub(crate) fn start(c: &Containerd, cache: &std::path::Path, metrics: u16) -> Agent {
        let mut child = Command::new(wasmbox_bin())
            .arg("agent")
            .arg("--address")
            .arg(c.sock())
            .arg("--cache-dir")
            .arg(cache)
            .args(["--metrics-addr", &format!("127.0.0.1:{metrics}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Agent {
            child,
            lines,
            log: Vec::new(),
        }
    }

    /// Waits for the `n`th line (counting all so far) containing `what`.
    pub(crate) fn wait_for(&mut self, what: &str, n: usize) {
        let deadline = Instant::now() + WITHIN;
        while self.log.iter().filter(|l| l.contains(what)).count() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => self.log.push(l),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                    panic!("no {what:?} (#{n}) from the agent: {:#?}", self.log)
                }
            }
        }
    }
}

impl Agent {
    /// How many lines so far contain `what`, with every line the agent has logged by now.
    pub(crate) fn count(&mut self, what: &str) -> usize {
        while let Ok(l) = self.lines.try_recv() {
            self.log.push(l);
        }
        self.log.iter().filter(|l| l.contains(what)).count()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
