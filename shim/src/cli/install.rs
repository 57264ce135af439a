//! `wasmbox install containerd`: puts the shim on a node and adds wasmbox as a runtime of
//! containerd's CRI plugin, idempotently; `--uninstall` reverses both.
//!
//! containerd's `config.toml` is edited as a document (`toml_edit`), so comments, order and every
//! other entry survive, and a second run changes nothing. k3s renders its containerd config from
//! `config.toml.tmpl` at each start, so with `--k3s` that template gets a marked block instead.
//! Host files are reached beneath `--host-root` ([`HostRoot`]); line endings stay as found.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use toml_edit::{Array, DocumentMut, Item, Table, value};

use super::agent_unit;
use super::host_root::{HostFile, HostRoot, ReadError};

/// The shim binary's name.
const SHIM: &str = "containerd-shim-wasmbox-v1";
/// k3s's containerd configuration directory, relative to the host's root.
const K3S_DIR: &str = "var/lib/rancher/k3s/agent/etc/containerd";
/// What a config this command made from nothing holds (so `--uninstall` removes it again).
const CREATED: &str = "# Written by `wasmbox install containerd`: containerd's defaults fill in the rest.\nversion = 2\n";
/// The first line of a k3s template that keeps k3s's own configuration.
const K3S_BASE: &str = "{{ template \"base\" . }}";
/// The largest containerd configuration or k3s template read (1 MiB): containerd's own are a few
/// KB, and a larger file is refused rather than held in memory.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Install wasmbox on a node.
#[derive(Args, Debug)]
pub struct InstallCommand {
    #[command(subcommand)]
    target: Target,
}

#[derive(Subcommand, Debug)]
enum Target {
    /// Copy the containerd shim and add the wasmbox runtime to containerd's CRI configuration;
    /// prints the RuntimeClass to create.
    Containerd(ContainerdInstall),
}

#[derive(Args, Debug)]
struct ContainerdInstall {
    /// containerd's configuration (default `/etc/containerd/config.toml`; with `--k3s`, k3s's
    /// `config.toml.tmpl`).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The node runs k3s (or RKE2): edit the template k3s renders containerd's config from.
    #[arg(long)]
    k3s: bool,
    /// Remove the runtime entry and the shim instead.
    #[arg(long)]
    uninstall: bool,
    /// Say what would change, and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Where the shim binary goes (on containerd's PATH).
    #[arg(long, default_value = "/usr/local/bin")]
    bin_dir: PathBuf,
    /// The host's root, when this runs in a container with the host mounted (a DaemonSet).
    #[arg(long, default_value = "/")]
    host_root: PathBuf,
    /// The runtime's name in containerd: the RuntimeClass's handler.
    #[arg(long, default_value = "wasmbox")]
    name: String,
    /// Also install `wasmbox agent`, which compiles the wasm of every image containerd pulls
    /// before its first start: this binary beside the shim, and a systemd service where the host
    /// runs systemd.
    #[arg(long)]
    agent: bool,
}

impl InstallCommand {
    /// Runs the command; returns the exit status.
    pub fn execute(self) -> Result<i32> {
        match self.target {
            Target::Containerd(c) => c.execute(),
        }
    }
}

/// What one step did (or, with `--dry-run`, would do).
#[derive(Clone)]
enum Change {
    Unchanged,
    Wrote(Vec<u8>),
    Removed,
}

impl Change {
    /// Writing `bytes` to `file`, unless it holds them already.
    fn writing(file: &HostFile<'_>, bytes: Vec<u8>) -> Change {
        if file.holds(&bytes) {
            Change::Unchanged
        } else {
            Change::Wrote(bytes)
        }
    }

    /// Removing `file`, if anything is there.
    fn removing(file: &HostFile<'_>) -> Change {
        if file.exists() {
            Change::Removed
        } else {
            Change::Unchanged
        }
    }
}

/// A host file and what to do with it.
type Planned<'r> = (HostFile<'r>, Change);

/// A text file's content before and after an edit: `None` where there is no file.
#[derive(Debug, Default, PartialEq, Eq)]
struct Edit {
    before: Option<String>,
    after: Option<String>,
}

impl Edit {
    fn change(&self) -> Change {
        match &self.after {
            _ if self.after == self.before => Change::Unchanged,
            None => Change::Removed,
            Some(a) => Change::Wrote(a.clone().into_bytes()),
        }
    }
}

impl ContainerdInstall {
    fn execute(self) -> Result<i32> {
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            bail!(
                "--name {:?}: a runtime name is letters, digits, '-' and '_'",
                self.name
            );
        }
        let cwd = std::env::current_dir().context("finding the working directory")?;
        // Paths are the host's: relative ones from here, all of them resolved beneath
        // --host-root, links included.
        let root = HostRoot::open(&self.host_root)?;
        let config_path = match (&self.config, self.k3s) {
            (Some(c), _) => cwd.join(c),
            (None, true) => k3s_template(&root)?,
            (None, false) => PathBuf::from("/etc/containerd/config.toml"),
        };
        let config = root.file(&config_path)?;
        let shim = root.file(&cwd.join(&self.bin_dir).join(SHIM))?;
        let edit = if self.k3s {
            let v3 = config_path
                .file_name()
                .is_some_and(|n| n == "config-v3.toml.tmpl");
            self.k3s_template(&config, v3)?
        } else {
            self.config_toml(&config)?
        };
        let config_change = edit.change();
        let config_changed = !matches!(config_change, Change::Unchanged);
        let shim_change = if self.uninstall {
            Change::removing(&shim)
        } else {
            let source = std::env::current_exe()
                .context("finding this program")?
                .with_file_name(SHIM);
            let bytes = std::fs::read(&source).with_context(|| {
                format!(
                    "reading the shim {}: it is installed from beside the wasmbox binary",
                    source.display()
                )
            })?;
            Change::writing(&shim, bytes)
        };
        let verb = if self.dry_run { "would " } else { "" };
        let config_diff = self.dry_run.then(|| unified_diff(&config, &edit));
        let mut stderr = std::io::stderr().lock();
        // containerd never names a runtime whose shim is missing: the shim goes in first and
        // out last; the agent's binary goes in before its unit.
        let mut steps = vec![
            (&shim, shim_change, "shim", None),
            (
                &config,
                config_change,
                "containerd configuration",
                config_diff,
            ),
        ];
        let agent_files = if self.agent {
            Some(self.agent_files(&root, &cwd)?)
        } else {
            None
        };
        let mut unit_written = false;
        if let Some((binary, unit)) = &agent_files {
            steps.push((&binary.0, binary.1.clone(), "agent", None));
            match unit {
                Some((file, change)) => {
                    unit_written = matches!(change, Change::Wrote(_));
                    steps.push((file, change.clone(), "agent's systemd unit", None));
                }
                None => writeln!(
                    stderr,
                    "wasmbox: no systemd on this host (no {} beneath {}): run `{} agent` with its \
                     init system",
                    agent_unit::SYSTEMD_RUNNING,
                    self.host_root.display(),
                    cwd.join(&self.bin_dir).join("wasmbox").display()
                )?,
            }
        }
        if self.uninstall {
            steps.reverse();
        }
        for (file, change, what, diff) in steps {
            match &change {
                Change::Unchanged => writeln!(stderr, "wasmbox: {what} {file}: unchanged")?,
                Change::Wrote(bytes) => {
                    if !self.dry_run {
                        let mode = if what == "shim" || what == "agent" {
                            0o755
                        } else {
                            0o644
                        };
                        file.write_atomically(bytes, mode)?;
                    }
                    writeln!(stderr, "wasmbox: {verb}write {what} {file}")?;
                }
                Change::Removed => {
                    if !self.dry_run {
                        file.remove()?;
                    }
                    writeln!(stderr, "wasmbox: {verb}remove {what} {file}")?;
                }
            }
            if let Some(diff) = diff {
                stderr.write_all(diff.as_bytes())?;
            }
        }
        if config_changed && !self.dry_run {
            writeln!(
                stderr,
                "wasmbox: restart containerd (or k3s) to load the change, e.g. `systemctl restart {}`",
                if self.k3s { "k3s" } else { "containerd" }
            )?;
        }
        if unit_written && !self.dry_run {
            writeln!(
                stderr,
                "wasmbox: start the agent: systemctl daemon-reload && systemctl enable --now {}",
                agent_unit::UNIT
            )?;
        }
        if !self.uninstall {
            print!("{}", runtime_class(&self.name));
        }
        Ok(0)
    }

    /// The agent's binary (this program, beside the shim) and, where the host runs systemd, its
    /// unit: each file and what to do with it.
    fn agent_files<'r>(
        &self,
        root: &'r HostRoot,
        cwd: &Path,
    ) -> Result<(Planned<'r>, Option<Planned<'r>>)> {
        if !self.uninstall && !cfg!(feature = "agent") {
            bail!(
                "--agent: this wasmbox was built without the agent (cargo build --release -p wasmbox-shim --features agent)"
            );
        }
        let bin_dir = cwd.join(&self.bin_dir);
        let binary = root.file(&bin_dir.join("wasmbox"))?;
        let unit_file = root.file(Path::new(agent_unit::UNIT_PATH))?;
        let systemd = root.file(Path::new(agent_unit::SYSTEMD_RUNNING))?.exists();
        if self.uninstall {
            let (binary_change, unit_change) =
                (Change::removing(&binary), Change::removing(&unit_file));
            return Ok(((binary, binary_change), Some((unit_file, unit_change))));
        }
        let me = std::env::current_exe().context("finding this program")?;
        let bytes = std::fs::read(&me).with_context(|| format!("reading {}", me.display()))?;
        let binary_change = Change::writing(&binary, bytes);
        let unit = systemd.then(|| {
            let (address, after) = if self.k3s {
                (agent_unit::K3S_ADDRESS, "k3s")
            } else {
                (crate::agent::DEFAULT_ADDRESS, "containerd")
            };
            let text = agent_unit::unit(&bin_dir, address, after).into_bytes();
            let change = Change::writing(&unit_file, text);
            (unit_file, change)
        });
        Ok(((binary, binary_change), unit))
    }

    /// The edit of a `config.toml`: the runtime's table set (keeping any other keys an operator
    /// added to it), or removed.
    fn config_toml(&self, file: &HostFile) -> Result<Edit> {
        let Some(found) = read_config(file)? else {
            if self.uninstall {
                return Ok(Edit::default());
            }
            return Ok(Edit {
                before: None,
                after: Some(format!(
                    "{CREATED}\n{}",
                    self.table_text("io.containerd.grpc.v1.cri")
                )),
            });
        };
        // Edited with `\n` endings; each line gets its own back at the end.
        let text = found.replace("\r\n", "\n");
        let mut doc: DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| {
            let at = e.span().map(|s| {
                let before = &text[..s.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                format!(" at line {line}, column {col}")
            });
            anyhow!(
                "containerd configuration {file} is not valid TOML{}: {}; nothing was changed",
                at.unwrap_or_default(),
                e.message().trim()
            )
        })?;
        let cri = cri_plugin(&doc).with_context(|| format!("containerd configuration {file}"))?;
        let keys = ["plugins", cri, "containerd", "runtimes"];
        if self.uninstall {
            let removed = table_at(&mut doc, &keys, false)
                .is_some_and(|runtimes| runtimes.remove(&self.name).is_some());
            if !removed {
                return Ok(Edit {
                    before: Some(found.clone()),
                    after: Some(found),
                });
            }
            // A config this command made from nothing goes as it came.
            if doc.to_string().trim_end() == CREATED.trim_end() {
                return Ok(Edit {
                    before: Some(found),
                    after: None,
                });
            }
        } else {
            let runtimes = table_at(&mut doc, &keys, true).with_context(|| {
                format!(
                    "containerd configuration {file}: {} is not a table",
                    keys.join(".")
                )
            })?;
            let entry = runtimes
                .entry(&self.name)
                .or_insert_with(|| Item::Table(Table::new()));
            let Some(entry) = entry.as_table_mut() else {
                bail!(
                    "containerd configuration {file}: runtime {} is not a table",
                    self.name
                );
            };
            if entry.get("runtime_type").and_then(Item::as_str)
                != Some(crate::containerd::RUNTIME_ID)
            {
                entry.insert("runtime_type", value(crate::containerd::RUNTIME_ID));
            }
            // `wasmbox.*` joins whatever annotations an operator already passes through.
            for k in ["pod_annotations", "container_annotations"] {
                match entry.get_mut(k).and_then(Item::as_array_mut) {
                    Some(a) if a.iter().any(|v| v.as_str() == Some("wasmbox.*")) => {}
                    Some(a) => a.push("wasmbox.*"),
                    None => {
                        let mut a = Array::new();
                        a.push("wasmbox.*");
                        entry.insert(k, value(a));
                    }
                }
            }
        }
        let edited = doc.to_string();
        let after = if edited == text {
            found.clone()
        } else {
            with_endings_of(&found, &edited)
        };
        Ok(Edit {
            before: Some(found),
            after: Some(after),
        })
    }

    /// The edit of k3s's template: a marked block appended (made with k3s's base template if
    /// there is no template yet), or removed (with the template, when only the base is left). `v3`:
    /// the template is `config-v3.toml.tmpl`, rendered in containerd's config version 3.
    fn k3s_template(&self, file: &HostFile, v3: bool) -> Result<Edit> {
        let found = read_config(file)?;
        let text = found.as_deref().map(|t| t.replace("\r\n", "\n"));
        let begin = format!("# BEGIN {} (wasmbox install containerd)", self.name);
        let end = format!("# END {}", self.name);
        let without = text.as_deref().map(|t| remove_block(t, &begin, &end));
        let after = if self.uninstall {
            match (&text, without) {
                (Some(t), Some(w)) if *t != w => (w.trim() != K3S_BASE).then_some(w),
                _ => text.clone(),
            }
        } else {
            // k3s renders its base in the config version of the containerd it ships (3 from
            // `config-v3.toml.tmpl`), which the config.toml it rendered last says.
            let plugin = if v3 {
                "io.containerd.cri.v1.runtime"
            } else {
                "io.containerd.grpc.v1.cri"
            };
            let block = format!("{begin}\n{}{end}\n", self.table_text(plugin));
            let base = without.unwrap_or_else(|| format!("{K3S_BASE}\n"));
            let sep = if base.is_empty() || base.ends_with("\n\n") {
                ""
            } else if base.ends_with('\n') {
                "\n"
            } else {
                "\n\n"
            };
            Some(format!("{base}{sep}{block}"))
        };
        let after = match (&found, after) {
            (Some(f), Some(a)) if Some(&a) == text.as_ref() => Some(f.clone()),
            (Some(f), Some(a)) => Some(with_endings_of(f, &a)),
            (_, a) => a,
        };
        Ok(Edit {
            before: found,
            after,
        })
    }
}

/// The text of a containerd configuration or k3s template, or `None` when there is none. Anything
/// but a regular file of at most [`MAX_CONFIG_BYTES`] of UTF-8 is refused, naming the file and why.
fn read_config(file: &HostFile) -> Result<Option<String>> {
    let bytes = file.read(MAX_CONFIG_BYTES).map_err(|e| match e {
        ReadError::Io(e) => anyhow!(e).context(format!("reading {file}")),
        ReadError::NotRegular(kind) => anyhow!(
            "containerd configuration {file} is {kind}, not a regular file; nothing was changed"
        ),
        ReadError::TooLarge { size, limit } => anyhow!(
            "containerd configuration {file} is larger than {limit} bytes{}, the most wasmbox \
             reads (containerd's own are a few KB); nothing was changed",
            size.map(|s| format!(" ({s} bytes)")).unwrap_or_default()
        ),
    })?;
    bytes
        .map(|b| {
            String::from_utf8(b).map_err(|_| {
                anyhow!("containerd configuration {file} is not UTF-8 text; nothing was changed")
            })
        })
        .transpose()
}

/// `edited`, an edit of `text` with its `\r\n` line endings made `\n`, with `text`'s line endings
/// back: each line kept from `text` keeps its own ending, and each new line takes the ending most
/// of `text`'s lines have.
fn with_endings_of(text: &str, edited: &str) -> String {
    if !text.contains("\r\n") {
        return edited.to_string();
    }
    let crlf = 2 * text.matches("\r\n").count() >= text.matches('\n').count();
    let old: Vec<&str> = text.split_inclusive('\n').collect();
    let old_lf: Vec<String> = old
        .iter()
        .map(|l| match l.strip_suffix("\r\n") {
            Some(l) => format!("{l}\n"),
            None => l.to_string(),
        })
        .collect();
    let old_lf: Vec<&str> = old_lf.iter().map(String::as_str).collect();
    let new: Vec<&str> = edited.split_inclusive('\n').collect();
    let diff = similar::TextDiff::from_slices(&old_lf, &new);
    let mut out = String::with_capacity(edited.len() + new.len());
    for op in diff.ops() {
        let (tag, old_range, new_range) = op.as_tag_tuple();
        if tag == similar::DiffTag::Equal {
            old[old_range].iter().for_each(|l| out.push_str(l));
            continue;
        }
        for l in &new[new_range] {
            match l.strip_suffix('\n') {
                Some(body) if crlf && !body.ends_with('\r') => {
                    out.push_str(body);
                    out.push_str("\r\n");
                }
                _ => out.push_str(l),
            }
        }
    }
    out
}

/// `edit` as a unified diff of `file` (`/dev/null` for a side with no file); empty when nothing
/// changes.
fn unified_diff(file: &HostFile, edit: &Edit) -> String {
    if edit.before == edit.after {
        return String::new();
    }
    let path = file.path().display().to_string();
    let side = |t: &Option<String>| {
        if t.is_some() {
            path.as_str()
        } else {
            "/dev/null"
        }
    };
    similar::TextDiff::from_lines(
        edit.before.as_deref().unwrap_or(""),
        edit.after.as_deref().unwrap_or(""),
    )
    .unified_diff()
    .header(side(&edit.before), side(&edit.after))
    .to_string()
}

impl ContainerdInstall {
    /// The runtime's table as text, for a config whose CRI plugin is `plugin`.
    fn table_text(&self, plugin: &str) -> String {
        format!(
            "[plugins.\"{plugin}\".containerd.runtimes.{name}]\n  runtime_type = \"{ty}\"\n  \
             pod_annotations = [\"wasmbox.*\"]\n  container_annotations = [\"wasmbox.*\"]\n",
            name = self.name,
            ty = crate::containerd::RUNTIME_ID,
        )
    }
}

/// k3s's template, as a host path: `config-v3.toml.tmpl` when k3s runs containerd 2 (that
/// template exists, or the config.toml k3s rendered is version 3), else `config.toml.tmpl`.
fn k3s_template(root: &HostRoot) -> Result<PathBuf> {
    let dir = Path::new("/").join(K3S_DIR);
    let v3 = dir.join("config-v3.toml.tmpl");
    let rendered_v3 = root
        .file(&dir.join("config.toml"))?
        .read(MAX_CONFIG_BYTES)
        .ok()
        .flatten()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|t| t.parse::<DocumentMut>().ok())
        .is_some_and(|d| d.get("version").and_then(Item::as_integer) == Some(3));
    Ok(if rendered_v3 || root.file(&v3)?.exists() {
        v3
    } else {
        dir.join("config.toml.tmpl")
    })
}

/// The CRI plugin's key for the config's version: 3 (containerd 2), 2 (1.x), 1 or none.
fn cri_plugin(doc: &DocumentMut) -> Result<&'static str> {
    match doc.get("version").map(|v| v.as_integer()) {
        None => Ok("cri"),
        Some(Some(1)) => Ok("cri"),
        Some(Some(2)) => Ok("io.containerd.grpc.v1.cri"),
        Some(Some(3)) => Ok("io.containerd.cri.v1.runtime"),
        Some(v) => bail!("config version {v:?} is not one wasmbox knows (1, 2 or 3)"),
    }
}

/// The table at `keys`, made (implicit, so no empty headers appear) when `create`; `None` when
/// absent and not made, or when something on the way is not a table.
fn table_at<'a>(doc: &'a mut DocumentMut, keys: &[&str], create: bool) -> Option<&'a mut Table> {
    let mut t = doc.as_table_mut();
    for k in keys {
        if !t.contains_key(k) {
            if !create {
                return None;
            }
            let mut new = Table::new();
            new.set_implicit(true);
            t.insert(k, Item::Table(new));
        }
        t = t.get_mut(k)?.as_table_mut()?;
    }
    Some(t)
}

/// `text` without the lines from `begin` to `end` (and one blank line before them).
fn remove_block(text: &str, begin: &str, end: &str) -> String {
    let Some(start) = text.find(begin) else {
        return text.to_string();
    };
    let stop = text[start..]
        .find(end)
        .map(|i| start + i + end.len())
        .unwrap_or(text.len());
    let stop = if text[stop..].starts_with('\n') {
        stop + 1
    } else {
        stop
    };
    let head = &text[..start];
    let head = head
        .strip_suffix('\n')
        .map_or(head, |h| if h.ends_with('\n') { h } else { head });
    format!("{head}{}", &text[stop..])
}

/// The RuntimeClass for runtime `name`.
fn runtime_class(name: &str) -> String {
    format!(
        "apiVersion: node.k8s.io/v1\nkind: RuntimeClass\nmetadata:\n  name: {name}\nhandler: {name}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_comes_out_as_it_went_in() {
        let base = "{{ template \"base\" . }}\n\n[x]\n  y = 1\n";
        let with = format!("{base}\n# BEGIN w (x)\n[a]\n# END w\n");
        assert_eq!(remove_block(&with, "# BEGIN w (x)", "# END w"), base);
        assert_eq!(remove_block(base, "# BEGIN w (x)", "# END w"), base);
    }

    #[test]
    fn each_line_keeps_its_ending_and_new_lines_take_the_most_common() {
        let lf = |t: &str| t.replace("\r\n", "\n");
        // All CRLF: new lines are CRLF too.
        let text = "a = 1\r\n[t]\r\nb = 2\r\n";
        let edited = lf(text).replace("[t]\n", "[t]\nnew = 3\n");
        assert_eq!(
            with_endings_of(text, &edited),
            "a = 1\r\n[t]\r\nnew = 3\r\nb = 2\r\n"
        );
        // Mixed: kept lines keep theirs, and the most common ending (LF here) is the new lines'.
        let text = "a = 1\n[t]\r\nb = 2\nc = 4\n";
        let edited = format!("{}d = 5\n", lf(text));
        assert_eq!(
            with_endings_of(text, &edited),
            "a = 1\n[t]\r\nb = 2\nc = 4\nd = 5\n"
        );
        // A changed line takes the common ending; an edit back gives the very bytes back.
        let text = "x = [1]\r\ny = 2\r\n";
        let edited = lf(text).replace("[1]", "[1, 2]");
        let back = with_endings_of(text, &edited);
        assert_eq!(back, "x = [1, 2]\r\ny = 2\r\n");
        assert_eq!(with_endings_of(&back, &lf(text)), text);
        // No CR at all: the edit as it is.
        assert_eq!(with_endings_of("a\n", "a\nb\n"), "a\nb\n");
    }

    #[test]
    fn the_cri_plugin_follows_the_config_version() {
        let v = |t: &str| cri_plugin(&t.parse().unwrap()).map_err(|e| e.to_string());
        assert_eq!(v("version = 2").unwrap(), "io.containerd.grpc.v1.cri");
        assert_eq!(v("version = 3").unwrap(), "io.containerd.cri.v1.runtime");
        assert_eq!(v("root = \"/x\"").unwrap(), "cri");
        assert!(v("version = 9").unwrap_err().contains("version"));
        assert!(v("version = \"2\"").unwrap_err().contains("version"));
    }
}
