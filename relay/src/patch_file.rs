//! The file a session's patch is kept in, outside its sandbox: made
//! beside its name before the patch is asked for (so that a place it
//! cannot be written to is said first), renamed to its name once whole,
//! and removed where the patch is empty or was never finished.
//!
//! May use: [`capture`](crate::capture); no module that uses it (`layout`
//! keeps the arrows one way).

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum PatchFileError {
    #[error("cannot write the patch beside {0}")]
    Create(PathBuf, #[source] std::io::Error),
    #[error("cannot put the patch in {0}; it is in {1}")]
    Rename(PathBuf, PathBuf, #[source] std::io::Error),
    #[error("{0} names a directory: name the patch's file")]
    NotAFile(PathBuf),
}

/// A patch's file, until it is kept.
pub struct PatchFile {
    path: PathBuf,
    partial: PathBuf,
}

/// What [`PatchFile::keep`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Kept {
    /// The patch is at its name.
    Written,
    /// The patch was empty: nothing is there.
    Empty,
}

impl PatchFile {
    /// Makes the file beside `path`, new, and returns it with the file to
    /// write the patch into.
    pub fn create(path: &Path) -> Result<(PatchFile, std::fs::File), PatchFileError> {
        let names_a_dir = path.as_os_str().as_encoded_bytes().ends_with(b"/") || path.is_dir();
        let Some(name) = path.file_name().filter(|_| !names_a_dir && !path.ends_with(".")) else {
            return Err(PatchFileError::NotAFile(path.to_path_buf()));
        };
        let name = name.to_string_lossy().into_owned();
        let partial = path.with_file_name(format!(".{name}.partial-{}", std::process::id()));
        let file = std::fs::File::options().write(true).create_new(true).open(&partial);
        let file = file.map_err(|err| PatchFileError::Create(path.to_path_buf(), err))?;
        Ok((PatchFile { path: path.to_path_buf(), partial }, file))
    }

    /// Where the patch is kept.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Puts the written patch at its name, unless it is empty. Where it
    /// cannot, the patch stays where it was written, and the error says so.
    pub fn keep(mut self) -> Result<Kept, PatchFileError> {
        if std::fs::metadata(&self.partial).is_ok_and(|meta| meta.len() == 0) {
            return Ok(Kept::Empty);
        }
        match std::fs::rename(&self.partial, &self.path) {
            Ok(()) => Ok(Kept::Written),
            // Not removed when dropped: it is the patch.
            Err(err) => Err(PatchFileError::Rename(self.path.clone(), std::mem::take(&mut self.partial), err)),
        }
    }

    /// What to say where the patch was empty: nothing written, and
    /// whether a file of that name, from before, is still there.
    pub fn nothing_written(&self) -> String {
        let shown = self.path.display();
        if self.path.exists() {
            format!("no patch written; the {shown} there is an older one, left as it was")
        } else {
            format!("no patch written to {shown}")
        }
    }
}

impl Drop for PatchFile {
    fn drop(&mut self) {
        // Gone already where it was kept.
        let _ = std::fs::remove_file(&self.partial);
    }
}

/// The name a patch of the build `name` gets in a directory of patches.
pub fn file_name(name: &str) -> String {
    crate::capture::file_name_for(name, "patch")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_patch_is_at_its_name_once_kept_and_nothing_is_left_where_it_is_empty_or_dropped() {
        let dir = std::env::temp_dir().join(format!("nix-attach-patch-file-{}", std::process::id()));
        std::fs::create_dir(&dir).unwrap();
        let (written, mut file) = PatchFile::create(&dir.join("fix.patch")).unwrap();
        std::io::Write::write_all(&mut file, b"diff --git a/x b/x\n").unwrap();
        assert_eq!(written.keep().unwrap(), Kept::Written);
        let (empty, _) = PatchFile::create(&dir.join("none.patch")).unwrap();
        assert_eq!(empty.keep().unwrap(), Kept::Empty);
        drop(PatchFile::create(&dir.join("dropped.patch")).unwrap());
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().map(|entry| entry.file_name()).collect();
        assert_eq!(left, ["fix.patch"]);
        // Something took its name meanwhile: the patch stays where it is.
        let (blocked, mut file) = PatchFile::create(&dir.join("blocked.patch")).unwrap();
        std::io::Write::write_all(&mut file, b"x").unwrap();
        std::fs::create_dir(dir.join("blocked.patch")).unwrap();
        std::fs::write(dir.join("blocked.patch/inside"), "").unwrap();
        match blocked.keep() {
            Err(PatchFileError::Rename(_, partial, _)) => {
                assert_eq!(std::fs::read(&partial).unwrap(), b"x", "the patch is kept where it was written")
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(PatchFile::create(&dir.join("no/such/dir.patch")), Err(PatchFileError::Create(..))));
        for directory in [dir.clone(), dir.join("sub/"), dir.join(".")] {
            assert!(matches!(PatchFile::create(&directory), Err(PatchFileError::NotAFile(_))), "{}", directory.display());
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_builds_patch_is_named_for_it_in_plain_characters() {
        assert_eq!(file_name("hello-2.12"), "hello-2.12.patch");
        assert_eq!(file_name("../a b"), "_a_b.patch");
    }
}
