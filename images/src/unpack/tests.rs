//! Tests of safe unpacking, with hostile layers written byte by byte.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use tar::{EntryType, Header};

use super::*;

struct Tar(tar::Builder<Vec<u8>>);

impl Tar {
    fn new() -> Self {
        Self(tar::Builder::new(Vec::new()))
    }
    fn raw(
        mut self,
        path: &str,
        kind: EntryType,
        data: &[u8],
        link: Option<&str>,
        mode: u32,
    ) -> Self {
        let mut h = Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        let old = h.as_old_mut();
        old.name[..path.len()].copy_from_slice(path.as_bytes());
        if let Some(l) = link {
            old.linkname[..l.len()].copy_from_slice(l.as_bytes());
        }
        h.set_cksum();
        self.0.append(&h, data).unwrap();
        self
    }
    fn file(self, path: &str, data: &str) -> Self {
        self.raw(path, EntryType::Regular, data.as_bytes(), None, 0o644)
    }
    fn dir(self, path: &str) -> Self {
        self.raw(path, EntryType::Directory, b"", None, 0o755)
    }
    fn symlink(self, path: &str, target: &str) -> Self {
        self.raw(path, EntryType::Symlink, b"", Some(target), 0o777)
    }
    fn hardlink(self, path: &str, target: &str) -> Self {
        self.raw(path, EntryType::Link, b"", Some(target), 0o644)
    }
    fn bytes(self) -> Vec<u8> {
        self.0.into_inner().unwrap()
    }
}

/// A host directory with a rootfs inside it and a sentinel file beside the rootfs.
struct Fixture {
    host: tempfile::TempDir,
    root: Dir,
}

impl Fixture {
    fn new() -> Self {
        let host = tempfile::tempdir().unwrap();
        std::fs::create_dir(host.path().join("rootfs")).unwrap();
        std::fs::write(host.path().join("sentinel"), "host").unwrap();
        let root = Dir::open_ambient_dir(host.path().join("rootfs"), cap_std::ambient_authority())
            .unwrap();
        Self { host, root }
    }
    fn unpack(&self, layer: Vec<u8>) -> Result<(), UnpackError> {
        unpack_layer(&self.root, &layer[..], None, &mut Budget::default())
    }
    fn path(&self, rel: &str) -> PathBuf {
        self.host.path().join("rootfs").join(rel)
    }
    fn assert_host_untouched(&self) {
        assert_eq!(
            std::fs::read_to_string(self.host.path().join("sentinel")).unwrap(),
            "host"
        );
        let mut names: Vec<_> = std::fs::read_dir(self.host.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["rootfs", "sentinel"]);
    }
}

#[test]
fn unpacks_files_dirs_links_and_modes() {
    let f = Fixture::new();
    let layer = Tar::new()
        .dir("app/")
        .file("app/main.wasm", "\0asm")
        .raw("app/suid", EntryType::Regular, b"x", None, 0o4755)
        .symlink("app/link", "/app/main.wasm")
        .hardlink("app/hard", "app/main.wasm")
        .file("./etc/config", "k=v")
        .raw("dev/null", EntryType::Char, b"", None, 0o666)
        .raw("fifo", EntryType::Fifo, b"", None, 0o644)
        .bytes();
    f.unpack(layer).unwrap();
    assert_eq!(std::fs::read(f.path("app/main.wasm")).unwrap(), b"\0asm");
    assert_eq!(
        std::fs::read_link(f.path("app/link")).unwrap(),
        Path::new("/app/main.wasm")
    );
    let a = std::fs::metadata(f.path("app/main.wasm")).unwrap();
    let b = std::fs::metadata(f.path("app/hard")).unwrap();
    assert_eq!(a.ino(), b.ino());
    let mode = std::fs::metadata(f.path("app/suid"))
        .unwrap()
        .permissions()
        .mode()
        & 0o7777;
    assert_eq!(mode, 0o755, "setuid dropped");
    assert_eq!(
        std::fs::read_to_string(f.path("etc/config")).unwrap(),
        "k=v"
    );
    assert!(!f.path("dev/null").exists(), "device nodes are skipped");
    assert!(!f.path("fifo").exists(), "fifos are skipped");
    f.assert_host_untouched();
}

#[test]
fn dotdot_is_refused() {
    let f = Fixture::new();
    let e = f
        .unpack(Tar::new().file("../../sentinel", "pwned").bytes())
        .unwrap_err();
    assert!(e.to_string().contains("'..'"), "{e}");
    let e = f
        .unpack(Tar::new().file("a/../../sentinel", "pwned").bytes())
        .unwrap_err();
    assert!(matches!(e, UnpackError::Refused { .. }), "{e}");
    f.assert_host_untouched();
}

#[test]
fn absolute_paths_are_confined() {
    let f = Fixture::new();
    let sentinel = f.host.path().join("sentinel").display().to_string();
    f.unpack(Tar::new().file(&sentinel, "confined").bytes())
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(f.path(sentinel.trim_start_matches('/'))).unwrap(),
        "confined"
    );
    f.unpack(Tar::new().file("/etc/x", "confined").bytes())
        .unwrap();
    assert!(f.path("etc/x").exists());
    f.assert_host_untouched();
}

#[test]
fn symlink_then_file_through_it_is_refused() {
    let f = Fixture::new();
    let host = f.host.path().display().to_string();
    for target in [host.as_str(), "../", "/", "."] {
        let f = Fixture::new();
        let layer = Tar::new()
            .symlink("evil", target)
            .file("evil/sentinel", "pwned")
            .bytes();
        let e = f.unpack(layer).unwrap_err();
        assert!(
            e.to_string().contains("symbolic link evil"),
            "{target}: {e}"
        );
        f.assert_host_untouched();
    }
    // Also across layers: the link in one layer, the file in the next.
    f.unpack(Tar::new().symlink("evil", &host).bytes()).unwrap();
    let e = f
        .unpack(Tar::new().file("evil/sentinel", "pwned").bytes())
        .unwrap_err();
    assert!(matches!(e, UnpackError::Refused { .. }), "{e}");
    // And a directory entry through it.
    let e = f
        .unpack(Tar::new().dir("evil/newdir/").bytes())
        .unwrap_err();
    assert!(matches!(e, UnpackError::Refused { .. }), "{e}");
    f.assert_host_untouched();
}

#[test]
fn a_file_replaces_a_symlink_instead_of_writing_through_it() {
    let f = Fixture::new();
    let sentinel = f.host.path().join("sentinel").display().to_string();
    f.unpack(Tar::new().symlink("s", &sentinel).bytes())
        .unwrap();
    f.unpack(Tar::new().file("s", "replaced").bytes()).unwrap();
    assert!(!std::fs::symlink_metadata(f.path("s")).unwrap().is_symlink());
    assert_eq!(std::fs::read_to_string(f.path("s")).unwrap(), "replaced");
    f.assert_host_untouched();
}

#[test]
fn hard_links_must_stay_inside() {
    let f = Fixture::new();
    let e = f
        .unpack(Tar::new().hardlink("passwd", "/etc/passwd").bytes())
        .unwrap_err();
    assert!(e.to_string().contains("not in the rootfs"), "{e}");
    let e = f
        .unpack(Tar::new().hardlink("x", "../sentinel").bytes())
        .unwrap_err();
    assert!(e.to_string().contains("'..'"), "{e}");
    let sentinel = f.host.path().join("sentinel").display().to_string();
    let e = f
        .unpack(Tar::new().hardlink("y", &sentinel).bytes())
        .unwrap_err();
    assert!(matches!(e, UnpackError::Refused { .. }), "{e}");
    // A link target reached through a symlink is refused too.
    let layer = Tar::new()
        .symlink("up", &f.host.path().display().to_string())
        .hardlink("z", "up/sentinel")
        .bytes();
    let e = f.unpack(layer).unwrap_err();
    assert!(e.to_string().contains("symbolic link up"), "{e}");
    let nlink = std::fs::metadata(f.host.path().join("sentinel"))
        .unwrap()
        .nlink();
    assert_eq!(nlink, 1);
    f.assert_host_untouched();
}

#[test]
fn whiteouts_and_opaque_directories() {
    let f = Fixture::new();
    f.unpack(
        Tar::new()
            .file("a/keep", "1")
            .file("a/gone", "2")
            .file("a/sub/x", "3")
            .file("b/old", "4")
            .bytes(),
    )
    .unwrap();
    f.unpack(
        Tar::new()
            .file("a/.wh.gone", "")
            .file("a/.wh.sub", "")
            .bytes(),
    )
    .unwrap();
    assert!(f.path("a/keep").exists());
    assert!(!f.path("a/gone").exists());
    assert!(!f.path("a/sub").exists());
    assert!(
        !f.path("a/.wh.gone").exists(),
        "whiteout markers are not unpacked"
    );
    // Opaque: lower contents vanish, this layer's own entries stay, wherever the marker sits.
    f.unpack(
        Tar::new()
            .file("b/new", "5")
            .file("b/.wh..wh..opq", "")
            .file("b/after", "6")
            .bytes(),
    )
    .unwrap();
    let mut names: Vec<_> = std::fs::read_dir(f.path("b"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["after", "new"]);
    // A whiteout cannot reach outside through a link.
    f.unpack(
        Tar::new()
            .symlink("l", &f.host.path().display().to_string())
            .bytes(),
    )
    .unwrap();
    let e = f
        .unpack(Tar::new().file("l/.wh.sentinel", "").bytes())
        .unwrap_err();
    assert!(matches!(e, UnpackError::Refused { .. }), "{e}");
    f.assert_host_untouched();
}

#[test]
fn compressed_layers_and_the_size_budget() {
    let f = Fixture::new();
    let big = vec![0u8; 32 << 20];
    let tar = Tar::new()
        .raw("zeros", EntryType::Regular, &big, None, 0o644)
        .bytes();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&tar).unwrap();
    let gz = gz.finish().unwrap();
    assert!(gz.len() < 1 << 20, "a small bomb");
    let e = unpack_layer(&f.root, &gz[..], None, &mut Budget::new(8 << 20)).unwrap_err();
    assert!(
        matches!(e, UnpackError::TooLarge { limit } if limit == 8 << 20),
        "{e}"
    );
    let zst = zstd::encode_all(&tar[..], 3).unwrap();
    unpack_layer(&f.root, &zst[..], None, &mut Budget::new(64 << 20)).unwrap();
    assert_eq!(std::fs::metadata(f.path("zeros")).unwrap().len(), 32 << 20);
    // The budget is shared across layers.
    let mut budget = Budget::new(40 << 20);
    unpack_layer(&f.root, &gz[..], Some(Compression::Gzip), &mut budget).unwrap();
    let e = unpack_layer(&f.root, &zst[..], Some(Compression::Zstd), &mut budget).unwrap_err();
    assert!(matches!(e, UnpackError::TooLarge { .. }), "{e}");
}

#[test]
fn sparse_file_is_stopped_by_the_budget() {
    let work = tempfile::tempdir().unwrap();
    let big = work.path().join("big");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(10 << 30)
        .unwrap();
    let tarfile = work.path().join("layer.tar");
    let st = std::process::Command::new("tar")
        .args(["--sparse", "-cf"])
        .arg(&tarfile)
        .arg("-C")
        .arg(work.path())
        .arg("big")
        .status()
        .expect("GNU tar");
    assert!(st.success());
    assert!(std::fs::metadata(&tarfile).unwrap().len() < 1 << 20);
    let f = Fixture::new();
    let t = std::time::Instant::now();
    let e = unpack_layer(
        &f.root,
        std::fs::File::open(&tarfile).unwrap(),
        None,
        &mut Budget::new(1 << 30),
    )
    .unwrap_err();
    assert!(matches!(e, UnpackError::TooLarge { .. }), "{e}");
    assert!(t.elapsed() < std::time::Duration::from_secs(30));
}

#[test]
fn garbage_is_a_read_error() {
    let f = Fixture::new();
    let e = f.unpack(vec![0x1f, 0x8b, 1, 2, 3]).unwrap_err();
    assert!(matches!(e, UnpackError::Read(_)), "{e}");
}

#[test]
fn compression_from_media_types() {
    use Compression::*;
    for (mt, want) in [
        ("application/vnd.oci.image.layer.v1.tar+gzip", Some(Gzip)),
        (
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
            Some(Gzip),
        ),
        ("application/vnd.oci.image.layer.v1.tar+zstd", Some(Zstd)),
        ("application/vnd.oci.image.layer.v1.tar", Some(None)),
        ("application/vnd.docker.image.rootfs.diff.tar", Some(None)),
        ("application/wasm", Option::None),
    ] {
        assert_eq!(Compression::from_media_type(mt), want, "{mt}");
    }
}
