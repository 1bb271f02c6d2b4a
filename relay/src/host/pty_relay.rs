//! Relays the user's terminal (or stdin and stdout) straight to the build's
//! terminal ([`BuildTerminal`]): its PTY master, once the agent has handed
//! it over ([`crate::handoff`]), or a builder's framed relay behind ssh's
//! pipes. A keystroke crosses this one process and no socket of ours; the
//! agent's connection only brings how the shell ended.
//!
//! One thread polls every end: stdin, the build's ends, stdout while output
//! waits for it, the connection and the signals (a signalfd). The build's
//! ends and a terminal or pipe on stdout are used non-blocking, so `~.`, a
//! signal or the session's end gets through whoever stops reading.

use super::build_terminal::BuildTerminal;
use super::escape::Escape;
use super::relay::RelayError;
use super::terminal::{self, RawMode};
use crate::handoff;
use crate::protocol::{AgentFrame, ClientCodec, ClientFrame, Hello, ProtocolError, Request, VERSION};
use crate::sanitize::sanitize;
use crate::terminal_filter::TerminalFilter;
use bytes::BytesMut;
use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::stat::{fstat, Mode, SFlag};
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
/// `frames`: what the agent sent past its answer.
pub fn relay(build: BuildTerminal, frames: BytesMut, interactive: bool, filter: Option<TerminalFilter>) -> Result<i32, RelayError> {
    let signals = watch_signals().map_err(|errno| RelayError::Signals(errno.into()))?;
    build.prepare()?;
    let _raw = interactive.then(RawMode::enter).flatten();
    let mut session = Session {
        build,
        frames,
        codec: ClientCodec::default(),
        stdin: std::io::stdin(),
        output: open_output().map_err(RelayError::OpenStdout)?,
        signals,
        escape: interactive.then(Escape::default),
        filter,
        stdin_open: true,
        master_open: true,
        to_user: Unsent::default(),
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

/// Undoes [`block_relay_signals`] for a caller that will not relay after
/// all.
pub fn unblock_relay_signals() -> nix::Result<()> {
    relay_signals().thread_unblock()
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

/// What waits for stdout: the bytes, and how far stdout took them. A
/// terminal takes a little at a time; what it took is skipped, not moved.
#[derive(Default)]
struct Unsent {
    bytes: Vec<u8>,
    taken: usize,
}

impl Unsent {
    fn is_empty(&self) -> bool {
        self.taken == self.bytes.len()
    }

    fn unsent(&self) -> &[u8] {
        &self.bytes[self.taken..]
    }

    /// Stdout took `n` more; once it took all, the buffer starts again.
    fn taken(&mut self, n: usize) {
        self.taken += n;
        if self.is_empty() {
            self.bytes.clear();
            self.taken = 0;
        }
    }
}

/// The ends the relay polls.
#[derive(Clone, Copy)]
enum End {
    Stdin,
    FromBuild,
    ToBuild,
    Output,
    Connection,
    Signals,
}

struct Session {
    build: BuildTerminal,
    /// The agent's frames not yet decoded: from its connection, or, framed,
    /// from the builder's relay.
    frames: BytesMut,
    codec: ClientCodec,
    stdin: std::io::Stdin,
    output: OwnedFd,
    signals: SignalFd,
    escape: Option<Escape>,
    filter: Option<TerminalFilter>,
    stdin_open: bool,
    master_open: bool,
    /// Printed, not yet taken by stdout.
    to_user: Unsent,
    /// The shell's status, and until when its last output is still shown.
    ended: Option<(i32, Instant)>,
}

impl Session {
    fn run(&mut self) -> Result<i32, RelayError> {
        let outcome = self.relay_until_ended();
        if matches!(outcome, Err(ref err) if !matches!(err, RelayError::WriteStdout(_))) {
            // The reason comes after all that came before it, however
            // slowly stdout takes it.
            let _ = self.flush_user();
        }
        outcome
    }

    fn relay_until_ended(&mut self) -> Result<i32, RelayError> {
        let mut buffer = vec![0u8; READ_SIZE];
        self.read_frames()?;
        loop {
            if let Some(code) = self.finished() {
                for _ in 0..BURST {
                    if !self.master_open || !self.to_user.is_empty() || !self.read_build(&mut buffer)? {
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
            if let Some(connection) = self.build.connection() {
                ends.push((End::Connection, connection.as_fd(), PollFlags::POLLIN));
            }
            if self.stdin_open && !self.build.pending() {
                ends.push((End::Stdin, self.stdin.as_fd(), PollFlags::POLLIN));
            }
        }
        if self.master_open && self.to_user.is_empty() {
            ends.push((End::FromBuild, self.build.reader(), PollFlags::POLLIN));
        }
        if self.master_open && self.build.pending() {
            ends.push((End::ToBuild, self.build.writer(), PollFlags::POLLOUT));
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
            End::Signals => return self.take_signals(),
            End::Connection => return self.read_connection(buffer),
            End::Stdin => return self.read_stdin(buffer),
            End::ToBuild => self.build.flush()?,
            End::FromBuild => {
                if events.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
                    // Read on while the shell prints and stdout takes it:
                    // one poll for a burst of output, not one per read.
                    let mut reads = 0;
                    while reads < BURST && self.to_user.is_empty() && self.master_open && self.read_build(buffer)? {
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

    fn take_signals(&mut self) -> Result<Option<i32>, RelayError> {
        while let Ok(Some(info)) = self.signals.read_signal() {
            match Signal::try_from(info.ssi_signo as i32) {
                Ok(Signal::SIGWINCH) => {
                    let (rows, cols) = terminal::size();
                    self.build.resize(rows, cols)?;
                }
                Ok(signal) => return Ok(Some(128 + signal as i32)),
                Err(_) => {}
            }
        }
        Ok(None)
    }

    fn read_stdin(&mut self, buffer: &mut [u8]) -> Result<Option<i32>, RelayError> {
        match nix::unistd::read(self.stdin.as_fd(), buffer) {
            Err(Errno::EINTR | Errno::EAGAIN) => {}
            Ok(0) | Err(_) => {
                // A fresh line, then the terminal's end-of-file character.
                self.stdin_open = false;
                self.build.type_in(b"\n\x04")?;
            }
            Ok(n) => match self.escape.as_mut().map_or(Some(buffer[..n].to_vec()), |escape| escape.scan(&buffer[..n])) {
                Some(typed) => self.build.type_in(&typed)?,
                None => {
                    eprint!("\r\nnix-attach: left the session (~.)\r\n");
                    return Ok(Some(ESCAPED));
                }
            },
        }
        Ok(None)
    }

    /// Reads what the build sent and shows it; whether it read any.
    fn read_build(&mut self, buffer: &mut [u8]) -> Result<bool, RelayError> {
        match self.build.read(buffer)? {
            Ok(n @ 1..) if self.build.is_framed() => {
                self.frames.extend_from_slice(&buffer[..n]);
                // What came before a frame that ends the session is shown.
                let decoded = self.read_frames();
                self.write_user()?;
                decoded.map(|()| true)
            }
            Ok(n @ 1..) => {
                self.show(&buffer[..n]);
                self.write_user().map(|()| true)
            }
            Err(Errno::EAGAIN | Errno::EINTR) => Ok(false),
            // Framed, the relay's status comes before its end.
            Ok(0) | Err(_) if self.build.is_framed() => Err(RelayError::Closed),
            // EIO: every process on the terminal is gone.
            Ok(0) | Err(_) => {
                self.master_open = false;
                Ok(false)
            }
        }
    }

    /// Queues what the shell printed for the user, through the filter.
    fn show(&mut self, printed: &[u8]) {
        crate::terminal_filter::pass(self.filter.as_mut(), printed, &mut self.to_user.bytes);
    }

    /// Shows what waits, as far as stdout takes it now.
    fn write_user(&mut self) -> Result<(), RelayError> {
        while !self.to_user.is_empty() {
            match nix::unistd::write(&self.output, self.to_user.unsent()) {
                Ok(0) | Err(Errno::EAGAIN) => return Ok(()),
                Ok(n) => self.to_user.taken(n),
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
        let Some(mut connection) = self.build.connection() else { return Ok(None) };
        match std::io::Read::read(&mut connection, buffer) {
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
    /// Framed, they also bring the build's output, and the status comes
    /// after all of it.
    fn read_frames(&mut self) -> Result<(), RelayError> {
        let framed = self.build.is_framed();
        while let Some(frame) = self.codec.decode(&mut self.frames)? {
            match frame {
                AgentFrame::Output(printed) if framed => self.show(&printed),
                AgentFrame::Exit(code) if framed => {
                    self.ended = Some((code, Instant::now()));
                    self.master_open = false;
                    return Ok(());
                }
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

    #[test]
    fn what_stdout_took_is_skipped_and_the_rest_waits_in_order() {
        let mut unsent = Unsent::default();
        unsent.bytes.extend_from_slice(b"one two");
        unsent.taken(4);
        assert_eq!(unsent.unsent(), b"two");
        assert!(!unsent.is_empty());
        unsent.taken(3);
        assert!(unsent.is_empty() && unsent.bytes.is_empty(), "all taken: the buffer starts again");
        unsent.bytes.extend_from_slice(b"three");
        assert_eq!(unsent.unsent(), b"three");
    }

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

    /// A session on `build` that reads no input and shows on `output`.
    fn session(build: BuildTerminal, output: OwnedFd) -> Session {
        Session {
            build,
            frames: BytesMut::new(),
            codec: ClientCodec::default(),
            stdin: std::io::stdin(),
            output,
            signals: SignalFd::with_flags(&SigSet::empty(), SfdFlags::SFD_CLOEXEC).unwrap(),
            escape: None,
            filter: None,
            stdin_open: false,
            master_open: true,
            to_user: Unsent::default(),
            ended: None,
        }
    }

    /// How a framed session ends, and what the person sees, when the
    /// builder's relay sends `frames` and then `tail`.
    fn framed_session(frames: &[AgentFrame], tail: &[u8]) -> (Result<i32, RelayError>, Vec<u8>) {
        let mut sent = Vec::new();
        frames.iter().for_each(|frame| crate::protocol::write_frame(&mut sent, frame).unwrap());
        sent.extend_from_slice(tail);
        let (from_remote, builder) = nix::unistd::pipe().unwrap();
        std::fs::File::from(builder).write_all(&sent).unwrap();
        let (_builder_reads, to_remote) = nix::unistd::pipe().unwrap();
        let (shown, output) = nix::unistd::pipe().unwrap();
        let outcome = session(BuildTerminal::framed(to_remote, from_remote), output).run();
        let mut seen = Vec::new();
        std::io::Read::read_to_end(&mut std::fs::File::from(shown), &mut seen).unwrap();
        (outcome, seen)
    }

    #[test]
    fn a_builder_gets_the_terminal_s_bytes_and_the_shell_s_status_through() {
        let (outcome, seen) =
            framed_session(&[AgentFrame::Output("hi ".into()), AgentFrame::Output("$ ".into()), AgentFrame::Exit(3)], b"");
        assert_eq!((outcome.unwrap(), seen), (3, b"hi $ ".to_vec()));
    }

    #[test]
    fn a_builder_s_frame_it_never_sends_ends_the_session_after_what_came_before() {
        for hostile in [AgentFrame::Stderr("x".into()), AgentFrame::Terminal, AgentFrame::Relaying(1)] {
            let (outcome, seen) = framed_session(&[AgentFrame::Output("a".into()), hostile.clone(), AgentFrame::Output("b".into())], b"");
            assert!(matches!(outcome, Err(RelayError::Unexpected(_))), "{hostile:?}: {outcome:?}");
            assert_eq!(seen, b"a", "nothing after {hostile:?}");
        }
    }

    #[test]
    fn a_builder_s_broken_frames_or_silence_end_the_session_with_a_reason() {
        let (outcome, _) = framed_session(&[], b"");
        assert!(matches!(outcome, Err(RelayError::Closed)), "no status, no session: {outcome:?}");
        let (outcome, _) = framed_session(&[AgentFrame::Output("a".into())], b"\0\0");
        assert!(matches!(outcome, Err(RelayError::Closed)), "a frame cut short: {outcome:?}");
        let (outcome, _) = framed_session(&[], &((crate::protocol::MAX_FRAME + 1) as u32).to_be_bytes());
        assert!(matches!(outcome, Err(RelayError::Protocol(_))), "a frame over the bound: {outcome:?}");
        let (outcome, _) = framed_session(&[], b"\0\0\0\x01\x7f");
        assert!(matches!(outcome, Err(RelayError::Protocol(_))), "a kind no one sends: {outcome:?}");
        let (outcome, _) = framed_session(&[AgentFrame::Error("no\x1b[2J build".into())], b"");
        assert!(matches!(&outcome, Err(RelayError::Agent(message)) if !message.contains('\x1b')), "{outcome:?}");
    }

    #[test]
    fn a_builder_s_error_ends_the_session_after_all_it_printed_before_reached_a_slow_stdout() {
        let (shown, output) = nix::unistd::pipe().unwrap();
        // Stdout takes one page at a time: most of the output waits.
        nix::fcntl::fcntl(&output, nix::fcntl::FcntlArg::F_SETPIPE_SZ(4096)).unwrap();
        let reader = std::thread::spawn(move || {
            let mut seen = Vec::new();
            std::io::Read::read_to_end(&mut std::fs::File::from(shown), &mut seen).unwrap();
            seen
        });
        let printed: Vec<u8> = (0..200_000).map(|n| b'a' + (n % 26) as u8).collect();
        let (from_remote, _builder) = nix::unistd::pipe().unwrap();
        let (_builder_reads, to_remote) = nix::unistd::pipe().unwrap();
        let mut session = session(BuildTerminal::framed(to_remote, from_remote), output);
        let mut codec = crate::protocol::AgentCodec::default();
        for chunk in printed.chunks(50_000) {
            codec.encode(AgentFrame::Output(bytes::Bytes::copy_from_slice(chunk)), &mut session.frames).unwrap();
        }
        codec.encode(AgentFrame::Error("the build's agent ended".into()), &mut session.frames).unwrap();
        let outcome = session.run();
        drop(session);
        assert!(matches!(outcome, Err(RelayError::Agent(_))), "{outcome:?}");
        assert!(reader.join().unwrap() == printed, "all of the output, in order, before the reason");
    }

    #[test]
    fn output_that_stdout_does_not_take_is_reported_as_a_write_to_stdout() {
        let pty = nix::pty::openpty(None, None).unwrap();
        let (connection, _agent) = UnixStream::pair().unwrap();
        let (reader, writer) = nix::unistd::pipe().unwrap();
        drop(reader);
        let mut session = session(BuildTerminal::handed(pty.master, connection), writer);
        session.to_user.bytes = b"shown $ ".to_vec();
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
