//! nix's output held back while a person answers the prompt or is inside a
//! build, to be shown once they are back.
//!
//! A session can last hours while nix goes on printing (other builds, `-L`
//! logs). The first [`IN_MEMORY`] bytes are kept in memory; the rest goes
//! to an unlinked temporary file, so a long session costs no memory and
//! nothing is lost. If no temporary file can be made (a full or read-only
//! temporary directory), or it fills up, the output stays in memory rather
//! than be dropped, and holding it never fails.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// How much held output is kept in memory before it goes to a file.
pub const IN_MEMORY: usize = 1024 * 1024;
/// How much of the file is read back at a time.
const REPLAY_CHUNK: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum HeldError {
    #[error("cannot read nix's output back from the temporary file")]
    ReadBack(#[source] std::io::Error),
    #[error("cannot show nix's held output")]
    Show(#[source] std::io::Error),
}

/// Output held back, in the order it came: in memory, then in the file,
/// then, once the file could take no more, in memory again.
#[derive(Debug, Default)]
pub struct Held {
    memory: Vec<u8>,
    file: Option<File>,
    after_file: Vec<u8>,
}

impl Held {
    /// Keeps `chunk` after what is held already.
    pub fn push(&mut self, chunk: &[u8]) {
        if self.file.is_none() && self.memory.len() + chunk.len() > IN_MEMORY {
            self.file = unlinked_file(&std::env::temp_dir()).ok();
        }
        match &mut self.file {
            Some(file) if self.after_file.is_empty() => {
                let written = write_what_fits(file, chunk);
                self.after_file.extend_from_slice(&chunk[written..]);
            }
            Some(_) => self.after_file.extend_from_slice(chunk),
            None => self.memory.extend_from_slice(chunk),
        }
    }

    /// Writes everything held to `to`, in order, and lets it go.
    pub async fn show<W: AsyncWrite + Unpin>(self, to: &mut W) -> Result<(), HeldError> {
        to.write_all(&self.memory).await.map_err(HeldError::Show)?;
        if let Some(mut file) = self.file {
            file.seek(SeekFrom::Start(0)).map_err(HeldError::ReadBack)?;
            let mut buffer = vec![0; REPLAY_CHUNK];
            loop {
                let read = file.read(&mut buffer).map_err(HeldError::ReadBack)?;
                if read == 0 {
                    break;
                }
                to.write_all(&buffer[..read]).await.map_err(HeldError::Show)?;
            }
        }
        to.write_all(&self.after_file).await.map_err(HeldError::Show)?;
        to.flush().await.map_err(HeldError::Show)
    }
}

/// Writes as much of `bytes` to `file` as it takes; returns how much.
fn write_what_fits(file: &mut File, bytes: &[u8]) -> usize {
    let mut written = 0;
    while written < bytes.len() {
        match file.write(&bytes[written..]) {
            Ok(0) => break,
            Ok(n) => written += n,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    written
}

/// A file in `dir` that no name reaches: made with a random name, private,
/// and unlinked at once, so it goes away with this process.
fn unlinked_file(dir: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut random = [0u8; 8];
    getrandom::fill(&mut random).map_err(|err| std::io::Error::other(err.to_string()))?;
    let name: String = random.iter().map(|b| format!("{b:02x}")).collect();
    let path = dir.join(format!(".nix-attach-held-{name}"));
    let file = std::fs::OpenOptions::new().read(true).write(true).create_new(true).mode(0o600).open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(held: Held) -> Vec<u8> {
        let mut out = Vec::new();
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(held.show(&mut out)).unwrap();
        out
    }

    #[test]
    fn output_past_the_memory_bound_goes_to_a_file_and_comes_back_in_order() {
        let mut held = Held::default();
        let mut sent = Vec::new();
        for i in 0..40u32 {
            let chunk: Vec<u8> = (0..100_000u32).map(|n| ((n + i) % 251) as u8).collect();
            held.push(&chunk);
            sent.extend_from_slice(&chunk);
        }
        assert!(held.memory.len() <= IN_MEMORY, "held {} bytes in memory", held.memory.len());
        assert!(held.file.is_some());
        assert!(shown(held) == sent, "the output came back changed");
    }

    #[test]
    fn output_the_file_cannot_take_stays_in_memory_in_order() {
        let mut held = Held::default();
        let first = vec![b'a'; IN_MEMORY];
        held.push(&first);
        // A file that takes nothing, as a full temporary directory's.
        held.file = Some(File::open("/dev/null").unwrap());
        held.push(b"then ");
        held.push(b"more");
        assert_eq!(shown(held), [&first[..], b"then more"].concat());
    }

    #[test]
    fn a_little_output_stays_in_memory() {
        let mut held = Held::default();
        held.push(b"nix says hello\n");
        assert!(held.file.is_none());
        assert_eq!(shown(held), b"nix says hello\n");
    }

    #[test]
    fn the_temporary_file_has_no_name() {
        let dir = std::env::temp_dir().join(format!("held-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let _file = unlinked_file(&dir).unwrap();
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        std::fs::remove_dir(&dir).unwrap();
    }
}
