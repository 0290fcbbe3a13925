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
//! - The trigger's arguments carry its configuration: category, then excluded columns.
//!   `track()` rewrites them, so no catalog lookup happens per statement.
//! - UPDATE parts pair `data_before[i]` with `data_after[i]`: PostgreSQL stores the old
//!   and new transition rows in the same order, and both are cut at the same indices.
//! - A statement that changed no rows writes nothing.

use std::cell::{Cell, RefCell};
use std::ffi::{c_char, CStr};

use pgrx::pg_sys;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;

use super::json::{self, Uuid7Generator};
use crate::gucs;

const FINFO_V1: pg_sys::Pg_finfo_record = pg_sys::Pg_finfo_record { api_version: 1 };

#[unsafe(no_mangle)]
pub extern "C" fn pg_finfo_pgaudit_siem_capture_changes() -> &'static pg_sys::Pg_finfo_record {
    &FINFO_V1
}

/// What a statement did to the table.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Insert,
    Update,
    Delete,
    Truncate,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Insert => "insert",
            Action::Update => "update",
            Action::Delete => "delete",
            Action::Truncate => "truncate",
        }
    }
}

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
    let (category, excluded) = trigger_args(trigger);
    verify_registered(trigger, &category, excluded.len());
    capture(trigger, action, &category, &excluded);
    // The executor ignores an AFTER trigger's tuple but refuses a SQL NULL result, so
    // return a NULL pointer with isnull left false, as PL/pgSQL does.
    pg_sys::Datum::from(0)
}

/// Refuses a call that is not one of the capture triggers `track()` installs
/// (SQLSTATE 39P01, trigger protocol violated).
fn misuse(message: &str) -> ! {
    ErrorReport::new(
        PgSqlErrorCode::ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED,
        message.to_owned(),
        function_name!(),
    )
    .set_hint("pgaudit_siem.capture_changes() runs only as the capture triggers that pgaudit_siem.track() installs.")
    .report(PgLogLevel::ERROR);
    unreachable!("ERROR does not return")
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
    /// Capture triggers already matched against `pgaudit_siem.tracked`: (table, trigger).
    /// Any change of a trigger invalidates its table's relcache entry, which drops them.
    static VERIFIED: RefCell<Vec<(pg_sys::Oid, pg_sys::Oid)>> = const { RefCell::new(Vec::new()) };
}

/// Relcache invalidation: forget verified triggers of `relid` (all for InvalidOid).
#[pg_guard]
pub unsafe extern "C-unwind" fn forget_verified(_arg: pg_sys::Datum, relid: pg_sys::Oid) {
    VERIFIED.with(|v| {
        v.borrow_mut()
            .retain(|(table, _)| relid != pg_sys::InvalidOid && *table != relid)
    });
}

/// Registers the relcache callback. `_PG_init` only.
pub fn init() {
    // SAFETY: appends to PostgreSQL's callback list in the postmaster.
    unsafe { pg_sys::CacheRegisterRelcacheCallback(Some(forget_verified), pg_sys::Datum::from(0)) };
}

/// Refuses a capture trigger whose table (or partition root) is not tracked with the
/// trigger's category and exclusions, so a stray or forged trigger writes no event.
fn verify_registered(trigger: &pg_sys::TriggerData, category: &str, excluded: usize) {
    // SAFETY: trigger and relation are valid during the call.
    let (relid, tgoid) = unsafe { ((*trigger.tg_relation).rd_id, (*trigger.tg_trigger).tgoid) };
    if VERIFIED.with(|v| v.borrow().contains(&(relid, tgoid))) {
        return;
    }
    // Runs as the outbox owner with the caller's search_path: every operator and cast
    // is qualified, so no object of the caller's can be picked. The nearest registration
    // wins (the table itself, then its closest ancestor).
    let registered = as_outbox_owner(|| {
        crate::pg::internal::run(|| {
            Spi::get_one_with_args::<String>(
                "SELECT t.category
                   FROM pgaudit_siem.tracked t
                   JOIN (SELECT $1::pg_catalog.oid AS relid, 0 AS depth
                         UNION ALL
                         SELECT a.relid::pg_catalog.oid, a.depth
                           FROM pg_catalog.pg_partition_ancestors($1) WITH ORDINALITY AS a(relid, depth)) c
                     ON t.relid OPERATOR(pg_catalog.=) c.relid
                  ORDER BY c.depth
                  LIMIT 1",
                &[relid.into()],
            )
        })
    });
    // Exclusions are checked by category only: a partition's excluded columns are its
    // own attribute numbers (and dropped root columns leave none).
    let _ = excluded;
    match registered {
        Ok(Some(c)) if c == category => {
            VERIFIED.with(|v| v.borrow_mut().push((relid, tgoid)));
        }
        _ => misuse("this capture trigger does not match pgaudit_siem.tracked"),
    }
}

/// Trigger arguments: category, then the attribute numbers of excluded columns.
fn trigger_args(trigger: &pg_sys::TriggerData) -> (String, Vec<i16>) {
    // SAFETY: tg_trigger is valid during the call; tgargs has tgnargs C strings.
    let args: Vec<String> = unsafe {
        let t = &*trigger.tg_trigger;
        (0..t.tgnargs.max(0) as usize)
            .map(|i| {
                CStr::from_ptr(*t.tgargs.add(i))
                    .to_string_lossy()
                    .into_owned()
            })
            .collect()
    };
    let mut iter = args.into_iter();
    let Some(category) = iter.next() else {
        misuse("a capture trigger needs its category as first argument");
    };
    let excluded = iter
        .map(|a| {
            a.parse::<i16>().unwrap_or_else(|_| {
                misuse("capture trigger arguments after the category are column numbers")
            })
        })
        .collect();
    (category, excluded)
}

/// How one column becomes JSON, chosen once per statement.
enum Encoder {
    Bool,
    /// int2/int4/int8: formatted from the datum, no output function call.
    Int(pg_sys::Oid),
    /// text/varchar: the detoasted bytes, escaped.
    Text,
    Number(pg_sys::FmgrInfo),
    String(pg_sys::FmgrInfo),
    Verbatim(pg_sys::FmgrInfo),
    DateTime(pg_sys::Oid),
    Array,
    Composite,
}

struct Column {
    attnum: usize,
    key: Vec<u8>,
    encoder: Encoder,
}

fn columns(tupdesc: pg_sys::TupleDesc, excluded: &[i16]) -> Vec<Column> {
    // SAFETY: a relation's tuple descriptor with `natts` attributes.
    let natts = unsafe { (*tupdesc).natts } as usize;
    let mut out = Vec::with_capacity(natts);
    for i in 0..natts {
        // SAFETY: i < natts.
        let att = unsafe { &*(*tupdesc).attrs.as_ptr().add(i) };
        // Exclusions follow the column (its number), not its name.
        if att.attisdropped || excluded.contains(&att.attnum) {
            continue;
        }
        // SAFETY: NameData is NUL-terminated.
        let name = unsafe { CStr::from_ptr(att.attname.data.as_ptr()) }
            .to_string_lossy()
            .into_owned();
        let mut key = Vec::with_capacity(name.len() + 3);
        json::push_string(&mut key, name.as_bytes());
        key.push(b':');
        out.push(Column {
            attnum: i,
            key,
            encoder: encoder_for(att.atttypid),
        });
    }
    out
}

fn encoder_for(type_oid: pg_sys::Oid) -> Encoder {
    // SAFETY: type catalog lookups for a column's type; fmgr_info fills a FmgrInfo that
    // lives in the current (per-call) memory context for this statement.
    unsafe {
        let base = pg_sys::getBaseType(type_oid);
        let output = |oid: pg_sys::Oid| {
            let mut func = pg_sys::InvalidOid;
            let mut varlena = false;
            pg_sys::getTypeOutputInfo(oid, &mut func, &mut varlena);
            let mut info = pg_sys::FmgrInfo::default();
            pg_sys::fmgr_info(func, &mut info);
            info
        };
        match base {
            pg_sys::BOOLOID => Encoder::Bool,
            pg_sys::INT2OID | pg_sys::INT4OID | pg_sys::INT8OID => Encoder::Int(base),
            pg_sys::TEXTOID | pg_sys::VARCHAROID => Encoder::Text,
            pg_sys::OIDOID | pg_sys::FLOAT4OID | pg_sys::FLOAT8OID | pg_sys::NUMERICOID => {
                Encoder::Number(output(base))
            }
            pg_sys::DATEOID
            | pg_sys::TIMESTAMPOID
            | pg_sys::TIMESTAMPTZOID
            | pg_sys::TIMEOID
            | pg_sys::TIMETZOID => Encoder::DateTime(base),
            pg_sys::JSONOID | pg_sys::JSONBOID => Encoder::Verbatim(output(base)),
            _ if pg_sys::get_element_type(base) != pg_sys::InvalidOid => Encoder::Array,
            _ if pg_sys::type_is_rowtype(base) => Encoder::Composite,
            _ => Encoder::String(output(base)),
        }
    }
}

/// The most JSON one part may hold, whatever `max_event_bytes` says: one row is always
/// appended whole, and escaping can make a value six times longer, so values are checked
/// before they are encoded (Rust allocation failure would abort the backend and restart
/// the cluster). With the payload copy and the text datum a part stays below 1 GB.
const PART_HARD_LIMIT: usize = 256 * 1024 * 1024;

/// Refuses a value of `len` source bytes that could push `out` past [`PART_HARD_LIMIT`].
fn ensure_room(out: &[u8], len: usize) {
    if out.len().saturating_add(len.saturating_mul(6)) > PART_HARD_LIMIT {
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            "a changed row is too large to capture (its JSON would exceed 256 MB)",
            function_name!(),
        )
        .set_hint("Exclude the large column from change capture: pgaudit_siem.track(table, category, exclude_columns).")
        .report(PgLogLevel::ERROR);
    }
}

/// Appends one row as a JSON object.
///
/// # Safety
/// `values`/`nulls` hold the slot's deformed attributes for `columns`.
unsafe fn push_row(
    out: &mut Vec<u8>,
    columns: &mut [Column],
    values: *const pg_sys::Datum,
    nulls: *const bool,
) {
    out.push(b'{');
    for (i, column) in columns.iter_mut().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&column.key);
        // SAFETY: per the contract.
        let (value, is_null) = unsafe { (*values.add(column.attnum), *nulls.add(column.attnum)) };
        if is_null {
            out.extend_from_slice(b"null");
            continue;
        }
        // SAFETY: each encoder calls the PostgreSQL function matching the column's type.
        unsafe {
            match &mut column.encoder {
                Encoder::Bool => out.extend_from_slice(if value.value() != 0 {
                    b"true"
                } else {
                    b"false"
                }),
                Encoder::Int(type_oid) => {
                    use std::io::Write;
                    let n: i64 = match *type_oid {
                        pg_sys::INT2OID => value.value() as i16 as i64,
                        pg_sys::INT4OID => value.value() as i32 as i64,
                        _ => value.value() as i64,
                    };
                    let _ = write!(out, "{n}");
                }
                Encoder::Text => {
                    let raw = value.cast_mut_ptr::<pg_sys::varlena>();
                    let detoasted = pg_sys::pg_detoast_datum_packed(raw);
                    let bytes = pgrx::varlena::varlena_to_byte_slice(detoasted);
                    ensure_room(out, bytes.len());
                    json::push_string(out, bytes);
                    if detoasted != raw {
                        pg_sys::pfree(detoasted.cast());
                    }
                }
                Encoder::Number(info) => {
                    let text = pg_sys::OutputFunctionCall(info, value);
                    let bytes = CStr::from_ptr(text).to_bytes();
                    ensure_room(out, bytes.len());
                    if json::is_json_number(bytes) {
                        out.extend_from_slice(bytes);
                    } else {
                        json::push_string(out, bytes);
                    }
                    pg_sys::pfree(text.cast());
                }
                Encoder::String(info) => {
                    let text = pg_sys::OutputFunctionCall(info, value);
                    let bytes = CStr::from_ptr(text).to_bytes();
                    ensure_room(out, bytes.len());
                    json::push_string(out, bytes);
                    pg_sys::pfree(text.cast());
                }
                Encoder::Verbatim(info) => {
                    let text = pg_sys::OutputFunctionCall(info, value);
                    let bytes = CStr::from_ptr(text).to_bytes();
                    ensure_room(out, bytes.len());
                    out.extend_from_slice(bytes);
                    pg_sys::pfree(text.cast());
                }
                Encoder::DateTime(type_oid) => {
                    let text = pg_sys::JsonEncodeDateTime(
                        std::ptr::null_mut(),
                        value,
                        *type_oid,
                        std::ptr::null(),
                    );
                    json::push_string(out, CStr::from_ptr(text).to_bytes());
                    pg_sys::pfree(text.cast());
                }
                Encoder::Array | Encoder::Composite => {
                    let function: pg_sys::PGFunction = if matches!(column.encoder, Encoder::Array) {
                        Some(builtin::array_to_json)
                    } else {
                        Some(builtin::row_to_json)
                    };
                    let json = pg_sys::DirectFunctionCall1Coll(function, pg_sys::InvalidOid, value);
                    let text = pg_sys::text_to_cstring(json.cast_mut_ptr());
                    let bytes = CStr::from_ptr(text).to_bytes();
                    ensure_room(out, bytes.len());
                    out.extend_from_slice(bytes);
                    pg_sys::pfree(text.cast());
                }
            }
        }
    }
    out.push(b'}');
}

/// PostgreSQL's own SQL-callable JSON builders, declared raw so they can be passed to
/// `DirectFunctionCall1Coll` (pgrx's bindings wrap them in Rust functions).
mod builtin {
    use pgrx::pg_sys;

    unsafe extern "C-unwind" {
        pub fn array_to_json(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum;
        pub fn row_to_json(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum;
    }
}

/// Rows of one part: JSON array bodies (without brackets) and the row count.
#[derive(Default)]
struct Part {
    before: Vec<u8>,
    after: Vec<u8>,
    rows: usize,
}

impl Part {
    fn bytes(&self) -> usize {
        self.before.len() + self.after.len()
    }

    /// Empties the part, keeping its buffers (at most one part's worth plus a row).
    fn clear(&mut self) {
        self.before.clear();
        self.after.clear();
        self.rows = 0;
    }
}

/// Reads a statement's transition tables row by row (UPDATE: old and new rows in
/// lockstep; PostgreSQL stores them in the same order).
struct RowReader {
    old: *mut pg_sys::Tuplestorestate,
    new: *mut pg_sys::Tuplestorestate,
    old_slot: *mut pg_sys::TupleTableSlot,
    new_slot: *mut pg_sys::TupleTableSlot,
    natts: i32,
}

impl RowReader {
    /// # Safety
    /// `old`/`new` are NULL or transition tuplestores whose rows match `tupdesc`.
    unsafe fn new(
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

    fn rescan(&self) {
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
    fn append_next(&self, part: &mut Part, columns: &mut [Column]) -> bool {
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
    let (max_rows, max_bytes) = (gucs::max_rows_per_event(), gucs::max_event_bytes());
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
        error!("pgaudit_siem: capture found {inserted} parts on its second pass, {part_count} on the first");
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

/// Everything about the event except the rows.
pub struct EventContext {
    pub category: String,
    pub action: Action,
    pub relid: pg_sys::Oid,
    pub schema: String,
    pub table: String,
    pub database: String,
    pub transaction_id: u64,
    pub session_user: String,
    pub current_user: String,
    pub application_name: String,
    pub client_addr: Option<String>,
    pub unix_micros: i64,
}

thread_local! {
    static UUIDS: RefCell<Uuid7Generator> = RefCell::new(Uuid7Generator::default());
    static CLIENT_ADDR: RefCell<Option<Option<String>>> = const { RefCell::new(None) };
}

thread_local! {
    /// Role names by oid and the database name: per-backend caches (a rename shows up in
    /// new sessions; the oids in `source` never change).
    static ROLE_NAMES: RefCell<Vec<(pg_sys::Oid, String)>> = const { RefCell::new(Vec::new()) };
    static DATABASE_NAME: RefCell<Option<String>> = const { RefCell::new(None) };
}

fn role_name(oid: pg_sys::Oid) -> String {
    if let Some(name) = ROLE_NAMES.with(|c| {
        c.borrow()
            .iter()
            .find(|(o, _)| *o == oid)
            .map(|(_, n)| n.clone())
    }) {
        return name;
    }
    // SAFETY: GetUserNameFromId with noerr=true returns NULL for a vanished role.
    let name = cstr_or_empty(unsafe { pg_sys::GetUserNameFromId(oid, true) });
    ROLE_NAMES.with(|c| c.borrow_mut().push((oid, name.clone())));
    name
}

fn database_name() -> String {
    DATABASE_NAME.with(|c| {
        c.borrow_mut()
            // SAFETY: the connected database's name, looked up once per backend.
            .get_or_insert_with(|| {
                cstr_or_empty(unsafe { pg_sys::get_database_name(pg_sys::MyDatabaseId) })
            })
            .clone()
    })
}

fn cstr_or_empty(ptr: *const c_char) -> String {
    if ptr.is_null() {
        return String::new();
    }
    // SAFETY: NUL-terminated string from PostgreSQL.
    unsafe { CStr::from_ptr(ptr) }
        .to_string_lossy()
        .into_owned()
}

/// The client's address as `inet_client_addr()` shows it, cached per backend.
fn client_addr() -> Option<String> {
    if let Some(cached) = CLIENT_ADDR.with(|c| c.borrow().clone()) {
        return cached;
    }
    let addr = crate::pg::internal::run(|| {
        Spi::get_one::<String>("SELECT pg_catalog.host(pg_catalog.inet_client_addr())")
    })
    .ok()
    .flatten();
    CLIENT_ADDR.with(|c| *c.borrow_mut() = Some(addr.clone()));
    addr
}

impl EventContext {
    pub fn current(category: &str, action: Action, relation: pg_sys::Relation) -> EventContext {
        // SAFETY: relation is open; catalog/name lookups on valid oids; the transaction
        // already has an xid because the statement wrote rows (TRUNCATE assigns one too).
        unsafe {
            let relid = (*relation).rd_id;
            let namespace = (*(*relation).rd_rel).relnamespace;
            EventContext {
                category: category.to_owned(),
                action,
                relid,
                schema: cstr_or_empty(pg_sys::get_namespace_name(namespace)),
                table: cstr_or_empty((*(*relation).rd_rel).relname.data.as_ptr()),
                database: database_name(),
                transaction_id: pg_sys::GetTopFullTransactionId().value,
                session_user: role_name(pg_sys::GetSessionUserId()),
                current_user: role_name(pg_sys::GetUserId()),
                application_name: cstr_or_empty(pg_sys::application_name),
                client_addr: client_addr(),
                unix_micros: pg_sys::GetCurrentTimestamp() + json::POSTGRES_EPOCH_UNIX_MICROS,
            }
        }
    }

    fn next_id(&self) -> [u8; 16] {
        next_uuid((self.unix_micros / 1000) as u64, random_bytes())
    }

    /// The event document for one part.
    fn payload(
        &self,
        row_count: Option<u64>,
        part: usize,
        parts: usize,
        rows: &Part,
    ) -> (Vec<u8>, [u8; 16]) {
        let id = self.next_id();
        let mut out = Vec::with_capacity(rows.bytes() + 768);
        out.extend_from_slice(b"{\"id\":");
        json::push_string(&mut out, json::uuid_text(&id).as_bytes());
        out.extend_from_slice(b",\"timestamp\":");
        json::push_string(&mut out, json::rfc3339_utc(self.unix_micros).as_bytes());
        out.extend_from_slice(b",\"event\":{\"category\":");
        json::push_string(&mut out, self.category.as_bytes());
        out.extend_from_slice(b",\"action\":");
        json::push_string(&mut out, self.action.name().as_bytes());
        out.extend_from_slice(b"},\"org\":");
        push_org(&mut out, &self.database);
        out.extend_from_slice(b",\"actor\":");
        push_actor(&mut out, &self.session_user);
        out.extend_from_slice(b",\"changes\":{\"processed_row_count\":");
        match row_count {
            Some(n) => out.extend_from_slice(n.to_string().as_bytes()),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(
            format!(",\"part\":{part},\"part_count\":{parts},\"data_before\":[").as_bytes(),
        );
        out.extend_from_slice(&rows.before);
        out.extend_from_slice(b"],\"data_after\":[");
        out.extend_from_slice(&rows.after);
        out.extend_from_slice(b"]},\"source\":{\"database\":");
        json::push_string(&mut out, self.database.as_bytes());
        out.extend_from_slice(b",\"schema\":");
        json::push_string(&mut out, self.schema.as_bytes());
        out.extend_from_slice(b",\"table\":");
        json::push_string(&mut out, self.table.as_bytes());
        out.extend_from_slice(
            format!(
                ",\"transaction_id\":{},\"session_user\":",
                self.transaction_id
            )
            .as_bytes(),
        );
        json::push_string(&mut out, self.session_user.as_bytes());
        out.extend_from_slice(b",\"current_user\":");
        json::push_string(&mut out, self.current_user.as_bytes());
        out.extend_from_slice(b",\"application_name\":");
        json::push_string(&mut out, self.application_name.as_bytes());
        out.extend_from_slice(b",\"client_addr\":");
        match &self.client_addr {
            Some(addr) => json::push_string(&mut out, addr.as_bytes()),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b"}}");
        (out, id)
    }
}

thread_local! {
    /// splitmix64 state, seeded once per backend from pg_strong_random: ids need
    /// uniqueness and ordering (the UUIDv7 counter gives both), not secrecy, and a
    /// strong-random call per event would cost a system call on every write.
    static RNG: Cell<u64> = const { Cell::new(0) };
}

/// Ten random bytes for a UUIDv7.
pub fn random_bytes() -> [u8; 10] {
    RNG.with(|state| {
        if state.get() == 0 {
            let mut seed = [0u8; 8];
            // SAFETY: fills the buffer; a failure leaves zeros, fixed up below.
            unsafe { pg_sys::pg_strong_random(seed.as_mut_ptr().cast(), seed.len()) };
            state.set(u64::from_le_bytes(seed) | 1);
        }
        let next = || {
            let mut z = state.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
            state.set(z);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        let (a, b) = (next().to_le_bytes(), next().to_le_bytes());
        let mut out = [0u8; 10];
        out[..8].copy_from_slice(&a);
        out[8..].copy_from_slice(&b[..2]);
        out
    })
}

/// The next UUIDv7 of this backend (shared by events and `pgaudit_siem.uuid_v7()`, so
/// all ids of a backend increase).
pub fn next_uuid(unix_ms: u64, random: [u8; 10]) -> [u8; 16] {
    UUIDS.with(|g| g.borrow_mut().next(unix_ms, random))
}

/// `org`: from `pgaudit_siem.org_*`, or the current database when no org id is set.
fn push_org(out: &mut Vec<u8>, database: &str) {
    let (id, name, alias) = gucs::org();
    if id.is_empty() && name.is_empty() && alias.is_empty() {
        out.extend_from_slice(b"{\"id\":null,\"name\":");
        json::push_string(out, database.as_bytes());
        out.extend_from_slice(b",\"alias\":");
        json::push_string(out, database.as_bytes());
        out.push(b'}');
        return;
    }
    out.extend_from_slice(b"{\"id\":");
    json::push_id(out, &id);
    out.extend_from_slice(b",\"name\":");
    json::push_optional_string(out, &name);
    out.extend_from_slice(b",\"alias\":");
    json::push_optional_string(out, &alias);
    out.push(b'}');
}

/// `actor`: from `pgaudit_siem.actor_*`, or the database role when no actor id is set.
fn push_actor(out: &mut Vec<u8>, session_user: &str) {
    let (id, email, first_name, last_name) = gucs::actor();
    out.extend_from_slice(b"{\"id\":");
    if id.is_empty() && email.is_empty() {
        json::push_string(out, session_user.as_bytes());
    } else {
        json::push_id(out, &id);
    }
    out.extend_from_slice(b",\"email\":");
    json::push_optional_string(out, &email);
    out.extend_from_slice(b",\"first_name\":");
    json::push_optional_string(out, &first_name);
    out.extend_from_slice(b",\"last_name\":");
    json::push_optional_string(out, &last_name);
    out.push(b'}');
}

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
            error!("pgaudit_siem: SPI_connect failed");
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
                error!("pgaudit_siem: preparing the outbox insert failed");
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
            pg_sys::Datum::from(context.unix_micros - json::POSTGRES_EPOCH_UNIX_MICROS),
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
            error!("pgaudit_siem: outbox insert returned {rc}");
        }
        pg_sys::SPI_finish();
    }
    crate::delivery::shmem::wake_worker_at_commit();
}

/// Runs `f` as the outbox owner (who owns every table of the extension).
fn as_outbox_owner<R>(f: impl FnOnce() -> R) -> R {
    let _owner = crate::pg::user::AsUser::switch_to(outbox_owner());
    f()
}

fn outbox_owner() -> pg_sys::Oid {
    let cached = OUTBOX_OWNER.with(Cell::get);
    if cached != pg_sys::InvalidOid {
        return cached;
    }
    let owner = crate::pg::internal::run(|| {
        Spi::get_one::<pg_sys::Oid>(
            "SELECT c.relowner FROM pg_catalog.pg_class c
               JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
              WHERE n.nspname OPERATOR(pg_catalog.=) 'pgaudit_siem'::pg_catalog.name
                AND c.relname OPERATOR(pg_catalog.=) 'outbox'::pg_catalog.name",
        )
    })
    .ok()
    .flatten()
    .unwrap_or_else(|| error!("pgaudit_siem: the outbox table is missing; is the extension installed in this database?"));
    OUTBOX_OWNER.with(|c| c.set(owner));
    owner
}
