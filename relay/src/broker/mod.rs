//! The broker: a small root service that lets each user into the builds
//! that user asked for, and no others, without sudo.
//!
//! Daemon builds run as the build users, in directories only root may
//! open. The broker, run by root, listens on a socket anyone may connect
//! to (`/run/nix-attach/broker.sock`, or one handed over by systemd). It
//! knows each caller by the kernel's credentials of the connection
//! (`SO_PEERCRED`), and each build's owner by who asked Nix for it (the
//! daemon worker's client, [`requester`](crate::waiting::requester)): a build
//! belongs to that uid, and one whose requester is unknown to root alone.
//!
//! It answers two requests ([`wire`]): `list` (the caller's builds) and
//! `open` (one of them). For `open` it connects to the build's agent with
//! every check root's own client makes ([`connect`](crate::waiting::connect)),
//! hands the caller the connected socket (`SCM_RIGHTS`) and steps out: the
//! session is then exactly root's, agent to client, and the broker never
//! relays a byte nor starts a process for anyone.
//!
//! Each connection gets its own short-lived thread, with a deadline for its
//! whole request; at most [`MAX_CLIENTS`] are served at once, and at most
//! [`MAX_PER_USER`] of one user, so a slow, silent or greedy client holds
//! nothing but its own threads. Connecting to an agent is bounded in time
//! too ([`connect`](crate::waiting::connect)).
//!
//! May use: [`capture`](crate::capture), [`handoff`](crate::handoff),
//! [`nix_conf`](crate::nix_conf), [`protocol`](crate::protocol),
//! [`sanitize`](crate::sanitize), [`store`](crate::store),
//! [`tools`](crate::tools), [`waiting`](crate::waiting); no module that uses
//! it (`layout` keeps the arrows one way).

pub mod client;
pub mod wire;

use crate::sanitize::sanitize;
use crate::tools;
use crate::waiting::discovery::{discover_agents, Discovery};
use crate::waiting::{connect, listing::Listing, select};
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wire::{Reply, Request};

/// Where the broker listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/nix-attach/broker.sock";
/// Connections served at once; more are turned away with a clear answer.
pub const MAX_CLIENTS: usize = 32;
/// Connections of one user served at once, so that no user can take all.
pub const MAX_PER_USER: usize = 8;
/// How long a client may take to send its whole request, or to read the
/// reply.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
/// The first descriptor systemd's socket activation passes.
const SD_LISTEN_FDS_START: i32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("the broker must run as root, to reach builds of every user")]
    NotRoot,
    #[error("cannot make the directory {0}")]
    Directory(PathBuf, #[source] std::io::Error),
    #[error("{0} exists and is not a socket; remove it or pass --socket")]
    NotASocket(PathBuf),
    #[error("cannot listen on {0}")]
    Listen(PathBuf, #[source] std::io::Error),
    #[error("{0} must be a directory of root's that nobody else may write (an ancestor may be sticky, as /tmp; the socket's own directory may not); pass another --socket")]
    UnsafeDirectory(PathBuf),
    #[error("cannot accept connections")]
    Accept(#[source] std::io::Error),
}

/// The socket the clients use: `NIX_ATTACH_BROKER`, or the default.
pub fn socket_path() -> PathBuf {
    std::env::var_os("NIX_ATTACH_BROKER").map_or_else(|| PathBuf::from(DEFAULT_SOCKET), PathBuf::from)
}

/// `nix-attach broker`: serves until killed.
pub fn run(socket: Option<&Path>) -> Result<(), BrokerError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(BrokerError::NotRoot);
    }
    let (listener, named) = match activated_listener() {
        Some(listener) => (listener, "the socket systemd passed".to_string()),
        None => {
            let path = socket.map_or_else(socket_path, Path::to_path_buf);
            (listen(&path)?, path.display().to_string())
        }
    };
    eprintln!("nix-attach broker: listening on {named}");
    let served = Arc::new(Served::default());
    loop {
        let connection = match listener.accept() {
            Ok((connection, _)) => connection,
            Err(err) => {
                // Out of descriptors, a connection aborted: wait, go on.
                eprintln!("nix-attach broker: {}", BrokerError::Accept(err));
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let Ok(caller) = getsockopt(&connection, PeerCredentials) else { continue };
        let uid = caller.uid();
        let Some(admitted) = Served::admit(&served, uid) else {
            turn_away(&connection, "the broker is busy; try again");
            continue;
        };
        let connection = Arc::new(connection);
        let serving = connection.clone();
        let spawned = std::thread::Builder::new().name(format!("uid {uid}")).spawn(move || {
            serve(&serving, uid, caller.pid());
            drop(admitted);
        });
        if let Err(err) = spawned {
            // The closure, and the admission with it, is dropped already.
            eprintln!("nix-attach broker: uid {uid}: cannot start a thread for it: {err}");
            turn_away(&connection, "the broker cannot serve you now; try again");
        }
    }
}

/// The connections being served, in all and per user.
#[derive(Default)]
struct Served(Mutex<(usize, HashMap<u32, usize>)>);

/// One connection counted in [`Served`]; it leaves when dropped, however
/// its thread ends (or if none could be started).
struct Admitted {
    served: Arc<Served>,
    uid: u32,
}

impl Served {
    /// Counts one more connection of `uid`, unless that makes too many.
    fn admit(served: &Arc<Served>, uid: u32) -> Option<Admitted> {
        let mut counts = served.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (all, per_user) = &mut *counts;
        let mine = per_user.entry(uid).or_default();
        if *all >= MAX_CLIENTS || *mine >= MAX_PER_USER {
            return None;
        }
        *all += 1;
        *mine += 1;
        Some(Admitted { served: served.clone(), uid })
    }

    /// Connections counted, in all and of `uid`.
    #[cfg(test)]
    fn counts(&self, uid: u32) -> (usize, usize) {
        let counts = self.0.lock().unwrap();
        (counts.0, counts.1.get(&uid).copied().unwrap_or(0))
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut counts = self.served.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (all, per_user) = &mut *counts;
        *all -= 1;
        if let Some(mine) = per_user.get_mut(&self.uid) {
            *mine -= 1;
            if *mine == 0 {
                per_user.remove(&self.uid);
            }
        }
    }
}

/// The listening socket systemd passed (`LISTEN_PID` is us, `LISTEN_FDS`
/// at least 1, and descriptor 3 a listening unix socket), if any. The
/// variables are not passed on.
fn activated_listener() -> Option<UnixListener> {
    let for_us = std::env::var("LISTEN_PID").ok()?.parse::<u32>().ok()? == std::process::id();
    let count = std::env::var("LISTEN_FDS").ok()?.parse::<i32>().ok()?;
    for variable in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        std::env::remove_var(variable);
    }
    if !for_us || count < 1 {
        return None;
    }
    // SAFETY: systemd passed descriptor 3 to this process for it to own.
    let listener = unsafe { UnixListener::from_raw_fd(SD_LISTEN_FDS_START) };
    // Not to be inherited by the programs it runs (`nix-store`, and
    // `mount-tools` inside a build's mount namespace), as `sd_listen_fds`
    // would have it.
    let _ = nix::fcntl::fcntl(&listener, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC));
    let listening = getsockopt(&listener, nix::sys::socket::sockopt::AcceptConn).unwrap_or(false);
    let unix = nix::sys::socket::getsockname::<nix::sys::socket::UnixAddr>(listener.as_raw_fd()).is_ok();
    (listening && unix).then_some(listener)
}

/// Binds `path`, mode 0666, in a directory of root's that nobody else may
/// write (made 0755 if missing), replacing a stale socket but nothing else.
/// Every ancestor must be root's too, and writable by nobody else unless
/// sticky (as /tmp: then nobody else may rename root's directory in it), so
/// no other user can swap a directory on the way, or make the path before
/// the broker binds it. The mode comes from the umask at bind time, never
/// from a change through the path.
fn listen(path: &Path) -> Result<UnixListener, BrokerError> {
    use std::os::unix::fs::{DirBuilderExt, FileTypeExt};
    let dir = path.parent().filter(|dir| !dir.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !dir.exists() {
        std::fs::DirBuilder::new().recursive(true).mode(0o755).create(dir).map_err(|err| BrokerError::Directory(dir.into(), err))?;
    }
    let dir = dir.canonicalize().map_err(|err| BrokerError::Directory(dir.into(), err))?;
    only_root_may_change(&dir)?;
    if let Ok(existing) = path.symlink_metadata() {
        if !existing.file_type().is_socket() {
            return Err(BrokerError::NotASocket(path.into()));
        }
        let _ = std::fs::remove_file(path);
    }
    let previous = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o111));
    let bound = UnixListener::bind(path);
    nix::sys::stat::umask(previous);
    bound.map_err(|err| BrokerError::Listen(path.into(), err))
}

/// Checks that `dir` (a path without links) and each of its ancestors is a
/// directory of root's that nobody else may write, except that an ancestor
/// may be sticky. `dir` itself may not: there another user could make the
/// socket's path first.
fn only_root_may_change(dir: &Path) -> Result<(), BrokerError> {
    use std::os::unix::fs::MetadataExt;
    for (depth, ancestor) in dir.ancestors().enumerate() {
        let meta = std::fs::symlink_metadata(ancestor).map_err(|err| BrokerError::Directory(ancestor.into(), err))?;
        let others_write = meta.mode() & 0o022 != 0;
        let sticky = meta.mode() & 0o1000 != 0;
        if !meta.is_dir() || meta.uid() != 0 || (others_write && (depth == 0 || !sticky)) {
            return Err(BrokerError::UnsafeDirectory(ancestor.into()));
        }
    }
    Ok(())
}

/// Tells a client that cannot be served now to come back, without waiting
/// on it.
fn turn_away(connection: &UnixStream, reason: &str) {
    let _ = connection.set_nonblocking(true);
    let _ = wire::send_reply(connection, &Reply::Refused { reason: reason.into() }, None);
}

/// Serves one connection of `uid`: one request, one reply, one log line.
fn serve(connection: &UnixStream, uid: u32, pid: i32) {
    let _ = connection.set_write_timeout(Some(CLIENT_TIMEOUT));
    let deadline = std::time::Instant::now() + CLIENT_TIMEOUT;
    let request = wire::read_frame_by(connection, wire::MAX_REQUEST, deadline).and_then(|body| wire::decode_request(&body));
    let said = match request {
        Err(err) => {
            let _ = wire::send_reply(connection, &Reply::Refused { reason: format!("{err}") }, None);
            format!("refused a request: {err}")
        }
        Ok(Request::List) => {
            let builds: Vec<Listing> = builds_of(uid).builds.iter().map(Listing::from).collect();
            let count = builds.len();
            let _ = wire::send_reply(connection, &Reply::Builds { builds }, None);
            format!("listed {count} build(s)")
        }
        Ok(Request::Open { id, with }) => open(connection, uid, id.as_deref(), &with),
    };
    eprintln!("nix-attach broker: uid {uid} (pid {pid}): {}", sanitize(&said));
}

/// Hands the caller a connection to its build's agent, with the tools
/// `with` names mounted into it first.
fn open(connection: &UnixStream, uid: u32, query: Option<&str>, with: &[String]) -> String {
    let opened = select::select(builds_of(uid), query).map_err(|err| err.to_string()).and_then(|build| {
        // The agent is reached and checked first: only then does root mount.
        let agent = connect::connect(&build).map_err(|err| format!("cannot reach build {}: {err}", build.meta.id))?;
        if !with.is_empty() {
            bring_tools(build.pid, build.started, with)?;
        }
        Ok((build.meta.id, agent))
    });
    match opened {
        Ok((id, agent)) => match wire::send_reply(connection, &Reply::Opened { id: id.clone() }, Some(agent.as_raw_fd())) {
            Ok(()) => format!("handed over build {id}"),
            Err(err) => format!("could not hand over build {id}: {err}"),
        },
        Err(reason) => {
            let _ = wire::send_reply(connection, &Reply::Refused { reason: reason.clone() }, None);
            format!("refused: {reason}")
        }
    }
}

/// Mounts the closures of `roots` into the sandbox of the build whose
/// agent is `agent`: valid store paths only, which every user may read
/// anyway, read-only; the caller gains nothing it did not have.
fn bring_tools(agent: i32, started: u64, roots: &[String]) -> Result<(), String> {
    let store = crate::nix_conf::store_dir();
    if let Some(bad) = roots.iter().find(|root| !crate::capture::is_store_path(root, &store)) {
        return Err(format!("--with {bad:?} is not a store path; through the broker, --with takes valid store paths only"));
    }
    let invalid = crate::store::invalid(roots).map_err(|err| err.to_string())?;
    if let Some(first) = invalid.first() {
        return Err(format!("--with {first:?} is not valid in the store"));
    }
    let closure = tools::closure(roots).map_err(|err| err.to_string())?;
    tools::mount_into(agent, started, &closure).map_err(|err| err.to_string())
}

/// The waiting builds `uid` may enter: those it asked for (all, for root).
/// A build whose requester is unknown belongs to root alone.
fn builds_of(uid: u32) -> Discovery {
    let mut found = discover_agents(true);
    if uid != 0 {
        found.builds.retain(|build| build.requester.is_some_and(|requester| requester.uid == uid));
    }
    Discovery { builds: found.builds, ..Discovery::default() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("broker-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        dir
    }

    #[test]
    fn a_directory_of_roots_below_sticky_tmp_is_safe() {
        let dir = scratch("safe");
        assert!(only_root_may_change(&dir).is_ok());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_sticky_directory_of_its_own_is_unsafe_for_the_socket() {
        let dir = scratch("sticky");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert!(matches!(only_root_may_change(&dir), Err(BrokerError::UnsafeDirectory(at)) if at == dir));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn an_ancestor_another_user_owns_or_may_write_is_unsafe() {
        let dir = scratch("ancestor");
        let inner = dir.join("inner");
        std::fs::create_dir(&inner).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(matches!(only_root_may_change(&inner), Err(BrokerError::UnsafeDirectory(at)) if at == dir));
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        nix::unistd::chown(&dir, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
        assert!(matches!(only_root_may_change(&inner), Err(BrokerError::UnsafeDirectory(at)) if at == dir));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_connection_leaves_the_count_when_its_admission_is_dropped() {
        let served = Arc::new(Served::default());
        let admitted: Vec<Admitted> = (0..MAX_PER_USER).map(|_| Served::admit(&served, 1000).unwrap()).collect();
        assert!(Served::admit(&served, 1000).is_none(), "one user holds at most MAX_PER_USER");
        assert_eq!(served.counts(1000), (MAX_PER_USER, MAX_PER_USER));
        drop(admitted);
        assert_eq!(served.counts(1000), (0, 0));
        assert!(Served::admit(&served, 1000).is_some());
    }
}
