//! The host side: finds waiting builds and opens sessions in them.
//!
//! Each command discovers the waiting builds ([`discovery`], trusting only
//! agents that run as builds: [`builders`], each seen through
//! [`process`]), picks one ([`select`]),
//! connects to its agent without trusting the build directory
//! ([`connect`]) and gives up root ([`privileges`]). An attach then relays
//! the user's terminal to the build's PTY, handed over by the agent
//! ([`pty_relay`], [`terminal`]); an exec relays pipes through the agent
//! ([`relay`], [`input`]).

pub mod builders;
pub mod connect;
pub mod discovery;
mod escape;
pub mod input;
pub mod privileges;
pub mod process;
pub mod pty_relay;
pub mod relay;
pub mod select;
pub mod terminal;

use crate::protocol::Request;
use crate::sanitize::{self, sanitize};
use anyhow::Context;
use discovery::{discover, WaitingBuild};
use serde::Serialize;
use std::io::IsTerminal;
use std::path::PathBuf;

/// The exit status for nix-attach's own errors, apart from any shell's.
pub const ERROR_EXIT: i32 = 125;

/// One waiting build as `list --json` prints it.
#[derive(Debug, Serialize)]
struct Listing<'a> {
    id: &'a str,
    drv: &'a str,
    phase: &'a str,
    exit_code: i32,
    command: &'a str,
    stack: &'a [String],
    locals: bool,
    build_dir: String,
    since: u64,
    timeout: u64,
    pid: i32,
    owner_uid: u32,
    hostname: &'a str,
}

impl<'a> From<&'a WaitingBuild> for Listing<'a> {
    fn from(build: &'a WaitingBuild) -> Listing<'a> {
        let meta = &build.meta;
        Listing {
            id: &meta.id,
            drv: &meta.drv,
            phase: &meta.phase,
            exit_code: meta.exit_code,
            command: &meta.command,
            stack: &meta.stack,
            locals: meta.locals,
            build_dir: build.build_dir.to_string_lossy().into_owned(),
            since: meta.since,
            timeout: meta.timeout,
            pid: build.pid,
            owner_uid: build.owner,
            hostname: &meta.hostname,
        }
    }
}

/// `nix-attach list`: prints the waiting builds.
pub fn list(build_dirs: &[PathBuf], json: bool) -> anyhow::Result<i32> {
    let found = discover(build_dirs);
    for (path, err) in &found.skipped {
        eprintln!("nix-attach: skipped {}: {}", sanitize(&path.to_string_lossy()), sanitize(&format!("{err:#}")));
    }
    if json {
        let listings: Vec<Listing> = found.builds.iter().map(Listing::from).collect();
        println!("{}", terminal_safe_json(&serde_json::to_string_pretty(&listings)?));
    } else if found.builds.is_empty() {
        eprintln!("nix-attach: {}", select::SelectError::NoneWaiting { denied: found.denied.len() });
    } else {
        print_table(&found.builds);
    }
    Ok(0)
}

/// JSON with the characters serde_json leaves raw but a terminal would act
/// on (C1 controls, bidi overrides) written as `\uXXXX` escapes. They can
/// only occur inside strings, where the escape means the same; the only raw
/// control serde_json writes is the newline between lines.
fn terminal_safe_json(json: &str) -> String {
    let raw = |c: char| c != '\n' && sanitize::is_unsafe(c);
    json.chars().map(|c| if raw(c) { format!("\\u{:04x}", c as u32) } else { c.to_string() }).collect()
}

#[cfg(test)]
mod tests {
    use super::terminal_safe_json;

    #[test]
    fn json_for_a_terminal_escapes_c1_and_bidi_and_stays_valid() {
        let json = serde_json::to_string_pretty(&serde_json::json!({ "drv": "a\u{9b}2J\u{202e}b\u{1b}" })).unwrap();
        let safe = terminal_safe_json(&json);
        assert!(!safe.contains('\u{9b}') && !safe.contains('\u{202e}') && !safe.contains('\u{1b}'));
        let back: serde_json::Value = serde_json::from_str(&safe).unwrap();
        assert_eq!(back["drv"], "a\u{9b}2J\u{202e}b\u{1b}");
    }
}

fn print_table(builds: &[WaitingBuild]) {
    println!("{:<12}  {:<30}  {:<16}  {:>4}  COMMAND", "ID", "DERIVATION", "PHASE", "EXIT");
    for build in builds {
        let meta = &build.meta;
        let command: String = sanitize(&meta.command).chars().take(60).collect();
        println!("{:<12}  {:<30}  {:<16}  {:>4}  {}", meta.id, sanitize(&meta.drv), sanitize(&meta.phase), meta.exit_code, command);
    }
}

/// `nix-attach attach`: an interactive shell in the build.
pub fn attach(query: Option<&str>) -> anyhow::Result<i32> {
    let (rows, cols) = terminal::size();
    let term = std::env::var("TERM").ok();
    let connection = reach(query)?;
    let (master, frames) = pty_relay::open_session(&connection, Request::Attach { rows, cols, term })?;
    Ok(pty_relay::relay(master, connection, frames, std::io::stdin().is_terminal())?)
}

/// `nix-attach exec`: one command in the build's restored shell.
pub fn exec(query: &str, argv: Vec<String>) -> anyhow::Result<i32> {
    let forward_stdin = !std::io::stdin().is_terminal();
    session(Some(query), Request::Exec { argv }, forward_stdin)
}

/// `nix-attach release`: lets the build fail now.
pub fn release(query: Option<&str>) -> anyhow::Result<i32> {
    session(query, Request::Release, false)
}

/// Connects to the build `query` names, as the sudo user from then on.
/// Running agents are found through /proc, whatever the layout; naming
/// their build directories (what `--build-dir` is for) is not needed here.
fn reach(query: Option<&str>) -> anyhow::Result<std::os::unix::net::UnixStream> {
    let build = select::select(discovery::discover_agents(), query)?;
    let connection =
        connect::connect(&build).with_context(|| format!("cannot reach build {} ({})", build.meta.id, sanitize(&build.meta.drv)))?;
    privileges::drop_to_sudo_user()?;
    Ok(connection)
}

/// Relays one framed session with the build `query` names.
fn session(query: Option<&str>, request: Request, forward_stdin: bool) -> anyhow::Result<i32> {
    let connection = reach(query)?;
    connection.set_nonblocking(true)?;
    crate::runtime::run(async {
        let connection = tokio::net::UnixStream::from_std(connection)?;
        let mut stdin = if forward_stdin { Some(input::Input::start()?) } else { None };
        Ok(relay::relay(connection, request, stdin.as_mut()).await?)
    })?
}
