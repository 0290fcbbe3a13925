//! Events: the shared layer between the sources that create events (change capture; next,
//! the session-audit stream) and delivery, which ships them. Nothing here imports a
//! subsystem.
//!
//! - [`chain`]: the hash chain over shipped records (shared with the verifier).
//! - [`envelope`]: the head every event document starts with (id, timestamp, event,
//!   org, actor).
//! - [`id`]: UUIDv7 ids, strictly increasing per backend.
//! - [`time`]: the clock and RFC 3339 timestamps.
//! - [`json`]: JSON writing (PostgreSQL's escaping rules).
//! - [`wake`]: commit-time requests from sources to delivery.
//! - [`order`]: outbox order keys and the per-database delivery horizon.
//! - [`spool`]: the durable per-server spool of session-audit records.

pub mod chain;
pub mod envelope;
pub mod id;
pub mod json;
pub mod order;
pub mod spool;
pub mod time;
pub mod wake;
