//! Finds the derivations whose builder failed, in nix's error output, so
//! that the wrapper can offer to build again the ones that did not pause.
//!
//! Only a derivation whose own builder failed counts; a derivation that
//! failed because a dependency did is not built again (its dependency
//! is). Nix has said it in two ways:
//!
//! ```text
//! error: builder for '/nix/store/…-foo.drv' failed with exit code 2;     (Nix 2.8-2.29, Lix)
//! error: Cannot build '/nix/store/…-foo.drv'.                            (Nix 2.30 and later)
//!        Reason: builder failed with exit code 2.
//! ```

use std::path::PathBuf;

const BUILDER_FOR: &str = "builder for '";
const FAILED: &str = "' failed";
const CANNOT_BUILD: &str = "Cannot build '";
const BUILDER_FAILED: &str = "Reason: builder failed";

/// The failed derivations found in lines of text, in order, each once.
#[derive(Debug, Default)]
pub struct Failures {
    /// A `Cannot build` line whose reason is still to come.
    pending: Option<PathBuf>,
    pub failed: Vec<PathBuf>,
}

impl Failures {
    /// Reads one line (without its line break).
    pub fn line(&mut self, text: &str) {
        let pending = self.pending.take();
        if let Some(drv) = quoted_after(text, BUILDER_FOR).filter(|_| text.contains(FAILED)) {
            self.found(drv);
        } else if let Some(drv) = quoted_after(text, CANNOT_BUILD) {
            self.pending = Some(drv);
        } else if let Some(drv) = pending.filter(|_| text.trim_start().starts_with(BUILDER_FAILED)) {
            self.found(drv);
        }
    }

    fn found(&mut self, drv: PathBuf) {
        if !self.failed.contains(&drv) {
            self.failed.push(drv);
        }
    }
}

/// The `.drv` path quoted right after `marker` in `text`: a file directly
/// in the store, with a store path's name.
fn quoted_after(text: &str, marker: &str) -> Option<PathBuf> {
    let rest = &text[text.find(marker)? + marker.len()..];
    let path = &rest[..rest.find('\'')?];
    let name = path.strip_prefix(crate::nix_conf::store_dir().to_str()?)?.strip_prefix('/')?;
    let plain = name.chars().all(|c| c.is_ascii_alphanumeric() || "+-._?=".contains(c)) && !name.starts_with('.');
    (plain && name.ends_with(".drv")).then(|| PathBuf::from(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Vec<PathBuf> {
        let mut failures = Failures::default();
        text.lines().for_each(|line| failures.line(line));
        failures.failed
    }

    #[test]
    fn a_failed_builder_is_found_and_its_dependents_are_not() {
        let text = "error: builder for '/nix/store/aaa-dep.drv' failed with exit code 3;\n\
                    \x20      last 2 log lines:\n\
                    error: 1 dependencies of derivation '/nix/store/bbb-top.drv' failed to build\n";
        assert_eq!(read(text), vec![PathBuf::from("/nix/store/aaa-dep.drv")]);
    }

    #[test]
    fn the_newer_wording_counts_only_a_builder_that_failed() {
        let text = "error: Cannot build '/nix/store/aaa-dep.drv'.\n\
                    \x20      Reason: builder failed with exit code 1.\n\
                    error: Cannot build '/nix/store/bbb-top.drv'.\n\
                    \x20      Reason: 1 dependency failed.\n";
        assert_eq!(read(text), vec![PathBuf::from("/nix/store/aaa-dep.drv")]);
    }

    #[test]
    fn only_a_derivation_directly_in_the_store_is_taken() {
        let text = "error: builder for '/tmp/x.drv' failed with exit code 1;\n\
                    error: builder for '/nix/store/../../tmp/y.drv' failed with exit code 1;\n\
                    error: builder for '/nix/store/aaa-a b.drv' failed with exit code 1;\n";
        assert_eq!(read(text), Vec::<PathBuf>::new());
    }

    #[test]
    fn with_keep_going_each_failure_is_found_once_in_order() {
        let text = "error: builder for '/nix/store/aaa-one.drv' failed with exit code 1;\n\
                    error: builder for '/nix/store/ccc-two.drv' failed with exit code 2;\n\
                    error: builder for '/nix/store/aaa-one.drv' failed with exit code 1;\n";
        assert_eq!(read(text), vec![PathBuf::from("/nix/store/aaa-one.drv"), PathBuf::from("/nix/store/ccc-two.drv")]);
    }
}
