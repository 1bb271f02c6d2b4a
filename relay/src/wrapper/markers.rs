//! Finds pointer lines, the derivations whose builder failed
//! ([`Failures`]) and the derivations built, and where ([`Builds`]), in
//! nix's output as a terminal would show it.
//!
//! The stream is parsed with `vte`, so escape sequences (colours, the
//! progress bar's redraws) are not text, a marker split across reads is
//! still whole, and a carriage return starts the line over. Only printed
//! characters make up a line, so no escape sequence can hide or fake one.

use super::builds::Builds;
use super::failures::Failures;
use crate::pointer::Pointer;
use std::collections::HashSet;
use std::path::PathBuf;

/// Longer lines are cut; a pointer is far shorter.
const MAX_LINE: usize = 16 * 1024;

/// Reads pointers out of a byte stream.
#[derive(Default)]
pub struct Markers {
    parser: vte::Parser,
    lines: Lines,
    seen: HashSet<String>,
}

#[derive(Default)]
struct Lines {
    current: String,
    /// A carriage return came: the next character starts the line over.
    returned: bool,
    found: Vec<Pointer>,
    failures: Failures,
    builds: Builds,
}

impl vte::Perform for Lines {
    fn print(&mut self, c: char) {
        if std::mem::take(&mut self.returned) {
            self.current.clear();
        }
        if self.current.len() < MAX_LINE {
            self.current.push(c);
        }
    }

    fn execute(&mut self, byte: u8) {
        match byte {
            b'\n' => {
                self.found.extend(Pointer::parse(&self.current));
                self.failures.line(&self.current);
                self.builds.line(&self.current);
                self.current.clear();
                self.returned = false;
            }
            b'\r' => self.returned = true,
            _ => {}
        }
    }
}

impl Markers {
    /// Feeds output; returns the pointers to builds not seen before.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Pointer> {
        self.parser.advance(&mut self.lines, bytes);
        let found = std::mem::take(&mut self.lines.found);
        found.into_iter().filter(|pointer| self.seen.insert(pointer.id.clone())).collect()
    }

    /// The remote builder that the build which paused at `pointer` runs
    /// on, if Nix sent it to one.
    pub fn builder_of(&self, pointer: &Pointer) -> Option<&str> {
        self.lines.builds.builder_of(pointer.drv_name())
    }

    /// The derivation whose build paused at `pointer`, where its name
    /// tells it.
    pub fn derivation_of(&self, pointer: &Pointer) -> Option<&str> {
        self.lines.builds.derivation_of(pointer.drv_name())
    }

    /// The derivations whose builder failed, so far.
    pub fn failed(&self) -> &[PathBuf] {
        &self.lines.failures.failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = "nix-attach: hello-2.12 failed in buildPhase (exit 2): make -j2 — on host localhost, attach with \
                        `sudo nix-attach attach 4f2a9c0e11d3`; it waits until 2026-11-25T22:30:00Z (1800 s without a \
                        session), then fails as usual";

    fn ids(markers: &mut Markers, bytes: &[u8]) -> Vec<String> {
        markers.feed(bytes).into_iter().map(|pointer| pointer.id).collect()
    }

    #[test]
    fn a_pointer_line_is_found_once() {
        let mut markers = Markers::default();
        let text = format!("building…\r\n{LINE}\r\n{LINE}\n");
        assert_eq!(ids(&mut markers, text.as_bytes()), vec!["4f2a9c0e11d3"]);
    }

    #[test]
    fn a_pointer_split_across_reads_is_found() {
        let mut markers = Markers::default();
        let text = format!("{LINE}\r\n");
        let mut found = Vec::new();
        for byte in text.as_bytes().chunks(1) {
            found.extend(ids(&mut markers, byte));
        }
        assert_eq!(found, vec!["4f2a9c0e11d3"]);
    }

    #[test]
    fn a_pointer_in_colours_and_after_a_progress_bar_redraw_is_found() {
        let mut markers = Markers::default();
        let (head, tail) = LINE.split_at(30);
        let text = format!("[1/2 built] building hello\r\x1b[K\x1b[31;1m{head}\x1b[0m{tail}\x1b[0m\r\n");
        assert_eq!(ids(&mut markers, text.as_bytes()), vec!["4f2a9c0e11d3"]);
    }

    #[test]
    fn escape_sequences_cannot_fake_a_pointer() {
        let mut markers = Markers::default();
        // The pointer's text hidden in a window title is not printed text.
        let title = format!("\x1b]0;{LINE}\x07\r\n");
        assert!(ids(&mut markers, title.as_bytes()).is_empty());
        // Text erased by a carriage return does not join the next line.
        let split = format!("{}\r{}\n", &LINE[..40], &LINE[40..]);
        assert!(ids(&mut markers, split.as_bytes()).is_empty());
    }
}
