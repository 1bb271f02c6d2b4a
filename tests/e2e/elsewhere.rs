//! A capture taken on another machine, with a store of its own, replays
//! here once its closure is copied: the test bed's sid machine
//! (tests/bed/machine, which tests/run starts first) pauses and captures
//! a build through its own daemon; this machine's ordinary user replays it.

use crate::support::capture::{alice_replays, manifest_of};
use crate::support::{nix_attach, Drv};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Runs `script` in bash on the sid machine, as root, with `args`.
fn on_sid(script: &str, args: &[&str]) -> Output {
    let machine = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/bed/machine");
    let output = Command::new(machine).args(["sid", "run", "bash", "-c", script, "bash"]).args(args).stdin(Stdio::null()).output();
    output.expect("run tests/bed/machine (as root, with the sid machine up: tests/bed/machine sid up)")
}

/// On the sid machine: start the build, wait until it pauses, capture it
/// into $3, release it.
const CAPTURE_THERE: &str = r#"set -euo pipefail
expression=$1 name=$2 out=$3 nix_attach=$4
log=$(mktemp)
nix-build --no-out-link --expr "$expression" > "$log" 2>&1 &
build=$!
id=
until [[ -n $id ]]; do
    kill -0 "$build" 2> /dev/null || { echo "the build ended without pausing:" >&2; cat "$log" >&2; exit 1; }
    id=$("$nix_attach" list --json | python3 -c 'import json, sys; print(next((e["id"] for e in json.load(sys.stdin) if e["drv"] == sys.argv[1]), ""))' "$name")
    [[ -n $id ]] || sleep 0.1
done
"$nix_attach" capture "$id" -o "$out"
"$nix_attach" release "$id" > /dev/null
wait "$build" || true
"#;

#[test]
fn a_capture_from_a_machine_with_its_own_store_replays_here_once_its_closure_is_copied() {
    // An input of its own, built there: a store path this machine has
    // never had, however often the spec runs.
    let input = crate::support::unique_name("built-elsewhere");
    let input = format!("f.mkDerivation {{ name = \"{input}\"; installPhase = \"mkdir -p $out\"; }}");
    let drv = Drv::new("captured-elsewhere").attr_expr("dependency", &input).phase("buildPhase", "local kept=elsewhere\nsh -c 'exit 3'");
    // Shared with the sid machine: the checkout is mounted there.
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/e2e-elsewhere").join(crate::support::unique_name("capture"));
    std::fs::create_dir_all(&shared).unwrap();
    let there = shared.join("it.nix-attach");
    let captured = on_sid(CAPTURE_THERE, &[&drv.expression(), &drv.name, there.to_str().unwrap(), nix_attach()]);
    assert!(captured.status.success(), "{}", String::from_utf8_lossy(&captured.stderr));
    let manifest = manifest_of(&there);
    assert!(
        manifest.origin.nix.contains("2.34") || manifest.origin.nix != crate::support::nix_release().to_string(),
        "{:?}",
        manifest.origin
    );

    // Where every user may read it.
    let here: PathBuf = std::env::temp_dir().join(crate::support::unique_name("elsewhere")).with_extension("nix-attach");
    std::fs::copy(&there, &here).unwrap();
    std::fs::set_permissions(&here, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let before = alice_replays(&here, &["true"]);
    let said = String::from_utf8_lossy(&before.stderr);
    assert!(said.contains("are not in this store"), "its store paths were here already: {said}");

    let closure = shared.join("closure");
    let export = r#"out=$1; shift; nix-store --export $(nix-store -qR "$@") > "$out""#;
    let exported = on_sid(
        export,
        &[&[closure.to_str().unwrap()], &manifest.sandbox.store_paths.iter().map(String::as_str).collect::<Vec<_>>()[..]].concat(),
    );
    assert!(exported.status.success(), "{}", String::from_utf8_lossy(&exported.stderr));
    let imported = Command::new("nix-store")
        .arg("--import")
        .env("NIX_REMOTE", "daemon")
        .stdin(std::fs::File::open(&closure).unwrap())
        .output()
        .unwrap();
    assert!(imported.status.success(), "{}", String::from_utf8_lossy(&imported.stderr));

    let replayed = alice_replays(&here, &["eval", "echo $kept $PWD"]);
    assert_eq!(String::from_utf8_lossy(&replayed.stdout), "elsewhere /build\n", "{}", String::from_utf8_lossy(&replayed.stderr));
    let _ = (std::fs::remove_dir_all(&shared), std::fs::remove_file(&here));
}
