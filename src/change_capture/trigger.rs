//! The capture trigger: `pgaudit_siem.capture_changes()`, an AFTER ... FOR EACH STATEMENT
//! trigger with transition tables, written in Rust. One statement → one event (or
//! several parts) appended to `pgaudit_siem.outbox` in the same transaction.
//!
//! # How it works
//! The trigger reads the statement's transition tables (tuplestores) directly, encodes
//! each row as a JSON object with encoders chosen once per statement and column
//! (PostgreSQL's `to_json` mapping: numbers, booleans, json/jsonb verbatim, arrays and
//! composites through PostgreSQL's own `array_to_json`/`row_to_json`, date/time types
//! through `JsonEncodeDateTime`, everything else as a JSON string of the type's output),
//! splits rows into parts by `pgaudit_siem.max_rows_per_event` and
//! `pgaudit_siem.max_event_bytes`, and inserts each part with a saved SPI plan.
//!
//! # Invariants
//! - The outbox insert runs as the outbox owner (the installing superuser) with the
//!   internal-statement flag set: writers need no privilege on the outbox, and the
//!   insert is not itself audit-logged.
//! - The trigger's first argument is its category; the excluded columns come from the
//!   registration (`pgaudit_siem.tracked`: its attribute numbers, matched into the
//!   trigger's table by current name), looked up once per backend and trigger and
//!   forgotten at relcache invalidation (any rename invalidates it), so a restored table
//!   (other attribute numbers), a partition, or a trigger of an older version excludes
//!   the right columns.
//! - UPDATE parts pair `data_before[i]` with `data_after[i]`: PostgreSQL stores the old
//!   and new transition rows in the same order, and both are cut at the same indices.
//! - A statement that changed no rows writes nothing.

use std::cell::RefCell;
use std::ffi::CStr;

use pgrx::pg_sys;
use pgrx::prelude::*;

use super::encode::columns;
use super::error::CaptureError;
use super::event::{Action, EventContext};
use super::outbox::{as_outbox_owner, insert_event};
use super::rows::{Part, RowReader};
use crate::settings;

crate::function_info_v1!(pg_finfo_pgaudit_siem_capture_changes);

#[pg_guard]
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn pgaudit_siem_capture_changes(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    // SAFETY: PostgreSQL's call frame; `context` is checked to be TriggerData.
    let trigger = unsafe {
        let context = (*fcinfo).context;
        if context.is_null() || (*context).type_ != pg_sys::NodeTag::T_TriggerData {
            misuse("pgaudit_siem.capture_changes() can only be called as a trigger");
        }
        &*(context as *const pg_sys::TriggerData)
    };
    let action = checked_action(trigger);
    // The SQL the capture runs (registry check, lookups, the outbox insert) is internal:
    // the audit trail shows the application's statement, not our machinery. Only those
    // calls are scoped: encoding rows may run user code (json casts of user types), whose
    // statements must stay visible.
    let category = trigger_category(trigger);
    let excluded = registered_exclusions(trigger, &category);
    capture(trigger, action, &category, &excluded);
    // The executor ignores an AFTER trigger's tuple but refuses a SQL NULL result, so
    // return a NULL pointer with isnull left false, as PL/pgSQL does.
    pg_sys::Datum::from(0)
}

/// Refuses a call that is not one of the capture triggers `track()` installs
/// (SQLSTATE 39P01, trigger protocol violated).
fn misuse(message: &str) -> ! {
    CaptureError::Misuse(message.to_owned()).raise()
}

/// The action, after checking level, timing, name and transition tables.
fn checked_action(trigger: &pg_sys::TriggerData) -> Action {
    let event = trigger.tg_event;
    if event & pg_sys::TRIGGER_EVENT_ROW != 0 {
        misuse("pgaudit_siem.capture_changes() must be a FOR EACH STATEMENT trigger");
    }
    if event & pg_sys::TRIGGER_EVENT_TIMINGMASK != pg_sys::TRIGGER_EVENT_AFTER {
        misuse("pgaudit_siem.capture_changes() must be an AFTER trigger");
    }
    let (action, name): (Action, &CStr) = match event & pg_sys::TRIGGER_EVENT_OPMASK {
        pg_sys::TRIGGER_EVENT_INSERT => (Action::Insert, c"pgaudit_siem_capture_insert"),
        pg_sys::TRIGGER_EVENT_UPDATE => (Action::Update, c"pgaudit_siem_capture_update"),
        pg_sys::TRIGGER_EVENT_DELETE => (Action::Delete, c"pgaudit_siem_capture_delete"),
        pg_sys::TRIGGER_EVENT_TRUNCATE => (Action::Truncate, c"pgaudit_siem_capture_truncate"),
        _ => misuse("pgaudit_siem.capture_changes() fired for an unknown event"),
    };
    // SAFETY: tg_trigger is valid during the call; tgname is NUL-terminated.
    let actual = unsafe { CStr::from_ptr((*trigger.tg_trigger).tgname) };
    if actual != name {
        misuse(&format!(
            "trigger \"{}\" is not a pgaudit_siem capture trigger",
            actual.to_string_lossy()
        ));
    }
    let (needs_old, needs_new) = match action {
        Action::Insert => (false, true),
        Action::Update => (true, true),
        Action::Delete => (true, false),
        Action::Truncate => (false, false),
    };
    if (needs_old && trigger.tg_oldtable.is_null()) || (needs_new && trigger.tg_newtable.is_null())
    {
        misuse("pgaudit_siem.capture_changes() needs the transition tables pgaudit_siem.track() declares");
    }
    action
}

thread_local! {
    /// Capture triggers already matched against `pgaudit_siem.tracked`: (table, trigger)
    /// and the attribute numbers the registration excludes. Any change of a trigger or of
    /// the table's columns invalidates its relcache entry, which drops them.
    static VERIFIED: RefCell<Vec<(pg_sys::Oid, pg_sys::Oid, Vec<i16>)>> = const { RefCell::new(Vec::new()) };
}

/// Relcache invalidation: forget verified triggers of `relid` (all for InvalidOid).
pub fn forget_verified(relid: pg_sys::Oid) {
    VERIFIED.with(|v| {
        v.borrow_mut()
            .retain(|(table, _, _)| relid != pg_sys::InvalidOid && *table != relid)
    });
}

/// The excluded columns of the trigger's table, from its registration (the table's own,
/// else its closest tracked ancestor's). Refuses a capture trigger whose table is not
/// tracked with the trigger's category, so a stray or forged trigger writes no event.
/// Exclusions never come from the trigger's arguments: a restored or upgraded trigger
/// carries the attribute numbers (or names) of another table.
fn registered_exclusions(trigger: &pg_sys::TriggerData, category: &str) -> Vec<i16> {
    // SAFETY: trigger and relation are valid during the call.
    let (relid, tgoid) = unsafe { ((*trigger.tg_relation).rd_id, (*trigger.tg_trigger).tgoid) };
    if let Some(excluded) = VERIFIED.with(|v| {
        v.borrow()
            .iter()
            .find(|(table, t, _)| *table == relid && *t == tgoid)
            .map(|(_, _, excluded)| excluded.clone())
    }) {
        return excluded;
    }
    // Runs as the outbox owner with the caller's search_path: every operator and cast
    // is qualified, so no object of the caller's can be picked.
    let registered = as_outbox_owner(|| {
        crate::pg::internal::run(|| {
            let query = if registry_is_0_1() {
                include_str!("../../sql/queries/capture_registered_category_0_1.sql")
            } else {
                include_str!("../../sql/queries/capture_registered_category.sql")
            };
            Spi::get_two_with_args::<String, Vec<i16>>(query, &[relid.into()])
        })
    });
    match registered {
        Ok((Some(c), excluded)) if c == category => {
            let excluded = excluded.unwrap_or_default();
            VERIFIED.with(|v| v.borrow_mut().push((relid, tgoid, excluded.clone())));
            excluded
        }
        _ => misuse("this capture trigger does not match pgaudit_siem.tracked"),
    }
}

/// Whether the registry still has 0.1.0's shape: the library was upgraded and ALTER
/// EXTENSION UPDATE has not run. Read at every registration lookup (a relcache miss),
/// never cached: the update reinstalls every capture trigger, so the first lookup after
/// it already sees the new version.
fn registry_is_0_1() -> bool {
    crate::pg::extension::installed_version().as_deref() == Some("0.1.0")
}

/// The trigger's first argument: its category. Later arguments (the excluded columns
/// when the trigger was installed) are informational.
fn trigger_category(trigger: &pg_sys::TriggerData) -> String {
    // SAFETY: tg_trigger is valid during the call; tgargs has tgnargs C strings.
    unsafe {
        let t = &*trigger.tg_trigger;
        if t.tgnargs < 1 {
            misuse("a capture trigger needs its category as first argument");
        }
        CStr::from_ptr(*t.tgargs).to_string_lossy().into_owned()
    }
}

/// Builds and inserts the events of one statement with memory bounded by one part:
/// parts are inserted as they fill. A statement that fits one part is encoded once; a
/// larger one is encoded twice, first to count its parts (every part carries
/// `part_count`), then to insert them, with the same deterministic encoders.
fn capture(trigger: &pg_sys::TriggerData, action: Action, category: &str, excluded: &[i16]) {
    let relation = trigger.tg_relation;
    // SAFETY: the trigger's relation is open and locked for the statement.
    let tupdesc = unsafe { (*relation).rd_att };
    let (old, new) = match action {
        Action::Insert => (std::ptr::null_mut(), trigger.tg_newtable),
        Action::Delete => (trigger.tg_oldtable, std::ptr::null_mut()),
        Action::Update => (trigger.tg_oldtable, trigger.tg_newtable),
        Action::Truncate => (std::ptr::null_mut(), std::ptr::null_mut()),
    };
    let row_count: Option<u64> = match action {
        Action::Truncate => None,
        // SAFETY: checked_action made sure the needed transition tables exist.
        Action::Insert => Some(unsafe { pg_sys::tuplestore_tuple_count(new) } as u64),
        Action::Update | Action::Delete => {
            Some(unsafe { pg_sys::tuplestore_tuple_count(old) } as u64)
        }
    };
    if row_count == Some(0) {
        return;
    }
    let context = EventContext::current(category, action, relation);
    let mut part = Part::default();
    if action == Action::Truncate {
        insert_part(&context, row_count, 1, 1, &part);
        return;
    }
    let mut columns = columns(tupdesc, excluded);
    let (max_rows, max_bytes) = (settings::max_rows_per_event(), settings::max_event_bytes());
    let full = |p: &Part| p.rows >= max_rows || p.bytes() >= max_bytes;
    // SAFETY: the transition tables of this relation's statement.
    let reader = unsafe { RowReader::new(old, new, tupdesc) };
    let mut part_count = 0usize;
    while reader.append_next(&mut part, &mut columns) {
        if full(&part) {
            part_count += 1;
            part.clear();
        }
    }
    if part_count == 0 {
        insert_part(&context, row_count, 1, 1, &part);
        return;
    }
    if part.rows > 0 {
        part_count += 1;
    }
    part.clear();
    reader.rescan();
    let mut inserted = 0usize;
    while reader.append_next(&mut part, &mut columns) {
        if full(&part) {
            inserted += 1;
            insert_part(&context, row_count, inserted, part_count, &part);
            part.clear();
        }
    }
    if part.rows > 0 {
        inserted += 1;
        insert_part(&context, row_count, inserted, part_count, &part);
    }
    if inserted != part_count {
        CaptureError::Internal(format!(
            "capture found {inserted} parts on its second pass, {part_count} on the first"
        ))
        .raise();
    }
}

fn insert_part(
    context: &EventContext,
    row_count: Option<u64>,
    part: usize,
    parts: usize,
    rows: &Part,
) {
    let payload = context.payload(row_count, part, parts, rows);
    insert_event(context, row_count, part, parts, &payload);
}
