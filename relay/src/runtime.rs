//! The one-threaded tokio runtime every command runs on: the agent, the
//! host's sessions and the wrapper each run one future to its end.
//!
//! Uses no other module of the crate.

use anyhow::Context;
use std::future::Future;

/// Runs `future` to its end on a fresh current-thread runtime.
pub fn run<F: Future>(future: F) -> anyhow::Result<F::Output> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start the async runtime")?;
    let output = runtime.block_on(future);
    // Threads blocked reading a terminal or a PTY cannot be joined; leaving
    // them is fine, the process ends them.
    runtime.shutdown_background();
    Ok(output)
}
