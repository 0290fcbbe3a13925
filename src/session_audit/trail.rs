//! The rest of the trail, as records of the session-audit stream: connections
//! (`connect`, `authentication_failed`, `disconnect`) under the superuser setting
//! `pgaudit_siem.log_connections`, and statements that fail with an ERROR in audited
//! sessions (`error`).
//!
//! # Invariants
//! - Built without catalog access and without raising anything: these run while
//!   PostgreSQL authenticates a client or reports an error, where an ERROR of ours would
//!   recurse. Panics are caught; the spool's own WARNINGs are suppressed (what the record
//!   describes is in the server log anyway).
//! - Never a password: authentication records carry the role name tried, the pg_hba.conf
//!   method and a failure class derived from the SQLSTATE and PostgreSQL's message, not
//!   the message or its detail.
//! - Statement text follows the AUDIT lines' rules: `log_statement`, password and SIEM
//!   secret redaction (then the error message is withheld too: it may quote the secret),
//!   `log_max_string_length`.

use std::cell::Cell;
use std::ffi::{c_int, c_void, CStr};

use pgrx::pg_sys;

use super::format;
use super::record::{self, LineMember, Who};
use super::stack;
use crate::events::{json, spool, time};
use crate::pg::port;
use crate::settings;

thread_local! {
    /// When this session was authenticated (µs since the Unix epoch), 0 before.
    static CONNECTED_AT: Cell<i64> = const { Cell::new(0) };
    /// Top-level statements run in this session.
    static STATEMENTS: Cell<u64> = const { Cell::new(0) };
    /// A top-level utility statement is running (its own queries are not counted).
    static IN_TOP_UTILITY: Cell<bool> = const { Cell::new(false) };
    /// A record is being written from the error-report hook (no re-entry).
    static REPORTING: Cell<bool> = const { Cell::new(false) };
}

/// A utility statement from the client starts (for the disconnection record's count).
pub fn top_level_utility_starts() {
    STATEMENTS.with(|s| s.set(s.get() + 1));
    IN_TOP_UTILITY.with(|u| u.set(true));
}

/// It ended (an ERROR instead ends it at the (sub)transaction abort: [`at_abort`]).
pub fn top_level_utility_ends() {
    IN_TOP_UTILITY.with(|u| u.set(false));
}

/// A query starts outside any function: counted unless a utility statement runs it
/// (EXECUTE, CREATE TABLE AS, EXPLAIN ANALYZE).
pub fn unnested_query_starts() {
    if !IN_TOP_UTILITY.with(Cell::get) {
        STATEMENTS.with(|s| s.set(s.get() + 1));
    }
}

/// Transaction or subtransaction abort.
pub fn at_abort() {
    IN_TOP_UTILITY.with(|u| u.set(false));
}

/// Runs `f` quietly, catching any panic: nothing may escape into PostgreSQL's
/// authentication or error reporting.
fn guarded(f: impl FnOnce()) {
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| spool::quietly(f)));
}

/// A record's member value, already JSON.
type Member = (&'static str, Vec<u8>);

fn json_string(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() + 2);
    json::push_string(&mut out, value);
    out
}

/// `,"connection":{…}` with `extra` members, all in name order (canonical form).
fn write_connection(out: &mut Vec<u8>, connection: &port::Connection, extra: Vec<Member>) {
    let optional = |value: &str| {
        if value.is_empty() {
            b"null".to_vec()
        } else {
            json_string(value.as_bytes())
        }
    };
    let mut members: Vec<Member> = vec![
        ("role", json_string(connection.user_name.as_bytes())),
        ("database", json_string(connection.database_name.as_bytes())),
        ("client_addr", optional(&connection.remote_host)),
        (
            "client_port",
            connection
                .remote_port
                .map_or_else(|| b"null".to_vec(), |p| p.to_string().into_bytes()),
        ),
        (
            "method",
            connection
                .auth_method
                .map_or_else(|| b"null".to_vec(), |m| json_string(m.as_bytes())),
        ),
        (
            "ssl",
            if connection.ssl {
                b"true".to_vec()
            } else {
                b"false".to_vec()
            },
        ),
        (
            "application_name",
            json_string(connection.application_name.as_bytes()),
        ),
    ];
    members.extend(extra);
    members.sort_by_key(|(name, _)| *name);
    out.extend_from_slice(b",\"connection\":{");
    for (i, (name, value)) in members.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json::push_string(out, name.as_bytes());
        out.push(b':');
        out.extend_from_slice(value);
    }
    out.push(b'}');
}

fn spool_connection(action: &str, connection: &port::Connection, extra: Vec<Member>) {
    let Some(identity) = spool::identity() else {
        return;
    };
    let mut who = Who::without_catalog();
    if who.session_user.is_empty() {
        who.session_user = connection.user_name.clone();
    }
    let _ = record::spool_record(
        identity,
        action,
        &who,
        |out| write_connection(out, connection, extra),
        LineMember::Absent,
    );
}

/// The ClientAuthentication hook: `status` is PostgreSQL's verdict. Failures are
/// recorded from the error report that follows (which also covers pg_hba.conf
/// rejections, reported before this hook runs).
///
/// # Safety
/// `port` is PostgreSQL's Port of this backend.
pub unsafe fn at_client_authentication(port: *mut c_void, status: c_int) {
    if status != port::STATUS_OK || !settings::log_connections() {
        return;
    }
    guarded(|| {
        // SAFETY: per the contract.
        let Some(connection) = (unsafe { port::read(port) }) else {
            return;
        };
        spool_connection("connect", &connection, Vec::new());
        CONNECTED_AT.with(|c| c.set(time::now_unix_micros()));
        // SAFETY: registers a callback PostgreSQL runs once at backend exit.
        unsafe { pg_sys::before_shmem_exit(Some(at_backend_exit), pg_sys::Datum::from(0)) };
    });
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn at_backend_exit(_code: c_int, _arg: pg_sys::Datum) {
    let connected_at = CONNECTED_AT.with(Cell::get);
    if connected_at == 0 || !settings::log_connections() {
        return;
    }
    guarded(|| {
        let connection = port::current().unwrap_or_default();
        // Integers only: records are canonicalised (RFC 8785) for the hash chain.
        let micros = (time::now_unix_micros() - connected_at).max(0);
        let statements = STATEMENTS.with(Cell::get);
        spool_connection(
            "disconnect",
            &connection,
            vec![
                ("duration_us", micros.to_string().into_bytes()),
                ("statements", statements.to_string().into_bytes()),
            ],
        );
    });
}

/// Why an authentication failed, from PostgreSQL's report (never its text).
pub fn failure_class(sqlstate: &str, message: &str, detail_log: &str) -> &'static str {
    if detail_log.starts_with("Role \"") && detail_log.contains("does not exist") {
        return "unknown_role";
    }
    match sqlstate {
        "28P01" => "invalid_password",
        "28000" if message.starts_with("pg_hba.conf rejects") => "rejected_by_pg_hba",
        "28000" if message.starts_with("no pg_hba.conf entry") => "no_pg_hba_entry",
        "28000" => "invalid_authorization",
        "08P01" => "protocol_violation",
        _ => "other",
    }
}

fn sqlstate_text(code: c_int) -> String {
    // SAFETY: unpack_sql_state returns a static buffer with the five characters.
    unsafe { CStr::from_ptr(pg_sys::unpack_sql_state(code)) }
        .to_string_lossy()
        .into_owned()
}

fn cstr(raw: *const std::ffi::c_char) -> String {
    if raw.is_null() {
        return String::new();
    }
    // SAFETY: ErrorData strings are NUL-terminated while the report is emitted.
    unsafe { CStr::from_ptr(raw) }
        .to_string_lossy()
        .into_owned()
}

/// The error-report hook: a failed authentication, or an ERROR in an audited session.
///
/// # Safety
/// `edata` is the report PostgreSQL is emitting.
pub unsafe fn at_error_report(edata: *mut pg_sys::ErrorData) {
    if edata.is_null() || REPORTING.with(|r| r.replace(true)) {
        return;
    }
    guarded(|| {
        // SAFETY: per the contract; plain reads of process globals.
        let (elevel, code, in_authentication, backend) = unsafe {
            (
                (*edata).elevel,
                (*edata).sqlerrcode,
                pg_sys::ClientAuthInProgress,
                pg_sys::MyBackendType == pg_sys::BackendType::B_BACKEND,
            )
        };
        if !backend {
            return;
        }
        if in_authentication {
            if elevel >= pg_sys::FATAL as c_int && settings::log_connections() {
                let connection = port::current().unwrap_or_default();
                let sqlstate = sqlstate_text(code);
                // SAFETY: per the contract.
                let (message, detail_log) =
                    unsafe { (cstr((*edata).message), cstr((*edata).detail_log)) };
                let class = failure_class(&sqlstate, &message, &detail_log);
                spool_connection(
                    "authentication_failed",
                    &connection,
                    vec![
                        ("failure", json_string(class.as_bytes())),
                        ("sqlstate", json_string(sqlstate.as_bytes())),
                    ],
                );
            }
            return;
        }
        if elevel == pg_sys::PGERROR as c_int && audited_session() {
            // SAFETY: per the contract.
            let message = unsafe { cstr((*edata).message) };
            spool_error(&sqlstate_text(code), &message);
        }
    });
    REPORTING.with(|r| r.set(false));
}

/// Whether this session is audited at all (an error record then belongs in its trail).
fn audited_session() -> bool {
    settings::session_stream_enabled()
        && settings::feature_enabled()
        && (settings::log_classes() != 0 || settings::audit_role_name().is_some())
}

/// The statement text an error record shows, and whether it was redacted.
fn statement_text() -> (Option<Vec<u8>>, bool) {
    if !settings::log_statement() {
        return (Some(b"<not logged>".to_vec()), false);
    }
    // SAFETY: the current query's source text (NUL-terminated) or NULL.
    let raw = unsafe { pg_sys::debug_query_string };
    if raw.is_null() {
        return (None, false);
    }
    // SAFETY: as above.
    let text = unsafe { CStr::from_ptr(raw) }.to_bytes();
    let redacted = format::redact_password(text).or_else(|| format::redact_siem_secrets(text));
    let secret = redacted.is_some();
    let text = redacted.unwrap_or_else(|| text.to_vec());
    (
        Some(format::truncate(&text, settings::log_max_string_length()).into_owned()),
        secret,
    )
}

fn spool_error(sqlstate: &str, message: &str) {
    let Some(identity) = spool::identity() else {
        return;
    };
    let (statement, redacted) = statement_text();
    let ids = stack::top_id()
        .and_then(|id| stack::with_event(id, |e| (e.statement_id, e.substatement_id)))
        .filter(|(statement_id, _)| *statement_id > 0);
    let who = Who::without_catalog();
    let audit_and_error = |out: &mut Vec<u8>| {
        // Members in name order (canonical form).
        out.extend_from_slice(b",\"audit\":{\"statement\":");
        match &statement {
            Some(text) => json::push_string(out, text),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"statement_id\":");
        match ids {
            Some((statement_id, substatement_id)) => {
                record::push_integer(out, statement_id);
                out.extend_from_slice(b",\"substatement_id\":");
                record::push_integer(out, substatement_id);
            }
            None => out.extend_from_slice(b"null,\"substatement_id\":null"),
        }
        out.extend_from_slice(b"},\"error\":{\"message\":");
        if redacted {
            json::push_string(out, format::REDACTED);
        } else {
            json::push_string(out, message.as_bytes());
        }
        out.extend_from_slice(b",\"severity\":\"ERROR\",\"sqlstate\":");
        json::push_string(out, sqlstate.as_bytes());
        out.push(b'}');
    };
    let _ = record::spool_record(identity, "error", &who, audit_and_error, LineMember::Null);
}

#[cfg(test)]
mod tests {
    use super::failure_class;

    #[test]
    fn failures_are_classified_without_their_text() {
        assert_eq!(
            failure_class(
                "28P01",
                "password authentication failed for user \"bob\"",
                ""
            ),
            "invalid_password"
        );
        assert_eq!(
            failure_class(
                "28P01",
                "password authentication failed for user \"x\"",
                "Role \"x\" does not exist."
            ),
            "unknown_role"
        );
        assert_eq!(
            failure_class(
                "28000",
                "pg_hba.conf rejects connection for host \"127.0.0.1\"",
                ""
            ),
            "rejected_by_pg_hba"
        );
        assert_eq!(
            failure_class("28000", "no pg_hba.conf entry for host \"127.0.0.1\"", ""),
            "no_pg_hba_entry"
        );
        assert_eq!(
            failure_class("53300", "sorry, too many clients already", ""),
            "other"
        );
    }
}
