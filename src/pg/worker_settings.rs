//! Settings a background worker pins right after it connects to a database.
//!
//! `BackgroundWorkerInitializeConnection*` applies `ALTER DATABASE ... SET` and
//! `ALTER ROLE ... SET` like any login, and a database owner may set every user-settable
//! parameter there. A worker that runs SQL as a superuser must not let them decide which
//! schema resolves its types and operators, whether its transactions are read-only, how
//! long its statements may run, or whether triggers fire.
//!
//! # Invariants
//! - Every value is set at `PGC_S_OVERRIDE`, above every database, role and file source,
//!   so neither the planted settings nor a later configuration reload can change them.
//! - The list covers what changes the meaning or success of the worker's SQL: name
//!   resolution, transaction mode and isolation, timeouts, trigger firing, output formats
//!   the worker parses, and the planner switches (a disabled index scan would turn every
//!   batch read into a sort of the whole backlog).

use std::ffi::CStr;

use pgrx::pg_sys;

/// (name, value) pairs pinned for background workers.
pub const PINNED: &[(&CStr, &CStr)] = &[
    (c"search_path", c"pg_catalog, pg_temp"),
    // ALTER DATABASE ... SET role would make the worker act as another role.
    (c"role", c"none"),
    (c"default_transaction_read_only", c"off"),
    (c"default_transaction_isolation", c"read committed"),
    (c"default_transaction_deferrable", c"off"),
    (c"statement_timeout", c"0"),
    (c"lock_timeout", c"0"),
    (c"idle_in_transaction_session_timeout", c"0"),
    (c"idle_session_timeout", c"0"),
    (c"session_replication_role", c"origin"),
    (c"synchronous_commit", c"on"),
    (c"row_security", c"on"),
    (c"check_function_bodies", c"on"),
    (c"exit_on_error", c"off"),
    (c"transform_null_equals", c"off"),
    (c"array_nulls", c"on"),
    (c"standard_conforming_strings", c"on"),
    (c"backslash_quote", c"safe_encoding"),
    (c"DateStyle", c"ISO, MDY"),
    (c"IntervalStyle", c"postgres"),
    (c"TimeZone", c"UTC"),
    (c"extra_float_digits", c"1"),
    (c"bytea_output", c"hex"),
    (c"xmloption", c"content"),
    (c"client_min_messages", c"notice"),
    (c"default_tablespace", c""),
    (c"temp_tablespaces", c""),
    (c"default_table_access_method", c"heap"),
    (c"plan_cache_mode", c"auto"),
    (c"jit", c"off"),
    (c"max_parallel_workers_per_gather", c"0"),
    (c"force_parallel_mode", c"off"),
    (c"work_mem", c"4MB"),
    (c"enable_bitmapscan", c"on"),
    (c"enable_hashagg", c"on"),
    (c"enable_hashjoin", c"on"),
    (c"enable_indexscan", c"on"),
    (c"enable_indexonlyscan", c"on"),
    (c"enable_material", c"on"),
    (c"enable_memoize", c"on"),
    (c"enable_mergejoin", c"on"),
    (c"enable_nestloop", c"on"),
    (c"enable_seqscan", c"on"),
    (c"enable_sort", c"on"),
    (c"enable_incremental_sort", c"on"),
    (c"enable_tidscan", c"on"),
    (c"cursor_tuple_fraction", c"0.1"),
    (c"random_page_cost", c"4"),
    (c"seq_page_cost", c"1"),
];

/// Pins [`PINNED`]. Call outside a transaction, right after connecting.
pub fn pin() {
    for (name, value) in PINNED {
        // SAFETY: 'static NUL-terminated names and values of core settings; an invalid
        // one raises an ERROR (a bug caught by the worker tests), never memory unsafety.
        unsafe {
            pg_sys::SetConfigOption(
                name.as_ptr(),
                value.as_ptr(),
                pg_sys::GucContext::PGC_SUSET,
                pg_sys::GucSource::PGC_S_OVERRIDE,
            );
        }
    }
}
