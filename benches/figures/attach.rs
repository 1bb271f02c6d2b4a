//! "attach to prompt": nix-attach against breakpointHook's attach, cntr
//! and a bash started in a PTY.

use crate::*;

pub fn bash_in_sandbox(paused: &Paused) -> String {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", paused.pid())).unwrap();
    let parent = stat.rsplit(')').next().unwrap().split_whitespace().nth(1).unwrap().to_string();
    std::fs::read_link(format!("/proc/{parent}/exe")).unwrap().to_string_lossy().into_owned()
}

/// cntr, where `cargo install cntr` put it (benches/run installs it).
pub fn cntr() -> Option<String> {
    let home = std::env::var("CARGO_HOME").unwrap_or_else(|_| format!("{}/.cargo", std::env::var("HOME").unwrap_or_default()));
    let path = format!("{home}/bin/cntr");
    Path::new(&path).exists().then_some(path)
}

/// "attach to prompt": `nix-attach attach` into a paused build, against
/// breakpointHook's attach, a bash started in a PTY (the floor) and cntr
/// where it is installed; taken in turns, so that a slow spell of the
/// machine hits every tool.
pub fn attach_figure(reps: usize, build: &support::Build, paused: &Paused) -> Figure {
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
