//! `--via URI`: runs one nix-attach command on a remote builder, over ssh.
//!
//! It runs plain `ssh` (so `~/.ssh/config` aliases, agents and keys work),
//! with `NIX_SSHOPTS` as Nix's own ssh stores take it, `-i KEY` from
//! `?ssh-key=`, `-t` only where a terminal is wanted, `-e none` (so `~.`
//! reaches nix-attach's own client), and `BatchMode` when there is no
//! terminal to type a password on. On the remote it runs `nix-attach` from
//! the PATH, or the agent's store path that the pointer line names (the
//! build had it as an input, so it is there), through `sudo -n` where the
//! ssh user is not root and sudo lets it. Statuses, stdout and stderr pass
//! through; ssh's own failures become one line of ours.
//!
//! What the builder prints on a terminal of ours (its stdout, its stderr)
//! passes [`terminal_filter`](crate::terminal_filter), as an attach's
//! output does, unless the person allowed clipboard and queries.
//!
//! May use: [`nix_conf`](crate::nix_conf), [`terminal_filter`](crate::terminal_filter); no module that uses it (`layout`
//! keeps the arrows one way).

pub mod machines;
pub mod uri;

use std::io::{IsTerminal, Read, Write};
use std::process::{Command, Stdio};
pub use uri::{UriError, Via};

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error(transparent)]
    Uri(#[from] UriError),
    #[error("cannot run ssh")]
    Ssh(#[source] std::io::Error),
    #[error("cannot reach {host} over ssh: {message}")]
    Unreachable { host: String, message: String },
    #[error("{host} asks for a password, and there is no terminal to type it on; give ssh a key (?ssh-key=PATH, or your ssh config)")]
    Password { host: String },
    #[error("{host} refused the ssh login: {message}")]
    Refused { host: String, message: String },
}

/// Runs, on the remote, as its shell's script: finds nix-attach, then runs
/// it with the arguments after the agent's path.
const REMOTE_SCRIPT: &str = r#"agent=$1; marker=$2; shift 2
[ -z "$marker" ] || printf '%s\n' "$marker" >&2
if program=$(command -v nix-attach 2> /dev/null); then :
elif [ -n "$agent" ] && [ -x "$agent" ]; then program=$agent
else
    echo "nix-attach: $(uname -n) has no nix-attach on its PATH${agent:+ and no agent at $agent}; install nix-attach there, or pass --agent with the path the build's pointer line names" >&2
    exit 125
fi
if [ "$(id -u)" != 0 ]; then
    if said=$(sudo -n true 2>&1); then exec sudo -n -- "$program" "$@"; fi
    case $said in *password*) echo "nix-attach: sudo on $(uname -n) asks for a password; going on without it (the broker there serves the builds you asked for)" >&2 ;; esac
fi
exec "$program" "$@""#;

/// The line the remote script writes to stderr first, without a terminal:
/// what comes before it is ssh's (or the login's), what comes after is
/// nix-attach's.
const STARTED: &str = "nix-attach: --via started";

/// A word for a POSIX shell, quoted.
pub fn shell_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// A word for a POSIX shell as a person would type it: as it is where it
/// holds nothing the shell would read, else quoted.
pub fn quoted_if_needed(word: &str) -> String {
    let plain = !word.is_empty() && word.chars().all(|c| c.is_ascii_alphanumeric() || "@%+=:,./_-".contains(c));
    if plain {
        word.to_string()
    } else {
        shell_quote(word)
    }
}

/// Whether the command wants a terminal on the remote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tty {
    Yes,
    No,
    /// No terminal on the remote, and frames on stdin and stdout (`attach
    /// --framed`): ssh's `-T`, and nothing of ours on its stderr.
    Framed,
}

/// The ssh command that runs `nix-attach ARGS…` on `via`.
pub fn command(via: &Via, agent: Option<&str>, args: &[String], tty: Tty) -> Command {
    let mut ssh = Command::new("ssh");
    ssh.arg(if tty == Tty::Yes { "-t" } else { "-T" }).args(["-e", "none"]);
    if let Ok(options) = std::env::var("NIX_SSHOPTS") {
        ssh.args(options.split_whitespace());
    }
    if let Some(key) = &via.key {
        ssh.arg("-i").arg(key);
    }
    if !std::io::stdin().is_terminal() {
        ssh.args(["-o", "BatchMode=yes"]);
    }
    let marker = if tty == Tty::No { STARTED } else { "" };
    let first = [shell_quote(agent.unwrap_or_default()), shell_quote(marker)];
    let words: Vec<String> = first.into_iter().chain(args.iter().map(|arg| shell_quote(arg))).collect();
    let remote = format!("sh -c {} nix-attach {}", shell_quote(REMOTE_SCRIPT), words.join(" "));
    ssh.arg("--").arg(&via.destination).arg(remote);
    ssh
}

/// Runs `nix-attach ARGS…` on `via`; returns its status. What it prints
/// on a terminal of ours passes the terminal filter, unless `unfiltered`.
pub fn run(via: &Via, agent: Option<&str>, args: &[String], tty: Tty, unfiltered: bool) -> Result<i32, RemoteError> {
    let mut ssh = command(via, agent, args, tty);
    ssh.stderr(Stdio::piped());
    let filter_stdout = !unfiltered && std::io::stdout().is_terminal();
    if filter_stdout {
        ssh.stdout(Stdio::piped());
    }
    let mut child = ssh.spawn().map_err(RemoteError::Ssh)?;
    let stdout = child.stdout.take().map(pass_stdout);
    let mut to_stderr = Shown::stderr(unfiltered);
    let relayed = relay_stderr(child.stderr.take().expect("piped stderr"), tty, Shown::stderr(unfiltered));
    let status = child.wait().map_err(RemoteError::Ssh)?;
    let code = status.code().unwrap_or(255);
    if let Some(stdout) = stdout {
        let _ = stdout.join();
    }
    let Relayed { kept, started } = relayed.join().unwrap_or_default();
    // ssh ends with 255 when it failed itself; a remote command may too,
    // but then the remote script had started.
    match (code, started, failure(&kept)) {
        (255, false, Some(failure)) => Err(failure.into_error(via)),
        _ => {
            to_stderr.write(kept.as_bytes());
            Ok(code)
        }
    }
}

/// One of our streams, written through the terminal filter where it is a
/// terminal and the person did not allow clipboard and queries.
struct Shown {
    filter: Option<crate::terminal_filter::TerminalFilter>,
}

impl Shown {
    fn stderr(unfiltered: bool) -> Shown {
        Shown { filter: (!unfiltered && std::io::stderr().is_terminal()).then(Default::default) }
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut shown = Vec::with_capacity(bytes.len());
        crate::terminal_filter::pass(self.filter.as_mut(), bytes, &mut shown);
        let _ = std::io::stderr().write_all(&shown);
    }
}

/// Passes ssh's stdout on to ours, a terminal, through the filter.
fn pass_stdout(mut from: std::process::ChildStdout) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let (mut filter, mut buffer, mut shown) = (crate::terminal_filter::TerminalFilter::default(), vec![0u8; 32 * 1024], Vec::new());
        let (mut stdout, mut writable) = (std::io::stdout(), true);
        // Read to the end, whatever becomes of our stdout: ssh must not
        // die of a closed pipe in the middle of a session.
        loop {
            let n = match from.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => n,
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            shown.clear();
            filter.feed(&buffer[..n], &mut shown);
            writable = writable && stdout.write_all(&shown).and_then(|()| stdout.flush()).is_ok();
        }
    })
}

/// What the stderr relay kept back, and whether the remote script started.
#[derive(Debug, Default)]
struct Relayed {
    kept: String,
    started: bool,
}

/// Passes ssh's stderr on, a line at a time, except the lines in which
/// ssh may be saying that it failed: those are kept back and returned, for
/// the caller to print if ssh did not fail after all. Without a terminal,
/// that is every line before the remote script's first; with one, the
/// remote's stderr is on the terminal, and only lines that read like
/// ssh's failures are kept.
fn relay_stderr(from: impl Read + Send + 'static, tty: Tty, mut to_stderr: Shown) -> std::thread::JoinHandle<Relayed> {
    std::thread::spawn(move || {
        use std::io::BufRead;
        let mut relayed = Relayed::default();
        let mut reader = std::io::BufReader::new(from);
        let mut line = Vec::new();
        while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
            let text = String::from_utf8_lossy(&line).into_owned();
            if tty == Tty::No && !relayed.started && text.trim_end() == STARTED {
                relayed.started = true;
                to_stderr.write(std::mem::take(&mut relayed.kept).as_bytes());
            } else if !relayed.started && (tty == Tty::No || failure(&text).is_some()) && relayed.kept.len() < 64 * 1024 {
                relayed.kept.push_str(&text);
            } else {
                to_stderr.write(&line);
            }
            line.clear();
        }
        relayed
    })
}

/// How ssh itself failed, by what it said.
#[derive(Debug, PartialEq, Eq)]
enum Failure {
    Unreachable(String),
    Password,
    Refused(String),
}

impl Failure {
    fn into_error(self, via: &Via) -> RemoteError {
        let host = via.destination.clone();
        match self {
            Failure::Unreachable(message) => RemoteError::Unreachable { host, message },
            Failure::Password => RemoteError::Password { host },
            Failure::Refused(message) => RemoteError::Refused { host, message },
        }
    }
}

fn failure(stderr: &str) -> Option<Failure> {
    let line = stderr.lines().rev().map(str::trim).find(|line| !line.is_empty())?;
    if line.contains("Permission denied") {
        let asks = line.contains("password") || line.contains("keyboard-interactive");
        return Some(if asks { Failure::Password } else { Failure::Refused(line.to_string()) });
    }
    let unreachable = line.starts_with("ssh:") || line.contains("Connection closed by") || line.starts_with("Host key verification failed");
    unreachable.then(|| Failure::Unreachable(line.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quoted_word_stays_one_word_whatever_it_holds() {
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's $(x)"), r"'it'\''s $(x)'");
        assert_eq!(quoted_if_needed("ssh://farm"), "ssh://farm");
        assert_eq!(quoted_if_needed("ssh://farm?ssh-key=/k&x=1"), "'ssh://farm?ssh-key=/k&x=1'");
    }

    #[test]
    fn ssh_failures_are_told_apart_from_the_remote_commands_output() {
        assert_eq!(
            failure("ssh: connect to host 127.0.0.1 port 1: Connection refused\r\n"),
            Some(Failure::Unreachable("ssh: connect to host 127.0.0.1 port 1: Connection refused".into()))
        );
        assert_eq!(failure("alice@127.0.0.1: Permission denied (publickey,password).\r\n"), Some(Failure::Password));
        assert_eq!(failure("Permission denied (publickey)."), Some(Failure::Refused("Permission denied (publickey).".into())));
        assert_eq!(failure("nix-attach: error: no build is waiting\n"), None);
    }
}
