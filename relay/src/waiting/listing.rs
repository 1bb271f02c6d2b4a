//! One waiting build as `list` shows it, as a table or as JSON, whether it
//! was found here or came from the broker.
//!
//! Every field but the ids and numbers was written by an untrusted build:
//! the table sanitises them, and the JSON escapes what a terminal would act
//! on.

use super::discovery::WaitingBuild;
use crate::sanitize::{self, sanitize};
use serde::{Deserialize, Serialize};

/// One waiting build as `list --json` prints it.
///
/// It repeats most of [`crate::metadata::Metadata`]'s fields, on purpose:
/// the metadata is what an agent writes in its build directory (read
/// strictly, and versioned with the protocol), while this is the shape
/// scripts read and the broker sends. It adds what only the finder knows
/// (where the build is, its pid and owner, who asked, until when it
/// waits) and leaves out the agent's own fields (its protocol version, the
/// in-sandbox path). Keeping two types lets the agent's file change
/// without changing the public JSON, which a test of each pins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listing {
    pub id: String,
    pub drv: String,
    pub phase: String,
    pub exit_code: i32,
    pub command: String,
    pub stack: Vec<String>,
    pub locals: bool,
    pub build_dir: String,
    pub since: u64,
    pub timeout: u64,
    /// When the build stops waiting at the latest (unix seconds), sessions
    /// or not.
    pub held_until: u64,
    pub pid: i32,
    pub owner_uid: u32,
    pub hostname: String,
    /// Who asked Nix for the build (the client of the daemon's worker), by
    /// the kernel's account, as root or the broker found it; null where
    /// unknown.
    pub requested_by_uid: Option<u32>,
    pub requested_by_pid: Option<i32>,
}

impl From<&WaitingBuild> for Listing {
    fn from(build: &WaitingBuild) -> Listing {
        let meta = &build.meta;
        Listing {
            id: meta.id.clone(),
            drv: meta.drv.clone(),
            phase: meta.phase.clone(),
            exit_code: meta.exit_code,
            command: meta.command.clone(),
            stack: meta.stack.clone(),
            locals: meta.locals,
            build_dir: build.build_dir.to_string_lossy().into_owned(),
            since: meta.since,
            timeout: meta.timeout,
            held_until: meta.since.saturating_add(meta.max_pause),
            pid: build.pid,
            owner_uid: build.owner,
            hostname: meta.hostname.clone(),
            requested_by_uid: build.requester.map(|requester| requester.uid),
            requested_by_pid: build.requester.map(|requester| requester.pid),
        }
    }
}

/// The listings as pretty JSON, safe for a terminal.
pub fn to_json(listings: &[Listing]) -> serde_json::Result<String> {
    Ok(terminal_safe_json(&serde_json::to_string_pretty(listings)?))
}

/// JSON with the characters serde_json leaves raw but a terminal would act
/// on (C1 controls, bidi overrides) written as `\uXXXX` escapes. They can
/// only occur inside strings, where the escape means the same; the only raw
/// control serde_json writes is the newline between lines.
fn terminal_safe_json(json: &str) -> String {
    let raw = |c: char| c != '\n' && sanitize::is_unsafe(c);
    json.chars().map(|c| if raw(c) { format!("\\u{:04x}", c as u32) } else { c.to_string() }).collect()
}

/// The listings as a table on stdout.
pub fn print_table(listings: &[Listing]) {
    println!("{:<12}  {:<30}  {:<16}  {:>4}  {:<20}  COMMAND", "ID", "DERIVATION", "PHASE", "EXIT", "HELD UNTIL");
    for build in listings {
        let command: String = sanitize(&build.command).chars().take(60).collect();
        println!(
            "{:<12}  {:<30}  {:<16}  {:>4}  {:<20}  {}",
            sanitize(&build.id),
            sanitize(&build.drv),
            sanitize(&build.phase),
            build.exit_code,
            held_until(build.held_until),
            command
        );
    }
}

/// When a build stops waiting at the latest, as an RFC 3339 time (UTC).
fn held_until(at: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(at)).to_string()
}

#[cfg(test)]
mod tests {
    use super::terminal_safe_json;

    #[test]
    fn json_for_a_terminal_escapes_c1_and_bidi_and_stays_valid() {
        let json = serde_json::to_string_pretty(&serde_json::json!({ "drv": "a\u{9b}2J\u{202e}b\u{1b}" })).unwrap();
        let safe = terminal_safe_json(&json);
        assert!(!safe.contains('\u{9b}') && !safe.contains('\u{202e}') && !safe.contains('\u{1b}'));
        let back: serde_json::Value = serde_json::from_str(&safe).unwrap();
        assert_eq!(back["drv"], "a\u{9b}2J\u{202e}b\u{1b}");
    }
}
