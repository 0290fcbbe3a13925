//! JSON writing for events: string escaping with PostgreSQL's `escape_json` rules, numbers,
//! and the id/optional-string conventions of actor and org values. Pure Rust.
//!
//! # Invariants
//! - Escaping matches PostgreSQL's `escape_json`, so a value reads the same in our event
//!   as in `to_json()` output.

/// Appends `value` as a JSON string literal (with quotes).
pub fn push_string(out: &mut Vec<u8>, value: &[u8]) {
    out.push(b'"');
    for &b in value {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            b if b < 0x20 => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[(b >> 4) as usize]);
                out.push(HEX[(b & 0xf) as usize]);
            }
            b => out.push(b),
        }
    }
    out.push(b'"');
}

/// Whether a numeric type's text output is a valid JSON number (PostgreSQL quotes
/// `NaN` and `Infinity` instead).
pub fn is_json_number(text: &[u8]) -> bool {
    let digits = text.strip_prefix(b"-").unwrap_or(text);
    matches!(digits.first(), Some(b'0'..=b'9'))
        && digits
            .iter()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
}

/// Appends an actor/org id: all digits (and fits an i64) → JSON number, else string,
/// empty → null.
pub fn push_id(out: &mut Vec<u8>, value: &str) {
    if value.is_empty() {
        out.extend_from_slice(b"null");
    } else if value.bytes().all(|b| b.is_ascii_digit())
        && value.parse::<i64>().is_ok()
        && !(value.len() > 1 && value.starts_with('0'))
    {
        out.extend_from_slice(value.as_bytes());
    } else {
        push_string(out, value.as_bytes());
    }
}

/// Appends a string, or `null` when empty.
pub fn push_optional_string(out: &mut Vec<u8>, value: &str) {
    if value.is_empty() {
        out.extend_from_slice(b"null");
    } else {
        push_string(out, value.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(value: &str) -> String {
        let mut out = Vec::new();
        push_string(&mut out, value.as_bytes());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn escaping_matches_postgres_escape_json() {
        assert_eq!(s("plain"), "\"plain\"");
        assert_eq!(s("q\"b\\s"), "\"q\\\"b\\\\s\"");
        assert_eq!(s("a\nb\tc\rd\u{8}\u{c}"), "\"a\\nb\\tc\\rd\\b\\f\"");
        assert_eq!(s("\u{1}\u{1f}"), "\"\\u0001\\u001f\"");
        assert_eq!(s("é/€"), "\"é/€\"");
    }

    #[test]
    fn numbers_and_ids() {
        assert!(is_json_number(b"42") && is_json_number(b"-1.5e10") && is_json_number(b"0.001"));
        assert!(
            !is_json_number(b"NaN")
                && !is_json_number(b"Infinity")
                && !is_json_number(b"-Infinity")
        );
        let id = |v: &str| {
            let mut out = Vec::new();
            push_id(&mut out, v);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(id("1234"), "1234");
        assert_eq!(id("u-42"), "\"u-42\"");
        assert_eq!(id(""), "null");
        assert_eq!(id("007"), "\"007\"");
        assert_eq!(id("99999999999999999999"), "\"99999999999999999999\"");
    }
}
