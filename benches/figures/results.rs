//! Writes the figures: target/bench/results.md and results.json (or
//! the names `BENCH_RESULTS` gives).

use crate::*;

/// What the agent costs while it waits, and the binary's size.
pub struct AgentCosts {
    pub idle_secs: u64,
    pub idle_ticks: f64,
    pub session_ticks: f64,
    pub rss: f64,
    pub size_mib: f64,
}

/// Rows that are counts, not ratios: the pre-build hook's calls, and what
/// the two relays of an idle session through `--via` cost.
#[derive(Default)]
pub struct Counts {
    pub hook_calls: Vec<f64>,
    pub via_idle_ticks: Option<f64>,
}

pub fn write_results(figures: &[Figure], agent: Option<AgentCosts>, counts: &Counts) {
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
    if !counts.hook_calls.is_empty() {
        write_hook_calls(&mut md, &mut json, &counts.hook_calls);
    }
    if let Some(ticks) = counts.via_idle_ticks {
        md += &format!(
            "| relays' CPU ticks over 10 s with an idle session through --via, here and on the builder | {ticks} | | | | | 0 | {} |\n",
            if ticks == 0.0 { "yes" } else { "no" }
        );
        json.push(json!({ "via_session_idle_ticks": ticks }));
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
pub fn write_hook_calls(md: &mut String, json: &mut Vec<serde_json::Value>, hook_calls: &[f64]) {
    let (median_call, p99_call) = (median(hook_calls), percentile(hook_calls, 0.99));
    *md += &format!(
        "| pre-build hook per call over {} builds (ms), median / p99 | {median_call:.3} / {p99_call:.3} | | | | | ≤ 3 | {} |\n",
        hook_calls.len(),
        if p99_call <= 3.0 { "yes" } else { "no" }
    );
    json.push(json!({ "hook_call_ms": hook_calls, "hook_call_median_ms": median_call, "hook_call_p99_ms": p99_call }));
}
