//! PostgreSQL functions called without pgrx's per-call `sigsetjmp` guard.
//!
//! Two reasons to bypass the guard, both documented at the call sites:
//! - *Chaining* (the hooks' `standard_*`/previous-hook calls): an ERROR raised by the
//!   statement itself must longjmp through our frames untouched, as through a C
//!   extension's, so its fields reach the client intact. The frames keep no value with
//!   a destructor alive across such a call.
//! - *Hot paths* that cannot raise an ERROR (plain reads of backend state, classifiers
//!   that only warn): the guard would cost a `sigsetjmp` per statement.
//!
//! # Invariants
//! - Every declaration here is checked at compile time against pgrx's own binding of
//!   the same function (same argument and return types), so a PostgreSQL or pgrx change
//!   of signature fails the build instead of corrupting a call. The two functions pgrx
//!   does not bind (`errstart`, `errfinish`) are checked against PostgreSQL 15's
//!   `elog.h` by the tests that emit audit lines.

use std::ffi::{c_char, c_int};

use pgrx::pg_sys;

/// Declares raw functions and checks each against `pgrx::pg_sys::<name>`.
macro_rules! checked_against_pgrx {
    ($( $(#[$meta:meta])* fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)?; )*) => {
        unsafe extern "C-unwind" {
            $( $(#[$meta])* pub fn $name($($arg: $ty),*) $(-> $ret)?; )*
        }
        // The same signature as pgrx's guarded wrapper, or the build fails here.
        const _: () = {
            $( let _: unsafe fn($($ty),*) $(-> $ret)? = pg_sys::$name; )*
        };
    };
}

checked_against_pgrx! {
    /// A plain read of transaction state.
    fn IsAbortedTransactionBlockState() -> bool;
    /// PostgreSQL's statement classifiers: they warn on unknown nodes, never ERROR.
    fn GetCommandLogLevel(parsetree: *mut pg_sys::Node) -> pg_sys::LogStmtLevel::Type;
    fn CreateCommandTag(parsetree: *mut pg_sys::Node) -> pg_sys::CommandTag::Type;
    fn GetCommandTagName(tag: pg_sys::CommandTag::Type) -> *const c_char;
    /// Plain reads of the current and the login role.
    fn GetUserId() -> pg_sys::Oid;
    fn GetSessionUserId() -> pg_sys::Oid;
    /// Only links a callback into a context's list.
    fn MemoryContextRegisterResetCallback(
        context: pg_sys::MemoryContext,
        cb: *mut pg_sys::MemoryContextCallback,
    );
    /// Called through `DirectFunctionCall1Coll`, which needs the raw V1 function.
    fn array_to_json(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum;
    fn row_to_json(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum;
    /// Chained to by the hooks.
    fn standard_ExecutorStart(query_desc: *mut pg_sys::QueryDesc, eflags: c_int);
    fn standard_ExecutorRun(
        query_desc: *mut pg_sys::QueryDesc,
        direction: pg_sys::ScanDirection::Type,
        count: u64,
        execute_once: bool,
    );
    fn standard_ExecutorFinish(query_desc: *mut pg_sys::QueryDesc);
    fn standard_ExecutorEnd(query_desc: *mut pg_sys::QueryDesc);
    fn standard_planner(
        parse: *mut pg_sys::Query,
        query_string: *const c_char,
        cursor_options: c_int,
        bound_params: pg_sys::ParamListInfo,
    ) -> *mut pg_sys::PlannedStmt;
    fn standard_ProcessUtility(
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

unsafe extern "C-unwind" {
    /// `bool errstart(int elevel, const char *domain)` (PostgreSQL 15 `utils/elog.h`).
    pub fn errstart(elevel: c_int, domain: *const c_char) -> bool;
    /// `void errfinish(const char *filename, int lineno, const char *funcname)`.
    pub fn errfinish(filename: *const c_char, lineno: c_int, funcname: *const c_char);
}
