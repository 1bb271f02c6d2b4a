//! Unpacks a capture file into a scratch directory, treating it as hostile:
//! someone handed it over, often from someone else's CI job.
//!
//! Every entry is checked as `capture` checks it (plain paths under
//! `build/`, files, directories and links only, permission bits only), and
//! more: no entry may be reached through a link the archive made, no file
//! is written over anything (`O_EXCL`, `O_NOFOLLOW`), the sizes the
//! headers declare are bounded in all, and a cut or corrupt stream is an
//! error. Nothing is written outside `into`.

use crate::capture::{
    self, plain_mode, CaptureError, Checked, CheckedEntries, EntryKind, Manifest, DERIVATION, MANIFEST, MAX_DERIVATION, MAX_MANIFEST,
};
use std::collections::HashSet;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("cannot open {0}")]
    Open(PathBuf, #[source] io::Error),
    #[error("the capture is not a valid archive (cut short or corrupt)")]
    Archive(#[source] io::Error),
    #[error("the capture is not valid")]
    Capture(#[from] CaptureError),
    #[error("archive entry {0:?} is reached through a link in the archive")]
    ThroughLink(String),
    #[error("archive entry {0:?} comes twice")]
    Twice(String),
    #[error("the capture's derivation is larger than {MAX_DERIVATION} bytes")]
    DerivationTooLarge,
    #[error("the capture unpacks to more than {0} bytes; raise the bound with --max-size")]
    TooLarge(u64),
    #[error("cannot unpack {0}")]
    Write(String, #[source] io::Error),
}

/// Unpacks the capture `file` into the directory `into` (which must exist,
/// empty and ours), at most `max_size` bytes in all; returns its manifest.
pub fn unpack(file: &Path, into: &Path, max_size: u64) -> Result<Manifest, UnpackError> {
    let opened = fs::File::open(file).map_err(|err| UnpackError::Open(file.to_path_buf(), err))?;
    let decoder = zstd::Decoder::new(opened).map_err(UnpackError::Archive)?;
    unpack_archive(&mut tar::Archive::new(decoder), into, max_size)
}

fn unpack_archive<R: Read>(archive: &mut tar::Archive<R>, into: &Path, max_size: u64) -> Result<Manifest, UnpackError> {
    let (mut manifest, mut links, mut seen, mut left) = (None, HashSet::new(), HashSet::new(), max_size);
    let mut entries = CheckedEntries::new(archive)?;
    while let Some(Checked { path, target, kind, mut entry }) = entries.next_checked()? {
        let shown = path.to_string_lossy().into_owned();
        if !seen.insert(path.clone()) {
            return Err(UnpackError::Twice(shown));
        }
        if path.ancestors().skip(1).any(|ancestor| links.contains(ancestor)) {
            return Err(UnpackError::ThroughLink(shown));
        }
        left = left.checked_sub(entry.size()).ok_or(UnpackError::TooLarge(max_size))?;
        if path == Path::new(MANIFEST) {
            manifest = Some(read_manifest(&mut entry)?);
            continue;
        }
        if path == Path::new(DERIVATION) && entry.size() > MAX_DERIVATION {
            return Err(UnpackError::DerivationTooLarge);
        }
        let at = into.join(&path);
        let mode = plain_mode(entry.header().mode().unwrap_or(0o644));
        let written = match kind {
            EntryKind::Directory => fs::DirBuilder::new().mode(mode | 0o700).create(&at),
            EntryKind::File => write_file(&mut entry, &at, mode),
            EntryKind::Symlink => {
                links.insert(path.clone());
                std::os::unix::fs::symlink(target.unwrap_or_default(), &at)
            }
        };
        written.map_err(|err| UnpackError::Write(shown, err))?;
    }
    let manifest: Manifest = manifest.ok_or(CaptureError::NoManifest)?;
    let store = crate::nix_conf::store_dir();
    manifest.sandbox.check(&store)?;
    manifest.origin.check(&store)?;
    Ok(manifest)
}

/// Writes a new file, never over anything, and never through a link.
fn write_file(entry: &mut impl Read, target: &Path, mode: u32) -> io::Result<()> {
    let mut file =
        fs::OpenOptions::new().write(true).create_new(true).mode(mode).custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits()).open(target)?;
    io::copy(entry, &mut file)?;
    Ok(())
}

fn read_manifest(entry: &mut impl Read) -> Result<Manifest, UnpackError> {
    let mut text = Vec::new();
    entry.take(MAX_MANIFEST + 1).read_to_end(&mut text).map_err(UnpackError::Archive)?;
    Ok(capture::parse_manifest(&text)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A raw tar entry, as a hostile file would have it.
    fn raw(name: &str, kind: tar::EntryType, data: &[u8], link: Option<&str>) -> Vec<u8> {
        crate::capture::raw_entry(name, kind, data, data.len() as u64, link)
    }

    fn unpack_raw(entries: &[Vec<u8>], max: u64) -> (tempdir::Scratch, Result<Manifest, UnpackError>) {
        let mut bytes = entries.concat();
        bytes.extend_from_slice(&[0; 1024]);
        let scratch = tempdir::Scratch::new();
        let result = unpack_archive(&mut tar::Archive::new(&bytes[..]), &scratch.0, max);
        (scratch, result)
    }

    mod tempdir {
        pub struct Scratch(pub std::path::PathBuf);
        impl Scratch {
            pub fn new() -> Scratch {
                static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
                let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let dir = std::env::temp_dir().join(format!("nix-attach-unpack-test-{}-{n}", std::process::id()));
                std::fs::create_dir_all(&dir).unwrap();
                Scratch(dir)
            }
        }
        impl Drop for Scratch {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn an_entry_through_a_link_of_the_archive_is_refused_and_nothing_lands_outside() {
        let outside = std::env::temp_dir().join(format!("nix-attach-unpack-outside-{}", std::process::id()));
        std::fs::create_dir_all(&outside).unwrap();
        let link = raw("build/out", tar::EntryType::Symlink, b"", Some(outside.to_str().unwrap()));
        let (_scratch, result) = unpack_raw(
            &[raw("build", tar::EntryType::Directory, b"", None), link, raw("build/out/x", tar::EntryType::Regular, b"x", None)],
            1 << 20,
        );
        assert!(matches!(result, Err(UnpackError::ThroughLink(_))), "{result:?}");
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
        std::fs::remove_dir_all(&outside).unwrap();
    }

    #[test]
    fn a_file_is_never_written_over_a_link_or_twice() {
        let dir = raw("build", tar::EntryType::Directory, b"", None);
        let link = raw("build/f", tar::EntryType::Symlink, b"", Some("/etc/passwd"));
        let (_scratch, result) = unpack_raw(&[dir.clone(), link, raw("build/f", tar::EntryType::Regular, b"x", None)], 1 << 20);
        assert!(matches!(result, Err(UnpackError::Twice(_))), "{result:?}");
    }

    #[test]
    fn setuid_bits_are_stripped_and_sizes_are_bounded() {
        let dir = raw("build", tar::EntryType::Directory, b"", None);
        let (scratch, result) = unpack_raw(&[dir.clone(), raw("build/f", tar::EntryType::Regular, b"data", None)], 1 << 20);
        assert!(matches!(result, Err(UnpackError::Capture(CaptureError::NoManifest))), "{result:?}");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(scratch.0.join("build/f")).unwrap().permissions().mode() & 0o7777, 0o755);
        let (_scratch, result) = unpack_raw(&[dir, raw("build/f", tar::EntryType::Regular, &[7; 2048], None)], 1024);
        assert!(matches!(result, Err(UnpackError::TooLarge(1024))), "{result:?}");
    }

    #[test]
    fn devices_and_escaping_paths_are_refused() {
        for (name, kind) in [("build/dev", tar::EntryType::Char), ("build/../x", tar::EntryType::Regular), ("/x", tar::EntryType::Regular)]
        {
            let (_scratch, result) = unpack_raw(&[raw(name, kind, b"", None)], 1 << 20);
            assert!(matches!(result, Err(UnpackError::Capture(_))), "{name}: {result:?}");
        }
    }
}
