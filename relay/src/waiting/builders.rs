//! Which processes may be a build's agent.
//!
//! Any local user can start a process called `nix-attach agent`, in a build
//! directory of its own making, and even in a pid and user namespace of its
//! own (`unshare -Urpf`): nothing about such a process says "build". What an
//! ordinary user cannot make is a process whose parent is a Nix process run
//! by root. Nix starts every builder as a child of the process that runs the
//! build: the daemon's worker for a daemon build (also in a sandbox, where
//! the builder is pid 1 of its own namespace), or root's own `nix-build`
//! for a root store without a daemon. So an agent counts when:
//! - it runs as root, or as the user asking (a single-user store, where
//!   builds run as the calling user: that user's own process is no
//!   impostor to them); or
//! - going up from it, through processes of its own uid, the first process
//!   of another uid is a Nix program run by root (see [`nix_ancestor`]),
//!   on this machine: one that sees the caller's store directory. A Nix
//!   with another `/nix` (a second machine sharing this kernel, a
//!   container) runs builds of its own, reached there (`--via`).

use super::process::{Facts, Process};

/// The names Nix's programs run under: `nix-daemon`, `nix-build` and the
/// rest are links to `nix` (Nix and Lix alike); packagers' wrappers add
/// `.NAME-wrapped`.
const NIX_PROGRAMS: &[&str] = &["nix", "nix-daemon", "nix-build", "nix-store", ".nix-wrapped", ".nix-daemon-wrapped"];
/// How far up the walk goes: a builder's own process tree is never deeper.
const MAX_DEPTH: usize = 64;

/// Why a process counts as a build's agent.
#[derive(Debug)]
pub enum Origin {
    /// It runs as root or as the user asking: nobody else's process.
    Trusted,
    /// A Nix process of root's started its build (the daemon's worker).
    Nix(Process),
}

/// Whether `agent`, a process with `facts`, may be running a build, and why.
pub fn origin(agent: &Process, facts: &Facts) -> Option<Origin> {
    // Root's own agents, and the caller's, need no walk: for root's the walk
    // could find nothing (the first process of another uid is never root).
    if facts.uid == facts.euid && (facts.euid == 0 || facts.euid == nix::unistd::geteuid().as_raw()) {
        return Some(Origin::Trusted);
    }
    nix_ancestor(agent, facts).map(Origin::Nix)
}

/// The Nix process, run by root, that the build `process` belongs to was
/// started by: the first process of another uid going up from it. `None`
/// when that process is not a Nix program of root's, or when the chain
/// breaks (a parent gone, or a pid reused).
fn nix_ancestor(process: &Process, facts: &Facts) -> Option<Process> {
    let build_uid = facts.euid;
    let (mut child, mut child_facts) = (None::<Process>, *facts);
    for _ in 0..MAX_DEPTH {
        let (parent, parent_facts) = child.as_ref().unwrap_or(process).parent(&child_facts).ok()?;
        if parent_facts.euid != build_uid || parent_facts.uid != build_uid {
            let by_root = parent_facts.uid == 0 && parent_facts.euid == 0;
            return (by_root && is_nix_program(&parent) && on_this_machine(&parent)).then_some(parent);
        }
        (child, child_facts) = (Some(parent), parent_facts);
    }
    None
}

/// Whether `process` sees the caller's store directory (the same
/// directory, not one of the same name): the daemon keeps a mount
/// namespace of its own, but its `/nix/store` is the caller's. Root can
/// always tell; an ordinary user cannot look into root's processes, and
/// is not refused for that (it reaches no other user's build anyway).
fn on_this_machine(process: &Process) -> bool {
    use std::os::unix::fs::MetadataExt;
    // Ours is looked up once, whatever the number of builds.
    static OURS: std::sync::OnceLock<Option<(u64, u64)>> = std::sync::OnceLock::new();
    let store = crate::nix_conf::store_dir();
    let ours = *OURS.get_or_init(|| std::fs::symlink_metadata(&store).ok().map(|meta| (meta.dev(), meta.ino())));
    match (process.directory_identity(&store.to_string_lossy()), ours) {
        (Ok(theirs), Some(ours)) => theirs == ours,
        _ => !nix::unistd::geteuid().is_root(),
    }
}

/// Whether a process of root's runs Nix: by its program, or, where only
/// root may read that (an ordinary user asking, who can reach no build of
/// others anyway), by its command name, which only root's own process can
/// have set. Root itself goes by the program alone: one it cannot read (a
/// process on its way out) is not taken for Nix.
pub fn is_nix_program(process: &Process) -> bool {
    let name = match process.program() {
        Ok(program) => program.file_name().map(|name| name.to_string_lossy().into_owned()),
        Err(_) if nix::unistd::geteuid().is_root() => None,
        Err(_) => process.command_name().ok(),
    };
    name.is_some_and(|name| NIX_PROGRAMS.contains(&name.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_whose_chain_reaches_no_nix_program_has_no_nix_ancestor() {
        // The test runs under cargo, not under Nix.
        let me = Process::open(std::process::id() as i32).unwrap();
        let facts = me.facts().unwrap();
        assert!(nix_ancestor(&me, &facts).is_none());
    }

    #[test]
    fn the_callers_own_processes_are_trusted() {
        let me = Process::open(std::process::id() as i32).unwrap();
        assert!(matches!(origin(&me, &me.facts().unwrap()), Some(Origin::Trusted)));
    }
}
