//! The nixpkgs overlay and the flake, evaluated by the real evaluator
//! against the nixpkgs stand-in (tests/fixtures/nixpkgs), and builds made
//! through `withAttachOnFailure`, for one `callPackage` and for a whole
//! package set, that really pause.

use crate::support::{eval, fixtures, list, nix_attach, nix_string, release, unique_name, Build, Paused};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The whole-set use: every package of the set is built with the adapted
/// stdenv. It takes the adapter from `prev`: nixpkgs reads `prev.stdenv`
/// after the user's overlays (`stdenvOverrides`), so a `stdenv` defined from
/// `final` is infinite recursion, with or without nix-attach.
const WHOLE_SET: &str = "(final: prev: { stdenv = prev.stdenvAdapters.withAttachOnFailure prev.stdenv; })";

fn repository() -> PathBuf {
    fixtures().join("../..").canonicalize().unwrap()
}

/// `import <stand-in> { overlays = [ OVERLAYS ]; }`, as Nix source.
fn pkgs_with(overlays: &str) -> String {
    format!("(import {} {{ overlays = [ {overlays} ]; }})", fixtures().join("nixpkgs").display())
}

/// The stand-in with the nix-attach overlay.
fn pkgs() -> String {
    pkgs_with(&format!("(import {})", repository().join("nixpkgs-overlay").display()))
}

/// The stand-in with the nix-attach overlay, then the whole-set stdenv.
fn hooked_pkgs() -> String {
    pkgs_with(&format!("(import {}) {WHOLE_SET}", repository().join("nixpkgs-overlay").display()))
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

/// Writes the derivation `expression` (and those it needs) to the store and
/// returns its .drv path.
fn instantiate(expression: &str) -> String {
    let output = Command::new("nix-instantiate")
        .args(["--expr", expression])
        .env("NIX_ATTACH_TEST_BINARY", nix_attach())
        .output()
        .expect("run nix-instantiate");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

/// `nix-store --query QUERY PATH`: the store paths it prints.
fn store_query(query: &str, path: &str) -> Vec<String> {
    let output = Command::new("nix-store").args(["--query", query, path]).output().expect("run nix-store");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap().lines().map(str::to_string).collect()
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

/// The shell a paused build's agent runs for sessions (its `--shell`).
fn session_shell(paused: &Paused) -> String {
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", paused.pid())).unwrap();
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let at = args.iter().position(|arg| *arg == b"--shell").unwrap_or_else(|| panic!("no --shell in {args:?}"));
    String::from_utf8_lossy(args[at + 1]).into_owned()
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
    let shell = session_shell(&paused);
    assert!(shell.ends_with("-bash-interactive/bin/bash"), "{shell}");
    let finished = release(build, &paused);
    assert!(finished.log.contains("failed with exit code 3"));
}

/// The README's per-`callPackage` use: what that `callPackage` builds gets
/// the hook and the rest of the set does not. It works in `pkgsStatic` too,
/// where nixpkgs' own `pkgsStatic` is the set before the overlays, without
/// nix-attach: the hook there carries the set's own (static) agent.
#[test]
fn the_adapter_given_to_one_call_package_hooks_what_it_builds_and_nothing_else() {
    let got = nix_eval(&format!(
        "let pkgs = {pkgs}; \
           adapted = set: set.callPackage ({{ stdenv }}: stdenv.mkDerivation {{ name = \"foo\"; }}) \
             {{ stdenv = set.stdenvAdapters.withAttachOnFailure set.stdenv; }}; \
           inputs = drv: map (input: input.name) (drv.nativeBuildInputs or [ ]); \
         in {{ \
           foo = inputs (adapted pkgs); \
           fooDrv = (adapted pkgs).drvPath; \
           hello = inputs pkgs.hello; \
           staticFoo = inputs (adapted pkgs.pkgsStatic); \
           staticFooDrv = (adapted pkgs.pkgsStatic).drvPath; \
           staticHello = inputs pkgs.pkgsStatic.hello; }}",
        pkgs = pkgs()
    ));
    assert_eq!(got["foo"], json!(["attach-hook"]));
    assert!(got["fooDrv"].as_str().unwrap().ends_with("-foo.drv"), "{got}");
    assert_eq!(got["hello"], json!([]));
    assert_eq!(got["staticFoo"], json!(["attach-hook-static"]));
    assert!(got["staticFooDrv"].as_str().unwrap().ends_with("-foo-static.drv"), "{got}");
    assert_eq!(got["staticHello"], json!([]));
}

/// The whole-set use (`stdenv = prev.stdenvAdapters.withAttachOnFailure
/// prev.stdenv`, after the overlay): every package of the set and of its
/// `pkgsStatic` gets the hook, and evaluating them ends, although the hook
/// carries packages (the interactive bash, the static agent and, through
/// `buildPackages`, its Rust toolchain) that the set builds with that
/// stdenv. The hook is the stock one, the same as without the whole-set
/// overlay, and nothing in its closure is built with the hook.
#[test]
fn the_whole_set_overlay_hooks_every_package_without_recursion() {
    let got = nix_eval(&format!(
        "let pkgs = {hooked}; stock = {stock}; inputs = drv: map (input: input.name) (drv.nativeBuildInputs or [ ]); in {{ \
           helloDrv = pkgs.hello.drvPath; \
           hello = inputs pkgs.hello; \
           bash = inputs pkgs.bashInteractive; \
           staticHelloDrv = pkgs.pkgsStatic.hello.drvPath; \
           staticHello = inputs pkgs.pkgsStatic.hello; \
           hook = pkgs.attachHook.drvPath; \
           staticHook = pkgs.pkgsStatic.attachHook.drvPath; \
           stockHook = stock.attachHook.drvPath; }}",
        hooked = hooked_pkgs(),
        stock = pkgs(),
    ));
    assert!(got["helloDrv"].as_str().unwrap().ends_with("-hello-2.12.drv"), "{got}");
    assert_eq!(got["hello"], json!(["attach-hook"]));
    assert_eq!(got["bash"], json!(["attach-hook"]));
    assert!(got["staticHelloDrv"].as_str().unwrap().ends_with("-hello-static-2.12.drv"), "{got}");
    assert_eq!(got["staticHello"], json!(["attach-hook"]));
    assert_eq!(got["hook"], got["stockHook"]);
    assert_eq!(got["staticHook"], got["stockHook"]);

    let hook = instantiate(&format!("{}.attachHook", hooked_pkgs()));
    assert_eq!(got["hook"], hook.as_str());
    let closure = store_query("--requisites", &hook);
    for carried in ["-bash-interactive.drv", "-nix-attach-static-0.1.0.drv", "-rustc-1.86.0.drv", "-cargo-1.86.0.drv"] {
        let found: Vec<&String> = closure.iter().filter(|path| path.ends_with(carried)).collect();
        assert!(!found.is_empty(), "no {carried} in the hook's closure: {closure:?}");
        for drv in found {
            let inputs = store_query("--references", drv);
            assert!(!inputs.iter().any(|input| input.ends_with("-attach-hook.drv")), "{drv} is built with the hook: {inputs:?}");
        }
    }
}

/// A package of a set adapted whole, failing, pauses with its shell state and
/// the interactive bash for sessions; released, it fails with its own exit
/// code.
#[test]
fn a_failing_package_of_the_whole_set_pauses_then_fails_with_its_own_exit_code() {
    let name = unique_name("whole-set");
    let expression = format!(
        "let pkgs = {pkgs}; in pkgs.callPackage ({{ stdenv }}: stdenv.mkDerivation {{ name = {name}; NIX_ATTACH_TIMEOUT = \"300\"; \
         buildPhase = \"local viaWholeSet=yes; exit 3\"; }}) {{ }}",
        pkgs = hooked_pkgs(),
        name = nix_string(&name),
    );
    let mut build = Build::start(&name, &expression);
    let paused = build.paused();
    assert_eq!(paused.entry["exit_code"], 3);
    assert_eq!(eval(&paused.id, "echo $viaWholeSet"), "yes\n");
    let shell = session_shell(&paused);
    assert!(shell.ends_with("-bash-interactive/bin/bash"), "{shell}");
    let finished = release(build, &paused);
    assert!(!finished.status.success());
    assert!(finished.log.contains("failed with exit code 3"), "{}", finished.log);
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

#[test]
fn the_nixos_module_runs_the_broker_as_root_on_a_socket_anyone_may_use_and_names_the_pre_build_hook() {
    // The module system is not at hand here, so the module is applied to
    // the few `lib` functions it uses, as NixOS defines them.
    let got = nix_eval(&format!(
        "let \
           lib = {{ mkEnableOption = _: {{ type = \"bool\"; }}; mkIf = cond: value: if cond then value else {{ }}; \
             mkMerge = builtins.foldl' (a: b: a // b) {{ }}; getExe = p: \"${{p}}/bin/nix-attach\"; }}; \
           module = broker: injection: import {module} {{ inherit lib; pkgs = {{ nix-attach = \"/nix/store/x-nix-attach\"; }}; \
             config.services.nix-attach = {{ broker.enable = broker; injection.enable = injection; }}; }}; \
         in {{ on = (module true false).config; off = (module false false).config; injection = (module false true).config; }}",
        module = repository().join("nixpkgs-overlay/nixos-module.nix").display(),
    ));
    let socket = &got["on"]["systemd"]["sockets"]["nix-attach-broker"];
    assert_eq!(socket["socketConfig"]["ListenStream"], "/run/nix-attach/broker.sock");
    assert_eq!(socket["socketConfig"]["SocketMode"], "0666");
    assert_eq!(socket["wantedBy"], json!(["sockets.target"]));
    assert_eq!(
        got["on"]["systemd"]["services"]["nix-attach-broker"]["serviceConfig"]["ExecStart"],
        "/nix/store/x-nix-attach/bin/nix-attach broker"
    );
    assert_eq!(got["off"], json!({}));
    assert_eq!(
        got["injection"],
        json!({ "nix": { "settings": { "pre-build-hook": "/nix/store/x-nix-attach/bin/nix-attach-pre-build-hook" } } })
    );
}
