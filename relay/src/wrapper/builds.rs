//! Which derivations Nix builds, and where, from its output:
//!
//! ```text
//! building '/nix/store/…-foo.drv'...                           (local)
//! building '/nix/store/…-foo.drv' on 'ssh://builder'...      (Nix 2.8 and later, Lix)
//! ```
//!
//! so that a build that pauses is tied to its derivation (a capture keeps
//! its path and text) and, where it was sent away, reached `--via` that
//! builder.

use std::collections::HashMap;
use std::path::Path;

const BUILDING: &str = "building '";
const ON: &str = "' on '";

/// The derivation and builder of each derivation name Nix builds.
#[derive(Debug, Default)]
pub struct Builds {
    /// `None` where two derivations of one name were built: which one
    /// paused is then not known.
    derivations: HashMap<String, Option<String>>,
    builders: HashMap<String, String>,
}

impl Builds {
    /// Reads one line (without its line break).
    pub fn line(&mut self, text: &str) {
        let Some(start) = text.find(BUILDING) else { return };
        let rest = &text[start + BUILDING.len()..];
        let Some((drv, rest)) = rest.split_once('\'') else { return };
        if !drv.ends_with(".drv") || drv.contains(char::is_whitespace) {
            return;
        }
        let name = crate::derivation::name_of(Path::new(drv));
        let known = self.derivations.entry(name.clone()).or_insert_with(|| Some(drv.to_string()));
        if known.as_deref() != Some(drv) {
            *known = None;
        }
        let Some(rest) = rest.strip_prefix(&ON[1..]) else { return };
        let Some((uri, _)) = rest.split_once('\'') else { return };
        if uri.starts_with("ssh://") || uri.starts_with("ssh-ng://") {
            self.builders.insert(name, uri.to_string());
        }
    }

    /// The builder that derivation `name` was sent to, if any.
    pub fn builder_of(&self, name: &str) -> Option<&str> {
        self.builders.get(name).map(String::as_str)
    }

    /// The one derivation of this name that Nix built, if it was one.
    pub fn derivation_of(&self, name: &str) -> Option<&str> {
        self.derivations.get(name)?.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_build_sent_to_an_ssh_builder_is_tied_to_it_by_name() {
        let mut builds = Builds::default();
        builds.line("building '/nix/store/aaa-hello-2.12.drv' on 'ssh://builder@farm?ssh-key=/k'...");
        builds.line("building '/nix/store/bbb-local.drv'...");
        assert_eq!(builds.builder_of("hello-2.12"), Some("ssh://builder@farm?ssh-key=/k"));
        assert_eq!(builds.builder_of("local"), None);
    }

    #[test]
    fn a_build_is_tied_to_its_derivation_unless_two_share_its_name() {
        let mut builds = Builds::default();
        builds.line("building '/nix/store/aaa-hello-2.12.drv' on 'ssh://builder'...");
        builds.line("building '/nix/store/bbb-local.drv'...");
        builds.line("building '/nix/store/ccc-twice.drv'...");
        builds.line("building '/nix/store/ddd-twice.drv'...");
        builds.line("building '/nix/store/ddd-twice.drv'...");
        assert_eq!(builds.derivation_of("hello-2.12"), Some("/nix/store/aaa-hello-2.12.drv"));
        assert_eq!(builds.derivation_of("local"), Some("/nix/store/bbb-local.drv"));
        assert_eq!(builds.derivation_of("twice"), None);
    }
}
