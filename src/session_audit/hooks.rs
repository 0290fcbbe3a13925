//! Executor, utility, planner and object-access hooks for session and object audit
//! logging (pgAudit 1.7 semantics, with the fixes listed in `pgaudit_compat/README.md`).
//!
//! # How it works
//! - `ExecutorStart` pushes an executor event (command from the operation, source text,
//!   parameters) and, after the next hook ran, hands its lifetime to `es_query_cxt`.
//! - `ExecutorCheckPerms` runs the relation pass (session and object lines) on the top
//!   event, or stores the range table for `ExecutorEnd` when `log_rows` is on.
//! - `ExecutorRun` counts rows; `ExecutorEnd` runs the deferred pass.
//! - `ProcessUtility` pushes a utility event and logs it after the statement succeeded
//!   (DO, CREATE/ALTER EXTENSION and CLOSE before, as pgAudit).
//! - `object_access_hook` logs function executions.
//! - `ExecutorRun`/`ExecutorFinish`, the planner, and DO/CALL execution raise a nesting
//!   depth, so events pushed inside functions, procedures, DO blocks and triggers are
//!   marked nested (for `pgaudit.log_nested_statements`).
//!
//! # Panic / unwind safety, and error transparency
//! Every hook is `#[pg_guard]`, so a panic or an ERROR raised by our own code becomes a
//! PostgreSQL ERROR. The next hook (or `standard_*`) is called through *raw* declarations
//! (`chain` below), not pgrx's guarded bindings: an ERROR raised by the statement itself
//! then longjmps through our frames exactly as through a C extension's, and reaches the
//! client untouched (pgrx's round-trip would drop constraint/table/column names, cursor
//! position and context, and append Rust backtraces). For that to be sound, no value with
//! a destructor is alive in our frames at those calls (they are "plain old frames",
//! RFC 2945), and state changed around the call is restored without `Drop`: the nesting
//! depth resets when the audit stack empties and at transaction abort, and an elevated
//! user id is restored by PostgreSQL's (sub)transaction abort.
//!
//! # Fast path
//! With `pgaudit.featureEnabled = off` every hook only chains to the next one.

use std::cell::Cell;
use std::ffi::{c_char, c_int, c_void};

use pgrx::pg_sys;
use pgrx::prelude::*;

use super::classes;
use super::emit;
use super::relations;
use super::stack::{self, AuditEvent};
use crate::gucs;

static mut PREV_EXECUTOR_START: pg_sys::ExecutorStart_hook_type = None;
static mut PREV_EXECUTOR_CHECK_PERMS: pg_sys::ExecutorCheckPerms_hook_type = None;
static mut PREV_EXECUTOR_RUN: pg_sys::ExecutorRun_hook_type = None;
static mut PREV_EXECUTOR_FINISH: pg_sys::ExecutorFinish_hook_type = None;
static mut PREV_EXECUTOR_END: pg_sys::ExecutorEnd_hook_type = None;
static mut PREV_PROCESS_UTILITY: pg_sys::ProcessUtility_hook_type = None;
static mut PREV_OBJECT_ACCESS: pg_sys::object_access_hook_type = None;
static mut PREV_PLANNER: pg_sys::planner_hook_type = None;

/// Installs the hooks, saving the previous ones to chain to. `_PG_init` only.
pub fn init() {
    // SAFETY: _PG_init runs once in the postmaster before any backend exists, so nothing
    // reads these pointers concurrently.
    unsafe {
        PREV_EXECUTOR_START = pg_sys::ExecutorStart_hook;
        pg_sys::ExecutorStart_hook = Some(executor_start);
        PREV_EXECUTOR_CHECK_PERMS = pg_sys::ExecutorCheckPerms_hook;
        pg_sys::ExecutorCheckPerms_hook = Some(executor_check_perms);
        PREV_EXECUTOR_RUN = pg_sys::ExecutorRun_hook;
        pg_sys::ExecutorRun_hook = Some(executor_run);
        PREV_EXECUTOR_FINISH = pg_sys::ExecutorFinish_hook;
        pg_sys::ExecutorFinish_hook = Some(executor_finish);
        PREV_EXECUTOR_END = pg_sys::ExecutorEnd_hook;
        pg_sys::ExecutorEnd_hook = Some(executor_end);
        PREV_PROCESS_UTILITY = pg_sys::ProcessUtility_hook;
        pg_sys::ProcessUtility_hook = Some(process_utility);
        PREV_OBJECT_ACCESS = pg_sys::object_access_hook;
        pg_sys::object_access_hook = Some(object_access);
        PREV_PLANNER = pg_sys::planner_hook;
        pg_sys::planner_hook = Some(planner);
        pg_sys::RegisterXactCallback(Some(on_transaction_event), std::ptr::null_mut());
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn on_transaction_event(
    event: pg_sys::XactEvent::Type,
    _arg: *mut c_void,
) {
    if event == pg_sys::XactEvent::XACT_EVENT_ABORT
        || event == pg_sys::XactEvent::XACT_EVENT_PARALLEL_ABORT
    {
        reset_nesting();
        stack::clear_after_abort();
    }
}

// ---- Shared predicates ----

/// Whether auditing applies to this backend right now.
fn active() -> bool {
    // SAFETY: plain read of a backend-global int; parallel workers never audit (only the
    // leader logs, as pgAudit since 1.7.1's successors).
    gucs::feature_enabled() && unsafe { pg_sys::ParallelWorkerNumber } < 0
}

fn transaction_aborted() -> bool {
    // SAFETY: reads transaction state; valid in any backend and cannot raise an ERROR.
    unsafe { chain::IsAbortedTransactionBlockState() }
}

thread_local! {
    /// Depth of function/procedure/trigger execution (see module docs).
    static NESTING: Cell<u32> = const { Cell::new(0) };
}

fn enter_nested() {
    NESTING.with(|n| n.set(n.get() + 1));
}

fn leave_nested() {
    NESTING.with(|n| n.set(n.get().saturating_sub(1)));
}

/// Forgets any depth left behind by an ERROR that longjmp'ed past `leave_nested`. Called
/// when the audit stack empties (no statement is running) and at transaction abort.
pub fn reset_nesting() {
    NESTING.with(|n| n.set(0));
}

fn nested() -> bool {
    NESTING.with(|n| n.get() > 0)
}

/// Unguarded declarations of the functions we chain to; see the module docs.
mod chain {
    use pgrx::pg_sys;
    use std::ffi::{c_char, c_int};

    unsafe extern "C-unwind" {
        /// Cannot raise an ERROR: a plain read of transaction state, so it is called
        /// without pgrx's per-call `sigsetjmp` guard on this per-statement path.
        pub fn IsAbortedTransactionBlockState() -> bool;
        /// PostgreSQL's statement classifiers: they warn on unknown nodes, never ERROR.
        pub fn GetCommandLogLevel(parsetree: *mut pg_sys::Node) -> pg_sys::LogStmtLevel::Type;
        pub fn CreateCommandTag(parsetree: *mut pg_sys::Node) -> pg_sys::CommandTag::Type;
        pub fn standard_ExecutorStart(query_desc: *mut pg_sys::QueryDesc, eflags: c_int);
        pub fn standard_ExecutorRun(
            query_desc: *mut pg_sys::QueryDesc,
            direction: pg_sys::ScanDirection::Type,
            count: u64,
            execute_once: bool,
        );
        pub fn standard_ExecutorFinish(query_desc: *mut pg_sys::QueryDesc);
        pub fn standard_ExecutorEnd(query_desc: *mut pg_sys::QueryDesc);
        pub fn standard_planner(
            parse: *mut pg_sys::Query,
            query_string: *const c_char,
            cursor_options: c_int,
            bound_params: pg_sys::ParamListInfo,
        ) -> *mut pg_sys::PlannedStmt;
        #[allow(clippy::too_many_arguments)]
        pub fn standard_ProcessUtility(
            pstmt: *mut pg_sys::PlannedStmt,
            query_string: *const c_char,
            read_only_tree: bool,
            context: pg_sys::ProcessUtilityContext::Type,
            params: pg_sys::ParamListInfo,
            query_env: *mut pg_sys::QueryEnvironment,
            dest: *mut pg_sys::DestReceiver,
            qc: *mut pg_sys::QueryCompletion,
        );
    }
}

// ---- Executor ----

#[pg_guard]
unsafe extern "C-unwind" fn executor_start(query_desc: *mut pg_sys::QueryDesc, eflags: c_int) {
    let pushed = if active() && !crate::pg::internal::active() {
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
        let mut event = AuditEvent::new(nested());
        event.log_level = log_level;
        event.node_tag = node_tag;
        event.command = command;
        event.text = qd.sourceText;
        event.params = copy_params(qd.params);
        Some(stack::push(event))
    } else {
        None
    };
    // SAFETY: chaining with PostgreSQL's own arguments; nothing with a destructor is
    // alive here (`pushed` is Copy), so an ERROR may longjmp through this frame.
    unsafe {
        match PREV_EXECUTOR_START {
            Some(prev) => prev(query_desc, eflags),
            None => chain::standard_ExecutorStart(query_desc, eflags),
        }
    }
    if let Some(id) = pushed {
        // SAFETY: standard_ExecutorStart created the EState.
        let query_context = unsafe { (*(*query_desc).estate).es_query_cxt };
        stack::set_owner(id, query_context);
        if gucs::log_rows() {
            stack::with_event(id, |e| e.query_context = query_context);
        }
    }
}

/// Deep copy of a parameter list (PostgreSQL's `copyParamList`, which also materialises
/// dynamic PL/pgSQL parameters) when parameters will be logged; NULL otherwise.
fn copy_params(params: pg_sys::ParamListInfo) -> pg_sys::ParamListInfo {
    if params.is_null() || !gucs::log_parameter() {
        return std::ptr::null_mut();
    }
    // SAFETY: copyParamList reads a valid list and pallocs the copy in the current context.
    unsafe { pg_sys::copyParamList(params) }
}

#[pg_guard]
unsafe extern "C-unwind" fn executor_check_perms(
    range_table: *mut pg_sys::List,
    ereport_on_violation: bool,
) -> bool {
    if active() && !transaction_aborted() {
        let audit_oid = audit_role_oid();
        if audit_oid != pg_sys::InvalidOid || gucs::log_classes() != classes::NONE {
            // An empty stack means another extension skipped our ExecutorStart, or the
            // master switch was turned on mid-statement: nothing to attach lines to.
            if let Some(top) = stack::top_id() {
                if gucs::log_rows() {
                    stack::with_event(top, |e| {
                        e.audit_oid = audit_oid;
                        e.range_table = range_table;
                    });
                } else {
                    relations::log_select_dml(top, audit_oid, range_table);
                }
            }
        }
    }
    // SAFETY: chaining with PostgreSQL's own arguments; no destructors alive here.
    unsafe {
        match PREV_EXECUTOR_CHECK_PERMS {
            Some(prev) => prev(range_table, ereport_on_violation),
            None => true,
        }
    }
}

fn audit_role_oid() -> pg_sys::Oid {
    match gucs::audit_role_name() {
        // SAFETY: get_role_oid with missing_ok = true never raises for a missing role.
        Some(name) => unsafe { pg_sys::get_role_oid(name.as_ptr(), true) },
        None => pg_sys::InvalidOid,
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn executor_run(
    query_desc: *mut pg_sys::QueryDesc,
    direction: pg_sys::ScanDirection::Type,
    count: u64,
    execute_once: bool,
) {
    enter_nested();
    // SAFETY: chaining with PostgreSQL's own arguments; no destructors alive here.
    unsafe {
        match PREV_EXECUTOR_RUN {
            Some(prev) => prev(query_desc, direction, count, execute_once),
            None => chain::standard_ExecutorRun(query_desc, direction, count, execute_once),
        }
    }
    leave_nested();
    if gucs::log_rows() && active() && !crate::pg::internal::active() {
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

#[pg_guard]
unsafe extern "C-unwind" fn executor_finish(query_desc: *mut pg_sys::QueryDesc) {
    // AFTER triggers fire here: statements they run are nested.
    enter_nested();
    // SAFETY: chaining with PostgreSQL's own arguments; no destructors alive here.
    unsafe {
        match PREV_EXECUTOR_FINISH {
            Some(prev) => prev(query_desc),
            None => chain::standard_ExecutorFinish(query_desc),
        }
    }
    leave_nested();
}

#[pg_guard]
unsafe extern "C-unwind" fn executor_end(query_desc: *mut pg_sys::QueryDesc) {
    if gucs::log_rows() && active() && !crate::pg::internal::active() {
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
    // SAFETY: chaining with PostgreSQL's own arguments; no destructors alive here.
    unsafe {
        match PREV_EXECUTOR_END {
            Some(prev) => prev(query_desc),
            None => chain::standard_ExecutorEnd(query_desc),
        }
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn planner(
    parse: *mut pg_sys::Query,
    query_string: *const c_char,
    cursor_options: c_int,
    bound_params: pg_sys::ParamListInfo,
) -> *mut pg_sys::PlannedStmt {
    // Functions the planner evaluates (constant folding) run nested statements too.
    enter_nested();
    // SAFETY: chaining with PostgreSQL's own arguments; no destructors alive here.
    let plan = unsafe {
        match PREV_PLANNER {
            Some(prev) => prev(parse, query_string, cursor_options, bound_params),
            None => chain::standard_planner(parse, query_string, cursor_options, bound_params),
        }
    };
    leave_nested();
    plan
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

#[pg_guard]
#[allow(clippy::too_many_arguments)]
unsafe extern "C-unwind" fn process_utility(
    pstmt: *mut pg_sys::PlannedStmt,
    query_string: *const c_char,
    read_only_tree: bool,
    context: pg_sys::ProcessUtilityContext::Type,
    params: pg_sys::ParamListInfo,
    query_env: *mut pg_sys::QueryEnvironment,
    dest: *mut pg_sys::DestReceiver,
    qc: *mut pg_sys::QueryCompletion,
) {
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
            error!("pgaudit stack is not empty");
        }
        let mut event = AuditEvent::new(nested());
        if context == PROCESS_UTILITY_TOPLEVEL {
            event.params = copy_params(params);
        }
        // SAFETY: PostgreSQL's classifiers accept any utility statement node and only
        // warn (never raise an ERROR) on unknown ones, so they are called unguarded.
        unsafe {
            event.log_level = chain::GetCommandLogLevel(utility);
            event.command = chain::CreateCommandTag(utility);
        }
        event.node_tag = node_tag;
        event.text = query_string;
        let id = stack::push(event);
        let bits = gucs::log_classes();
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
        enter_nested();
    }
    // A pgaudit_admin member's ALTER DATABASE/ROLE ... SET pgaudit.* runs with elevated
    // rights after delegated_config checked it (a Copy value: restored explicitly below,
    // or by PostgreSQL's (sub)transaction abort if the statement fails).
    crate::change_capture::protect::check_utility(utility);
    // SAFETY: the parse node PostgreSQL passed to this hook.
    unsafe { crate::delivery::before_utility(utility) };
    let elevation = crate::delegated_config::elevate_for(utility);
    // SAFETY: chaining with PostgreSQL's own arguments; no destructors alive here.
    unsafe {
        match PREV_PROCESS_UTILITY {
            Some(prev) => prev(
                pstmt,
                query_string,
                read_only_tree,
                context,
                params,
                query_env,
                dest,
                qc,
            ),
            None => chain::standard_ProcessUtility(
                pstmt,
                query_string,
                read_only_tree,
                context,
                params,
                query_env,
                dest,
                qc,
            ),
        }
    }
    crate::delegated_config::restore(elevation);
    if routine {
        leave_nested();
    }
    if let Some(id) = pushed {
        if !transaction_aborted() {
            if !stack::contains(id) {
                let top = stack::top_id().unwrap_or(-1);
                error!("pgaudit stack item {id} not found - top of stack is {top}");
            }
            let logged = stack::with_event(id, |e| e.logged).unwrap_or(true);
            if gucs::log_classes() != classes::NONE && !logged {
                emit::log_event(id);
            }
        }
    }
}

// ---- Function execution ----

#[pg_guard]
unsafe extern "C-unwind" fn object_access(
    access: pg_sys::ObjectAccessType::Type,
    class_id: pg_sys::Oid,
    object_id: pg_sys::Oid,
    sub_id: c_int,
    arg: *mut c_void,
) {
    if access == pg_sys::ObjectAccessType::OAT_FUNCTION_EXECUTE
        && active()
        && gucs::log_classes() & classes::FUNCTION != 0
        && !stack::is_empty()
        && !crate::pg::internal::active()
        && !transaction_aborted()
    {
        log_function_execute(object_id);
    }
    // SAFETY: chaining with PostgreSQL's own arguments; no destructors alive here.
    unsafe {
        if let Some(prev) = PREV_OBJECT_ACCESS {
            prev(access, class_id, object_id, sub_id, arg);
        }
    }
}

fn log_function_execute(function_oid: pg_sys::Oid) {
    let row = crate::syscache::with_row(
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
        error!(
            "cache lookup failed for function {}",
            u32::from(function_oid)
        );
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
    let id = stack::push_transient(event);
    let (text, redacted, parent_nested) = stack::text_below(id);
    stack::with_event(id, |e| {
        e.text = text;
        e.redacted_text = redacted;
        e.nested = parent_nested;
    });
    emit::log_event(id);
    stack::pop(id);
}
