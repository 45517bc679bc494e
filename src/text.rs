//! Text meant for a terminal or a line-oriented log, made safe to print. A leaf: the card
//! check and the outputs both use it.

use std::borrow::Cow;

/// Whether `c` can change how a terminal shows a line: a control character (C0, DEL, C1:
/// newlines, carriage returns, ANSI escapes) or a bidirectional formatting character (U+202E
/// shows the rest of a line reversed).
pub fn is_unprintable(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200E}' | '\u{200F}' | '\u{061C}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// `s` with every [unprintable](is_unprintable) character written as a Rust escape (`\n`,
/// `\u{1b}`, `\u{202e}`), so that a frame's file name cannot forge a report line or drive the
/// terminal. Everything else is kept as it is.
pub fn printable(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_unprintable) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if is_unprintable(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A path as a frame's `source`: its bytes as UTF-8, with every byte that is not UTF-8 written
/// `\xNN` and every backslash `\\`, so that two different paths never print the same (a lossy
/// conversion wrote both `\xff\xfe` and `\xfe\xff` as `��`, and their lines could not be told
/// apart).
pub fn path_name(path: &std::path::Path) -> String {
    #[cfg(unix)]
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str());
    #[cfg(not(unix))]
    let lossy = path.to_string_lossy();
    #[cfg(not(unix))]
    let bytes = lossy.as_bytes();
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '\\' {
                out.push_str("\\\\");
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// Anyhow chains (tract's errors) as one line: "outer: inner: root".
pub(crate) fn one_line(e: &anyhow::Error) -> String {
    format!("{e:#}").replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_are_not_utf8_print_apart() {
        use std::os::unix::ffi::OsStrExt;
        let name = |b: &[u8]| path_name(std::path::Path::new(std::ffi::OsStr::from_bytes(b)));
        assert_eq!(name(b"nu/\xff\xfe.png"), "nu/\\xff\\xfe.png");
        assert_ne!(name(b"\xff\xfe"), name(b"\xfe\xff"));
        // A name spelled with a backslash stays apart from the byte it spells.
        assert_ne!(name(b"a\\xff"), name(b"a\xff"));
        assert_eq!(name("digit_7_0.png".as_bytes()), "digit_7_0.png");
    }

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert!(matches!(printable("frame 7.png"), Cow::Borrowed(_)));
        assert_eq!(printable("a\nb\r\tc"), "a\\nb\\r\\tc");
        assert_eq!(printable("\u{1b}[31mred"), "\\u{1b}[31mred");
        assert_eq!(printable("del\u{7f} c1\u{9b}"), "del\\u{7f} c1\\u{9b}");
        assert_eq!(printable("a\u{202e}gnp.exe"), "a\\u{202e}gnp.exe");
        assert_eq!(printable("chat é 猫"), "chat é 猫");
    }
}
