//! The builds that wait for a session: where they are, who asked for
//! them, and how to reach one. Both the host's commands ([`crate::host`])
//! and the broker ([`crate::broker`]) stand on this; it stands only on
//! [`crate::metadata`], [`crate::nix_conf`] and [`crate::sanitize`].
//!
//! The waiting builds are found from their running agents
//! ([`discovery`]), trusting only agents that run as builds ([`builders`]),
//! each seen through one handle on its `/proc` entry ([`process`]). Who
//! asked for each is what the kernel says ([`requester`]); `list` shows
//! each as a [`listing`]. A command picks one ([`select`]) and connects to
//! its agent without trusting the build directory ([`connect`]).
//!
//! May use: [`metadata`](crate::metadata), [`nix_conf`](crate::nix_conf),
//! [`sanitize`](crate::sanitize); no module that uses it (`layout` keeps the
//! arrows one way).

pub mod builders;
pub mod connect;
pub mod discovery;
pub mod listing;
pub mod process;
pub mod requester;
pub mod select;
