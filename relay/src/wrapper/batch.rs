//! The wrapper without a terminal (pipes, or CI): nix's output passes
//! through untouched and nothing ever waits for an answer. Nobody can enter
//! a paused build from here, so what happens to it is a flag's choice:
//! - by default it is released at once, and the build fails as it would
//!   have: a CI job never waits for nobody;
//! - `--release-after SECS` keeps it waiting that long for someone to
//!   attach from elsewhere (`nix-attach attach ID` on the machine),
//!   then releases it;
//! - `--no-enter` leaves it waiting for its own timeout
//!   (`NIX_ATTACH_TIMEOUT`).
//!
//! With `--on-failure CMD`, CMD runs first in each paused build's restored
//! shell (`nix-attach exec`), and what it prints goes to this log, at most
//! [`ON_FAILURE_LIMIT`] bytes: a CI log then shows what a person would have
//! looked at first. Its status changes nothing.
//!
//! With `--capture DIR` (`NIX_ATTACH_CAPTURE`), each paused build is
//! first written to a file in DIR (`nix-attach capture`), to enter later
//! elsewhere with `nix-attach replay`; the log names the file, and so does
//! a `::notice` on GitHub Actions.
//!
//! Each paused build gets one summary line at the end, and a `::error`
//! workflow command on GitHub Actions as soon as it is seen. A derivation
//! that failed without pausing is never built again from here: it gets
//! the `nix-attach retry` line that would, and a `::notice` on GitHub
//! Actions.

use super::markers::Markers;
use super::privilege::Reach;
use super::{Enter, Options, Outcome, WrapperError};
use crate::pointer::Pointer;
use crate::pump::read_some;
use bytes::BytesMut;
use std::ffi::{OsStr, OsString};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::process::Command;
use tokio::task::JoinSet;

/// How long a paused build is kept waiting: `None`, for its own timeout.
fn hold(options: &Options) -> Option<Duration> {
    match (options.release_after, options.enter) {
        (Some(after), _) => Some(after),
        (None, Enter::Never) => None,
        (None, _) => Some(Duration::ZERO),
    }
}

/// Runs `program args…`, passing its output through, and returns its
/// status (and nothing to build again).
pub async fn run(program: &OsStr, args: &[OsString], options: &Options) -> Result<Outcome, WrapperError> {
    let mut child = Command::new(program)
        .args(args)
        .env(crate::inject::policy::MARK, "1")
        .stdin(Stdio::inherit())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|err| WrapperError::Run(program.to_string_lossy().into_owned(), err.into()))?;
    let (mut out, mut err) = (child.stdout.take(), child.stderr.take());
    let (mut out_buffer, mut err_buffer) = (BytesMut::new(), BytesMut::new());
    let (mut out_markers, mut err_markers) = (Markers::default(), Markers::default());
    let (mut stdout, mut stderr) = (tokio::io::stdout(), tokio::io::stderr());
    let hold = hold(options);
    let mut reach = Reach::new(false).map_err(WrapperError::Program)?;
    let mut releases = JoinSet::new();
    let mut paused: Vec<(Pointer, String)> = Vec::new();
    while out.is_some() || err.is_some() {
        // A pipe that ended is left out with its precondition: a branch
        // that only never completes would keep `else` from ever coming.
        let found = tokio::select! {
            Some(chunk) = read_some(&mut out, &mut out_buffer), if out.is_some() => pass(&mut stdout, &mut out_markers, &chunk).await?,
            Some(chunk) = read_some(&mut err, &mut err_buffer), if err.is_some() => pass(&mut stderr, &mut err_markers, &chunk).await?,
            else => Vec::new(),
        };
        for pointer in found {
            if !paused.iter().any(|(known, _)| known.id == pointer.id) {
                if let Some(uri) = out_markers.builder_of(&pointer).or(err_markers.builder_of(&pointer)) {
                    reach.remote(&pointer, uri);
                }
                let attach = reach.attach_command(&pointer.id);
                annotate(&pointer, &attach).await?;
                let derivation = out_markers.derivation_of(&pointer).or(err_markers.derivation_of(&pointer));
                // `capture` has no `--via`: the file would be the builder's.
                if let (Some(_), Some(builder)) = (&options.capture, reach.builder_of(&pointer.id)) {
                    eprintln!(
                        "nix-attach: build {} paused on the remote builder {}; capture it there (`nix-attach capture {0}`), not here",
                        pointer.id,
                        crate::sanitize::sanitize(builder)
                    );
                }
                let capture = options.capture.as_deref().filter(|_| reach.builder_of(&pointer.id).is_none()).map(|dir| {
                    let file = capture_file(dir, &pointer);
                    let shown = file.to_string_lossy();
                    let mut args = vec!["capture", &pointer.id, "-o", &shown];
                    args.extend(derivation.iter().flat_map(|drv| ["--drv", *drv]));
                    (reach.command(&pointer.id, &args), file)
                });
                let release = hold.map(|after| (reach.command(&pointer.id, &["release", &pointer.id]), after));
                let diagnose = options
                    .on_failure
                    .as_deref()
                    .map(|commands| reach.command(&pointer.id, &["exec", &pointer.id, "--", "eval", commands]));
                releases.spawn(keep(pointer.id.clone(), diagnose, capture, release));
                paused.push((pointer, attach));
            }
        }
    }
    let status = child.wait().await.map_err(WrapperError::Wait)?;
    releases.abort_all();
    for (pointer, attach) in &paused {
        eprintln!("{}", summary_line(pointer, attach, hold));
    }
    if options.offer_retries {
        let names = paused.iter().map(|(pointer, _)| pointer.drv_name().to_string()).collect();
        let mut failed: Vec<PathBuf> = out_markers.failed().to_vec();
        failed.extend(err_markers.failed().iter().filter(|drv| !failed.contains(drv)).cloned().collect::<Vec<_>>());
        for drv in super::unpaused(&failed, &names) {
            let line = super::retry_line(&drv);
            eprintln!("nix-attach: {line}");
            notice(&line).await?;
        }
    }
    Ok(Outcome::ended(status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0))))
}

/// On GitHub Actions, a `::notice` workflow command with `line`.
async fn notice(line: &str) -> Result<(), WrapperError> {
    if std::env::var("GITHUB_ACTIONS").as_deref() == Ok("true") {
        let mut stdout = tokio::io::stdout();
        stdout.write_all(format!("::notice title=nix-attach::{line}\n").as_bytes()).await.map_err(WrapperError::Output)?;
        stdout.flush().await.map_err(WrapperError::Output)?;
    }
    Ok(())
}

/// Where the capture of the build `pointer` names goes in `dir`.
fn capture_file(dir: &std::path::Path, pointer: &Pointer) -> PathBuf {
    let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    dir.join(crate::capture::default_file_name(&format!("{}-{}", pointer.drv_name(), pointer.id)))
}

/// What becomes of the paused build `id`: captured first, where asked,
/// then released as `release` says (or left to its own timeout).
async fn keep(id: String, diagnose: Option<Command>, capture: Option<(Command, PathBuf)>, release: Option<(Command, Duration)>) {
    if let Some(command) = diagnose {
        diagnosed(command, &id).await;
    }
    if let Some((command, file)) = capture {
        captured(command, &id, &file).await;
    }
    if let Some((command, after)) = release {
        release_after(command, id, after).await;
    }
}

/// The most of `--on-failure`'s output that reaches the log.
pub const ON_FAILURE_LIMIT: usize = 64 * 1024;

/// Runs `--on-failure`'s commands in build `id` and puts what they print
/// in the log, bounded, with their status.
async fn diagnosed(mut exec: Command, id: &str) {
    let child = exec.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn();
    let Ok(mut child) = child else {
        eprintln!("nix-attach: could not run --on-failure in build {id}");
        return;
    };
    let (printed, errors) = tokio::join!(bounded(child.stdout.take()), bounded(child.stderr.take()));
    let status = child.wait().await.ok().and_then(|status| status.code());
    eprintln!("nix-attach: --on-failure in build {id}:");
    eprint!("{}{}", String::from_utf8_lossy(&printed), String::from_utf8_lossy(&errors));
    let status = status.map_or("was stopped".to_string(), |code| format!("ended with status {code}"));
    eprintln!("nix-attach: --on-failure {status}; the build fails with its own status");
}

/// The first [`ON_FAILURE_LIMIT`] bytes `pipe` brings; the rest is read
/// and dropped, so that the writer never blocks.
async fn bounded(pipe: Option<impl tokio::io::AsyncRead + Unpin>) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut kept = Vec::new();
    if let Some(mut pipe) = pipe {
        let _ = (&mut pipe).take(ON_FAILURE_LIMIT as u64).read_to_end(&mut kept).await;
        let _ = tokio::io::copy(&mut pipe, &mut tokio::io::sink()).await;
    }
    kept
}

/// Runs `capture` and says where the file is, or why there is none.
async fn captured(mut capture: Command, id: &str, file: &std::path::Path) {
    let output = capture.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).output().await;
    match output {
        Ok(output) if output.status.success() => {
            let line =
                format!("captured build {id} to {}; enter it later, anywhere, with `nix-attach replay {}`", file.display(), file.display());
            eprintln!("nix-attach: {line}");
            let _ = notice(&line).await;
        }
        Ok(output) => {
            let why = String::from_utf8_lossy(&output.stderr);
            let why = why.trim().strip_prefix("nix-attach: error: ").unwrap_or(why.trim());
            eprintln!("nix-attach: could not capture build {id}: {}", crate::sanitize::sanitize(why));
        }
        Err(err) => eprintln!("nix-attach: could not capture build {id}: {err}"),
    }
}

/// Runs `release` for build `id` once `after` has passed. If it fails (sudo
/// refusing, no broker), that is said at once: the build then waits for its
/// own timeout, and fails by itself after it.
async fn release_after(mut release: Command, id: String, after: Duration) {
    tokio::time::sleep(after).await;
    let released = release.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).status().await;
    if !released.is_ok_and(|status| status.success()) {
        eprintln!("nix-attach: could not release build {id} (as root, through `sudo -n`, or the broker); it waits for its own timeout");
    }
}

async fn pass<W: AsyncWrite + Unpin>(to: &mut W, markers: &mut Markers, chunk: &[u8]) -> Result<Vec<Pointer>, WrapperError> {
    to.write_all(chunk).await.map_err(WrapperError::Output)?;
    to.flush().await.map_err(WrapperError::Output)?;
    Ok(markers.feed(chunk))
}

/// The line printed at the end for each build that paused, saying how long
/// it waited for `attach` (the command that enters it) and how to make it
/// wait.
pub fn summary_line(pointer: &Pointer, attach: &str, hold: Option<Duration>) -> String {
    let waited = match hold {
        Some(Duration::ZERO) => "released at once, as nobody was at a terminal; to keep it waiting for \
                                 `nix-attach attach` next time, pass --release-after SECS or --no-enter"
            .to_string(),
        Some(after) => format!("it waited {} s for `{attach}`, then was released", after.as_secs()),
        None => format!("it waited for `{attach}` until its own timeout, then failed as usual"),
    };
    format!("nix-attach: paused: {} — {waited}", pointer.summary)
}

/// On GitHub Actions, a `::error` workflow command with the same pointer.
async fn annotate(pointer: &Pointer, attach: &str) -> Result<(), WrapperError> {
    if std::env::var("GITHUB_ACTIONS").as_deref() == Ok("true") {
        let line = format!("::error title=nix-attach::{} — attach with `{attach}` while it waits\n", pointer.summary);
        let mut stdout = tokio::io::stdout();
        stdout.write_all(line.as_bytes()).await.map_err(WrapperError::Output)?;
        stdout.flush().await.map_err(WrapperError::Output)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(enter: Enter, release_after: Option<u64>) -> Options {
        Options {
            enter,
            release_after: release_after.map(Duration::from_secs),
            offer_retries: true,
            capture: None,
            on_failure: None,
            patch_dir: None,
        }
    }

    #[test]
    fn without_a_flag_a_paused_build_is_released_at_once() {
        assert_eq!(hold(&options(Enter::Ask, None)), Some(Duration::ZERO));
        assert_eq!(hold(&options(Enter::Always, None)), Some(Duration::ZERO));
    }

    #[test]
    fn release_after_bounds_the_wait_and_no_enter_leaves_it_to_the_build() {
        assert_eq!(hold(&options(Enter::Ask, Some(3))), Some(Duration::from_secs(3)));
        assert_eq!(hold(&options(Enter::Never, Some(3))), Some(Duration::from_secs(3)));
        assert_eq!(hold(&options(Enter::Never, None)), None);
    }
}
