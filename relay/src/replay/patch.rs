//! `replay --patch FILE`: once the replay's session ends, its changes to
//! the build's source, as `nix-attach diff` inside makes them, go to FILE,
//! outside the sandbox, which is removed right after.
//!
//! The file is made beside FILE before the session starts, so that a
//! place it cannot be written to is said at once, and renamed to FILE only
//! once the diff is whole. A session that changed nothing leaves no file.

use crate::host;
use crate::protocol::Request;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    #[error("cannot write the patch beside {0}")]
    Open(PathBuf, #[source] std::io::Error),
    #[error("cannot put the patch in {0}")]
    Rename(PathBuf, #[source] std::io::Error),
    #[error("`nix-attach diff` failed in the replay (status {0}): no patch written to {1}")]
    Diff(i32, PathBuf),
}

/// The patch's file, until it is written.
pub struct Pending {
    path: PathBuf,
    partial: PathBuf,
    file: Option<std::fs::File>,
    new_files: bool,
}

impl Pending {
    /// Makes the file the patch is written to, beside `path`.
    pub fn open(path: &Path, new_files: bool) -> Result<Pending, PatchError> {
        let name = path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
        let partial = path.with_file_name(format!(".{name}.partial-{}", std::process::id()));
        let file = std::fs::File::options()
            .write(true)
            .create_new(true)
            .open(&partial)
            .map_err(|err| PatchError::Open(path.to_path_buf(), err))?;
        Ok(Pending { path: path.to_path_buf(), partial, file: Some(file), new_files })
    }

    /// Runs `nix-attach diff` in the session reached on `connection` into
    /// the file, and puts it at its name, or says that nothing changed.
    pub fn write(mut self, connection: UnixStream) -> anyhow::Result<()> {
        let argv = ["nix-attach", "diff"].into_iter().chain(self.new_files.then_some("--new")).map(str::to_string).collect();
        let file = self.file.take().expect("written once");
        let status = host::session_into(connection, Request::Exec { argv, path: Vec::new() }, file)?;
        if status != 0 {
            return Err(PatchError::Diff(status, self.path.clone()).into());
        }
        let shown = self.path.display().to_string();
        if std::fs::metadata(&self.partial).is_ok_and(|meta| meta.len() == 0) {
            eprintln!("nix-attach: the session changed nothing in the source: no patch written to {shown}");
            return Ok(());
        }
        std::fs::rename(&self.partial, &self.path).map_err(|err| PatchError::Rename(self.path.clone(), err))?;
        eprintln!("nix-attach: the session's changes to the source are in {shown}");
        Ok(())
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        // Gone already where it was renamed.
        let _ = std::fs::remove_file(&self.partial);
    }
}
