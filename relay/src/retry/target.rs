//! What `nix-attach retry` is given, made into one derivation path: a
//! `.drv` in the store as it is, a Nix file or directory through
//! `nix-instantiate` (with the `-A`, `--arg`… after `--`), anything else
//! as an installable through `nix path-info --derivation`.

use super::store::{self, StoreError};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("{0} does not exist; give a .drv path in the store, a Nix file, or an installable")]
    NotFound(PathBuf),
    #[error("{0} is not a derivation: give a .drv path in the store, a Nix file, or an installable")]
    NotDerivation(PathBuf),
    #[error("{0} names {1} derivations; name one (with -A ATTR after --)")]
    Several(String, usize),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The derivation that `target` (with `nix_args`) names.
pub fn resolve(target: &str, nix_args: &[OsString]) -> Result<PathBuf, TargetError> {
    let path = Path::new(target);
    let store = crate::nix_conf::store_dir();
    let in_store = path.starts_with(&store);
    // `.#hello` is a flake's installable, not a path.
    let looks_like_a_path = (target.starts_with('/') || target.starts_with('.') || in_store) && !target.contains('#');
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(_) if looks_like_a_path => return Err(TargetError::NotFound(path.to_path_buf())),
        Err(_) => return only_one(target, store::derivation_of("nix", &[&[OsString::from(target)], nix_args].concat())?),
    };
    if in_store {
        let drv = path.extension().is_some_and(|ext| ext == "drv") && meta.is_file() && path.parent() == Some(store.as_path());
        return if drv { Ok(path.to_path_buf()) } else { Err(TargetError::NotDerivation(path.to_path_buf())) };
    }
    let nix_file = path.extension().is_some_and(|ext| ext == "nix") || std::fs::metadata(path).is_ok_and(|meta| meta.is_dir());
    if !nix_file {
        return Err(TargetError::NotDerivation(path.to_path_buf()));
    }
    only_one(target, store::derivation_of("nix-instantiate", &[&[OsString::from(target)], nix_args].concat())?)
}

/// The one derivation in a command's output.
fn only_one(target: &str, output: String) -> Result<PathBuf, TargetError> {
    let lines: Vec<&str> = output.lines().filter(|line| !line.trim().is_empty()).collect();
    match lines.as_slice() {
        [one] => Ok(PathBuf::from(one.split('!').next().unwrap_or(one))),
        _ => Err(TargetError::Several(target.to_string(), lines.len())),
    }
}
