//! Capture files as the specs and the bench read them, and replays run by
//! the test bed's ordinary user.

use super::{as_user, readable_nix_attach, ALICE};
use nix_attach::capture::{Manifest, MANIFEST};
use std::io::Read;
use std::path::Path;
use std::process::{Output, Stdio};

/// The manifest of the capture at `file`.
pub fn manifest_of(file: &Path) -> Manifest {
    let mut archive = tar::Archive::new(zstd::Decoder::new(std::fs::File::open(file).unwrap()).unwrap());
    let mut entry = archive
        .entries()
        .unwrap()
        .map(Result::unwrap)
        .find(|entry| entry.path().unwrap() == Path::new(MANIFEST))
        .unwrap_or_else(|| panic!("no manifest in {}", file.display()));
    let mut text = Vec::new();
    entry.read_to_end(&mut text).unwrap();
    serde_json::from_slice(&text).unwrap()
}

/// `nix-attach replay FILE -- COMMAND…` run by alice, with no runtime
/// directory of root's in her way.
pub fn alice_replays(file: &Path, command: &[&str]) -> Output {
    alice_replays_with(file, &[], command)
}

/// [`alice_replays`] with `flags` for `replay` (`--with TOOL`).
pub fn alice_replays_with(file: &Path, flags: &[&str], command: &[&str]) -> Output {
    let mut replay = as_user(ALICE, readable_nix_attach());
    replay.arg("replay").arg(file).args(flags).arg("--").args(command).env_remove("XDG_RUNTIME_DIR").stdin(Stdio::null());
    replay.output().unwrap()
}
