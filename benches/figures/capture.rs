//! Capture throughput against `tar | zstd`, and replay to prompt against
//! `bwrap` starting the same bash.

use crate::*;

/// "capture throughput": `nix-attach capture` of a paused build whose
/// directory holds 256 MiB (half text, half random bytes), against `tar |
/// zstd -3` of the same directory, in MiB/s; and "replay to prompt":
/// `nix-attach replay` of a small capture, against `bwrap` with the same
/// binds starting the same bash. Each taken in turns.
pub fn capture_figures(reps: usize) -> Vec<Figure> {
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
pub fn replay_figure(reps: usize, dir: &Path) -> Figure {
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
