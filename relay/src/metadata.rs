//! The description of a waiting build that the agent writes beside its
//! socket, and the file names of the agent's state directory.
//!
//! The host reads this file from a directory the build controls, so parsing
//! is strict: a bounded size, no unknown fields, and bounded strings. The
//! protocol version is read first, alone, so that the metadata of another
//! version (with fields this nix-attach does not know) is refused for its
//! version, not as invalid.
//!
//! May use: [`protocol`](crate::protocol); no module that uses it (`layout`
//! keeps the arrows one way).

use serde::{Deserialize, Serialize};

/// The directory, inside the build directory, that holds the agent's files.
pub const STATE_DIR: &str = ".nix-attach";
/// The agent's unix socket, inside [`STATE_DIR`].
pub const SOCKET: &str = "agent.sock";
/// This metadata, as JSON, inside [`STATE_DIR`].
pub const METADATA: &str = "agent.json";
/// The rc file that restores the build's shell state, inside [`STATE_DIR`].
pub const RESTORE: &str = "restore.sh";
/// The largest metadata file the host reads.
pub const MAX_METADATA: u64 = 64 * 1024;
/// The longest string field the host accepts.
const MAX_FIELD: usize = 8 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("the metadata is not valid")]
    Json(#[from] serde_json::Error),
    #[error("the metadata field `{0}` is too long")]
    TooLong(&'static str),
    #[error("the metadata has protocol version {0}, this nix-attach speaks {VERSION}", VERSION = crate::protocol::VERSION)]
    Version(u32),
    #[error("the metadata's id is not {ID_LENGTH} lowercase hex digits")]
    Id,
}

/// Ids are this many lowercase hex digits.
pub const ID_LENGTH: usize = 12;
/// The most stack frames kept.
const MAX_FRAMES: usize = 64;

/// Whether `id` has the form of an agent's id.
pub fn is_id(id: &str) -> bool {
    id.len() == ID_LENGTH && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `text` cut to at most `max` bytes, on a character boundary.
fn cut(text: &mut String, max: usize) {
    if text.len() > max {
        let end = (0..=max).rev().find(|at| text.is_char_boundary(*at)).unwrap_or(0);
        text.truncate(end);
    }
}

/// What the agent says about the build it keeps waiting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    /// The protocol version the agent speaks.
    pub version: u32,
    /// A random id, unique among waiting builds.
    pub id: String,
    /// The derivation's name (`name` attribute).
    pub drv: String,
    /// The phase that failed (`curPhase`), or empty.
    pub phase: String,
    /// The exit code the build will end with.
    pub exit_code: i32,
    /// The command that failed, as bash saw it.
    pub command: String,
    /// The function stack at the failure, innermost first.
    pub stack: Vec<String>,
    /// Whether the snapshot was taken in the failing frame, with its locals.
    pub locals: bool,
    /// When the agent started, in unix seconds.
    pub since: u64,
    /// Idle seconds after which the build gives up waiting.
    pub timeout: u64,
    /// Seconds after `since` when the build stops waiting, sessions or not.
    #[serde(default)]
    pub max_pause: u64,
    /// The build directory as the build sees it.
    pub build_top: String,
    /// The host name as the build sees it.
    pub hostname: String,
}

impl Metadata {
    /// Parses and checks metadata read from an untrusted build.
    pub fn parse(bytes: &[u8]) -> Result<Metadata, MetadataError> {
        let meta: Metadata = crate::protocol::decode_versioned(bytes, crate::protocol::VERSION)?.map_err(MetadataError::Version)?;
        if !is_id(&meta.id) {
            return Err(MetadataError::Id);
        }
        meta.check_lengths()?;
        Ok(meta)
    }

    /// The same metadata with every field cut to what [`Metadata::parse`]
    /// accepts, so that a long failing command cannot hide a build.
    pub fn within_limits(mut self) -> Metadata {
        for field in [&mut self.drv, &mut self.phase, &mut self.command, &mut self.build_top, &mut self.hostname] {
            cut(field, MAX_FIELD);
        }
        self.stack.truncate(MAX_FRAMES);
        self.stack.iter_mut().for_each(|frame| cut(frame, MAX_FIELD));
        self
    }

    fn check_lengths(&self) -> Result<(), MetadataError> {
        let fields = [
            ("id", &self.id),
            ("drv", &self.drv),
            ("phase", &self.phase),
            ("command", &self.command),
            ("build_top", &self.build_top),
            ("hostname", &self.hostname),
        ];
        for (name, value) in fields {
            if value.len() > MAX_FIELD {
                return Err(MetadataError::TooLong(name));
            }
        }
        if self.stack.len() > MAX_FRAMES || self.stack.iter().any(|frame| frame.len() > MAX_FIELD) {
            return Err(MetadataError::TooLong("stack"));
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample() -> Metadata {
        Metadata {
            version: crate::protocol::VERSION,
            id: "0123abcd4567".into(),
            drv: "hello-2.12".into(),
            phase: "buildPhase".into(),
            exit_code: 2,
            command: "make -j2".into(),
            stack: vec!["buildPhase at setup.sh:10".into()],
            locals: true,
            since: 1_700_000_000,
            timeout: 1800,
            max_pause: 14400,
            build_top: "/build".into(),
            hostname: "localhost".into(),
        }
    }

    #[test]
    fn metadata_round_trips_through_json() {
        let json = serde_json::to_vec(&sample()).unwrap();
        assert_eq!(Metadata::parse(&json).unwrap(), sample());
    }

    #[test]
    fn unknown_fields_of_this_version_are_refused() {
        let mut value = serde_json::to_value(sample()).unwrap();
        value["pid"] = 1.into();
        let refused = Metadata::parse(value.to_string().as_bytes());
        assert!(matches!(refused, Err(MetadataError::Json(_))), "{refused:?}");
    }

    #[test]
    fn another_protocol_version_is_refused() {
        let mut meta = sample();
        meta.version = 99;
        let json = serde_json::to_vec(&meta).unwrap();
        assert!(matches!(Metadata::parse(&json), Err(MetadataError::Version(99))));
    }

    #[test]
    fn a_newer_version_with_fields_we_do_not_know_is_refused_for_its_version() {
        let mut value = serde_json::to_value(sample()).unwrap();
        value["version"] = (crate::protocol::VERSION + 1).into();
        value["cgroup"] = "/build.slice".into();
        value.as_object_mut().unwrap().remove("locals");
        let refused = Metadata::parse(value.to_string().as_bytes());
        assert!(matches!(refused, Err(MetadataError::Version(v)) if v == crate::protocol::VERSION + 1), "{refused:?}");
    }

    #[test]
    fn metadata_without_a_version_is_not_valid() {
        let mut value = serde_json::to_value(sample()).unwrap();
        value.as_object_mut().unwrap().remove("version");
        let refused = Metadata::parse(value.to_string().as_bytes());
        assert!(matches!(refused, Err(MetadataError::Json(_))), "{refused:?}");
    }

    #[test]
    fn an_id_of_another_form_is_refused() {
        for id in ["hello", "0123ABCD4567", "0123abcd45678", "\u{1b}[2J0123abcd"] {
            let meta = Metadata { id: id.into(), ..sample() };
            let json = serde_json::to_vec(&meta).unwrap();
            assert!(matches!(Metadata::parse(&json), Err(MetadataError::Id)), "{id:?}");
        }
    }

    #[test]
    fn metadata_within_limits_always_parses() {
        let long = Metadata { command: "é".repeat(MAX_FIELD), stack: vec!["f".into(); 1000], ..sample() }.within_limits();
        assert!(long.command.len() <= MAX_FIELD && long.stack.len() == MAX_FRAMES);
        Metadata::parse(&serde_json::to_vec(&long).unwrap()).unwrap();
    }

    #[test]
    fn oversized_fields_are_refused() {
        let mut meta = sample();
        meta.command = "x".repeat(MAX_FIELD + 1);
        let json = serde_json::to_vec(&meta).unwrap();
        assert!(matches!(Metadata::parse(&json), Err(MetadataError::TooLong("command"))));
    }
}
