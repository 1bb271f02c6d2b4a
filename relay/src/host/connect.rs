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
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use nix::sys::stat::{fstat, Mode, SFlag};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

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

/// Opens a connection to the build's agent.
pub fn connect(build: &WaitingBuild) -> Result<UnixStream, ConnectError> {
    let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let socket = openat(build.state_dir(), SOCKET, flags, Mode::empty()).map_err(|err| match err {
        Errno::EACCES | Errno::EPERM => ConnectError::PermissionDenied,
        Errno::ENOENT => ConnectError::Gone,
        other => ConnectError::Open(other),
    })?;
    let stat = fstat(&socket).map_err(ConnectError::Open)?;
    if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT != SFlag::S_IFSOCK {
        return Err(ConnectError::NotASocket);
    }
    if stat.st_uid != build.owner {
        return Err(ConnectError::WrongOwner { expected: build.owner, found: stat.st_uid });
    }
    let stream = UnixStream::connect(format!("/proc/self/fd/{}", socket.as_raw_fd())).map_err(|err| match err.kind() {
        std::io::ErrorKind::PermissionDenied => ConnectError::PermissionDenied,
        std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound => ConnectError::Gone,
        _ => ConnectError::Connect(err),
    })?;
    let peer = getsockopt(&stream, PeerCredentials).map_err(|err| ConnectError::Connect(err.into()))?;
    if peer.pid() != build.pid {
        return Err(ConnectError::WrongPeer { expected: build.pid, found: peer.pid() });
    }
    Ok(stream)
}
