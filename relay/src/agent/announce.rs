//! The words the agent puts in the build log and in the shell's banner.
//!
//! Log lines are printed once: as an `@nix` message where Nix reads the
//! build's output for them (`NIX_LOG_FD` is set), so that `nix-build`,
//! `nix build` with or without `-L`, and a remote builder's output show
//! it once; plain elsewhere. The line that tells how to attach is
//! [`crate::pointer`]'s.

use crate::metadata::Metadata;
use crate::sanitize::sanitize;

/// The line that says how the wait ended.
pub fn ending(meta: &Metadata, how: &str) -> String {
    format!("nix-attach: {} {how}; the build fails with exit code {}", sanitize(&meta.drv), meta.exit_code)
}

/// Prints `line` to the build log, once.
pub fn to_log(line: &str) {
    eprintln!("{}", for_log(line, std::env::var_os("NIX_LOG_FD").is_some()));
}

/// `line` as the build log takes it: an `@nix` message where Nix reads
/// them, else plain.
fn for_log(line: &str, nix_reads_messages: bool) -> String {
    if !nix_reads_messages {
        return line.to_string();
    }
    let message = serde_json::json!({ "action": "msg", "level": 0, "msg": line });
    format!("@nix {message}")
}

/// The banner an attached shell prints first.
/// `replay`: the build is a replay of a capture, taken where and when it
/// says, and no build waits on any host.
pub fn banner(meta: &Metadata, cwd: &str, left_out: &[String], replay: Option<&str>) -> Vec<String> {
    let mut lines = vec![
        format!(
            "nix-attach: inside the build of {}, stopped after {} failed (exit {}).",
            sanitize(&meta.drv),
            crate::pointer::phase_name(meta),
            meta.exit_code
        ),
        format!("  failed command: {}", sanitize(&meta.command)),
    ];
    if !meta.stack.is_empty() {
        let frames: Vec<String> = meta.stack.iter().map(|frame| sanitize(frame)).collect();
        lines.push(format!("  stack: {}", frames.join(" < ")));
    }
    lines.push(format!("  restored: variables, arrays, functions, aliases, options, umask and the directory {}", sanitize(cwd)));
    if !meta.locals {
        lines.push("  taken at exit, not at the failing command (no ERR trap fired): the failing function's locals may be missing".into());
    }
    for option in left_out {
        lines.push(format!("  not restored: `set -o {option}` (a failing command would end this session)"));
    }
    lines.extend(replay.map(|origin| {
        format!("  a replay of a capture {}: no process of the build runs here, and none runs anywhere for this session.", sanitize(origin))
    }));
    lines.push(if replay.is_some() {
        "  `exit` leaves, and the replay's copy of the build directory is removed; the original build is not touched.".to_string()
    } else {
        format!(
            "  `exit` detaches; `nix-attach release {}` on the host lets the build fail now; with no session it waits {} s.",
            meta.id, meta.timeout
        )
    });
    lines
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
            max_pause: 14400,
            build_top: "/build".into(),
            hostname: "localhost".into(),
        }
    }

    #[test]
    fn a_log_line_is_one_message_where_nix_reads_them_and_plain_elsewhere() {
        let line = "nix-attach: hello-2.12 failed";
        assert_eq!(for_log(line, false), line);
        let message = for_log(line, true);
        assert!(!message.contains('\n'), "{message}");
        let json: serde_json::Value = serde_json::from_str(message.strip_prefix("@nix ").unwrap()).unwrap();
        assert_eq!((json["action"].as_str(), json["msg"].as_str()), (Some("msg"), Some(line)));
    }

    #[test]
    fn the_banner_says_what_was_not_restored() {
        let mut exited = meta();
        exited.locals = false;
        let lines = banner(&exited, "/build/src", &["errexit".into()], None);
        assert!(lines.iter().any(|l| l.contains("locals")));
        assert!(lines.iter().any(|l| l.contains("set -o errexit")));
        assert!(lines.iter().any(|l| l.contains("nix-attach release 4f2a9c0e11d3")));
    }

    #[test]
    fn a_replays_banner_names_no_build_to_release() {
        let lines = banner(&meta(), "/build/src", &[], Some("taken 2026-12-06T05:10:00Z on runner-3\u{1b}[2J"));
        assert!(lines.iter().any(|l| l.contains("a replay of a capture taken 2026-12-06T05:10:00Z on runner-3") && !l.contains('\u{1b}')));
        assert!(lines.iter().any(|l| l.contains("no process of the build runs here")));
        assert!(!lines.iter().any(|l| l.contains("nix-attach release")));
    }
}
