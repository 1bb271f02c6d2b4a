//! The build's end of an attach, as the relay ([`super::pty_relay`])
//! drives it. Either the build's PTY master, handed over by the agent,
//! whose connection then only brings how the shell ended; or a builder's
//! framed relay behind ssh's pipes (`attach --via` over `ssh -T`,
//! [`super::framed`]), where keys go out as input frames and the window's
//! size as resize frames, and the build's output and the shell's status
//! come back in frames ([`crate::protocol`]'s codec). Either way the relay
//! polls one end to read and one to write, and a keystroke crosses no
//! thread and no socket of ours.

use super::relay::RelayError;
use super::terminal;
use crate::protocol::{ClientCodec, ClientFrame, CHUNK};
use bytes::BytesMut;
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::unistd::alarm;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use tokio_util::codec::Encoder;

/// The seconds a call on a handed-over master may block before it is cut.
const MASTER_PATIENCE_SECS: u32 = 2;

pub enum BuildTerminal {
    /// The build's PTY master, and the agent's connection. The agent shares
    /// the master's open file and could make it blocking again: every call
    /// on it runs under an alarm, and one the alarm has to cut ends the
    /// session.
    Handed { master: OwnedFd, connection: UnixStream, typed: Vec<u8> },
    /// ssh's stdin and stdout, with the builder's framed relay at their
    /// other end; `outbound` holds the frames it has yet to take.
    Framed { to_remote: OwnedFd, from_remote: OwnedFd, outbound: BytesMut, codec: ClientCodec },
}

impl BuildTerminal {
    pub fn handed(master: OwnedFd, connection: UnixStream) -> Self {
        BuildTerminal::Handed { master, connection, typed: Vec::new() }
    }

    pub fn framed(to_remote: OwnedFd, from_remote: OwnedFd) -> Self {
        BuildTerminal::Framed { to_remote, from_remote, outbound: BytesMut::new(), codec: ClientCodec::default() }
    }

    /// Makes every end non-blocking (and the alarm cut a blocked call on a
    /// handed-over master).
    pub fn prepare(&self) -> Result<(), RelayError> {
        match self {
            BuildTerminal::Handed { master, connection, .. } => {
                cut_blocked_calls_on_alarm().map_err(|errno| RelayError::Signals(errno.into()))?;
                set_nonblocking(master.as_fd()).map_err(RelayError::BuildTerminal)?;
                connection.set_nonblocking(true).map_err(RelayError::Connection)
            }
            BuildTerminal::Framed { to_remote, from_remote, .. } => {
                set_nonblocking(to_remote.as_fd()).map_err(RelayError::BuildTerminal)?;
                set_nonblocking(from_remote.as_fd()).map_err(RelayError::BuildTerminal)
            }
        }
    }

    /// Whether the build's output comes in frames, with the shell's status.
    pub fn is_framed(&self) -> bool {
        matches!(self, BuildTerminal::Framed { .. })
    }

    /// Where the build's output is read.
    pub fn reader(&self) -> BorrowedFd<'_> {
        match self {
            BuildTerminal::Handed { master, .. } => master.as_fd(),
            BuildTerminal::Framed { from_remote, .. } => from_remote.as_fd(),
        }
    }

    /// Where what is typed goes.
    pub fn writer(&self) -> BorrowedFd<'_> {
        match self {
            BuildTerminal::Handed { master, .. } => master.as_fd(),
            BuildTerminal::Framed { to_remote, .. } => to_remote.as_fd(),
        }
    }

    /// The agent's connection, where it is a connection of its own.
    pub fn connection(&self) -> Option<&UnixStream> {
        match self {
            BuildTerminal::Handed { connection, .. } => Some(connection),
            BuildTerminal::Framed { .. } => None,
        }
    }

    /// Whether something waits to be written.
    pub fn pending(&self) -> bool {
        match self {
            BuildTerminal::Handed { typed, .. } => !typed.is_empty(),
            BuildTerminal::Framed { outbound, .. } => !outbound.is_empty(),
        }
    }

    /// Queues what was typed and writes as much as the build takes now.
    pub fn type_in(&mut self, keys: &[u8]) -> Result<(), RelayError> {
        match self {
            BuildTerminal::Handed { typed, .. } => typed.extend_from_slice(keys),
            BuildTerminal::Framed { outbound, codec, .. } => {
                for chunk in keys.chunks(CHUNK) {
                    codec.encode(ClientFrame::Input(bytes::Bytes::copy_from_slice(chunk)), outbound)?;
                }
            }
        }
        self.flush()
    }

    /// Gives the build's terminal a new size. A terminal that is gone
    /// takes none.
    pub fn resize(&mut self, rows: u16, cols: u16) -> Result<(), RelayError> {
        match self {
            BuildTerminal::Handed { master, .. } => drop(terminal::set_size(master.as_fd(), rows, cols)),
            BuildTerminal::Framed { outbound, codec, .. } => codec.encode(ClientFrame::Resize { rows, cols }, outbound)?,
        }
        self.flush()
    }

    /// Writes what waits, as far as the build takes it now. An end that is
    /// gone takes nothing more: the read side then tells how it ended.
    pub fn flush(&mut self) -> Result<(), RelayError> {
        match self {
            BuildTerminal::Handed { master, typed, .. } => {
                while !typed.is_empty() {
                    match on_master(|| nix::unistd::write(&*master, typed))? {
                        Ok(0) | Err(Errno::EAGAIN) => break,
                        Ok(n) => drop(typed.drain(..n)),
                        Err(_) => typed.clear(),
                    }
                }
            }
            BuildTerminal::Framed { to_remote, outbound, .. } => {
                while !outbound.is_empty() {
                    match nix::unistd::write(&*to_remote, outbound) {
                        Ok(0) | Err(Errno::EAGAIN) => break,
                        Ok(n) => drop(outbound.split_to(n)),
                        Err(Errno::EINTR) => {}
                        Err(_) => outbound.clear(),
                    }
                }
            }
        }
        Ok(())
    }

    /// Reads what the build sent: its terminal's bytes, or frames.
    pub fn read(&self, buffer: &mut [u8]) -> Result<nix::Result<usize>, RelayError> {
        match self {
            BuildTerminal::Handed { master, .. } => on_master(|| nix::unistd::read(master.as_fd(), buffer)),
            BuildTerminal::Framed { from_remote, .. } => Ok(nix::unistd::read(from_remote.as_fd(), buffer)),
        }
    }
}

extern "C" fn interrupt_only(_: nix::libc::c_int) {}

/// Makes SIGALRM interrupt a blocked call (no `SA_RESTART`) and do nothing
/// else.
fn cut_blocked_calls_on_alarm() -> nix::Result<()> {
    let action = SigAction::new(SigHandler::Handler(interrupt_only), SaFlags::empty(), SigSet::empty());
    // SAFETY: the handler does nothing, so it is async-signal-safe.
    unsafe { sigaction(Signal::SIGALRM, &action) }.map(drop)
}

/// Runs one call on the master under the alarm; a call the alarm cut (the
/// master was made blocking behind our back) is an error.
fn on_master<T>(call: impl FnOnce() -> nix::Result<T>) -> Result<nix::Result<T>, RelayError> {
    alarm::set(MASTER_PATIENCE_SECS);
    let result = call();
    alarm::cancel();
    match result {
        Err(Errno::EINTR) => Err(RelayError::Stalled),
        other => Ok(other),
    }
}

fn set_nonblocking(fd: BorrowedFd) -> nix::Result<()> {
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK)).map(drop)
}
