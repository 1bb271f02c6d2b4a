//! The benchmark figures (run with `benches/run`): nix-attach against the
//! tools people use today, each figure a ratio against a baseline measured
//! in the same run, on the real daemon. `BENCH_ONLY=injection` runs the
//! daemon's pre-build hook figures alone, `BENCH_ONLY=retry` the retry's,
//! `BENCH_ONLY=remote` those through `--via`, `BENCH_ONLY=capture` the
//! capture's and replay's, `BENCH_ONLY=release` the
//! figures that depend on the Nix release (benches/run runs them on each
//! machine of the test bed). `BENCH_RESULTS=NAME` names the results files.
//! Writes target/bench/results.md and target/bench/results.json.

#[path = "../tests/e2e/support/mod.rs"]
#[allow(dead_code)]
mod support;

use portable_pty::{native_pty_system, Child, CommandBuilder, MasterPty, PtySize};
use serde_json::json;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use support::daemon::SecondDaemon;
use support::remote::{RemoteBuilder, HOST};
use support::{nix_attach, release, Drv, Paused};

/// One measured figure: ours, and each baseline with its goal.
struct Figure {
    name: &'static str,
    unit: &'static str,
    ours: Vec<f64>,
    baselines: Vec<Baseline>,
}

/// Whether our median (first) meets a goal against a baseline's (second).
type Goal = fn(f64, f64) -> bool;

struct Baseline {
    name: &'static str,
    samples: Vec<f64>,
    goal: &'static str,
    /// Whether our median meets the goal against this baseline's median;
    /// `None` for a reference that only shows where a floor lies.
    met: Option<Goal>,
}

impl Baseline {
    fn with_goal(name: &'static str, samples: Vec<f64>, goal: &'static str, met: Goal) -> Baseline {
        Baseline { name, samples, goal, met: Some(met) }
    }

    fn reference(name: &'static str, samples: Vec<f64>) -> Baseline {
        Baseline { name, samples, goal: "none (the floor)", met: None }
    }
}

fn median(samples: &[f64]) -> f64 {
    percentile(samples, 0.5)
}

fn percentile(samples: &[f64], at: f64) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
    sorted[((sorted.len() - 1) as f64 * at).round() as usize]
}

/// A command under a PTY, read and written directly, for timing.
struct Pty {
    master: Box<dyn MasterPty + Send>,
    reader: Box<dyn Read + Send>,
    writer: Box<dyn Write + Send>,
    child: Box<dyn Child + Send + Sync>,
    seen: Vec<u8>,
}

impl Pty {
    fn spawn(program: &str, args: &[&str]) -> Pty {
        Pty::spawn_with(program, args, &[])
    }

    fn spawn_with(program: &str, args: &[&str], env: &[(&str, &str)]) -> Pty {
        let pair = native_pty_system().openpty(PtySize { rows: 50, cols: 200, pixel_width: 0, pixel_height: 0 }).unwrap();
        let mut command = CommandBuilder::new(program);
        command.args(args);
        command.cwd("/");
        // What most terminal emulators say they are.
        command.env("TERM", "xterm-256color");
        for (key, value) in env {
            command.env(key, value);
        }
        let child = pair.slave.spawn_command(command).unwrap();
        drop(pair.slave);
        let reader = pair.master.try_clone_reader().unwrap();
        let writer = pair.master.take_writer().unwrap();
        Pty { master: pair.master, reader, writer, child, seen: Vec::new() }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).unwrap();
        self.writer.flush().unwrap();
    }

    /// Reads until a prompt (`$ ` or `# `) shows.
    fn until_prompt(&mut self) {
        let mut buffer = vec![0u8; 4096];
        let mut tail = Vec::new();
        loop {
            let n = self.reader.read(&mut buffer).expect("the PTY ended");
            assert!(n > 0, "the PTY ended");
            tail.extend_from_slice(&buffer[..n]);
            if tail.ends_with(b"$ ") || tail.ends_with(b"# ") {
                return;
            }
        }
    }

    /// Reads until `needle` shows; returns the bytes read meanwhile.
    fn until(&mut self, needle: &[u8]) -> usize {
        let mut buffer = vec![0u8; 64 * 1024];
        let mut read = 0;
        self.seen.clear();
        loop {
            let n = self.reader.read(&mut buffer).expect("the PTY ended");
            assert!(n > 0, "the PTY ended");
            read += n;
            let keep = self.seen.len().saturating_sub(needle.len());
            self.seen.drain(..keep);
            self.seen.extend_from_slice(&buffer[..n]);
            if self.seen.windows(needle.len()).any(|window| window == needle) {
                return read;
            }
        }
    }
}

impl Pty {
    /// Waits a while for the command to end (it is killed on drop if not).
    fn wait_for_exit(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && self.child.try_wait().ok().flatten().is_none() {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.master.resize(PtySize::default());
    }
}

fn unix_now(at: SystemTime) -> f64 {
    at.duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

/// The floor for any tool that relays a terminal: a second PTY and the
/// plainest relay between the two, script(1) from util-linux.
const SCRIPT: &str = "script(1): a second PTY, a plain relay";

/// The phase that defines a large state: 2,000 variables, 500 functions.
const LARGE_STATE: &str = "for i in $(seq 2000); do eval \"var_$i='value number $i'\"; done\n\
                           for i in $(seq 500); do eval \"fn_$i() { echo $i; }\"; done\n";
const MARK_AND_FAIL: &str = "printf %s \"$EPOCHREALTIME\" > /build/t0\nfalse";

fn failure_time(build_dir: &Path) -> f64 {
    std::fs::read_to_string(build_dir.join("t0")).unwrap().trim().parse().unwrap()
}

/// When `path` appeared, in unix seconds, polled every 100 µs (file
/// times are too coarse for milliseconds).
fn appeared(path: &Path) -> f64 {
    let deadline = Instant::now() + support::PATIENCE;
    loop {
        if path.exists() {
            return unix_now(SystemTime::now());
        }
        assert!(Instant::now() < deadline, "{path:?} never appeared");
        std::thread::sleep(Duration::from_micros(100));
    }
}

/// Failure to socket ready, with the hook: agent.json appears once the
/// socket listens. Seen by polling, as the baseline's file is.
fn ready_with_hook(state: &str) -> f64 {
    let drv = Drv::new("bench-ready").phase("buildPhase", &format!("{state}{MARK_AND_FAIL}"));
    let mut build = drv.start();
    let dir = build_dir_of(&drv.name);
    let ready = appeared(&dir.join(".nix-attach/agent.json"));
    let took = ready - failure_time(&dir);
    let paused = build.paused();
    release(build, &paused);
    took
}

/// Failure to ready for breakpointHook: `export > file`, then wait.
fn ready_with_export(state: &str) -> f64 {
    let drv = Drv::new("bench-export")
        .without_hook()
        .attr("failureHook", "export > \"$NIX_BUILD_TOP/env-at-failure\"; : > \"$NIX_BUILD_TOP/ready\"; sleep 1000")
        .phase("buildPhase", &format!("{state}{MARK_AND_FAIL}"));
    let build = drv.start();
    let dir = build_dir_of(&drv.name);
    let ready = appeared(&dir.join("ready"));
    let took = ready - failure_time(&dir);
    drop(build);
    took
}

/// The host build directory of a derivation being built (Nix 2.8 layout).
fn build_dir_of(name: &str) -> PathBuf {
    let deadline = Instant::now() + support::PATIENCE;
    loop {
        let found = std::fs::read_dir("/tmp").unwrap().flatten().map(|entry| entry.path());
        let mut builds = found.filter(|path| path.file_name().is_some_and(|file| file.to_string_lossy().starts_with("nix-build-")));
        if let Some(dir) = builds.find(|path| path.to_string_lossy().contains(name)) {
            return dir;
        }
        assert!(Instant::now() < deadline, "no build directory for {name}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn bash_in_sandbox(paused: &Paused) -> String {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", paused.pid())).unwrap();
    let parent = stat.rsplit(')').next().unwrap().split_whitespace().nth(1).unwrap().to_string();
    std::fs::read_link(format!("/proc/{parent}/exe")).unwrap().to_string_lossy().into_owned()
}

/// From running a command to its shell's prompt and a typed echo coming
/// back (some shells drop what was typed before their prompt).
fn to_prompt(program: &str, args: &[&str], env: &[(&str, &str)]) -> f64 {
    let start = Instant::now();
    let mut pty = Pty::spawn_with(program, args, env);
    pty.until_prompt();
    pty.send(b"echo R$((6*7))\r");
    pty.until(b"R42");
    let took = start.elapsed().as_secs_f64();
    pty.send(b"exit\r");
    pty.wait_for_exit();
    // Every tool leaves the machine a moment to settle (the agent renews
    // its spare shell; cntr unmounts), so that no run pays for the last.
    std::thread::sleep(SETTLE);
    took
}

/// The pause between two runs of `to_prompt`.
const SETTLE: Duration = Duration::from_millis(50);

/// One byte written to its echo read back, in a shell at its prompt.
fn keystrokes(pty: &mut Pty, count: usize) -> Vec<f64> {
    pty.send(b"echo READY-$((1+1))\r");
    pty.until(b"READY-2");
    std::thread::sleep(Duration::from_millis(200));
    let mut samples = Vec::with_capacity(count);
    for n in 0..count {
        let key = [b'a' + (n % 26) as u8];
        let start = Instant::now();
        pty.send(&key);
        pty.until(&key);
        samples.push(start.elapsed().as_secs_f64() * 1e6);
        if n % 40 == 39 {
            pty.send(b"\x15");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    pty.send(b"\x15");
    samples
}

/// MiB/s of `head -c 256MiB /dev/zero | base64` read to the end.
fn bulk(pty: &mut Pty, busybox: &str) -> f64 {
    let command = format!("{busybox} head -c 268435456 /dev/zero | {busybox} base64; echo END-$((1+1))\r");
    pty.send(command.as_bytes());
    pty.until(b"base64; echo END");
    let start = Instant::now();
    let read = pty.until(b"END-2");
    read as f64 / (1024.0 * 1024.0) / start.elapsed().as_secs_f64()
}

/// cntr, where `cargo install cntr` put it (benches/run installs it).
fn cntr() -> Option<String> {
    let home = std::env::var("CARGO_HOME").unwrap_or_else(|_| format!("{}/.cargo", std::env::var("HOME").unwrap_or_default()));
    let path = format!("{home}/bin/cntr");
    Path::new(&path).exists().then_some(path)
}

/// An sshd on loopback, on its own port and keys (benches/sshd).
struct SshBaseline {
    dir: PathBuf,
    config: String,
}

impl SshBaseline {
    fn start() -> SshBaseline {
        let dir = std::env::temp_dir().join("nix-attach-bench-ssh");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../benches/sshd");
        let status = std::process::Command::new(script).arg(&dir).arg("2222").status().unwrap();
        assert!(status.success(), "sshd did not start");
        let config = dir.join("ssh_config").to_string_lossy().into_owned();
        SshBaseline { dir, config }
    }

    fn config(&self) -> &str {
        &self.config
    }
}

impl Drop for SshBaseline {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.join("sshd.pid")) {
            let _ = std::process::Command::new("kill").arg(pid.trim()).status();
        }
    }
}

fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap().split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn rss_kib(pid: i32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status.lines().find(|l| l.starts_with("VmRSS:")).unwrap().split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The daemon's pre-build hook: what each call costs (as the hook itself
/// measures it, `NIX_ATTACH_HOOK_TIMES`, over `calls` trivial builds asked
/// for as the wrapper asks), and a trivial passing build's wall time
/// (`nix-build` carrying the wrapper's mark) through a daemon with the hook
/// against one without it, taken in turns.
fn injection_figures(calls: usize, pairs: usize) -> (Figure, Vec<f64>) {
    let times = std::env::temp_dir().join(support::unique_name("hook-times"));
    let hooked = SecondDaemon::start(true, &[("NIX_ATTACH_HOOK_TIMES", times.to_str().unwrap())]);
    let plain = SecondDaemon::start(false, &[]);
    let trivial = |prefix: &str| Drv::new(prefix).without_hook().phase("installPhase", "mkdir -p $out");
    let timed = |daemon: &SecondDaemon, prefix: &str| {
        let started = Instant::now();
        let finished = daemon.requested(&trivial(prefix)).finish();
        assert!(finished.status.success(), "{}", finished.log);
        started.elapsed().as_secs_f64()
    };
    // The first calls prepare the shadow nix-support/ and learn the daemon's version.
    timed(&hooked, "warm-hooked");
    timed(&plain, "warm-plain");
    let (mut with_hook, mut without) = (Vec::new(), Vec::new());
    for _ in 0..pairs {
        with_hook.push(timed(&hooked, "trivial-hooked"));
        without.push(timed(&plain, "trivial-plain"));
    }
    let _ = std::fs::remove_file(&times);
    for _ in 0..calls {
        timed(&hooked, "hook-call");
    }
    let per_call: Vec<f64> =
        std::fs::read_to_string(&times).unwrap().lines().filter_map(|us| us.parse::<f64>().ok()).map(|us| us / 1000.0).collect();
    let figure = Figure {
        name: "trivial passing build, wall time (s)",
        unit: "s",
        ours: with_hook,
        baselines: vec![Baseline::with_goal("the same through a daemon without the hook", without, "≤ 1.02×", |ours, base| {
            ours <= 1.02 * base
        })],
    };
    (figure, per_call)
}

/// "retry to paused": `nix-attach retry` on a derivation that failed
/// without the hook, from its start to its pointer line, against that
/// failing build's own time (start to exit), taken in turns. Each turn is
/// a derivation of its own, whose build takes a second.
fn retry_figure(reps: usize) -> Figure {
    use std::io::BufRead;
    let (mut retried, mut original) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        let drv = Drv::new("bench-retry").without_hook().phase("buildPhase", "sleep 1\nsh -c 'exit 3'");
        let started = Instant::now();
        let finished = drv.build();
        original.push(started.elapsed().as_secs_f64());
        assert!(!finished.status.success(), "{}", finished.log);
        let drv_path = drv.instantiate();
        let started = Instant::now();
        let mut child = std::process::Command::new(nix_attach())
            .args(["retry", "--no-enter", &drv_path])
            .env("NIX_REMOTE", "daemon")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run nix-attach retry");
        let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let marker = "attach with `nix-attach attach ";
        let id = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|line| line.find(marker).map(|at| line[at + marker.len()..at + marker.len() + 12].to_string()))
            .expect("the retry paused");
        retried.push(started.elapsed().as_secs_f64());
        let released = std::process::Command::new(nix_attach()).args(["release", &id]).output().unwrap();
        assert!(released.status.success(), "{}", String::from_utf8_lossy(&released.stderr));
        lines.for_each(drop);
        let _ = child.wait();
    }
    Figure {
        name: "retry to paused, a 1 s build (s)",
        unit: "s",
        ours: retried,
        baselines: vec![Baseline::with_goal("the failing build's own time", original, "≤ 1.2× + 1 s", |ours, base| {
            ours <= 1.2 * base + 1.0
        })],
    }
}

/// Through `--via` over loopback ssh, to a build paused on the test bed's
/// remote builder: attach to prompt, and the keystroke round trip, against
/// `ssh -tt` to the same sshd running a bash there; taken in turns.
fn remote_figures(reps: usize) -> Vec<Figure> {
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
    drop((ours_pty, ssh_pty));
    let keys = Figure {
        name: "keystroke round trip through --via (µs)",
        unit: "µs",
        ours: ours_keys,
        baselines: vec![Baseline::with_goal("ssh -tt to the same sshd", ssh_keys, "≤ 1.1×", |ours, base| ours <= 1.1 * base)],
    };
    let released = std::process::Command::new(nix_attach())
        .args(["release", &id, "--via", "ssh://nix-attach-remote", "--agent", &agent])
        .env("NIX_SSHOPTS", &sshopts)
        .output()
        .unwrap();
    assert!(released.status.success(), "{}", String::from_utf8_lossy(&released.stderr));
    let _ = build.finish();
    vec![attach, keys]
}

/// "attach to prompt": `nix-attach attach` into a paused build, against
/// breakpointHook's attach, a bash started in a PTY (the floor) and cntr
/// where it is installed; taken in turns, so that a slow spell of the
/// machine hits every tool.
fn attach_figure(reps: usize, build: &support::Build, paused: &Paused) -> Figure {
    let bash = bash_in_sandbox(paused);
    let baseline_script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../benches/breakpoint-attach.sh");
    let shell = ["/bin/bash-static", "--norc", "--noprofile", "-i"];
    let agent = paused.pid().to_string();
    let cntr = cntr();
    let cntr_args = ["attach", "-t", "process_id", &agent, "--", "/bin/bash-static", "--norc", "-i"];
    let (mut attach, mut nsenter, mut bare, mut entered) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..reps * 2 {
        attach.push(to_prompt(nix_attach(), &["attach", &paused.id], &[]));
        nsenter.push(to_prompt(baseline_script.to_str().unwrap(), &[&build.name, &bash], &[]));
        bare.push(to_prompt(shell[0], &shell[1..], &[]));
        if let Some(cntr) = &cntr {
            entered.push(to_prompt(cntr, &cntr_args, &[("SHELL", "/bin/bash-static")]));
        }
    }
    let mut baselines = vec![
        Baseline::with_goal("breakpointHook attach (nsenter)", nsenter, "≤ 0.5×", |ours, base| ours <= 0.5 * base),
        Baseline::reference("bash started in a PTY, no tool", bare),
    ];
    if cntr.is_some() {
        baselines.push(Baseline::with_goal("cntr attach", entered, "≤ 0.5×", |ours, base| ours <= 0.5 * base));
    }
    Figure { name: "attach to prompt (s)", unit: "s", ours: attach, baselines }
}

/// "capture throughput": `nix-attach capture` of a paused build whose
/// directory holds 256 MiB (half text, half random bytes), against `tar |
/// zstd -3` of the same directory, in MiB/s; and "replay to prompt":
/// `nix-attach replay` of a small capture, against `bwrap` with the same
/// binds starting the same bash. Each taken in turns.
fn capture_figures(reps: usize) -> Vec<Figure> {
    let dir = std::env::temp_dir().join(support::unique_name("bench-capture"));
    std::fs::create_dir_all(&dir).unwrap();
    let phase = "head -c 134217728 /dev/zero | tr '\\0' x > text\nhead -c 134217728 /dev/urandom > random\nfalse";
    let mut build = Drv::new("bench-capture").phase("buildPhase", phase).start();
    let paused = build.paused();
    let build_dir = PathBuf::from(paused.entry["build_dir"].as_str().unwrap());
    let size_mib = 256.0;
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for turn in 0..reps {
        let file = dir.join(format!("ours-{turn}.nix-attach"));
        let started = Instant::now();
        let captured =
            std::process::Command::new(nix_attach()).args(["capture", &paused.id, "-o", file.to_str().unwrap()]).output().unwrap();
        assert!(captured.status.success(), "{}", String::from_utf8_lossy(&captured.stderr));
        ours.push(size_mib / started.elapsed().as_secs_f64());
        let plain = dir.join(format!("theirs-{turn}.tar.zst"));
        let script = format!("tar -C {} -cf - . | zstd -3 -q -o {}", build_dir.display(), plain.display());
        let started = Instant::now();
        assert!(std::process::Command::new("sh").args(["-c", &script]).status().unwrap().success());
        theirs.push(size_mib / started.elapsed().as_secs_f64());
        let _ = (std::fs::remove_file(&file), std::fs::remove_file(&plain));
    }
    release(build, &paused);
    let throughput = Figure {
        name: "capture throughput, 256 MiB build directory (MiB/s)",
        unit: "MiB/s",
        ours,
        baselines: vec![Baseline::with_goal("tar | zstd -3 of the same directory", theirs, "≥ 0.9×", |ours, base| ours >= 0.9 * base)],
    };
    let replay = replay_figure(reps, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    vec![throughput, replay]
}

/// "replay to prompt" (see [`capture_figures`]).
fn replay_figure(reps: usize, dir: &Path) -> Figure {
    let (build, paused) = Drv::new("bench-replay").phase("buildPhase", "false").pause();
    let file = dir.join("small.nix-attach");
    let captured = std::process::Command::new(nix_attach()).args(["capture", &paused.id, "-o", file.to_str().unwrap()]).output().unwrap();
    assert!(captured.status.success(), "{}", String::from_utf8_lossy(&captured.stderr));
    release(build, &paused);
    let file_text = file.to_str().unwrap().to_string();
    // The same sandbox, made by bwrap alone, with the build's bash and no
    // state to restore: the floor a replay stands on.
    let manifest = support::capture::manifest_of(&file);
    let scratch = dir.join("bwrap-build");
    std::fs::create_dir_all(&scratch).unwrap();
    let sandbox = &manifest.sandbox;
    let mut bwrap: Vec<String> =
        ["--unshare-all", "--die-with-parent", "--new-session", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
            .iter()
            .map(|arg| arg.to_string())
            .collect();
    bwrap.extend([
        "--uid".into(),
        sandbox.uid.to_string(),
        "--gid".into(),
        sandbox.gid.to_string(),
        "--hostname".into(),
        sandbox.hostname.clone(),
    ]);
    for path in &sandbox.store_paths {
        bwrap.extend(["--ro-bind".into(), path.clone(), path.clone()]);
    }
    bwrap.extend([
        "--bind".into(),
        scratch.to_string_lossy().into_owned(),
        sandbox.build_top.clone(),
        "--chdir".into(),
        sandbox.build_top.clone(),
    ]);
    bwrap.extend([sandbox.shell.clone(), "--norc".into(), "--noprofile".into(), "-i".into()]);
    let bwrap: Vec<&str> = bwrap.iter().map(String::as_str).collect();
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..reps * 2 {
        ours.push(to_prompt(nix_attach(), &["replay", &file_text], &[]));
        theirs.push(to_prompt("bwrap", &bwrap, &[]));
    }
    Figure {
        name: "replay to prompt (s)",
        unit: "s",
        ours,
        baselines: vec![Baseline::with_goal("bwrap with the same binds starting the same bash", theirs, "≤ 1.2×", |ours, base| {
            ours <= 1.2 * base
        })],
    }
}

/// The figures that depend on the Nix release, for `BENCH_ONLY=release` on
/// each machine of the test bed: attach to prompt and retry to paused.
fn release_figures(reps: usize) -> Vec<Figure> {
    let mut build = Drv::new("bench-release").phase("buildPhase", "false").start();
    let paused = build.paused();
    let attach = attach_figure(reps, &build, &paused);
    release(build, &paused);
    vec![attach, retry_figure(reps)]
}

fn main() {
    let reps: usize = std::env::var("BENCH_REPS").ok().and_then(|r| r.parse().ok()).unwrap_or(7);
    let idle_secs: u64 = std::env::var("BENCH_IDLE_SECS").ok().and_then(|r| r.parse().ok()).unwrap_or(60);
    let mut figures = Vec::new();
    if std::env::var("BENCH_ONLY").as_deref() == Ok("remote") {
        eprintln!("bench: through --via");
        write_results(&remote_figures(reps), None, &[]);
        return;
    }
    if std::env::var("BENCH_ONLY").as_deref() == Ok("release") {
        eprintln!("bench: attach to prompt and retry to paused");
        write_results(&release_figures(reps), None, &[]);
        return;
    }
    if std::env::var("BENCH_ONLY").as_deref() == Ok("capture") {
        eprintln!("bench: capture throughput and replay to prompt");
        write_results(&capture_figures(reps), None, &[]);
        return;
    }
    if std::env::var("BENCH_ONLY").as_deref() == Ok("retry") {
        eprintln!("bench: retry to paused");
        write_results(&[retry_figure(reps)], None, &[]);
        return;
    }
    eprintln!("bench: the daemon's pre-build hook");
    let (injection, hook_calls) = injection_figures(200, (reps * 3).max(20));
    if std::env::var("BENCH_ONLY").as_deref() == Ok("injection") {
        write_results(&[injection], None, &hook_calls);
        return;
    }
    figures.push(injection);
    eprintln!("bench: retry to paused");
    figures.push(retry_figure(reps));
    eprintln!("bench: through --via");
    figures.extend(remote_figures(reps));
    eprintln!("bench: capture throughput and replay to prompt");
    figures.extend(capture_figures(reps));

    let sizes: [(&str, &str, &str, Goal); 2] = [
        ("failure to ready, small state (s)", "", "none (fixed costs)", |_, _| true),
        ("failure to ready, 2,000 variables and 500 functions (s)", LARGE_STATE, "≤ 3×", |ours, base| ours <= 3.0 * base),
    ];
    for (name, state, goal, met) in sizes {
        eprintln!("bench: {name}");
        let ours: Vec<f64> = (0..reps).map(|_| ready_with_hook(state)).collect();
        let samples: Vec<f64> = (0..reps).map(|_| ready_with_export(state)).collect();
        figures.push(Figure { name, unit: "s", ours, baselines: vec![Baseline::with_goal("breakpointHook's export", samples, goal, met)] });
    }

    eprintln!("bench: attach to prompt, keystrokes, bulk output, idle cost");
    let mut build = Drv::new("bench-session").phase("buildPhase", "false").start();
    let paused = build.paused();
    let shell = ["/bin/bash-static", "--norc", "--noprofile", "-i"];
    figures.push(attach_figure(reps, &build, &paused));

    let ssh = SshBaseline::start();
    let mut ours_pty = Pty::spawn(nix_attach(), &["attach", &paused.id]);
    let mut direct_pty = Pty::spawn(shell[0], &shell[1..]);
    let mut ssh_pty = Pty::spawn("ssh", &["-tt", "-F", ssh.config(), "bench", shell.join(" ").as_str()]);
    let mut script_pty = Pty::spawn("script", &["-q", "-c", shell.join(" ").as_str(), "/dev/null"]);
    let (mut ours_keys, mut direct_keys, mut ssh_keys, mut script_keys) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..4 {
        ours_keys.extend(keystrokes(&mut ours_pty, 100));
        direct_keys.extend(keystrokes(&mut direct_pty, 100));
        ssh_keys.extend(keystrokes(&mut ssh_pty, 100));
        script_keys.extend(keystrokes(&mut script_pty, 100));
    }
    figures.push(Figure {
        name: "keystroke round trip (µs)",
        unit: "µs",
        ours: ours_keys,
        baselines: vec![
            Baseline::with_goal("direct PTY", direct_keys, "p50 ≤ 1.3×", |ours, base| ours <= 1.3 * base),
            Baseline::with_goal("ssh -tt on loopback", ssh_keys, "< 1×", |ours, base| ours < base),
            Baseline::reference(SCRIPT, script_keys),
        ],
    });

    let busybox_inside = "busybox";
    // Taken in turns, so that a slow spell of the machine hits every tool.
    let (mut ours_bulk, mut direct_bulk, mut ssh_bulk, mut script_bulk) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..3 {
        ours_bulk.push(bulk(&mut ours_pty, busybox_inside));
        direct_bulk.push(bulk(&mut direct_pty, "/bin/busybox"));
        ssh_bulk.push(bulk(&mut ssh_pty, "/bin/busybox"));
        script_bulk.push(bulk(&mut script_pty, "/bin/busybox"));
    }
    figures.push(Figure {
        name: "bulk output, 256 MiB base64 (MiB/s)",
        unit: "MiB/s",
        ours: ours_bulk,
        baselines: vec![
            Baseline::with_goal("direct PTY", direct_bulk, "≥ 0.8×", |ours, base| ours >= 0.8 * base),
            Baseline::with_goal("ssh -tt on loopback", ssh_bulk, "> 1×", |ours, base| ours > base),
            Baseline::reference(SCRIPT, script_bulk),
        ],
    });
    drop((ssh_pty, script_pty));
    drop(ssh);

    ours_pty.send(b"echo IDLE-$((1+1))\r");
    ours_pty.until(b"IDLE-2");
    let before = cpu_ticks(paused.pid());
    std::thread::sleep(Duration::from_secs(10));
    let session_ticks = (cpu_ticks(paused.pid()) - before) as f64;
    drop(ours_pty);
    drop(direct_pty);
    std::thread::sleep(Duration::from_millis(500));
    let before = cpu_ticks(paused.pid());
    std::thread::sleep(Duration::from_secs(idle_secs));
    let idle_ticks = (cpu_ticks(paused.pid()) - before) as f64;
    let rss = rss_kib(paused.pid()) / 1024.0;
    release(build, &paused);

    let binary = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/x86_64-unknown-linux-gnu/release/nix-attach");
    let stripped = std::env::temp_dir().join("nix-attach-stripped");
    let size_mib = if binary.exists() {
        std::fs::copy(&binary, &stripped).unwrap();
        let _ = std::process::Command::new("strip").arg(&stripped).status();
        std::fs::metadata(&stripped).unwrap().len() as f64 / (1024.0 * 1024.0)
    } else {
        f64::NAN
    };
    write_results(&figures, Some(AgentCosts { idle_secs, idle_ticks, session_ticks, rss, size_mib }), &hook_calls);
}

/// What the agent costs while it waits, and the binary's size.
struct AgentCosts {
    idle_secs: u64,
    idle_ticks: f64,
    session_ticks: f64,
    rss: f64,
    size_mib: f64,
}

fn write_results(figures: &[Figure], agent: Option<AgentCosts>, hook_calls: &[f64]) {
    let date = humantime::format_rfc3339_seconds(SystemTime::now());
    // Lix prints more lines after the first.
    let version = std::process::Command::new("nix").arg("--version").output().map(|out| out.stdout).unwrap_or_default();
    let release = String::from_utf8_lossy(&version).lines().next().unwrap_or("nix ?").to_string();
    let mut md = format!("Measured {date} on this machine (2 cores), {release}, `benches/run`.\n\n| figure | nix-attach median | p90 | baseline | baseline median | ratio | goal (ratio) | met |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n");
    let mut json = Vec::new();
    for figure in figures {
        let ours = median(&figure.ours);
        let p90 = percentile(&figure.ours, 0.9);
        for baseline in &figure.baselines {
            let base = median(&baseline.samples);
            let met = baseline.met.map(|met| met(ours, base));
            md += &format!(
                "| {} | {ours:.4} | {p90:.4} | {} | {base:.4} | {:.2} | {} | {} |\n",
                figure.name,
                baseline.name,
                ours / base,
                baseline.goal,
                met.map_or("—", |met| if met { "yes" } else { "no" })
            );
            json.push(json!({ "figure": figure.name, "unit": figure.unit, "samples": figure.ours, "median": ours, "p90": p90,
                "baseline": baseline.name, "baseline_samples": baseline.samples, "baseline_median": base,
                "ratio": ours / base, "goal": baseline.goal, "met": met }));
        }
    }
    if !hook_calls.is_empty() {
        write_hook_calls(&mut md, &mut json, hook_calls);
    }
    if let Some(AgentCosts { idle_secs, idle_ticks, session_ticks, rss, size_mib }) = agent {
        md += &format!(
            "| agent CPU ticks over {idle_secs} s idle | {idle_ticks} | | | | | 0 | {} |\n",
            if idle_ticks == 0.0 { "yes" } else { "no" }
        );
        md += &format!(
            "| agent CPU ticks over 10 s with an idle session | {session_ticks} | | | | | 0 | {} |\n",
            if session_ticks == 0.0 { "yes" } else { "no" }
        );
        md += &format!("| agent RSS while waiting (MiB) | {rss:.1} | | | | | ≤ 8 | {} |\n", if rss <= 8.0 { "yes" } else { "no" });
        md += &format!("| static binary, release, stripped (MiB) | {size_mib:.1} | | | | | | |\n");
        json.push(json!({ "idle_ticks": idle_ticks, "idle_secs": idle_secs, "session_idle_ticks": session_ticks, "rss_mib": rss, "binary_mib": size_mib }));
    }
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&out).unwrap();
    let name = std::env::var("BENCH_RESULTS").unwrap_or_else(|_| "results".into());
    std::fs::write(out.join(format!("{name}.md")), &md).unwrap();
    std::fs::write(out.join(format!("{name}.json")), serde_json::to_string_pretty(&json).unwrap()).unwrap();
    println!("{md}");
}

/// The pre-build hook's time per call, median and p99.
fn write_hook_calls(md: &mut String, json: &mut Vec<serde_json::Value>, hook_calls: &[f64]) {
    let (median_call, p99_call) = (median(hook_calls), percentile(hook_calls, 0.99));
    *md += &format!(
        "| pre-build hook per call over {} builds (ms), median / p99 | {median_call:.3} / {p99_call:.3} | | | | | ≤ 3 | {} |\n",
        hook_calls.len(),
        if p99_call <= 3.0 { "yes" } else { "no" }
    );
    json.push(json!({ "hook_call_ms": hook_calls, "hook_call_median_ms": median_call, "hook_call_p99_ms": p99_call }));
}
