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
    let status = Command::new("/bin/bash-static").args(["-c", &script]).env("NIX_BUILD_TOP", &top).status().expect("run bash-static");
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

/// Runs `body` after sourcing the hook `times` times, under nixpkgs'
/// options and an EXIT trap that runs the failure hooks; returns the status
/// and stderr.
fn run_hooked(times: usize, env: &[(&str, &str)], body: &str) -> (Option<i32>, String) {
    let hook = Path::new(env!("CARGO_MANIFEST_DIR")).join("../setup-hooks/attach-hook.sh");
    let top = std::env::temp_dir().join(crate::support::unique_name("hook-run"));
    std::fs::create_dir_all(&top).unwrap();
    let sources = format!("source {};", hook.display()).repeat(times);
    let script = format!(
        "set -eu -o pipefail; failureHooks=(); \
         onExit() {{ local code=$?; set +e; (( code == 0 )) || for h in ${{failureHooks[@]+\"${{failureHooks[@]}}\"}}; do $h; done; return $code; }}; \
         trap onExit EXIT; {sources}\n{body}"
    );
    let output =
        Command::new("/bin/bash-static").args(["-c", &script]).env("NIX_BUILD_TOP", &top).envs(env.iter().copied()).output().unwrap();
    let _ = std::fs::remove_dir_all(&top);
    (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[test]
fn a_build_that_sources_the_hook_twice_fails_once_with_its_own_status() {
    let (status, stderr) = run_hooked(2, &[], "sh() { return 3; }\nsh -c 'exit 3'");
    assert_eq!(status, Some(3), "{stderr}");
    assert_eq!(stderr.matches("the agent failed").count(), 1, "the failure hook ran {stderr}");
}

#[test]
fn an_err_trap_that_fails_itself_does_not_change_the_exit_status() {
    // The build's trap is set before the hook is sourced, as another input's
    // setup hook would set it; its last command fails.
    let hook = Path::new(env!("CARGO_MANIFEST_DIR")).join("../setup-hooks/attach-hook.sh");
    let own_trap = "trap 'echo own-trap >&2; [[ -n ${DEBUG-} ]] && echo debug' ERR";
    let failing = "sh() { return 3; }\nsh -c 'exit 3'";
    let (plain, _) = run_hooked(0, &[], &format!("{own_trap}\n{failing}"));
    let (hooked, stderr) = run_hooked(0, &[], &format!("{own_trap}\nsource {}\n{failing}", hook.display()));
    assert_eq!(plain, Some(3));
    assert_eq!(hooked, plain, "{stderr}");
    assert_eq!(stderr.matches("own-trap").count(), 1, "{stderr}");
}

#[test]
fn nix_shell_and_opted_out_builds_get_no_trap() {
    for env in [[("IN_NIX_SHELL", "impure")], [("dontAttachOnFailure", "1")]] {
        let (status, stderr) = run_hooked(1, &env, "trap -p ERR >&2; [[ -z \"$(trap -p ERR)\" ]]");
        assert_eq!(status, Some(0), "{env:?}: {stderr}");
    }
}
