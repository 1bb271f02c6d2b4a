//! Waiting builds are found in every build-directory layout of the Nix and
//! Lix releases we know, through `--build-dir`, and through the running
//! agent's `/proc` entry when the layout is unknown. Only Nix 2.8 runs here,
//! so the other layouts are laid out by hand and served by a real agent.

use crate::support::{exec, list, nix_attach, nix_attach_cmd, readable_nix_attach, unique_name};
use serde_json::Value;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// An agent serving a hand-made build directory on the host.
struct HandMadeBuild {
    name: String,
    top: PathBuf,
    agent: Child,
}

impl HandMadeBuild {
    fn start(top: &Path, name: String) -> HandMadeBuild {
        HandMadeBuild::start_as(top, name, Path::new(nix_attach()), nix_attach())
    }

    /// Runs the agent from `program`, with `argv0` as its command name.
    fn start_as(top: &Path, name: String, program: &Path, argv0: &str) -> HandMadeBuild {
        std::fs::create_dir_all(top).unwrap();
        std::fs::write(top.join("state.sh"), "").unwrap();
        std::fs::write(top.join("variables"), "declare -- handMade=\"yes\"\n").unwrap();
        std::fs::write(top.join("options"), "set -o nounset\n").unwrap();
        let agent = Command::new(program)
            .arg0(argv0)
            .args(agent_args(top, &name))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the agent");
        HandMadeBuild { name, top: top.to_path_buf(), agent }
    }

    fn listed(&self, extra: &[&str]) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut args = vec!["list", "--json"];
            args.extend_from_slice(extra);
            let output = nix_attach_cmd(&args);
            let entries: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap();
            if let Some(entry) = entries.into_iter().find(|entry| entry["drv"] == self.name.as_str()) {
                return entry;
            }
            assert!(Instant::now() < deadline, "{} was never listed", self.name);
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// `agent …` for a hand-made build in `top` with the snapshot files there.
fn agent_args(top: &Path, name: &str) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> =
        ["agent", "--drv", name, "--exit-code", "2", "--timeout", "120", "--shell", "/bin/bash-static"].map(Into::into).into();
    for (flag, path) in [
        ("--build-top", top.to_path_buf()),
        ("--cwd", top.to_path_buf()),
        ("--state-file", top.join("state.sh")),
        ("--variables-file", top.join("variables")),
        ("--options-file", top.join("options")),
    ] {
        args.push(flag.into());
        args.push(path.into());
    }
    args
}

impl Drop for HandMadeBuild {
    fn drop(&mut self) {
        let _ = self.agent.kill();
        let _ = self.agent.wait();
        let _ = std::fs::remove_dir_all(&self.top);
    }
}

fn found_in_layout(build_dir: PathBuf) {
    let name = unique_name("layout");
    let build = HandMadeBuild::start(&build_dir, name);
    let entry = build.listed(&[]);
    assert_eq!(entry["build_dir"], build_dir.to_str().unwrap(), "found, but not through the layout");
    let id = entry["id"].as_str().unwrap();
    assert_eq!(String::from_utf8_lossy(&exec(id, &["eval", "echo $handMade"]).stdout), "yes\n");
}

#[test]
fn nix_before_2_24_build_directories_are_found() {
    found_in_layout(PathBuf::from(format!("/tmp/nix-build-{}.drv-0", unique_name("old"))));
}

#[test]
fn nix_2_24_build_directories_are_found() {
    found_in_layout(PathBuf::from(format!("/tmp/nix-build-{}-0/build", unique_name("new"))));
}

#[test]
fn nix_2_30_build_directories_are_found() {
    found_in_layout(PathBuf::from(format!("/nix/var/nix/builds/nix-build-{}-0/build", unique_name("builds"))));
}

#[test]
fn lix_build_directories_are_found() {
    found_in_layout(PathBuf::from(format!("/nix/var/nix/b/{}", unique_name("lix"))));
}

#[test]
fn an_unknown_layout_is_found_through_the_agent_in_proc_and_through_build_dir() {
    let top = PathBuf::from(format!("/var/tmp/{}/work", unique_name("elsewhere")));
    let build = HandMadeBuild::start(&top, unique_name("unknown"));
    let entry = build.listed(&[]);
    assert_eq!(entry["build_dir"], format!("/proc/{}/cwd/..", build.agent.id()));
    let given = build.listed(&["--build-dir", top.to_str().unwrap()]);
    assert_eq!(given["build_dir"], top.to_str().unwrap());
    assert!(list().iter().filter(|entry| entry["drv"] == build.name.as_str()).count() == 1, "listed twice");
    let _ = std::fs::remove_dir_all(top.parent().unwrap());
}

#[test]
fn an_agent_run_through_a_wrapper_is_found_by_its_command_name() {
    // nixpkgs' wrapProgram runs `.nix-attach-wrapped`, named `nix-attach`.
    let dir = PathBuf::from(format!("/tmp/{}", unique_name("wrapper")));
    std::fs::create_dir_all(&dir).unwrap();
    let wrapped = dir.join(".nix-attach-wrapped");
    // Copied by another process: a copy written here could still be open
    // for writing in a child another test forked but has not yet executed,
    // and running it would then fail with ETXTBSY.
    assert!(std::process::Command::new("cp").arg(nix_attach()).arg(&wrapped).status().unwrap().success());
    let build = HandMadeBuild::start_as(&dir.join("work"), unique_name("wrapped"), &wrapped, "/wrapped/bin/nix-attach");
    let id = build.listed(&[])["id"].as_str().unwrap().to_owned();
    assert_eq!(String::from_utf8_lossy(&exec(&id, &["eval", "echo $handMade"]).stdout), "yes\n");
    drop(build);
    let _ = std::fs::remove_dir_all(dir);
}

/// A build directory in /tmp, with snapshot files, owned by `nobody`.
fn impostor_build_dir(name: &str) -> PathBuf {
    let top = PathBuf::from(format!("/tmp/nix-build-{name}.drv-0"));
    std::fs::create_dir_all(&top).unwrap();
    std::fs::write(top.join("state.sh"), "").unwrap();
    std::fs::write(top.join("variables"), "").unwrap();
    std::fs::write(top.join("options"), "").unwrap();
    let _ = Command::new("chown").args(["-R", "65534:65534"]).arg(&top).status();
    top
}

#[test]
fn a_process_of_an_ordinary_user_named_like_an_agent_is_no_build() {
    // Any user can start `nix-attach agent` in a directory of its own in
    // /tmp; no Nix process of root's started it, so it is passed over.
    let name = unique_name("impostor-user");
    let top = impostor_build_dir(&name);
    let mut agent = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", readable_nix_attach()])
        .args(agent_args(&top, &name))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !top.join(".nix-attach/agent.json").exists() {
        assert!(Instant::now() < deadline, "the impostor agent never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(list().iter().all(|entry| entry["drv"] != name.as_str()), "an ordinary user's process was taken for a build");
    let _ = agent.kill();
    let _ = agent.wait();
    let _ = std::fs::remove_dir_all(&top);
}

/// What root's `list`, `attach` and `attach ID` said, run in a pid
/// namespace of their own where the only agent is an impostor's.
struct AloneWithImpostor {
    id: String,
    list: String,
    attach: String,
    attach_id: String,
}

/// An ordinary user (`nobody`) runs `unshare -Urpf --mount-proc nix-attach
/// agent …`: root in a user and pid namespace of its own, as any user may
/// be. Root's commands run in a new pid namespace of theirs (with its own
/// /proc), so the impostor is the only agent they can see, whatever other
/// tests run meanwhile, and `attach` without an id would pick it.
fn alone_with_an_impostor() -> AloneWithImpostor {
    let name = unique_name("impostor-userns");
    let top = impostor_build_dir(&name);
    let script = r#"
        nix_attach=$1 impostor=$2 top=$3; shift 3
        setpriv --reuid=65534 --regid=65534 --clear-groups unshare -Urpf --mount-proc "$impostor" "$@" > /dev/null 2>&1 &
        for _ in $(seq 600); do [ -s "$top/.nix-attach/agent.json" ] && break; sleep 0.05; done
        id=$(sed -n 's/.*"id":"\([0-9a-f]*\)".*/\1/p' "$top/.nix-attach/agent.json")
        echo "$id"
        echo '--- list'; "$nix_attach" list --json 2>&1
        echo '--- attach'; echo 'echo INSIDE-THE-IMPOSTOR' | "$nix_attach" attach 2>&1
        echo '--- attach id'; echo 'echo INSIDE-THE-IMPOSTOR' | "$nix_attach" attach "$id" 2>&1
        # Leaving ends this pid namespace, and the kernel kills the impostor.
    "#;
    let output = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "bash", "-c", script, "bash", nix_attach(), readable_nix_attach()])
        .arg(&top)
        .args(agent_args(&top, &name))
        .stdin(Stdio::null())
        .output()
        .expect("run unshare");
    let _ = std::fs::remove_dir_all(&top);
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let part = |from: &str, to: &str| {
        let start = text.find(from).map_or(text.len(), |at| at + from.len());
        text[start..].split(to).next().unwrap_or_default().to_string()
    };
    AloneWithImpostor {
        id: text.lines().next().unwrap_or_default().to_string(),
        list: part("--- list", "--- attach"),
        attach: part("--- attach\n", "--- attach id"),
        attach_id: part("--- attach id", "\u{0}"),
    }
}

#[test]
fn an_ordinary_user_in_a_user_and_pid_namespace_of_its_own_is_no_build() {
    // Another pid namespace proves nothing: any user can make one.
    let seen = alone_with_an_impostor();
    assert_eq!(seen.id.len(), 12, "the impostor never started: {}", seen.list);
    assert!(!seen.list.contains(&seen.id), "root listed the impostor: {}", seen.list);
    assert!(seen.attach.contains("no build is waiting"), "{}", seen.attach);
    assert!(seen.attach_id.contains(&format!("no waiting build matches `{}`", seen.id)), "{}", seen.attach_id);
    for said in [&seen.attach, &seen.attach_id] {
        assert!(!said.contains("INSIDE-THE-IMPOSTOR") && !said.contains("inside the build"), "root's keys reached the impostor: {said}");
    }
}
