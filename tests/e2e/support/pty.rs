//! Drives a command under a real PTY, as a person at a terminal would.

use portable_pty::{native_pty_system, Child, CommandBuilder, MasterPty, PtySize};
use std::io::{Read, Write};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// A command running under a PTY, with everything it printed.
pub struct Terminal {
    master: Box<dyn MasterPty + Send>,
    writer: Box<dyn Write + Send>,
    child: Box<dyn Child + Send + Sync>,
    screen: Arc<(Mutex<String>, Condvar)>,
}

impl Terminal {
    /// Starts `program args…` in a PTY of `rows`×`cols`.
    pub fn spawn(program: &str, args: &[&str], rows: u16, cols: u16) -> Terminal {
        Terminal::spawn_with_env(program, args, &[], rows, cols)
    }

    /// Starts `program args…` with more of its environment.
    pub fn spawn_with_env(program: &str, args: &[&str], env: &[(&str, &str)], rows: u16, cols: u16) -> Terminal {
        let pair = native_pty_system().openpty(PtySize { rows, cols, pixel_width: 0, pixel_height: 0 }).expect("open a PTY");
        let mut command = CommandBuilder::new(program);
        command.args(args);
        for (key, value) in env {
            command.env(key, value);
        }
        command.cwd("/");
        command.env("TERM", "xterm");
        command.env("NIX_REMOTE", "daemon");
        // A person at a terminal, even when the tests run in CI.
        command.env_remove("CI");
        let child = pair.slave.spawn_command(command).expect("spawn under the PTY");
        drop(pair.slave);
        let mut reader = pair.master.try_clone_reader().unwrap();
        let writer = pair.master.take_writer().unwrap();
        let screen = Arc::new((Mutex::new(String::new()), Condvar::new()));
        let sink = screen.clone();
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while let Ok(n @ 1..) = reader.read(&mut buffer) {
                let (text, changed) = &*sink;
                text.lock().unwrap().push_str(&String::from_utf8_lossy(&buffer[..n]));
                changed.notify_all();
            }
        });
        Terminal { master: pair.master, writer, child, screen }
    }

    /// The command's process id.
    pub fn pid(&self) -> i32 {
        self.child.process_id().expect("a running command") as i32
    }

    /// Types `text`.
    pub fn send(&mut self, text: &str) {
        self.writer.write_all(text.as_bytes()).unwrap();
        self.writer.flush().unwrap();
    }

    /// Everything printed so far.
    pub fn screen(&self) -> String {
        self.screen.0.lock().unwrap().clone()
    }

    /// Waits until the output holds `needle` after position `from`, and
    /// returns the position after it.
    pub fn expect_after(&self, from: usize, needle: &str) -> usize {
        let deadline = Instant::now() + Duration::from_secs(60);
        let (text, changed) = &*self.screen;
        let mut guard = text.lock().unwrap();
        // Where the search starts: what was searched before cannot hold
        // the needle, so a long output is searched once, not once a chunk.
        let mut start = from;
        loop {
            if let Some(at) = guard.get(start..).and_then(|rest| rest.find(needle)) {
                return start + at + needle.len();
            }
            start =
                (from..=guard.len().saturating_sub(needle.len())).rev().find(|at| guard.is_char_boundary(*at)).unwrap_or(from).max(start);
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "never saw {needle:?}; the screen was:\n{}", *guard);
            guard = changed.wait_timeout(guard, left).unwrap().0;
        }
    }

    /// Waits until the output holds `needle` anywhere.
    pub fn expect(&self, needle: &str) -> usize {
        self.expect_after(0, needle)
    }

    /// Changes the window size, as a terminal emulator does.
    pub fn resize(&self, rows: u16, cols: u16) {
        self.master.resize(PtySize { rows, cols, pixel_width: 0, pixel_height: 0 }).unwrap();
    }

    /// Waits for the command to end and returns its exit code.
    pub fn wait(&mut self) -> u32 {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.exit_code();
            }
            assert!(Instant::now() < deadline, "the command did not end; the screen was:\n{}", self.screen());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}
