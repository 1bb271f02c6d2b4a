//! A second nix-daemon beside the test bed's, on the same store, with its
//! own nix.conf (`NIX_CONF_DIR`) and socket (`NIX_DAEMON_SOCKET_PATH`, which
//! clients follow too), naming nix-attach's pre-build hook or not. The
//! shared daemon is never restarted.

use super::{nix_attach, Build, Drv, PATIENCE};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct SecondDaemon {
    pub dir: PathBuf,
    process: Child,
}

impl SecondDaemon {
    /// A daemon whose nix.conf names nix-attach's pre-build hook.
    pub fn hooked() -> SecondDaemon {
        SecondDaemon::start(true, &[])
    }

    /// A daemon, with the hook or without, and more of its environment.
    pub fn start(hook: bool, env: &[(&str, &str)]) -> SecondDaemon {
        SecondDaemon::with_conf(hook, env, "")
    }

    /// A daemon, with the hook or without, more of its environment, and
    /// `extra` lines in its nix.conf (after the test bed's, so they win).
    pub fn with_conf(hook: bool, env: &[(&str, &str)], extra: &str) -> SecondDaemon {
        let dir = std::env::temp_dir().join(super::unique_name("second-daemon"));
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        let mut conf = std::fs::read_to_string("/etc/nix/nix.conf").unwrap() + extra;
        if hook {
            let link = dir.join("bin/nix-attach-pre-build-hook");
            std::os::unix::fs::symlink(nix_attach(), &link).unwrap();
            conf += &format!("pre-build-hook = {}\n", link.display());
        }
        std::fs::write(dir.join("nix.conf"), conf).unwrap();
        let process = Command::new("nix-daemon")
            .env_remove("NIX_REMOTE")
            .env("NIX_CONF_DIR", &dir)
            .env("NIX_DAEMON_SOCKET_PATH", dir.join("socket"))
            .env("NIX_ATTACH_CACHE", dir.join("cache"))
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("daemon.log")).unwrap())
            .process_group(0)
            .spawn()
            .expect("start a second nix-daemon");
        let deadline = Instant::now() + PATIENCE;
        while std::os::unix::net::UnixStream::connect(dir.join("socket")).is_err() {
            assert!(Instant::now() < deadline, "the second daemon never listened");
            std::thread::sleep(Duration::from_millis(20));
        }
        SecondDaemon { dir, process }
    }

    /// `PROGRAM ARGS… --no-out-link --expr EXPRESSION` through this daemon.
    pub fn build(&self, name: &str, expression: &str, program: &str, args: &[&str]) -> Build {
        let mut command = Command::new(program);
        command
            .args(args)
            .env("NIX_DAEMON_SOCKET_PATH", self.dir.join("socket"))
            .env("NIX_CONF_DIR", &self.dir)
            .env("NIX_ATTACH_CACHE", self.dir.join("cache"))
            .env_remove("NIX_ATTACH_REQUESTED");
        Build::start_with(name, expression, command)
    }

    /// Plain `nix-build …` carrying the wrapper's mark: a build asked for as
    /// `nix-attach build` asks, without the wrapper around it (what
    /// `benches/figures.rs` times).
    #[allow(dead_code)]
    pub fn requested(&self, drv: &Drv) -> Build {
        let mut command = Command::new("nix-build");
        command.env("NIX_DAEMON_SOCKET_PATH", self.dir.join("socket")).env("NIX_CONF_DIR", &self.dir).env("NIX_ATTACH_REQUESTED", "1");
        Build::start_with(&drv.name, &drv.expression(), command)
    }

    /// `nix-attach run --no-enter -- nix-build …`: the wrapper asks for it,
    /// and, without a terminal, leaves a paused build waiting.
    pub fn wrapped(&self, drv: &Drv) -> Build {
        self.build(&drv.name, &drv.expression(), nix_attach(), &["run", "--no-enter", "--", "nix-build"])
    }

    /// Plain `nix-build …`, as anyone would run it.
    pub fn plain(&self, drv: &Drv) -> Build {
        self.build(&drv.name, &drv.expression(), "nix-build", &[])
    }
}

impl Drop for SecondDaemon {
    fn drop(&mut self) {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(self.process.id() as i32), nix::sys::signal::Signal::SIGTERM);
        let _ = self.process.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
