//! Which processes may be a build's agent.
//!
//! Any local user can start a process called `nix-attach agent`. Only one
//! that runs as a build could be a build's agent: root, this user (a
//! single-user store), a member of the build users group, or any process
//! in another pid namespace (a sandboxed build).

use std::os::fd::OwnedFd;

/// The group whose members Nix runs builds as (`build-users-group`).
const BUILD_USERS_GROUP: &str = "nixbld";

/// Whether the process behind `process` (a handle on its `/proc` entry),
/// running as `uid`, may be running a build.
pub fn may_run_builds(process: &OwnedFd, uid: u32) -> bool {
    uid == 0 || uid == nix::unistd::geteuid().as_raw() || in_other_pid_namespace(process) || is_build_user(uid)
}

fn in_other_pid_namespace(process: &OwnedFd) -> bool {
    let theirs = nix::fcntl::readlinkat(process, "ns/pid");
    let ours = std::fs::read_link("/proc/self/ns/pid");
    matches!((theirs, ours), (Ok(theirs), Ok(ours)) if theirs.as_os_str() != ours.as_os_str())
}

/// Whether `uid` belongs to the build users group, by /etc/passwd and
/// /etc/group (a static binary has no name service to ask).
fn is_build_user(uid: u32) -> bool {
    let (Ok(passwd), Ok(group)) = (std::fs::read_to_string("/etc/passwd"), std::fs::read_to_string("/etc/group")) else {
        return false;
    };
    let Some(builders) = group.lines().map(|line| line.split(':').collect::<Vec<_>>()).find(|f| f.first() == Some(&BUILD_USERS_GROUP))
    else {
        return false;
    };
    let gid = builders.get(2).copied().unwrap_or_default();
    let members: Vec<&str> = builders.get(3).map(|list| list.split(',').collect()).unwrap_or_default();
    passwd
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .any(|user| user.get(2) == Some(&uid.to_string().as_str()) && (user.get(3) == Some(&gid) || members.contains(&user[0])))
}
