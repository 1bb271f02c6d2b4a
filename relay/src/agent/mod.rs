//! The agent: runs inside the build sandbox when a build fails, and keeps the
//! build waiting while people attach to it.
//!
//! The setup hook starts it with the snapshot it took. It writes the rc file
//! and its metadata into a state directory in the build directory, listens on
//! a unix socket there, announces itself in the build log, and serves
//! sessions until it is released or has been idle for its timeout. Then it
//! removes its files and returns, and the hook lets the build fail.
//!
//! May use: [`capture`](crate::capture), [`handoff`](crate::handoff),
//! [`metadata`](crate::metadata), [`pointer`](crate::pointer),
//! [`protocol`](crate::protocol), [`pump`](crate::pump),
//! [`runtime`](crate::runtime), [`sanitize`](crate::sanitize); no module that
//! uses it (`layout` keeps the arrows one way).

mod announce;
mod capture;
mod commands;
mod exec;
pub mod isolate;
mod on_failure;
pub mod restore;
mod server;
pub mod shell;
pub mod source_diff;

use crate::metadata::{Metadata, METADATA, RESTORE, SOCKET, STATE_DIR};
use crate::protocol::VERSION;
use anyhow::Context;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Everything the hook tells the agent about the failure, as the arguments
/// of `nix-attach agent`.
#[derive(Debug, Clone, clap::Args)]
pub struct AgentConfig {
    #[arg(long)]
    pub drv: String,
    #[arg(long, default_value = "")]
    pub phase: String,
    #[arg(long)]
    pub exit_code: i32,
    #[arg(long, default_value = "")]
    pub command: String,
    /// One frame of the function stack, innermost first.
    #[arg(long = "frame")]
    pub stack: Vec<String>,
    /// The snapshot was taken in the failing frame and has its locals.
    #[arg(long)]
    pub locals: bool,
    #[arg(long)]
    pub build_top: PathBuf,
    #[arg(long)]
    pub cwd: PathBuf,
    /// The shell for sessions; by default the builder's own bash.
    #[arg(long)]
    pub shell: Option<PathBuf>,
    /// Idle seconds before the build gives up waiting. The hook always
    /// passes it: under structured attributes, NIX_ATTACH_TIMEOUT is a
    /// shell variable of the builder, not in the agent's environment.
    #[arg(long, default_value = "1800", value_parser = seconds)]
    pub timeout: Duration,
    /// Seconds the build may stay paused in all, sessions or not (at most
    /// a day): a paused build holds its outputs' locks. The hook passes
    /// NIX_ATTACH_MAX_PAUSE.
    #[arg(long, default_value = "14400", value_parser = seconds)]
    pub max_pause: Duration,
    /// Commands run in the restored shell before the build waits, their
    /// output to the build log (NIX_ATTACH_ON_FAILURE).
    #[arg(long)]
    pub on_failure: Option<String>,
    /// The build is a replay of a capture (`nix-attach replay`), taken
    /// where and when ORIGIN says: no build waits on any host.
    #[arg(long, value_name = "ORIGIN")]
    pub replay: Option<String>,
    /// Functions and aliases.
    #[arg(long)]
    pub state_file: PathBuf,
    /// Variables, as `declare -p` printed them.
    #[arg(long)]
    pub variables_file: PathBuf,
    /// Options, as `set +o`, `shopt -p` and `umask -p` printed them.
    #[arg(long)]
    pub options_file: PathBuf,
}

fn seconds(text: &str) -> Result<Duration, std::num::ParseIntError> {
    text.parse().map(Duration::from_secs)
}

/// Why one session ended early. Other sessions and the build go on.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("the connection broke")]
    Protocol(#[from] crate::protocol::ProtocolError),
    #[error("cannot set up the terminal")]
    Pty(#[source] anyhow::Error),
    #[error("cannot run the command")]
    Spawn(#[source] std::io::Error),
    #[error("cannot hand the terminal over")]
    Handoff(#[source] std::io::Error),
    #[error("the client said hello twice")]
    UnexpectedHello,
}

/// What a session needs to start a shell with the build's state.
pub struct SessionContext {
    /// This very program, which starts every session's shell in namespaces
    /// of its own ([`isolate`]).
    pub agent: PathBuf,
    pub shell: PathBuf,
    pub restore: PathBuf,
    pub cwd: PathBuf,
    /// The build directory (`$NIX_BUILD_TOP`) and the derivation's name,
    /// for a capture.
    pub build_top: PathBuf,
    pub name: String,
    /// A shell started ahead of the next client.
    pub spare: shell::Spare,
    /// Held while a child is started: PTY descriptors are made
    /// close-on-exec only after they are opened, and no other child may
    /// inherit them in between.
    pub spawning: std::sync::Mutex<()>,
    /// Why the build stopped waiting, once it has.
    pub ending: std::sync::OnceLock<server::Ending>,
}

impl SessionContext {
    /// What an open session is told when the build stops waiting.
    pub fn stopped_waiting(&self) -> String {
        format!("the build {}", self.ending.get().copied().unwrap_or(server::Ending::Released).describe())
    }
}

/// The list of the files there when the build paused (`session-commands.sh`
/// names it too).
const PRESENT_AT_PAUSE: &str = "present-at-pause";
/// The longest any build stays paused, whatever it asks for.
pub const LONGEST_PAUSE: Duration = Duration::from_secs(24 * 60 * 60);

/// Runs the agent until the build is released or times out.
pub fn run(config: AgentConfig) -> anyhow::Result<()> {
    let state_dir = config.build_top.join(STATE_DIR);
    let result = crate::runtime::run(serve_build(&config, &state_dir));
    remove_state(&state_dir, &config);
    result?
}

async fn serve_build(config: &AgentConfig, state_dir: &Path) -> anyhow::Result<()> {
    make_state_dir(state_dir)?;
    let meta = metadata(config)?;
    let context = prepare_shell(config, &meta, state_dir)?;
    if let Some(commands) = &config.on_failure {
        on_failure::run(&context, commands).await;
        // What they wrote is not the session's: `diff` counts from now.
        write_commands(&meta, &context.cwd, &context.agent, state_dir)?;
    }
    // What is there now is the build's: `diff` counts a file the session
    // deletes by this list, made before any session can start. Without it
    // (a build directory it cannot read), `diff` judges by times.
    let _ = source_diff::record_present(&config.build_top, &state_dir.join(PRESENT_AT_PAUSE));
    let listener = tokio::net::UnixListener::bind(SOCKET).context("cannot listen on the agent socket")?;
    fs::set_permissions(SOCKET, fs::Permissions::from_mode(0o600))?;
    write_metadata(&meta)?;
    announce::to_log(&crate::pointer::line(&meta, store_path_of_this_binary().as_deref()));
    let patience = server::Patience { idle: config.timeout, longest: config.max_pause.min(LONGEST_PAUSE) };
    let ending = server::serve(listener, context, patience).await;
    announce::to_log(&announce::ending(&meta, ending.describe()));
    Ok(())
}

/// This binary's path, where it is in the store (`$NIX_STORE`): there it
/// is on the build's machine too, which a person on another machine can
/// run over ssh (`--agent`). Under the daemon's pre-build hook it is not.
fn store_path_of_this_binary() -> Option<String> {
    let store = store_dir();
    let exe = std::env::current_exe().ok()?;
    let exe = exe.to_str()?;
    exe.strip_prefix(&store).is_some_and(|rest| rest.starts_with('/')).then(|| exe.to_string())
}

/// The store directory, as Nix tells a build (`$NIX_STORE`).
fn store_dir() -> String {
    std::env::var("NIX_STORE").unwrap_or_else(|_| "/nix/store".to_string())
}

/// Makes the private state directory and enters it, so that the host can
/// find it as this process's working directory.
fn make_state_dir(state_dir: &Path) -> anyhow::Result<()> {
    if state_dir.symlink_metadata().is_ok() {
        fs::remove_dir_all(state_dir).with_context(|| format!("cannot clear {}", state_dir.display()))?;
    }
    fs::DirBuilder::new().mode(0o700).create(state_dir).with_context(|| format!("cannot create {}", state_dir.display()))?;
    std::env::set_current_dir(state_dir).with_context(|| format!("cannot enter {}", state_dir.display()))
}

fn metadata(config: &AgentConfig) -> anyhow::Result<Metadata> {
    let since = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH)?.as_secs();
    let hostname = nix::unistd::gethostname()?.to_string_lossy().into_owned();
    Ok(Metadata {
        version: VERSION,
        id: random_id()?,
        drv: config.drv.clone(),
        phase: config.phase.clone(),
        exit_code: config.exit_code,
        command: config.command.clone(),
        stack: config.stack.clone(),
        locals: config.locals,
        since,
        timeout: config.timeout.as_secs(),
        max_pause: config.max_pause.min(LONGEST_PAUSE).as_secs(),
        build_top: config.build_top.to_string_lossy().into_owned(),
        hostname,
    }
    .within_limits())
}

fn random_id() -> anyhow::Result<String> {
    let mut bytes = [0u8; 6];
    getrandom::fill(&mut bytes).map_err(|err| anyhow::anyhow!("cannot draw a random id: {err}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The most directories `--with` may put before a session's PATH.
const MAX_WITH_PATH: usize = 256;

/// The directories a client asked a session's PATH to start with, as one
/// PATH value (`None` for none): each absolute, with no `:` or control
/// character in it; otherwise why not, for the client.
fn with_path(path: &[String]) -> Result<Option<String>, String> {
    let plain = |dir: &String| dir.starts_with('/') && dir.len() <= 4096 && !dir.contains(':') && !dir.chars().any(char::is_control);
    if path.len() > MAX_WITH_PATH || !path.iter().all(plain) {
        return Err(format!("at most {MAX_WITH_PATH} --with directories, each a plain absolute path"));
    }
    Ok((!path.is_empty()).then(|| path.join(":")))
}

/// Writes the rc file and says where sessions start.
fn prepare_shell(config: &AgentConfig, meta: &Metadata, state_dir: &Path) -> anyhow::Result<SessionContext> {
    let text = fs::read_to_string(&config.options_file)
        .with_context(|| format!("cannot read the snapshot's options {}", config.options_file.display()))?;
    let options = restore::Options::parse(&text);
    let cwd = if config.cwd.is_dir() { config.cwd.clone() } else { config.build_top.clone() };
    let banner = announce::banner(meta, &cwd.to_string_lossy(), &options.left_out(), config.replay.as_deref());
    let declared = fs::read_to_string(&config.variables_file)
        .with_context(|| format!("cannot read the snapshot's variables {}", config.variables_file.display()))?;
    let variables_file = state_dir.join("variables.sh");
    fs::write(&variables_file, restore::build_variables(&declared)).context("cannot write the variables")?;
    let agent = std::env::current_exe().context("cannot find the agent's own program, which isolates sessions")?;
    let commands_file = write_commands(meta, &cwd, &agent, state_dir)?;
    let script = restore::render(&restore::RestoreInput {
        state_file: &config.state_file,
        variables_file: &variables_file,
        commands_file: &commands_file,
        options: &options,
        cwd: &cwd,
        history_file: &state_dir.join("history"),
        prompt_label: &prompt_label(meta),
        banner: &banner,
    });
    let restore_path = state_dir.join(RESTORE);
    fs::write(&restore_path, script).context("cannot write the rc file")?;
    Ok(SessionContext {
        agent,
        shell: session_shell(&config.shell)?,
        restore: restore_path,
        cwd,
        build_top: config.build_top.clone(),
        name: meta.drv.clone(),
        spare: shell::Spare::default(),
        spawning: Default::default(),
        ending: Default::default(),
    })
}

/// Writes the session's `nix-attach` command ([`commands`]), which takes
/// now as the moment the build paused; returns the file.
fn write_commands(meta: &Metadata, cwd: &Path, agent: &Path, state_dir: &Path) -> anyhow::Result<PathBuf> {
    let commands_file = state_dir.join("commands.sh");
    fs::write(&commands_file, commands::render(meta, cwd, agent, state_dir)).context("cannot write the session's commands")?;
    Ok(commands_file)
}

/// The shell sessions run: the one asked for, or else the builder's own
/// bash, which is the agent's parent (the hook runs the agent from the
/// builder's EXIT trap).
fn session_shell(asked: &Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(shell) = asked {
        return Ok(shell.clone());
    }
    let parent = format!("/proc/{}/exe", std::os::unix::process::parent_id());
    fs::read_link(&parent).with_context(|| format!("cannot find the builder's shell ({parent}); set NIX_ATTACH_SHELL"))
}

/// A prompt label that bash's prompt expansion leaves alone.
fn prompt_label(meta: &Metadata) -> String {
    let text = if meta.phase.is_empty() { meta.drv.clone() } else { format!("{}:{}", meta.drv, meta.phase) };
    text.chars().take(60).map(|c| if c.is_ascii_alphanumeric() || "._+-:".contains(c) { c } else { '_' }).collect()
}

fn write_metadata(meta: &Metadata) -> anyhow::Result<()> {
    let temporary = format!("{METADATA}.tmp");
    let mut file = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&temporary).context("cannot write the metadata")?;
    file.write_all(&serde_json::to_vec(meta)?)?;
    fs::rename(&temporary, METADATA).context("cannot publish the metadata")
}

/// Removes everything the hook and the agent wrote.
fn remove_state(state_dir: &Path, config: &AgentConfig) {
    let _ = std::env::set_current_dir(&config.build_top);
    let _ = fs::remove_dir_all(state_dir);
    for file in [&config.state_file, &config.variables_file, &config.options_file] {
        let _ = fs::remove_file(file);
    }
}
