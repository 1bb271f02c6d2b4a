//! Waiting builds are found in every build-directory layout of the Nix and
//! Lix releases we know, through `--build-dir`, and through the running
//! agent's `/proc` entry when the layout is unknown. Only Nix 2.8 runs here,
//! so the other layouts are laid out by hand and served by a real agent.

use crate::support::{exec, list, nix_attach, nix_attach_cmd, unique_name};
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
    std::fs::copy(nix_attach(), &wrapped).unwrap();
    let build = HandMadeBuild::start_as(&dir.join("work"), unique_name("wrapped"), &wrapped, "/wrapped/bin/nix-attach");
    let id = build.listed(&[])["id"].as_str().unwrap().to_owned();
    assert_eq!(String::from_utf8_lossy(&exec(&id, &["eval", "echo $handMade"]).stdout), "yes\n");
    drop(build);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_process_of_an_ordinary_user_named_like_an_agent_is_no_build() {
    // Any user can start `nix-attach agent` in a directory of its own in
    // /tmp; it runs as no build user and in our pid namespace, so it is
    // passed over.
    let name = unique_name("impostor-user");
    let top = PathBuf::from(format!("/tmp/nix-build-{name}.drv-0"));
    std::fs::create_dir_all(&top).unwrap();
    std::fs::write(top.join("state.sh"), "").unwrap();
    std::fs::write(top.join("variables"), "").unwrap();
    std::fs::write(top.join("options"), "").unwrap();
    let _ = Command::new("chown").args(["-R", "65534:65534"]).arg(&top).status();
    let mut agent = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", nix_attach()])
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
