//! Faults and load: whatever breaks, a failed build still fails with its
//! exit code and its whole log, sessions come and go independently, and
//! nothing of ours is left behind.

use crate::support::pty::Terminal;
use crate::support::{alive, exec, list, nix_attach, release, Build, Drv, Paused, PATIENCE};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const FAILING: &str = "echo \"original output\"\nsh -c 'exit 3'";

fn build_dir(paused: &Paused) -> PathBuf {
    PathBuf::from(paused.entry["build_dir"].as_str().unwrap())
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "{what} never happened");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn assert_failed_with_3(build: Build) {
    let finished = build.finish();
    assert!(!finished.status.success());
    assert!(finished.log.contains("original output") && finished.log.contains("failed with exit code 3"), "{}", finished.log);
}

#[test]
fn a_client_killed_mid_session_hangs_up_the_shell_and_the_build_waits_on() {
    let (build, paused) = Drv::new("client-killed").phase("buildPhase", FAILING).pause();
    let terminal = Terminal::spawn(nix_attach(), &["attach", &paused.id], 24, 80);
    terminal.expect(" $ ");
    let mut terminal = terminal;
    // Bash ends on the hang-up either through SIGHUP or through reading
    // end-of-file from the hung-up terminal, whichever it sees first; its
    // traps run to their end, even one that takes a while.
    terminal.send("trap 'sleep 0.5; echo hung-up > /build/hup' HUP EXIT; echo trap-$((1+1))\r");
    terminal.expect("trap-2");
    kill(Pid::from_raw(terminal.pid()), Signal::SIGKILL).unwrap();
    wait_until("the shell's hang-up", || build_dir(&paused).join("hup").exists());
    assert!(alive(paused.pid()));
    assert_eq!(String::from_utf8_lossy(&exec(&paused.id, &["echo", "again"]).stdout), "again\n");
    release(build, &paused);
}

#[test]
fn a_killed_agent_lets_the_build_fail_with_its_exit_code_and_log() {
    let (build, paused) = Drv::new("agent-killed").phase("buildPhase", FAILING).pause();
    kill(Pid::from_raw(paused.pid()), Signal::SIGKILL).unwrap();
    assert_failed_with_3(build);
}

#[test]
fn an_interrupted_nix_build_leaves_no_process_and_no_files() {
    let (build, paused) = Drv::new("interrupted").phase("buildPhase", FAILING).pause();
    kill(Pid::from_raw(build.pid()), Signal::SIGINT).unwrap();
    let finished = build.finish();
    assert!(!finished.status.success());
    wait_until("the agent's end", || !alive(paused.pid()));
    wait_until("the build directory's removal", || !build_dir(&paused).exists());
}

#[test]
fn a_snapshot_that_cannot_be_written_is_reported_and_the_build_fails_as_usual() {
    // A file size limit makes every write of the snapshot fail, as a full
    // disk would; SIGXFSZ is ignored so that the writes fail instead.
    let phase = format!("trap '' XFSZ\nulimit -f 1\n{FAILING}");
    let finished = Drv::new("no-space").phase("buildPhase", &phase).build();
    assert!(finished.log.contains("cannot write the shell snapshot"), "{}", finished.log);
    assert!(finished.log.contains("failed with exit code 3"), "{}", finished.log);
}

#[test]
fn eight_builds_paused_at_once_are_all_listed_and_each_can_be_entered() {
    let mut builds: Vec<Build> = (0..8).map(|_| Drv::new("eight").phase("buildPhase", FAILING).start()).collect();
    let paused: Vec<Paused> = builds.iter_mut().map(Build::paused).collect();
    let listed = list();
    for (n, one) in paused.iter().enumerate() {
        assert!(listed.iter().any(|entry| entry["id"] == one.id.as_str()));
        let said = exec(&one.id, &["eval", &format!("echo build-{n}")]);
        assert_eq!(String::from_utf8_lossy(&said.stdout), format!("build-{n}\n"));
    }
    for (build, one) in builds.into_iter().zip(&paused) {
        release(build, one);
    }
}

/// The sessions an agent serves at once (`MAX_SESSIONS` in
/// `agent/server.rs`; README, "opens 20 sessions at once").
const MAX_SESSIONS: usize = 16;

#[test]
fn twenty_clients_at_once_each_get_a_shell_or_a_clear_refusal() {
    let (build, paused) = Drv::new("twenty").phase("buildPhase", FAILING).pause();
    let dir = build_dir(&paused);
    // Every served session stays open until the test says `go`, so all
    // twenty connect while the sessions before them are still open.
    let mut clients: Vec<Child> = (0..20)
        .map(|n| {
            let code = format!("touch /build/in-{n}; until [ -e /build/go ]; do sleep 0.1; done; echo served");
            Command::new(nix_attach())
                .args(["exec", &paused.id, "--", "eval", &code])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let inside = |dir: &PathBuf| (0..20).filter(|n| dir.join(format!("in-{n}")).exists()).count();
    wait_until("every client inside or gone", || {
        let gone = clients.iter_mut().filter_map(|client| client.try_wait().unwrap()).count();
        inside(&dir) + gone >= 20
    });
    assert_eq!(inside(&dir), MAX_SESSIONS, "sessions open at once");
    std::fs::write(dir.join("go"), "").unwrap();
    let outcomes: Vec<Output> = clients.into_iter().map(|client| client.wait_with_output().unwrap()).collect();
    let served = outcomes.iter().filter(|o| o.status.success() && String::from_utf8_lossy(&o.stdout) == "served\n").count();
    let refusal = format!("too many sessions ({MAX_SESSIONS} are open)");
    let refused = outcomes.iter().filter(|o| o.status.code() == Some(125) && String::from_utf8_lossy(&o.stderr).contains(&refusal)).count();
    assert_eq!((served, refused), (MAX_SESSIONS, 20 - MAX_SESSIONS), "{outcomes:#?}");
    let finished = release(build, &paused);
    assert!(finished.log.contains("failed with exit code 3"));
    assert!(!alive(paused.pid()));
}

/// The idle timeout of the next test: long enough that the test attaches
/// well within it, however loaded the machine.
const IDLE_TIMEOUT: u64 = 10;

#[test]
fn the_timeout_counts_idle_time_only() {
    let timeout = IDLE_TIMEOUT.to_string();
    let (build, paused) = Drv::new("idle").attr("NIX_ATTACH_TIMEOUT", &timeout).phase("buildPhase", FAILING).pause();
    let mut terminal = Terminal::spawn(nix_attach(), &["attach", &paused.id], 24, 80);
    terminal.expect(" $ ");
    // Hold the session past the moment the wait would have ended had it
    // counted from the agent's start (`since`, in whole seconds).
    let since = UNIX_EPOCH + Duration::from_secs(paused.entry["since"].as_u64().expect("since"));
    let would_have_ended = since + Duration::from_secs(IDLE_TIMEOUT + 2);
    if let Ok(left) = would_have_ended.duration_since(SystemTime::now()) {
        std::thread::sleep(left);
    }
    assert!(list().iter().any(|entry| entry["id"] == paused.id.as_str()), "an open session was cut by the timeout");
    terminal.send("echo still-$((6*7))\r");
    terminal.expect("still-42");
    terminal.send("exit\r");
    terminal.wait();
    let session_ended = Instant::now();
    let finished = build.finish();
    assert!(finished.log.contains("waited its idle timeout out"), "{}", finished.log);
    let idle = session_ended.elapsed();
    assert!(idle >= Duration::from_secs(IDLE_TIMEOUT - 2), "the build ended {idle:?} after the session, before its idle timeout");
}

#[test]
fn a_malformed_stream_ends_only_its_own_session() {
    let (build, paused) = Drv::new("garbage").phase("buildPhase", FAILING).pause();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let socket = build_dir(&paused).join(".nix-attach/agent.sock");
        let mut raw = tokio::net::UnixStream::connect(&socket).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut raw, b"\x00\x00\x00\x05\x09garbage that is no frame").await.unwrap();
        let mut answer = Vec::new();
        let _ = tokio::io::AsyncReadExt::read_to_end(&mut raw, &mut answer).await;
        assert!(String::from_utf8_lossy(&answer).contains("bad hello"), "{answer:?}");
    });
    assert_eq!(String::from_utf8_lossy(&exec(&paused.id, &["echo", "still here"]).stdout), "still here\n");
    release(build, &paused);
}
