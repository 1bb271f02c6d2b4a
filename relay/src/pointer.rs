//! The log line that tells how to attach to a paused build.
//!
//! Its wording is settled, so that people and scripts can rely on it:
//!
//! ```text
//! nix-attach: DRV failed in PHASE (exit CODE): COMMAND — on host HOST, attach with `nix-attach attach ID` until DEADLINE (agent AGENT)
//! ```
//!
//! AGENT is the agent binary's store path, there on the build's machine,
//! which the wrapper passes to `--via` for a build on a remote builder; the
//! part that names it is left out where the agent is not in the store. It
//! comes last, so that what a person reads first fits a terminal where the
//! build's name and command let it. What to do about sudo, and how to reach
//! a remote builder, `nix-attach list` and the wrapper say, not every line.
//!
//! The agent writes it into the build log once; `nix-attach build` finds it
//! in nix's output, and [`Pointer::parse`] reads it also from the `@nix`
//! message that carried it, as the log file keeps it. Lines of older
//! releases (``attach with `sudo nix-attach attach ID` ``, ``--agent
//! AGENT` ``) still read. Everything the build chose is sanitised, so it
//! has no control characters and is always one line.
//!
//! May use: [`metadata`](crate::metadata), [`sanitize`](crate::sanitize); no
//! module that uses it (`layout` keeps the arrows one way).

use crate::metadata::{is_id, Metadata, ID_LENGTH};
use crate::sanitize::sanitize;
use std::time::{Duration, SystemTime};

const PREFIX: &str = "nix-attach: ";
const SUMMARY_END: &str = " — on host ";
const ATTACH: &str = "attach with `nix-attach attach ";
/// How lines written before the broker said it.
const ATTACH_WITH_SUDO: &str = "attach with `sudo nix-attach attach ";
const AGENT: &str = " (agent ";
/// How older lines named the agent: ``--agent AGENT` ``.
const OLDER_AGENT: &str = "--agent ";
/// What comes before a line that Nix's log keeps as a message to show.
const NIX_MESSAGE: &str = "@nix {";

/// Writes the line for a waiting build whose agent is `agent` (its store
/// path, if it is in the store).
pub fn line(meta: &Metadata, agent: Option<&str>) -> String {
    let agent = agent.map(|agent| format!("{AGENT}{})", sanitize(agent))).unwrap_or_default();
    format!(
        "{PREFIX}{summary}{SUMMARY_END}{host}, {ATTACH}{id}` until {deadline}{agent}",
        summary = summary(meta),
        host = sanitize(&meta.hostname),
        id = meta.id,
        deadline = deadline(meta),
    )
}

/// `DRV failed in PHASE (exit CODE): COMMAND`
pub fn summary(meta: &Metadata) -> String {
    format!("{} failed in {} (exit {}): {}", sanitize(&meta.drv), phase_name(meta), meta.exit_code, sanitize(&meta.command))
}

/// The phase, or what failed when no phase ran.
pub fn phase_name(meta: &Metadata) -> String {
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

/// What a pointer line says, read back from text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pointer {
    pub id: String,
    /// `DRV failed in PHASE (exit CODE): COMMAND`, as the line had it.
    pub summary: String,
    /// The agent's store path, where the line names it.
    pub agent: Option<String>,
}

impl Pointer {
    /// The name of the derivation that paused, as the line has it.
    pub fn drv_name(&self) -> &str {
        self.summary.split_once(" failed in ").map_or(&self.summary, |(name, _)| name)
    }

    /// Reads a pointer from a line of text (after any prefix nix adds,
    /// such as `drv> ` with `-L`), or `None` if it holds none.
    pub fn parse(text: &str) -> Option<Pointer> {
        match nix_message(text) {
            Some(message) => Pointer::parse_plain(&message),
            None => Pointer::parse_plain(text),
        }
    }

    /// Reads a pointer from a line of text as the build wrote it.
    fn parse_plain(text: &str) -> Option<Pointer> {
        let start = text.find(PREFIX)? + PREFIX.len();
        let rest = &text[start..];
        let summary = &rest[..rest.find(SUMMARY_END)?];
        let after = [ATTACH, ATTACH_WITH_SUDO].iter().find_map(|attach| Some(&rest[rest.find(attach)? + attach.len()..]))?;
        let id = after.get(..ID_LENGTH)?;
        let well_formed = is_id(id) && after[ID_LENGTH..].starts_with('`');
        let agent = [(AGENT, ')'), (OLDER_AGENT, '`')].iter().find_map(|(start, end)| {
            after.find(start).map(|at| &after[at + start.len()..]).and_then(|rest| Some(&rest[..rest.find(*end)?]))
        });
        let agent = agent.filter(|agent| agent.starts_with('/') && !agent.contains(char::is_whitespace)).map(String::from);
        well_formed.then(|| Pointer { id: id.to_string(), summary: sanitize(summary), agent })
    }
}

/// The text of an `@nix` message in `text` (`{"action":"msg",…}`), as Nix
/// shows it.
fn nix_message(text: &str) -> Option<String> {
    let json = &text[text.find(NIX_MESSAGE)? + NIX_MESSAGE.len() - 1..];
    let message: serde_json::Value = serde_json::from_str(json).ok()?;
    Some(message.get("msg")?.as_str()?.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::tests::sample;

    fn meta() -> Metadata {
        Metadata { id: "4f2a9c0e11d3".into(), since: 1_764_108_000, ..sample() }
    }

    #[test]
    fn the_line_names_everything_needed_to_attach() {
        assert_eq!(
            line(&meta(), None),
            "nix-attach: hello-2.12 failed in buildPhase (exit 2): make -j2 — on host localhost, attach with \
             `nix-attach attach 4f2a9c0e11d3` until 2025-11-25T22:30:00Z"
        );
    }

    #[test]
    fn an_agent_in_the_store_is_named_last_and_reads_back() {
        let agent = "/nix/store/0c7ll2ipdhhljd8f3jzbmq6h7hxks2iw-attach-hook/bin/nix-attach";
        let text = line(&meta(), Some(agent));
        assert!(text.ends_with(&format!("until 2025-11-25T22:30:00Z (agent {agent})")), "{text}");
        let pointer = Pointer::parse(&text).unwrap();
        assert_eq!((pointer.id.as_str(), pointer.agent.as_deref()), ("4f2a9c0e11d3", Some(agent)));
        assert_eq!(Pointer::parse(&line(&meta(), None)).unwrap().agent, None);
    }

    #[test]
    fn a_line_that_nix_keeps_as_a_message_in_its_log_reads_back() {
        let agent = "/nix/store/0c7ll2ipdhhljd8f3jzbmq6h7hxks2iw-attach-hook/bin/nix-attach";
        // JSON escapes a quote of the command, which the summary must not
        // keep.
        let quoting = Metadata { command: r#"make "all""#.into(), ..meta() };
        let message = serde_json::json!({ "action": "msg", "level": 0, "msg": line(&quoting, Some(agent)) });
        let pointer = Pointer::parse(&format!("@nix {message}")).unwrap();
        assert_eq!((pointer.id.as_str(), pointer.agent.as_deref()), ("4f2a9c0e11d3", Some(agent)));
        assert_eq!(pointer.summary, r#"hello-2.12 failed in buildPhase (exit 2): make "all""#);
    }

    #[test]
    fn a_line_reads_back_as_its_id_and_summary() {
        let pointer = Pointer::parse(&format!("hello> {}", line(&meta(), None))).unwrap();
        assert_eq!(pointer.id, "4f2a9c0e11d3");
        assert_eq!(pointer.summary, "hello-2.12 failed in buildPhase (exit 2): make -j2");
    }

    #[test]
    fn a_hostile_command_cannot_forge_a_second_line() {
        let hostile = Metadata { command: "x\nnix-attach: fake \x1b[2J".into(), ..meta() };
        let text = line(&hostile, None);
        assert!(!text.contains('\n') && !text.contains('\x1b'));
        assert_eq!(Pointer::parse(&text).unwrap().id, "4f2a9c0e11d3");
    }

    #[test]
    fn lines_of_older_releases_still_read() {
        let old = "nix-attach: hello-2.12 failed in buildPhase (exit 2): make -j2 — on host localhost, attach with \
                   `sudo nix-attach attach 4f2a9c0e11d3`; it waits until 2025-11-25T22:30:00Z (1800 s without a session), \
                   then fails as usual";
        assert_eq!(Pointer::parse(old).unwrap().id, "4f2a9c0e11d3");
        let agent = "/nix/store/0c7ll2ipdhhljd8f3jzbmq6h7hxks2iw-attach-hook/bin/nix-attach";
        let with_agent = format!(
            "nix-attach: hello-2.12 failed in buildPhase (exit 2): make -j2 — on host localhost, attach with \
             `nix-attach attach 4f2a9c0e11d3` (sudo if no broker serves you; from another machine add `--via ssh://BUILDER \
             --agent {agent}`); it waits until 2025-11-25T22:30:00Z (1800 s without a session), then fails as usual"
        );
        assert_eq!(Pointer::parse(&with_agent).unwrap().agent.as_deref(), Some(agent));
    }

    #[test]
    fn text_that_is_not_a_pointer_reads_as_none() {
        assert_eq!(Pointer::parse("nix-attach: something else"), None);
        assert_eq!(Pointer::parse("building '/nix/store/…'"), None);
        let bad_id = line(&meta(), None).replace("4f2a9c0e11d3", "4f2a9c0e11dZ");
        assert_eq!(Pointer::parse(&bad_id), None);
        let long_id = line(&meta(), None).replace("4f2a9c0e11d3", "4f2a9c0e11d3aa");
        assert_eq!(Pointer::parse(&long_id), None);
    }
}
