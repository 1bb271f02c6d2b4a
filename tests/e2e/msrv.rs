//! The oldest Rust we declare (`rust-version` in Cargo.toml) can build us:
//! no dependency in Cargo.lock asks for a newer one. Needs no test bed,
//! only the crates `cargo test` already fetched.

use serde_json::Value;
use std::collections::HashSet;
use std::process::Command;

/// A `rust-version` as numbers, for comparing: `1.85` is 1.85.0.
fn version(text: &str) -> (u64, u64, u64) {
    let number = |part: &str| part.parse::<u64>().unwrap_or_else(|_| panic!("{text:?} is not a Rust version"));
    let mut parts = text.split('.').map(number);
    (parts.next().unwrap(), parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// `cargo metadata` of the workspace as locked, for the platform we build
/// on (nix-attach is Linux only), from the local crate cache.
fn locked_metadata() -> Value {
    let platform = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    let output = Command::new(env!("CARGO"))
        .args(["metadata", "--locked", "--offline", "--format-version", "1", "--filter-platform", &platform])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo metadata");
    assert!(output.status.success(), "cargo metadata failed: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON")
}

/// A package's id, or an id in a list of ids or of resolve nodes.
fn id(entry: &Value) -> &str {
    entry.as_str().or_else(|| entry["id"].as_str()).expect("an id")
}

#[test]
fn no_locked_dependency_needs_a_newer_rust_than_the_one_we_declare() {
    let metadata = locked_metadata();
    let members: HashSet<&str> = metadata["workspace_members"].as_array().expect("members").iter().map(id).collect();
    let resolved: HashSet<&str> = metadata["resolve"]["nodes"].as_array().expect("the resolve").iter().map(id).collect();
    let packages = metadata["packages"].as_array().expect("packages");
    let ours = packages.iter().find(|package| members.contains(id(package))).expect("the nix-attach package");
    let declared = ours["rust_version"].as_str().expect("Cargo.toml declares rust-version");
    let dependencies: Vec<&Value> =
        packages.iter().filter(|package| resolved.contains(id(package)) && !members.contains(id(package))).collect();
    assert!(dependencies.len() > 10, "cargo metadata listed only {} dependencies", dependencies.len());
    let newer: Vec<String> = dependencies
        .iter()
        .filter_map(|package| {
            let needs = package["rust_version"].as_str()?;
            let name = format!("{} {}", package["name"].as_str()?, package["version"].as_str()?);
            (version(needs) > version(declared)).then(|| format!("{name} needs {needs}"))
        })
        .collect();
    assert!(newer.is_empty(), "Cargo.toml declares rust-version {declared}, but {}", newer.join(", "));
}
