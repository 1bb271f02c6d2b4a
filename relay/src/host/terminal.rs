//! Terminals: raw mode on the user's, always undone; the size of the
//! user's, and setting the size of the build's (its PTY master).

use nix::libc;
use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg, Termios};
use std::io::IsTerminal;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

nix::ioctl_read_bad!(get_window_size, libc::TIOCGWINSZ, libc::winsize);
nix::ioctl_write_ptr_bad!(set_window_size, libc::TIOCSWINSZ, libc::winsize);

/// Puts a terminal in raw mode until dropped. Dropped, it also discards
/// what the terminal received and nobody read: a late answer to a query of
/// the build's, which would otherwise be typed into the user's own shell.
pub struct RawMode {
    terminal: OwnedFd,
    saved: Termios,
}

impl RawMode {
    /// Enters raw mode on stdin, or returns `None` when it is not a terminal.
    pub fn enter() -> Option<RawMode> {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return None;
        }
        RawMode::enter_on(stdin.as_fd().try_clone_to_owned().ok()?)
    }

    fn enter_on(terminal: OwnedFd) -> Option<RawMode> {
        let saved = tcgetattr(&terminal).ok()?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(&terminal, SetArg::TCSADRAIN, &raw).ok()?;
        Some(RawMode { terminal, saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = tcsetattr(&self.terminal, SetArg::TCSAFLUSH, &self.saved);
    }
}

/// The size of the terminal on `fd` as (rows, columns).
pub fn size_of(fd: BorrowedFd) -> Option<(u16, u16)> {
    let mut size = libc::winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCGWINSZ writes one winsize into the struct we pass.
    unsafe { get_window_size(std::os::fd::AsRawFd::as_raw_fd(&fd), &mut size) }.ok()?;
    (size.ws_row > 0 && size.ws_col > 0).then_some((size.ws_row, size.ws_col))
}

/// The size of the user's terminal, from stdin or stdout, or 24×80.
pub fn size() -> (u16, u16) {
    size_of(std::io::stdin().as_fd()).or_else(|| size_of(std::io::stdout().as_fd())).unwrap_or((24, 80))
}

/// Gives the terminal on `fd` (a PTY master) a new size; the processes on
/// it are told with SIGWINCH.
pub fn set_size(fd: BorrowedFd, rows: u16, cols: u16) -> nix::Result<()> {
    let size = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCSWINSZ reads one winsize from the struct we pass.
    unsafe { set_window_size(std::os::fd::AsRawFd::as_raw_fd(&fd), &size) }.map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

    fn readable(fd: BorrowedFd, timeout: PollTimeout) -> bool {
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        poll(&mut fds, timeout).unwrap() > 0
    }

    #[test]
    fn what_the_terminal_received_during_raw_mode_is_not_left_for_the_next_reader() {
        let pty = nix::pty::openpty(None, None).unwrap();
        let raw = RawMode::enter_on(pty.slave.try_clone().unwrap()).unwrap();
        // A late answer to a query, arriving as the session ends.
        nix::unistd::write(&pty.master, b"\x1b[12;1R\n").unwrap();
        assert!(readable(pty.slave.as_fd(), PollTimeout::from(5000u16)), "the answer never reached the terminal");
        drop(raw);
        assert!(!readable(pty.slave.as_fd(), PollTimeout::ZERO), "the answer waits for the user's shell");
    }
}
