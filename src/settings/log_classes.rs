//! Audit classes and the `pgaudit.log` / `pgaudit.log_level` value grammar.
//!
//! Pure Rust, no Postgres calls, so it unit-tests with plain `#[test]`.
//!
//! # Invariants
//! - [`parse_class_list`] accepts exactly what pgAudit 1.7's `check_pgaudit_log` accepts:
//!   PostgreSQL's `SplitIdentifierString` grammar (separator `,`), then each element
//!   matched case-insensitively against the class names, with one optional leading `-`
//!   meaning "subtract". Elements apply left to right.
//! - The bit values are internal; only the names and the `ALL` = every bit rule are
//!   observable (`ALL` includes classes added later, as in pgAudit).

/// Bit for each class; `MISC` sets `MISC | MISC_SET` as in pgAudit.
pub const READ: u32 = 1 << 0;
pub const WRITE: u32 = 1 << 1;
pub const FUNCTION: u32 = 1 << 2;
pub const ROLE: u32 = 1 << 3;
pub const DDL: u32 = 1 << 4;
pub const MISC: u32 = 1 << 5;
pub const MISC_SET: u32 = 1 << 6;
pub const NONE: u32 = 0;
pub const ALL: u32 = u32::MAX;

/// Why a `pgaudit.log` value was refused. Only `ListSyntax` carries a DETAIL line
/// (`List syntax is invalid`), matching pgAudit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClassListError {
    ListSyntax,
    UnknownClass(String),
}

/// Bits for one class name (already stripped of a leading `-`), case-insensitive.
fn class_bits(name: &str) -> Option<u32> {
    const NAMES: [(&str, u32); 9] = [
        ("none", NONE),
        ("all", ALL),
        ("read", READ),
        ("write", WRITE),
        ("function", FUNCTION),
        ("role", ROLE),
        ("ddl", DDL),
        ("misc", MISC | MISC_SET),
        ("misc_set", MISC_SET),
    ];
    NAMES
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|&(_, bits)| bits)
}

/// Parses a `pgaudit.log` value into a class bitmap.
pub fn parse_class_list(value: &str) -> Result<u32, ClassListError> {
    let mut bits = NONE;
    for element in split_identifier_list(value, b',').ok_or(ClassListError::ListSyntax)? {
        let (name, subtract) = match element.strip_prefix('-') {
            Some(rest) => (rest, true),
            None => (element.as_str(), false),
        };
        let class =
            class_bits(name).ok_or_else(|| ClassListError::UnknownClass(element.clone()))?;
        if subtract {
            bits &= !class;
        } else {
            bits |= class;
        }
    }
    Ok(bits)
}

/// Mirrors PostgreSQL's `SplitIdentifierString`: whitespace around elements is ignored,
/// unquoted elements end at the separator or whitespace and are ASCII-downcased,
/// double-quoted elements keep their content with `""` meaning `"`. Returns `None` on
/// any syntax error (empty element, missing separator, unterminated quote). A blank
/// input is an empty list.
pub fn split_identifier_list(value: &str, separator: u8) -> Option<Vec<String>> {
    /// NAMEDATALEN - 1: PostgreSQL truncates identifiers to this many bytes.
    const MAX_IDENTIFIER_BYTES: usize = 63;
    let bytes = value.as_bytes();
    let is_space = |b: u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | b'\x0b' | b'\x0c');
    let mut pos = 0;
    let mut out = Vec::new();
    while pos < bytes.len() && is_space(bytes[pos]) {
        pos += 1;
    }
    if pos == bytes.len() {
        return Some(out);
    }
    loop {
        let mut name: Vec<u8> = Vec::new();
        if bytes[pos] == b'"' {
            pos += 1;
            loop {
                match bytes.get(pos) {
                    None => return None,
                    Some(b'"') if bytes.get(pos + 1) == Some(&b'"') => {
                        name.push(b'"');
                        pos += 2;
                    }
                    Some(b'"') => {
                        pos += 1;
                        break;
                    }
                    Some(&b) => {
                        name.push(b);
                        pos += 1;
                    }
                }
            }
            if name.is_empty() {
                return None;
            }
        } else {
            let start = pos;
            while pos < bytes.len() && bytes[pos] != separator && !is_space(bytes[pos]) {
                pos += 1;
            }
            if pos == start {
                return None;
            }
            name.extend(bytes[start..pos].iter().map(u8::to_ascii_lowercase));
        }
        truncate_on_char_boundary(&mut name, MAX_IDENTIFIER_BYTES);
        out.push(String::from_utf8_lossy(&name).into_owned());
        while pos < bytes.len() && is_space(bytes[pos]) {
            pos += 1;
        }
        if pos == bytes.len() {
            return Some(out);
        }
        if bytes[pos] != separator {
            return None;
        }
        pos += 1;
        while pos < bytes.len() && is_space(bytes[pos]) {
            pos += 1;
        }
        if pos == bytes.len() {
            return None; // trailing separator
        }
    }
}

fn truncate_on_char_boundary(name: &mut Vec<u8>, max: usize) {
    if name.len() > max {
        let mut cut = max;
        while cut > 0 && (name[cut] & 0xC0) == 0x80 {
            cut -= 1;
        }
        name.truncate(cut);
    }
}

/// Server message levels accepted by `pgaudit.log_level`, exact and case-insensitive
/// (no trimming), as in pgAudit. `error`, `fatal` and `panic` are deliberately absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditLogLevel {
    Debug5,
    Debug4,
    Debug3,
    Debug2,
    Debug1,
    Info,
    Notice,
    Warning,
    Log,
}

pub fn parse_log_level(value: &str) -> Option<AuditLogLevel> {
    use AuditLogLevel::*;
    const LEVELS: [(&str, AuditLogLevel); 10] = [
        ("debug", Debug2),
        ("debug5", Debug5),
        ("debug4", Debug4),
        ("debug3", Debug3),
        ("debug2", Debug2),
        ("debug1", Debug1),
        ("info", Info),
        ("notice", Notice),
        ("warning", Warning),
        ("log", Log),
    ];
    LEVELS
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(value))
        .map(|&(_, level)| level)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_combine_left_to_right() {
        assert_eq!(parse_class_list("read, write"), Ok(READ | WRITE));
        assert_eq!(parse_class_list(" READ , -write "), Ok(READ));
        assert_eq!(parse_class_list("\"READ\", \"-Write\""), Ok(READ));
        assert_eq!(parse_class_list("all, -misc, misc_set"), Ok(!MISC));
        assert_eq!(parse_class_list("-all, read"), Ok(READ));
        assert_eq!(parse_class_list("read, -all"), Ok(NONE));
        assert_eq!(parse_class_list("misc, -misc_set"), Ok(MISC));
        assert_eq!(parse_class_list("none, read"), Ok(READ));
        assert_eq!(parse_class_list("-none"), Ok(NONE));
        assert_eq!(parse_class_list(""), Ok(NONE));
        assert_eq!(parse_class_list("   "), Ok(NONE));
        assert_eq!(parse_class_list("all"), Ok(ALL));
    }

    #[test]
    fn list_syntax_errors_match_split_identifier_string() {
        for bad in [
            "read write",
            "read,,write",
            "read,",
            "- read",
            ",read",
            "\"read",
            "\"\"",
        ] {
            assert_eq!(
                parse_class_list(bad),
                Err(ClassListError::ListSyntax),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn unknown_classes_are_refused_without_list_error() {
        assert_eq!(
            parse_class_list("read, bogus"),
            Err(ClassListError::UnknownClass("bogus".into()))
        );
        assert_eq!(
            parse_class_list("--read"),
            Err(ClassListError::UnknownClass("--read".into()))
        );
        assert_eq!(
            parse_class_list("foo"),
            Err(ClassListError::UnknownClass("foo".into()))
        );
    }

    #[test]
    fn quoted_elements_keep_separators_and_quotes() {
        assert_eq!(
            split_identifier_list("\"a,b\", \"c\"\"d\", E", b','),
            Some(vec!["a,b".into(), "c\"d".into(), "e".into()])
        );
    }

    #[test]
    fn long_identifiers_truncate_like_postgres() {
        let long = "x".repeat(70);
        assert_eq!(
            split_identifier_list(&long, b','),
            Some(vec!["x".repeat(63)])
        );
    }

    #[test]
    fn log_levels_are_exact_and_case_insensitive() {
        assert_eq!(parse_log_level("DEBUG"), Some(AuditLogLevel::Debug2));
        assert_eq!(parse_log_level("notice"), Some(AuditLogLevel::Notice));
        assert_eq!(parse_log_level("Log"), Some(AuditLogLevel::Log));
        for bad in ["error", "fatal", "panic", "", "info ", "notice, warning"] {
            assert_eq!(parse_log_level(bad), None, "{bad:?}");
        }
    }
}
