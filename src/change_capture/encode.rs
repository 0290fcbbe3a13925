//! How captured rows become JSON: one encoder per column chosen once per statement,
//! following PostgreSQL's `to_json` mapping (numbers, booleans, json/jsonb verbatim,
//! arrays and composites through PostgreSQL's own `array_to_json`/`row_to_json`,
//! date/time types through `JsonEncodeDateTime`, everything else as a JSON string of the
//! type's output).
//!
//! # Invariants
//! - Excluded columns (by attribute number, so they follow renames) are never read.
//! - No value can grow a part past [`PART_HARD_LIMIT`]: sizes are checked before a value
//!   is encoded (a Rust allocation failure would abort the backend).

use std::ffi::CStr;

use pgrx::pg_sys;

use super::error::CaptureError;
use crate::events::json;
use crate::pg::unguarded as builtin;

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

pub struct Column {
    attnum: usize,
    key: Vec<u8>,
    encoder: Encoder,
}

pub fn columns(tupdesc: pg_sys::TupleDesc, excluded: &[i16]) -> Vec<Column> {
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
        CaptureError::RowTooLarge.raise();
    }
}

/// Appends one row as a JSON object.
///
/// # Safety
/// `values`/`nulls` hold the slot's deformed attributes for `columns`.
pub unsafe fn push_row(
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
