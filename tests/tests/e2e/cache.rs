//! The compiled-code cache's cap and its commands: `cache ls` lists what was compiled, by the
//! wasm's sha256; past `WASMBOX_CACHE_MAX` the least recently used entries go, never one a
//! running server has loaded; `cache prune` empties or trims the cache, passing over entries in
//! use; a cap that does not parse is an error naming the variable.

use std::path::Path;

use sha2::{Digest as _, Sha256};

use crate::ahead::cached;
use crate::common::{Wasmbox, guest};
use crate::http::Served;

fn sha256_of(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

fn size_of(entries: &[std::path::PathBuf], digest: &str) -> u64 {
    let e = entries
        .iter()
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(digest))
        .unwrap_or_else(|| panic!("no entry for {digest} in {entries:?}"));
    std::fs::metadata(e).unwrap().len()
}

/// `cache ls`'s line for the wasm whose sha256 is `digest`.
fn ls_line(wb: &Wasmbox, digest: &str) -> Option<String> {
    let out = wb.run(&["cache", "ls"]);
    out.code(0);
    assert!(out.stdout.starts_with("WASM"), "{out:#?}");
    out.stdout
        .lines()
        .find(|l| l.starts_with(&format!("sha256:{digest} ")))
        .map(str::to_string)
}

/// `wasmbox compile FILE` with the cache capped at `cap`.
fn compile_under(wb: &Wasmbox, cap: &str, file: &Path) {
    let out = wb
        .cmd()
        .env("WASMBOX_CACHE_MAX", cap)
        .args(["compile", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn the_cache_stays_under_its_cap_and_never_drops_what_a_server_has_loaded() {
    let wb = Wasmbox::new();
    let (http, files, hello) = (
        guest("http-hello/http-hello.wasm"),
        guest("files/files.wasm"),
        guest("hello/hello.wasm"),
    );
    let (d_http, d_files, d_hello) = (sha256_of(&http), sha256_of(&files), sha256_of(&hello));
    for f in [&http, &files] {
        wb.run(&["compile", f.to_str().unwrap()]).code(0);
    }
    let line = ls_line(&wb, &d_files).expect("listed");
    assert!(line.contains(" module ") && line.ends_with(" no"), "{line}");
    let line = ls_line(&wb, &d_http).expect("listed");
    assert!(line.contains(" component "), "{line}");
    // A server loads the HTTP component from the cache and holds it.
    let server = Served::start(&wb, "serve", &[], http.to_str().unwrap());
    assert!(ls_line(&wb, &d_http).unwrap().ends_with(" yes"));
    // A cap that fits the component and hello's module, not files' too: compiling hello removes
    // files' entry (the least recently used not in use), and keeps the component in use.
    let entries = cached(&wb);
    let (s_http, s_files) = (size_of(&entries, &d_http), size_of(&entries, &d_files));
    let cap = s_http + s_files;
    compile_under(&wb, &cap.to_string(), &hello);
    assert!(
        ls_line(&wb, &d_files).is_none(),
        "the least recently used went"
    );
    assert!(ls_line(&wb, &d_hello).is_some() && ls_line(&wb, &d_http).is_some());
    // A cap below what is in use: nothing in use goes.
    compile_under(&wb, "1", &files);
    assert!(ls_line(&wb, &d_http).is_some(), "in use, so kept");
    assert!(ls_line(&wb, &d_hello).is_none());
    assert!(ls_line(&wb, &d_files).is_some(), "just written, so kept");
    // `prune` empties what is not in use; with `--max` it trims.
    let out = wb.run(&["cache", "prune", "--max", "1g"]);
    out.code(0);
    assert!(out.stdout.starts_with("removed 0 entries"), "{out:#?}");
    let out = wb.run(&["cache", "prune"]);
    out.code(0);
    assert!(
        out.stdout.contains("removed 1 entries") && out.stdout.contains("1 left"),
        "{out:#?}"
    );
    assert!(out.stdout.contains("1 in use"), "{out:#?}");
    assert_eq!(cached(&wb).len(), 1);
    // Once the server has ended, its entry goes too.
    drop(server);
    let out = wb.run(&["cache", "prune"]);
    out.code(0);
    assert!(out.stdout.starts_with("removed 1 entries"), "{out:#?}");
    assert!(cached(&wb).is_empty());
    // A cap that does not parse.
    let out = wb
        .cmd()
        .env("WASMBOX_CACHE_MAX", "lots")
        .args(["run", hello.to_str().unwrap()])
        .output()
        .unwrap();
    let out = crate::common::Out::from(out);
    out.runtime_error(&["WASMBOX_CACHE_MAX", "lots"]);
}
