//! JSON writing for events: string escaping with PostgreSQL's `escape_json` rules, numbers,
//! and the id/optional-string conventions of actor and org values; and reading a few
//! top-level members of a record without parsing it (the spool's readers). Pure Rust.
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

/// The raw values (quotes included for strings) of the top-level members `names` of a
/// JSON object written without whitespace, as every record is; nested values are
/// skipped, never parsed. `None` for a member that is absent (or after malformed JSON).
pub fn top_level_members<'a, const N: usize>(
    record: &'a [u8],
    names: [&[u8]; N],
) -> [Option<&'a [u8]>; N] {
    let mut found = [None; N];
    if record.first() != Some(&b'{') {
        return found;
    }
    let mut at = 1;
    let mut missing = N;
    while missing > 0 && record.get(at) == Some(&b'"') {
        let Some(key_end) = string_end(record, at) else {
            break;
        };
        if record.get(key_end) != Some(&b':') {
            break;
        }
        let Some(value_end) = value_end(record, key_end + 1) else {
            break;
        };
        let key = &record[at + 1..key_end - 1];
        for (slot, name) in found.iter_mut().zip(names) {
            if slot.is_none() && key == name {
                *slot = Some(&record[key_end + 1..value_end]);
                missing -= 1;
            }
        }
        if record.get(value_end) != Some(&b',') {
            break;
        }
        at = value_end + 1;
    }
    found
}

/// Where the string starting at `at` (its opening quote) ends: just after its closing
/// quote.
fn string_end(bytes: &[u8], at: usize) -> Option<usize> {
    let mut i = at + 1;
    loop {
        let j = i + memchr::memchr2(b'"', b'\\', bytes.get(i..)?)?;
        if bytes[j] == b'"' {
            return Some(j + 1);
        }
        i = j + 2;
    }
}

/// Where the value starting at `at` ends (the index just after it).
fn value_end(bytes: &[u8], at: usize) -> Option<usize> {
    match *bytes.get(at)? {
        b'"' => string_end(bytes, at),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut i = at;
            loop {
                match *bytes.get(i)? {
                    b'"' => {
                        i = string_end(bytes, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
        }
        _ => Some(
            at + bytes[at..]
                .iter()
                .position(|b| matches!(b, b',' | b'}' | b']'))?,
        ),
    }
}

/// A top-level unsigned integer member.
pub fn top_level_u64(record: &[u8], name: &[u8]) -> Option<u64> {
    let [value] = top_level_members(record, [name]);
    std::str::from_utf8(value?).ok()?.parse().ok()
}

/// The contents of a top-level string member without escapes (ids, timestamps).
pub fn top_level_plain_string<'a>(record: &'a [u8], name: &[u8]) -> Option<&'a str> {
    let [value] = top_level_members(record, [name]);
    plain_string(value?)
}

/// The contents of a raw JSON string value that holds no escape.
pub fn plain_string(value: &[u8]) -> Option<&str> {
    let inner = value.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    if inner.contains(&b'\\') {
        return None;
    }
    std::str::from_utf8(inner).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_level_members_skip_nested_values_and_strings_that_look_like_members() {
        let record = br#"{"actor":{"id":"x","sequence":9},"line":"a\",\"sequence\":8,\\","list":[{"id":[1,"]"]}],"sequence":42,"id":"abc","timestamp":"t"}"#;
        let [sequence, id, timestamp, absent] =
            top_level_members(record, [b"sequence", b"id", b"timestamp", b"none"]);
        assert_eq!(sequence, Some(&b"42"[..]));
        assert_eq!(id, Some(&br#""abc""#[..]));
        assert_eq!(timestamp, Some(&br#""t""#[..]));
        assert_eq!(absent, None);
        assert_eq!(top_level_u64(record, b"sequence"), Some(42));
        assert_eq!(top_level_plain_string(record, b"id"), Some("abc"));
        assert_eq!(top_level_u64(br#"{"sequence":7"#, b"sequence"), None);
        assert_eq!(top_level_u64(b"not json", b"sequence"), None);
        assert_eq!(top_level_u64(br#"{"a":"unterminated"#, b"sequence"), None);
    }

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
