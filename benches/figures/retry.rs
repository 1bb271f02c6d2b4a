//! "retry to paused": `nix-attach retry` against the failing build's own
//! time.

use crate::*;

/// "retry to paused": `nix-attach retry` on a derivation that failed
/// without the hook, from its start to its pointer line, against that
/// failing build's own time (start to exit), taken in turns. Each turn is
/// a derivation of its own, whose build takes a second.
pub fn retry_figure(reps: usize) -> Figure {
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
