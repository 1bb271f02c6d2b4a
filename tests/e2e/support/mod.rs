//! The test bed: builds derivations through the real nix-daemon with the
//! stdenv fixture, waits for them to pause, and drives `nix-attach` as a
//! person would, through pipes or a real PTY.

pub mod broker;
pub mod capture;
pub mod daemon;
pub mod pty;
pub mod remote;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long a build may take to pause or to end before a test fails.
pub const PATIENCE: Duration = Duration::from_secs(180);

/// The nix-attach binary under test (static, so it also runs in the sandbox).
pub fn nix_attach() -> &'static str {
    env!("CARGO_BIN_EXE_nix-attach")
}

/// Whether the Nix of this machine's daemon mounts the paths a pre-build
/// hook prints, as `nix --version` names its release: the test bed runs
/// the specs on more than one.
pub fn daemon_takes_pre_build_hook_paths() -> bool {
    nix_release().takes_hook_paths()
}

/// The release of the Nix that the specs run (`nix --version`).
pub fn nix_release() -> nix_attach::inject::version::Release {
    let output = Command::new("nix").arg("--version").output().expect("run nix --version");
    let text = String::from_utf8_lossy(&output.stdout);
    nix_attach::inject::version::Release::parse(&text).unwrap_or_else(|| panic!("an unknown Nix: {text}"))
}

/// The directory of the test fixtures.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").canonicalize().expect("tests/fixtures exists")
}

/// Quotes text as a Nix string.
pub fn nix_string(text: &str) -> String {
    let mut quoted = String::from("\"");
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\n' => quoted.push_str("\\n"),
            '\t' => quoted.push_str("\\t"),
            '$' if chars.peek() == Some(&'{') => quoted.push_str("\\$"),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

/// A name no other test uses, so that no two builds share a derivation.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{prefix}-{}-{}-{nanos}", std::process::id(), COUNTER.fetch_add(1, Ordering::SeqCst))
}

/// A derivation made with the stdenv fixture.
#[derive(Debug, Clone)]
pub struct Drv {
    pub name: String,
    attrs: Vec<(String, String)>,
    hook: bool,
    extra_inputs: Vec<String>,
}

impl Drv {
    /// A derivation with the attach hook among its inputs.
    pub fn new(prefix: &str) -> Drv {
        Drv { name: unique_name(prefix), attrs: Vec::new(), hook: true, extra_inputs: Vec::new() }.attr("NIX_ATTACH_TIMEOUT", "300")
    }

    /// Sets a string attribute (an environment variable of the build).
    pub fn attr(mut self, name: &str, value: &str) -> Drv {
        self.attrs.retain(|(existing, _)| existing != name);
        self.attrs.push((name.to_string(), nix_string(value)));
        self
    }

    /// Sets an attribute to a Nix expression over the fixture `f` (a list,
    /// a boolean, a path).
    pub fn attr_expr(mut self, name: &str, expression: &str) -> Drv {
        self.attrs.retain(|(existing, _)| existing != name);
        self.attrs.push((name.to_string(), expression.to_string()));
        self
    }

    /// Builds with `__structuredAttrs = true`: attributes reach the builder
    /// as shell variables in `.attrs.sh` (lists as arrays), not as
    /// environment variables.
    pub fn structured(self) -> Drv {
        self.attr_expr("__structuredAttrs", "true")
    }

    /// Sets a phase's code, as nixpkgs derivations do.
    pub fn phase(self, phase: &str, code: &str) -> Drv {
        self.attr(phase, code)
    }

    /// Leaves the attach hook out.
    pub fn without_hook(mut self) -> Drv {
        self.hook = false;
        self
    }

    /// Adds an input, given as a Nix expression over the fixture `f`.
    pub fn input(mut self, expression: &str) -> Drv {
        self.extra_inputs.push(expression.to_string());
        self
    }

    /// The Nix expression for this derivation.
    pub fn expression(&self) -> String {
        self.expression_over(&fixtures(), nix_attach())
    }

    /// The expression over the copy that every user may read.
    pub fn readable_expression(&self) -> String {
        let (fixtures, agent) = readable_copy();
        self.expression_over(fixtures, agent.to_str().unwrap())
    }

    fn expression_over(&self, fixtures: &Path, agent: &str) -> String {
        let mut inputs = self.extra_inputs.join(" ");
        if self.hook {
            inputs += " f.attachHook";
        }
        let attrs: String = self.attrs.iter().map(|(name, value)| format!("{name} = {value}; ")).collect();
        format!(
            "let f = import {fixtures} {{ agent = {agent}; }}; in f.mkDerivation {{ name = {name}; nativeBuildInputs = [ {inputs} ]; {attrs}}}",
            fixtures = fixtures.display(),
            name = nix_string(&self.name),
        )
    }

    /// Instantiates it through the daemon; returns the `.drv` path.
    pub fn instantiate(&self) -> String {
        instantiate(&self.expression())
    }

    /// Starts `nix-build` on this derivation through the daemon.
    pub fn start(&self) -> Build {
        Build::start(&self.name, &self.expression())
    }

    /// Starts `nix-build` on this derivation as `user`.
    pub fn start_as(&self, user: &str) -> Build {
        Build::start_as(user, &self.name, &self.readable_expression())
    }

    /// Starts the build and waits until it pauses.
    pub fn pause(&self) -> (Build, Paused) {
        let mut build = self.start();
        let paused = build.paused();
        (build, paused)
    }

    /// Builds to the end and returns how it went.
    pub fn build(&self) -> Finished {
        self.start().finish()
    }
}

/// A running `nix-build`; dropping it stops the build.
pub struct Build {
    pub name: String,
    child: Option<Child>,
    log: PathBuf,
}

/// A build that ended.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub log: String,
}

/// A paused build as `nix-attach list --json` shows it.
#[derive(Debug, Clone)]
pub struct Paused {
    pub id: String,
    pub entry: Value,
}

impl Paused {
    pub fn pid(&self) -> i32 {
        self.entry["pid"].as_i64().expect("pid") as i32
    }
}

impl Build {
    /// Starts `nix-build` on `expression`, a derivation called `name`,
    /// through the daemon. The nixpkgs stand-in finds the binary under
    /// test through $NIX_ATTACH_TEST_BINARY.
    pub fn start(name: &str, expression: &str) -> Build {
        Build::start_with(name, expression, Command::new("nix-build"))
    }

    /// Starts `nix-build` as `user`, one of the test bed's ordinary users.
    pub fn start_as(user: &str, name: &str, expression: &str) -> Build {
        let mut command = as_user(user, "nix-build");
        command.env("HOME", format!("/home/{user}"));
        Build::start_with(name, expression, command)
    }

    /// Starts `command --no-out-link --expr EXPRESSION`, a build called `name`.
    pub fn start_with(name: &str, expression: &str, mut command: Command) -> Build {
        command.args(["--no-out-link", "--expr", expression]);
        Build::spawn(name, command)
    }

    /// Starts `command`, which builds a derivation called `name` through
    /// the daemon, with its output in a log.
    pub fn spawn(name: &str, mut command: Command) -> Build {
        let log = std::env::temp_dir().join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("create the build log");
        let child = command
            .env("NIX_REMOTE", "daemon")
            .env("NIX_ATTACH_TEST_BINARY", nix_attach())
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("run nix-build");
        Build { name: name.to_string(), child: Some(child), log }
    }

    /// The process id of `nix-build`.
    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("a running nix-build").id() as i32
    }

    /// The build's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the build's log has a pointer line; returns the id and
    /// the agent's path that it names (a build on a remote builder, which
    /// `list` here does not show).
    pub fn pointer(&self) -> (String, String) {
        const ATTACH: &str = "attach with `nix-attach attach ";
        let deadline = Instant::now() + PATIENCE;
        loop {
            let log = self.log();
            if let Some(line) = log.lines().find(|line| line.contains(ATTACH)) {
                let id = &line[line.find(ATTACH).unwrap() + ATTACH.len()..];
                let agent = &line[line.find(" (agent ").expect("the line names the agent") + 8..];
                return (id[..12].to_string(), agent[..agent.find(')').unwrap()].to_string());
            }
            assert!(Instant::now() < deadline, "no pointer line:\n{log}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the build pauses and `list` shows it.
    pub fn paused(&mut self) -> Paused {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(entry) = list().into_iter().find(|entry| entry["drv"] == self.name.as_str()) {
                let id = entry["id"].as_str().expect("id").to_string();
                return Paused { id, entry };
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("{} ended ({status}) without pausing:\n{}", self.name, self.log());
            }
            assert!(Instant::now() < deadline, "{} did not pause:\n{}", self.name, self.log());
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits for `nix-build` to end.
    pub fn finish(mut self) -> Finished {
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + PATIENCE;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("{} did not end:\n{}", self.name, self.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        Finished { status, log: self.log() }
    }
}

impl Drop for Build {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// `nix-instantiate --expr EXPRESSION` through the daemon; returns the
/// `.drv` path.
pub fn instantiate(expression: &str) -> String {
    let output =
        Command::new("nix-instantiate").args(["--expr", expression]).env("NIX_REMOTE", "daemon").output().expect("run nix-instantiate");
    assert!(output.status.success(), "nix-instantiate failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

/// `nix-attach list --json`, parsed.
pub fn list() -> Vec<Value> {
    let output = nix_attach_cmd(&["list", "--json"]);
    assert!(output.status.success(), "list failed: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice::<Value>(&output.stdout).expect("list prints JSON").as_array().expect("an array").clone()
}

/// Runs nix-attach with `args`, stdin closed, and collects its output.
pub fn nix_attach_cmd(args: &[&str]) -> Output {
    Command::new(nix_attach()).args(args).stdin(Stdio::null()).output().expect("run nix-attach")
}

/// Runs nix-attach with `args` and `input` on stdin.
pub fn nix_attach_with_input(args: &[&str], input: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new(nix_attach())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run nix-attach");
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

/// `nix-attach exec ID -- ARGS…`: stdout, stderr and status.
pub fn exec(id: &str, argv: &[&str]) -> Output {
    let mut args = vec!["exec", id, "--"];
    args.extend_from_slice(argv);
    nix_attach_cmd(&args)
}

/// `exec ID -- eval CODE`, asserting success, returning stdout.
pub fn eval(id: &str, code: &str) -> String {
    let output = exec(id, &["eval", code]);
    assert!(output.status.success(), "eval {code:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

/// Whether a process still exists.
pub fn alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Releases a paused build and returns how it ended.
pub fn release(build: Build, paused: &Paused) -> Finished {
    let output = nix_attach_cmd(&["release", &paused.id]);
    assert!(output.status.success(), "release failed: {}\nthe build's log:\n{}", String::from_utf8_lossy(&output.stderr), build.log());
    build.finish()
}

/// The test bed's ordinary users (`tests/bed/setup` makes them, in
/// `nix-users`): each may build through the daemon, neither has sudo.
pub const ALICE: &str = "nix-attach-alice";
pub const BOB: &str = "nix-attach-bob";

/// `program`, to be run as `user` with that user's groups (setpriv execs,
/// so the pid is the program's own).
pub fn as_user(user: &str, program: &str) -> Command {
    let mut command = Command::new("setpriv");
    command.args([&format!("--reuid={user}"), &format!("--regid={user}"), "--init-groups", program]);
    // As a login would: root's home is not the user's to read.
    let home = nix::unistd::User::from_name(user).unwrap().map(|found| found.dir);
    command.env("HOME", home.unwrap_or_else(|| PathBuf::from("/homeless-shelter")));
    command
}

/// The uid of `user`.
pub fn uid_of(user: &str) -> u32 {
    nix::unistd::User::from_name(user).unwrap().unwrap_or_else(|| panic!("no user {user}: run tests/bed/setup")).uid.as_raw()
}

/// The fixtures (with the hook they package) and the binary under test,
/// copied where every user may read them: the test bed's ordinary users
/// cannot reach a checkout below a private directory (such as /root).
/// Made once per binary; older copies are removed.
pub fn readable_copy() -> &'static (PathBuf, PathBuf) {
    static COPY: std::sync::OnceLock<(PathBuf, PathBuf)> = std::sync::OnceLock::new();
    COPY.get_or_init(|| {
        use std::os::unix::fs::MetadataExt;
        let binary = std::fs::metadata(nix_attach()).unwrap();
        let parent = Path::new("/tmp/nix-attach-tests-readable");
        let dir = parent.join(format!("{}-{}", binary.ino(), binary.mtime()));
        if !dir.join("done").exists() {
            let _ = std::fs::remove_dir_all(parent);
            let repository = fixtures().join("../..");
            std::fs::create_dir_all(dir.join("tests")).unwrap();
            for (from, to) in [(fixtures(), dir.join("tests/fixtures")), (repository.join("setup-hooks"), dir.join("setup-hooks"))] {
                assert!(Command::new("cp").arg("-R").arg(&from).arg(&to).status().unwrap().success(), "copy {from:?}");
            }
            // Copied by another process, so that no child forked here holds
            // it open for writing when it runs (ETXTBSY).
            assert!(Command::new("cp").arg(nix_attach()).arg(dir.join("nix-attach")).status().unwrap().success());
            assert!(Command::new("chmod").args(["-R", "a+rX"]).arg(parent).status().unwrap().success());
            std::fs::write(dir.join("done"), "").unwrap();
        }
        (dir.join("tests/fixtures"), dir.join("nix-attach"))
    })
}

/// The binary under test, at a path every user may run.
pub fn readable_nix_attach() -> &'static str {
    readable_copy().1.to_str().unwrap()
}
