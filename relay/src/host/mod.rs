//! The host side: finds waiting builds and opens sessions in them.
//!
//! Each command finds the waiting builds and picks one, and connects to
//! its agent, through [`crate::waiting`], and gives up root
//! ([`privileges`]). An ordinary user who may not enter a build directory
//! asks the [`broker`](crate::broker) instead. An attach then relays the
//! user's terminal to the build's PTY, handed over by the agent
//! ([`pty_relay`], [`terminal`]); an exec relays pipes through the agent
//! ([`relay`], [`input`]); a capture writes the build out as a file
//! ([`capture`]).
//!
//! May use: [`broker`](crate::broker), [`capture`](crate::capture),
//! [`handoff`](crate::handoff), [`nix_conf`](crate::nix_conf),
//! [`nix_program`](crate::nix_program), [`protocol`](crate::protocol),
//! [`runtime`](crate::runtime), [`sanitize`](crate::sanitize),
//! [`tools`](crate::tools), [`waiting`](crate::waiting); no module that
//! uses it (`layout` keeps the arrows one way).

pub mod build_terminal;
pub mod capture;
mod escape;
pub mod framed;
pub mod input;
pub mod privileges;
pub mod pty_relay;
pub mod relay;
pub mod terminal;

use crate::broker;
use crate::protocol::Request;
use crate::sanitize::sanitize;
use crate::waiting::discovery::{self, discover};
use crate::waiting::{connect, listing, select};
use anyhow::Context;
use listing::Listing;
use std::io::IsTerminal;
use std::path::PathBuf;

/// The exit status for nix-attach's own errors, apart from any shell's.
pub const ERROR_EXIT: i32 = 125;

/// Says nix-attach's own error in one line on stderr, escaped: errors
/// quote what builds and capture files said, never raw; returns
/// [`ERROR_EXIT`].
pub fn say_error(err: &anyhow::Error) -> i32 {
    eprintln!("nix-attach: error: {}", crate::sanitize::controls_escaped(&format!("{err:#}")));
    ERROR_EXIT
}

/// `nix-attach list`: prints the waiting builds this user can reach:
/// directly, and, for an ordinary user, those it asked for through the
/// broker.
pub fn list(build_dirs: &[PathBuf], json: bool) -> anyhow::Result<i32> {
    let found = discover(build_dirs);
    for (path, err) in &found.skipped {
        eprintln!("nix-attach: skipped {}: {}", sanitize(&path.to_string_lossy()), sanitize(&format!("{err:#}")));
    }
    let mut listings: Vec<Listing> = found.builds.iter().map(Listing::from).collect();
    let mut denied = found.denied.len();
    if denied > 0 && !nix::unistd::geteuid().is_root() {
        match broker::client::list(&broker::socket_path()) {
            Ok(mine) => {
                let new: Vec<Listing> = mine.into_iter().filter(|build| !listings.iter().any(|known| known.id == build.id)).collect();
                listings.extend(new);
                denied = 0;
            }
            Err(err) if err.is_unavailable() => {}
            Err(err) => return Err(err.into()),
        }
    }
    if json {
        println!("{}", listing::to_json(&listings)?);
    } else if listings.is_empty() {
        eprintln!("nix-attach: {}", select::SelectError::NoneWaiting { denied });
    } else {
        listing::print_table(&listings);
    }
    Ok(0)
}

/// `nix-attach attach`: an interactive shell in the build. Unless
/// `unfiltered`, the clipboard and terminal queries are kept from the
/// user's terminal ([`terminal_filter`](crate::terminal_filter)).
/// `with`: tools to bring into the build ([`crate::tools`]).
pub fn attach(query: Option<&str>, unfiltered: bool, with: &[String]) -> anyhow::Result<i32> {
    let (connection, path) = reach_with(query, with)?;
    attach_over(connection, unfiltered, path)
}

/// `nix-attach attach --framed`: the builder's half of `attach --via`
/// over `ssh -T` ([`framed`]).
pub fn attach_framed(query: Option<&str>, with: &[String], term: Option<String>) -> anyhow::Result<i32> {
    framed::attach(|| reach_with(query, with), term)
}

/// An attach's session over a `connection` to an agent, its PATH starting
/// with `path`.
pub fn attach_over(connection: std::os::unix::net::UnixStream, unfiltered: bool, path: Vec<String>) -> anyhow::Result<i32> {
    let (rows, cols) = terminal::size();
    let term = std::env::var("TERM").ok();
    let (master, frames) = pty_relay::open_session(&connection, Request::Attach { rows, cols, term, path })?;
    let filter = (!unfiltered).then(crate::terminal_filter::TerminalFilter::default);
    Ok(pty_relay::relay(build_terminal::BuildTerminal::handed(master, connection), frames, std::io::stdin().is_terminal(), filter)?)
}

/// `nix-attach exec`: one command in the build's restored shell; its
/// output for a terminal is filtered as an attach's is, unless `unfiltered`.
/// `with`: tools to bring into the build ([`crate::tools`]).
pub fn exec(query: &str, argv: Vec<String>, unfiltered: bool, with: &[String]) -> anyhow::Result<i32> {
    let forward_stdin = !std::io::stdin().is_terminal();
    let (connection, path) = reach_with(Some(query), with)?;
    session_over(connection, Request::Exec { argv, path }, forward_stdin, !unfiltered)
}

/// `nix-attach exec --framed`: the builder's half of `exec --via` over
/// `ssh -T` ([`framed`]).
pub fn exec_framed(query: &str, argv: Vec<String>, with: &[String]) -> anyhow::Result<i32> {
    framed::exec(|| reach_with(Some(query), with), argv)
}

/// [`reach`], with the tools `with` names mounted into the build first
/// ([`crate::tools`]); returns the connection and the directories the
/// session's PATH starts with. Root mounts them, or, for an ordinary
/// user, the broker.
fn reach_with(query: Option<&str>, with: &[String]) -> anyhow::Result<(std::os::unix::net::UnixStream, Vec<String>)> {
    if with.is_empty() {
        return Ok((reach(query)?, Vec::new()));
    }
    let wanted = crate::tools::resolve(with)?;
    if !nix::unistd::geteuid().is_root() {
        // The broker mounts them for the build's owner.
        return match broker::client::open_with(&broker::socket_path(), query, &wanted.roots) {
            Err(err) if err.is_unavailable() => Err(crate::tools::ToolsError::NeedsRoot.into()),
            opened => Ok((opened?, wanted.bins)),
        };
    }
    let build = select::select(discovery::discover_agents(false), query)?;
    // The agent is reached and checked first: only then does root mount.
    let connection =
        connect::connect(&build).with_context(|| format!("cannot reach build {} ({})", build.meta.id, sanitize(&build.meta.drv)))?;
    crate::tools::mount_into(build.pid, build.started, &wanted.closure)?;
    privileges::give_up_root()?;
    Ok((connection, wanted.bins))
}

/// `nix-attach release`: lets the build fail now.
pub fn release(query: Option<&str>) -> anyhow::Result<i32> {
    session(query, Request::Release, false, true)
}

/// Connects to the build `query` names, as the sudo user from then on.
/// Running agents are found through /proc, whatever the layout; naming
/// their build directories (what `--build-dir` is for) is not needed here.
/// An ordinary user who may not enter the build directories asks the
/// broker for a build of its own; where none runs, the error says so.
fn reach(query: Option<&str>) -> anyhow::Result<std::os::unix::net::UnixStream> {
    let connection = reach_keeping_root(query)?;
    privileges::give_up_root()?;
    Ok(connection)
}

/// [`reach`], keeping root: for a caller that gives it up itself, in a
/// child process ([`capture`]).
fn reach_keeping_root(query: Option<&str>) -> anyhow::Result<std::os::unix::net::UnixStream> {
    let found = discovery::discover_agents(false);
    let denied = found.denied.len();
    let build = match select::select(found, query) {
        Ok(build) => build,
        Err(err @ (select::SelectError::NoneWaiting { .. } | select::SelectError::NotFound { .. }))
            if denied > 0 && !nix::unistd::geteuid().is_root() =>
        {
            return match broker::client::open(&broker::socket_path(), query) {
                Err(broker_err) if broker_err.is_unavailable() => Err(err.into()),
                through_broker => Ok(through_broker?),
            };
        }
        Err(err) => return Err(err.into()),
    };
    connect::connect(&build).with_context(|| format!("cannot reach build {} ({})", build.meta.id, sanitize(&build.meta.drv)))
}

/// Relays one framed session with the build `query` names.
fn session(query: Option<&str>, request: Request, forward_stdin: bool, filter: bool) -> anyhow::Result<i32> {
    session_over(reach(query)?, request, forward_stdin, filter)
}

/// An exec's session over `connection`, with no input, its output written
/// to `out`, at most `bound` bytes of it; returns its status.
pub fn session_into(connection: std::os::unix::net::UnixStream, request: Request, out: std::fs::File, bound: u64) -> anyhow::Result<i32> {
    connection.set_nonblocking(true)?;
    crate::runtime::run(async {
        let connection = tokio::net::UnixStream::from_std(connection)?;
        Ok(relay::relay_into(connection, request, tokio::fs::File::from_std(out), bound).await?)
    })?
}

/// A framed session over a `connection` to an agent: stdin forwarded if
/// `forward_stdin`, output for a terminal filtered if `filter`.
pub fn session_over(
    connection: std::os::unix::net::UnixStream,
    request: Request,
    forward_stdin: bool,
    filter: bool,
) -> anyhow::Result<i32> {
    connection.set_nonblocking(true)?;
    crate::runtime::run(async {
        let connection = tokio::net::UnixStream::from_std(connection)?;
        let mut stdin = if forward_stdin { Some(input::Input::start()?) } else { None };
        Ok(relay::relay(connection, request, stdin.as_mut(), filter).await?)
    })?
}
