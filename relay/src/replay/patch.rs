//! `replay --patch FILE`: once the replay's session ends, its changes to
//! the build's source, as `nix-attach diff` inside makes them, go to FILE,
//! outside the sandbox, which is removed right after
//! ([`crate::patch_file`] keeps it).

use crate::host;
use crate::host::relay::RelayError;
use crate::patch_file::{Kept, PatchFile};
use crate::protocol::Request;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    #[error("`nix-attach diff` failed in the replay (status {0}): no patch written to {1}")]
    Diff(i32, PathBuf),
}

/// The patch's file, until it is written.
pub struct Pending {
    kept: PatchFile,
    file: std::fs::File,
    new_files: bool,
    /// The largest patch taken (`--max-size`): a capture is hostile.
    bound: u64,
}

impl Pending {
    /// Makes the file the patch is written to, beside `path`; the patch
    /// may be `bound` bytes at most.
    pub fn open(path: &Path, new_files: bool, bound: u64) -> anyhow::Result<Pending> {
        let (kept, file) = PatchFile::create(path)?;
        Ok(Pending { kept, file, new_files, bound })
    }

    /// Runs `nix-attach diff` in the session reached on `connection` into
    /// the file, and puts it at its name, or says that nothing changed.
    pub fn write(self, connection: UnixStream) -> anyhow::Result<()> {
        let argv = ["nix-attach", "diff"].into_iter().chain(self.new_files.then_some("--new")).map(str::to_string).collect();
        let shown = self.kept.path().display().to_string();
        let request = Request::Exec { argv, path: Vec::new() };
        let status = host::session_into(connection, request, self.file, self.bound).map_err(|err| {
            let over = matches!(err.downcast_ref::<RelayError>(), Some(RelayError::OverBound(_)));
            err.context(format!("no patch written to {shown}{}", if over { "; raise the bound with --max-size" } else { "" }))
        })?;
        if status != 0 {
            return Err(PatchError::Diff(status, self.kept.path().to_path_buf()).into());
        }
        let nothing = self.kept.nothing_written();
        match self.kept.keep()? {
            Kept::Written => eprintln!("nix-attach: the session's changes to the source are in {shown}"),
            Kept::Empty => eprintln!("nix-attach: the session changed nothing in the source: {nothing}"),
        }
        Ok(())
    }
}
