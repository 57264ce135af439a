//! `wasmbox build -f Containerfile`: the instructions of a Containerfile (Dockerfile) that mean
//! something for wasm. `FROM scratch` or a wasm image in the store; `COPY` and `ADD` of files of
//! the build context; `ENV`, `ENTRYPOINT`, `CMD`, `WORKDIR`, `LABEL`, `EXPOSE`. `RUN` is refused
//! (there is nothing to run it on), as is anything else. The result is a container image (compat
//! form): the base's layers and one more with the copied files.

use std::path::{Component, Path, PathBuf};

use serde_json::{Value, json};

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
    let (mut layers, mut diff_ids, base_config) = match &plan.base {
        None => (Vec::new(), Vec::new(), json!({})),
        Some(r) => {
            let img = crate::image::Image::open(store, r).map_err(|e| {
                BuildError::Input(format!("FROM {r}: {e} (pull or build it first)"))
            })?;
            let layers = img.manifest["layers"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let diff = img.config["rootfs"]["diff_ids"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            (layers, diff, img.config["config"].clone())
        }
    };
    let tar = copy_layer(context, &plan.copies)?;
    let layer_digest = store.put_bytes(&tar)?;
    layers.push(
        json!({"mediaType": "application/vnd.oci.image.layer.v1.tar",
        "digest": layer_digest.to_string(), "size": tar.len()}),
    );
    diff_ids.push(json!(Digest::of(&tar).to_string()));
    let mut config = base_config;
    let mut env: Vec<String> = config["Env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    for (k, v) in &plan.env {
        env.retain(|e| e.split_once('=').map(|(ek, _)| ek) != Some(k));
        env.push(format!("{k}={v}"));
    }
    config["Env"] = json!(env);
    if let Some(e) = &plan.entrypoint {
        config["Entrypoint"] = json!(e);
        // As Docker: a new entrypoint drops the base's command.
        if plan.cmd.is_none() {
            config["Cmd"] = Value::Null;
        }
    }
    if let Some(c) = &plan.cmd {
        config["Cmd"] = json!(c);
    }
    if let Some(w) = &plan.workdir {
        config["WorkingDir"] = json!(w);
    }
    for (k, v) in &plan.labels {
        config["Labels"][k] = json!(v);
    }
    for p in &plan.expose {
        config["ExposedPorts"][p] = json!({});
    }
    let (os, arch) = platform.unwrap_or(("wasi".into(), "wasm".into()));
    let config = json!({"architecture": arch, "os": os, "config": config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids}});
    let put_json = |v: &Value| -> Result<(Digest, u64), BuildError> {
        let b = serde_json::to_vec(v).expect("json serializes");
        Ok((store.put_bytes(&b)?, b.len() as u64))
    };
    let (cd, cs) = put_json(&config)?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": cd.to_string(), "size": cs},
        "layers": layers,
        "annotations": {"module.wasm.image/variant": "compat"},
    });
    let (md, ms) = put_json(&manifest)?;
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
