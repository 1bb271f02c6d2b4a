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
//! The tools' paths are roots of the garbage collector for as long as the
//! build waits ([`gc_roots`](crate::gc_roots)): nothing of Nix's own
//! refers to them, and a collection would empty their mounts.
//!
//! May use: [`capture`](crate::capture), [`gc_roots`](crate::gc_roots), [`nix_conf`](crate::nix_conf),
//! [`sanitize`](crate::sanitize), [`store`](crate::store); no module that uses it (`layout` keeps
//! the arrows one way).

use crate::capture::is_store_path;
use crate::store::StoreError;
use rustix::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::process::{Command, Stdio};

#[derive(Debug, thiserror::Error)]
pub enum ToolsError {
    #[error("--with {0:?} is not a store path, and nix cannot realise it as an installable: {1}")]
    NotStorePath(String, String),
    #[error("cannot take the closure of the --with paths")]
    Closure(#[source] StoreError),
    #[error("cannot realise a --with installable")]
    Realise(#[source] StoreError),
    #[error("cannot {0} {1}")]
    Mount(&'static str, String, #[source] std::io::Error),
    #[error("cannot put the --with paths into the build: {0}")]
    Child(String),
    #[error("{0:?} is not a store path; only store paths are mounted")]
    NotMountable(String),
    #[error("{0} is a symbolic link; --with mounts store paths that are directories or files")]
    Link(String),
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

/// The closure of the store paths `roots`. A valid store path's closure
/// never changes, so each root's is kept in a cache of the caller's own
/// ([`closure_cache`]) and asked of Nix once (`nix-store --query
/// --requisites`, some tens of milliseconds).
pub fn closure(roots: &[String]) -> Result<Vec<String>, ToolsError> {
    let cache = closure_cache();
    let store = crate::nix_conf::store_dir();
    let mut all: Vec<String> = Vec::new();
    for root in roots {
        let known = cache.as_deref().and_then(|dir| cached_closure(dir, root, &store));
        let paths = match known {
            Some(paths) => paths,
            None => {
                let paths = query_closure(root)?;
                if let Some(dir) = &cache {
                    keep_closure(dir, root, &paths);
                }
                paths
            }
        };
        all.extend(paths.into_iter().filter(|path| !all.contains(path)).collect::<Vec<_>>());
    }
    Ok(all)
}

/// `nix-store --query --requisites ROOT`, store paths only.
fn query_closure(root: &str) -> Result<Vec<String>, ToolsError> {
    let store = crate::nix_conf::store_dir();
    let paths = crate::store::requisites(root).map_err(ToolsError::Closure)?;
    Ok(paths.into_iter().filter(|path| is_store_path(path, &store)).collect())
}

/// Where closures are kept: root's in `/var/cache/nix-attach/closures`,
/// which must be root's alone; a user's in their own cache directory. None
/// where neither can be had.
fn closure_cache() -> Option<std::path::PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let uid = nix::unistd::geteuid().as_raw();
    let dir = if uid == 0 {
        std::path::PathBuf::from("/var/cache/nix-attach/closures")
    } else {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(std::path::PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache")))?;
        base.join("nix-attach/closures")
    };
    let _ = std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir);
    let meta = std::fs::symlink_metadata(&dir).ok()?;
    (meta.is_dir() && meta.uid() == uid && meta.mode() & 0o022 == 0).then_some(dir)
}

/// The closure kept for `root`, if every path of it is still there in
/// `store`.
fn cached_closure(dir: &Path, root: &str, store: &Path) -> Option<Vec<String>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let name = Path::new(root).file_name()?;
    let file = std::fs::File::options().read(true).custom_flags(libc::O_NOFOLLOW).open(dir.join(name)).ok()?;
    let mut text = String::new();
    file.take(1 << 20).read_to_string(&mut text).ok()?;
    let paths: Vec<String> = text.lines().map(str::to_string).collect();
    let whole = paths.iter().any(|path| path == root);
    let all_there = paths.iter().all(|path| is_store_path(path, store) && Path::new(path).symlink_metadata().is_ok());
    (whole && all_there).then_some(paths)
}

/// Keeps `paths` as the closure of `root`; a failure only means asking
/// again next time.
fn keep_closure(dir: &Path, root: &str, paths: &[String]) {
    let Some(name) = Path::new(root).file_name() else { return };
    let partial = dir.join(format!(".{}.{}", name.to_string_lossy(), std::process::id()));
    if std::fs::write(&partial, paths.join("\n") + "\n").is_ok() && std::fs::rename(&partial, dir.join(name)).is_err() {
        let _ = std::fs::remove_file(&partial);
    }
}

/// The directories of `roots` that a session's PATH starts with.
pub fn bins_of(roots: &[String]) -> Vec<String> {
    roots.iter().map(|root| format!("{root}/bin")).filter(|bin| Path::new(bin).is_dir()).collect()
}

/// `nix build --no-link --print-out-paths INSTALLABLE`: its store paths.
fn realise(installable: &str) -> Result<Vec<String>, ToolsError> {
    let shown = crate::sanitize::sanitize(installable);
    let paths = crate::store::build_installable(installable).map_err(|err| match err {
        StoreError::Failed { message, .. } => ToolsError::NotStorePath(shown.clone(), crate::sanitize::sanitize(&message)),
        run => ToolsError::Realise(run),
    })?;
    let store = crate::nix_conf::store_dir();
    if paths.is_empty() || paths.iter().any(|path| !is_store_path(path, &store)) {
        return Err(ToolsError::NotStorePath(shown, "it names no store path".into()));
    }
    Ok(paths)
}

/// The hidden subcommand that mounts, in a process of its own.
pub const SUBCOMMAND: &str = "mount-tools";

/// Mounts every path of `closure` into the mount namespace of the process
/// `agent` (the build's agent), started at `started`: a process that took
/// its pid since is left alone. A process of its own does it
/// ([`SUBCOMMAND`], [`mount_here`]): `setns` into a mount namespace needs
/// a process of one thread, and the broker has many.
pub fn mount_into(agent: i32, started: u64, closure: &[String]) -> Result<(), ToolsError> {
    let exe = std::env::current_exe().map_err(|err| ToolsError::Mount("find", "this program".into(), err))?;
    let mut command = Command::new(exe);
    command.args([SUBCOMMAND, "--agent", &agent.to_string(), "--started", &started.to_string(), "--"]).args(closure).stdin(Stdio::null());
    let out = command.output().map_err(|err| ToolsError::Mount("run", SUBCOMMAND.into(), err))?;
    let said = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        // What it warned of.
        said.lines().filter(|line| !line.trim().is_empty()).for_each(|line| eprintln!("{}", crate::sanitize::sanitize(line)));
        return Ok(());
    }
    let last = said.lines().rev().find(|line| !line.trim().is_empty()).unwrap_or("it ended early");
    Err(ToolsError::Child(crate::sanitize::sanitize(last.trim().trim_start_matches("nix-attach: error: "))))
}

/// `nix-attach mount-tools --agent PID --started TICKS PATH…`: clones each
/// store path and mounts it into the agent's mount namespace; returns how
/// many were mounted (the others were there already). Only root can, and
/// only while PID is still the process that started at TICKS.
pub fn mount_here(agent: i32, started: u64, closure: &[String]) -> Result<usize, ToolsError> {
    let store = crate::nix_conf::store_dir();
    if let Some(bad) = closure.iter().find(|path| !is_store_path(path, &store)) {
        return Err(ToolsError::NotMountable(crate::sanitize::sanitize(bad)));
    }
    let trees = closure.iter().map(|path| clone_read_only(path).map(|tree| (path, tree))).collect::<Result<Vec<_>, _>>()?;
    let pid = rustix::process::Pid::from_raw(agent).ok_or_else(|| ToolsError::Child(format!("{agent} is not a process")))?;
    let pidfd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())
        .map_err(|err| ToolsError::Mount("reach the build's agent", agent.to_string(), err.into()))?;
    // Named, and its start time read, before `owner_of` sees it alive
    // through the pidfd: both are then the pidfd's process's. That must be
    // the agent found, not a process that took its pid since (in another
    // build's sandbox, or a container).
    if crate::gc_roots::start_time(agent) != Some(started) {
        return Err(ToolsError::Child(format!("the build's agent ({agent}) has ended")));
    }
    let name = crate::gc_roots::AgentName::of(agent);
    let owner = owner_of(agent, &pidfd)?;
    // Without roots the tools still work, until a collection: say so.
    if let Err(err) = name.and_then(|name| crate::gc_roots::keep_while_agent_lives(&name, closure)) {
        eprintln!(
            "nix-attach: the --with paths are not kept from the garbage collector: {}",
            crate::sanitize::sanitize(&format!("{:#}", anyhow::Error::from(err)))
        );
    }
    mount_in_namespace(&pidfd, owner, &trees)
}

/// The real uid and gid of the process `pid`, read while `pidfd` shows it
/// alive, so that the numbers are its own and not those of a process that
/// took its pid.
fn owner_of(pid: i32, pidfd: &OwnedFd) -> Result<(u32, u32), ToolsError> {
    let failed = |what: &str| ToolsError::Child(format!("cannot read the {what} of the build's agent ({pid})"));
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|_| failed("status"))?;
    let first = |key: &str| {
        let line = status.lines().find(|line| line.starts_with(key))?;
        line.split_whitespace().nth(1)?.parse::<u32>().ok()
    };
    let (uid, gid) = (first("Uid:").ok_or_else(|| failed("uid"))?, first("Gid:").ok_or_else(|| failed("gid"))?);
    let fdinfo = format!("/proc/self/fdinfo/{}", rustix::fd::AsRawFd::as_raw_fd(pidfd));
    let alive =
        std::fs::read_to_string(fdinfo).is_ok_and(|info| info.lines().any(|line| line.split_whitespace().eq(["Pid:", &pid.to_string()])));
    if alive {
        Ok((uid, gid))
    } else {
        Err(ToolsError::Child(format!("the build's agent ({pid}) ended")))
    }
}

/// A detached, read-only, nosuid, nodev clone of `path`.
/// A store path that is a link is refused: it could lead anywhere.
fn clone_read_only(path: &str) -> Result<OwnedFd, ToolsError> {
    use rustix::mount::{open_tree, OpenTreeFlags};
    if Path::new(path).symlink_metadata().is_ok_and(|meta| meta.file_type().is_symlink()) {
        return Err(ToolsError::Link(crate::sanitize::sanitize(path)));
    }
    let flags = OpenTreeFlags::OPEN_TREE_CLONE
        | OpenTreeFlags::OPEN_TREE_CLOEXEC
        | OpenTreeFlags::AT_RECURSIVE
        | OpenTreeFlags::AT_SYMLINK_NOFOLLOW;
    let tree = open_tree(rustix::fs::CWD, path, flags).map_err(|err| ToolsError::Mount("clone", path.to_string(), err.into()))?;
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
/// directory (or, for a file, a new file) of the sandbox's store. The mount
/// points are made as the agent's `owner` (`setfsuid`), so that whatever
/// the build made its `/nix/store` (in a namespace of its own, a bind of a
/// directory only root may write), root makes nothing there that the build
/// could not make itself; only the mounting is root's.
fn mount_in_namespace(pidfd: &OwnedFd, owner: (u32, u32), trees: &[(&String, OwnedFd)]) -> Result<usize, ToolsError> {
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
    nix::unistd::setfsgid(nix::unistd::Gid::from_raw(owner.1));
    nix::unistd::setfsuid(nix::unistd::Uid::from_raw(owner.0));
    let mut mounted = 0;
    for (path, tree) in trees {
        let name = Path::new(path.as_str()).file_name().map(|name| name.to_os_string()).unwrap_or_default();
        let is_dir = rustix::fs::fstat(tree).map(|stat| rustix::fs::FileType::from_raw_mode(stat.st_mode).is_dir());
        let is_dir = is_dir.map_err(|err| ToolsError::Mount("look at", path.to_string(), err.into()))?;
        // A store path is a directory or a file; its mount point is the same.
        let made = if is_dir {
            rustix::fs::mkdirat(&store, &name, Mode::from_raw_mode(0o555))
        } else {
            let flags = OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            rustix::fs::openat(&store, &name, flags, Mode::from_raw_mode(0o444)).map(drop)
        };
        match made {
            Ok(()) => {}
            // A path the build has is left as it is.
            Err(rustix::io::Errno::EXIST) => continue,
            Err(err) => return Err(ToolsError::Mount("make the mount point of", path.to_string(), err.into())),
        }
        let moved = rustix::mount::move_mount(tree.as_fd(), "", &store, &name, rustix::mount::MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH);
        if let Err(err) = moved {
            // An empty mount point left would read as the path being there.
            let _ = rustix::fs::unlinkat(&store, &name, if is_dir { rustix::fs::AtFlags::REMOVEDIR } else { rustix::fs::AtFlags::empty() });
            return Err(ToolsError::Mount("mount", path.to_string(), err.into()));
        }
        mounted += 1;
    }
    Ok(mounted)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch directory, removed when dropped.
    struct Scratch(std::path::PathBuf);
    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn a_kept_closure_is_read_back_until_one_of_its_paths_is_gone() {
        let scratch = Scratch(std::env::temp_dir().join(format!("nix-attach-closures-{}", std::process::id())));
        let (kept, store) = (scratch.0.join("closures"), scratch.0.join("store"));
        let there: Vec<String> =
            ["a", "b"].iter().map(|name| format!("{}/0123456789abcdfghijklmnpqrsvwxy{name}-{name}", store.display())).collect();
        for path in &there {
            std::fs::create_dir_all(path).unwrap();
        }
        std::fs::create_dir_all(&kept).unwrap();
        keep_closure(&kept, &there[0], &there);
        assert_eq!(cached_closure(&kept, &there[0], &store), Some(there.clone()));
        let gone = format!("{}/0123456789abcdfghijklmnpqrsvwxyz-gone", store.display());
        keep_closure(&kept, &there[0], &[there[0].clone(), gone]);
        assert_eq!(cached_closure(&kept, &there[0], &store), None, "a path of it is gone: ask again");
        assert_eq!(cached_closure(&kept, &there[1], &store), None, "nothing kept for another root");
    }
}
