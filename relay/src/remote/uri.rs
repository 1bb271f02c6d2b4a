//! Where a remote builder is, as Nix names it: a remote-store URI,
//! `ssh://[user@]host` or `ssh-ng://[user@]host`, with Nix's
//! `?ssh-key=PATH` query parameter (others are Nix's and are left to it).

use std::path::PathBuf;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UriError {
    #[error("{0:?} is not an ssh:// or ssh-ng:// store URI (as in Nix's `builders`: ssh://[user@]host[?ssh-key=PATH])")]
    Scheme(String),
    #[error("{0:?} names no host, or one that ssh would read as an option")]
    Host(String),
}

/// A remote builder reached over ssh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// `[user@]host`, as ssh takes it (an alias of `~/.ssh/config` too).
    pub destination: String,
    /// The key of `?ssh-key=`.
    pub key: Option<PathBuf>,
    /// The URI as given.
    pub uri: String,
}

impl Via {
    pub fn parse(uri: &str) -> Result<Via, UriError> {
        let rest =
            ["ssh://", "ssh-ng://"].iter().find_map(|scheme| uri.strip_prefix(scheme)).ok_or_else(|| UriError::Scheme(uri.to_string()))?;
        let (destination, query) = rest.split_once('?').unwrap_or((rest, ""));
        let destination = destination.trim_end_matches('/');
        let host = destination.rsplit('@').next().unwrap_or_default();
        let plain = |text: &str| text.chars().all(|c| c.is_ascii_graphic() && c != '/');
        if host.is_empty() || destination.starts_with('-') || host.starts_with('-') || !plain(destination) {
            return Err(UriError::Host(uri.to_string()));
        }
        let key = query.split('&').find_map(|pair| pair.strip_prefix("ssh-key=")).filter(|key| !key.is_empty()).map(PathBuf::from);
        Ok(Via { destination: destination.to_string(), key, uri: uri.to_string() })
    }

    /// The same builder with `key` when the URI names none.
    pub fn with_key(mut self, key: Option<PathBuf>) -> Via {
        if self.key.is_none() {
            self.key = key;
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_and_ssh_ng_uris_give_the_destination_and_the_key() {
        let via = Via::parse("ssh://builder@farm.example?ssh-key=/etc/nix/key&compress=true").unwrap();
        assert_eq!(via.destination, "builder@farm.example");
        assert_eq!(via.key, Some(PathBuf::from("/etc/nix/key")));
        assert_eq!(Via::parse("ssh-ng://farm").unwrap().destination, "farm");
        assert_eq!(Via::parse("ssh://localhost?remote-store=/tmp/s").unwrap().key, None);
    }

    #[test]
    fn other_schemes_and_hosts_ssh_would_read_as_options_are_refused() {
        assert!(matches!(Via::parse("daemon"), Err(UriError::Scheme(_))));
        assert!(matches!(Via::parse("https://cache.nixos.org"), Err(UriError::Scheme(_))));
        assert!(matches!(Via::parse("ssh://-oProxyCommand=touch%20x"), Err(UriError::Host(_))));
        assert!(matches!(Via::parse("ssh://user@-oProxyCommand=x"), Err(UriError::Host(_))));
        assert!(matches!(Via::parse("ssh://"), Err(UriError::Host(_))));
        assert!(matches!(Via::parse("ssh://a b"), Err(UriError::Host(_))));
    }
}
