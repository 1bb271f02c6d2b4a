//! The ssh key Nix itself uses for a builder, from the `builders` setting
//! of nix.conf (`NIX_CONF_DIR`, else /etc/nix) or the machines file it
//! names (`@FILE`, by default /etc/nix/machines). Each entry is `URI
//! SYSTEMS KEY …`, entries split at line breaks and `;`, `#` starts a
//! comment, and `-` is a field left empty.

use std::path::{Path, PathBuf};

/// The key of the entry for `uri`, if one names a key.
pub fn key_for(uri: &str) -> Option<PathBuf> {
    let conf_dir = std::env::var_os("NIX_CONF_DIR").map_or_else(|| PathBuf::from("/etc/nix"), PathBuf::from);
    let conf = std::fs::read_to_string(conf_dir.join("nix.conf")).unwrap_or_default();
    let builders = conf
        .lines()
        .filter_map(|line| line.split_once('='))
        .filter(|(key, _)| key.trim() == "builders")
        .map(|(_, value)| value.trim().to_string())
        .last()
        .unwrap_or_else(|| "@/etc/nix/machines".to_string());
    key_in(&builders, uri, 0)
}

/// The key for `uri` in a `builders` value; `@FILE` is read (to a few
/// levels, as a file may name another).
fn key_in(builders: &str, uri: &str, depth: usize) -> Option<PathBuf> {
    let entries = builders.split(['\n', ';']).map(|entry| entry.split('#').next().unwrap_or_default().trim());
    for entry in entries.filter(|entry| !entry.is_empty()) {
        if let Some(file) = entry.strip_prefix('@') {
            let text = if depth < 4 { std::fs::read_to_string(Path::new(file.trim())).unwrap_or_default() } else { String::new() };
            if let Some(key) = key_in(&text, uri, depth + 1) {
                return Some(key);
            }
            continue;
        }
        let fields: Vec<&str> = entry.split_whitespace().collect();
        let named = fields.first().is_some_and(|first| *first == uri || format!("ssh://{first}") == uri);
        if named {
            return fields.get(2).filter(|key| **key != "-" && !key.is_empty()).map(PathBuf::from);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_of_the_entry_that_names_the_builder_is_found() {
        let builders = "ssh://a x86_64-linux /k/a 4 # first\n; ssh://b x86_64-linux - 2\nc aarch64-linux /k/c";
        assert_eq!(key_in(builders, "ssh://a", 0), Some(PathBuf::from("/k/a")));
        assert_eq!(key_in(builders, "ssh://b", 0), None);
        assert_eq!(key_in(builders, "ssh://c", 0), Some(PathBuf::from("/k/c")));
        assert_eq!(key_in(builders, "ssh://d", 0), None);
    }
}
