//! Internal statements: SQL that pgaudit_siem runs itself (capture inserts, guards, event
//! triggers, worker queries, the bodies of the extension's own SQL functions). They are
//! never session-audit-logged and never take a statement id.
//!
//! # Invariants
//! - The flag changes only through [`InternalScope`] (restores the previous value on
//!   drop, which also runs while a PostgreSQL ERROR raised inside a pgrx-guarded call
//!   unwinds as a Rust panic), through the fmgr hook around the extension's own SQL
//!   functions (start / end / abort, strictly nested), and through the safety nets:
//!   subtransaction abort restores the value the subtransaction started with, top-level
//!   abort clears it. So a caught error (PL/pgSQL EXCEPTION block) never leaves the flag
//!   set for the statements that follow.
//! - The extension's own functions are recognised by extension membership (pg_depend),
//!   cached per backend and forgotten on any pg_proc invalidation. Trigger and
//!   event-trigger functions are left out: they scope their own work (the DDL event
//!   triggers log the user's statement; the capture trigger marks only its insert).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use pgrx::pg_sys;

thread_local! {
    static INTERNAL: Cell<bool> = const { Cell::new(false) };
    /// (subtransaction id, flag at its start), innermost last.
    static SUBXACT_SAVED: RefCell<Vec<(pg_sys::SubTransactionId, bool)>> = const { RefCell::new(Vec::new()) };
    /// (function, flag before its call) saved by the fmgr hook, innermost call last.
    static FMGR_SAVED: RefCell<Vec<(pg_sys::Oid, bool)>> = const { RefCell::new(Vec::new()) };
    /// Function oid → whether it is one of ours, and whether it takes SIEM secrets.
    static OWN_FUNCTIONS: RefCell<HashMap<pg_sys::Oid, Own>> = RefCell::new(HashMap::new());
}

/// Whether the statement being run is one of the extension's own.
pub fn active() -> bool {
    INTERNAL.with(Cell::get)
}

/// Whether the statement that called the innermost of the extension's own functions now
/// running was internal: inside one of our functions (which the fmgr hook marks
/// internal), the caller's state. For checks that run as a function call, such as a
/// trigger's WHEN condition.
pub fn active_for_caller() -> bool {
    FMGR_SAVED
        .with(|s| s.borrow().last().map(|(_, previous)| *previous))
        .unwrap_or_else(active)
}

/// Marks everything run while it lives as internal; restores the previous state on drop.
#[must_use = "the scope ends when the guard is dropped"]
pub struct InternalScope {
    previous: bool,
}

impl InternalScope {
    pub fn enter() -> InternalScope {
        InternalScope {
            previous: INTERNAL.with(|f| f.replace(true)),
        }
    }
}

impl Drop for InternalScope {
    fn drop(&mut self) {
        INTERNAL.with(|f| f.set(self.previous));
    }
}

/// Runs `f` as internal statements.
pub fn run<R>(f: impl FnOnce() -> R) -> R {
    let _scope = InternalScope::enter();
    f()
}

/// The syscache said pg_proc changed: forget which functions are ours.
pub fn forget_functions() {
    OWN_FUNCTIONS.with(|m| m.borrow_mut().clear());
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Own {
    No,
    Yes,
    /// Ours, and its arguments are SIEM secrets (header values such as tokens).
    TakesSecrets,
}

/// The extension's functions whose arguments are SIEM secrets.
const TAKES_SECRETS: [&std::ffi::CStr; 3] = [c"configure", c"test_connection", c"_send_test_event"];

/// Whether `function` is one of the extension's secret-bearing functions (inside a
/// transaction).
pub fn takes_secrets(function: pg_sys::Oid) -> bool {
    classify(function) == Own::TakesSecrets
}

fn is_own_function(function: pg_sys::Oid) -> bool {
    classify(function) != Own::No
}

/// Whether `function` belongs to the pgaudit_siem extension (inside a transaction).
fn classify(function: pg_sys::Oid) -> Own {
    if let Some(known) = OWN_FUNCTIONS.with(|m| m.borrow().get(&function).copied()) {
        return known;
    }
    // Trigger and event-trigger functions decide for themselves: session audit's DDL
    // event triggers must still log the user's DDL.
    // SAFETY: catalog lookups inside a transaction (checked by the caller); missing_ok.
    let own = unsafe {
        let extension = pg_sys::get_extension_oid(c"pgaudit_siem".as_ptr(), true);
        extension != pg_sys::InvalidOid
            && pg_sys::getExtensionOfObject(pg_sys::ProcedureRelationId, function) == extension
            && !matches!(
                pg_sys::get_func_rettype(function),
                pg_sys::TRIGGEROID | pg_sys::EVENT_TRIGGEROID
            )
    };
    let own = match own {
        false => Own::No,
        // SAFETY: a syscache lookup of an existing function; the name is palloc'd.
        true => match unsafe { pg_sys::get_func_name(function) } {
            name if !name.is_null()
                && TAKES_SECRETS.contains(&unsafe { std::ffi::CStr::from_ptr(name) }) =>
            {
                Own::TakesSecrets
            }
            _ => Own::Yes,
        },
    };
    OWN_FUNCTIONS.with(|m| m.borrow_mut().insert(function, own));
    own
}

/// `needs_fmgr_hook`: our own functions need the fmgr hook.
pub fn needs_fmgr_hook(function: pg_sys::Oid) -> bool {
    // SAFETY: plain read of transaction state.
    let in_transaction = unsafe { pg_sys::IsTransactionState() };
    in_transaction && is_own_function(function)
}

/// `fmgr_hook`: start / end / abort of a call to `function`. Returns true when one of
/// the extension's secret-bearing functions starts (the statements running it must not
/// log their text).
pub fn at_function_call(event: pg_sys::FmgrHookEventType::Type, function: pg_sys::Oid) -> bool {
    // The hook runs for every SECURITY DEFINER or SET function, and for needs_fmgr_hook's
    // yes (possibly another extension's): only our functions change the flag. PostgreSQL
    // does not ask needs_fmgr_hook about SECURITY DEFINER functions, so they are looked
    // up here, at the start (catalog access is safe then, not at abort). Calls nest
    // strictly (PG_TRY in fmgr_security_definer): an end or abort belongs to our call
    // exactly when the innermost saved entry is for the same function.
    if event == pg_sys::FmgrHookEventType::FHET_START {
        // SAFETY: plain read of transaction state.
        let own = match unsafe { pg_sys::IsTransactionState() } {
            true => classify(function),
            false => Own::No,
        };
        if own != Own::No {
            let previous = INTERNAL.with(|f| f.replace(true));
            FMGR_SAVED.with(|s| s.borrow_mut().push((function, previous)));
        }
        own == Own::TakesSecrets
    } else {
        let previous = FMGR_SAVED.with(|s| {
            let mut saved = s.borrow_mut();
            match saved.last() {
                Some((f, _)) if *f == function => saved.pop().map(|(_, p)| p),
                _ => None,
            }
        });
        if let Some(previous) = previous {
            INTERNAL.with(|f| f.set(previous));
        }
        false
    }
}

/// Subtransaction start / commit / abort: an abort restores the flag it started with.
pub fn at_subtransaction_event(
    event: pg_sys::SubXactEvent::Type,
    subxact: pg_sys::SubTransactionId,
) {
    match event {
        pg_sys::SubXactEvent::SUBXACT_EVENT_START_SUB => {
            let current = active();
            SUBXACT_SAVED.with(|s| s.borrow_mut().push((subxact, current)));
        }
        pg_sys::SubXactEvent::SUBXACT_EVENT_COMMIT_SUB
        | pg_sys::SubXactEvent::SUBXACT_EVENT_ABORT_SUB => {
            let restore = event == pg_sys::SubXactEvent::SUBXACT_EVENT_ABORT_SUB;
            SUBXACT_SAVED.with(|s| {
                let mut saved = s.borrow_mut();
                if let Some(pos) = saved.iter().rposition(|(id, _)| *id == subxact) {
                    let (_, value) = saved[pos];
                    saved.truncate(pos);
                    if restore {
                        INTERNAL.with(|f| f.set(value));
                    }
                }
            });
        }
        _ => {}
    }
}

/// Transaction end: forget subtransaction state; an abort clears the flag.
pub fn at_transaction_event(event: pg_sys::XactEvent::Type) {
    use pg_sys::XactEvent::*;
    if matches!(
        event,
        XACT_EVENT_ABORT
            | XACT_EVENT_PARALLEL_ABORT
            | XACT_EVENT_COMMIT
            | XACT_EVENT_PARALLEL_COMMIT
            | XACT_EVENT_PREPARE
    ) {
        SUBXACT_SAVED.with(|s| s.borrow_mut().clear());
        if matches!(event, XACT_EVENT_ABORT | XACT_EVENT_PARALLEL_ABORT) {
            FMGR_SAVED.with(|s| s.borrow_mut().clear());
            INTERNAL.with(|f| f.set(false));
        }
    }
}
