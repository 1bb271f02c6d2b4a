//! This machine's Nix programs, as they answer: which `nix` is on PATH,
//! and what a Nix program says of its version. (What Nix is *set to* is
//! [`crate::nix_conf`], read without asking any program.)
//!
//! Uses no other module of the crate.

use std::path::Path;

/// The `nix` program on PATH.
pub fn nix_on_path() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join("nix")).find(|nix| nix.is_file())
}

/// What `program --version` prints, if it answers within a few seconds.
pub fn version_output(program: &Path) -> Option<String> {
    use std::io::Read;
    let mut child = std::process::Command::new(program)
        .arg("--version")
        .env_clear()
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while child.try_wait().ok()?.is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let mut text = String::new();
    child.stdout.take()?.take(4096).read_to_string(&mut text).ok()?;
    Some(text)
}
