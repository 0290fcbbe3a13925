//! Table change capture: statement-level triggers written in Rust turn each INSERT,
//! UPDATE, DELETE and TRUNCATE on a tracked table into a JSON audit event in the
//! transactional outbox `pgaudit_siem.outbox`.
//!
//! - [`trigger`]: the capture trigger: how it is called, which rows, which parts.
//! - [`encode`]: rows to JSON, one encoder per column.
//! - [`rows`]: reading transition tables, cutting rows into parts.
//! - [`event`]: the event context and document (on the shared `events` envelope).
//! - [`outbox`]: appending events to `pgaudit_siem.outbox`.
//! - [`protect`]: the utility-hook rules that keep capture switched on.
//! - [`error`]: the errors it raises, with their SQLSTATEs.
//! - SQL: `sql/change_capture.sql` (the registry, the outbox, track/untrack, partitions).
//!
//! # Invariants
//! - Events are rows written in the capturing transaction: rolled-back statements,
//!   savepoints and transactions leave none; a committed change always has its event.
//! - Only a table's owner or a `pgaudit_admin` member may track or untrack it; writers
//!   need no privilege on the outbox; only `pgaudit_admin` members (and superusers) can
//!   read the outbox, through the `events` view; nobody else can change or delete it.
//! - Untracking and dropping a tracked table are audit events themselves.
//! - Partitioned tables: the trigger on the parent sees rows routed to every partition;
//!   partitions (existing and future) get the same triggers for statements that name
//!   them directly, so each change is captured exactly once.

pub mod encode;
pub mod error;
pub mod event;
pub mod outbox;
pub mod protect;
pub mod rows;
pub mod trigger;

use pgrx::prelude::*;

extension_sql_file!(
    "../../sql/change_capture.sql",
    name = "change_capture",
    requires = [
        "delegated_config",
        uuid_v7,
        events::wake::wake_delivery_at_commit,
        pg::admin::acts_as_admin_sql,
        invoking_role,
        caller_is_attested
    ],
);

crate::function_info_v1!(
    pg_finfo_pgaudit_siem_on_ddl_command_end,
    pg_finfo_pgaudit_siem_on_sql_drop
);

/// Runs `query` as an internal statement: nothing it executes is audit-logged.
fn run_internal(query: &str) -> pgrx::pg_sys::Datum {
    crate::pg::internal::run(|| Spi::run(query).unwrap_or_else(|e| error!("pgaudit_siem: {e}")));
    pgrx::pg_sys::Datum::from(0)
}

/// Event trigger on CREATE/ALTER TABLE: capture triggers for new partitions.
#[pg_guard]
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn pgaudit_siem_on_ddl_command_end(
    _fcinfo: pgrx::pg_sys::FunctionCallInfo,
) -> pgrx::pg_sys::Datum {
    run_internal("SELECT pgaudit_siem._sync_partitions()")
}

/// Event trigger on DROP: untrack dropped tables, with an audit event.
#[pg_guard]
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn pgaudit_siem_on_sql_drop(
    _fcinfo: pgrx::pg_sys::FunctionCallInfo,
) -> pgrx::pg_sys::Datum {
    run_internal("SELECT pgaudit_siem._untrack_dropped()")
}

thread_local! {
    /// The role [`invoking_role`] last attested in this backend, until a SECURITY DEFINER
    /// body takes it ([`caller_is_attested`]).
    static ATTESTED: std::cell::Cell<pgrx::pg_sys::Oid> =
        const { std::cell::Cell::new(pgrx::pg_sys::InvalidOid) };
}

/// `pgaudit_siem._invoking_role()`: the role that called track()/untrack(), which run as
/// their caller to call it: the current user there (SET ROLE applies; inside another
/// SECURITY DEFINER function, that function's owner, never the session's outer role, so
/// code of a less privileged role cannot act with the privileges of whoever runs it).
/// Records it for [`caller_is_attested`]: the SECURITY DEFINER bodies take the caller as
/// an argument, so they accept only the role recorded here, by the caller itself.
#[pg_extern(name = "_invoking_role", volatile, parallel_unsafe)]
fn invoking_role() -> pgrx::pg_sys::Oid {
    // Inside a security-restricted operation (VACUUM/ANALYZE evaluating an index
    // expression, REFRESH MATERIALIZED VIEW) the current user is the owner of the code
    // running on someone else's behalf: refuse rather than act for them.
    // SAFETY: plain reads of the session's security state.
    let role = unsafe {
        if pgrx::pg_sys::InSecurityRestrictedOperation() {
            error::CaptureError::SecurityRestricted.raise();
        }
        pgrx::pg_sys::GetUserId()
    };
    ATTESTED.with(|a| a.set(role));
    role
}

/// Drops an attestation left by a track()/untrack() that failed before taking it: at
/// every transaction end and subtransaction abort (hook dispatcher).
pub fn forget_attested_caller() {
    ATTESTED.with(|a| a.set(pgrx::pg_sys::InvalidOid));
}

/// `pgaudit_siem._caller_is_attested(oid)`: whether `caller` is the role
/// [`invoking_role`] recorded; takes the record either way (one use).
#[pg_extern(name = "_caller_is_attested", volatile, parallel_unsafe)]
fn caller_is_attested(caller: pgrx::pg_sys::Oid) -> bool {
    let attested = ATTESTED.with(|a| a.replace(pgrx::pg_sys::InvalidOid));
    attested != pgrx::pg_sys::InvalidOid && attested == caller
}

/// A new UUIDv7 (time-ordered), from the same per-backend context as event ids.
#[pg_extern(volatile, parallel_safe)]
pub fn uuid_v7() -> pgrx::Uuid {
    let id = crate::events::id::next_id(crate::events::time::now_unix_micros());
    pgrx::Uuid::from_bytes(*id.as_bytes())
}
