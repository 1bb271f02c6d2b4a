//! Through `--via`: attach to prompt, keystrokes and bulk output against
//! `ssh -tt`, and what the relays cost while a session idles.

use crate::*;

/// Through `--via` over loopback ssh, to a build paused on the test bed's
/// remote builder: attach to prompt, and the keystroke round trip, against
/// `ssh -tt` to the same sshd running a bash there; taken in turns. Also
/// the CPU ticks both relays (nix-attach here, and `attach --framed` on
/// the builder) take over 10 s of an idle session.
pub fn remote_figures(reps: usize) -> (Vec<Figure>, f64) {
    let remote = RemoteBuilder::start();
    let daemon = remote.local_daemon();
    let (build, id, agent) = remote.build_until_paused(&daemon, &Drv::new("bench-remote").phase("buildPhase", "false"));
    let sshopts = remote.sshopts();
    let env = [("NIX_SSHOPTS", sshopts.as_str())];
    let via = ["attach", "--via", "ssh://nix-attach-remote", "--agent", &agent, &id];
    let config = remote.ssh_config();
    let ssh = ["-tt", "-F", config.to_str().unwrap(), HOST, "/bin/bash-static --norc --noprofile -i"];
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..reps * 2 {
        ours.push(to_prompt(nix_attach(), &via, &env));
        theirs.push(to_prompt("ssh", &ssh, &[]));
    }
    let attach = Figure {
        name: "attach to prompt through --via, loopback ssh (s)",
        unit: "s",
        ours,
        baselines: vec![Baseline::with_goal("ssh -tt login to the same sshd", theirs, "≤ 1.2×", |ours, base| ours <= 1.2 * base)],
    };
    let mut ours_pty = Pty::spawn_with(nix_attach(), &via, &env);
    let mut ssh_pty = Pty::spawn("ssh", &ssh);
    let (mut ours_keys, mut ssh_keys) = (Vec::new(), Vec::new());
    for _ in 0..4 {
        ours_keys.extend(keystrokes(&mut ours_pty, 100));
        ssh_keys.extend(keystrokes(&mut ssh_pty, 100));
    }
    let keys = Figure {
        name: "keystroke round trip through --via (µs)",
        unit: "µs",
        ours: ours_keys,
        baselines: vec![Baseline::with_goal("ssh -tt to the same sshd", ssh_keys, "≤ 1.1×", |ours, base| ours <= 1.1 * base)],
    };
    // Taken in turns, so that a slow spell of the machine hits both.
    let (mut ours_bulk, mut ssh_bulk) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        ours_bulk.push(bulk(&mut ours_pty, "busybox"));
        ssh_bulk.push(bulk(&mut ssh_pty, "/bin/busybox"));
    }
    let idle_ticks = idle_relay_ticks(&mut ours_pty);
    drop((ours_pty, ssh_pty));
    let output = Figure {
        name: "bulk output through --via, 256 MiB base64 (MiB/s)",
        unit: "MiB/s",
        ours: ours_bulk,
        baselines: vec![Baseline::with_goal("ssh -tt to the same sshd", ssh_bulk, "≥ 1×", |ours, base| ours >= base)],
    };
    let released = std::process::Command::new(nix_attach())
        .args(["release", &id, "--via", "ssh://nix-attach-remote", "--agent", &agent])
        .env("NIX_SSHOPTS", &sshopts)
        .output()
        .unwrap();
    assert!(released.status.success(), "{}", String::from_utf8_lossy(&released.stderr));
    let _ = build.finish();
    (vec![attach, keys, output], idle_ticks)
}

/// The CPU ticks nix-attach here (`session`'s command) and the builder's
/// framed relay take over 10 s while the session's shell waits at its
/// prompt.
fn idle_relay_ticks(session: &mut Pty) -> f64 {
    session.send(b"echo IDLE-$((1+1))\r");
    session.until(b"IDLE-2");
    let relays = [session.pid(), framed_relay_pid()];
    let before: u64 = relays.iter().map(|pid| cpu_ticks(*pid)).sum();
    std::thread::sleep(Duration::from_secs(10));
    let after: u64 = relays.iter().map(|pid| cpu_ticks(*pid)).sum();
    (after - before) as f64
}

/// The builder's `nix-attach attach --framed`: the machine's processes
/// are in a pid namespace below this one, so /proc shows them.
fn framed_relay_pid() -> i32 {
    let framed = std::fs::read_dir("/proc").unwrap().flatten().find_map(|entry| {
        let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
        let args: Vec<&[u8]> = cmdline.split(|byte| *byte == 0).collect();
        (args.get(1) == Some(&&b"attach"[..]) && args.contains(&&b"--framed"[..])).then_some(pid)
    });
    framed.expect("the builder runs attach --framed for the session through --via")
}
