//! `NIX_ATTACH_ON_FAILURE`: commands a derivation names run in the restored
//! shell at the failure, before the build waits; their output goes to the
//! build log, bounded, and their status changes nothing.

use crate::support::{release, Drv};

#[test]
fn the_commands_run_in_the_failures_state_and_their_output_is_in_the_log_before_the_pointer() {
    let drv = Drv::new("on-failure")
        .attr("NIX_ATTACH_ON_FAILURE", "echo seen=$insideVar in $PWD; cat config.log; exit 5")
        .phase("buildPhase", "mkdir -p src && cd src\necho 'checking for cc... no' > config.log\nlocal insideVar=here\nsh -c 'exit 3'");
    let (build, paused) = drv.pause();
    let finished = release(build, &paused);
    let log = &finished.log;
    let seen = log.find("seen=here in /build/src\nchecking for cc... no\n").unwrap_or_else(|| panic!("{log}"));
    assert!(log.contains("NIX_ATTACH_ON_FAILURE ended with status 5; the build fails with its own status"), "{log}");
    assert!(seen < log.find("attach with `nix-attach attach").expect("a pointer"), "diagnostics come first: {log}");
    assert!(log.contains("failed with exit code 3"), "{log}");
}

#[test]
fn their_output_reaches_the_log_bounded_and_their_status_is_reported() {
    let drv = Drv::new("on-failure-bounded")
        .attr("NIX_ATTACH_ON_FAILURE", "head -c 200000 /dev/zero | tr '\\0' x")
        .phase("buildPhase", "sh -c 'exit 3'");
    let (build, paused) = drv.pause();
    let finished = release(build, &paused);
    assert!(
        finished.log.contains("ended with status 0; output cut at 65536 bytes"),
        "{}",
        &finished.log[finished.log.len().saturating_sub(600)..]
    );
    assert!(finished.log.contains(&"x".repeat(65536)), "the output reached the log up to the bound");
    assert!(!finished.log.contains(&"x".repeat(65537)), "more than the bound reached the log");
}

#[test]
fn in_ci_the_wrappers_on_failure_runs_in_each_paused_build_and_its_output_is_in_the_log() {
    let drv = Drv::new("wrapper-on-failure").phase("buildPhase", "local insideVar=here\nsh -c 'exit 3'");
    let ran = std::process::Command::new(crate::support::nix_attach())
        .args(["run", "--on-failure", "echo seen=$insideVar; exit 6", "--", "nix-build", "--no-out-link", "--expr", &drv.expression()])
        .env("NIX_REMOTE", "daemon")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&ran.stderr);
    assert!(!ran.status.success() && log.contains("failed with exit code 3"), "the build fails as it would have: {log}");
    let seen = log.find("seen=here\n").unwrap_or_else(|| panic!("{log}"));
    assert!(log[seen..].contains("--on-failure ended with status 6; the build fails with its own status"), "{log}");
}
