//! Moves bytes between blocking readers or writers (PTY ends) and async
//! channels, each on a thread of its own (a blocking read cannot be
//! cancelled, and a thread that blocks does not stall the runtime), and
//! reads async pipes chunk by chunk.
//!
//! May use: [`protocol`](crate::protocol); no module that uses it (`layout`
//! keeps the arrows one way).

use crate::protocol::CHUNK;
use bytes::{Bytes, BytesMut};
use std::io::{Read, Write};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{mpsc, oneshot};

/// Reads `reader` until its end into a channel holding at most `in_flight`
/// chunks, so a slow consumer stalls the reader instead of growing a buffer.
/// The channel closes at the end.
pub fn from_reader(mut reader: Box<dyn Read + Send>, in_flight: usize) -> mpsc::Receiver<Bytes> {
    let (tx, rx) = mpsc::channel(in_flight);
    std::thread::spawn(move || {
        let mut buffer = vec![0u8; CHUNK];
        while let Ok(n @ 1..) = reader.read(&mut buffer) {
            if tx.blocking_send(Bytes::copy_from_slice(&buffer[..n])).is_err() {
                break;
            }
        }
    });
    rx
}

/// Writes what the channel brings to `writer`; closing the channel drops
/// the writer (for a PTY, that sends the terminal's end-of-file).
pub fn to_writer(mut writer: Box<dyn Write + Send>, in_flight: usize) -> mpsc::Sender<Bytes> {
    let (tx, mut rx) = mpsc::channel::<Bytes>(in_flight);
    std::thread::spawn(move || {
        while let Some(chunk) = rx.blocking_recv() {
            if writer.write_all(&chunk).and_then(|()| writer.flush()).is_err() {
                break;
            }
        }
    });
    tx
}

/// Reads the next chunk of an async pipe; the pipe is dropped at its end,
/// and a dropped pipe never yields again. To read two pipes in one
/// `select!` until both are gone, give each branch the precondition
/// `if pipe.is_some()`: without it, the branch of a pipe that ended stays
/// pending, and `select!`'s `else` never comes.
pub async fn read_some<R: AsyncRead + Unpin>(pipe: &mut Option<R>, buffer: &mut BytesMut) -> Option<Bytes> {
    let Some(reader) = pipe.as_mut() else { return std::future::pending().await };
    buffer.reserve(CHUNK);
    match reader.read_buf(buffer).await {
        Ok(1..) => Some(buffer.split().freeze()),
        _ => {
            *pipe = None;
            None
        }
    }
}

/// Waits for a child on a thread of its own; the channel brings its exit
/// code (255 if it cannot be had).
pub fn exit_code(mut child: Box<dyn portable_pty::Child + Send + Sync>) -> oneshot::Receiver<i32> {
    let (tx, rx) = oneshot::channel();
    std::thread::spawn(move || {
        let code = child.wait().map(|status| code_of(&status)).unwrap_or(255);
        let _ = tx.send(code);
    });
    rx
}

/// A status as a shell gives it: the exit code, or 128 and the signal's
/// number for a child that a signal ended, as nix run without a terminal
/// reports it (portable-pty keeps only the signal's name, as `strsignal`
/// gives it, and 1).
fn code_of(status: &portable_pty::ExitStatus) -> i32 {
    let Some(name) = status.signal() else { return status.exit_code() as i32 };
    (1..65).find(|&number| signal_name(number).as_deref() == Some(name)).map_or(status.exit_code() as i32, |number| 128 + number)
}

/// The name `strsignal` gives the signal `number`.
fn signal_name(number: i32) -> Option<String> {
    // SAFETY: `strsignal` returns a string of the C library's (or null),
    // read here at once and copied.
    let name = unsafe { libc::strsignal(number) };
    // SAFETY: not null, so a NUL-terminated string.
    (!name.is_null()).then(|| unsafe { std::ffi::CStr::from_ptr(name) }.to_string_lossy().into_owned())
}

/// A blocking writer whose bytes go to a channel as chunks, so that a
/// thread producing a stream (an archive) feeds an async sender. Writing
/// fails once the receiver is gone.
pub struct ChannelWriter(pub mpsc::Sender<Bytes>);

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(CHUNK);
        self.0.blocking_send(Bytes::copy_from_slice(&data[..n])).map_err(|_| std::io::ErrorKind::BrokenPipe)?;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_a_signal_ended_has_the_status_a_shell_gives_it() {
        assert_eq!(code_of(&portable_pty::ExitStatus::with_exit_code(3)), 3);
        let terminated = signal_name(libc::SIGTERM).unwrap();
        assert_eq!(code_of(&portable_pty::ExitStatus::with_signal(&terminated)), 128 + 15);
        let killed = signal_name(libc::SIGKILL).unwrap();
        assert_eq!(code_of(&portable_pty::ExitStatus::with_signal(&killed)), 128 + 9);
    }
}
