//! Capping texts at a byte length on UTF-8 character boundaries.

/// Appended to a text that was cut at the end.
pub(crate) const TRUNCATED: &str = "…[truncated]";

/// Prepended to a text whose start was cut (tails of stderr).
pub(crate) const ELIDED: &str = "[truncated]…";

/// Cuts `s` so that it is at most `max` bytes long, including the
/// [`TRUNCATED`] marker that is appended when anything was cut. The cut is on
/// a character boundary.
pub(crate) fn truncate_string(mut s: String, max: usize) -> String {
    if s.len() <= max {
        return s;
    }
    if max < TRUNCATED.len() {
        let cut = floor_char_boundary(&s, max);
        s.truncate(cut);
        return s;
    }
    let cut = floor_char_boundary(&s, max - TRUNCATED.len());
    s.truncate(cut);
    s.push_str(TRUNCATED);
    s
}

/// Lossy UTF-8 text of the first bytes of a stream; `overflowed` tells that
/// the stream went on past `head`. The text is at most `max` bytes and ends
/// in [`TRUNCATED`] when anything was cut.
pub(crate) fn head_text(head: &[u8], overflowed: bool, max: usize) -> String {
    let mut s = String::from_utf8_lossy(head).into_owned();
    if !overflowed {
        return truncate_string(s, max);
    }
    // More was dropped than kept: mark it even if what was kept fits.
    let cut = floor_char_boundary(&s, max.saturating_sub(TRUNCATED.len()));
    s.truncate(cut);
    s.push_str(TRUNCATED);
    s
}

/// Lossy UTF-8 text of the last bytes of a stream; `elided` tells that bytes
/// before `tail` were dropped, in which case the text starts with
/// [`ELIDED`]. Leading UTF-8 continuation bytes (a character cut in half)
/// are skipped. Surrounding whitespace is trimmed.
pub(crate) fn tail_text(tail: &[u8], elided: bool) -> String {
    let mut start = 0;
    if elided {
        // Skip at most 3 continuation bytes (10xx_xxxx) of a split character.
        while start < tail.len() && start < 3 && (tail[start] & 0xC0) == 0x80 {
            start += 1;
        }
    }
    let text = String::from_utf8_lossy(&tail[start..]);
    let text = text.trim();
    if elided {
        format!("{ELIDED}{text}")
    } else {
        text.to_owned()
    }
}

/// The largest index `<= index` that is a char boundary of `s`.
fn floor_char_boundary(s: &str, index: usize) -> usize {
    if index >= s.len() {
        return s.len();
    }
    let mut i = index;
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_kept() {
        assert_eq!(truncate_string("hello".into(), 5), "hello");
        assert_eq!(truncate_string(String::new(), 0), "");
    }

    #[test]
    fn long_text_is_cut_with_marker_within_limit() {
        let s = "a".repeat(100);
        let t = truncate_string(s, 50);
        assert_eq!(t.len(), 50);
        assert!(t.ends_with(TRUNCATED));
    }

    #[test]
    fn cut_lands_on_char_boundary() {
        // 'é' is 2 bytes; every cut position must still give valid text.
        let s = "é".repeat(100);
        for max in TRUNCATED.len()..60 {
            let t = truncate_string(s.clone(), max);
            assert!(t.len() <= max, "max {max}: {} bytes", t.len());
            assert!(t.ends_with(TRUNCATED));
            let body = &t[..t.len() - TRUNCATED.len()];
            assert!(body.chars().all(|c| c == 'é'));
        }
    }

    #[test]
    fn tiny_limit_has_no_room_for_marker() {
        assert_eq!(truncate_string("abcdef".into(), 3), "abc");
    }

    #[test]
    fn head_text_marks_overflow() {
        assert_eq!(head_text(b"abc", false, 100), "abc");
        assert_eq!(head_text(b"abc", true, 100), format!("abc{TRUNCATED}"));
        let t = head_text(&[b'x'; 200], true, 100);
        assert_eq!(t.len(), 100);
        assert!(t.ends_with(TRUNCATED));
    }

    #[test]
    fn tail_text_skips_split_char() {
        let bytes = "ééé".as_bytes();
        // Drop the first byte: the tail starts with a continuation byte.
        assert_eq!(tail_text(&bytes[1..], true), format!("{ELIDED}éé"));
        assert_eq!(tail_text(b"  oops\n", false), "oops");
    }
}
