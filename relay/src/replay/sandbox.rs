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
/// Where the sandbox has mounts and files of its own, besides the store
/// paths: the build directory may be neither at nor around any of them.
const OWN_PLACES: [&str; 4] = ["/proc", "/dev", "/etc", "/.nix-attach-replay"];
/// The one place under `/dev` a build directory may be.
const SHM: &str = "/dev/shm";

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(
        "the capture puts its build directory at {0}, at or around {1}, where the sandbox has its own mounts; no build's sandbox does that"
    )]
    BuildTop(String, String),
}

/// Checks that the capture's build directory is a place of its own in the
/// sandbox: not the root, not at or below one of the sandbox's own mounts
/// (`/proc/self/root` would lead bubblewrap out, to make directories on
/// this machine), and with no store path or tool of `tools` at or below
/// it (bubblewrap would follow the archive's links there).
pub fn check_build_top(sandbox: &Sandbox, tools: &[String]) -> Result<(), SandboxError> {
    let top = Path::new(&sandbox.build_top);
    let refused = |place: &str| SandboxError::BuildTop(crate::sanitize::sanitize(&sandbox.build_top), place.to_string());
    if top.parent().is_none() {
        return Err(refused("/"));
    }
    let mounts = OWN_PLACES.iter().map(|place| place.to_string()).chain(sandbox.store_paths.iter().cloned()).chain(tools.iter().cloned());
    for place in mounts {
        // bubblewrap's own `/dev/shm` is a plain directory: an unsandboxed
        // build's TMPDIR may have been there.
        let in_shm = top.starts_with(SHM) && top != Path::new(SHM);
        if (top.starts_with(&place) && !in_shm) || Path::new(&place).starts_with(top) {
            return Err(refused(&place));
        }
    }
    Ok(())
}

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
    for path in sandbox.store_paths.iter().chain(layout.tools.iter().filter(|path| !sandbox.store_paths.contains(path))) {
        bind_store_path(&mut bwrap, path);
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

/// Binds the store path `path` read-only at its own place; a store path
/// that is a link is made again as a link, as Nix makes it in a build's
/// sandbox: a bind would follow it, and show what it points to on this
/// machine (a home, a socket) inside.
fn bind_store_path(bwrap: &mut Command, path: &str) {
    match std::fs::read_link(path) {
        Ok(target) => bwrap.arg("--symlink").arg(target).arg(path),
        Err(_) => bwrap.args(["--ro-bind", path, path]),
    };
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

#[cfg(test)]
mod tests {
    use super::*;

    fn with_top(top: &str) -> Sandbox {
        Sandbox { build_top: top.into(), ..Sandbox::example() }
    }

    #[test]
    fn a_build_directory_is_where_nix_puts_one_and_never_at_or_around_the_sandboxs_own_places() {
        for top in
            ["/build", "/tmp/nix-build-hello.drv-0", "/nix/var/nix/builds/nix-12-0/build", "/nix/var/nix/b/x", "/dev/shm/nix-build-x"]
        {
            assert!(check_build_top(&with_top(top), &[]).is_ok(), "{top}");
        }
        let store_path = &Sandbox::example().store_paths[0];
        let tool = "/nix/store/abcdfghijklmnpqrsvwxyz0123456789-gdb".to_string();
        for top in [
            "/",
            "/proc/self/root/oldroot/home/u",
            "/dev/fd/3",
            "/dev/shm",
            "/dev",
            "/etc",
            "/.nix-attach-replay",
            "/nix",
            &format!("{store_path}/x"),
            &tool,
        ] {
            assert!(matches!(check_build_top(&with_top(top), std::slice::from_ref(&tool)), Err(SandboxError::BuildTop(..))), "{top}");
        }
    }
}
