//! Relays the user's terminal, or stdin and stdout, to a session until the
//! agent reports how it ended.
//!
//! Reading frames never waits on sending: input goes out in a future of its
//! own, so a session that floods output while the user pastes input cannot
//! deadlock, and `~.` or a signal always gets the user out.

use super::escape::Escape;
use super::input::Input;
use super::terminal::{self, RawMode};
use crate::protocol::{AgentFrame, ClientCodec, ClientFrame, Hello, ProtocolError, Request, VERSION};
use crate::sanitize::sanitize;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use std::io::{IsTerminal, Write};
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio_util::codec::Framed;

type Sink = SplitSink<Framed<UnixStream, ClientCodec>, ClientFrame>;
type Frames = SplitStream<Framed<UnixStream, ClientCodec>>;

/// The status when the user leaves with `~.`, as ssh's.
pub const ESCAPED: i32 = 255;

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error("the build said: {0}")]
    Agent(String),
    #[error("the build closed the connection (was it released?)")]
    Closed,
    #[error("cannot write to the terminal")]
    Io(#[from] std::io::Error),
}

/// Sends `request`, relays until the session ends and returns its status.
/// `stdin`, when given, is sent to the session; `interactive` puts the
/// terminal in raw mode and follows its size.
pub async fn relay(
    stream: UnixStream,
    request: Request,
    stdin: Option<&mut Input>,
    interactive: bool,
) -> Result<i32, RelayError> {
    let mut terminated = signal(SignalKind::terminate())?;
    let mut hung_up = signal(SignalKind::hangup())?;
    let resized = signal(SignalKind::window_change())?;
    let _raw = interactive.then(RawMode::enter).flatten();
    let (mut sink, frames) = Framed::new(stream, ClientCodec::default()).split();
    if sink.send(ClientFrame::Hello(Hello { version: VERSION, request })).await.is_err() {
        // The agent may have refused us and closed before reading: its
        // refusal is waiting in the frames.
        return read_frames(frames).await;
    }
    tokio::select! {
        outcome = read_frames(frames) => outcome,
        escaped = forward_input(sink, stdin, interactive.then_some(resized)) => escaped,
        Some(()) = terminated.recv() => Ok(128 + 15),
        Some(()) = hung_up.recv() => Ok(128 + 1),
    }
}

/// Shows the session's output until it reports its status. On a terminal
/// the writes go straight to it: a hop through a thread per chunk would
/// cost more than the write. A pipe may stop draining, so there writes go
/// through tokio, and signals and `~.` still work meanwhile.
async fn read_frames(mut frames: Frames) -> Result<i32, RelayError> {
    let to_terminal = std::io::stdout().is_terminal();
    let (mut stdout, mut stderr) = (tokio::io::stdout(), tokio::io::stderr());
    loop {
        match frames.next().await.ok_or(RelayError::Closed)?? {
            AgentFrame::Output(data) if to_terminal => {
                let mut terminal = std::io::stdout().lock();
                terminal.write_all(&data)?;
                terminal.flush()?;
            }
            AgentFrame::Output(data) => {
                stdout.write_all(&data).await?;
                stdout.flush().await?;
            }
            AgentFrame::Stderr(data) => {
                stderr.write_all(&data).await?;
                stderr.flush().await?;
            }
            AgentFrame::Exit(code) => return Ok(code),
            AgentFrame::Error(message) => return Err(RelayError::Agent(sanitize(&message))),
        }
    }
}

/// Sends input and window sizes. Returns only when the user escapes; once
/// sending fails (the session ended), what happened is read from the frames.
async fn forward_input(mut sink: Sink, mut stdin: Option<&mut Input>, mut resized: Option<Signal>) -> Result<i32, RelayError> {
    let mut escape = resized.is_some().then(Escape::default);
    if stdin.is_none() && sink.send(ClientFrame::InputEof).await.is_err() {
        return std::future::pending().await;
    }
    loop {
        let frame = tokio::select! {
            chunk = next_input(&mut stdin) => match chunk {
                None => {
                    stdin = None;
                    ClientFrame::InputEof
                }
                Some(typed) => match escape.as_mut().map_or(Some(typed.to_vec()), |escape| escape.scan(&typed)) {
                    Some(send) => ClientFrame::Input(send.into()),
                    None => {
                        eprint!("\r\nnix-attach: left the session (~.)\r\n");
                        return Ok(ESCAPED);
                    }
                },
            },
            Some(()) = next_resize(&mut resized) => {
                let (rows, cols) = terminal::size();
                ClientFrame::Resize { rows, cols }
            }
        };
        if sink.send(frame).await.is_err() {
            return std::future::pending().await;
        }
    }
}

async fn next_input(stdin: &mut Option<&mut Input>) -> Option<bytes::Bytes> {
    match stdin {
        Some(input) => input.recv().await,
        None => std::future::pending().await,
    }
}

async fn next_resize(resized: &mut Option<Signal>) -> Option<()> {
    match resized {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}
