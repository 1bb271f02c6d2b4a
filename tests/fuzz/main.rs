//! Bounded fuzzing of everything that parses what a build or a peer sent:
//! the frame decoders of both sides, the metadata parser, the pointer
//! finder, the broker's request decoder (what any local user may send to a
//! root service), the derivation reader (the daemon's pre-build hook
//! reads, as root, derivations anyone may write), and the capture archive
//! checker (what a build's agent sends `nix-attach capture`). Each runs first over the checked-in corpus (tests/fuzz/corpus),
//! then over proptest's random inputs and mutations of the corpus. A run is
//! bounded by its case count (`PROPTEST_CASES`, 512 by default).

use bytes::BytesMut;
use nix_attach::host::capture::check_archive;
use nix_attach::metadata::Metadata;
use nix_attach::protocol::{AgentCodec, ClientCodec, MAX_FRAME};
use nix_attach::wrapper::markers::Markers;
use proptest::prelude::*;
use std::path::Path;
use tokio_util::codec::Decoder;

fn corpus(kind: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fuzz/corpus").join(kind);
    let mut entries: Vec<_> = std::fs::read_dir(&dir).expect("the corpus exists").flatten().map(|e| e.path()).collect();
    entries.sort();
    assert!(entries.len() >= 5, "a thin corpus in {dir:?}");
    entries.iter().map(|path| std::fs::read(path).unwrap()).collect()
}

/// Feeds `bytes` to a decoder in pieces of `step` bytes, as a socket would
/// deliver them, until it errs or runs dry. The decoder's buffer must never
/// hold much more than one bounded frame.
fn decode<D: Decoder>(mut codec: D, bytes: &[u8], step: usize) -> usize {
    let mut buffer = BytesMut::new();
    let mut frames = 0;
    for piece in bytes.chunks(step.max(1)) {
        buffer.extend_from_slice(piece);
        loop {
            match codec.decode(&mut buffer) {
                Ok(Some(_)) => frames += 1,
                Ok(None) => break,
                Err(_) => return frames,
            }
        }
        assert!(buffer.len() <= MAX_FRAME + 4 + step, "the decoder kept {} bytes", buffer.len());
    }
    frames
}

fn decode_both(bytes: &[u8], step: usize) {
    decode(AgentCodec::default(), bytes, step);
    decode(ClientCodec::default(), bytes, step);
}

fn check_metadata(bytes: &[u8]) {
    if let Ok(meta) = Metadata::parse(bytes) {
        let again = Metadata::parse(&serde_json::to_vec(&meta).unwrap()).expect("accepted metadata round-trips");
        assert_eq!(again, meta);
    }
}

/// The broker reads one frame of at most MAX_REQUEST bytes and decodes it;
/// whatever came, a request it accepts re-encodes to the same request.
fn check_broker_request(bytes: &[u8]) {
    use nix_attach::broker::wire;
    let framed = [&(bytes.len() as u32).to_be_bytes()[..], bytes].concat();
    let Ok(body) = wire::read_frame(&mut &framed[..], wire::MAX_REQUEST) else { return };
    if let Ok(request) = wire::decode_request(&body) {
        let again = wire::decode_request(&wire::encode_request(&request)[4..]).expect("accepted requests round-trip");
        assert_eq!(again, request);
    }
}

fn check_pointers(bytes: &[u8], step: usize) {
    let mut markers = Markers::default();
    for piece in bytes.chunks(step.max(1)) {
        for pointer in markers.feed(piece) {
            assert!(nix_attach::metadata::is_id(&pointer.id));
            assert!(!pointer.summary.chars().any(nix_attach::sanitize::is_unsafe), "{:?}", pointer.summary);
        }
    }
}

/// A corpus entry with some bytes changed, some cut off, some added.
fn mutated(kind: &'static str) -> impl Strategy<Value = Vec<u8>> {
    let entries = corpus(kind);
    (
        0..entries.len(),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        any::<prop::sample::Index>(),
        prop::collection::vec(any::<u8>(), 0..16),
    )
        .prop_map(move |(pick, flips, cut, tail)| {
            let mut bytes = entries[pick].clone();
            if !bytes.is_empty() {
                for (at, value) in flips {
                    let at = at.index(bytes.len());
                    bytes[at] = value;
                }
                bytes.truncate(cut.index(bytes.len() + 1).max(1));
            }
            bytes.extend(tail);
            bytes
        })
}

#[test]
fn the_corpus_parses_without_panicking() {
    for bytes in corpus("frames") {
        for step in [1, 3, 4096] {
            decode_both(&bytes, step);
        }
    }
    assert_eq!(decode(AgentCodec::default(), &corpus_entry("frames", "hello-attach"), 1), 1);
    for bytes in corpus("metadata") {
        check_metadata(&bytes);
    }
    assert!(Metadata::parse(&corpus_entry("metadata", "valid")).is_ok());
    for bytes in corpus("pointer") {
        check_pointers(&bytes, 7);
    }
    for bytes in corpus("derivation") {
        let _ = nix_attach::derivation::Derivation::parse(&bytes);
    }
    assert!(nix_attach::derivation::Derivation::parse(&corpus_entry("derivation", "busybox")).is_ok());
    for bytes in corpus("broker") {
        check_broker_request(&bytes);
    }
    assert!(nix_attach::broker::wire::decode_request(&corpus_entry("broker", "open-id")).is_ok());
    for name in ["escape", "fifo", "cut", "no-manifest"] {
        assert!(check_archive(&corpus_entry("capture", name)[..]).is_err(), "{name} was accepted");
    }
    for name in ["valid", "long-name"] {
        assert!(check_archive(&corpus_entry("capture", name)[..]).is_ok(), "{name} was refused");
    }
}

fn corpus_entry(kind: &str, name: &str) -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fuzz/corpus").join(kind).join(name)).unwrap()
}

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|cases| cases.parse().ok()).unwrap_or(512);
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn frame_decoders_take_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..4096), step in 1usize..64) {
        decode_both(&bytes, step);
    }

    #[test]
    fn frame_decoders_take_mutated_frames(bytes in mutated("frames"), step in 1usize..64) {
        decode_both(&bytes, step);
    }

    #[test]
    fn the_metadata_parser_takes_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        check_metadata(&bytes);
    }

    #[test]
    fn the_metadata_parser_takes_mutated_metadata(bytes in mutated("metadata")) {
        check_metadata(&bytes);
    }

    #[test]
    fn the_derivation_reader_takes_mutated_derivations(bytes in mutated("derivation")) {
        let _ = nix_attach::derivation::Derivation::parse(&bytes);
    }

    #[test]
    fn the_broker_takes_any_request(bytes in prop::collection::vec(any::<u8>(), 0..8192)) {
        check_broker_request(&bytes);
    }

    #[test]
    fn the_broker_takes_mutated_requests(bytes in mutated("broker")) {
        check_broker_request(&bytes);
    }

    #[test]
    fn the_capture_checker_takes_mutated_archives(bytes in mutated("capture")) {
        let _ = check_archive(&bytes[..]);
    }

    #[test]
    fn the_pointer_finder_takes_mutated_output(bytes in mutated("pointer"), step in 1usize..64) {
        check_pointers(&bytes, step);
    }
}
