//! Relays stdin and stdout to a command run in the build (or sends a
//! release) over framed messages, until the agent reports how it ended;
//! or follows such a session that a builder's framed relay asked for
//! (`exec --via`, [`super::framed`]), reading its frames the same way.
//!
//! Reading frames never waits on sending: input goes out in a future of its
//! own, so a command that floods output while it is fed input cannot
//! deadlock, and a signal always gets the user out.

use super::input::Input;
use crate::protocol::{AgentFrame, ClientCodec, ClientFrame, Hello, ProtocolError, Request, VERSION};
use crate::sanitize::sanitize;
use crate::terminal_filter::TerminalFilter;
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, Stream, StreamExt};
use std::io::IsTerminal;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::codec::{Framed, FramedRead};

type Sink = SplitSink<Framed<UnixStream, ClientCodec>, ClientFrame>;

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error("the build said: {0}")]
    Agent(String),
    #[error("the build closed the connection (was it released?)")]
    Closed,
    #[error("the build sent {0} out of turn")]
    Unexpected(&'static str),
    #[error("the build's answer came without its terminal")]
    NoTerminal,
    #[error("what the build handed over is not a PTY master")]
    NotAMaster,
    #[error("the build did not answer")]
    NoAnswer,
    #[error("the build's terminal stopped answering (it was made blocking)")]
    Stalled,
    #[error("cannot watch for signals")]
    Signals(#[source] std::io::Error),
    #[error("cannot set up the connection to the build")]
    Connection(#[source] std::io::Error),
    #[error("cannot set up the build's terminal")]
    BuildTerminal(#[source] nix::Error),
    #[error("cannot open stdout for the session")]
    OpenStdout(#[source] nix::Error),
    #[error("cannot wait for the terminal, the build's terminal and the connection")]
    Poll(#[source] nix::Error),
    #[error("cannot write to stdout")]
    WriteStdout(#[source] std::io::Error),
    #[error("cannot write to stderr")]
    WriteStderr(#[source] std::io::Error),
    #[error("the session's output is over its bound of {0} bytes")]
    OverBound(u64),
}

/// Sends `request`, relays until the session ends and returns its status.
/// `stdin`, when given, is sent to the session. With `filter`, output for
/// a terminal passes a [`TerminalFilter`].
pub async fn relay(stream: UnixStream, request: Request, stdin: Option<&mut Input>, filter: bool) -> Result<i32, RelayError> {
    let shown = Shown { out: tokio::io::stdout(), terminal: std::io::stdout().is_terminal(), bound: None };
    relay_to(stream, request, stdin, filter, shown).await
}

/// [`relay`], with no input and the session's output written to `out`,
/// at most `bound` bytes of it, rather than to stdout; what it says on
/// stderr still goes to stderr.
pub async fn relay_into(stream: UnixStream, request: Request, out: impl AsyncWrite + Unpin, bound: u64) -> Result<i32, RelayError> {
    relay_to(stream, request, None, true, Shown { out, terminal: false, bound: Some(bound) }).await
}

/// Where the output goes, and whether that is a terminal.
struct Shown<W> {
    out: W,
    terminal: bool,
    /// The most it takes, where it is bounded.
    bound: Option<u64>,
}

async fn relay_to(
    stream: UnixStream,
    request: Request,
    stdin: Option<&mut Input>,
    filter: bool,
    shown: Shown<impl AsyncWrite + Unpin>,
) -> Result<i32, RelayError> {
    let mut signals = EndSignals::watch()?;
    let (mut sink, frames) = Framed::new(stream, ClientCodec::default()).split();
    if sink.send(ClientFrame::Hello(Hello { version: VERSION, request })).await.is_err() {
        // The agent may have refused us and closed before reading: its
        // refusal is waiting in the frames.
        return read_frames(frames, filter, shown).await;
    }
    tokio::select! {
        outcome = read_frames(frames, filter, shown) => outcome,
        never = forward_input(sink, stdin) => never,
        code = signals.next() => Ok(code),
    }
}

/// Follows a session that a builder's framed relay asked its agent for,
/// with no input: reads the agent's frames it passes on from `from_remote`,
/// strictly, until the status comes. With `filter`, output for a terminal
/// passes a [`TerminalFilter`].
pub async fn follow(from_remote: impl AsyncRead + Unpin, filter: bool) -> Result<i32, RelayError> {
    let mut signals = EndSignals::watch()?;
    let shown = Shown { out: tokio::io::stdout(), terminal: std::io::stdout().is_terminal(), bound: None };
    tokio::select! {
        outcome = read_frames(FramedRead::new(from_remote, ClientCodec::default()), filter, shown) => outcome,
        code = signals.next() => Ok(code),
    }
}

/// SIGTERM and SIGHUP, which end a session with 128 plus the signal.
struct EndSignals {
    terminated: tokio::signal::unix::Signal,
    hung_up: tokio::signal::unix::Signal,
}

impl EndSignals {
    fn watch() -> Result<EndSignals, RelayError> {
        let terminated = signal(SignalKind::terminate()).map_err(RelayError::Signals)?;
        let hung_up = signal(SignalKind::hangup()).map_err(RelayError::Signals)?;
        Ok(EndSignals { terminated, hung_up })
    }

    /// The status the next of them ends the session with.
    async fn next(&mut self) -> i32 {
        tokio::select! {
            Some(()) = self.terminated.recv() => 128 + 15,
            Some(()) = self.hung_up.recv() => 128 + 1,
            else => std::future::pending().await,
        }
    }
}

/// Shows the command's output until it reports its status. Writes go
/// through tokio, so that a pipe that stops draining leaves signals working.
async fn read_frames(
    mut frames: impl Stream<Item = Result<AgentFrame, ProtocolError>> + Unpin,
    filter: bool,
    shown: Shown<impl AsyncWrite + Unpin>,
) -> Result<i32, RelayError> {
    let (mut stdout, mut stderr, mut left) = (shown.out, tokio::io::stderr(), shown.bound);
    let mut stdout_filter = (filter && shown.terminal).then(TerminalFilter::default);
    let mut stderr_filter = (filter && std::io::stderr().is_terminal()).then(TerminalFilter::default);
    loop {
        match frames.next().await.ok_or(RelayError::Closed)?? {
            AgentFrame::Output(data) => {
                if let Some(left) = left.as_mut() {
                    *left = left.checked_sub(data.len() as u64).ok_or(RelayError::OverBound(shown.bound.unwrap_or_default()))?;
                }
                let data = filtered(&mut stdout_filter, data);
                stdout.write_all(&data).await.map_err(RelayError::WriteStdout)?;
                stdout.flush().await.map_err(RelayError::WriteStdout)?;
            }
            AgentFrame::Stderr(data) => {
                let data = filtered(&mut stderr_filter, data);
                stderr.write_all(&data).await.map_err(RelayError::WriteStderr)?;
                stderr.flush().await.map_err(RelayError::WriteStderr)?;
            }
            AgentFrame::Exit(code) => return Ok(code),
            AgentFrame::Error(message) => return Err(RelayError::Agent(sanitize(&message))),
            AgentFrame::Terminal => return Err(RelayError::Unexpected("a terminal")),
            AgentFrame::Relaying(_) => return Err(RelayError::Unexpected("a relay's greeting")),
        }
    }
}

/// What of `data` may be shown, through `filter` when there is one.
fn filtered(filter: &mut Option<TerminalFilter>, data: bytes::Bytes) -> bytes::Bytes {
    match filter {
        Some(filter) => {
            let mut shown = Vec::with_capacity(data.len());
            filter.feed(&data, &mut shown);
            shown.into()
        }
        None => data,
    }
}

/// Sends input, then its end. Never returns: once sending fails (the
/// command ended), what happened is read from the frames.
async fn forward_input(mut sink: Sink, mut stdin: Option<&mut Input>) -> Result<i32, RelayError> {
    loop {
        let frame = match next_input(&mut stdin).await {
            Some(chunk) => ClientFrame::Input(chunk),
            None => ClientFrame::InputEof,
        };
        let ended = matches!(frame, ClientFrame::InputEof);
        if sink.send(frame).await.is_err() || ended {
            return std::future::pending().await;
        }
    }
}

async fn next_input(stdin: &mut Option<&mut Input>) -> Option<bytes::Bytes> {
    match stdin {
        Some(input) => input.recv().await,
        None => None,
    }
}
