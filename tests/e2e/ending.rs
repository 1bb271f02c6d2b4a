//! How a wait ends: released, timed out, or held for its longest pause. Either way the build fails as
//! it would have, with its exit code and its full log, and nothing of ours
//! is left running.

use crate::support::pty::Terminal;
use crate::support::{nix_attach, release, Drv, Finished};

const FAILING_PHASE: &str = "echo \"original output\"\necho \"original error\" >&2\nexit 3";

fn assert_failed_as_usual(finished: &Finished, drv: &str) {
    assert!(!finished.status.success());
    assert!(finished.log.contains("original output") && finished.log.contains("original error"), "{}", finished.log);
    assert!(finished.log.contains("failed with exit code 3"), "{}", finished.log);
    assert!(!finished.log.contains("pop_var_context"), "bash noise reached the log:\n{}", finished.log);
    assert!(!agent_of(drv), "the agent outlived the build");
}

/// Whether an agent of the derivation `drv` still runs.
fn agent_of(drv: &str) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else { return false };
    entries.flatten().any(|entry| {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let argv: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        argv.get(1) == Some(&&b"agent"[..]) && argv.windows(2).any(|pair| pair == [&b"--drv"[..], drv.as_bytes()])
    })
}

#[test]
fn a_released_build_fails_as_it_would_have() {
    let drv = Drv::new("released").phase("buildPhase", FAILING_PHASE);
    let (build, paused) = drv.pause();
    assert!(agent_of(&drv.name), "no agent of {} runs", drv.name);
    let finished = release(build, &paused);
    assert_failed_as_usual(&finished, &drv.name);
    assert!(finished.log.contains("was released"), "{}", finished.log);
}

#[test]
fn an_unattended_build_fails_after_its_idle_timeout() {
    // The wait may be over before `list` could show it, so the build is
    // judged by its log alone: the pointer, then the end.
    let drv = Drv::new("timeout").attr("NIX_ATTACH_TIMEOUT", "2").phase("buildPhase", FAILING_PHASE);
    let finished = drv.build();
    assert_failed_as_usual(&finished, &drv.name);
    let pointer = finished.log.find("attach with `nix-attach attach ").unwrap_or_else(|| panic!("no pointer:\n{}", finished.log));
    let ending = finished.log.find("waited its idle timeout out").unwrap_or_else(|| panic!("no idle timeout:\n{}", finished.log));
    assert!(pointer < ending, "{}", finished.log);
}

#[test]
fn a_failure_inside_eval_inside_a_phase_function_makes_no_bash_noise() {
    let code = "helper() { local x=1; eval 'false'; }\nhelper";
    let (build, paused) = Drv::new("noise").phase("buildPhase", code).pause();
    let finished = release(build, &paused);
    assert!(!finished.log.contains("pop_var_context"), "{}", finished.log);
}

#[test]
fn a_session_cannot_hold_a_build_past_its_longest_pause() {
    let drv = Drv::new("held-longest").attr("NIX_ATTACH_MAX_PAUSE", "10").phase("buildPhase", FAILING_PHASE);
    let (build, paused) = drv.pause();
    let since = paused.entry["since"].as_u64().unwrap();
    assert_eq!(paused.entry["held_until"].as_u64(), Some(since + 10), "{}", paused.entry);
    let mut session = Terminal::spawn(nix_attach(), &["attach", &paused.id], 24, 80);
    session.expect(" $ ");
    // The session stays open; the build stops waiting all the same.
    session.expect("the build was held for its longest pause");
    assert_ne!(session.wait(), 0);
    let finished = build.finish();
    assert_failed_as_usual(&finished, &drv.name);
    assert!(finished.log.contains("was held for its longest pause"), "{}", finished.log);
}

#[test]
fn no_build_is_held_longer_than_a_day_whatever_it_asks() {
    let (build, paused) = Drv::new("held-a-year").attr("NIX_ATTACH_MAX_PAUSE", "31536000").phase("buildPhase", FAILING_PHASE).pause();
    let since = paused.entry["since"].as_u64().unwrap();
    assert_eq!(paused.entry["held_until"].as_u64(), Some(since + 24 * 60 * 60), "{}", paused.entry);
    release(build, &paused);
}
