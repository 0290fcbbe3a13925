//! Depth of function, procedure, trigger and DO-block execution: statements run at depth
//! > 0 are nested (for `pgaudit.log_nested_statements`).
//!
//! # Invariants
//! - The dispatcher raises the depth around ExecutorRun/ExecutorFinish, the planner and
//!   DO/CALL; an ERROR that longjmps past the matching `leave` leaves it high, so it is
//!   reset when the audit stack empties (no statement running) and at transaction abort.

use std::cell::Cell;

thread_local! {
    static NESTING: Cell<u32> = const { Cell::new(0) };
}

pub fn enter() {
    NESTING.with(|n| n.set(n.get() + 1));
}

pub fn leave() {
    NESTING.with(|n| n.set(n.get().saturating_sub(1)));
}

pub fn reset() {
    NESTING.with(|n| n.set(0));
}

pub fn nested() -> bool {
    NESTING.with(|n| n.get() > 0)
}
