//! Terminals: raw mode on the user's, always undone; the size of the
//! user's, and setting the size of the build's (its PTY master).

use nix::libc;
use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg, Termios};
use std::io::IsTerminal;
use std::os::fd::{AsFd, BorrowedFd};

nix::ioctl_read_bad!(get_window_size, libc::TIOCGWINSZ, libc::winsize);
nix::ioctl_write_ptr_bad!(set_window_size, libc::TIOCSWINSZ, libc::winsize);

/// Puts a terminal in raw mode until dropped.
pub struct RawMode {
    saved: Termios,
}

impl RawMode {
    /// Enters raw mode on stdin, or returns `None` when it is not a terminal.
    pub fn enter() -> Option<RawMode> {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return None;
        }
        let saved = tcgetattr(stdin.as_fd()).ok()?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(stdin.as_fd(), SetArg::TCSADRAIN, &raw).ok()?;
        Some(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = tcsetattr(std::io::stdin().as_fd(), SetArg::TCSADRAIN, &self.saved);
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
