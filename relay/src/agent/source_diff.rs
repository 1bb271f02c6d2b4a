//! `nix-attach diff` inside a session: what the session changed in the
//! build's source, as a patch that nixpkgs' `patch -p1` applies (`a/` and
//! `b/` paths from the source root), ready for `patches`.
//!
//! A file counts as changed when it was written after the build paused
//! (its mtime is later) and differs from the pristine source, which the
//! session's command made by running the build's own unpack and patch
//! phases in a scratch directory. So what the build itself made before it
//! failed (objects, generated files) is never in the diff. Files the
//! session made are in it only with `--new`. A file of the pristine source
//! that is gone counts as deleted by the session when the directory that
//! held it (or its nearest ancestor left) was changed after the pause, as
//! removing or renaming an entry changes it. The patch is in git's format,
//! which GNU patch (nixpkgs' `patch`) applies, modes too: a file whose
//! inode changed after the pause and whose owner's execute bit is not the
//! pristine one has git's mode lines, and so does a new or deleted file.
//! Links are not followed, and a file that is not text is named, not
//! shown.

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

/// The session's changes under `trees.live`, in git's format, file by
/// file in the order of their paths.
pub fn diff(trees: &Trees) -> Result<String, DiffError> {
    let touched = |meta: &fs::Metadata| written_at(meta) > trees.paused || changed_at(meta) > trees.paused;
    let mut files: Vec<(PathBuf, Option<fs::Metadata>)> =
        regular_files(trees.live, touched)?.into_iter().map(|(path, meta)| (path, Some(meta))).collect();
    files.extend(deleted_files(trees)?.into_iter().map(|path| (path, None)));
    files.sort_by(|one, other| one.0.cmp(&other.0));
    let mut patch = String::new();
    for (relative, live) in files {
        let pristine = trees.pristine.join(&relative);
        let old = match pristine.symlink_metadata() {
            Ok(meta) if meta.is_file() => Some((executable(&meta), read(&pristine)?)),
            Ok(_) => continue,
            Err(_) if trees.new_files => None,
            Err(_) => continue,
        };
        let new = match &live {
            None => None,
            // Its content counts only if written after the pause; a mode
            // changed later (`chmod`) changes only its inode's time.
            Some(meta) if written_at(meta) > trees.paused || old.is_none() => Some((executable(meta), read(&trees.live.join(&relative))?)),
            Some(meta) => old.as_ref().map(|(_, bytes)| (executable(meta), bytes.clone())),
        };
        patch.push_str(&file_part(&relative.to_string_lossy(), side(&old), side(&new)));
    }
    Ok(patch)
}

/// One file's part of the patch, as git writes it and GNU patch (nixpkgs'
/// `patch`) applies it: a header, the modes where they changed (git's:
/// executable by the owner or not), and the hunks; empty where nothing
/// changed. `None` is a file that is not there: made (`old`) or deleted
/// (`new`) by the session.
fn file_part(name: &str, old: Option<(bool, &[u8])>, new: Option<(bool, &[u8])>) -> String {
    let mode = |executable: bool| if executable { "100755" } else { "100644" };
    let modes = match (old, new) {
        (Some((was, _)), Some((is, _))) if was != is => format!("old mode {}\nnew mode {}\n", mode(was), mode(is)),
        (None, Some((is, _))) => format!("new file mode {}\n", mode(is)),
        (Some((was, _)), None) => format!("deleted file mode {}\n", mode(was)),
        _ => String::new(),
    };
    let hunks = content_diff(name, old.map(|(_, bytes)| bytes), new.map(|(_, bytes)| bytes));
    if modes.is_empty() && hunks.is_empty() {
        return String::new();
    }
    format!("diff --git a/{name} b/{name}\n{modes}{hunks}")
}

fn side(file: &Option<(bool, Vec<u8>)>) -> Option<(bool, &[u8])> {
    file.as_ref().map(|(executable, bytes)| (*executable, bytes.as_slice()))
}

fn executable(meta: &fs::Metadata) -> bool {
    meta.mode() & 0o100 != 0
}

/// The hunks between two contents; empty where they are the same.
fn content_diff(name: &str, old: Option<&[u8]>, new: Option<&[u8]>) -> String {
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
    for (relative, _) in regular_files(trees.pristine, |_| true)? {
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
/// to it, with that metadata, but nix-attach's own; links are neither
/// followed nor taken.
fn regular_files(root: &Path, take: impl Fn(&fs::Metadata) -> bool) -> Result<Vec<(PathBuf, fs::Metadata)>, DiffError> {
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
                found.push((relative, meta));
            }
        }
    }
    Ok(found)
}

fn written_at(meta: &fs::Metadata) -> SystemTime {
    UNIX_EPOCH + Duration::new(meta.mtime().max(0) as u64, meta.mtime_nsec().clamp(0, 999_999_999) as u32)
}

/// When the inode last changed: a write, or its mode.
fn changed_at(meta: &fs::Metadata) -> SystemTime {
    UNIX_EPOCH + Duration::new(meta.ctime().max(0) as u64, meta.ctime_nsec().clamp(0, 999_999_999) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_file_is_a_hunk_with_a_and_b_paths_from_the_source_root() {
        let patch =
            file_part("src/main.c", Some((false, b"int main() {\n  return 1;\n}\n")), Some((false, b"int main() {\n  return 0;\n}\n")));
        assert_eq!(
            patch,
            "diff --git a/src/main.c b/src/main.c\n--- a/src/main.c\n+++ b/src/main.c\n@@ -1,3 +1,3 @@\n int main() {\n-  return 1;\n+  return 0;\n }\n"
        );
    }

    #[test]
    fn an_unchanged_file_is_nothing_a_new_one_comes_from_dev_null_and_binary_is_named() {
        assert_eq!(file_part("same", Some((true, b"x\n")), Some((true, b"x\n"))), "");
        let made = "diff --git a/new.txt b/new.txt\nnew file mode 100644\n--- /dev/null\n+++ b/new.txt\n@@ -0,0 +1 @@\n+hello\n";
        assert_eq!(file_part("new.txt", None, Some((false, b"hello\n"))), made);
        let binary = "diff --git a/blob b/blob\nBinary files a/blob and b/blob differ\n";
        assert_eq!(file_part("blob", Some((false, &[0xff, 0])), Some((false, &[0xfe]))), binary);
    }

    #[test]
    fn a_deleted_file_goes_to_dev_null() {
        let gone = "diff --git a/old.txt b/old.txt\ndeleted file mode 100755\n--- a/old.txt\n+++ /dev/null\n@@ -1 +0,0 @@\n-bye\n";
        assert_eq!(file_part("old.txt", Some((true, b"bye\n")), None), gone);
    }

    #[test]
    fn a_mode_the_session_changed_is_in_git_s_mode_lines() {
        assert_eq!(
            file_part("run.sh", Some((false, b"x\n")), Some((true, b"x\n"))),
            "diff --git a/run.sh b/run.sh\nold mode 100644\nnew mode 100755\n"
        );
        assert_eq!(
            file_part("run.sh", Some((true, b"x\n")), Some((false, b"x\n"))),
            "diff --git a/run.sh b/run.sh\nold mode 100755\nnew mode 100644\n"
        );
        assert_eq!(file_part("new.sh", None, Some((true, b""))), "diff --git a/new.sh b/new.sh\nnew file mode 100755\n");
    }

    #[test]
    fn pause_times_are_seconds_with_a_fraction() {
        assert_eq!(parse_time("1.5").unwrap(), UNIX_EPOCH + Duration::from_millis(1500));
        assert!(parse_time("soon").is_err() && parse_time("-1").is_err());
    }
}
