//! `wasmbox build -f Containerfile`: the instructions of a Containerfile (Dockerfile) that mean
//! something for wasm. `FROM scratch` or a wasm image in the store; `COPY` and `ADD` of files of
//! the build context; `ENV`, `ENTRYPOINT`, `CMD`, `WORKDIR`, `LABEL`, `EXPOSE`. `RUN` is refused
//! (there is nothing to run it on), as is anything else. The result is a container image (compat
//! form): the base's layers and one more with the copied files.

use std::path::{Component, Path, PathBuf};

use crate::build::BuildError;
use crate::digest::Digest;
use crate::store::{Descriptor, Store};

/// What a Containerfile asks for.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// `FROM`: `None` for `scratch`, else an image reference.
    pub base: Option<String>,
    /// `COPY`/`ADD`: sources (relative to the context) and destination.
    pub copies: Vec<(Vec<String>, String)>,
    /// `ENV`.
    pub env: Vec<(String, String)>,
    /// `ENTRYPOINT` (exec form).
    pub entrypoint: Option<Vec<String>>,
    /// `CMD` (exec form).
    pub cmd: Option<Vec<String>>,
    /// `WORKDIR`.
    pub workdir: Option<String>,
    /// `LABEL`.
    pub labels: Vec<(String, String)>,
    /// `EXPOSE`.
    pub expose: Vec<String>,
}

/// Parses a Containerfile; an error names the line and why.
pub fn parse(text: &str) -> Result<Plan, String> {
    let mut plan = Plan::default();
    let mut from = false;
    let mut logical = String::new();
    let mut start = 0;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if logical.is_empty() && (line.is_empty() || line.starts_with('#')) {
            continue;
        }
        if logical.is_empty() {
            start = i + 1;
        }
        if let Some(cont) = line.strip_suffix('\\') {
            logical.push_str(cont);
            logical.push(' ');
            continue;
        }
        logical.push_str(line);
        let instr = std::mem::take(&mut logical);
        let bad = |why: String| format!("line {start}: {why}");
        let (word, rest) = instr
            .split_once(char::is_whitespace)
            .map_or((instr.as_str(), ""), |(w, r)| (w, r.trim()));
        let word = word.to_ascii_uppercase();
        if !from && word != "FROM" && word != "ARG" {
            return Err(bad(format!("{word} before FROM")));
        }
        match word.as_str() {
            "FROM" => {
                if from {
                    return Err(bad("more than one FROM (stages are not supported)".into()));
                }
                from = true;
                let image = rest.split_whitespace().next().unwrap_or("");
                if image.is_empty() || rest.split_whitespace().nth(1).is_some() {
                    return Err(bad("FROM takes one image (no stage names)".into()));
                }
                plan.base = (image != "scratch").then(|| image.to_string());
            }
            "COPY" | "ADD" => {
                let words = exec_or_words(rest);
                if words.iter().any(|w| w.starts_with("--")) {
                    return Err(bad(format!("{word}: options are not supported")));
                }
                if words.len() < 2 {
                    return Err(bad(format!("{word} needs a source and a destination")));
                }
                if words.iter().any(|w| w.contains("://")) {
                    return Err(bad(format!("{word}: only files of the build context")));
                }
                let (dest, srcs) = words.split_last().expect("two or more");
                plan.copies.push((srcs.to_vec(), dest.clone()));
            }
            "ENV" => plan.env.extend(pairs(rest).map_err(bad)?),
            "LABEL" => plan.labels.extend(pairs(rest).map_err(bad)?),
            "ENTRYPOINT" => plan.entrypoint = Some(exec_form(rest).map_err(bad)?),
            "CMD" => plan.cmd = Some(exec_form(rest).map_err(bad)?),
            "WORKDIR" => plan.workdir = Some(rest.to_string()),
            "EXPOSE" => plan.expose.extend(rest.split_whitespace().map(|p| {
                if p.contains('/') {
                    p.to_string()
                } else {
                    format!("{p}/tcp")
                }
            })),
            "RUN" => {
                return Err(bad(
                    "RUN: there is nothing to run it on (a wasm image has no shell or operating \
                     system); build the wasm beforehand and COPY it"
                        .into(),
                ));
            }
            other => return Err(bad(format!("{other} is not supported for a wasm image"))),
        }
    }
    if !from {
        return Err("no FROM".into());
    }
    Ok(plan)
}

/// `["a", "b"]` as its strings, else the words.
fn exec_or_words(s: &str) -> Vec<String> {
    serde_json::from_str::<Vec<String>>(s)
        .unwrap_or_else(|_| s.split_whitespace().map(str::to_string).collect())
}

/// The exec form only: a wasm image has no shell to run the shell form.
fn exec_form(s: &str) -> Result<Vec<String>, String> {
    serde_json::from_str::<Vec<String>>(s).map_err(|_| {
        format!("{s:?}: use the exec form, [\"/app.wasm\", \"ARG\"] (there is no shell)")
    })
}

/// `K=V K2="V 2"`, or the old `K V` form.
fn pairs(s: &str) -> Result<Vec<(String, String)>, String> {
    if !s.contains('=') {
        let (k, v) = s
            .split_once(char::is_whitespace)
            .ok_or("expected KEY=VALUE")?;
        return Ok(vec![(k.to_string(), v.trim().to_string())]);
    }
    let mut out = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let (k, after) = rest.split_once('=').ok_or("expected KEY=VALUE")?;
        let (v, next) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"').ok_or("an unclosed quote")?;
            (q[..end].to_string(), &q[end + 1..])
        } else {
            let end = after.find(char::is_whitespace).unwrap_or(after.len());
            (after[..end].to_string(), &after[end..])
        };
        out.push((k.trim().to_string(), v));
        rest = next.trim_start();
    }
    Ok(out)
}

/// Builds `plan` with the files of `context`, names it `name`; returns the manifest digest.
/// `platform` is the config's `OS/ARCH` (default `wasi`/`wasm`).
pub fn build(
    store: &Store,
    name: &str,
    context: &Path,
    plan: &Plan,
    platform: Option<(String, String)>,
) -> Result<Digest, BuildError> {
    let _keep = store.keep_blobs()?;
    let (mut layers, mut diff_ids, mut config) = match &plan.base {
        None => (Vec::new(), Vec::new(), oci_spec::image::Config::default()),
        Some(r) => {
            let img = crate::image::Image::open(store, r).map_err(|e| {
                BuildError::Input(format!("FROM {r}: {e} (pull or build it first)"))
            })?;
            (
                img.manifest.layers().clone(),
                img.config.rootfs().diff_ids().clone(),
                img.config.config().clone().unwrap_or_default(),
            )
        }
    };
    let tar = copy_layer(context, &plan.copies)?;
    let layer_digest = store.put_bytes(&tar)?;
    layers.push(crate::oci::descriptor(
        "application/vnd.oci.image.layer.v1.tar",
        &layer_digest,
        tar.len() as u64,
    ));
    diff_ids.push(Digest::of(&tar).to_string());
    let mut env = config.env().clone().unwrap_or_default();
    for (k, v) in &plan.env {
        env.retain(|e| e.split_once('=').map(|(ek, _)| ek) != Some(k));
        env.push(format!("{k}={v}"));
    }
    config.set_env(Some(env));
    if let Some(e) = &plan.entrypoint {
        config.set_entrypoint(Some(e.clone()));
        // As Docker: a new entrypoint drops the base's command.
        if plan.cmd.is_none() {
            config.set_cmd(None);
        }
    }
    if let Some(c) = &plan.cmd {
        config.set_cmd(Some(c.clone()));
    }
    if let Some(w) = &plan.workdir {
        config.set_working_dir(Some(w.clone()));
    }
    let mut labels = config.labels().clone().unwrap_or_default();
    labels.extend(plan.labels.iter().cloned());
    if !labels.is_empty() {
        config.set_labels(Some(labels));
    }
    let mut ports = config.exposed_ports().clone().unwrap_or_default();
    for p in &plan.expose {
        if !ports.contains(p) {
            ports.push(p.clone());
        }
    }
    if !ports.is_empty() {
        config.set_exposed_ports(Some(ports));
    }
    let (os, arch) = platform.unwrap_or(("wasi".into(), "wasm".into()));
    let mut rootfs = oci_spec::image::RootFs::default();
    rootfs.set_typ("layers".into()).set_diff_ids(diff_ids);
    let mut image_config = oci_spec::image::ImageConfiguration::default();
    image_config
        .set_architecture(arch.as_str().into())
        .set_os(os.as_str().into())
        .set_config(Some(config))
        .set_rootfs(rootfs);
    let put = |bytes: Vec<u8>| -> Result<(Digest, u64), BuildError> {
        Ok((store.put_bytes(&bytes)?, bytes.len() as u64))
    };
    let (cd, cs) = put(crate::oci::to_bytes(&image_config))?;
    let config = crate::oci::descriptor("application/vnd.oci.image.config.v1+json", &cd, cs);
    let mut manifest = crate::oci::manifest(config, layers);
    manifest.set_annotations(Some(
        [(
            "module.wasm.image/variant".to_string(),
            "compat".to_string(),
        )]
        .into(),
    ));
    let (md, ms) = put(crate::oci::to_bytes(&manifest))?;
    store.set_ref(
        name,
        Descriptor {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest: md.to_string(),
            size: ms,
            annotations: Default::default(),
            extra: Default::default(),
        },
    )?;
    Ok(md)
}

/// A tar layer of the copies: each source a file or directory of `context` (never reaching out of
/// it, through `..` or a link), at its destination (a directory when it ends with `/` or takes
/// several sources).
fn copy_layer(context: &Path, copies: &[(Vec<String>, String)]) -> Result<Vec<u8>, BuildError> {
    let root = std::fs::canonicalize(context).map_err(|source| BuildError::Add {
        path: context.display().to_string(),
        source,
    })?;
    let mut b = tar::Builder::new(Vec::new());
    b.mode(tar::HeaderMode::Deterministic);
    b.follow_symlinks(false);
    for (srcs, dest) in copies {
        let into_dir = dest.ends_with('/') || srcs.len() > 1;
        for src in srcs {
            let rel = Path::new(src);
            if rel.components().any(|c| matches!(c, Component::ParentDir)) {
                return Err(BuildError::Input(format!(
                    "COPY {src}: outside the build context"
                )));
            }
            let host = root.join(rel.strip_prefix("/").unwrap_or(rel));
            let real = std::fs::canonicalize(&host).map_err(|source| BuildError::Add {
                path: host.display().to_string(),
                source,
            })?;
            if !real.starts_with(&root) {
                return Err(BuildError::Input(format!(
                    "COPY {src}: outside the build context"
                )));
            }
            let base = real.file_name().map(PathBuf::from).unwrap_or_default();
            let target = if into_dir {
                Path::new(dest.trim_start_matches('/')).join(&base)
            } else {
                PathBuf::from(dest.trim_start_matches('/'))
            };
            let err = |source| BuildError::Add {
                path: real.display().to_string(),
                source,
            };
            if real.is_dir() {
                b.append_dir_all(&target, &real).map_err(err)?;
            } else {
                b.append_path_with_name(&real, &target).map_err(err)?;
            }
        }
    }
    Ok(b.into_inner().expect("writing to memory"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_primers_containerfile_and_its_relatives_parse() {
        let p = parse(
            "# a comment\nFROM scratch\nCOPY app.wasm /app.wasm\nENV A=1 B=\"two words\"\n\
             WORKDIR /data\nLABEL org.example=x\nEXPOSE 8080\nENTRYPOINT [\"/app.wasm\"]\n\
             CMD [\"serve\", \\\n  \"--fast\"]\n",
        )
        .unwrap();
        assert_eq!(p.base, None);
        assert_eq!(
            p.copies,
            [(vec!["app.wasm".to_string()], "/app.wasm".to_string())]
        );
        assert_eq!(
            p.env,
            [("A".into(), "1".into()), ("B".into(), "two words".into())]
        );
        assert_eq!(p.entrypoint.unwrap(), ["/app.wasm"]);
        assert_eq!(p.cmd.unwrap(), ["serve", "--fast"]);
        assert_eq!(p.workdir.as_deref(), Some("/data"));
        assert_eq!(p.expose, ["8080/tcp"]);
        assert_eq!(
            parse("FROM localhost/base:1\n").unwrap().base.as_deref(),
            Some("localhost/base:1")
        );
    }

    #[test]
    fn what_cannot_mean_anything_for_wasm_is_refused_naming_the_line() {
        let e = parse("FROM scratch\nRUN make\n").unwrap_err();
        assert!(
            e.starts_with("line 2: RUN: there is nothing to run it on"),
            "{e}"
        );
        let e = parse("FROM scratch\nENTRYPOINT /app.wasm\n").unwrap_err();
        assert!(e.contains("exec form"), "{e}");
        assert!(parse("COPY a b\n").unwrap_err().contains("before FROM"));
        assert!(parse("FROM a AS b\n").is_err());
        assert!(parse("FROM scratch\nFROM scratch\n").is_err());
        assert!(
            parse("FROM scratch\nHEALTHCHECK NONE\n")
                .unwrap_err()
                .contains("not supported")
        );
        assert!(
            parse("FROM scratch\nADD https://x/y /y\n")
                .unwrap_err()
                .contains("build context")
        );
    }

    #[test]
    fn copies_stay_inside_the_context() {
        let ctx = tempfile::tempdir().unwrap();
        std::fs::write(ctx.path().join("a.wasm"), b"\0asm\x01\0\0\0").unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"s").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), ctx.path().join("link")).unwrap();
        let copy = |src: &str| copy_layer(ctx.path(), &[(vec![src.to_string()], "/x".into())]);
        assert!(copy("a.wasm").is_ok());
        assert!(copy("../secret").is_err());
        assert!(matches!(copy("link"), Err(BuildError::Input(_))));
    }
}
