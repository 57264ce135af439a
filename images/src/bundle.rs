//! The OCI runtime spec (`config.json`) of the bundle an image turns into, as a type: the
//! process the image config names, its rootfs, and the image's name. Nothing else: the runtime
//! adds what a container needs.

use oci_spec::runtime::{Process, Root, Spec, User};

/// The annotation that names the image a bundle was made from.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// The spec of a bundle running `args` with `env` in `cwd`, its rootfs at `rootfs`
/// (`readonly` for an artifact's), made from image `name`.
pub(crate) fn spec(args: &[String], env: &[String], cwd: &str, readonly: bool, name: &str) -> Spec {
    // `Process::default()` and `Spec::default()` are a shell's in a Linux container: only what
    // the image says is kept.
    let mut process = Process::default();
    process
        .set_terminal(None)
        .set_console_size(None)
        .set_user(User::default())
        .set_args(Some(args.to_vec()))
        .set_env(Some(env.to_vec()))
        .set_cwd(cwd.into())
        .set_no_new_privileges(None)
        .set_apparmor_profile(None)
        .set_selinux_label(None)
        .set_scheduler(None)
        .set_capabilities(None)
        .set_rlimits(None)
        .set_io_priority(None)
        .set_exec_cpu_affinity(None);
    let mut root = Root::default();
    root.set_path("rootfs".into()).set_readonly(Some(readonly));
    let mut spec = Spec::default();
    spec.set_version("1.0.2".into())
        .set_process(Some(process))
        .set_root(Some(root))
        .set_hostname(None)
        .set_mounts(None)
        .set_linux(None)
        .set_annotations(Some([(REF_NAME.to_string(), name.to_string())].into()));
    spec
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bundle_spec_holds_what_the_image_says_and_nothing_else() {
        let args = ["/app.wasm".to_string(), "x".into()];
        let spec = spec(&args, &["A=1".into()], "/bin", true, "r/a:1");
        assert_eq!(
            serde_json::to_value(&spec).unwrap(),
            serde_json::json!({
                "ociVersion": "1.0.2",
                "root": {"path": "rootfs", "readonly": true},
                "process": {"cwd": "/bin", "args": ["/app.wasm", "x"], "env": ["A=1"],
                    "user": {"uid": 0, "gid": 0}},
                "annotations": {REF_NAME: "r/a:1"},
            })
        );
    }
}
