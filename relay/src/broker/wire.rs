//! What the broker and its clients say to each other.
//!
//! One request and one reply per connection. Each is a frame: a 4-byte
//! big-endian length, then that many bytes of JSON. A request is at most
//! [`MAX_REQUEST`] bytes and names its protocol version, which is read
//! first, alone, so that a newer client is told so rather than "malformed".
//! The reply to an `open` carries the connected agent socket beside it
//! (`SCM_RIGHTS`); from there the client speaks the agent protocol itself.

use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use serde::{Deserialize, Serialize};
use std::io::{self, IoSlice, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

/// Bumped when requests or replies change incompatibly.
pub const VERSION: u32 = 1;
/// The largest request the broker reads.
pub const MAX_REQUEST: usize = 4096;
/// The largest reply a client reads (a list of many builds).
pub const MAX_REPLY: usize = 8 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("the connection broke")]
    Io(#[from] io::Error),
    #[error("the frame of {0} bytes is larger than {1}")]
    TooLarge(usize, usize),
    #[error("the frame is not valid")]
    Malformed(#[source] serde_json::Error),
    #[error("the request speaks broker protocol {0}, this broker {VERSION}")]
    Version(u32),
}

/// What a client asks the broker for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// The waiting builds the caller asked for.
    List,
    /// A connection to the agent of the build `id` names (an id, a unique
    /// prefix, or a derivation name; none: the caller's only build), with
    /// the closures of the valid store paths `with` mounted into its
    /// sandbox first (`--with`).
    Open {
        id: Option<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        with: Vec<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    version: u32,
    request: Request,
}

/// The broker's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    Builds {
        builds: Vec<crate::waiting::listing::Listing>,
    },
    /// The agent socket of build `id` comes with this reply.
    Opened {
        id: String,
    },
    Refused {
        reason: String,
    },
}

/// Encodes a request as a frame.
pub fn encode_request(request: &Request) -> Vec<u8> {
    frame(&serde_json::to_vec(&Envelope { version: VERSION, request: request.clone() }).expect("a request serialises"))
}

/// Decodes a request's JSON: its version first, then, for this version
/// only, the whole request, strictly.
pub fn decode_request(body: &[u8]) -> Result<Request, WireError> {
    let envelope: Envelope = crate::protocol::decode_versioned(body, VERSION).map_err(WireError::Malformed)?.map_err(WireError::Version)?;
    Ok(envelope.request)
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut framed = (body.len() as u32).to_be_bytes().to_vec();
    framed.extend_from_slice(body);
    framed
}

/// Reads one frame's body of at most `max` bytes from `stream`, all of it
/// by `deadline`: a client that trickles its request is cut off there.
pub fn read_frame_by(stream: &UnixStream, max: usize, deadline: std::time::Instant) -> Result<Vec<u8>, WireError> {
    struct ByDeadline<'a>(&'a UnixStream, std::time::Instant);
    impl Read for ByDeadline<'_> {
        fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
            let left = self.1.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(io::ErrorKind::TimedOut.into());
            }
            self.0.set_read_timeout(Some(left))?;
            let mut stream = self.0;
            stream.read(buffer)
        }
    }
    read_frame(&mut ByDeadline(stream, deadline), max)
}

/// Reads one frame's body of at most `max` bytes.
pub fn read_frame(stream: &mut impl Read, max: usize) -> Result<Vec<u8>, WireError> {
    let mut length = [0u8; 4];
    stream.read_exact(&mut length)?;
    let length = u32::from_be_bytes(length) as usize;
    if length > max {
        return Err(WireError::TooLarge(length, max));
    }
    let mut body = vec![0; length];
    stream.read_exact(&mut body)?;
    Ok(body)
}

/// Sends `reply`, with `descriptor` beside it when there is one.
pub fn send_reply(stream: &UnixStream, reply: &Reply, descriptor: Option<RawFd>) -> Result<(), WireError> {
    let bytes = frame(&serde_json::to_vec(reply).map_err(WireError::Malformed)?);
    let fds: Vec<RawFd> = descriptor.into_iter().collect();
    let rights = [ControlMessage::ScmRights(&fds)];
    let control: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
    let sent =
        sendmsg::<()>(stream.as_raw_fd(), &[IoSlice::new(&bytes)], control, MsgFlags::MSG_NOSIGNAL, None).map_err(io::Error::from)?;
    // The descriptor went with the first bytes; the rest follow plainly.
    let mut stream = stream;
    stream.write_all(&bytes[sent..])?;
    Ok(())
}

/// Reads the broker's reply, and the descriptor that came with it, if any.
pub fn receive_reply(stream: &UnixStream) -> Result<(Reply, Option<OwnedFd>), WireError> {
    let mut received = Vec::new();
    let mut descriptor = None;
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        if received.len() >= 4 {
            let length = u32::from_be_bytes(received[..4].try_into().expect("four bytes")) as usize;
            if length > MAX_REPLY {
                return Err(WireError::TooLarge(length, MAX_REPLY));
            }
            if received.len() >= 4 + length {
                let reply = serde_json::from_slice(&received[4..4 + length]).map_err(WireError::Malformed)?;
                return Ok((reply, descriptor));
            }
        }
        let (read, handed) = crate::handoff::receive(stream, &mut chunk)?;
        if read == 0 {
            return Err(WireError::Io(io::ErrorKind::UnexpectedEof.into()));
        }
        received.extend_from_slice(&chunk[..read]);
        descriptor = descriptor.or(handed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(framed: &[u8]) -> &[u8] {
        &framed[4..]
    }

    #[test]
    fn requests_round_trip() {
        for request in [
            Request::List,
            Request::Open { id: Some("4f2a".into()), with: vec![] },
            Request::Open { id: None, with: vec!["/nix/store/x-gdb".into()] },
        ] {
            assert_eq!(decode_request(body(&encode_request(&request))).unwrap(), request);
        }
    }

    #[test]
    fn a_newer_request_is_told_its_version_even_with_fields_new_to_us() {
        let newer = br#"{"version":2,"request":{"kind":"open","id":null},"as_user":"alice"}"#;
        assert!(matches!(decode_request(newer), Err(WireError::Version(2))));
    }

    #[test]
    fn unknown_fields_and_kinds_are_refused() {
        assert!(matches!(decode_request(br#"{"version":1,"request":{"kind":"list"},"uid":0}"#), Err(WireError::Malformed(_))));
        assert!(matches!(decode_request(br#"{"version":1,"request":{"kind":"shell"}}"#), Err(WireError::Malformed(_))));
        assert!(matches!(decode_request(b"\xff\x00garbage"), Err(WireError::Malformed(_))));
    }

    #[test]
    fn a_frame_past_the_bound_is_refused_before_it_is_read() {
        let mut stream: &[u8] = &[0, 0, 0x10, 0x01];
        assert!(matches!(read_frame(&mut stream, MAX_REQUEST), Err(WireError::TooLarge(4097, MAX_REQUEST))));
    }

    #[test]
    fn a_reply_and_its_descriptor_arrive_together() {
        let (broker, client) = UnixStream::pair().unwrap();
        let (agent, _far) = UnixStream::pair().unwrap();
        send_reply(&broker, &Reply::Opened { id: "0123abcd4567".into() }, Some(agent.as_raw_fd())).unwrap();
        let (reply, descriptor) = receive_reply(&client).unwrap();
        assert_eq!(reply, Reply::Opened { id: "0123abcd4567".into() });
        assert!(descriptor.is_some());
    }
}
