//! Session audit as a subscriber of the hook dispatcher (`crate::hooks`): what it does
//! before and after each PostgreSQL hook's standard processing (pgAudit 1.7 semantics,
//! with the fixes listed in `pgaudit_compat/README.md`).
//!
//! # How it works
//! - ExecutorStart pushes an executor event (command from the operation, source text,
//!   parameters) and, after the standard processing, hands its lifetime to
//!   `es_query_cxt`.
//! - ExecutorCheckPerms runs the relation pass (session and object lines) on the top
//!   event, or stores the range table for ExecutorEnd when `log_rows` is on.
//! - ExecutorRun counts rows; ExecutorEnd runs the deferred pass.
//! - ProcessUtility pushes a utility event and logs it after the statement succeeded
//!   (DO, CREATE/ALTER EXTENSION and CLOSE before, as pgAudit).
//! - Function execution (object access) logs FUNCTION lines.
//!
//! # Invariants
//! - Every function returns plain `Copy` values: the dispatcher lets ERRORs longjmp
//!   through its frames between the `before` and `after` halves.
//! - With `pgaudit.featureEnabled = off`, or for the extension's own statements, nothing
//!   here does work beyond reading two flags.

use std::ffi::c_char;

use pgrx::pg_sys;

use super::emit;
use super::error::AuditError;
use super::nesting;
use super::relations;
use super::stack::{self, AuditEvent, StackId};
use crate::pg::unguarded;
use crate::settings;
use crate::settings::log_classes as classes;

// ---- Shared predicates ----

/// Whether auditing applies to this backend right now.
fn active() -> bool {
    // SAFETY: plain read of a backend-global int; parallel workers never audit (only the
    // leader logs, as pgAudit since 1.7.1's successors).
    settings::feature_enabled() && unsafe { pg_sys::ParallelWorkerNumber } < 0
}

fn transaction_aborted() -> bool {
    // SAFETY: reads transaction state; valid in any backend and cannot raise an ERROR.
    unsafe { unguarded::IsAbortedTransactionBlockState() }
}

// ---- Executor ----

/// Before ExecutorStart: pushes the statement's executor event.
pub fn executor_start_before(query_desc: *mut pg_sys::QueryDesc) -> Option<StackId> {
    if !active() || crate::pg::internal::active() {
        return None;
    }
    // SAFETY: PostgreSQL passes a valid QueryDesc.
    let qd = unsafe { &*query_desc };
    use pg_sys::CmdType::*;
    let (log_level, node_tag, command) = match qd.operation {
        CMD_SELECT => (
            pg_sys::LogStmtLevel::LOGSTMT_ALL,
            pg_sys::NodeTag::T_SelectStmt,
            pg_sys::CommandTag::CMDTAG_SELECT,
        ),
        CMD_INSERT => (
            pg_sys::LogStmtLevel::LOGSTMT_MOD,
            pg_sys::NodeTag::T_InsertStmt,
            pg_sys::CommandTag::CMDTAG_INSERT,
        ),
        CMD_UPDATE => (
            pg_sys::LogStmtLevel::LOGSTMT_MOD,
            pg_sys::NodeTag::T_UpdateStmt,
            pg_sys::CommandTag::CMDTAG_UPDATE,
        ),
        CMD_DELETE => (
            pg_sys::LogStmtLevel::LOGSTMT_MOD,
            pg_sys::NodeTag::T_DeleteStmt,
            pg_sys::CommandTag::CMDTAG_DELETE,
        ),
        _ => (
            pg_sys::LogStmtLevel::LOGSTMT_ALL,
            pg_sys::NodeTag::T_Invalid,
            pg_sys::CommandTag::CMDTAG_UNKNOWN,
        ),
    };
    let mut event = AuditEvent::new(nesting::nested());
    event.log_level = log_level;
    event.node_tag = node_tag;
    event.command = command;
    event.text = qd.sourceText;
    event.params = copy_params(qd.params);
    Some(stack::push(event))
}

/// After ExecutorStart: the event lives as long as the query's EState.
pub fn executor_start_after(pushed: Option<StackId>, query_desc: *mut pg_sys::QueryDesc) {
    if let Some(id) = pushed {
        // SAFETY: standard_ExecutorStart created the EState.
        let query_context = unsafe { (*(*query_desc).estate).es_query_cxt };
        stack::set_owner(id, query_context);
        if settings::log_rows() {
            stack::with_event(id, |e| e.query_context = query_context);
        }
    }
}

/// Deep copy of a parameter list (PostgreSQL's `copyParamList`, which also materialises
/// dynamic PL/pgSQL parameters) when parameters will be logged; NULL otherwise.
fn copy_params(params: pg_sys::ParamListInfo) -> pg_sys::ParamListInfo {
    if params.is_null() || !settings::log_parameter() {
        return std::ptr::null_mut();
    }
    // SAFETY: copyParamList reads a valid list and pallocs the copy in the current context.
    unsafe { pg_sys::copyParamList(params) }
}

/// ExecutorCheckPerms: the relation pass now, or deferred to ExecutorEnd for log_rows.
pub fn executor_check_perms(range_table: *mut pg_sys::List) {
    if !active() || transaction_aborted() {
        return;
    }
    let audit_oid = audit_role_oid();
    if audit_oid == pg_sys::InvalidOid && settings::log_classes() == classes::NONE {
        return;
    }
    // An empty stack means another extension skipped our ExecutorStart, or the master
    // switch was turned on mid-statement: nothing to attach lines to.
    if let Some(top) = stack::top_id() {
        if settings::log_rows() {
            stack::with_event(top, |e| {
                e.audit_oid = audit_oid;
                e.range_table = range_table;
            });
        } else {
            relations::log_select_dml(top, audit_oid, range_table);
        }
    }
}

fn audit_role_oid() -> pg_sys::Oid {
    match settings::audit_role_name() {
        // SAFETY: get_role_oid with missing_ok = true never raises for a missing role.
        Some(name) => unsafe { pg_sys::get_role_oid(name.as_ptr(), true) },
        None => pg_sys::InvalidOid,
    }
}

/// After ExecutorRun: counts the rows for `log_rows`.
pub fn executor_run_after(query_desc: *mut pg_sys::QueryDesc) {
    if settings::log_rows() && active() && !crate::pg::internal::active() {
        // SAFETY: the EState is valid between ExecutorStart and ExecutorEnd.
        let (context, processed) = unsafe {
            let estate = (*query_desc).estate;
            ((*estate).es_query_cxt, (*estate).es_processed)
        };
        if let Some(id) = stack::find_by_query_context(context) {
            stack::with_event(id, |e| e.rows += processed as i64);
        }
    }
}

/// Before ExecutorEnd: the deferred relation pass (`log_rows`).
pub fn executor_end_before(query_desc: *mut pg_sys::QueryDesc) {
    if settings::log_rows() && active() && !crate::pg::internal::active() {
        // SAFETY: the EState is still valid in ExecutorEnd.
        let context = unsafe { (*(*query_desc).estate).es_query_cxt };
        if let Some(id) = stack::find_by_query_context(context) {
            let deferred = stack::with_event(id, |e| (e.audit_oid, e.range_table));
            if let Some((audit_oid, range_table)) = deferred {
                if !range_table.is_null() {
                    relations::log_select_dml(id, audit_oid, range_table);
                }
            }
        }
    }
}

/// Statements run inside executor runs, the planner (constant folding) and DO/CALL are
/// nested.
pub fn enter_nested() {
    nesting::enter();
}

pub fn leave_nested() {
    nesting::leave();
}

/// At transaction abort: forget the depth and the stack.
pub fn at_abort() {
    nesting::reset();
    stack::clear_after_abort();
}

// ---- Utility statements ----

/// Entries a top-level utility statement may find on the stack: portals that outlive
/// their statement (open cursors, suspended extended-protocol portals, procedures).
/// pgAudit 1.7.0 allowed only the first three and wrongly refused the others
/// (behaviour spec quirk Q9).
fn may_outlive_statement(tag: pg_sys::NodeTag) -> bool {
    use pg_sys::NodeTag::*;
    matches!(
        tag,
        T_SelectStmt
            | T_VariableShowStmt
            | T_ExplainStmt
            | T_CallStmt
            | T_FetchStmt
            | T_ExecuteStmt
    ) || matches!(tag, T_InsertStmt | T_UpdateStmt | T_DeleteStmt | T_Invalid)
}

/// What [`utility_before`] hands to [`utility_after`].
#[derive(Clone, Copy)]
pub struct UtilityState {
    pushed: Option<StackId>,
    routine: bool,
}

/// Before ProcessUtility: pushes the statement's event; logs DO, CREATE/ALTER EXTENSION
/// and CLOSE now (pgAudit does).
pub fn utility_before(
    pstmt: *mut pg_sys::PlannedStmt,
    query_string: *const c_char,
    context: pg_sys::ProcessUtilityContext::Type,
    params: pg_sys::ParamListInfo,
) -> UtilityState {
    use pg_sys::NodeTag::*;
    use pg_sys::ProcessUtilityContext::*;
    // SAFETY: PostgreSQL passes a valid PlannedStmt wrapping a utility statement.
    let utility = unsafe { (*pstmt).utilityStmt };
    let node_tag = unsafe { (*utility).type_ };
    let mut pushed = None;
    if active()
        && context <= PROCESS_UTILITY_QUERY
        && !crate::pg::internal::active()
        && !transaction_aborted()
    {
        if context == PROCESS_UTILITY_TOPLEVEL && !stack::all_node_tags(may_outlive_statement) {
            AuditError::StackNotEmpty.raise();
        }
        let mut event = AuditEvent::new(nesting::nested());
        if context == PROCESS_UTILITY_TOPLEVEL {
            event.params = copy_params(params);
        }
        // SAFETY: PostgreSQL's classifiers accept any utility statement node and only
        // warn (never raise an ERROR) on unknown ones, so they are called unguarded.
        unsafe {
            event.log_level = unguarded::GetCommandLogLevel(utility);
            event.command = unguarded::CreateCommandTag(utility);
        }
        event.node_tag = node_tag;
        event.text = query_string;
        let id = stack::push(event);
        let bits = settings::log_classes();
        if bits & classes::FUNCTION != 0 && node_tag == T_DoStmt {
            emit::log_event(id);
        }
        if bits & classes::DDL != 0
            && matches!(node_tag, T_CreateExtensionStmt | T_AlterExtensionStmt)
        {
            emit::log_event(id);
        }
        // CLOSE frees the cursor, whose portal context may own this very entry: log
        // first and forget it.
        if node_tag == T_ClosePortalStmt {
            if bits & classes::MISC != 0 {
                emit::log_event(id);
            }
        } else {
            pushed = Some(id);
        }
    }
    let routine = matches!(node_tag, T_DoStmt | T_CallStmt);
    if routine {
        nesting::enter();
    }
    UtilityState { pushed, routine }
}

/// After ProcessUtility succeeded: logs the statement.
pub fn utility_after(state: UtilityState) {
    if state.routine {
        nesting::leave();
    }
    if let Some(id) = state.pushed {
        if !transaction_aborted() {
            if !stack::contains(id) {
                let top = stack::top_id().unwrap_or(-1);
                AuditError::ItemNotFound {
                    id: id as i64,
                    top: top as i64,
                }
                .raise();
            }
            let logged = stack::with_event(id, |e| e.logged).unwrap_or(true);
            if settings::log_classes() != classes::NONE && !logged {
                emit::log_event(id);
            }
        }
    }
}

// ---- Function execution ----

/// object_access_hook: logs function execution (FUNCTION class).
pub fn object_access(access: pg_sys::ObjectAccessType::Type, object_id: pg_sys::Oid) {
    if access == pg_sys::ObjectAccessType::OAT_FUNCTION_EXECUTE
        && active()
        && settings::log_classes() & classes::FUNCTION != 0
        && !stack::is_empty()
        && !crate::pg::internal::active()
        && !transaction_aborted()
    {
        log_function_execute(object_id);
    }
}

fn log_function_execute(function_oid: pg_sys::Oid) {
    let row = crate::pg::syscache::with_row(
        pg_sys::SysCacheIdentifier::PROCOID,
        function_oid.into(),
        0.into(),
        |row| {
            // SAFETY: the PROCOID cache covers pg_proc.
            let form = unsafe { row.form::<pg_sys::FormData_pg_proc>() };
            (form.pronamespace, form.proname)
        },
    );
    let Some((namespace, name)) = row else {
        AuditError::FunctionLookup {
            oid: u32::from(function_oid),
        }
        .raise();
    };
    if namespace == pg_sys::Oid::from(pg_sys::PG_CATALOG_NAMESPACE) {
        return;
    }
    // SAFETY: `name` is a copied NameData (NUL-terminated within 64 bytes).
    let object_name = unsafe {
        let schema = pg_sys::get_namespace_name(namespace);
        let quoted = pg_sys::quote_qualified_identifier(schema, name.data.as_ptr());
        let bytes = std::ffi::CStr::from_ptr(quoted).to_bytes().to_vec();
        pg_sys::pfree(quoted.cast());
        bytes
    };
    // A call is as nested as the statement that makes it (CALL p() itself is top-level).
    let mut event = AuditEvent::new(false);
    event.log_level = pg_sys::LogStmtLevel::LOGSTMT_ALL;
    event.node_tag = pg_sys::NodeTag::T_DoStmt;
    event.command = pg_sys::CommandTag::CMDTAG_EXECUTE;
    event.object_type = Some(b"FUNCTION".as_slice().into());
    event.object_name = Some(object_name);
    // A call of configure() and the like: neither this line nor the statements making
    // the call (not logged yet) show their text, which holds the secrets.
    let secrets = crate::pg::internal::takes_secrets(function_oid);
    if secrets {
        stack::mark_carrying_secrets();
    }
    let id = stack::push_transient(event);
    let (text, redacted, parent_nested) = stack::text_below(id);
    stack::with_event(id, |e| {
        e.text = text;
        e.redacted_text = redacted;
        e.nested = parent_nested;
        e.carries_secrets = secrets;
    });
    emit::log_event(id);
    stack::pop(id);
}

/// One of pgaudit_siem's secret-bearing functions (configure, test_connection) started:
/// no statement running it logs its text or parameters (an `EXECUTE` of a prepared call
/// carries the secrets as its own arguments, a wrapper function as its own).
pub fn statement_carries_secrets() {
    super::stack::mark_carrying_secrets();
}
