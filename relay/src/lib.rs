//! nix-attach: pause a failing Nix build and attach a shell to it, inside its
//! sandbox, with the builder's shell state restored.
//!
//! The crate has two halves that share one static binary:
//! - [`agent`] runs inside the build sandbox, started by the setup hook when a
//!   build fails. It listens on a unix socket in the build directory and
//!   gives every client a shell with the build's state.
//! - [`host`] runs on the host: it connects to a waiting build's socket and
//!   relays the user's terminal.
//!
//! - [`waiting`] finds the builds that wait, who asked for each, and
//!   reaches one; [`host`] and the [`broker`] both stand on it.
//! - [`wrapper`] is `nix-attach build`/`run`: it runs nix and offers to enter
//!   the builds that pause; it also runs `retry`'s builds.
//! - [`inject`] is the daemon's pre-build hook: it puts the hook into a
//!   build at sandbox setup, where the daemon allows it.
//! - [`retry`] decides how a failed derivation is built again so that it
//!   pauses, with no edit to its expression.
//! - [`remote`] runs a command on a remote builder over ssh (`--via`).
//! - `capture` ([`host::capture`], [`agent`]'s capture session) makes a
//!   paused build portable: one file, [`capture`]; [`replay`] enters it
//!   later, elsewhere, in a sandbox bubblewrap recreates.
//! - [`broker`] is a small root service that hands each ordinary user a
//!   connection to the builds that user asked for, so nobody needs sudo.
//!
//! They speak the framed [`protocol`], and an attach's PTY master passes
//! from agent to client beside it ([`handoff`]); [`metadata`] describes a
//! waiting build, [`derivation`] reads a `.drv` file, [`gc_roots`] keeps what a
//! build is lent from the garbage collector, [`store`] asks the
//! Nix store through Nix's commands, [`nix_conf`] reads what this
//! machine's Nix is set to and [`nix_program`] asks its programs, [`patch_file`] keeps a session's
//! patch outside its sandbox,
//! [`pointer`](mod@pointer) is the log line that says how to attach,
//! [`pump`] moves bytes between threads and tasks, [`runtime`] runs each
//! command's async part, [`sanitize`] makes anything a build wrote safe
//! to print, and [`terminal_filter`] keeps what a build prints from
//! reaching past the user's screen (clipboard, queries).
//!
//! Every arrow between these modules runs one way; each module's opening
//! comment says which it may use, and a test (`layout`) fails on a circle.
//! From the bottom up: the shared pieces above; then `waiting`; `agent`,
//! `broker`, `inject`, `remote`; `host`, `retry`; `replay`, `wrapper`;
//! and `cli`, the binary's edge.

pub mod agent;
pub mod broker;
pub mod capture;
pub mod cli;
pub mod derivation;
pub mod gc_roots;
pub mod handoff;
pub mod host;
pub mod inject;
#[cfg(test)]
mod layout;
pub mod metadata;
pub mod nix_conf;
pub mod nix_program;
pub mod patch_file;
pub mod pointer;
pub mod protocol;
pub mod pump;
pub mod remote;
pub mod replay;
pub mod retry;
pub mod runtime;
pub mod sanitize;
pub mod store;
pub mod terminal_filter;
#[cfg(test)]
pub mod testing;
pub mod tools;
pub mod waiting;
pub mod wrapper;
