//! Runs nix-attach's own `attach` and `release` for the wrapper, as a child
//! process on the user's terminal: directly when this user can reach the
//! build (root, or a single-user store), through sudo otherwise.

use crate::host::discovery::discover_agents;
use std::path::PathBuf;
use tokio::process::Command;

/// How the wrapper reaches a paused build.
pub struct Reach {
    exe: PathBuf,
    told_about_sudo: bool,
}

impl Reach {
    pub fn new() -> std::io::Result<Reach> {
        Ok(Reach { exe: std::env::current_exe()?, told_about_sudo: false })
    }

    /// `nix-attach ARGS…`, run so that it can reach build `id`.
    pub fn command(&mut self, id: &str, args: &[&str]) -> Command {
        if self.reachable(id) {
            let mut command = Command::new(&self.exe);
            command.args(args);
            return command;
        }
        if !std::mem::replace(&mut self.told_about_sudo, true) {
            eprint!("nix-attach: daemon builds belong to the build users; entering through sudo\r\n");
        }
        let mut command = Command::new("sudo");
        command.arg("--").arg(&self.exe).args(args);
        command
    }

    fn reachable(&self, id: &str) -> bool {
        nix::unistd::geteuid().is_root() || discover_agents().builds.iter().any(|build| build.meta.id == id)
    }
}
