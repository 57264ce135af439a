//! Limits on the shape of wasm wasmbox compiles: its size, how many functions it defines, how
//! deeply components nest. Read from the section headers alone (no function body is parsed), so
//! the check costs next to nothing and a hostile module is refused before the compiler sees it.

/// The largest wasm binary compiled (256 MiB).
pub const MAX_WASM_BYTES: usize = 256 << 20;
/// The most functions one program may define, over all its core modules.
pub const MAX_FUNCTIONS: u64 = 250_000;
/// The deepest nesting of components and modules.
pub const MAX_NESTING: usize = 16;

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
    if b.len() < 8 || &b[..4] != b"\0asm" {
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

/// Whether `binary` (wasm, or wasm text) is a component exporting `wasi:http/incoming-handler`
/// at its top level (any 0.2 version): an HTTP server. Read from the export sections alone; a
/// hosting process uses it to choose its allocator before it has an engine.
pub fn exports_http_handler(bytes: &[u8]) -> bool {
    let text;
    let binary = if bytes.starts_with(b"\0asm") {
        bytes
    } else {
        match wat::parse_bytes(bytes) {
            Ok(b) => {
                text = b.into_owned();
                &text[..]
            }
            Err(_) => return false,
        }
    };
    if !wasmparser::Parser::is_component(binary) {
        return false;
    }
    let mut depth = 0usize;
    for payload in wasmparser::Parser::new(0).parse_all(binary) {
        match payload {
            Ok(wasmparser::Payload::ModuleSection { .. })
            | Ok(wasmparser::Payload::ComponentSection { .. }) => depth += 1,
            Ok(wasmparser::Payload::End(_)) => depth = depth.saturating_sub(1),
            Ok(wasmparser::Payload::ComponentExportSection(exports)) if depth == 0 => {
                let http = exports.into_iter().flatten().any(|e| {
                    e.name
                        .0
                        .strip_prefix("wasi:http/incoming-handler@")
                        .is_some_and(|v| v.starts_with("0.2"))
                });
                if http {
                    return true;
                }
            }
            Err(_) => return false,
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_handlers_are_told_from_commands_by_their_exports() {
        let server = wat::parse_str(
            r#"(component
                 (component $inner (core module) (instance $i) (export "wasi:cli/run@0.2.0" (instance $i)))
                 (instance $i)
                 (export "wasi:http/incoming-handler@0.2.3" (instance $i)))"#,
        )
        .unwrap();
        assert!(exports_http_handler(&server));
        // Only the top level counts: a nested component's export is not the program's.
        let nested = wat::parse_str(
            r#"(component
                 (component $inner (instance $i) (export "wasi:http/incoming-handler@0.2.3" (instance $i)))
                 (instance $j) (export "wasi:cli/run@0.2.0" (instance $j)))"#,
        )
        .unwrap();
        assert!(!exports_http_handler(&nested));
        assert!(!exports_http_handler(&wat::parse_str("(module)").unwrap()));
        assert!(!exports_http_handler(b"not wasm"));
        assert!(exports_http_handler(
            br#"(component (instance $i) (export "wasi:http/incoming-handler@0.2.12" (instance $i)))"#
        ));
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
