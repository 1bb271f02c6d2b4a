//! Keeps out of the user's terminal what a build prints to reach past the
//! screen: setting or reading the clipboard (OSC 52), and queries that make
//! the terminal type an answer back as if the user had (device status and
//! attributes, colours, settings, capabilities, window reports, ENQ). Such
//! an answer lands in the session, or, once it is over, in the user's own
//! shell. Everything else passes byte for byte, in order.
//!
//! The filter reads escape sequences as ECMA-48 frames them and holds back
//! only an unfinished one, up to a bound; output split anywhere is filtered
//! as if it came at once. `--allow-clipboard-and-queries` turns it off.

/// ESC.
const ESC: u8 = 0x1b;
/// BEL, which also ends an OSC.
const BEL: u8 = 0x07;
/// ENQ: the terminal answers with its answerback message.
const ENQ: u8 = 0x05;
/// CAN and SUB: abort a sequence, as terminals read them.
const CAN: u8 = 0x18;
const SUB: u8 = 0x1a;
/// The most of a control sequence (CSI) held back before it passes as is.
const MAX_CONTROL: usize = 256;
/// The most of an OSC or DCS string held back; a longer string that is not
/// yet known to be harmless is dropped whole.
const MAX_STRING: usize = 4096;

/// Where the filter is in the build's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Plain output.
    Ground,
    /// After ESC.
    Escape,
    /// In a control sequence (`ESC [`), held back.
    Control,
    /// In an OSC or DCS string, held back until it is known.
    Held(Kind),
    /// In an OSC or DCS string known to be harmless, passed on.
    Passing(Kind),
    /// In an OSC or DCS string that is dropped.
    Dropping(Kind),
}

/// The strings the filter reads: operating system commands and device
/// control strings. (APC, PM and SOS pass as text would.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Osc,
    Dcs,
}

/// A filter over one stream of a build's output.
#[derive(Debug)]
pub struct TerminalFilter {
    state: State,
    /// ESC seen inside a string: the string's end (`ESC \`) or its abort.
    string_escape: bool,
    /// What is held back: the sequence read so far, ESC included.
    held: Vec<u8>,
}

impl Default for TerminalFilter {
    fn default() -> Self {
        TerminalFilter { state: State::Ground, string_escape: false, held: Vec::new() }
    }
}

/// Appends `output` to `shown`, through `filter` where there is one
/// (`--allow-clipboard-and-queries` gives none).
pub fn pass(filter: Option<&mut TerminalFilter>, output: &[u8], shown: &mut Vec<u8>) {
    match filter {
        Some(filter) => filter.feed(output, shown),
        None => shown.extend_from_slice(output),
    }
}

impl TerminalFilter {
    /// Filters the next piece of output, appending what may be shown to
    /// `shown`.
    pub fn feed(&mut self, output: &[u8], shown: &mut Vec<u8>) {
        let mut rest = output;
        while let Some((&byte, after)) = rest.split_first() {
            if self.state == State::Ground && byte != ESC && byte != ENQ {
                // Plain output passes in runs, up to the next byte the
                // filter reads: most output is one run.
                let run = memchr::memchr2(ESC, ENQ, rest).unwrap_or(rest.len());
                shown.extend_from_slice(&rest[..run]);
                rest = &rest[run..];
            } else {
                self.step(byte, shown);
                rest = after;
            }
        }
    }

    fn step(&mut self, byte: u8, shown: &mut Vec<u8>) {
        match self.state {
            State::Ground => match byte {
                ESC => self.hold(State::Escape, byte),
                ENQ => {}
                _ => shown.push(byte),
            },
            State::Escape => self.after_escape(byte, shown),
            State::Control => self.in_control(byte, shown),
            State::Held(kind) | State::Passing(kind) | State::Dropping(kind) => self.in_string(kind, byte, shown),
        }
    }

    fn hold(&mut self, state: State, byte: u8) {
        self.state = state;
        self.held.push(byte);
    }

    /// Passes what is held and goes back to plain output.
    fn release(&mut self, shown: &mut Vec<u8>) {
        shown.append(&mut self.held);
        self.state = State::Ground;
    }

    /// Drops what is held and goes back to plain output.
    fn drop_held(&mut self) {
        self.held.clear();
        self.state = State::Ground;
    }

    fn after_escape(&mut self, byte: u8, shown: &mut Vec<u8>) {
        match byte {
            b'[' => self.hold(State::Control, byte),
            b']' => self.hold(State::Held(Kind::Osc), byte),
            b'P' => self.hold(State::Held(Kind::Dcs), byte),
            // DECID: the terminal answers with its attributes.
            b'Z' => self.drop_held(),
            ESC => {
                self.release(shown);
                self.hold(State::Escape, byte);
            }
            _ => {
                self.held.push(byte);
                self.release(shown);
            }
        }
    }

    fn in_control(&mut self, byte: u8, shown: &mut Vec<u8>) {
        match byte {
            ESC => {
                // Aborted: the terminal acts on none of it.
                self.release(shown);
                self.hold(State::Escape, byte);
            }
            CAN | SUB | 0x80.. => {
                self.held.push(byte);
                self.release(shown);
            }
            0x40..=0x7e => {
                self.held.push(byte);
                if asks_the_terminal(&visible(&self.held[2..])) {
                    self.drop_held();
                } else {
                    self.release(shown);
                }
            }
            // Parameters and intermediates; other controls are carried out
            // by the terminal in passing, and the sequence goes on.
            _ if self.held.len() < MAX_CONTROL => self.held.push(byte),
            // Too long to be one a terminal would take whole.
            _ => self.drop_held(),
        }
    }

    fn in_string(&mut self, kind: Kind, byte: u8, shown: &mut Vec<u8>) {
        if std::mem::take(&mut self.string_escape) {
            if byte == b'\\' {
                return self.end_string(kind, &[ESC, byte], shown);
            }
            // ESC and anything else aborts the string, and starts a sequence.
            self.end_string(kind, &[], shown);
            self.hold(State::Escape, ESC);
            return self.after_escape(byte, shown);
        }
        if byte == ESC {
            self.string_escape = true;
            return;
        }
        if byte == BEL && kind == Kind::Osc {
            return self.end_string(kind, &[byte], shown);
        }
        if byte == CAN || byte == SUB {
            // Aborted: the terminal acts on none of it.
            return self.end_string(kind, &[byte], shown);
        }
        match self.state {
            State::Passing(_) => shown.push(byte),
            State::Dropping(_) => {}
            _ => {
                self.held.push(byte);
                self.judge_early(kind, shown);
            }
        }
    }

    /// Decides a held string before its end where its start tells: a DCS
    /// by its introducer, anything over the bound by being too long.
    fn judge_early(&mut self, kind: Kind, shown: &mut Vec<u8>) {
        let body = visible(&self.held[2..]);
        if kind == Kind::Dcs {
            if let Some(end) = body.iter().position(|byte| (0x40..=0x7e).contains(byte)) {
                if is_a_dcs_query(&body[..=end]) {
                    self.held.clear();
                    self.state = State::Dropping(kind);
                } else {
                    shown.append(&mut self.held);
                    self.state = State::Passing(kind);
                }
                return;
            }
        }
        if self.held.len() > MAX_STRING {
            self.held.clear();
            self.state = State::Dropping(kind);
        }
    }

    /// A string ended with `terminator` (empty when aborted).
    fn end_string(&mut self, kind: Kind, terminator: &[u8], shown: &mut Vec<u8>) {
        match self.state {
            State::Passing(_) => shown.extend_from_slice(terminator),
            State::Held(_) if !(kind == Kind::Osc && is_an_osc_to_drop(&visible(&self.held[2..]))) => {
                self.held.extend_from_slice(terminator);
                shown.append(&mut self.held);
            }
            _ => {}
        }
        self.drop_held();
    }
}

/// A sequence's bytes as the terminal reads them: without the controls it
/// carries out in passing.
fn visible(bytes: &[u8]) -> Vec<u8> {
    bytes.iter().copied().filter(|byte| *byte >= 0x20 && *byte != 0x7f).collect()
}

/// Whether a control sequence (what follows `ESC [`, its final byte last)
/// makes the terminal answer or act on its window.
fn asks_the_terminal(sequence: &[u8]) -> bool {
    let Some((&last, rest)) = sequence.split_last() else { return false };
    let first_parameter = rest.split(|&byte| byte == b';').next().unwrap_or_default();
    match last {
        // Device status reports, cursor position, device attributes.
        b'n' | b'c' => true,
        // Window operations, apart from saving and restoring the title.
        b't' => !matches!(first_parameter, b"22" | b"23"),
        // DECRQM (`CSI ? Ps $ p`): report a mode.
        b'p' => rest.last() == Some(&b'$'),
        // XTVERSION (`CSI > q`), kitty's keyboard query (`CSI ? u`).
        b'q' => rest.first() == Some(&b'>'),
        b'u' => rest.first() == Some(&b'?'),
        _ => false,
    }
}

/// Whether a DCS introducer (parameters, intermediates, final byte) is a
/// request for the terminal's settings or capabilities (DECRQSS `$q`,
/// XTGETTCAP `+q`).
fn is_a_dcs_query(introducer: &[u8]) -> bool {
    introducer.ends_with(b"$q") || introducer.ends_with(b"+q")
}

/// Whether an OSC (its text, without ESC ] and terminator) sets or reads
/// the clipboard, or asks for a value (any field `?`: colours, fonts).
fn is_an_osc_to_drop(text: &[u8]) -> bool {
    let mut fields = text.split(|&byte| byte == b';');
    fields.next() == Some(b"52") || text.split(|&byte| byte == b';').any(|field| field == b"?")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filtered(output: &[u8]) -> Vec<u8> {
        let mut shown = Vec::new();
        TerminalFilter::default().feed(output, &mut shown);
        shown
    }

    /// The same output fed one byte at a time.
    fn filtered_bytewise(output: &[u8]) -> Vec<u8> {
        let (mut filter, mut shown) = (TerminalFilter::default(), Vec::new());
        for byte in output {
            filter.feed(std::slice::from_ref(byte), &mut shown);
        }
        shown
    }

    #[test]
    fn text_colours_titles_and_links_pass_byte_for_byte() {
        let output =
            "héllo \x1b[1;31mred\x1b[0m \x1b]0;title\x07 \x1b]8;;https://example.org\x1b\\link\x1b]8;;\x1b\\ \x1b[22;0t\x1b(B\x1b7\r\n"
                .as_bytes();
        assert_eq!(filtered(output), output);
        assert_eq!(filtered_bytewise(output), output);
    }

    #[test]
    fn the_clipboard_is_neither_set_nor_read() {
        for output in [&b"a\x1b]52;c;aGVsbG8=\x07b"[..], b"a\x1b]52;c;?\x1b\\b", b"a\x1b]52;p;aGVsbG8=\x1bb"] {
            let shown = filtered(output);
            assert!(!shown.windows(2).any(|w| w == b"52"), "{shown:?}");
            assert!(shown.starts_with(b"a") && shown.ends_with(b"b"), "{shown:?}");
            assert_eq!(filtered_bytewise(output), shown);
        }
    }

    #[test]
    fn queries_that_the_terminal_answers_are_dropped_and_the_text_around_them_kept() {
        let queries: [&[u8]; 12] = [
            b"\x1b[6n",
            b"\x1b[5n",
            b"\x1b[?6n",
            b"\x1b[c",
            b"\x1b[>c",
            b"\x1b[14t",
            b"\x1b[21t",
            b"\x1b[?1$p",
            b"\x1b[>q",
            b"\x1b]11;?\x07",
            b"\x1b]4;1;?\x1b\\",
            b"\x1bP$qm\x1b\\",
        ];
        for query in queries {
            let output = [b"before ", query, b" after\x05"].concat();
            assert_eq!(filtered(&output), b"before  after", "{query:?}");
            assert_eq!(filtered_bytewise(&output), b"before  after", "{query:?}");
        }
        assert_eq!(filtered(b"\x1bP+q544e\x1b\\\x1bZok"), b"ok");
    }

    #[test]
    fn controls_that_the_terminal_skips_inside_a_sequence_do_not_hide_it() {
        assert_eq!(filtered(b"a\x1b[\n6nb"), b"ab");
        assert_eq!(filtered(b"a\x1b]5\x012;c;aGk=\x07b"), b"ab");
        assert_eq!(filtered(b"a\x1bP$\x01q m\x1b\\b"), b"ab");
    }

    #[test]
    fn a_sequence_cut_short_by_another_escape_is_judged_as_ended() {
        assert_eq!(filtered(b"\x1b]52;c;aGk=\x1b[31mred"), b"\x1b[31mred");
        assert_eq!(filtered(b"\x1b]0;t\x1b[6nx"), b"\x1b]0;tx");
    }

    #[test]
    fn a_long_string_is_passed_when_harmless_by_its_start_and_dropped_when_not_yet_known() {
        let sixel = [&b"\x1bPq"[..], &vec![b'#'; 10_000], b"\x1b\\done"].concat();
        assert_eq!(filtered_bytewise(&sixel), sixel);
        let padded_query = [&b"\x1b]4;1;"[..], &vec![b'x'; 10_000], b";?\x07done"].concat();
        assert_eq!(filtered(&padded_query), b"done");
    }

    #[test]
    fn what_is_not_a_control_sequence_passes_as_printed() {
        assert_eq!(filtered(b"\x1b[12\nx"), b"\x1b[12\nx");
        assert_eq!(filtered(b"\x1b\x1b[1mx"), b"\x1b\x1b[1mx");
    }
}
