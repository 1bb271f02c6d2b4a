//! The daemon's pre-build hook: puts the attach hook into a build at
//! sandbox setup, so that a build without it still pauses when it fails,
//! with no edit to its expression and no rebuild.
//!
//! Nix runs the program named by nix.conf's `pre-build-hook` before each
//! build, as root, with the derivation's path and the sandbox's root, and
//! bind-mounts each `TARGET=SOURCE` line it prints after
//! `extra-sandbox-paths`. For a stdenv build that should pause, this hook
//! maps a shadow of the build's own `$stdenv` over it, whose `setup`
//! sources the attach hook, and maps the hook and the static agent at
//! `/nix-attach` ([`files`]). Only directories are mapped: Nix would first
//! truncate a file it maps a file over.
//!
//! It takes effect only where the daemon lets the hook's entry win over
//! an input's ([`version`]); elsewhere it prints nothing. Who pauses
//! ([`policy`]): by default, only builds that `nix-attach build` or `run`
//! asked for, as the kernel says of the daemon worker's client. Whatever
//! goes wrong, it prints nothing, logs one line to the daemon's log and
//! exits 0: Nix fails the build if a pre-build hook fails.

pub mod files;
pub mod policy;
pub mod version;

use crate::derivation::{Derivation, DerivationError};
use crate::host::process::Process;
use std::path::{Path, PathBuf};

/// The name the hook's link has, which nix.conf names.
pub const PROGRAM: &str = "nix-attach-pre-build-hook";
/// Where the prepared files are kept, unless `NIX_ATTACH_CACHE` (in the
/// daemon's environment) says otherwise.
pub const DEFAULT_CACHE: &str = "/nix/var/nix-attach";

#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    #[error(transparent)]
    Derivation(#[from] DerivationError),
    #[error("the build's `stdenv` {0} is not one of its inputs, a directory directly in the store")]
    Stdenv(String),
    #[error("the path {0:?} cannot be written on a line of `TARGET=SOURCE` (it holds `=` or a line break)")]
    Unprintable(PathBuf),
    #[error("the cache {0} must be a directory of root's that nobody else may write")]
    Cache(PathBuf),
    #[error(transparent)]
    Files(#[from] files::FilesError),
    #[error("cannot read the structured attributes")]
    StructuredAttrs(#[source] serde_json::Error),
}

/// Whether the daemon's pre-build hook puts the attach hook into builds
/// here, as far as the machine tells without running a program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Injection {
    /// nix.conf (the file named) names no pre-build hook of ours.
    NotConfigured(PathBuf),
    /// Configured, and the Nix the hook found honours it.
    Honoured(version::Release),
    /// Configured, but the Nix the hook found lets inputs win.
    Ignored(version::Release),
    /// Configured; the hook has not yet run to find the Nix.
    Unknown,
}

/// What this machine's nix.conf (`NIX_CONF_DIR`) says, and the version of
/// `nix` that the hook found and kept in its cache.
pub fn injection() -> Injection {
    let configured =
        crate::nix_conf::values("pre-build-hook").iter().any(|hook| Path::new(hook).file_name().is_some_and(|name| name == PROGRAM));
    if !configured {
        return Injection::NotConfigured(crate::nix_conf::conf_file());
    }
    let cache = std::env::var_os("NIX_ATTACH_CACHE").map_or_else(|| PathBuf::from(DEFAULT_CACHE), PathBuf::from);
    let nix = std::env::var_os("PATH").and_then(|path| std::env::split_paths(&path).map(|dir| dir.join("nix")).find(|nix| nix.is_file()));
    match nix.and_then(|nix| version::known_release_of(&std::fs::canonicalize(nix).ok()?, &cache)) {
        Some(release) if release.honours_the_hook() => Injection::Honoured(release),
        Some(release) => Injection::Ignored(release),
        None => Injection::Unknown,
    }
}

/// Which of the two ways into a failed build applies here, in one line for
/// the wrapper.
pub fn notice() -> String {
    match injection() {
        Injection::NotConfigured(conf) => {
            format!("only builds with the attach hook pause: {} names no {PROGRAM} (see the README, \"No edit at all\")", conf.display())
        }
        Injection::Honoured(release) => {
            format!("failing builds pause even without the attach hook: the daemon's pre-build hook puts it in ({release})")
        }
        Injection::Ignored(release) => {
            format!("only builds with the attach hook pause: {release} lets an input win over the pre-build hook's paths")
        }
        Injection::Unknown => "failing builds pause even without the attach hook where the daemon's Nix honours its pre-build hook \
                               (Nix 2.8-2.29, Lix 2.90-2.92)"
            .to_string(),
    }
}

/// Runs the hook for `DRV [SANDBOX]`; always returns 0. With
/// `NIX_ATTACH_HOOK_TIMES=FILE` in the daemon's environment, it appends the
/// microseconds each call took to FILE (what `benches/run` measures).
pub fn run(args: &[String]) -> i32 {
    let started = std::time::Instant::now();
    let code = hook(args);
    if let Some(times) = std::env::var_os("NIX_ATTACH_HOOK_TIMES") {
        use std::io::Write;
        let line = format!("{}\n", started.elapsed().as_micros());
        let _ = std::fs::OpenOptions::new().create(true).append(true).open(times).and_then(|mut file| file.write_all(line.as_bytes()));
    }
    code
}

/// The one line the daemon's log gets when the hook leaves a build alone.
/// The derivation's path and the error's text (which may quote the
/// derivation) are escaped, as the broker's lines are.
fn failure_line(drv: &str, error: &str) -> String {
    use crate::sanitize::sanitize;
    format!("{PROGRAM}: {}: {}; the build goes on without the attach hook", sanitize(drv), sanitize(error))
}

fn hook(args: &[String]) -> i32 {
    let Some(drv) = args.first() else {
        eprintln!("{PROGRAM}: usage: {PROGRAM} DRV [SANDBOX] (run by nix-daemon, from nix.conf's pre-build-hook)");
        return 0;
    };
    // Without a sandbox there is nothing to map into.
    if args.get(1).is_none() {
        return 0;
    }
    match paths_for(Path::new(drv)).and_then(|paths| section(&paths)) {
        Ok(section) => print!("{section}"),
        Err(err) => eprintln!("{}", failure_line(drv, &format!("{:#}", anyhow::Error::from(err)))),
    }
    0
}

/// The `extra-sandbox-paths` section for `paths` (empty for none). Nix
/// splits each line at its first `=` and the output at line breaks, so a
/// path holding either is refused rather than printed.
fn section(paths: &[(PathBuf, PathBuf)]) -> Result<String, InjectError> {
    if paths.is_empty() {
        return Ok(String::new());
    }
    let mut out = String::from("extra-sandbox-paths\n");
    for (target, source) in paths {
        for path in [target, source] {
            let text = path.to_str().ok_or_else(|| InjectError::Unprintable(path.clone()))?;
            if text.contains(['=', '\n', '\r']) {
                return Err(InjectError::Unprintable(path.clone()));
            }
        }
        out.push_str(&format!("{}={}\n", target.display(), source.display()));
    }
    out.push('\n');
    Ok(out)
}

/// The sandbox paths that hook the build at `drv`, or none.
fn paths_for(drv_path: &Path) -> Result<Vec<(PathBuf, PathBuf)>, InjectError> {
    let drv = Derivation::read(drv_path)?;
    let Some(stdenv) = stdenv_of(&drv)? else { return Ok(Vec::new()) };
    let Some(worker) = daemon_worker() else { return Ok(Vec::new()) };
    let cache = cache_dir()?;
    // The version is a cached file read; who asked takes a socket copy.
    if !honoured(&worker, &cache) || !policy::Pause::from_env().wants(&worker) {
        return Ok(Vec::new());
    }
    let stdenv = input_stdenv(&drv, &stdenv)?;
    let hook = files::hook_dir(&cache)?;
    let shadow = files::shadow_stdenv(&cache, &stdenv)?;
    Ok(vec![(stdenv, shadow), (PathBuf::from(files::SANDBOX_DIR), hook)])
}

/// `stdenv`, checked to be one of the build's own inputs: a store path
/// directly below /nix/store (no `..`, no deeper path), and an output of
/// one of its input derivations or one of its input sources. Store paths
/// are immutable and their names unique, so the shadow made for one can
/// serve every build that uses it. A derivation may not name any other
/// path as its stdenv.
fn input_stdenv(drv: &Derivation, stdenv: &str) -> Result<PathBuf, InjectError> {
    let refused = || InjectError::Stdenv(stdenv.to_string());
    let name = stdenv.strip_prefix("/nix/store/").filter(|name| is_store_name(name)).ok_or_else(refused)?;
    let is_source = drv.input_sources.iter().any(|source| source == stdenv);
    // The derivation that makes `HASH-NAME` is `HASH2-NAME.drv`: only the
    // inputs with that name are read.
    let suffix = name.split_once('-').map(|(_, rest)| format!("-{rest}.drv")).ok_or_else(refused)?;
    let is_output = || {
        drv.input_derivations.iter().filter(|(path, _)| path.ends_with(&suffix)).any(|(path, used)| {
            Derivation::read(Path::new(path))
                .is_ok_and(|input| used.iter().any(|output| input.outputs.get(output).is_some_and(|out| out == stdenv)))
        })
    };
    if !(is_source || is_output()) {
        return Err(refused());
    }
    Ok(PathBuf::from(stdenv))
}

/// A store path's name: `HASH-NAME`, of the characters Nix allows, and not
/// `.` or `..`.
fn is_store_name(name: &str) -> bool {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "+-._?=".contains(c);
    !name.is_empty() && !name.starts_with('.') && name.chars().all(allowed)
}

/// The cache directory (`NIX_ATTACH_CACHE` in the daemon's environment, or
/// the default), made if missing; refused unless root owns it and nobody
/// else may write to it, since builds read what is kept there.
fn cache_dir() -> Result<PathBuf, InjectError> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let cache = std::env::var_os("NIX_ATTACH_CACHE").map_or_else(|| PathBuf::from(DEFAULT_CACHE), PathBuf::from);
    let _ = std::fs::DirBuilder::new().recursive(true).mode(0o755).create(&cache);
    match std::fs::symlink_metadata(&cache) {
        Ok(meta) if meta.is_dir() && meta.uid() == 0 && meta.mode() & 0o022 == 0 => Ok(cache),
        _ => Err(InjectError::Cache(cache)),
    }
}

/// The `stdenv` of a stdenv build run by bash: from its environment, or
/// from its structured attributes. `None` for any other build.
pub fn stdenv_of(drv: &Derivation) -> Result<Option<String>, InjectError> {
    if !drv.runs_bash() {
        return Ok(None);
    }
    if let Some(stdenv) = drv.env.get("stdenv") {
        return Ok(Some(stdenv.clone()));
    }
    let Some(json) = drv.env.get("__json") else { return Ok(None) };
    let attrs: serde_json::Value = serde_json::from_str(json).map_err(InjectError::StructuredAttrs)?;
    Ok(attrs.get("stdenv").and_then(|stdenv| stdenv.as_str()).map(String::from))
}

/// The daemon worker that runs this hook: our parent, a Nix program of
/// root's.
fn daemon_worker() -> Option<Process> {
    let worker = Process::open(std::os::unix::process::parent_id() as i32).ok()?;
    let facts = worker.facts().ok()?;
    (facts.uid == 0 && facts.euid == 0 && crate::host::builders::is_nix_program(&worker)).then_some(worker)
}

/// Whether the worker's Nix lets the hook's entries replace inputs.
fn honoured(worker: &Process, cache: &Path) -> bool {
    worker.program().ok().and_then(|program| version::release_of(&program, cache)).is_some_and(|release| release.honours_the_hook())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_stdenv(stdenv: &str, sources: &[&str]) -> Derivation {
        Derivation {
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
    fn a_path_with_a_line_break_or_an_equals_sign_is_never_printed() {
        for bad in ["/nix/store/0123-a=b", "/nix/store/0123-a\n/host", "/x\r"] {
            let paths = [(PathBuf::from(bad), PathBuf::from("/nix/var/nix-attach/shadow"))];
            assert!(matches!(section(&paths), Err(InjectError::Unprintable(_))), "{bad:?}");
            let reversed = [(PathBuf::from("/nix-attach"), PathBuf::from(bad))];
            assert!(matches!(section(&reversed), Err(InjectError::Unprintable(_))), "{bad:?}");
        }
        let good = [(PathBuf::from("/nix/store/0123-stdenv"), PathBuf::from("/nix/var/nix-attach/shadow-0123-stdenv"))];
        assert_eq!(section(&good).unwrap(), "extra-sandbox-paths\n/nix/store/0123-stdenv=/nix/var/nix-attach/shadow-0123-stdenv\n\n");
        assert_eq!(section(&[]).unwrap(), "");
    }

    #[test]
    fn a_failure_line_carries_no_control_character_of_the_derivation() {
        let line = failure_line("/nix/store/x-\x1b]0;owned\x07.drv", "cannot read \"\x1b[2J\nfake line\"");
        assert!(!line.chars().any(char::is_control), "{line:?}");
        assert!(line.contains("\\e]0;owned"), "{line:?}");
    }
}
