//! The PTY master as an async descriptor, read and written by the session's
//! own task: no thread and no channel stand between the shell and the
//! socket, which keeps keystrokes and bulk output quick.

use portable_pty::MasterPty;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use tokio::io::unix::AsyncFd;

pub struct AsyncMaster {
    fd: AsyncFd<OwnedFd>,
}

impl AsyncMaster {
    /// A non-blocking duplicate of the master's descriptor.
    pub fn new(master: &dyn MasterPty) -> io::Result<AsyncMaster> {
        let raw = master.as_raw_fd().ok_or_else(|| io::Error::other("the PTY has no descriptor"))?;
        // SAFETY: the master outlives this borrow.
        let master = unsafe { BorrowedFd::borrow_raw(raw) };
        // A duplicate closed on exec, so that no command a session runs keeps
        // this terminal open.
        let duplicate = nix::fcntl::fcntl(master, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(0))?;
        // SAFETY: fcntl just made this descriptor, and nothing else owns it.
        let owned = unsafe { OwnedFd::from_raw_fd(duplicate) };
        let flags = nix::fcntl::OFlag::from_bits_truncate(nix::fcntl::fcntl(&owned, nix::fcntl::FcntlArg::F_GETFL)?);
        nix::fcntl::fcntl(&owned, nix::fcntl::FcntlArg::F_SETFL(flags | nix::fcntl::OFlag::O_NONBLOCK))?;
        // SAFETY: an OwnedFd is open, and stays the same descriptor, for as
        // long as the AsyncFd owns it.
        let fd = unsafe { AsyncFd::register(owned) }.map_err(|err| io::Error::other(err.to_string()))?;
        Ok(AsyncMaster { fd })
    }

    /// Reads what the shell printed; 0 once every process on the terminal
    /// is gone (the kernel says EIO).
    pub async fn read(&self, buffer: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut ready = self.fd.readable().await?;
            match ready.try_io(|fd| read_now(fd.get_ref().as_fd(), buffer)) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    /// Reads what is there now, without waiting; `None` when nothing is.
    pub fn try_read(&self, buffer: &mut [u8]) -> Option<usize> {
        match read_now(self.fd.get_ref().as_fd(), buffer) {
            Ok(n) if n > 0 => Some(n),
            _ => None,
        }
    }

    /// Types `data` into the terminal.
    pub async fn write_all(&self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let mut ready = self.fd.writable().await?;
            match ready.try_io(|fd| nix::unistd::write(fd.get_ref(), data).map_err(io::Error::from)) {
                Ok(Ok(written)) => data = &data[written..],
                Ok(Err(err)) => return Err(err),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }
}

fn read_now(fd: BorrowedFd, buffer: &mut [u8]) -> io::Result<usize> {
    match nix::unistd::read(fd, buffer) {
        Ok(n) => Ok(n),
        Err(nix::errno::Errno::EIO) => Ok(0),
        Err(nix::errno::Errno::EAGAIN) => Err(io::ErrorKind::WouldBlock.into()),
        Err(err) => Err(err.into()),
    }
}
