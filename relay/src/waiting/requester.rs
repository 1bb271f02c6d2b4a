//! Who asked for a build, as the kernel tells it.
//!
//! Nix runs every builder as a child of the process that runs the build
//! (see [`builders`](super::builders)). For a daemon build that is the
//! daemon's worker, which serves one client: a unix socket among its
//! descriptors. Root can take a copy of that descriptor (`pidfd_getfd`,
//! Linux 5.6) and ask the kernel who is at the other end (`SO_PEERCRED`):
//! the uid and pid of the process that connected, recorded by the kernel
//! when it connected. That is a user's `nix-build` or `nix build`, or, for
//! a remote builder, `nix-daemon --stdio` run by the ssh user. Nothing the
//! build wrote is read, and nothing the client says is believed.
//!
//! Which socket is the client's: a daemon worker holds other connected
//! sockets too. Under systemd its stdout and stderr are a stream socket to
//! journald (uid 0), and counting that one made every build ambiguous. The
//! client's connection is the one the daemon *accepted*: its local address
//! is the path the daemon listens on (its own socket, or the one systemd
//! bound and passed), while a socket the worker connected out (journald's)
//! has no local name. So where the worker holds sockets with a local path,
//! only those count; a Nix process with none (`nix-daemon --stdio` under
//! ssh, over pipes or a socket pair) is judged by all its connected unix
//! stream sockets, as before. Root's own client is a requester like any
//! other: uid 0 is never skipped.
//!
//! A connection from below the Nix process itself never counts: that is
//! its build, talking back to it (recursive Nix's socket in the build
//! directory), never who asked for the build.
//!
//! A Nix process of root's without a client (root's own `nix-build` on a
//! local store) was asked by root. Only root may take descriptors from
//! root's processes, so for anyone else the requester stays unknown.

use super::process::Process;
use rustix::net::sockopt;
use rustix::process::{pidfd_getfd, pidfd_open, Pid, PidfdFlags, PidfdGetfdFlags};
use std::os::fd::{AsFd, OwnedFd};

#[derive(Debug, thiserror::Error)]
pub enum RequesterError {
    #[error("cannot open a pidfd for the Nix process {pid}")]
    Pidfd {
        pid: i32,
        #[source]
        source: rustix::io::Errno,
    },
    #[error("the Nix process {pid} is gone")]
    Gone { pid: i32 },
    #[error("cannot list the descriptors of the Nix process {pid}")]
    Descriptors {
        pid: i32,
        #[source]
        source: nix::Error,
    },
    #[error("cannot copy a socket of the Nix process {pid}")]
    Copy {
        pid: i32,
        #[source]
        source: rustix::io::Errno,
    },
    #[error("the Nix process {pid} serves {count} clients of different users")]
    Ambiguous { pid: i32, count: usize },
}

/// The process that asked for a build, by the kernel's account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Requester {
    pub uid: u32,
    /// Its pid when it connected, as this pid namespace sees it.
    pub pid: i32,
}

/// Who asked `nix`, the Nix process of root's that runs a build (a daemon
/// worker, or root's own `nix-build`), for it.
pub fn requester(nix: &Process) -> Result<Requester, RequesterError> {
    let pid = nix.pid();
    let pidfd = pidfd_open(Pid::from_raw(pid).ok_or(RequesterError::Gone { pid })?, PidfdFlags::empty())
        .map_err(|source| RequesterError::Pidfd { pid, source })?;
    // The handle still reads, so its process was alive when the pidfd was
    // opened: the pid was not reused in between, and both name one process.
    nix.facts().map_err(|_| RequesterError::Gone { pid })?;
    let mut peers: Vec<Peer> = Vec::new();
    for fd in socket_descriptors(nix)? {
        // A socket that cannot be copied might be the client's: no answer
        // then, rather than a wrong one. One closed meanwhile is gone.
        let copy = match pidfd_getfd(&pidfd, fd, PidfdGetfdFlags::empty()) {
            Ok(copy) => copy,
            Err(rustix::io::Errno::BADF) => continue,
            Err(source) => return Err(RequesterError::Copy { pid, source }),
        };
        peers.extend(unix_peer(&copy).filter(|peer| peer.requester.pid != pid && !descends_from(peer.requester.pid, nix)));
    }
    let clients = clients(&peers);
    match clients[..] {
        [] => Ok(Requester { uid: 0, pid }),
        [client] => Ok(client),
        _ => Err(RequesterError::Ambiguous { pid, count: clients.len() }),
    }
}

/// How far up a peer's ancestry is looked for the Nix process.
const MAX_DEPTH: usize = 64;

/// Whether the process `pid` runs below `nix` (its builder, or what the
/// builder runs), as far as its ancestry reads.
fn descends_from(pid: i32, nix: &Process) -> bool {
    let Ok(mut process) = Process::open(pid) else { return false };
    let Ok(mut facts) = process.facts() else { return false };
    for _ in 0..MAX_DEPTH {
        if facts.parent == nix.pid() {
            return true;
        }
        match process.parent(&facts) {
            Ok((parent, parent_facts)) => (process, facts) = (parent, parent_facts),
            Err(_) => return false,
        }
    }
    false
}

/// The descriptors of `process` that are sockets (`socket:[INODE]`).
fn socket_descriptors(process: &Process) -> Result<Vec<i32>, RequesterError> {
    use nix::fcntl::{readlinkat, OFlag};
    let pid = process.pid();
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let mut dir = nix::dir::Dir::openat(process.dir(), "fd", flags, nix::sys::stat::Mode::empty())
        .map_err(|source| RequesterError::Descriptors { pid, source })?;
    let fds: Vec<i32> = dir.iter().flatten().filter_map(|entry| entry.file_name().to_str().ok()?.parse().ok()).collect();
    let fd_dir = nix::fcntl::openat(process.dir(), "fd", flags, nix::sys::stat::Mode::empty())
        .map_err(|source| RequesterError::Descriptors { pid, source })?;
    Ok(fds
        .into_iter()
        .filter(|fd| readlinkat(&fd_dir, fd.to_string().as_str()).is_ok_and(|link| link.to_string_lossy().starts_with("socket:")))
        .collect())
}

/// The far end of one connected unix stream socket of a Nix process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Peer {
    requester: Requester,
    /// This end has a path as its local address: a connection accepted on
    /// a listening socket bound there.
    accepted: bool,
}

/// The distinct users at the far end of the connections that count: the
/// accepted ones where there are any, else every one.
fn clients(peers: &[Peer]) -> Vec<Requester> {
    let any_accepted = peers.iter().any(|peer| peer.accepted);
    let mut clients: Vec<Requester> = Vec::new();
    for peer in peers.iter().filter(|peer| peer.accepted || !any_accepted) {
        if !clients.iter().any(|known| known.uid == peer.requester.uid) {
            clients.push(peer.requester);
        }
    }
    clients
}

/// The credentials of the peer of a connected unix stream socket, read as
/// `connect.rs` reads them (a socket still connecting reports pid 0, which
/// is no process).
fn unix_peer(socket: &OwnedFd) -> Option<Peer> {
    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
    let is_unix_stream = sockopt::socket_domain(socket.as_fd()).ok()? == rustix::net::AddressFamily::UNIX
        && sockopt::socket_type(socket.as_fd()).ok()? == rustix::net::SocketType::STREAM;
    if !is_unix_stream {
        return None;
    }
    let credentials = getsockopt(socket, PeerCredentials).ok()?;
    if credentials.pid() <= 0 {
        return None;
    }
    let requester = Requester { uid: credentials.uid(), pid: credentials.pid() };
    Some(Peer { requester, accepted: has_local_path(socket) })
}

/// Whether the socket's own address is a path in the file system.
fn has_local_path(socket: &OwnedFd) -> bool {
    let Ok(address) = rustix::net::getsockname(socket) else { return false };
    rustix::net::SocketAddrUnix::try_from(address).is_ok_and(|unix| unix.path_bytes().is_some_and(|path| !path.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    #[test]
    fn the_peer_of_a_socket_pair_is_this_process_and_not_accepted() {
        let (ours, _theirs) = UnixStream::pair().unwrap();
        let peer = unix_peer(&OwnedFd::from(ours)).unwrap();
        assert_eq!(peer.requester, Requester { uid: nix::unistd::geteuid().as_raw(), pid: std::process::id() as i32 });
        assert!(!peer.accepted);
    }

    #[test]
    fn a_connection_accepted_on_a_listening_path_is_accepted_and_the_connecting_end_is_not() {
        let dir = std::env::temp_dir().join(format!("requester-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let listener = std::os::unix::net::UnixListener::bind(dir.join("socket")).unwrap();
        let connecting = UnixStream::connect(dir.join("socket")).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        assert!(unix_peer(&OwnedFd::from(accepted)).unwrap().accepted);
        assert!(!unix_peer(&OwnedFd::from(connecting)).unwrap().accepted);
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn peer(uid: u32, accepted: bool) -> Peer {
        Peer { requester: Requester { uid, pid: 100 + uid as i32 }, accepted }
    }

    #[test]
    fn journalds_socket_beside_the_accepted_client_is_not_a_second_requester() {
        assert_eq!(clients(&[peer(0, false), peer(1000, true)]), vec![peer(1000, true).requester]);
    }

    #[test]
    fn root_as_the_accepted_client_is_a_requester_too() {
        assert_eq!(clients(&[peer(0, false), peer(0, true)]), vec![peer(0, true).requester]);
    }

    #[test]
    fn without_an_accepted_connection_every_peer_counts() {
        assert_eq!(clients(&[peer(1000, false)]), vec![peer(1000, false).requester]);
        assert_eq!(clients(&[peer(0, false), peer(1000, false)]).len(), 2);
    }

    /// A child, killed and reaped when dropped, even by a failed assertion.
    struct Reaped(nix::unistd::Pid);

    impl Drop for Reaped {
        fn drop(&mut self) {
            let _ = nix::sys::signal::kill(self.0, nix::sys::signal::Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(self.0, None);
        }
    }

    #[test]
    fn a_connection_from_below_the_nix_process_its_build_talking_back_is_no_requester() {
        let dir = std::env::temp_dir().join(format!("requester-below-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let listener = std::os::unix::net::UnixListener::bind(dir.join("socket")).unwrap();
        let address = nix::sys::socket::UnixAddr::new(&dir.join("socket")).unwrap();
        // A child connects, as a build reaches recursive Nix's socket, and
        // waits: only system calls after the fork.
        // SAFETY: the child calls nothing but socket, connect, pause and _exit.
        let child = match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType};
                if let Ok(socket) = socket(AddressFamily::Unix, SockType::Stream, SockFlag::empty(), None) {
                    if connect(std::os::fd::AsRawFd::as_raw_fd(&socket), &address).is_ok() {
                        loop {
                            nix::unistd::pause();
                        }
                    }
                }
                // SAFETY: ends the child without running anything of the parent's.
                unsafe { libc::_exit(1) }
            }
            nix::unistd::ForkResult::Parent { child } => Reaped(child),
        };
        let (accepted, _) = listener.accept().unwrap();
        let me = std::process::id() as i32;
        let found = requester(&Process::open(me).unwrap());
        drop((child, accepted));
        std::fs::remove_dir_all(dir).unwrap();
        assert_eq!(found.unwrap().pid, me, "the child's connection counted as a client");
    }

    #[test]
    fn a_socket_that_is_not_a_unix_stream_has_no_requester() {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(unix_peer(&OwnedFd::from(udp)).is_none());
    }
}
