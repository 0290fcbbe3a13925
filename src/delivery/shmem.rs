//! Shared memory between backends, the launcher and the per-database delivery workers.
//!
//! One [`Registry`] under an LWLock: the launcher's latch, a generation counter bumped
//! when `CREATE EXTENSION pgaudit_siem` commits somewhere, and one slot per database that
//! has (or had) a worker: its pid and latch, whether the extension was found missing
//! (and at which generation), and a "stop" deadline set while `DROP DATABASE` runs.
//!
//! # Invariants
//! - Only plain data lives here (no process-local pointers except latch addresses, which
//!   point into shared memory: `PGPROC.procLatch`).
//! - Writers wake the worker only from a commit callback, once per transaction, so the
//!   worker never wakes up before the events are visible; aborted transactions wake
//!   nobody.
//! - A latch pointer may be stale after its process exits: setting it is harmless
//!   (PostgreSQL latches are owned by PGPROC slots that outlive processes).

use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::{pg_shmem_init, PGRXSharedMemory, PgLwLock};

pub const MAX_DATABASES: usize = 256;

#[derive(Copy, Clone, Default)]
pub struct Slot {
    pub dboid: u32,
    pub pid: i32,
    pub latch: usize,
    /// The generation at which the worker found no extension; `u64::MAX`: not absent.
    pub absent_generation: u64,
    /// While DROP DATABASE runs: do not start a worker before this time (µs since the
    /// PostgreSQL epoch).
    pub stopped_until: i64,
    /// The worker is about to look for work or is sleeping without any: a commit with
    /// new events must set its latch. While it is busy (it reads again when done) or
    /// delivery is disabled, commits do not wake it.
    pub waiting: bool,
}

#[derive(Copy, Clone)]
pub struct Registry {
    pub launcher_pid: i32,
    pub launcher_latch: usize,
    pub generation: u64,
    pub slots: [Slot; MAX_DATABASES],
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            launcher_pid: 0,
            launcher_latch: 0,
            generation: 1,
            slots: [Slot::default(); MAX_DATABASES],
        }
    }
}

// SAFETY: plain old data (integers only); no pointers into process memory.
unsafe impl PGRXSharedMemory for Registry {}

// SAFETY: initialised once from _PG_init through pg_shmem_init!, before any use.
static REGISTRY: PgLwLock<Registry> = unsafe { PgLwLock::new(c"pgaudit_siem_delivery_registry") };

pub fn init() {
    pg_shmem_init!(REGISTRY);
}

impl Registry {
    pub fn slot(&self, dboid: u32) -> Option<&Slot> {
        self.slots.iter().find(|s| s.dboid == dboid)
    }

    fn slot_mut(&mut self, dboid: u32) -> Option<&mut Slot> {
        if let Some(i) = self.slots.iter().position(|s| s.dboid == dboid) {
            return Some(&mut self.slots[i]);
        }
        let free = self.slots.iter().position(|s| s.dboid == 0)?;
        self.slots[free] = Slot {
            dboid,
            absent_generation: u64::MAX,
            ..Slot::default()
        };
        Some(&mut self.slots[free])
    }
}

pub fn snapshot() -> Registry {
    *REGISTRY.share()
}

fn my_latch() -> usize {
    // SAFETY: MyLatch is set for every process attached to shared memory.
    unsafe { pg_sys::MyLatch as usize }
}

fn my_pid() -> i32 {
    // SAFETY: plain read of a process-global.
    unsafe { pg_sys::MyProcPid }
}

fn set_latch(latch: usize) {
    if latch != 0 {
        // SAFETY: the address is a PGPROC latch in shared memory (see module invariants).
        unsafe { pg_sys::SetLatch(latch as *mut pg_sys::Latch) };
    }
}

// ---- launcher ----

pub fn publish_launcher() {
    let mut r = REGISTRY.exclusive();
    r.launcher_pid = my_pid();
    r.launcher_latch = my_latch();
}

pub fn clear_launcher() {
    let mut r = REGISTRY.exclusive();
    r.launcher_pid = 0;
    r.launcher_latch = 0;
}

pub fn generation() -> u64 {
    REGISTRY.share().generation
}

/// Forgets databases that no longer exist.
pub fn retain_databases(existing: &[u32]) {
    let mut r = REGISTRY.exclusive();
    for slot in r.slots.iter_mut() {
        if slot.dboid != 0 && !existing.contains(&slot.dboid) {
            *slot = Slot::default();
        }
    }
}

fn wake_launcher_now() {
    let (latch, _) = {
        let mut r = REGISTRY.exclusive();
        r.generation += 1;
        (r.launcher_latch, r.generation)
    };
    set_latch(latch);
}

// ---- worker ----

/// Registers the calling worker for `dboid`; false if another live worker holds it or a
/// statement that needs the database to itself asked workers to stay away.
pub fn publish_worker(dboid: u32) -> bool {
    let mut r = REGISTRY.exclusive();
    let Some(slot) = r.slot_mut(dboid) else {
        return true;
    };
    if slot.pid != 0 && slot.pid != my_pid() && is_worker_of(slot.pid, dboid) {
        return false;
    }
    // SAFETY: clock read.
    if slot.stopped_until > unsafe { pg_sys::GetCurrentTimestamp() } {
        return false;
    }
    slot.pid = my_pid();
    slot.latch = my_latch();
    slot.absent_generation = u64::MAX;
    drop(r);
    // Clear the slot however the worker ends (including an ERROR, which exits through
    // proc_exit): a stale pid could name an unrelated process later.
    // SAFETY: registers a static callback for this process's exit.
    unsafe { pg_sys::before_shmem_exit(Some(clear_worker_at_exit), pg_sys::Datum::from(dboid)) };
    true
}

#[pg_guard]
unsafe extern "C-unwind" fn clear_worker_at_exit(_code: i32, arg: pg_sys::Datum) {
    clear_worker(arg.value() as u32);
}

/// Whether `pid` is a live PostgreSQL process connected to `dboid` (so never an
/// unrelated process that reused a stale pid).
pub fn is_worker_of(pid: i32, dboid: u32) -> bool {
    if pid == 0 {
        return false;
    }
    // SAFETY: BackendPidGetProc takes ProcArrayLock itself and returns a pointer into
    // shared memory (PGPROC array) or NULL; only a plain field is read.
    unsafe {
        let proc_ = pg_sys::BackendPidGetProc(pid);
        !proc_.is_null() && (*proc_).databaseId.to_u32() == dboid
    }
}

/// Records that the extension is not installed in `dboid` (as of `generation`).
pub fn mark_absent(dboid: u32, generation: u64) {
    let mut r = REGISTRY.exclusive();
    if let Some(slot) = r.slot_mut(dboid) {
        slot.absent_generation = generation;
        release_slot(slot);
    }
}

/// Forgets the calling worker's pid and latch (from its exit callback).
fn clear_worker(dboid: u32) {
    let mut r = REGISTRY.exclusive();
    if let Some(slot) = r.slot_mut(dboid) {
        release_slot(slot);
    }
}

fn release_slot(slot: &mut Slot) {
    if slot.pid == my_pid() {
        slot.pid = 0;
        slot.latch = 0;
    }
}

/// The pid of the worker registered for `dboid`, if any.
pub fn worker_pid(dboid: u32) -> Option<i32> {
    REGISTRY
        .share()
        .slot(dboid)
        .map(|s| s.pid)
        .filter(|&pid| pid != 0)
}

/// Wakes the worker of `dboid` if it waits for work (or whatever it does, if `force`).
pub fn wake_worker(dboid: u32, force: bool) {
    let latch = REGISTRY
        .share()
        .slot(dboid)
        .filter(|s| force || s.waiting)
        .map(|s| s.latch)
        .unwrap_or(0);
    set_latch(latch);
}

/// The calling worker starts looking for work (`true`, before it reads the outbox, so no
/// commit after that point goes unnoticed) or has some / has delivery disabled (`false`).
pub fn set_waiting(dboid: u32, waiting: bool) {
    let mut r = REGISTRY.exclusive();
    if let Some(slot) = r.slot_mut(dboid) {
        if slot.pid == my_pid() {
            slot.waiting = waiting;
        }
    }
}

// ---- DROP DATABASE ----

/// Asks the worker of `dboid` to exit and keeps the launcher from restarting it for
/// `hold`; waits (up to `wait`) until it is gone, so statements that need a database
/// without other sessions (DROP, RENAME, SET TABLESPACE, use as a template) find none.
pub fn stop_worker_for(dboid: u32, hold: std::time::Duration, wait: std::time::Duration) {
    // SAFETY: clock read.
    let now = unsafe { pg_sys::GetCurrentTimestamp() };
    let pid = {
        let mut r = REGISTRY.exclusive();
        match r.slot_mut(dboid) {
            Some(slot) => {
                slot.stopped_until = now + hold.as_micros() as i64;
                slot.pid
            }
            None => 0,
        }
    };
    if !is_worker_of(pid, dboid) {
        return;
    }
    // SAFETY: SIGTERM to our worker: a live PostgreSQL process of that database.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = std::time::Instant::now() + wait;
    while std::time::Instant::now() < deadline {
        let running = REGISTRY.share().slot(dboid).map(|s| s.pid).unwrap_or(0);
        if !is_worker_of(running, dboid) {
            return;
        }
        // SAFETY: a short interruptible sleep on our own latch.
        unsafe {
            pg_sys::WaitLatch(
                pg_sys::MyLatch,
                (pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH) as i32,
                20,
                pg_sys::PG_WAIT_EXTENSION,
            );
            pg_sys::ResetLatch(pg_sys::MyLatch);
        }
        check_for_interrupts!();
    }
}

// ---- commit-time wake-ups ----

/// Transaction end (from the hook dispatcher): hands the committing transaction's
/// requests (`events::wake`) to the worker and the launcher.
pub fn at_transaction_event(event: pg_sys::XactEvent::Type) {
    use crate::events::wake::{self, WorkerRequest};
    use pg_sys::XactEvent::*;
    match event {
        XACT_EVENT_COMMIT => {
            let (worker, launcher) = wake::take_at_commit();
            if worker != WorkerRequest::None {
                // SAFETY: plain read of a process-global.
                let dboid = unsafe { pg_sys::MyDatabaseId }.to_u32();
                wake_worker(dboid, worker == WorkerRequest::Always);
            }
            if launcher {
                wake_launcher_now();
            }
        }
        XACT_EVENT_ABORT | XACT_EVENT_PREPARE => wake::forget(),
        _ => {}
    }
}
