//! The audit event stack: one entry per statement being executed (executor or utility),
//! plus short-lived entries for function calls. Backend-local.
//!
//! # How it works
//! pgAudit gives every entry its own memory context, a child of the context current at
//! push time, with a reset callback that truncates the stack at that entry; executor
//! entries are then re-parented under the query's `es_query_cxt`. We keep the entries in
//! a Rust `Vec` and record for each one its *owner* context, the context whose reset or
//! deletion ends it: the context current at push time, then `es_query_cxt` for executor
//! entries. One reset callback is registered per owner context (not per entry), so a push
//! costs a `Vec` push, not a context creation.
//!
//! # Stack invariants
//! - When an owner context is reset or deleted, the lowest entry it owns and every entry
//!   above it leave the stack (pgAudit's truncate-at-item semantics). Aborted statements
//!   and (sub)transactions therefore clean up through PostgreSQL's own memory cleanup;
//!   no "after" code needs to run.
//! - A context is in `registered` exactly while our callback is registered on it:
//!   PostgreSQL drops a context's callbacks when it fires them, and our callback removes
//!   the context from the list at the same moment, so a recycled context address is
//!   registered afresh.
//! - When the stack becomes empty the substatement counter and the "statement logged"
//!   flag reset: this is the only place statement grouping ends.
//! - The state lives in a `RefCell`; borrows never span a call into PostgreSQL (which can
//!   re-enter our hooks or fire the reset callback).

use std::borrow::Cow;
use std::cell::RefCell;
use std::ffi::{c_char, c_void};

use pgrx::pg_sys;
use pgrx::prelude::*;

/// The fields of pgAudit's `AuditEvent`.
#[derive(Clone)]
pub struct AuditEvent {
    pub statement_id: i64,
    pub substatement_id: i64,
    pub log_level: pg_sys::LogStmtLevel::Type,
    pub node_tag: pg_sys::NodeTag,
    pub command: pg_sys::CommandTag::Type,
    /// Static for relation and function kinds; owned when an event trigger supplies it.
    pub object_type: Option<Cow<'static, [u8]>>,
    pub object_name: Option<Vec<u8>>,
    /// Source text; owned by PostgreSQL and alive at least as long as this entry.
    pub text: *const c_char,
    /// Text after CREATE/ALTER ROLE password redaction, replacing `text` once set.
    pub redacted_text: Option<Vec<u8>>,
    /// Copied parameter list (only when `log_parameter` was on at push time).
    pub params: pg_sys::ParamListInfo,
    pub granted: bool,
    pub logged: bool,
    pub statement_logged: bool,
    pub rows: i64,
    /// `es_query_cxt` of the query, for `log_rows` accounting.
    pub query_context: pg_sys::MemoryContext,
    /// Deferred relation pass for `log_rows` (audit role and range table).
    pub audit_oid: pg_sys::Oid,
    pub range_table: *mut pg_sys::List,
    /// Pushed while a function, procedure, DO block or trigger was running.
    pub nested: bool,
    /// A secret-bearing function of pgaudit_siem (configure, test_connection) ran inside
    /// this statement: its text and parameters are not logged (an EXECUTE of a prepared
    /// configure() call, for one, shows the secrets as its own arguments).
    pub carries_secrets: bool,
}

impl AuditEvent {
    pub fn new(nested: bool) -> Self {
        AuditEvent {
            statement_id: 0,
            substatement_id: 0,
            log_level: pg_sys::LogStmtLevel::LOGSTMT_ALL,
            node_tag: pg_sys::NodeTag::T_Invalid,
            command: pg_sys::CommandTag::CMDTAG_UNKNOWN,
            object_type: None,
            object_name: None,
            text: std::ptr::null(),
            redacted_text: None,
            params: std::ptr::null_mut(),
            granted: false,
            logged: false,
            statement_logged: false,
            rows: 0,
            carries_secrets: false,
            query_context: std::ptr::null_mut(),
            audit_oid: pg_sys::InvalidOid,
            range_table: std::ptr::null_mut(),
            nested,
        }
    }
}

pub type StackId = i64;

struct StackEntry {
    id: StackId,
    owner: pg_sys::MemoryContext,
    event: AuditEvent,
}

/// pgAudit's statement/substatement counters.
#[derive(Default)]
pub struct IdCounters {
    statement_total: i64,
    substatement_total: i64,
    statement_logged: bool,
}

impl IdCounters {
    /// Assigns ids on an event's first emission: a new statement id for the first event
    /// logged since the stack was last empty, then the next substatement id.
    pub fn assign(&mut self, event: &mut AuditEvent) {
        if event.statement_id == 0 {
            if !self.statement_logged {
                self.statement_total += 1;
                self.statement_logged = true;
            }
            event.statement_id = self.statement_total;
            self.substatement_total += 1;
            event.substatement_id = self.substatement_total;
        }
    }
}

#[derive(Default)]
struct AuditState {
    entries: Vec<StackEntry>,
    last_stack_id: StackId,
    counters: IdCounters,
    registered: Vec<pg_sys::MemoryContext>,
}

thread_local! {
    static STATE: RefCell<AuditState> = RefCell::new(AuditState::default());
}

fn with_state<R>(f: impl FnOnce(&mut AuditState) -> R) -> R {
    STATE.with(|s| f(&mut s.borrow_mut()))
}

/// Pushes an event owned by the current memory context and returns its id.
///
/// The reset callback is registered *before* the entry exists and the context is marked
/// registered only afterwards: if registering fails (out of memory), the ERROR leaves
/// neither an entry without a callback nor a context wrongly marked.
pub fn push(event: AuditEvent) -> StackId {
    // SAFETY: CurrentMemoryContext is always a valid context in a backend.
    let owner = unsafe { pg_sys::CurrentMemoryContext };
    ensure_reset_callback(owner);
    with_state(|s| {
        s.last_stack_id += 1;
        let id = s.last_stack_id;
        s.entries.push(StackEntry { id, owner, event });
        id
    })
}

/// Registers our reset callback on `context` unless it already has it.
fn ensure_reset_callback(context: pg_sys::MemoryContext) {
    if !with_state(|s| s.registered.contains(&context)) {
        register_reset_callback(context);
        with_state(|s| s.registered.push(context));
    }
}

/// Pushes a function-call event that the caller pops right after logging; it needs no
/// lifetime tracking because nothing can run between push and pop.
pub fn push_transient(event: AuditEvent) -> StackId {
    with_state(|s| {
        s.last_stack_id += 1;
        let id = s.last_stack_id;
        s.entries.push(StackEntry {
            id,
            owner: std::ptr::null_mut(),
            event,
        });
        id
    })
}

/// Pops the top entry, which must be `id` (pgAudit: "not found on top - cannot pop").
pub fn pop(id: StackId) {
    let on_top = with_state(|s| {
        if s.entries.last().map(|e| e.id) == Some(id) {
            s.entries.pop();
            if s.entries.is_empty() {
                s.reset_statement();
            }
            true
        } else {
            false
        }
    });
    if !on_top {
        super::error::AuditError::CannotPop { id: id as i64 }.raise();
    }
}

/// Moves ownership of an entry to `context` (pgAudit re-parents executor entries under
/// `es_query_cxt`).
pub fn set_owner(id: StackId, context: pg_sys::MemoryContext) {
    ensure_reset_callback(context);
    with_state(|s| {
        if let Some(entry) = s.entries.iter_mut().find(|e| e.id == id) {
            entry.owner = context;
        }
    });
}

/// Safety net at top-level transaction abort: no statement is running any more, so any
/// entry still on the stack is stale (its owner's reset callback could not run).
pub fn clear_after_abort() {
    with_state(|s| {
        if !s.entries.is_empty() {
            s.entries.clear();
            s.reset_statement();
        }
    });
}

fn register_reset_callback(context: pg_sys::MemoryContext) {
    // SAFETY: the callback struct is allocated in `context` itself, so it lives exactly as
    // long as the registration; `context` is a live context handed to us by PostgreSQL.
    unsafe {
        let cb = pg_sys::MemoryContextAlloc(
            context,
            std::mem::size_of::<pg_sys::MemoryContextCallback>(),
        ) as *mut pg_sys::MemoryContextCallback;
        (*cb).func = Some(owner_context_reset);
        (*cb).arg = context.cast();
        (*cb).next = std::ptr::null_mut();
        // Only links `cb` into the context's list: cannot raise an ERROR, so unguarded.
        crate::pg::unguarded::MemoryContextRegisterResetCallback(context, cb);
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn owner_context_reset(arg: *mut c_void) {
    let context = arg as pg_sys::MemoryContext;
    with_state(|s| {
        s.registered.retain(|c| *c != context);
        if let Some(lowest) = s.entries.iter().position(|e| e.owner == context) {
            s.entries.truncate(lowest);
            if s.entries.is_empty() {
                s.reset_statement();
            }
        }
    });
}

impl AuditState {
    fn reset_statement(&mut self) {
        super::nesting::reset();
        self.counters.substatement_total = 0;
        self.counters.statement_logged = false;
    }
}

// ---- Accessors (each a short borrow) ----

pub fn is_empty() -> bool {
    with_state(|s| s.entries.is_empty())
}

pub fn top_id() -> Option<StackId> {
    with_state(|s| s.entries.last().map(|e| e.id))
}

pub fn contains(id: StackId) -> bool {
    with_state(|s| s.entries.iter().any(|e| e.id == id))
}

/// Runs `f` on the event with `id`, if it is still on the stack.
pub fn with_event<R>(id: StackId, f: impl FnOnce(&mut AuditEvent) -> R) -> Option<R> {
    with_state(|s| {
        s.entries
            .iter_mut()
            .find(|e| e.id == id)
            .map(|e| f(&mut e.event))
    })
}

/// The statement text of the event directly below `id` (a function call's enclosing
/// statement), including its redaction if any, and whether that statement is nested.
pub fn text_below(id: StackId) -> (*const c_char, Option<Vec<u8>>, bool) {
    with_state(|s| {
        let pos = s.entries.iter().position(|e| e.id == id)?;
        let below = s.entries.get(pos.checked_sub(1)?)?;
        Some((
            below.event.text,
            below.event.redacted_text.clone(),
            below.event.nested,
        ))
    })
    .unwrap_or((std::ptr::null(), None, false))
}

/// Finds the entry whose recorded query context is `context` (log_rows accounting).
pub fn find_by_query_context(context: pg_sys::MemoryContext) -> Option<StackId> {
    with_state(|s| {
        s.entries
            .iter()
            .rev()
            .find(|e| !e.event.query_context.is_null() && e.event.query_context == context)
            .map(|e| e.id)
    })
}

/// Marks every statement on the stack as carrying secrets (see
/// [`AuditEvent::carries_secrets`]).
pub fn mark_carrying_secrets() {
    with_state(|s| {
        for entry in s.entries.iter_mut() {
            entry.event.carries_secrets = true;
        }
    })
}

/// Whether every entry's node tag satisfies `pred` (the top-level "stack is not empty"
/// check), without allocating.
pub fn all_node_tags(pred: impl Fn(pg_sys::NodeTag) -> bool) -> bool {
    with_state(|s| s.entries.iter().all(|e| pred(e.event.node_tag)))
}

/// Runs `f` on the event with `id` and the id counters, if the event is still on the stack.
pub fn with_event_and_counters<R>(
    id: StackId,
    f: impl FnOnce(&mut AuditEvent, &mut IdCounters) -> R,
) -> Option<R> {
    with_state(|s| {
        let AuditState {
            entries, counters, ..
        } = s;
        entries
            .iter_mut()
            .find(|e| e.id == id)
            .map(|e| f(&mut e.event, counters))
    })
}
