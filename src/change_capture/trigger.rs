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
use pgrx::prelude::*;

use super::json::{self, Uuid7Generator};
use crate::gucs;
use crate::session_audit::stack;

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
            error!("pgaudit_siem.capture_changes() can only be called as a trigger");
        }
        &*(context as *const pg_sys::TriggerData)
    };
    if trigger.tg_event & pg_sys::TRIGGER_EVENT_ROW != 0 {
        error!("pgaudit_siem.capture_changes() must be a FOR EACH STATEMENT trigger");
    }
    let action = match trigger.tg_event & pg_sys::TRIGGER_EVENT_OPMASK {
        pg_sys::TRIGGER_EVENT_INSERT => Action::Insert,
        pg_sys::TRIGGER_EVENT_UPDATE => Action::Update,
        pg_sys::TRIGGER_EVENT_DELETE => Action::Delete,
        _ => Action::Truncate,
    };
    // Everything the capture runs (lookups, the outbox insert) is internal: the audit
    // trail shows the application's statement, not our machinery. An ERROR leaves the
    // flag set only until the statement's stack entries go (which resets it).
    let was_internal = stack::internal_statement();
    stack::set_internal_statement(true);
    capture(trigger, action);
    stack::set_internal_statement(was_internal);
    // The executor ignores an AFTER trigger's tuple but refuses a SQL NULL result, so
    // return a NULL pointer with isnull left false, as PL/pgSQL does.
    pg_sys::Datum::from(0)
}

/// Trigger arguments: category, then excluded column names.
fn trigger_args(trigger: &pg_sys::TriggerData) -> (String, Vec<String>) {
    // SAFETY: tg_trigger is valid during the call; tgargs has tgnargs C strings.
    let args: Vec<String> = unsafe {
        let t = &*trigger.tg_trigger;
        (0..t.tgnargs as usize)
            .map(|i| {
                CStr::from_ptr(*t.tgargs.add(i))
                    .to_string_lossy()
                    .into_owned()
            })
            .collect()
    };
    let mut iter = args.into_iter();
    let category = iter.next().unwrap_or_default();
    (category, iter.collect())
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

fn columns(tupdesc: pg_sys::TupleDesc, excluded: &[String]) -> Vec<Column> {
    // SAFETY: a relation's tuple descriptor with `natts` attributes.
    let natts = unsafe { (*tupdesc).natts } as usize;
    let mut out = Vec::with_capacity(natts);
    for i in 0..natts {
        // SAFETY: i < natts.
        let att = unsafe { &*(*tupdesc).attrs.as_ptr().add(i) };
        if att.attisdropped {
            continue;
        }
        // SAFETY: NameData is NUL-terminated.
        let name = unsafe { CStr::from_ptr(att.attname.data.as_ptr()) }
            .to_string_lossy()
            .into_owned();
        if excluded.iter().any(|e| *e == name) {
            continue;
        }
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
                    json::push_string(out, pgrx::varlena::varlena_to_byte_slice(detoasted));
                    if detoasted != raw {
                        pg_sys::pfree(detoasted.cast());
                    }
                }
                Encoder::Number(info) => {
                    let text = pg_sys::OutputFunctionCall(info, value);
                    let bytes = CStr::from_ptr(text).to_bytes();
                    if json::is_json_number(bytes) {
                        out.extend_from_slice(bytes);
                    } else {
                        json::push_string(out, bytes);
                    }
                    pg_sys::pfree(text.cast());
                }
                Encoder::String(info) => {
                    let text = pg_sys::OutputFunctionCall(info, value);
                    json::push_string(out, CStr::from_ptr(text).to_bytes());
                    pg_sys::pfree(text.cast());
                }
                Encoder::Verbatim(info) => {
                    let text = pg_sys::OutputFunctionCall(info, value);
                    out.extend_from_slice(CStr::from_ptr(text).to_bytes());
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
                    out.extend_from_slice(CStr::from_ptr(text).to_bytes());
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
}

/// Iterates a transition table, calling `f` with each row's values and nulls.
///
/// # Safety
/// `store` is a transition tuplestore whose rows match `tupdesc`.
unsafe fn for_each_row(
    store: *mut pg_sys::Tuplestorestate,
    tupdesc: pg_sys::TupleDesc,
    mut f: impl FnMut(*const pg_sys::Datum, *const bool),
) {
    // SAFETY: per the contract; the slot is dropped before returning.
    unsafe {
        let slot = pg_sys::MakeSingleTupleTableSlot(tupdesc, &pg_sys::TTSOpsMinimalTuple);
        pg_sys::tuplestore_rescan(store);
        while pg_sys::tuplestore_gettupleslot(store, true, false, slot) {
            pg_sys::slot_getsomeattrs_int(slot, (*tupdesc).natts);
            f((*slot).tts_values, (*slot).tts_isnull);
        }
        pg_sys::ExecDropSingleTupleTableSlot(slot);
    }
}

fn capture(trigger: &pg_sys::TriggerData, action: Action) {
    let (category, excluded) = trigger_args(trigger);
    let relation = trigger.tg_relation;
    // SAFETY: the trigger's relation is open and locked for the statement.
    let tupdesc = unsafe { (*relation).rd_att };
    let (old, new) = (trigger.tg_oldtable, trigger.tg_newtable);
    let row_count: Option<u64> = match action {
        Action::Truncate => None,
        // SAFETY: transition tables exist for the events we install triggers for.
        Action::Insert => Some(unsafe { pg_sys::tuplestore_tuple_count(new) } as u64),
        Action::Update | Action::Delete => {
            Some(unsafe { pg_sys::tuplestore_tuple_count(old) } as u64)
        }
    };
    if row_count == Some(0) {
        return;
    }
    let mut columns = columns(tupdesc, &excluded);
    let max_rows = gucs::max_rows_per_event();
    let max_bytes = gucs::max_event_bytes();
    let mut parts: Vec<Part> = vec![Part::default()];
    // Pass over the rows that decide part boundaries (new rows, or old rows for DELETE).
    let (first_store, second_store) = match action {
        Action::Insert => (new, std::ptr::null_mut()),
        Action::Delete => (old, std::ptr::null_mut()),
        Action::Update => (old, new),
        Action::Truncate => (std::ptr::null_mut(), std::ptr::null_mut()),
    };
    let mut boundaries: Vec<usize> = Vec::new(); // row counts of finished parts, for UPDATE
    if !first_store.is_null() {
        let into_after = action == Action::Insert;
        // SAFETY: transition table of this relation.
        unsafe {
            for_each_row(first_store, tupdesc, |values, nulls| {
                let part = parts.last_mut().unwrap();
                let buf = if into_after {
                    &mut part.after
                } else {
                    &mut part.before
                };
                if part.rows > 0 {
                    buf.push(b',');
                }
                push_row(buf, &mut columns, values, nulls);
                part.rows += 1;
                // UPDATE parts get their new rows later: count the old rows twice.
                let bytes = if into_after || action == Action::Delete {
                    part.bytes()
                } else {
                    2 * part.bytes()
                };
                if part.rows >= max_rows || bytes >= max_bytes {
                    boundaries.push(part.rows);
                    parts.push(Part::default());
                }
            });
        }
        if parts.len() > 1 && parts.last().unwrap().rows == 0 {
            parts.pop();
        }
    }
    if !second_store.is_null() {
        // UPDATE: new rows go into the part holding the matching old row.
        let mut part_index = 0;
        let mut in_part = 0;
        // SAFETY: transition table of this relation.
        unsafe {
            for_each_row(second_store, tupdesc, |values, nulls| {
                let part = &mut parts[part_index];
                if in_part > 0 {
                    part.after.push(b',');
                }
                push_row(&mut part.after, &mut columns, values, nulls);
                in_part += 1;
                if in_part == part.rows && part_index + 1 < parts.len() {
                    part_index += 1;
                    in_part = 0;
                }
            });
        }
    }
    let context = EventContext::current(&category, action, relation);
    let part_count = parts.len();
    for (i, part) in parts.iter().enumerate() {
        let payload = context.payload(row_count, i + 1, part_count, part);
        insert_event(&context, row_count, i + 1, part_count, &payload);
    }
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
    let addr = Spi::get_one::<String>("SELECT pg_catalog.host(pg_catalog.inet_client_addr())")
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

/// Appends one event to the outbox, as the outbox owner, unaudited.
pub fn insert_event(
    context: &EventContext,
    row_count: Option<u64>,
    part: usize,
    parts: usize,
    payload: &(Vec<u8>, [u8; 16]),
) {
    let (payload, id) = payload;
    let owner = outbox_owner();
    let was_internal = stack::internal_statement();
    stack::set_internal_statement(true);
    let mut saved_user = pg_sys::InvalidOid;
    let mut saved_context = 0;
    // SAFETY: switch to the outbox owner for the insert; restored below, or by
    // transaction abort if the insert fails.
    unsafe {
        pg_sys::GetUserIdAndSecContext(&mut saved_user, &mut saved_context);
        pg_sys::SetUserIdAndSecContext(
            owner,
            saved_context | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32,
        );
    }
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
        pg_sys::SetUserIdAndSecContext(saved_user, saved_context);
    }
    stack::set_internal_statement(was_internal);
    crate::delivery::shmem::wake_worker_at_commit();
}

fn outbox_owner() -> pg_sys::Oid {
    let cached = OUTBOX_OWNER.with(Cell::get);
    if cached != pg_sys::InvalidOid {
        return cached;
    }
    let owner = Spi::get_one::<pg_sys::Oid>(
        "SELECT c.relowner FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = 'pgaudit_siem' AND c.relname = 'outbox'",
    )
    .ok()
    .flatten()
    .unwrap_or_else(|| error!("pgaudit_siem: the outbox table is missing; is the extension installed in this database?"));
    OUTBOX_OWNER.with(|c| c.set(owner));
    owner
}
