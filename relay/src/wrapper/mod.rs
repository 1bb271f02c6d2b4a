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

mod batch;
mod held;
mod interactive;
pub mod markers;
mod privilege;

use std::ffi::OsString;
use std::io::IsTerminal;
use std::time::Duration;

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
}

/// Runs `program args…` and returns its exit status.
pub fn run(program: OsString, args: Vec<OsString>, options: Options) -> anyhow::Result<i32> {
    eprintln!("nix-attach: {}", crate::inject::notice());
    crate::runtime::run(async {
        if attended() {
            interactive::run(&program, &args, &options).await
        } else {
            batch::run(&program, &args, &options).await
        }
    })?
}

/// Someone is at a terminal: stdin and stdout are terminals and `CI` is unset.
fn attended() -> bool {
    let ci = std::env::var_os("CI").is_some_and(|value| !value.is_empty());
    std::io::stdin().is_terminal() && std::io::stdout().is_terminal() && !ci
}
