//! Keeps out of the user's terminal what a build prints to reach past the
//! screen: setting or reading the clipboard (OSC 52), and queries that make
//! the terminal type an answer back as if the user had (device status and
//! attributes, colours, settings, capabilities, window reports, ENQ). Such
//! an answer lands in the session, or, once it is over, in the user's own
//! shell. Everything else passes byte for byte, in order.
//!
//! The filter reads escape sequences as ECMA-48 frames them and holds back
//! only an unfinished one, up to a bound; output split anywhere is filtered
//! as if it came at once. What it passes leaves the terminal where plain
//! output would (no ESC, no control sequence, no C1 control is left open),
//! or inside a DCS string whose kind is already judged harmless (a sixel
//! image): so two filtered streams on one terminal, a build's stdout and
//! stderr, cannot join into a sequence. OSC strings pass only where their number is
//! known to be harmless (titles, links, colours set, prompt marks); APC, PM
//! and SOS strings never. `--allow-clipboard-and-queries` turns it off.

/// ESC.
const ESC: u8 = 0x1b;
/// BEL, which also ends an OSC.
const BEL: u8 = 0x07;
/// ENQ: the terminal answers with its answerback message.
const ENQ: u8 = 0x05;
/// CAN and SUB: abort a sequence, as terminals read them.
const CAN: u8 = 0x18;
const SUB: u8 = 0x1a;
/// The most of a control sequence (CSI), or of an escape sequence's
/// intermediates, held back: a longer one is dropped.
const MAX_CONTROL: usize = 256;
/// DEL, which terminals ignore inside a sequence.
const DEL: u8 = 0x7f;
/// The UTF-8 lead byte of U+0080–U+00BF: followed by 0x80–0x9F, a C1
/// control that xterm and VTE act on as its ESC form.
const C1_LEAD: u8 = 0xc2;
/// The most of an OSC or DCS string held back; a longer string that is not
/// yet known to be harmless is dropped whole.
const MAX_STRING: usize = 4096;

/// Where the filter is in the build's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Plain output.
    Ground,
    /// After ESC (and any intermediates, held).
    Escape,
    /// After the UTF-8 lead byte [`C1_LEAD`], held.
    Lead,
    /// In a control sequence (`ESC [`), held back.
    Control,
    /// In an OSC or DCS string, held back until it is known.
    Held(Kind),
    /// In an OSC or DCS string known to be harmless, passed on.
    Passing(Kind),
    /// In an OSC or DCS string that is dropped.
    Dropping(Kind),
}

/// The strings the filter reads: operating system commands, device
/// control strings, and the private ones (APC, PM, SOS: kitty's graphics
/// answer through them), always dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Osc,
    Dcs,
    Private,
}

/// A filter over one stream of a build's output.
#[derive(Debug)]
pub struct TerminalFilter {
    state: State,
    /// ESC seen inside a string: the string's end (`ESC \`) or its abort.
    string_escape: bool,
    /// [`C1_LEAD`] seen inside a string: a C1 control (which ends the
    /// string, and which VTE acts on there too), or text.
    string_lead: bool,
    /// What is held back: the sequence read so far, ESC included.
    held: Vec<u8>,
}

impl Default for TerminalFilter {
    fn default() -> Self {
        TerminalFilter { state: State::Ground, string_escape: false, string_lead: false, held: Vec::new() }
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
            if self.state == State::Ground && byte != ESC && byte != ENQ && byte != C1_LEAD {
                // Plain output passes in runs, up to the next byte the
                // filter reads: most output is one run.
                let run = memchr::memchr3(ESC, ENQ, C1_LEAD, rest).unwrap_or(rest.len());
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
                C1_LEAD => self.hold(State::Lead, byte),
                ENQ => {}
                _ => shown.push(byte),
            },
            State::Lead => {
                // U+0080–U+009F: a C1 control (CSI, OSC, DCS, APC…),
                // dropped; the rest of its sequence shows as text.
                if (0x80..=0x9f).contains(&byte) {
                    self.drop_held();
                } else {
                    self.release(shown);
                    self.step(byte, shown);
                }
            }
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
        let intermediates = self.held.len() > 1;
        match byte {
            b'[' if !intermediates => self.hold(State::Control, byte),
            b']' if !intermediates => self.hold(State::Held(Kind::Osc), byte),
            b'P' if !intermediates => self.hold(State::Held(Kind::Dcs), byte),
            b'X' | b'^' | b'_' if !intermediates => {
                self.held.clear();
                self.state = State::Dropping(Kind::Private);
            }
            // DECID: the terminal answers with its attributes.
            b'Z' if !intermediates => self.drop_held(),
            0x20..=0x2f if self.held.len() < MAX_CONTROL => self.held.push(byte),
            0x20..=0x2f => self.drop_held(),
            0x30..=0x7e => {
                self.held.push(byte);
                self.release(shown);
            }
            _ => self.aside(byte, shown),
        }
    }

    /// A byte that comes inside an escape or control sequence without
    /// being part of it: C0 controls the terminal carries out in passing,
    /// and so they pass now, ahead of what is held (ENQ never); DEL and
    /// bytes past ASCII, which terminals skip there, are dropped; ESC
    /// starts the sequence anew, and CAN and SUB abort it, and the terminal
    /// acts on none of what was held, which is dropped.
    fn aside(&mut self, byte: u8, shown: &mut Vec<u8>) {
        match byte {
            ESC => {
                self.held.clear();
                self.hold(State::Escape, byte);
            }
            CAN | SUB => self.drop_held(),
            ENQ | DEL | 0x80.. => {}
            _ => shown.push(byte),
        }
    }

    fn in_control(&mut self, byte: u8, shown: &mut Vec<u8>) {
        match byte {
            0x40..=0x7e => {
                self.held.push(byte);
                if asks_the_terminal(&self.held[2..]) {
                    self.drop_held();
                } else {
                    self.release(shown);
                }
            }
            // Parameters and intermediates.
            0x20..=0x3f if self.held.len() < MAX_CONTROL => self.held.push(byte),
            // Too long to be one a terminal would take whole.
            0x20..=0x3f => self.drop_held(),
            _ => self.aside(byte, shown),
        }
    }

    fn in_string(&mut self, kind: Kind, byte: u8, shown: &mut Vec<u8>) {
        if std::mem::take(&mut self.string_escape) {
            if byte == b'\\' {
                return self.end_string(kind, &[ESC, byte], shown);
            }
            // ESC and anything else aborts the string, and starts a
            // sequence. What of it passes is ended (ST), so that the
            // terminal is back where plain output leaves it.
            self.end_string(kind, &[ESC, b'\\'], shown);
            self.hold(State::Escape, ESC);
            return self.after_escape(byte, shown);
        }
        if std::mem::take(&mut self.string_lead) {
            if (0x80..=0x9f).contains(&byte) {
                // The string ends there, as at ESC; the C1 control is
                // dropped, as in plain output, and what follows it is text.
                return self.end_string(kind, &[ESC, b'\\'], shown);
            }
            self.string_content(kind, C1_LEAD, shown);
        }
        if byte == ESC {
            self.string_escape = true;
            return;
        }
        if byte == C1_LEAD {
            self.string_lead = true;
            return;
        }
        if byte == BEL && kind == Kind::Osc {
            return self.end_string(kind, &[byte], shown);
        }
        if byte == CAN || byte == SUB {
            // Aborted: the terminal acts on none of it.
            return self.end_string(kind, &[byte], shown);
        }
        self.string_content(kind, byte, shown);
    }

    /// A byte of a string's text: passed, dropped or held, as the string is.
    fn string_content(&mut self, kind: Kind, byte: u8, shown: &mut Vec<u8>) {
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
            State::Held(_) if kind != Kind::Osc || is_a_harmless_osc(&visible(&self.held[2..])) => {
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
    let (private, intermediate) = (rest.first().copied(), rest.last().copied());
    match last {
        // Device status reports, cursor position, device attributes.
        b'n' | b'c' => true,
        // Window operations, apart from saving and restoring the title.
        b't' => !matches!(first_parameter, b"22" | b"23"),
        // DECRQM (`CSI ? Ps $ p`): report a mode.
        b'p' => intermediate == Some(b'$'),
        // XTVERSION (`CSI > q`).
        b'q' => private == Some(b'>'),
        // kitty's keyboard query (`CSI ? u`), DECRQTSR and DECRQUPSS
        // (`CSI Ps $ u`, `CSI & u`).
        b'u' => private == Some(b'?') || matches!(intermediate, Some(b'$' | b'&')),
        // DECREQTPARM (`CSI Ps x`), not DECSACE (`CSI Ps * x`).
        b'x' => intermediate != Some(b'*'),
        // DECRQCRA (`CSI … * y`): a checksum of the screen.
        b'y' => intermediate == Some(b'*'),
        // XTQMODKEYS (`CSI ? Pp m`), XTSMGRAPHICS (`CSI ? … S`).
        b'm' | b'S' => private == Some(b'?'),
        // DECRQPSR (`CSI Ps $ w`), XTREPORTSGR (`CSI … # |`).
        b'w' => intermediate == Some(b'$'),
        b'|' => intermediate == Some(b'#'),
        _ => false,
    }
}

/// Whether a DCS introducer (parameters, intermediates, final byte) is a
/// request for the terminal's settings or capabilities (DECRQSS `$q`,
/// XTGETTCAP `+q`).
fn is_a_dcs_query(introducer: &[u8]) -> bool {
    introducer.ends_with(b"$q") || introducer.ends_with(b"+q")
}

/// The OSCs that pass: window and icon titles (0, 1, 2), the working
/// directory (7), links (8), notifications (9, 777), colours set and reset
/// (4, 10–19, 104, 110–119) and prompt marks (133, 633). Any other is
/// dropped: the clipboard (52, kitty's 5522), iTerm2's 1337, fonts (50).
const HARMLESS_OSCS: [&[u8]; 31] = [
    b"0", b"1", b"2", b"4", b"7", b"8", b"9", b"10", b"11", b"12", b"13", b"14", b"15", b"16", b"17", b"18", b"19", b"104", b"110", b"111",
    b"112", b"113", b"114", b"115", b"116", b"117", b"118", b"119", b"133", b"633", b"777",
];

/// Whether an OSC (its text, without ESC ] and terminator) is one of
/// [`HARMLESS_OSCS`] and asks for no value (no field `?`: a colour).
fn is_a_harmless_osc(text: &[u8]) -> bool {
    let number = text.split(|&byte| byte == b';').next().unwrap_or_default();
    let asks = text.split(|&byte| byte == b';').any(|field| field == b"?");
    HARMLESS_OSCS.contains(&number) && !asks
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
            "héllo © \x1b[1;31mred\x1b[0m \x1b]0;title\x07 \x1b]8;;https://example.org\x1b\\link\x1b]8;;\x1b\\ \x1b[22;0t\x1b(B\x1b7\r\n"
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
        let queries: [&[u8]; 19] = [
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
            // Clipboards and queries of other terminals.
            b"\x1b]5522;type=read\x07",
            b"\x1b]1337;Copy=:aGk=\x07",
            b"\x1b[x",
            b"\x1b[1;1;1;1;1;1*y",
            b"\x1b[?1;1S",
            b"\x1b[?4m",
            b"\x1b_Gi=1,a=q;\x1b\\",
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
        // The newline is carried out in passing, and so passes.
        assert_eq!(filtered(b"a\x1b[\n6nb"), b"a\nb");
        assert_eq!(filtered(b"a\x1b]5\x012;c;aGk=\x07b"), b"ab");
        assert_eq!(filtered(b"a\x1bP$\x01q m\x1b\\b"), b"ab");
    }

    #[test]
    fn a_sequence_cut_short_by_another_escape_is_judged_as_ended() {
        assert_eq!(filtered(b"\x1b]52;c;aGk=\x1b[31mred"), b"\x1b[31mred");
        assert_eq!(filtered(b"\x1b]0;t\x1b[6nx"), b"\x1b]0;t\x1b\\x");
    }

    #[test]
    fn a_long_string_is_passed_when_harmless_by_its_start_and_dropped_when_not_yet_known() {
        let sixel = [&b"\x1bPq"[..], &vec![b'#'; 10_000], b"\x1b\\done"].concat();
        assert_eq!(filtered_bytewise(&sixel), sixel);
        let padded_query = [&b"\x1b]4;1;"[..], &vec![b'x'; 10_000], b";?\x07done"].concat();
        assert_eq!(filtered(&padded_query), b"done");
    }

    #[test]
    fn a_control_inside_a_sequence_passes_ahead_of_it_and_an_escape_with_nothing_after_it_never_passes() {
        assert_eq!(filtered(b"\x1b[12\nmx"), b"\n\x1b[12mx");
        assert_eq!(filtered(b"\x1b\x1b[1mx"), b"\x1b[1mx");
        assert_eq!(filtered(b"\x1b(\rB"), b"\r\x1b(B");
    }

    /// What `output` makes a terminal answer or hand over: anything that
    /// starts an OSC, DCS, CSI or private string once filtered, read as a
    /// terminal reads it (vte), C1 controls in UTF-8 included.
    fn reaches_past_the_screen(shown: &[u8]) -> bool {
        struct Seen(bool);
        impl vte::Perform for Seen {
            fn osc_dispatch(&mut self, params: &[&[u8]], _: bool) {
                self.0 |= !is_a_harmless_osc(&params.join(&b';'));
            }
            fn csi_dispatch(&mut self, params: &vte::Params, intermediates: &[u8], _: bool, action: char) {
                let numbers: Vec<String> =
                    params.iter().map(|param| param.iter().map(u16::to_string).collect::<Vec<_>>().join(":")).collect();
                let (private, rest): (Vec<u8>, Vec<u8>) = intermediates.iter().partition(|byte| (0x3c..=0x3f).contains(*byte));
                let sequence = [&private[..], numbers.join(";").as_bytes(), &rest[..], &[action as u8]].concat();
                self.0 |= asks_the_terminal(&sequence);
            }
            fn hook(&mut self, _: &vte::Params, intermediates: &[u8], _: bool, action: char) {
                self.0 |= action == 'q' && matches!(intermediates, [b'$'] | [b'+']);
            }
        }
        let (mut parser, mut seen) = (vte::Parser::new(), Seen(false));
        parser.advance(&mut seen, shown);
        seen.0 || shown.windows(2).any(|pair| pair[0] == C1_LEAD && (0x80..=0x9f).contains(&pair[1])) || shown.contains(&ENQ)
    }

    #[test]
    fn no_way_around_the_filter_that_terminals_take_gets_a_sequence_through() {
        let attempts: [&[u8]; 10] = [
            // ESC, then controls and DEL the terminal skips, then `]`.
            b"\x1b\x01]52;c;aGk=\x07",
            b"\x1b\x7f]52;c;aGk=\x07",
            b"\x1b\x05\x05]52;c;aGk=\x07",
            // A byte past ASCII inside a control sequence.
            b"\x1b[\xc3\xa96n",
            // C1 controls written as UTF-8: OSC, CSI, DCS.
            "\u{9d}52;c;aGk=\x07".as_bytes(),
            "\u{9b}6n".as_bytes(),
            "\u{90}$qm\x1b\\".as_bytes(),
            // C1 controls inside strings that pass: VTE acts on them there.
            "\x1b]0;t\u{9b}6n\x07".as_bytes(),
            "\x1bPq#0\u{9b}6n\x1b\\".as_bytes(),
            "\x1b]8;;http://x\u{9d}52;c;aGk=\x07".as_bytes(),
        ];
        for attempt in attempts {
            let output = [b"before ", attempt, b" after"].concat();
            for shown in [filtered(&output), filtered_bytewise(&output)] {
                assert!(!reaches_past_the_screen(&shown), "{attempt:?} gave {shown:?}");
                assert!(shown.starts_with(b"before ") && shown.ends_with(b" after"), "{attempt:?} gave {shown:?}");
            }
        }
    }

    #[test]
    fn two_streams_filtered_apart_on_one_terminal_never_join_into_a_sequence() {
        let (mut stderr, mut stdout, mut terminal) = (TerminalFilter::default(), TerminalFilter::default(), Vec::new());
        stderr.feed(b"\x1b\x1b", &mut terminal);
        stdout.feed(b"]52;c;aGk=\x07", &mut terminal);
        stderr.feed(b"\x1b[", &mut terminal);
        stdout.feed(b"6n", &mut terminal);
        assert!(!terminal.contains(&ESC), "{terminal:?}");
    }
}
