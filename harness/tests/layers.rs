//! The harness's modules import only from their own layer or the ones below it, as
//! docs/architecture.md ("The harness's modules, as layers") draws them, and never in a
//! circle. Read from the sources as text: every `crate::NAME` outside a comment (and
//! outside the `#[cfg(test)] mod tests` of a file) is an import of module NAME.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

const SRC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src");
const DOC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/architecture.md");

/// Module name → layer, from the doc's table (`main.rs` → main, `scenarios/` → scenarios).
fn layers() -> BTreeMap<String, u32> {
    let doc = std::fs::read_to_string(DOC).unwrap();
    let table = doc
        .split("## The harness's modules, as layers")
        .nth(1)
        .expect("the layers section");
    let mut out = BTreeMap::new();
    for row in table.lines().take_while(|l| !l.starts_with("## ")) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let Some(layer) = cells.get(1).and_then(|c| c.parse::<u32>().ok()) else {
            continue;
        };
        for name in cells[2].split('`').skip(1).step_by(2) {
            if let Some(m) = name.strip_suffix(".rs").or(name.strip_suffix('/')) {
                out.insert(m.to_string(), layer);
            }
        }
    }
    out
}

/// Module → the modules it names as `crate::X`.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    fn walk(dir: &Path, module: Option<&str>, out: &mut BTreeMap<String, BTreeSet<String>>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let path = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if path.is_dir() {
                // bin/ holds separate binaries, not modules of the crate.
                if name != "bin" {
                    walk(&path, Some(module.unwrap_or(&name)), out);
                }
                continue;
            }
            let Some(stem) = name.strip_suffix(".rs") else {
                continue;
            };
            let m = module.unwrap_or(stem).to_string();
            let text = std::fs::read_to_string(&path).unwrap();
            // A module's unit tests may use anything; only the module itself is layered.
            let text = text
                .split("#[cfg(test)]\nmod tests")
                .next()
                .unwrap_or_default();
            let used = out.entry(m.clone()).or_default();
            for line in text.lines().filter(|l| !l.trim_start().starts_with("//")) {
                for part in line.split("crate::").skip(1) {
                    let dst: String = part
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if !dst.is_empty() && dst != m {
                        used.insert(dst);
                    }
                }
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(Path::new(SRC), None, &mut out);
    out
}

#[test]
fn every_module_imports_only_its_own_layer_or_lower_ones() {
    let layers = layers();
    let imports = imports();
    let mut wrong = Vec::new();
    for (src, dsts) in &imports {
        let Some(&ls) = layers.get(src) else {
            wrong.push(format!(
                "{src} is not in the layer table of docs/architecture.md"
            ));
            continue;
        };
        for dst in dsts {
            match layers.get(dst) {
                Some(&ld) if ld <= ls => {}
                Some(&ld) => wrong.push(format!("{src} (layer {ls}) imports {dst} (layer {ld})")),
                None => wrong.push(format!("{src} imports {dst}, which is not in the table")),
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    assert!(imports.len() >= 15, "{:?}", imports.keys());
}

#[test]
fn no_import_cycle() {
    let imports = imports();
    // Depth-first search; a module met again while still on the stack closes a circle.
    fn visit<'a>(
        m: &'a str,
        g: &'a BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<String>> {
        if let Some(i) = stack.iter().position(|s| *s == m) {
            let mut c: Vec<String> = stack[i..].iter().map(|s| s.to_string()).collect();
            c.push(m.to_string());
            return Some(c);
        }
        if !done.insert(m) {
            return None;
        }
        stack.push(m);
        for d in g.get(m).into_iter().flatten() {
            if let Some(c) = visit(d, g, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        None
    }
    let mut done = BTreeSet::new();
    for m in imports.keys() {
        if let Some(c) = visit(m, &imports, &mut Vec::new(), &mut done) {
            panic!("import cycle: {}", c.join(" -> "));
        }
    }
}
