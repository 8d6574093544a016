//! Tidy checks on the source tree itself, in the spirit of rust-analyzer's: run by
//! `cargo test --workspace` (so by `cargo xtask test`), they read files and fail with the list of
//! what to fix.
//!
//! - Every Rust source file opens with a `//!` comment saying what it is: in each workspace
//!   member and in `fuzz/`, every `.rs` file outside `target/` directories (`src/`, `tests/`,
//!   `benches/`, `fuzz_targets/`, build scripts).
//! - Every member crate takes the workspace's lints, and `fuzz/`, a workspace of its own, has the
//!   same lints as a copy.

use std::path::{Path, PathBuf};

use deployer::project::project_root;

/// The directories holding a crate: the main workspace's members, then `fuzz/`.
fn crate_dirs(root: &Path) -> Vec<PathBuf> {
    let manifest = read_toml(&root.join("Cargo.toml"));
    let members = manifest["workspace"]["members"]
        .as_array()
        .expect("the root Cargo.toml lists its members");
    let mut dirs: Vec<PathBuf> = members
        .iter()
        .map(|member| root.join(member.as_str().expect("a member is a path")))
        .collect();
    dirs.push(root.join("fuzz"));
    dirs
}

fn read_toml(path: &Path) -> toml::Table {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|err| panic!("failed to read {}: {err}", path.display()));
    toml::from_str(&text).unwrap_or_else(|err| panic!("{} is not TOML: {err}", path.display()))
}

/// Every `.rs` file under `dir`, skipping `target/` and hidden directories, in a stable order.
fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|err| panic!("failed to list {}: {err}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path
            .file_name()
            .and_then(|name| name.to_str())
            .unwrap_or("");
        if path.is_dir() {
            if name != "target" && !name.starts_with('.') {
                rust_files(&path, found);
            }
        } else if name.ends_with(".rs") {
            found.push(path);
        }
    }
}

/// Whether the file's first non-empty line is a `//!` comment.
fn opens_with_module_doc(text: &str) -> bool {
    text.trim_start_matches('\u{feff}')
        .lines()
        .find(|line| !line.trim().is_empty())
        .is_some_and(|line| line.trim_start().starts_with("//!"))
}

#[test]
fn every_source_file_opens_with_a_module_doc() {
    let root = project_root();
    let mut files = Vec::new();
    for dir in crate_dirs(&root) {
        rust_files(&dir, &mut files);
    }
    assert!(
        files.len() > 50,
        "found only {} source files under {}; the walk is broken",
        files.len(),
        root.display()
    );
    let undocumented: Vec<String> = files
        .iter()
        .filter(|path| {
            let text = std::fs::read_to_string(path)
                .unwrap_or_else(|err| panic!("failed to read {}: {err}", path.display()));
            !opens_with_module_doc(&text)
        })
        .map(|path| {
            path.strip_prefix(&root)
                .unwrap_or(path)
                .display()
                .to_string()
        })
        .collect();
    assert!(
        undocumented.is_empty(),
        "{} source file(s) do not open with a `//!` comment saying what the module is \
         (its first non-empty line must start with `//!`):\n  {}",
        undocumented.len(),
        undocumented.join("\n  ")
    );
}

#[test]
fn the_module_doc_rule() {
    assert!(opens_with_module_doc(
        "//! The key rule.\n\nuse std::fmt;\n"
    ));
    assert!(opens_with_module_doc(
        "\n\n  //! Indented, after blank lines.\n"
    ));
    assert!(!opens_with_module_doc("/// An item's doc.\nfn f() {}\n"));
    assert!(!opens_with_module_doc(
        "// A plain comment.\n//! Too late.\n"
    ));
    assert!(!opens_with_module_doc(
        "#![allow(dead_code)]\n//! After an attribute.\n"
    ));
    assert!(!opens_with_module_doc(""));
}

#[test]
fn every_crate_takes_the_workspace_lints_and_fuzz_a_copy_of_them() {
    let root = project_root();
    let workspace = read_toml(&root.join("Cargo.toml"));
    let lints = workspace["workspace"]
        .get("lints")
        .expect("the root Cargo.toml has [workspace.lints]");

    let mut wrong = Vec::new();
    for dir in crate_dirs(&root) {
        let manifest_path = dir.join("Cargo.toml");
        let manifest = read_toml(&manifest_path);
        let shown = manifest_path
            .strip_prefix(&root)
            .unwrap_or(&manifest_path)
            .display()
            .to_string();
        if dir.ends_with("fuzz") {
            if manifest.get("lints") != Some(lints) {
                wrong.push(format!(
                    "{shown}: [lints] is not a copy of the root's [workspace.lints]"
                ));
            }
        } else {
            let inherits = manifest
                .get("lints")
                .and_then(|lints| lints.get("workspace"))
                .and_then(toml::Value::as_bool)
                == Some(true);
            if !inherits {
                wrong.push(format!("{shown}: lacks `[lints] workspace = true`"));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
