//! Asking the broker, as an ordinary user: for the builds this user asked
//! for, and for a connection to one of them.

use super::wire::{self, Reply, Request, WireError};
use crate::waiting::listing::Listing;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long the broker has to answer: it looks through the waiting builds
/// and connects to an agent, each bounded by a few seconds.
const ANSWER_PATIENCE: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "no broker answers at {0}: daemon builds need root; ask root to start one (`nix-attach broker`, or enable \
         nix-attach-broker.socket / services.nix-attach.broker.enable), or run it with sudo"
    )]
    Unavailable(PathBuf, #[source] std::io::Error),
    #[error("the broker refused: {0}")]
    Refused(String),
    #[error("the broker at {0} did not answer as a broker")]
    Wire(PathBuf, #[source] WireError),
    #[error("the broker answered with no connection to the build")]
    NoConnection,
    #[error("the socket {0} is not root's broker: the process listening there runs as uid {1}; ask root which broker socket to use (NIX_ATTACH_BROKER)")]
    NotRoots(PathBuf, u32),
    #[error("the broker at {0} did not answer within {secs} s; ask root whether it runs (systemctl status nix-attach-broker)", secs = ANSWER_PATIENCE.as_secs())]
    NoAnswer(PathBuf),
    #[error("cannot tell who listens on {0}")]
    Peer(PathBuf, #[source] nix::Error),
}

impl ClientError {
    /// Whether no broker runs there at all (rather than one that refused).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, ClientError::Unavailable(..))
    }
}

/// The waiting builds this user asked for.
pub fn list(socket: &Path) -> Result<Vec<Listing>, ClientError> {
    match ask(socket, &Request::List, ANSWER_PATIENCE)? {
        (Reply::Builds { builds }, _) => Ok(builds),
        (Reply::Refused { reason }, _) => Err(ClientError::Refused(reason)),
        (Reply::Opened { .. }, _) => Err(ClientError::NoConnection),
    }
}

/// A connection to the agent of the build `query` names, among this user's.
pub fn open(socket: &Path, query: Option<&str>) -> Result<UnixStream, ClientError> {
    open_with(socket, query, &[])
}

/// [`open`], with the store paths `with` mounted into the build first.
pub fn open_with(socket: &Path, query: Option<&str>, with: &[String]) -> Result<UnixStream, ClientError> {
    match ask(socket, &Request::Open { id: query.map(String::from), with: with.to_vec() }, ANSWER_PATIENCE)? {
        (Reply::Opened { .. }, Some(agent)) => Ok(UnixStream::from(agent)),
        (Reply::Refused { reason }, _) => Err(ClientError::Refused(crate::sanitize::sanitize(&reason))),
        _ => Err(ClientError::NoConnection),
    }
}

/// Sends `request` and reads the reply, waiting at most `patience` for it.
fn ask(socket: &Path, request: &Request, patience: Duration) -> Result<(Reply, Option<std::os::fd::OwnedFd>), ClientError> {
    let stream = UnixStream::connect(socket).map_err(|err| ClientError::Unavailable(socket.into(), err))?;
    only_root(socket, &stream)?;
    let wire_error = |err| match err {
        WireError::Io(err) if matches!(err.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
            ClientError::NoAnswer(socket.into())
        }
        err => ClientError::Wire(socket.into(), err),
    };
    let timeouts = stream.set_read_timeout(Some(patience)).and_then(|()| stream.set_write_timeout(Some(patience)));
    timeouts.map_err(|err| wire_error(err.into()))?;
    std::io::Write::write_all(&mut &stream, &wire::encode_request(request)).map_err(|err| wire_error(err.into()))?;
    wire::receive_reply(&stream).map_err(wire_error)
}

/// Nothing is sent to, believed from or taken from a broker that is not
/// root's: another user could listen on a path we were given, hand us a
/// descriptor of its own for a build, or lie about our builds.
fn only_root(socket: &Path, stream: &UnixStream) -> Result<(), ClientError> {
    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
    let peer = getsockopt(stream, PeerCredentials).map_err(|err| ClientError::Peer(socket.into(), err))?;
    match peer.uid() {
        0 => Ok(()),
        uid => Err(ClientError::NotRoots(socket.into(), uid)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broker_that_never_answers_is_reported_not_waited_for() {
        let socket = std::env::temp_dir().join(format!("silent-broker-{}", std::process::id()));
        let _ = std::fs::remove_file(&socket);
        // Listening, never accepting: connections wait in its backlog.
        let _silent = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let asked = ask(&socket, &Request::List, Duration::from_millis(300));
        let _ = std::fs::remove_file(&socket);
        // Only root's broker is asked at all: a test run by another user
        // meets its own listener.
        if nix::unistd::geteuid().is_root() {
            assert!(matches!(asked, Err(ClientError::NoAnswer(_))), "{asked:?}");
        } else {
            assert!(matches!(asked, Err(ClientError::NotRoots(..))), "{asked:?}");
        }
    }
}
