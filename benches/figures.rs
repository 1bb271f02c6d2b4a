//! The benchmark figures (run with `benches/run`): nix-attach against the
//! tools people use today, each figure a ratio against a baseline measured
//! in the same run, on the real daemon. `BENCH_ONLY=injection` runs the
//! daemon's pre-build hook figures alone, `BENCH_ONLY=retry` the retry's,
//! `BENCH_ONLY=remote` those through `--via`, `BENCH_ONLY=capture` the
//! capture's and replay's, `BENCH_ONLY=with` attach with `--with`, `BENCH_ONLY=release` the
//! figures that depend on the Nix release (benches/run runs them on each
//! machine of the test bed). `BENCH_RESULTS=NAME` names the results files.
//! Writes target/bench/results.md and target/bench/results.json.

#[path = "../tests/e2e/support/mod.rs"]
#[allow(dead_code)]
mod support;

/// Each family of figures, in `benches/figures/`.
mod figures {
    pub mod attach;
    pub mod capture;
    pub mod injection;
    pub mod pty;
    pub mod remote;
    pub mod results;
    pub mod retry;
    pub mod state;
    pub mod terminal;
    pub mod tools;
}

use figures::{attach::*, capture::*, injection::*, pty::*, remote::*, results::*, retry::*, state::*, terminal::*, tools::*};

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
        let (figures, via_idle_ticks) = remote_figures(reps);
        write_results(&figures, None, &Counts { via_idle_ticks: Some(via_idle_ticks), ..Counts::default() });
        return;
    }
    if std::env::var("BENCH_ONLY").as_deref() == Ok("release") {
        eprintln!("bench: attach to prompt and retry to paused");
        write_results(&release_figures(reps), None, &Counts::default());
        return;
    }
    if std::env::var("BENCH_ONLY").as_deref() == Ok("capture") {
        eprintln!("bench: capture throughput and replay to prompt");
        write_results(&capture_figures(reps), None, &Counts::default());
        return;
    }
    if std::env::var("BENCH_ONLY").as_deref() == Ok("with") {
        eprintln!("bench: attach with --with to prompt");
        write_results(&[with_figure(reps)], None, &Counts::default());
        return;
    }
    if std::env::var("BENCH_ONLY").as_deref() == Ok("retry") {
        eprintln!("bench: retry to paused");
        write_results(&[retry_figure(reps)], None, &Counts::default());
        return;
    }
    eprintln!("bench: the daemon's pre-build hook");
    let (injection, hook_calls) = injection_figures(200, (reps * 3).max(20));
    if std::env::var("BENCH_ONLY").as_deref() == Ok("injection") {
        write_results(&[injection], None, &Counts { hook_calls, ..Counts::default() });
        return;
    }
    figures.push(injection);
    eprintln!("bench: retry to paused");
    figures.push(retry_figure(reps));
    eprintln!("bench: through --via");
    let (remote, via_idle_ticks) = remote_figures(reps);
    figures.extend(remote);
    eprintln!("bench: capture throughput and replay to prompt");
    figures.extend(capture_figures(reps));
    eprintln!("bench: attach with --with to prompt");
    figures.push(with_figure(reps));

    figures.extend(state_figures(reps));

    eprintln!("bench: attach to prompt, keystrokes, bulk output, idle cost");
    let (session_figures, agent) = session_figures(reps, idle_secs);
    figures.extend(session_figures);
    write_results(&figures, Some(agent), &Counts { hook_calls, via_idle_ticks: Some(via_idle_ticks) });
}
