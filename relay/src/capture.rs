//! The capture file: a paused build made portable (`nix-attach capture`).
//!
//! A capture is a tar archive, compressed with zstd, of two parts:
//! - [`BUILD`]`/…`: the build directory as the sandbox had it, with modes
//!   and links. The shell snapshot that sessions start from lives there
//!   too (the hook's `.nix-attach-*` files and the agent's state
//!   directory). Sockets, fifos and device files are left out, and the
//!   manifest names them.
//! - [`MANIFEST`]: what the sandbox was ([`Sandbox`], as the agent saw it
//!   from inside) and where it was taken ([`Origin`], as the client saw
//!   it).
//! - [`DERIVATION`], where the client knew which derivation was built:
//!   its `.drv` text, read from the store (the manifest names its path).
//!
//! The agent streams the first part and its half of the manifest, as a
//! plain tar archive; the client checks every entry ([`check_entry`]),
//! adds the rest and writes the file. Whoever reads a capture reads what a build wrote: every
//! name, size and field is checked here, and nothing else is trusted.
//!
//! Uses no other module of the crate.

use serde::{Deserialize, Serialize};
use std::io::Read;
use std::os::unix::ffi::OsStringExt;
use std::path::{Component, Path, PathBuf};

/// The archive's directory that holds the build directory.
pub const BUILD: &str = "build";
/// The archive's entry that holds the manifest.
pub const MANIFEST: &str = "nix-attach-capture.json";
/// The archive's entry that holds the derivation's `.drv` text.
pub const DERIVATION: &str = "derivation.drv";
/// The largest `.drv` text a capture keeps.
pub const MAX_DERIVATION: u64 = 16 * 1024 * 1024;
/// Bumped when the file changes incompatibly.
pub const FORMAT: u32 = 1;
/// The largest manifest accepted (the store paths dominate it).
pub const MAX_MANIFEST: u64 = 4 * 1024 * 1024;
/// The most store paths a sandbox may list.
const MAX_STORE_PATHS: usize = 20_000;
/// The most special files a manifest names as left out.
pub const MAX_LEFT_OUT: usize = 1_000;
/// The longest string field accepted.
const MAX_FIELD: usize = 4096;
/// The longest name a GNU long-name or long-link entry may give (Linux's
/// `PATH_MAX`).
pub const MAX_LONG_NAME: u64 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("archive entry {0:?} is not a plain relative path under {BUILD}/")]
    BadPath(String),
    #[error("archive entry {path:?} is a {kind}, which a capture never holds")]
    BadKind { path: String, kind: &'static str },
    #[error("the manifest is larger than {MAX_MANIFEST} bytes")]
    ManifestTooLarge,
    #[error("the manifest does not parse")]
    Manifest(#[source] serde_json::Error),
    #[error("the manifest's {0} is not valid: {1}")]
    Field(&'static str, String),
    #[error("the capture has no manifest")]
    NoManifest,
    #[error("the capture's format is {0}; this nix-attach reads format {FORMAT}")]
    Format(u32),
    #[error("the archive is not valid (cut short or corrupt)")]
    Archive(#[source] std::io::Error),
    #[error("the archive gives a long name of {0} bytes; a name has at most {MAX_LONG_NAME}")]
    LongName(u64),
}

/// What the sandbox was, as the agent saw it from inside.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sandbox {
    pub format: u32,
    /// The derivation's name.
    pub name: String,
    /// The build directory's path inside the sandbox (`$NIX_BUILD_TOP`).
    pub build_top: String,
    /// The failure's working directory inside the sandbox.
    pub cwd: String,
    /// The shell that sessions run (the builder's bash), inside the sandbox.
    pub shell: String,
    pub hostname: String,
    pub uid: u32,
    pub gid: u32,
    /// Every store path the sandbox had: its input closure.
    pub store_paths: Vec<String>,
    /// What else was at the sandbox's root (`bin/sh`, `etc/passwd`, …).
    pub other_paths: Vec<String>,
    /// Special files of the build directory left out, relative to it.
    pub left_out: Vec<String>,
}

/// Where the capture was taken, as the client saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Origin {
    /// The first line of `nix --version` there.
    pub nix: String,
    /// The Nix system type (`x86_64-linux`).
    pub system: String,
    /// When, in seconds since the epoch.
    pub taken: u64,
    /// The host name of the machine it was taken on.
    #[serde(default)]
    pub machine: String,
    /// The derivation's store path, where the client knew it; its text is
    /// the archive's [`DERIVATION`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub derivation: Option<String>,
}

/// The manifest of a capture file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub sandbox: Sandbox,
    pub origin: Origin,
}

/// The kinds of archive entry a capture holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Directory,
    Symlink,
}

/// Checks one archive entry's path and kind: a plain relative path (no
/// `..`, no root, nothing odd) either under [`BUILD`] or the manifest or
/// derivation itself, and a file, directory or symlink. Returns its kind.
pub fn check_entry(path: &Path, kind: tar::EntryType) -> Result<EntryKind, CaptureError> {
    let shown = || path.to_string_lossy().into_owned();
    let mut components = path.components();
    let first = components.next();
    let plain = path.components().all(|component| matches!(component, Component::Normal(_)));
    let under_build = first == Some(Component::Normal(BUILD.as_ref()));
    let top_file = path == Path::new(MANIFEST) || path == Path::new(DERIVATION);
    if !plain || !(under_build || top_file) {
        return Err(CaptureError::BadPath(shown()));
    }
    let bad = |kind| Err(CaptureError::BadKind { path: shown(), kind });
    // `build` itself is the build directory: a directory and nothing else.
    let inside = !under_build || path.components().count() > 1;
    match kind {
        tar::EntryType::Directory if under_build => Ok(EntryKind::Directory),
        _ if !inside => bad("non-directory"),
        tar::EntryType::Regular | tar::EntryType::Continuous => Ok(EntryKind::File),
        tar::EntryType::Symlink if under_build => Ok(EntryKind::Symlink),
        tar::EntryType::Link => bad("hard link"),
        tar::EntryType::Char | tar::EntryType::Block => bad("device file"),
        tar::EntryType::Fifo => bad("fifo"),
        _ => bad("special entry"),
    }
}

/// One entry of a capture's archive, checked: its whole name, a link's
/// target, its kind, and the entry to read its contents from.
pub struct Checked<'a, R: Read> {
    pub path: PathBuf,
    /// A symlink's target.
    pub target: Option<PathBuf>,
    pub kind: EntryKind,
    pub entry: tar::Entry<'a, R>,
}

/// A capture's archive read entry by entry, raw. The tar crate's own
/// reading would hold a GNU long name, a pax header or a sparse map of
/// whatever size the archive declares in memory before anyone saw it; here
/// a long name or link is read to at most [`MAX_LONG_NAME`] bytes, and
/// every other extension entry is refused by [`check_entry`].
pub struct CheckedEntries<'a, R: Read>(tar::Entries<'a, R>);

impl<'a, R: Read> CheckedEntries<'a, R> {
    pub fn new(archive: &'a mut tar::Archive<R>) -> Result<Self, CaptureError> {
        Ok(CheckedEntries(archive.entries().map_err(CaptureError::Archive)?.raw(true)))
    }

    /// The next entry, checked; `None` at the archive's end.
    pub fn next_checked(&mut self) -> Result<Option<Checked<'a, R>>, CaptureError> {
        let (mut long_name, mut long_target) = (None, None);
        loop {
            let Some(entry) = self.0.next() else {
                return match long_name.or(long_target) {
                    Some(_) => Err(CaptureError::Archive(invalid("a long name with no entry after it"))),
                    None => Ok(None),
                };
            };
            let mut entry = entry.map_err(CaptureError::Archive)?;
            let kind = entry.header().entry_type();
            let slot = match kind {
                _ if kind.is_gnu_longname() => &mut long_name,
                _ if kind.is_gnu_longlink() => &mut long_target,
                _ => {
                    let path = match long_name {
                        Some(name) => name,
                        None => entry.path().map_err(CaptureError::Archive)?.into_owned(),
                    };
                    let kind = check_entry(&path, kind)?;
                    let target = match (kind, long_target) {
                        (EntryKind::Symlink, Some(target)) => Some(target),
                        (EntryKind::Symlink, None) => Some(
                            entry
                                .link_name()
                                .map_err(CaptureError::Archive)?
                                .ok_or_else(|| CaptureError::Archive(invalid("a link without a target")))?
                                .into_owned(),
                        ),
                        _ => None,
                    };
                    return Ok(Some(Checked { path, target, kind, entry }));
                }
            };
            if slot.is_some() {
                return Err(CaptureError::Archive(invalid("two long names for one entry")));
            }
            let size = entry.size();
            *slot = Some(read_long_name(&mut entry, size)?);
        }
    }
}

/// The name a GNU long-name or long-link entry gives, read to at most
/// [`MAX_LONG_NAME`] bytes.
fn read_long_name(entry: &mut impl Read, size: u64) -> Result<PathBuf, CaptureError> {
    if size > MAX_LONG_NAME {
        return Err(CaptureError::LongName(size));
    }
    let mut name = Vec::new();
    entry.take(size).read_to_end(&mut name).map_err(CaptureError::Archive)?;
    while name.last() == Some(&0) {
        name.pop();
    }
    Ok(PathBuf::from(std::ffi::OsString::from_vec(name)))
}

fn invalid(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string())
}

/// A raw tar entry, written byte by byte as a hostile archive would have
/// it (the tar crate refuses to write such names): a header naming `name`,
/// of `kind`, mode 4755, declaring `declared` bytes, linking to `link`;
/// then `data`. For tests.
#[cfg(test)]
pub fn raw_entry(name: &str, kind: tar::EntryType, data: &[u8], declared: u64, link: Option<&str>) -> Vec<u8> {
    let mut header = tar::Header::new_old();
    header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    if let Some(link) = link {
        header.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
    }
    header.set_entry_type(kind);
    header.set_mode(0o4755);
    header.set_size(declared);
    header.set_cksum();
    let mut bytes = header.as_bytes().to_vec();
    bytes.extend_from_slice(data);
    bytes.resize(bytes.len().div_ceil(512) * 512, 0);
    bytes
}

/// A mode as a capture keeps it: permission bits only, never setuid,
/// setgid or sticky.
pub fn plain_mode(mode: u32) -> u32 {
    mode & 0o777
}

/// Whether `path` is a store path: `/nix/store/` (or this store's
/// directory) and one plain name with a hash.
pub fn is_store_path(path: &str, store: &Path) -> bool {
    let Some(name) = Path::new(path).strip_prefix(store).ok().and_then(|rest| rest.to_str()) else { return false };
    let allowed = |c: char| c.is_ascii_alphanumeric() || "+-._?=".contains(c);
    let hash = name.split('-').next().unwrap_or_default();
    hash.len() == 32 && name.len() > 33 && !name.contains('/') && name.chars().all(allowed)
}

impl Sandbox {
    /// A sandbox as a small build's capture describes it, for tests.
    #[cfg(test)]
    pub fn example() -> Sandbox {
        Sandbox {
            format: FORMAT,
            name: "hello".into(),
            build_top: "/build".into(),
            cwd: "/build/src".into(),
            shell: "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-bash/bin/bash".into(),
            hostname: "localhost".into(),
            uid: 1000,
            gid: 100,
            store_paths: vec!["/nix/store/0123456789abcdfghijklmnpqrsvwxyz-bash".into()],
            other_paths: vec!["/etc/passwd".into()],
            left_out: vec![],
        }
    }

    /// Checks every field of a sandbox description that came from a build.
    pub fn check(&self, store: &Path) -> Result<(), CaptureError> {
        if self.format != FORMAT {
            return Err(CaptureError::Format(self.format));
        }
        let field = |name, value: &str| text_field(name, value, false);
        field("name", &self.name)?;
        field("hostname", &self.hostname)?;
        for (name, path) in [("build_top", &self.build_top), ("cwd", &self.cwd), ("shell", &self.shell)] {
            field(name, path)?;
            let absolute = Path::new(path).is_absolute() && Path::new(path).components().all(|c| !matches!(c, Component::ParentDir));
            if !absolute {
                return Err(CaptureError::Field(name, path.clone()));
            }
        }
        if self.store_paths.len() > MAX_STORE_PATHS || self.left_out.len() > MAX_LEFT_OUT || self.other_paths.len() > MAX_LEFT_OUT {
            return Err(CaptureError::Field("lists", "too many entries".into()));
        }
        if let Some(bad) = self.store_paths.iter().find(|path| !is_store_path(path, store)) {
            return Err(CaptureError::Field("store_paths", bad.chars().take(200).collect()));
        }
        for path in self.other_paths.iter().chain(&self.left_out) {
            field("other_paths", path)?;
        }
        Ok(())
    }
}

impl Origin {
    /// Checks every field of an origin that came in a file someone handed
    /// over. (The host name is empty in captures of nix-attach 0.x before
    /// it was kept.)
    pub fn check(&self, store: &Path) -> Result<(), CaptureError> {
        text_field("nix", &self.nix, false)?;
        text_field("system", &self.system, false)?;
        text_field("machine", &self.machine, true)?;
        match &self.derivation {
            Some(drv) if !is_derivation_path(drv, store) => Err(CaptureError::Field("derivation", drv.chars().take(200).collect())),
            _ => Ok(()),
        }
    }

    /// Where and when the capture was taken, for a banner: `taken
    /// 2026-12-06T05:10:00Z on runner-3 (nix (Nix) 2.8.0, x86_64-linux)`.
    pub fn describe(&self) -> String {
        let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(self.taken);
        let machine = if self.machine.is_empty() { "an unnamed machine" } else { &self.machine };
        let mut said = format!("taken {} on {machine} ({}, {})", humantime::format_rfc3339_seconds(when), self.nix, self.system);
        if let Some(drv) = &self.derivation {
            said.push_str(&format!(", building {drv}"));
        }
        said
    }
}

/// Checks a text field from a file: bounded, no control characters, and
/// not empty unless `may_be_empty`.
fn text_field(name: &'static str, value: &str, may_be_empty: bool) -> Result<(), CaptureError> {
    let ok = (may_be_empty || !value.is_empty()) && value.len() <= MAX_FIELD && !value.chars().any(char::is_control);
    if ok {
        Ok(())
    } else {
        Err(CaptureError::Field(name, value.chars().take(80).collect()))
    }
}

/// Whether `path` is a derivation's store path (`….drv`).
pub fn is_derivation_path(path: &str, store: &Path) -> bool {
    path.ends_with(".drv") && is_store_path(path, store)
}

/// Reads a manifest from at most [`MAX_MANIFEST`] bytes.
pub fn parse_manifest<T: serde::de::DeserializeOwned>(text: &[u8]) -> Result<T, CaptureError> {
    if text.len() as u64 > MAX_MANIFEST {
        return Err(CaptureError::ManifestTooLarge);
    }
    serde_json::from_slice(text).map_err(CaptureError::Manifest)
}

/// The file name a capture of the build `name` gets by default.
pub fn default_file_name(name: &str) -> PathBuf {
    PathBuf::from(file_name_for(name, "nix-attach"))
}

/// A file name for the build `name`, ending in `.extension`, in plain
/// characters and never hidden.
pub fn file_name_for(name: &str, extension: &str) -> String {
    let safe: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || "+-._".contains(c) { c } else { '_' }).collect();
    let safe = safe.trim_start_matches('.');
    format!("{}.{extension}", if safe.is_empty() { "build" } else { safe })
}

/// Reads a size such as `4G`, `512M`, `64K` or a number of bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let (digits, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let shift = match unit {
        "" => 0,
        "K" | "k" | "KiB" => 10,
        "M" | "MiB" => 20,
        "G" | "GiB" => 30,
        _ => return Err(format!("{text:?} is not a size (a number of bytes, or with K, M or G)")),
    };
    let number: u64 = digits.parse().map_err(|_| format!("{text:?} is not a size (a number of bytes, or with K, M or G)"))?;
    number.checked_shl(shift).filter(|size| size >> shift == number).ok_or_else(|| format!("{text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_plain_paths_under_build_or_the_manifest() {
        let file = tar::EntryType::Regular;
        assert_eq!(check_entry(Path::new("build/src/a.c"), file).unwrap(), EntryKind::File);
        assert_eq!(check_entry(Path::new(MANIFEST), file).unwrap(), EntryKind::File);
        assert_eq!(check_entry(Path::new(DERIVATION), file).unwrap(), EntryKind::File);
        for bad in ["/etc/passwd", "build/../../x", "../x", "./build/x", "other/x", "build2/x"] {
            assert!(matches!(check_entry(Path::new(bad), file), Err(CaptureError::BadPath(_))), "{bad}");
        }
        assert!(matches!(check_entry(Path::new(BUILD), file), Err(CaptureError::BadKind { .. })));
    }

    #[test]
    fn only_files_directories_and_symlinks_are_kept() {
        assert_eq!(check_entry(Path::new("build/d"), tar::EntryType::Directory).unwrap(), EntryKind::Directory);
        assert_eq!(check_entry(Path::new("build/l"), tar::EntryType::Symlink).unwrap(), EntryKind::Symlink);
        for kind in [tar::EntryType::Char, tar::EntryType::Block, tar::EntryType::Fifo, tar::EntryType::Link] {
            assert!(matches!(check_entry(Path::new("build/x"), kind), Err(CaptureError::BadKind { .. })), "{kind:?}");
        }
        assert!(check_entry(Path::new(MANIFEST), tar::EntryType::Symlink).is_err());
        assert!(check_entry(Path::new(DERIVATION), tar::EntryType::Directory).is_err());
    }

    fn raw(name: &str, kind: tar::EntryType, size: u64, data: &[u8]) -> Vec<u8> {
        raw_entry(name, kind, data, size, None)
    }

    /// The paths of an archive's entries as [`CheckedEntries`] reads them,
    /// or its error.
    fn read_all(archive: &[u8]) -> Result<Vec<PathBuf>, CaptureError> {
        let mut archive = tar::Archive::new(archive);
        let mut entries = CheckedEntries::new(&mut archive)?;
        let mut paths = Vec::new();
        while let Some(checked) = entries.next_checked()? {
            paths.push(checked.path);
        }
        Ok(paths)
    }

    #[test]
    fn a_long_name_names_the_entry_after_it_and_is_never_read_past_path_max() {
        let long = format!("build/{}", "d/".repeat(100) + "file.c");
        let mut named = raw("././@LongLink", tar::EntryType::GNULongName, long.len() as u64 + 1, format!("{long}\0").as_bytes());
        named.extend(raw("build/short", tar::EntryType::Regular, 1, b"x"));
        named.extend([0; 1024]);
        assert_eq!(read_all(&named).unwrap(), vec![PathBuf::from(&long)]);
        // 64 GiB declared, a few bytes there: refused before any is held.
        let mut bomb = raw("././@LongLink", tar::EntryType::GNULongName, 1 << 36, b"build/x");
        bomb.extend([0; 1024]);
        assert!(matches!(read_all(&bomb), Err(CaptureError::LongName(size)) if size == 1 << 36));
        for kind in [tar::EntryType::XHeader, tar::EntryType::GNUSparse, tar::EntryType::XGlobalHeader] {
            let mut extension = raw("build/x", kind, 1 << 36, b"");
            extension.extend([0; 1024]);
            assert!(matches!(read_all(&extension), Err(CaptureError::BadKind { .. })), "{kind:?}");
        }
    }

    #[test]
    fn modes_lose_setuid_setgid_and_sticky() {
        assert_eq!(plain_mode(0o104755), 0o755);
        assert_eq!(plain_mode(0o3777), 0o777);
    }

    #[test]
    fn store_paths_are_one_hashed_name_under_the_store() {
        let store = Path::new("/nix/store");
        assert!(is_store_path("/nix/store/0123456789abcdfghijklmnpqrsvwxyz-bash-5.2", store));
        for bad in ["/nix/store/short-bash", "/etc/passwd", "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-a/../b", "/nix/store/"] {
            assert!(!is_store_path(bad, store), "{bad}");
        }
    }

    #[test]
    fn an_origin_names_a_derivation_only_by_its_store_path_and_says_where_it_was_taken() {
        let store = Path::new("/nix/store");
        let drv = "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-hello-2.12.drv";
        let mut origin =
            Origin { nix: "nix (Nix) 2.8.0".into(), system: "x86_64-linux".into(), taken: 0, machine: "runner-3".into(), derivation: None };
        assert!(origin.check(store).is_ok());
        assert_eq!(origin.describe(), "taken 1970-01-01T00:00:00Z on runner-3 (nix (Nix) 2.8.0, x86_64-linux)");
        origin.derivation = Some(drv.into());
        assert!(origin.check(store).is_ok() && origin.describe().ends_with(&format!(", building {drv}")));
        for bad in ["/nix/store/0123456789abcdfghijklmnpqrsvwxyz-hello", "/etc/x.drv", "/nix/store/x/../y.drv"] {
            origin.derivation = Some(bad.into());
            assert!(matches!(origin.check(store), Err(CaptureError::Field("derivation", _))), "{bad}");
        }
        origin.derivation = None;
        origin.machine = "runner\u{1b}[2J".into();
        assert!(matches!(origin.check(store), Err(CaptureError::Field("machine", _))));
    }

    #[test]
    fn sizes_read_with_units_and_refuse_overflow() {
        assert_eq!(parse_size("4G"), Ok(4 << 30));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("1024"), Ok(1024));
        assert!(parse_size("4T").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("99999999999999999G").is_err());
    }

    #[test]
    fn default_names_are_safe_file_names() {
        assert_eq!(default_file_name("hello-2.12"), PathBuf::from("hello-2.12.nix-attach"));
        assert_eq!(default_file_name("../x/y"), PathBuf::from("_x_y.nix-attach"));
    }
}
