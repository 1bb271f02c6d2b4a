//! The wire protocol between the host client and the in-sandbox agent.
//!
//! A connection is a stream of length-prefixed frames (tokio-util's
//! `LengthDelimitedCodec`, bounded by [`MAX_FRAME`]). The first byte of a
//! frame names its kind. The client opens with a [`Hello`] naming what it
//! wants; its version is read first, alone, so that a client of another
//! version is told so even when the rest of its hello is new to us. An attach is answered with [`AgentFrame::Terminal`], which carries
//! the session's PTY master as `SCM_RIGHTS`: the client then reads and
//! writes the build's terminal itself, and the agent only reports how the
//! shell ended. An exec streams input to the agent and output and the exit
//! status back.
//!
//! Uses no other module of the crate.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use std::io::{self, Read, Write};
use std::marker::PhantomData;
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec};

/// The largest frame either side accepts; larger ones end the connection.
pub const MAX_FRAME: usize = 64 * 1024;
/// The largest chunk of terminal or pipe data put in one frame.
pub const CHUNK: usize = 32 * 1024;
/// Bumped when frames change incompatibly.
pub const VERSION: u32 = 2;

#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("connection error")]
    Io(#[from] io::Error),
    #[error("empty frame")]
    Empty,
    #[error("unknown frame kind {0:#04x}")]
    UnknownKind(u8),
    #[error("malformed {kind} frame")]
    Malformed { kind: &'static str },
    #[error("malformed hello")]
    Hello(#[source] serde_json::Error),
    #[error("the client speaks protocol {0}, this agent {VERSION}")]
    Version(u32),
}

/// What a client asks for when it connects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// An interactive shell in a PTY of the given size, whose master the
    /// agent hands over.
    /// `path`: directories the session's PATH starts with (`--with`).
    Attach {
        rows: u16,
        cols: u16,
        term: Option<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        path: Vec<String>,
    },
    /// One command run in the restored shell, without a PTY.
    Exec {
        argv: Vec<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        path: Vec<String>,
    },
    /// Let the build go on to fail now.
    Release,
    /// The build directory and what the sandbox was, as a tar archive in
    /// output frames ([`crate::capture`]), then the exit status.
    Capture,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hello {
    pub version: u32,
    pub request: Request,
}

/// The one field every version of a versioned document has.
#[derive(Deserialize)]
struct Versioned {
    version: u32,
}

/// Reads a JSON document that names its `version` (a hello, the metadata,
/// a broker request): the version first, alone, so that a peer of another
/// version is told so even when the rest of its document is new to us;
/// then, for `expected` only, the whole document, strictly. `Err(version)`
/// inside for another version.
pub fn decode_versioned<T: serde::de::DeserializeOwned>(body: &[u8], expected: u32) -> serde_json::Result<Result<T, u32>> {
    let Versioned { version } = serde_json::from_slice(body)?;
    if version != expected {
        return Ok(Err(version));
    }
    serde_json::from_slice(body).map(Ok)
}

/// Reads a hello of our version.
fn decode_hello(body: &[u8]) -> Result<Hello, ProtocolError> {
    decode_versioned(body, VERSION).map_err(ProtocolError::Hello)?.map_err(ProtocolError::Version)
}

/// Frames from the client to the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientFrame {
    Hello(Hello),
    Input(Bytes),
    InputEof,
    /// The terminal's new size (framed `--via` only: the builder's relay
    /// sets it on the build's PTY).
    Resize {
        rows: u16,
        cols: u16,
    },
}

/// Frames from the agent to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentFrame {
    /// A command's stdout (exec only).
    Output(Bytes),
    /// A command's stderr (exec only).
    Stderr(Bytes),
    /// The shell or command ended with this status.
    Exit(i32),
    /// The agent refused or ended the session.
    Error(String),
    /// The session's PTY master travels with this frame (attach only).
    Terminal,
    /// A builder's relay speaks framed `--via` of this version from here
    /// on (its first frame).
    Relaying(u32),
}

/// A frame that knows its own encoding.
pub trait Frame: Sized {
    fn encode(&self, dst: &mut BytesMut);
    fn decode(src: Bytes) -> Result<Self, ProtocolError>;
}

mod kind {
    pub const HELLO: u8 = 1;
    pub const INPUT: u8 = 2;
    pub const INPUT_EOF: u8 = 3;
    pub const RESIZE: u8 = 4;
    pub const OUTPUT: u8 = 0x81;
    pub const STDERR: u8 = 0x82;
    pub const EXIT: u8 = 0x83;
    pub const ERROR: u8 = 0x84;
    pub const TERMINAL: u8 = 0x85;
    pub const RELAYING: u8 = 0x86;
}

fn split_kind(mut src: Bytes) -> Result<(u8, Bytes), ProtocolError> {
    if src.is_empty() {
        return Err(ProtocolError::Empty);
    }
    let kind = src.get_u8();
    Ok((kind, src))
}

fn exact<const N: usize>(body: &Bytes, kind: &'static str) -> Result<[u8; N], ProtocolError> {
    <[u8; N]>::try_from(&body[..]).map_err(|_| ProtocolError::Malformed { kind })
}

impl Frame for ClientFrame {
    fn encode(&self, dst: &mut BytesMut) {
        match self {
            ClientFrame::Hello(hello) => {
                dst.put_u8(kind::HELLO);
                let json = serde_json::to_vec(hello).expect("a hello always serialises");
                dst.extend_from_slice(&json);
            }
            ClientFrame::Input(data) => {
                dst.put_u8(kind::INPUT);
                dst.extend_from_slice(data);
            }
            ClientFrame::InputEof => dst.put_u8(kind::INPUT_EOF),
            ClientFrame::Resize { rows, cols } => {
                dst.put_u8(kind::RESIZE);
                dst.put_u16(*rows);
                dst.put_u16(*cols);
            }
        }
    }

    fn decode(src: Bytes) -> Result<Self, ProtocolError> {
        let (kind, body) = split_kind(src)?;
        match kind {
            kind::HELLO => decode_hello(&body).map(ClientFrame::Hello),
            kind::INPUT => Ok(ClientFrame::Input(body)),
            kind::INPUT_EOF if body.is_empty() => Ok(ClientFrame::InputEof),
            kind::INPUT_EOF => Err(ProtocolError::Malformed { kind: "input-eof" }),
            kind::RESIZE => {
                let size = exact::<4>(&body, "resize")?;
                Ok(ClientFrame::Resize { rows: u16::from_be_bytes([size[0], size[1]]), cols: u16::from_be_bytes([size[2], size[3]]) })
            }
            other => Err(ProtocolError::UnknownKind(other)),
        }
    }
}

impl Frame for AgentFrame {
    fn encode(&self, dst: &mut BytesMut) {
        match self {
            AgentFrame::Output(data) => {
                dst.put_u8(kind::OUTPUT);
                dst.extend_from_slice(data);
            }
            AgentFrame::Stderr(data) => {
                dst.put_u8(kind::STDERR);
                dst.extend_from_slice(data);
            }
            AgentFrame::Exit(code) => {
                dst.put_u8(kind::EXIT);
                dst.put_i32(*code);
            }
            AgentFrame::Error(message) => {
                dst.put_u8(kind::ERROR);
                let bytes = message.as_bytes();
                dst.extend_from_slice(&bytes[..bytes.len().min(MAX_FRAME - 1)]);
            }
            AgentFrame::Terminal => dst.put_u8(kind::TERMINAL),
            AgentFrame::Relaying(version) => {
                dst.put_u8(kind::RELAYING);
                dst.put_u32(*version);
            }
        }
    }

    fn decode(src: Bytes) -> Result<Self, ProtocolError> {
        let (kind, body) = split_kind(src)?;
        match kind {
            kind::OUTPUT => Ok(AgentFrame::Output(body)),
            kind::STDERR => Ok(AgentFrame::Stderr(body)),
            kind::EXIT => Ok(AgentFrame::Exit(i32::from_be_bytes(exact::<4>(&body, "exit")?))),
            kind::ERROR => Ok(AgentFrame::Error(String::from_utf8_lossy(&body).into_owned())),
            kind::TERMINAL if body.is_empty() => Ok(AgentFrame::Terminal),
            kind::TERMINAL => Err(ProtocolError::Malformed { kind: "terminal" }),
            kind::RELAYING => Ok(AgentFrame::Relaying(u32::from_be_bytes(exact::<4>(&body, "relaying")?))),
            other => Err(ProtocolError::UnknownKind(other)),
        }
    }
}

/// A codec that reads frames of kind `In` and writes frames of kind `Out`.
pub struct Codec<In, Out> {
    framing: LengthDelimitedCodec,
    kinds: PhantomData<fn(Out) -> In>,
}

impl<In, Out> Default for Codec<In, Out> {
    fn default() -> Self {
        Codec { framing: LengthDelimitedCodec::builder().max_frame_length(MAX_FRAME).new_codec(), kinds: PhantomData }
    }
}

/// The agent's side: reads client frames, writes agent frames.
pub type AgentCodec = Codec<ClientFrame, AgentFrame>;
/// The client's side: reads agent frames, writes client frames.
pub type ClientCodec = Codec<AgentFrame, ClientFrame>;

impl<In: Frame, Out> Decoder for Codec<In, Out> {
    type Item = In;
    type Error = ProtocolError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<In>, ProtocolError> {
        match self.framing.decode(src)? {
            Some(frame) => In::decode(frame.freeze()).map(Some),
            None => Ok(None),
        }
    }
}

impl<In, Out: Frame> Encoder<Out> for Codec<In, Out> {
    type Error = ProtocolError;

    fn encode(&mut self, item: Out, dst: &mut BytesMut) -> Result<(), ProtocolError> {
        let mut body = BytesMut::new();
        item.encode(&mut body);
        self.framing.encode(body.freeze(), dst).map_err(ProtocolError::from)
    }
}

/// Writes one frame to a blocking stream, as [`Codec`] frames it, in one
/// write where the stream takes it whole (a pipe to ssh then passes it on
/// in one piece).
pub fn write_frame<F: Frame>(out: &mut impl Write, frame: &F) -> io::Result<()> {
    let mut framed = BytesMut::from(&[0u8; 4][..]);
    frame.encode(&mut framed);
    let length = (framed.len() - 4) as u32;
    framed[..4].copy_from_slice(&length.to_be_bytes());
    out.write_all(&framed)
}

/// Reads one frame from a blocking stream, as [`Codec`] reads it: at most
/// [`MAX_FRAME`] bytes. `None` where the stream ends between frames.
pub fn read_frame<F: Frame>(input: &mut impl Read) -> Result<Option<F>, ProtocolError> {
    let mut length = [0u8; 4];
    match input.read_exact(&mut length) {
        Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        other => other?,
    }
    let length = u32::from_be_bytes(length) as usize;
    if length > MAX_FRAME {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("a frame of {length} bytes, over {MAX_FRAME}")).into());
    }
    let mut body = vec![0u8; length];
    input.read_exact(&mut body)?;
    F::decode(Bytes::from(body)).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<F: Frame + PartialEq + std::fmt::Debug>(frame: F) {
        let mut buf = BytesMut::new();
        frame.encode(&mut buf);
        assert_eq!(F::decode(buf.freeze()).unwrap(), frame);
    }

    #[test]
    fn every_frame_round_trips() {
        round_trip(ClientFrame::Hello(Hello {
            version: VERSION,
            request: Request::Exec { argv: vec!["declare".into(), "-p".into()], path: vec![] },
        }));
        round_trip(ClientFrame::Hello(Hello {
            version: VERSION,
            request: Request::Attach { rows: 24, cols: 80, term: Some("xterm".into()), path: vec!["/nix/store/x-gdb/bin".into()] },
        }));
        round_trip(ClientFrame::Input(Bytes::from_static(b"ls\r")));
        round_trip(ClientFrame::InputEof);
        round_trip(AgentFrame::Output(Bytes::from_static(b"\x1b[1mhi")));
        round_trip(AgentFrame::Stderr(Bytes::from_static(b"oops")));
        round_trip(AgentFrame::Exit(-1));
        round_trip(AgentFrame::Error("too many sessions".into()));
        round_trip(AgentFrame::Terminal);
        round_trip(ClientFrame::Resize { rows: 40, cols: 120 });
        round_trip(AgentFrame::Relaying(1));
        round_trip(ClientFrame::Hello(Hello { version: VERSION, request: Request::Capture }));
    }

    #[test]
    fn blocking_frames_read_back_as_the_codec_writes_them() {
        let mut codec = AgentCodec::default();
        let mut wire = BytesMut::new();
        codec.encode(AgentFrame::Output(Bytes::from_static(b"tar")), &mut wire).unwrap();
        codec.encode(AgentFrame::Exit(0), &mut wire).unwrap();
        let mut input = &wire[..];
        assert_eq!(read_frame::<AgentFrame>(&mut input).unwrap(), Some(AgentFrame::Output(Bytes::from_static(b"tar"))));
        assert_eq!(read_frame::<AgentFrame>(&mut input).unwrap(), Some(AgentFrame::Exit(0)));
        assert_eq!(read_frame::<AgentFrame>(&mut input).unwrap(), None);
        let mut written = Vec::new();
        write_frame(&mut written, &ClientFrame::InputEof).unwrap();
        let mut decoder = Codec::<ClientFrame, AgentFrame>::default();
        assert_eq!(decoder.decode(&mut BytesMut::from(&written[..])).unwrap(), Some(ClientFrame::InputEof));
        let too_long = ((MAX_FRAME + 1) as u32).to_be_bytes();
        assert!(read_frame::<AgentFrame>(&mut &too_long[..]).is_err());
    }

    #[test]
    fn malformed_frames_are_errors_not_panics() {
        assert!(matches!(ClientFrame::decode(Bytes::new()), Err(ProtocolError::Empty)));
        assert!(matches!(ClientFrame::decode(Bytes::from_static(&[9])), Err(ProtocolError::UnknownKind(9))));
        assert!(matches!(ClientFrame::decode(Bytes::from_static(&[3, 0])), Err(ProtocolError::Malformed { .. })));
        assert!(matches!(AgentFrame::decode(Bytes::from_static(&[0x85, 0])), Err(ProtocolError::Malformed { .. })));
        assert!(matches!(ClientFrame::decode(Bytes::from_static(&[4, 0, 1])), Err(ProtocolError::Malformed { kind: "resize" })));
        assert!(matches!(AgentFrame::decode(Bytes::from_static(&[0x86, 0, 1])), Err(ProtocolError::Malformed { kind: "relaying" })));
        assert!(matches!(ClientFrame::decode(Bytes::from_static(b"\x01{\"version\":2}")), Err(ProtocolError::Hello(_))));
        assert!(matches!(
            ClientFrame::decode(Bytes::from_static(b"\x01{\"request\":{\"mode\":\"release\"}}")),
            Err(ProtocolError::Hello(_))
        ));
        assert!(matches!(AgentFrame::decode(Bytes::from_static(&[0x83, 1])), Err(ProtocolError::Malformed { .. })));
    }

    #[test]
    fn a_frame_longer_than_the_bound_is_refused_before_it_is_buffered() {
        let mut codec = AgentCodec::default();
        let mut buf = BytesMut::new();
        buf.put_u32((MAX_FRAME + 1) as u32);
        buf.put_u8(kind::INPUT);
        assert!(codec.decode(&mut buf).is_err());
    }

    /// A hello as JSON text, in a frame body.
    fn hello_frame(json: &str) -> Bytes {
        Bytes::from([&[kind::HELLO][..], json.as_bytes()].concat())
    }

    #[test]
    fn unknown_hello_fields_of_this_version_are_refused() {
        let extra_field = format!(r#"{{"version":{VERSION},"request":{{"mode":"release"}},"extra":1}}"#);
        let extra_request_field =
            format!(r#"{{"version":{VERSION},"request":{{"mode":"attach","rows":24,"cols":80,"term":null,"force":true}}}}"#);
        for json in [extra_field, extra_request_field] {
            assert!(matches!(ClientFrame::decode(hello_frame(&json)), Err(ProtocolError::Hello(_))), "{json}");
        }
    }

    #[test]
    fn a_newer_client_with_fields_we_do_not_know_is_told_its_version() {
        let newer = VERSION + 1;
        let unknown_field = format!(r#"{{"version":{newer},"request":{{"mode":"release"}},"session":"abc"}}"#);
        let unknown_mode = format!(r#"{{"version":{newer},"request":{{"mode":"resize","rows":1}}}}"#);
        for json in [unknown_field, unknown_mode] {
            match ClientFrame::decode(hello_frame(&json)) {
                Err(err @ ProtocolError::Version(v)) if v == newer => {
                    assert_eq!(err.to_string(), format!("the client speaks protocol {newer}, this agent {VERSION}"))
                }
                other => panic!("{json}: {other:?}"),
            }
        }
    }
}
