//! Session and object audit logging, compatible with pgAudit 1.7 line for line.
//!
//! - [`classes`]: the `pgaudit.log` / `pgaudit.log_level` grammar (pure Rust).
//! - [`format`]: the `AUDIT:` line, CSV quoting, redaction, truncation (pure Rust).
//! - [`stack`]: the audit event stack, tied to PostgreSQL memory-context lifetimes.
//! - [`emit`]: classification, statement/substatement ids, emission.
//! - [`relations`]: the SELECT/DML relation pass and object auditing.
//! - [`hooks`]: executor, utility, planner and object-access hooks.
//! - [`event_triggers`]: the DDL event triggers created by `CREATE EXTENSION`.
//!
//! Everything is gated by `pgaudit.featureEnabled`: when it is off, hooks only chain.

pub mod classes;
pub mod emit;
pub mod event_triggers;
pub mod format;
pub mod hooks;
pub mod relations;
pub mod stack;

/// Installs the hooks. `_PG_init` only.
pub fn init() {
    hooks::init();
}
