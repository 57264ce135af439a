//! The copy-paste recipes of `docs/oci.md`, as the tests run them. A recipe is the fenced block
//! right after a line `<!-- recipe: NAME -->`; the path `/usr/local/bin/wasmbox` in it becomes
//! the binary under test. A test that runs an engine the documented way takes its configuration
//! from here, so the page cannot drift from what is tested.

use std::path::Path;

/// Where the recipes' `wasmbox` is installed.
const INSTALLED: &str = "/usr/local/bin/wasmbox";

/// The recipe `name` of `docs/oci.md`, with the binary under test in it.
pub fn recipe(name: &str) -> String {
    let page = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/oci.md");
    let text = std::fs::read_to_string(&page).expect("docs/oci.md");
    let block = block_after(&text, &format!("<!-- recipe: {name} -->")).unwrap_or_else(|| {
        panic!("docs/oci.md has no recipe {name:?} (a fenced block after its marker)")
    });
    block.replace(
        INSTALLED,
        &crate::common::wasmbox_bin().display().to_string(),
    )
}

/// The body of the fenced block that follows the line `marker`.
fn block_after(text: &str, marker: &str) -> Option<String> {
    let mut lines = text.lines().skip_while(|l| l.trim() != marker).skip(1);
    let fence = lines.find(|l| !l.trim().is_empty())?.trim();
    if !fence.starts_with("```") {
        return None;
    }
    let mut body = String::new();
    for l in lines {
        if l.trim() == "```" {
            return Some(body);
        }
        body.push_str(l);
        body.push('\n');
    }
    None
}

#[test]
fn a_recipe_is_the_block_after_its_marker_and_nothing_else() {
    let text = "x\n<!-- recipe: a -->\n\n```toml\nk = 1\nj = 2\n```\n```\nnot\n```\n";
    assert_eq!(
        block_after(text, "<!-- recipe: a -->").as_deref(),
        Some("k = 1\nj = 2\n")
    );
    assert_eq!(block_after(text, "<!-- recipe: b -->"), None);
    assert_eq!(
        block_after(
            "<!-- recipe: a -->\ntext\n```\nk\n```\n",
            "<!-- recipe: a -->"
        ),
        None
    );
    assert_eq!(
        block_after("<!-- recipe: a -->\n```\nunclosed\n", "<!-- recipe: a -->"),
        None
    );
}
