//! Relays the user's terminal (or stdin and stdout) straight to the build's
//! PTY, once the agent has handed its master over ([`crate::handoff`]). A
//! keystroke crosses this one process and no socket; the agent's connection
//! only brings how the shell ended.
//!
//! One thread polls every end: stdin, the master, stdout while output waits
//! for it, the connection and the signals (a signalfd). The master and a
//! terminal or pipe on stdout are used non-blocking, so `~.`, a signal or
//! the session's end gets through whoever stops reading. The agent shares
//! the master's open file and could make it blocking again: every call on
//! it runs under an alarm, and one the alarm has to cut ends the session.

use super::escape::Escape;
use super::relay::RelayError;
use super::terminal::{self, RawMode};
use super::terminal_filter::TerminalFilter;
use crate::handoff;
use crate::protocol::{AgentFrame, ClientCodec, ClientFrame, Hello, ProtocolError, Request, VERSION};
use crate::sanitize::sanitize;
use bytes::BytesMut;
use nix::errno::Errno;
use nix::fcntl::{fcntl, open, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::stat::{fstat, Mode, SFlag};
use nix::unistd::alarm;
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};
use tokio_util::codec::{Decoder, Encoder};

/// The status when the user leaves with `~.`, as ssh's.
pub const ESCAPED: i32 = 255;
/// How long the slave side may stay open after the shell exits, for what
/// its last jobs print.
const DRAIN_GRACE: Duration = Duration::from_millis(300);
/// How long the output left at the end may wait for a stalled stdout.
const FLUSH_PATIENCE: Duration = Duration::from_secs(10);
/// How long the agent has to answer an attach.
const ANSWER_PATIENCE: Duration = Duration::from_secs(10);
/// The seconds a call on the master may block before it is cut.
const MASTER_PATIENCE_SECS: u32 = 2;
/// The most read from one end at a time.
const READ_SIZE: usize = 64 * 1024;
/// Reads of a burst of output before the other ends are looked at again.
const BURST: usize = 16;

/// Sends the hello and receives the build's terminal: its PTY master and
/// whatever the agent sent past it.
pub fn open_session(connection: &UnixStream, request: Request) -> Result<(OwnedFd, BytesMut), RelayError> {
    let mut hello = BytesMut::new();
    ClientCodec::default().encode(ClientFrame::Hello(Hello { version: VERSION, request }), &mut hello)?;
    // An agent that refuses us may close before reading the hello; its
    // refusal waits in the answer either way.
    let _ = (&*connection).write_all(&hello);
    connection.set_read_timeout(Some(ANSWER_PATIENCE)).map_err(RelayError::Connection)?;
    let answer = match handoff::receive_answer(connection) {
        Err(ProtocolError::Io(err)) if err.kind() == std::io::ErrorKind::WouldBlock => return Err(RelayError::NoAnswer),
        answer => answer?.ok_or(RelayError::Closed)?,
    };
    connection.set_read_timeout(None).map_err(RelayError::Connection)?;
    match answer.frame {
        AgentFrame::Terminal => {
            let master = answer.descriptor.ok_or(RelayError::NoTerminal)?;
            if !handoff::is_pty_master(&master) {
                return Err(RelayError::NotAMaster);
            }
            Ok((master, answer.rest))
        }
        AgentFrame::Error(message) => Err(RelayError::Agent(sanitize(&message))),
        AgentFrame::Exit(_) => Err(RelayError::Unexpected("an exit status")),
        AgentFrame::Output(_) | AgentFrame::Stderr(_) => Err(RelayError::Unexpected("output")),
        AgentFrame::Relaying(_) => Err(RelayError::Unexpected("a relay's greeting")),
    }
}

/// Relays until the shell ends, the user types `~.` (when `interactive`:
/// the terminal is then raw and its size followed) or a signal comes;
/// returns the shell's status, [`ESCAPED`], or 128 plus the signal. The
/// shell's output passes `filter`, when given, on its way to the user.
/// `resize`, where given, takes the window's new sizes in the terminal's
/// place (a framed `--via`, whose terminal is the builder's).
pub fn relay(
    master: OwnedFd,
    connection: UnixStream,
    frames: BytesMut,
    interactive: bool,
    filter: Option<TerminalFilter>,
    resize: Option<Box<dyn FnMut(u16, u16)>>,
) -> Result<i32, RelayError> {
    let signals = watch_signals().map_err(|errno| RelayError::Signals(errno.into()))?;
    cut_blocked_calls_on_alarm().map_err(|errno| RelayError::Signals(errno.into()))?;
    set_nonblocking(master.as_fd()).map_err(RelayError::BuildTerminal)?;
    connection.set_nonblocking(true).map_err(RelayError::Connection)?;
    let _raw = interactive.then(RawMode::enter).flatten();
    let mut session = Session {
        master,
        connection,
        frames,
        codec: ClientCodec::default(),
        stdin: std::io::stdin(),
        output: open_output().map_err(RelayError::OpenStdout)?,
        signals,
        escape: interactive.then(Escape::default),
        filter,
        resize,
        stdin_open: true,
        master_open: true,
        to_shell: Vec::new(),
        to_user: Vec::new(),
        ended: None,
    };
    session.run()
}

/// The signals the relay answers (window size; termination, hang-up and
/// interruption, which end it with the terminal restored), taken from a
/// signalfd for the rest of the process.
fn watch_signals() -> nix::Result<SignalFd> {
    let mask = relay_signals();
    mask.thread_block()?;
    SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
}

/// The signals the relay takes from its signalfd.
fn relay_signals() -> SigSet {
    let mut mask = SigSet::empty();
    for signal in [Signal::SIGWINCH, Signal::SIGTERM, Signal::SIGHUP, Signal::SIGINT, Signal::SIGQUIT] {
        mask.add(signal);
    }
    mask
}

/// Blocks the relay's signals in this thread and the threads it starts
/// from now on, so that they wait for the relay's signalfd rather than
/// reach a thread that ignores them. For a caller that starts threads
/// before it relays.
pub fn block_relay_signals() -> nix::Result<()> {
    relay_signals().thread_block()
}

extern "C" fn interrupt_only(_: nix::libc::c_int) {}

/// Makes SIGALRM interrupt a blocked call (no `SA_RESTART`) and do nothing
/// else.
fn cut_blocked_calls_on_alarm() -> nix::Result<()> {
    let action = SigAction::new(SigHandler::Handler(interrupt_only), SaFlags::empty(), SigSet::empty());
    // SAFETY: the handler does nothing, so it is async-signal-safe.
    unsafe { sigaction(Signal::SIGALRM, &action) }.map(drop)
}

/// Runs one call on the master under the alarm; a call the alarm cut (the
/// master was made blocking behind our back) is an error.
fn on_master<T>(call: impl FnOnce() -> nix::Result<T>) -> Result<nix::Result<T>, RelayError> {
    alarm::set(MASTER_PATIENCE_SECS);
    let result = call();
    alarm::cancel();
    match result {
        Err(Errno::EINTR) => Err(RelayError::Stalled),
        other => Ok(other),
    }
}

fn set_nonblocking(fd: BorrowedFd) -> nix::Result<()> {
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK)).map(drop)
}

/// Where output goes: stdout opened again, non-blocking, when it is a
/// terminal or a pipe (a description of our own, so the shell that started
/// us keeps its blocking one); stdout itself otherwise (a file, or a socket
/// the user gave us).
fn open_output() -> nix::Result<OwnedFd> {
    let stdout = std::io::stdout();
    let kind = SFlag::from_bits_truncate(fstat(stdout.as_fd())?.st_mode) & SFlag::S_IFMT;
    if kind == SFlag::S_IFCHR || kind == SFlag::S_IFIFO {
        let flags = OFlag::O_WRONLY | OFlag::O_NOCTTY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
        if let Ok(fd) = open("/proc/self/fd/1", flags, Mode::empty()) {
            return Ok(fd);
        }
    }
    nix::unistd::dup(stdout.as_fd())
}

/// The ends the relay polls.
#[derive(Clone, Copy)]
enum End {
    Stdin,
    Master,
    Output,
    Connection,
    Signals,
}

struct Session {
    master: OwnedFd,
    connection: UnixStream,
    frames: BytesMut,
    codec: ClientCodec,
    stdin: std::io::Stdin,
    output: OwnedFd,
    signals: SignalFd,
    escape: Option<Escape>,
    filter: Option<TerminalFilter>,
    resize: Option<Box<dyn FnMut(u16, u16)>>,
    stdin_open: bool,
    master_open: bool,
    /// Typed, not yet taken by the build's terminal.
    to_shell: Vec<u8>,
    /// Printed, not yet taken by stdout.
    to_user: Vec<u8>,
    /// The shell's status, and until when its last output is still shown.
    ended: Option<(i32, Instant)>,
}

impl Session {
    fn run(&mut self) -> Result<i32, RelayError> {
        let mut buffer = vec![0u8; READ_SIZE];
        self.read_frames()?;
        loop {
            if let Some(code) = self.finished() {
                for _ in 0..BURST {
                    if !self.master_open || !self.to_user.is_empty() || !self.read_master(&mut buffer)? {
                        break;
                    }
                }
                self.flush_user()?;
                return Ok(code);
            }
            for (end, events) in self.wait()? {
                if let Some(code) = self.serve(end, events, &mut buffer)? {
                    return Ok(code);
                }
            }
        }
    }

    /// The ends to watch now, and for what.
    fn interests(&self) -> Vec<(End, BorrowedFd<'_>, PollFlags)> {
        let mut ends = vec![(End::Signals, self.signals.as_fd(), PollFlags::POLLIN)];
        if self.ended.is_none() {
            ends.push((End::Connection, self.connection.as_fd(), PollFlags::POLLIN));
            if self.stdin_open && self.to_shell.is_empty() {
                ends.push((End::Stdin, self.stdin.as_fd(), PollFlags::POLLIN));
            }
        }
        let mut master = PollFlags::empty();
        if self.master_open && self.to_user.is_empty() {
            master |= PollFlags::POLLIN;
        }
        if self.master_open && !self.to_shell.is_empty() {
            master |= PollFlags::POLLOUT;
        }
        if !master.is_empty() {
            ends.push((End::Master, self.master.as_fd(), master));
        }
        if !self.to_user.is_empty() {
            ends.push((End::Output, self.output.as_fd(), PollFlags::POLLOUT));
        }
        ends
    }

    /// Waits until some end is ready (or the drain grace is over).
    fn wait(&self) -> Result<Vec<(End, PollFlags)>, RelayError> {
        let interests = self.interests();
        let mut fds: Vec<PollFd> = interests.iter().map(|(_, fd, events)| PollFd::new(*fd, *events)).collect();
        let timeout = match self.ended {
            Some((_, until)) => PollTimeout::try_from(until.saturating_duration_since(Instant::now())).unwrap_or(PollTimeout::MAX),
            None => PollTimeout::NONE,
        };
        match poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(err) => return Err(RelayError::Poll(err)),
        }
        let ready = fds.iter().map(|fd| fd.revents().unwrap_or(PollFlags::empty()));
        Ok(interests.iter().zip(ready).filter(|(_, events)| !events.is_empty()).map(|((end, ..), events)| (*end, events)).collect())
    }

    /// Acts on one ready end; `Some` when the session is over.
    fn serve(&mut self, end: End, events: PollFlags, buffer: &mut [u8]) -> Result<Option<i32>, RelayError> {
        match end {
            End::Signals => return Ok(self.take_signals()),
            End::Connection => return self.read_connection(buffer),
            End::Stdin => return self.read_stdin(buffer),
            End::Master => {
                self.write_shell()?;
                if events.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
                    // Read on while the shell prints and stdout takes it:
                    // one poll for a burst of output, not one per read.
                    let mut reads = 0;
                    while reads < BURST && self.to_user.is_empty() && self.read_master(buffer)? {
                        reads += 1;
                    }
                }
            }
            End::Output => self.write_user()?,
        }
        Ok(None)
    }

    /// Done once the shell's status came and its output is over: its
    /// terminal is gone, or the grace for its last jobs ran out.
    fn finished(&self) -> Option<i32> {
        let (code, until) = self.ended?;
        (!self.master_open || Instant::now() >= until).then_some(code)
    }

    fn take_signals(&mut self) -> Option<i32> {
        while let Ok(Some(info)) = self.signals.read_signal() {
            match Signal::try_from(info.ssi_signo as i32) {
                Ok(Signal::SIGWINCH) => {
                    let (rows, cols) = terminal::size();
                    match self.resize.as_mut() {
                        Some(resize) => resize(rows, cols),
                        None => drop(terminal::set_size(self.master.as_fd(), rows, cols)),
                    }
                }
                Ok(signal) => return Some(128 + signal as i32),
                Err(_) => {}
            }
        }
        None
    }

    fn read_stdin(&mut self, buffer: &mut [u8]) -> Result<Option<i32>, RelayError> {
        match nix::unistd::read(self.stdin.as_fd(), buffer) {
            Err(Errno::EINTR | Errno::EAGAIN) => return Ok(None),
            Ok(0) | Err(_) => {
                // A fresh line, then the terminal's end-of-file character.
                self.stdin_open = false;
                self.to_shell.extend_from_slice(b"\n\x04");
            }
            Ok(n) => match self.escape.as_mut().map_or(Some(buffer[..n].to_vec()), |escape| escape.scan(&buffer[..n])) {
                Some(typed) => self.to_shell.extend_from_slice(&typed),
                None => {
                    eprint!("\r\nnix-attach: left the session (~.)\r\n");
                    return Ok(Some(ESCAPED));
                }
            },
        }
        self.write_shell()?;
        Ok(None)
    }

    /// Types what waits into the build's terminal, as far as it takes it.
    /// A terminal that is gone takes nothing more.
    fn write_shell(&mut self) -> Result<(), RelayError> {
        while !self.to_shell.is_empty() {
            match on_master(|| nix::unistd::write(&self.master, &self.to_shell))? {
                Ok(0) | Err(Errno::EAGAIN) => break,
                Ok(n) => drop(self.to_shell.drain(..n)),
                Err(_) => self.to_shell.clear(),
            }
        }
        Ok(())
    }

    /// Reads what the shell printed and shows it; whether it read any.
    fn read_master(&mut self, buffer: &mut [u8]) -> Result<bool, RelayError> {
        match on_master(|| nix::unistd::read(self.master.as_fd(), buffer))? {
            Ok(n @ 1..) => {
                match self.filter.as_mut() {
                    Some(filter) => filter.feed(&buffer[..n], &mut self.to_user),
                    None => self.to_user.extend_from_slice(&buffer[..n]),
                }
                self.write_user().map(|()| true)
            }
            Err(Errno::EAGAIN) => Ok(false),
            // EIO: every process on the terminal is gone.
            Ok(0) | Err(_) => {
                self.master_open = false;
                Ok(false)
            }
        }
    }

    /// Shows what waits, as far as stdout takes it now.
    fn write_user(&mut self) -> Result<(), RelayError> {
        while !self.to_user.is_empty() {
            match nix::unistd::write(&self.output, &self.to_user) {
                Ok(0) | Err(Errno::EAGAIN) => return Ok(()),
                Ok(n) => drop(self.to_user.drain(..n)),
                Err(Errno::EINTR) => {}
                Err(err) => return Err(RelayError::WriteStdout(err.into())),
            }
        }
        Ok(())
    }

    /// Shows what is left at the end, waiting for a stalled stdout for a
    /// while, unless a signal says to stop.
    fn flush_user(&mut self) -> Result<(), RelayError> {
        let until = Instant::now() + FLUSH_PATIENCE;
        self.write_user()?;
        while !self.to_user.is_empty() && Instant::now() < until {
            let mut fds = [PollFd::new(self.output.as_fd(), PollFlags::POLLOUT), PollFd::new(self.signals.as_fd(), PollFlags::POLLIN)];
            let left = PollTimeout::try_from(until.saturating_duration_since(Instant::now())).unwrap_or(PollTimeout::MAX);
            if poll(&mut fds, left).is_ok() && fds[1].any().unwrap_or(false) {
                break;
            }
            self.write_user()?;
        }
        Ok(())
    }

    fn read_connection(&mut self, buffer: &mut [u8]) -> Result<Option<i32>, RelayError> {
        match std::io::Read::read(&mut &self.connection, buffer) {
            Ok(0) => Err(RelayError::Closed),
            Ok(n) => {
                self.frames.extend_from_slice(&buffer[..n]);
                self.read_frames().map(|()| None)
            }
            Err(err) if matches!(err.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted) => Ok(None),
            Err(_) => Err(RelayError::Closed),
        }
    }

    /// Acts on the agent's frames: the shell's status starts the drain.
    fn read_frames(&mut self) -> Result<(), RelayError> {
        while let Some(frame) = self.codec.decode(&mut self.frames)? {
            match frame {
                AgentFrame::Exit(code) => self.ended = Some((code, Instant::now() + DRAIN_GRACE)),
                AgentFrame::Error(message) => return Err(RelayError::Agent(sanitize(&message))),
                AgentFrame::Terminal => return Err(RelayError::Unexpected("a second terminal")),
                AgentFrame::Output(_) | AgentFrame::Stderr(_) => return Err(RelayError::Unexpected("output")),
                AgentFrame::Relaying(_) => return Err(RelayError::Unexpected("a relay's greeting")),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    use std::io::IoSlice;
    use std::os::fd::{AsRawFd, RawFd};

    /// A terminal frame, as the agent sends it.
    const TERMINAL: &[u8] = b"\0\0\0\x01\x85";

    /// Sends `frame` with `fds` beside it, as an agent could, and opens a
    /// session on the other end.
    fn answered_with(frame: &[u8], fds: &[RawFd]) -> Result<(OwnedFd, BytesMut), RelayError> {
        let (client, agent) = UnixStream::pair().unwrap();
        let rights = [ControlMessage::ScmRights(fds)];
        let controls: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
        sendmsg::<()>(agent.as_raw_fd(), &[IoSlice::new(frame)], controls, MsgFlags::empty(), None).unwrap();
        open_session(&client, Request::Release)
    }

    #[test]
    fn a_pty_master_handed_over_is_the_session_terminal() {
        let pty = nix::pty::openpty(None, None).unwrap();
        let (master, _) = answered_with(TERMINAL, &[pty.master.as_raw_fd()]).unwrap();
        nix::unistd::write(&master, b"typed\n").unwrap();
        let mut line = [0u8; 6];
        assert_eq!(nix::unistd::read(pty.slave.as_fd(), &mut line).unwrap(), 6);
        assert_eq!(&line, b"typed\n");
    }

    #[test]
    fn anything_but_a_pty_master_is_refused() {
        let file = std::fs::File::open("/etc/passwd").unwrap();
        let null = std::fs::File::open("/dev/null").unwrap();
        let (pipe, _writer) = nix::unistd::pipe().unwrap();
        let pty = nix::pty::openpty(None, None).unwrap();
        for fd in [file.as_raw_fd(), null.as_raw_fd(), pipe.as_raw_fd(), pty.slave.as_raw_fd()] {
            assert!(matches!(answered_with(TERMINAL, &[fd]), Err(RelayError::NotAMaster)));
        }
    }

    #[test]
    fn only_the_first_descriptor_handed_over_counts() {
        let (pipe, _writer) = nix::unistd::pipe().unwrap();
        let pty = nix::pty::openpty(None, None).unwrap();
        let fds = [pipe.as_raw_fd(), pty.master.as_raw_fd()];
        assert!(matches!(answered_with(TERMINAL, &fds), Err(RelayError::NotAMaster)));
    }

    #[test]
    fn a_terminal_sent_among_many_descriptors_is_taken_and_the_rest_dropped() {
        let pty = nix::pty::openpty(None, None).unwrap();
        let pipes: Vec<_> = (0..20).map(|_| nix::unistd::pipe().unwrap()).collect();
        let fds: Vec<RawFd> = std::iter::once(pty.master.as_raw_fd()).chain(pipes.iter().map(|(read, _)| read.as_raw_fd())).collect();
        let (master, _) = answered_with(TERMINAL, &fds).unwrap();
        assert!(handoff::is_pty_master(&master));
    }

    #[test]
    fn a_terminal_frame_without_a_descriptor_is_refused() {
        assert!(matches!(answered_with(TERMINAL, &[]), Err(RelayError::NoTerminal)));
    }

    #[test]
    fn output_that_stdout_does_not_take_is_reported_as_a_write_to_stdout() {
        let pty = nix::pty::openpty(None, None).unwrap();
        let (connection, _agent) = UnixStream::pair().unwrap();
        let (reader, writer) = nix::unistd::pipe().unwrap();
        drop(reader);
        let mut session = Session {
            master: pty.master,
            connection,
            frames: BytesMut::new(),
            codec: ClientCodec::default(),
            stdin: std::io::stdin(),
            output: writer,
            signals: SignalFd::with_flags(&SigSet::empty(), SfdFlags::SFD_CLOEXEC).unwrap(),
            escape: None,
            filter: None,
            resize: None,
            stdin_open: false,
            master_open: true,
            to_shell: Vec::new(),
            to_user: b"shown $ ".to_vec(),
            ended: None,
        };
        match session.write_user() {
            Err(err @ RelayError::WriteStdout(_)) => {
                assert_eq!(format!("{:#}", anyhow::Error::from(err)), "cannot write to stdout: Broken pipe (os error 32)")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_refusal_is_reported_with_its_controls_made_harmless() {
        let refusal = b"\0\0\0\x0b\x84busy\x1b[2J!!";
        match answered_with(refusal, &[]) {
            Err(RelayError::Agent(message)) => assert!(message.starts_with("busy") && !message.contains('\x1b'), "{message:?}"),
            other => panic!("{:?}", other.map(|_| ())),
        }
    }
}
