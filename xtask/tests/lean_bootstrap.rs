//! The `bootstrap` binary's dependencies stay lean: `cargo tree` over `usersync-function` alone,
//! which resolves features the way the artifact build does (`--package usersync-function`), has
//! no second HTTP stack (hyper 0.14, rustls 0.21) and no SSO clients, and still has the S3
//! client over the SDK's default HTTPS client.
//!
//! Features only add up, so one member asking aws-config or aws-sdk-s3 for their defaults does
//! not reach the function; only the root `[workspace.dependencies]` entries (which must keep
//! `default-features = false`) and function/Cargo.toml do.

use deployer::project::{cargo_command, project_root};

/// Crates `bootstrap` must not link, as (name, version prefix, where it comes from).
const FORBIDDEN: &[(&str, &str, &str)] = &[
    (
        "hyper",
        "0.14.",
        "the SDK's legacy HTTP client (aws-smithy-runtime's `tls-rustls`, which aws-sdk-s3's `rustls` or `legacy-https-client` and aws-config's `legacy-client` turn on)",
    ),
    (
        "rustls",
        "0.21.",
        "the SDK's legacy HTTP client (aws-smithy-runtime's `tls-rustls`, which aws-sdk-s3's `rustls` or `legacy-https-client` and aws-config's `legacy-client` turn on)",
    ),
    ("aws-sdk-sso", "", "aws-config's `sso` feature"),
    ("aws-sdk-ssooidc", "", "aws-config's `sso` feature"),
];

const FIX: &str = "keep `default-features = false` on aws-config and aws-sdk-s3 in the root Cargo.toml's [workspace.dependencies], and give them only `default-https-client` and `rt-tokio` in function/Cargo.toml";

/// `cargo tree` for the function's normal dependencies, one `name vX.Y.Z [...]` per line, for
/// every target platform (a superset of both Lambda architectures).
fn function_tree(edges: &str) -> String {
    let output = cargo_command()
        .current_dir(project_root())
        .args([
            "tree",
            "--locked",
            "--package",
            "usersync-function",
            "--edges",
            edges,
            "--target",
            "all",
            "--prefix",
            "none",
        ])
        .output()
        .expect("cargo runs");
    assert!(
        output.status.success(),
        "cargo tree failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("cargo tree prints UTF-8")
}

/// The (name, version) of each package line, versions without their `v`.
fn packages(tree: &str) -> Vec<(&str, &str)> {
    tree.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let name = words.next()?;
            let version = words.next()?.strip_prefix('v')?;
            Some((name, version))
        })
        .collect()
}

#[test]
fn bootstrap_has_one_http_stack_and_no_sso_clients() {
    let tree = function_tree("normal");
    let packages = packages(&tree);
    assert!(
        packages.iter().any(|(name, _)| *name == "aws-sdk-s3"),
        "aws-sdk-s3 is not among usersync-function's dependencies, so this test checks nothing: is the `s3` feature still a default of function/Cargo.toml?\n{tree}"
    );

    let mut found: Vec<String> = Vec::new();
    for (forbidden, prefix, origin) in FORBIDDEN {
        for (name, version) in &packages {
            let line = format!("{name} v{version}");
            if name == forbidden && version.starts_with(prefix) && !found.contains(&line) {
                found.push(format!(
                    "{line}: from {origin}; `cargo tree -p usersync-function -e features -i {name}@{version}` shows what turns it on"
                ));
            }
        }
    }
    assert!(
        found.is_empty(),
        "bootstrap links crates a Lambda does not need:\n{}\nfix: {FIX}",
        found.join("\n")
    );
}

#[test]
fn bootstrap_keeps_the_default_https_client() {
    // With default features off, the SDK has an HTTP client only if asked for one; without it
    // the function would fail its first S3 request at run time, not at build time.
    let tree = function_tree("normal,features");
    let missing: Vec<&str> = ["aws-config", "aws-sdk-s3"]
        .into_iter()
        .filter(|krate| {
            let feature = format!("{krate} feature \"default-https-client\"");
            !tree.lines().any(|line| line.trim() == feature)
        })
        .collect();
    assert!(
        missing.is_empty(),
        "usersync-function's {} lack the `default-https-client` feature, so bootstrap has no HTTPS client; fix: add it to their features in function/Cargo.toml",
        missing.join(" and ")
    );
}
