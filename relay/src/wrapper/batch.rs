//! The wrapper without a terminal (pipes, or CI): nix's output passes
//! through untouched and nothing ever waits for an answer. Each paused build
//! gets one summary line at the end, and a `::error` workflow command on
//! GitHub Actions as soon as it is seen.

use super::markers::Markers;
use crate::pointer::Pointer;
use crate::pump::read_some;
use anyhow::Context;
use bytes::BytesMut;
use std::ffi::{OsStr, OsString};
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::process::Command;

/// Runs `program args…`, passing its output through, and returns its status.
pub async fn run(program: &OsStr, args: &[OsString]) -> anyhow::Result<i32> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::inherit())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {}", program.to_string_lossy()))?;
    let (mut out, mut err) = (child.stdout.take(), child.stderr.take());
    let (mut out_buffer, mut err_buffer) = (BytesMut::new(), BytesMut::new());
    let (mut out_markers, mut err_markers) = (Markers::default(), Markers::default());
    let (mut stdout, mut stderr) = (tokio::io::stdout(), tokio::io::stderr());
    let mut paused: Vec<Pointer> = Vec::new();
    while out.is_some() || err.is_some() {
        let found = tokio::select! {
            Some(chunk) = read_some(&mut out, &mut out_buffer) => pass(&mut stdout, &mut out_markers, &chunk).await?,
            Some(chunk) = read_some(&mut err, &mut err_buffer) => pass(&mut stderr, &mut err_markers, &chunk).await?,
            else => Vec::new(),
        };
        for pointer in found {
            if !paused.iter().any(|known| known.id == pointer.id) {
                annotate(&pointer).await?;
                paused.push(pointer);
            }
        }
    }
    let status = child.wait().await?;
    for pointer in &paused {
        eprintln!("{}", summary_line(pointer));
    }
    Ok(status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}

async fn pass<W: AsyncWrite + Unpin>(to: &mut W, markers: &mut Markers, chunk: &[u8]) -> anyhow::Result<Vec<Pointer>> {
    to.write_all(chunk).await?;
    to.flush().await?;
    Ok(markers.feed(chunk))
}

/// The line printed at the end for each build that paused.
pub fn summary_line(pointer: &Pointer) -> String {
    format!("nix-attach: paused: {} — it waited for `sudo nix-attach attach {}`, then failed as usual", pointer.summary, pointer.id)
}

/// On GitHub Actions, a `::error` workflow command with the same pointer.
async fn annotate(pointer: &Pointer) -> anyhow::Result<()> {
    if std::env::var("GITHUB_ACTIONS").as_deref() == Ok("true") {
        let line =
            format!("::error title=nix-attach::{} — attach with `sudo nix-attach attach {}` while it waits\n", pointer.summary, pointer.id);
        let mut stdout = tokio::io::stdout();
        stdout.write_all(line.as_bytes()).await?;
        stdout.flush().await?;
    }
    Ok(())
}
