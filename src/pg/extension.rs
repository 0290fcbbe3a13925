//! The extension's own catalog entry: which version of its SQL objects this database
//! has (the library may be newer, between a package upgrade and ALTER EXTENSION UPDATE).
//!
//! # Invariants
//! - Read inside a transaction, as an internal statement (never audit-logged); fully
//!   qualified, so the caller's search_path cannot pick another object.

use pgrx::prelude::*;

/// The installed version of the extension's SQL objects, if it is installed here.
pub fn installed_version() -> Option<String> {
    super::internal::run(|| {
        Spi::get_one::<String>(
            "SELECT e.extversion FROM pg_catalog.pg_extension e WHERE e.extname OPERATOR(pg_catalog.=) 'pgaudit_siem'",
        )
    })
    .ok()
    .flatten()
}
