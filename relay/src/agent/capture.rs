//! A capture session: the build directory as the sandbox has it, the shell
//! snapshot inside it, and what the sandbox is, streamed as a plain tar
//! archive ([`crate::capture`]) in output frames, then the exit status.
//!
//! A thread of its own walks and reads (both block) and writes the archive
//! into a channel that this session sends on; a client that leaves closes
//! the channel, and the walk stops at its next write. Links are archived
//! as links, never followed; sockets, fifos and device files are left out
//! and named in the manifest.

use super::{SessionContext, SessionError};
use crate::capture::{plain_mode, Sandbox, BUILD, FORMAT, MANIFEST, MAX_LEFT_OUT};
use crate::metadata::STATE_DIR;
use crate::protocol::{AgentCodec, AgentFrame};
use crate::pump::ChannelWriter;
use futures_util::SinkExt;
use std::fs::{self, File, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tokio_util::codec::Framed;

/// Chunks of the archive in flight between the walk and the socket.
const IN_FLIGHT: usize = 8;
/// Top-level directories of the sandbox that `other_paths` does not list:
/// the kernel's, the store's and scratch space.
const NOT_LISTED: &[&str] = &["proc", "dev", "nix", "tmp", "sys"];

/// Streams the capture to one client.
pub async fn run(mut framed: Framed<UnixStream, AgentCodec>, context: &SessionContext) -> Result<(), SessionError> {
    let (tx, mut rx) = mpsc::channel(IN_FLIGHT);
    let (build_top, name) = (context.build_top.clone(), context.name.clone());
    let (cwd, shell) = (context.cwd.clone(), context.shell.clone());
    // Whole chunks: tar writes in pieces of a few KiB, and each chunk is a frame.
    let out = std::io::BufWriter::with_capacity(crate::protocol::CHUNK, ChannelWriter(tx));
    let walk = tokio::task::spawn_blocking(move || write_archive(out, &build_top, name, &cwd, &shell));
    while let Some(chunk) = rx.recv().await {
        framed.send(AgentFrame::Output(chunk)).await?;
    }
    let last = match walk.await {
        Ok(Ok(())) => AgentFrame::Exit(0),
        Ok(Err(err)) => AgentFrame::Error(format!("cannot capture the build directory: {err}")),
        Err(_) => AgentFrame::Error("the capture stopped unexpectedly".into()),
    };
    framed.send(last).await?;
    Ok(())
}

/// Writes the whole archive: the build directory under [`BUILD`], then the
/// manifest.
fn write_archive(out: impl Write, build_top: &Path, name: String, cwd: &Path, shell: &Path) -> io::Result<()> {
    let mut archive = tar::Builder::new(out);
    let mut left_out = Vec::new();
    add_tree(&mut archive, build_top, Path::new(BUILD), &mut left_out)?;
    let sandbox = Sandbox {
        format: FORMAT,
        name,
        build_top: build_top.to_string_lossy().into_owned(),
        cwd: cwd.to_string_lossy().into_owned(),
        shell: shell.to_string_lossy().into_owned(),
        hostname: nix::unistd::gethostname().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default(),
        uid: nix::unistd::getuid().as_raw(),
        gid: nix::unistd::getgid().as_raw(),
        store_paths: store_paths()?,
        other_paths: other_paths(build_top),
        left_out,
    };
    let manifest = serde_json::to_vec_pretty(&sandbox)?;
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(0o644);
    header.set_size(manifest.len() as u64);
    archive.append_data(&mut header, MANIFEST, &manifest[..])?;
    archive.into_inner()?.flush()
}

/// Adds `dir` as `name`, and everything below it, in name order.
fn add_tree<W: Write>(archive: &mut tar::Builder<W>, dir: &Path, name: &Path, left_out: &mut Vec<String>) -> io::Result<()> {
    let meta = fs::symlink_metadata(dir)?;
    archive.append_data(&mut header(&meta, tar::EntryType::Directory, 0), name, io::empty())?;
    let mut entries = fs::read_dir(dir)?.collect::<io::Result<Vec<_>>>()?;
    entries.sort_by_key(|entry| entry.file_name());
    for entry in entries {
        let (path, inner) = (entry.path(), name.join(entry.file_name()));
        // The agent's list of what was there at the pause, as long as the
        // tree: a replay makes its own.
        if inner == Path::new(BUILD).join(STATE_DIR).join(super::PRESENT_AT_PAUSE) {
            continue;
        }
        let meta = fs::symlink_metadata(&path)?;
        let kind = meta.file_type();
        if kind.is_dir() {
            add_tree(archive, &path, &inner, left_out)?;
        } else if let Some(file) = kind.is_file().then(|| still_a_file(&path)).flatten() {
            let file = Exactly { file, left: meta.len() };
            archive.append_data(&mut header(&meta, tar::EntryType::Regular, meta.len()), &inner, file)?;
        } else if kind.is_symlink() {
            archive.append_link(&mut header(&meta, tar::EntryType::Symlink, 0), &inner, fs::read_link(&path)?)?;
        } else if left_out.len() < MAX_LEFT_OUT {
            left_out.push(inner.strip_prefix(BUILD).unwrap_or(&inner).to_string_lossy().into_owned());
        }
    }
    Ok(())
}

/// The file at `path`, opened if it is a regular file still: the build
/// may have put a link or a fifo in its place since it was listed, and
/// neither is followed or waited on (it is left out, as one listed so).
fn still_a_file(path: &Path) -> Option<File> {
    let flags = nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_NONBLOCK;
    let file = fs::OpenOptions::new().read(true).custom_flags(flags.bits()).open(path).ok()?;
    file.metadata().ok()?.is_file().then_some(file)
}

fn header(meta: &Metadata, kind: tar::EntryType, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(plain_mode(meta.mode()));
    header.set_mtime(meta.mtime().max(0) as u64);
    header.set_uid(u64::from(meta.uid()));
    header.set_gid(u64::from(meta.gid()));
    header.set_size(size);
    header
}

/// A file read as exactly the size its header declares: cut where it has
/// grown since, padded with zeros where it has shrunk (a session may be
/// writing to it), so that the archive stays whole.
struct Exactly {
    file: File,
    left: u64,
}

impl Read for Exactly {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n = match self.file.read(&mut buf[..want])? {
            0 => {
                buf[..want].fill(0);
                want
            }
            n => n,
        };
        self.left -= n as u64;
        Ok(n)
    }
}

/// Every store path the sandbox has: inside it, the store directory holds
/// the build's input closure and nothing else.
fn store_paths() -> io::Result<Vec<String>> {
    let store = PathBuf::from(super::store_dir());
    let mut paths: Vec<String> =
        fs::read_dir(&store)?.flatten().map(|entry| store.join(entry.file_name()).to_string_lossy().into_owned()).collect();
    paths.sort();
    Ok(paths)
}

/// What else the sandbox has at its root, one level down (`/bin/sh`,
/// `/etc/passwd`), but the kernel's, the store's, scratch space and the
/// build directory.
fn other_paths(build_top: &Path) -> Vec<String> {
    let build_root = build_top.components().nth(1).map(|first| first.as_os_str().to_owned());
    let mut paths = Vec::new();
    let Ok(top) = fs::read_dir("/") else { return paths };
    for entry in top.flatten() {
        let name = entry.file_name();
        if NOT_LISTED.iter().any(|skip| name == *skip) || Some(&name) == build_root.as_ref() {
            continue;
        }
        let path = Path::new("/").join(&name);
        match fs::read_dir(&path) {
            Ok(inner) => paths.extend(inner.flatten().map(|entry| path.join(entry.file_name()).to_string_lossy().into_owned())),
            Err(_) => paths.push(path.to_string_lossy().into_owned()),
        }
    }
    paths.sort();
    paths.truncate(MAX_LEFT_OUT);
    paths
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_the_build_swapped_for_a_fifo_or_a_link_is_left_out_without_waiting() {
        let dir = std::env::temp_dir().join(format!("nix-attach-still-a-file-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let (plain, fifo, link) = (dir.join("plain"), dir.join("fifo"), dir.join("link"));
        fs::write(&plain, "x").unwrap();
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        std::os::unix::fs::symlink(&plain, &link).unwrap();
        let paths = [plain, fifo, link];
        let opened = crate::testing::never_blocks("opening a fifo", move || paths.map(|path| still_a_file(&path).is_some()));
        assert_eq!(opened, [true, false, false]);
        fs::remove_dir_all(&dir).unwrap();
    }
}
