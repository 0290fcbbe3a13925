//! Session and object audit logging, compatible with pgAudit 1.7 line for line.
//!
//! - [`subscriber`]: what session audit does in each hook (called by `crate::hooks`).
//! - [`format`]: the `AUDIT:` line, CSV quoting, redaction, truncation (pure Rust).
//! - [`stack`]: the audit event stack, tied to PostgreSQL memory-context lifetimes.
//! - [`nesting`]: the depth of function/procedure/trigger execution.
//! - [`emit`]: classification, statement/substatement ids, emission.
//! - [`record`]: the structured record of each line, for the session-audit stream.
//! - [`relations`]: the SELECT/DML relation pass and object auditing.
//! - [`error`]: pgAudit's own internal-error messages.
//! - [`event_triggers`]: the DDL event triggers created by `CREATE EXTENSION`.
//! - [`trail`]: connection and failed-statement records of the stream.
//! - [`log`]: `session_audit_log()`, the records the spool holds, in SQL.
//!
//! The `pgaudit.log` grammar lives with the settings (`settings::log_classes`).
//! Everything is gated by `pgaudit.featureEnabled`: when it is off, the subscriber only
//! reads the flag.

pub mod emit;
pub mod error;
pub mod event_triggers;
pub mod format;
pub mod log;
pub mod nesting;
pub mod record;
pub mod relations;
pub mod stack;
pub mod subscriber;
pub mod trail;
