//! Which builds Nix sent to a remote builder, from its output:
//!
//! ```text
//! building '/nix/store/…-foo.drv' on 'ssh://builder'...      (Nix 2.8 and later, Lix)
//! ```
//!
//! so that a build that pauses there is reached `--via` that builder.

use std::collections::HashMap;

const BUILDING: &str = "building '";
const ON: &str = "' on '";

/// The builder of each derivation name sent away.
#[derive(Debug, Default)]
pub struct RemoteBuilds {
    builders: HashMap<String, String>,
}

impl RemoteBuilds {
    /// Reads one line (without its line break).
    pub fn line(&mut self, text: &str) {
        let Some(start) = text.find(BUILDING) else { return };
        let rest = &text[start + BUILDING.len()..];
        let Some((drv, rest)) = rest.split_once(ON) else { return };
        let Some((uri, _)) = rest.split_once('\'') else { return };
        if drv.ends_with(".drv") && (uri.starts_with("ssh://") || uri.starts_with("ssh-ng://")) {
            self.builders.insert(crate::retry::name_of(std::path::Path::new(drv)), uri.to_string());
        }
    }

    /// The builder that derivation `name` was sent to, if any.
    pub fn builder_of(&self, name: &str) -> Option<&str> {
        self.builders.get(name).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_build_sent_to_an_ssh_builder_is_tied_to_it_by_name() {
        let mut builds = RemoteBuilds::default();
        builds.line("building '/nix/store/aaa-hello-2.12.drv' on 'ssh://builder@farm?ssh-key=/k'...");
        builds.line("building '/nix/store/bbb-local.drv'...");
        assert_eq!(builds.builder_of("hello-2.12"), Some("ssh://builder@farm?ssh-key=/k"));
        assert_eq!(builds.builder_of("local"), None);
    }
}
