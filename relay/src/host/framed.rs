//! `nix-attach attach --framed`: the builder's half of `attach --via`
//! without a PTY of sshd's (`ssh -T`). It speaks frames over its stdin and
//! stdout ([`crate::protocol`]'s codec, nothing of its own): from the
//! person's machine come the keys ([`ClientFrame::Input`]), the window's
//! size ([`ClientFrame::Resize`], the first frame) and the end of input;
//! back go [`AgentFrame::Relaying`] first, then the build's terminal output
//! and the shell's status. Between the two it relays to the build's PTY
//! master, as a local attach does, so a keystroke crosses one PTY on the
//! builder, the build's own.
//!
//! It waits in `poll` and in blocking reads, so an idle session costs no
//! CPU.

use super::relay::RelayError;
use crate::protocol::{read_frame, write_frame, AgentFrame, ClientCodec, ClientFrame, Request, MAX_FRAME};
use bytes::BytesMut;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};
use tokio_util::codec::Decoder;

/// The framed `--via` this relay speaks.
pub const VERSION: u32 = 1;
/// How long the output left once the shell ends may take to come.
const DRAIN_GRACE: Duration = Duration::from_millis(300);

/// Greets the other side, reads the window's size, opens the session on
/// `reach()`'s connection and relays until the shell ends; returns its
/// status. Any failure is said in an [`AgentFrame::Error`] before the
/// status frame.
pub fn attach(reach: impl FnOnce() -> anyhow::Result<(UnixStream, Vec<String>)>, term: Option<String>) -> anyhow::Result<i32> {
    let mut stdout = std::io::stdout().lock();
    write_frame(&mut stdout, &AgentFrame::Relaying(VERSION))?;
    stdout.flush()?;
    let outcome = (|| {
        // Through std's one stdin buffer, which the input thread reads on.
        let first = read_frame::<ClientFrame>(&mut std::io::stdin().lock())?;
        let (rows, cols) = match first {
            Some(ClientFrame::Resize { rows, cols }) => (rows, cols),
            _ => anyhow::bail!("the framed relay's first frame must be the window's size"),
        };
        let (connection, path) = reach()?;
        let (master, frames) = super::pty_relay::open_session(&connection, Request::Attach { rows, cols, term, path })?;
        relay(master, connection, frames)
    })();
    match outcome {
        Ok(code) => {
            write_frame(&mut stdout, &AgentFrame::Exit(code))?;
            stdout.flush()?;
            Ok(code)
        }
        Err(err) => {
            let _ = write_frame(&mut stdout, &AgentFrame::Error(format!("{err:#}")));
            let _ = write_frame(&mut stdout, &AgentFrame::Exit(super::ERROR_EXIT));
            let _ = stdout.flush();
            Ok(super::ERROR_EXIT)
        }
    }
}

/// Relays until the shell ends; returns its status.
fn relay(master: OwnedFd, connection: UnixStream, mut frames: BytesMut) -> anyhow::Result<i32> {
    let writer = master.try_clone()?;
    // The keys and sizes come in a thread of their own, blocked in read.
    std::thread::spawn(move || forward_input(writer));
    let mut master = std::fs::File::from(master);
    let mut codec = ClientCodec::default();
    let mut stdout = std::io::stdout().lock();
    let mut buffer = vec![0u8; crate::protocol::CHUNK];
    let (mut ended, mut master_open, mut connection_open): (Option<(i32, Instant)>, bool, bool) = (None, true, true);
    loop {
        while let Some(frame) = codec.decode(&mut frames)? {
            match frame {
                AgentFrame::Exit(code) => ended = Some((code, Instant::now() + DRAIN_GRACE)),
                AgentFrame::Error(message) => anyhow::bail!(RelayError::Agent(crate::sanitize::sanitize(&message))),
                _ => anyhow::bail!(RelayError::Unexpected("output")),
            }
        }
        // Once the shell's status is in, what it printed last may still
        // come, for a moment; once the terminal is closed, only the status.
        match ended {
            Some((code, _)) if !master_open => return Ok(code),
            Some((code, until)) if Instant::now() >= until => return Ok(code),
            _ => {}
        }
        let wait = match ended {
            Some((_, until)) => PollTimeout::try_from(until.saturating_duration_since(Instant::now())).unwrap_or(PollTimeout::ZERO),
            None => PollTimeout::NONE,
        };
        let master_events = if master_open { PollFlags::POLLIN } else { PollFlags::empty() };
        let connection_events = if connection_open { PollFlags::POLLIN } else { PollFlags::empty() };
        let mut fds = [PollFd::new(master.as_fd(), master_events), PollFd::new(connection.as_fd(), connection_events)];
        poll(&mut fds, wait)?;
        let (master_ready, connection_ready) = (fds[0].any().unwrap_or(false), fds[1].any().unwrap_or(false));
        if master_ready && master_open {
            match master.read(&mut buffer) {
                // The shell's side is closed: its status comes next.
                Ok(0) | Err(_) => master_open = false,
                Ok(n) => {
                    write_frame(&mut stdout, &AgentFrame::Output(bytes::Bytes::copy_from_slice(&buffer[..n])))?;
                    stdout.flush()?;
                }
            }
        }
        if connection_ready && connection_open {
            let mut chunk = [0u8; 4096];
            match (&connection).read(&mut chunk) {
                Ok(0) | Err(_) if ended.is_none() => anyhow::bail!(RelayError::Closed),
                Ok(0) | Err(_) => connection_open = false,
                Ok(n) => frames.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

/// Applies the other side's frames to the build's terminal until its input
/// ends: keys are written to the PTY, sizes set on it. The end of input
/// (the person gone) ends the relay, and so the session.
fn forward_input(master: OwnedFd) {
    let mut stdin = std::io::stdin().lock();
    let mut master = std::fs::File::from(master);
    loop {
        match read_frame::<ClientFrame>(&mut stdin) {
            Ok(Some(ClientFrame::Input(data))) if data.len() < MAX_FRAME => {
                if master.write_all(&data).is_err() {
                    break;
                }
            }
            Ok(Some(ClientFrame::Resize { rows, cols })) => {
                let size = rustix::termios::Winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
                let _ = rustix::termios::tcsetwinsize(&master, size);
            }
            _ => break,
        }
    }
    std::process::exit(super::pty_relay::ESCAPED);
}
