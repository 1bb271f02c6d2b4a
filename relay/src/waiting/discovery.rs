//! Finds the builds that wait for a session, and, for `list` and the
//! broker, who asked for each ([`requester`](super::requester)).
//!
//! A build waits while its agent runs, so the search starts from running
//! agents in `/proc` (only processes that may run builds: see
//! [`builders`](super::builders)) and enters their working directory, which is
//! their state directory; that way a layout this code does not know still
//! works. The places where Nix and Lix put build directories
//! (`/tmp/nix-build-*`, `…/nix-build-*/build`, `/nix/var/nix/builds/*`,
//! `/nix/var/nix/b/*`, and `--build-dir`) are searched too, to name the
//! build directory as a host path. Everything found there was written by an untrusted build:
//! no link is followed, only regular files are read, owners must agree and
//! every read is bounded.

use super::builders::{self, Origin};
use super::process::Process;
use super::requester::{self, Requester};
use crate::metadata::{Metadata, MetadataError, MAX_METADATA, METADATA, STATE_DIR};
use nix::errno::Errno;
use nix::fcntl::{open, openat, OFlag};
use nix::sys::stat::{fstat, FileStat, Mode, SFlag};
use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

/// Where build directories are made by the Nix and Lix releases we know.
const LAYOUT_ROOTS: &[&str] = &["/tmp", "/nix/var/nix/builds", "/nix/var/nix/b"];
/// Where, inside a build directory entry, the state directory may be.
const STATE_PATHS: &[&[&str]] = &[&[STATE_DIR], &["build", STATE_DIR]];

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("cannot open {name}")]
    Open {
        name: &'static str,
        #[source]
        source: Errno,
    },
    #[error("{0} is not a regular file")]
    NotRegular(&'static str),
    #[error("{name} belongs to uid {found}, the build to uid {expected}")]
    WrongOwner { name: &'static str, expected: u32, found: u32 },
    #[error("{0} is larger than {MAX_METADATA} bytes")]
    TooLarge(&'static str),
    #[error("cannot read {0}")]
    Read(&'static str, #[source] std::io::Error),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
}

/// A build whose agent is waiting.
#[derive(Debug)]
pub struct WaitingBuild {
    pub meta: Metadata,
    /// The agent's pid on the host.
    pub pid: i32,
    /// When the agent started, in clock ticks after boot: with the pid, it
    /// names this agent and no process that takes its pid later.
    pub started: u64,
    /// The build directory, as a host path.
    pub build_dir: PathBuf,
    /// The uid that owns the build's files and runs its agent.
    pub owner: u32,
    /// Who asked Nix for the build, where the kernel says (root asking).
    pub requester: Option<Requester>,
    state_dir: OwnedFd,
}

impl WaitingBuild {
    /// The state directory, opened without following links.
    pub fn state_dir(&self) -> BorrowedFd<'_> {
        self.state_dir.as_fd()
    }

    /// A build with this metadata whose state directory is `/`.
    #[cfg(test)]
    pub(crate) fn stand_in(meta: Metadata) -> WaitingBuild {
        let root = open("/", OFlag::O_PATH | OFlag::O_DIRECTORY, Mode::empty()).unwrap();
        WaitingBuild { meta, pid: 1, started: 0, build_dir: PathBuf::from("/"), owner: 0, requester: None, state_dir: root }
    }
}

/// What a search found.
#[derive(Debug, Default)]
pub struct Discovery {
    pub builds: Vec<WaitingBuild>,
    /// Build directories this user may not enter.
    pub denied: Vec<PathBuf>,
    /// State directories that were passed over, and why.
    pub skipped: Vec<(PathBuf, DiscoveryError)>,
}

/// A state directory found by either search.
struct Candidate {
    build_dir: PathBuf,
    dir: OwnedFd,
    stat: FileStat,
}

/// A running agent seen in `/proc`.
struct Agent {
    pid: i32,
    started: u64,
    parent: i32,
    uid: u32,
    requester: Option<Requester>,
    cwd: Option<Candidate>,
}

type Key = (u64, u64);

fn key(stat: &FileStat) -> Key {
    (stat.st_dev, stat.st_ino)
}

/// Finds every waiting build this user can reach, with its build directory
/// named as a host path where a known layout or `extra_dirs` has it.
/// `denied` counts the agents whose state this user may not enter.
pub fn discover(extra_dirs: &[PathBuf]) -> Discovery {
    let mut denied = Vec::new();
    // Agents first: an agent enters its state directory before it writes
    // anything, so every agent seen here has a state directory by the time
    // the layouts are scanned.
    let agents = running_agents(&mut denied, true);
    let mut candidates: HashMap<Key, Candidate> = HashMap::new();
    for (root, only_nix_builds) in roots(extra_dirs) {
        scan_root(&root, only_nix_builds, &mut candidates);
    }
    for extra in extra_dirs {
        probe(extra, &mut candidates);
    }
    waiting_builds(agents, candidates, denied)
}

/// Finds every waiting build this user can reach, without naming build
/// directories: what a session needs, and quicker. `requesters`: also ask
/// who asked for each build (root only; what the broker needs).
pub fn discover_agents(requesters: bool) -> Discovery {
    let mut denied = Vec::new();
    let agents = running_agents(&mut denied, requesters);
    waiting_builds(agents, HashMap::new(), denied)
}

fn waiting_builds(agents: Vec<Agent>, mut candidates: HashMap<Key, Candidate>, denied: Vec<PathBuf>) -> Discovery {
    let mut discovery = Discovery { denied, ..Discovery::default() };
    for mut agent in agents {
        let Some(cwd) = agent.cwd.take() else { continue };
        let candidate = candidates.remove(&key(&cwd.stat)).unwrap_or(cwd);
        match read_build(candidate, &agent) {
            Ok(build) => discovery.builds.push(build),
            Err((path, err)) => discovery.skipped.push((path, err)),
        }
    }
    discovery.builds.sort_by(|a, b| (a.meta.since, &a.meta.id).cmp(&(b.meta.since, &b.meta.id)));
    discovery
}

fn roots(extra_dirs: &[PathBuf]) -> Vec<(PathBuf, bool)> {
    let known = LAYOUT_ROOTS.iter().map(|root| (PathBuf::from(root), *root == "/tmp"));
    known.chain(extra_dirs.iter().map(|dir| (dir.clone(), false))).collect()
}

/// Looks at every build directory below `root`.
fn scan_root(root: &Path, only_nix_builds: bool, found: &mut HashMap<Key, Candidate>) {
    let Ok(entries) = std::fs::read_dir(root) else { return };
    for entry in entries.flatten() {
        let is_dir = entry.file_type().is_ok_and(|kind| kind.is_dir());
        let name = entry.file_name();
        if is_dir && (!only_nix_builds || name.to_string_lossy().starts_with("nix-build-")) {
            probe(&entry.path(), found);
        }
    }
}

/// Looks for a state directory in one build directory. The layouts only
/// name where a build lives: a build counts as waiting when its agent runs.
fn probe(build_dir: &Path, found: &mut HashMap<Key, Candidate>) {
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let Ok(top) = open(build_dir, flags, Mode::empty()) else { return };
    for path in STATE_PATHS {
        let Ok(dir) = open_beneath(&top, path) else { continue };
        let Ok(stat) = fstat(&dir) else { continue };
        let inner = path[..path.len() - 1].iter().fold(build_dir.to_path_buf(), |dir, part| dir.join(part));
        found.entry(key(&stat)).or_insert(Candidate { build_dir: inner, dir, stat });
        return;
    }
}

/// Opens a directory below `top`, one component at a time, following no link.
fn open_beneath(top: &OwnedFd, components: &[&str]) -> Result<OwnedFd, Errno> {
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut dir = openat(top, components[0], flags, Mode::empty())?;
    for component in &components[1..] {
        dir = openat(&dir, *component, flags, Mode::empty())?;
    }
    Ok(dir)
}

/// Lists the agents running on this host, with their working directories,
/// and, with `requesters` and as root, who asked for each build (looked up
/// once per Nix process: one worker may run several builds). Each process
/// is looked at through one handle on its `/proc` entry, so a pid reused in
/// between cannot mix two processes' facts.
fn running_agents(denied: &mut Vec<PathBuf>, requesters: bool) -> Vec<Agent> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    let requesters = requesters && nix::unistd::geteuid().is_root();
    // By pid and start time: a pid reused during the scan names another
    // process, with another client.
    let mut asked: HashMap<(i32, u64), Option<Requester>> = HashMap::new();
    let mut agents = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<i32>().ok()) else { continue };
        let proc_dir = entry.path();
        if !may_be_agent(&proc_dir) {
            continue;
        }
        let Ok(process) = Process::open(pid) else { continue };
        // Where it runs first (`stat` and `status` only): its command line
        // is read from its memory, which a process of anyone's could make
        // wait on a FUSE server that never answers.
        let Ok(facts) = process.facts() else { continue };
        let Some(origin) = builders::origin(&process, &facts) else { continue };
        if !is_agent_command(&process) {
            continue;
        }
        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let cwd = match openat(process.dir(), "cwd", flags, Mode::empty()) {
            Ok(dir) => fstat(&dir).ok().map(|stat| Candidate { build_dir: proc_dir.join("cwd/.."), dir, stat }),
            Err(Errno::EACCES) => {
                denied.push(proc_dir.join("cwd"));
                None
            }
            Err(_) => None,
        };
        let requester = match origin {
            Origin::Nix(nix) if requesters && cwd.is_some() => match nix.facts() {
                Ok(nix_facts) => *asked.entry((nix.pid(), nix_facts.start)).or_insert_with(|| requester::requester(&nix).ok()),
                Err(_) => None,
            },
            _ => None,
        };
        agents.push(Agent { pid, started: facts.start, parent: facts.parent, uid: facts.euid, requester, cwd });
    }
    without_forks(agents)
}

/// Drops the agent's own children caught between fork and exec: they still
/// look like the agent and share its working directory.
fn without_forks(agents: Vec<Agent>) -> Vec<Agent> {
    let pids: Vec<i32> = agents.iter().map(|agent| agent.pid).collect();
    agents.into_iter().filter(|agent| !pids.contains(&agent.parent)).collect()
}

/// A quick first look, by one `readlink`: whether the process may run
/// nix-attach: its program's name has it (also a wrapped `.nix-attach-wrapped`),
/// the program is a loader or an emulator that could be running it
/// (`ld-linux…`, `ld.so`, `qemu-…` under binfmt), or it hides its program
/// from us. Only the checks through the process's handle decide.
fn may_be_agent(proc_dir: &Path) -> bool {
    match std::fs::read_link(proc_dir.join("exe")) {
        Ok(program) => program.file_name().is_some_and(|name| {
            let name = name.to_string_lossy();
            ["ld-", "ld.so", "qemu-"].iter().any(|loader| name.starts_with(loader)) || name.contains("nix-attach")
        }),
        Err(err) => err.kind() == std::io::ErrorKind::PermissionDenied,
    }
}

/// Whether a process's command line is `…/nix-attach agent …`.
fn is_agent_command(process: &Process) -> bool {
    let Some(cmdline) = process.read_memory("cmdline", 4096) else { return false };
    let mut argv = cmdline.split(|b| *b == 0);
    let program = argv.next().unwrap_or_default();
    program.rsplit(|b| *b == b'/').next() == Some(b"nix-attach") && argv.next() == Some(b"agent")
}

/// Reads and checks a candidate's metadata.
fn read_build(candidate: Candidate, agent: &Agent) -> Result<WaitingBuild, (PathBuf, DiscoveryError)> {
    let Candidate { build_dir, dir, stat } = candidate;
    let uid = agent.uid;
    let checked = check_owner("the state directory", uid, stat.st_uid).and_then(|()| read_metadata(&dir, uid));
    match checked {
        Ok(meta) => Ok(WaitingBuild {
            meta,
            pid: agent.pid,
            started: agent.started,
            build_dir,
            owner: uid,
            requester: agent.requester,
            state_dir: dir,
        }),
        Err(err) => Err((build_dir, err)),
    }
}

fn check_owner(name: &'static str, expected: u32, found: u32) -> Result<(), DiscoveryError> {
    if expected == found {
        Ok(())
    } else {
        Err(DiscoveryError::WrongOwner { name, expected, found })
    }
}

/// Reads `agent.json` from the state directory: a regular file of the
/// build's owner, of bounded size, and strictly valid.
fn read_metadata(dir: &OwnedFd, owner: u32) -> Result<Metadata, DiscoveryError> {
    const NAME: &str = "the metadata file";
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
    let fd = openat(dir, METADATA, flags, Mode::empty()).map_err(|source| DiscoveryError::Open { name: NAME, source })?;
    let stat = fstat(&fd).map_err(|source| DiscoveryError::Open { name: NAME, source })?;
    if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
        return Err(DiscoveryError::NotRegular(NAME));
    }
    check_owner(NAME, owner, stat.st_uid)?;
    let mut bytes = Vec::new();
    File::from(fd).take(MAX_METADATA + 1).read_to_end(&mut bytes).map_err(|err| DiscoveryError::Read(NAME, err))?;
    if bytes.len() as u64 > MAX_METADATA {
        return Err(DiscoveryError::TooLarge(NAME));
    }
    Ok(Metadata::parse(&bytes)?)
}
