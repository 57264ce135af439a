//! Image references as docker and podman read them: `[REGISTRY/]REPO[:TAG][@DIGEST]`, with
//! Docker Hub short names (`hello` is `docker.io/library/hello:latest`).
//!
//! A short name (one whose first component is not a registry host) given to a command that
//! looks in the local store means `localhost/NAME` when the store has that, else Docker Hub's
//! name ([`Reference::local_candidates`]), as podman looks short names up in its local storage.
//! Images loaded from an OCI layout under a short ref name are stored as `localhost/NAME`, as
//! `podman load` names them ([`Reference::local`]).

use std::fmt;
use std::str::FromStr;

use crate::digest::Digest;

/// The registry a name without one refers to.
pub const DEFAULT_REGISTRY: &str = "docker.io";

/// A parsed, normalized image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// Registry host (and port).
    pub registry: String,
    /// Repository path within the registry.
    pub repository: String,
    /// Tag, when given (or `latest` when neither tag nor digest is).
    pub tag: Option<String>,
    /// Digest, when given.
    pub digest: Option<Digest>,
}

/// A reference that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("invalid image reference {value:?}: {reason}")]
pub struct BadReference {
    /// The text given.
    pub value: String,
    /// What is wrong.
    pub reason: String,
}

fn valid_component(c: &str) -> bool {
    // [a-z0-9]+ separated by one '.', one or two '_', or any number of '-'.
    let b = c.as_bytes();
    if b.is_empty() || !b[0].is_ascii_lowercase() && !b[0].is_ascii_digit() {
        return false;
    }
    let last = b[b.len() - 1];
    if !(last.is_ascii_lowercase() || last.is_ascii_digit()) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'a'..=b'z' | b'0'..=b'9' => i += 1,
            b'.' => {
                if !b[i + 1].is_ascii_alphanumeric() {
                    return false;
                }
                i += 1;
            }
            b'_' => {
                let n = if b.get(i + 1) == Some(&b'_') { 2 } else { 1 };
                i += n;
                if !b[i].is_ascii_alphanumeric() {
                    return false;
                }
            }
            b'-' => {
                while b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
    }
    true
}

fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// Whether `name` begins with a registry host (`example.com/...`, `host:5000/...`,
/// `localhost/...`), so that no default registry applies to it.
pub fn is_qualified(name: &str) -> bool {
    let repo = name.split('@').next().unwrap_or(name);
    repo.split_once('/').is_some_and(|(first, _)| {
        first.contains('.') || first.contains(':') || first == "localhost"
    })
}

impl Reference {
    /// `name` as podman names a local image: a short name is `localhost/NAME`.
    pub fn local(name: &str) -> Result<Reference, BadReference> {
        if is_qualified(name) {
            name.parse()
        } else {
            format!("localhost/{name}")
                .parse()
                .map_err(|e: BadReference| BadReference {
                    value: name.to_string(),
                    reason: e.reason,
                })
        }
    }

    /// The names a user's `name` may mean in the local store, in the order they are tried:
    /// a short name is `localhost/NAME`, then Docker Hub's; any other name is only itself.
    pub fn local_candidates(name: &str) -> Result<Vec<Reference>, BadReference> {
        let hub: Reference = name.parse()?;
        if is_qualified(name) {
            return Ok(vec![hub]);
        }
        Ok(vec![Reference::local(name)?, hub])
    }
}

impl FromStr for Reference {
    type Err = BadReference;

    fn from_str(s: &str) -> Result<Self, BadReference> {
        let bad = |reason: &str| BadReference {
            value: s.to_string(),
            reason: reason.to_string(),
        };
        if s.is_empty() {
            return Err(bad("empty"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (
                r,
                Some(d.parse::<Digest>().map_err(|e| bad(&e.to_string()))?),
            ),
            None => (s, None),
        };
        // A tag follows the last ':' that comes after the last '/'.
        let slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[slash..].rfind(':') {
            Some(i) => (&rest[..slash + i], Some(&rest[slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(t) = tag
            && !valid_tag(t)
        {
            return Err(bad(
                "tag must be 1-128 of [A-Za-z0-9_.-], not starting with . or -",
            ));
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, path))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), path.to_string())
            }
            _ => (DEFAULT_REGISTRY.to_string(), name.to_string()),
        };
        if registry.is_empty() || registry.chars().any(|c| c.is_whitespace() || c == '/') {
            return Err(bad("bad registry host"));
        }
        let repository = if registry == DEFAULT_REGISTRY && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        if repository.len() > 255 || !repository.split('/').all(valid_component) {
            return Err(bad(
                "repository must be lowercase letters, digits and separators (. _ __ -) between slashes",
            ));
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, None) => Some("latest".to_string()),
            (None, Some(_)) => None,
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(s: &str) -> String {
        s.parse::<Reference>().unwrap().to_string()
    }

    #[test]
    fn short_names_are_local_first() {
        let names = |s: &str| -> Vec<String> {
            Reference::local_candidates(s)
                .unwrap()
                .iter()
                .map(ToString::to_string)
                .collect()
        };
        assert_eq!(
            names("compat:v9"),
            ["localhost/compat:v9", "docker.io/library/compat:v9"]
        );
        assert_eq!(
            names("team/app"),
            ["localhost/team/app:latest", "docker.io/team/app:latest"]
        );
        assert_eq!(names("localhost/x:1"), ["localhost/x:1"]);
        assert_eq!(names("example.com/x"), ["example.com/x:latest"]);
        assert_eq!(names("host:5000/x:2"), ["host:5000/x:2"]);
        assert_eq!(
            Reference::local("v1").unwrap().to_string(),
            "localhost/v1:latest"
        );
        assert_eq!(
            Reference::local("quay.io/a/b:c").unwrap().to_string(),
            "quay.io/a/b:c"
        );
        let e = Reference::local("Bad:Ref:X").unwrap_err();
        assert_eq!(e.value, "Bad:Ref:X");
    }

    #[test]
    fn normalizes_like_docker() {
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(canon("hello"), "docker.io/library/hello:latest");
        assert_eq!(canon("hello:1.0"), "docker.io/library/hello:1.0");
        assert_eq!(canon("user/app"), "docker.io/user/app:latest");
        assert_eq!(canon("ghcr.io/o/app:v2"), "ghcr.io/o/app:v2");
        assert_eq!(canon("localhost/app"), "localhost/app:latest");
        assert_eq!(canon("127.0.0.1:5000/a/b/c:t"), "127.0.0.1:5000/a/b/c:t");
        assert_eq!(canon("registry:5000/app"), "registry:5000/app:latest");
        assert_eq!(
            canon(&format!("hello@{d}")),
            format!("docker.io/library/hello@{d}")
        );
        assert_eq!(
            canon(&format!("hello:x@{d}")),
            format!("docker.io/library/hello:x@{d}")
        );
        assert_eq!(canon("a__b/c.d-e---f"), "docker.io/a__b/c.d-e---f:latest");
    }

    #[test]
    fn rejects_bad_syntax() {
        for bad in [
            "",
            "UPPER",
            "app:",
            "app:-x",
            "app:a b",
            "app@sha256:xyz",
            "/app",
            "app/",
            "a..b",
            "a___b",
            "-a",
            "a-",
            "app:tag:more",
        ] {
            let e = bad.parse::<Reference>().unwrap_err();
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
    }

    proptest::proptest! {
        #[test]
        fn references_never_panic(
            s in "\\PC{0,80}",
            t in "[a-z0-9.:/@_-]{0,40}(@sha256:[0-9a-f]{0,70})?",
        ) {
            if let Ok(r) = s.parse::<Reference>() {
                // What parses prints as something that parses to the same reference.
                proptest::prop_assert_eq!(r.to_string().parse::<Reference>().ok(), Some(r));
            }
            let _ = t.parse::<Reference>();
        }
    }
}
