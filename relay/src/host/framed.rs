//! `nix-attach attach --framed`: the builder's half of `attach --via`
//! without a PTY of sshd's (`ssh -T`). It speaks frames over its stdin and
//! stdout ([`crate::protocol`]'s codec, nothing of its own): from the
//! person's machine come the keys ([`ClientFrame::Input`]), the window's
//! size ([`ClientFrame::Resize`], the first frame) and the end of input;
//! back go [`AgentFrame::Relaying`] first, then the build's terminal output
//! and the shell's status. Between the two it relays to the build's PTY
//! master, as a local attach does, so a keystroke crosses one PTY on the
//! builder, the build's own.
//!
//! It waits in `poll` and in blocking reads, so an idle session costs no
//! CPU.
//!
//! The person's half ([`attach_via`]) runs that over `ssh -T` and relays
//! the local terminal to ssh's pipes as a local attach relays it to a PTY
//! ([`super::pty_relay`]: raw mode, `~.`, the output filter; the frames are
//! [`BuildTerminal::Framed`]'s): keys become input frames, new window sizes
//! resize frames; the builder's frames are read strictly, and only
//! terminal output and a status come through. A builder whose nix-attach
//! does not greet first speaks no framed `--via` (an older one): the caller
//! then attaches through `ssh -t`, as before.
//!
//! `exec --via` at a terminal goes the same way: `exec --framed` on the
//! builder passes the agent's frames for the command on, and they are read
//! here as a local exec reads them ([`super::relay::follow`]).

use super::build_terminal::BuildTerminal;
use super::relay::RelayError;
use crate::protocol::{read_frame, write_frame, AgentFrame, ClientCodec, ClientFrame, Hello, Request, MAX_FRAME};
use crate::terminal_filter::TerminalFilter;
use bytes::BytesMut;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::codec::Decoder;

/// The framed `--via` this relay speaks.
pub const VERSION: u32 = 1;
/// How long the output left once the shell ends may take to come.
const DRAIN_GRACE: Duration = Duration::from_millis(300);

/// Greets the other side, reads the window's size, opens the session on
/// `reach()`'s connection and relays until the shell ends; returns its
/// status. Any failure is said in an [`AgentFrame::Error`] before the
/// status frame.
pub fn attach(reach: impl FnOnce() -> anyhow::Result<(UnixStream, Vec<String>)>, term: Option<String>) -> anyhow::Result<i32> {
    let mut stdout = frames_out()?;
    write_frame(&mut stdout, &AgentFrame::Relaying(VERSION))?;
    stdout.flush()?;
    let outcome = (|| {
        // Through std's one stdin buffer, which the input thread reads on.
        let first = read_frame::<ClientFrame>(&mut std::io::stdin().lock())?;
        let (rows, cols) = match first {
            Some(ClientFrame::Resize { rows, cols }) => (rows, cols),
            _ => anyhow::bail!("the framed relay's first frame must be the window's size"),
        };
        let (connection, path) = reach()?;
        let (master, frames) = super::pty_relay::open_session(&connection, Request::Attach { rows, cols, term, path })?;
        relay(master, connection, frames)
    })();
    match outcome {
        Ok(code) => {
            write_frame(&mut stdout, &AgentFrame::Exit(code))?;
            stdout.flush()?;
            Ok(code)
        }
        Err(err) => Ok(say_failure(&mut stdout, &err)),
    }
}

/// `nix-attach exec --framed`: the builder's half of `exec --via` over
/// `ssh -T`. Greets, asks the agent `reach()` reaches to run `argv` with no
/// input (as a local exec at a terminal does), and passes the agent's
/// frames on unchanged: the person's side reads them strictly, as a local
/// exec reads an agent's ([`super::relay::follow`]). The session ends with
/// the agent's, or once the person's side is gone (its input ends), which
/// ends the command as a local exec's end does.
pub fn exec(reach: impl FnOnce() -> anyhow::Result<(UnixStream, Vec<String>)>, argv: Vec<String>) -> anyhow::Result<i32> {
    let mut stdout = frames_out()?;
    write_frame(&mut stdout, &AgentFrame::Relaying(VERSION))?;
    let outcome = (|| {
        let (connection, path) = reach()?;
        let hello = Hello { version: crate::protocol::VERSION, request: Request::Exec { argv, path } };
        write_frame(&mut &connection, &ClientFrame::Hello(hello))?;
        write_frame(&mut &connection, &ClientFrame::InputEof)?;
        std::thread::spawn(|| {
            let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
            std::process::exit(super::ERROR_EXIT);
        });
        pass_on(&connection, &mut stdout)?;
        Ok(0)
    })();
    outcome.or_else(|err: anyhow::Error| Ok(say_failure(&mut stdout, &err)))
}

/// Passes what the agent sends on to stdout, a read and a write at a time,
/// until it closes the connection. Not `std::io::copy`: it splices a
/// socket into a pipe, and so the command's first output never reached
/// the person's side in about half the spec's runs; read and write, it
/// always did.
fn pass_on(connection: &UnixStream, stdout: &mut std::fs::File) -> std::io::Result<()> {
    let mut buffer = vec![0u8; crate::protocol::CHUNK];
    loop {
        match (&*connection).read(&mut buffer) {
            Ok(0) => return Ok(()),
            Ok(n) => stdout.write_all(&buffer[..n])?,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
}

/// Tells the person's side what failed, and a status to end on.
fn say_failure(stdout: &mut std::fs::File, err: &anyhow::Error) -> i32 {
    let _ = write_frame(stdout, &AgentFrame::Error(format!("{err:#}")));
    let _ = write_frame(stdout, &AgentFrame::Exit(super::ERROR_EXIT));
    let _ = stdout.flush();
    super::ERROR_EXIT
}

/// Stdout for frames, unbuffered: a frame leaves in one write, and ssh
/// passes it on in one piece.
fn frames_out() -> std::io::Result<std::fs::File> {
    Ok(std::fs::File::from(std::io::stdout().as_fd().try_clone_to_owned()?))
}

/// Relays until the shell ends; returns its status.
fn relay(master: OwnedFd, connection: UnixStream, mut frames: BytesMut) -> anyhow::Result<i32> {
    let writer = master.try_clone()?;
    // The keys and sizes come in a thread of their own, blocked in read.
    std::thread::spawn(move || forward_input(writer));
    let mut master = std::fs::File::from(master);
    let mut codec = ClientCodec::default();
    let mut stdout = frames_out()?;
    let mut buffer = vec![0u8; crate::protocol::CHUNK];
    let (mut ended, mut master_open, mut connection_open): (Option<(i32, Instant)>, bool, bool) = (None, true, true);
    loop {
        while let Some(frame) = codec.decode(&mut frames)? {
            match frame {
                AgentFrame::Exit(code) => ended = Some((code, Instant::now() + DRAIN_GRACE)),
                AgentFrame::Error(message) => anyhow::bail!(RelayError::Agent(crate::sanitize::sanitize(&message))),
                _ => anyhow::bail!(RelayError::Unexpected("output")),
            }
        }
        // Once the shell's status is in, what it printed last may still
        // come, for a moment; once the terminal is closed, only the status.
        match ended {
            Some((code, _)) if !master_open => return Ok(code),
            Some((code, until)) if Instant::now() >= until => return Ok(code),
            _ => {}
        }
        let wait = match ended {
            Some((_, until)) => PollTimeout::try_from(until.saturating_duration_since(Instant::now())).unwrap_or(PollTimeout::ZERO),
            None => PollTimeout::NONE,
        };
        let master_events = if master_open { PollFlags::POLLIN } else { PollFlags::empty() };
        let connection_events = if connection_open { PollFlags::POLLIN } else { PollFlags::empty() };
        let mut fds = [PollFd::new(master.as_fd(), master_events), PollFd::new(connection.as_fd(), connection_events)];
        poll(&mut fds, wait)?;
        let (master_ready, connection_ready) = (fds[0].any().unwrap_or(false), fds[1].any().unwrap_or(false));
        if master_ready && master_open {
            match master.read(&mut buffer) {
                // The shell's side is closed: its status comes next.
                Ok(0) | Err(_) => master_open = false,
                Ok(n) => {
                    // What the shell printed meanwhile goes in the same
                    // frame: one write through ssh, not one per read.
                    let mut filled = n;
                    while filled < buffer.len() && ready_now(&master) {
                        match master.read(&mut buffer[filled..]) {
                            Ok(more @ 1..) => filled += more,
                            _ => break,
                        }
                    }
                    write_frame(&mut stdout, &AgentFrame::Output(bytes::Bytes::copy_from_slice(&buffer[..filled])))?;
                    stdout.flush()?;
                }
            }
        }
        if connection_ready && connection_open {
            let mut chunk = [0u8; 4096];
            match (&connection).read(&mut chunk) {
                Ok(0) | Err(_) if ended.is_none() => anyhow::bail!(RelayError::Closed),
                Ok(0) | Err(_) => connection_open = false,
                Ok(n) => frames.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

/// Whether `fd` has something to read at once.
fn ready_now(fd: &impl AsFd) -> bool {
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    poll(&mut fds, PollTimeout::ZERO).is_ok_and(|ready| ready > 0)
}

/// Applies the other side's frames to the build's terminal until its input
/// ends: keys are written to the PTY, sizes set on it. The end of input
/// (the person gone) ends the relay, and so the session.
fn forward_input(master: OwnedFd) {
    let mut stdin = std::io::stdin().lock();
    let mut master = std::fs::File::from(master);
    loop {
        match read_frame::<ClientFrame>(&mut stdin) {
            Ok(Some(ClientFrame::Input(data))) if data.len() < MAX_FRAME => {
                if master.write_all(&data).is_err() {
                    break;
                }
            }
            Ok(Some(ClientFrame::Resize { rows, cols })) => {
                let size = rustix::termios::Winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
                let _ = rustix::termios::tcsetwinsize(&master, size);
            }
            _ => break,
        }
    }
    std::process::exit(super::pty_relay::ESCAPED);
}

/// ssh, started with a builder's framed relay at its other end.
enum Started {
    /// The relay greeted. What ssh says is shown from now on.
    Greeted(Greeted),
    /// The builder's nix-attach refused `--framed`: an older one.
    Older,
    /// ssh or the builder failed: what they said is shown; ssh's status.
    Failed(i32),
}

/// ssh, and its pipes to the builder's framed relay.
struct Greeted {
    child: Child,
    to_remote: ChildStdin,
    from_remote: ChildStdout,
}

impl Started {
    /// What `attach_via` and `exec_via` return where no relay greeted:
    /// `None` for an older nix-attach, else ssh's status.
    fn without_relay(&self) -> Option<i32> {
        match self {
            Started::Failed(code) => Some(*code),
            Started::Older | Started::Greeted(_) => None,
        }
    }
}

/// Runs `ssh` and waits for the framed relay's greeting. What ssh says is
/// filtered unless `unfiltered`.
fn start(mut ssh: Command, unfiltered: bool) -> anyhow::Result<Started> {
    let mut child = ssh.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let (to_remote, mut from_remote) = (child.stdin.take().expect("piped"), child.stdout.take().expect("piped"));
    let said = Arc::new(Mutex::new(Said::new(unfiltered)));
    let stderr_thread = {
        let (stderr, said) = (child.stderr.take().expect("piped"), said.clone());
        std::thread::spawn(move || pass_stderr(stderr, &said))
    };
    let greeting = read_frame::<AgentFrame>(&mut from_remote);
    if !matches!(greeting, Ok(Some(AgentFrame::Relaying(VERSION)))) {
        // Once the other end closed, ssh ends with the remote command's
        // status; it is cut short only if it does not end soon.
        let status = match greeting {
            Ok(None) => wait_a_while(&mut child),
            _ => None,
        };
        end(&mut child);
        let _ = stderr_thread.join();
        let mut said = said.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let kept = std::mem::take(&mut said.kept);
        // An older nix-attach refuses the flag, as clap refuses any it
        // does not know; anything else (ssh's failure, no nix-attach
        // there) is told as it is, and the status passed on.
        if String::from_utf8_lossy(&kept).contains("--framed") {
            return Ok(Started::Older);
        }
        said.say(&kept);
        return Ok(Started::Failed(status.and_then(|status| status.code()).unwrap_or(super::ERROR_EXIT)));
    }
    said.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).show();
    Ok(Started::Greeted(Greeted { child, to_remote, from_remote }))
}

/// `attach --via` at a terminal over `ssh -T`: `ssh` runs `attach
/// --framed` on the builder. Returns the session's status, or `None` where
/// the builder's nix-attach speaks no framed `--via`.
pub fn attach_via(ssh: Command, unfiltered: bool) -> anyhow::Result<Option<i32>> {
    // Before any thread starts: a signal (a new window size) must wait for
    // the relay, not reach a thread that ignores it.
    super::pty_relay::block_relay_signals()?;
    let Greeted { mut child, mut to_remote, from_remote } = match start(ssh, unfiltered)? {
        Started::Greeted(greeted) => greeted,
        not => {
            // No relay here: the signals are the process's again.
            super::pty_relay::unblock_relay_signals()?;
            return Ok(not.without_relay());
        }
    };
    let (rows, cols) = super::terminal::size();
    write_frame(&mut to_remote, &ClientFrame::Resize { rows, cols })?;
    let build = BuildTerminal::framed(OwnedFd::from(to_remote), OwnedFd::from(from_remote));
    let filter = (!unfiltered).then(crate::terminal_filter::TerminalFilter::default);
    let status = super::pty_relay::relay(build, BytesMut::new(), true, filter);
    end(&mut child);
    Ok(Some(status?))
}

/// `exec --via` at a terminal over `ssh -T`: `ssh` runs `exec --framed` on
/// the builder, and the agent's frames it passes on are read here as a
/// local exec reads them: strictly, output through the filter unless
/// `unfiltered`, then the status. Returns that, or `None` where the
/// builder's nix-attach speaks no framed `--via`.
pub fn exec_via(ssh: Command, unfiltered: bool) -> anyhow::Result<Option<i32>> {
    let Greeted { mut child, to_remote, from_remote } = match start(ssh, unfiltered)? {
        Started::Greeted(greeted) => greeted,
        not => return Ok(not.without_relay()),
    };
    let status = crate::runtime::run(async move {
        let from_remote = tokio::net::unix::pipe::Receiver::from_owned_fd(OwnedFd::from(from_remote)).map_err(RelayError::Connection)?;
        super::relay::follow(from_remote, !unfiltered).await
    });
    // Its end of input tells the builder's relay that the session is over.
    drop(to_remote);
    end(&mut child);
    Ok(Some(status??))
}

/// What ssh and the builder said on stderr: kept until the relay greets
/// (it may be an older nix-attach refusing `--framed`), shown from then on,
/// through the filter (the builder writes there as it likes), unless the
/// person allowed clipboard and queries.
struct Said {
    shown: bool,
    kept: Vec<u8>,
    filter: Option<TerminalFilter>,
}

impl Said {
    fn new(unfiltered: bool) -> Said {
        Said { shown: false, kept: Vec::new(), filter: (!unfiltered).then(TerminalFilter::default) }
    }

    /// Shows what was kept, and whatever comes from now on.
    fn show(&mut self) {
        self.shown = true;
        let kept = std::mem::take(&mut self.kept);
        self.say(&kept);
    }

    /// Writes `bytes` to stderr, through the filter.
    fn say(&mut self, bytes: &[u8]) {
        let mut shown = Vec::with_capacity(bytes.len());
        crate::terminal_filter::pass(self.filter.as_mut(), bytes, &mut shown);
        let _ = std::io::stderr().write_all(&shown);
    }
}

/// Passes ssh's stderr on, or keeps it, as [`Said`] says; at most 64 KiB
/// is kept.
fn pass_stderr(mut stderr: std::process::ChildStderr, said: &Mutex<Said>) {
    let mut buffer = [0u8; 4096];
    while let Ok(n @ 1..) = stderr.read(&mut buffer) {
        let mut said = said.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if said.shown {
            said.say(&buffer[..n]);
        } else if said.kept.len() < 64 * 1024 {
            said.kept.extend_from_slice(&buffer[..n]);
        }
    }
}

/// How long ssh may take to end once the other end closed.
const SSH_END_PATIENCE: Duration = Duration::from_secs(5);

/// ssh's status, if it ends within [`SSH_END_PATIENCE`].
fn wait_a_while(child: &mut Child) -> Option<std::process::ExitStatus> {
    let until = Instant::now() + SSH_END_PATIENCE;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(10)),
            _ => return None,
        }
    }
}

/// Ends ssh, if it still runs, and reaps it.
fn end(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}
