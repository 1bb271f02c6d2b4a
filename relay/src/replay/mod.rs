//! `nix-attach replay FILE [-- CMD…]`: enters a captured build
//! ([`crate::capture`]) later, on any Linux machine that has its store
//! paths, as an ordinary user, with no daemon and no root.
//!
//! The file is unpacked into a scratch directory of the user's
//! ([`unpack`], treating it as hostile); its store paths must be valid
//! here (or fetched, with `--fetch`); then [`sandbox`] recreates the
//! build's sandbox with bubblewrap and runs nix-attach's own agent in it,
//! on the captured snapshot. The session is a live attach's (or exec's),
//! over that agent's socket. With `--patch FILE`, the session's changes to
//! the source ([`patch`]) are written there before the sandbox ends. The
//! scratch directory is removed afterwards.
//!
//! May use: [`capture`](crate::capture), [`host`](crate::host),
//! [`metadata`](crate::metadata), [`nix_conf`](crate::nix_conf), [`patch_file`](crate::patch_file),
//! [`protocol`](crate::protocol), [`sanitize`](crate::sanitize),
//! [`store`](crate::store), [`tools`](crate::tools), [`waiting`](crate::waiting)'s `connect`; no module that uses it (`layout` keeps the
//! arrows one way).

pub mod patch;
pub mod sandbox;
pub mod unpack;

use crate::capture::Sandbox;
use crate::host;
use crate::metadata::{Metadata, METADATA, STATE_DIR};
use crate::protocol::Request;
use crate::sanitize::sanitize;
use std::io::IsTerminal;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// How long the sandbox's agent may take to listen.
const START_PATIENCE: Duration = Duration::from_secs(30);
/// How long the sandbox may take to end once its agent is released.
const END_PATIENCE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("cannot make a scratch directory in {0}")]
    Scratch(PathBuf, #[source] std::io::Error),
    #[error(transparent)]
    Unpack(#[from] unpack::UnpackError),
    #[error("the capture has no agent metadata (build/{STATE_DIR}/{METADATA}), or it is not valid")]
    Metadata,
    #[error(
        "{missing} of the {total} store paths the build had are not in this store (the first: {first}); \
         fetch them with `nix-store --realise PATH…`, or replay with --fetch"
    )]
    Missing { missing: usize, total: usize, first: String },
    #[error("cannot run bwrap (bubblewrap), which makes the sandbox; install it (Debian: apt install bubblewrap; nixpkgs: bubblewrap)")]
    NoBwrap(#[source] std::io::Error),
    #[error("the sandbox ended before its agent listened: {0}")]
    SandboxEnded(String),
    #[error("the sandbox's agent did not listen within {0:?}")]
    NoAgent(Duration),
    #[error("cannot reach the sandbox's agent")]
    Connect(#[from] crate::waiting::connect::ConnectError),
    #[error("cannot open the sandbox's state directory {0}")]
    StateDir(PathBuf, #[source] nix::errno::Errno),
    #[error("the sandbox's socket is served by uid {0}, not by us")]
    WrongPeer(u32),
    #[error(transparent)]
    Sandbox(#[from] sandbox::SandboxError),
}

/// What `replay` was asked.
pub struct Options {
    pub file: PathBuf,
    pub command: Vec<String>,
    pub fetch: bool,
    pub max_size: u64,
    /// Tools to bring in (`--with`): one more read-only bind each.
    pub with: Vec<String>,
    /// Where the session's changes to the source go, as `nix-attach diff`
    /// writes them, once it ends; with new files too where asked.
    pub patch: Option<(PathBuf, bool)>,
}

/// Runs the replay; returns the session's exit status.
pub fn run(options: Options) -> anyhow::Result<i32> {
    host::privileges::give_up_root()?;
    // Before the session, so that a place it cannot be written to is
    // said before any work is done.
    let patch = options.patch.as_ref().map(|(path, new_files)| patch::Pending::open(path, *new_files, options.max_size)).transpose()?;
    let scratch = Scratch::new()?;
    let manifest = unpack::unpack(&options.file, &scratch.0, options.max_size)?;
    let build_dir = scratch.0.join(crate::capture::BUILD);
    let meta = captured_metadata(&build_dir)?;
    // The sandbox's agent makes its state afresh; until it has, nobody
    // should take the captured state for its.
    let state = build_dir.join(STATE_DIR);
    std::fs::remove_dir_all(&state).map_err(|err| ReplayError::Scratch(state, err))?;
    let tools = if options.with.is_empty() { crate::tools::Tools::default() } else { crate::tools::resolve(&options.with)? };
    sandbox::check_build_top(&manifest.sandbox, &tools.closure)?;
    ensure_store_paths(&manifest.sandbox, options.fetch)?;
    let etc = scratch.0.join("etc");
    std::fs::create_dir(&etc).map_err(|err| ReplayError::Scratch(etc.clone(), err))?;
    for (name, text) in sandbox::etc_files(manifest.sandbox.uid, manifest.sandbox.gid) {
        std::fs::write(etc.join(name), text).map_err(|err| ReplayError::Scratch(etc.clone(), err))?;
    }
    let layout = sandbox::Layout { build_dir: build_dir.clone(), etc, agent: std::env::current_exe()?, tools: tools.closure };
    let log = std::fs::File::create(scratch.0.join("agent.log"))?;
    let mut child = sandbox::command(&manifest, &meta, &layout)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .map_err(ReplayError::NoBwrap)?;
    let mut agent = None;
    let result = wait_for_agent(&mut child, &build_dir, &scratch.0)
        .and_then(|()| AgentSocket::open(&build_dir))
        .map_err(anyhow::Error::from)
        .and_then(|opened| session(agent.insert(opened), options.command, tools.bins));
    let written = match (&result, patch) {
        (Ok(_), Some(patch)) => agent.as_mut().expect("a session ran").connect().map_err(Into::into).and_then(|to| patch.write(to)),
        _ => Ok(()),
    };
    end(&mut child, agent.as_mut());
    let status = result?;
    // The session's status stands; a patch that could not be kept is
    // said, and fails a session that passed.
    match written {
        Ok(()) => Ok(status),
        Err(err) => {
            eprintln!("nix-attach: {}", sanitize(&format!("{err:#}")));
            Ok(if status == 0 { 1 } else { status })
        }
    }
}

/// The metadata the agent wrote when the build paused, from the capture.
fn captured_metadata(build_dir: &Path) -> Result<Metadata, ReplayError> {
    let path = build_dir.join(STATE_DIR).join(METADATA);
    let meta = std::fs::symlink_metadata(&path).map_err(|_| ReplayError::Metadata)?;
    if !meta.is_file() || meta.len() > crate::metadata::MAX_METADATA {
        return Err(ReplayError::Metadata);
    }
    let text = std::fs::read(&path).map_err(|_| ReplayError::Metadata)?;
    Metadata::parse(&text).map_err(|_| ReplayError::Metadata)
}

/// Every store path of the sandbox must be valid here; with `fetch`, the
/// missing ones are realised (substituted) first.
fn ensure_store_paths(sandbox: &Sandbox, fetch: bool) -> Result<(), ReplayError> {
    let mut missing = missing_paths(&sandbox.store_paths);
    let fetchable = substitutable(&missing);
    if fetch && !fetchable.is_empty() {
        let _ = std::process::Command::new("nix-store").arg("--realise").args(fetchable).stdout(Stdio::null()).status();
        missing = missing_paths(&sandbox.store_paths);
    }
    match missing.first() {
        None => Ok(()),
        Some(first) => Err(ReplayError::Missing { missing: missing.len(), total: sandbox.store_paths.len(), first: sanitize(first) }),
    }
}

/// The paths of `missing` that `--fetch` asks Nix to realise: never a
/// derivation, which realising would build (the file names it, and anyone
/// may have written the file).
fn substitutable(missing: &[String]) -> Vec<&String> {
    missing.iter().filter(|path| !path.ends_with(".drv")).collect()
}

/// The store paths of `paths` that are not valid in this store, as
/// `nix-store` says; where it cannot be asked, those that do not exist.
fn missing_paths(paths: &[String]) -> Vec<String> {
    crate::store::invalid(paths).unwrap_or_else(|_| paths.iter().filter(|path| std::fs::symlink_metadata(path).is_err()).cloned().collect())
}

/// Runs the session: an attach, or `command` through exec; its PATH starts
/// with `path` (`--with`).
fn session(agent: &mut AgentSocket, command: Vec<String>, path: Vec<String>) -> anyhow::Result<i32> {
    let connection = agent.connect()?;
    if command.is_empty() {
        host::attach_over(connection, false, path)
    } else {
        host::session_over(connection, Request::Exec { argv: command, path }, !std::io::stdin().is_terminal(), true)
    }
}

/// Waits until the sandbox's agent has made its state (and listens).
fn wait_for_agent(child: &mut Child, build_dir: &Path, scratch: &Path) -> Result<(), ReplayError> {
    let metadata = build_dir.join(STATE_DIR).join(METADATA);
    let deadline = Instant::now() + START_PATIENCE;
    while !metadata.exists() {
        if let Ok(Some(_)) = child.try_wait() {
            let log = std::fs::read_to_string(scratch.join("agent.log")).unwrap_or_default();
            return Err(ReplayError::SandboxEnded(sanitize(log.trim())));
        }
        if Instant::now() > deadline {
            return Err(ReplayError::NoAgent(START_PATIENCE));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// The sandbox's agent, as this replay reaches it: through its state
/// directory, opened once (a session may put a link in its place), at a
/// socket of ours (everything in the sandbox is) that is no link, served by
/// a process of our uid and, once it has answered, by that same process
/// every time: a session may put a socket of its own there before the
/// patch is asked for and the agent released.
struct AgentSocket {
    state: OwnedFd,
    pid: Option<i32>,
}

impl AgentSocket {
    fn open(build_dir: &Path) -> Result<AgentSocket, ReplayError> {
        use nix::fcntl::{open, OFlag};
        let path = build_dir.join(STATE_DIR);
        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let state = open(&path, flags, nix::sys::stat::Mode::empty()).map_err(|errno| ReplayError::StateDir(path, errno))?;
        Ok(AgentSocket { state, pid: None })
    }

    fn connect(&mut self) -> Result<UnixStream, ReplayError> {
        let us = nix::unistd::getuid().as_raw();
        let (connection, peer) = crate::waiting::connect::connect_in(self.state.as_fd(), us, self.pid)?;
        if peer.uid() != us {
            return Err(ReplayError::WrongPeer(peer.uid()));
        }
        self.pid = Some(peer.pid());
        Ok(connection)
    }
}

/// Releases the sandbox's agent, and ends the sandbox if it lingers.
fn end(child: &mut Child, agent: Option<&mut AgentSocket>) {
    let released = agent.map(|agent| agent.connect().map(|connection| host::session_over(connection, Request::Release, false, true)));
    // Once released, the agent ends the sandbox; otherwise nothing will.
    let deadline = Instant::now() + if matches!(released, Some(Ok(_))) { END_PATIENCE } else { Duration::ZERO };
    while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A directory of the user's own, removed with all in it when dropped.
struct Scratch(PathBuf);

impl Scratch {
    /// A new directory in `$XDG_RUNTIME_DIR`, or else the temporary
    /// directory, private to the user.
    fn new() -> Result<Scratch, ReplayError> {
        let runtime = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from);
        let mut tried = Err(ReplayError::Scratch(std::env::temp_dir(), std::io::ErrorKind::NotFound.into()));
        for base in runtime.into_iter().chain([std::env::temp_dir()]) {
            tried = Self::new_in(base);
            if tried.is_ok() {
                break;
            }
        }
        tried
    }

    fn new_in(base: PathBuf) -> Result<Scratch, ReplayError> {
        let mut random = [0u8; 8];
        getrandom::fill(&mut random).map_err(|err| ReplayError::Scratch(base.clone(), std::io::Error::other(err.to_string())))?;
        let name: String = random.iter().map(|byte| format!("{byte:02x}")).collect();
        let dir = base.join(format!("nix-attach-replay-{name}"));
        std::fs::DirBuilder::new().mode(0o700).create(&dir).map_err(|err| ReplayError::Scratch(base, err))?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        make_writable(&self.0);
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Makes every directory under `dir` writable by its owner, so that what
/// the build left read-only can be removed; links are not followed.
fn make_writable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::symlink_metadata(dir) else { return };
    if !meta.is_dir() {
        return;
    }
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    if let Ok(entries) = std::fs::read_dir(dir) {
        entries.flatten().for_each(|entry| make_writable(&entry.path()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fetch_never_realises_a_derivation_which_would_build_it() {
        let missing = ["/nix/store/0123456789abcdfghijklmnpqrsvwxyz-big.drv", "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-bash-5.2"];
        let missing: Vec<String> = missing.iter().map(|path| path.to_string()).collect();
        assert_eq!(substitutable(&missing), vec![&missing[1]]);
    }
}
