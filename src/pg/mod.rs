//! Shared PostgreSQL glue used by every subsystem (session audit, delegated
//! configuration, change capture, delivery). Nothing here imports a subsystem.
//!
//! - [`internal`]: the extension's own statements, invisible to session audit.
//! - [`user`]: running a step as another role, restored on every exit.
//! - [`worker_settings`]: settings a background worker pins after connecting, so
//!   `ALTER DATABASE/ROLE ... SET` cannot change what its SQL does.

pub mod internal;
pub mod user;
pub mod worker_settings;
