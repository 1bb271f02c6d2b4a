//! The broker: a small root service that lets each user into the builds
//! that user asked for, and no others, without sudo.
//!
//! Daemon builds run as the build users, in directories only root may
//! open. The broker, run by root, listens on a socket anyone may connect
//! to (`/run/nix-attach/broker.sock`, or one handed over by systemd). It
//! knows each caller by the kernel's credentials of the connection
//! (`SO_PEERCRED`), and each build's owner by who asked Nix for it (the
//! daemon worker's client, [`requester`](crate::host::requester)): a build
//! belongs to that uid, and one whose requester is unknown to root alone.
//!
//! It answers two requests ([`wire`]): `list` (the caller's builds) and
//! `open` (one of them). For `open` it connects to the build's agent with
//! every check root's own client makes ([`connect`](crate::host::connect)),
//! hands the caller the connected socket (`SCM_RIGHTS`) and steps out: the
//! session is then exactly root's, agent to client, and the broker never
//! relays a byte nor starts a process for anyone.
//!
//! Each connection gets its own short-lived thread with socket timeouts,
//! and at most [`MAX_CLIENTS`] are served at once, so a slow or silent
//! client holds nothing but its own thread.

pub mod client;
pub mod wire;

use crate::host::discovery::{discover_agents, Discovery};
use crate::host::{connect, listing::Listing, select};
use crate::sanitize::sanitize;
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use wire::{Reply, Request};

/// Where the broker listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/nix-attach/broker.sock";
/// Connections served at once; more are turned away with a clear answer.
pub const MAX_CLIENTS: usize = 32;
/// How long a client may take to send its request or read the reply.
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
    let active = Arc::new(AtomicUsize::new(0));
    for connection in listener.incoming() {
        let connection = match connection {
            Ok(connection) => connection,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(BrokerError::Accept(err)),
        };
        if active.fetch_add(1, Ordering::SeqCst) >= MAX_CLIENTS {
            active.fetch_sub(1, Ordering::SeqCst);
            turn_away(&connection);
            continue;
        }
        let active = active.clone();
        std::thread::spawn(move || {
            serve(&connection);
            active.fetch_sub(1, Ordering::SeqCst);
        });
    }
    Ok(())
}

/// The listening socket systemd passed (`LISTEN_PID` is us, `LISTEN_FDS`
/// at least 1), if any.
fn activated_listener() -> Option<UnixListener> {
    let for_us = std::env::var("LISTEN_PID").ok()?.parse::<u32>().ok()? == std::process::id();
    let count = std::env::var("LISTEN_FDS").ok()?.parse::<i32>().ok()?;
    if !for_us || count < 1 {
        return None;
    }
    // SAFETY: systemd passed descriptor 3 to this process for it to own.
    Some(unsafe { UnixListener::from_raw_fd(SD_LISTEN_FDS_START) })
}

/// Binds `path`, mode 0666 in a directory of root's (0755), replacing a
/// stale socket but nothing else.
fn listen(path: &Path) -> Result<UnixListener, BrokerError> {
    if let Some(dir) = path.parent().filter(|dir| !dir.exists()) {
        std::fs::DirBuilder::new().recursive(true).create(dir).map_err(|err| BrokerError::Directory(dir.into(), err))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).map_err(|err| BrokerError::Directory(dir.into(), err))?;
    }
    if let Ok(existing) = path.symlink_metadata() {
        use std::os::unix::fs::FileTypeExt;
        if !existing.file_type().is_socket() {
            return Err(BrokerError::NotASocket(path.into()));
        }
        let _ = std::fs::remove_file(path);
    }
    let listener = UnixListener::bind(path).map_err(|err| BrokerError::Listen(path.into(), err))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).map_err(|err| BrokerError::Listen(path.into(), err))?;
    Ok(listener)
}

/// Tells a client past [`MAX_CLIENTS`] to come back, without waiting on it.
fn turn_away(connection: &UnixStream) {
    let _ = connection.set_nonblocking(true);
    let _ = wire::send_reply(connection, &Reply::Refused { reason: "the broker is busy; try again".into() }, None);
}

/// Serves one connection: one request, one reply, one log line.
fn serve(connection: &UnixStream) {
    let _ = connection.set_read_timeout(Some(CLIENT_TIMEOUT));
    let _ = connection.set_write_timeout(Some(CLIENT_TIMEOUT));
    let Ok(caller) = getsockopt(connection, PeerCredentials) else { return };
    let (uid, pid) = (caller.uid(), caller.pid());
    let request = wire::read_frame(&mut &*connection, wire::MAX_REQUEST).and_then(|body| wire::decode_request(&body));
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
        Ok(Request::Open { id }) => open(connection, uid, id.as_deref()),
    };
    eprintln!("nix-attach broker: uid {uid} (pid {pid}): {}", sanitize(&said));
}

/// Hands the caller a connection to its build's agent.
fn open(connection: &UnixStream, uid: u32, query: Option<&str>) -> String {
    let opened = select::select(builds_of(uid), query).map_err(|err| err.to_string()).and_then(|build| {
        let agent = connect::connect(&build).map_err(|err| format!("cannot reach build {}: {err}", build.meta.id))?;
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

/// The waiting builds `uid` may enter: those it asked for (all, for root).
/// A build whose requester is unknown belongs to root alone.
fn builds_of(uid: u32) -> Discovery {
    let mut found = discover_agents();
    if uid != 0 {
        found.builds.retain(|build| build.requester.is_some_and(|requester| requester.uid == uid));
    }
    Discovery { builds: found.builds, ..Discovery::default() }
}
