//! Builds on a remote builder: a second machine on this one (its own
//! mount, pid and UTS namespaces, `/nix`, nix-daemon and sshd), which a
//! local daemon sends every build to (`max-jobs = 0`). nix-attach reaches
//! a build that paused there over ssh (`--via`), from here.

use crate::support::pty::Terminal;
use crate::support::remote::{free_port, RemoteBuilder, HOST};
use crate::support::{list, nix_attach, Drv};
use std::process::{Command, Output, Stdio};

const VIA: &str = "ssh://nix-attach-remote";

fn failing(prefix: &str) -> Drv {
    Drv::new(prefix).phase("buildPhase", "local insideVar=remote-here\nsh -c 'exit 3'")
}

/// `nix-attach ARGS…` here, with the remote builder's ssh options.
fn nix_attach_via(remote: &RemoteBuilder, args: &[&str]) -> Output {
    Command::new(nix_attach()).args(args).env("NIX_SSHOPTS", remote.sshopts()).stdin(Stdio::null()).output().unwrap()
}

/// A one-line error of ours, with status 125.
fn one_line_error(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(125), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "not one line: {stderr}");
    stderr
}

#[test]
fn the_wrapper_enters_a_build_that_paused_on_the_remote_builder_and_nix_reports_the_failure() {
    let remote = RemoteBuilder::start();
    let daemon = remote.local_daemon();
    let drv = failing("remote-wrapped");
    let socket = daemon.dir.join("socket");
    let (socket, conf, sshopts) = (socket.to_str().unwrap(), daemon.dir.to_str().unwrap(), remote.sshopts());
    let env = [("NIX_DAEMON_SOCKET_PATH", socket), ("NIX_CONF_DIR", conf), ("NIX_SSHOPTS", sshopts.as_str())];
    let expression = drv.expression();
    let args = ["run", "--", "nix-build", "--no-out-link", "--expr", &expression];
    let mut terminal = Terminal::spawn_with_env(nix_attach(), &args, &env, 40, 160);
    let building = terminal.expect(&format!("on '{VIA}'"));
    let asked = terminal.expect_after(building, "enter the build? [Y/n]");
    terminal.send("y");
    let inside = terminal.expect_after(asked, " $ ");
    terminal.send("echo \"in=$insideVar on $(uname -n)\"\r");
    terminal.expect_after(inside, "in=remote-here on localhost");
    terminal.send("exit\r");
    let released = terminal.expect_after(inside, "released it, nix goes on");
    terminal.expect_after(released, "failed with exit code 3");
    assert_ne!(terminal.wait(), 0);
}

#[test]
fn in_ci_a_build_paused_on_the_remote_builder_is_named_for_capture_there_and_fails_as_it_would_have() {
    let remote = RemoteBuilder::start();
    let daemon = remote.local_daemon();
    let drv = failing("remote-capture");
    let socket = daemon.dir.join("socket");
    let captures = std::env::temp_dir().join(crate::support::unique_name("remote-captures"));
    std::fs::create_dir_all(&captures).unwrap();
    let output = Command::new(nix_attach())
        .args(["run", "--capture", captures.to_str().unwrap(), "--", "nix-build", "--no-out-link", "--expr", &drv.expression()])
        .env("CI", "true")
        .env("NIX_DAEMON_SOCKET_PATH", &socket)
        .env("NIX_CONF_DIR", &daemon.dir)
        .env("NIX_SSHOPTS", remote.sshopts())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "nix's own status: {stderr}");
    assert!(stderr.contains(&format!("paused on the remote builder {VIA}; capture it there")), "{stderr}");
    assert!(!stderr.contains("could not capture") && stderr.contains("failed with exit code 3"), "{stderr}");
    assert_eq!(std::fs::read_dir(&captures).unwrap().count(), 0, "no capture file here");
}

#[test]
fn list_exec_and_release_reach_the_remote_build_and_discovery_stays_local() {
    let remote = RemoteBuilder::start();
    let daemon = remote.local_daemon();
    let (build, id, agent) = remote.build_until_paused(&daemon, &failing("remote-commands"));
    assert!(agent.starts_with("/nix/store/") && agent.ends_with("/bin/nix-attach"), "{agent}");

    assert!(list().iter().all(|entry| entry["id"] != id.as_str()), "the local list shows the remote build");
    let listed = nix_attach_via(&remote, &["list", "--json", "--via", VIA, "--agent", &agent]);
    assert!(listed.status.success(), "{}", String::from_utf8_lossy(&listed.stderr));
    let entries: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert!(entries.as_array().unwrap().iter().any(|entry| entry["id"] == id.as_str()), "{entries}");

    let echoed =
        nix_attach_via(&remote, &["exec", &id, "--via", VIA, "--agent", &agent, "--", "eval", "echo \"$insideVar\"; echo err >&2"]);
    assert_eq!(String::from_utf8_lossy(&echoed.stdout), "remote-here\n");
    assert_eq!(String::from_utf8_lossy(&echoed.stderr), "err\n");
    let failed = nix_attach_via(&remote, &["exec", &id, "--via", VIA, "--agent", &agent, "--", "false"]);
    assert_eq!(failed.status.code(), Some(1), "exec's status does not pass through");

    let released = nix_attach_via(&remote, &["release", &id, "--via", VIA, "--agent", &agent]);
    assert!(released.status.success(), "{}", String::from_utf8_lossy(&released.stderr));
    let finished = build.finish();
    assert!(!finished.status.success() && finished.log.contains("failed with exit code 3"), "{}", finished.log);

    let gone = nix_attach_via(&remote, &["attach", &id, "--via", VIA, "--agent", &agent]);
    let stderr = one_line_error(&gone);
    assert!(stderr.contains("no build is waiting") || stderr.contains(&id), "{stderr}");
}

#[test]
fn an_ssh_user_that_is_not_root_is_told_when_sudo_there_asks_for_a_password_and_goes_on_without_it() {
    let remote = RemoteBuilder::start();
    let daemon = remote.local_daemon();
    let (build, id, agent) = remote.build_until_paused(&daemon, &failing("remote-not-root"));
    let alice = format!("ssh://nix-attach-alice@{HOST}");
    let listed = nix_attach_via(&remote, &["list", "--via", &alice, "--agent", &agent]);
    let (stdout, stderr) = (String::from_utf8_lossy(&listed.stdout), String::from_utf8_lossy(&listed.stderr));
    assert!(stderr.contains("sudo on nix-attach-remote asks for a password; going on without it"), "{stderr}");
    assert!(!stdout.contains(&id), "alice sees root's build without sudo: {stdout}");
    let released = nix_attach_via(&remote, &["release", &id, "--via", VIA, "--agent", &agent]);
    assert!(released.status.success(), "{}", String::from_utf8_lossy(&released.stderr));
    let _ = build.finish();
}

#[test]
fn a_remote_without_nix_attach_and_no_agent_path_is_told_in_one_line() {
    let remote = RemoteBuilder::start();
    let stderr = one_line_error(&nix_attach_via(&remote, &["list", "--via", VIA]));
    assert!(stderr.contains("nix-attach-remote has no nix-attach on its PATH"), "{stderr}");
}

#[test]
fn an_unreachable_host_is_told_in_one_line() {
    let output = Command::new(nix_attach())
        .args(["list", "--via", "ssh://127.0.0.1"])
        .env("NIX_SSHOPTS", format!("-p {} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null", free_port()))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = one_line_error(&output);
    assert!(stderr.contains("cannot reach 127.0.0.1 over ssh") && stderr.contains("Connection refused"), "{stderr}");
}

#[test]
fn a_host_that_wants_a_password_without_a_terminal_is_told_in_one_line() {
    let remote = RemoteBuilder::start();
    let stderr = one_line_error(&nix_attach_via(&remote, &["list", "--via", &format!("ssh://nix-attach-bob@{HOST}")]));
    assert!(stderr.contains("asks for a password, and there is no terminal"), "{stderr}");
}

#[test]
fn a_build_that_names_a_program_of_its_own_as_the_agent_never_gets_it_run_on_the_remote() {
    let remote = RemoteBuilder::start();
    let daemon = remote.local_daemon();
    let evil = Drv::new("remote-evil-agent").without_hook().phase(
        "installPhase",
        "mkdir -p $out/bin\nprintf '#!/bin/sh\\ntouch /tmp/pwned\\n' > $out/bin/nix-attach\nchmod +x $out/bin/nix-attach",
    );
    let fake = "echo \"nix-attach: $name failed in buildPhase (exit 3): x — on host h, attach with \\`nix-attach attach 0123456789ab\\` \
                (sudo if no broker serves you; from another machine add \\`--via ssh://BUILDER --agent $evil/bin/nix-attach\\`); it \
                waits until 2030-01-01T00:00:00Z (300 s without a session), then fails as usual\"\nsh -c 'exit 3'";
    let hostile =
        Drv::new("remote-hostile").without_hook().attr_expr("evil", &format!("({})", evil.expression())).phase("buildPhase", fake);
    let expression = hostile.expression();
    let mut wrapper = remote.client(nix_attach(), &["run", "--", "nix-build", "--no-out-link", "--expr", &expression], &daemon);
    let output = wrapper.env("CI", "true").output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--agent /nix/store/") && stderr.contains("0123456789ab"),
        "the fake pointer never reached the wrapper: {stderr}"
    );
    assert!(remote.ssh(&["test", "!", "-e", "/tmp/pwned"]).status.success(), "the build's program ran on the remote: {stderr}");
}

#[test]
fn a_build_that_names_a_builder_of_its_own_is_never_reached_there() {
    // A local build, with the hook, that prints Nix's line for a remote
    // build, naming itself and a host of its choosing.
    let drv = Drv::new("remote-fake-builder").phase(
        "buildPhase",
        "echo \"building '/nix/store/00000000000000000000000000000000-$name.drv' on 'ssh://127.0.0.1'...\"\nsh -c 'exit 3'",
    );
    let output = Command::new(nix_attach())
        .args(["run", "--", "nix-build", "--no-out-link", "--expr", &drv.expression()])
        .env("CI", "true")
        .env("NIX_REMOTE", "daemon")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("on 'ssh://127.0.0.1'"), "the fake line never reached the wrapper: {stderr}");
    assert!(stderr.contains(&format!("{} was released", drv.name)), "not released here: {stderr}");
    assert!(!stderr.contains("could not release") && !stderr.contains("cannot reach"), "the wrapper went to the build's host: {stderr}");
}

#[test]
fn a_build_that_names_a_builder_nix_knows_for_a_build_of_this_machine_is_still_reached_here() {
    // Nix knows the builder (the wrapper reads this nix.conf), but builds
    // here (`--builders ''`); the build prints Nix's line for itself, naming
    // that builder.
    let conf = std::env::temp_dir().join(crate::support::unique_name("knows-a-builder"));
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::write(conf.join("nix.conf"), format!("builders = {VIA} x86_64-linux - 8 1\n")).unwrap();
    // Left waiting by a wrapper that went elsewhere, it would end soon.
    let drv = Drv::new("remote-fake-known").attr("NIX_ATTACH_TIMEOUT", "10").phase(
        "buildPhase",
        &format!("echo \"building '/nix/store/00000000000000000000000000000000-$name.drv' on '{VIA}'...\"\nsh -c 'exit 3'"),
    );
    let output = Command::new(nix_attach())
        .args(["run", "--", "nix-build", "--no-out-link", "--builders", "", "--expr", &drv.expression()])
        .env("CI", "true")
        .env("NIX_REMOTE", "daemon")
        .env("NIX_CONF_DIR", &conf)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&format!("on '{VIA}'")), "the line never reached the wrapper: {stderr}");
    assert!(stderr.contains(&format!("{} was released", drv.name)), "not released here: {stderr}");
    assert!(!stderr.contains("could not release") && !stderr.contains("cannot reach"), "the wrapper went to the builder: {stderr}");
    assert_eq!(output.status.code(), Some(1), "{stderr}");
}

/// nix-attach `args` at a terminal of `rows` by `cols`, with the test bed's
/// remote builder in reach (its NIX_SSHOPTS) and `env` beside.
fn at_terminal(remote: &RemoteBuilder, args: &[&str], env: &[(&str, &str)], rows: u16, cols: u16) -> Terminal {
    let sshopts = remote.sshopts();
    let env: Vec<(&str, &str)> = [("NIX_SSHOPTS", sshopts.as_str())].into_iter().chain(env.iter().copied()).collect();
    Terminal::spawn_with_env(nix_attach(), args, &env, rows, cols)
}

/// The words of the ssh running here for the build `id` (its ID is one of
/// the remote command's words).
fn ssh_for(id: &str) -> Vec<String> {
    let quoted = format!("'{id}'");
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .map(|entry| std::fs::read(entry.path().join("cmdline")).unwrap_or_default())
        .map(|cmdline| cmdline.split(|byte| *byte == 0).map(|word| String::from_utf8_lossy(word).into_owned()).collect::<Vec<_>>())
        .find(|words| words.first().is_some_and(|program| program.ends_with("ssh")) && words.iter().any(|word| word.contains(&quoted)))
        .unwrap_or_default()
}

/// Whether the ssh for the build `id` runs the framed relay, over `-T`.
fn ssh_runs_the_framed_relay(id: &str) -> bool {
    let words = ssh_for(id);
    assert!(!words.is_empty(), "no ssh runs for {id}");
    words.iter().any(|word| word == "-T") && words.iter().any(|word| word.contains("'--framed'"))
}

#[test]
fn attach_via_at_a_terminal_speaks_frames_over_ssh_t_follows_the_window_and_leaves_with_tilde_dot() {
    let remote = RemoteBuilder::start();
    let daemon = remote.local_daemon();
    let (build, id, agent) = remote.build_until_paused(&daemon, &failing("remote-framed"));
    let args = ["attach", &id, "--via", VIA, "--agent", &agent];
    let mut terminal = at_terminal(&remote, &args, &[], 40, 160);
    let inside = terminal.expect(" $ ");
    assert!(ssh_runs_the_framed_relay(&id), "attach --via runs ssh -T with the framed relay: {:?}", ssh_for(&id));
    terminal.send("stty size\r");
    let sized = terminal.expect_after(inside, "40 160");
    terminal.resize(30, 100);
    terminal.send("stty size\r");
    let resized = terminal.expect_after(sized, "30 100");
    terminal.send("~.");
    terminal.expect_after(resized, "left the session (~.)");
    assert_eq!(terminal.wait(), 255);
    drop(build);
}

#[test]
fn exec_via_at_a_terminal_speaks_frames_over_ssh_t_and_filters_what_the_builder_sends() {
    let remote = RemoteBuilder::start();
    let daemon = remote.local_daemon();
    let (build, id, agent) = remote.build_until_paused(&daemon, &failing("remote-exec-framed"));
    // It prints, sets the clipboard and queries the terminal between three
    // letters, then waits for the file the spec makes once it saw ssh.
    let script = "echo \"in=$insideVar\"; printf 'A\\033]52;c;aGVsbG8=\\007B\\033[6nC\\n'; \
                  until [ -e \"$NIX_BUILD_TOP/go\" ]; do sleep 0.05; done; exit 7";
    let args = ["exec", &id, "--via", VIA, "--agent", &agent, "--", "eval", script];
    let mut terminal = at_terminal(&remote, &args, &[], 24, 80);
    let shown = terminal.expect("in=remote-here");
    terminal.expect_after(shown, "ABC");
    assert!(ssh_runs_the_framed_relay(&id), "exec --via at a terminal runs ssh -T with the framed relay: {:?}", ssh_for(&id));
    let go = nix_attach_via(&remote, &["exec", &id, "--via", VIA, "--agent", &agent, "--", "eval", "touch \"$NIX_BUILD_TOP/go\""]);
    assert!(go.status.success(), "{}", String::from_utf8_lossy(&go.stderr));
    assert_eq!(terminal.wait(), 7, "the command's status comes back");
    drop(build);
}

/// Whether a process with `marker` for one of its words runs, here or on
/// the remote builder (its processes are in a pid namespace below this
/// one). The commands that started it hold the marker inside longer words.
fn runs(marker: &str) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().any(|entry| {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        cmdline.split(|byte| *byte == 0).any(|word| word == marker.as_bytes())
    })
}

#[test]
fn an_interrupted_exec_via_at_a_terminal_leaves_no_process_of_its_command_on_the_builder() {
    let remote = RemoteBuilder::start();
    let daemon = remote.local_daemon();
    let (build, id, agent) = remote.build_until_paused(&daemon, &failing("remote-exec-interrupted"));
    let marker = crate::support::unique_name("still-running");
    let script = format!("\"$BASH\" -c 'echo started; sleep 1000; :' {marker}");
    let args = ["exec", &id, "--via", VIA, "--agent", &agent, "--", "eval", &script];
    let mut terminal = at_terminal(&remote, &args, &[], 24, 80);
    terminal.expect("started");
    assert!(runs(&marker), "the command runs on the builder");
    terminal.send("\x03");
    terminal.wait();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while runs(&marker) {
        assert!(std::time::Instant::now() < deadline, "the command outlived the interrupted exec --via");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    drop(build);
}

/// An older nix-attach refuses `--framed` as clap refuses any unknown flag.
const REFUSES_FRAMES: &str =
    "for a in \"$@\"; do [ \"$a\" != --framed ] || { echo \"error: unexpected argument '--framed' found\" >&2; exit 2; }; done";

/// A nix-attach for the builder that runs the shell `before`, then the
/// build's agent. In the checkout, which the remote builder sees as this
/// machine does.
fn agent_after(prefix: &str, before: &str, agent: &str) -> std::path::PathBuf {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target").join(crate::support::unique_name(prefix));
    std::fs::write(&path, format!("#!/bin/sh\n{before}\nexec {agent} \"$@\"\n")).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    path
}

#[test]
fn a_builder_whose_nix_attach_speaks_no_frames_is_attached_and_runs_commands_through_ssh_t_unless_frames_are_required() {
    let remote = RemoteBuilder::start();
    let daemon = remote.local_daemon();
    let (build, id, agent) = remote.build_until_paused(&daemon, &failing("remote-older"));
    let older = agent_after("older-nix-attach", REFUSES_FRAMES, &agent);
    let args = ["attach", &id, "--via", VIA, "--agent", older.to_str().unwrap()];
    let mut terminal = at_terminal(&remote, &args, &[], 40, 160);
    let fell_back = terminal.expect("speaks no framed --via (an older one); attaching through ssh -t");
    assert!(!terminal.screen().contains("unexpected argument"), "the older one's refusal is not shown");
    let inside = terminal.expect_after(fell_back, " $ ");
    terminal.send("echo \"in=$insideVar\"\r");
    terminal.expect_after(inside, "in=remote-here");
    terminal.send("exit 4\r");
    assert_eq!(terminal.wait(), 4);
    let args = ["exec", &id, "--via", VIA, "--agent", older.to_str().unwrap(), "--", "eval", "echo \"in=$insideVar\"; exit 5"];
    let mut exec = at_terminal(&remote, &args, &[], 40, 160);
    let fell_back = exec.expect("speaks no framed --via (an older one); running through ssh -t");
    exec.expect_after(fell_back, "in=remote-here");
    assert_eq!(exec.wait(), 5);
    // The relay's signals were blocked for the relay only: a termination
    // signal still ends nix-attach once it fell back to ssh -t.
    let args = ["attach", &id, "--via", VIA, "--agent", older.to_str().unwrap()];
    let mut ended = at_terminal(&remote, &args, &[], 40, 160);
    let fell_back = ended.expect("attaching through ssh -t");
    ended.expect_after(fell_back, " $ ");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(ended.pid()), nix::sys::signal::Signal::SIGTERM).unwrap();
    ended.wait();
    // Where frames are required, a builder that says it is older (its
    // output would not pass the filter here under ssh -t) is refused.
    let mut required = at_terminal(&remote, &args, &[("NIX_ATTACH_VIA_FRAMES", "1")], 40, 160);
    required.expect("NIX_ATTACH_VIA_FRAMES=1 asks for frames only");
    assert_ne!(required.wait(), 0);
    assert!(!required.screen().contains(" $ "), "no session through ssh -t: {}", required.screen());
    let _ = std::fs::remove_file(&older);
    drop(build);
}

#[test]
fn what_the_builder_says_on_stderr_passes_the_filter_as_its_output_does() {
    let remote = RemoteBuilder::start();
    let daemon = remote.local_daemon();
    let (build, id, agent) = remote.build_until_paused(&daemon, &failing("remote-stderr"));
    // A builder whose nix-attach sets the clipboard and queries the
    // terminal on stderr, between three letters, before it relays.
    let noisy = agent_after("noisy-nix-attach", "printf 'A\\033]52;c;aGVsbG8=\\007B\\033[6nC\\n' >&2", &agent);
    let args = ["attach", &id, "--via", VIA, "--agent", noisy.to_str().unwrap()];
    let mut terminal = at_terminal(&remote, &args, &[], 40, 160);
    let said = terminal.expect("ABC");
    let inside = terminal.expect_after(said, " $ ");
    terminal.send("exit 4\r");
    terminal.expect_after(inside, "exit");
    assert_eq!(terminal.wait(), 4);
    let _ = std::fs::remove_file(&noisy);
    drop(build);
}

#[test]
fn what_the_builder_prints_for_list_and_release_passes_the_filter_on_a_terminal() {
    let remote = RemoteBuilder::start();
    let daemon = remote.local_daemon();
    let (build, id, agent) = remote.build_until_paused(&daemon, &failing("remote-list-filtered"));
    // A builder whose nix-attach sets the clipboard and queries the
    // terminal on stdout and on stderr, between letters, then does its work.
    let noisy = agent_after(
        "noisy-list",
        "printf 'A\\033]52;c;aGVsbG8=\\007B\\033[6nC\\n'; printf 'D\\033\\033]52;c;aGk=\\007E\\033[cF\\n' >&2",
        &agent,
    );
    for command in ["list", "release"] {
        let args = [command, "--via", VIA, "--agent", noisy.to_str().unwrap()];
        let args: Vec<&str> = args.into_iter().chain((command == "release").then_some(id.as_str())).collect();
        let mut terminal = at_terminal(&remote, &args, &[], 40, 160);
        terminal.expect("ABC");
        terminal.expect("DEF");
        assert_eq!(terminal.wait(), 0, "{command}: {}", terminal.screen());
    }
    let _ = std::fs::remove_file(&noisy);
    drop(build);
}

#[test]
fn nix_attach_via_frames_0_asks_for_ssh_t() {
    let remote = RemoteBuilder::start();
    let daemon = remote.local_daemon();
    let (build, id, agent) = remote.build_until_paused(&daemon, &failing("remote-ssh-t"));
    let args = ["attach", &id, "--via", VIA, "--agent", &agent];
    let mut terminal = at_terminal(&remote, &args, &[("NIX_ATTACH_VIA_FRAMES", "0")], 40, 160);
    let inside = terminal.expect(" $ ");
    let ssh = ssh_for(&id);
    assert!(ssh.iter().any(|word| word == "-t") && !ssh_runs_the_framed_relay(&id), "{ssh:?}");
    terminal.send("stty size\r");
    terminal.expect_after(inside, "40 160");
    terminal.send("exit 4\r");
    assert_eq!(terminal.wait(), 4);
    drop(build);
}
