//! wasmbox's own directories (compiled-code cache and its key, image store, state) that no grant may
//! reach: a grant that is one of them, lies inside one, or lies above one is refused. Paths are
//! compared by device and inode along their ancestry, so another spelling of the same directory (a
//! bind mount, `..`, a link higher up) is caught too.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A directory or file of wasmbox's own that guests must never reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtectedPath {
    /// What it is (`compiled-code cache`, `image store`, ...), for the error message.
    pub what: String,
    /// Where it is.
    pub path: PathBuf,
}

impl ProtectedPath {
    /// A protected path.
    pub fn new(what: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        Self {
            what: what.into(),
            path: path.into(),
        }
    }
}

type Id = (u64, u64);

fn id(p: &Path) -> Option<Id> {
    std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()))
}

/// The identities of `p` (or, when it does not exist yet, of its nearest existing ancestor) and of
/// every directory above it, up to `/`.
fn ancestry(p: &Path) -> Vec<Id> {
    let mut cur = Some(p);
    while let Some(c) = cur {
        if let Ok(real) = c.canonicalize() {
            return real.ancestors().filter_map(id).collect();
        }
        cur = c.parent();
    }
    Vec::new()
}

/// Checks that a grant of host directory `host` (a path, or `/proc/self/fd/N` of the opened
/// directory) reaches none of `protected`; the error says which one it reaches and how.
pub fn check_grant(host: &Path, protected: &[ProtectedPath]) -> Result<(), String> {
    let Some(grant) = id(host) else {
        return Ok(());
    };
    let grant_ancestry = ancestry(host);
    for p in protected {
        let above = ancestry(&p.path);
        if above.contains(&grant) {
            let how = if id(&p.path) == Some(grant) {
                "is"
            } else {
                "contains"
            };
            return Err(format!(
                "it {how} wasmbox's {} {}; grant a directory that does not reach it",
                p.what,
                p.path.display()
            ));
        }
        if let Some(pid) = id(&p.path)
            && grant_ancestry.contains(&pid)
        {
            return Err(format!(
                "it is inside wasmbox's {} {}",
                p.what,
                p.path.display()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_at_inside_or_above_a_protected_dir_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let cache = t.path().join("home/.cache/wasmbox");
        std::fs::create_dir_all(cache.join("sub")).unwrap();
        std::fs::create_dir_all(t.path().join("home/data")).unwrap();
        let prot = [ProtectedPath::new("compiled-code cache", &cache)];
        let e = check_grant(&t.path().join("home"), &prot).unwrap_err();
        assert!(e.contains("contains wasmbox's compiled-code cache"), "{e}");
        let e = check_grant(&cache, &prot).unwrap_err();
        assert!(e.contains(" is wasmbox's"), "{e}");
        let e = check_grant(&cache.join("sub"), &prot).unwrap_err();
        assert!(e.contains("is inside"), "{e}");
        // Another spelling of the same directory.
        std::os::unix::fs::symlink(t.path().join("home"), t.path().join("alias")).unwrap();
        assert!(check_grant(&t.path().join("alias/.cache"), &prot).is_err());
        assert!(check_grant(&t.path().join("home/data"), &prot).is_ok());
        // A protected path that does not exist yet is guarded through its nearest ancestor.
        let later = [ProtectedPath::new(
            "image store",
            t.path().join("home/.local/x"),
        )];
        assert!(check_grant(&t.path().join("home"), &later).is_err());
        assert!(check_grant(&t.path().join("home/data"), &later).is_ok());
    }
}
