//! The files the injection puts into a build's sandbox, prepared once in a
//! cache directory of root's and reused:
//!
//! - `hook-<binary>/`: the attach hook, its agent path pointing at this
//!   directory's place in the sandbox, and the static agent (this very
//!   binary, which is linked statically);
//! - `nix-support-<input>/`: a copy of an input's `nix-support/`
//!   directory, every file with its mode and every link as it is, whose
//!   `setup-hook` sources the attach hook and then goes on with its own
//!   text (first, so that a hook that returns early cannot skip it). A
//!   build, or a wrapper it runs, that reads any other file there reads
//!   the same bytes.
//!
//! Everything is made in a private directory and renamed into place, so a
//! build never sees half of it; it is owned by root and read-only, so no
//! build can change it. A directory is copied only within bounds (its
//! files are small), links are copied as links and never followed.
//!
//! The cache stays bounded: before a shadow is made, the shadows of inputs
//! no longer in the store (collected as garbage, so no build runs with
//! them) are removed, with those an older release made of whole stdenvs;
//! no more than [`MAX_SHADOWS`] are kept, and past that, builds with a new
//! input go on without the attach hook.

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
/// The directory of an input that the shadow goes over.
pub const SUPPORT: &str = "nix-support";
/// The most a `nix-support/` directory may hold to be copied.
const MAX_SUPPORT_BYTES: u64 = 8 * 1024 * 1024;
const MAX_SUPPORT_ENTRIES: usize = 1000;
/// The most shadows the cache holds (so at most 512 MiB of them).
pub const MAX_SHADOWS: usize = 64;
/// The start of a shadow's name in the cache; the rest is its input's.
const SHADOW_PREFIX: &str = "nix-support-";
/// The start of the names of the whole-stdenv shadows of older releases.
const OLD_SHADOW_PREFIX: &str = "shadow-";
/// The attach hook, as the repository ships it.
pub const HOOK: &str = include_str!("../../../setup-hooks/attach-hook.sh");

#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("cannot prepare {0}")]
    Io(PathBuf, #[source] std::io::Error),
    #[error("{0} is too large to copy ({MAX_SUPPORT_ENTRIES} entries, {MAX_SUPPORT_BYTES} bytes at most)")]
    TooLarge(PathBuf),
    #[error("{0} holds something other than files, directories and links")]
    Special(PathBuf),
    #[error("{0} has no setup-hook file")]
    NoSetupHook(PathBuf),
    #[error("the cache {0} holds {MAX_SHADOWS} shadows of inputs still in the store; remove some, or collect garbage")]
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
    // The file by its device, inode, size and change time: every file in
    // the store has mtime 1, and an inode freed by a collection may come
    // back for the next release's binary.
    let dir = cache.join(format!("hook-{}-{}-{}-{}.{}", meta.dev(), meta.ino(), meta.size(), meta.ctime(), meta.ctime_nsec()));
    prepared(&dir, |staging| {
        std::fs::copy(&binary, staging.join("nix-attach")).map_err(io(staging))?;
        let agent = format!("{SANDBOX_DIR}/nix-attach");
        let hook = HOOK.replace("@nixAttach@", &agent).replace("@shell@", "");
        std::fs::write(staging.join("attach-hook.sh"), hook).map_err(io(staging))?;
        Ok(())
    })
}

/// The shadow of the `nix-support/` directory of `input`, one of the
/// build's inputs (a store path, immutable, whose name is unique).
pub fn shadow_support(cache: &Path, input: &Path) -> Result<PathBuf, FilesError> {
    let name = input.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
    let dir = cache.join(format!("{SHADOW_PREFIX}{name}"));
    if !dir.is_dir() {
        make_room(cache, input.parent().unwrap_or(Path::new("/")))?;
    }
    let support = input.join(SUPPORT);
    prepared(&dir, |staging| {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let opened = nix::fcntl::open(input, flags, Mode::empty()).and_then(|top| openat(&top, SUPPORT, flags, Mode::empty()));
        let top = opened.map_err(|errno| FilesError::Io(support.clone(), errno.into()))?;
        let mut budget = (MAX_SUPPORT_ENTRIES, MAX_SUPPORT_BYTES);
        copy_tree(&top, staging, &mut budget).map_err(|err| match err {
            CopyError::Io(err) => FilesError::Io(support.clone(), err),
            CopyError::TooLarge => FilesError::TooLarge(support.clone()),
            CopyError::Special => FilesError::Special(support.clone()),
        })?;
        // The copy is root's own, in a private directory; `setup-hook` must
        // be a regular file there (a link, copied as a link, is refused).
        let hook = staging.join("setup-hook");
        let is_file = std::fs::symlink_metadata(&hook).is_ok_and(|meta| meta.file_type().is_file());
        let original = if is_file { std::fs::read(&hook).ok() } else { None };
        let original = original.ok_or_else(|| FilesError::NoSetupHook(support.clone()))?;
        let mut hooked = format!(
            "# Added by nix-attach's pre-build hook: a failing build pauses, as with attachHook in nativeBuildInputs.\n\
             if [[ -f {SANDBOX_DIR}/attach-hook.sh ]]; then source {SANDBOX_DIR}/attach-hook.sh; fi\n"
        )
        .into_bytes();
        hooked.extend_from_slice(&original);
        std::fs::write(&hook, hooked).map_err(io(&hook))?;
        Ok(())
    })
}

/// Removes the shadows whose input is no longer in `store`, and those of
/// older releases, then checks that there is room for one more.
fn make_room(cache: &Path, store: &Path) -> Result<(), FilesError> {
    let Ok(entries) = std::fs::read_dir(cache) else { return Ok(()) };
    let mut kept = 0;
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(name) = file_name.to_str() else { continue };
        let input = match (name.strip_prefix(SHADOW_PREFIX), name.starts_with(OLD_SHADOW_PREFIX)) {
            (Some(input), _) => Some(input),
            (None, true) => None,
            (None, false) => continue,
        };
        if input.is_some_and(|input| store.join(input).symlink_metadata().is_ok()) {
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

    /// An input named `name` in the store `store`, whose nix-support/
    /// holds a setup-hook.
    fn input_in(store: &Path, name: &str) -> PathBuf {
        let input = store.join(name);
        std::fs::create_dir_all(input.join(SUPPORT)).unwrap();
        std::fs::write(input.join("nix-support/setup-hook"), "").unwrap();
        input
    }

    #[test]
    fn a_shadow_has_every_file_mode_and_link_and_a_setup_hook_that_sources_the_attach_hook_first() {
        let root = scratch("shadow");
        let input = input_in(&root, "abc-cc-wrapper");
        std::fs::write(input.join("nix-support/setup-hook"), "echo original hook\n").unwrap();
        std::fs::write(input.join("nix-support/cc-cflags"), "-O2").unwrap();
        std::fs::set_permissions(input.join("nix-support/cc-cflags"), std::fs::Permissions::from_mode(0o555)).unwrap();
        std::fs::create_dir(input.join("nix-support/deeper")).unwrap();
        std::os::unix::fs::symlink("cc-cflags", input.join("nix-support/link")).unwrap();
        std::fs::write(input.join("outside"), "not copied").unwrap();
        let shadow = shadow_support(&root.join("cache"), &input).unwrap();
        let hook = std::fs::read_to_string(shadow.join("setup-hook")).unwrap();
        assert!(hook.contains("source /nix-attach/attach-hook.sh") && hook.ends_with("\necho original hook\n"), "{hook}");
        assert_eq!(std::fs::read(shadow.join("cc-cflags")).unwrap(), b"-O2");
        assert_eq!(std::fs::metadata(shadow.join("cc-cflags")).unwrap().permissions().mode() & 0o777, 0o555);
        assert!(shadow.join("deeper").is_dir());
        assert_eq!(std::fs::read_link(shadow.join("link")).unwrap(), Path::new("cc-cflags"));
        assert!(!shadow.join("outside").exists(), "only nix-support/ is copied");
        assert_eq!(std::fs::metadata(&shadow).unwrap().permissions().mode() & 0o777, 0o555);
        assert_eq!(shadow_support(&root.join("cache"), &input).unwrap(), shadow, "made once, then reused");
        let _ = make_writable(&root);
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn a_setup_hook_or_a_nix_support_that_is_a_link_is_never_followed() {
        let root = scratch("links");
        let secret = root.join("secret");
        std::fs::write(&secret, "root's only\n").unwrap();
        let linked_hook = input_in(&root, "abc-patchelf");
        std::fs::remove_file(linked_hook.join("nix-support/setup-hook")).unwrap();
        std::os::unix::fs::symlink(&secret, linked_hook.join("nix-support/setup-hook")).unwrap();
        assert!(matches!(shadow_support(&root.join("cache"), &linked_hook), Err(FilesError::NoSetupHook(_))));
        assert_eq!(std::fs::read_to_string(&secret).unwrap(), "root's only\n", "the link's target was written");
        let linked_support = root.join("def-patchelf");
        std::fs::create_dir(&linked_support).unwrap();
        std::os::unix::fs::symlink(linked_hook.join(SUPPORT), linked_support.join(SUPPORT)).unwrap();
        assert!(matches!(shadow_support(&root.join("cache"), &linked_support), Err(FilesError::Io(..))));
        let linked_input = root.join("ghi-patchelf");
        std::os::unix::fs::symlink(&linked_hook, &linked_input).unwrap();
        assert!(matches!(shadow_support(&root.join("cache"), &linked_input), Err(FilesError::Io(..))));
        let _ = make_writable(&root);
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn a_nix_support_without_setup_hook_or_too_large_is_not_copied() {
        let root = scratch("bad");
        let input = root.join("def-input");
        std::fs::create_dir_all(input.join(SUPPORT)).unwrap();
        assert!(matches!(shadow_support(&root.join("cache"), &input), Err(FilesError::NoSetupHook(_))));
        let big = input_in(&root, "big-input");
        std::fs::File::create(big.join("nix-support/huge")).unwrap().set_len(MAX_SUPPORT_BYTES + 1).unwrap();
        assert!(matches!(shadow_support(&root.join("cache"), &big), Err(FilesError::TooLarge(_))));
        assert_eq!(std::fs::read_dir(root.join("cache")).unwrap().count(), 0, "nothing half-made is left");
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn the_shadow_of_an_input_that_left_the_store_is_removed_when_another_is_made() {
        let root = scratch("collected");
        let (store, cache) = (root.join("store"), root.join("cache"));
        let collected = shadow_support(&cache, &input_in(&store, "abc-patchelf")).unwrap();
        let kept = shadow_support(&cache, &input_in(&store, "def-patchelf")).unwrap();
        let old_release = cache.join("shadow-def-stdenv");
        std::fs::create_dir_all(&old_release).unwrap();
        std::fs::remove_dir_all(store.join("abc-patchelf")).unwrap();
        let new = shadow_support(&cache, &input_in(&store, "ghi-patchelf")).unwrap();
        assert!(!collected.exists(), "the shadow of a collected input stays");
        assert!(!old_release.exists(), "an older release's whole-stdenv shadow stays");
        assert!(kept.is_dir() && new.is_dir());
        let _ = make_writable(&root);
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn a_full_cache_takes_no_new_shadow_and_keeps_those_in_use() {
        let root = scratch("full");
        let (store, cache) = (root.join("store"), root.join("cache"));
        for i in 0..MAX_SHADOWS {
            shadow_support(&cache, &input_in(&store, &format!("{i:03}-patchelf"))).unwrap();
        }
        let one_more = input_in(&store, "new-patchelf");
        assert!(matches!(shadow_support(&cache, &one_more), Err(FilesError::CacheFull(_))));
        assert_eq!(std::fs::read_dir(&cache).unwrap().count(), MAX_SHADOWS);
        assert!(shadow_support(&cache, &store.join("000-patchelf")).is_ok(), "a shadow that is made already is still served");
        let _ = make_writable(&root);
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn a_nix_support_with_more_entries_than_the_budget_is_not_copied() {
        let root = scratch("wide");
        let wide = input_in(&root, "wide-input");
        for i in 0..MAX_SUPPORT_ENTRIES {
            std::fs::write(wide.join(format!("nix-support/f{i}")), "").unwrap();
        }
        assert!(matches!(shadow_support(&root.join("cache"), &wide), Err(FilesError::TooLarge(_))));
        let _ = std::fs::remove_dir_all(&root);
    }
}
