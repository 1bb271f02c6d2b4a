//! The builders Nix itself knows, from nix.conf (`NIX_CONF_DIR`, else
//! /etc/nix): its `builders` setting (by default `@$NIX_CONF_DIR/machines`)
//! and `extra-builders`, with the machines files they name (`@FILE`). Each
//! entry is `URI SYSTEMS KEY …`; entries split at line breaks and `;`, `#`
//! starts a comment, `-` is a field left empty, and a URI without a scheme
//! is `ssh://`.
//!
//! The wrapper reaches a remote build only through a builder named here:
//! which builder a build ran on, it reads from nix's output, which a build
//! can print into too.

use crate::nix_conf;
use std::path::{Path, PathBuf};

/// A builder Nix knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    pub uri: String,
    pub key: Option<PathBuf>,
}

/// The builder that Nix knows as `uri`, if it knows one.
pub fn find(uri: &str) -> Option<Machine> {
    let default = format!("@{}", nix_conf::conf_dir().join("machines").display());
    let builders = nix_conf::values("builders").pop().unwrap_or(default);
    let all = std::iter::once(builders).chain(nix_conf::values("extra-builders")).collect::<Vec<_>>().join("\n");
    find_in(&all, uri, 0)
}

/// The entry for `uri` in a `builders` value; `@FILE` is read (to a few
/// levels, as a file may name another).
fn find_in(builders: &str, uri: &str, depth: usize) -> Option<Machine> {
    let entries = builders.split(['\n', ';']).map(|entry| entry.split('#').next().unwrap_or_default().trim());
    for entry in entries.filter(|entry| !entry.is_empty()) {
        if let Some(file) = entry.strip_prefix('@') {
            let text = if depth < 4 { std::fs::read_to_string(Path::new(file.trim())).unwrap_or_default() } else { String::new() };
            if let Some(machine) = find_in(&text, uri, depth + 1) {
                return Some(machine);
            }
            continue;
        }
        let fields: Vec<&str> = entry.split_whitespace().collect();
        let named = fields.first().is_some_and(|first| *first == uri || format!("ssh://{first}") == uri);
        if named {
            let key = fields.get(2).filter(|key| **key != "-" && !key.is_empty()).map(PathBuf::from);
            return Some(Machine { uri: uri.to_string(), key });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(builders: &str, uri: &str) -> Option<Option<PathBuf>> {
        find_in(builders, uri, 0).map(|machine| machine.key)
    }

    #[test]
    fn the_entry_that_names_the_builder_is_found_with_its_key() {
        let builders = "ssh://a x86_64-linux /k/a 4 # first\n; ssh://b x86_64-linux - 2\nc aarch64-linux /k/c";
        assert_eq!(key(builders, "ssh://a"), Some(Some(PathBuf::from("/k/a"))));
        assert_eq!(key(builders, "ssh://b"), Some(None));
        assert_eq!(key(builders, "ssh://c"), Some(Some(PathBuf::from("/k/c"))));
        assert_eq!(key(builders, "ssh://d"), None, "a builder Nix does not know");
    }
}
