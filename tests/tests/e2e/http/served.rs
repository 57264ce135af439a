//! A `wasmbox serve` (or `run`) under test, and the components the HTTP tests serve.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use crate::common::{Lines, Wasmbox, guest};

/// How long a first start may take: the component is compiled cold while other tests run.
pub(crate) const READY: Duration = Duration::from_secs(180);

/// An example component built by `tests/run.sh` rather than committed: `examples/NAME/NAME.wasm`,
/// made by `examples/NAME/build.sh`.
pub(crate) fn built_example(name: &str) -> String {
    let p = guest(&format!("{name}/{name}.wasm"));
    assert!(
        p.exists(),
        "{} is missing: build it with `bash examples/{name}/build.sh` (tests/run.sh does)",
        p.display()
    );
    p.to_string_lossy().into_owned()
}

pub(crate) fn hello() -> String {
    guest("http-hello/http-hello.wasm")
        .to_string_lossy()
        .into_owned()
}

/// A running `wasmbox serve`, killed when dropped.
pub(crate) struct Served {
    pub(crate) child: Child,
    /// `http` or `https`.
    pub(crate) scheme: String,
    pub(crate) addr: String,
    pub(crate) stdout: Arc<Lines>,
    pub(crate) stderr: Arc<Lines>,
}

impl Served {
    /// Starts `wasmbox ARGS... --addr 127.0.0.1:0 WASM` and waits for its readiness line.
    pub(crate) fn start(wb: &Wasmbox, command: &str, args: &[&str], wasm: &str) -> Self {
        Self::start_as(wb.cmd(), command, args, wasm)
    }

    /// As [`Served::start`], with `cmd` running wasmbox (under `prlimit`, say).
    pub(crate) fn start_as(mut cmd: Command, command: &str, args: &[&str], wasm: &str) -> Self {
        cmd.arg(command)
            .args(["--addr", "127.0.0.1:0"])
            .args(args)
            .arg(wasm);
        Self::spawn(cmd)
    }

    /// Runs `cmd` (a wasmbox that serves) and waits for its readiness line, `wasmbox: serving
    /// http://ADDR` or `https://ADDR`.
    pub(crate) fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = Lines::read(child.stdout.take().unwrap());
        let stderr = Lines::read(child.stderr.take().unwrap());
        let ready = stderr.find(READY, |l| l.starts_with("wasmbox: serving "));
        let Some(line) = ready else {
            let _ = child.kill();
            panic!("no readiness line; stderr: {:#?}", stderr.all());
        };
        let (scheme, addr) = line
            .trim_start_matches("wasmbox: serving ")
            .split_once("://")
            .unwrap_or_else(|| panic!("readiness line without a URL: {line}"));
        Served {
            scheme: scheme.to_string(),
            addr: addr.to_string(),
            child,
            stdout,
            stderr,
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.scheme, self.addr)
    }

    /// `curl -s` with `args`, returning (status, body).
    pub(crate) fn curl(&self, args: &[&str], path: &str) -> (u16, String) {
        let out = Command::new("curl")
            .args(["-s", "-o", "-", "-w", "\n%{http_code}"])
            .args(args)
            .arg(self.url(path))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap();
        (code.parse().unwrap_or(0), body.to_string())
    }

    pub(crate) fn signal(&self, sig: i32) {
        assert!(crate::ctrd::signal(self.child.id(), sig));
    }

    /// Waits for the process to end (its stderr closes), returning its exit code.
    pub(crate) fn wait(&mut self, within: Duration) -> i32 {
        assert!(self.stderr.wait_end(within), "wasmbox did not end");
        self.child.wait().unwrap().code().unwrap_or(-1)
    }

    /// The access-log line of the request to `path` (the first one).
    pub(crate) fn access_line(&self, path: &str) -> String {
        let want = format!(" path={path} ");
        self.stderr
            .find(Duration::from_secs(30), |l| {
                l.starts_with("time=") && l.contains(&want)
            })
            .unwrap_or_else(|| panic!("no access line for {path}: {:#?}", self.stderr.all()))
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
