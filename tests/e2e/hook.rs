//! The hook's cost where a failure does not end the build: it must stay a
//! single test, with no snapshot. Run with Debian's static bash, the same
//! bash the sandboxed tests use; no build is needed to see what it runs.

use std::path::Path;
use std::process::Command;

/// Sources the hook under nixpkgs' options, then traces `body` and returns
/// the trace lines of the ERR trap (those one level deeper than the body).
fn trap_trace(body: &str) -> (Vec<String>, std::path::PathBuf) {
    let hook = Path::new(env!("CARGO_MANIFEST_DIR")).join("../setup-hooks/attach-hook.sh");
    let top = std::env::temp_dir().join(crate::support::unique_name("hook-cost"));
    std::fs::create_dir_all(&top).unwrap();
    let script = format!(
        "set -eu -o pipefail; failureHooks=(); source {hook}; exec 9>{trace}; BASH_XTRACEFD=9; PS4='+trace '; set -x\n{body}\nset +x",
        hook = hook.display(),
        trace = top.join("trace").display(),
    );
    let status = Command::new("/bin/bash-static")
        .args(["-c", &script])
        .env("NIX_BUILD_TOP", &top)
        .status()
        .expect("run bash-static");
    assert!(status.success(), "the script failed");
    let trace = std::fs::read_to_string(top.join("trace")).unwrap();
    let lines = trace.lines().filter(|line| line.starts_with("++")).map(String::from).collect();
    (lines, top)
}

#[test]
fn a_failure_under_set_plus_e_costs_one_assignment_and_one_test() {
    let (lines, top) = trap_trace("set +e\nfalse\nset -e");
    assert_eq!(lines.len(), 2, "the ERR trap ran more than its check: {lines:#?}");
    assert!(lines[0].contains("__nixAttachLast=1") && lines[1].contains("[["), "{lines:#?}");
    assert!(!top.join(".nix-attach-state.sh").exists(), "a snapshot was taken");
}

#[test]
fn failures_that_errexit_ignores_do_not_reach_the_trap_at_all() {
    let (lines, top) = trap_trace("if false; then :; fi\nfalse || true\nf() { false; true; }\nf && true");
    assert!(lines.is_empty(), "the ERR trap ran: {lines:#?}");
    assert!(!top.join(".nix-attach-state.sh").exists(), "a snapshot was taken");
}

#[test]
fn a_failure_in_a_command_substitution_takes_no_snapshot() {
    let (lines, top) = trap_trace("x=$(false; echo y) || true");
    assert!(lines.iter().all(|line| !line.contains("OnFatalError")), "{lines:#?}");
    assert!(!lines.is_empty(), "the trace saw no ERR trap at all");
    assert!(!top.join(".nix-attach-state.sh").exists(), "a snapshot was taken");
}
