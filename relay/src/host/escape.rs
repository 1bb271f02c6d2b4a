//! The escape that always gets the user out: `~.` at the start of a line,
//! as in ssh. It leaves a session even when the build stops answering.
//! `~~` sends one `~`.

/// Watches typed bytes for the escape.
#[derive(Debug)]
pub struct Escape {
    at_line_start: bool,
    tilde: bool,
}

impl Default for Escape {
    fn default() -> Escape {
        Escape { at_line_start: true, tilde: false }
    }
}

impl Escape {
    /// Returns the bytes to send on, or `None` when the escape was typed.
    pub fn scan(&mut self, typed: &[u8]) -> Option<Vec<u8>> {
        let mut send = Vec::with_capacity(typed.len());
        for &byte in typed {
            if std::mem::take(&mut self.tilde) {
                match byte {
                    b'.' => return None,
                    b'~' => {
                        send.push(b'~');
                        self.at_line_start = false;
                        continue;
                    }
                    _ => send.push(b'~'),
                }
            } else if self.at_line_start && byte == b'~' {
                self.tilde = true;
                continue;
            }
            send.push(byte);
            self.at_line_start = matches!(byte, b'\r' | b'\n');
        }
        Some(send)
    }
}

#[cfg(test)]
mod tests {
    use super::Escape;

    #[test]
    fn tilde_dot_at_the_start_of_a_line_escapes() {
        assert_eq!(Escape::default().scan(b"~."), None);
        let mut escape = Escape::default();
        assert_eq!(escape.scan(b"ls\r"), Some(b"ls\r".to_vec()));
        assert_eq!(escape.scan(b"~"), Some(Vec::new()));
        assert_eq!(escape.scan(b"."), None);
    }

    #[test]
    fn a_tilde_elsewhere_is_typed() {
        assert_eq!(Escape::default().scan(b"cd ~.\r"), Some(b"cd ~.\r".to_vec()));
        assert_eq!(Escape::default().scan(b"~/x"), Some(b"~/x".to_vec()));
        assert_eq!(Escape::default().scan(b"~~."), Some(b"~.".to_vec()));
    }
}
