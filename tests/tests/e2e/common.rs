//! Helpers: find the binary and the example guests, run commands, build bundles.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The repository's `examples/` directory.
pub fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

/// An example guest by relative path, e.g. `files/files.wasm`.
pub fn guest(rel: &str) -> PathBuf {
    let p = examples().join(rel);
    assert!(p.exists(), "missing example {}", p.display());
    p
}

/// A compiled test of the official WASI testsuite's WASI 0.3 suite, `NAME.wasm`
/// (`../shared/wasi-testsuite`, or `$WASI_TESTSUITE`, as tests/wasi-testsuite/run.sh reads it).
pub fn wasi_testsuite_p3(name: &str) -> PathBuf {
    let suite = std::env::var_os("WASI_TESTSUITE").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/wasi-testsuite"),
        PathBuf::from,
    );
    let p = suite.join(format!("tests/rust/testsuite/wasm32-wasip3/{name}.wasm"));
    assert!(p.exists(), "missing WASI testsuite program {}", p.display());
    p
}

/// The built `wasmbox` binary (next to this test's deps directory).
pub fn wasmbox_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("wasmbox");
    assert!(
        bin.exists(),
        "{} not built: run `cargo build --workspace --bins` first (tests/run.sh does)",
        bin.display()
    );
    bin
}

/// A `wasmbox` command with a private cache directory.
pub struct Wasmbox {
    /// Holds the cache directory.
    pub cache: tempfile::TempDir,
}

impl Wasmbox {
    pub fn new() -> Self {
        Self {
            cache: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(wasmbox_bin());
        c.env("WASMBOX_CACHE_DIR", self.cache.path().join("c"))
            .env_remove("WASMBOX_LOG")
            .stdin(Stdio::null());
        c
    }

    /// `wasmbox ARGS` with `timeout 60` in front, as a backstop for guests that would wait for
    /// ever.
    pub fn run_bounded(&self, args: &[&str]) -> Out {
        Out::from(
            Command::new("timeout")
                .args(["-k", "5", "60"])
                .arg(wasmbox_bin())
                .args(args)
                .env("WASMBOX_CACHE_DIR", self.cache.path().join("c"))
                .stdin(Stdio::null())
                .output()
                .unwrap(),
        )
    }

    /// Runs `wasmbox ARGS` to completion.
    pub fn run(&self, args: &[&str]) -> Out {
        let out = self.cmd().args(args).output().expect("spawn wasmbox");
        Out::from(out)
    }
}

/// The compiled-code cache entries (`*.cwasm`) in `dir`, sorted; none when it does not exist.
pub fn cache_entries(dir: &Path) -> Vec<PathBuf> {
    let Ok(read) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<_> = read
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .collect();
    v.sort();
    v
}

/// Runs `cmd` with `input` on its stdin (then closed) and its stdout (and stderr, unless the
/// caller set it) captured, to its end.
pub fn fed(cmd: &mut Command, input: &[u8]) -> Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// A finished command.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Out {
    fn from(o: Output) -> Self {
        use std::os::unix::process::ExitStatusExt;
        Out {
            code: o
                .status
                .code()
                .unwrap_or_else(|| 128 + o.status.signal().unwrap_or(0)),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Out {
    /// Asserts the exit code, showing everything on failure.
    #[track_caller]
    pub fn code(&self, want: i32) -> &Self {
        assert_eq!(self.code, want, "unexpected exit code: {self:#?}");
        self
    }

    /// Asserts exit 125 and returns the one `wasmbox: error:` line (progress lines may precede it).
    #[track_caller]
    pub fn the_error_line(&self) -> &str {
        self.code(125);
        let errors: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| l.starts_with("wasmbox: error:"))
            .collect();
        assert_eq!(errors.len(), 1, "expected one error line: {self:#?}");
        errors[0]
    }

    /// Asserts a runtime error: exit 125 and a single `wasmbox: error:` line containing each of `needles`.
    #[track_caller]
    pub fn runtime_error(&self, needles: &[&str]) {
        self.code(125);
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "expected one error line: {self:#?}");
        assert!(lines[0].starts_with("wasmbox: error: "), "{self:#?}");
        for n in needles {
            assert!(lines[0].contains(n), "error line lacks {n:?}: {self:#?}");
        }
        assert!(!self.stderr.contains("panicked"), "{self:#?}");
    }
}

/// Makes a FIFO at `path`.
pub fn mkfifo(path: &Path) {
    let made = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(made.success(), "mkfifo {}", path.display());
}

/// Writes an OCI runtime bundle: `config.json` from `config` (with `root` and `process`
/// defaults filled in) and a rootfs holding the `files` guest at `/files.wasm`.
pub fn bundle(dir: &Path, config: serde_json::Value) -> PathBuf {
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    std::fs::copy(guest("files/files.wasm"), rootfs.join("files.wasm")).unwrap();
    let mut c = serde_json::json!({
        "ociVersion": "1.0.2",
        "root": {"path": "rootfs"},
        "process": {"cwd": "/", "args": ["/files.wasm"], "user": {"uid": 0, "gid": 0}},
    });
    merge(&mut c, config);
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_vec_pretty(&c).unwrap(),
    )
    .unwrap();
    dir.to_path_buf()
}

fn merge(a: &mut serde_json::Value, b: serde_json::Value) {
    match (a, b) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

/// A TCP server on loopback that answers each connection's first line with `pong\n`.
pub struct PongServer {
    pub port: u16,
}

impl PongServer {
    pub fn start() -> Self {
        use std::io::{BufRead, BufReader, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for c in l.incoming().flatten() {
                let mut line = String::new();
                let mut r = BufReader::new(c.try_clone().unwrap());
                let _ = r.read_line(&mut line);
                let _ = (&c).write_all(b"pong\n");
            }
        });
        Self { port }
    }
}

/// A loopback port nobody listens on (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Peak resident set size of process `pid` so far (`VmHWM`), in KiB.
pub fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// The lines a child process printed so far on one stream, read in the background, and a signal
/// for each new one.
#[derive(Default)]
pub struct Lines {
    seen: std::sync::Mutex<Vec<String>>,
    added: std::sync::Condvar,
    /// Set when the stream ended (signalled through `added` too).
    ended: std::sync::atomic::AtomicBool,
}

impl Lines {
    /// Reads `from` line by line on a thread of its own until it ends.
    pub fn read(from: impl std::io::Read + Send + 'static) -> std::sync::Arc<Self> {
        use std::io::BufRead;
        let lines = std::sync::Arc::new(Lines::default());
        let l2 = lines.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(from).lines().map_while(Result::ok) {
                l2.seen.lock().unwrap().push(line);
                l2.added.notify_all();
            }
            let _seen = l2.seen.lock().unwrap();
            l2.ended.store(true, std::sync::atomic::Ordering::SeqCst);
            l2.added.notify_all();
        });
        lines
    }

    /// Waits up to `within` for a line that `want` accepts, and returns it.
    pub fn find(&self, within: std::time::Duration, want: impl Fn(&str) -> bool) -> Option<String> {
        let seen = self.seen.lock().unwrap();
        let (seen, _) = self
            .added
            .wait_timeout_while(seen, within, |s| !s.iter().any(|l| want(l)))
            .unwrap();
        seen.iter().find(|l| want(l)).cloned()
    }

    /// Waits up to `within` for a line that `want` accepts; true when one came.
    pub fn wait(&self, within: std::time::Duration, want: impl Fn(&str) -> bool) -> bool {
        self.find(within, want).is_some()
    }

    /// Waits up to `within` until `n` lines that `want` accepts have come; true when they did.
    pub fn wait_count(
        &self,
        within: std::time::Duration,
        n: usize,
        want: impl Fn(&str) -> bool,
    ) -> bool {
        let count = |s: &Vec<String>| s.iter().filter(|l| want(l)).count();
        let seen = self.seen.lock().unwrap();
        let (seen, _) = self
            .added
            .wait_timeout_while(seen, within, |s| count(s) < n)
            .unwrap();
        count(&seen) >= n
    }

    /// Waits up to `within` for the stream to end (the writer closed it, usually by exiting);
    /// true when it did.
    pub fn wait_end(&self, within: std::time::Duration) -> bool {
        let ended = || self.ended.load(std::sync::atomic::Ordering::SeqCst);
        let seen = self.seen.lock().unwrap();
        let _ = self
            .added
            .wait_timeout_while(seen, within, |_| !ended())
            .unwrap();
        ended()
    }

    /// Every line so far.
    pub fn all(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}
