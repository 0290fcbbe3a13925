//! The shared PostgreSQL layer used by every subsystem (session audit, delegated
//! configuration, change capture, delivery). Nothing here imports a subsystem.
//!
//! - [`internal`]: the extension's own statements, invisible to session audit.
//! - [`user`]: running a step as another role, restored on every exit.
//! - [`admin`]: `pgaudit_admin` membership, one definition for Rust and SQL.
//! - [`names`]: database, role and schema names.
//! - [`port`]: the client connection (`struct Port`) and the ClientAuthentication hook.
//! - [`syscache`]: catalog rows through the syscache.
//! - [`text`]: cutting text on a UTF-8 boundary.
//! - [`extension`]: the installed version of the extension's SQL objects.
//! - [`error`]: raising an ERROR with SQLSTATE and hint, in one message style.
//! - [`function_info`]: `PG_FUNCTION_INFO_V1` for hand-written C functions.
//! - [`unguarded`]: raw declarations, checked at compile time against pgrx's bindings.
//! - [`worker_settings`]: settings a background worker pins after connecting, so
//!   `ALTER DATABASE/ROLE ... SET` cannot change what its SQL does.
//! - [`worker_exit`]: ending a static worker on SIGTERM so the postmaster restarts it.

pub mod admin;
pub mod error;
pub mod extension;
pub mod function_info;
pub mod internal;
pub mod names;
pub mod port;
pub mod syscache;
pub mod text;
pub mod unguarded;
pub mod user;
pub mod worker_exit;
pub mod worker_settings;
