//! The sandbox a replay runs in, made by bubblewrap (`bwrap`), as an
//! ordinary user: as Nix makes a build's, from what the capture says.
//!
//! User, mount, pid, network, IPC and UTS namespaces; exactly the store
//! paths the build had, read-only; the unpacked build directory at its
//! in-sandbox path, writable; a minimal `/dev`, `/proc` and `/tmp`;
//! `/etc/passwd`, `group` and `hosts` as Nix writes them; the build's uid,
//! gid and host name. Inside runs nix-attach's own agent, bound read-only
//! at [`AGENT`], with the captured snapshot: sessions then get the shell
//! exactly as a live attach does.

use crate::capture::{Manifest, Sandbox};
use crate::metadata::Metadata;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where this binary is inside the replay's sandbox.
pub const AGENT: &str = "/.nix-attach-replay/nix-attach";
/// The program that makes the sandbox.
pub const BWRAP: &str = "bwrap";
/// Idle seconds before a replayed build's agent gives up, as a live one.
const IDLE: u64 = 1800;

/// `/etc/passwd`, `/etc/group` and `/etc/hosts` as Nix writes them for a
/// build running as `uid`:`gid`.
pub fn etc_files(uid: u32, gid: u32) -> [(&'static str, String); 3] {
    [
        (
            "passwd",
            format!(
                "root:x:0:0:Nix build user:/build:/noshell\nnixbld:x:{uid}:{gid}:Nix build user:/build:/noshell\n\
                 nobody:x:65534:65534:Nobody:/:/noshell\n"
            ),
        ),
        ("group", format!("root:x:0:\nnixbld:!:{gid}:\nnogroup:x:65534:\n")),
        ("hosts", "127.0.0.1 localhost\n::1 localhost\n".to_string()),
    ]
}

/// Where the replay's own files are on this machine.
pub struct Layout {
    /// The unpacked build directory.
    pub build_dir: PathBuf,
    /// The directory holding [`etc_files`].
    pub etc: PathBuf,
    /// This program.
    pub agent: PathBuf,
    /// Store paths brought in besides the build's (`--with`).
    pub tools: Vec<String>,
}

/// The `bwrap` command that runs the agent for `manifest`'s sandbox,
/// failed as `meta` says, in a sandbox laid out as `layout` says.
pub fn command(manifest: &Manifest, meta: &Metadata, layout: &Layout) -> Command {
    let sandbox = &manifest.sandbox;
    let mut bwrap = Command::new(BWRAP);
    bwrap.args(["--unshare-all", "--die-with-parent", "--new-session"]);
    bwrap.args(["--uid", &sandbox.uid.to_string(), "--gid", &sandbox.gid.to_string(), "--hostname", &sandbox.hostname]);
    bwrap.args(["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]);
    for path in &sandbox.store_paths {
        bwrap.args(["--ro-bind", path, path]);
    }
    for path in layout.tools.iter().filter(|path| !sandbox.store_paths.contains(path)) {
        bwrap.args(["--ro-bind", path, path]);
    }
    bwrap.arg("--bind").arg(&layout.build_dir).arg(&sandbox.build_top);
    for (name, _) in etc_files(sandbox.uid, sandbox.gid) {
        bwrap.arg("--ro-bind").arg(layout.etc.join(name)).arg(Path::new("/etc").join(name));
    }
    bwrap.arg("--ro-bind").arg(&layout.agent).arg(AGENT);
    bwrap.args(["--chdir", &sandbox.build_top, "--clearenv"]);
    for (name, value) in [("HOME", "/homeless-shelter"), ("PATH", "/path-not-set"), ("NIX_BUILD_TOP", &sandbox.build_top)] {
        bwrap.args(["--setenv", name, value]);
    }
    bwrap.arg(AGENT).args(agent_args(sandbox, meta, &manifest.origin.describe()));
    bwrap
}

/// The agent's arguments: the captured failure and snapshot files, and
/// where the capture was taken (`origin`, for its banner).
fn agent_args(sandbox: &Sandbox, meta: &Metadata, origin: &str) -> Vec<String> {
    let top = Path::new(&sandbox.build_top);
    let file = |name: &str| top.join(name).to_string_lossy().into_owned();
    let mut args = vec!["agent".to_string()];
    for (flag, value) in [
        ("--drv", meta.drv.clone()),
        ("--phase", meta.phase.clone()),
        ("--exit-code", meta.exit_code.to_string()),
        ("--command", meta.command.clone()),
        ("--build-top", sandbox.build_top.clone()),
        ("--cwd", sandbox.cwd.clone()),
        ("--shell", sandbox.shell.clone()),
        ("--state-file", file(".nix-attach-state.sh")),
        ("--variables-file", file(".nix-attach-variables.sh")),
        ("--options-file", file(".nix-attach-options")),
        ("--timeout", IDLE.to_string()),
    ] {
        args.push(format!("{flag}={value}"));
    }
    args.extend(meta.stack.iter().map(|frame| format!("--frame={frame}")));
    args.extend(meta.locals.then(|| "--locals".to_string()));
    args.push(format!("--replay={origin}"));
    args
}
