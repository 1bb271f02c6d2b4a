//! The files the injection puts into a build's sandbox, prepared once in a
//! cache directory of root's and reused:
//!
//! - `hook-<binary>/`: the attach hook, its agent path pointing at this
//!   directory's place in the sandbox, and the static agent (this very
//!   binary, which is linked statically);
//! - `shadow-<stdenv>/`: a copy of a stdenv's files, whose `setup` sources
//!   the attach hook after its own code, as a setup hook from the inputs
//!   would be. A build that reads any other file of `$stdenv` reads the
//!   same bytes.
//!
//! Everything is made in a private directory and renamed into place, so a
//! build never sees half of it; it is owned by root and read-only, so no
//! build can change it. A stdenv is copied only within bounds (its files
//! are small), links are copied as links and never followed.
//!
//! The cache stays bounded: before a shadow is made, the shadows of
//! stdenvs no longer in the store (collected as garbage, so no build runs
//! with them) are removed, and no more than [`MAX_SHADOWS`] are kept; past
//! that, builds with a new stdenv go on without the attach hook.

use nix::dir::Dir;
use nix::fcntl::{openat, readlinkat, AtFlags, OFlag};
use nix::sys::stat::{fstatat, Mode, SFlag};
use std::fs::File;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Where the files appear inside the sandbox.
pub const SANDBOX_DIR: &str = "/nix-attach";
/// The most a stdenv may hold to be copied.
const MAX_STDENV_BYTES: u64 = 8 * 1024 * 1024;
const MAX_STDENV_ENTRIES: usize = 1000;
/// The most shadows the cache holds (so at most 512 MiB of them).
pub const MAX_SHADOWS: usize = 64;
/// The start of a shadow's name in the cache; the rest is its stdenv's.
const SHADOW_PREFIX: &str = "shadow-";
/// The attach hook, as the repository ships it.
pub const HOOK: &str = include_str!("../../../setup-hooks/attach-hook.sh");

#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("cannot prepare {0}")]
    Io(PathBuf, #[source] std::io::Error),
    #[error("the stdenv {0} is too large to copy ({MAX_STDENV_ENTRIES} entries, {MAX_STDENV_BYTES} bytes at most)")]
    TooLarge(PathBuf),
    #[error("the stdenv {0} holds something other than files, directories and links")]
    Special(PathBuf),
    #[error("the stdenv {0} has no setup file")]
    NoSetup(PathBuf),
    #[error("the cache {0} holds {MAX_SHADOWS} shadows of stdenvs still in the store; remove some, or collect garbage")]
    CacheFull(PathBuf),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FilesError + '_ {
    move |err| FilesError::Io(path.to_path_buf(), err)
}

/// Writes `bytes` to `path` through a private file renamed into place.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let temporary = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&temporary, bytes)?;
    std::fs::rename(&temporary, path)
}

/// The directory with the hook and the agent, for this binary.
pub fn hook_dir(cache: &Path) -> Result<PathBuf, FilesError> {
    use std::os::unix::fs::MetadataExt;
    let binary = std::env::current_exe().map_err(io(cache))?;
    let meta = std::fs::metadata(&binary).map_err(io(&binary))?;
    let dir = cache.join(format!("hook-{}-{}-{}", meta.ino(), meta.size(), meta.mtime()));
    prepared(&dir, |staging| {
        std::fs::copy(&binary, staging.join("nix-attach")).map_err(io(staging))?;
        let agent = format!("{SANDBOX_DIR}/nix-attach");
        let hook = HOOK.replace("@nixAttach@", &agent).replace("@shell@", "");
        std::fs::write(staging.join("attach-hook.sh"), hook).map_err(io(staging))?;
        Ok(())
    })
}

/// The shadow of the stdenv at `stdenv`, one of the build's inputs (a store
/// path, immutable, whose name is unique).
pub fn shadow_stdenv(cache: &Path, stdenv: &Path) -> Result<PathBuf, FilesError> {
    let name = stdenv.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
    let dir = cache.join(format!("{SHADOW_PREFIX}{name}"));
    if !dir.is_dir() {
        make_room(cache, stdenv.parent().unwrap_or(Path::new("/")))?;
    }
    prepared(&dir, |staging| {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let top = nix::fcntl::open(stdenv, flags, Mode::empty()).map_err(|errno| FilesError::Io(stdenv.into(), errno.into()))?;
        let mut budget = (MAX_STDENV_ENTRIES, MAX_STDENV_BYTES);
        copy_tree(&top, staging, &mut budget).map_err(|err| match err {
            CopyError::Io(err) => FilesError::Io(stdenv.into(), err),
            CopyError::TooLarge => FilesError::TooLarge(stdenv.into()),
            CopyError::Special => FilesError::Special(stdenv.into()),
        })?;
        // The copy is root's own, in a private directory; `setup` must be a
        // regular file there (a link, copied as a link, is refused).
        let setup = staging.join("setup");
        let is_file = std::fs::symlink_metadata(&setup).is_ok_and(|meta| meta.file_type().is_file());
        let original = if is_file { std::fs::read_to_string(&setup).ok() } else { None };
        let original = original.ok_or_else(|| FilesError::NoSetup(stdenv.into()))?;
        let hooked = format!(
            "{original}\n# Added by nix-attach's pre-build hook: a failing build pauses, as with attachHook in nativeBuildInputs.\n\
             source {SANDBOX_DIR}/attach-hook.sh\n"
        );
        std::fs::write(&setup, hooked).map_err(io(&setup))?;
        Ok(())
    })
}

/// Removes the shadows whose stdenv is no longer in `store`, then checks
/// that there is room for one more.
fn make_room(cache: &Path, store: &Path) -> Result<(), FilesError> {
    let Ok(entries) = std::fs::read_dir(cache) else { return Ok(()) };
    let mut kept = 0;
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(stdenv) = file_name.to_str().and_then(|name| name.strip_prefix(SHADOW_PREFIX)) else { continue };
        if store.join(stdenv).symlink_metadata().is_ok() {
            kept += 1;
        } else {
            let _ = make_writable(&entry.path());
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    if kept >= MAX_SHADOWS {
        return Err(FilesError::CacheFull(cache.to_path_buf()));
    }
    Ok(())
}

/// `dir`, made by `fill` in a private staging directory and renamed into
/// place, read-only; or as it is, when it exists already.
fn prepared(dir: &Path, fill: impl FnOnce(&Path) -> Result<(), FilesError>) -> Result<PathBuf, FilesError> {
    if dir.is_dir() {
        return Ok(dir.to_path_buf());
    }
    let cache = dir.parent().expect("a directory in the cache");
    std::fs::DirBuilder::new().recursive(true).mode(0o755).create(cache).map_err(io(cache))?;
    let staging = cache.join(format!(".staging-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::DirBuilder::new().mode(0o700).create(&staging).map_err(io(&staging))?;
    let filled = fill(&staging).and_then(|()| read_only(&staging).map_err(io(&staging)));
    if let Err(err) = filled {
        let _ = make_writable(&staging);
        let _ = std::fs::remove_dir_all(&staging);
        return Err(err);
    }
    if std::fs::rename(&staging, dir).is_err() {
        // Another build prepared it meanwhile.
        let _ = make_writable(&staging);
        let _ = std::fs::remove_dir_all(&staging);
    }
    Ok(dir.to_path_buf())
}

enum CopyError {
    Io(std::io::Error),
    TooLarge,
    Special,
}

/// Copies the tree below the directory handle `from` into the existing
/// directory `to`: files, directories and links (as links), within
/// `budget` (entries, bytes). Every entry is looked at and opened from its
/// directory's handle, without following links, and a file's size is taken
/// from the opened file.
fn copy_tree(from: &OwnedFd, to: &Path, budget: &mut (usize, u64)) -> Result<(), CopyError> {
    let errno = |errno: nix::Error| CopyError::Io(errno.into());
    // The names are read only while the budget lasts: a directory of a
    // million entries costs at most the budget's worth of memory.
    let mut names: Vec<std::ffi::CString> = Vec::new();
    let mut dir = Dir::openat(from, ".", OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty()).map_err(errno)?;
    for entry in dir.iter().flatten() {
        let name = entry.file_name();
        if name.to_bytes() == b"." || name.to_bytes() == b".." {
            continue;
        }
        budget.0 = budget.0.checked_sub(1).ok_or(CopyError::TooLarge)?;
        names.push(name.to_owned());
    }
    drop(dir);
    for name in names {
        let stat = fstatat(from, name.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW).map_err(errno)?;
        let target = to.join(std::ffi::OsStr::from_bytes(name.as_bytes()));
        match SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT {
            SFlag::S_IFLNK => {
                let link = readlinkat(from, name.as_c_str()).map_err(errno)?;
                std::os::unix::fs::symlink(link, &target).map_err(CopyError::Io)?;
            }
            SFlag::S_IFDIR => {
                let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
                let inner = openat(from, name.as_c_str(), flags, Mode::empty()).map_err(errno)?;
                std::fs::create_dir(&target).map_err(CopyError::Io)?;
                copy_tree(&inner, &target, budget)?;
            }
            SFlag::S_IFREG => {
                let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
                let file = File::from(openat(from, name.as_c_str(), flags, Mode::empty()).map_err(errno)?);
                let meta = file.metadata().map_err(CopyError::Io)?;
                if !meta.is_file() {
                    return Err(CopyError::Special);
                }
                budget.1 = budget.1.checked_sub(meta.len()).ok_or(CopyError::TooLarge)?;
                let mut copy = std::fs::OpenOptions::new().write(true).create_new(true).open(&target).map_err(CopyError::Io)?;
                std::io::copy(&mut file.take(meta.len()), &mut copy).map_err(CopyError::Io)?;
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(meta.permissions().mode() & 0o555))
                    .map_err(CopyError::Io)?;
            }
            _ => return Err(CopyError::Special),
        }
    }
    Ok(())
}

/// Makes directories 0555 and files read-only, all the way down.
fn read_only(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            read_only(&entry.path())?;
        } else if kind.is_file() {
            let mode = entry.metadata()?.permissions().mode() & 0o555;
            std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(mode | 0o444))?;
        }
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o555))
}

fn make_writable(dir: &Path) -> std::io::Result<()> {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    for entry in std::fs::read_dir(dir)?.flatten() {
        if entry.file_type()?.is_dir() {
            make_writable(&entry.path())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("inject-{name}-{}", std::process::id()));
        let _ = make_writable(&dir);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_shadow_stdenv_has_the_same_files_and_a_setup_that_sources_the_hook_last() {
        let root = scratch("shadow");
        let stdenv = root.join("abc-stdenv");
        std::fs::create_dir_all(stdenv.join("nix-support")).unwrap();
        std::fs::write(stdenv.join("setup"), "echo original setup\n").unwrap();
        std::fs::write(stdenv.join("nix-support/propagated"), "x").unwrap();
        std::os::unix::fs::symlink("/nowhere", stdenv.join("link")).unwrap();
        let shadow = shadow_stdenv(&root.join("cache"), &stdenv).unwrap();
        let setup = std::fs::read_to_string(shadow.join("setup")).unwrap();
        assert!(setup.starts_with("echo original setup\n") && setup.ends_with("source /nix-attach/attach-hook.sh\n"), "{setup}");
        assert_eq!(std::fs::read(shadow.join("nix-support/propagated")).unwrap(), b"x");
        assert_eq!(std::fs::read_link(shadow.join("link")).unwrap(), Path::new("/nowhere"));
        assert_eq!(std::fs::metadata(&shadow).unwrap().permissions().mode() & 0o777, 0o555);
        assert_eq!(shadow_stdenv(&root.join("cache"), &stdenv).unwrap(), shadow, "made once, then reused");
        let _ = make_writable(&root);
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn a_setup_or_a_stdenv_that_is_a_link_is_never_followed() {
        let root = scratch("links");
        let secret = root.join("secret");
        std::fs::write(&secret, "root's only\n").unwrap();
        let linked_setup = root.join("abc-stdenv");
        std::fs::create_dir_all(&linked_setup).unwrap();
        std::os::unix::fs::symlink(&secret, linked_setup.join("setup")).unwrap();
        assert!(matches!(shadow_stdenv(&root.join("cache"), &linked_setup), Err(FilesError::NoSetup(_))));
        assert_eq!(std::fs::read_to_string(&secret).unwrap(), "root's only\n", "the link's target was written");
        let linked_stdenv = root.join("def-stdenv");
        std::os::unix::fs::symlink(&linked_setup, &linked_stdenv).unwrap();
        assert!(matches!(shadow_stdenv(&root.join("cache"), &linked_stdenv), Err(FilesError::Io(..))));
        let _ = make_writable(&root);
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn a_stdenv_without_setup_or_too_large_is_not_copied() {
        let root = scratch("bad");
        let stdenv = root.join("def-stdenv");
        std::fs::create_dir_all(&stdenv).unwrap();
        assert!(matches!(shadow_stdenv(&root.join("cache"), &stdenv), Err(FilesError::NoSetup(_))));
        let big = root.join("big-stdenv");
        std::fs::create_dir_all(&big).unwrap();
        std::fs::write(big.join("setup"), "").unwrap();
        std::fs::File::create(big.join("huge")).unwrap().set_len(MAX_STDENV_BYTES + 1).unwrap();
        assert!(matches!(shadow_stdenv(&root.join("cache"), &big), Err(FilesError::TooLarge(_))));
        assert_eq!(std::fs::read_dir(root.join("cache")).unwrap().count(), 0, "nothing half-made is left");
        let _ = std::fs::remove_dir_all(&root);
    }

    /// A stdenv named `name` in the store `store`.
    fn stdenv_in(store: &Path, name: &str) -> PathBuf {
        let stdenv = store.join(name);
        std::fs::create_dir_all(&stdenv).unwrap();
        std::fs::write(stdenv.join("setup"), "").unwrap();
        stdenv
    }

    #[test]
    fn the_shadow_of_a_stdenv_that_left_the_store_is_removed_when_another_is_made() {
        let root = scratch("collected");
        let (store, cache) = (root.join("store"), root.join("cache"));
        let collected = shadow_stdenv(&cache, &stdenv_in(&store, "abc-stdenv")).unwrap();
        let kept = shadow_stdenv(&cache, &stdenv_in(&store, "def-stdenv")).unwrap();
        std::fs::remove_dir_all(store.join("abc-stdenv")).unwrap();
        let new = shadow_stdenv(&cache, &stdenv_in(&store, "ghi-stdenv")).unwrap();
        assert!(!collected.exists(), "the shadow of a collected stdenv stays");
        assert!(kept.is_dir() && new.is_dir());
        let _ = make_writable(&root);
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn a_full_cache_takes_no_new_shadow_and_keeps_those_in_use() {
        let root = scratch("full");
        let (store, cache) = (root.join("store"), root.join("cache"));
        for i in 0..MAX_SHADOWS {
            shadow_stdenv(&cache, &stdenv_in(&store, &format!("{i:03}-stdenv"))).unwrap();
        }
        let one_more = stdenv_in(&store, "new-stdenv");
        assert!(matches!(shadow_stdenv(&cache, &one_more), Err(FilesError::CacheFull(_))));
        assert_eq!(std::fs::read_dir(&cache).unwrap().count(), MAX_SHADOWS);
        assert!(shadow_stdenv(&cache, &store.join("000-stdenv")).is_ok(), "a shadow that is made already is still served");
        let _ = make_writable(&root);
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn a_stdenv_with_more_entries_than_the_budget_is_not_copied() {
        let root = scratch("wide");
        let wide = root.join("wide-stdenv");
        std::fs::create_dir_all(&wide).unwrap();
        std::fs::write(wide.join("setup"), "").unwrap();
        for i in 0..MAX_STDENV_ENTRIES {
            std::fs::write(wide.join(format!("f{i}")), "").unwrap();
        }
        assert!(matches!(shadow_stdenv(&root.join("cache"), &wide), Err(FilesError::TooLarge(_))));
        let _ = std::fs::remove_dir_all(&root);
    }
}
