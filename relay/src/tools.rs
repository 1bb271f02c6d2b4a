//! `--with TOOL`: the host's tools in a build's sandbox. Each installable
//! is realised here (a store path is taken as it is), its closure taken,
//! and every path of it mounted into the build's mount namespace, read-only
//! and `nosuid`, at its own store path; the session's PATH then starts
//! with each tool's `bin`. Nothing of the build changes: its own PATH,
//! variables and files are as they were, and a path it already has is
//! left as it is.
//!
//! The mount API does it, with no FUSE and no `nsenter`: `open_tree`
//! clones each path here, `mount_setattr` makes the clone read-only, and a
//! child process joins the agent's mount namespace through a pidfd
//! (`setns`) and moves each clone (`move_mount`) onto a directory it makes
//! in the sandbox's store, which it reaches with `openat2` in the
//! sandbox's root without following a link: the build owns parts of that
//! tree. Only root does it (or the broker, for the build's owner), and only
//! with valid store paths, which any user may read anyway.
//!
//! May use: [`capture`](crate::capture), [`nix_conf`](crate::nix_conf),
//! [`sanitize`](crate::sanitize); no module that uses it (`layout` keeps
//! the arrows one way).

use crate::capture::is_store_path;
use rustix::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::process::{Command, Stdio};

#[derive(Debug, thiserror::Error)]
pub enum ToolsError {
    #[error("--with {0:?} is not a store path, and nix cannot realise it as an installable: {1}")]
    NotStorePath(String, String),
    #[error("cannot take the closure of the --with paths: {0}")]
    Closure(String),
    #[error("cannot run {0} (is Nix on PATH?)")]
    Run(&'static str, #[source] std::io::Error),
    #[error("cannot {0} {1}")]
    Mount(&'static str, String, #[source] std::io::Error),
    #[error("cannot put the --with paths into the build: {0}")]
    Child(String),
    #[error("--with needs root or the broker, which mount the tools into the build: run it with sudo, or start the broker")]
    NeedsRoot,
}

/// The tools asked for: their store paths, and the closure to mount.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tools {
    /// The store paths asked for.
    pub roots: Vec<String>,
    /// The `bin` directories the session's PATH starts with.
    pub bins: Vec<String>,
    /// Every store path they need.
    pub closure: Vec<String>,
}

/// Realises each of `asked` and takes the closure.
pub fn resolve(asked: &[String]) -> Result<Tools, ToolsError> {
    let store = crate::nix_conf::store_dir();
    let mut roots = Vec::new();
    for one in asked {
        if is_store_path(one, &store) && Path::new(one).exists() {
            roots.push(one.clone());
        } else {
            roots.extend(realise(one)?);
        }
    }
    let closure = closure(&roots)?;
    Ok(Tools { bins: bins_of(&roots), closure, roots })
}

/// The closure of the store paths `roots`.
pub fn closure(roots: &[String]) -> Result<Vec<String>, ToolsError> {
    let store = crate::nix_conf::store_dir();
    let args: Vec<&str> = ["--query", "--requisites", "--"].into_iter().chain(roots.iter().map(String::as_str)).collect();
    let printed = output("nix-store", &args).map_err(|why| match why {
        Failed::Run(err) => ToolsError::Run("nix-store", err),
        Failed::Said(said) => ToolsError::Closure(said),
    })?;
    Ok(printed.lines().map(str::to_string).filter(|path| is_store_path(path, &store)).collect())
}

/// The directories of `roots` that a session's PATH starts with.
pub fn bins_of(roots: &[String]) -> Vec<String> {
    roots.iter().map(|root| format!("{root}/bin")).filter(|bin| Path::new(bin).is_dir()).collect()
}

/// `nix build --no-link --print-out-paths INSTALLABLE`: its store paths.
fn realise(installable: &str) -> Result<Vec<String>, ToolsError> {
    let args = ["--extra-experimental-features", "nix-command flakes", "build", "--no-link", "--print-out-paths", "--", installable];
    let printed = output("nix", &args).map_err(|why| match why {
        Failed::Run(err) => ToolsError::Run("nix", err),
        Failed::Said(said) => ToolsError::NotStorePath(crate::sanitize::sanitize(installable), said),
    })?;
    let store = crate::nix_conf::store_dir();
    let paths: Vec<String> = printed.lines().map(str::to_string).collect();
    if paths.is_empty() || paths.iter().any(|path| !is_store_path(path, &store)) {
        return Err(ToolsError::NotStorePath(crate::sanitize::sanitize(installable), "it names no store path".into()));
    }
    Ok(paths)
}

enum Failed {
    Run(std::io::Error),
    Said(String),
}

/// A program's standard output, or its last line of error.
fn output(program: &str, args: &[&str]) -> Result<String, Failed> {
    let out = Command::new(program).args(args).stdin(Stdio::null()).output().map_err(Failed::Run)?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let said = String::from_utf8_lossy(&out.stderr);
    Err(Failed::Said(crate::sanitize::sanitize(said.lines().rev().find(|line| !line.trim().is_empty()).unwrap_or("(no message)").trim())))
}

/// The hidden subcommand that mounts, in a process of its own.
pub const SUBCOMMAND: &str = "mount-tools";

/// Mounts every path of `closure` into the mount namespace of the process
/// `agent` (the build's agent). A process of its own does it
/// ([`SUBCOMMAND`], [`mount_here`]): `setns` into a mount namespace needs
/// a process of one thread, and the broker has many.
pub fn mount_into(agent: i32, closure: &[String]) -> Result<(), ToolsError> {
    let exe = std::env::current_exe().map_err(|err| ToolsError::Mount("find", "this program".into(), err))?;
    let mut command = Command::new(exe);
    command.args([SUBCOMMAND, "--agent", &agent.to_string(), "--"]).args(closure).stdin(Stdio::null());
    let out = command.output().map_err(|err| ToolsError::Mount("run", SUBCOMMAND.into(), err))?;
    if out.status.success() {
        return Ok(());
    }
    let said = String::from_utf8_lossy(&out.stderr);
    let last = said.lines().rev().find(|line| !line.trim().is_empty()).unwrap_or("it ended early");
    Err(ToolsError::Child(crate::sanitize::sanitize(last.trim().trim_start_matches("nix-attach: error: "))))
}

/// `nix-attach mount-tools --agent PID PATH…`: clones each store path and
/// mounts it into the agent's mount namespace; returns how many were
/// mounted (the others were there already). Only root can.
pub fn mount_here(agent: i32, closure: &[String]) -> Result<usize, ToolsError> {
    let store = crate::nix_conf::store_dir();
    if let Some(bad) = closure.iter().find(|path| !is_store_path(path, &store)) {
        return Err(ToolsError::NotStorePath(crate::sanitize::sanitize(bad), "only store paths are mounted".into()));
    }
    let trees = closure.iter().map(|path| clone_read_only(path).map(|tree| (path, tree))).collect::<Result<Vec<_>, _>>()?;
    let pid = rustix::process::Pid::from_raw(agent).ok_or_else(|| ToolsError::Child(format!("{agent} is not a process")))?;
    let pidfd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())
        .map_err(|err| ToolsError::Mount("reach the build's agent", agent.to_string(), err.into()))?;
    mount_in_namespace(&pidfd, &trees)
}

/// A detached, read-only, nosuid, nodev clone of `path`.
fn clone_read_only(path: &str) -> Result<OwnedFd, ToolsError> {
    use rustix::mount::{open_tree, OpenTreeFlags};
    let tree =
        open_tree(rustix::fs::CWD, path, OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC | OpenTreeFlags::AT_RECURSIVE)
            .map_err(|err| ToolsError::Mount("clone", path.to_string(), err.into()))?;
    let attr = libc::mount_attr {
        attr_set: libc::MOUNT_ATTR_RDONLY | libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: a valid descriptor, an empty path and a mount_attr of its size.
    let done = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            rustix::fd::AsRawFd::as_raw_fd(&tree),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_RECURSIVE,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if done != 0 {
        return Err(ToolsError::Mount("make read-only", path.to_string(), std::io::Error::last_os_error()));
    }
    Ok(tree)
}

/// Joins the agent's mount namespace and moves each tree onto a new
/// directory of the sandbox's store.
fn mount_in_namespace(pidfd: &OwnedFd, trees: &[(&String, OwnedFd)]) -> Result<usize, ToolsError> {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    rustix::thread::move_into_thread_name_spaces(pidfd.as_fd(), rustix::thread::ThreadNameSpaceType::MOUNT)
        .map_err(|err| ToolsError::Mount("enter the mount namespace of", "the build".into(), err.into()))?;
    let store_dir = crate::nix_conf::store_dir();
    let inside = store_dir.strip_prefix("/").unwrap_or(&store_dir).to_path_buf();
    let root = rustix::fs::open("/", OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|err| ToolsError::Mount("open", "the sandbox's root".into(), err.into()))?;
    let store = rustix::fs::openat2(
        &root,
        &inside,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_SYMLINKS,
    )
    .map_err(|err| ToolsError::Mount("open", "the sandbox's store".into(), err.into()))?;
    let mut mounted = 0;
    for (path, tree) in trees {
        let name = Path::new(path.as_str()).file_name().map(|name| name.to_os_string()).unwrap_or_default();
        match rustix::fs::mkdirat(&store, &name, Mode::from_raw_mode(0o555)) {
            Ok(()) => {}
            // A path the build has is left as it is.
            Err(rustix::io::Errno::EXIST) => continue,
            Err(err) => return Err(ToolsError::Mount("make the mount point of", path.to_string(), err.into())),
        }
        rustix::mount::move_mount(tree.as_fd(), "", &store, &name, rustix::mount::MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH)
            .map_err(|err| ToolsError::Mount("mount", path.to_string(), err.into()))?;
        mounted += 1;
    }
    Ok(mounted)
}
