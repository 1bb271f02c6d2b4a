//! The daemon's pre-build hook: puts the attach hook into a build at
//! sandbox setup, so that a build without it still pauses when it fails,
//! with no edit to its expression and no rebuild.
//!
//! Nix runs the program named by nix.conf's `pre-build-hook` before each
//! build, as root, with the derivation's path and the sandbox's root, and
//! bind-mounts each `TARGET=SOURCE` line it prints after
//! `extra-sandbox-paths`. For a stdenv build that should pause, this hook
//! chooses an input whose setup hook the stdenv sources ([`input`]), and
//! maps a shadow of that input's `nix-support/` directory over it, whose
//! `setup-hook` sources the attach hook first; it maps the hook and the
//! static agent at `/nix-attach` ([`files`]). Only directories are mapped,
//! over directories inside an input: Nix would truncate a file it maps a
//! file over, and the input's own path is one Nix 2.30 and later keep for
//! the input.
//!
//! Every Nix from 2.8 takes such paths; Lix 2.93 and later drop the hook's
//! output ([`version`]), and there it prints nothing. Who pauses
//! ([`policy`]): by default, only builds that `nix-attach build` or `run`
//! asked for, as the kernel says of the daemon worker's client. Whatever
//! goes wrong, it prints nothing, logs one line to the daemon's log and
//! exits 0: Nix fails the build if a pre-build hook fails.
//!
//! Uses: [`crate::derivation`], [`crate::host`], [`crate::nix_conf`],
//! [`crate::sanitize`].
//!
//! May use: [`derivation`](crate::derivation), [`nix_conf`](crate::nix_conf),
//! [`nix_program`](crate::nix_program), [`sanitize`](crate::sanitize),
//! [`waiting`](crate::waiting); no module that uses it (`layout` keeps the
//! arrows one way).

pub mod files;
pub mod input;
pub mod policy;
pub mod version;

use crate::derivation::{Derivation, DerivationError};
use crate::waiting::process::Process;
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
    #[error(transparent)]
    Input(#[from] input::InputError),
    #[error("the path {0:?} cannot be written on a line of `TARGET=SOURCE` (it holds `=` or a line break)")]
    Unprintable(PathBuf),
    #[error("the cache {0} must be a directory of root's that nobody else may write")]
    Cache(PathBuf),
    #[error(transparent)]
    Files(#[from] files::FilesError),
}

/// Whether the daemon's pre-build hook puts the attach hook into builds
/// here, as far as the machine tells without running a program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Injection {
    /// nix.conf (the file named) names no pre-build hook of ours.
    NotConfigured(PathBuf),
    /// Configured, and the Nix the hook found takes its paths.
    Honoured(version::Release),
    /// Configured, but the Nix the hook found drops its output.
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
    let nix = crate::nix_program::nix_on_path();
    match nix.and_then(|nix| version::known_release_of(&std::fs::canonicalize(nix).ok()?, &cache)) {
        Some(release) if release.takes_hook_paths() => Injection::Honoured(release),
        Some(release) => Injection::Ignored(release),
        None => Injection::Unknown,
    }
}

/// Which of the two ways into a failed build applies here, in one line for
/// the wrapper.
pub fn notice() -> String {
    match injection() {
        Injection::NotConfigured(conf) => {
            format!("only builds with the attach hook pause: {} names no {PROGRAM} (see docs/no-edit.md)", conf.display())
        }
        Injection::Honoured(release) => {
            format!("failing stdenv builds pause even without the attach hook: the daemon's pre-build hook puts it in ({release})")
        }
        Injection::Ignored(release) => {
            format!("only builds with the attach hook pause: {release} drops what the pre-build hook prints")
        }
        Injection::Unknown => "failing stdenv builds pause even without the attach hook where the daemon's Nix takes its pre-build \
                               hook's paths (Nix 2.8 and later, Lix 2.90-2.92)"
            .to_string(),
    }
}

/// Why the failed build `drv_path` did not pause although the injection
/// is configured here and not known to be dropped, where the hook tells
/// without running: a build it leaves alone. `None` where it would have
/// put the hook in, or is off (the wrapper's first line said so).
pub fn why_unhooked(drv_path: &Path) -> Option<String> {
    if !matches!(injection(), Injection::Honoured(_) | Injection::Unknown) {
        return None;
    }
    match Derivation::read(drv_path).map_err(InjectError::from).and_then(|drv| Ok(input::setup_hook_input(&drv)?)) {
        Ok(Ok(_)) => None,
        Ok(Err(unhooked)) => Some(unhooked.to_string()),
        Err(err) => Some(format!("the daemon's pre-build hook leaves it alone: {:#}", anyhow::Error::from(err))),
    }
}

/// Whether the daemon's pre-build hook would put the attach hook into the
/// build of `drv`, as far as this machine tells without running it.
pub fn would_hook(drv: &Derivation) -> bool {
    matches!(injection(), Injection::Honoured(_)) && input::setup_hook_input(drv).is_ok_and(|input| input.is_ok())
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
    if input::stdenv_of(&drv)?.is_none() {
        return Ok(Vec::new());
    }
    let Some(worker) = daemon_worker() else { return Ok(Vec::new()) };
    let cache = cache_dir()?;
    // The version is a cached file read; who asked takes a socket copy.
    if !takes_hook_paths(&worker, &cache) || !policy::Pause::from_env().wants(&worker) {
        return Ok(Vec::new());
    }
    let Ok(input) = input::setup_hook_input(&drv)? else { return Ok(Vec::new()) };
    let hook = files::hook_dir(&cache)?;
    let shadow = files::shadow_support(&cache, &input)?;
    Ok(vec![(input.join(files::SUPPORT), shadow), (PathBuf::from(files::SANDBOX_DIR), hook)])
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

/// The daemon worker that runs this hook: our parent, a Nix program of
/// root's.
fn daemon_worker() -> Option<Process> {
    let worker = Process::open(std::os::unix::process::parent_id() as i32).ok()?;
    let facts = worker.facts().ok()?;
    (facts.uid == 0 && facts.euid == 0 && crate::waiting::builders::is_nix_program(&worker)).then_some(worker)
}

/// Whether the worker's Nix takes the hook's sandbox paths.
fn takes_hook_paths(worker: &Process, cache: &Path) -> bool {
    worker.program().ok().and_then(|program| version::release_of(&program, cache)).is_some_and(|release| release.takes_hook_paths())
}

#[cfg(test)]
mod tests {
    use super::*;

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
