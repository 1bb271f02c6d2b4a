//! Garbage-collector roots for what a waiting build is lent: the `--with`
//! tools mounted into its sandbox stay in the store for as long as that
//! build's agent lives, though nothing of Nix's own refers to them.
//!
//! Each agent has a directory of its own under the store's roots,
//! `gcroots/nix-attach/<pid>-<start time>`, with a link to each path; Nix's
//! collector follows links in the directories under `gcroots`. The pid's
//! start time (from `/proc`) tells that agent from a later process that
//! took its pid. A directory whose agent is gone is removed the next time
//! roots are added, so the paths of a build that ended are let go. Only
//! root writes there.
//!
//! May use: [`nix_conf`](crate::nix_conf); no module that uses it (`layout`
//! keeps the arrows one way).

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum GcRootError {
    #[error("cannot read the start time of the build's agent ({0}): it ended")]
    Agent(i32),
    #[error("cannot keep the --with paths from the garbage collector: cannot {0} {1}")]
    Write(&'static str, PathBuf, #[source] std::io::Error),
}

/// Roots each of `paths` for as long as the agent `agent` lives, and lets
/// go of the paths of agents that are gone.
pub fn keep_while_agent_lives(agent: i32, paths: &[String]) -> Result<(), GcRootError> {
    let started = start_time(agent).ok_or(GcRootError::Agent(agent))?;
    let all = roots_dir();
    let mine = all.join(format!("{agent}-{started}"));
    let_go_of_ended(&all);
    std::fs::create_dir_all(&mine).map_err(|err| GcRootError::Write("make", mine.clone(), err))?;
    for path in paths {
        let Some(name) = Path::new(path).file_name() else { continue };
        match std::os::unix::fs::symlink(path, mine.join(name)) {
            Err(err) if err.kind() != std::io::ErrorKind::AlreadyExists => return Err(GcRootError::Write("link", mine.join(name), err)),
            _ => {}
        }
    }
    Ok(())
}

/// Where the agents' directories are.
fn roots_dir() -> PathBuf {
    crate::nix_conf::state_dir().join("gcroots/nix-attach")
}

/// Removes each agent's directory under `all` whose agent is gone.
fn let_go_of_ended(all: &Path) {
    let Ok(entries) = std::fs::read_dir(all) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some((pid, started)) = name.split_once('-') else { continue };
        let (Ok(pid), Ok(started)) = (pid.parse::<i32>(), started.parse::<u64>()) else { continue };
        if start_time(pid) != Some(started) {
            // Another nix-attach may remove it at the same moment.
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// When the process `pid` started, in clock ticks after boot: the 22nd
/// field of `/proc/PID/stat`, counted after the command's name, which may
/// hold spaces and parentheses.
fn start_time(pid: i32) -> Option<u64> {
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
    fn this_process_has_a_start_time_and_a_pid_that_is_none_has_none() {
        assert!(start_time(std::process::id() as i32).is_some());
        assert_eq!(start_time(i32::MAX), None);
    }
}
