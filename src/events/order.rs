//! The delivery order of outbox events, and the per-database delivery horizon: only
//! transactions that wrote events to a database's outbox can hold its delivery back.
//!
//! Every outbox row carries an order key (the `xid` column, default
//! `pgaudit_siem._outbox_key()`): the writing transaction's full id, or the highest
//! horizon any worker has published if that is later. A writer registers its key in a
//! per-backend slot the first time it writes in a transaction; a worker's horizon is
//! the smallest key of its database's writers still in progress, or the next
//! transaction id if there is none.
//!
//! # Invariants
//! - Registration and the horizon are computed under one LWLock, so a writer that
//!   registers after a horizon was published gets a key at or above it: the delivery
//!   cursor (which stays below the horizon) never passes an event that could still
//!   commit, whatever the writer's transaction id.
//! - Without live writers the horizon is above every key handed out so far: the next
//!   transaction id, after the worker took one itself if none was taken since the last
//!   published horizon. So an ended writer's events are never left waiting, and no key
//!   or published horizon ever exceeds the next transaction id (keys do not run ahead of
//!   the ids a restarted, promoted or upgraded server hands out).
//! - A slot is live while its transaction is in progress (`TransactionIdIsInProgress`,
//!   which includes prepared transactions); stale slots (a commit, an abort, a backend
//!   that exited) are ignored and cleared by the next horizon read, so nothing is ever
//!   held back by a transaction that ended. Commits become visible before they leave
//!   the proc array, so a snapshot taken after the horizon sees every event below it.
//! - Shared memory does not survive a restart, but prepared transactions do: the worker
//!   also bounds its horizon by the ids of its database's prepared transactions (a key is
//!   never below its transaction's id).
//! - A backend whose id does not fit the slots sets a sticky flag: workers then also
//!   bound their horizon by every running transaction of their database (the
//!   conservative rule), until the next restart.

use std::cell::Cell;

use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::{pg_shmem_init, PGRXSharedMemory, PgLwLock};

/// Writer slots, by backend id. Servers with more backends fall back to the conservative
/// rule for the backends above it.
const MAX_WRITERS: usize = 8192;

#[derive(Copy, Clone, Default)]
struct Writer {
    /// 0: free.
    dboid: u32,
    /// The full transaction id that registered.
    xid: u64,
    /// Its order key.
    key: u64,
}

#[derive(Copy, Clone)]
pub struct OrderState {
    /// The highest horizon any worker has published (monotonic until restart).
    published: u64,
    /// A writer got `published` as its key (its own id was lower) since the horizon last
    /// moved past it: on a quiet server, some transaction must take an id for the
    /// horizon to pass that key.
    floor_keys: bool,
    /// A backend above `MAX_WRITERS` wrote events since the server started.
    overflowed: bool,
    writers: [Writer; MAX_WRITERS],
}

impl Default for OrderState {
    fn default() -> Self {
        OrderState {
            published: 0,
            floor_keys: false,
            overflowed: false,
            writers: [Writer::default(); MAX_WRITERS],
        }
    }
}

// SAFETY: plain old data (integers only); no pointers.
unsafe impl PGRXSharedMemory for OrderState {}

// SAFETY: initialised once from _PG_init through pg_shmem_init!, before any use.
static ORDER: PgLwLock<OrderState> = unsafe { PgLwLock::new(c"pgaudit_siem_outbox_order") };

thread_local! {
    /// (full transaction id, key) of this backend's registration.
    static REGISTERED: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
}

/// Reserves the shared state. `_PG_init` only.
pub fn init() {
    pg_shmem_init!(ORDER);
}

/// The order key of the current transaction's events; registers the transaction as a
/// writer of this database's outbox the first time.
fn current_key() -> u64 {
    // SAFETY: assigns the top-level transaction id if there is none yet (a write is
    // coming anyway); called only inside a transaction (a column default).
    let xid = unsafe { pg_sys::GetTopFullTransactionId() }.value;
    let (registered_xid, key) = REGISTERED.with(Cell::get);
    if registered_xid == xid {
        return key;
    }
    // SAFETY: plain reads of process-globals.
    let (backend, dboid) = unsafe { (pg_sys::MyBackendId, pg_sys::MyDatabaseId.to_u32()) };
    let mut state = ORDER.exclusive();
    let key = xid.max(state.published);
    if key > xid {
        state.floor_keys = true;
    }
    match usize::try_from(backend - 1)
        .ok()
        .filter(|&i| i < MAX_WRITERS)
    {
        Some(slot) => state.writers[slot] = Writer { dboid, xid, key },
        None => state.overflowed = true,
    }
    drop(state);
    REGISTERED.with(|r| r.set((xid, key)));
    key
}

/// The delivery horizon of `dboid`'s outbox: every event with a smaller key belongs to a
/// transaction that has ended. The second value asks for the conservative rule as well
/// (see the module doc). The caller still bounds it by the database's prepared
/// transactions, read after this. Call inside a transaction: it may assign the caller
/// a transaction id.
pub fn horizon(dboid: u32) -> (u64, bool) {
    // A writer that registered at the last published horizon has exactly that key, which
    // the next id still equals on a quiet server: its events would wait for some other
    // transaction to take an id. The worker then takes one itself (in its horizon
    // transaction), so the horizon passes the key while never exceeding the next
    // transaction id: keys stay transaction ids, below every id the server hands out
    // after a restart, a promotion or pg_upgrade, so the durable cursor never passes a
    // key written later.
    // SAFETY: reads the shared counter under XidGenLock (PostgreSQL takes it).
    let stuck = {
        let state = ORDER.share();
        state.floor_keys && state.published >= unsafe { pg_sys::ReadNextFullTransactionId() }.value
    };
    if stuck {
        // SAFETY: inside the worker's transaction (the caller's contract); assigns it an id.
        unsafe { pg_sys::GetTopFullTransactionId() };
    }
    let mut state = ORDER.exclusive();
    // SAFETY: as above.
    let next_xid = unsafe { pg_sys::ReadNextFullTransactionId() }.value;
    let mut horizon = next_xid;
    for writer in state.writers.iter_mut().filter(|w| w.dboid == dboid) {
        // SAFETY: a proc-array lookup (takes ProcArrayLock shared; we hold only our own
        // LWLock, which no holder of ProcArrayLock waits for).
        if unsafe { pg_sys::TransactionIdIsInProgress((writer.xid as u32).into()) } {
            horizon = horizon.min(writer.key);
        } else {
            *writer = Writer::default();
        }
    }
    if horizon > state.published {
        state.floor_keys = false;
    }
    state.published = state.published.max(horizon);
    (horizon, state.overflowed)
}

crate::function_info_v1!(pg_finfo_pgaudit_siem_outbox_key);

/// `pgaudit_siem._outbox_key()` (xid8): the default of `outbox.xid` (sql/delivery.sql).
/// EXECUTE is revoked from PUBLIC: a registration holds delivery back until its
/// transaction ends.
#[pg_guard]
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn pgaudit_siem_outbox_key(
    _fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    // xid8 is a by-value 8-byte type: the datum is the full id itself.
    pg_sys::Datum::from(current_key())
}

/// `pgaudit_siem._inserted_by_extension()`: whether the statement inserting into the
/// outbox or the dead letters is one of the extension's own (capture, its SQL functions,
/// the worker). Anything else (a restore's COPY) has its rows re-keyed by the restore
/// triggers (sql/delivery.sql).
#[pg_extern(name = "_inserted_by_extension", volatile, parallel_restricted)]
fn inserted_by_extension() -> bool {
    crate::pg::internal::active_for_caller()
}
