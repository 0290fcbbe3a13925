//! The hook dispatcher: installs every PostgreSQL hook and callback the extension uses,
//! once, and calls the subsystems in a fixed, documented order. No subsystem installs a
//! hook of its own; session audit is one subscriber among several.
//!
//! # Dispatch order
//! ```text
//! ExecutorStart      session_audit (push event)  → standard → session_audit (own by EState)
//! ExecutorCheckPerms session_audit (relation pass)→ previous hook
//! ExecutorRun        nesting +1                   → standard → nesting -1, session_audit (rows)
//! ExecutorFinish     nesting +1                   → standard → nesting -1   (AFTER triggers)
//! ExecutorEnd        session_audit (deferred pass)→ standard
//! planner            nesting +1                   → standard → nesting -1   (constant folding)
//! ProcessUtility     1 session_audit (push; DO, CREATE/ALTER EXTENSION, CLOSE logged now)
//!                    2 change_capture (refuse statements that would switch capture off)
//!                    3 delivery (stop a database's worker before DROP/RENAME/... of it)
//!                    4 delegated_config (run an admin's ALTER ... SET pgaudit.* elevated)
//!                    → standard →
//!                    5 delegated_config (restore the user)  6 session_audit (log)
//! object_access      session_audit (FUNCTION lines) → previous hook
//! ClientAuthentication session_audit::trail (connect record) → previous hook
//! emit_log           session_audit::trail (authentication_failed, error records) → previous
//! fmgr               pg::internal (the extension's own SQL functions are internal),
//!                    session_audit (statements running configure() log no text)
//! xact callback      pg::internal, change_capture (attested caller), session_audit (abort),
//!                    delivery (commit wake-ups)
//! subxact callback   pg::internal (restore the flag at subtransaction abort),
//!                    change_capture (attested caller)
//! syscache (PROCOID) pg::internal; (AUTHOID, AUTHMEMROLEMEM) settings: admin sessions
//! relcache           change_capture: forget verified capture triggers
//! ```
//! Why this order: session audit pushes first so that every later step's failure leaves
//! a consistent stack; refusals (2) come before side effects (3) so a refused statement
//! changes nothing; the elevation (4) is the last step before PostgreSQL runs the
//! statement and the first undone after it.
//!
//! # Panic, unwind and error transparency
//! Every hook is `#[pg_guard]`, so a panic or an ERROR raised by our own code becomes a
//! PostgreSQL ERROR. The next hook (or `standard_*`) is called through raw declarations
//! (`pg::unguarded`), not pgrx's guarded bindings: an ERROR raised by the statement
//! itself then longjmps through our frames exactly as through a C extension's, and
//! reaches the client untouched (pgrx's round-trip would drop constraint/table/column
//! names, cursor position and context). For that to be sound, no value with a destructor
//! is alive in these frames across those calls (subscribers hand back `Copy` values),
//! and state changed around the call is restored without `Drop`: the nesting depth at
//! abort, an elevated user by PostgreSQL's (sub)transaction abort.
//!
//! # Fast path
//! With `pgaudit.featureEnabled = off` each hook reads a few flags and chains.

use std::ffi::{c_char, c_int, c_void};

use pgrx::pg_sys;
use pgrx::prelude::*;

use crate::pg::unguarded;
use crate::{change_capture, delegated_config, delivery, pg, session_audit, settings};

static mut PREV_EXECUTOR_START: pg_sys::ExecutorStart_hook_type = None;
static mut PREV_EXECUTOR_CHECK_PERMS: pg_sys::ExecutorCheckPerms_hook_type = None;
static mut PREV_EXECUTOR_RUN: pg_sys::ExecutorRun_hook_type = None;
static mut PREV_EXECUTOR_FINISH: pg_sys::ExecutorFinish_hook_type = None;
static mut PREV_EXECUTOR_END: pg_sys::ExecutorEnd_hook_type = None;
static mut PREV_PROCESS_UTILITY: pg_sys::ProcessUtility_hook_type = None;
static mut PREV_OBJECT_ACCESS: pg_sys::object_access_hook_type = None;
static mut PREV_PLANNER: pg_sys::planner_hook_type = None;
static mut PREV_NEEDS_FMGR_HOOK: pg_sys::needs_fmgr_hook_type = None;
static mut PREV_FMGR_HOOK: pg_sys::fmgr_hook_type = None;
static mut PREV_EMIT_LOG_HOOK: pg_sys::emit_log_hook_type = None;
static mut PREV_CLIENT_AUTHENTICATION: pg::port::ClientAuthenticationHook = None;

/// Installs every hook and callback, saving the previous hooks to chain to. `_PG_init`
/// only.
pub fn init() {
    // SAFETY: _PG_init runs once in the postmaster before any backend exists, so nothing
    // reads these pointers concurrently; callback registration only appends to
    // PostgreSQL's lists.
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
        PREV_NEEDS_FMGR_HOOK = pg_sys::needs_fmgr_hook;
        pg_sys::needs_fmgr_hook = Some(needs_fmgr_hook);
        PREV_FMGR_HOOK = pg_sys::fmgr_hook;
        pg_sys::fmgr_hook = Some(fmgr_hook);
        PREV_EMIT_LOG_HOOK = pg_sys::emit_log_hook;
        pg_sys::emit_log_hook = Some(emit_log);
        PREV_CLIENT_AUTHENTICATION = pg::port::ClientAuthentication_hook;
        pg::port::ClientAuthentication_hook = Some(client_authentication);
        pg_sys::RegisterXactCallback(Some(on_transaction_event), std::ptr::null_mut());
        pg_sys::RegisterSubXactCallback(Some(on_subtransaction_event), std::ptr::null_mut());
        for cache in [
            pg_sys::SysCacheIdentifier::PROCOID,
            pg_sys::SysCacheIdentifier::AUTHOID,
            pg_sys::SysCacheIdentifier::AUTHMEMROLEMEM,
        ] {
            pg_sys::CacheRegisterSyscacheCallback(
                cache as i32,
                Some(on_syscache_invalidation),
                pg_sys::Datum::from(0),
            );
        }
        pg_sys::CacheRegisterRelcacheCallback(
            Some(on_relcache_invalidation),
            pg_sys::Datum::from(0),
        );
    }
}

// ---- Executor ----

#[pg_guard]
unsafe extern "C-unwind" fn executor_start(query_desc: *mut pg_sys::QueryDesc, eflags: c_int) {
    if !session_audit::nesting::nested() {
        session_audit::trail::unnested_query_starts();
    }
    let pushed = session_audit::subscriber::executor_start_before(query_desc);
    // SAFETY: chaining with PostgreSQL's own arguments; `pushed` is Copy.
    unsafe {
        match PREV_EXECUTOR_START {
            Some(prev) => prev(query_desc, eflags),
            None => unguarded::standard_ExecutorStart(query_desc, eflags),
        }
    }
    session_audit::subscriber::executor_start_after(pushed, query_desc);
}

#[pg_guard]
unsafe extern "C-unwind" fn executor_check_perms(
    range_table: *mut pg_sys::List,
    ereport_on_violation: bool,
) -> bool {
    session_audit::subscriber::executor_check_perms(range_table);
    // SAFETY: chaining with PostgreSQL's own arguments.
    unsafe {
        match PREV_EXECUTOR_CHECK_PERMS {
            Some(prev) => prev(range_table, ereport_on_violation),
            None => true,
        }
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn executor_run(
    query_desc: *mut pg_sys::QueryDesc,
    direction: pg_sys::ScanDirection::Type,
    count: u64,
    execute_once: bool,
) {
    session_audit::subscriber::enter_nested();
    // SAFETY: chaining with PostgreSQL's own arguments.
    unsafe {
        match PREV_EXECUTOR_RUN {
            Some(prev) => prev(query_desc, direction, count, execute_once),
            None => unguarded::standard_ExecutorRun(query_desc, direction, count, execute_once),
        }
    }
    session_audit::subscriber::leave_nested();
    session_audit::subscriber::executor_run_after(query_desc);
}

#[pg_guard]
unsafe extern "C-unwind" fn executor_finish(query_desc: *mut pg_sys::QueryDesc) {
    // AFTER triggers fire here: statements they run are nested.
    session_audit::subscriber::enter_nested();
    // SAFETY: chaining with PostgreSQL's own arguments.
    unsafe {
        match PREV_EXECUTOR_FINISH {
            Some(prev) => prev(query_desc),
            None => unguarded::standard_ExecutorFinish(query_desc),
        }
    }
    session_audit::subscriber::leave_nested();
}

#[pg_guard]
unsafe extern "C-unwind" fn executor_end(query_desc: *mut pg_sys::QueryDesc) {
    session_audit::subscriber::executor_end_before(query_desc);
    // SAFETY: chaining with PostgreSQL's own arguments.
    unsafe {
        match PREV_EXECUTOR_END {
            Some(prev) => prev(query_desc),
            None => unguarded::standard_ExecutorEnd(query_desc),
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
    session_audit::subscriber::enter_nested();
    // SAFETY: chaining with PostgreSQL's own arguments.
    let plan = unsafe {
        match PREV_PLANNER {
            Some(prev) => prev(parse, query_string, cursor_options, bound_params),
            None => unguarded::standard_planner(parse, query_string, cursor_options, bound_params),
        }
    };
    session_audit::subscriber::leave_nested();
    plan
}

// ---- Utility statements ----

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
    // SAFETY: PostgreSQL passes a valid PlannedStmt wrapping a utility statement.
    let utility = unsafe { (*pstmt).utilityStmt };
    let audit = session_audit::subscriber::utility_before(pstmt, query_string, context, params);
    change_capture::protect::check_utility(utility);
    let top_level = context == pg_sys::ProcessUtilityContext::PROCESS_UTILITY_TOPLEVEL;
    // SAFETY: the parse node PostgreSQL passed to this hook.
    unsafe { delivery::before_utility(utility, top_level) };
    let elevation = delegated_config::elevate_for(utility);
    if top_level {
        session_audit::trail::top_level_utility_starts();
    }
    // SAFETY: chaining with PostgreSQL's own arguments; `audit` and `elevation` are Copy.
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
            None => unguarded::standard_ProcessUtility(
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
    if let Some(saved) = elevation {
        saved.restore();
    }
    if top_level {
        session_audit::trail::top_level_utility_ends();
    }
    session_audit::subscriber::utility_after(audit);
}

// ---- Function execution and calls ----

#[pg_guard]
unsafe extern "C-unwind" fn object_access(
    access: pg_sys::ObjectAccessType::Type,
    class_id: pg_sys::Oid,
    object_id: pg_sys::Oid,
    sub_id: c_int,
    arg: *mut c_void,
) {
    session_audit::subscriber::object_access(access, object_id);
    // SAFETY: chaining with PostgreSQL's own arguments.
    unsafe {
        if let Some(prev) = PREV_OBJECT_ACCESS {
            prev(access, class_id, object_id, sub_id, arg);
        }
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn needs_fmgr_hook(function: pg_sys::Oid) -> bool {
    // SAFETY: chaining to the previous hook with PostgreSQL's own argument.
    if let Some(prev) = unsafe { PREV_NEEDS_FMGR_HOOK } {
        if unsafe { prev(function) } {
            return true;
        }
    }
    pg::internal::needs_fmgr_hook(function)
}

#[pg_guard]
unsafe extern "C-unwind" fn fmgr_hook(
    event: pg_sys::FmgrHookEventType::Type,
    flinfo: *mut pg_sys::FmgrInfo,
    private: *mut pg_sys::Datum,
) {
    // SAFETY: flinfo is the function being called.
    if pg::internal::at_function_call(event, unsafe { (*flinfo).fn_oid }) {
        session_audit::subscriber::statement_carries_secrets();
    }
    // SAFETY: chaining to the previous hook with PostgreSQL's own arguments.
    if let Some(prev) = unsafe { PREV_FMGR_HOOK } {
        unsafe { prev(event, flinfo, private) };
    }
}

// ---- Connections and error reports ----

// Neither hook may raise: they run inside PostgreSQL's authentication and error
// reporting. The subscriber catches panics and raises nothing; there is no #[pg_guard]
// (an ERROR converted from a panic here would recurse).
unsafe extern "C-unwind" fn client_authentication(port: *mut c_void, status: c_int) {
    // SAFETY: PostgreSQL's Port for this backend and its verdict.
    unsafe { session_audit::trail::at_client_authentication(port, status) };
    // SAFETY: chaining with PostgreSQL's own arguments.
    if let Some(prev) = unsafe { PREV_CLIENT_AUTHENTICATION } {
        unsafe { prev(port, status) };
    }
}

unsafe extern "C-unwind" fn emit_log(edata: *mut pg_sys::ErrorData) {
    // SAFETY: the report PostgreSQL is emitting.
    unsafe { session_audit::trail::at_error_report(edata) };
    // SAFETY: chaining with PostgreSQL's own argument.
    if let Some(prev) = unsafe { PREV_EMIT_LOG_HOOK } {
        unsafe { prev(edata) };
    }
}

// ---- Transactions and invalidations ----

#[pg_guard]
unsafe extern "C-unwind" fn on_transaction_event(
    event: pg_sys::XactEvent::Type,
    _arg: *mut c_void,
) {
    use pg_sys::XactEvent::*;
    pg::internal::at_transaction_event(event);
    change_capture::forget_attested_caller();
    match event {
        XACT_EVENT_ABORT | XACT_EVENT_PARALLEL_ABORT => {
            session_audit::subscriber::at_abort();
            session_audit::trail::at_abort();
        }
        _ => {}
    }
    delivery::at_transaction_event(event);
}

#[pg_guard]
unsafe extern "C-unwind" fn on_subtransaction_event(
    event: pg_sys::SubXactEvent::Type,
    subxact: pg_sys::SubTransactionId,
    _parent: pg_sys::SubTransactionId,
    _arg: *mut c_void,
) {
    pg::internal::at_subtransaction_event(event, subxact);
    if event == pg_sys::SubXactEvent::SUBXACT_EVENT_ABORT_SUB {
        change_capture::forget_attested_caller();
        session_audit::trail::at_abort();
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn on_syscache_invalidation(
    _arg: pg_sys::Datum,
    cache: c_int,
    _hash: u32,
) {
    if cache == pg_sys::SysCacheIdentifier::PROCOID as c_int {
        pg::internal::forget_functions();
    } else {
        settings::forget_admin_session();
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn on_relcache_invalidation(_arg: pg_sys::Datum, relid: pg_sys::Oid) {
    change_capture::trigger::forget_verified(relid);
}
