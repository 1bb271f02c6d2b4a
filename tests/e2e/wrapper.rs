//! `nix-attach build` and `nix-attach run`, driven like a person at a
//! terminal, and without one as in CI.

use crate::support::pty::Terminal;
use crate::support::{list, nix_attach, nix_attach_cmd, Drv, PATIENCE};
use std::os::unix::process::CommandExt;
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
fn with_patch_dir_what_the_session_changed_in_the_source_is_kept_as_a_patch_before_the_build_is_released() {
    let drv = crate::inside::with_source("wrap-patch");
    let (mut terminal, dir, inside) = entered_with_patch_dir(&drv, "sed -i 's/return 1/return 0/' main.c; exit\r");
    let patch = dir.join(format!("{}.patch", drv.name));
    let kept = terminal.expect_after(inside, &format!("your changes to its source are in {}; released it", patch.display()));
    terminal.expect_after(kept, "failed with exit code 3");
    assert_eq!(terminal.wait(), build_failed());
    assert_eq!(std::fs::read_to_string(&patch).unwrap(), crate::inside::MAIN_C_FIXED);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn where_the_patch_cannot_be_made_the_wrapper_says_why_and_asks_whether_the_build_should_wait() {
    // The pristine tree, and so the patch, cannot be made again.
    let drv = failing("wrap-patch-fails").phase("unpackPhase", crate::inside::UNPACKS_ONCE);
    let (mut terminal, dir, inside) = entered_with_patch_dir(&drv, "exit\r");
    let why = terminal.expect_after(inside, "but its changes were not kept: `nix-attach diff` ended with status");
    let question = terminal.expect_after(why, "keep the build waiting, to take your changes with `nix-attach diff`? [Y/n]");
    terminal.send("n");
    let released = terminal.expect_after(question, "released it, nix goes on");
    terminal.expect_after(released, "failed with exit code 3");
    assert_eq!(terminal.wait(), build_failed());
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "nothing partial is left");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `drv` built through the wrapper with `--patch-dir` a new directory,
/// entered at the prompt, where `typed` is typed; returns the terminal, the
/// directory and where the session's prompt was.
fn entered_with_patch_dir(drv: &Drv, typed: &str) -> (Terminal, std::path::PathBuf, usize) {
    let dir = std::env::temp_dir().join(crate::support::unique_name("patch-dir"));
    std::fs::create_dir(&dir).unwrap();
    let mut terminal = wrap(&["--patch-dir", dir.to_str().unwrap()], &drv.expression(), &[]);
    let asked = terminal.expect(PROMPT);
    terminal.send("y");
    let inside = terminal.expect_after(asked, " $ ");
    terminal.send(typed);
    (terminal, dir, inside)
}

#[test]
fn a_patch_dir_that_is_no_directory_is_said_in_one_line_before_nix_runs() {
    let refused = nix_attach_cmd(&["run", "--patch-dir", "/nonexistent", "--", "sh", "-c", "echo nix ran"]);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && said.contains("--patch-dir /nonexistent is not a directory"), "{said}");
    assert!(!String::from_utf8_lossy(&refused.stdout).contains("nix ran"), "nix never ran");
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

/// `nix-attach run FLAGS -- nix-build …` in CI (no terminal, `CI` and
/// `GITHUB_ACTIONS` set), with its output in files; ends it if it runs
/// longer than the test's patience.
struct InCi {
    child: std::process::Child,
    stdout: std::path::PathBuf,
    stderr: std::path::PathBuf,
}

impl InCi {
    fn start(flags: &[&str], drv: &Drv) -> InCi {
        InCi::over(flags, drv, &["nix-build", "--no-out-link", "--expr", &drv.expression()])
    }

    /// `nix-attach run FLAGS -- NIX…`, for `drv`.
    fn over(flags: &[&str], drv: &Drv, nix: &[&str]) -> InCi {
        let dir = std::env::temp_dir();
        let (stdout, stderr) = (dir.join(format!("{}.out", drv.name)), dir.join(format!("{}.err", drv.name)));
        let child = Command::new(nix_attach())
            .arg("run")
            .args(flags)
            .arg("--")
            .args(nix)
            .env("CI", "true")
            .env("GITHUB_ACTIONS", "true")
            .env("NIX_REMOTE", "daemon")
            .stdin(std::process::Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .process_group(0)
            .spawn()
            .expect("run the wrapper");
        InCi { child, stdout, stderr }
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Waits for the wrapper: its status, stdout and stderr.
    fn finish(mut self) -> (i32, String, String) {
        let deadline = std::time::Instant::now() + PATIENCE;
        while self.running() {
            if std::time::Instant::now() > deadline {
                // The wrapper and nix with it, so no build is left waiting.
                let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(self.child.id() as i32), nix::sys::signal::Signal::SIGKILL);
                panic!("the wrapper still runs after {PATIENCE:?}: {}", std::fs::read_to_string(&self.stderr).unwrap_or_default());
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let code = self.child.wait().unwrap().code().unwrap_or(-1);
        let read = |path: &std::path::Path| std::fs::read_to_string(path).unwrap_or_default();
        let (stdout, stderr) = (read(&self.stdout), read(&self.stderr));
        let _ = (std::fs::remove_file(&self.stdout), std::fs::remove_file(&self.stderr));
        (code, stdout, stderr)
    }
}

#[test]
fn without_a_terminal_it_never_asks_releases_at_once_and_summarises_each_paused_build() {
    // The build would wait 300 s; in CI nobody can answer, so it must not.
    let drv = failing("wrap-ci");
    let (code, stdout, stderr) = InCi::start(&[], &drv).finish();
    assert_eq!(code, build_failed() as i32, "{stderr}");
    let summary = format!("{} failed in buildPhase (exit 3): sh -c 'exit 3'", drv.name);
    assert!(stdout.contains(&format!("::error title=nix-attach::{summary}")), "{stdout}");
    assert!(stderr.contains(&format!("nix-attach: paused: {summary} — released at once")), "{stderr}");
    assert!(stderr.contains(&format!("{} was released", drv.name)), "not released by the wrapper: {stderr}");
    assert!(stderr.contains("only builds with the attach hook pause: /etc/nix/nix.conf names no nix-attach-pre-build-hook"), "{stderr}");
    assert!(stderr.contains("original output line") && stderr.contains("failed with exit code 3"), "{stderr}");
    assert!(!stderr.contains(PROMPT) && !stdout.contains(PROMPT));
}

#[test]
fn in_ci_over_nix_build_with_or_without_build_logs_the_pointer_shows_once_and_is_summarised() {
    for logs in [&[][..], &["-L"][..]] {
        let drv = failing(if logs.is_empty() { "wrap-ci-nix-build" } else { "wrap-ci-nix-build-logs" });
        let expression = drv.expression();
        let nix = [&["nix", "build", "--no-link", "--impure", "--expr", &expression], logs].concat();
        let (code, _, stderr) = InCi::over(&[], &drv, &nix).finish();
        assert_eq!(code, 1, "nix build's own status: {stderr}");
        let pointers = stderr.lines().filter(|line| line.contains("attach with `nix-attach attach ")).count();
        assert_eq!(pointers, 1, "{logs:?}: the pointer is not shown once:\n{stderr}");
        let summary = format!("nix-attach: paused: {} failed in buildPhase (exit 3): sh -c 'exit 3' — released at once", drv.name);
        assert!(stderr.contains(&summary), "{logs:?}: {stderr}");
    }
}

#[test]
fn in_ci_release_after_keeps_a_paused_build_that_long_then_releases_it() {
    let drv = failing("wrap-ci-after").attr("NIX_ATTACH_TIMEOUT", "3600");
    let (code, _, stderr) = InCi::start(&["--release-after", "2"], &drv).finish();
    assert_eq!(code, build_failed() as i32, "{stderr}");
    assert!(stderr.contains(&format!("{} was released", drv.name)), "{stderr}");
    assert!(stderr.contains("it waited 2 s for `nix-attach attach"), "{stderr}");
}

#[test]
fn in_ci_no_enter_leaves_a_paused_build_waiting_for_its_own_timeout() {
    let drv = failing("wrap-ci-no-enter");
    let mut wrapper = InCi::start(&["--no-enter"], &drv);
    let deadline = std::time::Instant::now() + PATIENCE;
    let id = loop {
        if let Some(entry) = list().into_iter().find(|entry| entry["drv"] == drv.name.as_str()) {
            break entry["id"].as_str().unwrap().to_string();
        }
        assert!(wrapper.running(), "the wrapper ended without leaving the build waiting");
        assert!(std::time::Instant::now() < deadline, "the build never paused");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(nix_attach_cmd(&["release", &id]).status.success(), "the build no longer waited when the test released it");
    let (code, _, stderr) = wrapper.finish();
    assert_eq!(code, build_failed() as i32, "{stderr}");
    assert!(stderr.contains("until its own timeout"), "{stderr}");
}

#[test]
fn a_signal_while_the_prompt_waits_ends_the_wrapper_and_nix() {
    let drv = failing("wrap-term");
    let mut terminal = wrap(&[], &drv.expression(), &[]);
    terminal.expect(PROMPT);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(terminal.pid()), nix::sys::signal::Signal::SIGTERM).unwrap();
    assert_eq!(terminal.wait(), 128 + 15);
}

/// The most memory a process has used (VmHWM), in KiB.
fn peak_memory_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status.lines().find_map(|line| line.strip_prefix("VmHWM:")).and_then(|kib| kib.split_whitespace().next()?.parse().ok()).unwrap()
}

#[test]
fn output_held_during_a_long_session_costs_the_wrapper_no_memory_and_comes_back_whole() {
    // nix goes on printing 24 MiB (as 32 MiB of base64) while a person is
    // inside a build; the wrapper holds it and shows it after the session.
    const FLOOD_BYTES: usize = 24 * 1024 * 1024;
    let drv = failing("wrap-flood");
    let dir = std::env::temp_dir().join(&drv.name);
    std::fs::create_dir_all(&dir).unwrap();
    let script = r#"
        nix-build --no-out-link --expr "$1" &
        until [ -e "$2/flood" ]; do sleep 0.05; done
        echo START-OF-FLOOD; head -c 25165824 /dev/zero | base64 -w 1000; echo END-OF-FLOOD
        touch "$2/flooded"
        wait $!
    "#;
    let args = ["run", "--enter-on-failure", "--", "bash", "-c", script, "bash", &drv.expression(), dir.to_str().unwrap()];
    let mut terminal = Terminal::spawn(nix_attach(), &args, 40, 160);
    let inside = terminal.expect(&format!("inside the build of {}", drv.name));
    terminal.expect_after(inside, " $ ");
    std::fs::write(dir.join("flood"), "").unwrap();
    let deadline = std::time::Instant::now() + PATIENCE;
    while !dir.join("flooded").exists() {
        assert!(std::time::Instant::now() < deadline, "the flood was never read");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let peak = peak_memory_kib(terminal.pid());
    terminal.send("exit\r");
    let released = terminal.expect_after(inside, "released it, nix goes on");
    let start = terminal.expect_after(released, "START-OF-FLOOD");
    let end = terminal.expect_after(start, "END-OF-FLOOD");
    terminal.expect_after(end, "failed with exit code 3");
    assert_eq!(terminal.wait(), build_failed());
    let screen = terminal.screen();
    let shown = screen[start..end].bytes().filter(|b| *b == b'A').count();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(peak < 16 * 1024, "the wrapper used {peak} KiB while holding the output");
    assert_eq!(shown, FLOOD_BYTES / 3 * 4, "held output was lost");
}

#[test]
fn without_a_terminal_the_wrapper_ends_when_stdout_closes_before_stderr() {
    // nix writes to both; here stdout closes first, then stderr carries the
    // last words. Each round must end, whichever pipe the wrapper sees end
    // first.
    for round in 0..20 {
        let mut wrapper = Command::new(nix_attach())
            .args(["run", "--", "sh", "-c", "exec >&-; echo last words >&2"])
            .env("CI", "true")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let status = loop {
            if let Some(status) = wrapper.try_wait().unwrap() {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = wrapper.kill();
                panic!("round {round}: the wrapper never ended");
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        assert!(status.success(), "round {round}");
        let mut said = String::new();
        std::io::Read::read_to_string(&mut wrapper.stderr.take().unwrap(), &mut said).unwrap();
        assert!(said.contains("last words"), "round {round}: {said}");
    }
}
