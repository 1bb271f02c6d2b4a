//! `nix-attach diff` inside a session: what the session changed in the
//! build's source, as a unified diff that nixpkgs' `patch -p1` applies
//! (`a/` and `b/` paths from the source root), ready for `patches`.
//!
//! A file counts as changed when it was written after the build paused
//! (its mtime is later) and differs from the pristine source, which the
//! session's command made by running the build's own unpack and patch
//! phases in a scratch directory. So what the build itself made before it
//! failed (objects, generated files) is never in the diff. Files the
//! session made are in it only with `--new`. A file of the pristine source
//! that is gone counts as deleted by the session when the directory that
//! held it (or its nearest ancestor left) was changed after the pause, as
//! removing or renaming an entry changes it. Links are not followed, and a
//! file that is not text is named, not shown.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    #[error("cannot read {0}")]
    Read(PathBuf, #[source] io::Error),
    #[error("{0:?} is not a time (seconds since the epoch)")]
    Time(String),
}

/// What `diff` compares.
pub struct Trees<'a> {
    /// The source as unpacked and patched, untouched.
    pub pristine: &'a Path,
    /// The source as the session left it.
    pub live: &'a Path,
    /// When the build paused: later writes are the session's.
    pub paused: SystemTime,
    /// Whether files the session made are in the diff.
    pub new_files: bool,
}

/// Reads a pause time written as seconds since the epoch, with a fraction.
pub fn parse_time(text: &str) -> Result<SystemTime, DiffError> {
    let seconds: f64 = text.trim().parse().map_err(|_| DiffError::Time(text.to_string()))?;
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(DiffError::Time(text.to_string()));
    }
    Ok(UNIX_EPOCH + Duration::from_secs_f64(seconds))
}

/// The unified diff of the session's changes under `trees.live`, file by
/// file in the order of their paths.
pub fn diff(trees: &Trees) -> Result<String, DiffError> {
    let mut files: Vec<(PathBuf, bool)> =
        regular_files(trees.live, |meta| written_at(meta) > trees.paused)?.into_iter().map(|path| (path, true)).collect();
    files.extend(deleted_files(trees)?.into_iter().map(|path| (path, false)));
    files.sort();
    let mut patch = String::new();
    for (relative, written) in files {
        let name = relative.to_string_lossy();
        if !written {
            patch.push_str(&file_diff(&name, Some(&read(&trees.pristine.join(&relative))?), None));
            continue;
        }
        let pristine = trees.pristine.join(&relative);
        let old = match pristine.symlink_metadata() {
            Ok(meta) if meta.is_file() => Some(read(&pristine)?),
            Ok(_) => continue,
            Err(_) if trees.new_files => None,
            Err(_) => continue,
        };
        let new = read(&trees.live.join(&relative))?;
        patch.push_str(&file_diff(&name, old.as_deref(), Some(&new)));
    }
    Ok(patch)
}

/// One file's part of the patch; empty where nothing changed. `None` is a
/// file that is not there: made (`old`) or deleted (`new`) by the session.
fn file_diff(name: &str, old: Option<&[u8]>, new: Option<&[u8]>) -> String {
    if old == new {
        return String::new();
    }
    let side = |content: Option<&[u8]>, prefix: &str| content.map_or_else(|| "/dev/null".to_string(), |_| format!("{prefix}/{name}"));
    let (from, to) = (side(old, "a"), side(new, "b"));
    match (old.map(std::str::from_utf8).transpose(), new.map(std::str::from_utf8).transpose()) {
        (Ok(old), Ok(new)) => {
            let lines = similar::TextDiff::from_lines(old.unwrap_or(""), new.unwrap_or(""));
            lines.unified_diff().context_radius(3).header(&from, &to).to_string()
        }
        _ => format!("Binary files {from} and {to} differ\n"),
    }
}

fn read(path: &Path) -> Result<Vec<u8>, DiffError> {
    fs::read(path).map_err(|err| DiffError::Read(path.to_path_buf(), err))
}

/// The regular files of the pristine source that are gone from the live
/// one, where the directory that held them, or the nearest one of its
/// ancestors still there, was changed after the pause.
fn deleted_files(trees: &Trees) -> Result<Vec<PathBuf>, DiffError> {
    let mut deleted = Vec::new();
    for relative in regular_files(trees.pristine, |_| true)? {
        if trees.live.join(&relative).symlink_metadata().is_ok() {
            continue;
        }
        let holder = relative.ancestors().skip(1).map(|dir| trees.live.join(dir)).find_map(|dir| dir.symlink_metadata().ok());
        if holder.is_some_and(|meta| meta.is_dir() && written_at(&meta) > trees.paused) {
            deleted.push(relative);
        }
    }
    Ok(deleted)
}

/// The regular files under `root` whose metadata `take` accepts, relative
/// to it, but nix-attach's own; links are neither followed nor taken.
fn regular_files(root: &Path, take: impl Fn(&fs::Metadata) -> bool) -> Result<Vec<PathBuf>, DiffError> {
    let mut found = Vec::new();
    let mut dirs = vec![PathBuf::new()];
    while let Some(dir) = dirs.pop() {
        let entries = fs::read_dir(root.join(&dir)).map_err(|err| DiffError::Read(root.join(&dir), err))?;
        for entry in entries {
            let entry = entry.map_err(|err| DiffError::Read(root.join(&dir), err))?;
            // nix-attach's own files: the hook's snapshot, the agent's state
            // and the pristine source's scratch directory in it.
            if entry.file_name().to_string_lossy().starts_with(".nix-attach") {
                continue;
            }
            let relative = dir.join(entry.file_name());
            let meta = entry.metadata().map_err(|err| DiffError::Read(root.join(&relative), err))?;
            if meta.is_dir() {
                dirs.push(relative);
            } else if meta.is_file() && take(&meta) {
                found.push(relative);
            }
        }
    }
    Ok(found)
}

fn written_at(meta: &fs::Metadata) -> SystemTime {
    UNIX_EPOCH + Duration::new(meta.mtime().max(0) as u64, meta.mtime_nsec().clamp(0, 999_999_999) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_file_is_a_hunk_with_a_and_b_paths_from_the_source_root() {
        let patch = file_diff("src/main.c", Some(b"int main() {\n  return 1;\n}\n"), Some(b"int main() {\n  return 0;\n}\n"));
        assert_eq!(patch, "--- a/src/main.c\n+++ b/src/main.c\n@@ -1,3 +1,3 @@\n int main() {\n-  return 1;\n+  return 0;\n }\n");
    }

    #[test]
    fn an_unchanged_file_is_nothing_a_new_one_comes_from_dev_null_and_binary_is_named() {
        assert_eq!(file_diff("same", Some(b"x\n"), Some(b"x\n")), "");
        assert_eq!(file_diff("new.txt", None, Some(b"hello\n")), "--- /dev/null\n+++ b/new.txt\n@@ -0,0 +1 @@\n+hello\n");
        assert_eq!(file_diff("blob", Some(&[0xff, 0]), Some(&[0xfe])), "Binary files a/blob and b/blob differ\n");
    }

    #[test]
    fn a_deleted_file_goes_to_dev_null() {
        assert_eq!(file_diff("old.txt", Some(b"bye\n"), None), "--- a/old.txt\n+++ /dev/null\n@@ -1 +0,0 @@\n-bye\n");
    }

    #[test]
    fn pause_times_are_seconds_with_a_fraction() {
        assert_eq!(parse_time("1.5").unwrap(), UNIX_EPOCH + Duration::from_millis(1500));
        assert!(parse_time("soon").is_err() && parse_time("-1").is_err());
    }
}
