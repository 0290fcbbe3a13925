//! Reading a statement's transition tables and cutting the rows into parts.
//!
//! # Invariants
//! - UPDATE parts pair `data_before[i]` with `data_after[i]`: PostgreSQL stores the old
//!   and new transition rows in the same order, and both are cut at the same indices.
//! - Memory is one part plus one row: a part is emptied (buffers kept) once inserted.

use pgrx::pg_sys;

use super::encode::{push_row, Column};

/// Rows of one part: JSON array bodies (without brackets) and the row count.
#[derive(Default)]
pub struct Part {
    pub before: Vec<u8>,
    pub after: Vec<u8>,
    pub rows: usize,
}

impl Part {
    pub fn bytes(&self) -> usize {
        self.before.len() + self.after.len()
    }

    /// Empties the part, keeping its buffers (at most one part's worth plus a row).
    pub fn clear(&mut self) {
        self.before.clear();
        self.after.clear();
        self.rows = 0;
    }
}

/// Reads a statement's transition tables row by row (UPDATE: old and new rows in
/// lockstep; PostgreSQL stores them in the same order).
pub struct RowReader {
    old: *mut pg_sys::Tuplestorestate,
    new: *mut pg_sys::Tuplestorestate,
    old_slot: *mut pg_sys::TupleTableSlot,
    new_slot: *mut pg_sys::TupleTableSlot,
    natts: i32,
}

impl RowReader {
    /// # Safety
    /// `old`/`new` are NULL or transition tuplestores whose rows match `tupdesc`.
    pub unsafe fn new(
        old: *mut pg_sys::Tuplestorestate,
        new: *mut pg_sys::Tuplestorestate,
        tupdesc: pg_sys::TupleDesc,
    ) -> RowReader {
        // SAFETY: per the contract; slots are dropped in Drop.
        unsafe {
            let slot = |store: *mut pg_sys::Tuplestorestate| {
                if store.is_null() {
                    std::ptr::null_mut()
                } else {
                    pg_sys::MakeSingleTupleTableSlot(tupdesc, &pg_sys::TTSOpsMinimalTuple)
                }
            };
            let reader = RowReader {
                old,
                new,
                old_slot: slot(old),
                new_slot: slot(new),
                natts: (*tupdesc).natts,
            };
            reader.rescan();
            reader
        }
    }

    pub fn rescan(&self) {
        for store in [self.old, self.new] {
            if !store.is_null() {
                // SAFETY: transition tuplestores allow rewinding their read pointer.
                unsafe { pg_sys::tuplestore_rescan(store) };
            }
        }
    }

    /// The next row of `store` into `slot`, deformed; false at the end.
    fn next(&self, store: *mut pg_sys::Tuplestorestate, slot: *mut pg_sys::TupleTableSlot) -> bool {
        // SAFETY: store and slot belong together (see `new`).
        unsafe {
            if !pg_sys::tuplestore_gettupleslot(store, true, false, slot) {
                return false;
            }
            pg_sys::slot_getsomeattrs_int(slot, self.natts);
            true
        }
    }

    /// Appends the next row (UPDATE: the next old/new pair) to `part`; false at the end.
    pub fn append_next(&self, part: &mut Part, columns: &mut [Column]) -> bool {
        let mut any = false;
        for (store, slot, into_after) in [
            (self.old, self.old_slot, false),
            (self.new, self.new_slot, true),
        ] {
            if store.is_null() || !self.next(store, slot) {
                continue;
            }
            any = true;
            let buf = if into_after {
                &mut part.after
            } else {
                &mut part.before
            };
            if part.rows > 0 {
                buf.push(b',');
            }
            // SAFETY: the slot was just filled and deformed for all attributes.
            unsafe { push_row(buf, columns, (*slot).tts_values, (*slot).tts_isnull) };
        }
        if any {
            part.rows += 1;
        }
        any
    }
}

impl Drop for RowReader {
    fn drop(&mut self) {
        for slot in [self.old_slot, self.new_slot] {
            if !slot.is_null() {
                // SAFETY: slots made in `new`, dropped once.
                unsafe { pg_sys::ExecDropSingleTupleTableSlot(slot) };
            }
        }
    }
}
