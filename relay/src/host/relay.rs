//! Relays the user's terminal, or stdin and stdout, to a session until the
//! agent reports how it ended.

use super::input::Input;
use super::terminal;
use crate::protocol::{AgentFrame, ClientCodec, ClientFrame, Hello, ProtocolError, Request, VERSION};
use crate::sanitize::sanitize;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::codec::Framed;

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

/// How the user's side takes part in a session.
#[derive(Debug, Clone, Copy)]
pub struct Interaction {
    /// Send window size changes.
    pub follow_resize: bool,
}

/// Sends `request`, relays until the session ends and returns its status.
/// `stdin`, when given, is sent to the session.
pub async fn relay(stream: UnixStream, request: Request, stdin: Option<&mut Input>, how: Interaction) -> Result<i32, RelayError> {
    let (mut sink, mut frames) = Framed::new(stream, ClientCodec::default()).split();
    sink.send(ClientFrame::Hello(Hello { version: VERSION, request })).await?;
    // Sending may fail once the session has ended and the agent closed the
    // connection; what happened is then read from the frames, so failed
    // sends only stop further input.
    let mut stdin = stdin;
    if stdin.is_none() {
        let _ = sink.send(ClientFrame::InputEof).await;
    }
    let mut resized = signal(SignalKind::window_change())?;
    let mut terminated = signal(SignalKind::terminate())?;
    let mut hung_up = signal(SignalKind::hangup())?;
    let mut stdout = tokio::io::stdout();
    let mut stderr = tokio::io::stderr();
    loop {
        tokio::select! {
            frame = frames.next() => match frame.ok_or(RelayError::Closed)?? {
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
            },
            chunk = recv(&mut stdin) => {
                let frame = chunk.map_or(ClientFrame::InputEof, ClientFrame::Input);
                if frame == ClientFrame::InputEof || sink.send(frame).await.is_err() {
                    let _ = sink.send(ClientFrame::InputEof).await;
                    stdin = None;
                }
            }
            Some(()) = resized.recv(), if how.follow_resize => {
                let (rows, cols) = terminal::size();
                let _ = sink.send(ClientFrame::Resize { rows, cols }).await;
            }
            Some(()) = terminated.recv() => return Ok(128 + 15),
            Some(()) = hung_up.recv() => return Ok(128 + 1),
        }
    }
}

async fn recv(stdin: &mut Option<&mut Input>) -> Option<Bytes> {
    match stdin {
        Some(input) => input.recv().await,
        None => std::future::pending().await,
    }
}

/// Asks the agent to let the build fail now, and waits for its answer.
pub async fn release(stream: UnixStream) -> Result<i32, RelayError> {
    let (mut sink, mut frames) = Framed::new(stream, ClientCodec::default()).split();
    sink.send(ClientFrame::Hello(Hello { version: VERSION, request: Request::Release })).await?;
    match frames.next().await.ok_or(RelayError::Closed)?? {
        AgentFrame::Exit(code) => Ok(code),
        AgentFrame::Error(message) => Err(RelayError::Agent(sanitize(&message))),
        AgentFrame::Output(_) | AgentFrame::Stderr(_) => Err(RelayError::Closed),
    }
}
