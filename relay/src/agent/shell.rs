//! An interactive session: a shell in a new PTY with the build's state,
//! relayed over the connection with its window size and exit status.

use super::{SessionContext, SessionError};
use crate::protocol::{AgentCodec, AgentFrame, ClientFrame};
use crate::pump;
use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use portable_pty::{native_pty_system, CommandBuilder, MasterPty, PtySize};
use std::time::Duration;
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

type Sink = SplitSink<Framed<UnixStream, AgentCodec>, AgentFrame>;
type Stream = SplitStream<Framed<UnixStream, AgentCodec>>;

/// How long output is still relayed after the shell exits, for what its
/// last jobs print.
const DRAIN_GRACE: Duration = Duration::from_millis(300);
/// Chunks in flight between the PTY and the connection: a slow client
/// stalls the shell instead of growing a buffer.
const IN_FLIGHT: usize = 4;

/// Runs a shell for one client until it exits or the client leaves.
pub async fn run(
    framed: Framed<UnixStream, AgentCodec>,
    rows: u16,
    cols: u16,
    term: Option<String>,
    context: &SessionContext,
    release: &CancellationToken,
) -> Result<(), SessionError> {
    let size = PtySize { rows, cols, pixel_width: 0, pixel_height: 0 };
    let pair = native_pty_system().openpty(size).map_err(SessionError::Pty)?;
    let mut child = pair.slave.spawn_command(shell_command(context, term)).map_err(SessionError::Pty)?;
    drop(pair.slave);
    let mut killer = child.clone_killer();
    let output = pump::from_reader(pair.master.try_clone_reader().map_err(SessionError::Pty)?, IN_FLIGHT);
    let input = pump::to_writer(pair.master.take_writer().map_err(SessionError::Pty)?, IN_FLIGHT);
    let (exit_tx, exit_rx) = oneshot::channel();
    std::thread::spawn(move || {
        let code = child.wait().map(|status| status.exit_code() as i32).unwrap_or(255);
        let _ = exit_tx.send(code);
    });
    let (mut sink, stream) = framed.split();
    let outcome = tokio::select! {
        result = forward_input(stream, input, pair.master) => result,
        result = forward_output(&mut sink, output, exit_rx) => result,
        () = release.cancelled() => {
            let _ = sink.send(AgentFrame::Error("the build was released".into())).await;
            Ok(())
        }
    };
    let _ = killer.kill();
    outcome
}

fn shell_command(context: &SessionContext, term: Option<String>) -> CommandBuilder {
    let mut command = CommandBuilder::new(&context.shell);
    command.arg("--rcfile");
    command.arg(&context.restore);
    command.arg("-i");
    command.cwd(&context.cwd);
    command.env("SHELL", &context.shell);
    command.env("TERM", term.unwrap_or_else(|| "xterm-256color".into()));
    command
}

/// Relays the client's keystrokes and window sizes until it leaves.
async fn forward_input(
    mut stream: Stream,
    input: mpsc::Sender<Bytes>,
    master: Box<dyn MasterPty + Send>,
) -> Result<(), SessionError> {
    let mut input = Some(input);
    while let Some(frame) = stream.next().await {
        match frame? {
            ClientFrame::Input(data) => {
                if let Some(sender) = &input {
                    let _ = sender.send(data).await;
                }
            }
            ClientFrame::InputEof => input = None,
            ClientFrame::Resize { rows, cols } => {
                let size = PtySize { rows, cols, pixel_width: 0, pixel_height: 0 };
                master.resize(size).map_err(SessionError::Pty)?;
            }
            ClientFrame::Hello(_) => return Err(SessionError::UnexpectedHello),
        }
    }
    Ok(())
}

/// Relays the shell's output, then its exit status.
async fn forward_output(
    sink: &mut Sink,
    mut output: mpsc::Receiver<Bytes>,
    exit: oneshot::Receiver<i32>,
) -> Result<(), SessionError> {
    let mut exit = exit;
    let mut code = None;
    let grace = tokio::time::sleep(Duration::MAX);
    tokio::pin!(grace);
    loop {
        tokio::select! {
            chunk = output.recv() => match chunk {
                Some(chunk) => {
                    // What else is ready goes out in the same write.
                    sink.feed(AgentFrame::Output(chunk)).await?;
                    while let Ok(more) = output.try_recv() {
                        sink.feed(AgentFrame::Output(more)).await?;
                    }
                    sink.flush().await?;
                }
                None => break,
            },
            status = &mut exit, if code.is_none() => {
                code = Some(status.unwrap_or(255));
                grace.as_mut().reset(tokio::time::Instant::now() + DRAIN_GRACE);
            }
            () = &mut grace => break,
        }
    }
    let code = match code {
        Some(code) => code,
        None => exit.await.unwrap_or(255),
    };
    sink.send(AgentFrame::Exit(code)).await?;
    Ok(())
}
