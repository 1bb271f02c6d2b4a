//! "attach with --with to prompt": an attach that brings a tool whose
//! closure is 21 store paths into the build, against a plain attach to the
//! same build, taken in turns. The first one mounts the paths; the others
//! find them there, as a person attaching again does.

use crate::*;

/// A tool whose closure is 21 store paths: itself and 20 small files it
/// names.
fn tool_of_21_paths() -> String {
    let expression = format!(
        r#"let f = import {fixtures} {{ }}; in derivation {{
             name = "bench-tool"; system = builtins.currentSystem; builder = f.bash;
             parts = builtins.genList (i: builtins.toFile "bench-part-${{toString i}}" "part ${{toString i}}\n") 20;
             args = [ "-e" (builtins.toFile "bench-tool.sh" "echo \"$parts\" > $out") ];
           }}"#,
        fixtures = support::fixtures().display()
    );
    let built = std::process::Command::new("nix-build").args(["--no-out-link", "--expr", &expression]).output().unwrap();
    assert!(built.status.success(), "{}", String::from_utf8_lossy(&built.stderr));
    String::from_utf8(built.stdout).unwrap().trim().to_string()
}

pub fn with_figure(reps: usize) -> Figure {
    let tool = tool_of_21_paths();
    let mut build = Drv::new("bench-with").phase("buildPhase", "false").start();
    let paused = build.paused();
    let (mut with, mut plain) = (Vec::new(), Vec::new());
    for _ in 0..reps * 2 {
        with.push(to_prompt(nix_attach(), &["attach", "--with", &tool, &paused.id], &[]));
        plain.push(to_prompt(nix_attach(), &["attach", &paused.id], &[]));
    }
    release(build, &paused);
    Figure {
        name: "attach with --with (21 store paths) to prompt (s)",
        unit: "s",
        ours: with,
        baselines: vec![Baseline::with_goal("plain attach", plain, "≤ plain + 30 ms", |ours, base| ours <= base + 0.030)],
    }
}
