//! The one-threaded tokio runtime every command runs on: the agent, the
//! host's sessions and the wrapper each run one future to its end.
//!
//! Uses no other module of the crate.

use std::future::Future;

#[derive(Debug, thiserror::Error)]
#[error("cannot start the async runtime")]
pub struct RuntimeError(#[source] std::io::Error);

/// Runs `future` to its end on a fresh current-thread runtime.
pub fn run<F: Future>(future: F) -> Result<F::Output, RuntimeError> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(RuntimeError)?;
    let output = runtime.block_on(future);
    // Threads blocked reading a terminal or a PTY cannot be joined; leaving
    // them is fine, the process ends them.
    runtime.shutdown_background();
    Ok(output)
}
