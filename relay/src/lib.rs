//! nix-attach: pause a failing Nix build and attach a shell to it, inside its
//! sandbox, with the builder's shell state restored.
//!
//! The crate has two halves that share one static binary:
//! - [`agent`] runs inside the build sandbox, started by the setup hook when a
//!   build fails. It listens on a unix socket in the build directory and
//!   gives every client a shell with the build's state.
//! - [`host`] runs on the host: it finds waiting builds, connects to their
//!   sockets and relays the user's terminal.
//!
//! - [`wrapper`] is `nix-attach build`/`run`: it runs nix and offers to enter
//!   the builds that pause.
//! - [`inject`] is the daemon's pre-build hook: it puts the hook into a
//!   build at sandbox setup, where the daemon allows it.
//! - [`retry`] builds a failed derivation again so that it pauses, with no
//!   edit to its expression.
//! - [`remote`] runs a command on a remote builder over ssh (`--via`).
//! - `capture` ([`host::capture`], [`agent`]'s capture session) makes a
//!   paused build portable: one file, [`capture`]; [`replay`] enters it
//!   later, elsewhere, in a sandbox bubblewrap recreates.
//! - [`broker`] is a small root service that hands each ordinary user a
//!   connection to the builds that user asked for, so nobody needs sudo.
//!
//! They speak the framed [`protocol`], and an attach's PTY master passes
//! from agent to client beside it ([`handoff`]); [`metadata`] describes a waiting
//! build, [`derivation`] reads a `.drv` file, [`nix_conf`] reads what this machine's Nix is set to, [`pointer`] is the log line that says how to attach, [`pump`]
//! moves bytes between threads and tasks, [`runtime`] runs each command's
//! async part, and [`sanitize`] makes anything a build wrote safe to print.

pub mod agent;
pub mod broker;
pub mod capture;
pub mod cli;
pub mod derivation;
pub mod handoff;
pub mod host;
pub mod inject;
pub mod metadata;
pub mod nix_conf;
pub mod pointer;
pub mod protocol;
pub mod pump;
pub mod remote;
pub mod replay;
pub mod retry;
pub mod runtime;
pub mod sanitize;
pub mod wrapper;
