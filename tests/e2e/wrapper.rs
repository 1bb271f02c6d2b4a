//! `nix-attach build` and `nix-attach run`, driven like a person at a
//! terminal, and without one as in CI.

use crate::support::pty::Terminal;
use crate::support::{nix_attach, Drv};
use std::process::Command;
use std::sync::OnceLock;

const PROMPT: &str = "enter the build? [Y/n]";

/// The status `nix-build` itself ends with when a build fails the same way
/// without the hook (it differs between local and daemon builds).
fn build_failed() -> u32 {
    static STATUS: OnceLock<u32> = OnceLock::new();
    *STATUS.get_or_init(|| {
        let plain = failing("plain").without_hook();
        let output = Command::new("nix-build")
            .args(["--no-out-link", "--expr", &plain.expression()])
            .env("NIX_REMOTE", "daemon")
            .output()
            .expect("run nix-build");
        let code = output.status.code().expect("an exit code") as u32;
        assert_ne!(code, 0);
        code
    })
}

fn failing(prefix: &str) -> Drv {
    Drv::new(prefix).phase("buildPhase", "echo \"original output line\"\nlocal insideVar=here\nsh -c 'exit 3'")
}

/// `nix-attach [FLAGS…] run -- nix-build …` on `expression`, under a PTY.
fn wrap(flags: &[&str], expression: &str, extra: &[&str]) -> Terminal {
    let mut args = vec!["run"];
    args.extend_from_slice(flags);
    args.extend_from_slice(&["--", "nix-build", "--no-out-link", "--expr", expression]);
    args.extend_from_slice(extra);
    Terminal::spawn(nix_attach(), &args, 40, 160)
}

#[test]
fn answering_yes_enters_the_build_then_releases_it_and_nix_goes_on() {
    let drv = failing("wrap-yes");
    let mut terminal = wrap(&[], &drv.expression(), &[]);
    let asked = terminal.expect(PROMPT);
    let screen = terminal.screen();
    let before = &screen[..asked];
    assert!(before.contains("original output line"), "{screen}");
    assert!(before.contains(&format!("{} failed in buildPhase (exit 3): sh -c 'exit 3'", drv.name)), "{screen}");
    terminal.send("y");
    let inside = terminal.expect_after(asked, " $ ");
    terminal.send("echo \"in=$insideVar\"\r");
    terminal.expect_after(inside, "in=here");
    terminal.send("exit\r");
    let released = terminal.expect_after(inside, "released it, nix goes on");
    terminal.expect_after(released, "failed with exit code 3");
    assert_eq!(terminal.wait(), build_failed());
}

#[test]
fn answering_no_releases_the_build() {
    let drv = failing("wrap-no");
    let mut terminal = wrap(&[], &drv.expression(), &[]);
    let asked = terminal.expect(PROMPT);
    terminal.send("n");
    let released = terminal.expect_after(asked, "not entering; released the build");
    terminal.expect_after(released, "failed with exit code 3");
    assert_eq!(terminal.wait(), build_failed());
}

#[test]
fn enter_on_failure_enters_without_asking() {
    let drv = failing("wrap-enter");
    let mut terminal = wrap(&["--enter-on-failure"], &drv.expression(), &[]);
    let inside = terminal.expect(&format!("inside the build of {}", drv.name));
    terminal.send("exit 4\r");
    terminal.expect_after(inside, "left the build (status 4)");
    assert_eq!(terminal.wait(), build_failed());
    assert!(!terminal.screen().contains(PROMPT));
}

#[test]
fn a_prompt_without_an_answer_releases_the_build_after_release_after() {
    let drv = failing("wrap-timeout");
    let mut terminal = wrap(&["--release-after", "1"], &drv.expression(), &[]);
    let asked = terminal.expect(PROMPT);
    terminal.expect_after(asked, "(no answer)");
    assert_eq!(terminal.wait(), build_failed());
}

#[test]
fn two_paused_builds_are_offered_one_after_another() {
    let (first, second) = (failing("wrap-first"), failing("wrap-second"));
    let both = format!("[ ({}) ({}) ]", first.expression(), second.expression());
    let mut terminal = wrap(&[], &both, &["--keep-going"]);
    let asked = terminal.expect(PROMPT);
    terminal.send("n");
    let again = terminal.expect_after(asked, PROMPT);
    terminal.send("n");
    terminal.expect_after(again, "not entering");
    assert_eq!(terminal.wait(), build_failed());
    let screen = terminal.screen();
    for drv in [&first, &second] {
        assert!(screen.contains(&format!("{} failed in buildPhase (exit 3): sh -c 'exit 3' — {PROMPT}", drv.name)), "{screen}");
    }
}

#[test]
fn escape_sequences_in_the_failing_command_reach_the_prompt_only_as_text() {
    let drv = Drv::new("wrap-hostile").phase("buildPhase", "false '\u{1b}]0;pwned\u{7}\u{1b}[2J'");
    let mut terminal = wrap(&[], &drv.expression(), &[]);
    terminal.expect(PROMPT);
    terminal.send("n");
    assert_eq!(terminal.wait(), build_failed());
    let screen = terminal.screen();
    assert!(screen.contains("\\e]0;pwned\\u{7}\\e[2J"), "{screen}");
    assert!(!screen.contains("\u{1b}]0;pwned"), "a raw escape sequence reached the terminal");
}

#[test]
fn nix_build_runs_through_the_build_command() {
    let drv = failing("wrap-nix-build");
    let file = std::env::temp_dir().join(format!("{}.nix", drv.name));
    std::fs::write(&file, drv.expression()).unwrap();
    let mut terminal = Terminal::spawn(nix_attach(), &["build", "--no-link", "-f", file.to_str().unwrap()], 40, 160);
    let asked = terminal.expect(PROMPT);
    terminal.send("n");
    terminal.expect_after(asked, "not entering");
    assert_eq!(terminal.wait(), 1, "nix build's own status for a failed build");
    let unhooked = failing("wrap-nix-build-plain").without_hook();
    std::fs::write(&file, unhooked.expression()).unwrap();
    let plain = Command::new("nix").args(["build", "--no-link", "-f"]).arg(&file).env("NIX_REMOTE", "daemon").output().unwrap();
    assert_eq!(plain.status.code(), Some(1), "and nix build says the same without the hook and the wrapper");
    let _ = std::fs::remove_file(file);
}

#[test]
fn without_a_terminal_it_never_asks_and_summarises_each_paused_build() {
    let drv = failing("wrap-ci").attr("NIX_ATTACH_TIMEOUT", "2");
    let output = Command::new(nix_attach())
        .args(["run", "--", "nix-build", "--no-out-link", "--expr", &drv.expression()])
        .env("CI", "true")
        .env("GITHUB_ACTIONS", "true")
        .env("NIX_REMOTE", "daemon")
        .output()
        .expect("run the wrapper");
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert_eq!(output.status.code(), Some(build_failed() as i32), "{stderr}");
    let summary = format!("{} failed in buildPhase (exit 3): sh -c 'exit 3'", drv.name);
    assert!(stdout.contains(&format!("::error title=nix-attach::{summary}")), "{stdout}");
    assert!(stderr.contains(&format!("nix-attach: paused: {summary}")), "{stderr}");
    assert!(stderr.contains("original output line") && stderr.contains("failed with exit code 3"), "{stderr}");
    assert!(!stderr.contains(PROMPT) && !stdout.contains(PROMPT));
}

#[test]
fn a_signal_while_the_prompt_waits_ends_the_wrapper_and_nix() {
    let drv = failing("wrap-term");
    let mut terminal = wrap(&[], &drv.expression(), &[]);
    terminal.expect(PROMPT);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(terminal.pid()), nix::sys::signal::Signal::SIGTERM).unwrap();
    assert_eq!(terminal.wait(), 128 + 15);
}
