//! A session's terminal and the agent's costs: keystroke round trip and
//! bulk output against a direct PTY, `ssh -tt` and script(1), and the
//! agent's CPU and memory while it waits.

use crate::*;

/// An sshd on loopback, on its own port and keys (benches/sshd).
pub struct SshBaseline {
    dir: PathBuf,
    config: String,
}

impl SshBaseline {
    pub fn start() -> SshBaseline {
        let dir = std::env::temp_dir().join("nix-attach-bench-ssh");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../benches/sshd");
        let status = std::process::Command::new(script).arg(&dir).arg("2222").status().unwrap();
        assert!(status.success(), "sshd did not start");
        let config = dir.join("ssh_config").to_string_lossy().into_owned();
        SshBaseline { dir, config }
    }

    pub fn config(&self) -> &str {
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

pub fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap().split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

pub fn rss_kib(pid: i32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status.lines().find(|l| l.starts_with("VmRSS:")).unwrap().split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Attach to prompt, keystrokes and bulk output in one paused build,
/// then what its agent costs while a session idles and while it waits.
pub fn session_figures(reps: usize, idle_secs: u64) -> (Vec<Figure>, AgentCosts) {
    let mut figures = Vec::new();
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
    (figures, AgentCosts { idle_secs, idle_ticks, session_ticks, rss, size_mib })
}
