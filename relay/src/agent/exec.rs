//! A command session: one command run inside the restored shell, without a
//! PTY, with stdout and stderr kept apart and the exit status returned.

use super::restore::quote;
use super::{SessionContext, SessionError};
use crate::protocol::{AgentCodec, AgentFrame, ClientFrame, CHUNK};
use crate::pump;
use bytes::BytesMut;
use futures_util::stream::SplitStream;
use futures_util::{SinkExt, StreamExt};
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use tokio::process::{ChildStdin, Command};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

/// Runs `argv` in the restored shell for one client.
pub async fn run(
    framed: Framed<UnixStream, AgentCodec>,
    argv: Vec<String>,
    with_path: Option<String>,
    context: &SessionContext,
    release: &CancellationToken,
) -> Result<(), SessionError> {
    let (mut sink, stream) = framed.split();
    if argv.is_empty() {
        sink.send(AgentFrame::Error("exec needs a command".into())).await?;
        return Ok(());
    }
    let mut command = command(context, &argv);
    if let Some(with_path) = with_path {
        command.env(super::restore::WITH_PATH, with_path);
    }
    let spawned = {
        let _spawning = context.spawning.lock().unwrap();
        command.spawn()
    };
    let mut child = spawned.map_err(SessionError::Spawn)?;
    let _group = child.id().map(ProcessGroup);
    let stdin = child.stdin.take();
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let relayed = async {
        let mut out = BytesMut::with_capacity(CHUNK);
        let mut err = BytesMut::with_capacity(CHUNK);
        while stdout.is_some() || stderr.is_some() {
            tokio::select! {
                chunk = pump::read_some(&mut stdout, &mut out) => {
                    if let Some(chunk) = chunk { sink.send(AgentFrame::Output(chunk)).await? }
                }
                chunk = pump::read_some(&mut stderr, &mut err) => {
                    if let Some(chunk) = chunk { sink.send(AgentFrame::Stderr(chunk)).await? }
                }
            }
        }
        let status = child.wait().await.map_err(SessionError::Spawn)?;
        let code = status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
        sink.send(AgentFrame::Exit(code)).await?;
        Ok::<(), SessionError>(())
    };
    tokio::select! {
        result = relayed => result,
        result = forward_stdin(stream, stdin) => result,
        () = release.cancelled() => Ok(()),
    }
}

/// `argv` run in the restored shell, in namespaces of its own, with its
/// three standard streams piped.
pub(super) fn command(context: &SessionContext, argv: &[String]) -> Command {
    let script = format!("source {}; \"$@\"", quote(&context.restore.to_string_lossy()));
    let mut command = Command::new(&context.agent);
    command
        .args([super::isolate::SUBCOMMAND.as_ref(), "--".as_ref(), context.shell.as_os_str()])
        .arg("-c")
        .arg(script)
        .arg("nix-attach")
        .args(argv)
        .current_dir(&context.cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    command
}

/// The command's process group, killed whole when the session ends, so
/// that nothing it started outlives the session.
struct ProcessGroup(u32);

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(self.0 as i32), nix::sys::signal::Signal::SIGKILL);
    }
}

/// Relays the client's stdin to the command until the client leaves. A
/// client that leaves ends the command.
async fn forward_stdin(mut stream: SplitStream<Framed<UnixStream, AgentCodec>>, mut stdin: Option<ChildStdin>) -> Result<(), SessionError> {
    while let Some(frame) = stream.next().await {
        match frame? {
            ClientFrame::Input(data) => {
                if let Some(pipe) = stdin.as_mut() {
                    if pipe.write_all(&data).await.is_err() {
                        stdin = None;
                    }
                }
            }
            ClientFrame::InputEof => stdin = None,
            // A command's pipes have no size.
            ClientFrame::Resize { .. } => {}
            ClientFrame::Hello(_) => return Err(SessionError::UnexpectedHello),
        }
    }
    Ok(())
}
