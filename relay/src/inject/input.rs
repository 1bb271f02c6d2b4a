//! Which of a build's inputs the injection goes into: a package that the
//! stdenv's setup is sure to activate, whose `nix-support/setup-hook` it
//! sources. The pre-build hook maps a shadow of that `nix-support/`
//! directory over it ([`super::files`]), so the attach hook comes in as one
//! more setup hook, while the input itself, and the stdenv, stay as they
//! are in the sandbox. Nothing is evaluated: the lists are read from the
//! derivations.
//!
//! The stdenv's own `defaultNativeBuildInputs` are looked at first, the
//! build's dependency lists after. That is the one place every stdenv
//! build has such a package: nixpkgs' setup activates the stdenv's
//! defaultNativeBuildInputs for every build, whatever its own lists or
//! `strictDeps` say, and every Linux stdenv, with a compiler or without,
//! has patchelf there (with one, the cc-wrapper too). The shadow made for
//! one stdenv's package then serves every build of that stdenv.
//!
//! A path is taken only if it is an input of the build, a directory
//! directly in the store, as Nix puts them in the sandbox:
//! - from the stdenv's list, an output of one of the stdenv derivation's
//!   inputs or one of its input sources, named in the stdenv's `setup`
//!   (so the stdenv refers to it, and it is in the build's closure);
//! - from the build's lists, an output of one of its input derivations or
//!   one of its input sources;
//!
//! and only if its `nix-support` is a directory, not a link, holding a
//! regular `setup-hook`: the hook maps a directory over a directory that
//! exists, never a file, and never makes one (Nix would make a missing
//! target inside the real store path).
//!
//! Uses: [`crate::derivation`].

use crate::derivation::{Derivation, DerivationError};
use std::path::{Path, PathBuf};

/// Where Nix keeps store paths; the hook serves the daemon's own store.
const STORE: &str = "/nix/store/";
/// The lists of nixpkgs' make-derivation.nix whose packages setup
/// activates, as the build names them.
const DEPENDENCY_LISTS: [&str; 12] = [
    "depsBuildBuild",
    "depsBuildBuildPropagated",
    "nativeBuildInputs",
    "propagatedNativeBuildInputs",
    "depsBuildTarget",
    "depsBuildTargetPropagated",
    "depsHostHost",
    "depsHostHostPropagated",
    "buildInputs",
    "propagatedBuildInputs",
    "depsTargetTarget",
    "depsTargetTargetPropagated",
];
/// The most of a stdenv's `setup` that is read (nixpkgs' is about 60 KiB).
const MAX_SETUP_BYTES: u64 = 4 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error(transparent)]
    Derivation(#[from] DerivationError),
    #[error("the build's `stdenv` {0} is not one of its inputs, a directory directly in the store")]
    Stdenv(String),
    #[error("cannot read the structured attributes")]
    StructuredAttrs(#[source] serde_json::Error),
}

/// Why a build gets no injection, for the wrapper's one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unhooked {
    /// Not run by bash with a `stdenv`.
    NotStdenv,
    /// No input qualifies.
    NoSetupHook,
}

impl std::fmt::Display for Unhooked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Unhooked::NotStdenv => "it is not a stdenv build, which the daemon's pre-build hook leaves alone",
            Unhooked::NoSetupHook => "none of its inputs has a nix-support/setup-hook that the daemon's pre-build hook could extend",
        })
    }
}

/// The input of the stdenv build `drv` whose `nix-support/` the shadow
/// goes over, or why there is none.
pub fn setup_hook_input(drv: &Derivation) -> Result<Result<PathBuf, Unhooked>, InputError> {
    let Some(stdenv) = stdenv_of(drv)? else { return Ok(Err(Unhooked::NotStdenv)) };
    let stdenv = input_stdenv(drv, &stdenv)?;
    if let Some(path) = from_stdenv(drv, &stdenv)? {
        return Ok(Ok(PathBuf::from(path)));
    }
    for list in DEPENDENCY_LISTS {
        if let Some(path) = words(drv, list)?.into_iter().find(|path| is_input(drv, path) && has_setup_hook(path)) {
            return Ok(Ok(PathBuf::from(path)));
        }
    }
    Ok(Err(Unhooked::NoSetupHook))
}

/// The first of the stdenv's `defaultNativeBuildInputs` that qualifies:
/// an input of the stdenv's derivation, named in its `setup`.
fn from_stdenv(drv: &Derivation, stdenv: &str) -> Result<Option<String>, InputError> {
    let Some(stdenv_drv) = producer(drv, stdenv) else { return Ok(None) };
    let setup = read_setup(stdenv);
    let mut listed = words(&stdenv_drv, "defaultNativeBuildInputs")?.into_iter();
    Ok(listed.find(|path| setup.contains(path.as_str()) && is_input(&stdenv_drv, path) && has_setup_hook(path)))
}

/// The `stdenv` of a stdenv build run by bash: from its environment, or
/// from its structured attributes. `None` for any other build.
pub fn stdenv_of(drv: &Derivation) -> Result<Option<String>, InputError> {
    if !drv.runs_bash() {
        return Ok(None);
    }
    Ok(words(drv, "stdenv")?.into_iter().next())
}

/// The store paths an attribute of `drv` names: the words of its
/// environment variable, or of its structured attribute (a string or a
/// list of strings).
fn words(drv: &Derivation, name: &str) -> Result<Vec<String>, InputError> {
    if let Some(value) = drv.env.get(name) {
        return Ok(value.split_ascii_whitespace().map(String::from).collect());
    }
    let Some(json) = drv.env.get("__json") else { return Ok(Vec::new()) };
    let attrs: serde_json::Value = serde_json::from_str(json).map_err(InputError::StructuredAttrs)?;
    Ok(match attrs.get(name) {
        Some(serde_json::Value::String(value)) => value.split_ascii_whitespace().map(String::from).collect(),
        Some(serde_json::Value::Array(values)) => values.iter().filter_map(|value| value.as_str()).map(String::from).collect(),
        _ => Vec::new(),
    })
}

/// `stdenv`, checked to be one of the build's own inputs. A derivation may
/// not name any other path as its stdenv.
fn input_stdenv(drv: &Derivation, stdenv: &str) -> Result<String, InputError> {
    if is_input(drv, stdenv) {
        Ok(stdenv.to_string())
    } else {
        Err(InputError::Stdenv(stdenv.to_string()))
    }
}

/// Whether `path` is a store path directly below the store (no `..`, no
/// deeper path) that `drv` has as an input source or as an output of one
/// of its input derivations.
fn is_input(drv: &Derivation, path: &str) -> bool {
    let is_name = path.strip_prefix(STORE).is_some_and(is_store_name);
    is_name && (drv.input_sources.iter().any(|source| source == path) || producer(drv, path).is_some())
}

/// The input derivation of `drv` that has `path` among the outputs `drv`
/// uses. The derivation that makes `HASH-NAME` or `HASH-NAME-OUTPUT` is
/// `HASH2-NAME.drv`: only the inputs with such a name are read.
fn producer(drv: &Derivation, path: &str) -> Option<Derivation> {
    let name = path.strip_prefix(STORE)?.split_once('-')?.1;
    let named = |input: &str| {
        let input_name = input.strip_suffix(".drv").and_then(|file| file.rsplit('/').next()).and_then(|file| file.split_once('-'));
        input_name.is_some_and(|(_, base)| name == base || name.strip_prefix(base).is_some_and(|rest| rest.starts_with('-')))
    };
    drv.input_derivations.iter().filter(|(input, _)| named(input)).find_map(|(input, used)| {
        let input = Derivation::read(Path::new(input)).ok()?;
        used.iter().any(|output| input.outputs.get(output).is_some_and(|out| out == path)).then_some(input)
    })
}

/// A store path's name: `HASH-NAME`, of the characters Nix allows, and not
/// `.` or `..`.
fn is_store_name(name: &str) -> bool {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "+-._?=".contains(c);
    !name.is_empty() && !name.starts_with('.') && name.chars().all(allowed)
}

/// Whether `path` is a directory whose `nix-support` is a directory holding
/// a regular `setup-hook`, none of them a link.
fn has_setup_hook(path: &str) -> bool {
    let is = |path: &Path, kind: fn(&std::fs::FileType) -> bool| path.symlink_metadata().is_ok_and(|meta| kind(&meta.file_type()));
    let support = Path::new(path).join("nix-support");
    is(Path::new(path), std::fs::FileType::is_dir)
        && is(&support, std::fs::FileType::is_dir)
        && is(&support.join("setup-hook"), std::fs::FileType::is_file)
}

/// The stdenv's `setup`, as far as it is read, or nothing. Anyone may
/// have put the stdenv in the store (`nix-store --add`): a `setup` that is
/// a link or a fifo is neither followed nor waited on (by root, with the
/// daemon's worker waiting), and a stdenv that is a link is not entered.
fn read_setup(stdenv: &str) -> String {
    use nix::fcntl::{open, openat, OFlag};
    use std::io::Read;
    let (mode, no_link) = (nix::sys::stat::Mode::empty(), OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC);
    let mut text = String::new();
    let Ok(dir) = open(stdenv, OFlag::O_RDONLY | OFlag::O_DIRECTORY | no_link, mode) else { return text };
    let Ok(setup) = openat(&dir, "setup", OFlag::O_RDONLY | OFlag::O_NONBLOCK | no_link, mode) else { return text };
    let file = std::fs::File::from(setup);
    if file.metadata().is_ok_and(|meta| meta.is_file()) {
        let _ = file.take(MAX_SETUP_BYTES).read_to_string(&mut text);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stdenvs_setup_is_read_only_as_a_regular_file_never_through_a_link_or_from_a_fifo() {
        let dir = std::env::temp_dir().join(format!("nix-attach-read-setup-{}", std::process::id()));
        let (plain, linked, fifo) = (dir.join("plain"), dir.join("linked"), dir.join("fifo"));
        for stdenv in [&plain, &linked, &fifo] {
            std::fs::create_dir_all(stdenv).unwrap();
        }
        std::fs::write(plain.join("setup"), "setup text").unwrap();
        std::os::unix::fs::symlink(plain.join("setup"), linked.join("setup")).unwrap();
        nix::unistd::mkfifo(&fifo.join("setup"), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let stdenv_link = dir.join("stdenv-link");
        std::os::unix::fs::symlink(&plain, &stdenv_link).unwrap();
        let stdenvs = [plain, linked, fifo, stdenv_link].map(|path| path.to_string_lossy().into_owned());
        let texts = crate::testing::never_blocks("reading a fifo's setup", move || stdenvs.map(|stdenv| read_setup(&stdenv)));
        assert_eq!(texts, ["setup text", "", "", ""]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn with_stdenv(stdenv: &str, sources: &[&str]) -> Derivation {
        Derivation {
            builder: "/nix/store/0123-bash/bin/bash".to_string(),
            input_sources: sources.iter().map(|source| source.to_string()).collect(),
            env: [("stdenv".to_string(), stdenv.to_string())].into(),
            ..Derivation::default()
        }
    }

    #[test]
    fn only_a_stdenv_that_is_an_input_directly_in_the_store_is_taken() {
        let ok = "/nix/store/0123-stdenv-linux";
        assert!(input_stdenv(&with_stdenv(ok, &[ok]), ok).is_ok());
        assert!(input_stdenv(&with_stdenv(ok, &[]), ok).is_err(), "not an input");
        for bad in [
            "/nix/store/0123-x/deeper-stdenv-linux",
            "/nix/store/../../tmp/x",
            "/tmp/0123-stdenv",
            "/nix/store/0123-a\n/host=/",
            "/nix/store/..",
        ] {
            assert!(input_stdenv(&with_stdenv(bad, &[bad]), bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_build_that_is_not_run_by_bash_with_a_stdenv_is_not_a_stdenv_build() {
        let stdenv = "/nix/store/0123-stdenv-linux";
        let not_bash = Derivation { builder: "/nix/store/0123-python/bin/python3".to_string(), ..with_stdenv(stdenv, &[stdenv]) };
        assert_eq!(setup_hook_input(&not_bash).unwrap(), Err(Unhooked::NotStdenv));
        let no_stdenv = Derivation { env: Default::default(), ..with_stdenv(stdenv, &[stdenv]) };
        assert_eq!(setup_hook_input(&no_stdenv).unwrap(), Err(Unhooked::NotStdenv));
    }

    #[test]
    fn structured_attributes_name_their_lists_as_lists() {
        let drv = Derivation {
            env: [(
                "__json".to_string(),
                r#"{"buildInputs": ["/nix/store/0123-a", "/nix/store/4567-b"], "stdenv": "/nix/store/89-s"}"#.into(),
            )]
            .into(),
            ..Derivation::default()
        };
        assert_eq!(words(&drv, "buildInputs").unwrap(), ["/nix/store/0123-a", "/nix/store/4567-b"]);
        assert_eq!(words(&drv, "stdenv").unwrap(), ["/nix/store/89-s"]);
        assert!(words(&drv, "nativeBuildInputs").unwrap().is_empty());
    }

    #[test]
    fn only_a_real_nix_support_directory_with_a_regular_setup_hook_is_mapped_over() {
        let root = std::env::temp_dir().join(format!("inject-input-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let package = |name: &str| {
            let path = root.join(name);
            std::fs::create_dir_all(path.join("nix-support")).unwrap();
            path
        };
        let good = package("good");
        std::fs::write(good.join("nix-support/setup-hook"), "").unwrap();
        assert!(has_setup_hook(good.to_str().unwrap()));
        let missing = package("missing");
        assert!(!has_setup_hook(missing.to_str().unwrap()), "no setup-hook");
        let linked_hook = package("linked-hook");
        std::os::unix::fs::symlink(good.join("nix-support/setup-hook"), linked_hook.join("nix-support/setup-hook")).unwrap();
        assert!(!has_setup_hook(linked_hook.to_str().unwrap()), "setup-hook is a link");
        let linked_support = root.join("linked-support");
        std::fs::create_dir(&linked_support).unwrap();
        std::os::unix::fs::symlink(good.join("nix-support"), linked_support.join("nix-support")).unwrap();
        assert!(!has_setup_hook(linked_support.to_str().unwrap()), "nix-support is a link: a mount would land where it points");
        let linked_package = root.join("linked-package");
        std::os::unix::fs::symlink(&good, &linked_package).unwrap();
        assert!(!has_setup_hook(linked_package.to_str().unwrap()), "the package is a link");
        let file = root.join("audit-tmpdir.sh");
        std::fs::write(&file, "").unwrap();
        assert!(!has_setup_hook(file.to_str().unwrap()), "a file hook has no nix-support/");
        let _ = std::fs::remove_dir_all(&root);
    }
}
