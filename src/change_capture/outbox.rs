//! Appending events to `pgaudit_siem.outbox`, in the writer's transaction.
//!
//! # Invariants
//! - The insert runs as the outbox owner (the installing superuser) with the
//!   internal-statement flag set: writers need no privilege on the outbox, and the
//!   insert is not itself audit-logged.
//! - The plan is prepared once per backend and kept (PostgreSQL revalidates it after
//!   DDL); committing the transaction asks delivery to wake (`events::wake`).

use std::cell::Cell;
use std::ffi::{c_char, CStr};

use pgrx::pg_sys;
use pgrx::prelude::*;

use super::error::CaptureError;
use super::event::EventContext;
use crate::events::time;

thread_local! {
    /// Saved SPI plan for the outbox insert (PostgreSQL revalidates it after DDL).
    static INSERT_PLAN: Cell<pg_sys::SPIPlanPtr> = const { Cell::new(std::ptr::null_mut()) };
    static OUTBOX_OWNER: Cell<pg_sys::Oid> = const { Cell::new(pg_sys::InvalidOid) };
}

const INSERT_SQL: &CStr = c"INSERT INTO pgaudit_siem.outbox (id, created_at, category, action, relid, schema_name, table_name, row_count, part, part_count, payload) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";

/// Appends one event to the outbox, as the outbox owner, as an internal statement.
pub fn insert_event(
    context: &EventContext,
    row_count: Option<u64>,
    part: usize,
    parts: usize,
    payload: &(Vec<u8>, [u8; 16]),
) {
    let (payload, id) = payload;
    let _owner = crate::pg::user::AsUser::switch_to(outbox_owner());
    let _internal = crate::pg::internal::InternalScope::enter();
    // SAFETY: classic SPI: connect, prepare once and keep the plan, execute with datums
    // built in the SPI procedure context, finish.
    unsafe {
        if pg_sys::SPI_connect() < 0 {
            CaptureError::Internal("SPI_connect failed for the outbox insert".into()).raise();
        }
        let mut plan = INSERT_PLAN.with(Cell::get);
        if plan.is_null() {
            let mut types = [
                pg_sys::UUIDOID,
                pg_sys::TIMESTAMPTZOID,
                pg_sys::TEXTOID,
                pg_sys::TEXTOID,
                pg_sys::OIDOID,
                pg_sys::TEXTOID,
                pg_sys::TEXTOID,
                pg_sys::INT8OID,
                pg_sys::INT4OID,
                pg_sys::INT4OID,
                pg_sys::JSONOID,
            ];
            plan = pg_sys::SPI_prepare(INSERT_SQL.as_ptr(), types.len() as i32, types.as_mut_ptr());
            if plan.is_null() || pg_sys::SPI_keepplan(plan) != 0 {
                CaptureError::Internal("preparing the outbox insert failed".into()).raise();
            }
            INSERT_PLAN.with(|p| p.set(plan));
        }
        let uuid = pg_sys::palloc(16) as *mut u8;
        std::ptr::copy_nonoverlapping(id.as_ptr(), uuid, 16);
        let text = |s: &[u8]| {
            pg_sys::Datum::from(pg_sys::cstring_to_text_with_len(
                s.as_ptr().cast(),
                s.len() as i32,
            ))
        };
        let mut values = [
            pg_sys::Datum::from(uuid),
            pg_sys::Datum::from(time::to_postgres_timestamp(context.unix_micros)),
            text(context.category.as_bytes()),
            text(context.action.name().as_bytes()),
            pg_sys::Datum::from(context.relid),
            text(context.schema.as_bytes()),
            text(context.table.as_bytes()),
            pg_sys::Datum::from(row_count.map(|n| n as i64).unwrap_or(0)),
            pg_sys::Datum::from(part as i32),
            pg_sys::Datum::from(parts as i32),
            text(payload),
        ];
        let nulls: Vec<c_char> = (0..values.len())
            .map(|i| {
                if i == 7 && row_count.is_none() {
                    b'n' as c_char
                } else {
                    b' ' as c_char
                }
            })
            .collect();
        let rc = pg_sys::SPI_execute_plan(plan, values.as_mut_ptr(), nulls.as_ptr(), false, 0);
        if rc != pg_sys::SPI_OK_INSERT as i32 {
            CaptureError::Internal(format!("the outbox insert returned {rc}")).raise();
        }
        pg_sys::SPI_finish();
    }
    crate::events::wake::new_events();
}

/// Runs `f` as the outbox owner (who owns every table of the extension).
pub fn as_outbox_owner<R>(f: impl FnOnce() -> R) -> R {
    let _owner = crate::pg::user::AsUser::switch_to(outbox_owner());
    f()
}

fn outbox_owner() -> pg_sys::Oid {
    let cached = OUTBOX_OWNER.with(Cell::get);
    if cached != pg_sys::InvalidOid {
        return cached;
    }
    let owner = crate::pg::internal::run(|| {
        Spi::get_one::<pg_sys::Oid>(include_str!("../../sql/queries/capture_outbox_owner.sql"))
    })
    .ok()
    .flatten()
    .unwrap_or_else(|| CaptureError::OutboxMissing.raise());
    OUTBOX_OWNER.with(|c| c.set(owner));
    owner
}
