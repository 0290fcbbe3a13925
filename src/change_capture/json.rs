//! Pure pieces of change-capture events: JSON string escaping (PostgreSQL's
//! `escape_json` rules), UUIDv7 ids, RFC 3339 timestamps, and actor/org values.
//! No Postgres calls; unit-tested with plain `#[test]`.
//!
//! # Invariants
//! - Escaping matches PostgreSQL's `escape_json`, so a value reads the same in our event
//!   as in `to_json()` output.
//! - UUIDv7 ids from one backend are strictly increasing: within one millisecond the
//!   12-bit `rand_a` field is a counter (RFC 9562 method 1), seeded randomly per ms.

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

/// Microseconds between 1970-01-01 and PostgreSQL's epoch 2000-01-01.
pub const POSTGRES_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;

/// RFC 3339 UTC with microseconds (`2024-12-25T14:57:10.123456Z`) for a Unix time in µs.
pub fn rfc3339_utc(unix_micros: i64) -> String {
    let secs = unix_micros.div_euclid(1_000_000);
    let micros = unix_micros.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (H. Hinnant).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Generates time-ordered UUIDv7 values.
#[derive(Default)]
pub struct Uuid7Generator {
    last_ms: u64,
    counter: u16,
}

impl Uuid7Generator {
    /// A new id for `unix_ms`, using `random` (10 bytes) for the random fields. Never
    /// goes backwards: a clock step back reuses the last millisecond.
    pub fn next(&mut self, unix_ms: u64, random: [u8; 10]) -> [u8; 16] {
        let ms = unix_ms.max(self.last_ms);
        if ms == self.last_ms {
            self.counter = self.counter.wrapping_add(1) & 0x0fff;
            if self.counter == 0 {
                // 4096 ids in one millisecond: borrow the next millisecond.
                self.last_ms += 1;
            }
        } else {
            self.last_ms = ms;
            // Start low in the counter space so many ids fit in this millisecond.
            self.counter = u16::from_be_bytes([random[0], random[1]]) & 0x01ff;
        }
        let ms = self.last_ms;
        let mut id = [0u8; 16];
        id[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
        id[6] = 0x70 | ((self.counter >> 8) as u8 & 0x0f);
        id[7] = self.counter as u8;
        id[8] = 0x80 | (random[2] & 0x3f);
        id[9..16].copy_from_slice(&random[3..10]);
        id
    }
}

/// Canonical text form `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
pub fn uuid_text(id: &[u8; 16]) -> String {
    let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
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

    #[test]
    fn timestamps_are_rfc3339_utc_with_micros() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            rfc3339_utc(1_735_138_630_123_456),
            "2024-12-25T14:57:10.123456Z"
        );
        assert_eq!(
            rfc3339_utc(951_782_400_000_001),
            "2000-02-29T00:00:00.000001Z"
        );
        assert_eq!(rfc3339_utc(-1), "1969-12-31T23:59:59.999999Z");
    }

    #[test]
    fn uuid7_layout_and_order() {
        let mut g = Uuid7Generator::default();
        let a = g.next(1_735_138_630_123, [0xff; 10]);
        let b = g.next(1_735_138_630_123, [0x00; 10]);
        let c = g.next(1_735_138_630_124, [0x00; 10]);
        let d = g.next(1_735_138_630_100, [0x00; 10]); // clock went back
        assert!(a < b && b < c && c < d);
        for id in [a, b, c, d] {
            assert_eq!(id[6] >> 4, 7, "version");
            assert_eq!(id[8] >> 6, 0b10, "variant");
        }
        assert_eq!(&a[..6], &1_735_138_630_123u64.to_be_bytes()[2..]);
        let text = uuid_text(&a);
        assert_eq!(text.len(), 36);
        assert_eq!(&text[14..15], "7");
        let mut many = Uuid7Generator::default();
        let ids: Vec<[u8; 16]> = (0..10_000).map(|_| many.next(5, [7; 10])).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
    }
}
