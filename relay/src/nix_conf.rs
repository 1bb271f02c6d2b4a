//! What this machine's Nix is set to, as its own programs read it: the
//! store directory (`NIX_STORE_DIR`, else /nix/store), the state directory
//! (`NIX_STATE_DIR`, else /nix/var/nix), the configuration
//! directory (`NIX_CONF_DIR`, else /etc/nix) and the settings in its
//! nix.conf. Read without asking any program.
//!
//! Uses no other module of the crate.

use std::path::PathBuf;

/// The store directory.
pub fn store_dir() -> PathBuf {
    std::env::var_os("NIX_STORE_DIR").map_or_else(|| PathBuf::from("/nix/store"), PathBuf::from)
}

/// The state directory, which holds the garbage collector's roots.
pub fn state_dir() -> PathBuf {
    std::env::var_os("NIX_STATE_DIR").map_or_else(|| PathBuf::from("/nix/var/nix"), PathBuf::from)
}

/// The configuration directory.
pub fn conf_dir() -> PathBuf {
    std::env::var_os("NIX_CONF_DIR").map_or_else(|| PathBuf::from("/etc/nix"), PathBuf::from)
}

/// The configuration file.
pub fn conf_file() -> PathBuf {
    conf_dir().join("nix.conf")
}

/// The values nix.conf gives setting `name`, in order (the last wins).
pub fn values(name: &str) -> Vec<String> {
    values_in(&std::fs::read_to_string(conf_file()).unwrap_or_default(), name)
}

fn values_in(conf: &str, name: &str) -> Vec<String> {
    let lines = conf.lines().filter_map(|line| line.split_once('=')).filter(|(key, _)| key.trim() == name);
    lines.map(|(_, value)| value.trim().to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_setting_s_values_come_in_order() {
        let conf = "builders = ssh://a\nmax-jobs = 0\n extra-builders=ssh://b \nbuilders = @/m\n";
        assert_eq!(values_in(conf, "builders"), ["ssh://a", "@/m"]);
        assert_eq!(values_in(conf, "extra-builders"), ["ssh://b"]);
        assert!(values_in(conf, "cores").is_empty());
    }
}
