//! Gives up root once the connection to the build is open.
//!
//! Run through sudo, nix-attach needs root only to reach the build's socket.
//! Before it touches the terminal or reads a byte the build sends, it
//! becomes the user who ran sudo (`SUDO_UID`, `SUDO_GID`), for good.

use nix::unistd::{getuid, setgid, setgroups, setuid, Gid, Uid};

#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error("{0} is not a number")]
    NotANumber(&'static str),
    #[error("cannot become uid {uid}, gid {gid}")]
    Switch {
        uid: u32,
        gid: u32,
        #[source]
        source: nix::Error,
    },
}

/// Becomes the sudo user, if running as root under sudo; otherwise does
/// nothing.
pub fn drop_to_sudo_user() -> Result<(), PrivilegeError> {
    if !getuid().is_root() {
        return Ok(());
    }
    let (Some(uid), Some(gid)) = (std::env::var_os("SUDO_UID"), std::env::var_os("SUDO_GID")) else {
        return Ok(());
    };
    let uid: u32 = uid.to_str().and_then(|text| text.parse().ok()).ok_or(PrivilegeError::NotANumber("SUDO_UID"))?;
    let gid: u32 = gid.to_str().and_then(|text| text.parse().ok()).ok_or(PrivilegeError::NotANumber("SUDO_GID"))?;
    if uid == 0 {
        return Ok(());
    }
    let switch = || -> nix::Result<()> {
        setgroups(&[Gid::from_raw(gid)])?;
        setgid(Gid::from_raw(gid))?;
        setuid(Uid::from_raw(uid))
    };
    switch().map_err(|source| PrivilegeError::Switch { uid, gid, source })
}
