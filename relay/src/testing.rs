//! Helpers for the crate's unit tests.
//!
//! Uses no other module of the crate.

/// What `work` returns, or a failed test where it has not returned within
/// ten seconds: not a wait for anything to happen, but the bound on a call
/// that would block for ever (a fifo opened without `O_NONBLOCK`), so that
/// the test fails rather than hangs.
pub fn never_blocks<T: Send + 'static>(what: &str, work: impl FnOnce() -> T + Send + 'static) -> T {
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || done.send(work()));
    finished.recv_timeout(std::time::Duration::from_secs(10)).unwrap_or_else(|_| panic!("{what} blocked"))
}
