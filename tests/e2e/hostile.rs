//! A build that attacks the attacher. Each derivation pauses, then a
//! process it left behind tampers with its state directory while root
//! looks at it; every attack must fail, and root must never read or
//! connect to what the build pointed at.

use crate::support::pty::Terminal;
use crate::support::{exec, list, nix_attach, nix_attach_cmd, release, Build, Drv, Paused, PATIENCE};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A paused build whose tamperer has done `attack` in its state directory.
struct Attacked {
    build: Build,
    paused: Paused,
    build_dir: PathBuf,
}

/// Starts a build that pauses, then, once the test says `go`, runs
/// `attack` in its state directory (`touch attacked` when it is done).
fn attacked(prefix: &str, attack: &str, wait_for_done: bool) -> Attacked {
    let phase = format!(
        "tamper() {{ until [ -e /build/go ]; do sleep 0.1; done; cd /build/.nix-attach; {attack}; touch /build/attacked; }}\n\
         tamper &\nsh -c 'exit 3'"
    );
    let (build, paused) = Drv::new(prefix).phase("buildPhase", &phase).pause();
    let build_dir = PathBuf::from(paused.entry["build_dir"].as_str().unwrap());
    std::fs::write(build_dir.join("go"), "").unwrap();
    if wait_for_done {
        let deadline = Instant::now() + PATIENCE;
        while !build_dir.join("attacked").exists() {
            assert!(Instant::now() < deadline, "the attack never ran:\n{}", build.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Attacked { build, paused, build_dir }
}

impl Attacked {
    /// `list --json`: stdout, stderr, and whether this build was listed.
    fn list(&self) -> (String, String, bool) {
        let output = nix_attach_cmd(&["list", "--json"]);
        assert!(output.status.success());
        let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout).into_owned(), String::from_utf8_lossy(&output.stderr).into_owned());
        let listed = serde_json::from_str::<Vec<serde_json::Value>>(&stdout).unwrap().iter().any(|e| e["id"] == self.paused.id.as_str());
        (stdout, stderr, listed)
    }

    /// Ends the build. Many attacks leave it unreachable through its
    /// socket, so its agent is stopped with a signal, as root may.
    fn finish(self) {
        let agent = nix::unistd::Pid::from_raw(self.paused.pid());
        let _ = nix::sys::signal::kill(agent, nix::sys::signal::Signal::SIGTERM);
        let finished = self.build.finish();
        assert!(finished.log.contains("failed with exit code 3"), "{}", finished.log);
    }
}

fn assert_never_read_shadow(text: &str) {
    let shadow = std::fs::read_to_string("/etc/shadow").unwrap();
    let first = shadow.lines().next().unwrap();
    assert!(!text.contains(first), "root read /etc/shadow for the build");
}

#[test]
fn metadata_that_is_a_link_to_etc_shadow_is_not_followed() {
    let attack = attacked("link-shadow", "rm -f agent.json; ln -s /etc/shadow agent.json", true);
    let (stdout, stderr, listed) = attack.list();
    assert!(!listed);
    assert!(stderr.contains("cannot open the metadata file"), "{stderr}");
    assert_never_read_shadow(&(stdout + &stderr));
    attack.finish();
}

#[test]
fn a_socket_that_is_a_link_to_the_daemon_socket_is_not_connected() {
    let attack = attacked("link-daemon", "rm -f agent.sock; ln -s /nix/var/nix/daemon-socket/socket agent.sock", true);
    let output = exec(&attack.paused.id, &["true"]);
    assert_eq!(output.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&output.stderr).contains("the agent socket is not a socket"));
    attack.finish();
}

#[test]
fn a_metadata_file_of_a_gibibyte_is_refused_without_reading_it() {
    let attack = attacked("huge", "rm -f agent.json; truncate -s 1G agent.json", true);
    let (_, stderr, listed) = attack.list();
    assert!(!listed);
    assert!(stderr.contains("larger than"), "{stderr}");
    attack.finish();
}

#[test]
fn a_fifo_in_place_of_the_metadata_does_not_block() {
    let attack = attacked("fifo", "rm -f agent.json; mkfifo agent.json", true);
    let (_, stderr, listed) = attack.list();
    assert!(!listed);
    assert!(stderr.contains("is not a regular file"), "{stderr}");
    attack.finish();
}

/// The id the decoy metadata claims: root lists it only by following a link.
const DECOY_ID: &str = "decafbad0001";

/// How many rounds (the file, then the link) the swapper has made so far.
fn swaps(build_dir: &Path) -> u64 {
    std::fs::read_to_string(build_dir.join("swaps")).ok().and_then(|count| count.trim().parse().ok()).unwrap_or(0)
}

#[test]
fn swapping_the_metadata_between_check_and_use_never_leaks_the_target() {
    // The build keeps replacing its metadata, by renames, with the real
    // file or with a relative link to a decoy beside it: valid metadata of
    // the build's owner under another id. Following the link even once
    // would list the decoy.
    let swap = format!(
        "cp agent.json good; sed 's/\"id\":\"[0-9a-f]*\"/\"id\":\"{DECOY_ID}\"/' agent.json > decoy.json; n=0; \
         while :; do cp good a && mv -f a agent.json; ln -sf decoy.json b && mv -f b agent.json; \
         n=$((n+1)); echo $n > /build/swaps.new && mv -f /build/swaps.new /build/swaps; done"
    );
    let attack = attacked("swap", &swap, false);
    let deadline = Instant::now() + PATIENCE;
    while swaps(&attack.build_dir) == 0 {
        assert!(Instant::now() < deadline, "the swapper never ran:\n{}", attack.build.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    // Root lists until it has met both states, and the swapper has gone on
    // swapping meanwhile.
    let swaps_before = swaps(&attack.build_dir);
    let skipped_as = format!("skipped {}:", attack.build_dir.display());
    let (mut lists, mut saw_link, mut saw_file) = (0, false, false);
    while lists < 30 || !saw_link || !saw_file || swaps(&attack.build_dir) <= swaps_before {
        assert!(
            Instant::now() < deadline,
            "after {lists} lists, root saw the link: {saw_link}, the file: {saw_file}; swaps: {swaps_before} before, {} now",
            swaps(&attack.build_dir)
        );
        let (stdout, stderr, listed) = attack.list();
        let entries: Vec<serde_json::Value> = serde_json::from_str(&stdout).unwrap();
        assert!(!entries.iter().any(|entry| entry["id"] == DECOY_ID), "root followed the link to the decoy:\n{stdout}");
        // Other builds on the machine may be skipped too: only this one's
        // line counts.
        saw_link |= stderr.lines().any(|line| line.contains(&skipped_as) && line.contains("cannot open the metadata file"));
        saw_file |= listed;
        lists += 1;
    }
    attack.finish();
}

#[test]
fn a_build_that_claims_another_builds_id_cannot_take_its_sessions() {
    let mut victim = Drv::new("victim").phase("buildPhase", "false").start();
    let victim_paused = victim.paused();
    let claim =
        r#"until [ -e /build/claim ]; do sleep 0.1; done; sed -i "s/\"id\":\"[0-9a-f]*\"/\"id\":\"$(cat /build/claim)\"/" agent.json"#;
    let attack = attacked("impostor", claim, false);
    std::fs::write(attack.build_dir.join("claim"), &victim_paused.id).unwrap();
    let deadline = Instant::now() + PATIENCE;
    while list().iter().filter(|entry| entry["id"] == victim_paused.id.as_str()).count() < 2 {
        assert!(Instant::now() < deadline, "the impostor never claimed the id");
        std::thread::sleep(Duration::from_millis(100));
    }
    let output = exec(&victim_paused.id, &["true"]);
    assert!(String::from_utf8_lossy(&output.stderr).contains("2 waiting builds match"), "{output:?}");
    attack.finish();
    release(victim, &victim_paused);
}

#[test]
fn escape_sequences_in_a_command_never_reach_the_terminal_raw() {
    let (build, paused) = Drv::new("escapes").phase("buildPhase", "false '\u{1b}]0;pwned\u{7}\u{1b}[2J\u{9b}31m'").pause();
    for args in [&["list"][..], &["list", "--json"][..]] {
        let output = nix_attach_cmd(args);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(stdout.contains("pwned"), "{stdout}");
        assert!(!stdout.contains('\u{1b}') && !stdout.contains('\u{9b}') && !stdout.contains('\u{7}'), "{stdout:?}");
    }
    release(build, &paused);
}

#[test]
fn the_state_is_reachable_by_root_and_the_build_only() {
    let (build, paused) = Drv::new("modes").phase("buildPhase", "false").pause();
    let state = Path::new(paused.entry["build_dir"].as_str().unwrap()).join(".nix-attach");
    let mode = |name: &str| std::fs::symlink_metadata(state.join(name)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(""), 0o700);
    assert_eq!(mode("agent.sock"), 0o600);
    assert_eq!(mode("agent.json"), 0o600);
    release(build, &paused);
}

#[test]
fn under_sudo_the_client_gives_up_root_once_connected() {
    assert_gives_up_root_to(&[("SUDO_UID", "65534"), ("SUDO_GID", "65534")], 65534);
}

#[test]
fn under_doas_the_client_becomes_the_doas_user() {
    assert_gives_up_root_to(&[("DOAS_USER", crate::support::ALICE)], crate::support::uid_of(crate::support::ALICE));
}

#[test]
fn under_pkexec_the_client_becomes_the_user_pkexec_names() {
    let bob = crate::support::uid_of(crate::support::BOB);
    assert_gives_up_root_to(&[("PKEXEC_UID", &bob.to_string())], bob);
}

#[test]
fn root_that_nobody_else_asked_for_relays_as_nobody() {
    // No sudo, doas or pkexec, and no login uid here (or root's).
    assert_gives_up_root_to(&[], 65534);
}

/// Runs `exec` as root with `env`, and checks that once connected the
/// client runs as `uid` (all four of real, effective, saved and file
/// system uid) and the session goes on.
fn assert_gives_up_root_to(env: &[(&str, &str)], uid: u32) {
    let (build, paused) = Drv::new("root-drop").phase("buildPhase", "false").pause();
    let mut command = std::process::Command::new(crate::support::nix_attach());
    command
        .args(["exec", &paused.id, "--", "eval", "sleep 3; echo done"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped());
    for variable in ["SUDO_UID", "SUDO_GID", "DOAS_USER", "PKEXEC_UID"] {
        command.env_remove(variable);
    }
    let client = command.envs(env.iter().copied()).spawn().unwrap();
    let status = format!("/proc/{}/status", client.id());
    let deadline = Instant::now() + PATIENCE;
    let uid_line = loop {
        let text = std::fs::read_to_string(&status).unwrap();
        let uid = text.lines().find(|line| line.starts_with("Uid:")).unwrap().to_string();
        if !uid.contains("\t0\t") || Instant::now() > deadline {
            break uid;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let expected = uid.to_string();
    assert_eq!(uid_line.split_whitespace().skip(1).collect::<Vec<_>>(), [expected.as_str(); 4], "{uid_line}");
    let output = client.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&output.stdout), "done\n", "the session went on as uid {uid}");
    release(build, &paused);
}

#[test]
fn under_sudo_an_attach_runs_as_the_sudo_user_on_the_same_terminal() {
    let (build, paused) = Drv::new("sudo-attach").phase("buildPhase", "false").pause();
    let sudo = ["SUDO_UID=65534", "SUDO_GID=65534", nix_attach(), "attach", &paused.id];
    let mut terminal = Terminal::spawn("env", &sudo, 24, 80);
    terminal.expect(" $ ");
    let status = std::fs::read_to_string(format!("/proc/{}/status", terminal.pid())).unwrap();
    let uid_line = status.lines().find(|line| line.starts_with("Uid:")).unwrap();
    assert_eq!(uid_line.split_whitespace().skip(1).collect::<Vec<_>>(), ["65534"; 4], "{uid_line}");
    terminal.send("echo as-$((6*7))\r");
    terminal.expect("as-42");
    terminal.send("exit 4\r");
    assert_eq!(terminal.wait(), 4);
    release(build, &paused);
}
