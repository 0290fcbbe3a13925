//! Classification and emission of one audit event: pgAudit's `log_audit_event`.
//!
//! # Invariants
//! - An event is emitted at most once per pass (`logged`), only if it was object-granted
//!   or its class is in the effective `pgaudit.log` bitmap, and never while an extension
//!   script runs (`creating_extension`).
//! - Statement and substatement ids are assigned at the first emission that passes the
//!   filters, so filtered statements consume no ids (sequential ids, as pgAudit).
//! - Lines go out with `errhidestmt` and `errhidecontext`, at `LOG_SERVER_ONLY` unless
//!   `pgaudit.log_client` is on, so they never leak to the client by default.
//! - No `RefCell` borrow of the stack is held while PostgreSQL runs type output
//!   functions or `ereport` (either can re-enter our hooks).

use std::cell::RefCell;
use std::ffi::{c_char, CStr};

use pgrx::pg_sys;

use super::format::{self, Line, Parameters, StatementPart};
use super::stack::{self, AuditEvent, StackId};
use crate::settings::log_classes as classes;

use crate::pg::unguarded;
use crate::settings;

/// Class name printed in the line and the bit that gates it.
fn classify(event: &AuditEvent) -> (&'static str, u32, bool) {
    use pg_sys::CommandTag::*;
    use pg_sys::LogStmtLevel::*;
    use pg_sys::NodeTag::*;
    let mut redact = false;
    let (name, bit) = match event.log_level {
        LOGSTMT_MOD => match event.node_tag {
            T_ExecuteStmt => ("MISC", classes::MISC),
            _ => ("WRITE", classes::WRITE),
        },
        LOGSTMT_DDL => match event.node_tag {
            T_CreateRoleStmt | T_AlterRoleStmt => {
                redact = true;
                ("ROLE", classes::ROLE)
            }
            T_GrantStmt
            | T_GrantRoleStmt
            | T_DropRoleStmt
            | T_AlterRoleSetStmt
            | T_AlterDefaultPrivilegesStmt => ("ROLE", classes::ROLE),
            T_RenameStmt | T_DropStmt
                if matches!(event.command, CMDTAG_ALTER_ROLE | CMDTAG_DROP_ROLE) =>
            {
                ("ROLE", classes::ROLE)
            }
            _ => ("DDL", classes::DDL),
        },
        LOGSTMT_ALL => match event.node_tag {
            T_CopyStmt | T_DeclareCursorStmt | T_SelectStmt | T_PrepareStmt | T_PlannedStmt => {
                ("READ", classes::READ)
            }
            T_DoStmt => ("FUNCTION", classes::FUNCTION),
            T_VariableSetStmt => ("MISC", classes::MISC_SET),
            _ => ("MISC", classes::MISC),
        },
        _ => ("MISC", classes::MISC),
    };
    (name, bit, redact)
}

thread_local! {
    /// Reused line buffer: audit lines are built without a fresh allocation each time.
    static LINE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Logs the event `id` if it qualifies. Returns whether a line was emitted.
///
/// Three phases keep borrows of the stack away from PostgreSQL calls without copying the
/// event: decide (borrow), run parameter output functions (no borrow), then assign ids
/// and write the line straight from the event (borrow); `ereport` runs after that.
pub fn log_event(id: StackId) -> bool {
    // SAFETY: plain read of a backend-global flag.
    if unsafe { pg_sys::creating_extension } {
        return false;
    }
    let log_statement = settings::log_statement();
    let decision = stack::with_event(id, |e| {
        if e.logged {
            return None;
        }
        let (class_name, class_bit, redact) = classify(e);
        if redact && e.redacted_text.is_none() && !e.text.is_null() {
            // SAFETY: `text` is PostgreSQL's NUL-terminated source text, alive with the entry.
            let text = unsafe { CStr::from_ptr(e.text) }.to_bytes();
            e.redacted_text = format::redact_password(text);
        }
        if !e.granted && settings::log_classes() & class_bit == 0 {
            return None;
        }
        if e.nested && !settings::log_nested_statements() {
            return None;
        }
        let print_text = log_statement && !(e.statement_logged && settings::log_statement_once());
        if e.carries_secrets && !redact {
            e.redacted_text = Some(format::REDACTED.to_vec());
        }
        if print_text && !redact && e.redacted_text.is_none() && !e.text.is_null() {
            // SAFETY: as above.
            let text = unsafe { CStr::from_ptr(e.text) }.to_bytes();
            e.redacted_text = format::redact_siem_secrets(text);
        }
        // Parameters of a redacted statement may be the secrets themselves.
        let params = if e.redacted_text.is_some() && !redact {
            std::ptr::null_mut()
        } else {
            e.params
        };
        Some((class_name, print_text, params))
    })
    .flatten();
    let Some((class_name, print_text, params)) = decision else {
        return false;
    };
    let parameter_values =
        (print_text && settings::log_parameter()).then(|| parameter_strings(params));
    let max_string_length = settings::log_max_string_length();
    let rows_enabled = settings::log_rows();
    let stream = settings::session_stream_enabled();
    let mut line = LINE.take();
    let written = stack::with_event_and_counters(id, |e, counters| {
        counters.assign(e);
        let text: Option<&[u8]> = match &e.redacted_text {
            Some(redacted) => Some(redacted),
            // SAFETY: as above.
            None if !e.text.is_null() => Some(unsafe { CStr::from_ptr(e.text) }.to_bytes()),
            None => None,
        };
        let statement = if print_text {
            StatementPart::Text {
                text,
                parameters: match &parameter_values {
                    Some(values) => Parameters::Values(values),
                    None => Parameters::NotLogged,
                },
            }
        } else if !log_statement {
            StatementPart::NotLogged
        } else {
            StatementPart::PreviouslyLogged
        };
        // SAFETY: GetCommandTagName returns a static NUL-terminated name for every tag and
        // cannot raise an ERROR, so it is called without pgrx's per-call guard.
        let command = unsafe { CStr::from_ptr(unguarded::GetCommandTagName(e.command)) }.to_bytes();
        let fields = Line {
            object_audit: e.granted,
            statement_id: e.statement_id,
            substatement_id: e.substatement_id,
            class: class_name,
            command,
            object_type: e.object_type.as_deref(),
            object_name: e.object_name.as_deref(),
            statement,
            rows: rows_enabled.then_some(e.rows),
        };
        format::write_line(&mut line, &fields, max_string_length);
        // The stream's record is built from the same fields; `None`: no stream.
        let streamed =
            stream.then(|| super::record::spool(&fields, &line, max_string_length).is_ok());
        if print_text {
            e.statement_logged = true;
        }
        e.logged = true;
        streamed
    });
    if let Some(streamed) = written {
        // The server log keeps the line unless the stream took it and is told to be the
        // only destination; a record the spool refused always goes there.
        if streamed != Some(true) || settings::session_stream_server_log() {
            line.push(0);
            emit(settings::audit_elevel(), &line);
        }
        if streamed == Some(false) {
            warn_fallback();
        }
    }
    // A huge statement's line is not kept for the rest of the session.
    if line.capacity() > 64 * 1024 {
        line = Vec::new();
    }
    LINE.set(line);
    written.is_some()
}

thread_local! {
    static LAST_FALLBACK_WARNING: std::cell::Cell<Option<std::time::Instant>> = const { std::cell::Cell::new(None) };
}

/// A WARNING (at most every 10 s per backend) that records fall back to the server log.
fn warn_fallback() {
    let now = std::time::Instant::now();
    let due = LAST_FALLBACK_WARNING.with(|last| {
        let due = last
            .get()
            .is_none_or(|t| now.duration_since(t) >= std::time::Duration::from_secs(10));
        if due {
            last.set(Some(now));
        }
        due
    });
    if due {
        pgrx::warning!("pgaudit_siem: the session-audit spool is full or unusable; AUDIT records go to the server log (see pgaudit_siem.session_audit_stats)");
    }
}

/// Output-function text of each parameter slot (`None` for NULL or untyped), as pgAudit.
fn parameter_strings(params: pg_sys::ParamListInfo) -> Vec<Option<Vec<u8>>> {
    if params.is_null() {
        return Vec::new();
    }
    // SAFETY: `params` is our copy (copyParamList), alive as long as the entry; the
    // flexible array holds `numParams` initialised slots.
    unsafe {
        let count = (*params).numParams.max(0) as usize;
        let slots = (*params).params.as_slice(count);
        slots
            .iter()
            .map(|p| {
                if p.isnull || p.ptype == pg_sys::InvalidOid {
                    return None;
                }
                let mut output_fn = pg_sys::InvalidOid;
                let mut is_varlena = false;
                pg_sys::getTypeOutputInfo(p.ptype, &mut output_fn, &mut is_varlena);
                let text = pg_sys::OidOutputFunctionCall(output_fn, p.value);
                let bytes = CStr::from_ptr(text).to_bytes().to_vec();
                pg_sys::pfree(text.cast());
                Some(bytes)
            })
            .collect()
    }
}

/// `ereport(level, errmsg_internal("%s", line), errhidestmt(true), errhidecontext(true))`.
/// `line` must be NUL-terminated.
fn emit(level: i32, line: &[u8]) {
    debug_assert_eq!(line.last(), Some(&0));
    let message = line.as_ptr() as *const c_char;
    // SAFETY: the elog calls follow the ereport protocol (errstart, then detail calls,
    // then errfinish). `message` outlives the call and is NUL-terminated. The level is
    // never ERROR or above, so errfinish returns; should PostgreSQL raise an ERROR inside
    // (out of memory), pg_guard_ffi_boundary turns the longjmp into a Rust panic that
    // unwinds through our frames and becomes an ERROR again at the hook's #[pg_guard].
    unsafe {
        pg_sys::ffi::pg_guard_ffi_boundary(|| {
            if unguarded::errstart(level, std::ptr::null()) {
                pg_sys::errmsg_internal(c"%s".as_ptr(), message);
                pg_sys::errhidestmt(true);
                pg_sys::errhidecontext(true);
                unguarded::errfinish(
                    c"session_audit/emit.rs".as_ptr(),
                    line!() as i32,
                    c"log_audit_event".as_ptr(),
                );
            }
        });
    }
}
