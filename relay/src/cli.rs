//! The command line: `list`, `attach`, `exec` and `release` on the host,
//! `build`, `run` and `retry` around nix, `broker`, and `agent`, which the
//! setup hook runs inside the sandbox.
//!
//! May use: [`agent`](crate::agent), [`broker`](crate::broker),
//! [`capture`](crate::capture), [`host`](crate::host),
//! [`remote`](crate::remote), [`replay`](crate::replay),
//! [`retry`](crate::retry), [`wrapper`](crate::wrapper); no module that uses
//! it (`layout` keeps the arrows one way).

use crate::agent::{self, AgentConfig};
use crate::remote::{self, Via};
use crate::{host, wrapper};
use clap::{Args, CommandFactory, Parser, Subcommand};
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(name = "nix-attach", version, about = "Attach a shell to a failed Nix build, inside its sandbox")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the builds that are waiting to be attached.
    List {
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        search: Search,
        #[command(flatten)]
        remote: Remote,
    },
    /// Open a shell inside a waiting build.
    Attach {
        /// The build's id, a unique prefix of it, or its derivation name.
        id: Option<String>,
        /// Let the build's output set your clipboard (OSC 52) and query your
        /// terminal (its answers are typed into the session); filtered out
        /// by default.
        #[arg(long)]
        allow_clipboard_and_queries: bool,
        #[command(flatten)]
        with: With,
        #[command(flatten)]
        remote: Remote,
        /// Relay the session in frames over stdin and stdout (run by
        /// `attach --via` on the builder, over `ssh -T`).
        #[arg(long, hide = true)]
        framed: bool,
        /// The terminal type, for `--framed` (ssh -T passes none).
        #[arg(long, hide = true, requires = "framed")]
        term: Option<String>,
    },
    /// Run one command inside a waiting build's restored shell.
    Exec {
        /// The build's id, a unique prefix of it, or its derivation name.
        id: String,
        /// Let the build's output set your clipboard (OSC 52) and query your
        /// terminal (its answers are typed into the session); filtered out
        /// by default.
        #[arg(long)]
        allow_clipboard_and_queries: bool,
        /// The command and its arguments (a function, builtin or program).
        #[arg(last = true, required = true)]
        command: Vec<String>,
        #[command(flatten)]
        with: With,
        #[command(flatten)]
        remote: Remote,
        /// Pass the agent's frames for the command on over stdout (run by
        /// `exec --via` on the builder, over `ssh -T`).
        #[arg(long, hide = true)]
        framed: bool,
    },
    /// Say what failed in a waiting build, where, and which phases ran,
    /// failed and remain (`nix-attach status` inside it).
    Status {
        /// The build's id, a unique prefix of it, or its derivation name.
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Run the failing command of a waiting build again, where it failed;
    /// exits with its status (`nix-attach rerun` inside it).
    Rerun {
        /// The build's id, a unique prefix of it, or its derivation name.
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Run a waiting build's failed phase (or PHASE) and the phases after
    /// it, in its sandbox, as genericBuild would; exits with their status
    /// (`nix-attach resume` inside it). What it writes is never registered:
    /// the build still fails when released.
    Resume {
        /// The build's id, a unique prefix of it, or its derivation name.
        id: String,
        /// The phase to start at (default: the one that failed).
        phase: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Print what a session changed in a waiting build's source, as a
    /// patch that `patch -p1` applies (`nix-attach diff` inside it).
    Diff {
        /// The build's id, a unique prefix of it, or its derivation name.
        id: String,
        /// Files made in the session too.
        #[arg(long)]
        new: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Let a waiting build go on to fail now.
    Release {
        /// The build's id, a unique prefix of it, or its derivation name.
        id: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Write a waiting build to one file: its build directory, its shell
    /// state and what its sandbox was, to enter later, elsewhere.
    Capture {
        /// The build's id, a unique prefix of it, or its derivation name.
        id: Option<String>,
        /// The file to write (default: NAME.nix-attach here); never
        /// overwritten.
        #[arg(short, long, value_name = "FILE")]
        output: Option<std::path::PathBuf>,
        /// The most the build directory may hold (bytes, or with K, M, G).
        #[arg(long, value_name = "SIZE", default_value = "4G", value_parser = crate::capture::parse_size)]
        max_size: u64,
        /// The derivation being built (`/nix/store/….drv`), whose path and
        /// text the file keeps; `build --capture` passes it.
        #[arg(long, value_name = "DRV")]
        drv: Option<String>,
    },
    /// Enter a captured build (`capture`), on any machine with its store
    /// paths, as an ordinary user: the sandbox is recreated with bubblewrap
    /// and the shell restored; with `-- CMD`, run CMD there instead.
    Replay {
        /// The capture file.
        file: std::path::PathBuf,
        /// Fetch missing store paths from the configured caches first.
        #[arg(long)]
        fetch: bool,
        /// The most the capture may unpack to (bytes, or with K, M, G).
        #[arg(long, value_name = "SIZE", default_value = "4G", value_parser = crate::capture::parse_size)]
        max_size: u64,
        /// The command and its arguments, run in the restored shell.
        #[arg(last = true)]
        command: Vec<String>,
        #[command(flatten)]
        with: With,
        /// Once the session ends, write its changes to the source to FILE,
        /// as `nix-attach diff` makes them (nothing where it changed none).
        #[arg(long, value_name = "FILE")]
        patch: Option<std::path::PathBuf>,
        /// With --patch: the files the session made too (`diff --new`).
        #[arg(long, requires = "patch")]
        patch_new: bool,
    },
    /// Run `nix build ARGS…`; when a build pauses, offer to enter it.
    Build {
        #[command(flatten)]
        wrap: Wrap,
        /// Arguments for `nix build`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        nix_args: Vec<OsString>,
    },
    /// Run any nix command (`nix-build …`, `nix develop …`); when a build
    /// pauses, offer to enter it.
    Run {
        #[command(flatten)]
        wrap: Wrap,
        /// The command and its arguments.
        #[arg(last = true, required = true)]
        command: Vec<OsString>,
    },
    /// Build a failed derivation again so that it pauses when it fails,
    /// then act as `build` does. No edit to its expression; only the
    /// derivation itself is built (its inputs are still in the store).
    Retry {
        #[command(flatten)]
        wrap: Wrap,
        /// A .drv path in the store, a Nix file or directory (with -A ATTR
        /// after --), or an installable (`.#hello`).
        target: String,
        /// Arguments for `nix-instantiate` (a file) or `nix path-info
        /// --derivation` (an installable).
        #[arg(last = true)]
        nix_args: Vec<OsString>,
    },
    /// Serve ordinary users their own builds, as root (see SECURITY.md).
    Broker {
        /// The socket to listen on (default: $NIX_ATTACH_BROKER, or
        /// /run/nix-attach/broker.sock); a socket passed by systemd wins.
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
    },
    /// Print a completion script for a shell.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff).
    Man,
    /// Keep a failed build waiting for sessions (run by the setup hook).
    #[command(hide = true)]
    Agent(Box<AgentConfig>),
    /// Print the session's changes to the source as a patch (run by
    /// `nix-attach diff` in a session).
    #[command(hide = true, name = "source-diff")]
    SourceDiff {
        /// The source as unpacked and patched.
        #[arg(long)]
        pristine: std::path::PathBuf,
        /// The source as the session left it.
        #[arg(long)]
        live: std::path::PathBuf,
        /// When the build paused (seconds since the epoch).
        #[arg(long, value_parser = crate::agent::source_diff::parse_time)]
        paused: std::time::SystemTime,
        /// Files the session made too.
        #[arg(long)]
        new: bool,
        /// The list of the files there when the build paused.
        #[arg(long)]
        present: Option<std::path::PathBuf>,
    },
    /// Mount store paths into a build's sandbox (run by `--with`, as root).
    #[command(hide = true, name = "mount-tools")]
    MountTools {
        /// The build's agent.
        #[arg(long)]
        agent: i32,
        /// When it started (clock ticks after boot, as in `/proc/PID/stat`).
        #[arg(long)]
        started: u64,
        /// The store paths.
        #[arg(last = true)]
        paths: Vec<String>,
    },
    /// Run a session's program in namespaces of its own (run by the agent).
    #[command(hide = true, name = "isolate")]
    Isolate {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        command: Vec<std::ffi::OsString>,
    },
}

/// Tools of this machine's to bring into the build.
#[derive(Debug, Clone, Default, Args)]
pub struct With {
    /// Bring a tool the build does not have (an installable, such as
    /// nixpkgs#gdb, or a store path) into the build, read-only, its `bin`
    /// first on the session's PATH; repeatable. Needs root.
    #[arg(long = "with", value_name = "INSTALLABLE")]
    pub tools: Vec<String>,
}

impl With {
    /// The flags again, for the same command on a remote builder.
    fn args(&self) -> impl Iterator<Item = String> + '_ {
        self.tools.iter().flat_map(|tool| ["--with".to_string(), tool.clone()])
    }
}

/// Where to look for build directories besides the known places.
#[derive(Debug, Clone, Args)]
pub struct Search {
    /// Another build directory, or a directory of build directories.
    #[arg(long = "build-dir", value_name = "DIR")]
    pub build_dirs: Vec<PathBuf>,
}

/// A build on another machine, reached over ssh.
#[derive(Debug, Clone, Args)]
pub struct Remote {
    /// Run it on a remote builder: ssh://[user@]host or ssh-ng://[user@]host,
    /// with ?ssh-key=PATH, as in Nix's `builders`; ssh options come from
    /// NIX_SSHOPTS.
    #[arg(long, value_name = "URI")]
    pub via: Option<String>,
    /// With --via, the nix-attach to run there if none is on its PATH: the
    /// agent's path that the build's pointer line names.
    #[arg(long, value_name = "PATH", requires = "via")]
    pub agent: Option<String>,
}

/// The builder `uri` names, with the key Nix's `builders` give it where
/// the URI names none.
fn via(uri: &str) -> anyhow::Result<Via> {
    Ok(Via::parse(uri)?.with_key(remote::machines::find(uri).and_then(|machine| machine.key)))
}

impl Remote {
    /// Runs `nix-attach ARGS…` on the remote builder, if one is named.
    fn run(&self, args: Vec<String>, tty: remote::Tty, unfiltered: bool) -> Option<anyhow::Result<i32>> {
        self.via.as_deref().map(|uri| self.run_on(uri, &args, tty, unfiltered))
    }

    /// `attach` on the builder `uri` over `ssh -T`, in frames
    /// ([`host::framed`]); `None` where its nix-attach speaks none.
    fn attach_framed(&self, uri: &str, id: Option<&str>, with: &With, unfiltered: bool) -> anyhow::Result<Option<i32>> {
        let via = via(uri)?;
        let term = std::env::var("TERM").unwrap_or_else(|_| "xterm-256color".into());
        let args: Vec<String> =
            ["attach", "--framed", "--term", &term].into_iter().map(String::from).chain(with.args()).chain(id.map(String::from)).collect();
        host::framed::attach_via(remote::command(&via, self.agent.as_deref(), &args, remote::Tty::Framed), unfiltered)
    }

    /// `exec` on the builder `uri` over `ssh -T`, its frames passed on
    /// ([`host::framed`]); `None` where its nix-attach speaks none.
    fn exec_framed(&self, uri: &str, id: &str, command: &[String], with: &With, unfiltered: bool) -> anyhow::Result<Option<i32>> {
        let via = via(uri)?;
        let args: Vec<String> = ["exec", "--framed"]
            .into_iter()
            .map(String::from)
            .chain(with.args())
            .chain([id.to_string(), "--".to_string()])
            .chain(command.iter().cloned())
            .collect();
        host::framed::exec_via(remote::command(&via, self.agent.as_deref(), &args, remote::Tty::Framed), unfiltered)
    }

    /// Runs `nix-attach ARGS…` on the builder `uri`.
    fn run_on(&self, uri: &str, args: &[String], tty: remote::Tty, unfiltered: bool) -> anyhow::Result<i32> {
        let via = via(uri)?;
        Ok(remote::run(&via, self.agent.as_deref(), args, tty, unfiltered)?)
    }
}

/// The flag that passes `--allow-clipboard-and-queries` on to a remote.
fn unfiltered_flag(unfiltered: bool) -> Option<String> {
    unfiltered.then(|| "--allow-clipboard-and-queries".to_string())
}

/// How `--via` at a terminal reaches the builder (NIX_ATTACH_VIA_FRAMES,
/// docs/remote-builders.md).
#[derive(Clone, Copy, PartialEq, Eq)]
enum ViaFrames {
    /// `0`: through `ssh -t`.
    Never,
    /// Unset: over `ssh -T` in frames, through `ssh -t` where the
    /// builder's nix-attach speaks none.
    Preferred,
    /// `1`: in frames only. A builder that claims to be older would
    /// otherwise get `ssh -t`, where its output is not filtered here.
    Required,
}

fn via_frames() -> ViaFrames {
    match std::env::var("NIX_ATTACH_VIA_FRAMES").as_deref() {
        Ok("0") => ViaFrames::Never,
        Ok("1") => ViaFrames::Required,
        _ => ViaFrames::Preferred,
    }
}

/// The fallback to `ssh -t` for a builder whose nix-attach speaks no
/// frames: said in one line, or refused where frames are required.
fn without_frames(frames: ViaFrames, what: &str) -> anyhow::Result<()> {
    if frames == ViaFrames::Required {
        anyhow::bail!(
            "the builder's nix-attach speaks no framed --via (an older one), and NIX_ATTACH_VIA_FRAMES=1 asks for frames only; update nix-attach there, or unset NIX_ATTACH_VIA_FRAMES"
        );
    }
    eprintln!("nix-attach: the builder's nix-attach speaks no framed --via (an older one); {what} through ssh -t");
    Ok(())
}

/// Whether stdin (and, with `both`, stdout) is a terminal, as a `Tty`.
fn terminal(both: bool) -> remote::Tty {
    use std::io::IsTerminal;
    let yes = std::io::stdin().is_terminal() && (!both || std::io::stdout().is_terminal());
    if yes {
        remote::Tty::Yes
    } else {
        remote::Tty::No
    }
}

/// How `build` and `run` treat builds that pause.
#[derive(Debug, Clone, Args)]
pub struct Wrap {
    /// Enter a paused build without asking.
    #[arg(long, conflicts_with = "no_enter")]
    enter_on_failure: bool,
    /// Never ask; only say how to enter.
    #[arg(long)]
    no_enter: bool,
    /// Release a paused build when the prompt has no answer after SECS.
    #[arg(long, value_name = "SECS")]
    release_after: Option<u64>,
    /// Without a terminal (CI): capture each paused build into DIR before
    /// it is released, to enter later elsewhere with `replay`.
    #[arg(long, value_name = "DIR", env = "NIX_ATTACH_CAPTURE")]
    capture: Option<std::path::PathBuf>,
    /// Without a terminal (CI): run CMD in each paused build's restored
    /// shell before it is released, its output (bounded) in this log.
    #[arg(long, value_name = "CMD")]
    on_failure: Option<String>,
    /// When you leave a build you entered, keep what you changed in its
    /// source as DIR/NAME.patch (`nix-attach diff`) before it is released.
    #[arg(long, value_name = "DIR", env = "NIX_ATTACH_PATCH_DIR")]
    patch_dir: Option<std::path::PathBuf>,
}

impl From<Wrap> for wrapper::Options {
    fn from(wrap: Wrap) -> wrapper::Options {
        let enter = match (wrap.enter_on_failure, wrap.no_enter) {
            (true, _) => wrapper::Enter::Always,
            (_, true) => wrapper::Enter::Never,
            _ => wrapper::Enter::Ask,
        };
        let release_after = wrap.release_after.map(Duration::from_secs);
        wrapper::Options {
            enter,
            release_after,
            offer_retries: true,
            capture: wrap.capture,
            on_failure: wrap.on_failure,
            patch_dir: wrap.patch_dir,
        }
    }
}

/// Runs the command line and returns the process's exit status.
pub fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::List { json, search, remote } => {
            let mut args = vec!["list".to_string()];
            args.extend(json.then(|| "--json".to_string()));
            args.extend(search.build_dirs.iter().flat_map(|dir| ["--build-dir".to_string(), dir.to_string_lossy().into_owned()]));
            remote.run(args, remote::Tty::No, false).unwrap_or_else(|| host::list(&search.build_dirs, json))
        }
        Command::Attach { id, framed: true, term, with, .. } => host::attach_framed(id.as_deref(), &with.tools, term),
        Command::Attach { id, allow_clipboard_and_queries: unfiltered, with, remote, framed: false, .. } => {
            let frames = via_frames();
            if let (Some(uri), remote::Tty::Yes, false) = (remote.via.as_deref(), terminal(false), frames == ViaFrames::Never) {
                if let Some(code) = remote.attach_framed(uri, id.as_deref(), &with, unfiltered)? {
                    return Ok(code);
                }
                without_frames(frames, "attaching")?;
            }
            let args = ["attach".to_string()].into_iter().chain(unfiltered_flag(unfiltered)).chain(with.args()).chain(id.clone()).collect();
            remote.run(args, terminal(false), unfiltered).unwrap_or_else(|| host::attach(id.as_deref(), unfiltered, &with.tools))
        }
        Command::Exec { id, command, with, framed: true, .. } => host::exec_framed(&id, command, &with.tools),
        Command::Exec { id, allow_clipboard_and_queries: unfiltered, command, with, remote, framed: false } => {
            exec(id, command, &with, remote, unfiltered)
        }
        Command::Status { id, remote } => inside(id, vec!["status".into()], remote),
        Command::Rerun { id, remote } => inside(id, vec!["rerun".into()], remote),
        Command::Resume { id, phase, remote } => inside(id, ["resume".to_string()].into_iter().chain(phase).collect(), remote),
        Command::Diff { id, new, remote } => {
            inside(id, ["diff".to_string()].into_iter().chain(new.then(|| "--new".to_string())).collect(), remote)
        }
        Command::Release { id, remote } => {
            let args = ["release".to_string()].into_iter().chain(id.clone()).collect();
            remote.run(args, remote::Tty::No, false).unwrap_or_else(|| host::release(id.as_deref()))
        }
        Command::Capture { id, output, max_size, drv } => host::capture::capture(id.as_deref(), output, max_size, drv),
        Command::Replay { file, fetch, max_size, command, with, patch, patch_new } => {
            let patch = patch.map(|path| (path, patch_new));
            crate::replay::run(crate::replay::Options { file, command, fetch, max_size, with: with.tools, patch })
        }
        Command::Build { wrap, nix_args } => {
            Ok(wrapper::run("nix".into(), [OsString::from("build")].into_iter().chain(nix_args).collect(), wrap.into())?)
        }
        Command::Run { wrap, mut command } => {
            let program = command.remove(0);
            Ok(wrapper::run(program, command, wrap.into())?)
        }
        Command::Retry { wrap, target, nix_args } => {
            let drv = crate::retry::target::resolve(&target, &nix_args)?;
            Ok(wrapper::rebuild(&drv, wrap.into())?)
        }
        Command::Broker { socket } => crate::broker::run(socket.as_deref()).map(|()| 0).map_err(Into::into),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "nix-attach", &mut std::io::stdout());
            Ok(0)
        }
        Command::Man => {
            clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?;
            Ok(0)
        }
        Command::Agent(config) => agent::run(*config).map(|()| 0),
        Command::Isolate { command } => Ok(agent::isolate::run(&command)),
        Command::MountTools { agent, started, paths } => crate::tools::mount_here(agent, started, &paths).map(|_| 0).map_err(Into::into),
        Command::SourceDiff { pristine, live, paused, new, present } => {
            let present = present.map(|list| agent::source_diff::read_present(&list)).transpose()?.flatten();
            let trees = agent::source_diff::Trees { pristine: &pristine, live: &live, paused, new_files: new, present: present.as_ref() };
            let patch = agent::source_diff::diff(&trees)?;
            std::io::Write::write_all(&mut std::io::stdout().lock(), &patch.text)?;
            for name in &patch.not_text {
                eprintln!(
                    "nix-attach: {} changed, but is not text: it is not in the patch",
                    crate::sanitize::sanitize(&name.to_string_lossy())
                );
            }
            if patch.new_left_out > 0 {
                eprintln!("nix-attach: {} new file(s) left out of the patch; `nix-attach diff --new` takes them", patch.new_left_out);
            }
            Ok(0)
        }
    }
}

/// `nix-attach exec ID -- COMMAND…`, here or on a remote builder: at a
/// terminal through `--via`, in frames where the builder's nix-attach
/// speaks them.
fn exec(id: String, command: Vec<String>, with: &With, remote: Remote, unfiltered: bool) -> anyhow::Result<i32> {
    let frames = via_frames();
    if let (Some(uri), remote::Tty::Yes, false) = (remote.via.as_deref(), terminal(true), frames == ViaFrames::Never) {
        if let Some(code) = remote.exec_framed(uri, &id, &command, with, unfiltered)? {
            return Ok(code);
        }
        without_frames(frames, "running")?;
    }
    let args = ["exec".to_string()]
        .into_iter()
        .chain(unfiltered_flag(unfiltered))
        .chain(with.args())
        .chain([id.clone(), "--".to_string()])
        .chain(command.iter().cloned())
        .collect();
    remote.run(args, terminal(true), unfiltered).unwrap_or_else(|| host::exec(&id, command, unfiltered, &with.tools))
}

/// `nix-attach WHAT…` run inside build `id`, in its restored shell, as
/// `exec` runs a command: output streamed (filtered on a terminal), its
/// status passed through.
fn inside(id: String, what: Vec<String>, remote: Remote) -> anyhow::Result<i32> {
    let command: Vec<String> = ["nix-attach".to_string()].into_iter().chain(what).collect();
    exec(id, command, &With::default(), remote, false)
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn completions_and_the_manual_name_every_command() {
        let mut completions = Vec::new();
        clap_complete::generate(clap_complete::Shell::Bash, &mut Cli::command(), "nix-attach", &mut completions);
        let mut manual = Vec::new();
        clap_mangen::Man::new(Cli::command()).render(&mut manual).unwrap();
        let (completions, manual) = (String::from_utf8(completions).unwrap(), String::from_utf8(manual).unwrap());
        for command in [
            "list", "attach", "exec", "status", "rerun", "resume", "diff", "release", "capture", "replay", "build", "run", "retry",
            "broker",
        ] {
            assert!(completions.contains(command), "{command} is not completed");
            assert!(manual.contains(command), "{command} is not in the manual");
        }
    }
}
