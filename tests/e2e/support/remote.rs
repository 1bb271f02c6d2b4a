//! A remote builder on this machine (`tests/bed/remote-builder`): its own
//! mount, pid and UTS namespaces, `/nix`, nix-daemon and sshd on a
//! loopback port, reached as `nix-attach-remote` through an ssh config
//! that the tests pass in `NIX_SSHOPTS` (`-F FILE`). Dropping it ends the
//! whole machine.

use super::daemon::SecondDaemon;
use super::{Build, Drv, PATIENCE};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Set to a machine of the bed (`sid` or `lix`, tests/bed/machine), the
/// remote builder runs that machine's Nix, not this machine's.
pub const OTHER_RELEASE: &str = "NIX_ATTACH_TEST_REMOTE_MACHINE";

/// The host name the ssh config gives the remote builder.
pub const HOST: &str = "nix-attach-remote";

pub struct RemoteBuilder {
    pub dir: PathBuf,
    pub port: u16,
    machine: Child,
}

/// A port on 127.0.0.1 that nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn keygen(path: &Path) {
    let status = Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", ""]).arg("-f").arg(path).status().expect("run ssh-keygen");
    assert!(status.success(), "ssh-keygen failed");
}

impl RemoteBuilder {
    /// Starts the machine and waits until its sshd lets root in.
    pub fn start() -> RemoteBuilder {
        let dir = std::env::temp_dir().join(super::unique_name("remote-builder"));
        std::fs::create_dir_all(&dir).unwrap();
        keygen(&dir.join("host_key"));
        keygen(&dir.join("client_key"));
        let port = free_port();
        let bed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/bed");
        let mut machine = Command::new("unshare");
        machine.args(["--mount", "--uts", "--pid", "--fork", "--kill-child", "--mount-proc", "--propagation", "private"]);
        // The builder runs another machine's Nix where the specs ask for
        // it (tests/run does, for the remote specs).
        if let Some(other) = std::env::var_os(OTHER_RELEASE) {
            machine.arg(bed.join("machine")).arg(other).arg("boot").arg(&dir);
        }
        let machine = machine
            .arg(bed.join("remote-builder"))
            .arg(&dir)
            .arg(port.to_string())
            .env_remove("NIX_REMOTE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("machine.log")).unwrap())
            .process_group(0)
            .spawn()
            .expect("start the remote builder");
        let mut remote = RemoteBuilder { dir, port, machine };
        std::fs::write(remote.ssh_config(), remote.config_text(&remote.dir.join("client_key"))).unwrap();
        let deadline = Instant::now() + PATIENCE;
        while !remote.ssh(&["true"]).status.success() {
            assert!(remote.machine.try_wait().unwrap().is_none(), "the remote builder ended: {}", remote.logs());
            assert!(Instant::now() < deadline, "the remote builder never let root in: {}", remote.logs());
            std::thread::sleep(Duration::from_millis(50));
        }
        if std::env::var_os(OTHER_RELEASE).is_some() {
            let (theirs, ours) = (remote.ssh(&["nix", "--version"]).stdout, Command::new("nix").arg("--version").output().unwrap().stdout);
            assert!(
                !theirs.is_empty() && theirs != ours,
                "the remote builder runs this machine's Nix: {}",
                String::from_utf8_lossy(&theirs)
            );
        }
        remote
    }

    fn config_text(&self, key: &Path) -> String {
        format!(
            "Host {HOST}\n  HostName 127.0.0.1\n  Port {}\n  User root\n  IdentityFile {}\n  IdentitiesOnly yes\n  \
             StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n  BatchMode yes\n",
            self.port,
            key.display()
        )
    }

    /// The ssh config that names the machine.
    pub fn ssh_config(&self) -> PathBuf {
        self.dir.join("ssh_config")
    }

    /// `NIX_SSHOPTS` that reaches it: `-F CONFIG`.
    pub fn sshopts(&self) -> String {
        format!("-F {}", self.ssh_config().display())
    }

    /// Runs a command on the machine, as root.
    pub fn ssh(&self, command: &[&str]) -> std::process::Output {
        Command::new("ssh").arg("-F").arg(self.ssh_config()).arg(HOST).args(command).stdin(Stdio::null()).output().expect("run ssh")
    }

    /// A daemon on this machine that sends every build to the remote
    /// builder (`max-jobs = 0`), reaching it through `NIX_SSHOPTS`.
    pub fn local_daemon(&self) -> SecondDaemon {
        let conf = format!("builders = ssh://{HOST} x86_64-linux - 8 1\nmax-jobs = 0\nbuilders-use-substitutes = false\n");
        SecondDaemon::with_conf(false, &[("NIX_SSHOPTS", &self.sshopts())], &conf)
    }

    /// `PROGRAM ARGS…` as a client of `daemon`, with the ssh options that
    /// reach this machine.
    pub fn client(&self, program: &str, args: &[&str], daemon: &SecondDaemon) -> Command {
        let mut command = Command::new(program);
        command
            .args(args)
            .env("NIX_REMOTE", "daemon")
            .env("NIX_DAEMON_SOCKET_PATH", daemon.dir.join("socket"))
            .env("NIX_CONF_DIR", &daemon.dir)
            .env("NIX_SSHOPTS", self.sshopts())
            .stdin(Stdio::null());
        command
    }

    /// Starts `nix-build` on `drv` through `daemon` (which sends it here)
    /// and waits for its pointer line: the build, its id, its agent's path.
    pub fn build_until_paused(&self, daemon: &SecondDaemon, drv: &Drv) -> (Build, String, String) {
        let build = Build::spawn(&drv.name, self.client("nix-build", &["--no-out-link", "--expr", &drv.expression()], daemon));
        let (id, agent) = build.pointer();
        (build, id, agent)
    }

    fn logs(&self) -> String {
        ["machine.log", "sshd.log", "daemon.log"]
            .iter()
            .map(|name| format!("{name}: {}", std::fs::read_to_string(self.dir.join(name)).unwrap_or_default()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for RemoteBuilder {
    fn drop(&mut self) {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(self.machine.id() as i32), nix::sys::signal::Signal::SIGKILL);
        let _ = self.machine.wait();
        // The store's files are read-only; make them removable first.
        let _ = Command::new("chmod").args(["-R", "u+w"]).arg(&self.dir).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
