//! An interactive session: a shell in a PTY with the build's state, whose
//! master is handed to the client, and the shell's exit status.

use super::{SessionContext, SessionError};
use crate::handoff;
use crate::protocol::{AgentCodec, AgentFrame};
use futures_util::{SinkExt, StreamExt};
use nix::sys::termios::{tcgetattr, LocalFlags};
use portable_pty::{native_pty_system, ChildKiller, CommandBuilder, MasterPty, PtySize};
use std::os::fd::{BorrowedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::UnixStream;
use tokio::sync::oneshot;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

/// How long a new shell gets to put its prompt up before it is handed over
/// anyway, and how often it is looked at meanwhile.
const PROMPT_PATIENCE: Duration = Duration::from_secs(3);
const PROMPT_POLL: Duration = Duration::from_millis(1);

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
    fn spawn(context: &SessionContext, size: PtySize, term: String, with_path: Option<&str>) -> Result<Shell, SessionError> {
        // Until the PTY's descriptors are close-on-exec, no command may start.
        let _spawning = context.spawning.lock().unwrap();
        let pair = native_pty_system().openpty(size).map_err(SessionError::Pty)?;
        let mut command = shell_command(context, &term);
        if let Some(with_path) = with_path {
            command.env(super::restore::WITH_PATH, with_path);
        }
        let child = pair.slave.spawn_command(command).map_err(SessionError::Pty)?;
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

/// Starts a spare shell for the next client, off the runtime's thread, and
/// keeps it once its prompt is up.
pub fn prewarm(context: &Arc<SessionContext>, term: String) {
    let context = context.clone();
    tokio::spawn(async move {
        let starting = context.clone();
        let started = tokio::task::spawn_blocking(move || Shell::spawn(&starting, PtySize::default(), term, None)).await;
        if let Ok(Ok(shell)) = started {
            until_prompt(shell.master.as_raw_fd()).await;
            context.spare.put(shell);
        }
    });
}

/// Waits until the shell reads its terminal key by key, which bash's line
/// editor does once its prompt is up, or until [`PROMPT_PATIENCE`] passes
/// (a shell without line editing never does). Keys typed before would be
/// read as lines, and an end-of-input (`^D`) typed then turns into a NUL
/// by the time the line editor reads it.
async fn until_prompt(master: Option<RawFd>) {
    let Some(master) = master else { return };
    // SAFETY: the caller keeps the shell, and so its master, meanwhile.
    let master = unsafe { BorrowedFd::borrow_raw(master) };
    let deadline = tokio::time::Instant::now() + PROMPT_PATIENCE;
    while tokio::time::Instant::now() < deadline {
        match tcgetattr(master) {
            Ok(modes) if !modes.local_flags.contains(LocalFlags::ICANON) => return,
            Ok(_) => tokio::time::sleep(PROMPT_POLL).await,
            Err(_) => return,
        }
    }
}

/// Runs a shell for one client until it exits or the client leaves. The
/// client gets the PTY master and relays the terminal itself; the agent
/// keeps the shell and reports how it ended.
pub async fn run(
    framed: Framed<UnixStream, AgentCodec>,
    rows: u16,
    cols: u16,
    term: Option<String>,
    with_path: Option<String>,
    context: &Arc<SessionContext>,
    release: &CancellationToken,
) -> Result<(), SessionError> {
    let size = PtySize { rows, cols, pixel_width: 0, pixel_height: 0 };
    let term = term.unwrap_or_else(|| DEFAULT_TERM.into());
    // The spare started before any tool was there, and with no PATH of them.
    let shell = match &with_path {
        None => shell_for(context, size, &term),
        Some(with_path) => Shell::spawn(context, size, term.clone(), Some(with_path)),
    };
    let outcome = match shell {
        Ok(mut shell) => serve(framed, &mut shell, context, release).await,
        Err(err) => Err(err),
    };
    // The next client gets a spare that has read this session's history,
    // unless the build goes on to fail.
    context.spare.clear();
    if !release.is_cancelled() {
        prewarm(context, term);
    }
    outcome
}

/// The spare, fitted to the client's window, or else a new shell.
fn shell_for(context: &SessionContext, size: PtySize, term: &str) -> Result<Shell, SessionError> {
    match context.spare.take(term) {
        Some(shell) => {
            shell.master.resize(size).map_err(SessionError::Pty)?;
            Ok(shell)
        }
        None => Shell::spawn(context, size, term.to_owned(), None),
    }
}

/// Hands the terminal over once the shell's prompt is up, then waits for the shell's end, the client's
/// leaving (which ends the shell) or the release of the build.
async fn serve(
    framed: Framed<UnixStream, AgentCodec>,
    shell: &mut Shell,
    context: &SessionContext,
    release: &CancellationToken,
) -> Result<(), SessionError> {
    let master = shell.master.as_raw_fd().ok_or_else(|| SessionError::Pty(anyhow::anyhow!("the PTY has no descriptor")))?;
    until_prompt(Some(master)).await;
    handoff::send_terminal(framed.get_ref(), master).await.map_err(SessionError::Handoff)?;
    let (mut sink, mut stream) = framed.split();
    tokio::select! {
        status = &mut shell.exit => {
            sink.send(AgentFrame::Exit(status.unwrap_or(255))).await?;
        }
        () = async { while let Some(Ok(_)) = stream.next().await {} } => {}
        () = release.cancelled() => {
            let _ = sink.send(AgentFrame::Error(context.stopped_waiting())).await;
        }
    }
    Ok(())
}

fn shell_command(context: &SessionContext, term: &str) -> CommandBuilder {
    let mut command = CommandBuilder::new(&context.agent);
    command.args([super::isolate::SUBCOMMAND.as_ref(), "--".as_ref(), context.shell.as_os_str()]);
    command.arg("--rcfile");
    command.arg(&context.restore);
    command.arg("-i");
    command.cwd(&context.cwd);
    command.env("SHELL", &context.shell);
    command.env("TERM", term);
    command
}
