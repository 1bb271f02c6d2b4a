//! A person attached to a paused build cannot make it succeed. Alice's
//! build fails; through the broker she writes its output, then runs a
//! static saboteur (`tests/fixtures/saboteur.c`) in a session, one way of
//! reaching the builder or the agent at a time. Every way is closed: the
//! saboteur says so, the build still fails with its own exit code, and its
//! output never becomes valid in the store.

use crate::support::broker::Broker;
use crate::support::{fixtures, instantiate, list, readable_copy, release, Build, Drv, Finished, Paused, ALICE};
use std::path::PathBuf;
use std::process::Command;

/// The saboteur, built static once, where every user may read it.
fn saboteur() -> Vec<u8> {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let path = BUILT.get_or_init(|| {
        let binary = readable_copy().0.join("saboteur");
        let status =
            Command::new("gcc").args(["-static", "-O2", "-o"]).arg(&binary).arg(fixtures().join("saboteur.c")).status().expect("run gcc");
        assert!(status.success(), "cannot build the saboteur");
        binary
    });
    std::fs::read(path).unwrap()
}

/// What happened when alice ran `saboteur MODE` in her paused build, after
/// writing its output, and then released it.
struct Attempt {
    /// The saboteur's report.
    report: String,
    /// The build's log, to its end.
    log: String,
    build_failed: bool,
    output_valid: bool,
}

fn sabotage(mode: &str) -> Attempt {
    let broker = Broker::start();
    let drv = Drv::new(&format!("sabotaged-{mode}")).phase("buildPhase", "sh -c 'exit 3'");
    let derivation = instantiate(&drv.readable_expression());
    let output = nix_store(&["--query", "--outputs", &derivation]).trim().to_string();
    let mut build = drv.start_as(ALICE);
    let paused = build.paused();
    let code =
        format!("cat > ./saboteur && chmod +x ./saboteur && mkdir -p \"$out\" && echo poisoned > \"$out/result\" && ./saboteur {mode}");
    let ran = broker.run_as_with_input(ALICE, &["exec", &paused.id, "--", "eval", &code], &saboteur());
    let report = String::from_utf8_lossy(&ran.stdout).into_owned() + &String::from_utf8_lossy(&ran.stderr);
    // The build may already have ended (the way was open); release it if not.
    let finished = release_or_finish(build, &paused);
    let valid = Command::new("nix-store").args(["--check-validity", &output]).env("NIX_REMOTE", "daemon").output().unwrap();
    Attempt { report, build_failed: !finished.status.success(), log: finished.log, output_valid: valid.status.success() }
}

fn release_or_finish(build: Build, paused: &Paused) -> Finished {
    if list().iter().any(|entry| entry["id"] == paused.id.as_str()) {
        release(build, paused)
    } else {
        build.finish()
    }
}

fn nix_store(args: &[&str]) -> String {
    let output = Command::new("nix-store").args(args).env("NIX_REMOTE", "daemon").output().unwrap();
    assert!(output.status.success(), "nix-store {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

/// The way was closed, and the build failed as it would have.
fn assert_closed(mode: &str, attempt: &Attempt) {
    assert!(attempt.report.contains(&format!("{mode}: failed")), "the saboteur got through ({mode}):\n{}", attempt.report);
    assert!(attempt.build_failed, "the build succeeded ({mode}):\n{}", attempt.log);
    assert!(attempt.log.contains("failed with exit code 3"), "the build did not fail with its own code ({mode}):\n{}", attempt.log);
    assert!(!attempt.output_valid, "the session's output became valid ({mode})");
}

#[test]
fn a_session_cannot_trace_the_builder_into_exiting_0() {
    assert_closed("ptrace", &sabotage("ptrace"));
}

#[test]
fn a_session_cannot_write_the_builder_code_through_proc_mem() {
    assert_closed("mem", &sabotage("mem"));
}

#[test]
fn a_session_cannot_write_into_the_builder_with_process_vm_writev() {
    assert_closed("vm-write", &sabotage("vm-write"));
}

#[test]
fn a_session_cannot_take_the_builders_descriptors() {
    assert_closed("getfd", &sabotage("getfd"));
}

#[test]
fn a_session_cannot_kill_the_agent() {
    assert_closed("kill", &sabotage("kill"));
}

#[test]
fn nothing_a_session_leaves_running_outlives_it() {
    let attempt = sabotage("linger");
    // The lingering process was ended with the session: it never reported.
    assert!(!attempt.report.contains("linger: done"), "a process outlived the session and reached the builder:\n{}", attempt.report);
    assert!(attempt.build_failed && attempt.log.contains("failed with exit code 3"), "{}", attempt.log);
    assert!(!attempt.output_valid, "the session's output became valid");
}
