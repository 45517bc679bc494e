//! Text meant for a terminal or a line-oriented log, made safe to print.

use std::borrow::Cow;

/// `s` with every control character (C0, DEL, C1: newlines, carriage returns, ANSI escapes)
/// written as a Rust escape (`\n`, `\u{1b}`), so that a frame's file name cannot forge a
/// report line or drive the terminal. Everything else is kept as it is.
pub fn printable(s: &str) -> Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert!(matches!(printable("frame 7.png"), Cow::Borrowed(_)));
        assert_eq!(printable("a\nb\r\tc"), "a\\nb\\r\\tc");
        assert_eq!(printable("\u{1b}[31mred"), "\\u{1b}[31mred");
        assert_eq!(printable("del\u{7f} c1\u{9b}"), "del\\u{7f} c1\\u{9b}");
        assert_eq!(printable("chat é 猫"), "chat é 猫");
    }
}
