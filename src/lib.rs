//! pgaudit_siem: pgAudit-compatible audit logging, table change capture and SIEM
//! delivery for PostgreSQL.
//!
//! This file is deliberately thin: it declares the modules and a `_PG_init` that refuses
//! to load unless the library is preloaded, then lets each subsystem register itself.
//!
//! # Loading rules
//! - Hooks and settings must exist in every backend from the start, so the library must
//!   be in `shared_preload_libraries`; anything else (`LOAD`, `session_preload_libraries`,
//!   `CREATE EXTENSION` without preload) fails with SQLSTATE 55000, as pgAudit does.
//! - Under `pg_upgrade` (binary-upgrade mode) `_PG_init` does nothing: pg_upgrade `LOAD`s
//!   every library to check it exists, and audit output there would be noise.

use pgrx::pg_sys;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;

// Shared layers (import only each other, downwards: pg ← settings ← events ← sinks).
pub mod events;
pub mod pg;
pub mod settings;
pub mod sinks;
// Subsystems (import shared layers only, never each other).
pub mod change_capture;
pub mod delegated_config;
pub mod delivery;
pub mod session_audit;
// The hook dispatcher, on top: calls into every subsystem.
pub mod hooks;

pgrx::pg_module_magic!();

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    // SAFETY: plain reads of backend-global flags that PostgreSQL sets before it loads
    // any library; nothing else writes them concurrently (backends are single-threaded).
    let (binary_upgrade, preloading) = unsafe {
        (
            pg_sys::IsBinaryUpgrade,
            pg_sys::process_shared_preload_libraries_in_progress,
        )
    };
    if binary_upgrade {
        return;
    }
    if !preloading {
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "pgaudit_siem must be loaded via shared_preload_libraries",
            function_name!(),
        )
        .set_hint("Add pgaudit_siem to shared_preload_libraries in postgresql.conf and restart the server.")
        .report(PgLogLevel::ERROR);
    }
    settings::init();
    hooks::init();
    delivery::init();
    log!("pgaudit_siem extension initialized");
}

/// The extension's version, as installed. Also makes `CREATE EXTENSION` load the library
/// (creating a C function does), so it fails cleanly on a server that did not preload it.
#[pg_extern(immutable, parallel_safe)]
fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// Required by `cargo pgrx test`: every `#[pg_test]` runs in a server that preloads us.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec!["shared_preload_libraries = 'pgaudit_siem'"]
    }
}
