//! Limits on the shape of wasm wasmbox compiles: its size, how many functions it defines, how
//! deeply components nest. Read from the section headers alone (no function body is parsed), so
//! the check costs next to nothing and a hostile module is refused before the compiler sees it.

/// The largest wasm binary compiled (256 MiB).
pub const MAX_WASM_BYTES: usize = 256 << 20;
/// The most functions one program may define, over all its core modules.
pub const MAX_FUNCTIONS: u64 = 250_000;
/// The deepest nesting of components and modules.
pub const MAX_NESTING: usize = 16;

/// True when `bytes` begin with the wasm magic number: the one test of "is this wasm binary".
pub fn is_wasm(bytes: &[u8]) -> bool {
    bytes.starts_with(b"\0asm")
}

/// Checks `binary` against the limits; the error says which one and by how much.
pub fn check(binary: &[u8]) -> Result<(), String> {
    if binary.len() > MAX_WASM_BYTES {
        return Err(format!(
            "it is {} bytes, more than the {MAX_WASM_BYTES} wasmbox compiles",
            binary.len()
        ));
    }
    let mut functions = 0u64;
    walk(binary, 0, &mut functions)?;
    if functions > MAX_FUNCTIONS {
        return Err(format!(
            "it defines {functions} functions, more than the {MAX_FUNCTIONS} wasmbox compiles"
        ));
    }
    Ok(())
}

fn leb(b: &[u8], at: &mut usize) -> Result<u64, String> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*at).ok_or("truncated section header")?;
        *at += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err("malformed LEB128 number".into())
}

/// Adds the functions of the module or component in `b` (and everything nested in it).
fn walk(b: &[u8], depth: usize, functions: &mut u64) -> Result<(), String> {
    if depth > MAX_NESTING {
        return Err(format!(
            "components and modules nest more than {MAX_NESTING} deep"
        ));
    }
    if b.len() < 8 || !is_wasm(b) {
        // Not ours to judge: the compiler reports malformed wasm.
        return Ok(());
    }
    let component = wasmparser::Parser::is_component(b);
    let mut at = 8;
    while at < b.len() {
        let id = b[at];
        at += 1;
        let len = usize::try_from(leb(b, &mut at)?).map_err(|_| "section too large")?;
        let end = at.checked_add(len).filter(|e| *e <= b.len());
        let Some(end) = end else {
            return Ok(()); // truncated: the compiler says so
        };
        let body = &b[at..end];
        match (component, id) {
            // Core module: the function section's count.
            (false, 3) => {
                let mut p = 0;
                *functions = functions.saturating_add(leb(body, &mut p)?);
            }
            // Component: nested core modules (1) and components (4).
            (true, 1 | 4) => walk(body, depth + 1, functions)?,
            _ => {}
        }
        if *functions > MAX_FUNCTIONS {
            break;
        }
        at = end;
    }
    Ok(())
}

/// What a program is, by its header and its top-level exports, as [`crate::Runtime::prepare`]
/// decides it (a component exporting `wasi:cli/run` is a command even if it also exports
/// `wasi:http/incoming-handler@0.2`, as under `wasmtime run`; one exporting the WASI 0.3
/// `wasi:http/handler` is served, as every wasm32-wasip3 component also exports `wasi:cli/run`):
/// read from the export sections alone, so a hosting process can choose its allocator before it
/// has an engine, and `inspect` can say. `None` for what is not wasm (or wasm text).
pub fn guest_kind(bytes: &[u8]) -> Option<crate::GuestKind> {
    use crate::GuestKind;
    let text;
    let binary = if is_wasm(bytes) {
        bytes
    } else {
        text = wat::parse_bytes(bytes).ok()?.into_owned();
        &text[..]
    };
    if binary.len() < 8 || !is_wasm(binary) {
        return None;
    }
    if !wasmparser::Parser::is_component(binary) {
        return Some(if module_exports(binary).iter().any(|e| e == "_start") {
            GuestKind::CommandModule
        } else {
            GuestKind::ReactorModule
        });
    }
    let exports = top_level_exports(binary);
    let exports_any = |interface: &str, versions: &[&str]| {
        exports.iter().any(|e| {
            e.strip_prefix(interface)
                .and_then(|v| v.strip_prefix('@'))
                .is_some_and(|v| versions.iter().any(|w| v.starts_with(w)))
        })
    };
    // A WASI 0.3 service is served whatever else it exports: the wasm32-wasip3 toolchains give
    // every component a `wasi:cli/run@0.2` export, and `wasmtime serve` serves them.
    if exports_any("wasi:http/handler", &["0.3"]) {
        return Some(GuestKind::HttpComponent);
    }
    if !exports_any("wasi:cli/run", &["0.2", "0.3"])
        && exports_any("wasi:http/incoming-handler", &["0.2"])
    {
        return Some(GuestKind::HttpComponent);
    }
    Some(GuestKind::CommandComponent)
}

/// The names a core module exports.
fn module_exports(binary: &[u8]) -> Vec<String> {
    let mut names = Vec::new();
    for payload in wasmparser::Parser::new(0).parse_all(binary) {
        match payload {
            Ok(wasmparser::Payload::ExportSection(exports)) => {
                names.extend(exports.into_iter().flatten().map(|e| e.name.to_string()));
            }
            Ok(wasmparser::Payload::CodeSectionStart { .. }) | Err(_) => break,
            _ => {}
        }
    }
    names
}

/// The names a component exports at its top level (not those of components nested in it).
fn top_level_exports(binary: &[u8]) -> Vec<String> {
    let mut names = Vec::new();
    let mut depth = 0usize;
    for payload in wasmparser::Parser::new(0).parse_all(binary) {
        match payload {
            Ok(wasmparser::Payload::ModuleSection { .. })
            | Ok(wasmparser::Payload::ComponentSection { .. }) => depth += 1,
            Ok(wasmparser::Payload::End(_)) => depth = depth.saturating_sub(1),
            Ok(wasmparser::Payload::ComponentExportSection(exports)) if depth == 0 => {
                names.extend(exports.into_iter().flatten().map(|e| e.name.0.to_string()));
            }
            Err(_) => break,
            _ => {}
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_are_told_apart_by_their_header_and_exports() {
        use crate::GuestKind::*;
        let kind = |text: &str| guest_kind(&wat::parse_str(text).unwrap());
        assert_eq!(
            kind(r#"(module (func (export "_start")))"#),
            Some(CommandModule)
        );
        // A library: `_initialize` and named exports, run only by naming one.
        assert_eq!(
            kind(r#"(module (func (export "_initialize")) (func (export "process")))"#),
            Some(ReactorModule)
        );
        assert_eq!(
            kind(
                r#"(component (instance $i) (export "wasi:http/incoming-handler@0.2.3" (instance $i)))"#
            ),
            Some(HttpComponent)
        );
        assert_eq!(
            kind(r#"(component (instance $i) (export "wasi:cli/run@0.2.0" (instance $i)))"#),
            Some(CommandComponent)
        );
        // A command that also serves runs as a command, as `prepare` decides.
        assert_eq!(
            kind(
                r#"(component (instance $i) (export "wasi:cli/run@0.3.0" (instance $i))
                     (export "wasi:http/incoming-handler@0.2.0" (instance $i)))"#
            ),
            Some(CommandComponent)
        );
        // Only the top level counts: a nested component's export is not the program's.
        assert_eq!(
            kind(
                r#"(component
                     (component $inner (instance $i) (export "wasi:http/incoming-handler@0.2.3" (instance $i)))
                     (instance $j) (export "wasi:cli/run@0.2.0" (instance $j)))"#
            ),
            Some(CommandComponent)
        );
        assert_eq!(guest_kind(b"not wasm"), None);
        // Wasm text is read too.
        assert_eq!(
            guest_kind(
                br#"(component (instance $i) (export "wasi:http/incoming-handler@0.2.12" (instance $i)))"#
            ),
            Some(HttpComponent)
        );
        // A WASI 0.3 service (`wasi:http/handler`) is served too, beside the `wasi:cli/run`
        // its toolchain adds.
        assert_eq!(
            guest_kind(
                br#"(component (instance $i) (export "wasi:http/handler@0.3.0-rc-2026-01-06" (instance $i)))"#
            ),
            Some(HttpComponent)
        );
        assert_eq!(
            guest_kind(
                br#"(component (instance $i) (export "wasi:cli/run@0.2.0" (instance $i))
                     (export "wasi:http/handler@0.3.0" (instance $i)))"#
            ),
            Some(HttpComponent)
        );
    }

    #[test]
    fn counts_functions_in_modules_and_nested_components() {
        let m = wat::parse_str("(module (func) (func) (func (export \"_start\")))").unwrap();
        let mut n = 0;
        walk(&m, 0, &mut n).unwrap();
        assert_eq!(n, 3);
        let c = wat::parse_str(
            "(component (core module (func) (func)) (component (core module (func))))",
        )
        .unwrap();
        let mut n = 0;
        walk(&c, 0, &mut n).unwrap();
        assert_eq!(n, 3);
        assert!(check(&m).is_ok());
    }

    #[test]
    fn too_many_functions_are_refused() {
        let mut text = String::from("(module");
        for _ in 0..=MAX_FUNCTIONS {
            text.push_str(" (func)");
        }
        text.push(')');
        let m = wat::parse_str(&text).unwrap();
        let e = check(&m).unwrap_err();
        assert!(e.contains("250001 functions"), "{e}");
    }
}
