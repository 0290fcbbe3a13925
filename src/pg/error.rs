//! Raising an ERROR with a SQLSTATE, a message and a hint: the one way every subsystem's
//! error type reaches the client.
//!
//! # Message style
//! As PostgreSQL's own: the message starts lower-case, has no trailing period and no
//! `pgaudit_siem:` prefix (the SQLSTATE and the function context say where it comes
//! from); the hint is a full sentence that says what to do. Only messages written to
//! the server log by background workers carry the `pgaudit_siem:` prefix, since nothing
//! else there names the extension.

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;

/// Raises `message` with `code` and an optional hint; the transaction rolls back.
pub fn raise(code: PgSqlErrorCode, message: impl Into<String>, hint: Option<&str>) -> ! {
    raise_with_detail(code, message, None, hint)
}

/// [`raise`] with a detail line (what happened beyond the message).
pub fn raise_with_detail(
    code: PgSqlErrorCode,
    message: impl Into<String>,
    detail: Option<&str>,
    hint: Option<&str>,
) -> ! {
    let mut report = ErrorReport::new(code, message.into(), function_name!());
    if let Some(detail) = detail {
        report = report.set_detail(detail.to_owned());
    }
    if let Some(hint) = hint {
        report = report.set_hint(hint.to_owned());
    }
    report.report(PgLogLevel::ERROR);
    unreachable!("ERROR does not return")
}
