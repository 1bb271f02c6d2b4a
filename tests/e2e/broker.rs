//! The broker lets each ordinary user into the builds that user asked for,
//! without sudo, and into no others. Two ordinary users of the test bed,
//! alice and bob, build through the real daemon; a broker runs as root on
//! a socket of the test's own.

use crate::support::broker::{unit_value, Broker};
use crate::support::pty::Terminal;
use crate::support::{
    alive, as_user, list, nix_attach_cmd, readable_nix_attach, release, uid_of, Build, Drv, Paused, ALICE, BOB, PATIENCE,
};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

/// A build alice started, paused, as root sees it.
fn alices_paused_build(prefix: &str) -> (Build, Paused) {
    let drv = Drv::new(prefix).phase("buildPhase", "local secret=alices\nsh -c 'exit 3'");
    let mut build = drv.start_as(ALICE);
    let paused = build.paused();
    (build, paused)
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn root_sees_who_asked_for_each_build() {
    let (build, paused) = alices_paused_build("requested");
    assert_eq!(paused.entry["requested_by_uid"], uid_of(ALICE));
    assert_eq!(paused.entry["requested_by_pid"], build.pid(), "the pid of alice's nix-build");
    let root_build = Drv::new("requested-by-root").phase("buildPhase", "false");
    let (other, other_paused) = root_build.pause();
    assert_eq!(other_paused.entry["requested_by_uid"], 0);
    release(other, &other_paused);
    release(build, &paused);
}

#[test]
fn the_owner_lists_and_execs_in_their_build_without_sudo() {
    let broker = Broker::start();
    let (build, paused) = alices_paused_build("owner");
    assert!(broker.ids_seen_by(ALICE).contains(&paused.id));
    let exec = broker.run_as(ALICE, &["exec", &paused.id, "--", "eval", "echo $secret; exit 4"]);
    assert_eq!(String::from_utf8_lossy(&exec.stdout), "alices\n", "{}", stderr(&exec));
    assert_eq!(exec.status.code(), Some(4));
    let released = broker.run_as(ALICE, &["release", &paused.id]);
    assert!(released.status.success(), "{}", stderr(&released));
    assert!(build.finish().log.contains("failed with exit code 3"));
}

/// alice's `nix-attach attach ID` on a PTY, through `broker`.
fn alice_attaches(broker: &Broker, id: &str) -> Terminal {
    let (user, group, socket) =
        (format!("--reuid={ALICE}"), format!("--regid={ALICE}"), format!("NIX_ATTACH_BROKER={}", broker.socket.display()));
    Terminal::spawn("setpriv", &[&user, &group, "--init-groups", "env", &socket, readable_nix_attach(), "attach", id], 24, 100)
}

#[test]
fn the_owner_attaches_on_a_terminal_without_sudo_and_the_session_outlives_the_broker() {
    let mut broker = Broker::start();
    let (build, paused) = alices_paused_build("owner-attach");
    let mut terminal = alice_attaches(&broker, &paused.id);
    let inside = terminal.expect(" $ ");
    // The broker is out of the path once the session is open.
    broker.process.kill().unwrap();
    broker.process.wait().unwrap();
    terminal.send("echo \"whoami=$(id -u) secret=$secret\"\r");
    terminal.expect_after(inside, "secret=alices");
    terminal.send("exit\r");
    assert_eq!(terminal.wait(), 0);
    release(build, &paused);
}

#[test]
fn another_user_sees_nothing_and_is_refused_with_one_line() {
    let broker = Broker::start();
    let (build, paused) = alices_paused_build("not-bobs");
    assert!(!broker.ids_seen_by(BOB).contains(&paused.id), "bob sees alice's build");
    for args in [vec!["attach", paused.id.as_str()], vec!["exec", &paused.id, "--", "true"], vec!["release", &paused.id]] {
        let output = broker.run_as(BOB, &args);
        assert_eq!(output.status.code(), Some(125), "{args:?}");
        let said = stderr(&output);
        assert_eq!(said.lines().count(), 1, "{args:?}: {said}");
        assert!(said.contains(&format!("no waiting build matches `{}`", paused.id)), "{args:?}: {said}");
    }
    assert!(list().iter().any(|entry| entry["id"] == paused.id.as_str()), "bob's release reached the build");
    release(build, &paused);
}

#[test]
fn root_still_sees_and_enters_every_build() {
    let _broker = Broker::start();
    let (build, paused) = alices_paused_build("root-too");
    let output = nix_attach_cmd(&["exec", &paused.id, "--", "eval", "echo $secret"]);
    assert_eq!(String::from_utf8_lossy(&output.stdout), "alices\n");
    release(build, &paused);
}

#[test]
fn without_a_broker_an_ordinary_user_is_told_how_to_get_one() {
    let (build, paused) = alices_paused_build("no-broker");
    let output = as_user(ALICE, readable_nix_attach())
        .args(["exec", &paused.id, "--", "true"])
        .env("NIX_ATTACH_BROKER", "/nonexistent/broker.sock")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(125));
    assert!(stderr(&output).contains("start the broker"), "{}", stderr(&output));
    release(build, &paused);
}

#[test]
fn a_build_cannot_claim_another_users_build_id() {
    // bob's build rewrites its metadata to carry the id of alice's build;
    // alice asking for that id still reaches her own build.
    let broker = Broker::start();
    let (alices, alices_paused) = alices_paused_build("claimed");
    let claim = r#"until [ -e /build/claim ]; do sleep 0.1; done; sed -i "s/\"id\":\"[0-9a-f]*\"/\"id\":\"$(cat /build/claim)\"/" /build/.nix-attach/agent.json; touch /build/claimed; wait"#;
    let bobs_drv = Drv::new("claimer").phase("buildPhase", &format!("( {claim} ) &\nlocal secret=bobs\nsh -c 'exit 3'"));
    let mut bobs = bobs_drv.start_as(BOB);
    let bobs_paused = bobs.paused();
    let bobs_dir = PathBuf::from(bobs_paused.entry["build_dir"].as_str().unwrap());
    std::fs::write(bobs_dir.join("claim"), &alices_paused.id).unwrap();
    let deadline = Instant::now() + PATIENCE;
    while !bobs_dir.join("claimed").exists() {
        assert!(Instant::now() < deadline, "the claim was never made");
        std::thread::sleep(Duration::from_millis(50));
    }
    let exec = broker.run_as(ALICE, &["exec", &alices_paused.id, "--", "eval", "echo $secret"]);
    assert_eq!(String::from_utf8_lossy(&exec.stdout), "alices\n", "{}", stderr(&exec));
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(bobs_paused.pid()), nix::sys::signal::Signal::SIGTERM);
    // Until bob's agent is gone, two builds answer to the id.
    while alive(bobs_paused.pid()) {
        assert!(Instant::now() < deadline, "bob's agent never ended");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(bobs);
    release(alices, &alices_paused);
}

/// Sends `bytes` as one connection's whole request and reads the answer.
fn raw_request(broker: &Broker, bytes: &[u8]) -> Vec<u8> {
    let mut stream = UnixStream::connect(&broker.socket).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let _ = stream.write_all(bytes);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    answer
}

#[test]
fn a_thousand_malformed_requests_leave_it_serving() {
    let mut broker = Broker::start();
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..1000 {
        let bytes: Vec<u8> = match round % 5 {
            0 => (0..next() % 64).map(|_| next() as u8).collect(),
            1 => u32::MAX.to_be_bytes().to_vec(),
            2 => [&12u32.to_be_bytes()[..], b"{\"version\":"].concat(),
            3 => [&40u32.to_be_bytes()[..], br#"{"version":1,"request":{"kind":"shell"}}"#].concat(),
            _ => [&39u32.to_be_bytes()[..], br#"{"version":7,"request":{"kind":"list"}}"#].concat(),
        };
        raw_request(&broker, &bytes);
    }
    assert_eq!(broker.process.try_wait().unwrap(), None, "the broker died");
    let (build, paused) = alices_paused_build("after-garbage");
    assert!(broker.ids_seen_by(ALICE).contains(&paused.id), "the broker stopped serving");
    release(build, &paused);
}

#[test]
fn a_silent_client_does_not_block_others() {
    let broker = Broker::start();
    let (build, paused) = alices_paused_build("beside-silent");
    let mut silent = UnixStream::connect(&broker.socket).unwrap();
    silent.write_all(&[0, 0]).unwrap();
    assert!(broker.ids_seen_by(ALICE).contains(&paused.id));
    // alice was answered while the silent client still waits for its own
    // answer: it was never in her way.
    silent.set_nonblocking(true).unwrap();
    let pending = silent.read(&mut [0u8; 16]);
    assert!(matches!(&pending, Err(err) if err.kind() == std::io::ErrorKind::WouldBlock), "{pending:?}");
    release(build, &paused);
}

#[test]
fn the_wrapper_enters_a_users_own_build_through_the_broker() {
    // alice has no sudo: without the broker the wrapper could not enter.
    let broker = Broker::start();
    let drv = Drv::new("wrapped-owner").phase("buildPhase", "local secret=alices\nsh -c 'exit 3'");
    let (user, group) = (format!("--reuid={ALICE}"), format!("--regid={ALICE}"));
    let (socket, home) = (format!("NIX_ATTACH_BROKER={}", broker.socket.display()), format!("HOME=/home/{ALICE}"));
    let expression = drv.readable_expression();
    let args = [&user, &group, "--init-groups", "env", &socket, &home, readable_nix_attach(), "run", "--enter-on-failure", "--"];
    let nix = ["nix-build", "--no-out-link", "--expr", &expression];
    let mut terminal = Terminal::spawn("setpriv", &[&args[..], &nix[..]].concat(), 40, 160);
    let inside = terminal.expect(&format!("inside the build of {}", drv.name));
    terminal.send("echo \"secret=$secret\"\r");
    terminal.expect_after(inside, "secret=alices");
    terminal.send("exit\r");
    let released = terminal.expect_after(inside, "released it, nix goes on");
    terminal.expect_after(released, "failed with exit code 3");
    assert!(!terminal.screen().contains("through sudo"), "{}", terminal.screen());
}

#[test]
fn one_user_holding_every_connection_does_not_starve_another() {
    // Root's test process stands for a greedy user here: it opens as many
    // silent connections as the broker serves at once.
    let broker = Broker::start();
    let (build, paused) = alices_paused_build("beside-greedy");
    let greedy: Vec<UnixStream> = (0..32).map(|_| UnixStream::connect(&broker.socket).unwrap()).collect();
    assert!(broker.ids_seen_by(ALICE).contains(&paused.id), "alice was turned away");
    drop(greedy);
    release(build, &paused);
}

#[test]
fn a_socket_that_another_user_listens_on_is_not_taken_for_the_broker() {
    use std::io::BufRead;
    // A build bob may not open himself, so that he asks a broker.
    let (_build, _paused) = alices_paused_build("fake-broker");
    let dir = std::env::temp_dir().join(crate::support::unique_name("fake-broker"));
    std::fs::create_dir(&dir).unwrap();
    nix::unistd::chown(&dir, Some(nix::unistd::Uid::from_raw(uid_of(ALICE))), None).unwrap();
    let socket = dir.join("broker.sock");
    let script = "import socket,sys\ns=socket.socket(socket.AF_UNIX)\ns.bind(sys.argv[1])\ns.listen()\nimport os\nos.chmod(sys.argv[1],0o666)\nprint('ready',flush=True)\nwhile True:\n    c,_=s.accept()\n    c.close()\n";
    let mut fake =
        as_user(ALICE, "/usr/bin/python3").args(["-c", script]).arg(&socket).stdout(std::process::Stdio::piped()).spawn().unwrap();
    let mut ready = String::new();
    std::io::BufReader::new(fake.stdout.take().unwrap()).read_line(&mut ready).unwrap();
    assert_eq!(ready.trim(), "ready", "the fake broker did not start");
    let output = as_user(BOB, readable_nix_attach())
        .args(["list"])
        .env("NIX_ATTACH_BROKER", &socket)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let _ = fake.kill();
    let _ = fake.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!output.status.success());
    assert!(stderr(&output).contains("is not root's broker"), "{}", stderr(&output));
}

#[test]
fn the_broker_as_its_systemd_units_start_it_serves_the_owner_and_no_one_else() {
    let broker = Broker::start_as_its_units_do();
    let (build, paused) = alices_paused_build("units");
    assert!(broker.ids_seen_by(ALICE).contains(&paused.id));
    assert!(!broker.ids_seen_by(BOB).contains(&paused.id));
    let exec = broker.run_as(ALICE, &["exec", &paused.id, "--", "eval", "echo $secret"]);
    assert_eq!(String::from_utf8_lossy(&exec.stdout), "alices\n", "{}", stderr(&exec));
    // systemd's socket is the broker's alone: no program it runs (in a
    // build's mount namespace, for --with) inherits it.
    let fdinfo = std::fs::read_to_string(format!("/proc/{}/fdinfo/3", broker.process.id())).unwrap();
    let flags = fdinfo.lines().find_map(|line| line.strip_prefix("flags:")).expect("fdinfo has flags").trim();
    assert!(u32::from_str_radix(flags, 8).unwrap() & 0o2000000 != 0, "descriptor 3 is not close-on-exec: flags {flags}");
    release(build, &paused);
}

/// A setting of the NixOS module, `NAME = VALUE;`, as the unit file would
/// write it (`true` as `true`, strings unquoted).
fn module_value(name: &str) -> String {
    let module = std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../nixpkgs-overlay/nixos-module.nix")).unwrap();
    let prefix = format!("{name} = ");
    let line =
        module.lines().map(str::trim).find_map(|line| line.strip_prefix(&prefix)).unwrap_or_else(|| panic!("the module sets no {name}"));
    line.trim_end_matches(';').trim_matches('"').to_string()
}

#[test]
fn the_nixos_module_sets_up_the_broker_as_the_units_in_systemd_do() {
    for key in ["ListenStream", "SocketMode", "DirectoryMode"] {
        assert_eq!(module_value(key), unit_value("nix-attach-broker.socket", key), "{key}");
    }
    assert_eq!(module_value("ProtectHome"), unit_value("nix-attach-broker.service", "ProtectHome"));
    assert_eq!(module_value("NoNewPrivileges"), unit_value("nix-attach-broker.service", "NoNewPrivileges"));
    assert_eq!(module_value("ExecStart").rsplit(' ').next(), unit_value("nix-attach-broker.service", "ExecStart").rsplit(' ').next());
    let verified = std::process::Command::new("systemd-analyze")
        .args(["verify", "--man=no", "nix-attach-broker.service", "nix-attach-broker.socket"])
        .current_dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../systemd"))
        .output()
        .unwrap();
    assert!(verified.status.success() && verified.stderr.is_empty(), "{}", String::from_utf8_lossy(&verified.stderr));
}
