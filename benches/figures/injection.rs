//! The daemon's pre-build hook: its cost per call and on a passing build.

use crate::*;

/// The daemon's pre-build hook: what each call costs (as the hook itself
/// measures it, `NIX_ATTACH_HOOK_TIMES`, over `calls` trivial builds asked
/// for as the wrapper asks), and a trivial passing build's wall time
/// (`nix-build` carrying the wrapper's mark) through a daemon with the hook
/// against one without it, taken in turns.
pub fn injection_figures(calls: usize, pairs: usize) -> (Figure, Vec<f64>) {
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
