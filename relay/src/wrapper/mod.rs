//! `nix-attach build` and `nix-attach run`: runs nix, notices the builds
//! that pause in its output, and offers to enter them. The nix it runs is
//! marked (`NIX_ATTACH_REQUESTED=1`), so that where the daemon's pre-build
//! hook injects the attach hook ([`crate::inject`]), the builds it asks
//! for pause even without the hook in their inputs.
//!
//! With a person at a terminal ([`interactive`]) nix runs under a PTY and
//! its display passes through unchanged; a paused build brings a prompt,
//! and nix's output meanwhile is held ([`held`]: in memory, then in a
//! temporary file).
//! Without one (pipes, or `CI` set: [`batch`]) nothing ever waits for an
//! answer: the output passes through, a paused build is released at once
//! (or after `--release-after`, or left to its own timeout with
//! `--no-enter`), and each gets a summary line at the end (and a `::error`
//! annotation on GitHub Actions).
//!
//! A derivation whose builder failed without pausing (no hook, nothing
//! injected one) can be built again so that it pauses ([`crate::retry`]):
//! at a terminal the wrapper offers that once nix is done (or does it,
//! with `--enter-on-failure`); without one it prints the `retry` line.
//!
//! May use: [`broker`](crate::broker), [`capture`](crate::capture),
//! [`derivation`](crate::derivation), [`host`](crate::host),
//! [`inject`](crate::inject), [`nix_conf`](crate::nix_conf), [`patch_file`](crate::patch_file),
//! [`pointer`](crate::pointer), [`pump`](crate::pump),
//! [`remote`](crate::remote), [`retry`](crate::retry),
//! [`runtime`](crate::runtime), [`sanitize`](crate::sanitize),
//! [`store`](crate::store), [`waiting`](crate::waiting); no module that uses
//! it (`layout` keeps the arrows one way).

mod batch;
mod builds;
pub mod failures;
mod held;
mod interactive;
pub mod markers;
mod privilege;

use crate::retry::RetryError;
use crate::runtime::RuntimeError;
use std::collections::HashSet;
use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A boxed error of a crate that reports its own (portable-pty's).
type Foreign = Box<dyn std::error::Error + Send + Sync>;

/// Why the wrapper stopped; each names what failed.
#[derive(Debug, thiserror::Error)]
pub enum WrapperError {
    #[error("cannot run {0}")]
    Run(String, #[source] Foreign),
    #[error("cannot open a PTY for nix")]
    Pty(#[source] Foreign),
    #[error("cannot use this terminal")]
    Terminal(#[source] std::io::Error),
    #[error("cannot pass nix's output on")]
    Output(#[source] std::io::Error),
    #[error("cannot hold nix's output back while you are inside a build")]
    Held(#[from] held::HeldError),
    #[error("cannot run `nix-attach {0}` for build {1}")]
    Session(&'static str, String, #[source] std::io::Error),
    #[error("cannot find this program, to reach the builds that pause")]
    Program(#[source] std::io::Error),
    #[error("nix ended, but its status cannot be read")]
    Wait(#[source] std::io::Error),
    #[error("--patch-dir {0} is not a directory: make it first")]
    PatchDir(std::path::PathBuf),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Retry(#[from] RetryError),
}

/// What to do when a build pauses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enter {
    /// Ask `[Y/n]`.
    Ask,
    /// Enter without asking.
    Always,
    /// Only say how to enter.
    Never,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub enter: Enter,
    /// How long the prompt waits for an answer before it releases the build.
    pub release_after: Option<Duration>,
    /// Whether a derivation that failed without pausing is offered for
    /// `retry` (not when the build is already a retry).
    pub offer_retries: bool,
    /// Without a terminal, where each paused build is captured before it
    /// is released.
    pub capture: Option<std::path::PathBuf>,
    /// Without a terminal, commands run in each paused build's restored
    /// shell before it is captured or released, their output in the log.
    pub on_failure: Option<String>,
    /// Where the changes a session made to a build's source are kept, as
    /// a patch, once the person leaves it and before it is released.
    pub patch_dir: Option<std::path::PathBuf>,
}

/// How the wrapped command ended.
pub struct Outcome {
    /// Its exit status.
    pub code: i32,
    /// The derivations the person chose to build again so they pause.
    pub retries: Vec<PathBuf>,
}

impl Outcome {
    fn ended(code: i32) -> Outcome {
        Outcome { code, retries: Vec::new() }
    }
}

/// Runs `program args…`, after a line on whether builds without the hook
/// pause here; returns its exit status.
pub fn run(program: OsString, args: Vec<OsString>, options: Options) -> Result<i32, WrapperError> {
    eprintln!("nix-attach: {}", crate::inject::notice());
    watch(program, args, options)
}

/// Runs `program args…` and offers to enter the builds that pause, then
/// builds again those the person chose; returns the command's status,
/// whatever the builds again did.
pub fn watch(program: OsString, args: Vec<OsString>, options: Options) -> Result<i32, WrapperError> {
    // Said before nix runs, not once a session's changes are to be kept.
    if let Some(dir) = options.patch_dir.as_ref().filter(|dir| !dir.is_dir()) {
        return Err(WrapperError::PatchDir(dir.clone()));
    }
    let outcome = crate::runtime::run(async {
        if attended() {
            interactive::run(&program, &args, &options).await
        } else {
            batch::run(&program, &args, &options).await
        }
    })??;
    for drv in &outcome.retries {
        if let Err(err) = rebuild(drv, options.clone()) {
            eprintln!("nix-attach: cannot build {} again: {}", drv.display(), crate::sanitize::sanitize(&chain(&err)));
        }
    }
    Ok(outcome.code)
}

/// Builds the derivation at `drv_path` again so that it pauses
/// ([`crate::retry`] decides how), and watches that build; returns its
/// status.
pub fn rebuild(drv_path: &Path, options: Options) -> Result<i32, WrapperError> {
    let rebuild = crate::retry::prepare(drv_path)?;
    eprintln!("nix-attach: {}", rebuild.line);
    watch("nix-build".into(), rebuild.args, Options { offer_retries: false, ..options })
}

/// An error and its sources, as one line.
fn chain(err: &dyn std::error::Error) -> String {
    let mut line = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        line.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    line
}

/// Someone is at a terminal: stdin and stdout are terminals and `CI` is unset.
fn attended() -> bool {
    let ci = std::env::var_os("CI").is_some_and(|value| !value.is_empty());
    std::io::stdin().is_terminal() && std::io::stdout().is_terminal() && !ci
}

/// The failed derivations whose names did not pause (and that may have
/// failed: see [`crate::store::may_have_failed`]).
fn unpaused(failed: &[PathBuf], paused: &HashSet<String>) -> Vec<PathBuf> {
    let unpaused = failed.iter().filter(|drv| !paused.contains(&crate::derivation::name_of(drv)));
    unpaused.filter(|drv| crate::store::may_have_failed(drv)).cloned().collect()
}

/// What to run to enter `drv`, which failed without pausing.
fn retry_line(drv: &Path) -> String {
    format!("{}; to enter it, build it again so that it pauses: nix-attach retry {}", unpaused_line(drv), drv.display())
}

/// `NAME failed without pausing`, with why where the daemon's pre-build
/// hook is on and left it alone.
fn unpaused_line(drv: &Path) -> String {
    let name = crate::derivation::name_of(drv);
    match crate::inject::why_unhooked(drv) {
        Some(why) => format!("{name} failed without pausing ({why})"),
        None => format!("{name} failed without pausing"),
    }
}
