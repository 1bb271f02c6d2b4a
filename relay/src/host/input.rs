//! The user's stdin, read on a thread that can be paused, so that a prompt
//! or another program (sudo asking for a password, a nested attach) can read
//! the terminal in between without losing keystrokes to us.

use crate::protocol::CHUNK;
use bytes::Bytes;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Running,
    PauseAsked,
    Paused,
    Ended,
}

struct Gate {
    state: Mutex<State>,
    changed: Condvar,
    wake: OwnedFd,
}

impl Gate {
    fn set(&self, state: State) {
        *self.state.lock().unwrap() = state;
        self.changed.notify_all();
    }
}

/// Stdin as a channel of chunks; it closes at end of file.
pub struct Input {
    chunks: mpsc::Receiver<Bytes>,
    gate: Arc<Gate>,
}

impl Input {
    /// Starts reading stdin.
    pub fn start() -> std::io::Result<Input> {
        let (wake_read, wake) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let gate = Arc::new(Gate { state: Mutex::new(State::Running), changed: Condvar::new(), wake });
        let (tx, chunks) = mpsc::channel(4);
        let reader_gate = gate.clone();
        std::thread::spawn(move || {
            read_until_end(&reader_gate, &wake_read, &tx);
            reader_gate.set(State::Ended);
        });
        Ok(Input { chunks, gate })
    }

    /// The next chunk, or `None` at end of file.
    pub async fn recv(&mut self) -> Option<Bytes> {
        self.chunks.recv().await
    }

    /// Stops reading; returns once the reader is parked. What it had read
    /// before is dropped: it was typed before whatever comes next.
    pub fn pause(&mut self) {
        {
            let mut state = self.gate.state.lock().unwrap();
            if *state == State::Running {
                *state = State::PauseAsked;
            }
        }
        let _ = nix::unistd::write(&self.gate.wake, b"p");
        // The reader may be stuck handing over a chunk: keep taking them
        // until it parks.
        loop {
            while self.chunks.try_recv().is_ok() {}
            let state = self.gate.state.lock().unwrap();
            if *state != State::PauseAsked {
                break;
            }
            let _ = self.gate.changed.wait_timeout(state, Duration::from_millis(10)).unwrap();
        }
        while self.chunks.try_recv().is_ok() {}
    }

    /// Reads again.
    pub fn resume(&self) {
        let mut state = self.gate.state.lock().unwrap();
        if *state == State::Paused {
            *state = State::Running;
            self.gate.changed.notify_all();
        }
    }
}

fn read_until_end(gate: &Gate, wake: &OwnedFd, tx: &mpsc::Sender<Bytes>) {
    let stdin = std::io::stdin();
    let mut buffer = vec![0u8; CHUNK];
    loop {
        park_while_paused(gate);
        let mut fds = [PollFd::new(stdin.as_fd(), PollFlags::POLLIN), PollFd::new(wake.as_fd(), PollFlags::POLLIN)];
        if poll(&mut fds, PollTimeout::NONE).is_err() {
            continue;
        }
        if fds[1].any().unwrap_or(false) {
            let _ = nix::unistd::read(wake, &mut [0u8; 16]);
            continue;
        }
        match nix::unistd::read(stdin.as_fd(), &mut buffer) {
            Ok(n @ 1..) if tx.blocking_send(Bytes::copy_from_slice(&buffer[..n])).is_ok() => {}
            _ => return,
        }
    }
}

fn park_while_paused(gate: &Gate) {
    let mut state = gate.state.lock().unwrap();
    if *state == State::PauseAsked {
        *state = State::Paused;
        gate.changed.notify_all();
    }
    while *state == State::Paused {
        state = gate.changed.wait(state).unwrap();
    }
}

/// Reads one byte from stdin (in raw mode: one key), waiting at most
/// `timeout`; `None` when time ran out or stdin ended. Call it while any
/// [`Input`] is paused.
pub fn read_key(timeout: Option<Duration>) -> Option<u8> {
    let stdin = std::io::stdin();
    let timeout = match timeout {
        Some(limit) => PollTimeout::try_from(limit).unwrap_or(PollTimeout::MAX),
        None => PollTimeout::NONE,
    };
    let mut fds = [PollFd::new(stdin.as_fd(), PollFlags::POLLIN)];
    if poll(&mut fds, timeout).ok()? == 0 {
        return None;
    }
    // Read the descriptor itself: std's buffer would keep bytes where
    // poll cannot see them.
    let mut key = [0u8; 1];
    match nix::unistd::read(stdin.as_fd(), &mut key) {
        Ok(1) => Some(key[0]),
        _ => None,
    }
}
