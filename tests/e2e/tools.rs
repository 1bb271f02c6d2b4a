//! `--with`: a tool of this machine's, which the build never had, runs in
//! the build's sandbox; the build's own PATH, variables and files are as
//! they were.

use crate::support::{exec, fixtures, nix_attach_cmd, release, Drv};
use std::process::Command;

/// The fixture's tool, built here: a store path no build has as an input.
fn tool() -> String {
    built_tool(&format!("(import {}/default.nix {{ }}).tool", fixtures().display()))
}

/// A tool like [`tool`] of the store path named `name`, for one test alone.
fn tool_named(name: &str) -> String {
    built_tool(&format!("(import {}/default.nix {{ }}).toolNamed \"{name}\"", fixtures().display()))
}

fn built_tool(expression: &str) -> String {
    let built = Command::new("nix-build").args(["--no-out-link", "-E", expression]).env("NIX_REMOTE", "daemon").output().unwrap();
    assert!(built.status.success(), "{}", String::from_utf8_lossy(&built.stderr));
    String::from_utf8(built.stdout).unwrap().trim().to_string()
}

#[test]
fn exec_with_a_tool_runs_it_inside_and_leaves_the_builds_path_as_it_was() {
    let tool = tool();
    let (build, paused) = Drv::new("with-tool").phase("buildPhase", "false").pause();
    let path_before = exec(&paused.id, &["sh", "-c", "echo $PATH"]);
    let without = exec(&paused.id, &["sh", "-c", &format!("test -e {tool} || echo absent")]);
    assert_eq!(String::from_utf8_lossy(&without.stdout), "absent\n", "the sandbox has no such path");

    let ran = nix_attach_cmd(&["exec", &paused.id, "--with", &tool, "--", "test-tool", "hi"]);
    assert_eq!(String::from_utf8_lossy(&ran.stdout), "tool ran: hi\n", "{}", String::from_utf8_lossy(&ran.stderr));
    // Each mount's options, as the session sees them: the fifth and sixth
    // fields of mountinfo.
    let mounts =
        nix_attach_cmd(&["exec", &paused.id, "--", "sh", "-c", &format!("grep ' {tool} ' /proc/self/mountinfo | cut -d' ' -f5,6")]);
    let options = String::from_utf8_lossy(&mounts.stdout).into_owned();
    let flags: Vec<&str> = options.split_whitespace().nth(1).unwrap_or_default().split(',').collect();
    assert!(["ro", "nosuid", "nodev"].iter().all(|flag| flags.contains(flag)), "the tool is mounted read-only, nosuid, nodev: {options:?}");

    assert_eq!(exec(&paused.id, &["sh", "-c", "echo $PATH"]).stdout, path_before.stdout, "the build's PATH is unchanged");
    release(build, &paused);
}

#[test]
fn a_tool_stays_in_the_store_while_its_build_waits_and_is_let_go_once_the_build_ended() {
    let (lent, shared) = (tool_named(&crate::support::unique_name("nix-attach-kept-tool")), tool());
    let tool = &lent;
    let (build, paused) = Drv::new("with-kept-tool").phase("buildPhase", "false").pause();
    let ran = nix_attach_cmd(&["exec", &paused.id, "--with", tool, "--", "test-tool", "before"]);
    assert_eq!(String::from_utf8_lossy(&ran.stdout), "tool ran: before\n", "{}", String::from_utf8_lossy(&ran.stderr));
    let collected = delete_from_store(tool);
    assert!(!collected.status.success(), "a root keeps the tool mounted in the build: {collected:?}");
    let still = exec(&paused.id, &[&format!("{tool}/bin/test-tool"), "after"]);
    assert_eq!(String::from_utf8_lossy(&still.stdout), "tool ran: after\n", "{}", String::from_utf8_lossy(&still.stderr));
    release(build, &paused);

    // The next `--with` lets go of what builds that ended were lent.
    let (next, next_paused) = Drv::new("with-after-kept-tool").phase("buildPhase", "false").pause();
    let ran = nix_attach_cmd(&["exec", &next_paused.id, "--with", &shared, "--", "true"]);
    assert!(ran.status.success(), "{}", String::from_utf8_lossy(&ran.stderr));
    release(next, &next_paused);
    let collected = delete_from_store(tool);
    assert!(collected.status.success(), "nothing keeps it once its build ended: {}", String::from_utf8_lossy(&collected.stderr));
}

#[test]
fn root_mounts_into_the_agent_found_and_never_into_a_process_that_took_its_pid_since() {
    let tool = tool_named("pid-reused");
    let (build, paused) = Drv::new("with-pid-reused").phase("buildPhase", "false").pause();
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", paused.pid())).unwrap();
    let started: u64 = stat.rsplit_once(')').unwrap().1.split_whitespace().nth(19).unwrap().parse().unwrap();
    // The agent's pid with another start time: what discovery would have
    // found, had the agent ended and its pid gone to another process.
    let (pid, other) = (paused.pid().to_string(), (started + 1).to_string());
    let refused = nix_attach_cmd(&["mount-tools", "--agent", &pid, "--started", &other, "--", &tool]);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && said.contains(&format!("the build's agent ({pid}) has ended")), "{said}");
    let inside = exec(&paused.id, &["sh", "-c", &format!("test -e {tool} || echo absent")]);
    assert_eq!(String::from_utf8_lossy(&inside.stdout), "absent\n", "nothing was mounted");
    let mounted = nix_attach_cmd(&["mount-tools", "--agent", &pid, "--started", &started.to_string(), "--", &tool]);
    assert!(mounted.status.success(), "{}", String::from_utf8_lossy(&mounted.stderr));
    let inside = exec(&paused.id, &["sh", "-c", &format!("test -e {tool} && echo there")]);
    assert_eq!(String::from_utf8_lossy(&inside.stdout), "there\n", "the agent found is mounted into");
    release(build, &paused);
}

/// `nix-store --delete PATH`, which the daemon refuses for a path that is
/// still alive (rooted).
fn delete_from_store(path: &str) -> std::process::Output {
    Command::new("nix-store").args(["--delete", path]).env("NIX_REMOTE", "daemon").output().unwrap()
}

#[test]
fn with_what_is_no_store_path_is_one_line_and_status_125() {
    let (build, paused) = Drv::new("with-nothing").phase("buildPhase", "false").pause();
    let refused = nix_attach_cmd(&["exec", &paused.id, "--with", "/etc", "--", "true"]);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert_eq!((refused.status.code(), said.lines().count()), (Some(125), 1), "{said}");
    assert!(said.contains("--with \"/etc\" is not a store path"), "{said}");
    release(build, &paused);
}

#[test]
fn attach_with_a_tool_has_it_first_on_the_sessions_path() {
    let tool = tool();
    let (build, paused) = Drv::new("attach-with-tool").phase("buildPhase", "local kept=yes\nfalse").pause();
    let mut terminal =
        crate::support::pty::Terminal::spawn(crate::support::nix_attach(), &["attach", "--with", &tool, &paused.id], 24, 120);
    let prompt = terminal.expect(" $ ");
    terminal.send("test-tool inside $kept; echo \"first=${PATH%%:*}\"\r");
    let ran = terminal.expect_after(prompt, "tool ran: inside yes");
    terminal.expect_after(ran, &format!("first={tool}/bin"));
    terminal.send("exit\r");
    assert_eq!(terminal.wait(), 0);
    release(build, &paused);
}

#[test]
fn a_replay_with_a_tool_binds_it_in_as_one_more_read_only_path() {
    let tool = tool();
    let (build, paused) = Drv::new("replay-with-tool").phase("buildPhase", "local kept=yes\nfalse").pause();
    let dir = std::env::temp_dir().join(crate::support::unique_name("replay-with-tool"));
    std::fs::create_dir(&dir).unwrap();
    let file = dir.join("it.nix-attach");
    let captured = nix_attach_cmd(&["capture", &paused.id, "-o", file.to_str().unwrap()]);
    assert!(captured.status.success(), "{}", String::from_utf8_lossy(&captured.stderr));
    release(build, &paused);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();

    let replayed = crate::support::capture::alice_replays_with(&file, &["--with", &tool], &["eval", "test-tool $kept"]);
    assert_eq!(String::from_utf8_lossy(&replayed.stdout), "tool ran: yes\n", "{}", String::from_utf8_lossy(&replayed.stderr));
    let without = crate::support::capture::alice_replays(&file, &["sh", "-c", &format!("test -e {tool} || echo absent")]);
    assert_eq!(String::from_utf8_lossy(&without.stdout), "absent\n", "{}", String::from_utf8_lossy(&without.stderr));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_broker_brings_tools_in_for_the_builds_owner_and_for_nobody_else() {
    let tool = tool();
    let broker = crate::support::broker::Broker::start();
    let mut build = Drv::new("broker-with-tool").phase("buildPhase", "false").start_as(crate::support::ALICE);
    let paused = build.paused();
    let bobs = broker.run_as(crate::support::BOB, &["exec", &paused.id, "--with", &tool, "--", "test-tool", "bob"]);
    assert!(!bobs.status.success() && bobs.stdout.is_empty(), "bob is refused: {bobs:?}");
    let still_absent = exec(&paused.id, &["sh", "-c", &format!("test -e {tool} || echo absent")]);
    assert_eq!(String::from_utf8_lossy(&still_absent.stdout), "absent\n", "nothing was mounted for bob");

    let alices = broker.run_as(crate::support::ALICE, &["exec", &paused.id, "--with", &tool, "--", "test-tool", "alice"]);
    assert_eq!(String::from_utf8_lossy(&alices.stdout), "tool ran: alice\n", "{}", String::from_utf8_lossy(&alices.stderr));
    release(build, &paused);
}
