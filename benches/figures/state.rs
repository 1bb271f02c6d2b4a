//! "failure to ready": from a failing command to a socket ready for a
//! session, against breakpointHook's `export > file`.

use crate::*;

pub fn unix_now(at: SystemTime) -> f64 {
    at.duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

/// The phase that defines a large state: 2,000 variables, 500 functions.
pub const LARGE_STATE: &str = "for i in $(seq 2000); do eval \"var_$i='value number $i'\"; done\n\
                           for i in $(seq 500); do eval \"fn_$i() { echo $i; }\"; done\n";
pub const MARK_AND_FAIL: &str = "printf %s \"$EPOCHREALTIME\" > /build/t0\nfalse";

pub fn failure_time(build_dir: &Path) -> f64 {
    std::fs::read_to_string(build_dir.join("t0")).unwrap().trim().parse().unwrap()
}

/// When `path` appeared, in unix seconds, polled every 100 µs (file
/// times are too coarse for milliseconds).
pub fn appeared(path: &Path) -> f64 {
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
pub fn ready_with_hook(state: &str) -> f64 {
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
pub fn ready_with_export(state: &str) -> f64 {
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
pub fn build_dir_of(name: &str) -> PathBuf {
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

/// "failure to ready" for a small state and a large one.
pub fn state_figures(reps: usize) -> Vec<Figure> {
    let mut figures = Vec::new();
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

    figures
}
