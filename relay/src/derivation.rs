//! A derivation file (`/nix/store/…-NAME.drv`), read from its ATerm text:
//!
//! ```text
//! Derive([("out","/nix/store/…","","")],[("/nix/store/…drv",["out"])],["/nix/store/…src"],
//!        "x86_64-linux","/nix/store/…bash",["-e","…builder.sh"],[("name","hello"),…])
//! ```
//!
//! Anyone may put a derivation in the store, and root reads this one (the
//! daemon's pre-build hook), so the reader is strict and bounded: a file of
//! at most [`MAX_SIZE`] bytes, only the escapes Nix writes, nothing after
//! the closing parenthesis. It does not ask the daemon or any other program.
//!
//! May use: [`nix_conf`](crate::nix_conf); no module that uses it (`layout`
//! keeps the arrows one way).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

/// The largest derivation file read (nixpkgs' largest are a few MiB).
pub const MAX_SIZE: u64 = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum DerivationError {
    #[error("cannot read the derivation {0}")]
    Read(String, #[source] std::io::Error),
    #[error("the derivation is larger than {MAX_SIZE} bytes")]
    TooLarge,
    #[error("the derivation is not valid ATerm at byte {at}: expected {expected}")]
    Syntax { at: usize, expected: &'static str },
}

/// What a derivation says.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Derivation {
    /// Output name to store path (empty for a content-addressed output).
    pub outputs: BTreeMap<String, String>,
    /// Input derivations and the outputs of each that are used.
    pub input_derivations: BTreeMap<String, Vec<String>>,
    /// Input sources (store paths).
    pub input_sources: Vec<String>,
    pub system: String,
    pub builder: String,
    pub args: Vec<String>,
    /// The environment the builder gets (the attributes).
    pub env: BTreeMap<String, String>,
}

/// The names a bash goes by: `…/bin/bash`, or a store path of its own
/// (`/nix/store/…-bash-static`, after the hash).
const BASH_NAMES: [&str; 3] = ["bash", "bash-static", "bash-interactive"];

/// Whether the program at `path` is bash, by its own name (not any name
/// holding "bash": `…-bashate`, `…-fix-bash.patch`).
pub fn is_bash(path: &str) -> bool {
    let Some(name) = Path::new(path).file_name().map(|name| name.to_string_lossy().into_owned()) else { return false };
    let in_store = Path::new(path).parent() == Some(crate::nix_conf::store_dir().as_path());
    let name = if in_store { name.split_once('-').map_or(name.as_str(), |(_, name)| name).to_string() } else { name };
    BASH_NAMES.contains(&name.as_str())
}

/// The derivation's name, from its path (`…-NAME.drv`).
pub fn name_of(drv_path: &Path) -> String {
    let file = drv_path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
    let name = file.strip_suffix(".drv").unwrap_or(&file);
    name.split_once('-').map_or(name, |(_, name)| name).to_string()
}

impl Derivation {
    /// The store paths of its outputs (none for a floating output, whose
    /// path is not known until it is built).
    pub fn output_paths(&self) -> Vec<String> {
        self.outputs.values().filter(|path| !path.is_empty()).cloned().collect()
    }

    /// Whether bash runs the build.
    pub fn runs_bash(&self) -> bool {
        is_bash(&self.builder)
    }

    /// Reads the derivation file at `path`: a regular file, never through
    /// a link there (anyone may add a link named `….drv` to the store, to a
    /// fifo that would hold root's hook and the build's slot) nor from a
    /// fifo.
    pub fn read(path: &Path) -> Result<Derivation, DerivationError> {
        use std::os::unix::fs::OpenOptionsExt;
        let failed = |err| DerivationError::Read(path.display().to_string(), err);
        let flags = nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_NONBLOCK;
        let file = std::fs::File::options().read(true).custom_flags(flags.bits()).open(path).map_err(failed)?;
        if !file.metadata().map_err(failed)?.is_file() {
            return Err(failed(std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file")));
        }
        let mut text = Vec::new();
        file.take(MAX_SIZE + 1).read_to_end(&mut text).map_err(|err| DerivationError::Read(path.display().to_string(), err))?;
        if text.len() as u64 > MAX_SIZE {
            return Err(DerivationError::TooLarge);
        }
        Derivation::parse(&text)
    }

    /// Parses ATerm text.
    pub fn parse(text: &[u8]) -> Result<Derivation, DerivationError> {
        let mut p = Parser { text, at: 0 };
        p.literal("Derive(")?;
        let outputs = p.list(|p| {
            let [name, path, _hash_algo, _hash] = p.tuple::<4>()?;
            Ok((name, path))
        })?;
        p.literal(",")?;
        let input_derivations = p.list(|p| {
            p.literal("(")?;
            let path = p.string()?;
            p.literal(",")?;
            let used = p.list(Parser::string)?;
            p.literal(")")?;
            Ok((path, used))
        })?;
        p.literal(",")?;
        let input_sources = p.list(Parser::string)?;
        p.literal(",")?;
        let system = p.string()?;
        p.literal(",")?;
        let builder = p.string()?;
        p.literal(",")?;
        let args = p.list(Parser::string)?;
        p.literal(",")?;
        let env = p.list(|p| {
            let [name, value] = p.tuple::<2>()?;
            Ok((name, value))
        })?;
        p.literal(")")?;
        if p.at != text.len() {
            return Err(DerivationError::Syntax { at: p.at, expected: "the end" });
        }
        Ok(Derivation {
            outputs: outputs.into_iter().collect(),
            input_derivations: input_derivations.into_iter().collect(),
            input_sources,
            system,
            builder,
            args,
            env: env.into_iter().collect(),
        })
    }
}

struct Parser<'a> {
    text: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn fail<T>(&self, expected: &'static str) -> Result<T, DerivationError> {
        Err(DerivationError::Syntax { at: self.at, expected })
    }

    fn literal(&mut self, word: &'static str) -> Result<(), DerivationError> {
        if self.text[self.at..].starts_with(word.as_bytes()) {
            self.at += word.len();
            Ok(())
        } else {
            self.fail(word)
        }
    }

    fn peek(&self) -> Option<u8> {
        self.text.get(self.at).copied()
    }

    /// `[item,item,…]`
    fn list<T>(&mut self, mut item: impl FnMut(&mut Self) -> Result<T, DerivationError>) -> Result<Vec<T>, DerivationError> {
        self.literal("[")?;
        let mut items = Vec::new();
        if self.peek() == Some(b']') {
            self.at += 1;
            return Ok(items);
        }
        loop {
            items.push(item(self)?);
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b']') => {
                    self.at += 1;
                    return Ok(items);
                }
                _ => return self.fail("`,` or `]`"),
            }
        }
    }

    /// `"…"`, with the escapes Nix writes: `\"`, `\\`, `\n`, `\r`, `\t`.
    /// `("a","b",…)`: N strings in parentheses.
    fn tuple<const N: usize>(&mut self) -> Result<[String; N], DerivationError> {
        self.literal("(")?;
        let mut fields: [String; N] = std::array::from_fn(|_| String::new());
        for (i, field) in fields.iter_mut().enumerate() {
            if i > 0 {
                self.literal(",")?;
            }
            *field = self.string()?;
        }
        self.literal(")")?;
        Ok(fields)
    }

    fn string(&mut self) -> Result<String, DerivationError> {
        self.literal("\"")?;
        let mut bytes = Vec::new();
        loop {
            match self.peek() {
                None => return self.fail("`\"`"),
                Some(b'"') => {
                    self.at += 1;
                    return String::from_utf8(bytes).or_else(|_| self.fail("UTF-8 text"));
                }
                Some(b'\\') => {
                    let escaped = match self.text.get(self.at + 1) {
                        Some(b'n') => b'\n',
                        Some(b'r') => b'\r',
                        Some(b't') => b'\t',
                        Some(other @ (b'"' | b'\\')) => *other,
                        _ => return self.fail("an escape Nix writes"),
                    };
                    bytes.push(escaped);
                    self.at += 2;
                }
                Some(byte) => {
                    bytes.push(byte);
                    self.at += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bash_by_its_own_name_is_bash() {
        assert!(is_bash("/nix/store/0c7ll2ipdhhljd8f3jzbmq6h7hxks2iw-bash-5.2/bin/bash"));
        assert!(is_bash("/nix/store/0c7ll2ipdhhljd8f3jzbmq6h7hxks2iw-bash-static"));
        assert!(!is_bash("/nix/store/0c7ll2ipdhhljd8f3jzbmq6h7hxks2iw-bashate/bin/bashate"));
        assert!(!is_bash("/nix/store/0c7ll2ipdhhljd8f3jzbmq6h7hxks2iw-fix-bash.patch"));
    }

    #[test]
    fn a_derivation_is_read_from_a_regular_file_only_never_through_a_link_or_from_a_fifo() {
        let dir = std::env::temp_dir().join(format!("nix-attach-derivation-read-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (plain, link, fifo) = (dir.join("plain.drv"), dir.join("link.drv"), dir.join("fifo.drv"));
        std::fs::write(&plain, BUSYBOX).unwrap();
        std::os::unix::fs::symlink(&plain, &link).unwrap();
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let read = crate::testing::never_blocks("reading a fifo", move || [plain, link, fifo].map(|path| Derivation::read(&path).is_ok()));
        assert_eq!(read, [true, false, false]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    const BUSYBOX: &str = r#"Derive([("out","/nix/store/xb0k-busybox","","")],[("/nix/store/aaaa-dep.drv",["dev","out"])],["/nix/store/lykl-busybox-static","/nix/store/v30y-make-busybox.sh"],"x86_64-linux","/nix/store/wjy2-bash-static",["-e","/nix/store/v30y-make-busybox.sh"],[("builder","/nix/store/wjy2-bash-static"),("buildPhase","echo \"hi\"\n\\tab\tend"),("name","busybox"),("out","/nix/store/xb0k-busybox"),("system","x86_64-linux")])"#;

    #[test]
    fn a_derivation_reads_as_what_nix_wrote() {
        let drv = Derivation::parse(BUSYBOX.as_bytes()).unwrap();
        assert_eq!(drv.outputs["out"], "/nix/store/xb0k-busybox");
        assert_eq!(drv.input_derivations["/nix/store/aaaa-dep.drv"], ["dev", "out"]);
        assert_eq!(drv.input_sources.len(), 2);
        assert_eq!(drv.builder, "/nix/store/wjy2-bash-static");
        assert_eq!(drv.args, ["-e", "/nix/store/v30y-make-busybox.sh"]);
        assert_eq!(drv.env["buildPhase"], "echo \"hi\"\n\\tab\tend");
        assert_eq!(drv.env["name"], "busybox");
    }

    #[test]
    fn truncated_or_trailing_text_is_refused() {
        for cut in [0, 7, 100, BUSYBOX.len() - 1] {
            assert!(Derivation::parse(&BUSYBOX.as_bytes()[..cut]).is_err(), "cut at {cut}");
        }
        assert!(Derivation::parse(format!("{BUSYBOX}x").as_bytes()).is_err());
        assert!(Derivation::parse(BUSYBOX.replace("\\n", "\\q").as_bytes()).is_err());
    }

    #[test]
    fn garbage_is_refused() {
        assert!(Derivation::parse(b"\x7fELF\x02\x01").is_err());
        assert!(Derivation::parse(b"Derive([").is_err());
    }
}
