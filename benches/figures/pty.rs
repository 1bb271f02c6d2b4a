//! A command under a PTY, driven directly for timing: to its prompt,
//! keystroke round trips, bulk output. Every terminal figure stands on it.

use crate::*;

/// A command under a PTY, read and written directly, for timing.
pub struct Pty {
    master: Box<dyn MasterPty + Send>,
    reader: Box<dyn Read + Send>,
    writer: Box<dyn Write + Send>,
    child: Box<dyn Child + Send + Sync>,
    seen: Vec<u8>,
}

impl Pty {
    pub fn spawn(program: &str, args: &[&str]) -> Pty {
        Pty::spawn_with(program, args, &[])
    }

    pub fn spawn_with(program: &str, args: &[&str], env: &[(&str, &str)]) -> Pty {
        let pair = native_pty_system().openpty(PtySize { rows: 50, cols: 200, pixel_width: 0, pixel_height: 0 }).unwrap();
        let mut command = CommandBuilder::new(program);
        command.args(args);
        command.cwd("/");
        // What most terminal emulators say they are.
        command.env("TERM", "xterm-256color");
        for (key, value) in env {
            command.env(key, value);
        }
        let child = pair.slave.spawn_command(command).unwrap();
        drop(pair.slave);
        let reader = pair.master.try_clone_reader().unwrap();
        let writer = pair.master.take_writer().unwrap();
        Pty { master: pair.master, reader, writer, child, seen: Vec::new() }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).unwrap();
        self.writer.flush().unwrap();
    }

    /// Reads until a prompt (`$ ` or `# `) shows.
    pub fn until_prompt(&mut self) {
        let mut buffer = vec![0u8; 4096];
        let mut tail = Vec::new();
        loop {
            let n = self.reader.read(&mut buffer).expect("the PTY ended");
            assert!(n > 0, "the PTY ended");
            tail.extend_from_slice(&buffer[..n]);
            if tail.ends_with(b"$ ") || tail.ends_with(b"# ") {
                return;
            }
        }
    }

    /// Reads until `needle` shows; returns the bytes read meanwhile.
    pub fn until(&mut self, needle: &[u8]) -> usize {
        let mut buffer = vec![0u8; 64 * 1024];
        let mut read = 0;
        self.seen.clear();
        loop {
            let n = self.reader.read(&mut buffer).expect("the PTY ended");
            assert!(n > 0, "the PTY ended");
            read += n;
            let keep = self.seen.len().saturating_sub(needle.len());
            self.seen.drain(..keep);
            self.seen.extend_from_slice(&buffer[..n]);
            if self.seen.windows(needle.len()).any(|window| window == needle) {
                return read;
            }
        }
    }
}

impl Pty {
    /// The command's process id.
    pub fn pid(&self) -> i32 {
        self.child.process_id().expect("the PTY's command has a pid") as i32
    }

    /// Waits a while for the command to end (it is killed on drop if not).
    pub fn wait_for_exit(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && self.child.try_wait().ok().flatten().is_none() {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.master.resize(PtySize::default());
    }
}

/// The floor for any tool that relays a terminal: a second PTY and the
/// plainest relay between the two, script(1) from util-linux.
pub const SCRIPT: &str = "script(1): a second PTY, a plain relay";

/// From running a command to its shell's prompt and a typed echo coming
/// back (some shells drop what was typed before their prompt).
pub fn to_prompt(program: &str, args: &[&str], env: &[(&str, &str)]) -> f64 {
    let start = Instant::now();
    let mut pty = Pty::spawn_with(program, args, env);
    pty.until_prompt();
    pty.send(b"echo R$((6*7))\r");
    pty.until(b"R42");
    let took = start.elapsed().as_secs_f64();
    pty.send(b"exit\r");
    pty.wait_for_exit();
    // Every tool leaves the machine a moment to settle (the agent renews
    // its spare shell; cntr unmounts), so that no run pays for the last.
    std::thread::sleep(SETTLE);
    took
}

/// The pause between two runs of `to_prompt`.
pub const SETTLE: Duration = Duration::from_millis(50);

/// One byte written to its echo read back, in a shell at its prompt.
pub fn keystrokes(pty: &mut Pty, count: usize) -> Vec<f64> {
    pty.send(b"echo READY-$((1+1))\r");
    pty.until(b"READY-2");
    std::thread::sleep(Duration::from_millis(200));
    let mut samples = Vec::with_capacity(count);
    for n in 0..count {
        let key = [b'a' + (n % 26) as u8];
        let start = Instant::now();
        pty.send(&key);
        pty.until(&key);
        samples.push(start.elapsed().as_secs_f64() * 1e6);
        if n % 40 == 39 {
            pty.send(b"\x15");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    pty.send(b"\x15");
    samples
}

/// MiB/s of `head -c 256MiB /dev/zero | base64` read to the end.
pub fn bulk(pty: &mut Pty, busybox: &str) -> f64 {
    let command = format!("{busybox} head -c 268435456 /dev/zero | {busybox} base64; echo END-$((1+1))\r");
    pty.send(command.as_bytes());
    pty.until(b"base64; echo END");
    let start = Instant::now();
    let read = pty.until(b"END-2");
    read as f64 / (1024.0 * 1024.0) / start.elapsed().as_secs_f64()
}
