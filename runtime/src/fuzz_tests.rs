//! Property tests: no parser of outside input (grants, timeouts, annotations, `config.json`)
//! panics, whatever it is given; each either parses or says why not.

use std::collections::HashMap;

use proptest::prelude::*;

use crate::net::Grant;
use crate::policy::{Bundle, Policy, apply_annotations, timeout_from_secs};

/// JSON values of any shape, a few levels deep.
fn json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        "\\PC{0,12}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            prop::collection::hash_map("[a-zA-Z]{1,10}", inner, 0..6)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A valid spec with one field replaced by anything.
fn mutated_spec() -> impl Strategy<Value = serde_json::Value> {
    let fields = prop_oneof![
        Just("/process/args"),
        Just("/process/cwd"),
        Just("/process/env"),
        Just("/process/rlimits"),
        Just("/process/user"),
        Just("/root"),
        Just("/root/path"),
        Just("/mounts"),
        Just("/linux/resources/memory/limit"),
        Just("/annotations"),
    ];
    (fields, json()).prop_map(|(field, v)| {
        let mut s = serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs", "readonly": false},
            "process": {"cwd": "/", "args": ["/a.wasm"], "env": ["A=1"],
                        "user": {"uid": 0, "gid": 0},
                        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}]},
            "mounts": [{"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"}],
            "linux": {"resources": {"memory": {"limit": 1048576}}},
            "annotations": {"wasmbox.timeout": "5"}
        });
        if let Some(slot) = s.pointer_mut(field) {
            *slot = v;
        }
        s
    })
}

proptest! {
    #[test]
    fn grants_never_panic(s in "\\PC{0,40}", t in "(udp:|tcp:)?[0-9a-f:.\\[\\]/*-]{0,40}") {
        let _ = s.parse::<Grant>();
        let _ = t.parse::<Grant>();
    }

    #[test]
    fn timeouts_never_panic(secs in any::<f64>()) {
        if let Ok(d) = timeout_from_secs(secs) {
            prop_assert!(d <= crate::policy::MAX_TIMEOUT);
        }
    }

    #[test]
    fn annotations_never_panic(
        key in prop_oneof![
            Just("wasmbox.timeout"), Just("wasmbox.net.connect"),
            Just("wasmbox.net.listen"), Just("wasmbox.net.dns")
        ],
        value in prop_oneof!["\\PC{0,30}", "[0-9.eE+-]{0,30}", any::<f64>().prop_map(|f| f.to_string())],
    ) {
        let ann: HashMap<String, String> = [(key.to_string(), value)].into_iter().collect();
        let _ = apply_annotations(&mut Policy::default(), &ann);
    }

    #[test]
    fn configs_never_panic(doc in prop_oneof![json(), mutated_spec()]) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), doc.to_string()).unwrap();
        let _ = Bundle::load(dir.path());
    }

    #[test]
    fn config_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), bytes).unwrap();
        let _ = Bundle::load(dir.path());
    }
}
