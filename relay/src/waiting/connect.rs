//! Connects to a waiting build's agent without trusting the build directory.
//!
//! The socket is opened as a path handle without following links, checked to
//! be a socket of the build's owner, and connected through that handle
//! (`/proc/self/fd/N`), so no link or rename can point root at another
//! socket. The peer's credentials must then be the agent's.

use super::discovery::WaitingBuild;
use crate::metadata::SOCKET;
use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials, UnixCredentials};
use nix::sys::stat::{fstat, Mode, SFlag};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("permission denied: daemon builds need root (run it with sudo)")]
    PermissionDenied,
    #[error("the build is gone")]
    Gone,
    #[error("cannot open the agent socket")]
    Open(#[source] Errno),
    #[error("the agent socket is not a socket")]
    NotASocket,
    #[error("the agent socket belongs to uid {found}, the build to uid {expected}")]
    WrongOwner { expected: u32, found: u32 },
    #[error("cannot connect to the agent")]
    Connect(#[source] std::io::Error),
    #[error("the socket is served by pid {found}, not by the build's agent (pid {expected})")]
    WrongPeer { expected: i32, found: i32 },
}

/// How long a connection may wait for room in the agent's backlog: an
/// agent that listens but never accepts must not hold its caller (root's
/// client, or the broker) for ever.
const CONNECT_LIMIT: Duration = Duration::from_secs(5);

/// Connects to the unix socket at `path`, waiting at most `limit` while its
/// backlog is full (a non-blocking connect to a unix socket either
/// succeeds at once or says EAGAIN).
fn connect_within(path: &str, limit: Duration) -> std::io::Result<UnixStream> {
    use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
    let socket = socket(AddressFamily::Unix, SockType::Stream, SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC, None)?;
    let address = UnixAddr::new(path)?;
    let deadline = Instant::now() + limit;
    loop {
        match connect(socket.as_raw_fd(), &address) {
            Ok(()) => break,
            Err(Errno::EAGAIN) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Err(Errno::EAGAIN) => return Err(std::io::ErrorKind::TimedOut.into()),
            Err(errno) => return Err(errno.into()),
        }
    }
    let stream = UnixStream::from(socket);
    stream.set_nonblocking(false)?;
    Ok(stream)
}

/// Opens a connection to the build's agent.
pub fn connect(build: &WaitingBuild) -> Result<UnixStream, ConnectError> {
    connect_in(build.state_dir(), build.owner, Some(build.pid)).map(|(stream, _)| stream)
}

/// Connects to the agent socket in `state_dir`: a socket of `owner`'s,
/// opened without following links and connected through that handle, so
/// that neither a link nor a path longer than a socket address may hold is
/// in the way. Its peer must be the process `agent`, where that is known;
/// returns the peer's credentials with the connection.
pub fn connect_in(state_dir: BorrowedFd, owner: u32, agent: Option<i32>) -> Result<(UnixStream, UnixCredentials), ConnectError> {
    let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let socket = openat(state_dir, SOCKET, flags, Mode::empty()).map_err(|err| match err {
        Errno::EACCES | Errno::EPERM => ConnectError::PermissionDenied,
        Errno::ENOENT => ConnectError::Gone,
        other => ConnectError::Open(other),
    })?;
    let stat = fstat(&socket).map_err(ConnectError::Open)?;
    if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT != SFlag::S_IFSOCK {
        return Err(ConnectError::NotASocket);
    }
    if stat.st_uid != owner {
        return Err(ConnectError::WrongOwner { expected: owner, found: stat.st_uid });
    }
    let stream = connect_within(&format!("/proc/self/fd/{}", socket.as_raw_fd()), CONNECT_LIMIT).map_err(|err| match err.kind() {
        std::io::ErrorKind::PermissionDenied => ConnectError::PermissionDenied,
        std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound => ConnectError::Gone,
        _ => ConnectError::Connect(err),
    })?;
    let peer = getsockopt(&stream, PeerCredentials).map_err(|err| ConnectError::Connect(err.into()))?;
    match agent {
        Some(expected) if peer.pid() != expected => Err(ConnectError::WrongPeer { expected, found: peer.pid() }),
        _ => Ok((stream, peer)),
    }
}
