//! Names as Rust strings: the connected database, roles, schemas, this host.
//!
//! # Invariants
//! - The database name and role names are cached per backend: they are identities for
//!   events (a rename shows in new sessions; the oids never change).
//! - Lookups never raise for a vanished object: the name is then empty.

use std::cell::RefCell;
use std::ffi::{c_char, CStr};

use pgrx::pg_sys;

thread_local! {
    static ROLE_NAMES: RefCell<Vec<(pg_sys::Oid, String)>> = const { RefCell::new(Vec::new()) };
    static DATABASE_NAME: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// A NUL-terminated string from PostgreSQL, or empty for NULL.
pub fn cstr_or_empty(ptr: *const c_char) -> String {
    if ptr.is_null() {
        return String::new();
    }
    // SAFETY: NUL-terminated string from PostgreSQL.
    unsafe { CStr::from_ptr(ptr) }
        .to_string_lossy()
        .into_owned()
}

/// The connected database's name (inside a transaction the first time), cached.
pub fn database() -> String {
    DATABASE_NAME.with(|c| {
        c.borrow_mut()
            // SAFETY: a catalog lookup of our own database; the palloc'd name is copied.
            .get_or_insert_with(|| {
                cstr_or_empty(unsafe { pg_sys::get_database_name(pg_sys::MyDatabaseId) })
            })
            .clone()
    })
}

/// A role's name, cached per backend.
pub fn role(oid: pg_sys::Oid) -> String {
    if let Some(name) = ROLE_NAMES.with(|c| {
        c.borrow()
            .iter()
            .find(|(o, _)| *o == oid)
            .map(|(_, n)| n.clone())
    }) {
        return name;
    }
    // SAFETY: GetUserNameFromId with noerr = true returns NULL for a vanished role.
    let name = cstr_or_empty(unsafe { pg_sys::GetUserNameFromId(oid, true) });
    ROLE_NAMES.with(|c| c.borrow_mut().push((oid, name.clone())));
    name
}

/// A schema's name (not cached: schemas are renamed in place).
pub fn schema(oid: pg_sys::Oid) -> String {
    // SAFETY: get_namespace_name returns NULL for a missing schema.
    cstr_or_empty(unsafe { pg_sys::get_namespace_name(oid) })
}

/// This machine's host name (`localhost` if it cannot be read).
pub fn host() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into our buffer.
    if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}
