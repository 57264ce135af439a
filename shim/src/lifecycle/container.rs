//! A container's bundle: its spec, its rootfs mounts, and whether its entrypoint is wasm (a guest
//! in this process) or native (run by runc).

use std::io::Read;
use std::path::Path;

use oci_spec::runtime::Spec;
use wasmbox_runtime::{Bundle, Prepared, Runtime};

use super::error::{Result, ShimError, chain};
use super::events::RootfsMount;

/// Mounts the rootfs containerd prepared (snapshot mounts) at `BUNDLE/rootfs`. Returns whether
/// anything was mounted.
pub fn mount_rootfs(bundle: &Path, mounts: &[RootfsMount]) -> Result<bool> {
    if mounts.is_empty() {
        return Ok(false);
    }
    let target = bundle.join("rootfs");
    std::fs::create_dir_all(&target)
        .map_err(|e| ShimError::Internal(format!("create {}: {e}", target.display())))?;
    for (i, m) in mounts.iter().enumerate() {
        let fs = (!m.kind.is_empty()).then_some(m.kind.as_str());
        let src = (!m.source.is_empty()).then_some(m.source.as_str());
        if let Err(e) = containerd_shim::mount::mount_rootfs(fs, src, &m.options, &target) {
            if i > 0 {
                unmount_rootfs(bundle);
            }
            return Err(ShimError::Internal(format!(
                "mount rootfs {} ({}) at {}: {e}",
                m.source,
                m.kind,
                target.display()
            )));
        }
    }
    Ok(true)
}

/// Unmounts `BUNDLE/rootfs` and everything below it.
pub fn unmount_rootfs(bundle: &Path) {
    let target = bundle.join("rootfs");
    if let Err(e) = containerd_shim::mount::umount_recursive(target.to_str(), libc::MNT_DETACH) {
        tracing::warn!(target = %target.display(), error = %e, "unmounting the rootfs failed");
    }
}

/// What a bundle's entrypoint is.
pub enum Entry {
    /// Wasm: the bundle with its derived policy (entry adjusted to the file found).
    Wasm(Box<Bundle>),
    /// Anything else: runc runs it.
    Native,
}

/// Whether the spec's annotations say the workload is wasm, by the same rule as image
/// detection.
fn annotated_wasm(spec: &Spec) -> bool {
    let arg0 = spec
        .process()
        .as_ref()
        .and_then(|p| p.args().as_ref())
        .and_then(|a| a.first())
        .map(String::as_str);
    spec.annotations().as_ref().is_some_and(|a| {
        wasmbox_images::detect::VARIANT_KEYS
            .iter()
            .filter_map(|k| a.get(*k))
            .any(|v| wasmbox_images::detect::variant_means_wasm(v, arg0))
    })
}

/// Reads `BUNDLE/config.json`.
pub fn read_spec(bundle: &Path) -> Result<Spec> {
    let path = bundle.join("config.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| ShimError::InvalidArgument(format!("read {}: {e}", path.display())))?;
    wasmbox_runtime::policy::parse_spec(&text)
        .map_err(|e| ShimError::InvalidArgument(format!("{}: malformed: {e}", path.display())))
}

/// Decides whether the bundle's entrypoint is wasm, and if so derives its policy. Fails with a
/// clear message when the entrypoint is missing, is precompiled code, or is annotated as wasm
/// without being wasm.
pub fn classify(bundle_dir: &Path, spec: &Spec) -> Result<Entry> {
    let invalid = |m: String| ShimError::InvalidArgument(m);
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| invalid("config.json: no root".into()))?;
    let rootfs = if root.path().is_absolute() {
        root.path().clone()
    } else {
        bundle_dir.join(root.path())
    };
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| invalid("config.json: no process".into()))?;
    let arg0 = process
        .args()
        .as_ref()
        .and_then(|a| a.first())
        .ok_or_else(|| invalid("config.json: process.args is empty".into()))?
        .clone();
    // Ambient authority, named: opening the container's rootfs.
    let dir = cap_std::fs::Dir::open_ambient_dir(&rootfs, cap_std::ambient_authority())
        .map_err(|e| invalid(format!("rootfs {}: {e}", rootfs.display())))?;
    let Some(entry) = wasmbox_runtime::policy::locate_entry(&dir, process) else {
        return Err(invalid(format!(
            "entrypoint {arg0:?} does not exist in the container's rootfs"
        )));
    };
    let mut head = Vec::with_capacity(64);
    let readable = dir
        .open(&entry)
        .and_then(|f| f.into_std().take(64).read_to_end(&mut head))
        .is_ok();
    let text = entry.extension().is_some_and(|e| e == "wat");
    let wasm = readable && (head.starts_with(b"\0asm") || text);
    if readable && wasmbox_runtime::is_precompiled(&head_full(&dir, &entry, &head)) {
        return Err(invalid(format!(
            "entrypoint /{} is precompiled native code (.cwasm); wasmbox only runs precompiled \
             code it compiled itself",
            entry.display()
        )));
    }
    if !wasm {
        if annotated_wasm(spec) {
            return Err(invalid(format!(
                "entrypoint /{} is annotated as wasm but is not a wasm binary",
                entry.display()
            )));
        }
        return Ok(Entry::Native);
    }
    // `from_spec` finds the entry by the same rule (`policy::locate_entry`).
    let b = Bundle::from_spec(bundle_dir, spec.clone()).map_err(|e| invalid(chain(&e)))?;
    Ok(Entry::Wasm(Box::new(b)))
}

/// The bytes needed to recognise precompiled code: an ELF header means reading the whole file.
fn head_full(dir: &cap_std::fs::Dir, entry: &Path, head: &[u8]) -> Vec<u8> {
    if head.starts_with(b"\x7fELF") {
        dir.read(entry).unwrap_or_default()
    } else {
        head.to_vec()
    }
}

/// Loads and links a wasm bundle's entry: the guest is ready to start.
pub fn prepare(
    runtime: &Runtime,
    bundle: &Bundle,
    deadline: Option<std::time::Instant>,
) -> Result<Prepared> {
    let bytes = bundle
        .read_entry()
        .map_err(|e| ShimError::InvalidArgument(chain(&e)))?;
    let name = format!("/{}", bundle.entry.display());
    let (program, _) = runtime
        .load_by(&name, &bytes, deadline)
        .map_err(|e| ShimError::InvalidArgument(chain(&e)))?;
    runtime
        .prepare(&program, bundle.policy.clone())
        .map_err(|e| ShimError::InvalidArgument(chain(&e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle(config: &str, files: &[(&str, &[u8])]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("rootfs")).unwrap();
        for (p, b) in files {
            let p = d.path().join("rootfs").join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, b).unwrap();
        }
        std::fs::write(d.path().join("config.json"), config).unwrap();
        d
    }

    fn spec_with(args: &str, extra: &str) -> String {
        format!(
            r#"{{"ociVersion":"1.0.2","root":{{"path":"rootfs"}},"process":{{"cwd":"/","args":{args},"env":["PATH=/bin"],"user":{{"uid":0,"gid":0}}}}{extra}}}"#
        )
    }

    fn err(r: Result<Entry>) -> String {
        match r {
            Err(e) => e.to_string(),
            Ok(_) => panic!("expected an error"),
        }
    }

    #[test]
    fn a_malformed_config_is_an_invalid_argument_naming_the_file() {
        let d = bundle("{not json", &[]);
        let e = read_spec(d.path()).unwrap_err();
        assert!(matches!(e, ShimError::InvalidArgument(_)));
        assert!(e.to_string().contains("config.json: malformed"), "{e}");
        let d = tempfile::tempdir().unwrap();
        assert!(
            read_spec(d.path())
                .unwrap_err()
                .to_string()
                .contains("config.json")
        );
    }

    #[test]
    fn entries_are_classified_by_their_bytes() {
        let wasm = wat::parse_str("(module (func (export \"_start\")))").unwrap();
        let d = bundle(
            &spec_with(r#"["app.wasm"]"#, ""),
            &[("app.wasm", &wasm), ("bin/tool", b"\x7fELF\x02\x01\x01\0")],
        );
        let spec = read_spec(d.path()).unwrap();
        assert!(matches!(classify(d.path(), &spec).unwrap(), Entry::Wasm(_)));
        // A bare name is looked up in PATH, as runc does; a native binary goes to runc.
        std::fs::write(d.path().join("config.json"), spec_with(r#"["tool"]"#, "")).unwrap();
        let spec = read_spec(d.path()).unwrap();
        assert!(matches!(classify(d.path(), &spec).unwrap(), Entry::Native));
        // Annotated as wasm but not wasm.
        let ann = r#","annotations":{"module.wasm.image/variant":"compat"}"#;
        std::fs::write(
            d.path().join("config.json"),
            spec_with(r#"["/bin/tool"]"#, ann),
        )
        .unwrap();
        let spec = read_spec(d.path()).unwrap();
        assert!(err(classify(d.path(), &spec)).contains("not a wasm binary"));
        // Missing.
        std::fs::write(
            d.path().join("config.json"),
            spec_with(r#"["/nope.wasm"]"#, ""),
        )
        .unwrap();
        let spec = read_spec(d.path()).unwrap();
        assert!(err(classify(d.path(), &spec)).contains("does not exist"));
        // No args.
        std::fs::write(d.path().join("config.json"), spec_with("[]", "")).unwrap();
        let spec = read_spec(d.path()).unwrap();
        assert!(err(classify(d.path(), &spec)).contains("process.args is empty"));
    }

    #[test]
    fn an_entry_symlinked_out_of_the_rootfs_is_not_followed() {
        let wasm = wat::parse_str("(module (func (export \"_start\")))").unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("real.wasm"), &wasm).unwrap();
        let d = bundle(&spec_with(r#"["/app.wasm"]"#, ""), &[]);
        std::os::unix::fs::symlink(
            outside.path().join("real.wasm"),
            d.path().join("rootfs/app.wasm"),
        )
        .unwrap();
        let spec = read_spec(d.path()).unwrap();
        // Not readable through the rootfs: not wasm, so it would be runc's (which confines it).
        assert!(matches!(classify(d.path(), &spec).unwrap(), Entry::Native));
    }
}
