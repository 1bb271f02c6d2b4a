//! Which failing builds the injection makes pause. A paused build holds a
//! build slot, so by default only a build whose requester waits for it
//! pauses: one that `nix-attach build` or `run` asked for. The wrapper marks
//! the nix it runs with [`MARK`] in its environment; the hook finds the
//! process that asked for the build through the kernel (the daemon
//! worker's client, [`requester`](crate::waiting::requester)) and reads its
//! environment. A plain `nix-build` by anyone fails at once, as always.
//! Nothing the build wrote is read.
//!
//! A site may choose more with `NIX_ATTACH_PAUSE=all` in the daemon's
//! environment: every failing stdenv build then pauses (for its
//! `NIX_ATTACH_TIMEOUT`, 1800 s by default).

use crate::waiting::process::Process;
use crate::waiting::requester::requester;

/// The variable the wrapper sets for the nix it runs.
pub const MARK: &str = "NIX_ATTACH_REQUESTED";
/// The most of a client's environment read.
const MAX_ENVIRON: u64 = 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pause {
    /// Builds that `nix-attach build` or `run` asked for (the default).
    Requested,
    /// Every failing stdenv build.
    All,
}

impl Pause {
    /// The site's choice: `NIX_ATTACH_PAUSE` in the daemon's environment.
    pub fn from_env() -> Pause {
        match std::env::var("NIX_ATTACH_PAUSE").as_deref() {
            Ok("all") => Pause::All,
            _ => Pause::Requested,
        }
    }

    /// Whether the build run by `worker` should pause when it fails.
    pub fn wants(self, worker: &Process) -> bool {
        self == Pause::All || asked_by_the_wrapper(worker)
    }
}

/// Whether the process that asked `worker` for the build carries the mark:
/// a live process of the uid the kernel recorded for the connection.
fn asked_by_the_wrapper(worker: &Process) -> bool {
    let Ok(client) = requester(worker) else { return false };
    let Ok(process) = Process::open(client.pid) else { return false };
    if process.facts().ok().map(|facts| facts.uid) != Some(client.uid) {
        return false;
    }
    let Some(environ) = process.read_memory("environ", MAX_ENVIRON) else { return false };
    let wanted = format!("{MARK}=1");
    environ.split(|b| *b == 0).any(|entry| entry == wanted.as_bytes())
}
