//! `NIX_ATTACH_ON_FAILURE`: commands run in the restored shell at the
//! failure, before the build waits, so that a CI log shows what a person
//! would have looked at first (`cat config.log`) without anyone attaching.
//!
//! Their output, stdout and stderr together, goes to the build log, at most
//! [`LIMIT`] bytes of it, and they may run at most [`PATIENCE`]. Their
//! status is reported and changes nothing: the build fails with its own.

use super::exec::command;
use super::SessionContext;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// The most output that reaches the log.
pub const LIMIT: usize = 64 * 1024;
/// How long the commands may run.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Runs `commands` and writes what they print to the build log.
pub async fn run(context: &SessionContext, commands: &str) {
    eprintln!("nix-attach: NIX_ATTACH_ON_FAILURE: {}", crate::sanitize::sanitize(commands));
    let ended = match output(context, commands).await {
        Ok((printed, cut, status)) => {
            eprint!("{}", String::from_utf8_lossy(&printed));
            if !printed.ends_with(b"\n") && !printed.is_empty() {
                eprintln!();
            }
            let cut = if cut { format!("; output cut at {LIMIT} bytes") } else { String::new() };
            match status {
                Some(code) => format!("ended with status {code}{cut}"),
                None => format!("stopped after {} s{cut}", PATIENCE.as_secs()),
            }
        }
        Err(err) => format!("could not run: {err}"),
    };
    eprintln!("nix-attach: NIX_ATTACH_ON_FAILURE {ended}; the build fails with its own status");
}

/// What the commands printed (at most [`LIMIT`] bytes), whether more was
/// cut, and their status (`None` where they were stopped).
async fn output(context: &SessionContext, commands: &str) -> std::io::Result<(Vec<u8>, bool, Option<i32>)> {
    let (reader, writer) = std::io::pipe()?;
    let mut child =
        command(context, &["eval".into(), commands.into()]).stdin(Stdio::null()).stdout(writer.try_clone()?).stderr(writer).spawn()?;
    let group = child.id().map(|pid| nix::unistd::Pid::from_raw(pid as i32));
    let mut reader = tokio::net::unix::pipe::Receiver::from_owned_fd(std::os::fd::OwnedFd::from(reader))?;
    let (mut printed, mut cut) = (Vec::new(), false);
    let read_all = async {
        let mut buffer = [0u8; 8192];
        // To the end of the output, which outlives the shell only where it
        // left something running; the rest past the limit is read and dropped.
        while let Ok(n @ 1..) = reader.read(&mut buffer).await {
            let room = LIMIT - printed.len();
            cut |= n > room;
            printed.extend_from_slice(&buffer[..n.min(room)]);
        }
        child.wait().await
    };
    let status = match tokio::time::timeout(PATIENCE, read_all).await {
        Ok(status) => Some(status?.code().unwrap_or(-1)),
        Err(_) => None,
    };
    if let Some(group) = group {
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
    }
    Ok((printed, cut, status))
}
