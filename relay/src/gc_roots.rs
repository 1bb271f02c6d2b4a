//! Garbage-collector roots for what a waiting build is lent: the `--with`
//! tools mounted into its sandbox stay in the store for as long as that
//! build's agent lives, though nothing of Nix's own refers to them.
//!
//! Each agent has a directory of its own under the store's roots,
//! `gcroots/nix-attach/<boot id>.<pid>.<start time>`, with a link to each
//! path; Nix's collector follows links in the directories under `gcroots`.
//! The boot and the pid's start time (from `/proc`) tell that agent from a
//! later process that took its pid, in this boot or another. A directory
//! whose agent is gone is removed the next time roots are added, so the
//! paths of a build that ended are let go then.
//!
//! Root does it, and trusts `gcroots` only where it is a directory of
//! root's that nobody else may write to; every step below it is taken
//! from a descriptor, without following a link.
//!
//! May use: [`nix_conf`](crate::nix_conf); no module that uses it (`layout`
//! keeps the arrows one way).

use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{AtFlags, Mode, OFlags};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum GcRootError {
    #[error("cannot read the start of the build's agent ({0}): it ended")]
    Agent(i32),
    #[error("cannot read this boot's id from {BOOT_ID}")]
    Boot(#[source] std::io::Error),
    #[error("cannot {0} {1}")]
    Io(&'static str, PathBuf, #[source] std::io::Error),
    #[error("{0} is not a directory that only root may write to")]
    Untrusted(PathBuf),
}

const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

/// An agent, named so that no other process, in this boot or another,
/// takes its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentName {
    boot: String,
    pid: i32,
    started: u64,
}

impl AgentName {
    /// The name of the process `pid`. Read it before making sure (through
    /// a pidfd) that `pid` is still the agent: then it is the agent's.
    pub fn of(pid: i32) -> Result<AgentName, GcRootError> {
        Ok(AgentName { boot: boot_id()?, pid, started: start_time(pid).ok_or(GcRootError::Agent(pid))? })
    }

    fn file_name(&self) -> String {
        format!("{}.{}.{}", self.boot, self.pid, self.started)
    }

    fn parse(name: &str) -> Option<AgentName> {
        let mut parts = name.split('.');
        let (boot, pid, started) = (parts.next()?, parts.next()?.parse().ok()?, parts.next()?.parse().ok()?);
        let plain = boot.len() == 32 && boot.bytes().all(|byte| byte.is_ascii_hexdigit());
        (plain && parts.next().is_none()).then(|| AgentName { boot: boot.to_string(), pid, started })
    }

    /// Whether the process it names lives.
    fn lives(&self, boot: &str) -> bool {
        self.boot == boot && start_time(self.pid) == Some(self.started)
    }
}

/// Roots each of `paths` for as long as `agent` lives, and lets go of the
/// paths of agents that are gone.
pub fn keep_while_agent_lives(agent: &AgentName, paths: &[String]) -> Result<(), GcRootError> {
    let all = roots_dir()?;
    let_go_of_ended(&all, &agent.boot);
    let name = agent.file_name();
    let mine = child_dir(&all, &name)?;
    for path in paths {
        let Some(link) = Path::new(path).file_name() else { continue };
        match rustix::fs::symlinkat(path.as_str(), &mine, link) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(err) => return Err(GcRootError::Io("link", Path::new(&name).join(link), err.into())),
        }
    }
    Ok(())
}

/// `gcroots/nix-attach` in Nix's state directory, made if need be, where
/// `gcroots` is root's alone.
fn roots_dir() -> Result<OwnedFd, GcRootError> {
    let gcroots = crate::nix_conf::state_dir().join("gcroots");
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let dir = rustix::fs::open(&gcroots, flags, Mode::empty()).map_err(|err| GcRootError::Io("open", gcroots.clone(), err.into()))?;
    trusted(&dir, &gcroots)?;
    child_dir(&dir, "nix-attach")
}

/// The directory `name` in `parent`, made if need be; never a link, and
/// root's alone.
fn child_dir(parent: &OwnedFd, name: &str) -> Result<OwnedFd, GcRootError> {
    match rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(0o755)) {
        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
        Err(err) => return Err(GcRootError::Io("make", name.into(), err.into())),
    }
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let dir = rustix::fs::openat(parent, name, flags, Mode::empty()).map_err(|err| GcRootError::Io("open", name.into(), err.into()))?;
    trusted(&dir, Path::new(name))?;
    Ok(dir)
}

fn trusted(dir: &OwnedFd, shown: &Path) -> Result<(), GcRootError> {
    let stat = rustix::fs::fstat(dir).map_err(|err| GcRootError::Io("look at", shown.to_path_buf(), err.into()))?;
    if stat.st_uid == 0 && stat.st_mode & 0o022 == 0 {
        Ok(())
    } else {
        Err(GcRootError::Untrusted(shown.to_path_buf()))
    }
}

/// Removes each agent's directory in `all` whose agent is gone. Another
/// nix-attach may remove the same at the same moment: what fails is left.
fn let_go_of_ended(all: &OwnedFd, boot: &str) {
    for name in names_in(all) {
        let name = name.to_string_lossy().into_owned();
        if AgentName::parse(&name).is_some_and(|agent| !agent.lives(boot)) {
            remove_links_dir(all, &name);
        }
    }
}

/// Removes the directory `name` of `parent` and the links in it.
fn remove_links_dir(parent: &OwnedFd, name: &str) {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let Ok(dir) = rustix::fs::openat(parent, name, flags, Mode::empty()) else { return };
    for name in names_in(&dir) {
        let _ = rustix::fs::unlinkat(dir.as_fd(), name.as_os_str(), AtFlags::empty());
    }
    let _ = rustix::fs::unlinkat(parent, name, AtFlags::REMOVEDIR);
}

/// The names in the directory `dir`; none where it cannot be read.
fn names_in(dir: &OwnedFd) -> Vec<std::ffi::OsString> {
    let listed = std::fs::read_dir(format!("/proc/self/fd/{}", rustix::fd::AsRawFd::as_raw_fd(dir)));
    listed.map(|entries| entries.flatten().map(|entry| entry.file_name()).collect()).unwrap_or_default()
}

/// This boot's id, as 32 hex digits.
fn boot_id() -> Result<String, GcRootError> {
    let text = std::fs::read_to_string(BOOT_ID).map_err(GcRootError::Boot)?;
    Ok(text.trim().replace('-', ""))
}

/// When the process `pid` started, in clock ticks after boot: the 22nd
/// field of `/proc/PID/stat`, counted after the command's name, which may
/// hold spaces and parentheses.
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start_time(&stat)
}

fn parse_start_time(stat: &str) -> Option<u64> {
    let (_, after_name) = stat.rsplit_once(')')?;
    after_name.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_start_time_is_read_after_the_last_parenthesis_of_the_name() {
        let stat = "42 (a) b (c) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(parse_start_time(stat), Some(987654));
        assert_eq!(parse_start_time("42 (cut"), None);
    }

    #[test]
    fn this_process_lives_under_its_name_and_not_in_another_boot() {
        let me = AgentName::of(std::process::id() as i32).unwrap();
        let boot = boot_id().unwrap();
        assert_eq!(AgentName::parse(&me.file_name()), Some(me.clone()));
        assert!(me.lives(&boot));
        let other_boot = AgentName { boot: "0".repeat(32), ..me.clone() };
        assert!(!other_boot.lives(&boot));
        assert!(AgentName::of(i32::MAX).is_err());
    }

    #[test]
    fn a_roots_directory_is_taken_only_where_it_is_no_link_and_nobody_else_may_write() {
        let base = std::env::temp_dir().join(format!("nix-attach-gc-roots-{}", std::process::id()));
        std::fs::create_dir(&base).unwrap();
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let parent = rustix::fs::open(&base, flags, Mode::empty()).unwrap();
        let root_s = rustix::process::geteuid().is_root();
        assert_eq!(child_dir(&parent, "made").is_ok(), root_s, "made, 0755, and the caller's");
        std::fs::set_permissions(base.join("made"), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
        assert!(matches!(child_dir(&parent, "made"), Err(GcRootError::Untrusted(_))), "writable by others");
        std::os::unix::fs::symlink("/", base.join("link")).unwrap();
        assert!(matches!(child_dir(&parent, "link"), Err(GcRootError::Io("open", ..))), "a link is not followed");
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn only_names_of_nix_attach_s_making_are_taken_for_agents() {
        for name in ["12-34", "x.1.2", "00000000000000000000000000000000.1", "00000000000000000000000000000000.1.2.3", "../etc"] {
            assert_eq!(AgentName::parse(name), None, "{name}");
        }
    }
}
