//! Moves bytes between blocking readers or writers (PTY ends, stdin) and
//! async channels, each on a thread of its own: a blocking read cannot be
//! cancelled, and a thread that blocks does not stall the runtime.

use crate::protocol::CHUNK;
use bytes::Bytes;
use std::io::{Read, Write};
use tokio::sync::mpsc;

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
