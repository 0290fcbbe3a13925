//! Cutting text to a byte limit without splitting a UTF-8 character. Pure Rust.

/// The longest prefix of `text` of at most `limit` bytes that ends on a character
/// boundary (continuation bytes are stepped over, so invalid UTF-8 is cut bytewise).
pub fn utf8_prefix(text: &[u8], limit: usize) -> &[u8] {
    if text.len() <= limit {
        return text;
    }
    let mut cut = limit;
    while cut > 0 && (text[cut] & 0xC0) == 0x80 {
        cut -= 1;
    }
    &text[..cut]
}

#[cfg(test)]
mod tests {
    use super::utf8_prefix;

    #[test]
    fn never_splits_a_character() {
        assert_eq!(utf8_prefix(b"abc", 5), b"abc");
        assert_eq!(utf8_prefix(b"abc", 2), b"ab");
        assert_eq!(utf8_prefix("a€".as_bytes(), 3), b"a");
        assert_eq!(utf8_prefix("a€".as_bytes(), 4), "a€".as_bytes());
        assert_eq!(utf8_prefix("€".as_bytes(), 0), b"");
    }
}
