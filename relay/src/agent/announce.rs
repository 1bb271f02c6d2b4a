//! The words the agent puts in the build log and in the shell's banner.
//!
//! The log line is settled and stable, so that people and scripts can rely on
//! it: it starts with `nix-attach:` and names the derivation, phase, exit
//! code, failing command, host, attach command and deadline. It is printed
//! plain, for the log, and as an `@nix` message, which `nix build` shows
//! without `-L`.

use crate::metadata::Metadata;
use crate::sanitize::sanitize;
use std::time::{Duration, SystemTime};

/// The line that tells how to attach.
pub fn pointer(meta: &Metadata) -> String {
    format!(
        "nix-attach: {drv} failed in {phase} (exit {code}): {command} — on host {host}, attach with `sudo nix-attach attach {id}`; it waits until {deadline} ({timeout} s without a session), then fails as usual",
        drv = sanitize(&meta.drv),
        phase = phase_name(meta),
        code = meta.exit_code,
        command = sanitize(&meta.command),
        host = sanitize(&meta.hostname),
        id = meta.id,
        deadline = deadline(meta),
        timeout = meta.timeout,
    )
}

/// The line that says how the wait ended.
pub fn ending(meta: &Metadata, how: &str) -> String {
    format!("nix-attach: {} {how}; the build fails with exit code {}", sanitize(&meta.drv), meta.exit_code)
}

/// Prints `line` to the build log, plain and as an `@nix` message.
pub fn to_log(line: &str) {
    let message = serde_json::json!({ "action": "msg", "level": 0, "msg": line });
    eprintln!("{line}");
    eprintln!("@nix {message}");
}

/// The banner an attached shell prints first.
pub fn banner(meta: &Metadata, cwd: &str, left_out: &[String]) -> Vec<String> {
    let mut lines = vec![
        format!(
            "nix-attach: inside the build of {}, stopped after {} failed (exit {}).",
            sanitize(&meta.drv),
            phase_name(meta),
            meta.exit_code
        ),
        format!("  failed command: {}", sanitize(&meta.command)),
    ];
    if !meta.stack.is_empty() {
        let frames: Vec<String> = meta.stack.iter().map(|frame| sanitize(frame)).collect();
        lines.push(format!("  stack: {}", frames.join(" < ")));
    }
    lines.push(format!(
        "  restored: variables, arrays, functions, aliases, options, umask and the directory {}",
        sanitize(cwd)
    ));
    if !meta.locals {
        lines.push(
            "  taken at exit, not at the failing command (no ERR trap fired): the failing function's locals may be missing"
                .into(),
        );
    }
    for option in left_out {
        lines.push(format!("  not restored: `set -o {option}` (a failing command would end this session)"));
    }
    lines.push(format!(
        "  `exit` detaches; `nix-attach release {}` on the host lets the build fail now; with no session it waits {} s.",
        meta.id, meta.timeout
    ));
    lines
}

fn phase_name(meta: &Metadata) -> String {
    if meta.phase.is_empty() {
        "the builder".to_string()
    } else {
        sanitize(&meta.phase)
    }
}

fn deadline(meta: &Metadata) -> String {
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(meta.since.saturating_add(meta.timeout));
    humantime::format_rfc3339_seconds(at).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::VERSION;

    fn meta() -> Metadata {
        Metadata {
            version: VERSION,
            id: "4f2a9c0e11d3".into(),
            drv: "hello-2.12".into(),
            phase: "buildPhase".into(),
            exit_code: 2,
            command: "make -j2".into(),
            stack: vec!["buildPhase".into(), "genericBuild".into()],
            locals: true,
            since: 1_764_108_000,
            timeout: 1800,
            build_top: "/build".into(),
            hostname: "localhost".into(),
        }
    }

    #[test]
    fn the_pointer_names_everything_needed_to_attach() {
        assert_eq!(
            pointer(&meta()),
            "nix-attach: hello-2.12 failed in buildPhase (exit 2): make -j2 — on host localhost, attach with \
             `sudo nix-attach attach 4f2a9c0e11d3`; it waits until 2025-11-25T22:30:00Z (1800 s without a session), \
             then fails as usual"
        );
    }

    #[test]
    fn a_hostile_command_cannot_forge_a_second_line() {
        let mut hostile = meta();
        hostile.command = "x\nnix-attach: fake \x1b[2J".into();
        let line = pointer(&hostile);
        assert!(!line.contains('\n') && !line.contains('\x1b'));
    }

    #[test]
    fn the_banner_says_what_was_not_restored() {
        let mut exited = meta();
        exited.locals = false;
        let lines = banner(&exited, "/build/src", &["errexit".into()]);
        assert!(lines.iter().any(|l| l.contains("locals")));
        assert!(lines.iter().any(|l| l.contains("set -o errexit")));
        assert!(lines.iter().any(|l| l.contains("nix-attach release 4f2a9c0e11d3")));
    }
}
