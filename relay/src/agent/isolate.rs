//! A session's own namespaces: every shell and command a session runs is
//! started through `nix-attach isolate`, which puts it in a user, pid and
//! mount namespace of its own, made by the build user without privilege,
//! with a `/proc` of its own over the build's.
//!
//! Why: a session runs as the build user, and a process of that uid could
//! otherwise trace the builder (`ptrace`, `/proc/PID/mem`,
//! `process_vm_writev`, `pidfd_getfd`), signal the agent, or leave a
//! process behind to do so later, and so turn a failed build into one that
//! exits 0 with an output of the session's choosing. From the new pid
//! namespace no process of the build has a pid the session can name, its
//! `/proc` lists only the session's own processes (the build's lies locked
//! below it), and everything the session leaves running ends with it: the
//! namespace's first process, ours, exits when the shell does. The session
//! holds no capability: the bounding set is emptied before the shell runs,
//! so even a build that runs as uid 0 in its sandbox cannot unmount that
//! `/proc`. SECURITY.md says why this and not a seccomp filter or tracing.
//!
//! Where the kernel refuses the namespaces, the session runs beside the
//! build only if Yama's `ptrace_scope` is at least 1 (then no session
//! process may trace the builder, its ancestor's peer); otherwise it is
//! refused in one line.
//!
//! It uses only the standard library and system calls: it runs before any
//! thread exists, as `unshare(CLONE_NEWUSER)` requires.

use nix::sys::signal::{signal, SigHandler, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{execvp, fork, ForkResult, Pid};
use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStrExt;

/// The hidden subcommand that runs a session's program isolated.
pub const SUBCOMMAND: &str = "isolate";

/// The status of a session refused because it cannot be isolated.
pub const REFUSED: i32 = 125;

/// How long a hung-up session gets to end by itself (its shell reads the
/// end of its terminal and runs its `EXIT` and `HUP` traps) before the
/// whole namespace is ended.
const HANGUP_GRACE_SECS: u32 = 2;

/// Why a session cannot be isolated.
#[derive(Debug, thiserror::Error)]
pub enum IsolateError {
    #[error("the kernel refuses the build a user namespace ({0}), and Yama does not keep a session from the builder; a session could change the build's outcome, so none is opened (allow unprivileged user namespaces, or set kernel.yama.ptrace_scope to 1)")]
    Refused(rustix::io::Errno),
    #[error("cannot map the build user into the session's namespace ({what})")]
    Map {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot give the session a /proc of its own")]
    Proc(#[source] rustix::io::Errno),
    #[error("cannot drop the session's capabilities")]
    Capabilities(#[source] rustix::io::Errno),
    #[error("cannot start the session's process")]
    Fork(#[source] nix::Error),
    #[error("the command holds a NUL byte")]
    Nul,
}

/// Runs `argv` isolated and returns its status, as `sh` reports one (128 +
/// the signal for one killed). Never returns where `argv` runs without
/// namespaces (it is executed in place).
pub fn run(argv: &[OsString]) -> i32 {
    match isolated(argv) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("nix-attach: cannot open a session: {:#}", anyhow::Error::new(err));
            REFUSED
        }
    }
}

fn isolated(argv: &[OsString]) -> Result<i32, IsolateError> {
    let argv = c_strings(argv)?;
    close_inherited();
    let (uid, gid) = (rustix::process::getuid(), rustix::process::getgid());
    let flags = rustix::thread::UnshareFlags::NEWUSER | rustix::thread::UnshareFlags::NEWNS | rustix::thread::UnshareFlags::NEWPID;
    // SAFETY: no other thread exists yet, and this process shares nothing
    // that its new namespaces could confuse.
    if let Err(errno) = unsafe { rustix::thread::unshare_unsafe(flags) } {
        if yama_keeps_sessions_from_the_builder() {
            eprintln!("nix-attach: this session shares the build's namespaces (the kernel refuses it its own: {errno}); Yama keeps it from the builder");
            return Err(exec(&argv));
        }
        return Err(IsolateError::Refused(errno));
    }
    map_ids(uid.as_raw(), gid.as_raw())?;
    // SAFETY: single-threaded (see above).
    match unsafe { fork() }.map_err(IsolateError::Fork)? {
        ForkResult::Parent { child } => Ok(wait_for(child)),
        ForkResult::Child => std::process::exit(match first_process(&argv) {
            Ok(code) => code,
            Err(err) => {
                eprintln!("nix-attach: cannot open a session: {:#}", anyhow::Error::new(err));
                REFUSED
            }
        }),
    }
}

/// Closes every descriptor but the standard three, so that nothing of the
/// agent's (its socket, a handle on a process) reaches the session.
fn close_inherited() {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else { return };
    let fds: Vec<i32> = entries.flatten().filter_map(|entry| entry.file_name().to_str()?.parse().ok()).filter(|fd| *fd > 2).collect();
    for fd in fds {
        let _ = nix::unistd::close(fd);
    }
}

fn c_strings(argv: &[OsString]) -> Result<Vec<CString>, IsolateError> {
    argv.iter().map(|arg| CString::new(arg.as_bytes()).map_err(|_| IsolateError::Nul)).collect()
}

/// The namespace's first process: it gets a `/proc` of its own, starts the
/// program and waits for it, reaping whatever else ends there. When the
/// program exits, so does this process, and the kernel ends every process
/// left in the namespace.
fn first_process(argv: &[CString]) -> Result<i32, IsolateError> {
    // If whoever started the session goes, the session goes too.
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(IsolateError::Fork)?;
    own_proc()?;
    drop_capabilities()?;
    // SAFETY: single-threaded (see above).
    match unsafe { fork() }.map_err(IsolateError::Fork)? {
        ForkResult::Parent { child } => Ok(reap_until(child)),
        ForkResult::Child => {
            let err = exec(argv);
            eprintln!("nix-attach: cannot run the session's shell: {:#}", anyhow::Error::new(err));
            std::process::exit(127)
        }
    }
}

/// Maps the build user to itself in the new user namespace, its only id.
fn map_ids(uid: u32, gid: u32) -> Result<(), IsolateError> {
    let write = |what: &'static str, text: String| {
        std::fs::write(format!("/proc/self/{what}"), text).map_err(|source| IsolateError::Map { what, source })
    };
    write("setgroups", "deny".into())?;
    write("uid_map", format!("{uid} {uid} 1"))?;
    write("gid_map", format!("{gid} {gid} 1"))
}

/// Mounts a `/proc` of the new pid namespace over the build's, whose mount
/// the kernel locks below it. Mounts made here stay here.
fn own_proc() -> Result<(), IsolateError> {
    use rustix::mount::{mount, mount_change, MountFlags, MountPropagationFlags};
    mount_change("/", MountPropagationFlags::PRIVATE | MountPropagationFlags::REC).map_err(IsolateError::Proc)?;
    mount("proc", "/proc", "proc", MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC, None).map_err(IsolateError::Proc)
}

/// Empties the bounding set, so that no program the session runs gains a
/// capability here, not even as uid 0.
fn drop_capabilities() -> Result<(), IsolateError> {
    use rustix::thread::{remove_capability_from_bounding_set, CapabilitySet};
    for capability in CapabilitySet::all().iter() {
        match remove_capability_from_bounding_set(capability) {
            Ok(()) | Err(rustix::io::Errno::INVAL) => {}
            Err(errno) => return Err(IsolateError::Capabilities(errno)),
        }
    }
    rustix::thread::set_no_new_privs(true).map_err(IsolateError::Capabilities)
}

/// Whether Yama's ptrace_scope is 1 or more: then a process may trace only
/// its own descendants, and a session is no ancestor of the builder.
fn yama_keeps_sessions_from_the_builder() -> bool {
    std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope")
        .is_ok_and(|scope| scope.trim().parse::<u32>().is_ok_and(|scope| scope >= 1))
}

/// Replaces this process with `argv`; returns only on failure.
fn exec(argv: &[CString]) -> IsolateError {
    match argv.first() {
        Some(program) => IsolateError::Fork(execvp(program, argv).unwrap_err()),
        None => IsolateError::Nul,
    }
}

/// The status of `child`, waited for outside the namespace.
fn wait_for(child: Pid) -> i32 {
    // Keys typed at the session reach the shell's own process group; this
    // process only waits.
    ignore_terminal_signals();
    end_after_grace_on_hangup();
    loop {
        match waitpid(child, None) {
            Ok(status) => {
                if let Some(code) = status_code(status) {
                    return code;
                }
            }
            Err(nix::Error::EINTR) => {}
            Err(_) => return REFUSED,
        }
    }
}

/// Reaps every process of the namespace until `program` ends, then returns
/// its status.
fn reap_until(program: Pid) -> i32 {
    ignore_terminal_signals();
    loop {
        match waitpid(Pid::from_raw(-1), None) {
            Ok(status) if status.pid() == Some(program) => {
                if let Some(code) = status_code(status) {
                    return code;
                }
            }
            Ok(_) | Err(nix::Error::EINTR) => {}
            Err(_) => return REFUSED,
        }
    }
}

fn status_code(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, signal, _) => Some(128 + signal as i32),
        _ => None,
    }
}

/// On a hang-up (the terminal's, as its session leader, or the agent's when
/// the session ends) this process waits [`HANGUP_GRACE_SECS`] more, then
/// ends by `SIGALRM`; its child's parent-death signal then ends every
/// process of the namespace. Ending at once would kill the shell before it
/// ran its traps.
fn end_after_grace_on_hangup() {
    extern "C" fn on_hangup(_: nix::libc::c_int) {
        // alarm(2) is async-signal-safe.
        nix::unistd::alarm::set(HANGUP_GRACE_SECS);
    }
    // SAFETY: the handler only makes a system call; SIG_DFL runs no code.
    unsafe {
        let _ = signal(Signal::SIGALRM, SigHandler::SigDfl);
        let _ = signal(Signal::SIGHUP, SigHandler::Handler(on_hangup));
    }
}

fn ignore_terminal_signals() {
    for sig in [Signal::SIGINT, Signal::SIGQUIT, Signal::SIGTSTP, Signal::SIGTTIN, Signal::SIGTTOU] {
        // SAFETY: SIG_IGN runs no code.
        let _ = unsafe { signal(sig, SigHandler::SigIgn) };
    }
}
