//! Whether the daemon that runs the pre-build hook takes the sandbox paths
//! it prints at all.
//!
//! Every Nix from 2.8 mounts them, and Lix 2.90 to 2.92. (Nix 2.30 and
//! later let an input's own entry win over the hook's for the same path;
//! the hook maps a directory inside an input, which no input names, so
//! that changes nothing here.) Lix 2.93 and later drop the hook's output.
//! The version is asked of the daemon's own program (`--version`) once per
//! program file, and remembered.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// A Nix implementation and its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    pub lix: bool,
    pub major: u32,
    pub minor: u32,
}

impl Release {
    /// Reads `nix (Nix) 2.8.0` or `nix (Lix, like Nix) 2.91.1`.
    pub fn parse(version: &str) -> Option<Release> {
        let line = version.lines().next()?;
        let lix = line.contains("(Lix");
        let number = line.rsplit(' ').next()?;
        let mut parts = number.split(['.', 'p', '-', '+']);
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        Some(Release { lix, major, minor })
    }

    /// Whether the sandbox gets the paths a pre-build hook prints.
    pub fn takes_hook_paths(&self) -> bool {
        match (self.lix, self.major, self.minor) {
            (false, 2, minor) => minor >= 8,
            (false, major, _) => major > 2,
            (true, 2, minor) => (90..=92).contains(&minor),
            _ => false,
        }
    }
}

impl std::fmt::Display for Release {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}.{}", if self.lix { "Lix" } else { "Nix" }, self.major, self.minor)
    }
}

/// Where the release of `program` is kept in `cache`: under the program's
/// identity (device, inode, size, time).
fn cache_key(program: &Path, cache: &Path) -> Option<std::path::PathBuf> {
    let meta = std::fs::metadata(program).ok()?;
    Some(cache.join(format!("version-{}-{}-{}-{}", meta.dev(), meta.ino(), meta.size(), meta.mtime())))
}

/// The release of `program` as the cache has it, without asking it.
pub fn known_release_of(program: &Path, cache: &Path) -> Option<Release> {
    std::fs::read_to_string(cache_key(program, cache)?).ok().and_then(|text| Release::parse(&text))
}

/// The release of the Nix program `program`, asked once and remembered in
/// `cache`.
pub fn release_of(program: &Path, cache: &Path) -> Option<Release> {
    if let Some(known) = known_release_of(program, cache) {
        return Some(known);
    }
    let key = cache_key(program, cache)?;
    let text = crate::nix_program::version_output(program)?;
    let release = Release::parse(&text)?;
    let _ = super::files::write_atomically(&key, text.as_bytes());
    Some(release)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn takes(version: &str) -> bool {
        Release::parse(version).unwrap().takes_hook_paths()
    }

    #[test]
    fn every_nix_from_2_8_and_lix_2_90_to_2_92_take_the_hooks_paths() {
        assert!(takes("nix (Nix) 2.8.0"));
        assert!(takes("nix (Nix) 2.29.1\n"));
        assert!(takes("nix (Nix) 2.30.0"));
        assert!(takes("nix (Nix) 2.34.8"));
        assert!(takes("nix (Nix) 3.0.0"));
        assert!(takes("nix (Lix, like Nix) 2.91.1"));
        assert!(takes("nix (Lix, like Nix) 2.92.0"));
    }

    #[test]
    fn lix_from_2_93_and_nix_before_2_8_do_not() {
        assert!(!takes("nix (Nix) 2.7.0"));
        assert!(!takes("nix (Lix, like Nix) 2.93.0"));
        assert!(!takes("nix (Lix, like Nix) 2.95.3"));
    }

    #[test]
    fn pre_releases_read_by_their_number() {
        assert_eq!(Release::parse("nix (Nix) 2.25.0pre20241101_dirty"), Some(Release { lix: false, major: 2, minor: 25 }));
        assert_eq!(Release::parse("not nix"), None);
    }
}
