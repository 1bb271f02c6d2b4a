//! The nixpkgs overlay and the flake, evaluated by the real evaluator
//! against the nixpkgs stand-in (tests/fixtures/nixpkgs), and a build made
//! through `withAttachOnFailure` that really pauses.

use crate::support::{eval, fixtures, list, nix_attach, nix_string, release, unique_name, Build};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;

fn repository() -> PathBuf {
    fixtures().join("../..").canonicalize().unwrap()
}

/// `import <stand-in> { overlays = [ overlay ]; }`, as Nix source.
fn pkgs() -> String {
    format!(
        "(import {} {{ overlays = [ (import {}) ]; }})",
        fixtures().join("nixpkgs").display(),
        repository().join("nixpkgs-overlay").display()
    )
}

/// Evaluates `expression` strictly and returns it as JSON.
fn nix_eval(expression: &str) -> Value {
    let output = Command::new("nix-instantiate")
        .args(["--eval", "--strict", "--json", "--expr", expression])
        .env("NIX_ATTACH_TEST_BINARY", nix_attach())
        .output()
        .expect("run nix-instantiate");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

/// A failing derivation made with the adapted stdenv.
fn adapted_build(name: &str, extra: &str) -> Build {
    let expression = format!(
        "let pkgs = {pkgs}; stdenv = pkgs.stdenvAdapters.withAttachOnFailure pkgs.stdenv; in \
         stdenv.mkDerivation {{ name = {name}; NIX_ATTACH_TIMEOUT = \"300\"; buildPhase = \"local viaAdapter=yes; exit 3\"; {extra} }}",
        pkgs = pkgs(),
        name = nix_string(name),
    );
    Build::start(name, &expression)
}

fn nix_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if entry.file_type().unwrap().is_dir() && name != "target" && name != ".git" {
            nix_files(&path, found);
        } else if path.extension().is_some_and(|ext| ext == "nix") {
            found.push(path);
        }
    }
}

#[test]
fn every_nix_file_parses() {
    let mut files = Vec::new();
    nix_files(&repository(), &mut files);
    assert!(files.len() >= 8, "found only {files:?}");
    for file in files {
        let output = Command::new("nix-instantiate").arg("--parse").arg(&file).output().unwrap();
        assert!(output.status.success(), "{}: {}", file.display(), String::from_utf8_lossy(&output.stderr));
    }
}

#[test]
fn the_overlay_provides_the_package_the_hook_and_the_adapter() {
    let got = nix_eval(&format!(
        "let pkgs = {}; in {{ \
           meta = {{ inherit (pkgs.nix-attach.meta) mainProgram license platforms description; }}; \
           hook = pkgs.attachHook.name; \
           adapters = builtins.attrNames pkgs.stdenvAdapters; \
           optedOut = pkgs.nix-attach.dontAttachOnFailure; }}",
        pkgs()
    ));
    assert_eq!(got["meta"]["mainProgram"], "nix-attach");
    assert_eq!(got["meta"]["license"]["spdxId"], "MIT");
    assert!(got["meta"]["platforms"].as_array().unwrap().contains(&json!("x86_64-linux")));
    assert!(got["meta"]["description"].as_str().unwrap().contains("failed Nix build"));
    assert_eq!(got["hook"], "attach-hook");
    assert_eq!(got["adapters"], json!(["withAttachOnFailure"]));
    assert_eq!(got["optedOut"], true);
}

#[test]
fn the_flake_outputs_evaluate() {
    let got = nix_eval(&format!(
        "let \
           nixpkgs = {{ outPath = {standin}; lib = import {standin}/lib.nix; }}; \
           flake = (import {repo}/flake.nix).outputs {{ self = flake; inherit nixpkgs; }}; \
         in {{ \
           systems = builtins.attrNames flake.packages; \
           default = flake.packages.x86_64-linux.default.name; \
           package = flake.packages.x86_64-linux.nix-attach.name; \
           overlay = builtins.isFunction flake.overlays.default; \
           checks = builtins.attrNames flake.checks.x86_64-linux; \
           checkFlags = flake.checks.x86_64-linux.unit-tests.cargoTestFlags; }}",
        standin = fixtures().join("nixpkgs").display(),
        repo = repository().display(),
    ));
    assert_eq!(got["systems"], json!(["aarch64-linux", "x86_64-linux"]));
    assert_eq!(got["default"], "nix-attach-0.1.0");
    assert_eq!(got["package"], "nix-attach-0.1.0");
    assert_eq!(got["overlay"], true);
    assert_eq!(got["checks"], json!(["unit-tests"]));
    assert_eq!(got["checkFlags"], json!(["--lib"]));
}

#[test]
fn a_build_with_the_adapted_stdenv_pauses_with_the_interactive_shell() {
    let name = unique_name("adapted");
    let mut build = adapted_build(&name, "");
    let paused = build.paused();
    assert_eq!(paused.entry["exit_code"], 3);
    assert_eq!(eval(&paused.id, "echo $viaAdapter"), "yes\n");
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", paused.pid())).unwrap();
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let shell = args.iter().position(|arg| *arg == b"--shell").map(|at| String::from_utf8_lossy(args[at + 1]));
    assert!(shell.is_some_and(|shell| shell.ends_with("-bash-interactive/bin/bash")), "{args:?}");
    let finished = release(build, &paused);
    assert!(finished.log.contains("failed with exit code 3"));
}

fn assert_fails_at_once(name: &str, build: Build) {
    let finished = build.finish();
    assert!(!finished.status.success());
    assert!(finished.log.contains("failed with exit code 3"), "{}", finished.log);
    assert!(!finished.log.contains("nix-attach: "), "{}", finished.log);
    assert!(list().iter().all(|entry| entry["drv"] != name));
}

#[test]
fn dont_attach_on_failure_opts_out_of_the_adapter() {
    let name = unique_name("opted-out");
    assert_fails_at_once(&name, adapted_build(&name, "dontAttachOnFailure = true;"));
}

#[test]
fn dont_attach_on_failure_opts_out_of_the_hook_itself() {
    let name = unique_name("hook-opted-out");
    let expression = format!(
        "let pkgs = {pkgs}; in pkgs.stdenv.mkDerivation {{ name = {name}; nativeBuildInputs = [ pkgs.attachHook ]; \
         dontAttachOnFailure = true; buildPhase = \"exit 3\"; }}",
        pkgs = pkgs(),
        name = nix_string(&name),
    );
    assert_fails_at_once(&name, Build::start(&name, &expression));
}
