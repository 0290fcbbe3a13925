//! The shape of the code, kept by a test: every `crate::` path in `src/` must point
//! downwards.
//!
//! ```text
//! lib.rs, hooks.rs                         (top: may use everything)
//! session_audit  delegated_config  change_capture  delivery   (subsystems)
//! sinks → events → settings → pg           (shared layers, each only below itself)
//! ```
//! Subsystems use shared layers only: never each other, never the top. A shared layer
//! uses only the layers below it. The test reads the sources as text, so it needs no
//! server and fails with the file, line and offending path.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

const LAYERS: [&str; 4] = ["pg", "settings", "events", "sinks"];
const SUBSYSTEMS: [&str; 4] = [
    "session_audit",
    "delegated_config",
    "change_capture",
    "delivery",
];
const TOP: [&str; 2] = ["lib", "hooks"];

fn source_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to (`src/delivery/worker.rs` → `delivery`).
fn module_of(root: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(root).unwrap();
    let first = relative
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy()
        .into_owned();
    first.trim_end_matches(".rs").to_owned()
}

/// Which top-level module may use which.
fn allowed(from: &str, to: &str) -> bool {
    if from == to || TOP.contains(&from) {
        return true;
    }
    let rank = |m: &str| LAYERS.iter().position(|l| *l == m);
    match (rank(from), rank(to)) {
        // A shared layer uses only layers below it.
        (Some(f), Some(t)) => t < f,
        (Some(_), None) => false,
        // A subsystem uses shared layers only.
        (None, Some(_)) => SUBSYSTEMS.contains(&from),
        (None, None) => false,
    }
}

/// The line, or nothing for a comment line (paths in docs are not imports).
fn code_of(line: &str) -> &str {
    if line.trim_start().starts_with("//") {
        ""
    } else {
        line
    }
}

/// `#[macro_export]` macros live at the crate root: map each to its defining module.
fn exported_macros(root: &Path, files: &[PathBuf]) -> BTreeMap<String, String> {
    let mut macros = BTreeMap::new();
    for file in files {
        let text = fs::read_to_string(file).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if line.trim() == "#[macro_export]" {
                if let Some(name) = lines
                    .get(i + 1)
                    .and_then(|l| l.trim().strip_prefix("macro_rules! "))
                {
                    let name = name.trim_end_matches(|c| c == '{' || c == ' ');
                    macros.insert(name.to_owned(), module_of(root, file));
                }
            }
        }
    }
    macros
}

/// Every top-level module named by a `crate::` path on this line, including grouped
/// imports (`use crate::{a, b::c}`).
fn referenced_modules(line: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = line;
    while let Some(i) = rest.find("crate::") {
        let before = rest[..i].chars().last();
        rest = &rest[i + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // e.g. `$crate::` is handled the same way below; `mycrate::` is not ours
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() && name != "self" {
                    found.push(name);
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.push(name);
            }
        }
    }
    found
}

#[test]
fn every_import_points_down_the_layers() {
    let root = source_root();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    files.sort();
    assert!(
        files.len() > 20,
        "sources not found under {}",
        root.display()
    );
    let macros = exported_macros(&root, &files);
    let known: Vec<&str> = LAYERS
        .iter()
        .chain(&SUBSYSTEMS)
        .chain(&TOP)
        .copied()
        .collect();
    let mut violations = Vec::new();
    for file in &files {
        let from = module_of(&root, file);
        assert!(
            known.contains(&from.as_str()),
            "{}: top-level module `{from}` is not in the layer map",
            file.display()
        );
        let text = fs::read_to_string(file).unwrap();
        for (number, line) in text.lines().enumerate() {
            let code = code_of(line);
            if code.contains("super::super::") {
                violations.push(format!(
                    "{}:{}: `super::super::` leaves the module: {}",
                    file.display(),
                    number + 1,
                    line.trim()
                ));
            }
            for name in referenced_modules(code) {
                let to = macros.get(&name).cloned().unwrap_or(name);
                if !known.contains(&to.as_str()) {
                    continue; // an item of lib.rs itself (e.g. `crate::version`)
                }
                if !allowed(&from, &to) {
                    violations.push(format!(
                        "{}:{}: `{from}` must not use `{to}`: {}",
                        file.display(),
                        number + 1,
                        line.trim()
                    ));
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "imports against the layering:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_rules_refuse_sideways_and_upward_imports() {
    assert!(allowed("delivery", "sinks") && allowed("delivery", "pg"));
    assert!(!allowed("delivery", "change_capture"), "sideways");
    assert!(
        !allowed("session_audit", "hooks"),
        "upwards to the dispatcher"
    );
    assert!(
        !allowed("events", "sinks") && !allowed("pg", "settings"),
        "up the layers"
    );
    assert!(allowed("sinks", "events") && allowed("settings", "pg"));
    assert!(
        !allowed("sinks", "delivery"),
        "a layer never uses a subsystem"
    );
    assert_eq!(
        referenced_modules("use crate::{change_capture, pg::names, self};"),
        ["change_capture", "pg"]
    );
    assert_eq!(
        referenced_modules("let x = crate::events::id::next_id(1);"),
        ["events"]
    );
}

#[test]
fn no_sql_statements_in_rust_string_literals() {
    // SQL lives in sql/ (extension_sql_file!, include_str!); Rust keeps one-line queries.
    let root = source_root();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let mut found = Vec::new();
    for file in files {
        let text = fs::read_to_string(&file).unwrap();
        if text.contains("extension_sql!(") {
            found.push(format!(
                "{}: extension_sql! (use extension_sql_file!)",
                file.display()
            ));
        }
        for (number, line) in text.lines().enumerate() {
            let code = code_of(line).trim_start();
            // A multi-line string literal that starts with a SQL keyword.
            for keyword in [
                "\"SELECT ",
                "\"INSERT ",
                "\"UPDATE ",
                "\"DELETE ",
                "\"WITH ",
                "\"CREATE ",
            ] {
                if let Some(i) = code.find(keyword) {
                    let literal = &code[i + 1..];
                    if !literal.contains('"') {
                        found.push(format!(
                            "{}:{}: multi-line SQL literal: {}",
                            file.display(),
                            number + 1,
                            line.trim()
                        ));
                    }
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "SQL in Rust string literals:\n{}",
        found.join("\n")
    );
}
