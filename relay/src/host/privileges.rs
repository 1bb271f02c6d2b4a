//! Gives up root once the connection to the build is open.
//!
//! Run as root, nix-attach needs root only to reach the build's socket.
//! Before it touches the terminal or reads a byte the build sends, it
//! becomes, for good, the person who asked for root: `SUDO_UID`/`SUDO_GID`
//! (sudo, and run0, which sets them too), `DOAS_USER` (doas), `PKEXEC_UID`
//! (pkexec), or else the login uid the kernel keeps across `su`
//! (`/proc/self/loginuid`). Where none names anyone but root (root logged
//! in as root), it becomes `nobody`: relaying a terminal needs no
//! privilege, so the build's output never meets a root process.

use nix::unistd::{getuid, setgid, setgroups, setuid, Gid, Uid, User};

/// Whom root becomes when nobody else asked for it.
const NOBODY: (u32, u32) = (65534, 65534);
/// The login uid of a process no login set.
const NO_LOGIN_UID: u32 = u32::MAX;

#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error("{0} is not a number")]
    NotANumber(&'static str),
    #[error("{variable} names {name}, who has no account here; unset it or run nix-attach as that user's root again")]
    NoSuchUser { variable: &'static str, name: String },
    #[error("cannot become uid {uid}, gid {gid}")]
    Switch {
        uid: u32,
        gid: u32,
        #[source]
        source: nix::Error,
    },
}

/// Becomes the person who asked for root (or `nobody`), if running as
/// root; otherwise does nothing.
pub fn give_up_root() -> Result<(), PrivilegeError> {
    let Some((uid, gid)) = successor()? else { return Ok(()) };
    let switch = || -> nix::Result<()> {
        setgroups(&[Gid::from_raw(gid)])?;
        setgid(Gid::from_raw(gid))?;
        setuid(Uid::from_raw(uid))
    };
    switch().map_err(|source| PrivilegeError::Switch { uid, gid, source })
}

/// Whom root becomes ([`give_up_root`]): the person who asked for root,
/// or `nobody` ([`is_nobody`]). `None` where not root.
pub fn successor() -> Result<Option<(u32, u32)>, PrivilegeError> {
    if !getuid().is_root() {
        return Ok(None);
    }
    Ok(Some(invoking_user()?.filter(|(uid, _)| *uid != 0).unwrap_or_else(nobody)))
}

/// Whether `who` is the `nobody` root becomes when nobody else asked.
pub fn is_nobody(who: (u32, u32)) -> bool {
    who == NOBODY
}

/// The uid and gid of whoever asked for root, as the tool that gave it
/// says, or as the kernel's login uid says.
fn invoking_user() -> Result<Option<(u32, u32)>, PrivilegeError> {
    if let (Some(uid), Some(gid)) = (number("SUDO_UID")?, number("SUDO_GID")?) {
        return Ok(Some((uid, gid)));
    }
    if let Some(name) = std::env::var_os("DOAS_USER") {
        let name = name.to_string_lossy().into_owned();
        let user = User::from_name(&name).ok().flatten().ok_or(PrivilegeError::NoSuchUser { variable: "DOAS_USER", name })?;
        return Ok(Some((user.uid.as_raw(), user.gid.as_raw())));
    }
    if let Some(uid) = number("PKEXEC_UID")? {
        return Ok(by_uid(uid));
    }
    let login = std::fs::read_to_string("/proc/self/loginuid").ok().and_then(|text| text.trim().parse::<u32>().ok());
    Ok(login.filter(|uid| *uid != NO_LOGIN_UID).and_then(by_uid))
}

fn number(variable: &'static str) -> Result<Option<u32>, PrivilegeError> {
    match std::env::var_os(variable) {
        None => Ok(None),
        Some(text) => text.to_str().and_then(|text| text.parse().ok()).map(Some).ok_or(PrivilegeError::NotANumber(variable)),
    }
}

fn by_uid(uid: u32) -> Option<(u32, u32)> {
    let user = User::from_uid(Uid::from_raw(uid)).ok().flatten()?;
    Some((user.uid.as_raw(), user.gid.as_raw()))
}

fn nobody() -> (u32, u32) {
    User::from_name("nobody").ok().flatten().map_or(NOBODY, |user| (user.uid.as_raw(), user.gid.as_raw()))
}
