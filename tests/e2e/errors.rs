//! Bad requests get one clear line on stderr and status 125, never a panic.

use crate::support::{list, nix_attach_cmd, readable_nix_attach, release, Drv, PATIENCE};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const ERROR_EXIT: i32 = 125;

fn assert_one_line_error(output: &Output, says: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(ERROR_EXIT), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "not one line: {stderr}");
    assert!(stderr.starts_with("nix-attach: error: ") && stderr.contains(says), "{stderr}");
}

#[test]
fn an_id_that_matches_nothing_is_an_error() {
    assert_one_line_error(&nix_attach_cmd(&["attach", "no-such-build-id"]), "no waiting build matches `no-such-build-id`");
}

#[test]
fn a_name_that_matches_two_builds_is_an_error_that_lists_them() {
    let first = Drv::new("twin").phase("buildPhase", "false");
    let second = first.clone().attr("variant", "second");
    let (mut one, two) = (first.start(), second.start());
    one.paused();
    let deadline = Instant::now() + PATIENCE;
    let twins = loop {
        let twins: Vec<String> = list()
            .iter()
            .filter(|entry| entry["drv"] == first.name.as_str())
            .map(|entry| entry["id"].as_str().unwrap().to_string())
            .collect();
        if twins.len() == 2 {
            break twins;
        }
        assert!(Instant::now() < deadline, "the second twin did not pause:\n{}", two.log());
        std::thread::sleep(Duration::from_millis(200));
    };
    let output = nix_attach_cmd(&["exec", &first.name, "--", "true"]);
    assert_one_line_error(&output, "2 waiting builds match");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(twins.iter().all(|id| stderr.contains(id.as_str())), "{stderr}");
    for id in &twins {
        assert!(nix_attach_cmd(&["release", id]).status.success());
    }
    assert!(!one.finish().status.success() && !two.finish().status.success());
}

#[test]
fn a_released_build_is_gone() {
    let (build, paused) = Drv::new("gone").phase("buildPhase", "false").pause();
    release(build, &paused);
    assert_one_line_error(&nix_attach_cmd(&["attach", &paused.id]), "no waiting build matches");
}

#[test]
fn an_ordinary_user_is_told_that_root_is_needed() {
    let (build, paused) = Drv::new("denied").phase("buildPhase", "false").pause();
    let output = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", readable_nix_attach(), "attach", &paused.id])
        .output()
        .expect("run setpriv");
    assert_one_line_error(&output, "permission denied");
    assert!(String::from_utf8_lossy(&output.stderr).contains("need root"));
    release(build, &paused);
}

#[test]
fn exec_without_a_command_is_a_usage_error() {
    let output = nix_attach_cmd(&["exec", "some-id"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("required"));
}
