//! The wrapper with a person at a terminal. Nix runs under a PTY, so its
//! progress bar and colours keep working, and its output passes through
//! unchanged. When a build pauses, the passthrough stops, nix's output is
//! held back, and the person is asked whether to enter; after the session
//! the build is released, the held output is shown and nix goes on.
//! Once nix is done, each derivation that failed without pausing is
//! offered for `retry`: the person's answers go back to the caller, which
//! builds them again.

use super::held::Held;
use super::markers::Markers;
use super::privilege::Reach;
use super::{Enter, Options, Outcome, WrapperError};
use crate::host::input::{read_key, Input};
use crate::host::terminal::{self, RawMode};
use crate::patch_file::{Kept, PatchFile};
use crate::pointer::Pointer;
use crate::pump;
use bytes::Bytes;
use portable_pty::{native_pty_system, CommandBuilder, MasterPty, PtySize};
use std::collections::{HashSet, VecDeque};
use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::{mpsc, oneshot};

/// Chunks in flight between nix's PTY and us.
const IN_FLIGHT: usize = 16;
/// How long output is still read after nix exits.
const DRAIN_GRACE: Duration = Duration::from_millis(500);

/// Nix under a PTY, and what the wrapper knows of it.
struct Nix {
    master: Box<dyn MasterPty + Send>,
    output: mpsc::Receiver<Bytes>,
    output_open: bool,
    input: mpsc::Sender<Bytes>,
    exit: oneshot::Receiver<i32>,
    code: Option<i32>,
    markers: Markers,
    waiting: VecDeque<Pointer>,
    /// The names of the derivations that paused.
    paused: HashSet<String>,
}

impl Nix {
    fn start(program: &OsStr, args: &[OsString]) -> Result<(Nix, Box<dyn portable_pty::ChildKiller + Send + Sync>), WrapperError> {
        let (rows, cols) = terminal::size();
        let pair = native_pty_system()
            .openpty(PtySize { rows, cols, pixel_width: 0, pixel_height: 0 })
            .map_err(|err| WrapperError::Pty(err.into()))?;
        let mut command = CommandBuilder::new(program);
        command.args(args);
        // The daemon's pre-build hook makes builds asked for so pause.
        command.env(crate::inject::policy::MARK, "1");
        let run_error = |err: Box<dyn std::error::Error + Send + Sync>| WrapperError::Run(program.to_string_lossy().into_owned(), err);
        command.cwd(std::env::current_dir().map_err(|err| run_error(err.into()))?);
        let child = pair.slave.spawn_command(command).map_err(|err| run_error(err.into()))?;
        drop(pair.slave);
        let killer = child.clone_killer();
        let exit = pump::exit_code(child);
        let nix = Nix {
            output: pump::from_reader(pair.master.try_clone_reader().map_err(|err| WrapperError::Pty(err.into()))?, IN_FLIGHT),
            input: pump::to_writer(pair.master.take_writer().map_err(|err| WrapperError::Pty(err.into()))?, IN_FLIGHT),
            master: pair.master,
            output_open: true,
            exit,
            code: None,
            markers: Markers::default(),
            waiting: VecDeque::new(),
            paused: HashSet::new(),
        };
        Ok((nix, killer))
    }

    fn done(&self) -> bool {
        self.code.is_some() && !self.output_open
    }

    /// Takes note of a chunk of output (or of its end): the pointers in it
    /// join the builds waiting to be offered.
    fn note(&mut self, chunk: Option<Bytes>) -> Bytes {
        match chunk {
            Some(chunk) => {
                let found = self.markers.feed(&chunk);
                self.paused.extend(found.iter().map(|pointer| pointer.drv_name().to_string()));
                self.waiting.extend(found);
                chunk
            }
            None => {
                self.output_open = false;
                Bytes::new()
            }
        }
    }
}

/// Runs `program args…` on the user's terminal; returns its status and
/// the derivations to build again.
pub async fn run(program: &OsStr, args: &[OsString], options: &Options) -> Result<Outcome, WrapperError> {
    let (mut nix, mut killer) = Nix::start(program, args)?;
    let mut input = Input::start().map_err(WrapperError::Terminal)?;
    let mut input_open = true;
    let mut raw = RawMode::enter();
    let mut reach = Reach::new(true).map_err(WrapperError::Program)?;
    let mut resized = signal(SignalKind::window_change()).map_err(WrapperError::Terminal)?;
    let mut stop = Stop::new().map_err(WrapperError::Terminal)?;
    let mut stdout = tokio::io::stdout();
    let grace = tokio::time::sleep(Duration::MAX);
    tokio::pin!(grace);
    let mut draining = false;
    // Once offering a build failed, the rest are only named, and nix goes on.
    let never = Options { enter: Enter::Never, ..options.clone() };
    let mut offering = options;
    while !nix.done() {
        if nix.code.is_some() && !std::mem::replace(&mut draining, true) {
            grace.as_mut().reset(tokio::time::Instant::now() + DRAIN_GRACE);
        }
        if let Some(pointer) = nix.waiting.pop_front() {
            if let Some(uri) = nix.markers.builder_of(&pointer) {
                reach.remote(&pointer, uri);
            }
            let (held, offered) = offer_while_holding(&mut nix, &pointer, offering, &mut input, &mut raw, &mut reach, &mut stop).await;
            match offered {
                Ok(Offered::Answered) => {}
                Ok(Offered::Stopped(code)) => {
                    let _ = killer.kill();
                    return Ok(Outcome::ended(code));
                }
                // A build that would pass must not fail for it: the build
                // is let go, and nix goes on.
                Err(err) => {
                    let _ = release(&mut reach, &pointer).await;
                    let why = crate::sanitize::sanitize(&format!("{:#}", anyhow::Error::from(err)));
                    say(&format!("{why}; released {}, and no build is offered from now on: nix goes on", pointer.id));
                    offering = &never;
                }
            }
            held.show(&mut stdout).await?;
            continue;
        }
        tokio::select! {
            chunk = nix.output.recv(), if nix.output_open => {
                let chunk = nix.note(chunk);
                stdout.write_all(&chunk).await.map_err(WrapperError::Output)?;
                stdout.flush().await.map_err(WrapperError::Output)?;
            }
            key = input.recv(), if input_open => match key {
                Some(key) => { let _ = nix.input.send(key).await; }
                None => input_open = false,
            },
            status = &mut nix.exit, if nix.code.is_none() => nix.code = Some(status.unwrap_or(255)),
            () = &mut grace => break,
            Some(()) = resized.recv() => {
                let (rows, cols) = terminal::size();
                let _ = nix.master.resize(PtySize { rows, cols, pixel_width: 0, pixel_height: 0 });
            }
            code = stop.next() => { let _ = killer.kill(); return Ok(Outcome::ended(code)); }
        }
    }
    // The reader stays parked: the answers below, and the builds after,
    // read the terminal themselves.
    input.pause();
    let retries =
        if options.offer_retries { choose_retries(super::unpaused(nix.markers.failed(), &nix.paused), options).await? } else { Vec::new() };
    drop(raw);
    Ok(Outcome { code: nix.code.unwrap_or(255), retries })
}

/// Offers each derivation that failed without pausing for `retry`; returns
/// the ones to build again.
async fn choose_retries(unpaused: Vec<PathBuf>, options: &Options) -> Result<Vec<PathBuf>, WrapperError> {
    let mut chosen = Vec::new();
    for drv in unpaused {
        let unpaused = super::unpaused_line(&drv);
        let yes = match options.enter {
            Enter::Never => {
                say(&super::retry_line(&drv));
                false
            }
            Enter::Always => {
                say(&format!("{unpaused}; building it again so that it pauses"));
                true
            }
            Enter::Ask => {
                let question = format!("{unpaused}; build it again so that it pauses?");
                matches!(ask(&question, options.release_after).await?, Answer::Enter)
            }
        };
        if yes {
            chosen.push(drv);
        }
    }
    Ok(chosen)
}

/// The signals that end the wrapper (and nix), at any point.
struct Stop {
    terminated: Signal,
    hung_up: Signal,
}

impl Stop {
    fn new() -> std::io::Result<Stop> {
        Ok(Stop { terminated: signal(SignalKind::terminate())?, hung_up: signal(SignalKind::hangup())? })
    }

    /// Waits for one; returns the status to exit with.
    async fn next(&mut self) -> i32 {
        tokio::select! {
            Some(()) = self.terminated.recv() => 128 + 15,
            Some(()) = self.hung_up.recv() => 128 + 1,
        }
    }
}

/// How an offer ended.
enum Offered {
    /// Answered.
    Answered,
    /// A signal ends the wrapper with this status.
    Stopped(i32),
}

/// Offers one paused build while nix's output is read on and held back;
/// returns that output, however the offer ended.
async fn offer_while_holding(
    nix: &mut Nix,
    pointer: &Pointer,
    options: &Options,
    input: &mut Input,
    raw: &mut Option<RawMode>,
    reach: &mut Reach,
    stop: &mut Stop,
) -> (Held, Result<Offered, WrapperError>) {
    let mut held = Held::default();
    input.pause();
    let nix_input = nix.input.clone();
    let offered = offer(pointer, options, raw, reach, nix_input);
    tokio::pin!(offered);
    let outcome = loop {
        tokio::select! {
            outcome = &mut offered => break outcome.map(|()| Offered::Answered),
            chunk = nix.output.recv(), if nix.output_open => held.push(&nix.note(chunk)),
            status = &mut nix.exit, if nix.code.is_none() => nix.code = Some(status.unwrap_or(255)),
            code = stop.next() => break Ok(Offered::Stopped(code)),
        }
    };
    input.resume();
    (held, outcome)
}

/// What the person answered.
enum Answer {
    Enter,
    Decline,
    Interrupt,
}

async fn offer(
    pointer: &Pointer,
    options: &Options,
    raw: &mut Option<RawMode>,
    reach: &mut Reach,
    nix_input: mpsc::Sender<Bytes>,
) -> Result<(), WrapperError> {
    let answer = match options.enter {
        Enter::Never => {
            say(&format!("{} — enter it with `{}`", pointer.summary, reach.attach_command(&pointer.id)));
            return Ok(());
        }
        Enter::Always => Answer::Enter,
        Enter::Ask => ask(&format!("{} — enter the build?", pointer.summary), options.release_after).await?,
    };
    match answer {
        Answer::Enter => {
            *raw = None;
            let status = reach
                .command(&pointer.id, &["attach", &pointer.id])
                .status()
                .await
                .map_err(|err| WrapperError::Session("attach", pointer.id.clone(), err))?;
            let kept = match &options.patch_dir {
                Some(dir) => keep_patch(reach, pointer, dir).await,
                None => Ok(String::new()),
            };
            *raw = RawMode::enter();
            let left = format!("left the build (status {})", status.code().unwrap_or(-1));
            match kept {
                Ok(kept) => {
                    release(reach, pointer).await?;
                    say(&format!("{left}{kept}; released it, nix goes on"));
                }
                Err(reason) => {
                    keep_or_release(reach, pointer, options, &format!("{left}, but its changes were not kept: {reason}")).await?
                }
            }
        }
        Answer::Decline => {
            release(reach, pointer).await?;
            say("not entering; released the build, nix goes on");
        }
        Answer::Interrupt => {
            let _ = nix_input.send(Bytes::from_static(b"\x03")).await;
        }
    }
    Ok(())
}

/// The largest patch `--patch-dir` keeps.
const MAX_PATCH: u64 = 64 << 20;

/// Keeps what the session changed in the build's source as a patch in
/// `dir` (`nix-attach diff`), before the build is released; returns what
/// happened, to be said, or why nothing could be kept.
async fn keep_patch(reach: &mut Reach, pointer: &Pointer, dir: &std::path::Path) -> Result<String, String> {
    let path = dir.join(crate::patch_file::file_name(pointer.drv_name()));
    let said = |err: crate::patch_file::PatchFileError| crate::sanitize::sanitize(&format!("{:#}", anyhow::Error::from(err)));
    let (kept, file) = PatchFile::create(&path).map_err(said)?;
    eprintln!("nix-attach: keeping your changes to its source in {}…", path.display());
    let mut diff = reach
        .command(&pointer.id, &["diff", &pointer.id])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|err| format!("cannot run `nix-attach diff`: {err}"))?;
    // The build's code makes the patch: it is bounded, as a replay's is.
    let stdout = diff.stdout.take().expect("piped");
    let mut file = tokio::fs::File::from_std(file);
    let copied = tokio::io::copy(&mut tokio::io::AsyncReadExt::take(stdout, MAX_PATCH + 1), &mut file).await;
    match copied {
        Ok(size) if size > MAX_PATCH => return Err(format!("the patch is larger than {} MiB: not kept", MAX_PATCH >> 20)),
        Ok(_) => {}
        Err(err) => return Err(format!("cannot write the patch: {err}")),
    }
    file.flush().await.map_err(|err| format!("cannot write the patch: {err}"))?;
    match diff.wait().await {
        Ok(status) if status.success() => {}
        Ok(status) => return Err(format!("`nix-attach diff` ended with status {}", status.code().unwrap_or(-1))),
        Err(err) => return Err(format!("cannot run `nix-attach diff`: {err}")),
    }
    let nothing = kept.nothing_written();
    match kept.keep().map_err(said)? {
        Kept::Written => Ok(format!("; your changes to its source are in {}", path.display())),
        Kept::Empty => Ok(format!("; it changed nothing in its source ({nothing})")),
    }
}

/// Where the session's changes could not be kept: says why, and asks
/// whether the build should wait, for them to be taken by hand, or go.
async fn keep_or_release(reach: &mut Reach, pointer: &Pointer, options: &Options, why: &str) -> Result<(), WrapperError> {
    say(why);
    let question = "keep the build waiting, to take your changes with `nix-attach diff`?";
    if matches!(ask(question, options.release_after).await?, Answer::Enter) {
        say(&format!("build {} waits: `nix-attach diff {0} > FILE`, then `nix-attach release {0}`", pointer.id));
        return Ok(());
    }
    release(reach, pointer).await?;
    say("released it, nix goes on");
    Ok(())
}

/// Asks `QUESTION [Y/n]`, waiting at most `limit` for the answer.
async fn ask(question: &str, limit: Option<Duration>) -> Result<Answer, WrapperError> {
    print_raw(&format!("\r\n{question} [Y/n] "));
    let deadline = limit.map(|limit| Instant::now() + limit);
    loop {
        let left = deadline.map(|deadline| deadline.saturating_duration_since(Instant::now()));
        let key = tokio::task::spawn_blocking(move || read_key(left)).await.map_err(|err| WrapperError::Terminal(err.into()))?;
        let answer = match key {
            Some(b'y' | b'Y' | b'\r' | b'\n') => Answer::Enter,
            Some(b'n' | b'N') => Answer::Decline,
            Some(0x03) => Answer::Interrupt,
            Some(_) => continue,
            None => {
                print_raw("(no answer)");
                Answer::Decline
            }
        };
        print_raw(if matches!(answer, Answer::Enter) { "y\r\n" } else { "n\r\n" });
        return Ok(answer);
    }
}

async fn release(reach: &mut Reach, pointer: &Pointer) -> Result<(), WrapperError> {
    let released = reach.command(&pointer.id, &["release", &pointer.id]).stdout(Stdio::null()).status().await;
    released.map_err(|err| WrapperError::Session("release", pointer.id.clone(), err))?;
    Ok(())
}

/// A line of ours, on a terminal that may be in raw mode.
fn say(text: &str) {
    print_raw(&format!("\r\nnix-attach: {text}\r\n"));
}

fn print_raw(text: &str) {
    let mut stdout = std::io::stdout();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}
