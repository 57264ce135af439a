//! The devices of `/dev` (`null`, `zero`, `full`, `random`, `urandom`), which wasmbox answers
//! itself: what they answer to preview 1 modules and to components, that `/dev` cannot be
//! changed or left through, and a real program that needs `/dev/urandom`. Images and bundles
//! always have them (`fs.rs` and the engines' tests run bundles); a wasm file gets them with
//! `--dev`, and otherwise exactly its grants.

use crate::common::{Wasmbox, guest};

/// `ls /dev` in a guest: the devices and nothing of the host's.
pub const DEVICES: &str = "full\nnull\nrandom\nurandom\nzero\n";

/// What the `files` guest's `dev` command prints when every device answers as Linux's does.
pub const ANSWERS: &str = "urandom: two reads differ
random: read 32
zero: read 4096, 4096 zeros
null: read 0
null: wrote 100
null: character device
null: open read-write
null: fopen for writing ok
full: wrote -1 (No space left on device)
ls /dev: 5 character devices
";

#[test]
fn modules_and_components_read_and_write_the_devices_as_linuxs() {
    let wb = Wasmbox::new();
    let scratch = tempfile::tempdir().unwrap();
    let root = format!("{}:/", scratch.path().display());
    for g in ["files/files.wasm", "files/files-component.wasm"] {
        let g = guest(g);
        let g = g.to_str().unwrap();
        // Without `--dev`, a file gets exactly its grants; the host's /dev is never one, and
        // the refusal says where the devices are.
        let out = wb.run(&["run", g, "ls", "/dev"]);
        assert_eq!(out.code, 1, "{g}: {out:#?}");
        let out = wb.run(&["run", "-v", "/dev:/dev:ro", g, "dev"]);
        assert_ne!(out.code, 0, "{out:#?}");
        assert!(out.stderr.contains("--dev"), "{out:#?}");
        // With no grant at all, and beside a granted root.
        for grants in [&["--dev"][..], &["--dev", "-v", root.as_str()][..]] {
            let mut args = vec!["run"];
            args.extend(grants);
            args.extend([g, "dev"]);
            let out = wb.run(&args);
            out.code(0);
            assert_eq!(out.stdout, ANSWERS, "{g} {grants:?}");
        }
        let out = wb.run(&["run", "--dev", g, "ls", "/dev"]);
        assert_eq!(out.stdout, DEVICES, "{g}");
        let out = wb.run(&["run", "--dev", g, "stat", "/dev/urandom"]);
        assert_eq!(out.stdout, "size=0 type=other\n", "{g}: a character device");
        // /dev cannot be changed, and `..` does not leave it.
        for args in [
            &["write", "/dev/new", "x"][..],
            &["rm", "/dev/null"],
            &["mkdir", "/dev/d"],
            &["mv", "/dev/zero", "/dev/z"],
            &["symlink", "/", "/dev/l"],
            &["truncate", "/dev/full", "9"],
            &["touch", "/dev/random"],
        ] {
            let mut a = vec!["run", "--dev", "-v", &root, g];
            a.extend(args);
            let out = wb.run(&a);
            assert_eq!(out.code, 1, "{g} {args:?}: {out:#?}");
        }
        // `..` does not leave /dev (the directory above it is wasmbox's scratch directory).
        let out = wb.run(&["run", "--dev", g, "ls", "/dev/.."]);
        assert_eq!(out.code, 1, "{g}: out of /dev: {out:#?}");
        let out = wb.run(&["run", "--dev", g, "ls", "/dev/."]);
        assert_eq!(out.stdout, DEVICES, "{g}: the control");
        // The granted root never gained a /dev of its own.
        assert!(!scratch.path().join("dev").exists());
        let out = wb.run(&["run", "--dev", g, "cat", "/dev/null"]);
        assert_eq!((out.code, out.stdout.as_str()), (0, ""), "{g}");
    }
}

/// svg-flatten (a C++ program published for WASI on PyPI as `svg-flatten-wasi`, fetched by
/// tests/run.sh) names its temporary file with bytes from `/dev/urandom`.
#[test]
fn a_program_that_names_its_temp_file_from_dev_urandom_runs() {
    let wasm = std::env::var("WASMBOX_SVG_FLATTEN")
        .expect("WASMBOX_SVG_FLATTEN names svg-flatten's wasm (tests/run.sh fetches it)");
    let work = tempfile::tempdir().unwrap();
    std::fs::create_dir(work.path().join("tmp")).unwrap();
    std::fs::write(
        work.path().join("in.svg"),
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="10mm" height="10mm" viewBox="0 0 10 10"><rect x="1" y="1" width="5" height="5"/></svg>"#,
    )
    .unwrap();
    let wb = Wasmbox::new();
    let work_grant = format!("{}:/work", work.path().display());
    let tmp_grant = format!("{}:/tmp", work.path().join("tmp").display());
    let out = wb.run(&[
        "run",
        "--dev",
        "-v",
        &work_grant,
        "-v",
        &tmp_grant,
        &wasm,
        "--no-usvg",
        "/work/in.svg",
        "/work/out.gbr",
    ]);
    out.code(0);
    let gerber = std::fs::read_to_string(work.path().join("out.gbr")).unwrap();
    assert!(gerber.ends_with("M02*\n"), "a whole Gerber file: {gerber}");
}

/// The `/dev` all guests of one process share is a read-only mount of wasmbox's own directory
/// (in the process's private mount namespace): the kernel refuses changes to it whatever reaches
/// it, and it is gone with the process.
#[test]
fn the_shared_dev_is_a_read_only_mount() {
    use std::io::BufRead;
    let wb = Wasmbox::new();
    let files = guest("files/files.wasm");
    let mut child = wb
        .cmd()
        .args(["run", "--dev", files.to_str().unwrap(), "loop"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "looping\n", "the guest runs");
    let info = std::fs::read_to_string(format!("/proc/{}/mountinfo", child.id())).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let dev = info
        .lines()
        .find(|l| l.contains("/wasmbox-dev-"))
        .unwrap_or_else(|| panic!("no mount of /dev's directory:\n{info}"));
    let options = dev.split(' ').nth(5).unwrap();
    let options: Vec<&str> = options.split(',').collect();
    for want in ["ro", "nosuid", "nodev"] {
        assert!(options.contains(&want), "{want} in {options:?}: {dev}");
    }
}
