//! Makes text that a build wrote safe to show on a terminal.
//!
//! Names, phases, commands and banners come from an untrusted build. Every
//! control character (C0, DEL, C1) and every bidirectional override is
//! replaced by a visible escape, so no escape sequence can reach the
//! terminal and no line can be split or hidden.
//!
//! Uses no other module of the crate.

use std::fmt::Write;

/// Returns `text` with every control or bidi-override character escaped as
/// `\n`, `\t`, `\e` or `\u{…}`.
pub fn sanitize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\x1b' => out.push_str("\\e"),
            '\\' => out.push_str("\\\\"),
            c if is_unsafe(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// Returns `text` with every control or bidi-override character escaped as
/// [`sanitize`] escapes it, backslashes left as they are: for text that
/// may hold parts sanitized already (an error quoting a build's words).
pub fn controls_escaped(text: &str) -> String {
    text.split('\\').map(sanitize).collect::<Vec<_>>().join("\\")
}

/// Whether a terminal would act on `c` rather than show it.
pub fn is_unsafe(c: char) -> bool {
    c.is_control() || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {

    #[test]
    fn controls_are_escaped_and_a_backslash_is_left_for_text_sanitized_already() {
        let quoted = format!("bwrap said: {}", super::sanitize("line 1\nline 2"));
        assert_eq!(super::controls_escaped(&format!("{quoted}\x1b]52;c;x\x07")), "bwrap said: line 1\\nline 2\\e]52;c;x\\u{7}");
    }
    use super::sanitize;

    #[test]
    fn plain_text_is_unchanged() {
        assert_eq!(sanitize("hello-2.12 buildPhase: make -j2 ünï"), "hello-2.12 buildPhase: make -j2 ünï");
    }

    #[test]
    fn escape_sequences_become_visible() {
        assert_eq!(sanitize("a\x1b]0;pwned\x07b"), "a\\e]0;pwned\\u{7}b");
        assert_eq!(sanitize("\x1b[2J"), "\\e[2J");
    }

    #[test]
    fn line_breaks_cannot_start_a_fake_line() {
        assert_eq!(sanitize("x\nnix-attach: fake\r"), "x\\nnix-attach: fake\\r");
    }

    #[test]
    fn c1_controls_and_bidi_overrides_are_escaped() {
        assert_eq!(sanitize("\u{9b}31m \u{202e}txt"), "\\u{9b}31m \\u{202e}txt");
    }

    #[test]
    fn backslashes_are_doubled_so_escapes_are_unambiguous() {
        assert_eq!(sanitize("a\\e"), "a\\\\e");
    }
}
