//! A broker run by root on a socket of the test's own, and ordinary users
//! who ask it for their builds.

use super::{as_user, nix_attach, readable_nix_attach, unique_name, PATIENCE};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A broker run by root on a socket of its own, ended when dropped.
pub struct Broker {
    pub socket: PathBuf,
    pub process: Child,
}

impl Broker {
    pub fn start() -> Broker {
        let dir = std::env::temp_dir().join(unique_name("broker"));
        let socket = dir.join("broker.sock");
        let process = Command::new(nix_attach())
            .args(["broker", "--socket"])
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the broker");
        let deadline = Instant::now() + PATIENCE;
        while UnixStream::connect(&socket).is_err() {
            assert!(Instant::now() < deadline, "the broker never listened");
            std::thread::sleep(Duration::from_millis(20));
        }
        Broker { socket, process }
    }

    /// `nix-attach ARGS…` as `user`, through this broker.
    pub fn run_as(&self, user: &str, args: &[&str]) -> Output {
        as_user(user, readable_nix_attach()).args(args).env("NIX_ATTACH_BROKER", &self.socket).stdin(Stdio::null()).output().unwrap()
    }

    /// The ids `user` sees in `list --json`.
    pub fn ids_seen_by(&self, user: &str) -> Vec<String> {
        let output = self.run_as(user, &["list", "--json"]);
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let entries: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout).unwrap();
        entries.iter().map(|entry| entry["id"].as_str().unwrap().to_string()).collect()
    }
}

/// The value of `key` in a systemd unit file of the repository.
pub fn unit_value(unit: &str, key: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../systemd").join(unit);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("read {}: {err}", path.display()));
    let prefix = format!("{key}=");
    text.lines().find_map(|line| line.strip_prefix(&prefix)).unwrap_or_else(|| panic!("{unit} sets no {key}")).to_string()
}

impl Broker {
    /// A broker started as `systemd/nix-attach-broker.{socket,service}`
    /// start it, on a socket of the test's own: systemd binds the socket
    /// (with the unit's directory and socket modes) and passes it to the
    /// service's command, run without new privileges.
    pub fn start_as_its_units_do() -> Broker {
        let dir = std::env::temp_dir().join(unique_name("broker-units"));
        let mode = |key: &str| u32::from_str_radix(&unit_value("nix-attach-broker.socket", key), 8).unwrap();
        std::fs::DirBuilder::new().mode(mode("DirectoryMode")).create(&dir).unwrap();
        let socket = dir.join("broker.sock");
        let exec_start = unit_value("nix-attach-broker.service", "ExecStart");
        let command: Vec<&str> = exec_start.split_whitespace().collect();
        let program_dir = std::path::Path::new(nix_attach()).parent().unwrap();
        let path = format!("{}:{}", program_dir.display(), std::env::var("PATH").unwrap_or_default());
        let process = Command::new("systemd-socket-activate")
            .arg("-l")
            .arg(&socket)
            .args(["setpriv", "--no-new-privs", "--"])
            .args(&command)
            .env("PATH", path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the broker with systemd-socket-activate");
        let deadline = Instant::now() + PATIENCE;
        while !socket.exists() {
            assert!(Instant::now() < deadline, "systemd-socket-activate never bound the socket");
            std::thread::sleep(Duration::from_millis(20));
        }
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(mode("SocketMode"))).unwrap();
        Broker { socket, process }
    }

    /// `nix-attach ARGS…` as `user`, through this broker, with `input` on
    /// its stdin.
    pub fn run_as_with_input(&self, user: &str, args: &[&str], input: &[u8]) -> Output {
        let mut child = as_user(user, readable_nix_attach())
            .args(args)
            .env("NIX_ATTACH_BROKER", &self.socket)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().unwrap()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
        let _ = std::fs::remove_dir_all(self.socket.parent().unwrap());
    }
}
