//! What nix-attach asks of the Nix store, through Nix's own commands (so
//! it works with a daemon, a single-user store and any Nix or Lix): which
//! paths are valid, a path's closure, whether a derivation may just have
//! failed, adding the hook's files, instantiating an expression and
//! building an installable.
//!
//! May use: [`derivation`](crate::derivation), [`nix_conf`](crate::nix_conf);
//! no module that uses it (`layout` keeps the arrows one way).

use crate::derivation::Derivation;
use std::ffi::OsString;
use std::path::Path;
use std::process::{Command, Stdio};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot run {0} (is Nix on PATH?)")]
    Run(String, #[source] std::io::Error),
    #[error("`{command}` failed: {message}")]
    Failed { command: String, message: String },
}

/// Runs `program args…` and returns its standard output, trimmed. Its
/// standard error is kept for the error; on success it is dropped.
fn output(program: &str, args: &[OsString]) -> Result<String, StoreError> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|err| StoreError::Run(program.to_string(), err))?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).trim().to_string());
    }
    let message = message_of(&String::from_utf8_lossy(&out.stderr));
    let words: Vec<String> =
        std::iter::once(program.to_string()).chain(args.iter().map(|arg| arg.to_string_lossy().into_owned())).collect();
    Err(StoreError::Failed { command: words.join(" "), message })
}

/// What a Nix command said went wrong: its last `error:` line, else its
/// last line (never the `--show-trace` hint that follows an error).
fn message_of(stderr: &str) -> String {
    let lines: Vec<&str> =
        stderr.lines().map(str::trim).filter(|line| !line.is_empty() && !line.starts_with("(use '--show-trace'")).collect();
    let error = lines.iter().rev().find(|line| line.starts_with("error:"));
    error.or(lines.last()).map_or_else(|| "(no message)".to_string(), |line| line.to_string())
}

/// The paths among `paths` that are not valid in the store.
pub fn invalid(paths: &[String]) -> Result<Vec<String>, StoreError> {
    if paths.is_empty() {
        return Ok(Vec::new());
    }
    let mut args: Vec<OsString> = vec!["--check-validity".into(), "--print-invalid".into()];
    args.extend(paths.iter().map(OsString::from));
    Ok(output("nix-store", &args)?.lines().map(String::from).collect())
}

/// Whether `drv_path` may be a derivation that has just failed: its file
/// is in the store and none of its outputs is valid. A build's log can
/// print anything, a line that reads like Nix's failure included; this
/// keeps such a line from naming a derivation that built.
pub fn may_have_failed(drv_path: &Path) -> bool {
    let in_store =
        drv_path.parent() == Some(crate::nix_conf::store_dir().as_path()) && drv_path.symlink_metadata().is_ok_and(|meta| meta.is_file());
    let Some(drv) = in_store.then(|| Derivation::read(drv_path).ok()).flatten() else { return false };
    let outputs = drv.output_paths();
    invalid(&outputs).is_ok_and(|invalid| invalid.len() == outputs.len())
}

/// The closure of the store path `root`, itself among it
/// (`nix-store --query --requisites`).
pub fn requisites(root: &str) -> Result<Vec<String>, StoreError> {
    Ok(output("nix-store", &["--query".into(), "--requisites".into(), "--".into(), root.into()])?.lines().map(String::from).collect())
}

/// Builds `installable` (`nix build`, with the new CLI on whatever this
/// Nix's settings) and returns its output paths.
pub fn build_installable(installable: &str) -> Result<Vec<String>, StoreError> {
    let args = ["--extra-experimental-features", "nix-command flakes", "build", "--no-link", "--print-out-paths", "--", installable];
    Ok(output("nix", &args.map(OsString::from))?.lines().map(String::from).collect())
}

/// Adds the file or directory `path` to the store (content-addressed, by
/// its name); returns its store path.
pub fn add(path: &Path) -> Result<String, StoreError> {
    output("nix-store", &["--add".into(), path.into()])
}

/// Instantiates the expression in `file`; returns the derivation's path.
pub fn instantiate(file: &Path) -> Result<String, StoreError> {
    output("nix-instantiate", &[file.into()])
}

/// The derivation that `nix-instantiate ARGS…` (a file and its `-A`,
/// `--arg`…) or `nix path-info --derivation ARGS…` (an installable) names.
pub fn derivation_of(program: &str, args: &[OsString]) -> Result<String, StoreError> {
    let mut all: Vec<OsString> = Vec::new();
    if program == "nix" {
        all.extend(["path-info".into(), "--derivation".into()]);
    }
    all.extend(args.iter().cloned());
    output(program, &all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nix_s_error_line_is_the_message_not_the_trace_hint() {
        let stderr = "warning: x\nerror: getting status of '/nope': No such file or directory\n(use '--show-trace' to show detailed location information)\n";
        assert_eq!(message_of(stderr), "error: getting status of '/nope': No such file or directory");
        assert_eq!(message_of("something broke\n"), "something broke");
    }
}
