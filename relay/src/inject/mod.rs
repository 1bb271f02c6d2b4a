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
    #[error("the build's `stdenv` {0} is not a directory in the store")]
    Stdenv(String),
    #[error(transparent)]
    Files(#[from] files::FilesError),
    #[error("cannot read the structured attributes")]
    StructuredAttrs(#[source] serde_json::Error),
}

/// Which of the two ways into a failed build applies here, in one line for
/// the wrapper: as far as this machine's nix.conf (`NIX_CONF_DIR`) and its
/// `nix --version` tell.
pub fn notice() -> String {
    let conf_dir = std::env::var_os("NIX_CONF_DIR").map_or_else(|| PathBuf::from("/etc/nix"), PathBuf::from);
    let conf = std::fs::read_to_string(conf_dir.join("nix.conf")).unwrap_or_default();
    let configured = conf
        .lines()
        .filter_map(|line| line.split_once('='))
        .any(|(key, value)| key.trim() == "pre-build-hook" && Path::new(value.trim()).file_name().is_some_and(|name| name == PROGRAM));
    if !configured {
        return format!(
            "only builds with the attach hook pause: {} names no {PROGRAM} (see the README, \"No edit at all\")",
            conf_dir.join("nix.conf").display()
        );
    }
    let release = std::process::Command::new("nix")
        .arg("--version")
        .output()
        .ok()
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .and_then(|text| version::Release::parse(&text));
    match release {
        Some(release) if release.honours_the_hook() => {
            format!("failing builds pause even without the attach hook: the daemon's pre-build hook puts it in ({release})")
        }
        Some(release) => format!("only builds with the attach hook pause: {release} lets an input win over the pre-build hook's paths"),
        None => "failing builds pause without the attach hook where the daemon's Nix honours its pre-build hook".to_string(),
    }
}

/// Runs the hook for `DRV [SANDBOX]`; always returns 0.
pub fn run(args: &[String]) -> i32 {
    let Some(drv) = args.first() else {
        eprintln!("{PROGRAM}: usage: {PROGRAM} DRV [SANDBOX] (run by nix-daemon, from nix.conf's pre-build-hook)");
        return 0;
    };
    // Without a sandbox there is nothing to map into.
    if args.get(1).is_none() {
        return 0;
    }
    match paths_for(Path::new(drv)) {
        Ok(paths) if !paths.is_empty() => {
            let mut out = String::from("extra-sandbox-paths\n");
            for (target, source) in paths {
                out.push_str(&format!("{}={}\n", target.display(), source.display()));
            }
            out.push('\n');
            print!("{out}");
        }
        Ok(_) => {}
        Err(err) => eprintln!("{PROGRAM}: {}: {:#}; the build goes on without the attach hook", drv, anyhow::Error::from(err)),
    }
    0
}

/// The sandbox paths that hook the build at `drv`, or none.
fn paths_for(drv_path: &Path) -> Result<Vec<(PathBuf, PathBuf)>, InjectError> {
    let drv = Derivation::read(drv_path)?;
    let Some(stdenv) = stdenv_of(&drv)? else { return Ok(Vec::new()) };
    let Some(worker) = daemon_worker() else { return Ok(Vec::new()) };
    if !policy::Pause::from_env().wants(&worker) || !honoured(&worker) {
        return Ok(Vec::new());
    }
    let stdenv = PathBuf::from(stdenv);
    if !stdenv.starts_with("/nix/store") || !stdenv.is_dir() {
        return Err(InjectError::Stdenv(stdenv.display().to_string()));
    }
    let cache = std::env::var_os("NIX_ATTACH_CACHE").map_or_else(|| PathBuf::from(DEFAULT_CACHE), PathBuf::from);
    let hook = files::hook_dir(&cache)?;
    let shadow = files::shadow_stdenv(&cache, &stdenv)?;
    Ok(vec![(stdenv, shadow), (PathBuf::from(files::SANDBOX_DIR), hook)])
}

/// The `stdenv` of a stdenv build run by bash: from its environment, or
/// from its structured attributes. `None` for any other build.
fn stdenv_of(drv: &Derivation) -> Result<Option<String>, InjectError> {
    let bash = Path::new(&drv.builder).file_name().is_some_and(|name| name.to_string_lossy().contains("bash"));
    if !bash {
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
fn honoured(worker: &Process) -> bool {
    let cache = std::env::var_os("NIX_ATTACH_CACHE").map_or_else(|| PathBuf::from(DEFAULT_CACHE), PathBuf::from);
    let _ = std::fs::create_dir_all(&cache);
    worker.program().ok().and_then(|program| version::release_of(&program, &cache)).is_some_and(|release| release.honours_the_hook())
}
