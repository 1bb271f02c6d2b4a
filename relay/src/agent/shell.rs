//! An interactive session: a shell in a new PTY with the build's state,
//! relayed over the connection with its window size and exit status.

use super::{SessionContext, SessionError};
use super::pty::AsyncMaster;
use crate::protocol::{AgentCodec, AgentFrame, ClientFrame, CHUNK};
use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use portable_pty::{native_pty_system, ChildKiller, CommandBuilder, MasterPty, PtySize};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::UnixStream;
use tokio::sync::oneshot;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

type Sink = SplitSink<Framed<UnixStream, AgentCodec>, AgentFrame>;
type Stream = SplitStream<Framed<UnixStream, AgentCodec>>;

/// How long output is still relayed after the shell exits, for what its
/// last jobs print.
const DRAIN_GRACE: Duration = Duration::from_millis(300);

/// The terminal type a shell is started with when no client has said.
pub const DEFAULT_TERM: &str = "xterm-256color";

/// A shell started in a PTY with the build's state, for one client.
pub struct Shell {
    master: Box<dyn MasterPty + Send>,
    killer: Box<dyn ChildKiller + Send + Sync>,
    exit: oneshot::Receiver<i32>,
    term: String,
}

impl Shell {
    fn spawn(context: &SessionContext, size: PtySize, term: String) -> Result<Shell, SessionError> {
        // Until the PTY's descriptors are close-on-exec, no command may start.
        let _spawning = context.spawning.lock().unwrap();
        let pair = native_pty_system().openpty(size).map_err(SessionError::Pty)?;
        let child = pair.slave.spawn_command(shell_command(context, &term)).map_err(SessionError::Pty)?;
        drop(pair.slave);
        let killer = child.clone_killer();
        Ok(Shell { master: pair.master, killer, exit: crate::pump::exit_code(child), term })
    }

    /// Whether the shell ended (its status received here or elsewhere).
    fn has_exited(&mut self) -> bool {
        !matches!(self.exit.try_recv(), Err(oneshot::error::TryRecvError::Empty))
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        // Once reaped, its pid may be another process's.
        if !self.has_exited() {
            let _ = self.killer.kill();
        }
    }
}

/// One shell kept started ahead of the next client (pre-warmed): restoring
/// the state is most of the time to a prompt, and the spare has done it, so
/// its banner and prompt wait in its PTY for whoever attaches.
#[derive(Default)]
pub struct Spare {
    slot: Mutex<Option<Shell>>,
    closed: AtomicBool,
}

impl Spare {
    /// The spare, if it runs and was started for terminal type `term`. A
    /// spare for another type is ended, so the next one fits this client.
    fn take(&self, term: &str) -> Option<Shell> {
        let mut shell = self.slot.lock().unwrap().take()?;
        (shell.term == term && !shell.has_exited()).then_some(shell)
    }

    /// Ends the spare, so that the next one is started afresh.
    fn clear(&self) {
        self.slot.lock().unwrap().take();
    }

    fn put(&self, shell: Shell) {
        let mut slot = self.slot.lock().unwrap();
        if slot.is_none() && !self.closed.load(Ordering::SeqCst) {
            *slot = Some(shell);
        }
    }

    /// Ends the spare and keeps any other from being kept.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.slot.lock().unwrap().take();
    }
}

/// Starts a spare shell for the next client, off the runtime's thread.
pub fn prewarm(context: &Arc<SessionContext>, term: String) {
    let context = context.clone();
    tokio::task::spawn_blocking(move || {
        if let Ok(shell) = Shell::spawn(&context, PtySize::default(), term) {
            context.spare.put(shell);
        }
    });
}

/// Runs a shell for one client until it exits or the client leaves.
pub async fn run(
    framed: Framed<UnixStream, AgentCodec>,
    rows: u16,
    cols: u16,
    term: Option<String>,
    context: &Arc<SessionContext>,
    release: &CancellationToken,
) -> Result<(), SessionError> {
    let size = PtySize { rows, cols, pixel_width: 0, pixel_height: 0 };
    let term = term.unwrap_or_else(|| DEFAULT_TERM.into());
    let mut shell = match context.spare.take(&term) {
        Some(shell) => {
            shell.master.resize(size).map_err(SessionError::Pty)?;
            shell
        }
        None => Shell::spawn(context, size, term.clone())?,
    };
    prewarm(context, term.clone());
    let terminal = AsyncMaster::new(shell.master.as_ref()).map_err(SessionError::Spawn)?;
    let Shell { master, exit, .. } = &mut shell;
    let (mut sink, stream) = framed.split();
    let outcome = tokio::select! {
        result = forward_input(stream, &terminal, master) => result,
        result = forward_output(&mut sink, &terminal, exit) => result,
        () = release.cancelled() => {
            let _ = sink.send(AgentFrame::Error("the build was released".into())).await;
            return Ok(());
        }
    };
    // The spare read the history before this session wrote to it.
    context.spare.clear();
    prewarm(context, term);
    outcome
}

fn shell_command(context: &SessionContext, term: &str) -> CommandBuilder {
    let mut command = CommandBuilder::new(&context.shell);
    command.arg("--rcfile");
    command.arg(&context.restore);
    command.arg("-i");
    command.cwd(&context.cwd);
    command.env("SHELL", &context.shell);
    command.env("TERM", term);
    command
}

/// Relays the client's keystrokes and window sizes until it leaves. A
/// shell that does not read its input stalls this, and so the client.
async fn forward_input(
    mut stream: Stream,
    terminal: &AsyncMaster,
    master: &mut Box<dyn MasterPty + Send>,
) -> Result<(), SessionError> {
    let mut input_open = true;
    while let Some(frame) = stream.next().await {
        match frame? {
            ClientFrame::Input(data) if input_open => {
                let _ = terminal.write_all(&data).await;
            }
            ClientFrame::Input(_) => {}
            ClientFrame::InputEof => {
                // A fresh line, then the terminal's end-of-file character.
                let _ = terminal.write_all(b"\n\x04").await;
                input_open = false;
            }
            ClientFrame::Resize { rows, cols } => {
                let size = PtySize { rows, cols, pixel_width: 0, pixel_height: 0 };
                master.resize(size).map_err(SessionError::Pty)?;
            }
            ClientFrame::Hello(_) => return Err(SessionError::UnexpectedHello),
        }
    }
    Ok(())
}

/// Relays the shell's output, then its exit status. What the terminal has
/// ready goes out in one write.
async fn forward_output(
    sink: &mut Sink,
    terminal: &AsyncMaster,
    exit: &mut oneshot::Receiver<i32>,
) -> Result<(), SessionError> {
    let mut code = None;
    let mut buffer = vec![0u8; CHUNK];
    let grace = tokio::time::sleep(Duration::MAX);
    tokio::pin!(grace);
    loop {
        tokio::select! {
            read = terminal.read(&mut buffer) => match read {
                Ok(n @ 1..) => {
                    sink.feed(AgentFrame::Output(Bytes::copy_from_slice(&buffer[..n]))).await?;
                    while let Some(n) = terminal.try_read(&mut buffer) {
                        sink.feed(AgentFrame::Output(Bytes::copy_from_slice(&buffer[..n]))).await?;
                    }
                    sink.flush().await?;
                }
                _ => break,
            },
            status = &mut *exit, if code.is_none() => {
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
