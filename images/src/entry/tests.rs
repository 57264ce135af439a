use std::collections::HashMap;

use serde_json::json;

use super::*;
use crate::store::StoreError;

const WASM: &[u8] = b"\0asm\x01\0\0\0";

/// Blobs held in memory.
#[derive(Default)]
struct Mem(HashMap<Digest, Vec<u8>>);

impl Mem {
    fn put(&mut self, bytes: Vec<u8>) -> Digest {
        let d = Digest::of(&bytes);
        self.0.insert(d.clone(), bytes);
        d
    }
}

impl Blobs for Mem {
    fn read_blob(&self, d: &Digest) -> Result<Vec<u8>, StoreError> {
        self.0
            .get(d)
            .cloned()
            .ok_or(StoreError::MissingBlob { digest: d.clone() })
    }
    fn open_blob(&self, d: &Digest) -> Result<Box<dyn Read + '_>, StoreError> {
        Ok(Box::new(std::io::Cursor::new(self.read_blob(d)?)))
    }
}

enum E<'a> {
    File(&'a str, &'a [u8]),
    Dir(&'a str),
    Link(&'a str, &'a str),
}

fn layer(entries: &[E<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o755);
        match e {
            E::File(p, data) => {
                h.set_size(data.len() as u64);
                h.set_entry_type(tar::EntryType::Regular);
                b.append_data(&mut h, p, *data).unwrap();
            }
            E::Dir(p) => {
                h.set_size(0);
                h.set_entry_type(tar::EntryType::Directory);
                b.append_data(&mut h, p, &[][..]).unwrap();
            }
            E::Link(p, target) => {
                h.set_size(0);
                h.set_entry_type(tar::EntryType::Symlink);
                b.append_link(&mut h, p, target).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

/// A compat image (no detection: found by the entrypoint's magic) of `layers`, bottom first.
fn compat(mem: &mut Mem, layers: &[Vec<u8>], config: serde_json::Value) -> Image {
    let layers: Vec<_> = layers
        .iter()
        .map(|l| {
            let d = mem.put(l.clone());
            json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d.to_string(), "size": l.len()})
        })
        .collect();
    Image {
        name: "test".into(),
        manifest_digest: Digest::of(b"m"),
        manifest: serde_json::from_value(json!({"schemaVersion": 2, "layers": layers,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": Digest::of(b"c").to_string(), "size": 1}}))
        .unwrap(),
        config: crate::oci::parse_config(json!({ "config": config }).to_string().as_bytes())
            .unwrap(),
        detection: None,
    }
}

fn entry(mem: &Mem, image: &Image) -> Option<(String, Vec<u8>)> {
    entry_wasm(mem, image, 1 << 20)
        .unwrap()
        .map(|e| (e.path, e.bytes))
}

#[test]
fn an_artifacts_wasm_layer_is_its_entry() {
    let mut mem = Mem::default();
    let d = mem.put(WASM.to_vec());
    let mut image = compat(&mut mem, &[], json!({}));
    image.detection = Some(crate::detect::Detection {
        form: Form::Artifact {
            index: 0,
            digest: d,
        },
        because: "test".into(),
    });
    assert_eq!(
        entry(&mem, &image),
        Some(("/app.wasm".into(), WASM.to_vec()))
    );
}

#[test]
fn an_absolute_link_resolves_inside_the_image_across_layers() {
    let mut mem = Mem::default();
    let lower = layer(&[
        E::Dir("usr/"),
        E::File("usr/local/bin/python3.12.wasm", WASM),
    ]);
    let upper = layer(&[E::Link("usr/bin/python3", "/usr/local/bin/python3.12.wasm")]);
    let image = compat(
        &mut mem,
        &[lower, upper],
        json!({"Entrypoint": ["/usr/bin/python3"]}),
    );
    assert_eq!(
        entry(&mem, &image),
        Some(("/usr/bin/python3".into(), WASM.to_vec()))
    );
}

#[test]
fn dotdot_through_an_absolute_link_stops_at_the_root() {
    let mut mem = Mem::default();
    let l = layer(&[
        E::File("app.wasm", WASM),
        E::Link("etc/alternatives/app", "/../../../app.wasm"),
        E::Link("bin/app", "../etc/alternatives/app"),
    ]);
    let image = compat(&mut mem, &[l], json!({"Entrypoint": ["/bin/app"]}));
    assert_eq!(entry(&mem, &image).unwrap().1, WASM);
}

#[test]
fn a_bare_name_is_looked_up_in_the_configs_path() {
    let mut mem = Mem::default();
    let l = layer(&[E::File("opt/bin/app", WASM)]);
    let config = json!({"Cmd": ["app"], "Env": ["PATH=/usr/bin:/opt/bin"]});
    let image = compat(&mut mem, &[l], config);
    assert_eq!(entry(&mem, &image).unwrap().0, "/opt/bin/app");
}

#[test]
fn whiteouts_and_opaque_directories_hide_what_is_beneath() {
    let mut mem = Mem::default();
    let lower = layer(&[E::File("app.wasm", WASM), E::File("opt/app.wasm", WASM)]);
    let upper = layer(&[
        E::File(".wh.app.wasm", b""),
        E::File("opt/.wh..wh..opq", b""),
    ]);
    for path in ["/app.wasm", "/opt/app.wasm"] {
        let image = compat(
            &mut mem,
            &[lower.clone(), upper.clone()],
            json!({"Entrypoint": [path]}),
        );
        assert_eq!(entry(&mem, &image), None, "{path}");
        // Without the upper layer, it is there.
        let image = compat(
            &mut mem,
            std::slice::from_ref(&lower),
            json!({"Entrypoint": [path]}),
        );
        assert!(entry(&mem, &image).is_some(), "{path}");
    }
    // A file put back above a whiteout shows.
    let top = layer(&[E::File("app.wasm", b"\0asm\x01\0\0\0top")]);
    let image = compat(
        &mut mem,
        &[lower, upper, top],
        json!({"Entrypoint": ["/app.wasm"]}),
    );
    assert_eq!(entry(&mem, &image).unwrap().1, b"\0asm\x01\0\0\0top");
}

#[test]
fn a_native_entrypoint_is_no_wasm_and_a_huge_one_is_refused() {
    let mut mem = Mem::default();
    let l = layer(&[E::File("bin/sh", b"\x7fELF....")]);
    let image = compat(&mut mem, &[l], json!({"Entrypoint": ["/bin/sh"]}));
    assert_eq!(entry(&mem, &image), None);
    let big = [WASM, &[0u8; 100][..]].concat();
    let l = layer(&[E::File("app.wasm", &big)]);
    let image = compat(&mut mem, &[l], json!({"Entrypoint": ["/app.wasm"]}));
    let err = entry_wasm(&mem, &image, 64).unwrap_err().to_string();
    assert!(err.contains("larger than 64 bytes"), "{err}");
    // A link loop finds nothing.
    let l = layer(&[E::Link("a", "/b"), E::Link("b", "/a")]);
    let image = compat(&mut mem, &[l], json!({"Entrypoint": ["/a"]}));
    assert_eq!(entry(&mem, &image), None);
}
