//! Tests of the store: verified atomic blobs, references, locking, pruning.

use super::*;

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(&dir.path().join("store")).unwrap();
    (dir, s)
}

fn names(s: &Store, rel: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(s.root().join(rel))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

fn manifest(s: &Store, layers: &[&[u8]]) -> Descriptor {
    let config = s.put_bytes(b"{}").unwrap();
    let layers: Vec<serde_json::Value> = layers
        .iter()
        .map(|l| {
            let d = s.put_bytes(l).unwrap();
            serde_json::json!({"mediaType": "application/wasm", "digest": d.to_string(), "size": l.len()})
        })
        .collect();
    let m = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.wasm.config.v0+json", "digest": config.to_string(), "size": 2},
        "layers": layers,
    }))
    .unwrap();
    let d = s.put_bytes(&m).unwrap();
    Descriptor {
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        digest: d.to_string(),
        size: m.len() as u64,
        annotations: Default::default(),
        extra: Default::default(),
    }
}

#[test]
fn creates_an_oci_layout() {
    let (_d, s) = store();
    assert_eq!(
        names(&s, "."),
        ["blobs", "index.json", "lock", "oci-layout", "tmp"]
    );
    let layout: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s.root().join("oci-layout")).unwrap()).unwrap();
    assert_eq!(layout["imageLayoutVersion"], "1.0.0");
    assert!(s.refs().unwrap().is_empty());
    // Opening again keeps what is there.
    let d = s.put_bytes(b"x").unwrap();
    let again = Store::open(s.root()).unwrap();
    assert!(again.has_blob(&d));
}

#[test]
fn blobs_are_verified_and_nothing_partial_is_left() {
    let (_d, s) = store();
    let good = Digest::of(b"content");
    assert_eq!(s.put_blob(&good, &b"content"[..]).unwrap(), 7);
    assert_eq!(s.read_blob(&good).unwrap(), b"content");
    let claimed = Digest::of(b"something else");
    let e = s.put_blob(&claimed, &b"content!"[..]).unwrap_err();
    assert!(matches!(e, StoreError::DigestMismatch { .. }), "{e}");
    assert!(e.to_string().contains(&claimed.to_string()), "{e}");
    assert!(!s.has_blob(&claimed));
    assert!(names(&s, "tmp").is_empty());
    // A stream that fails half way leaves nothing either.
    struct Failing(usize);
    impl Read for Failing {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0 == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    "registry went away",
                ));
            }
            self.0 -= 1;
            buf[0] = b'x';
            Ok(1)
        }
    }
    let e = s.put_blob(&claimed, Failing(100)).unwrap_err();
    assert!(matches!(e, StoreError::Io { .. }), "{e}");
    assert!(!s.has_blob(&claimed));
    assert!(names(&s, "tmp").is_empty());
    assert_eq!(names(&s, "blobs/sha256"), [good.hex().to_string()]);
}

#[test]
fn references_point_only_at_stored_blobs() {
    let (_d, s) = store();
    let m = manifest(&s, &[b"\0asm\x01\0\0\0"]);
    s.set_ref("docker.io/library/hello:latest", m.clone())
        .unwrap();
    let got = s.resolve("docker.io/library/hello:latest").unwrap();
    assert_eq!(got.digest, m.digest);
    // Retagging replaces.
    let m2 = manifest(&s, &[b"\0asm\x01\0\0\0", b"more"]);
    s.set_ref("docker.io/library/hello:latest", m2.clone())
        .unwrap();
    assert_eq!(s.refs().unwrap().len(), 1);
    assert_eq!(
        s.resolve("docker.io/library/hello:latest").unwrap().digest,
        m2.digest
    );
    // A descriptor whose blob is missing is refused.
    let mut missing = m.clone();
    missing.digest = Digest::of(b"never stored").to_string();
    let e = s.set_ref("x:1", missing).unwrap_err();
    assert!(matches!(e, StoreError::MissingBlob { .. }), "{e}");
    assert!(matches!(
        s.resolve("x:1").unwrap_err(),
        StoreError::UnknownRef { .. }
    ));
    s.remove_ref("docker.io/library/hello:latest").unwrap();
    assert!(s.refs().unwrap().is_empty());
    assert!(matches!(
        s.remove_ref("nope").unwrap_err(),
        StoreError::UnknownRef { .. }
    ));
}

#[test]
fn prune_keeps_what_references_reach() {
    let (_d, s) = store();
    let kept = manifest(&s, &[b"layer-a"]);
    s.set_ref("a:1", kept.clone()).unwrap();
    let dropped = manifest(&s, &[b"layer-b"]);
    s.set_ref("b:1", dropped.clone()).unwrap();
    s.remove_ref("b:1").unwrap();
    std::fs::write(s.root().join("tmp/leftover"), "partial").unwrap();
    let removed = s.prune().unwrap();
    assert!(removed.contains(&Digest::of(b"layer-b")));
    assert!(removed.contains(&dropped.digest.parse().unwrap()));
    assert!(s.has_blob(&Digest::of(b"layer-a")));
    assert!(s.has_blob(&Digest::of(b"{}")), "shared config stays");
    assert!(s.has_blob(&kept.digest.parse().unwrap()));
    assert!(names(&s, "tmp").is_empty());
    assert!(s.prune().unwrap().is_empty());
}

#[test]
fn concurrent_writers_both_succeed() {
    let (_d, s) = store();
    let root = s.root().to_path_buf();
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let root = root.clone();
            std::thread::spawn(move || {
                let s = Store::open(&root).unwrap();
                let m = manifest(&s, &[b"same layer", format!("own {i}").as_bytes()]);
                s.set_ref(&format!("img:{i}"), m).unwrap();
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(s.refs().unwrap().len(), 8);
    assert!(names(&s, "tmp").is_empty());
}

#[test]
fn malformed_index_is_named() {
    let (_d, s) = store();
    std::fs::write(s.root().join("index.json"), "{oops").unwrap();
    let e = s.refs().unwrap_err().to_string();
    assert!(e.contains("index.json is malformed"), "{e}");
}

#[test]
fn blob_writer_commits_only_matching_content() {
    let (_d, s) = store();
    let mut w = s.blob_writer().unwrap();
    w.write_all(b"streamed ").unwrap();
    w.write_all(b"content").unwrap();
    let d = Digest::of(b"streamed content");
    assert_eq!(w.commit(&d).unwrap(), 16);
    assert_eq!(s.read_blob(&d).unwrap(), b"streamed content");
    let mut w = s.blob_writer().unwrap();
    w.write_all(b"other").unwrap();
    let e = w.commit(&Digest::of(b"expected")).unwrap_err();
    assert!(matches!(e, StoreError::DigestMismatch { .. }), "{e}");
    // Abandoned half way: nothing left.
    let mut w = s.blob_writer().unwrap();
    w.write_all(b"partial").unwrap();
    drop(w);
    assert!(names(&s, "tmp").is_empty());
    assert_eq!(names(&s, "blobs/sha256"), [d.hex().to_string()]);
}

#[test]
fn prune_waits_for_writers_in_flight() {
    let (_d, s) = store();
    let root = s.root().to_path_buf();
    // A pull in flight: blobs written, not yet named.
    let guard = s.keep_blobs().unwrap();
    let d = s.put_bytes(b"layer of a pull in flight").unwrap();
    let pruner = std::thread::spawn(move || Store::open(&root).unwrap().prune().unwrap());
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(!pruner.is_finished(), "prune must wait for the writer");
    assert!(s.has_blob(&d));
    drop(guard);
    let removed = pruner.join().unwrap();
    assert!(
        removed.contains(&d),
        "unnamed once the writer is gone, it is pruned"
    );
}
