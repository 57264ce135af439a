//! The containerd shim, driven through a real containerd with `ctr`: wasm images as containers,
//! the task service, stdio, events, grouping, native containers through runc, survival.

use std::time::{Duration, Instant, SystemTime};

use crate::ctrd::{
    BUSYBOX, Containerd, FILES, HELLO, HELLO_ARTIFACT, HELLO_CONVERTED, Images, PRECOMPILED,
    RUNTIME, WAT, alive, signal,
};

fn with_images(names: &[&str]) -> Containerd {
    let c = Containerd::start();
    for n in names {
        c.import(&Images::get().archive(n));
    }
    c
}

#[test]
fn compat_image_runs_to_completion_with_output_and_exit_status() {
    let c = with_images(&[HELLO, FILES]);
    let out = c.run(&[], HELLO, "hello", &[]);
    assert_eq!(out.code, 0, "{out:#?}\n{}", c.log_tail());
    assert!(out.stdout.contains("Hello from wasmbox!"), "{out:#?}");
    let out = c.run(&[], FILES, "args", &["/app.wasm", "args", "a b", "c"]);
    assert_eq!(out.code, 0, "{out:#?}");
    assert_eq!(out.stdout, "/app.wasm\nargs\na b\nc\n");
    let out = c.run(&[], FILES, "exit", &["/app.wasm", "exit", "7"]);
    assert_eq!(out.code, 7, "{out:#?}");
    // stderr reaches ctr too.
    let out = c.run(&[], FILES, "cat", &["/app.wasm", "cat", "/nope"]);
    assert_ne!(out.code, 0);
    assert!(!out.stderr.is_empty() || !out.stdout.is_empty(), "{out:#?}");
    assert!(
        c.shims().is_empty(),
        "shims exit once their containers are deleted"
    );
}
