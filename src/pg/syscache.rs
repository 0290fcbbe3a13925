//! Catalog rows read through PostgreSQL's syscache, behind one small wrapper instead of
//! repeated lookup / GETSTRUCT / release blocks.
//!
//! # Invariants
//! - A row is pinned only while the closure passed to [`with_row`] runs and is released
//!   right after; if the closure raises an ERROR, the transaction's resource owner
//!   releases the pin during abort (PostgreSQL's own rule for syscache references).
//! - [`CatalogRow::form`] is `unsafe`: the caller names the `FormData_*` struct of the
//!   catalog behind the cache it searched.

use pgrx::pg_sys;

/// A pinned syscache row.
pub struct CatalogRow {
    cache: i32,
    tuple: pg_sys::HeapTuple,
}

/// Looks up `key1` (and `key2` for two-key caches) in `cache` and runs `f` on the row;
/// `None` when there is no such row.
pub fn with_row<R>(
    cache: pg_sys::SysCacheIdentifier::Type,
    key1: pg_sys::Datum,
    key2: pg_sys::Datum,
    f: impl FnOnce(&CatalogRow) -> R,
) -> Option<R> {
    let cache = cache as i32;
    // SAFETY: SearchSysCache ignores keys beyond the cache's key count; a non-NULL result
    // is a pinned tuple that we release below.
    let tuple = unsafe {
        pg_sys::SearchSysCache(
            cache,
            key1,
            key2,
            pg_sys::Datum::from(0),
            pg_sys::Datum::from(0),
        )
    };
    if tuple.is_null() {
        return None;
    }
    let row = CatalogRow { cache, tuple };
    let result = f(&row);
    // SAFETY: releases the pin taken above, exactly once.
    unsafe { pg_sys::ReleaseSysCache(tuple) };
    Some(result)
}

impl CatalogRow {
    /// The fixed part of the row (`GETSTRUCT`).
    ///
    /// # Safety
    /// `T` must be the `FormData_*` struct of the catalog the searched cache covers.
    pub unsafe fn form<T>(&self) -> &T {
        // SAFETY: the tuple is pinned for `self`'s lifetime; its fixed part starts at
        // `t_hoff` and, per the contract, has type `T`.
        unsafe {
            let header = (*self.tuple).t_data;
            &*((header as *const u8).add((*header).t_hoff as usize) as *const T)
        }
    }

    /// A column that may be NULL or variable-length (`SysCacheGetAttr`).
    pub fn attribute(&self, attnum: u32) -> Option<pg_sys::Datum> {
        let mut is_null = false;
        // SAFETY: the tuple belongs to `self.cache` and is pinned while `self` lives.
        let value =
            unsafe { pg_sys::SysCacheGetAttr(self.cache, self.tuple, attnum as i16, &mut is_null) };
        (!is_null).then_some(value)
    }
}
