//! The `AUDIT:` line, byte for byte as pgAudit 1.7 writes it. Pure Rust, unit-tested
//! without Postgres.
//!
//! Layout: `AUDIT: <type>,<statement id>,<substatement id>,<class>,<command>,<object type>,
//! <object name>,<statement>,<parameter>[,<rows>]`.
//!
//! # Invariants
//! - Text is handled as bytes: the server encoding need not be UTF-8, and pgAudit never
//!   re-encodes anything.
//! - [`append_csv`] is pgAudit's `append_valid_csv`: quote only when the value holds `,`
//!   `"` `\n` or `\r`; double embedded quotes; a missing value is an empty field.
//! - Truncation (`pgaudit.log_max_string_length`) never splits a UTF-8 character and
//!   always leaves a visible marker, so a cut value cannot be mistaken for a whole one.

/// Marks text cut by `pgaudit.log_max_string_length`; pgAudit placeholder style.
pub const TRUNCATED_MARKER: &[u8] = b"<truncated>";
/// Replaces everything after `password` in CREATE/ALTER ROLE text.
pub const REDACTED: &[u8] = b"<REDACTED>";

/// Appends `value` as one CSV field, as pgAudit's `append_valid_csv`.
pub fn append_csv(out: &mut Vec<u8>, value: Option<&[u8]>) {
    let Some(value) = value else { return };
    if value
        .iter()
        .any(|b| matches!(b, b',' | b'"' | b'\n' | b'\r'))
    {
        out.reserve(value.len() + 2);
        out.push(b'"');
        for &b in value {
            if b == b'"' {
                out.push(b'"');
            }
            out.push(b);
        }
        out.push(b'"');
    } else {
        out.extend_from_slice(value);
    }
}

/// pgAudit's CREATE/ALTER ROLE redaction: find `password` case-insensitively anywhere,
/// keep the text up to and including it, then ` <REDACTED>`. `None` when absent.
pub fn redact_password(text: &[u8]) -> Option<Vec<u8>> {
    const TOKEN: &[u8] = b"password";
    let pos = text
        .windows(TOKEN.len())
        .position(|w| w.eq_ignore_ascii_case(TOKEN))?;
    let keep = pos + TOKEN.len();
    let mut out = Vec::with_capacity(keep + 1 + REDACTED.len());
    out.extend_from_slice(&text[..keep]);
    out.push(b' ');
    out.extend_from_slice(REDACTED);
    Some(out)
}

/// pgaudit_siem's own secret-bearing calls (`configure`, `test_connection`, which take
/// SIEM headers such as tokens): keep the text up to the call's `(`, then `<REDACTED>`.
/// The statement is judged whole: when the kept part holds a string literal, a dollar
/// quote or a parameter (a CTE or sub-select can carry the token there), nothing but
/// `<REDACTED>` is kept. `None` when the statement calls none of them. Not a pgAudit
/// behaviour: pgAudit has no such functions, so its lines for every other statement are
/// unaffected.
pub fn redact_siem_secrets(text: &[u8]) -> Option<Vec<u8>> {
    // Every statement's text passes here: only its `(`s are looked at (most statements
    // have few or none), each for a call name ending right before it. The first name of
    // SECRET_CALLS that is called anywhere decides, at its first call, as when each name
    // is searched for in turn.
    let mut first: Option<(usize, usize)> = None; // (name index, position of its `(`)
    for open in memchr::memchr_iter(b'(', text) {
        let mut end = open;
        while end > 0 && (text[end - 1] == b'"' || text[end - 1].is_ascii_whitespace()) {
            end -= 1;
        }
        let called = SECRET_CALLS.iter().position(|name| {
            end >= name.len()
                && text[end - name.len()..end].eq_ignore_ascii_case(name)
                && (end == name.len() || !is_word_byte(text[end - name.len() - 1]))
        });
        if let Some(index) = called {
            if first.is_none_or(|(best, _)| index < best) {
                first = Some((index, open));
            }
            if index == 0 {
                break;
            }
        }
    }
    let (_, open) = first?;
    let prefix = &text[..=open];
    if prefix.iter().any(|&b| b == b'\'' || b == b'$') {
        return Some(REDACTED.to_vec());
    }
    let mut out = Vec::with_capacity(prefix.len() + REDACTED.len());
    out.extend_from_slice(prefix);
    out.extend_from_slice(REDACTED);
    Some(out)
}

/// pgaudit_siem's functions whose arguments carry SIEM secrets, in order of precedence.
const SECRET_CALLS: [&[u8]; 3] = [b"configure", b"test_connection", b"_send_test_event"];

/// A byte that continues an identifier (so a name preceded by one is another name).
fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$'
}

/// Cuts `text` to at most `limit` bytes on a character boundary and appends
/// [`TRUNCATED_MARKER`]; returns it unchanged when it fits.
pub fn truncate(text: &[u8], limit: Option<usize>) -> std::borrow::Cow<'_, [u8]> {
    match limit {
        Some(limit) if text.len() > limit => {
            let kept = crate::pg::text::utf8_prefix(text, limit);
            let mut out = Vec::with_capacity(kept.len() + TRUNCATED_MARKER.len());
            out.extend_from_slice(kept);
            out.extend_from_slice(TRUNCATED_MARKER);
            out.into()
        }
        _ => text.into(),
    }
}

/// The statement and parameter part of a line.
pub enum StatementPart<'a> {
    /// `log_statement` on and this event's text not printed yet (or `log_statement_once` off).
    Text {
        text: Option<&'a [u8]>,
        parameters: Parameters<'a>,
    },
    /// `log_statement` off.
    NotLogged,
    /// `log_statement_once` on and the text was already printed for this event.
    PreviouslyLogged,
}

pub enum Parameters<'a> {
    /// `log_parameter` off.
    NotLogged,
    /// `log_parameter` on: one entry per parameter slot, `None` for NULL or untyped.
    Values(&'a [Option<Vec<u8>>]),
}

/// Everything that varies in one line.
pub struct Line<'a> {
    pub object_audit: bool,
    pub statement_id: i64,
    pub substatement_id: i64,
    pub class: &'a str,
    pub command: &'a [u8],
    pub object_type: Option<&'a [u8]>,
    pub object_name: Option<&'a [u8]>,
    pub statement: StatementPart<'a>,
    pub rows: Option<i64>,
}

/// Writes the complete message text (`AUDIT: ...`) into `out`, replacing its contents.
pub fn write_line(out: &mut Vec<u8>, line: &Line<'_>, max_string_length: Option<usize>) {
    out.clear();
    out.extend_from_slice(if line.object_audit {
        b"AUDIT: OBJECT,"
    } else {
        b"AUDIT: SESSION,"
    });
    push_int(out, line.statement_id);
    out.push(b',');
    push_int(out, line.substatement_id);
    out.push(b',');
    out.extend_from_slice(line.class.as_bytes());
    out.push(b',');
    append_csv(out, Some(line.command));
    out.push(b',');
    append_csv(out, line.object_type);
    out.push(b',');
    append_csv(out, line.object_name);
    out.push(b',');
    match &line.statement {
        StatementPart::Text { text, parameters } => {
            append_csv(out, text.map(|t| truncate(t, max_string_length)).as_deref());
            out.push(b',');
            match parameters {
                Parameters::NotLogged => out.extend_from_slice(b"<not logged>"),
                Parameters::Values(values) if values.is_empty() => out.extend_from_slice(b"<none>"),
                Parameters::Values(values) => {
                    append_csv(out, Some(&parameter_list(values, max_string_length)));
                }
            }
        }
        StatementPart::NotLogged => out.extend_from_slice(b"<not logged>,<not logged>"),
        StatementPart::PreviouslyLogged => {
            out.extend_from_slice(b"<previously logged>,<previously logged>")
        }
    }
    if let Some(rows) = line.rows {
        out.push(b',');
        push_int(out, rows);
    }
}

/// The parameter values as the line's parameter field holds them before its own CSV
/// quoting: each value truncated and CSV-quoted, comma-separated.
fn parameter_list(values: &[Option<Vec<u8>>], max_string_length: Option<usize>) -> Vec<u8> {
    let mut inner = Vec::new();
    for (i, value) in values.iter().enumerate() {
        if i != 0 {
            inner.push(b',');
        }
        append_csv(
            &mut inner,
            value
                .as_deref()
                .map(|v| truncate(v, max_string_length))
                .as_deref(),
        );
    }
    inner
}

/// The statement and parameter fields of a line, unquoted (what a structured record
/// carries as `statement` and `parameter`). `None`: the field is empty in the line.
pub fn statement_fields(
    statement: &StatementPart<'_>,
    max_string_length: Option<usize>,
) -> (Option<Vec<u8>>, Vec<u8>) {
    match statement {
        StatementPart::Text { text, parameters } => (
            text.map(|t| truncate(t, max_string_length).into_owned()),
            match parameters {
                Parameters::NotLogged => b"<not logged>".to_vec(),
                Parameters::Values(values) if values.is_empty() => b"<none>".to_vec(),
                Parameters::Values(values) => parameter_list(values, max_string_length),
            },
        ),
        StatementPart::NotLogged => (Some(b"<not logged>".to_vec()), b"<not logged>".to_vec()),
        StatementPart::PreviouslyLogged => (
            Some(b"<previously logged>".to_vec()),
            b"<previously logged>".to_vec(),
        ),
    }
}

/// Decimal digits of `value`, without the formatting machinery (hot path).
fn push_int(out: &mut Vec<u8>, value: i64) {
    let mut digits = [0u8; 20];
    let mut n = value.unsigned_abs();
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if value < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&digits[at..]);
}

#[cfg(test)]
mod tests {
    /// The first implementation (each name searched for in turn), as the reference.
    fn redact_siem_secrets_naively(text: &[u8]) -> Option<Vec<u8>> {
        for name in SECRET_CALLS {
            let mut from = 0;
            while let Some(found) = text[from..]
                .windows(name.len())
                .position(|w| w.eq_ignore_ascii_case(name))
            {
                let start = from + found;
                let end = start + name.len();
                from = end;
                if start > 0 && is_word_byte(text[start - 1]) {
                    continue;
                }
                let mut i = end;
                while i < text.len() && (text[i] == b'"' || text[i].is_ascii_whitespace()) {
                    i += 1;
                }
                if i < text.len() && text[i] == b'(' {
                    let prefix = &text[..=i];
                    if prefix.iter().any(|&b| b == b'\'' || b == b'$') {
                        return Some(REDACTED.to_vec());
                    }
                    let mut out = prefix.to_vec();
                    out.extend_from_slice(REDACTED);
                    return Some(out);
                }
            }
        }
        None
    }

    #[test]
    fn secret_redaction_agrees_with_searching_each_name_in_turn() {
        const PIECES: [&str; 16] = [
            "configure",
            "CONFIGURE",
            "test_connection",
            "_send_test_event",
            "(",
            "\"",
            " ",
            "\t",
            "x",
            "_",
            "$",
            "'",
            ".",
            "re",
            "select ",
            "pgaudit_siem.",
        ];
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        let mut redacted = 0;
        for _ in 0..50_000 {
            let text: String = (0..next(12)).map(|_| PIECES[next(PIECES.len())]).collect();
            let expected = redact_siem_secrets_naively(text.as_bytes());
            redacted += usize::from(expected.is_some());
            assert_eq!(redact_siem_secrets(text.as_bytes()), expected, "{text:?}");
        }
        assert!(redacted > 1_000, "the cases include calls ({redacted})");
    }

    #[test]
    fn siem_secrets_are_redacted() {
        let r = |t: &str| redact_siem_secrets(t.as_bytes()).map(|v| String::from_utf8(v).unwrap());
        assert_eq!(
            r("SELECT pgaudit_siem.configure('https://x', '{\"Authorization\": \"Bearer t\"}')")
                .as_deref(),
            Some("SELECT pgaudit_siem.configure(<REDACTED>")
        );
        assert_eq!(
            r("select * from PGAUDIT_SIEM.\"test_connection\" ($1, $2)").as_deref(),
            Some("select * from PGAUDIT_SIEM.\"test_connection\" (<REDACTED>")
        );
        assert_eq!(
            r("WITH h AS (SELECT '{\"Authorization\": \"Bearer t\"}'::jsonb AS v) SELECT pgaudit_siem.configure('u', (SELECT v FROM h))")
                .as_deref(),
            Some("<REDACTED>")
        );
        assert_eq!(
            r("SELECT $tok$secret$tok$, pgaudit_siem.test_connection(NULL)").as_deref(),
            Some("<REDACTED>")
        );
        assert_eq!(r("SELECT reconfigure(1)"), None);
        assert_eq!(r("SELECT configure_count FROM t"), None);
    }

    use super::*;

    fn csv(value: &str) -> String {
        let mut out = Vec::new();
        append_csv(&mut out, Some(value.as_bytes()));
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn csv_quotes_only_when_needed() {
        assert_eq!(csv("SELECT 1;"), "SELECT 1;");
        assert_eq!(
            csv("CREATE TABLE tmp (id int, data text);"),
            "\"CREATE TABLE tmp (id int, data text);\""
        );
        assert_eq!(csv("SELECT 'a\"b' AS x;"), "\"SELECT 'a\"\"b' AS x;\"");
        assert_eq!(
            csv("public.\"Weird, Name\""),
            "\"public.\"\"Weird, Name\"\"\""
        );
        assert_eq!(csv("a\nb"), "\"a\nb\"");
        assert_eq!(csv("a\tb ; "), "a\tb ; ");
        assert_eq!(csv(""), "");
    }

    #[test]
    fn redaction_matches_pgaudit_examples() {
        let r = |s: &str| redact_password(s.as_bytes()).map(|v| String::from_utf8(v).unwrap());
        assert_eq!(
            r("CREATE USER regress_user1 password 'password';").as_deref(),
            Some("CREATE USER regress_user1 password <REDACTED>")
        );
        assert_eq!(
            r("ALTER ROLE r2 WITH PASSWORD 'x' VALID UNTIL 'infinity';").as_deref(),
            Some("ALTER ROLE r2 WITH PASSWORD <REDACTED>")
        );
        assert_eq!(
            r("CREATE ROLE \"MyPassword_role\";").as_deref(),
            Some("CREATE ROLE \"MyPassword <REDACTED>")
        );
        assert_eq!(r("CREATE ROLE plain;"), None);
    }

    #[test]
    fn truncation_respects_character_boundaries() {
        assert_eq!(&*truncate(b"abcdef", Some(3)), b"abc<truncated>");
        assert_eq!(&*truncate(b"abc", Some(3)), b"abc");
        assert_eq!(&*truncate(b"abc", None), b"abc");
        // "é" is two bytes; cutting at 2 would split it.
        assert_eq!(&*truncate("aéb".as_bytes(), Some(2)), b"a<truncated>");
        assert_eq!(&*truncate(b"abc", Some(0)), b"<truncated>");
    }

    fn line(statement: StatementPart<'_>, rows: Option<i64>) -> String {
        let mut out = Vec::new();
        write_line(
            &mut out,
            &Line {
                object_audit: false,
                statement_id: 3,
                substatement_id: 1,
                class: "READ",
                command: b"SELECT",
                object_type: Some(b"TABLE"),
                object_name: Some(b"public.t"),
                statement,
                rows,
            },
            None,
        );
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn parameters_are_csv_inside_csv() {
        let values = [
            Some(b"a,b".to_vec()),
            Some(b"c\"d".to_vec()),
            None,
            Some(b"plain".to_vec()),
        ];
        let got = line(
            StatementPart::Text {
                text: Some(b"SELECT $1"),
                parameters: Parameters::Values(&values),
            },
            None,
        );
        assert_eq!(got, "AUDIT: SESSION,3,1,READ,SELECT,TABLE,public.t,SELECT $1,\"\"\"a,b\"\",\"\"c\"\"\"\"d\"\",,plain\"");
        let one_null = [None];
        let got = line(
            StatementPart::Text {
                text: Some(b"SELECT $1"),
                parameters: Parameters::Values(&one_null),
            },
            None,
        );
        assert!(got.ends_with("SELECT $1,"), "{got}");
        let got = line(
            StatementPart::Text {
                text: Some(b"SELECT 1"),
                parameters: Parameters::Values(&[]),
            },
            None,
        );
        assert!(got.ends_with("SELECT 1,<none>"), "{got}");
    }

    #[test]
    fn integers_format_like_postgres() {
        for n in [0i64, 7, -1, 10, 1234567890, i64::MAX, i64::MIN] {
            let mut out = Vec::new();
            push_int(&mut out, n);
            assert_eq!(String::from_utf8(out).unwrap(), n.to_string());
        }
    }

    #[test]
    fn placeholders_and_rows() {
        assert!(line(StatementPart::NotLogged, Some(0))
            .ends_with("public.t,<not logged>,<not logged>,0"));
        assert!(line(StatementPart::PreviouslyLogged, None)
            .ends_with(",<previously logged>,<previously logged>"));
        assert!(line(
            StatementPart::Text {
                text: Some(b"SELECT 1"),
                parameters: Parameters::NotLogged
            },
            Some(7)
        )
        .ends_with("SELECT 1,<not logged>,7"));
    }
}
