//! A `wasi:http` handler made by componentize-js (StarlingMonkey; `examples/http-js`, built by
//! `tests/run.sh`): served over HTTP/1.1 and h2c, each response is answered whole and its access
//! line says so. HTTP/1.1 stops reading a body once its `content-length` is sent, before that
//! toolchain's body stream says it has ended; the line must not call that response incomplete.

use crate::common::Wasmbox;
use crate::http::{Served, built_example};

#[test]
fn a_componentize_js_handler_is_logged_complete_over_http1_and_h2c() {
    let wb = Wasmbox::new();
    let s = Served::start(&wb, "serve", &[], &built_example("http-js"));
    assert_eq!(s.curl(&[], "/"), (200, "hello from js\n".into()));
    assert_eq!(
        s.curl(&["--http2-prior-knowledge"], "/h2"),
        (200, "GET /h2\n".into())
    );
    let out = std::process::Command::new("curl")
        .args(["-s", "-I"])
        .arg(s.url("/head"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("HTTP/1.1 200"));
    for (path, bytes) in [("/", 14), ("/h2", 8), ("/head", 0)] {
        let line = s.access_line(path);
        assert!(
            line.ends_with(&format!(" bytes={bytes}")),
            "{path}: whole, and not called incomplete: {line}"
        );
    }
}
