//! Hands an interactive session's PTY master from the agent to the client,
//! beside the [`AgentFrame::Terminal`] frame (`SCM_RIGHTS` on the unix
//! socket). The client then relays the user's terminal to the build's PTY
//! itself: no agent, socket or framing sits between a keystroke and the
//! shell.
//!
//! The client trusts nothing it is handed: it takes in every descriptor
//! sent (room for the kernel's limit, so none is cut off and left open),
//! keeps the first, closes the rest, and uses it only if it is a PTY master.
//!
//! May use: [`protocol`](crate::protocol); no module that uses it (`layout`
//! keeps the arrows one way).

use crate::protocol::{AgentCodec, AgentFrame, ClientCodec, ProtocolError};
use bytes::BytesMut;
use nix::errno::Errno;
use nix::libc;
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use nix::sys::stat::{fstat, major, minor, SFlag};
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use tokio::io::Interest;
use tokio_util::codec::{Decoder, Encoder};

/// The device every PTY master is opened through (`/dev/ptmx`, 5:2).
const PTMX: (u64, u64) = (5, 2);

nix::ioctl_read_bad!(pty_number, libc::TIOCGPTN, libc::c_uint);

/// Sends the terminal frame with `master` beside it.
pub async fn send_terminal(stream: &tokio::net::UnixStream, master: RawFd) -> io::Result<()> {
    let mut frame = BytesMut::new();
    AgentCodec::default().encode(AgentFrame::Terminal, &mut frame).map_err(io::Error::other)?;
    let fds = [master];
    let send = || {
        let rights = [ControlMessage::ScmRights(&fds)];
        sendmsg::<()>(stream.as_raw_fd(), &[IoSlice::new(&frame)], &rights, MsgFlags::MSG_NOSIGNAL, None).map_err(io::Error::from)
    };
    match stream.async_io(Interest::WRITABLE, send).await? {
        sent if sent == frame.len() => Ok(()),
        _ => Err(io::Error::other("the terminal frame went out in part")),
    }
}

/// The agent's first answer, the descriptor that came with it (if any),
/// and whatever was read past it.
pub struct Answer {
    pub frame: AgentFrame,
    pub descriptor: Option<OwnedFd>,
    pub rest: BytesMut,
}

/// Reads the agent's first frame from a blocking socket, with the first
/// descriptor handed over while reading it; `None` if the agent closed.
pub fn receive_answer(stream: &std::os::unix::net::UnixStream) -> Result<Option<Answer>, ProtocolError> {
    let mut codec = ClientCodec::default();
    let mut rest = BytesMut::new();
    let mut descriptor = None;
    let mut chunk = vec![0u8; 4096];
    loop {
        if let Some(frame) = codec.decode(&mut rest)? {
            return Ok(Some(Answer { frame, descriptor, rest }));
        }
        let (read, handed) = receive(stream, &mut chunk)?;
        if read == 0 {
            return Ok(None);
        }
        rest.extend_from_slice(&chunk[..read]);
        descriptor = descriptor.or(handed);
    }
}

/// The most descriptors one message can carry (the kernel's `SCM_MAX_FD`).
const MAX_HANDED: usize = 253;

/// One read, keeping the first descriptor that came with it; any others
/// are closed as they are dropped.
pub(crate) fn receive(stream: &std::os::unix::net::UnixStream, chunk: &mut [u8]) -> io::Result<(usize, Option<OwnedFd>)> {
    let mut space = nix::cmsg_space!([RawFd; MAX_HANDED]);
    let mut iov = [IoSliceMut::new(chunk)];
    let message = loop {
        match recvmsg::<()>(stream.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC) {
            Err(Errno::EINTR) => continue,
            other => break other?,
        }
    };
    let mut handed = Vec::new();
    for control in message.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = control {
            // SAFETY: the kernel just installed these descriptors for us,
            // and nothing else owns them.
            handed.extend(fds.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
        }
    }
    Ok((message.bytes, handed.into_iter().next()))
}

/// Whether `fd` is a PTY master: a descriptor of `/dev/ptmx` that knows
/// its terminal's number. A file, a pipe, a socket or another device is not.
pub fn is_pty_master(fd: &OwnedFd) -> bool {
    let Ok(stat) = fstat(fd) else { return false };
    let character_device = SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFCHR;
    if !character_device || (major(stat.st_rdev), minor(stat.st_rdev)) != PTMX {
        return false;
    }
    let mut number: libc::c_uint = 0;
    // SAFETY: TIOCGPTN writes one unsigned int into `number`.
    unsafe { pty_number(fd.as_raw_fd(), &mut number) }.is_ok()
}
