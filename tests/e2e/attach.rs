//! `nix-attach attach` under a real PTY: a person types into the build's
//! shell, interrupts commands, resizes the window and leaves.

use crate::support::pty::Terminal;
use crate::support::{nix_attach, nix_attach_with_input, release, Drv};

const PROMPT: &str = " $ ";

fn attach(id: &str, rows: u16, cols: u16) -> Terminal {
    let terminal = Terminal::spawn(nix_attach(), &["attach", id], rows, cols);
    terminal.expect(PROMPT);
    terminal
}

#[test]
fn typed_commands_run_in_the_build_and_the_exit_status_comes_back() {
    let (build, paused) = Drv::new("typed").phase("buildPhase", "local answer=42\nfalse").pause();
    let mut terminal = attach(&paused.id, 24, 80);
    assert!(terminal.screen().contains(&format!("inside the build of {}", build.name)));
    terminal.send("echo \"answer=$answer phase=$curPhase\"\r");
    terminal.expect("answer=42 phase=buildPhase");
    terminal.send("exit 5\r");
    assert_eq!(terminal.wait(), 5);
    release(build, &paused);
}

#[test]
fn ctrl_c_stops_a_foreground_command_without_ending_the_session() {
    let (build, paused) = Drv::new("ctrlc").phase("buildPhase", "false").pause();
    let mut terminal = attach(&paused.id, 24, 80);
    terminal.send("echo sleep-$((1+1)); sleep 4321\r");
    let at = terminal.expect("sleep-2");
    // A person presses Ctrl-C once the command runs: wait until it does,
    // or the key races the shell handing the terminal to it.
    wait_for_process(&["sleep", "4321"]);
    terminal.send("\x03");
    // A person types on once the prompt is back; typeahead racing the
    // shell's job control is not what is tested here.
    let prompt = terminal.expect_after(at, PROMPT);
    terminal.send("echo status=$?\r");
    terminal.expect_after(prompt, "status=130");
    terminal.send("exit 0\r");
    assert_eq!(terminal.wait(), 0);
    release(build, &paused);
}

/// Waits until a process with exactly this command line runs.
fn wait_for_process(argv: &[&str]) {
    let wanted: Vec<u8> = argv.iter().flat_map(|arg| arg.bytes().chain([0])).collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let running = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .any(|entry| std::fs::read(entry.path().join("cmdline")).is_ok_and(|cmdline| cmdline == wanted));
        if running {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{argv:?} never ran");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn a_window_resize_reaches_the_shell() {
    let (build, paused) = Drv::new("resize").phase("buildPhase", "false").pause();
    let mut terminal = attach(&paused.id, 24, 80);
    terminal.send("stty size\r");
    let at = terminal.expect("24 80");
    terminal.resize(40, 120);
    // The new size travels beside the typed keys, so a command typed at
    // once may still see the old one: ask until the new size shows.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut from = at;
    loop {
        terminal.send("stty size\r");
        from = terminal.expect_after(from, PROMPT);
        if terminal.screen()[at..].contains("40 120") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the new size never reached the shell:\n{}", terminal.screen());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    terminal.send("exit\r");
    assert_eq!(terminal.wait(), 0);
    release(build, &paused);
}

#[test]
fn two_sessions_run_at_once_and_a_build_can_be_entered_again() {
    let (build, paused) = Drv::new("twice").phase("buildPhase", "false").pause();
    let mut first = attach(&paused.id, 24, 80);
    let mut second = attach(&paused.id, 24, 80);
    first.send("mine=first; echo \"first sees ${mine}\"\r");
    first.expect("first sees first");
    second.send("echo \"second sees ${mine-nothing}\"\r");
    second.expect("second sees nothing");
    first.send("exit 1\r");
    second.send("exit 2\r");
    assert_eq!((first.wait(), second.wait()), (1, 2));
    let mut again = attach(&paused.id, 24, 80);
    again.send("echo \"again in $curPhase\"\r");
    again.expect("again in buildPhase");
    again.send("exit 3\r");
    assert_eq!(again.wait(), 3);
    release(build, &paused);
}

#[test]
fn attach_works_without_a_terminal() {
    let (build, paused) = Drv::new("piped").phase("buildPhase", "false").pause();
    let session = nix_attach_with_input(&["attach", &paused.id], "echo \"piped into $curPhase\"\nexit 6\n");
    assert_eq!(session.status.code(), Some(6));
    assert!(String::from_utf8_lossy(&session.stdout).contains("piped into buildPhase"));
    release(build, &paused);
}

#[test]
fn history_carries_over_from_one_session_to_the_next() {
    let (build, paused) = Drv::new("history").phase("buildPhase", "false").pause();
    let mut first = attach(&paused.id, 24, 80);
    first.send("echo remembered-$((40+2))\r");
    first.expect("remembered-42");
    first.send("exit\r");
    first.wait();
    let mut second = attach(&paused.id, 24, 80);
    second.send("history | grep -c 'remembered-\\$'\r");
    second.expect("\r\n1\r\n");
    second.send("exit\r");
    second.wait();
    release(build, &paused);
}

#[test]
fn commands_run_with_exec_hold_no_session_terminal_open() {
    let (build, paused) = Drv::new("no-fd-leak").phase("buildPhase", "false").pause();
    let mut terminal = attach(&paused.id, 24, 80);
    let listing = crate::support::eval(&paused.id, "for fd in /proc/$$/fd/*; do readlink \"$fd\" || :; done");
    assert!(!listing.contains("ptmx") && !listing.contains("/dev/pts"), "{listing}");
    terminal.send("exit\r");
    terminal.wait();
    release(build, &paused);
}

#[test]
fn an_attach_ends_when_its_input_ends_even_in_a_shell_started_for_it() {
    let (build, paused) = Drv::new("input-ends").phase("buildPhase", "false").pause();
    // Each a terminal type the spare was not started for, so each shell is
    // new, and the end of input comes as soon as the terminal is handed over.
    for term in ["vt100", "xterm", "vt100", "xterm"] {
        let mut client = std::process::Command::new(nix_attach())
            .args(["attach", &paused.id])
            .env("TERM", term)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let status = loop {
            if let Some(status) = client.try_wait().unwrap() {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = client.kill();
                panic!("a session for {term} outlived its input");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        assert_eq!(status.code(), Some(0), "{term}");
    }
    release(build, &paused);
}

/// What a build's shell prints to set the clipboard, then to ask the
/// terminal where its cursor is, between three letters.
const CLIPBOARD_AND_QUERY: &str = "printf 'A\\033]52;c;aGVsbG8=\\007B\\033[6nC\\n'";

#[test]
fn the_builds_shell_reaches_neither_the_clipboard_nor_the_terminals_answers_unless_allowed() {
    let (build, paused) = Drv::new("terminal-filter").phase("buildPhase", "false").pause();
    let mut filtered = attach(&paused.id, 24, 80);
    filtered.send(&format!("{CLIPBOARD_AND_QUERY}\r"));
    filtered.expect("ABC");
    filtered.send("exit\r");
    filtered.wait();

    let mut allowed = Terminal::spawn(nix_attach(), &["attach", "--allow-clipboard-and-queries", &paused.id], 24, 80);
    allowed.expect(PROMPT);
    allowed.send(&format!("{CLIPBOARD_AND_QUERY}\r"));
    allowed.expect("A\x1b]52;c;aGVsbG8=\x07B\x1b[6nC");
    allowed.send("exit\r");
    allowed.wait();
    release(build, &paused);
}

#[test]
fn exec_filters_what_it_shows_on_a_terminal_and_passes_a_pipe_byte_for_byte() {
    let (build, paused) = Drv::new("exec-filter").phase("buildPhase", "false").pause();
    let mut on_terminal = Terminal::spawn(nix_attach(), &["exec", &paused.id, "--", "eval", CLIPBOARD_AND_QUERY], 24, 80);
    on_terminal.expect("ABC");
    assert_eq!(on_terminal.wait(), 0);
    let piped = nix_attach_with_input(&["exec", &paused.id, "--", "eval", CLIPBOARD_AND_QUERY], "");
    assert_eq!(piped.stdout, b"A\x1b]52;c;aGVsbG8=\x07B\x1b[6nC\n");
    release(build, &paused);
}
