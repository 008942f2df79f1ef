//! Outside text (a remote server's reply text, an address or a host name
//! from a message) made into one line, safe to put into a log line, a DSN
//! header field or a reply.

/// `text` as one line: control characters (CR, LF and the rest of C0, DEL,
/// C1) become spaces, runs of spaces collapse into one, and the ends are
/// trimmed of spaces. A multi-line SMTP reply becomes one line; everything
/// else, non-ASCII text included, stays as it is.
pub(crate) fn one_line(text: &str) -> String {
    let mut line = String::with_capacity(text.len());
    for word in text
        .split(|c: char| c.is_control() || c == ' ')
        .filter(|word| !word.is_empty())
    {
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_breaks_become_single_spaces() {
        assert_eq!(one_line("first\r\nsecond"), "first second");
        assert_eq!(one_line("first\nsecond\rthird"), "first second third");
        assert_eq!(one_line("a \r\n b"), "a b");
        assert_eq!(one_line("\r\n\r\n"), "");
    }

    #[test]
    fn control_characters_become_spaces() {
        assert_eq!(one_line("bye\x1b[31m"), "bye [31m");
        assert_eq!(one_line("a\tb\0c\x7fd"), "a b c d");
        assert_eq!(one_line("a\u{85}b\u{9b}c"), "a b c");
    }

    #[test]
    fn spaces_collapse_and_ends_are_trimmed() {
        assert_eq!(one_line("  padded   text  "), "padded text");
        assert_eq!(one_line(""), "");
        assert_eq!(one_line("   "), "");
    }

    #[test]
    fn other_text_is_kept() {
        assert_eq!(one_line("Grüße, 世界 🙂"), "Grüße, 世界 🙂");
        assert_eq!(one_line("a\u{a0}b"), "a\u{a0}b");
        assert_eq!(
            one_line("5.1.1 <user@example.org>"),
            "5.1.1 <user@example.org>"
        );
    }
}
