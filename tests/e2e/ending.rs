//! How a wait ends: released, or timed out. Either way the build fails as
//! it would have, with its exit code and its full log, and nothing of ours
//! is left running.

use crate::support::{alive, release, Drv, Finished, Paused};

const FAILING_PHASE: &str = "echo \"original output\"\necho \"original error\" >&2\nexit 3";

fn assert_failed_as_usual(finished: &Finished, paused: &Paused) {
    assert!(!finished.status.success());
    assert!(finished.log.contains("original output") && finished.log.contains("original error"), "{}", finished.log);
    assert!(finished.log.contains("failed with exit code 3"), "{}", finished.log);
    assert!(!finished.log.contains("pop_var_context"), "bash noise reached the log:\n{}", finished.log);
    assert!(!alive(paused.pid()), "the agent outlived the build");
}

#[test]
fn a_released_build_fails_as_it_would_have() {
    let (build, paused) = Drv::new("released").phase("buildPhase", FAILING_PHASE).pause();
    let finished = release(build, &paused);
    assert_failed_as_usual(&finished, &paused);
    assert!(finished.log.contains("was released"), "{}", finished.log);
}

#[test]
fn an_unattended_build_fails_after_its_idle_timeout() {
    let (build, paused) = Drv::new("timeout").attr("NIX_ATTACH_TIMEOUT", "2").phase("buildPhase", FAILING_PHASE).pause();
    assert_eq!(paused.entry["timeout"], 2);
    let finished = build.finish();
    assert_failed_as_usual(&finished, &paused);
    assert!(finished.log.contains("waited its idle timeout out"), "{}", finished.log);
}

#[test]
fn a_failure_inside_eval_inside_a_phase_function_makes_no_bash_noise() {
    let code = "helper() { local x=1; eval 'false'; }\nhelper";
    let (build, paused) = Drv::new("noise").phase("buildPhase", code).pause();
    let finished = release(build, &paused);
    assert!(!finished.log.contains("pop_var_context"), "{}", finished.log);
}
