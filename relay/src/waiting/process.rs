//! A process seen through one handle on its `/proc` entry.
//!
//! A pid names a process only until it exits and the number is reused. A
//! handle on `/proc/PID` keeps naming the process it was opened for: once
//! that process is gone, reads through the handle fail instead of reading
//! another process. So everything read through one [`Process`] is about one
//! process. Its uids come from `status`, never from the owner of
//! `/proc/PID`: a process that makes itself non-dumpable shows root as that
//! owner, whoever runs it.

use nix::errno::Errno;
use nix::fcntl::{open, openat, readlinkat, OFlag};
use nix::sys::stat::Mode;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::time::Duration;

/// `stat` and `status` are a few hundred bytes; nothing longer is read.
const MAX_READ: u64 = 8192;
/// How long a read of a process's memory (`cmdline`, `environ`) may take.
const MEMORY_PATIENCE: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("cannot open /proc/{pid}")]
    Open {
        pid: i32,
        #[source]
        source: Errno,
    },
    #[error("cannot read /proc/{pid}/{file}")]
    Read {
        pid: i32,
        file: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("/proc/{pid}/{file} has no {field}")]
    Field { pid: i32, file: &'static str, field: &'static str },
    #[error("process {child}'s parent {parent} is gone or was replaced")]
    NotTheParent { child: i32, parent: i32 },
}

/// One process, held by a handle on its `/proc` entry.
#[derive(Debug)]
pub struct Process {
    pid: i32,
    dir: OwnedFd,
}

/// What a process's `stat` and `status` say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    /// The real uid.
    pub uid: u32,
    /// The effective uid: the owner of the files it makes.
    pub euid: u32,
    /// The parent's pid, as this pid namespace sees it (0: none visible).
    pub parent: i32,
    /// When it started, in clock ticks after boot.
    pub start: u64,
}

impl Process {
    /// Opens the process `pid`.
    pub fn open(pid: i32) -> Result<Process, ProcessError> {
        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let dir = open(format!("/proc/{pid}").as_str(), flags, Mode::empty()).map_err(|source| ProcessError::Open { pid, source })?;
        Ok(Process { pid, dir })
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The handle on `/proc/PID`, to open more of its entries.
    pub fn dir(&self) -> BorrowedFd<'_> {
        self.dir.as_fd()
    }

    /// A file of the process's that the kernel reads from its memory
    /// (`cmdline`, `environ`), at most `limit` bytes; `None` where it cannot
    /// be read, or not within [`MEMORY_PATIENCE`]: the process may have put a
    /// file of a FUSE mount that never answers under that memory, and the
    /// read would wait for it for ever. (The thread left waiting ends with
    /// this program, or when the FUSE server answers.)
    pub fn read_memory(&self, file: &'static str, limit: u64) -> Option<Vec<u8>> {
        let fd = openat(&self.dir, file, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty()).ok()?;
        read_within(File::from(fd), limit, MEMORY_PATIENCE)
    }

    /// Its uids, parent and start time.
    pub fn facts(&self) -> Result<Facts, ProcessError> {
        let stat = self.read("stat")?;
        let status = self.read("status")?;
        // `stat` has the command name in parentheses, which may hold
        // anything; the fields after the last `)` start at field 3 (state).
        let after_name: Vec<&str> = stat.rfind(')').map_or("", |at| &stat[at + 1..]).split_whitespace().collect();
        let missing = |field| ProcessError::Field { pid: self.pid, file: "stat", field };
        let parent = after_name.get(1).and_then(|text| text.parse().ok()).ok_or_else(|| missing("ppid"))?;
        let start = after_name.get(19).and_then(|text| text.parse().ok()).ok_or_else(|| missing("starttime"))?;
        let uids: Vec<u32> = status
            .lines()
            .find_map(|line| line.strip_prefix("Uid:"))
            .map(|uids| uids.split_whitespace().filter_map(|uid| uid.parse().ok()).collect())
            .unwrap_or_default();
        let [uid, euid, ..] = uids[..] else {
            return Err(ProcessError::Field { pid: self.pid, file: "status", field: "Uid" });
        };
        Ok(Facts { uid, euid, parent, start })
    }

    /// The program it runs (the target of `exe`, without ` (deleted)`).
    pub fn program(&self) -> Result<PathBuf, ProcessError> {
        let link = readlinkat(&self.dir, "exe").map_err(|errno| self.read_error("exe", errno))?;
        let text = link.to_string_lossy();
        Ok(PathBuf::from(text.strip_suffix(" (deleted)").unwrap_or(&text)))
    }

    /// The device and inode of the directory it sees at `path` (absolute,
    /// under its own root; links are not followed).
    pub fn directory_identity(&self, path: &str) -> Result<(u64, u64), ProcessError> {
        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let root = openat(&self.dir, "root", flags, Mode::empty()).map_err(|errno| self.read_error("root", errno))?;
        let relative = path.trim_start_matches('/');
        let meta = nix::sys::stat::fstatat(&root, relative, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(|errno| self.read_error("root", errno))?;
        Ok((meta.st_dev, meta.st_ino))
    }

    /// Its command name (`comm`): the name of the program it ran, unless it
    /// renamed itself. Readable by everyone, where `exe` needs root.
    pub fn command_name(&self) -> Result<String, ProcessError> {
        Ok(self.read("comm")?.trim_end_matches('\n').to_string())
    }

    /// Its parent, checked to be the process that is its parent now: it
    /// started no later than this one, and this one still names it once it
    /// is open. A parent that exited and whose pid was reused fails both.
    pub fn parent(&self, facts: &Facts) -> Result<(Process, Facts), ProcessError> {
        let not_the_parent = || ProcessError::NotTheParent { child: self.pid, parent: facts.parent };
        if facts.parent <= 0 {
            return Err(not_the_parent());
        }
        let parent = Process::open(facts.parent)?;
        let parent_facts = parent.facts()?;
        if parent_facts.start > facts.start || self.facts()?.parent != facts.parent {
            return Err(not_the_parent());
        }
        Ok((parent, parent_facts))
    }

    fn read(&self, file: &'static str) -> Result<String, ProcessError> {
        let fd =
            openat(&self.dir, file, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty()).map_err(|errno| self.read_error(file, errno))?;
        let mut text = String::new();
        File::from(fd).take(MAX_READ).read_to_string(&mut text).map_err(|source| ProcessError::Read { pid: self.pid, file, source })?;
        Ok(text)
    }

    fn read_error(&self, file: &'static str, errno: Errno) -> ProcessError {
        ProcessError::Read { pid: self.pid, file, source: errno.into() }
    }
}

/// Reads `file` to its end, at most `limit` bytes, in a thread of its own;
/// `None` if that fails or takes longer than `patience`.
fn read_within(file: File, limit: u64, patience: Duration) -> Option<Vec<u8>> {
    let (done, read) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let read = file.take(limit).read_to_end(&mut bytes).map(|_| bytes);
        let _ = done.send(read.ok());
    });
    read.recv_timeout(patience).ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_that_never_ends_is_given_up_after_its_patience() {
        let dir = std::env::temp_dir().join(format!("nix-attach-read-within-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("never-written");
        nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o600)).unwrap();
        // Opened for writing too, so that the open returns and the read
        // waits, as a read of memory on a FUSE server that never answers.
        let waiting = File::options().read(true).write(true).open(&fifo).unwrap();
        assert_eq!(read_within(waiting, 16, Duration::from_millis(200)), None);
        std::fs::remove_dir_all(&dir).unwrap();
        let me = Process::open(std::process::id() as i32).unwrap();
        let cmdline = me.read_memory("cmdline", 4096).unwrap();
        assert!(cmdline.starts_with(std::env::args().next().unwrap().as_bytes()));
    }

    #[test]
    fn this_process_reads_as_itself_and_its_parent_as_its_parent() {
        let me = Process::open(std::process::id() as i32).unwrap();
        let facts = me.facts().unwrap();
        assert_eq!(facts.euid, nix::unistd::geteuid().as_raw());
        assert_eq!(facts.uid, nix::unistd::getuid().as_raw());
        assert_eq!(facts.parent, std::os::unix::process::parent_id() as i32);
        let (parent, parent_facts) = me.parent(&facts).unwrap();
        assert_eq!(parent.pid(), facts.parent);
        assert!(parent_facts.start <= facts.start);
        assert_eq!(me.program().unwrap(), std::env::current_exe().unwrap());
    }

    #[test]
    fn a_parent_that_started_later_is_not_the_parent() {
        // A pid reused after the parent exited names a younger process.
        let me = Process::open(std::process::id() as i32).unwrap();
        let facts = Facts { start: 0, ..me.facts().unwrap() };
        assert!(matches!(me.parent(&facts), Err(ProcessError::NotTheParent { .. })));
    }

    #[test]
    fn a_process_that_is_not_named_as_the_parent_is_not_the_parent() {
        let me = Process::open(std::process::id() as i32).unwrap();
        let mut facts = me.facts().unwrap();
        facts.parent = 1;
        assert!(matches!(me.parent(&facts), Err(ProcessError::NotTheParent { .. })));
    }
}
