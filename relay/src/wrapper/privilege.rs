//! Runs nix-attach's own `attach` and `release` for the wrapper, as a child
//! process on the user's terminal: directly when this user can reach the
//! build (root, a single-user store, or a build of its own that the broker
//! serves), through sudo otherwise, and `--via` the builder for a build
//! that Nix sent to a remote builder.

use crate::broker;
use crate::pointer::Pointer;
use crate::waiting::discovery::discover_agents;
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use tokio::process::Command;

/// How the wrapper reaches a paused build.
pub struct Reach {
    exe: PathBuf,
    told_about_sudo: bool,
    /// A person is at the terminal: sudo may ask for a password there.
    attended: bool,
    /// Whether each build asked about is reachable without sudo, found once.
    known: HashMap<String, bool>,
    /// The builds on remote builders: `--via URI [--agent PATH]`.
    remote: HashMap<String, Vec<String>>,
}

impl Reach {
    /// `attended`: sudo may ask for a password; otherwise it must not
    /// (`sudo -n`), as nobody could answer.
    pub fn new(attended: bool) -> std::io::Result<Reach> {
        Ok(Reach { exe: std::env::current_exe()?, told_about_sudo: false, attended, known: HashMap::new(), remote: HashMap::new() })
    }

    /// The build that paused at `pointer` runs on the remote builder `uri`.
    /// The agent the pointer names is run there only if it is this very
    /// program: a build prints its pointer line, and a hostile one could
    /// name a program of its own (an input, so on the builder too) for us
    /// to run there.
    /// A builder Nix does not know is not reached: which builder a build
    /// ran on is read from nix's output, which builds print into too.
    /// A build found here is this machine's, whatever a line says: another
    /// build may print Nix's line for it, naming a builder Nix knows. (Found
    /// as root, or in a single-user store: one look through `/proc`, never
    /// a wait on the broker.)
    pub fn remote(&mut self, pointer: &Pointer, uri: &str) {
        let unknown = crate::remote::machines::find(uri).is_none() || crate::remote::Via::parse(uri).is_err();
        if unknown || discovered_here(&pointer.id) {
            return;
        }
        let mut via = vec!["--via".to_string(), uri.to_string()];
        if let Some(agent) = pointer.agent.as_deref().filter(|agent| is_this_program(Path::new(agent), &self.exe)) {
            via.extend(["--agent".to_string(), agent.to_string()]);
        }
        self.remote.insert(pointer.id.clone(), via);
    }

    /// The builder the build `id` paused on, where it is a remote one.
    pub fn builder_of(&self, id: &str) -> Option<&str> {
        self.remote.get(id).and_then(|via| via.get(1)).map(String::as_str)
    }

    /// `ARGS…` with `--via …` after the command's name, for a remote build.
    fn args_for(&self, id: &str, args: &[&str]) -> Vec<String> {
        let mut all: Vec<String> = args.iter().map(|arg| arg.to_string()).collect();
        if let Some(via) = self.remote.get(id) {
            all.splice(1..1, via.iter().cloned());
        }
        all
    }

    /// `nix-attach ARGS…`, run so that it can reach build `id`.
    pub fn command(&mut self, id: &str, args: &[&str]) -> Command {
        let args = self.args_for(id, args);
        if self.reachable(id) {
            let mut command = Command::new(&self.exe);
            command.args(args);
            return command;
        }
        if !std::mem::replace(&mut self.told_about_sudo, true) {
            let end = if self.attended { "\r\n" } else { "\n" };
            eprint!("nix-attach: daemon builds belong to the build users; reaching them through sudo{end}");
        }
        let mut command = Command::new("sudo");
        if !self.attended {
            command.arg("-n");
        }
        command.arg("--").arg(&self.exe).args(args);
        command
    }

    /// The command that enters build `id`, as this user would type it.
    pub fn attach_command(&mut self, id: &str) -> String {
        let words: Vec<String> = self.args_for(id, &["attach", id]).iter().map(|word| crate::remote::quoted_if_needed(word)).collect();
        let words = words.join(" ");
        if self.reachable(id) {
            format!("nix-attach {words}")
        } else {
            format!("sudo nix-attach {words}")
        }
    }

    /// Whether this user reaches build `id` without sudo: as root, directly
    /// (a single-user store), or through the broker (a build it asked for).
    /// Found once for each build.
    fn reachable(&mut self, id: &str) -> bool {
        if let Some(known) = self.known.get(id) {
            return *known;
        }
        // A remote build's privileges are the builder's business (`--via`).
        if self.remote.contains_key(id) {
            return true;
        }
        let reachable = nix::unistd::geteuid().is_root() || found_here(id);
        self.known.insert(id.to_string(), reachable);
        reachable
    }
}

/// Whether this user finds the build `id` on this machine: directly (as
/// root, or in a single-user store), or through the broker.
fn found_here(id: &str) -> bool {
    discovered_here(id) || broker::client::list(&broker::socket_path()).is_ok_and(|mine| mine.iter().any(|build| build.id == id))
}

/// Whether this user finds the build `id` here directly.
fn discovered_here(id: &str) -> bool {
    discover_agents(false).builds.iter().any(|build| build.meta.id == id)
}

/// Whether the file at `path` (in this machine's store, where a remote
/// build's inputs come from) holds the same bytes as `exe`.
fn is_this_program(path: &Path, exe: &Path) -> bool {
    use std::os::unix::fs::OpenOptionsExt;
    let store = crate::nix_conf::store_dir();
    // No link on the way: a store path may be a link, to a file that is
    // another on the builder.
    if !path.starts_with(&store) || std::fs::canonicalize(path).ok().as_deref() != Some(path) {
        return false;
    }
    let flags = nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_NONBLOCK;
    let theirs = std::fs::OpenOptions::new().read(true).custom_flags(flags.bits()).open(path);
    let (Ok(mut theirs), Ok(mut ours)) = (theirs, std::fs::File::open(exe)) else { return false };
    let same_size = match (theirs.metadata(), ours.metadata()) {
        (Ok(a), Ok(b)) => a.is_file() && a.len() == b.len(),
        _ => false,
    };
    if !same_size {
        return false;
    }
    let (mut a, mut b) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    loop {
        let n = match theirs.read(&mut a) {
            Ok(0) => return true,
            Ok(n) => n,
            Err(_) => return false,
        };
        if ours.read_exact(&mut b[..n]).is_err() || a[..n] != b[..n] {
            return false;
        }
    }
}
